"""Stages `fit_tomz_weeks@<coding>` and `fit_bush_prather@<coding>`.

Usage::

    python analysis/fit.py tomz_weeks published          # every Tomz-Weeks model
    python analysis/fit.py tomz_weeks published m1 m2    # some of them
    python analysis/fit.py bush_prather corrected

Every model of a study and coding is fitted in one process (one interpreter start-up and one
import of the libraries, not one per model); each model's posterior.nc is written by a forked
child process (``_stage.Background``) while the next model is fitted. Each writes
results/<study>/<model>_<coding>/{groups.csv, coefs.csv, diagnostics.csv}, the numeric
diagnostics as DVC metrics (diagnostics.json) and, for Bayesian fits, posterior.nc: the draws
and their pointwise log-likelihood (so ``az.loo(az.from_netcdf(path))`` works), without
arviz's creation time stamp. None of them holds a run time, so a rerun on the same machine
writes the same bytes (and dvc.lock records the same hashes): the fit's wall, compile and
sampling seconds go to timings/<study>/<model>_<coding>.csv (git-ignored, no DVC output) and the
stage log. A Bayesian fit that fails the diagnostic gate of params.yaml (models.gate) fails
the stage with the offending parameter and what to change; that model's folder is removed.
"""

from __future__ import annotations

import os

# one BLAS thread, before numpy is imported: the stage writes the same bytes whether or not
# it runs under make (which sets this too)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from _stage import Background, load_params, log, run, split_timings, write_csv
from hetfx.inference import SamplerDiagnosticsError, check_diagnostics, without_timestamps
from hetfx.paper import studies
from hetfx.paper.params import LambdaSettings, ParamsError, VaryingSettings

if TYPE_CHECKING:
    import arviz as az

CLEAN = Path("data/clean")
RESULTS = Path("results")
ADVICE = {
    "m1": "raise models.m1.target_accept (the original used .95) or models.draws, or "
    "switch models.m1.engine",
    "m2": "raise models.m2.target_accept or models.draws, or switch models.m2.engine",
    "a1": "widen hetfx.models.varying_slopes.QUADRATURE_GRID (engine quadrature: its edge "
    "mass), raise models.a1.qmc_points_log2 (engine qmc), or models.a1.target_accept (the "
    "original used .95) or models.draws (engines collapsed, nutpie)",
    "bp": "raise models.bp.qmc_points_log2 (engine qmc), or models.bp.target_accept (the "
    "original used .99 with tree depth 15) or models.draws (engines collapsed, nutpie)",
}


def out_dir(study: str, model: str, coding: str) -> Path:
    return RESULTS / study / f"{model}_{coding}"


#: posterior.nc's pointwise log-likelihood is rounded to multiples of 2^-LL_BITS
#: (:func:`rounded_loglik`). Measured against an emulated other CPU (tests/test_cross_cpu.py's
#: combined emulation), from the same stored draws: the float64 values of Tomz-Weeks M1 and M2
#: (4,000 x 1,200) differ at 17,000 and 31,000 entries by up to 2.2e-15, Bush-Prather's at
#: 954 by up to 8.9e-16, A1's at none; expected crossings of a multiple of 2^-16 (the sum of
#: |difference| / 2^-16): 2.3e-7, 4.6e-7 and 1e-8 per file. A multiple of 2^-16 is exact in
#: float32 below |value| = 256; above, the cast rounds it again (the same way on any CPU).
#: The step (1.5e-5) moves LOO's pointwise terms by at most 7.6e-6.
LL_BITS = 16
#: Interval columns of the front end's group effects that groups.csv leaves out: it keeps the
#: median and the q025/q10/q90/q975 quantiles (plus, for OLS, q05/q95 and std_error).
NOT_IN_GROUPS_CSV = ["lower", "upper", "mean", "sd"]


def paper_layout(groups: pd.DataFrame) -> pd.DataFrame:
    """``groups.csv``: label, keys (``region_txt`` as ``region``), ``n_obs``, estimates."""
    groups = groups.drop(columns=NOT_IN_GROUPS_CSV, errors="ignore")
    return groups.rename(columns={"region_txt": "region"})


