"""Another machine, emulated: the fits' summaries must not depend on how the CPU rounds.

One worker process (tests/cross_cpu_worker.py) fits every model the targets name: M1, M2 and
replicate 0 of both simulation designs (exact quadrature summaries: within 1e-9), the
robustness stage's two logit variants and Bush-Prather (deterministic ``qmc`` engines: within
1e-6) and A1 (exact ``quadrature`` engine, within 1e-6: a node's weight near the grid's prune
level may cross it). It runs twice: on this CPU with one BLAS thread (the reference), and as another
CPU with every emulation at once, as an older x86-64 machine would differ: numpy's SIMD
dispatch limited to the x86-64-v2 baseline (no AVX2/FMA3/AVX-512 kernels), OpenBLAS forced
to an old kernel (Prescott), two BLAS threads, numba compiling for a generic CPU. The worker
reports what it ran on and the test checks that each emulation was in force. It also writes
``posterior.nc`` of M2, A1 and Bush-Prather as the fit stage does, and those files must have
the same bytes on both (the draws and the log-likelihood are rounded so that another CPU's
last-bit noise crosses a rounding boundary with a measured probability of about 1e-4 per run;
see hetfx.models.exact.DRAW_BITS).

``HETFX_CROSS_CPU=each`` runs every emulation alone as well (four more worker processes,
about 2 min of CPU), to find which one moves a number when the combined run fails.

Measured when written (combined emulation): M1/M2/simulation within 4e-12; the previous
engine (Monte Carlo summaries from draws) moved M1 group medians by up to about 1e-2 under
the same settings, and NUTS (nutpie) moved the logit AME quantiles by up to .016.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, small_block_model

#: Largest acceptable difference of any number of each output.
TOL = {
    **{f: 1e-9 for f in ("m1_groups", "m1_coefs", "m2_groups", "m2_coefs", "sim")},
    **{
        f"{v}_{k}": 1e-6
        for v in ("logit_published", "logit_additive_main_effects")
        for k in ("groups", "logit", "coefs")
    },
    **{f"{m}_{k}": 1e-6 for m in ("a1", "bp") for k in ("groups", "coefs")},
    # R-hat and ESS of the exact engine's draws: the same bits (the stage writes them to 10
    # digits); the folded ranks once moved max R-hat by 4e-6 when a tie at the median broke
    **{f"{m}_diagnostics": 1e-15 for m in ("m1", "m2")},
}
#: Columns compared relative to their size: the ESS of A1 (of its independent draws) and of
#: Bush-Prather (importance sampling; thousands; measured 6e-10 relative under the combined
#: emulation).
RELATIVE = {
    "a1_coefs": ("ess_bulk",),
    "bp_coefs": ("ess_bulk",),
    **{f"{m}_diagnostics": ("min_ess_bulk", "min_ess_tail") for m in ("m1", "m2")},
}
#: numpy >= 2.4 names its dispatch targets X86_V3 (AVX2, FMA3), X86_V4 and AVX512_*
NO_SIMD_DISPATCH = "AVX512_SPR AVX512_ICL X86_V4 X86_V3"
#: Each emulation alone (run with HETFX_CROSS_CPU=each).
EMULATIONS = {
    "no_simd_dispatch": {"NPY_DISABLE_CPU_FEATURES": NO_SIMD_DISPATCH},
    "openblas_prescott": {"OPENBLAS_CORETYPE": "Prescott"},
    "two_threads": {"OPENBLAS_NUM_THREADS": "2"},
    "numba_generic": {"NUMBA_CPU_NAME": "generic"},
}
#: Models whose posterior.nc must have the same bytes on every CPU (tests/cross_cpu_worker.py)
ARCHIVED = ("m2", "a1", "bp")
REFERENCE = {"OPENBLAS_NUM_THREADS": "1"}
ANOTHER_CPU = {k: v for extra in EMULATIONS.values() for k, v in extra.items()}
SETTINGS = {"reference": REFERENCE, "another_cpu": {**REFERENCE, **ANOTHER_CPU}}
if os.environ.get("HETFX_CROSS_CPU") == "each":
    SETTINGS |= {name: {**REFERENCE, **extra} for name, extra in EMULATIONS.items()}


def _run(out, extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ANOTHER_CPU}
    env.update(extra)
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "cross_cpu_worker.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    res = {f: pd.read_csv(out / f"{f}.csv") for f in TOL}
    res["seconds"] = pd.read_csv(out / "seconds.csv")
    res["runtime"] = json.loads((out / "runtime.json").read_text())
    res["archives"] = {m: out / f"{m}.nc" for m in ARCHIVED}
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The worker's outputs per setting, one process after the other (the other pytest-xdist
    worker keeps the second core)."""
    tmp = tmp_path_factory.mktemp("cross_cpu")
    return {name: _run(tmp / name, extra) for name, extra in SETTINGS.items()}


