"""Within-group centring, the fixed-baselines model's transformation of the data.

With one free (flat-prior) baseline ``alpha_g`` per group, integrating ``alpha_g`` out leaves
the lambda model on data demeaned within group (``y``, ``T``, ``X``; ``X`` loses its
intercept) with the residual likelihood on ``n - G`` degrees of freedom. The exact engine
fits it so (:func:`hetfx.models.pooled.lambda_block_model`, ``baselines="fixed"``); the front
end and the results use :func:`demean_within` to check the controls and to evaluate the
pointwise likelihood.
"""

from __future__ import annotations

import numpy as np

__all__ = ["demean_within"]


def demean_within(a: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Subtract the group means from ``a`` (a vector or the columns of a matrix)."""
    a = np.asarray(a, dtype=float)
    cnt = np.bincount(group, minlength=n_groups).astype(float)
    safe = np.where(cnt > 0, cnt, 1.0)
    if a.ndim == 1:
        return a - (np.bincount(group, weights=a, minlength=n_groups) / safe)[group]
    if a.shape[1] == 0:
        return a.copy()
    means = (
        np.stack(
            [np.bincount(group, weights=a[:, j], minlength=n_groups) for j in range(a.shape[1])],
            axis=1,
        )
        / safe[:, None]
    )
    return a - means[group]
