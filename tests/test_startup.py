"""Start-up of the library and the stage scripts: heavy libraries load where they are used.

Each DVC stage is a fresh Python process; ArviZ (with matplotlib, numba and scipy.stats),
PyMC, nutpie and statsmodels.api take seconds of CPU to import, so an OLS stage or a data
stage must not pay for them. Fresh interpreters, so the test sees exactly
what an import loads.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

HEAVY = ("arviz", "pymc", "pytensor", "nutpie", "numba", "statsmodels.api", "plotnine")


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_hetfx_loads_no_scientific_library():
    loaded = loaded_after("import hetfx, hetfx.models, hetfx.paper")
    assert not {"numpy", "pandas", "scipy"} & loaded


def test_the_core_and_the_fit_stage_load_no_heavy_library_on_import():
    loaded = loaded_after(
        "import sys\n"
        "sys.path.insert(0, 'analysis')\n"
        "import fit  # the stage script of every fit (imports, no run)\n"
        "import hetfx.api, hetfx.results, hetfx.design, hetfx.inference, hetfx.priors\n"
        "import hetfx.models.lambda_model, hetfx.models.saturated_ols\n"
        "from hetfx import fit as _fit, Priors"
    )
    assert "hetfx.paper.studies" in loaded and "hetfx.models.lambda_model" in loaded
    assert [m for m in HEAVY if m in loaded] == []
