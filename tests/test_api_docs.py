"""The examples in the public modules' docstrings run (the same as
``python -m pytest --doctest-modules src/hetfx/{api,priors,results,design}.py``)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["hetfx.api", "hetfx.priors", "hetfx.results", "hetfx.design"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0, f"{module} has no examples"
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples of {module} failed"


def test_public_names_exported():
    import hetfx

    assert {"fit", "fit_ols", "Prior", "Priors"} <= set(hetfx.__all__)
    for name in hetfx.__all__:
        assert hasattr(hetfx, name)
