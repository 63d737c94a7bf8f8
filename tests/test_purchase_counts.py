"""Tests of custval.models.purchase_counts: P(X(t) = n) for BG/NBD, MBG/NBD and Pareto/NBD."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate
from scipy.special import gammaln

from custval.errors import CustvalError
from custval.models.btyd import BetaGeo, ModifiedBetaGeo, ParetoNBD
from custval.models.purchase_counts import (
    bgnbd_probability_of_purchases,
    pnbd_probability_of_purchases,
)
from tests.factories import simulate_bgnbd

BG = {"r": 0.5, "alpha": 4.0, "a": 0.8, "b": 2.5}
PNBD = {"r": 0.55, "alpha": 10.6, "s": 0.61, "beta": 11.7}  # CDNOW-like (weeks)
MC_CUSTOMERS = 200_000


# ---- simulators of X(t) for new customers (vectorised) ----------------------------------------


def simulate_bgnbd_counts(params, t, n, seed=0, modified=False):
    """X(t) = min(N(t), K): N(t) ~ Poisson(lambda t), K geometric on 1, 2, ... (0, 1, ... MBG)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params["r"], 1 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    k = rng.geometric(p) - (1 if modified else 0)
    return np.minimum(rng.poisson(lam * t), k)


def simulate_pnbd_counts(params, t, n, seed=0):
    """X(t) = N(min(tau, t)): tau ~ Exponential(mu), mu ~ Gamma(s, beta)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params["r"], 1 / params["alpha"], n)
    mu = rng.gamma(params["s"], 1 / params["beta"], n)
    active = np.minimum(rng.exponential(1 / mu), t)
    return rng.poisson(lam * active)


def assert_matches_simulation(probs, sample):
    """Each frequency n = 0..len(probs)-1 within 4 binomial standard errors."""
    n = sample.size
    counts = np.bincount(sample, minlength=probs.size)[: probs.size]
    se = np.sqrt(n * probs * (1 - probs))
    dev = np.abs(counts - n * probs)
    assert np.all(dev <= 4 * se + 1e-9), np.column_stack([counts, n * probs, se])[dev > 4 * se]


# ---- agreement with simulation ----------------------------------------------------------------


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("t", [5.0, 39.0])
def test_bgnbd_matches_simulation(modified, t):
    probs = bgnbd_probability_of_purchases(BG, t, np.arange(15), modified=modified)
    sample = simulate_bgnbd_counts(BG, t, MC_CUSTOMERS, seed=int(t) + modified, modified=modified)
    assert_matches_simulation(probs, sample)


def test_mbgnbd_differs_from_bgnbd_at_zero():
    # the MBG/NBD customer can leave at time 0: P(X(t) = 0) is larger by the chance of that
    p0_bg = bgnbd_probability_of_purchases(BG, 10.0, 0)
    p0_mbg = bgnbd_probability_of_purchases(BG, 10.0, 0, modified=True)
    assert p0_mbg > p0_bg + 0.1
    # at t = 0 nobody has bought again
    assert bgnbd_probability_of_purchases(BG, 0.0, [0, 1, 2], modified=True) == pytest.approx(
        [1, 0, 0]
    )


@pytest.mark.parametrize("t", [5.0, 39.0, 150.0])
def test_pnbd_matches_simulation(t):
    probs = pnbd_probability_of_purchases(PNBD, t, np.arange(15))
    assert_matches_simulation(probs, simulate_pnbd_counts(PNBD, t, MC_CUSTOMERS, seed=int(t)))


# ---- normalisation and mean -------------------------------------------------------------------


PARAM_SETS = [
    ("bgnbd", BetaGeo, {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.4}),
    ("bgnbd", BetaGeo, {"r": 2.0, "alpha": 1.0, "a": 3.0, "b": 5.0}),
    ("mbgnbd", ModifiedBetaGeo, {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.4}),
    ("mbgnbd", ModifiedBetaGeo, {"r": 2.0, "alpha": 1.0, "a": 3.0, "b": 5.0}),
    ("pnbd", ParetoNBD, PNBD),
    ("pnbd", ParetoNBD, {"r": 2.0, "alpha": 5.0, "s": 3.0, "beta": 5.0}),
    ("pnbd", ParetoNBD, {"r": 0.3, "alpha": 2.0, "s": 1.0, "beta": 0.5}),  # s = 1 exactly
]


def _probs(kind, params, t, n):
    if kind == "pnbd":
        return pnbd_probability_of_purchases(params, t, n)
    return bgnbd_probability_of_purchases(params, t, n, modified=kind == "mbgnbd")


@pytest.mark.parametrize(("kind", "cls", "params"), PARAM_SETS)
def test_sums_to_one_and_mean_matches_model(kind, cls, params):
    model = cls()
    model.params_ = dict(params)
    t = np.array([0.5, 39.0, 104.0])
    n = np.arange(3000)  # the tails beyond are below 1e-12
    probs = _probs(kind, params, t[:, None], n[None, :])
    assert probs.shape == (3, 3000)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        probs @ n, model.expected_purchases_new_customer(t), rtol=1e-8, atol=1e-10
    )


def test_mean_matches_fitted_model():
    x, tx, T = simulate_bgnbd(4000, *BG.values(), seed=3, t_min=10.0, t_max=52.0)
    model = BetaGeo().fit(x, tx, T)
    probs = bgnbd_probability_of_purchases(model.params_, 52.0, np.arange(2000))
    assert float(probs @ np.arange(2000)) == pytest.approx(
        float(model.expected_purchases_new_customer(52.0)[0]), rel=1e-9
    )


# ---- numerical behaviour ----------------------------------------------------------------------


def test_pnbd_integral_matches_adaptive_quadrature():
    # the dropout term against scipy's adaptive quadrature of the defining integral
    r, alpha, s, beta = PNBD.values()
    for t, x in [(1.0, 0), (39.0, 3), (39.0, 40), (300.0, 7)]:

        def dens(tau, x=x):
            if tau == 0:
                return 0.0 if x else s / beta
            log_nbd = (
                gammaln(r + x)
                - gammaln(r)
                - gammaln(x + 1)
                + r * math.log(alpha / (alpha + tau))
                + x * math.log(tau / (alpha + tau))
            )
            return s / beta * (beta / (beta + tau)) ** (s + 1) * math.exp(log_nbd)

        died, _ = integrate.quad(dens, 0, t, epsabs=0, epsrel=1e-12, limit=400)
        alive = (beta / (beta + t)) ** s * math.exp(
            gammaln(r + x)
            - gammaln(r)
            - gammaln(x + 1)
            + r * math.log(alpha / (alpha + t))
            + x * math.log(t / (alpha + t))
        )
        assert pnbd_probability_of_purchases(PNBD, t, x) == pytest.approx(alive + died, rel=1e-9)


def test_large_counts_do_not_overflow_or_warn():
    n = np.arange(0, 1001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heavy = {"r": 5.0, "alpha": 0.1, "a": 2.0, "b": 50.0}
        for probs in (
            bgnbd_probability_of_purchases(heavy, 52.0, n),
            bgnbd_probability_of_purchases(heavy, 52.0, n, modified=True),
            pnbd_probability_of_purchases({"r": 5.0, "alpha": 0.1, "s": 0.5, "beta": 50.0}, 52, n),
            pnbd_probability_of_purchases(PNBD, [0.0, 1e-6, 1e4], 1000),
        ):
            assert np.all(np.isfinite(probs)) and np.all(probs >= 0) and np.all(probs <= 1)
    # heavy buyers (about 2,600 purchases in 52 weeks if they stay): n = 1000 is not underflow
    probs = pnbd_probability_of_purchases({"r": 5.0, "alpha": 0.1, "s": 0.5, "beta": 50.0}, 52, n)
    assert 1e-6 < probs[1000] < 1e-2
    assert 1e-6 < bgnbd_probability_of_purchases(heavy, 52.0, 1000) < 1e-2


def test_t_zero_and_broadcasting():
    out = pnbd_probability_of_purchases(PNBD, [[0.0], [1.0]], [0, 1, 2])
    assert out.shape == (2, 3)
    assert out[0] == pytest.approx([1, 0, 0])
    assert out[1].sum() < 1 and out[1, 0] > 0.9
    assert np.ndim(bgnbd_probability_of_purchases(BG, 3.0, 2)) == 0


@pytest.mark.parametrize(
    ("t", "n", "params"),
    [
        (-1.0, 0, BG),
        (1.0, 1.5, BG),
        (1.0, -1, BG),
        (1.0, 1, {"r": 1.0, "alpha": 1.0, "a": 1.0}),
        (1.0, 1, {"r": 1.0, "alpha": -1.0, "a": 1.0, "b": 1.0}),
    ],
)
def test_bad_input_raises_custval_error(t, n, params):
    with pytest.raises(CustvalError):
        bgnbd_probability_of_purchases(params, t, n)


def test_model_methods_delegate_and_need_a_fit() -> None:

    n = np.arange(0, 300)
    for cls, params in (
        (BetaGeo, {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4}),
        (ModifiedBetaGeo, {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4}),
        (ParetoNBD, {"r": 0.55, "alpha": 10.6, "s": 0.6, "beta": 11.7}),
    ):
        with pytest.raises(CustvalError, match="not fitted"):
            cls().probability_of_purchases(39, 1)
        m = cls()
        m.params_ = params
        p = m.probability_of_purchases(39, n)
        assert p.sum() == pytest.approx(1, abs=1e-9)
        assert p @ n == pytest.approx(m.expected_purchases_new_customer(39)[0], rel=1e-9)
