"""The reusable core (``hetfx``) stands apart from the paper's own code (``hetfx.paper``)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import hetfx

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(hetfx.__path__, "hetfx.")
    if not m.name.startswith("hetfx.paper")
)


def test_the_core_has_the_estimators_results_priors_and_plots():
    for name in ("hetfx.api", "hetfx.results", "hetfx.priors", "hetfx.plots", "hetfx.models"):
        assert name in CORE


def test_no_core_module_imports_the_paper():
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith('hetfx.paper')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
