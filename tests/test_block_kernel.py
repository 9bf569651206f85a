"""The compiled per-node kernel of the exact engine (:mod:`hetfx.models._block_kernel`)
against :class:`~hetfx.models.exact.BlockModel`'s numpy path, the reference: the same log
density and effect moments to rounding on random problems, the same choice of path by size,
the same error where a factorisation fails, and the same bits on a generic CPU.

Both paths are deterministic: the bounds (1e-12) are bounds on rounding (measured over the
problems below: the log density within 2.3e-15 relative, the effects' means within 5.4e-14
of their SD and the SDs within 6.3e-15 relative; without precomputed Schur products the
factors within 2.2e-16 of their largest entry and the moments within 6.6e-15).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hetfx.models.exact as exact
from hetfx.models import _block_kernel
from hetfx.models.exact import BlockModel
from hetfx.models.gaussian import ScalePrior

pytestmark = pytest.mark.skipif(not _block_kernel.AVAILABLE, reason="numba is not installed")

PRIOR = ScalePrior.brms_default()
#: (block columns, correlated, effect column, effect_coefs non-zero, dof_offset)
CASES = [
    (1, False, None, True, 0),
    (1, False, None, False, 5),
    (2, False, None, True, 0),
    (2, False, 0, False, 3),
    (2, True, None, False, 0),
    (2, True, 0, True, 7),
]


def _problem(b, correlated, effect_col, effects, dof, seed, k=6, G=14, n=400):
    rng = np.random.default_rng(seed)
    g = np.r_[np.arange(G), rng.integers(0, G, n - G)]
    A = rng.normal(size=(n, k))
    t = rng.integers(0, 2, n).astype(float)
    R = t if b == 1 else np.column_stack([np.ones(n), t])
    y = A @ rng.normal(size=k) + rng.normal(0, 0.5, G)[g] * t + rng.normal(size=n)
    coef_sd = np.r_[np.inf, rng.uniform(0.5, 3.0, k - 1)]  # one flat prior
    model = BlockModel(
        y,
        A,
        g,
        R,
        n_groups=G,
        coef_sd=coef_sd,
        sigma_prior=PRIOR,
        block_priors=[PRIOR] * b,
        correlated=correlated,
        lkj_eta=1.5,
        dof_offset=dof,
        effect_coefs=rng.normal(size=(G, k)) if effects else None,
        effect_col=effect_col,
    )
    centre = np.r_[0.0, np.full(b, -1.0), np.zeros(int(correlated))]
    u = centre + rng.normal(0, 0.8, size=(60, model.ndim))
    # every third node below its floor (no moments), the others above
    floor = np.where(np.arange(len(u)) % 3 == 0, np.inf, -np.inf)
    return model, u, floor


def _both(model, u, floor):
    """(kernel, numpy) results of logpost_and_moments and logpost."""
    got = (*model.logpost_and_moments(u, floor), model.logpost(u))
    assert model._kernel_args is not None
    args, model._kernel_args = model._kernel_args, None
    try:
        ref = (*model.logpost_and_moments(u, floor), model.logpost(u))
    finally:
        model._kernel_args = args
    return got, ref


@pytest.mark.parametrize("products", [True, False], ids=["products", "rows"])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_numpy(case, products, monkeypatch):
    if not products:  # the kernel's other way to the Schur correction (many groups)
        monkeypatch.setattr(exact, "KERNEL_MAX_PRODUCTS", 0)
    for seed in range(3):
        model, u, floor = _problem(*case, seed=seed)
        assert (model._kernel_args[3].size > 0) == products
        (lp, mean, sd, lp1), (lp_ref, mean_ref, sd_ref, lp1_ref) = _both(model, u, floor)
        np.testing.assert_array_equal(np.isnan(mean), np.isnan(mean_ref))
        assert np.isnan(mean[::3]).all() and not np.isnan(mean[1::3]).any()
        assert np.abs(lp - lp_ref).max() < 1e-12 * np.abs(lp_ref).max()
        assert np.abs(lp1 - lp1_ref).max() < 1e-12 * np.abs(lp_ref).max()
        assert np.nanmax(np.abs(mean - mean_ref) / sd_ref) < 1e-12
        assert np.nanmax(np.abs(sd - sd_ref) / sd_ref) < 1e-12


def test_kernel_is_chosen_by_the_number_of_coefficients():
    small, _, _ = _problem(2, False, None, True, 0, seed=0, k=exact.KERNEL_MAX_COEFS)
    large, _, _ = _problem(2, False, None, True, 0, seed=0, k=exact.KERNEL_MAX_COEFS + 1)
    assert small._kernel_args is not None and large._kernel_args is None


def test_custom_moments_take_the_numpy_path():
    """A caller's own ``moments`` (e.g. profile effects) is evaluated by numpy as before."""
    model, u, floor = _problem(2, True, None, False, 0, seed=1)
    seen = []

    def coefs(nd):
        seen.append(len(nd.s2))
        return model.coef_moments(nd)

    lp, mean, _ = model.logpost_and_moments(u, floor, coefs, model.k)
    assert sum(seen) == int((lp > floor).sum()) and mean.shape == (len(u), model.k)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_failed_factorisation_raises_as_the_numpy_path():
    """A node whose system is not positive definite (sigma overflows: the flat coefficient
    has no precision left) raises numpy's error, as without the kernel."""
    model, u, _ = _problem(1, False, None, True, 0, seed=2)
    u[5, 0] = 400.0
    with pytest.raises(np.linalg.LinAlgError):
        model.logpost(u)
    with pytest.raises(np.linalg.LinAlgError):
        model.logpost_and_moments(u)
    args, model._kernel_args = model._kernel_args, None
    with pytest.raises(np.linalg.LinAlgError):
        model.logpost(u)
    model._kernel_args = args


