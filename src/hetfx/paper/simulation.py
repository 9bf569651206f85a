"""Simulation study of the paper's section 3 (replication spec, section 5).

Data-generating process (:func:`simulate_data`): ``n`` observations, ``k``
binary moderators ``x1..xk`` with given probabilities, ``treat ~ Bernoulli(.5)``,
controls ``z1 ~ N(0,1)``, ``z2 ~ Bernoulli(.5)``, ``z3 ~ N(0,1)``, true group
effects ``tau_g ~ N(0.2, 0.3)`` (0.3 is the standard deviation) and

``y = 0.4 z1 - 0.3 z2 + 0.25 z3 + tau_g * treat + N(0, 1)``.

Groups are the ``2**k`` cells of the moderators, labelled ``"x1_x2_..._xk"``
(e.g. ``"0_1_1"``, R's ``paste(..., sep = "_")``); their index is the binary
number with ``x1`` as the most significant digit, so index order is label order.

Designs (:func:`conditions`):

1. *equal groups* -- ``k = 3..7`` (8 to 128 groups), all probabilities .5, a
   fresh ``tau`` per ``k``; OLS is saturated, ``y ~ treat*(x1*...*xk) + z1+z2+z3``,
   and the hierarchical ``Z`` is the full factorial of the x's.
2. *imbalance* -- ``k = 6`` (64 groups) under four probability scenarios
   (:data:`IMBALANCE_SCENARIOS`), data redrawn until all 64 cells occur, one
   ``tau`` shared by the four scenarios of a replicate; OLS is additive as
   published, ``y ~ treat*(x1+...+x6) + z1+z2+z3`` (a cell's effect is the sum of
   the treatment coefficients for that cell's x values), and the hierarchical
   ``Z`` is intercept + x1..x6.

Random numbers: replicate ``r`` of a study with root seed ``root`` uses only
``numpy.random.SeedSequence(root).spawn(R)[r]``, i.e. ``SeedSequence(root,
spawn_key=(r,))``. Its child ``d`` (spawn key ``(r, d)``) serves design ``d``;
within design 1, child ``j`` of that (key ``(r, 1, j)``) draws ``tau`` and the
data of the ``j``-th ``k``; within design 2, key ``(r, 2, 0)`` draws the shared
``tau`` and key ``(r, 2, s)`` the data of scenario ``s = 1..4``. A replicate can
therefore be rerun alone, and results do not depend on the number of workers.

Estimators are pluggable callables ``estimator(data, condition) -> frame`` with
one row per group and columns ``group``, ``estimate``, ``q025``, ``q05``,
``q95``, ``q975`` (``std_error`` optional): :func:`ols_estimator` (fast numpy
path), :func:`ols_estimator_statsmodels` (the generic
:func:`hetfx.models.saturated_ols.fit_saturated_ols` path, the reference) and the
hierarchical estimators, which call the public API, :func:`hetfx.fit`, as a user would
(:func:`fit_condition`: modifiers ``x1..xk``, controls ``z1``, ``z2``, ``z3``, the cells'
labels as ``group``, the published priors made explicit, :data:`PUBLISHED_PRIORS`), and
report the exact posterior medians and quantiles of ``group_effects`` (mixtures of Gaussians
over the engine's grid: no Monte Carlo error from the fits, the same on any machine to
rounding). :func:`hierarchical_estimator` is the published model (``baselines="none"``: one
baseline for all cells). Cells whose treatment does not vary (the imbalance design's small
cells) are fitted as the published model fits them: their effects rest on the pooling alone
(``hetfx.fit(single_arm_cells="pool")``).

Sensitivity to baseline shifts: ``baseline_sd > 0`` (argument of :func:`simulate_condition`,
:func:`run_replicate` and :func:`run_simulation`) adds to ``y`` a shift ``delta_g ~ N(0,
baseline_sd)`` per cell, both arms (:func:`draw_baseline`; spawn key ``(r, design, index,``
:data:`BASELINE_STREAM` ``)``, so every other draw of a replicate is unchanged). The published
DGP has no shifts, and the published hierarchical model one common baseline;
:func:`hierarchical_fe_estimator` gives every cell its own baseline (fixed effects, as the
saturated OLS has them: ``baselines="fixed"``) and :func:`hierarchical_pooled_estimator`
pools the baselines (``alpha_g ~ N(0, sigma_alpha)``: ``baselines="pooled"``). With a
baseline per cell the library reduces a saturated effect design to its intercept (``theta``
then carries the cells' differences, every cell alike), and pooled baselines bring the
moderators' main effects into the outcome equation of the additive conditions.

Readings: (a) the published design is ``run_simulation(n_replicates=1)`` (one
data set per condition; the published R code used seed 12, whose R random
numbers are not reproduced here); (b) ``n_replicates=R`` gives the mean RMSE
per condition with its Monte Carlo standard error (:func:`summarise`).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

import hetfx
from hetfx.models.exact import _quantise_columns
from hetfx.priors import Prior, Priors

if TYPE_CHECKING:
    from hetfx.results import GaussianResults

__all__ = [
    "BASELINE_SD",
    "CONTROL_COEFS",
    "EQUAL_GROUP_K",
    "FIT_LAYOUT",
    "HIERARCHICAL_BASELINES",
    "IMBALANCE_SCENARIOS",
    "INTERVAL_COLUMNS",
    "N_OBS",
    "PUBLISHED_PRIORS",
    "PUBLISHED_SEED",
    "TAU_MEAN",
    "TAU_SD",
    "Condition",
    "Estimator",
    "api_estimator",
    "SimulationResult",
    "bias_by_group_size",
    "conditions",
    "draw_baseline",
    "draw_tau",
    "fit_condition",
    "group_labels",
    "hierarchical_estimator",
    "hierarchical_fe_estimator",
    "hierarchical_pooled_estimator",
    "ols_estimator",
    "ols_estimator_statsmodels",
    "replicate_rng",
    "run_replicate",
    "run_simulation",
    "simulate_condition",
    "simulate_data",
    "summarise",
    "combine_estimates",
]

#: Sample size of every simulated data set.
N_OBS = 2000
#: Mean and standard deviation of the true group effects.
TAU_MEAN, TAU_SD = 0.2, 0.3
#: Coefficients of the controls z1, z2, z3.
CONTROL_COEFS = (0.4, -0.3, 0.25)
#: Numbers of moderators of design 1 (8 to 128 groups).
EQUAL_GROUP_K = (3, 4, 5, 6, 7)
#: Moderator probabilities of design 2 (k = 6).
IMBALANCE_SCENARIOS: dict[str, tuple[float, ...]] = {
    "balanced": (0.5, 0.5, 0.5, 0.5, 0.5, 0.5),
    "mild": (0.35, 0.4, 0.5, 0.5, 0.6, 0.65),
    "moderate": (0.25, 0.35, 0.5, 0.5, 0.65, 0.7),
    "strong": (0.2, 0.3, 0.5, 0.5, 0.675, 0.75),
}
#: Seed of the published R study (``set.seed(12)``); used as the default root seed.
PUBLISHED_SEED = 12
#: SD of the groups' baseline shifts of the sensitivity DGP (the published DGP has none).
BASELINE_SD = 0.3
#: Last spawn-key entry of the baseline shifts' stream (:func:`draw_baseline`).
BASELINE_STREAM = 9
#: Interval columns every estimator must return.
INTERVAL_COLUMNS = ("q025", "q05", "q95", "q975")
#: Significant bits a replicate keeps of each estimate column, relative to the column's
#: largest absolute value (:func:`stored_values`). Another CPU rounds the fits' last bits
#: otherwise: under the emulations of tests/test_cross_cpu.py nearly every estimate, interval
#: bound and grid edge mass of a replicate moved, by 1.5e-14 relative on average (2e-14 at
#: most for the estimates). At 16 bits (a step of 3.1e-5 for effects up to 2 in size, a
#: thousandth of the study's Monte Carlo error) such a difference crosses a rounding boundary
#: with probability about 2e-10 per value, 5e-4 for the 2.4 million values (not missing) of
#: both simulation stages' work files: those files, the estimates and dvc.lock's hashes of
#: them are then the same bytes on another CPU.
STORED_BITS = 16
_T_LEVELS = {"q025": 0.025, "q05": 0.05, "q95": 0.95, "q975": 0.975}


# --------------------------------------------------------------------------- design


@dataclass(frozen=True)
class Condition:
    """One simulated condition.

    Attributes
    ----------
    design : int
        1 (equal groups) or 2 (imbalance).
    label : str
        Condition label: the number of groups for design 1 (``"8"``), the
        scenario name for design 2 (``"strong"``).
    index : int
        Position within its design (selects the random stream).
    probs : tuple of float
        ``P(x_j = 1)`` for each moderator.
    effect_terms : {"saturated", "additive"}
        How the moderators enter the effect equation of both estimators.
    n_obs : int
        Sample size.
    require_all_cells : bool
        Redraw the moderators until every cell occurs.
    """

    design: int
    label: str
    index: int
    probs: tuple[float, ...]
    effect_terms: str
    n_obs: int = N_OBS
    require_all_cells: bool = False

    @property
    def k(self) -> int:
        """Number of moderators."""
        return len(self.probs)

    @property
    def n_groups(self) -> int:
        """Number of groups (cells), ``2**k``."""
        return 2**self.k

    @property
    def moderators(self) -> list[str]:
        """Moderator column names ``x1..xk``."""
        return [f"x{j + 1}" for j in range(self.k)]

    @property
    def scenario(self) -> str:
        """Scenario name (``"equal"`` for design 1)."""
        return self.label if self.design == 2 else "equal"

    @property
    def effect_formula(self) -> str:
        """Formula piece of the moderators: ``x1*x2*...`` or ``x1 + x2 + ...``."""
        sep = " * " if self.effect_terms == "saturated" else " + "
        return sep.join(self.moderators)


def conditions(design: int, n_obs: int = N_OBS) -> list[Condition]:
    """The conditions of a design.

    Parameters
    ----------
    design : {1, 2}
        1: equal groups, ``k = 3..7``; 2: 64 groups under the four imbalance scenarios.
    n_obs : int, default 2000
        Sample size of each data set.

    Returns
    -------
    list of Condition
    """
    if design == 1:
        return [
            Condition(1, str(2**k), j, (0.5,) * k, "saturated", n_obs)
            for j, k in enumerate(EQUAL_GROUP_K)
        ]
    if design == 2:
        return [
            Condition(2, name, j + 1, probs, "additive", n_obs, require_all_cells=True)
            for j, (name, probs) in enumerate(IMBALANCE_SCENARIOS.items())
        ]
    raise ValueError(f"design must be 1 or 2, got {design!r}")


def group_labels(k: int) -> list[str]:
    """Labels of the ``2**k`` cells in index order (``"0_0_0"``, ``"0_0_1"``, ...)."""
    idx = np.arange(2**k)
    bits = (idx[:, None] >> np.arange(k - 1, -1, -1)) & 1
    return ["_".join(map(str, row)) for row in bits]


# ---------------------------------------------------------------------------- DGP


def replicate_rng(root_seed: int, replicate: int, *path: int) -> np.random.Generator:
    """Random generator of one replicate (and optionally one sub-stream of it).

    Parameters
    ----------
    root_seed : int
        Root seed of the study.
    replicate : int
        Replicate number ``r`` (0-based).
    *path : int
        Further spawn-key entries (design, then condition), see the module notes.

    Returns
    -------
    numpy.random.Generator
        ``Generator(PCG64(SeedSequence(root_seed, spawn_key=(replicate, *path))))``,
        the same stream as ``SeedSequence(root_seed).spawn(R)[replicate]`` (and its
        ``.spawn`` children) for any ``R > replicate``.
    """
    if replicate < 0:
        raise ValueError(f"replicate must be >= 0, got {replicate}")
    ss = np.random.SeedSequence(root_seed, spawn_key=(int(replicate), *map(int, path)))
    return np.random.default_rng(ss)


def draw_tau(
    rng: np.random.Generator, n_groups: int, mean: float = TAU_MEAN, sd: float = TAU_SD
) -> np.ndarray:
    """Draw the true group effects ``tau_g ~ N(mean, sd)`` (``sd`` is a standard deviation)."""
    return rng.normal(mean, sd, size=n_groups)


def simulate_data(
    rng: np.random.Generator,
    probs: Sequence[float],
    tau: np.ndarray,
    n_obs: int = N_OBS,
    *,
    require_all_cells: bool = False,
    max_tries: int = 10_000,
    baseline: np.ndarray | None = None,
) -> pd.DataFrame:
    """Draw one data set from the simulation's data-generating process.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    probs : sequence of float
        ``P(x_j = 1)`` for the ``k`` moderators.
    tau : numpy.ndarray
        True effects of the ``2**k`` groups, in index order.
    n_obs : int, default 2000
        Sample size.
    require_all_cells : bool, default False
        Redraw the moderators until all ``2**k`` cells occur (design 2). The
        other variables are independent of the moderators and drawn once after.
    max_tries : int, default 10000
        Give up (``RuntimeError``) after this many redraws.
    baseline : numpy.ndarray, optional
        Baseline shift of each of the ``2**k`` groups, added to ``y`` of every unit of the
        group (both arms: the control-arm mean moves, the effect ``tau_g`` does not). It
        uses no random numbers of ``rng``, so the rest of the data set is unchanged.

    Returns
    -------
    pandas.DataFrame
        Columns ``x1..xk``, ``treat``, ``z1``, ``z2``, ``z3``, ``group`` (label),
        ``group_index``, ``tau`` and ``y`` (and ``baseline`` when given).
    """
    probs = np.asarray(probs, dtype=float)
    k = len(probs)
    if k < 1 or np.any((probs <= 0) | (probs >= 1)):
        raise ValueError(f"probs must be k >= 1 values in (0, 1), got {probs.tolist()}")
    tau = np.asarray(tau, dtype=float)
    if tau.shape != (2**k,):
        raise ValueError(f"tau must have 2**k = {2**k} entries, got shape {tau.shape}")
    weights = 2 ** np.arange(k - 1, -1, -1)
    for _ in range(max_tries):
        x = (rng.random((n_obs, k)) < probs).astype(np.int64)
        gidx = x @ weights
        if not require_all_cells or np.bincount(gidx, minlength=2**k).min() > 0:
            break
    else:
        raise RuntimeError(f"not all {2**k} cells occurred in {max_tries} draws of n = {n_obs}")
    treat = (rng.random(n_obs) < 0.5).astype(np.int64)
    z1 = rng.standard_normal(n_obs)
    z2 = (rng.random(n_obs) < 0.5).astype(np.int64)
    z3 = rng.standard_normal(n_obs)
    eps = rng.standard_normal(n_obs)
    b1, b2, b3 = CONTROL_COEFS
    tau_i = tau[gidx]
    y = b1 * z1 + b2 * z2 + b3 * z3 + tau_i * treat + eps
    if baseline is not None:
        baseline = np.asarray(baseline, dtype=float)
        if baseline.shape != (2**k,):
            raise ValueError(f"baseline must have 2**k = {2**k} entries, got {baseline.shape}")
        y = y + baseline[gidx]
    labels = np.asarray(group_labels(k), dtype=object)
    cols = {f"x{j + 1}": x[:, j] for j in range(k)}
    cols.update(treat=treat, z1=z1, z2=z2, z3=z3, group=labels[gidx], group_index=gidx)
    cols.update(tau=tau_i, y=y)
    if baseline is not None:
        cols["baseline"] = baseline[gidx]
    return pd.DataFrame(cols)  # one construction (column by column was ~10% of a fit)


def draw_baseline(
    root_seed: int, replicate: int, condition: Condition, sd: float = BASELINE_SD
) -> np.ndarray:
    """Baseline shifts ``delta_g ~ N(0, sd)`` of the groups of one condition and replicate.

    They come from their own stream, spawn key ``(replicate, design, index,``
    :data:`BASELINE_STREAM` ``)``, which no other draw uses: switching the shifts on or off
    leaves the rest of the replicate's data unchanged.
    """
    rng = replicate_rng(root_seed, replicate, condition.design, condition.index, BASELINE_STREAM)
    return rng.normal(0.0, sd, size=condition.n_groups)


def simulate_condition(
    root_seed: int, replicate: int, condition: Condition, baseline_sd: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Data set and truth of one condition of one replicate.

    Parameters
    ----------
    root_seed : int
        Root seed of the study.
    replicate : int
        Replicate number.
    condition : Condition
        The condition.
    baseline_sd : float, default 0
        SD of the groups' baseline shifts (:func:`draw_baseline`); 0, the published DGP,
        shifts nothing.

    Returns
    -------
    data : pandas.DataFrame
        As :func:`simulate_data`.
    truth : pandas.DataFrame
        One row per group (all ``2**k``, index order): ``group``, ``group_index``,
        ``tau``, ``n`` (observations), ``n_treated``.
    """
    if condition.design == 1:
        rng = replicate_rng(root_seed, replicate, 1, condition.index)
        tau = draw_tau(rng, condition.n_groups)
    else:
        tau = draw_tau(replicate_rng(root_seed, replicate, 2, 0), condition.n_groups)
        rng = replicate_rng(root_seed, replicate, condition.design, condition.index)
    baseline = None
    if baseline_sd < 0:
        raise ValueError(f"baseline_sd must be >= 0, got {baseline_sd}")
    if baseline_sd > 0:
        baseline = draw_baseline(root_seed, replicate, condition, baseline_sd)
    data = simulate_data(
        rng,
        condition.probs,
        tau,
        condition.n_obs,
        require_all_cells=condition.require_all_cells,
        baseline=baseline,
    )
    g = data["group_index"].to_numpy()
    truth = pd.DataFrame(
        {
            "group": group_labels(condition.k),
            "group_index": np.arange(condition.n_groups),
            "tau": tau,
            "n": np.bincount(g, minlength=condition.n_groups),
            "n_treated": np.bincount(g, weights=data["treat"], minlength=condition.n_groups).astype(
                int
            ),
        }
    )
    return data, truth


