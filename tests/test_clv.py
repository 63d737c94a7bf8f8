"""CLV and its intervals, on models with set parameters (CDNOW's published fits)."""

from __future__ import annotations

import numpy as np
import pytest

from custval.errors import CustvalError
from custval.models.btyd import BetaGeo, GammaGamma, ModifiedBetaGeo, ParetoNBD
from custval.models.clv import (
    _quantiles,
    clv_interval,
    customer_lifetime_value,
    discounted_expected_purchases,
    expected_purchases_interval,
)


def models(cov_scale: float = 1e-4) -> tuple[BetaGeo, GammaGamma]:
    bg, gg = BetaGeo(), GammaGamma()
    bg.params_ = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}
    gg.params_ = {"p": 6.25, "q": 3.74, "gamma": 15.44}
    # a plausible covariance: relative standard errors of 1% x sqrt(scale / 1e-4)
    for m in (bg, gg):
        theta = np.array(list(m.params_.values()))
        m.covariance_ = np.diag((theta * 0.01) ** 2) * (cov_scale / 1e-4)
    return bg, gg


rng = np.random.default_rng(1)
N = 3000
T = rng.uniform(1, 39, N).round(2)
RECENCY = (T * rng.uniform(0, 1, N)).round(2)
FREQ = np.where(RECENCY > 0, rng.integers(1, 30, N), 0).astype(float)
SPEND = np.where(FREQ > 0, rng.gamma(6, 6, N), 0.0)


def test_one_undiscounted_step_is_spend_times_expected_purchases() -> None:
    bg, gg = models()
    clv = customer_lifetime_value(bg, gg, FREQ, RECENCY, T, SPEND, horizon=26, step=26)
    expected = bg.conditional_expected_purchases(26, FREQ, RECENCY, T) * (
        gg.conditional_expected_average_spend(FREQ, SPEND)
    )
    np.testing.assert_allclose(clv, expected, rtol=1e-12)


def test_undiscounted_value_does_not_depend_on_the_step() -> None:
    bg, _ = models()
    a = discounted_expected_purchases(bg, FREQ, RECENCY, T, horizon=52, step=1)
    b = discounted_expected_purchases(bg, FREQ, RECENCY, T, horizon=52, step=13)
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_discounting_by_hand() -> None:
    bg, _ = models()
    d = 0.01
    got = discounted_expected_purchases(bg, FREQ[:5], RECENCY[:5], T[:5], horizon=4, discount=d)
    cum = [bg.conditional_expected_purchases(t, FREQ[:5], RECENCY[:5], T[:5]) for t in range(5)]
    by_hand = sum((cum[t] - cum[t - 1]) / (1 + d) ** t for t in range(1, 5))
    np.testing.assert_allclose(got, by_hand, rtol=1e-12)
    undiscounted = discounted_expected_purchases(bg, FREQ[:5], RECENCY[:5], T[:5], horizon=4)
    assert np.all(got < undiscounted)


def test_interval_brackets_the_estimate_and_is_reproducible() -> None:
    bg, gg = models()
    kwargs = {"horizon": 52, "discount": 0.002, "step": 4, "n_draws": 100, "seed": 3}
    iv = clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, **kwargs)
    assert np.all(iv.lower <= iv.upper)
    inside = (iv.lower <= iv.estimate) & (iv.estimate <= iv.upper)
    assert inside.mean() > 0.99
    assert np.all(iv.upper - iv.lower > 0)
    again = clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, chunk_size=700, **kwargs)
    np.testing.assert_allclose(iv.lower, again.lower, rtol=1e-12)
    np.testing.assert_allclose(iv.upper, again.upper, rtol=1e-12)


def test_interval_widens_with_parameter_uncertainty() -> None:
    narrow = clv_interval(*models(1e-6), FREQ, RECENCY, T, SPEND, horizon=26, step=13, n_draws=60)
    wide = clv_interval(*models(1e-3), FREQ, RECENCY, T, SPEND, horizon=26, step=13, n_draws=60)
    assert np.median(wide.upper - wide.lower) > 10 * np.median(narrow.upper - narrow.lower)


def test_bad_arguments_are_clear_errors() -> None:
    bg, gg = models()
    bg.covariance_ = np.full((4, 4), np.nan)
    with pytest.raises(CustvalError, match="no finite covariance"):
        clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, horizon=10)
    bg, gg = models()
    for kwargs, needle in [
        ({"horizon": 0}, "horizon"),
        ({"horizon": 10, "step": -1}, "step"),
        ({"horizon": 10, "discount": -0.1}, "discount"),
    ]:
        with pytest.raises(CustvalError, match=needle):
            customer_lifetime_value(bg, gg, FREQ, RECENCY, T, SPEND, **kwargs)
    with pytest.raises(CustvalError, match="level"):
        clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, horizon=10, level=1.5)


