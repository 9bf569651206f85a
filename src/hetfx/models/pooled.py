"""The lambda model through the exact engine: :func:`fit_exact_lambda`.

``y_i = [alpha_g[i]] + lambda_g[i] T_i + X_i beta + e_i`` with ``lambda_g = Z_g gamma +
theta_g``, ``theta_g ~ N(0, sigma_theta)``, for each way of giving the cells their
baselines (the ``baselines`` of :func:`hetfx.fit`):

``"none"``, ``"additive"``
    One block column, ``c_g = theta_g`` (``R = T``), ``a = (beta, gamma)``, ``A = [X, T Z_g]``.
``"fixed"``
    The same on data centred within the cells (a flat-prior baseline per cell integrates out
    exactly so; ``X`` has no constant column), with ``G`` residual degrees of freedom removed.
``"pooled"``
    Two block columns, ``c_g = (alpha_g, theta_g)`` (``R = [1, T]``, or ``[sqrt(w), T]`` for
    weighted rows), ``alpha_g ~ N(0, sigma_alpha)`` independent of ``theta_g``.
``"correlated"``
    As ``"pooled"`` with ``(alpha_g, theta_g) ~ N(0, Sigma)``, correlation ``rho`` with an
    LKJ(``lkj_eta``) prior (brms's ``(1 + T | cell)``).

Every model is a :class:`~hetfx.models.exact.BlockModel`, integrated by
:func:`~hetfx.models.exact.fit_block_model`; every summary is the exact mixture over the grid.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from hetfx.inference import Diagnostics, compute_diagnostics, summarise_coefs
from hetfx.models.baselines import demean_within
from hetfx.models.exact import (
    DRAW_BITS,
    BlockModel,
    BlockPosterior,
    _quantise_columns,
    fit_block_model,
)
from hetfx.models.gaussian import ScalePrior
from hetfx.models.lambda_model import (
    _SUMMARY_PROBS,
    LambdaData,
    LambdaFit,
    _idata_from_draws,
    prepare_lambda_data,
)

__all__ = [
    "BASELINE_MODELS",
    "ExactLambdaFit",
    "LambdaPosterior",
    "PooledFit",
    "fit_exact_lambda",
    "lambda_block_model",
]

#: The ``baselines`` values :func:`fit_exact_lambda` fits.
BASELINE_MODELS = ("none", "additive", "fixed", "pooled", "correlated")


def lambda_block_model(
    d: LambdaData,
    baselines: str = "pooled",
    *,
    gamma_sd: float = 1.0,
    beta_sd=1.0,
    sigma_prior: ScalePrior | None = None,
    sigma_theta_prior: ScalePrior | None = None,
    sigma_alpha_prior: ScalePrior | None = None,
    lkj_eta: float = 1.0,
    base: np.ndarray | None = None,
) -> BlockModel:
    """The :class:`~hetfx.models.exact.BlockModel` of the lambda model with ``baselines``.

    ``base`` is each row's regressor of its baseline (1, or ``sqrt(w)`` for weighted rows).
    The block columns are ``(alpha, theta)`` with baselines in the model, else ``theta``.
    """
    if baselines not in BASELINE_MODELS:
        raise ValueError(f"baselines must be one of {BASELINE_MODELS}, got {baselines!r}")
    default = ScalePrior.brms_default()
    X = d.X.to_numpy(dtype=float)
    Z = d.Z.to_numpy(dtype=float)
    G, (n, p) = len(Z), X.shape
    y, t, g = d.y, d.treat, d.group
    dof = 0
    if baselines == "fixed":
        if p and np.any(np.ptp(X, axis=0) == 0):
            raise ValueError("X has a constant column; the group baselines replace the intercept")
        # the group sums by bincount, row by row in order as the sparse indicator's product
        # summed them (the same bits; 0.3 ms of a 2,000-row fit's set-up less, measured)
        y, t, X = demean_within(y, g, G), demean_within(t, g, G), demean_within(X, g, G)
        dof = G
    A = np.hstack([X, t[:, None] * Z[g]])
    coef_sd = np.concatenate(
        [np.broadcast_to(np.asarray(beta_sd, dtype=float), (p,)), np.full(Z.shape[1], gamma_sd)]
    )
    E = np.hstack([np.zeros((G, p)), Z])
    st_prior = sigma_theta_prior or default
    if baselines in ("pooled", "correlated"):
        b0 = np.ones(n) if base is None else np.asarray(base, dtype=float)
        R, priors = np.column_stack([b0, t]), [sigma_alpha_prior or default, st_prior]
    else:
        R, priors = t, [st_prior]
    return BlockModel(
        y,
        A,
        g,
        R,
        n_groups=G,
        coef_sd=coef_sd,
        sigma_prior=sigma_prior or default,
        block_priors=priors,
        correlated=baselines == "correlated",
        lkj_eta=lkj_eta,
        dof_offset=dof,
        effect_coefs=E,
    )


class LambdaPosterior:
    """The exact posterior of the lambda model in its own terms (``beta``, ``gamma``,
    ``lambda``, ``alpha``, the scales): the interface of the quadrature posteriors that
    :class:`~hetfx.models.lambda_model.LambdaFit` and :class:`ScaledPosterior
    <hetfx.models.lambda_model.ScaledPosterior>` use.

    Parameters
    ----------
    post : BlockPosterior
        The engine's posterior.
    p : int
        Number of controls (``a = (beta, gamma)``, ``beta`` first).
    """

    def __init__(self, post: BlockPosterior, p: int) -> None:
        self.post, self.model, self.p = post, post.model, int(p)
        self.grid, self.nodes, self.weights = post.grid, post.nodes, post.weights

    @property
    def scale_names(self) -> list[str]:
        """Scales in :meth:`summarise_scales`'s order."""
        md = self.model
        names = ["sigma", "sigma_theta"] + (["sigma_alpha"] if md.b == 2 else [])
        return names + (["rho"] if md.correlated else [])

    def summarise_lambda(self, W=None, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """Exact summaries of every ``lambda_g``, or of the combinations ``W @ lambda``."""
        if W is None:
            return self.post.summarise("effects", probs=probs)
        md = self.model
        W = np.atleast_2d(np.asarray(W, dtype=float))
        Wc = [sparse.csr_matrix(W.shape) for _ in range(md.b)]
        Wc[md.effect_col] = sparse.csr_matrix(W)
        return self.post.summarise("combo", (W @ md.effect_coefs, Wc), probs)

    def summarise_coefs(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """Exact summaries of ``beta`` then ``gamma``."""
        return self.post.summarise("coefs", probs=probs)

    def summarise_alpha(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """Exact summaries of the cells' baselines ``alpha_g`` (pooled models only)."""
        if self.model.b != 2:
            raise ValueError("the model has no pooled cell baselines")
        return self.post.summarise("block0", probs=probs)

    def summarise_scales(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """``sigma``, ``sigma_theta`` (then ``sigma_alpha`` and ``rho``)."""
        s = self.post.summarise_scales(probs)
        order = [0, 2, 1, *range(3, len(s))] if self.model.b == 2 else [0, 1]
        return s.iloc[order].reset_index(drop=True)

    def draws(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """Exact draws in the lambda model's names."""
        md = self.model
        dr = self.post.draws(n, seed)
        p = self.p
        out = {
            "beta": dr["a"][:, :p],
            "gamma": dr["a"][:, p:],
            "theta": dr["c"][:, :, -1],
            "lambda": dr["effect"],
        }
        if md.b == 2:
            out["alpha"] = dr["c"][:, :, 0]
        for name in self.scale_names:
            col = {"sigma": 0, "sigma_theta": md.b, "sigma_alpha": 1, "rho": 3}[name]
            x = dr["u"][:, col]
            out[name] = _quantise_columns(np.tanh(x) if name == "rho" else np.exp(x), DRAW_BITS)
        return out


@dataclasses.dataclass
class ExactLambdaFit(LambdaFit):
    """:class:`~hetfx.models.lambda_model.LambdaFit` of the exact engine. With ``draws=0``
    ``idata`` is None: the exact summaries (:meth:`group_effects`, :meth:`coefs`,
    :meth:`summarise_lambda`, :meth:`diagnostics`) work, anything that needs draws raises."""

    baselines: str = "pooled"

    def _lambda_draws(self) -> np.ndarray:
        if self.idata is None:
            raise ValueError("this fit has no draws (draws=0): refit with draws > 0")
        return super()._lambda_draws()

    def coefs(self) -> pd.DataFrame:
        """Coefficient table (``effect``, ``control``, ``scale``): exact ``mean`` to
        ``q975``; ``r_hat`` and ``ess_bulk`` of the draws (NaN without draws)."""
        probs = (0.025, 0.975)
        post = self.posterior
        co = post.summarise_coefs(probs=probs)
        p = self.data.X.shape[1]
        scales = post.summarise_scales(probs)
        names = post.scale_names
        table = pd.concat(
            [
                co.iloc[p:].assign(equation="effect", term=[str(c) for c in self.data.Z.columns]),
                co.iloc[:p].assign(equation="control", term=[str(c) for c in self.data.X.columns]),
                scales.assign(equation="scale", term=names),
            ],
            ignore_index=True,
        )
        if self.idata is not None:
            post_ = self.idata.posterior
            eq = {"effect": ["gamma"], "control": ["beta"], "scale": names}
            eq = {k: [v for v in vs if post_[v].size] for k, vs in eq.items()}
            d = summarise_coefs(self.idata, {k: vs for k, vs in eq.items() if vs})
            table["r_hat"], table["ess_bulk"] = d["r_hat"].to_numpy(), d["ess_bulk"].to_numpy()
        else:
            table["r_hat"] = table["ess_bulk"] = np.nan
        cols = ["equation", "term", "mean", "sd", "q025", "q975", "r_hat", "ess_bulk"]
        return table[cols]


@dataclasses.dataclass
class PooledFit(LambdaFit):
    """:class:`~hetfx.models.lambda_model.LambdaFit` of the pooled-baselines model sampled by
    NUTS: the posterior also holds ``alpha[group]`` and ``sigma_alpha``, which :meth:`coefs`
    reports among the scales (from the draws)."""

    def coefs(self) -> pd.DataFrame:
        """Coefficient table as :meth:`LambdaFit.coefs`, with ``sigma_alpha``."""
        scales = ["sigma", "sigma_theta", "sigma_alpha"]
        return summarise_coefs(
            self.idata, {"effect": ["gamma"], "control": ["beta"], "scale": scales}
        )


def _record(idata, post, chains: int, edge: float, monitor: bool, clock) -> Diagnostics:
    """The fit's diagnostics: R-hat and ESS of the draws (of the groups' effects too where
    ``monitor``), or, without draws, a record of the grid alone."""
    t0, t1, t2 = clock
    if idata is None:
        return _no_draws_record(chains, t2 - t0, t2 - t1, edge)
    return compute_diagnostics(
        idata,
        "quadrature",
        var_names=["beta", "gamma", *post.scale_names, *(["lambda"] if monitor else [])],
        wall_seconds=time.perf_counter() - t0,
        compile_seconds=t1 - t0,
        sampling_seconds=t2 - t1,
        grid_edge_mass=edge,
    )


def _no_draws_record(chains: int, wall: float, t_grid: float, edge: float) -> Diagnostics:
    return Diagnostics(
        sampler="quadrature",
        chains=chains,
        draws=0,
        max_r_hat=float("nan"),
        min_ess_bulk=float("nan"),
        min_ess_tail=float("nan"),
        divergences=0,
        wall_seconds=wall,
        compile_seconds=0.0,
        sampling_seconds=t_grid,
        worst_r_hat_param="no draws (exact summaries)",
        worst_ess_bulk_param="no draws (exact summaries)",
        worst_ess_tail_param="no draws (exact summaries)",
        grid_edge_mass=edge,
    )


def fit_exact_lambda(
    y,
    treat,
    X,
    group,
    Z,
    *,
    baselines: str = "pooled",
    group_keys: pd.DataFrame | None = None,
    group_name: str = "group",
    gamma_sd: float = 1.0,
    beta_sd: float | Sequence[float] = 1.0,
    sigma_prior: ScalePrior | None = None,
    sigma_theta_prior: ScalePrior | None = None,
    sigma_alpha_prior: ScalePrior | None = None,
    lkj_eta: float = 1.0,
    base: np.ndarray | None = None,
    chains: int = 4,
    draws: int = 1000,
    seed: int = 0,
    grid: dict | None = None,
    monitor_groups: bool | None = None,
) -> ExactLambdaFit:
    """Fit the lambda model with ``baselines`` by the exact engine (see the module notes).

    Parameters are those of :func:`hetfx.models.lambda_model.fit_lambda_model` (``beta_sd``
    may be ``inf``: a flat prior), plus ``baselines`` (:data:`BASELINE_MODELS`),
    ``sigma_alpha_prior`` and ``lkj_eta`` (pooled and correlated baselines), ``base`` (each
    row's regressor of its baseline: 1, or ``sqrt(w)`` for weighted rows), ``grid``
    (overrides of :data:`hetfx.models.exact.GRIDS`) and ``monitor_groups`` (R-hat and ESS of
    every group effect as well as of the coefficients; default: up to 1,000 groups).
    ``draws=0`` makes no draws: ``idata`` is None and only the exact summaries are there.

    Returns
    -------
    ExactLambdaFit
    """
    if draws:
        # the draws become an arviz InferenceData: arviz's first import in a process costs
        # about 2 s of CPU (matplotlib, scipy.stats and a numba compilation of its own), which
        # is not the fit's time (the first fit of a stage, M1's, reported 1.6 s for 0.07 s)
        import arviz  # noqa: F401
    t0 = time.perf_counter()
    d = prepare_lambda_data(y, treat, X, group, Z, group_keys, group_name)
    model = lambda_block_model(
        d,
        baselines,
        gamma_sd=gamma_sd,
        beta_sd=beta_sd,
        sigma_prior=sigma_prior,
        sigma_theta_prior=sigma_theta_prior,
        sigma_alpha_prior=sigma_alpha_prior,
        lkj_eta=lkj_eta,
        base=base,
    )
    t1 = time.perf_counter()
    bf = fit_block_model(model, draws=0, chains=chains, seed=seed, grid=grid)
    post = LambdaPosterior(bf.posterior, d.X.shape[1])
    idata = None
    edge = bf.grid.edge_mass
    if draws:
        idata = _idata_from_draws(post.draws(chains * draws, seed), d, chains)
        idata.attrs = {
            "engine": "quadrature",
            "grid_edge_mass": edge,
            "grid_points": len(bf.grid.weights),
        }
    monitor = model.G <= 1000 if monitor_groups is None else monitor_groups
    diag = _record(idata, post, chains, edge, monitor, (t0, t1, time.perf_counter()))
    return ExactLambdaFit(
        idata=idata,
        data=d,
        diagnostics_record=diag,
        engine="quadrature",
        posterior=post,
        baselines=baselines,
    )