_XCPU = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import numba
from test_block_kernel import CASES, _problem
from hetfx.models import _block_kernel
out = {}
for i, case in enumerate(CASES):
    model, u, floor = _problem(*case, seed=i)
    lp, mean, sd = model.logpost_and_moments(u, floor)
    out[str(i)] = [v.tolist() for v in (lp, mean, sd, model.logpost(u))]
out["cpu"] = numba.config.CPU_NAME or "host"
out["compiled"] = len(_block_kernel.kernel().signatures)
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.mark.slow  # a fresh compilation for the generic CPU: about 4 s of CPU
def test_generic_cpu_gives_the_same_bits(tmp_path):
    """The kernel compiled for a generic x86-64 CPU (no AVX, no FMA) returns the same bits
    as on this CPU: no fast-math, elementwise loops only where vectorised."""
    res = {}
    for name, extra in (("host", {}), ("generic", {"NUMBA_CPU_NAME": "generic"})):
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_NAME"}
        env.update(extra, NUMBA_CACHE_DIR=str(tmp_path / f"cache_{name}"))
        path = tmp_path / f"{name}.json"
        run = subprocess.run(
            [sys.executable, "-c", _XCPU, str(path), os.path.dirname(__file__)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        res[name] = json.loads(path.read_text())
    assert res["host"]["cpu"] == "host" and res["generic"]["cpu"] == "generic"
    assert res["host"]["compiled"] == 1 and res["generic"]["compiled"] == 1
    for i in range(len(CASES)):
        for a, b in zip(res["host"][str(i)], res["generic"][str(i)], strict=True):
            np.testing.assert_array_equal(np.array(a, dtype=float), np.array(b, dtype=float))


@pytest.mark.parametrize("k", [6, 30])
@pytest.mark.parametrize("case", CASES)
def test_direct_schur_products_match_the_precomputed_ones(case, k, monkeypatch):
    """``BlockModel.factor`` without precomputed products (many coefficients: one ``dsyrk``
    and ``dpotrf`` per node) factors the same systems to rounding; from 24 coefficients on
    the effects' moments come from triangular solves (k = 30 here)."""
    model, u, _ = _problem(*case, seed=4, k=k, G=40)
    monkeypatch.setattr(exact, "SCHUR_DIRECT_COEFS", 0)
    direct, _, _ = _problem(*case, seed=4, k=k, G=40)
    assert model._Q is not None and direct._Q is None
    a, b = model.factor(u), direct.factor(u)
    assert all(L.flags.f_contiguous for L in b.L)
    assert np.all(np.triu(b.L, 1) == 0)
    scale = np.abs(a.L).max(axis=(1, 2), keepdims=True)
    assert np.max(np.abs(a.L - b.L) / scale) < 1e-12
    np.testing.assert_array_equal(a.logdet_k, b.logdet_k)
    mean, sd = model.effect_moments(a)
    mean_d, sd_d = direct.effect_moments(b)
    assert np.max(np.abs(mean - mean_d) / sd) < 1e-12 and np.max(np.abs(sd - sd_d) / sd) < 1e-12


def test_precompile_gives_the_signature_the_model_calls():
    """:func:`hetfx.models._block_kernel.precompile` compiles (or loads) the one
    specialisation every model then uses: no second one."""
    _block_kernel.precompile()
    fn = _block_kernel.kernel()
    assert len(fn.signatures) == 1
    for case in CASES:
        model, u, floor = _problem(*case, seed=5)
        model.logpost(np.asfortranarray(u))  # any layout of the nodes is copied to C order
        model.logpost_and_moments(u[::2], floor[::2])
    assert len(fn.signatures) == 1


@pytest.mark.parametrize("case", CASES)
def test_triangular_solves_match_the_inverse_factor(case, monkeypatch):
    """The effects' moments by triangular solves with the bordered factor (24 coefficients
    on) equal those from the explicit ``L^-T`` (the path below 24 coefficients) to rounding,
    also on a subset of nodes (``_Node.take``) and on a C-ordered copy of the factors."""
    monkeypatch.setattr(exact, "SCHUR_DIRECT_COEFS", 0)
    model, u, _ = _problem(*case, seed=5, k=40, G=30)
    nd = model.factor(u)
    mean, sd = model.effect_moments(nd)
    rows = np.arange(1, len(u), 2)
    sub = nd.take(rows)
    assert nd.take(np.arange(len(u))) is nd
    mean_s, sd_s = model.effect_moments(sub)
    copy = exact._Node(np.ascontiguousarray(nd.L), nd.Minv, nd.logdet_k, nd.s2)
    mean_c, sd_c = model.effect_moments(copy)
    nd.LinvT  # noqa: B018 (the explicit inverse: the other path)
    mean_ref, sd_ref = model.effect_moments(nd)
    for m, s, r in ((mean, sd, slice(None)), (mean_s, sd_s, rows), (mean_c, sd_c, slice(None))):
        assert np.max(np.abs(m - mean_ref[r]) / sd_ref[r]) < 1e-12
        assert np.max(np.abs(s - sd_ref[r]) / sd_ref[r]) < 1e-12