@pytest.mark.parametrize("cov_scale", [1e-4, 1e-3])
def test_quadratic_draws_match_exact_draws(cov_scale: float) -> None:
    # relative standard errors of 1% and 3%: the quadratic's bounds are those of the exact draws
    # to a small share of the interval's width (200 draws' quantiles are only good to ~5%)
    bg, gg = models(cov_scale)
    kwargs = {"horizon": 52, "discount": 0.002, "step": 4, "n_draws": 150, "seed": 5}
    exact = clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, method="exact", **kwargs)
    quad = clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, method="quadratic", **kwargs)
    width = exact.upper - exact.lower
    for q, e in ((quad.lower, exact.lower), (quad.upper, exact.upper)):
        off = np.abs(q - e) / width
        assert off.max() < 5e-3 and np.median(off) < 1e-4
    np.testing.assert_allclose(quad.estimate, exact.estimate, rtol=1e-12)


@pytest.mark.parametrize("cls", [BetaGeo, ModifiedBetaGeo, ParetoNBD])
def test_expected_purchases_interval(cls: type) -> None:
    m = cls()
    names = ("r", "alpha", "s", "beta") if cls is ParetoNBD else ("r", "alpha", "a", "b")
    m.params_ = dict(zip(names, (0.55, 10.6, 0.61, 11.7), strict=True))
    theta = np.array(list(m.params_.values()))
    m.covariance_ = np.diag((theta * 0.02) ** 2)
    x, tx, tt = FREQ[:400], RECENCY[:400], T[:400]
    iv = expected_purchases_interval(m, x, tx, tt, horizon=39, n_draws=100, method="exact")
    np.testing.assert_allclose(
        iv.estimate, m.conditional_expected_purchases(39, x, tx, tt), rtol=1e-10
    )
    assert np.all(iv.lower <= iv.upper) and np.mean(iv.upper - iv.lower > 0) == 1
    inside = (iv.lower <= iv.estimate) & (iv.estimate <= iv.upper)
    assert inside.mean() > 0.99
    quad = expected_purchases_interval(m, x, tx, tt, horizon=39, n_draws=100, method="quadratic")
    off = np.abs(quad.upper - iv.upper) / (iv.upper - iv.lower)
    assert off.max() < 5e-3 and np.median(off) < 1e-4


def test_quantiles_match_numpy() -> None:
    values = np.random.default_rng(0).gamma(2.0, size=(50, 37))
    for level in (0.5, 0.8, 0.9, 0.95):
        lo, hi = _quantiles(values, level)
        ref = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], axis=1)
        np.testing.assert_allclose(lo, ref[0], rtol=1e-14)
        np.testing.assert_allclose(hi, ref[1], rtol=1e-14)


def test_quadratic_on_fitted_correlated_parameters_is_checked() -> None:
    # real fits have strongly correlated parameters; the whitened quadratic follows them
    rng = np.random.default_rng(4)
    n = 10_000
    lam = rng.gamma(0.25, 1 / 4.0, n)
    p = rng.beta(0.8, 2.5, n)
    t = rng.integers(7, 39 * 7, n) / 7.0
    events = rng.poisson(lam * t)
    x = np.minimum(events, rng.geometric(p)).astype(float)
    tx = np.where(x > 0, t * rng.beta(np.maximum(x, 1), np.maximum(events - x, 0) + 1), 0.0)
    bg = BetaGeo().fit(x, tx, t)
    sd = np.sqrt(np.diag(bg.covariance_))
    assert np.abs(bg.covariance_ / np.outer(sd, sd) - np.eye(4)).max() > 0.8
    exact = expected_purchases_interval(bg, x, tx, t, horizon=39, method="exact")
    quad = expected_purchases_interval(bg, x, tx, t, horizon=39, method="quadratic")
    assert quad.method == "quadratic" and quad.surrogate_error < 0.25
    width = exact.upper - exact.lower
    for q, e in ((quad.lower, exact.lower), (quad.upper, exact.upper)):
        off = np.abs(q - e) / width
        assert off.max() < 0.02 and np.median(off) < 1e-3
    # with few customers the quadratic is poor far out, and the check says so
    small = BetaGeo().fit(x[:300], tx[:300], t[:300])
    rough = expected_purchases_interval(
        small, x[:300], tx[:300], t[:300], horizon=39, method="quadratic"
    )
    assert (
        rough.surrogate_error
        > expected_purchases_interval(bg, x, tx, t, horizon=39, method="quadratic").surrogate_error
    )


