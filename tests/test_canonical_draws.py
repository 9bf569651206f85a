"""The rounding that makes posterior.nc the same bits on any CPU (tests/test_cross_cpu.py runs
the fits under an emulated other CPU): each helper gives the same output when its input moves
in its last bits, and moves its input by no more than it says."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from conftest import ROOT, small_block_model
from hetfx.models import exact
from hetfx.models.exact import (
    DRAW_BITS,
    HERMITE_BITS,
    _Lattice,
    _power_of_two_below,
    _quantise_columns,
    _snap,
)


def _nudge(x, rng, rel):
    """``x`` moved by about ``rel`` relative (last-bit noise of another CPU's arithmetic)."""
    return x * (1.0 + rel * rng.standard_normal(np.shape(x)))


def test_snap_and_power_of_two_below_are_exact():
    x = np.array([0.3, 1.0, 1.5, 1024.0, 3e-9])
    p = _power_of_two_below(x)
    assert np.array_equal(p, [0.25, 1.0, 1.0, 1024.0, 2.0**-29])
    s = _snap(np.array([0.30000001, -2.4999, 7.0 / 3]), 2.0**-4)
    assert np.array_equal(s, [0.3125, -2.5, 2.3125])
    assert np.array_equal(_snap(s, 2.0**-4), s)  # idempotent


def test_draw_columns_round_to_their_own_grid_and_ignore_last_bits():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 3)) * [1e-3, 1.0, 50.0]
    q = _quantise_columns(x.copy(), DRAW_BITS)
    step = np.ldexp(1.0, np.frexp(np.abs(x).max(axis=0))[1] - DRAW_BITS)
    assert np.array_equal(q / step, np.rint(q / step))
    assert np.all(np.abs(q - x) <= step / 2)
    assert np.array_equal(_quantise_columns(q.copy(), DRAW_BITS), q)
    # noise of 1e-15 relative crosses a boundary with probability ~1e-15 * 2^16 per value
    assert np.array_equal(_quantise_columns(_nudge(x, rng, 1e-15), DRAW_BITS), q)


@pytest.mark.parametrize("hermite", [3, None])
def test_the_draws_nodes_ignore_last_bits_of_the_mode_and_sds(hermite):
    """Measured noise of another CPU: mode 1e-10, SDs 3e-9 relative, nodes 4e-15."""
    rng = np.random.default_rng(5)
    mode, sd = np.array([-0.84, -2.33, -1.2]), np.array([0.021, 0.75, 0.4])
    args = (1.5, 4.0, 0.35, None, hermite, 1)
    lat = _Lattice(mode, sd, sd, *args)
    other = _Lattice(mode + 1e-10, _nudge(sd, rng, 3e-9), sd, *args)
    u = lat.to_u(lat.box())[0]
    canon = lat.canonical(u)
    assert np.array_equal(other.canonical(u + 4e-15 * rng.standard_normal(u.shape)), canon)
    first = 1 if hermite else 0
    assert np.all(np.abs(canon - u)[:, first:] <= lat.u_step[first:] / 2)
    if hermite:
        # the Hermite axis: a centre and scale within 2^-HERMITE_BITS of the scale
        s = np.sqrt(2.0) * sd[0]
        assert np.abs(canon[:, 0] - u[:, 0]).max() <= 2.0 ** (1 - HERMITE_BITS) * s
        assert len(np.unique(canon[:, 0])) == hermite


def _small_model(y_scale: float = 1.0):
    return small_block_model(np.random.default_rng(11), y_scale)


def test_exact_draws_do_not_move_when_the_data_move_in_the_last_bits():
    """Data scaled by (1 + 2^-50): the grid's mode, SDs and nodes move in their last bits,
    the draws (at the canonical nodes, rounded) keep every bit; without the rounding they
    move."""
    a = exact.fit_block_model(_small_model(), draws=500, chains=2, seed=4)
    b = exact.fit_block_model(_small_model(1.0 + 2.0**-50), draws=500, chains=2, seed=4)
    assert not np.array_equal(a.grid.nodes, b.grid.nodes)
    assert np.array_equal(a.grid.draw_nodes, b.grid.draw_nodes)
    for key in ("a", "c", "effect", "u"):
        assert np.array_equal(a.draws[key], b.draws[key]), key
    # the draws' nodes are the grid's, rounded: the mixture they come from is the grid's
    assert np.abs(a.grid.draw_nodes - a.grid.nodes).max() < 1e-3


