"""Diagnostics and tidy summaries shared by every Bayesian model of hetfx.

All models return their posterior as an :class:`arviz.InferenceData` with a ``chain`` and a
``draw`` dimension, so that R-hat and effective sample sizes are computed the same way for
every engine (NUTS via nutpie, or the exact quadrature / collapsed engines whose draws are
independent). This module turns such an object into

* a :class:`Diagnostics` record (one row of ``diagnostics.csv``, where the paper's pipeline
  leaves out the run times),
* a gate, :func:`check_diagnostics`, that raises :class:`SamplerDiagnosticsError` naming
  the failing parameter and what to change, and its warning form, :func:`warn_diagnostics`,
  that every result of :func:`hetfx.fit` runs when it is built,
* the tidy frames of ``coefs.csv`` (:func:`summarise_coefs`) and ``groups.csv``
  (:func:`summarise_groups`),
* draws without arviz's creation time stamps (:func:`without_timestamps`), so that the same
  draws written with ``to_netcdf`` give the same bytes.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # imported where used: a stage that needs no posterior loads neither
    import arviz as az
    import xarray as xr

__all__ = [
    "Diagnostics",
    "DiagnosticsWarning",
    "EXACT_ENGINES",
    "GATE",
    "SamplerDiagnosticsError",
    "check_diagnostics",
    "compute_diagnostics",
    "diagnostic_problems",
    "draws_matrix",
    "flat_names",
    "summarise_coefs",
    "summarise_draws",
    "summarise_groups",
    "GROUP_QUANTILES",
    "mixture_moments",
    "mixture_quantiles",
    "quantile_name",
    "run_nutpie",
    "sample_nutpie",
    "rhat_ess",
    "sinc_quantiles",
    "warn_diagnostics",
    "without_timestamps",
]

#: Attributes arviz stamps on every group of an InferenceData it builds or concatenates: the
#: wall-clock time of the run, not a property of the draws.
TIMESTAMP_ATTRS = ("created_at", "previous_created_at")

#: Quantiles reported for every group effect (``groups.csv``).
GROUP_QUANTILES = {"q025": 0.025, "q10": 0.10, "q90": 0.90, "q975": 0.975}


def quantile_name(p: float) -> str:
    """Column name of a quantile in the tidy frames: 0.025 -> ``q025``, 0.05 -> ``q05``,
    0.1 -> ``q10``, 0.5 -> ``q50``, 0.975 -> ``q975``."""
    pct = round(100 * float(p), 6)
    if pct == int(pct):
        return f"q{int(pct):02d}"
    text = f"{pct:.6f}".rstrip("0").replace(".", "")
    return "q" + ("0" + text if pct < 10 else text)


class SamplerDiagnosticsError(RuntimeError):
    """A posterior failed the convergence gate of :func:`check_diagnostics`."""


@dataclasses.dataclass
class Diagnostics:
    """Convergence and cost record of one fit (one row of ``diagnostics.csv``; the paper's
    pipeline writes the run times, which change on every run, to a file it does not commit).

    Attributes
    ----------
    sampler : str
        Engine name, e.g. ``"nutpie"``, ``"quadrature"``, ``"collapsed_nuts"``.
    chains, draws : int
        Number of chains and of retained draws per chain.
    max_r_hat : float
        Largest rank-normalised split R-hat over all monitored scalars.
    min_ess_bulk, min_ess_tail : float
        Smallest bulk and tail effective sample size.
    divergences : int
        Number of divergent transitions after warm-up (0 for exact engines).
    wall_seconds, compile_seconds, sampling_seconds : float
        Total wall time of the fit and its compile and sampling parts.
    worst_r_hat_param, worst_ess_bulk_param, worst_ess_tail_param : str
        Names (``var[label]``) of the scalars attaining the extremes above.
    grid_edge_mass : float
        Quadrature engine only: posterior mass on the boundary of the integration grid
        (NaN for samplers).
    pareto_k : float
        Importance-sampling engines only (``qmc``): Pareto k-hat of the weights (NaN
        otherwise). Such a fit has no chains, so ``max_r_hat`` is NaN and the ESS fields
        hold the effective sample size of the weights.
    """

    sampler: str
    chains: int
    draws: int
    max_r_hat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    wall_seconds: float = float("nan")
    compile_seconds: float = float("nan")
    sampling_seconds: float = float("nan")
    worst_r_hat_param: str = ""
    worst_ess_bulk_param: str = ""
    worst_ess_tail_param: str = ""
    grid_edge_mass: float = float("nan")
    pareto_k: float = float("nan")

    def to_frame(self) -> pd.DataFrame:
        """Return the record as a one-row :class:`pandas.DataFrame`."""
        return pd.DataFrame([dataclasses.asdict(self)])

    @classmethod
    def importance_sampling(
        cls,
        points: int,
        ess: float,
        pareto_k: float,
        wall_seconds: float,
        compile_seconds: float,
        sampling_seconds: float,
        grid_edge_mass: float = float("nan"),
    ) -> Diagnostics:
        """The record of a ``qmc`` fit: one weighted point set, no chains (R-hat NaN), the
        weights' effective sample size in both ESS fields and their Pareto k-hat."""
        return cls(
            sampler="qmc",
            chains=1,
            draws=points,
            max_r_hat=float("nan"),
            min_ess_bulk=ess,
            min_ess_tail=ess,
            divergences=0,
            wall_seconds=wall_seconds,
            compile_seconds=compile_seconds,
            sampling_seconds=sampling_seconds,
            worst_r_hat_param="",
            worst_ess_bulk_param="importance weights",
            worst_ess_tail_param="importance weights",
            grid_edge_mass=grid_edge_mass,
            pareto_k=pareto_k,
        )


