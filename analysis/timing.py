"""Wall-clock time of every pipeline stage (not a pipeline stage itself).

Usage::

    python analysis/timing.py                   # dvc repro --force: every stage, timed
    python analysis/timing.py -- fit_tomz_weeks  # other arguments for dvc repro (no --force)
    python analysis/timing.py --log repro.log    # time a saved log of this script instead
    python analysis/timing.py --fresh-clone      # `make repro` in a fresh clone of HEAD
    python analysis/timing.py --fresh-clone --precompile-list analysis/precompile.txt

Runs ``dvc repro`` (with ``--force`` unless arguments are given after ``--``), stamps each
line of its output with the time it arrived, and prints one row per stage: its wall seconds
(from DVC's "Running stage" line to the next stage's), the seconds the stage script reports
for its own work (the ``done in`` line every stage prints), the difference (starting Python,
importing the libraries, DVC's hashing of the stage), and the CPU seconds the stage spent
before its work (``start-up`` line of analysis/_stage.py), which unlike wall time hardly
depends on what else the machine runs.
The time-stamped log is written to ``--save`` (default ``timing.log``, git-ignored) so that a
table can be printed again with ``--log``.

``--fresh-clone`` measures what a replicator waits for: it clones the last commit into a
temporary folder and runs the README's ``make repro`` there (the install from ``uv.lock``, then
``dvc repro``, which rebuilds every output that is not committed: the posteriors and the
simulations); the table's first row is the time before the first stage (the install and DVC's
start). It then lists what ``git status`` shows in the clone: a rebuild from the committed
state must change no committed byte (exit status 1 otherwise). The clone is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^Running stage '([^']+)'")
# "[fit_tomz_weeks@published] done in 2.10 s", "render: done in 4.2 s"
DONE = re.compile(r"done in ([0-9.]+) s")
# "[acquire] start-up: 1.52 s CPU" (analysis/_stage.py): interpreter start and imports
STARTUP = re.compile(r"start-up: ([0-9.]+) s CPU")


def dvc_command() -> list[str]:
    """DVC of this interpreter's environment (its stages' ``python`` is found on PATH: see
    :func:`main`)."""
    return [sys.executable, "-m", "dvc"]


def run(
    command: list[str], save: Path, cwd: Path = ROOT, env_bin: Path | None = None
) -> list[tuple[float, str]]:
    """Run ``command`` in ``cwd``; return ``(seconds since start, line)`` for every line.
    ``env_bin`` goes first on PATH (where the stages' ``python`` is found)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)  # the command picks its own environment
    if env_bin is not None:
        env["PATH"] = f"{env_bin}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    start = time.perf_counter()
    lines = []
    with (
        subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=1,
        ) as proc,
        open(save, "w", encoding="utf-8") as log,
    ):
        for line in proc.stdout:
            stamp = time.perf_counter() - start
            lines.append((stamp, line.rstrip("\n")))
            log.write(f"{stamp:10.3f} {line}")
            log.flush()
            print(line, end="", file=sys.stderr, flush=True)
        code = proc.wait()
    lines.append((time.perf_counter() - start, f"<exit {code}>"))
    with open(save, "a", encoding="utf-8") as log:
        log.write(f"{lines[-1][0]:10.3f} {lines[-1][1]}\n")
    return lines


def read_log(path: Path) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stamp, _, text = line.strip().partition(" ")
        out.append((float(stamp), text))
    return out


def stage_table(lines: list[tuple[float, str]]) -> list[dict]:
    """One row per stage: ``stage``, ``wall_s``, ``work_s`` (None if not reported)."""
    rows: list[dict] = []
    for stamp, text in lines:
        match = STAGE.match(text)
        if match:
            if rows:
                rows[-1]["wall_s"] = stamp - rows[-1]["start"]
            rows.append(
                {
                    "stage": match.group(1),
                    "start": stamp,
                    "wall_s": None,
                    "work_s": None,
                    "import_cpu_s": None,
                }
            )
            continue
        startup = STARTUP.search(text)
        if startup and rows:
            rows[-1]["import_cpu_s"] = float(startup.group(1))
            continue
        done = DONE.search(text)
        if done and rows:
            rows[-1]["work_s"] = float(done.group(1))
    if rows and lines:
        rows[-1]["wall_s"] = lines[-1][0] - rows[-1]["start"]
    return rows