# ---------------------------------------------------------------------- estimators

#: An estimator: ``(data, condition) -> frame`` with ``group``, ``estimate`` and
#: the :data:`INTERVAL_COLUMNS`.
Estimator = Callable[[pd.DataFrame, Condition], pd.DataFrame]


def _t_intervals(est: np.ndarray, se: np.ndarray, df: float) -> dict[str, np.ndarray]:
    return {name: est + stats.t.ppf(p, df) * se for name, p in _T_LEVELS.items()}


def ols_estimator(data: pd.DataFrame, condition: Condition) -> pd.DataFrame:
    """Group effects by OLS, computed directly with numpy (fast path).

    Saturated design (``condition.effect_terms == "saturated"``): the model
    ``y ~ treat*(x1*...*xk) + z1+z2+z3`` spans the same columns as one intercept
    per cell x treatment arm plus the controls, so the control coefficients come
    from the within-(cell, arm) regression and a cell's effect is
    ``(ybar_1 - ybar_0) - (zbar_1 - zbar_0)' beta`` with variance
    ``s^2 (1/n_1 + 1/n_0 + dz' (Z~'Z~)^-1 dz)`` and ``n - (#non-empty cell-arms) - 3``
    residual degrees of freedom, identical to the statsmodels fit. A cell with
    no treated or no control observation has no estimable effect: ``nan``.

    Additive design: OLS of ``y`` on ``[1, x, treat, treat*x, z]``; a cell's
    effect is ``b_treat + x_g' b_treat:x``.

    Parameters
    ----------
    data : pandas.DataFrame
        A simulated data set (:func:`simulate_data`).
    condition : Condition
        Its condition.

    Returns
    -------
    pandas.DataFrame
        One row per group present in the data: ``group``, ``estimate``,
        ``std_error`` and the t-based :data:`INTERVAL_COLUMNS`.
    """
    k, G = condition.k, condition.n_groups
    y = data["y"].to_numpy(float)
    t = data["treat"].to_numpy(np.int64)
    g = data["group_index"].to_numpy(np.int64)
    Z = data[["z1", "z2", "z3"]].to_numpy(float)
    n = len(y)
    present = np.bincount(g, minlength=G) > 0
    if condition.effect_terms == "saturated":
        cell = 2 * g + t
        nc = np.bincount(cell, minlength=2 * G).astype(float)
        safe = np.where(nc > 0, nc, 1.0)
        ybar = np.bincount(cell, weights=y, minlength=2 * G) / safe
        zbar = np.stack([np.bincount(cell, weights=Z[:, j], minlength=2 * G) for j in range(3)], 1)
        zbar /= safe[:, None]
        Zt = Z - zbar[cell]
        yt = y - ybar[cell]
        ZtZ = Zt.T @ Zt
        beta = np.linalg.solve(ZtZ, Zt.T @ yt)
        resid = yt - Zt @ beta
        df = n - int((nc > 0).sum()) - Z.shape[1]
        s2 = float(resid @ resid) / df
        n0, n1 = nc[0::2], nc[1::2]
        dz = zbar[1::2] - zbar[0::2]
        est = (ybar[1::2] - ybar[0::2]) - dz @ beta
        quad = np.einsum("ij,jk,ik->i", dz, np.linalg.inv(ZtZ), dz)
        ok = (n0 > 0) & (n1 > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            se = np.sqrt(s2 * (1.0 / n1 + 1.0 / n0 + quad))
        est = np.where(ok, est, np.nan)
        se = np.where(ok, se, np.nan)
    elif condition.effect_terms == "additive":
        Xm = data[condition.moderators].to_numpy(float)
        X = np.column_stack([np.ones(n), Xm, t, t[:, None] * Xm, Z])
        XtX = X.T @ X
        try:
            L = np.linalg.cholesky(XtX)
        except np.linalg.LinAlgError:
            L = None
        if L is None or np.linalg.cond(XtX) > 1e12:
            return ols_estimator_statsmodels(data, condition)
        b = np.linalg.solve(XtX, X.T @ y)
        resid = y - X @ b
        df = n - X.shape[1]
        s2 = float(resid @ resid) / df
        V = s2 * np.linalg.inv(XtX)
        bits = (np.arange(G)[:, None] >> np.arange(k - 1, -1, -1)) & 1
        D = np.zeros((G, X.shape[1]))
        D[:, 1 + k] = 1.0
        D[:, 2 + k : 2 + 2 * k] = bits
        est = D @ b
        se = np.sqrt(np.einsum("ij,jk,ik->i", D, V, D))
    else:
        raise ValueError(f"unknown effect_terms {condition.effect_terms!r}")
    out = pd.DataFrame({"group": group_labels(k), "estimate": est, "std_error": se})
    for name, q in _t_intervals(est, se, df).items():
        out[name] = q
    return out.loc[present].reset_index(drop=True)


def ols_estimator_statsmodels(data: pd.DataFrame, condition: Condition) -> pd.DataFrame:
    """Group effects by the generic statsmodels path (the reference for :func:`ols_estimator`).

    Fits ``y ~ treat * (effect formula) + z1 + z2 + z3`` with
    :func:`hetfx.models.saturated_ols.fit_saturated_ols`; groups whose contrast is
    not estimable (a cell without treated or control units) get ``nan``.

    Parameters
    ----------
    data : pandas.DataFrame
        A simulated data set.
    condition : Condition
        Its condition.

    Returns
    -------
    pandas.DataFrame
        ``group``, ``estimate``, ``std_error`` and the :data:`INTERVAL_COLUMNS`.
    """
    from hetfx.models.saturated_ols import fit_saturated_ols

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit = fit_saturated_ols(
            data,
            "y",
            "treat",
            condition.effect_formula,
            "z1 + z2 + z3",
            group="group",
            keys=condition.moderators,
        )
    ge = fit.group_effects()
    cols = ["estimate", "std_error", *INTERVAL_COLUMNS]
    ge.loc[~ge["estimable"], cols] = np.nan
    return ge[["group", *cols]].reset_index(drop=True)


#: The published model's priors, made explicit: ``gamma`` and ``beta`` (the outcome
#: equation's intercept included) ``N(0, 1)``, brms's default half-Student-t(3, 0, 2.5) on
#: ``sigma``, ``sigma_theta`` and (pooled baselines) ``sigma_alpha``. Every hierarchical
#: estimator of the study fits with them, whatever its baselines.
PUBLISHED_PRIORS = Priors(
    effect=Prior.normal(1.0),
    control=Prior.normal(1.0),
    intercept=Prior.normal(1.0),
    sigma=Prior.brms_default(),
    sigma_theta=Prior.brms_default(),
    sigma_alpha=Prior.brms_default(),
)
#: Baselines of each hierarchical estimator (``hetfx.fit(baselines=...)``).
HIERARCHICAL_BASELINES = {
    "hierarchical": "none",
    "hierarchical_fe": "fixed",
    "hierarchical_pooled": "pooled",
}
#: Posterior layout of the study's fits. The estimators use only the exact summaries of
#: ``group_effects`` (mixtures over the engine's grid), never draws, so the fewest draws
#: the API takes will do: none (``draws=0``, exact summaries only).
FIT_LAYOUT = {"chains": 1, "draws": 0}


def code_fingerprint() -> str:
    """SHA-256 of the library code the estimators run: every module of :mod:`hetfx` outside
    :mod:`hetfx.paper`, and this one. Recorded in the work directory's manifest, so that
    replicates computed by other code (an engine or grid change) are refitted, not resumed."""
    import hashlib

    root = Path(hetfx.__file__).parent
    files = sorted(p for p in root.rglob("*.py") if "paper" not in p.relative_to(root).parts)
    digest = hashlib.sha256()
    for path in [*files, Path(__file__)]:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


#: Warnings of :func:`hetfx.fit` that the study's designs raise by construction: the
#: published model's one baseline, (equal groups, ``baselines="none"``) a saturated Z, and
#: (imbalance design) cells whose treatment does not vary.
_EXPECTED_WARNINGS = (
    "main_effects=False",
    "Z has one column per cell",
    "the treatment does not vary within",
)


def fit_condition(
    data: pd.DataFrame, condition: Condition, baselines: str = "none", **options
) -> GaussianResults:
    """The study's one call of :func:`hetfx.fit`: the published model on a simulated data set.

    Modifiers are the condition's moderators ``x1..xk``, controls ``z1``, ``z2``, ``z3``, the
    cells are the ``group`` labels, the effect design is the condition's
    (``effect="saturated"`` or ``"additive"``), the priors :data:`PUBLISHED_PRIORS` and the
    posterior layout :data:`FIT_LAYOUT`. The library's rules apply: with cell baselines
    (``"fixed"``, ``"pooled"``) a saturated effect design keeps only its intercept (``theta``
    carries the cells' differences), and pooled baselines add the moderators' main effects to
    the outcome equation unless the effect design is saturated.

    Parameters
    ----------
    data : pandas.DataFrame
        A simulated data set (:func:`simulate_data`).
    condition : Condition
        Its condition.
    baselines : {"none", "fixed", "pooled"}, default "none"
        The cells' baselines: one for all (published), one free per cell, or pooled.
    **options
        Overrides of :func:`hetfx.fit`'s other arguments (e.g. ``engine="nutpie"``,
        ``chains``, ``draws``, ``seed``).

    Returns
    -------
    hetfx.results.GaussianResults
    """
    # (effect_formula only changes a saturated condition's)
    saturated = condition.effect_terms == "saturated"
    kwargs = {
        "effect": effect_formula(data, condition) if saturated else condition.effect_terms,
        "group": "group",
        "baselines": baselines,
        "priors": PUBLISHED_PRIORS,
        "single_arm_cells": "pool",
        **FIT_LAYOUT,
        **options,
    }
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        return hetfx.fit(data, "y", "treat", condition.moderators, ["z1", "z2", "z3"], **kwargs)


def effect_formula(data: pd.DataFrame, condition: Condition) -> str:
    """The effect design of a data set, as ``hetfx.fit(effect=...)`` takes it.

    The condition's (``"saturated"`` or ``"additive"``), unless the condition is saturated and
    some of its ``2**k`` cells do not occur in ``data``: ``hetfx.fit`` refuses a saturated
    formula then, so the full factorial's terms that the cells present leave unidentified are
    left out, the highest-order ones first (the terms kept, from the intercept up, are those
    that add to the rank). The design then still spans every function of the cells present,
    as the full factorial did.
    """
    present = np.unique(data["group_index"].to_numpy())
    if condition.effect_terms != "saturated" or len(present) == condition.n_groups:
        return condition.effect_terms
    xs = condition.moderators
    bits = (present[:, None] >> np.arange(condition.k - 1, -1, -1)) & 1
    terms = [t for r in range(1, len(xs) + 1) for t in itertools.combinations(range(len(xs)), r)]
    kept: list[tuple[int, ...]] = []
    basis = np.ones((len(present), 1))
    for term in terms:
        col = bits[:, list(term)].prod(axis=1, keepdims=True).astype(float)
        trial = np.hstack([basis, col])
        if np.linalg.matrix_rank(trial) > basis.shape[1]:
            basis, kept = trial, [*kept, term]
    return " + ".join(["1", *(":".join(xs[j] for j in term) for term in kept)])


def api_estimator(
    data: pd.DataFrame, condition: Condition, baselines: str = "none", **options
) -> pd.DataFrame:
    """Group effects of the hierarchical model through the public API (:func:`fit_condition`).

    Parameters
    ----------
    data : pandas.DataFrame
        A simulated data set.
    condition : Condition
        Its condition.
    baselines : {"none", "fixed", "pooled"}, default "none"
        The cells' baselines (:func:`fit_condition`).
    **options
        Passed to :func:`fit_condition`.

    Returns
    -------
    pandas.DataFrame
        ``group``, ``estimate`` (posterior median), the posterior quantiles
        :data:`INTERVAL_COLUMNS` of the group effects (exact for the quadrature engine: the
        90% interval of ``group_effects(level=0.9)`` and its 2.5% and 97.5% quantiles) and
        ``grid_edge_mass`` (quadrature engine; ``nan`` otherwise).
    """
    res = fit_condition(data, condition, baselines, **options)
    # the 90% interval and the 2.5% and 97.5% quantiles only: the quadrature engine solves
    # each quantile of each cell from its mixture
    ge = res.group_effects(level=0.9, quantiles=(0.025, 0.975))
    names = {"estimate": "estimate", "q025": "q025", "q05": "lower", "q95": "upper", "q975": "q975"}
    columns = {c: ge[g].to_numpy(dtype=float, copy=True) for c, g in names.items()}
    # the labels as strings, kept in their array (through numpy objects, the frame
    # inferred their string dtype again: 50 us of the 140 us this frame took, measured)
    group = res.design.cells.index.astype(str).array.copy()
    edge = np.full(len(group), float(res.diagnostics_record.grid_edge_mass))
    return pd.DataFrame({"group": group, **columns, "grid_edge_mass": edge}, copy=False)


def hierarchical_estimator(data: pd.DataFrame, condition: Condition) -> pd.DataFrame:
    """Group effects by the hierarchical model as published: one baseline for all cells.

    :func:`api_estimator` with ``baselines="none"``: ``Z`` is the full factorial of the
    moderators (saturated conditions) or intercept + moderators (additive), ``X`` intercept,
    z1, z2, z3, priors :data:`PUBLISHED_PRIORS`.
    """
    return api_estimator(data, condition, "none")


def hierarchical_fe_estimator(data: pd.DataFrame, condition: Condition) -> pd.DataFrame:
    """Group effects by the hierarchical model with the cells' baselines as fixed effects.

    :func:`api_estimator` with ``baselines="fixed"``: one free baseline per cell (the cell
    main effects the OLS comparator also has), integrated out exactly by centring within the
    cells. With a saturated effect design ``Z`` keeps only its intercept (the library's rule).
    """
    return api_estimator(data, condition, "fixed")


#: Centring within the cells removes any shift of a cell's baseline, so this estimator gives
#: the same numbers (to rounding: 1e-15 relative) on a replicate's data with or without the
#: sensitivity study's shifts: :func:`run_replicate` fits it once per replicate and condition
#: where it runs under several DGPs (``shared``). tests/test_simulation_sensitivity.py checks
#: the invariance.
hierarchical_fe_estimator.baseline_invariant = True


def hierarchical_pooled_estimator(data: pd.DataFrame, condition: Condition) -> pd.DataFrame:
    """Group effects by the hierarchical model with pooled baselines.

    :func:`api_estimator` with ``baselines="pooled"``: a baseline per cell, ``alpha_g ~ N(0,
    sigma_alpha)``, independent of the varying effect, plus (additive conditions) the
    moderators' main effects in ``X``. With a saturated effect design ``Z`` keeps only its
    intercept and ``X`` no main effects (the library's rule).
    """
    return api_estimator(data, condition, "pooled")


# ------------------------------------------------------------------------- runner


def stored_values(x: np.ndarray, bits: int = STORED_BITS) -> np.ndarray:
    """``x`` (a copy) with its finite values rounded to a binary grid of step
    ``2^(e - bits)``, where ``2^e`` bounds their largest absolute value
    (:func:`hetfx.models.exact._quantise_columns`, the draws' rounding; ``nan`` and an
    all-zero column are kept as they are). Exact arithmetic: the same numbers give the same
    bits on any CPU."""
    x = np.array(x, dtype=float)
    finite = np.isfinite(x)
    if finite.any():
        x[finite] = _quantise_columns(x[finite], bits)
    return x


def run_replicate(
    design: int,
    replicate: int,
    root_seed: int,
    estimators: Mapping[str, Estimator],
    n_obs: int = N_OBS,
    baseline_sd: float = 0.0,
    shared: dict | None = None,
) -> pd.DataFrame:
    """Simulate and estimate every condition of one design for one replicate.

    Parameters
    ----------
    design : {1, 2}
        The design.
    replicate : int
        Replicate number.
    root_seed : int
        Root seed of the study.
    estimators : mapping of str to Estimator
        Models by name (``"ols"``, ``"hierarchical"``).
    n_obs : int, default 2000
        Sample size.
    baseline_sd : float, default 0
        SD of the cells' baseline shifts (:func:`simulate_condition`; 0: the published DGP).
    shared : dict, optional
        The fits of estimators marked ``baseline_invariant`` (their numbers do not depend on
        the cells' baseline shifts), by condition: calls for the same design and replicate
        under different ``baseline_sd`` that pass the same dict fit each such estimator once
        (the data differ only by the shifts). Empty at the first call.

    Returns
    -------
    pandas.DataFrame
        Tidy estimates: ``design``, ``condition``, ``n_groups``, ``scenario``,
        ``replicate``, ``group``, ``n``, ``n_treated``, ``tau``, ``model``,
        ``estimate``, ``std_error`` (``nan`` where the estimator gives none), the
        :data:`INTERVAL_COLUMNS` and ``grid_edge_mass`` (the quadrature grid's edge
        mass of the fit, ``nan`` for other estimators). Every group of the design appears for every
        model; groups an estimator could not estimate have ``nan``. Those value columns are
        rounded to :data:`STORED_BITS` significant bits (:func:`stored_values`).

    Raises
    ------
    ValueError
        If an estimator leaves out a required column or returns a group twice.
    """
    value_cols = ["estimate", "std_error", *INTERVAL_COLUMNS, "grid_edge_mass"]
    parts: dict[str, list] = {c: [] for c in ["condition", "n_groups", "scenario", "group"]}
    parts.update({c: [] for c in ["n", "n_treated", "tau", "model", *value_cols]})
    for cond in conditions(design, n_obs):
        data, truth = simulate_condition(root_seed, replicate, cond, baseline_sd)
        groups = truth["group"].to_numpy()
        for model, estimator in estimators.items():
            if shared is not None and getattr(estimator, "baseline_invariant", False):
                key = (design, replicate, cond.index, estimator)
                if key not in shared:
                    shared[key] = estimator(data, cond)
                est = shared[key]
            else:
                est = estimator(data, cond)
            missing = {"group", "estimate", *INTERVAL_COLUMNS} - set(est.columns)
            if missing:
                raise ValueError(f"estimator {model!r} did not return columns {sorted(missing)}")
            if est["group"].duplicated().any():
                raise ValueError(f"estimator {model!r} returned a group twice")
            # every group of the design, in the truth's order (nan where not estimated)
            est = est.set_index("group").reindex(groups)
            for col in value_cols:
                parts[col].append(
                    est[col].to_numpy(float) if col in est.columns else np.full(len(groups), np.nan)
                )
            for col in ("n", "n_treated", "tau"):
                parts[col].append(truth[col].to_numpy())
            parts["group"].append(groups)
            parts["model"].append(np.full(len(groups), model, dtype=object))
            parts["condition"].append(np.full(len(groups), cond.label, dtype=object))
            parts["scenario"].append(np.full(len(groups), cond.scenario, dtype=object))
            parts["n_groups"].append(np.full(len(groups), cond.n_groups))
    cols = {c: np.concatenate(v) for c, v in parts.items()}
    for c in value_cols:  # the same bytes on another CPU (STORED_BITS)
        cols[c] = stored_values(cols[c])
    n_rows = len(cols["group"])
    out = pd.DataFrame(
        {
            "design": np.full(n_rows, design),
            "condition": cols["condition"],
            "n_groups": cols["n_groups"],
            "scenario": cols["scenario"],
            "replicate": np.full(n_rows, replicate),
            "group": cols["group"],
            "n": cols["n"],
            "n_treated": cols["n_treated"],
            "tau": cols["tau"],
            "model": cols["model"],
            **{c: cols[c] for c in value_cols},
        }
    )
    return out


@dataclass(frozen=True)
class SimulationResult:
    """Output of :func:`run_simulation`.

    Attributes
    ----------
    estimates : pandas.DataFrame
        One row per design x condition x replicate x group x model (see
        :func:`run_replicate`).
    summary : pandas.DataFrame
        One row per design x condition x model (see :func:`summarise`).
    """

    estimates: pd.DataFrame
    summary: pd.DataFrame


def _rep_path(work_dir: Path, design: int, replicate: int) -> Path:
    return work_dir / f"design{design}" / f"replicate_{replicate:05d}.parquet"


def _check_manifest(work_dir: Path, manifest: dict, restart: bool = False) -> None:
    path = work_dir / "manifest.json"
    if path.exists() and restart and json.loads(path.read_text()) != manifest:
        for old_file in work_dir.glob("design*/replicate_*.parquet"):
            old_file.unlink()
        path.unlink()
    if path.exists():
        old = json.loads(path.read_text())
        if old != manifest:
            raise ValueError(
                f"work directory {work_dir} holds replicates of a different run "
                f"({old}); use another directory or remove it (now: {manifest})"
            )
    else:
        # written whole or not at all (a temporary file renamed), as the replicates are: a
        # run stopped at any point leaves a directory that the next run can read
        work_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, path)


