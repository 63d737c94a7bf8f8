"""Tests of custval.models.btyd: recovery, gradients, stability, degenerate input, CDNOW."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.special import gammaln, hyp2f1

from custval.errors import CustvalError, FitError
from custval.models.btyd import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD
from custval.models.fitting import compress_rows
from tests.factories import assert_gradient_close, simulate_bgnbd, simulate_gg, simulate_pnbd

CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_sample.txt"


def assert_within_3se(model, truth):
    for k, v in truth.items():
        est, se = model.params_[k], model.standard_errors_[k]
        assert np.isfinite(se) and se > 0, (k, se)
        assert abs(est - v) < 3 * se, f"{k}: {est:.4f} vs {v} (se {se:.4f})"


# ---- parameter recovery ---------------------------------------------------------------------


def test_bgnbd_recovers_parameters():
    truth = {"r": 0.5, "alpha": 4.0, "a": 0.8, "b": 2.5}
    x, tx, T = simulate_bgnbd(20_000, *truth.values(), seed=1)
    m = BetaGeo().fit(x, tx, T)
    assert m.converged_ and m.grad_norm_ < 1e-5
    assert_within_3se(m, truth)
    assert m.covariance_.shape == (4, 4)
    assert m.aic_ == pytest.approx(8 - 2 * m.log_likelihood_)


def test_mbgnbd_recovers_parameters():
    truth = {"r": 0.5, "alpha": 4.0, "a": 0.8, "b": 2.5}
    x, tx, T = simulate_bgnbd(20_000, *truth.values(), seed=2, modified=True)
    m = ModifiedBetaGeo().fit(x, tx, T)
    assert m.converged_
    assert_within_3se(m, truth)


def test_pareto_recovers_parameters():
    truth = {"r": 0.6, "alpha": 8.0, "s": 0.7, "beta": 10.0}
    x, tx, T = simulate_pnbd(2_000, *truth.values(), seed=3)
    # whole days keep the number of distinct rows (and the fit time) small
    tx, T = np.round(tx * 7) / 7, np.round(T * 7) / 7
    m = ParetoNBD().fit(x, tx, T)
    assert m.converged_
    assert_within_3se(m, truth)


def test_gamma_gamma_recovers_parameters():
    truth = {"p": 6.0, "q": 4.0, "gamma": 15.0}
    x, mv = simulate_gg(5_000, *truth.values(), seed=4)
    m = GammaGamma().fit(x, mv)
    assert m.converged_
    assert_within_3se(m, truth)
    spend = m.conditional_expected_average_spend([0, 2], [0.0, 30.0])
    assert spend[0] == pytest.approx(m.params_["p"] * m.params_["gamma"] / (m.params_["q"] - 1))


# ---- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_analytic_gradient_matches_finite_difference(cls):
    x, tx, T = simulate_bgnbd(500, 0.5, 4.0, 0.8, 2.5, seed=5)
    data, w = (x, tx, T), np.ones_like(x)
    rng = np.random.default_rng(6)
    model = cls()
    for _ in range(5):
        theta = np.exp(rng.uniform(-1.5, 1.5, 4))
        assert_gradient_close(
            model._grad_natural(theta, data, w),
            lambda th: model._loglik(th, data, w),
            theta,
            rtol=1e-5,
            atol_of_max=1e-6,
        )


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo])
def test_fused_evaluation_matches_per_row_formulas(cls):
    # the fitting path (distinct-value gathers) against the plain per-row likelihood
    x, tx, T = simulate_bgnbd(2_000, 0.5, 4.0, 0.8, 2.5, seed=14)
    w = np.random.default_rng(15).integers(1, 4, x.size).astype(float)
    model = cls()
    state = model._prepare((x, tx, T), w)
    for theta in (np.array([0.5, 4.0, 0.8, 2.5]), np.array([2.0, 0.3, 5.0, 0.2])):
        ll, g = model._value_and_grad(theta, state, w)
        assert ll == pytest.approx(model._loglik(theta, (x, tx, T), w), rel=1e-12)
        np.testing.assert_allclose(g, model._grad_natural(theta, (x, tx, T), w), rtol=1e-10)


def test_gamma_gamma_gradient_matches_finite_difference():
    x, mv = simulate_gg(500, 6.0, 4.0, 15.0, seed=7)
    data, w = (x, mv), np.ones_like(x)
    model = GammaGamma()
    rng = np.random.default_rng(8)
    for _ in range(5):
        theta = np.exp(rng.uniform(-1, 2.5, 3))
        assert_gradient_close(
            model._grad_natural(theta, data, w),
            lambda th: model._loglik(th, data, w),
            theta,
            rtol=1e-5,
            atol_of_max=1e-6,
        )


# ---- closed forms against the textbook formulas at moderate values ---------------------------


def _fitted(cls, names, values):
    m = cls()
    m.params_ = dict(zip(names, values, strict=True))
    return m


def test_bgnbd_predictions_match_textbook_formulas():
    r, alpha, a, b = 0.2426, 4.4136, 0.7929, 2.4259
    m = _fitted(BetaGeo, ("r", "alpha", "a", "b"), (r, alpha, a, b))
    x = np.array([0.0, 1, 2, 7])
    tx = np.array([0.0, 5.0, 30.0, 35.0])
    T = np.array([20.0, 30.0, 38.0, 38.0])
    t = 39.0
    p_alive = 1 / (1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))
    z = t / (alpha + T + t)
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
    want = (
        (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
    ) * p_alive
    np.testing.assert_allclose(m.probability_alive(x, tx, T), p_alive, rtol=1e-12)
    np.testing.assert_allclose(m.conditional_expected_purchases(t, x, tx, T), want, rtol=1e-10)
    new = (
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    )
    np.testing.assert_allclose(m.expected_purchases_new_customer(t), new, rtol=1e-10)


def test_mbgnbd_predictions_match_textbook_formulas():
    r, alpha, a, b = 0.5, 6.0, 0.9, 1.6
    m = _fitted(ModifiedBetaGeo, ("r", "alpha", "a", "b"), (r, alpha, a, b))
    x = np.array([0.0, 1, 2, 7])
    tx = np.array([0.0, 5.0, 30.0, 35.0])
    T = np.array([20.0, 30.0, 38.0, 38.0])
    t = 39.0
    hyp = hyp2f1(r + x, b + x + 1, a + b + x, t / (alpha + T + t))
    num = (a + b + x) / (a - 1) * (1 - hyp * ((alpha + T) / (alpha + t + T)) ** (r + x))
    den = 1 + a / (b + x) * ((alpha + T) / (alpha + tx)) ** (r + x)
    np.testing.assert_allclose(m.conditional_expected_purchases(t, x, tx, T), num / den, rtol=1e-10)
    new = b / (a - 1) * (1 - hyp2f1(r, b + 1, a + b, t / (alpha + t)) * (alpha / (alpha + t)) ** r)
    np.testing.assert_allclose(m.expected_purchases_new_customer(t), new, rtol=1e-10)


@pytest.mark.parametrize("params", [(0.553, 10.578, 0.606, 11.669), (0.8, 12.0, 0.4, 3.0)])
def test_pareto_likelihood_matches_hypergeometric_form(params):
    # Fader & Hardie (2005) eq. with 2F1, usable at moderate x where it does not overflow
    r, alpha, s, beta = params
    x = np.array([0.0, 1, 3, 10])
    tx = np.array([0.0, 4.0, 20.0, 30.0])
    T = np.array([10.0, 25.0, 38.0, 38.0])
    a1 = r + s + x
    if alpha >= beta:
        b1, big = s + 1, alpha

        def f(tau):
            return hyp2f1(a1, b1, a1 + 1, (alpha - beta) / (alpha + tau)) / (alpha + tau) ** a1
    else:
        b1, big = r + x, beta

        def f(tau):
            return hyp2f1(a1, b1, a1 + 1, (beta - alpha) / (beta + tau)) / (beta + tau) ** a1

    assert big > 0
    a0 = f(tx) - f(T)
    log_l = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + s * np.log(beta)
        + np.log(1 / ((alpha + T) ** (r + x) * (beta + T) ** s) + s / (r + s + x) * a0)
    )
    m = ParetoNBD()
    got = m._loglik_rows(np.array(params), (x, tx, T))
    np.testing.assert_allclose(got, log_l, rtol=1e-10)


# ---- stability ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "names", "values"),
    [
        (BetaGeo, ("r", "alpha", "a", "b"), (0.2426, 4.4136, 0.7929, 2.4259)),
        (ModifiedBetaGeo, ("r", "alpha", "a", "b"), (0.5248, 6.1831, 0.8914, 1.6140)),
        (ParetoNBD, ("r", "alpha", "s", "beta"), (0.553, 10.578, 0.606, 11.669)),
        (ParetoNBD, ("r", "alpha", "s", "beta"), (0.553, 11.669, 0.606, 10.578)),
    ],
)
def test_heavy_buyer_is_finite_without_warnings(cls, names, values):
    m = _fitted(cls, names, values)
    x = np.array([1000.0, 1500.0, 0.0, 3.0])
    tx = np.array([38.0, 51.5, 0.0, 0.0])
    T = np.array([38.5, 52.0, 0.0, 0.0])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        ll = m._loglik_rows(np.array(values), (x, tx, T))
        pa = m.probability_alive(x, tx, T)
        ce = m.conditional_expected_purchases(39.0, x, tx, T)
        new = m.expected_purchases_new_customer([0.0, 1.0, 52.0])
    for arr in (ll, pa, ce, new):
        assert np.all(np.isfinite(arr))
    assert ll[2] == pytest.approx(0.0, abs=1e-12)  # T = 0, x = 0: probability one
    assert pa.min() >= 0 and pa.max() <= 1
    # at most what a surely-alive customer at the posterior mean rate would buy
    r, alpha = values[0], values[1]
    assert 0 < ce[0] <= (r + x[0]) / (alpha + T[0]) * 39.0 * (1 + 1e-9)


def test_heavy_buyer_fit_has_finite_likelihood():
    x, tx, T = simulate_bgnbd(2_000, 0.5, 4.0, 0.8, 2.5, seed=9)
    x = np.append(x, 1000.0)
    tx = np.append(tx, 51.0)
    T = np.append(T, 52.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cls in (BetaGeo, ModifiedBetaGeo):
            m = cls().fit(x, tx, T)
            assert np.isfinite(m.log_likelihood_) and m.converged_


def test_gamma_gamma_heavy_buyer():
    x, mv = simulate_gg(1_000, 6.0, 4.0, 15.0, seed=10)
    x = np.append(x, 5000.0)
    mv = np.append(mv, 12.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = GammaGamma().fit(x, mv)
        assert np.isfinite(m.log_likelihood_)
        assert np.isfinite(m.conditional_expected_average_spend(x, mv)).all()


# ---- edge cases and degenerate input --------------------------------------------------------


def test_t_zero_customers_are_accepted():
    x, tx, T = simulate_bgnbd(3_000, 0.5, 4.0, 0.8, 2.5, seed=11)
    x0 = np.concatenate([x, np.zeros(200)])
    tx0 = np.concatenate([tx, np.zeros(200)])
    T0 = np.concatenate([T, np.zeros(200)])
    a = BetaGeo().fit(x, tx, T)
    b = BetaGeo().fit(x0, tx0, T0)
    # T = 0 customers carry no information: same fit, same likelihood
    for k in a.params_:
        assert b.params_[k] == pytest.approx(a.params_[k], rel=1e-6)
    assert b.log_likelihood_ == pytest.approx(a.log_likelihood_, abs=1e-6)
    assert np.isfinite(b.conditional_expected_purchases(10, 0, 0, 0)).all()


def test_one_customer_gives_result_or_clear_error():
    for cls in (BetaGeo, ModifiedBetaGeo, ParetoNBD):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                m = cls().fit([2], [10.0], [30.0])
            except CustvalError as exc:
                assert "do not determine" in str(exc)
            else:
                assert np.isfinite(m.log_likelihood_)
                assert all(np.isfinite(v) for v in m.params_.values())
                assert all(np.isfinite(v) for v in m.standard_errors_.values())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([], [], []), "empty"),
        (([-1, 2], [0, 1], [5, 5]), "negative"),
        (([1, 2], [6, 1], [5, 5]), "recency greater than T"),
        (([1.5, 2], [1, 1], [5, 5]), "non-integer"),
        (([0, 0], [0, 0], [0, 0]), "T = 0"),
        (([1, np.nan], [1, 1], [5, 5]), "missing"),
        (([0, 2], [3, 1], [5, 5]), "positive recency"),
        (([1, 2], [1, 1], [5]), "different lengths"),
    ],
)
@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_degenerate_input_raises(cls, args, match):
    with pytest.raises(CustvalError, match=match):
        cls().fit(*args)


def test_gamma_gamma_degenerate_input():
    with pytest.raises(FitError, match="no repeat buyers"):
        GammaGamma().fit([0, 0], [0.0, 0.0])
    with pytest.raises(CustvalError, match="negative"):
        GammaGamma().fit([1, 2], [-3.0, 4.0])
    with pytest.raises(CustvalError, match="non-positive monetary"):
        GammaGamma().fit([1, 2], [0.0, 4.0])
    with pytest.raises(CustvalError, match="not fitted"):
        GammaGamma().conditional_expected_average_spend([1], [2.0])


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_data_that_do_not_determine_a_model_raise_fit_error(cls):
    # valid data, but nothing to fit on: FitError, the one error callers catch to go on
    with pytest.raises(FitError, match="T = 0"):
        cls().fit([0, 0], [0, 0], [0, 0])
    # a spend model whose q <= 1 has no finite mean spend to predict
    heavy = GammaGamma.from_params({"p": 2.0, "q": 0.8, "gamma": 10.0})
    with pytest.raises(FitError, match="mean spend is infinite"):
        heavy.conditional_expected_average_spend([1], [20.0])


def test_pandas_series_input():
    pd = pytest.importorskip("pandas")
    x, tx, T = simulate_bgnbd(2_000, 0.5, 4.0, 0.8, 2.5, seed=12)
    a = BetaGeo().fit(pd.Series(x), pd.Series(tx), pd.Series(T))
    b = BetaGeo().fit(x, tx, T)
    assert a.params_ == pytest.approx(b.params_)


def test_compress_key_and_lexsort_paths_agree():
    rng = np.random.default_rng(16)
    x = rng.integers(0, 5, 5_000).astype(float)
    tx = rng.integers(0, 20, 5_000) / 7
    T = tx + rng.integers(0, 3, 5_000)
    w = rng.integers(0, 3, 5_000).astype(float)
    (a_cols, a_w), (b_cols, b_w) = (
        compress_rows(x, tx, T, weights=w),
        compress_rows(x, tx, T, weights=w, max_key=1),
    )
    # the hashing path returns rows in no particular order: compare them sorted
    ia, ib = np.lexsort(a_cols[::-1]), np.lexsort(b_cols[::-1])
    for ca, cb in zip(a_cols, b_cols, strict=True):
        np.testing.assert_array_equal(ca[ia], cb[ib])
    np.testing.assert_array_equal(a_w[ia], b_w[ib])
    assert a_w.sum() == w.sum() and (a_w > 0).all()
    rows = set(zip(*a_cols, strict=True))
    assert len(rows) == a_w.size == len(set(zip(x[w > 0], tx[w > 0], T[w > 0], strict=True)))


def test_compressed_and_uncompressed_fits_agree():
    rng = np.random.default_rng(13)
    x, tx, T = simulate_bgnbd(1_000, 0.5, 4.0, 0.8, 2.5, seed=13)
    tx, T = np.round(tx), np.round(T) + 1
    tx = np.where(x > 0, tx, 0.0)
    reps = rng.integers(1, 5, x.size)
    full = BetaGeo().fit(np.repeat(x, reps), np.repeat(tx, reps), np.repeat(T, reps))
    weighted = BetaGeo().fit(x, tx, T, weights=reps)
    for k in full.params_:
        assert weighted.params_[k] == pytest.approx(full.params_[k], rel=1e-6)
        assert weighted.standard_errors_[k] == pytest.approx(full.standard_errors_[k], rel=1e-4)
    assert weighted.log_likelihood_ == pytest.approx(full.log_likelihood_, rel=1e-10)


# ---- CDNOW (published values) ---------------------------------------------------------------


@pytest.mark.skipif(not CDNOW.exists(), reason=f"CDNOW sample not found at {CDNOW}")
def test_cdnow_bgnbd_matches_published():
    spec = importlib.util.spec_from_file_location(
        "btyd_cdnow", Path(__file__).resolve().parents[1] / "bench" / "btyd_cdnow.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    s, _ = bench.load_summary(CDNOW)
    m = BetaGeo().fit(s["frequency"], s["recency"], s["T"])
    published = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}
    for k, v in published.items():
        # the published 4 decimals (at least 4 significant digits)
        assert round(m.params_[k], 4) == v, (k, m.params_[k])
    assert m.log_likelihood_ == pytest.approx(-9582.43, abs=0.01)
    gg = GammaGamma().fit(s["frequency"], s["monetary_value"])
    assert gg.params_["p"] == pytest.approx(6.25, abs=0.005)
    assert gg.params_["q"] == pytest.approx(3.74, abs=0.005)
    assert gg.params_["gamma"] == pytest.approx(15.44, abs=0.005)


def test_a_transposed_dataframe_as_t_is_a_clear_error():
    import pandas as pd

    df = pd.DataFrame({"frequency": [1, 0], "recency": [2.0, 0.0], "T": [5.0, 3.0]})
    with pytest.raises(CustvalError, match=r"df\['T'\]: df.T is the transposed"):
        BetaGeo().fit(df.frequency, df.recency, df.T)


def test_a_failed_refit_leaves_no_fitted_state_and_max_iter_is_named():
    x, tx, T = simulate_bgnbd(3_000, 0.25, 4.0, 0.8, 2.5, seed=21)
    m = BetaGeo().fit(x, tx, T)
    with pytest.raises(CustvalError, match="do not determine"):
        m.fit([0, 0], [0, 0], [1, 2])
    for name in ("params_", "converged_", "covariance_", "standard_errors_", "log_likelihood_"):
        assert not hasattr(m, name)
    with pytest.raises(CustvalError, match=r"did not converge in 2 iterations.*Raise max_iter"):
        BetaGeo(max_iter=2).fit(x, tx, T)
    with pytest.raises(TypeError):
        BetaGeo(1e-8)  # keyword-only: BetaGeo(tol=..., max_iter=...)
