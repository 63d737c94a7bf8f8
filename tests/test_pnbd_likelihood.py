"""Tests of custval.models.pnbd_likelihood against the reference Pareto/NBD in btyd.py."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from custval.models import pnbd_likelihood as pl
from custval.models.btyd import ParetoNBD
from custval.models.fitting import compress_rows
from custval.models.pnbd_likelihood import log_tail_integral_direct
from tests.factories import assert_gradient_close

BENCH = Path(__file__).resolve().parents[1] / "bench"
CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_sample.txt"

PARAMS = [
    (0.553, 10.578, 0.606, 11.669),
    (0.553, 11.669, 0.606, 10.578),  # alpha < beta
    (0.25, 4.0, 0.3, 40.0),
    (0.25, 40.0, 2.0, 0.5),
    (2.0, 0.1, 0.1, 30.0),
    (0.1, 1000.0, 0.05, 0.01),
    (0.5, 5.0, 0.7, 5.0),  # alpha == beta
    (3.0, 7.0, 1.5, 7.0),  # alpha == beta, large shapes
]


class Fast(ParetoNBD):
    """ParetoNBD fitted with the fast likelihood."""

    def _prepare(self, data, w):
        return pl.prepare(*data, w)

    def _value_and_grad(self, theta, state, w):
        return pl.value_and_grad(theta, state, w)


def edge_rows():
    """Rows that stress the likelihood: heavy buyers, t_x = T, T = 0, tiny gaps, long ages."""
    rng = np.random.default_rng(7)
    n = 400
    t = np.round(rng.uniform(0.0, 78.0, n) * 7) / 7
    x = rng.poisson(3.0, n).astype(float)
    tx = np.where(x > 0, np.round(t * rng.uniform(0, 1, n) * 7) / 7, 0.0)
    special = np.array(
        [
            # x, t_x, T
            (0, 0, 0),  # T = 0
            (0, 0, 1e-9),  # tiny T
            (0, 0, 1 / 7),
            (0, 0, 500),
            (1, 1e-9, 30),  # tiny t_x
            (2, 30, 30),  # t_x = T
            (5, 10 - 1e-9, 10),  # T - t_x tiny: I(t_x) - I(T) cancels, short-interval rule
            (3, 499, 500),  # u up to 500
            (40, 490, 500),
            (100, 50, 52),
            (1000, 51.5, 52),  # heavy buyers
            (1000, 52, 52),
            (1000, 1, 300),
            (5000, 77.9, 78),
            (5000, 2, 500),
            (5000, 500, 500),
        ],
        dtype=float,
    )
    x = np.concatenate([x, special[:, 0]])
    tx = np.concatenate([tx, special[:, 1]])
    t = np.concatenate([t, special[:, 2]])
    w = rng.integers(1, 20, x.size).astype(float)
    return x, tx, t, w


@pytest.fixture(scope="module")
def rows():
    return edge_rows()


def reference(theta, x, tx, t, w):
    m = ParetoNBD()
    data = (x, tx, t)
    ll_rows = m._loglik_rows(theta, data)
    g_rows = m._grad_rows(theta, data)
    return float(w @ ll_rows), g_rows @ w, np.abs(g_rows) @ w


@pytest.mark.parametrize("params", PARAMS)
def test_matches_reference(rows, params):
    x, tx, t, w = rows
    theta = np.array(params)
    ll0, g0, scale = reference(theta, x, tx, t, w)
    state = pl.prepare(x, tx, t, w)
    ll, g = pl.value_and_grad(theta, state, w)
    assert np.isfinite(ll) and np.all(np.isfinite(g))
    assert abs(ll - ll0) <= 1e-10 * abs(ll0)
    # relative 1e-6 per component; the absolute floor guards components that cancel in the sum
    np.testing.assert_allclose(g, g0, rtol=1e-6, atol=1e-10 * scale.max())
    per_row = pl.log_likelihood_rows(theta, x, tx, t)
    ref_rows = ParetoNBD()._loglik_rows(theta, (x, tx, t))
    np.testing.assert_allclose(per_row, ref_rows, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("params", PARAMS)
def test_gradient_matches_finite_differences(rows, params):
    x, tx, t, w = rows
    theta = np.array(params)
    state = pl.prepare(x, tx, t, w)
    _, g = pl.value_and_grad(theta, state, w)
    _, _, scale = reference(theta, x, tx, t, w)
    assert_gradient_close(
        g,
        lambda th: pl.value_and_grad(th, state, w)[0],
        theta,
        rtol=1e-5,
        atol=1e-8 * scale.max(),
    )


@pytest.mark.parametrize("params", PARAMS)
def test_no_warnings(rows, params):
    x, tx, t, w = rows
    state = pl.prepare(x, tx, t, w)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        ll, g = pl.value_and_grad(np.array(params), state, w)
        pl.log_likelihood_rows(np.array(params), x, tx, t)
    assert np.isfinite(ll) and np.all(np.isfinite(g))


@pytest.mark.parametrize(
    ("x", "tx", "t"),
    [
        ([2.0, 0.0], [5.0, 0.0], [5.0, 0.0]),  # no row has T > t_x: no tails at all
        ([3.0], [1.0], [9.0]),  # a single row
        ([0.0], [0.0], [0.0]),
    ],
)
def test_degenerate_inputs(x, tx, t):
    x, tx, t = map(np.array, (x, tx, t))
    w = np.full(x.size, 2.0)
    theta = np.array([0.5, 3.0, 0.7, 4.0])
    ll0, g0, _ = reference(theta, x, tx, t, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ll, g = pl.value_and_grad(theta, pl.prepare(x, tx, t, w), w)
    assert isinstance(ll, float)
    assert ll == pytest.approx(ll0, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(g, g0, rtol=1e-10, atol=1e-12)


def test_tails_converged():
    """The tail rule agrees with a much finer, much longer grid to ~1e-14 over random parameters."""
    xs, us = (
        a.ravel()
        for a in np.meshgrid(
            [0, 1, 10, 100, 1000, 5000.0], [0, 0.1, 1, 10, 100, 500.0], indexing="ij"
        )
    )
    rng = np.random.default_rng(3)
    thetas = np.exp(rng.uniform([-5, -5, -5, -5], [2, 7, 2, 7], size=(40, 4)))
    saved = pl.STEP, pl.T_LO, pl.TAIL_LOG
    try:
        for theta in thetas:
            pl.STEP, pl.T_LO, pl.TAIL_LOG = saved
            log_i, g = pl._log_tails(*theta, xs, us)
            pl.STEP, pl.T_LO, pl.TAIL_LOG = 0.04, -5.0, 60.0
            ref_i, ref_g = pl._log_tails(*theta, xs, us)
            np.testing.assert_allclose(log_i, ref_i, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(g, ref_g, rtol=1e-11, atol=1e-14)
    finally:
        pl.STEP, pl.T_LO, pl.TAIL_LOG = saved


def test_cancelling_rows_use_short_rule(rows):
    x, tx, t, w = rows
    state = pl.prepare(x, tx, t, w)
    _, _, n_short, n_direct = pl._log_d(np.array(PARAMS[0]), state)
    # only the two rows with T - t_x = 1e-9 cancel; their gap is short, so no full quadrature
    assert (n_short, n_direct) == (2, 0)


def test_short_rule_matches_reference():
    rng = np.random.default_rng(5)
    n = 200
    x = rng.choice([0.0, 1, 5, 50, 1000, 5000], n)
    tx = np.where(x > 0, rng.uniform(0, 500, n), 0.0)
    t = tx + np.exp(rng.uniform(-25, -3, n)) * (1.0 + tx)
    for params in PARAMS:
        r, alpha, s, beta = params
        ok = (t - tx) * np.maximum(r + x, 1) <= pl.SHORT_GAP * (alpha + tx)
        ok &= (t - tx) * (s + 1) <= pl.SHORT_GAP * (beta + tx)
        assert ok.sum() > 50
        ld, gd = pl._log_d_short(r, alpha, s, beta, x[ok], tx[ok], t[ok])
        ref_ld, ref_gd = log_tail_integral_direct(
            r, alpha, s, beta, x[ok], tx[ok], t[ok], grad=True
        )
        np.testing.assert_allclose(ld, ref_ld, rtol=1e-12)
        np.testing.assert_allclose(gd, ref_gd, rtol=1e-9, atol=1e-12 * np.abs(ref_gd).max())


def test_many_cancelling_rows_stay_fast_and_exact(bench_data):
    """Huge alpha = beta: most rows' T - t_x is tiny against the scale (short rule)."""
    f, r, t = bench_data
    (x, tx, tt), w = compress_rows(f, r, t, weights=np.ones(f.size))
    theta = np.array([1.0, 1e6, 1.0, 1e6])
    state = pl.prepare(x, tx, tt, w)
    _, _, n_short, n_direct = pl._log_d(theta, state)
    assert n_short > 1000 and n_direct == 0
    ll0, g0, scale = reference(theta, x, tx, tt, w)
    ll, g = pl.value_and_grad(theta, state, w)
    assert abs(ll - ll0) <= 1e-10 * abs(ll0)
    np.testing.assert_allclose(g, g0, rtol=1e-6, atol=1e-10 * scale.max())