def _describe(estimator: Estimator) -> str:
    """Stable description of an estimator for the manifest (no memory addresses)."""
    if isinstance(estimator, functools.partial):
        args = [repr(a) for a in estimator.args]
        args += [f"{k}={v!r}" for k, v in sorted(estimator.keywords.items())]
        return f"{_describe(estimator.func)}({', '.join(args)})"
    target = estimator if hasattr(estimator, "__qualname__") else type(estimator)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _task(design, replicate, root_seed, plan, n_obs):
    """One design and replicate under every DGP of ``plan`` (name: ``(baseline_sd,
    estimators)``), the baseline-invariant fits shared between them."""
    shared: dict = {}
    frames = {
        name: run_replicate(design, replicate, root_seed, estimators, n_obs, sd, shared)
        for name, (sd, estimators) in plan.items()
    }
    return (design, replicate), frames


def run_simulation(
    n_replicates: int = 100,
    *,
    designs: Iterable[int] = (1, 2),
    root_seed: int = PUBLISHED_SEED,
    estimators: Mapping[str, Estimator] | None = None,
    work_dir: str | os.PathLike | None = None,
    n_jobs: int = 1,
    backend: str = "loky",
    scheduler_address: str | None = None,
    n_obs: int = N_OBS,
    progress: bool = True,
    on_mismatch: str = "raise",
    baseline_sd: float = 0.0,
) -> SimulationResult:
    """Run the simulation study, in parallel and resumably.

    Parameters
    ----------
    n_replicates : int, default 100
        Replicates per condition; 1 is the published design (reading (a)).
    designs : iterable of {1, 2}, default (1, 2)
        Designs to run.
    root_seed : int, default 12
        Root seed; replicate ``r`` depends only on ``(root_seed, r)``.
    estimators : mapping of str to Estimator, optional
        Models by name. Default ``{"ols": ols_estimator, "hierarchical":
        hierarchical_estimator}``. Callables must be picklable (module-level)
        for parallel backends.
    work_dir : path-like, optional
        Directory for one parquet file per design x replicate. Replicates whose
        file exists are read back instead of refitted, so an interrupted run
        resumes; files are written by the calling process as results arrive
        (so the directory need not be visible to remote workers). A
        ``manifest.json`` records the root seed, sample size and estimators
        (names and their functions/arguments) and the fingerprint of the library code
        (:func:`code_fingerprint`), and a run with different settings or code is refused
        (or restarted: ``on_mismatch``).
        ``n_replicates`` may grow between runs.
    n_jobs : int, default 1
        Parallel workers (joblib); ``-1`` uses all cores.
    backend : str, default "loky"
        joblib backend (``"loky"``, ``"threading"``, ``"sequential"``, ``"dask"``), or
        ``"fork"``: worker processes forked from this one (Linux; elsewhere loky), which
        start without importing the library again. Loky workers run with one BLAS thread
        each (forked ones inherit this process's BLAS threads). ``"dask"`` without
        ``scheduler_address`` uses the current default ``distributed.Client``.
    scheduler_address : str, optional
        Address of an existing Dask scheduler (e.g. ``"tcp://10.0.0.5:8786"``);
        implies the ``"dask"`` backend. A client is opened for the run and closed
        after it.
    n_obs : int, default 2000
        Sample size per data set.
    progress : bool, default True
        Show a tqdm progress bar with ETA.
    on_mismatch : {"raise", "restart"}, default "raise"
        What to do when ``work_dir`` holds replicates of a run with other settings:
        refuse (``ValueError``) or delete them and start afresh.
    baseline_sd : float, default 0
        SD of the cells' baseline shifts (:func:`simulate_condition`); 0 is the published
        DGP. Recorded in the manifest when not 0.

    Returns
    -------
    SimulationResult
        ``estimates`` and ``summary`` frames.
    """
    if estimators is None:
        estimators = {"ols": ols_estimator, "hierarchical": hierarchical_estimator}
    (result,) = _run_plan(
        n_replicates,
        {"": (baseline_sd, estimators)},
        designs=designs,
        root_seed=root_seed,
        work_dirs={"": work_dir},
        parallel=(n_jobs, backend, scheduler_address),
        n_obs=n_obs,
        progress=progress,
        on_mismatch=on_mismatch,
    ).values()
    return result