def test_the_qmc_proposal_ignores_last_bits():
    """Measured noise of another CPU (Bush-Prather): centre 1.8e-13, scales 1.3e-9 relative,
    Cholesky factor 1.7e-9."""
    from hetfx.models.varying_slopes import (
        QMC_CENTRE_BITS,
        QMC_SCALE_BITS,
        _canonical_proposal,
    )

    rng = np.random.default_rng(8)
    d = 13
    mu, sp, sm = rng.normal(size=d), rng.uniform(0.03, 1.5, d), rng.uniform(0.03, 1.5, d)
    L = np.linalg.cholesky(np.corrcoef(rng.normal(size=(40, d)), rowvar=False))
    L[-1, -1] = 3e-4  # a nearly singular correlation: its last pivot stays positive
    prop = _canonical_proposal(mu, sp, sm, L)
    noisy = _canonical_proposal(
        mu + 2e-13 * rng.standard_normal(d),
        _nudge(sp, rng, 1.3e-9),
        _nudge(sm, rng, 1.3e-9),
        np.tril(L + 2e-9 * rng.standard_normal(L.shape)),
    )
    for x, y in zip(prop, noisy, strict=True):
        assert np.array_equal(x, y)
    step = _power_of_two_below(np.minimum(sp, sm)) * 2.0**-QMC_CENTRE_BITS
    assert np.all(np.abs(prop[0] - mu) <= step / 2)
    for new, old in ((prop[1], sp), (prop[2], sm)):
        assert np.all(np.abs(new / old - 1) <= 2.0**-QMC_SCALE_BITS)
    assert np.all(np.abs(prop[3] - L) <= 2.0 ** -(QMC_SCALE_BITS + 1))
    assert np.all(np.abs(np.diag(prop[3]) / np.diag(L) - 1) <= 2.0**-QMC_SCALE_BITS)


def _fit_stage():
    """analysis/fit.py, the fit stages' module (what writes posterior.nc)."""
    sys.path.insert(0, str(ROOT / "analysis"))
    try:
        return importlib.import_module("fit")
    finally:
        sys.path.remove(str(ROOT / "analysis"))


def test_posterior_loglik_rounds_to_its_grid_before_float32():
    stage = _fit_stage()
    rng = np.random.default_rng(2)
    ll = -np.abs(rng.standard_normal((4, 100, 30))) * 3 - 0.9
    out = stage.rounded_loglik(ll)
    assert out.dtype == np.float32
    grid = 2.0**stage.LL_BITS
    assert np.array_equal(out.astype(float) * grid, np.rint(ll * grid))  # exact in float32
    assert np.array_equal(stage.rounded_loglik(ll + 2e-15 * rng.standard_normal(ll.shape)), out)


def test_posterior_file_round_trips_every_group_exactly_with_its_compression(tmp_path):
    """posterior.nc (analysis/fit.py's write_netcdf): every group and variable reads back by
    ``az.from_netcdf`` with the same values, dtypes and attributes, and each numeric variable is
    stored with NETCDF_ENCODING (zlib level 1 after the byte shuffle). Writing twice gives the
    same bytes."""
    import arviz as az
    import xarray

    stage = _fit_stage()
    rng = np.random.default_rng(5)
    idata = az.from_dict(
        posterior={"beta": rng.standard_normal((4, 50, 3)), "sigma": rng.gamma(2.0, size=(4, 50))},
        log_likelihood={"y": stage.rounded_loglik(-rng.gamma(2.0, size=(4, 50, 20)))},
        attrs={"model": "m"},
    )
    idata = stage.without_timestamps(idata)
    paths = [tmp_path / "a.nc", tmp_path / "b.nc"]
    for path in paths:
        stage.write_netcdf(idata, path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    back = az.from_netcdf(paths[0])
    assert back.groups() == idata.groups()
    for group in idata.groups():
        assert back[group].identical(idata[group]), group
    for group, name in (("log_likelihood", "y"), ("posterior", "beta")):
        with xarray.open_dataset(paths[0], group=group, engine="h5netcdf") as ds:
            enc = ds[name].encoding
            assert (enc["zlib"], enc["complevel"], enc["shuffle"]) == (True, 1, True), enc
            assert ds[name].dtype == (np.float32 if group == "log_likelihood" else np.float64)