def _max_diff(a: pd.DataFrame, b: pd.DataFrame, relative=()) -> float:
    """Largest absolute difference of the numeric cells (relative for columns ``relative``);
    the other cells and the NaN pattern must be identical."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    num = a.select_dtypes("number").columns
    pd.testing.assert_frame_equal(a.drop(columns=num), b.drop(columns=num))
    x, y = a[num].to_numpy(float), b[num].to_numpy(float)
    assert (np.isnan(x) == np.isnan(y)).all()
    gap = np.abs(x - y)
    rel = num.isin(relative)
    gap[:, rel] /= np.abs(x[:, rel])
    return float(np.nanmax(gap))


@pytest.mark.slow  # two worker processes: about 1 min of CPU
def test_every_emulation_is_in_force(runs):
    """The emulated process really runs another CPU's arithmetic: no AVX2/AVX-512 dispatch in
    numpy, another OpenBLAS kernel, two BLAS threads instead of one, numba for a generic CPU."""
    ref, other = runs["reference"]["runtime"], runs["another_cpu"]["runtime"]
    assert other["numpy_dispatch"] == [], other
    assert set(ref["openblas_threads"]) == {1} and set(other["openblas_threads"]) == {2}
    assert ref["numba_cpu"] == "host" and other["numba_cpu"] == "generic"
    if "X86_V3" not in ref["numpy_dispatch"]:
        pytest.skip(f"this CPU has no AVX2 kernels to turn off (dispatch: {ref})")
    # a CPU with AVX2 runs a newer OpenBLAS kernel than Prescott's
    assert set(ref["openblas_architecture"]).isdisjoint(other["openblas_architecture"])


@pytest.mark.slow  # shares the two worker processes
@pytest.mark.parametrize("setting", [s for s in SETTINGS if s != "reference"])
def test_summaries_agree_across_emulated_cpus(runs, setting):
    ref, res = runs["reference"], runs[setting]
    worst = {f: _max_diff(ref[f], res[f], RELATIVE.get(f, ())) for f in TOL}
    print(f"\n{setting}:\n" + "\n".join(f"{f:38s} {v:.2e}" for f, v in worst.items()))
    print(ref["seconds"].to_string())
    bad = {f: v for f, v in worst.items() if not v < TOL[f]}
    assert not bad, bad
    if setting == "another_cpu":  # the emulation is not a no-op: it changes some bits
        assert max(worst.values()) > 0
    assert np.isfinite(ref["logit_published_groups"]["estimate"]).all()


@pytest.mark.parametrize("seed", [1, 2])
def test_draws_do_not_shift_when_the_weights_change_in_the_last_bits(seed):
    """The picks' uniforms are drawn before the grid weights are used: perturbing the weights
    by a few ulps leaves every draw of the exact engine in place to rounding (no stream
    shift)."""
    import dataclasses

    from hetfx.models.exact import BlockPosterior, fit_block_model

    rng = np.random.default_rng(seed)
    model = small_block_model(rng)  # the same stream goes on to perturb the weights
    grid = fit_block_model(model, draws=0).grid
    a = BlockPosterior(model, grid).draws(2000, 7)
    w = grid.weights * (1 + 4e-16 * rng.standard_normal(grid.weights.shape))
    b = BlockPosterior(model, dataclasses.replace(grid, weights=w)).draws(2000, 7)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-9)


def _archive_differences(a, b) -> list[str]:
    """The variables (group/name: cells that differ) of two posterior.nc files."""
    import xarray as xr

    out = []
    for group in ("posterior", "log_likelihood"):
        with xr.open_dataset(a, group=group) as x, xr.open_dataset(b, group=group) as y:
            for name in x.data_vars:
                n = int((x[name].values != y[name].values).sum())
                if n:
                    out.append(f"{group}/{name}: {n} of {x[name].size}")
    return out or ["bytes only (no value differs)"]


@pytest.mark.slow  # shares the two worker processes
@pytest.mark.parametrize("setting", [s for s in SETTINGS if s != "reference"])
def test_posterior_files_are_byte_identical_across_emulated_cpus(runs, setting):
    """posterior.nc of M2 (exact engine), A1 (quadrature engine) and Bush-Prather (qmc
    engine), as the fit stage writes it, has the same bytes on the emulated CPU: the draws
    come from canonical nodes and a canonical proposal and are rounded to
    hetfx.models.exact.DRAW_BITS per quantity, the log-likelihood to 2^-16 (analysis/fit.py
    LL_BITS). Measured when written (combined emulation): expected crossings of a rounding
    boundary 6e-6 (M2), 2.7e-5 (A1), 5.9e-5 (Bush-Prather) per run; without the rounding
    every file differed."""
    ref, res = runs["reference"]["archives"], runs[setting]["archives"]
    differ = {
        m: _archive_differences(ref[m], res[m])
        for m in ARCHIVED
        if ref[m].read_bytes() != res[m].read_bytes()
    }
    assert not differ, differ


@pytest.mark.slow  # shares the two worker processes
@pytest.mark.parametrize("setting", [s for s in SETTINGS if s != "reference"])
def test_simulation_replicates_are_identical_across_emulated_cpus(runs, setting):
    """Replicate 0 of both simulation designs, as the work files and estimates store it
    (rounded to hetfx.paper.simulation.STORED_BITS per column), is the same numbers on the
    emulated CPU: the stages' parquet files and dvc.lock's hashes of them do not change there.
    Measured when written: before the rounding nearly every estimate moved (1.5e-14 relative
    on average); expected crossings of a rounding boundary at 16 bits, about 2e-10 a value."""
    pd.testing.assert_frame_equal(runs["reference"]["sim"], runs[setting]["sim"], check_exact=True)