def run_simulations(
    n_replicates: int,
    dgps: Mapping[str, tuple[float, Mapping[str, Estimator]]],
    *,
    designs: Iterable[int] = (1, 2),
    root_seed: int = PUBLISHED_SEED,
    work_dir: str | os.PathLike | None = None,
    n_jobs: int = 1,
    backend: str = "loky",
    scheduler_address: str | None = None,
    n_obs: int = N_OBS,
    progress: bool = True,
    on_mismatch: str = "raise",
) -> dict[str, SimulationResult]:
    """:func:`run_simulation` under several DGPs of the same replicates at once.

    Each design and replicate is one task that simulates and fits it under every DGP, so an
    estimator whose numbers do not depend on the cells' baseline shifts
    (``baseline_invariant``, e.g. :func:`hierarchical_fe_estimator`) is fitted once for all
    of them (:func:`run_replicate`'s ``shared``); the results are those of one
    :func:`run_simulation` per DGP.

    Parameters
    ----------
    n_replicates : int
        Replicates per condition.
    dgps : mapping of str to (float, mapping of str to Estimator)
        Each DGP's name: its ``baseline_sd`` and its estimators.
    work_dir : path-like, optional
        One work directory per DGP, ``work_dir/<name>``, as :func:`run_simulation`'s.
    designs, root_seed, n_jobs, backend, scheduler_address, n_obs, progress, on_mismatch
        As :func:`run_simulation`.

    Returns
    -------
    dict of str to SimulationResult
        By DGP name, in the order of ``dgps``.
    """
    if not dgps:
        raise ValueError("no DGPs given")
    return _run_plan(
        n_replicates,
        dgps,
        designs=designs,
        root_seed=root_seed,
        work_dirs={name: None if work_dir is None else Path(work_dir) / name for name in dgps},
        parallel=(n_jobs, backend, scheduler_address),
        n_obs=n_obs,
        progress=progress,
        on_mismatch=on_mismatch,
    )


