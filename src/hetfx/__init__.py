"""hetfx: hierarchical models of heterogeneous treatment effects.

Fit the two-equation model to your own data frame with :func:`fit` (see :mod:`hetfx.api`),
set priors with :class:`Prior` / :class:`Priors`, and query the returned
:class:`~hetfx.results.Results` (``group_effects``, ``ame``, ``contrast``, ``predict``,
``summary``, ``idata`` for ArviZ, plots). :func:`fit_ols` is the unpooled comparator.
Inputs the model cannot use raise :class:`DesignError` (a ``ValueError``) with a message that
names the column, cell or argument and how to fix it.

The public names load on first use, so ``import hetfx.paper.data...`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "fit": "hetfx.api",
    "fit_ols": "hetfx.api",
    "fit_varying_slopes": "hetfx.api",
    "DesignError": "hetfx.validation",
    "Prior": "hetfx.priors",
    "Priors": "hetfx.priors",
    **dict.fromkeys(
        [
            "BaseResults",
            "Results",
            "GaussianResults",
            "BernoulliResults",
            "OLSResults",
            "VaryingSlopesResults",
        ],
        "hetfx.results",
    ),
}

__all__ = [
    "BaseResults",
    "BernoulliResults",
    "DesignError",
    "GaussianResults",
    "OLSResults",
    "Prior",
    "Priors",
    "Results",
    "VaryingSlopesResults",
    "__version__",
    "fit",
    "fit_ols",
    "fit_varying_slopes",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hetfx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