def metrics(diagnostics: pd.DataFrame, path: str = "") -> dict:
    """The numeric diagnostics of the fit (R-hat, ESS, divergences, ...) for `dvc metrics`:
    run times left out (they change on every run; `fit_one` has split them off already),
    missing values too (JSON has no NaN); each number at the precision of the CSVs in
    ``path``'s folder (:func:`hetfx.paper.precision.format_number`), as in diagnostics.csv."""
    from hetfx.paper.precision import format_number

    row = diagnostics.iloc[0].to_dict()
    out = {}
    for key, value in row.items():
        if key.endswith("_seconds") or isinstance(value, str | bool) or value is None:
            continue
        value = float(value)
        if not math.isnan(value):
            value = float(format_number(value, path)) if path else value
            out[key] = int(value) if value.is_integer() else value
    return out


def archive(fit) -> az.InferenceData:
    """What ``posterior.nc`` holds: the engine's draws and the pointwise log-likelihood
    (``log_likelihood`` group, one value per draw and row, as float32: about a third of the
    float64 file), without arviz's time stamps, so that ``az.loo(az.from_netcdf(path))``
    works on the written file and a rerun writes the same bytes."""
    import arviz as az

    groups = {g: fit.draws[g] for g in fit.draws.groups()}
    groups["log_likelihood"] = rounded_loglik(fit.idata["log_likelihood"])
    return without_timestamps(az.InferenceData(**groups))


#: How posterior.nc compresses each numeric variable: zlib at level 1 after HDF5's byte
#: shuffle. arviz's own ``to_netcdf`` (zlib at level 4, no shuffle) took 0.9 s of CPU for M1's
#: log-likelihood (4,000 draws x 1,200 rows, float32) and wrote 14.0 MB; this takes 0.38 s and
#: writes 12.4 MB (the rounded values' low bytes are zeros, which the shuffle groups). Measured
#: best of 3 on the shared 2-core machine; every variable reads back identical.
NETCDF_ENCODING = {"zlib": True, "complevel": 1, "shuffle": True}


def write_netcdf(idata, path: Path) -> None:
    """Write ``idata`` to ``path`` as arviz's ``to_netcdf`` does (one netCDF group per
    InferenceData group, read back by ``az.from_netcdf``), with :data:`NETCDF_ENCODING`."""
    mode = "w"
    if idata.attrs:  # the root's attributes, as arviz writes them
        import xarray

        xarray.Dataset(attrs=idata.attrs).to_netcdf(path, mode=mode, engine="h5netcdf")
        mode = "a"
    for group in idata.groups():
        data = getattr(idata, group)
        encoding = {
            name: dict(NETCDF_ENCODING)
            for name, values in data.variables.items()
            if values.dtype.kind in "fiucb"
        }
        data.to_netcdf(path, mode=mode, group=group, engine="h5netcdf", encoding=encoding)
        mode = "a"


def rounded_loglik(ll):
    """The pointwise log-likelihood (float64 array or xarray object) as posterior.nc stores
    it: rounded to a multiple of ``2^-LL_BITS`` (exact: a power-of-two scaling and ``rint``),
    then cast to float32 (exact where ``|value| < 2^(24 - LL_BITS)``), so that a last-bit
    difference of another CPU's arithmetic leaves the stored bits alone (see LL_BITS)."""
    import numpy as np

    return (np.rint(ll * 2.0**LL_BITS) / 2.0**LL_BITS).astype("float32")


def warm_writer() -> None:
    """Write a one-number netCDF file with the writer of ``posterior.nc``: the modules that
    takes (xarray's netCDF backend, h5netcdf, dask's check for a distributed scheduler:
    about 0.3 s) are then imported once, in this process, not once per child process."""
    import tempfile

    import numpy as np
    import xarray

    with tempfile.TemporaryDirectory() as tmp:
        xarray.Dataset({"x": ("i", np.zeros(1))}).to_netcdf(
            Path(tmp) / "warm.nc", engine="h5netcdf", encoding={"x": NETCDF_ENCODING}
        )