def _resume(work_dir, manifest, on_mismatch, designs, n_replicates) -> dict:
    """The replicates already in ``work_dir`` (after its manifest's check), by key."""
    if on_mismatch not in ("raise", "restart"):
        raise ValueError(f"on_mismatch must be 'raise' or 'restart', got {on_mismatch!r}")
    wd = Path(work_dir)
    _check_manifest(wd, manifest, restart=on_mismatch == "restart")
    return {
        (d, r): pd.read_parquet(_rep_path(wd, d, r))
        for d in designs
        for r in range(n_replicates)
        if _rep_path(wd, d, r).exists()
    }


def _run_plan(
    n_replicates, dgps, *, designs, root_seed, work_dirs, parallel, n_obs, progress, on_mismatch
) -> dict[str, SimulationResult]:
    """:func:`run_simulations` with one work directory (or None) per DGP."""
    if n_replicates < 1:
        raise ValueError(f"n_replicates must be >= 1, got {n_replicates}")
    designs = sorted(set(designs))
    for d in designs:
        conditions(d)  # validates
    plan = {name: (float(sd), dict(est)) for name, (sd, est) in dgps.items()}
    done: dict[str, dict] = {name: {} for name in plan}
    code = code_fingerprint() if any(w is not None for w in work_dirs.values()) else None
    for name, (sd, estimators) in plan.items():
        if not estimators:
            raise ValueError("no estimators given")
        if work_dirs[name] is not None:
            manifest = {
                "code": code,
                "root_seed": int(root_seed),
                "n_obs": int(n_obs),
                "models": {m: _describe(est) for m, est in sorted(estimators.items())},
            }
            if sd:
                manifest["baseline_sd"] = sd
            done[name] = _resume(work_dirs[name], manifest, on_mismatch, designs, n_replicates)
    todo = {}
    for d in designs:
        for r in range(n_replicates):
            missing = {name: step for name, step in plan.items() if (d, r) not in done[name]}
            if missing:
                todo[(d, r)] = missing
    for key, frames in _fit_tasks(todo, root_seed, n_obs, parallel, progress):
        for name, frame in frames.items():
            done[name][key] = frame
            if work_dirs[name] is not None:
                _write_atomic(frame, _rep_path(Path(work_dirs[name]), *key))
    out = {}
    for name in plan:
        keys = sorted(k for k in done[name] if k[0] in designs and k[1] < n_replicates)
        estimates = pd.concat([done[name][k] for k in keys], ignore_index=True)
        out[name] = SimulationResult(estimates=estimates, summary=summarise(estimates))
    return out