def without_timestamps(idata: az.InferenceData) -> az.InferenceData:
    """The same draws without the creation times arviz stores in each group's attributes.

    arviz stamps ``created_at`` (the wall-clock time) on every group it builds, and
    ``to_netcdf`` writes it, so two runs that draw the same numbers would write different
    files (and a pipeline that hashes them, e.g. DVC, would record a change). The netCDF/HDF5
    layer itself adds no time stamp (h5py leaves object times untracked), so without these
    attributes the same draws give byte-identical files.

    Parameters
    ----------
    idata : arviz.InferenceData
        Draws as an engine returns them (left unchanged).

    Returns
    -------
    arviz.InferenceData
        A shallow copy (the arrays are shared) whose groups, and the object itself, carry no
        attribute of :data:`TIMESTAMP_ATTRS`; every other attribute (``arviz_version``,
        engine settings) is kept.
    """
    import arviz as az

    def strip(attrs: Mapping) -> dict:
        return {k: v for k, v in attrs.items() if k not in TIMESTAMP_ATTRS}

    groups = {}
    for name in idata.groups():
        group = getattr(idata, name).copy(deep=False)
        group.attrs = strip(group.attrs)
        groups[name] = group
    return az.InferenceData(attrs=strip(getattr(idata, "attrs", {}) or {}), **groups)


def flat_names(da: xr.DataArray) -> list[str]:
    """Scalar names ``var[label,...]`` of a posterior variable, in C order of its extra dims."""
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    if not extra:
        return [str(da.name)]
    labels = [
        [str(v) for v in da.coords[d].values]
        if d in da.coords
        else [str(i) for i in range(da.sizes[d])]
        for d in extra
    ]
    idx = pd.MultiIndex.from_product(labels) if len(labels) > 1 else labels[0]
    if len(labels) > 1:
        return [f"{da.name}[{','.join(t)}]" for t in idx]
    return [f"{da.name}[{t}]" for t in idx]


def draws_matrix(da: xr.DataArray) -> np.ndarray:
    """Draws of a posterior variable as a ``(chain, draw, k)`` array (k scalars)."""
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    arr = da.transpose("chain", "draw", *extra).values
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def _posterior(idata: az.InferenceData | xr.Dataset) -> xr.Dataset:
    import xarray as xr

    if isinstance(idata, xr.Dataset):
        return idata
    if not hasattr(idata, "posterior"):
        raise ValueError("InferenceData has no posterior group")
    return idata.posterior