def precompile(background: Background, names: list[str]):
    """Compile (or load from numba's cache) the named kernels of
    :mod:`hetfx.models.varying_slopes` in a child process, which writes them to the cache
    where the fit finds them; returns the job's handle (:meth:`Background.wait`)."""
    from hetfx.models import varying_slopes

    return background.submit(None, lambda: varying_slopes.compile_kernels(names))


def compile_qmc_kernels(background: Background) -> None:
    """Compile the numba kernels of Bush-Prather's ``qmc`` engine on two cores: without
    numba's cache (a fresh clone) they take about 10 s on one. A child process compiles the
    kernel every other one calls (into the cache) while this one imports what the fit needs
    (arviz, scipy.stats, hetfx's front end: about 2 s) and then loads it; two more children
    compile the others from there, and the fit loads them from the cache. With the cache,
    each kernel is a load (0.05 s)."""
    from hetfx.models import varying_slopes

    first = precompile(background, ["_factor"])
    import arviz  # noqa: F401
    import scipy.stats  # noqa: F401

    import hetfx.api  # noqa: F401

    background.wait(first)
    varying_slopes.compile_kernels(["_factor"])  # a load; the children inherit it
    children = [
        precompile(background, names)
        for names in (
            ["_collapsed_kernel", "_logp_many"],
            ["_moments", "_mixture_quantiles", "_draw"],
        )
    ]
    for child in children:
        background.wait(child)


def engine(cfg, model: str) -> str | None:
    """The engine of a model's section of ``params.yaml`` (``models.<model>.engine``)."""
    return getattr(cfg, model).model_dump().get("engine")


def fit_order(models: list[str]) -> list[str]:
    """The Bayesian models first, then the OLS comparators: each posterior.nc is written by a
    child process while the next model is fitted, so the OLS fits (nothing to write in the
    background) overlap the last writes, which the stage otherwise waited for (0.9 s)."""
    return sorted(models, key=lambda model: model.endswith("_ols"))


def main(study: str, coding: str, models: list[str]) -> None:
    params = load_params()
    cfg = params.models
    if coding not in cfg.codings:
        raise ParamsError(f"coding {coding!r} is not listed in models.codings {cfg.codings}")
    data = pd.read_parquet(CLEAN / f"{study}.parquet")
    # each posterior.nc is written by a child process while the next model is fitted
    warm_writer()
    with Background() as background:
        pending = None
        if study == "bush_prather" and engine(cfg, "bp") == "qmc":
            compile_qmc_kernels(background)
        elif "a1" in models and engine(cfg, "a1") in ("quadrature", "qmc"):
            # A1's quantiles come from a compiled kernel (about 1.7 s to compile afresh)
            pending = precompile(background, ["_mixture_quantiles"])
        for model in fit_order(models):
            target = out_dir(study, model, coding)
            if model == "a1":
                background.wait(pending)
            try:
                fit_one(study, model, coding, data, cfg, target, background)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)  # never leave a partial fit behind
                raise