def _fit_tasks(todo, root_seed, n_obs, parallel, progress):
    """Yield ``((design, replicate), {dgp: frame})`` for every task of ``todo`` as the
    workers finish them (``parallel``: n_jobs, backend, scheduler address)."""
    if not todo:
        return
    from tqdm.auto import tqdm

    jobs = [(d, r, root_seed, steps, n_obs) for (d, r), steps in todo.items()]
    bar = tqdm(total=len(todo), desc="simulation", unit="rep", disable=not progress)
    try:
        for result in _parallel_map(jobs, *parallel):
            yield result
            bar.update(1)
    finally:
        bar.close()


def _star_task(args):
    return _task(*args)


def can_fork() -> bool:
    """Whether the ``"fork"`` backend forks here (Linux, where the start method exists)."""
    import multiprocessing
    import sys

    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _parallel_map(jobs, n_jobs, backend, scheduler_address):
    """``_task(*job)`` for every job, in the order they finish, on ``backend``."""
    import joblib

    if backend == "fork" and scheduler_address is None and can_fork():
        # workers forked from this process: they start with its modules imported (a loky
        # worker imports them again: about 2 s of CPU each, measured)
        import multiprocessing

        workers = min(joblib.effective_n_jobs(n_jobs), len(jobs))
        if workers <= 1:
            yield from map(_star_task, jobs)
            return
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from pool.imap_unordered(_star_task, jobs)
        return
    if backend == "fork":
        backend = "loky"
    client = None
    if scheduler_address is not None:
        from distributed import Client

        client = Client(scheduler_address)
        backend = "dask"
    try:
        if backend == "dask":
            cm = joblib.parallel_config(backend="dask")
        elif backend == "loky":
            # one BLAS thread per worker process (OPENBLAS_NUM_THREADS=1 and friends)
            cm = joblib.parallel_config(backend="loky", n_jobs=n_jobs, inner_max_num_threads=1)
        else:
            cm = joblib.parallel_config(backend=backend, n_jobs=n_jobs)
        with cm:
            par = joblib.Parallel(
                n_jobs=None if backend == "dask" else n_jobs, return_as="generator_unordered"
            )
            yield from par(joblib.delayed(_task)(*job) for job in jobs)
    finally:
        if client is not None:
            client.close()


