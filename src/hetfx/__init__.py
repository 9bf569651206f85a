"""hetfx: hierarchical models of heterogeneous treatment effects.

Fit the two-equation model to your own data frame with :func:`fit` (see :mod:`hetfx.api`),
set priors with :class:`Prior` / :class:`Priors`, and query the returned
:class:`~hetfx.results.Results` (``group_effects``, ``ame``, ``contrast``, ``predict``,
``summary``, ``idata`` for ArviZ, plots).
"""

__version__ = "0.1.0"

from hetfx.api import fit, fit_ols  # noqa: E402
from hetfx.priors import Prior, Priors  # noqa: E402

__all__ = ["Prior", "Priors", "__version__", "fit", "fit_ols"]