def test_prepare_pairs(rows):
    x, tx, t, w = rows
    state = pl.prepare(x, tx, t, w)
    pos = state.pos
    np.testing.assert_array_equal(state.pair_x[state.p_tx], x[pos])
    np.testing.assert_array_equal(state.pair_u[state.p_tx], tx[pos])
    np.testing.assert_array_equal(state.pair_u[state.p_t], t[pos])
    assert np.all(t[pos] > tx[pos])
    assert state.pair_x.size <= 2 * pos.size


@pytest.fixture(scope="module")
def bench_data():
    sys.path.insert(0, str(BENCH))
    try:
        from btyd_scale import simulate_bgnbd
    finally:
        sys.path.remove(str(BENCH))
    d = simulate_bgnbd(20_000, np.random.default_rng(2024))
    return d["frequency"], d["recency"], d["T"]


def test_bench_data_matches_reference(bench_data):
    f, r, t = bench_data
    (x, tx, tt), w = compress_rows(f, r, t, weights=np.ones(f.size))
    theta = np.array([0.507, 9.33, 0.745, 22.12])
    ll0, g0, scale = reference(theta, x, tx, tt, w)
    ll, g = pl.value_and_grad(theta, pl.prepare(x, tx, tt, w), w)
    assert abs(ll - ll0) <= 1e-12 * abs(ll0)
    np.testing.assert_allclose(g, g0, rtol=1e-8, atol=1e-12 * scale.max())


def test_fit_matches_reference_fit(bench_data):
    f, r, t = bench_data
    # a subsample keeps the reference fit quick
    f, r, t = f[:3000], r[:3000], t[:3000]
    fast = Fast().fit(f, r, t)
    slow = ParetoNBD().fit(f, r, t)
    assert fast.converged_
    for k, v in slow.params_.items():
        assert fast.params_[k] == pytest.approx(v, rel=1e-6)
    assert fast.log_likelihood_ == pytest.approx(slow.log_likelihood_, rel=1e-12)


@pytest.mark.skipif(not CDNOW.exists(), reason="CDNOW sample not available")
def test_cdnow_published_estimates():
    sys.path.insert(0, str(BENCH))
    try:
        import btyd_cdnow
    finally:
        sys.path.remove(str(BENCH))
    s, _ = btyd_cdnow.load_summary(CDNOW)
    m = Fast().fit(s["frequency"], s["recency"], s["T"])
    # Fader & Hardie's published Pareto/NBD estimates on the CDNOW sample
    published = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    for k, v in published.items():
        assert m.params_[k] == pytest.approx(v, abs=1.5e-3)