def test_dead_heavy_buyer_keeps_intervals_finite() -> None:
    bg, gg = models()
    x = np.append(FREQ, 700.0)
    tx = np.append(RECENCY, 10.0)
    t = np.append(T, 300.0)
    m = np.append(SPEND, 30.0)
    with np.errstate(all="raise", under="ignore"):
        for method in ("exact", "quadratic"):
            iv = clv_interval(bg, gg, x, tx, t, m, horizon=52, n_draws=60, method=method)
            assert np.all(np.isfinite(iv.lower)) and np.all(np.isfinite(iv.total))
            assert iv.estimate[-1] < 1e-6


def test_too_few_draws_for_the_level_and_unfitted_models_are_clear_errors() -> None:
    bg, gg = models()
    with pytest.raises(CustvalError, match=r"too few for a 99\.9% interval"):
        clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, horizon=10, level=0.999, n_draws=200)
    with pytest.raises(CustvalError, match="not fitted"):
        clv_interval(BetaGeo(), gg, FREQ, RECENCY, T, SPEND, horizon=10)


def test_spend_frequency_feeds_only_the_spend_model() -> None:
    bg, gg = models()
    xs = np.where(np.arange(N) % 7 == 0, 0.0, FREQ)
    iv = clv_interval(bg, gg, FREQ, RECENCY, T, SPEND, horizon=26, n_draws=60, spend_frequency=xs)
    expected = discounted_expected_purchases(bg, FREQ, RECENCY, T, horizon=26) * (
        gg.conditional_expected_average_spend(xs, SPEND)
    )
    np.testing.assert_allclose(iv.estimate, expected, rtol=1e-12)
    assert np.mean((iv.lower <= iv.estimate) & (iv.estimate <= iv.upper)) > 0.99


def test_auto_picks_the_purchase_model_by_aic_then_by_holdout_error() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from custval.models.btyd_clv import btyd_predictions, choose_purchase_model
    from custval.models.evaluation import compare_models
    from tests.factories import simulate_bgnbd

    # an MBG/NBD process: one-time buyers may have gone, which BG/NBD cannot say
    x, tx, t = simulate_bgnbd(4000, 0.3, 5.0, 0.6, 2.0, seed=4, modified=True)
    table = compare_models(x, tx, t)
    choice = choose_purchase_model(x, tx, t)
    assert choice.rule == "aic" and choice.name == table["model"].iloc[0] != "bgnbd"
    assert (
        type(choice.purchases).__name__
        == {"mbgnbd": "ModifiedBetaGeo", "pnbd": "ParetoNBD"}[choice.name]
    )
    assert list(choice.scores) == list(table["model"])
    assert choice.scores["pnbd"] == pytest.approx(
        float(table.set_index("model").loc["pnbd", "aic"]), rel=1e-9
    )
    label = {"mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}[choice.name]
    assert choice.reason().startswith(f"lowest AIC of 3: {label} ")
    # with a holdout: the lowest MAE of holdout purchases per customer, whatever the AIC
    rng = np.random.default_rng(0)
    actual = rng.poisson(0.4 * (x + 1) * (tx > t / 2))
    held = choose_purchase_model(x, tx, t, holdout_frequency=actual, holdout_duration=26.0)
    maes = {
        name: float(np.abs(m.conditional_expected_purchases(26.0, x, tx, t) - actual).mean())
        for name, m in (
            ("bgnbd", BetaGeo().fit(x, tx, t)),
            ("mbgnbd", ModifiedBetaGeo().fit(x, tx, t)),
            ("pnbd", ParetoNBD().fit(x, tx, t)),
        )
    }
    assert held.rule == "holdout_mae" and held.name == min(maes, key=maes.__getitem__)
    assert held.scores == pytest.approx(maes, rel=1e-6)
    # a model named is the model used
    forced = choose_purchase_model(x, tx, t, model="bgnbd")
    assert forced.rule == "given" and type(forced.purchases).__name__ == "BetaGeo"
    with pytest.raises(CustvalError, match="unknown model 'magic'"):
        choose_purchase_model(x, tx, t, model="magic")
    # the CLV's fit carries the choice, and BG/NBD's P(alive) of one-time buyers is 1
    m = np.where(x > 0, rng.gamma(6.0, 6.0, x.size), 0.0)
    fit = btyd_predictions(x, tx, t, m, model="bgnbd", level=None)
    assert fit.choice is not None and fit.choice.name == "bgnbd"
    assert (fit.columns["p_alive"][x == 0] == 1).all()
    auto = btyd_predictions(x, tx, t, m, level=None)
    assert auto.choice is not None and auto.choice.name == choice.name
    assert (auto.columns["p_alive"][x == 0] < 1).all()