def fit_one(
    study: str,
    model: str,
    coding: str,
    data: pd.DataFrame,
    cfg,
    target: Path,
    background: Background | None = None,
) -> None:
    """Fit one model and write its folder; ``posterior.nc`` through ``background`` (in a
    child process) when given, else here."""
    from hetfx.results import OLSResults

    stage = f"fit_{study}@{coding}: {model}"
    shutil.rmtree(target, ignore_errors=True)  # never leave a previous run's files behind
    sampler = studies.Sampler(seed=cfg.seed, chains=cfg.chains, draws=cfg.draws, tune=cfg.tune)
    base = model.removesuffix(studies.MAIN_EFFECTS_SUFFIX)
    # the validated settings themselves (LambdaSettings: M1, M2; VaryingSettings: A1, BP)
    settings = getattr(cfg, base, None)
    if study == "tomz_weeks":  # what the model is fitted with (main_effects of the variants)
        settings = studies.model_settings(model, settings)
    if isinstance(settings, VaryingSettings):
        shown = settings.for_engine()
    else:
        shown = settings.model_dump() if isinstance(settings, LambdaSettings) else settings
    log(stage, f"{len(data)} rows; settings {shown or '(OLS: none)'}")
    start = time.perf_counter()
    if study == "tomz_weeks":
        fit = studies.fit_tomz_weeks(data, model, coding, settings, sampler)
    else:
        fit = studies.fit_bush_prather(data, coding, settings, sampler)
    wall = time.perf_counter() - start
    groups = paper_layout(fit.group_effects())
    coefs = fit.coefs()
    bayesian = not isinstance(fit, OLSResults)
    if bayesian:
        diag = fit.diagnostics_record
        if pd.notna(getattr(diag, "pareto_k", float("nan"))):  # importance sampling
            quality = f"Pareto k-hat {diag.pareto_k:.3f}, weight ESS {diag.min_ess_bulk:.0f}"
        else:
            quality = (
                f"max R-hat {diag.max_r_hat:.4f} ({diag.worst_r_hat_param}), min bulk "
                f"ESS {diag.min_ess_bulk:.0f} ({diag.worst_ess_bulk_param}), "
                f"divergences {diag.divergences}"
            )
        log(
            stage,
            f"{diag.sampler}: {diag.chains} x {diag.draws} draws in "
            f"{diag.wall_seconds:.2f} s; {quality}",
        )
        gate = cfg.gate
        check_diagnostics(
            diag,
            max_r_hat=gate.max_r_hat,
            min_ess_bulk=gate.min_ess_bulk,
            allow_divergences=gate.max_divergences,
            advice=ADVICE[base],
        )
        diagnostics = fit.diagnostics()
        exact = getattr(fit, "exact", None)
        mcse = exact.get("groups_mcse") if isinstance(exact, dict) else None
        if mcse is not None:  # importance sampling: the largest MCSEs of the group summaries
            diagnostics = diagnostics.assign(
                mcse_estimate_max=float(mcse["estimate"].max()),
                mcse_bounds_max=float(mcse[["q025", "q975"]].to_numpy().max()),
            )
    else:
        aliased = coefs.loc[coefs["aliased"], "term"].tolist()
        log(stage, f"OLS in {wall:.3f} s; aliased columns: {aliased or 'none'}")
        diagnostics = fit.diagnostics()
    # run times to timings/ (not committed), the rest to the committed diagnostics.csv
    diagnostics = split_timings(diagnostics, f"{study}/{target.name}")
    write_model(target, groups, coefs, diagnostics, fit if bayesian else None, background)
    log(stage, f"wrote {target}/ ({len(groups)} groups, {len(coefs)} coefficients)")


def write_model(
    target: Path,
    groups: pd.DataFrame,
    coefs: pd.DataFrame,
    diagnostics: pd.DataFrame,
    fit=None,
    background: Background | None = None,
) -> None:
    """Write a model's folder: the CSVs and diagnostics.json, and for a Bayesian ``fit``
    posterior.nc (through ``background`` when given, else here)."""
    target.mkdir(parents=True, exist_ok=True)
    write_csv(groups, target / "groups.csv")
    write_csv(coefs, target / "coefs.csv")
    write_csv(diagnostics, target / "diagnostics.csv")
    (target / "diagnostics.json").write_text(
        json.dumps(metrics(diagnostics, (target / "diagnostics.json").as_posix()), indent=2) + "\n",
        encoding="utf-8",
    )
    if fit is not None:
        posterior = target / "posterior.nc"
        (background or Background(limit=0)).submit(
            target, lambda: write_netcdf(archive(fit), posterior)
        )


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("tomz_weeks", "bush_prather"):
        sys.exit("usage: python analysis/fit.py {tomz_weeks,bush_prather} CODING [MODEL ...]")
    study_, coding_ = sys.argv[1:3]
    allowed = list(studies.TW_MODELS) if study_ == "tomz_weeks" else ["bp"]
    models_ = sys.argv[3:] or allowed
    unknown = [m for m in models_ if m not in allowed]
    if unknown:
        sys.exit(f"unknown {study_} model(s) {unknown}; choose from {allowed}")
    run(
        f"fit_{study_}@{coding_}",
        lambda: main(study_, coding_, models_),
        (SamplerDiagnosticsError, ParamsError, FileNotFoundError, ValueError, KeyError),
    )