def fresh_clone_repro(
    save: Path, precompile_list: Path | None = None
) -> tuple[list[tuple[float, str]], list[str]]:
    """Clone HEAD into a temporary folder, run ``make repro`` there; return the stamped lines
    and what ``git status --porcelain`` lists in the clone afterwards. With
    ``precompile_list``, ``make repro`` compiles no module ahead of time and the modules whose
    bytecode the rebuild wrote are then listed there (analysis/precompile.py)."""
    with tempfile.TemporaryDirectory(prefix="hetfx-fresh-") as tmp:
        clone = Path(tmp) / "hetfx"
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True
        )
        make = ["make", "repro"] + (["PRECOMPILE="] if precompile_list else [])
        lines = run(make, save, cwd=clone)
        if precompile_list:
            subprocess.run(
                [sys.executable, str(ROOT / "analysis" / "precompile.py"), "--record", str(clone)]
                + ["--list", str(precompile_list)],
                check=True,
            )
        # a rebuild from the committed state must leave every committed byte as it was
        changed = subprocess.run(
            ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True
        ).stdout.splitlines()
        return lines, changed


def format_table(rows: list[dict], total: float, label: str = "dvc repro, total") -> str:
    """Wall seconds per stage, the stage's own work, the rest (start-up and DVC) and the CPU
    seconds the stage's process spent before its work (Python start and imports), which,
    unlike wall time, hardly depends on what else the machine is running."""

    def num(value, width):
        return f"{value:{width}.2f}" if value is not None else " " * width

    out = [f"{'stage':<34} {'wall s':>8} {'work s':>8} {'rest s':>8} {'import CPU s':>12}"]
    if rows and rows[0]["start"] > 0:
        out.append(f"{'(before the first stage)':<34} {num(rows[0]['start'], 8)}")
    for r in rows:
        rest = r["wall_s"] - r["work_s"] if r["work_s"] is not None else None
        out.append(
            f"{r['stage']:<34} {num(r['wall_s'], 8)} {num(r['work_s'], 8)} "
            f"{num(rest, 8)} {num(r.get('import_cpu_s'), 12)}"
        )
    staged = sum(r["wall_s"] for r in rows)
    imports = sum(r.get("import_cpu_s") or 0.0 for r in rows)
    out.append(f"{'sum of stages':<34} {staged:8.2f} {'':>8} {'':>8} {imports:12.2f}")
    out.append(f"{label:<34} {total:8.2f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", type=Path, help="print the table of a saved log, run nothing")
    parser.add_argument("--save", type=Path, default=ROOT / "timing.log")
    parser.add_argument(
        "--fresh-clone", action="store_true", help="time `make repro` in a fresh clone of HEAD"
    )
    parser.add_argument(
        "--precompile-list",
        type=Path,
        help="with --fresh-clone: no ahead-of-time compilation; list the modules the rebuild "
        "compiled in this file (analysis/precompile.txt)",
    )
    parser.add_argument("repro_args", nargs="*", help="arguments for dvc repro (after --)")
    args = parser.parse_args(argv)
    label = "dvc repro, total"
    changed: list[str] = []
    if args.log:
        lines = read_log(args.log)
    elif args.fresh_clone:
        precompile_list = args.precompile_list.resolve() if args.precompile_list else None
        lines, changed = fresh_clone_repro(args.save.resolve(), precompile_list)
        label = "make repro in a fresh clone, total"
    else:
        # the stages' `python` must be this environment's, as under `make timing`
        lines = run(
            dvc_command() + ["repro", *(args.repro_args or ["--force"])],
            args.save,
            env_bin=Path(sys.executable).parent,
        )
    rows = stage_table(lines)
    print(format_table(rows, lines[-1][0] if lines else 0.0, label))
    failed = lines and lines[-1][1].startswith("<exit") and lines[-1][1] != "<exit 0>"
    if args.fresh_clone:
        print(f"committed files changed by the rebuild: {len(changed)}")
        for entry in changed:
            print(f"  {entry}")
    return 1 if failed or changed else 0


if __name__ == "__main__":
    sys.exit(main())
