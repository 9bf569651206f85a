"""Compare the outputs in the working tree with the committed ones (`make verify`).

Usage::

    python analysis/verify.py               # against HEAD
    python analysis/verify.py --ref v1.0    # against another commit
    python analysis/verify.py --worst 10    # show more of the largest differences

Run it after a rebuild (`make repro && make verify`). Every committed CSV under results/ and
data/clean/ is compared cell by cell with the working tree's version, every quoted number of
manuscript/_variables.yml as the printed string (hetfx.paper.verify classifies, the tolerances
are hetfx.paper.verify.TOLERANCES). Prints the counts per file and the largest differences; exits
1 if anything is different beyond its tolerance, 2 if the comparison could not be made.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

from hetfx.paper.verify import compare_csv, compare_variables, format_reports

#: What is compared: committed files matching these patterns.
CSV_PATTERNS = ("results/*.csv", "data/clean/*.csv")
VARIABLES = "manuscript/_variables.yml"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def committed_files(root: Path, ref: str) -> list[str]:
    listed = git(
        root, "ls-tree", "-r", "--name-only", ref, "--", "results", "data/clean", VARIABLES
    ).splitlines()
    return sorted(
        p for p in listed if p == VARIABLES or any(fnmatch(p, pat) for pat in CSV_PATTERNS)
    )


def current_text(root: Path, path: str) -> str | None:
    file = root / path
    return file.read_text(encoding="utf-8") if file.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", default="HEAD", help="commit to compare with (default HEAD)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root")
    parser.add_argument("--worst", type=int, default=3, help="largest differences per file")
    args = parser.parse_args(argv)
    try:
        files = committed_files(args.root, args.ref)
        reports = []
        for path in files:
            old = git(args.root, "show", f"{args.ref}:{path}")
            new = current_text(args.root, path)
            compare = compare_variables if path == VARIABLES else compare_csv
            reports.append(compare(path, old, new))
    except (RuntimeError, ValueError) as err:
        print(f"verify failed: {err}", file=sys.stderr)
        return 2
    if not reports:
        print(f"verify: no committed outputs found at {args.ref}", file=sys.stderr)
        return 2
    print(f"verify: working tree against {args.ref} ({len(reports)} files)\n")
    print(format_reports(reports, worst=args.worst))
    bad = [r.path for r in reports if r.different]
    if bad:
        print(f"\nverify: {len(bad)} file(s) differ beyond their tolerance: {', '.join(bad)}")
        return 1
    print("\nverify: every committed number reproduced (identical or within its tolerance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