def summarise_draws(
    idata: az.InferenceData | xr.Dataset, var_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean, sd, 2.5/97.5% quantiles, R-hat and bulk/tail ESS of every posterior scalar.

    R-hat and ESS are arviz's rank-normalised statistics, computed by :func:`rhat_ess`
    (vectorised; equal to :func:`arviz.rhat` / :func:`arviz.ess` to rounding).

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.Dataset
        Posterior with ``chain`` and ``draw`` dimensions.
    var_names : sequence of str, optional
        Variables to summarise (default: all).

    Returns
    -------
    pandas.DataFrame
        One row per scalar, columns ``var``, ``name``, ``label``, ``mean``, ``sd``,
        ``q025``, ``q975``, ``r_hat``, ``ess_bulk``, ``ess_tail``.
    """
    post = _posterior(idata)
    names = list(post.data_vars) if var_names is None else list(var_names)
    rows = []
    for v in names:
        da = post[v]
        arr = draws_matrix(da)
        rhat, eb, et = rhat_ess(arr)
        flat = arr.reshape(-1, arr.shape[-1])
        q = np.quantile(flat, [0.025, 0.975], axis=0)
        nm = flat_names(da)
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        labels = [n[len(v) + 1 : -1] if extra else "" for n in nm]
        rows.append(
            pd.DataFrame(
                {
                    "var": v,
                    "name": nm,
                    "label": labels,
                    "mean": flat.mean(axis=0),
                    "sd": flat.std(axis=0, ddof=1),
                    "q025": q[0],
                    "q975": q[1],
                    "r_hat": rhat,
                    "ess_bulk": eb,
                    "ess_tail": et,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _convergence_stats(
    idata: az.InferenceData | xr.Dataset, var_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """``name``, ``r_hat``, ``ess_bulk``, ``ess_tail`` of every posterior scalar: the columns
    of :func:`summarise_draws` that :func:`compute_diagnostics` needs (the quantiles and
    moments of thousands of group effects cost as much again)."""
    post = _posterior(idata)
    names = list(post.data_vars) if var_names is None else list(var_names)
    rows = []
    for v in names:
        da = post[v]
        rhat, eb, et = rhat_ess(draws_matrix(da))
        rows.append(
            pd.DataFrame({"name": flat_names(da), "r_hat": rhat, "ess_bulk": eb, "ess_tail": et})
        )
    return pd.concat(rows, ignore_index=True)


def compute_diagnostics(
    idata: az.InferenceData,
    sampler: str,
    *,
    var_names: Sequence[str] | None = None,
    wall_seconds: float = float("nan"),
    compile_seconds: float = float("nan"),
    sampling_seconds: float = float("nan"),
    grid_edge_mass: float = float("nan"),
) -> Diagnostics:
    """Compute a :class:`Diagnostics` record from an InferenceData.

    Parameters
    ----------
    idata : arviz.InferenceData
        Posterior (and, for samplers, ``sample_stats`` with ``diverging``).
    sampler : str
        Engine name stored in the record.
    var_names : sequence of str, optional
        Variables monitored (default: all posterior variables). Scalars that are constant
        across all draws (R-hat undefined) are ignored. With one chain R-hat is unavailable:
        ``max_r_hat`` is NaN and ``worst_r_hat_param`` says so.
    wall_seconds, compile_seconds, sampling_seconds, grid_edge_mass : float
        Stored as given.

    Returns
    -------
    Diagnostics
    """
    s = _convergence_stats(idata, var_names)
    post = _posterior(idata)
    one_chain = int(post.sizes["chain"]) < 2  # split R-hat across chains needs two
    s = s[np.isfinite(s["ess_bulk" if one_chain else "r_hat"].to_numpy(dtype=float))]
    if s.empty:
        raise ValueError("no monitored posterior scalar has a finite R-hat")
    i_b = int(np.argmin(s["ess_bulk"].to_numpy()))
    i_t = int(np.argmin(s["ess_tail"].to_numpy()))
    if one_chain:
        r_max, r_name = float("nan"), RHAT_UNAVAILABLE
    else:
        i_r = int(np.argmax(s["r_hat"].to_numpy()))
        r_max, r_name = float(s["r_hat"].iloc[i_r]), str(s["name"].iloc[i_r])
    div = 0
    if hasattr(idata, "sample_stats") and "diverging" in idata.sample_stats:
        div = int(np.asarray(idata.sample_stats["diverging"].values).sum())
    return Diagnostics(
        sampler=sampler,
        chains=int(post.sizes["chain"]),
        draws=int(post.sizes["draw"]),
        max_r_hat=r_max,
        min_ess_bulk=float(s["ess_bulk"].iloc[i_b]),
        min_ess_tail=float(s["ess_tail"].iloc[i_t]),
        divergences=div,
        wall_seconds=float(wall_seconds),
        compile_seconds=float(compile_seconds),
        sampling_seconds=float(sampling_seconds),
        worst_r_hat_param=r_name,
        worst_ess_bulk_param=str(s["name"].iloc[i_b]),
        worst_ess_tail_param=str(s["name"].iloc[i_t]),
        grid_edge_mass=float(grid_edge_mass),
    )


#: ``worst_r_hat_param`` of a fit with one chain (split R-hat across chains needs two).
RHAT_UNAVAILABLE = "unavailable with 1 chain"

#: Thresholds of the gate every result of :func:`hetfx.fit` and
#: :func:`hetfx.fit_varying_slopes` runs (:func:`warn_diagnostics`), as in brms and
#: Vehtari et al. (2021): R-hat, bulk ESS, divergent transitions, Pareto k-hat of importance
#: weights, posterior mass on a quadrature grid's edge.
GATE = {
    "max_r_hat": 1.01,
    "min_ess_bulk": 400,
    "allow_divergences": 0,
    "max_pareto_k": 0.7,
    "max_grid_edge_mass": 1e-3,
}

#: Engines whose draws are independent draws of an exact posterior and whose summaries are
#: computed without them: R-hat and ESS of their draws measure no convergence, so the
#: warning gate leaves them out (:func:`check_diagnostics` still applies them).
EXACT_ENGINES = ("quadrature",)


def diagnostic_problems(
    diag: Diagnostics,
    max_r_hat: float = GATE["max_r_hat"],
    min_ess_bulk: float = GATE["min_ess_bulk"],
    allow_divergences: int = GATE["allow_divergences"],
    *,
    min_ess_tail: float | None = None,
    max_grid_edge_mass: float = GATE["max_grid_edge_mass"],
    max_pareto_k: float = GATE["max_pareto_k"],
    draws_checked: bool = True,
) -> list[str]:
    """The failed checks of the convergence gate, one sentence each naming the parameter and
    the threshold (empty when the fit passes); see :func:`check_diagnostics`.

    ``draws_checked=False`` leaves out R-hat and the ESS (engines of :data:`EXACT_ENGINES`).
    A NaN R-hat fails unless the fit is an importance sample (finite ``pareto_k``) or has one
    chain (``worst_r_hat_param`` is :data:`RHAT_UNAVAILABLE`: not a failure).
    """
    problems = []
    if np.isfinite(diag.pareto_k) and diag.pareto_k > max_pareto_k:
        problems.append(
            f"Pareto k-hat of the importance weights {diag.pareto_k:.2f} > {max_pareto_k}"
        )
    unavailable = np.isfinite(diag.pareto_k) or diag.worst_r_hat_param == RHAT_UNAVAILABLE
    if not draws_checked or (unavailable and np.isnan(diag.max_r_hat)):
        pass  # no chains: k-hat and the weights' ESS stand in for R-hat
    elif not np.isfinite(diag.max_r_hat) or diag.max_r_hat > max_r_hat:
        problems.append(f"R-hat {diag.max_r_hat:.3f} > {max_r_hat} for {diag.worst_r_hat_param}")
    if draws_checked and (not np.isfinite(diag.min_ess_bulk) or diag.min_ess_bulk < min_ess_bulk):
        problems.append(
            f"bulk ESS {diag.min_ess_bulk:.0f} < {min_ess_bulk} for {diag.worst_ess_bulk_param}"
        )
    if (
        draws_checked
        and min_ess_tail is not None
        and (not np.isfinite(diag.min_ess_tail) or diag.min_ess_tail < min_ess_tail)
    ):
        problems.append(
            f"tail ESS {diag.min_ess_tail:.0f} < {min_ess_tail} for {diag.worst_ess_tail_param}"
        )
    if diag.divergences > allow_divergences:
        problems.append(f"{diag.divergences} divergent transitions (> {allow_divergences})")
    if np.isfinite(diag.grid_edge_mass) and diag.grid_edge_mass > max_grid_edge_mass:
        problems.append(
            f"quadrature grid edge holds {diag.grid_edge_mass:.2g} of the posterior mass "
            f"(> {max_grid_edge_mass}); widen the grid (grid_width) or use more points"
        )
    return problems


def check_diagnostics(
    diag: Diagnostics,
    max_r_hat: float = 1.01,
    min_ess_bulk: float = 400,
    allow_divergences: int = 0,
    advice: str = "raise target_accept (the original used .95 for M1/A1, .99 with tree "
    "depth 15 for Bush-Prather) or draw more samples",
    *,
    min_ess_tail: float | None = None,
    max_grid_edge_mass: float = 1e-3,
    max_pareto_k: float = 0.7,
) -> Diagnostics:
    """Raise :class:`SamplerDiagnosticsError` if a fit fails the convergence gate.

    Parameters
    ----------
    diag : Diagnostics
        Record from :func:`compute_diagnostics` (or ``fit.diagnostics_record``).
    max_r_hat : float, default 1.01
        Largest acceptable R-hat (not checked with one chain, where
        :func:`compute_diagnostics` records it as unavailable).
    min_ess_bulk : float, default 400
        Smallest acceptable bulk ESS.
    allow_divergences : int, default 0
        Largest acceptable number of divergent transitions.
    advice : str
        What to change, appended to the error message.
    min_ess_tail : float, optional
        Smallest acceptable tail ESS (not checked if None).
    max_grid_edge_mass : float, default 1e-3
        Largest acceptable posterior mass on the quadrature grid edge (ignored if NaN).
    max_pareto_k : float, default 0.7
        Largest acceptable Pareto k-hat of importance weights. An importance-sampling fit
        (finite ``pareto_k``) is gated on k-hat and on the ESS of its weights instead of
        R-hat, which needs chains (its ``max_r_hat`` is NaN); any other NaN R-hat fails.

    Returns
    -------
    Diagnostics
        ``diag`` itself when every check passes.

    Raises
    ------
    SamplerDiagnosticsError
        Listing every failed check with the parameter concerned.
    """
    problems = diagnostic_problems(
        diag,
        max_r_hat,
        min_ess_bulk,
        allow_divergences,
        min_ess_tail=min_ess_tail,
        max_grid_edge_mass=max_grid_edge_mass,
        max_pareto_k=max_pareto_k,
    )
    if problems:
        raise SamplerDiagnosticsError(
            f"{diag.sampler} fit failed diagnostics ({diag.chains} chains x {diag.draws} "
            f"draws): " + "; ".join(problems) + f". Advice: {advice}."
        )
    return diag


class DiagnosticsWarning(UserWarning):
    """A fit failed the convergence gate of :func:`warn_diagnostics` (its numbers may not be
    trustworthy)."""


def _caller_outside_hetfx() -> int:
    """``stacklevel`` (for a :func:`warnings.warn` in the caller of this function) of the
    first frame outside the hetfx package: the user's line that led to the warning."""
    import inspect
    from pathlib import Path

    root = str(Path(__file__).resolve().parent)
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(root):
        frame, level = frame.f_back, level + 1
    return level


def warn_diagnostics(
    diag: Diagnostics, advice: str = "", stacklevel: int | None = None
) -> list[str]:
    """The gate every Bayesian result runs when it is built: warn (:class:`DiagnosticsWarning`,
    a ``UserWarning``) when R-hat, bulk ESS, divergences, the Pareto k-hat of importance
    weights or a quadrature grid's edge fail the thresholds of :data:`GATE`, naming the
    parameter and the threshold. R-hat and ESS are not checked for :data:`EXACT_ENGINES`.

    Parameters
    ----------
    diag : Diagnostics
        The fit's record.
    advice : str
        What to change, appended to the message.
    stacklevel : int, optional
        Passed to :func:`warnings.warn` (2: the caller of this function); default the first
        caller outside the hetfx package (the user's call of :func:`hetfx.fit`).

    Returns
    -------
    list of str
        The failed checks (empty when the fit passes; then nothing is warned).
    """
    problems = diagnostic_problems(diag, draws_checked=diag.sampler not in EXACT_ENGINES)
    if problems:
        warnings.warn(
            f"the {diag.sampler} fit ({diag.chains} chains x {diag.draws} draws) failed the "
            "diagnostics gate: " + "; ".join(problems) + (f". {advice}" if advice else "."),
            DiagnosticsWarning,
            stacklevel=_caller_outside_hetfx() if stacklevel is None else stacklevel,
        )
    return problems


# ------------------------------------------------------------------- tidy frames
def sample_nutpie(
    cache: dict,
    key,
    build: Callable[[], object],
    data: Mapping[str, object],
    *,
    chains: int,
    draws: int,
    tune: int,
    seed: int,
    target_accept: float,
    cores: int | None = None,
    **options,
):
    """Sample a PyMC model with nutpie, compiling it once per ``key``.

    The first call with a ``key`` compiles ``build()`` (mutable data, so later calls only swap
    ``data`` in with ``with_data``) and stores it in ``cache``; ``options`` go to
    :func:`nutpie.sample` (e.g. ``maxdepth``).

    Returns
    -------
    trace, t_compiled, t_sampled
        The nutpie trace and the :func:`time.perf_counter` stamps after compiling (or reusing)
        the model and after sampling, so that callers time from their own start.
    """
    import time

    import nutpie

    if key in cache:
        compiled = cache[key].with_data(**data)
    else:
        with warnings.catch_warnings():
            # nutpie compiles with numba, which needs no BLAS of PyTensor's: its warning that
            # it found none (pip installs) concerns nothing the user can act on
            warnings.filterwarnings(
                "ignore", message="PyTensor could not link to a BLAS", category=UserWarning
            )
            compiled = nutpie.compile_pymc_model(build(), freeze_model=False)
        cache[key] = compiled
    t_compiled = time.perf_counter()
    trace = run_nutpie(
        compiled,
        chains=chains,
        draws=draws,
        tune=tune,
        seed=seed,
        target_accept=target_accept,
        cores=cores,
        **options,
    )
    return trace, t_compiled, time.perf_counter()


def run_nutpie(
    compiled,
    *,
    chains: int,
    draws: int,
    tune: int,
    seed: int,
    target_accept: float,
    cores: int | None = None,
    **options,
):
    """:func:`nutpie.sample` of a compiled model with the project's conventions: no progress
    bar, and ``min(chains, 2)`` cores unless ``cores`` says otherwise; ``options`` go to
    nutpie (e.g. ``maxdepth``, ``low_rank_modified_mass_matrix``)."""
    import nutpie

    return nutpie.sample(
        compiled,
        chains=chains,
        draws=draws,
        tune=tune,
        seed=seed,
        target_accept=target_accept,
        progress_bar=False,
        cores=cores or min(chains, 2),
        **options,
    )


def summarise_coefs(idata: az.InferenceData, equations: dict[str, Iterable[str]]) -> pd.DataFrame:
    """Tidy coefficient table (``coefs.csv``).

    Parameters
    ----------
    idata : arviz.InferenceData
        Posterior.
    equations : dict
        Maps an equation name (``effect``, ``control``, ``scale``, ...) to posterior variable
        names. A vector variable contributes one row per label of its single extra
        dimension (the label is the term); a scalar variable contributes one row whose term
        is the variable name.

    Returns
    -------
    pandas.DataFrame
        Columns ``equation``, ``term``, ``mean``, ``sd``, ``q025``, ``q975``, ``r_hat``,
        ``ess_bulk``.
    """
    out = []
    for eq, names in equations.items():
        for v in names:
            s = summarise_draws(idata, [v])
            term = s["label"].where(s["label"] != "", s["var"])
            out.append(s.assign(equation=eq, term=term))
    res = pd.concat(out, ignore_index=True)
    return res[["equation", "term", "mean", "sd", "q025", "q975", "r_hat", "ess_bulk"]]


def summarise_groups(
    draws: np.ndarray,
    keys: pd.DataFrame,
    n_obs: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Tidy group-effect table (``groups.csv``) from draws of the effects.

    Parameters
    ----------
    draws : numpy.ndarray
        ``(n_draws, G)`` (or ``(chain, draw, G)``) draws of the group effects.
    keys : pandas.DataFrame
        G rows describing the groups (a ``group`` column and key columns); its row order
        matches the last axis of ``draws``.
    n_obs : array-like, optional
        Observations per group (column ``n_obs``).

    Returns
    -------
    pandas.DataFrame
        ``keys`` columns, ``n_obs``, ``estimate`` (posterior median), ``q025``, ``q10``,
        ``q90``, ``q975``.
    """
    d = np.asarray(draws, dtype=float)
    d = d.reshape(-1, d.shape[-1])
    if d.shape[1] != len(keys):
        raise ValueError(f"draws have {d.shape[1]} groups but keys have {len(keys)} rows")
    res = keys.reset_index(drop=True).copy()
    if n_obs is not None:
        res["n_obs"] = np.asarray(n_obs, dtype=int)
    qs = np.quantile(d, [0.5, *GROUP_QUANTILES.values()], axis=0)
    res["estimate"] = qs[0]
    for i, name in enumerate(GROUP_QUANTILES):
        res[name] = qs[i + 1]
    return res


# ------------------------------------------------------- exact mixture summaries
def mixture_quantiles(
    weights: np.ndarray,
    means: np.ndarray,
    sds: np.ndarray,
    probs: Sequence[float],
    *,
    xtol: float = 1e-12,
    max_iter: int = 200,
) -> np.ndarray:
    """Quantiles of finite mixtures of normals, solved from the mixture CDF.

    Each column ``i`` of ``means`` and ``sds`` defines the mixture
    ``sum_j weights[j] N(means[j, i], sds[j, i]^2)``; its quantile ``x`` at ``p`` solves
    ``sum_j weights[j] Phi((x - means[j, i]) / sds[j, i]) = p`` to ``xtol * (1 + |x|)``,
    from a Cornish-Fisher start (the mixture's skewness and excess kurtosis) inside a
    bracket of the root. With numba (a dependency of hetfx) a compiled kernel takes the
    CDF's Taylor polynomial of degree 8 at each point, moves to the polynomial's root and
    stops where the Taylor remainder proves the tolerance: one pass over the components
    per quantile, as a rule; each quantile is solved on its own, so its value does not
    depend on the other probabilities asked for. Without numba, Halley's method safeguarded
    by bisection, vectorised over columns and probabilities (about three times slower).
    Components of weight zero are left out.

    Parameters
    ----------
    weights : numpy.ndarray
        ``(J,)`` non-negative component weights (normalised here).
    means, sds : numpy.ndarray
        ``(J, N)`` component means and standard deviations (``sds > 0``).
    probs : sequence of float
        Probabilities in (0, 1).
    xtol : float, default 1e-12
        Relative tolerance of the root.
    max_iter : int, default 200
        Iteration cap (bisection alone needs about 60).

    Returns
    -------
    numpy.ndarray
        ``(len(probs), N)`` quantiles.

    Examples
    --------
    >>> import numpy as np
    >>> from hetfx.inference import mixture_quantiles
    >>> q = mixture_quantiles(np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]),
    ...                       np.ones((2, 1)), [0.025, 0.975])
    >>> q.round(6).ravel().tolist()
    [-2.646146, 2.646146]
    """
    w = np.asarray(weights, dtype=float)
    mu = np.asarray(means, dtype=float)
    sd = np.asarray(sds, dtype=float)
    if mu.ndim == 1:
        mu, sd = mu[:, None], sd[:, None]
    p = np.asarray(probs, dtype=float)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("probabilities must lie in (0, 1)")
    if np.any(w == 0):
        keep = w != 0
        w, mu, sd = w[keep], mu[keep], sd[keep]
    w = w / w.sum()
    try:
        from hetfx.models import _mixtures
    except ImportError:  # pragma: no cover - numba is a dependency
        _mixtures = None
    if _mixtures is None or _mixtures.numba is None or _NUMPY_QUANTILES:
        return _numpy_mixture_quantiles(w, mu, sd, p, xtol, max_iter)
    return _compiled_mixture_quantiles(_mixtures.quantiles, w, mu, sd, p, xtol, max_iter)


#: Solve with the numpy fallback even where numba is present (the tests compare the two).
_NUMPY_QUANTILES = False


def _compiled_mixture_quantiles(kernel, w, mu, sd, p, xtol, max_iter):
    """:func:`mixture_quantiles` by the compiled kernel, its mixtures split over threads
    for large problems (the kernel releases the GIL; the same numbers either way)."""
    from scipy.special import ndtri

    N = mu.shape[1]
    muT = np.ascontiguousarray(mu.T)
    sdT = np.ascontiguousarray(sd.T)
    args = (w, muT, sdT, 1.0 / sdT, p, ndtri(p), float(xtol), int(max_iter))
    out = np.empty((len(p), N))
    workers = min(_threads(mu.size * len(p)), N)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor
        from itertools import pairwise

        ends = np.linspace(0, N, workers + 1).astype(int)
        with ThreadPoolExecutor(workers) as pool:
            jobs = [pool.submit(kernel, *args, out, a, b) for a, b in pairwise(ends)]
            for job in jobs:
                job.result()
    else:
        kernel(*args, out, 0, N)
    return out


def _numpy_mixture_quantiles(w, mu, sd, p, xtol, max_iter):
    """:func:`mixture_quantiles` without numba: Halley's method safeguarded by bisection,
    vectorised over columns and probabilities, to ``xtol * (1 + |x|)``; from the
    Cornish-Fisher start the iteration usually ends after two passes over the components,
    where the error bound of Halley's cubic convergence meets the tolerance."""
    N = mu.shape[1]
    # columns are independent: blocks of about 1e5 work elements (probabilities x columns x
    # components) stay in cache (measured at 710 components and 128 columns, 7
    # probabilities: 34 ms in one block, 23 ms in blocks of 20 columns); large problems
    # spread their blocks over threads. The same numbers either way.
    size = max(4, int(1.2e5 // max(mu.shape[0] * len(p), 1)))

    def solve(cols: np.ndarray) -> np.ndarray:
        blocks = [cols[i : i + size] for i in range(0, len(cols), size)]
        res = [_mixture_quantiles(w, mu[:, c], sd[:, c], p, xtol, max_iter) for c in blocks]
        return np.concatenate(res, axis=1) if res else np.empty((len(p), 0))

    workers = _threads(mu.size * len(p))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        parts = np.array_split(np.arange(N), workers)
        with ThreadPoolExecutor(workers) as pool:
            return np.concatenate(list(pool.map(solve, parts)), axis=1)
    return solve(np.arange(N))


def _threads(work: int) -> int:
    """Threads for a vectorised computation of ``work`` elements (numpy and scipy release
    the GIL): up to 2 (the project's machines) for large ones, else 1."""
    import os

    return min(2, os.cpu_count() or 1) if work > 4_000_000 else 1


def _mixture_quantiles(w, mu, sd, p, xtol, max_iter):
    from scipy.special import ndtri

    P, N = len(p), mu.shape[1]
    mean = w @ mu
    d = mu - mean
    s2 = sd * sd
    d2 = d * d
    var = w @ (s2 + d2)
    # start: Cornish-Fisher expansion with the mixture's skewness and excess kurtosis (closed
    # form), so that two Halley steps usually reach the tolerance (d2 * d2, not d**4: numpy's
    # power is many times slower than a product)
    with np.errstate(divide="ignore", invalid="ignore"):
        g1 = (w @ (d * (d2 + 3 * s2))) / var**1.5
        g2 = (w @ (d2 * (d2 + 6 * s2) + 3 * s2 * s2)) / var**2 - 3
    g1 = np.where(np.isfinite(g1), g1, 0.0)
    g2 = np.where(np.isfinite(g2), g2, 0.0)
    z0 = ndtri(p)[:, None]
    z0 = z0 + (z0**2 - 1) * g1 / 6 + (z0**3 - 3 * z0) * g2 / 24 - (2 * z0**3 - 5 * z0) * g1**2 / 36
    col = np.tile(np.arange(N), P)
    target = np.repeat(p, N)
    x = (mean[None, :] + np.sqrt(var)[None, :] * z0).ravel()
    lo = np.tile((mu - 40 * sd).min(axis=0), P)
    hi = np.tile((mu + 40 * sd).max(axis=0), P)
    x = np.clip(x, lo, hi)
    active = np.arange(P * N)
    pred = np.zeros(P * N)  # the error the previous step predicted for its iterate
    # columns of the mixtures as rows (a gather of active columns copies contiguous rows)
    muT = np.ascontiguousarray(mu.T)
    isdT = np.ascontiguousarray((1.0 / sd).T)
    for _ in range(max_iter):
        if active.size == 0:
            break
        xa = x[active]
        if active.size == P * N:  # every column: broadcast, no gather
            parts = _mixture_cdf_derivatives(xa.reshape(P, N), muT, isdT, w)
            g, f, f1, f2 = (a.ravel() for a in parts)
        else:
            c = col[active]
            g, f, f1, f2 = _mixture_cdf_derivatives(xa, muT[c], isdT[c], w)
        g -= target[active]
        below = g < 0
        lo[active] = np.where(below, xa, lo[active])
        hi[active] = np.where(below, hi[active], xa)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # Halley's step where its correction of Newton's is small (near the root), else
            # Newton's; the error of its iterate, |(f1 / 2 f)^2 - f2 / 6 f| |step|^3 where
            # the iteration converges cubically
            newton = g / f
            t = newton * f1 / (2 * f)
            step = np.where(np.abs(t) <= 0.5, newton / (1 - t), newton)
            xn = xa - step
            err = np.abs((f1 / (2 * f)) ** 2 - f2 / (6 * f)) * np.abs(step) ** 3
        inside = (xn > lo[active]) & (xn < hi[active])
        tol = xtol * (1.0 + np.abs(xa))
        # a step below the tolerance ends the iteration even where rounding puts it on (or a
        # hair beyond) the end of the bracket it has just set: bisecting from there would
        # only halve the bracket to the tolerance, some 40 passes. So does a step inside
        # the bracket whose predicted error is below the tolerance, where the previous
        # step's prediction held (the iteration is in its cubic regime): a pass saved.
        cubic = inside & (np.abs(step) <= 10 * pred[active]) & (10 * err <= tol)
        conv = (np.abs(newton) <= tol) | cubic
        xn = np.where(inside | conv, xn, 0.5 * (lo[active] + hi[active]))
        done = conv | (hi[active] - lo[active] <= xtol * (1.0 + np.abs(xn)))
        x[active] = xn
        pred[active] = np.where(inside, err, 0.0)
        active = active[~done]
    return x.reshape(P, N)


def _mixture_cdf_derivatives(x, muT, isdT, w):
    """CDF and its first three derivatives of mixtures (rows of ``muT``, ``isdT``: component
    means and inverse SDs, broadcast against ``x[..., None]``) at ``x``: ``sum_j w_j
    Phi(z_j)``, ``sum_j w_j phi(z_j) / s_j``, ``-sum_j w_j phi(z_j) z_j / s_j^2`` and
    ``sum_j w_j phi(z_j) (z_j^2 - 1) / s_j^3``."""
    from scipy.special import ndtr

    wc = w / np.sqrt(2 * np.pi)
    z = x[..., None] - muT
    z *= isdT
    F = ndtr(z) @ w
    a = z * z
    a *= -0.5
    np.exp(a, out=a)
    a *= isdT
    f = a @ wc
    a *= isdT
    f2 = -((a * isdT) @ wc)
    a *= z
    f1 = -(a @ wc)
    a *= z
    a *= isdT
    f2 += a @ wc
    return F, f, f1, f2


def mixture_moments(
    weights: np.ndarray, means: np.ndarray, sds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of finite mixtures of normals (columns, as
    :func:`mixture_quantiles`)."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    mean = w @ means
    var = w @ (np.asarray(sds) ** 2 + (np.asarray(means) - mean) ** 2)
    return mean, np.sqrt(var)


def sinc_quantiles(
    nodes: np.ndarray,
    masses: np.ndarray,
    probs: Sequence[float],
    *,
    xtol: float = 1e-12,
    max_iter: int = 200,
) -> np.ndarray:
    """Quantiles of a smooth 1-D density known through its masses on an equispaced grid.

    The density is the sinc (Whittaker) interpolant of the node values ``masses / h``: the
    interpolant that makes the trapezoid rule exact, and that converges exponentially for
    an analytic, rapidly decaying density. Its CDF is
    ``F(x) = sum_i masses[i] (1/2 + Si(pi (x - nodes[i]) / h) / pi)``, solved for each
    probability by safeguarded Newton steps as :func:`mixture_quantiles`.

    Parameters
    ----------
    nodes : numpy.ndarray
        ``(n,)`` equispaced nodes (step ``h``).
    masses : numpy.ndarray
        ``(n,)`` node masses (normalised here).
    probs : sequence of float
        Probabilities in (0, 1).

    Returns
    -------
    numpy.ndarray
        ``(len(probs),)`` quantiles.
    """
    from scipy.special import sici

    u = np.asarray(nodes, dtype=float)
    m = np.asarray(masses, dtype=float)
    m = m / m.sum()
    if len(u) < 2:
        return np.full(len(probs), u[0] if len(u) else np.nan)
    h = (u[-1] - u[0]) / (len(u) - 1)
    keep = m > 1e-17
    u, m = u[keep], m[keep]
    out = []
    cdf = np.cumsum(m)
    for p in np.asarray(probs, dtype=float):
        lo, hi = u[0] - 5 * h, u[-1] + 5 * h
        x = u[min(np.searchsorted(cdf, p), len(u) - 1)]
        for _ in range(max_iter):
            t = np.pi * (x - u) / h
            F = m @ (0.5 + sici(t)[0] / np.pi)
            f = m @ np.sinc(t / np.pi) / h
            if F < p:
                lo = x
            else:
                hi = x
            xn = x - (F - p) / f if f > 0 else np.nan
            if not (lo < xn < hi):
                xn = 0.5 * (lo + hi)
            tol = xtol * (1.0 + abs(xn))
            done = abs(xn - x) <= tol or hi - lo <= tol
            x = xn
            if done:
                break
        out.append(x)
    return np.asarray(out)


# ------------------------------------------------------ vectorised R-hat and ESS
# Layout inside: (k, chain, draw), C-contiguous, so that every operation runs along
# contiguous draws of one scalar.
def _split(x: np.ndarray) -> np.ndarray:
    """Split chains in halves: (k, chain, draw) -> (k, 2 chain, draw // 2), as arviz."""
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


def _sorted_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and average ranks (1-based, ties averaged as scipy's ``rankdata``) of
    each row of ``x`` (k, N)."""
    k, N = x.shape
    order = np.argsort(x, axis=1)
    srt = np.take_along_axis(x, order, axis=1)
    pos = np.broadcast_to(np.arange(N), x.shape)
    same = srt[:, 1:] == srt[:, :-1]
    first = np.concatenate([np.ones((k, 1), bool), ~same], axis=1)
    last = np.concatenate([~same, np.ones((k, 1), bool)], axis=1)
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, pos, N)[:, ::-1], axis=1)[:, ::-1]
    r = np.empty((k, N))
    np.put_along_axis(r, order, (start + end) / 2.0 + 1.0, axis=1)
    return srt, r


def _z_scale(x: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """Rank-normalise each scalar over all its draws (average ranks of ties, Blom offsets),
    as arviz's ``_z_scale``."""
    from scipy.special import ndtri

    k, c, n = x.shape
    r = _sorted_ranks(x.reshape(k, c * n))[1] if ranks is None else ranks
    return ndtri((r - 0.375) / (c * n + 0.25)).reshape(k, c, n)


def _type7(srt: np.ndarray, p: float) -> np.ndarray:
    """Quantile ``p`` (R's type 7) of each row of sorted values, with the arithmetic of
    :func:`scipy.stats.mstats.mquantiles` (``alphap = betap = 1``), which arviz uses."""
    N = srt.shape[1]
    if N == 1:
        return srt[:, 0]
    p = np.float64(p)
    aleph = N * p + (1.0 + p * (1.0 - 1.0 - 1.0))
    k = int(np.floor(np.clip(aleph, 1, N - 1)))
    gamma = float(np.clip(aleph - k, 0, 1))
    return (1.0 - gamma) * srt[:, k - 1] + gamma * srt[:, k]


def _rhat_basic(x: np.ndarray) -> np.ndarray:
    n = x.shape[2]
    chain_mean = x.mean(axis=2)
    chain_var = x.var(axis=2, ddof=1)
    between = n * chain_mean.var(axis=1, ddof=1)
    within = chain_var.mean(axis=1)
    return np.sqrt((between / within + n - 1) / n)


def _ess_basic(x: np.ndarray) -> np.ndarray:
    """arviz's ``_ess`` (Geyer's initial positive and monotone sequences), for every scalar
    of ``x`` (k, chain, draw) at once."""
    from scipy.fft import next_fast_len

    k, c, n = x.shape
    size = c * n
    m = next_fast_len(2 * n)
    xc = x - x.mean(axis=2, keepdims=True)
    f = np.fft.rfft(xc, n=m, axis=2)
    f *= np.conjugate(f)
    acov = np.fft.irfft(f, n=m, axis=2)[:, :, :n] / n  # (k, c, n)
    chain_mean = x.mean(axis=2)
    mean_var = acov[:, :, 0].mean(axis=1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + chain_mean.var(axis=1, ddof=1)
    # rho[t] for every lag, lags first so that each step of the loops below is contiguous
    rho = np.ascontiguousarray(
        (1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]).T
    )  # (n, k)
    # Geyer's initial positive sequence (arviz's loop, run for all scalars at once)
    cols = np.arange(k)
    rho_t = np.zeros((n, k))
    rho_t[0] = 1.0
    rho_even = np.ones(k)
    rho_odd = rho[1] if n > 1 else np.zeros(k)
    if n > 1:
        rho_t[1] = rho_odd
    tvec = np.ones(k, dtype=int)
    active = (rho_even + rho_odd) > 0
    t = 1
    while t < n - 3 and active.any():
        re, ro = rho[t + 1], rho[t + 2]
        rho_even = np.where(active, re, rho_even)
        rho_odd = np.where(active, ro, rho_odd)
        store = active & (re + ro >= 0)
        rho_t[t + 1] = np.where(store, re, rho_t[t + 1])
        rho_t[t + 2] = np.where(store, ro, rho_t[t + 2])
        tvec = np.where(active, t + 2, tvec)
        active = active & (re + ro > 0)
        t += 2
    max_t = tvec - 2
    set_even = rho_even > 0
    rows = np.clip(max_t + 1, 0, n - 1)
    rho_t[rows[set_even], cols[set_even]] = rho_even[set_even]
    # Geyer's initial monotone sequence
    t = 1
    while t <= max_t.max() - 2:
        prev = rho_t[t - 1] + rho_t[t]
        cond = (t <= max_t - 2) & (rho_t[t + 1] + rho_t[t + 2] > prev)
        rho_t[t + 1] = np.where(cond, prev / 2.0, rho_t[t + 1])
        rho_t[t + 2] = np.where(cond, prev / 2.0, rho_t[t + 2])
        t += 2
    top = int(max_t.max()) + 2
    lag = np.arange(min(top, n))[:, None]
    part = rho_t[: min(top, n)]
    tau = (
        -1.0
        + 2.0 * np.where(lag <= max_t[None, :], part, 0.0).sum(axis=0)
        + np.where(max_t + 1 < n, rho_t[rows, cols], 0.0)
    )
    tau = np.maximum(tau, 1.0 / np.log10(size))
    ess = size / tau
    ess = np.where(np.isnan(rho).any(axis=0), np.nan, ess)
    const = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    return np.where(const, float(size), ess)


def rhat_ess(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat, bulk ESS and tail ESS of many scalars at once.

    The same statistics as :func:`arviz.rhat` and :func:`arviz.ess` (``method="bulk"`` and
    ``"tail"``), computed with whole-array operations instead of one scalar at a time
    (thousands of group effects take seconds with arviz, a fraction of that here).

    Parameters
    ----------
    x : numpy.ndarray
        ``(chain, draw, k)`` draws of ``k`` scalars.

    Returns
    -------
    r_hat, ess_bulk, ess_tail : numpy.ndarray
        ``(k,)`` each.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 2:
        x = x[:, :, None]
    k = x.shape[2]
    step = max(1, int(2e6 // max(x.shape[0] * x.shape[1], 1)))  # bounded memory
    out = np.empty((3, k))

    def run(i):
        with np.errstate(divide="ignore", invalid="ignore"):
            chunk = np.ascontiguousarray(np.moveaxis(x[:, :, i : i + step], 2, 0))
            out[:, i : i + step] = _rhat_ess(chunk)

    starts = range(0, k, step)
    workers = _threads(x.size) if len(starts) > 1 else 1
    if workers > 1:  # scalars are independent: the same numbers, computed in parallel
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    else:
        for i in starts:
            run(i)
    return out[0], out[1], out[2]


def _rhat_ess(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k, c, n = x.shape
    out_nan = np.full(k, np.nan)
    bad = np.isnan(x).any(axis=(1, 2))
    split = _split(x)
    if n < 4:
        return out_nan, out_nan, out_nan
    srt, ranks = _sorted_ranks(split.reshape(k, -1))
    z_split = _z_scale(split, ranks)
    ess_bulk = _ess_basic(z_split)
    if split.shape[1] * split.shape[2] == c * n:  # the split keeps every draw: same values
        srt_all = srt
    else:
        srt_all = np.sort(x.reshape(k, c * n), axis=1)
    q05, q95 = _type7(srt_all, 0.05), _type7(srt_all, 0.95)
    ess_tail = np.minimum(
        _ess_basic(_split((x <= q05[:, None, None]).astype(float))),
        _ess_basic(_split((x <= q95[:, None, None]).astype(float))),
    )
    if c >= 2:
        rb = _rhat_basic(z_split)
        N = srt.shape[1]
        med = 0.5 * (srt[:, N // 2 - 1] + srt[:, N // 2]) if N % 2 == 0 else srt[:, N // 2]
        rt = _rhat_basic(_z_scale(np.abs(split - med[:, None, None])))
        r_hat = np.maximum(rb, rt)
    else:
        r_hat = out_nan
    return (
        np.where(bad, np.nan, r_hat),
        np.where(bad, np.nan, ess_bulk),
        np.where(bad, np.nan, ess_tail),
    )