def combine_estimates(frames: Iterable[pd.DataFrame], models: Sequence[str]) -> pd.DataFrame:
    """Estimates of the same replicates from separate runs, in the order of one run.

    :func:`run_simulation` orders its rows by design, replicate, condition (as
    :func:`conditions`), model (as its ``estimators``) and group. Runs of the same data with
    different estimators (e.g. the published simulation's OLS and hierarchical fits, reused
    by the sensitivity study, and the study's own) concatenated and put in that order give
    exactly the frame of one run with all the estimators.

    Parameters
    ----------
    frames : iterable of pandas.DataFrame
        Estimates from :func:`run_simulation` (same columns).
    models : sequence of str
        Every model of the frames, in the order of the combined run's ``estimators``.

    Returns
    -------
    pandas.DataFrame
    """
    out = pd.concat(list(frames), ignore_index=True)
    unknown = set(out["model"]) - set(models)
    if unknown:
        raise ValueError(f"models {sorted(unknown)} are not in {list(models)}")
    cond_rank = {
        (c.design, c.label): c.index for d in sorted(set(out["design"])) for c in conditions(d)
    }
    keys = pd.DataFrame(
        {
            "design": out["design"].to_numpy(),
            "replicate": out["replicate"].to_numpy(),
            "condition": [cond_rank[k] for k in zip(out["design"], out["condition"], strict=True)],
            "model": out["model"].map({m: i for i, m in enumerate(models)}).to_numpy(),
        }
    )
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return out.loc[order].reset_index(drop=True)


