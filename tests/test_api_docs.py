"""The API reference (docs/api.md) and the examples in the public docstrings.

The examples themselves run under pytest's ``--doctest-modules`` (pyproject.toml: the core
``src/hetfx`` is among the test paths, ``src/hetfx/paper`` is not); these tests make sure they
keep running there, that the main public names keep an example, and that the committed API
reference is what ``python analysis/api_reference.py`` writes from the current docstrings.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Public objects that must carry a runnable example (module, dotted name in it).
WITH_EXAMPLES = [
    ("hetfx.api", "fit"),
    ("hetfx.api", "fit_ols"),
    ("hetfx.priors", "Prior"),
    ("hetfx.priors", "Priors"),
    ("hetfx.results", "Results.group_effects"),
    ("hetfx.results", "Results.contrast"),
    ("hetfx.results", "Results.predict"),
    ("hetfx.results", "Results.ame"),
    ("hetfx.plots", "plot_group_effects"),
    ("hetfx.plots", "plot_coefs"),
    ("hetfx.plots", "plot_shrinkage"),
]


def _load_generator():
    path = ROOT / "analysis" / "api_reference.py"
    spec = importlib.util.spec_from_file_location("api_reference_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["api_reference_script"] = module
    spec.loader.exec_module(module)
    return module


def test_pytest_runs_the_core_docstring_examples():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    opts = shlex.split(config["addopts"])
    assert "--doctest-modules" in opts
    assert "src/hetfx" in config["testpaths"] and "tests" in config["testpaths"]
    assert "--ignore=src/hetfx/paper" in opts  # the paper's code is not the public API


@pytest.mark.parametrize(("module", "name"), WITH_EXAMPLES)
def test_public_object_has_a_runnable_example(module, name):
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name)
    examples = [e for t in tests for e in t.examples if not e.options.get(doctest.SKIP)]
    assert len(examples) >= 2, f"{module}.{name} has no Examples section that runs"


def test_public_names_exported():
    import hetfx

    assert {"fit", "fit_ols", "Prior", "Priors"} <= set(hetfx.__all__)
    for name in hetfx.__all__:
        assert hasattr(hetfx, name)


def test_api_reference_is_up_to_date():
    gen = _load_generator()
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert committed == gen.build(), (
        "docs/api.md is out of date with the docstrings: run python analysis/api_reference.py"
    )


def test_api_reference_documents_every_public_name_with_its_examples():
    import hetfx
    import hetfx.plots
    import hetfx.results

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for name in (n for n in hetfx.__all__ if not n.startswith("_")):
        assert f"### `hetfx.{name}`" in text
    for module in (hetfx.results, hetfx.plots):
        for name in module.__all__:  # under its top-level name where hetfx exports it
            where = "hetfx" if name in hetfx.__all__ else module.__name__
            assert f"### `{where}.{name}`" in text
    assert "#### `hetfx.Results.predict`" in text
    # numpydoc became markdown: parameter lists, examples as code, no RST roles left
    assert "- `outcome` (str): Outcome column" in text
    assert "```pycon\n>>> import numpy as np, pandas as pd, hetfx" in text
    assert ":func:" not in text and ":class:" not in text and "``" not in text.replace("```", "")
    # every link of the contents points to a heading (GitHub's anchors)
    gen = _load_generator()
    headings = {
        gen._anchor(line.lstrip("#").strip()) for line in text.splitlines() if line[:1] == "#"
    }
    import re

    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links and not [a for a in links if a not in headings]
