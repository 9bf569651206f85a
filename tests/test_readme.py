"""The README's example of the method on one's own data runs as printed."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, capsys) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use the method on your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has exactly one Python example"
    code = blocks[0]
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 15  # short enough to read at a glance
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "Group effects (12 groups)" in out
    assert "democracy" in out and "autocracy" in out
