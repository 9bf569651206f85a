"""Models of hetfx: the two-equation (lambda) model and varying-slopes models.

The public names load on first use, so that importing one model module (say
:mod:`hetfx.models.gaussian`) does not import the others.
"""

from __future__ import annotations

_LAZY = {
    "LambdaFit": "hetfx.models.lambda_model",
    "fit_lambda_model": "hetfx.models.lambda_model",
    "ScalePrior": "hetfx.models.gaussian",
}

__all__ = ["LambdaFit", "ScalePrior", "fit_lambda_model"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hetfx.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