# ----------------------------------------------------------------------- summaries

_COND_COLS = ["design", "condition", "n_groups", "scenario", "model"]


def summarise(estimates: pd.DataFrame) -> pd.DataFrame:
    """Summarise estimates per design x condition x model.

    Every metric is first computed within a replicate (over its groups) and then
    averaged over replicates; its Monte Carlo standard error is the standard
    deviation over replicates over ``sqrt(R)`` (``nan`` for one replicate). This
    treats replicates, not group estimates, as the independent units: the groups of
    one replicate share a data set and a posterior of the scales.

    Parameters
    ----------
    estimates : pandas.DataFrame
        As returned by :func:`run_replicate` / :func:`run_simulation`.

    Returns
    -------
    pandas.DataFrame
        ``design``, ``condition``, ``n_groups``, ``scenario``, ``model``,
        ``rmse_mean`` (mean over replicates of the RMSE over groups) and
        ``rmse_mcse``, ``n_replicates``, ``rmse_one_replicate`` (the RMSE of the
        lowest-numbered replicate, normally 0: the published one-data-set design),
        ``coverage_90``, ``coverage_90_mcse``, ``coverage_95``,
        ``coverage_95_mcse`` (share of the intervals ``[q05, q95]`` and
        ``[q025, q975]`` that contain ``tau``), ``mean_abs_bias`` and
        ``mean_abs_bias_mcse`` (of ``|estimate - tau|``), ``n_missing`` (group
        estimates that were ``nan``, left out of every metric) and
        ``max_grid_edge_mass`` (largest quadrature edge mass of any fit; ``nan``
        where the estimator reports none).
    """
    e = estimates.copy()
    if "grid_edge_mass" not in e:
        e["grid_edge_mass"] = np.nan
    ok = e["estimate"].notna()
    e["sq_err"] = (e["estimate"] - e["tau"]) ** 2
    e["abs_bias"] = (e["estimate"] - e["tau"]).abs()
    e["cover_90"] = np.where(ok, (e["q05"] <= e["tau"]) & (e["tau"] <= e["q95"]), np.nan)
    e["cover_95"] = np.where(ok, (e["q025"] <= e["tau"]) & (e["tau"] <= e["q975"]), np.nan)
    e["missing"] = (~ok).astype(int)
    per_rep = (
        e.groupby([*_COND_COLS, "replicate"], sort=False)
        .agg(
            rmse=("sq_err", lambda v: float(np.sqrt(v.mean()))),
            coverage_90=("cover_90", "mean"),
            coverage_95=("cover_95", "mean"),
            mean_abs_bias=("abs_bias", "mean"),
            n_missing=("missing", "sum"),
            max_grid_edge_mass=("grid_edge_mass", "max"),
        )
        .reset_index()
    )
    grouped = per_rep.groupby(_COND_COLS, sort=False)
    out = grouped.agg(
        n_replicates=("replicate", "size"),
        n_missing=("n_missing", "sum"),
        max_grid_edge_mass=("max_grid_edge_mass", "max"),
    )
    for col in ("rmse", "coverage_90", "coverage_95", "mean_abs_bias"):
        out["rmse_mean" if col == "rmse" else col] = grouped[col].mean()
        out[f"{col}_mcse"] = grouped[col].std(ddof=1) / np.sqrt(out["n_replicates"])
    out = out.reset_index()
    per_rep = per_rep.sort_values("replicate", kind="stable")
    first = per_rep.groupby(_COND_COLS, sort=False)["rmse"].first()
    out["rmse_one_replicate"] = first.reindex(pd.MultiIndex.from_frame(out[_COND_COLS])).to_numpy()
    out = out[
        [*_COND_COLS, "rmse_mean", "rmse_mcse", "n_replicates", "rmse_one_replicate",
         "coverage_90", "coverage_90_mcse", "coverage_95", "coverage_95_mcse",
         "mean_abs_bias", "mean_abs_bias_mcse", "n_missing", "max_grid_edge_mass"]
    ]  # fmt: skip
    order = {name: i for i, name in enumerate(["equal", *IMBALANCE_SCENARIOS])}
    rank = out["scenario"].map(order).fillna(len(order))
    out = out.assign(_rank=rank).sort_values(
        ["design", "n_groups", "_rank", "model"], kind="stable"
    )
    return out.drop(columns="_rank").reset_index(drop=True)


def bias_by_group_size(
    estimates: pd.DataFrame, breaks: Sequence[float] = (0, 10, 20, 40, 75, 150, np.inf)
) -> pd.DataFrame:
    """Mean absolute bias by group size (Figure 4's quantity, binned).

    Parameters
    ----------
    estimates : pandas.DataFrame
        As returned by :func:`run_simulation`.
    breaks : sequence of float
        Bin edges of the group size ``n`` (right-closed bins).

    Returns
    -------
    pandas.DataFrame
        ``design``, ``condition``, ``n_groups``, ``scenario``, ``model``,
        ``size_bin``, ``n_estimates``, ``mean_abs_bias``, ``mcse`` (sd / sqrt of count).
    """
    e = estimates.loc[estimates["estimate"].notna()].copy()
    e["abs_bias"] = (e["estimate"] - e["tau"]).abs()
    e["size_bin"] = pd.cut(e["n"], bins=list(breaks), right=True).astype(str)
    out = (
        e.groupby([*_COND_COLS, "size_bin"], sort=False)["abs_bias"]
        .agg(n_estimates="size", mean_abs_bias="mean", sd="std")
        .reset_index()
    )
    out["mcse"] = out.pop("sd") / np.sqrt(out["n_estimates"])
    return out
