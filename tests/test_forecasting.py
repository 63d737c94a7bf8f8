"""Forecasts of a series: the baselines, the measures worked out by hand, the rolling-origin
backtest and its conformal intervals (custval.models.forecasting)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from custval.errors import CustvalError, FitError
from custval.models.customer_forecast import base_purchases, new_customer_purchases
from custval.models.forecasting import (
    ETS,
    Arima,
    GlobalBoosting,
    MovingAverage,
    Naive,
    SeasonalNaive,
    Theta,
    backtest_origins,
    bias,
    conformal_coverage,
    conformal_widths,
    forecast_ahead,
    mase,
    rmsse,
    rolling_origin,
    wape,
)


def test_the_baselines_by_hand() -> None:
    y = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]
    assert Naive().fit(y).predict(3).tolist() == [30.0, 30.0, 30.0]
    assert SeasonalNaive(3).fit(y).predict(5).tolist() == [10.0, 20.0, 30.0, 10.0, 20.0]
    assert MovingAverage(2).fit(y).predict(2).tolist() == [25.0, 25.0]
    assert MovingAverage(10).fit(y).predict(1).tolist() == [pytest.approx(11.0)]


def test_the_measures_by_hand() -> None:
    history, actual, forecast = [1.0, 2.0, 4.0, 7.0], [8.0, 10.0], [7.0, 7.0]
    # naive in-sample errors 1, 2, 3: scale 2 (absolute), 14/3 (squared)
    assert mase(actual, forecast, history) == pytest.approx(2.0 / 2.0)
    assert rmsse(actual, forecast, history) == pytest.approx(math.sqrt(5.0 / (14.0 / 3.0)))
    assert bias(actual, forecast) == pytest.approx((14.0 - 18.0) / 18.0)
    assert wape(actual, forecast) == pytest.approx(4.0 / 18.0)
    # seasonal scale, m = 2: |4 - 1|, |7 - 2| -> 4
    assert mase(actual, forecast, history, m=2) == pytest.approx(2.0 / 4.0)


def test_a_constant_history_leaves_the_scaled_measures_undefined() -> None:
    assert math.isnan(mase([5.0], [4.0], [3.0, 3.0, 3.0]))
    assert math.isnan(rmsse([5.0], [4.0], [3.0, 3.0, 3.0]))
    assert math.isnan(bias([0.0, 0.0], [1.0, 1.0]))
    assert math.isnan(wape([0.0, 0.0], [1.0, 1.0]))


def test_bad_series_and_horizons_are_clear_errors() -> None:
    with pytest.raises(CustvalError, match="missing or infinite"):
        Naive().fit([1.0, np.nan, 2.0])
    with pytest.raises(CustvalError, match="horizon must be at least 1"):
        Naive().fit([1.0]).predict(0)
    with pytest.raises(FitError, match="whole season \\(52 periods\\)"):
        SeasonalNaive(52).fit(np.ones(30))
    with pytest.raises(CustvalError, match="not fitted"):
        Naive().predict(1)


def _seasonal(n: int, m: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pattern = np.array([10.0, 30.0, 20.0, 5.0])[np.arange(n) % m]
    return 100.0 + pattern + rng.normal(0.0, noise, n)


def test_the_backtest_ranks_the_method_that_knows_the_season_first() -> None:
    y = _seasonal(60, 4, noise=1.0)
    bt = rolling_origin(
        y,
        {"naive": Naive, "seasonal naive": lambda: SeasonalNaive(4), "mean": MovingAverage},
        horizon=4,
        n_origins=5,
        season_length=4,
    )
    # origins 4 apart, the last one a horizon before the end
    assert bt.origins.tolist() == [40, 44, 48, 52, 56]
    assert bt.actual.shape == (5, 4) and bt.forecasts["naive"].shape == (5, 4)
    board = bt.leaderboard.set_index("method")
    assert bt.leaderboard.method.tolist() == ["seasonal naive", "combination", "mean", "naive"]
    # the combination: equal weights at the first origin (nothing earlier to weigh by), then
    # 1 / MASE of the earlier origins, which favours the seasonal method
    first = np.mean([bt.forecasts[n][0] for n in ("naive", "seasonal naive", "mean")], axis=0)
    np.testing.assert_allclose(bt.forecasts["combination"][0], first)
    later = bt.forecasts["combination"][-1]
    seasonal, naive = bt.forecasts["seasonal naive"][-1], bt.forecasts["naive"][-1]
    assert np.abs(later - seasonal).mean() < np.abs(later - naive).mean()
    # the scale is the seasonal naive method's own in-sample error: about 1 for it
    assert 0.5 < board.loc["seasonal naive", "mase"] < 1.5
    assert board.loc["naive", "mase"] > 5 * board.loc["seasonal naive", "mase"]
    assert abs(board.loc["seasonal naive", "bias"]) < 0.02


def test_a_method_that_cannot_fit_is_left_out_with_its_reason() -> None:
    y = _seasonal(20, 4, noise=1.0)
    bt = rolling_origin(
        y, {"naive": Naive, "yearly": lambda: SeasonalNaive(52)}, horizon=2, n_origins=3
    )
    assert bt.leaderboard.method.tolist() == ["naive"]  # one method: nothing to combine
    assert "whole season" in bt.errors["yearly"]


def test_too_short_a_series_says_how_much_is_needed() -> None:
    with pytest.raises(FitError, match="needs 69"):
        rolling_origin(np.ones(60), {"naive": Naive}, horizon=4, n_origins=4, season_length=52)


def test_conformal_widths_by_hand() -> None:
    actual = np.zeros((4, 2))
    forecast = np.array([[1.0, 4.0], [2.0, 3.0], [3.0, 2.0], [4.0, 1.0]])
    # 8 errors in all, fewer than 40: every step's are pooled; level 0.6 -> rank
    # ceil(9 x 0.6) = 6 of [1, 1, 2, 2, 3, 3, 4, 4]; level 0.95 -> rank 9 of 8: none
    assert conformal_widths(actual, forecast, 0.6).tolist() == [3.0, 3.0]
    assert np.isinf(conformal_widths(actual, forecast, 0.95)).all()
    # 40 origins: each step on its own, rank ceil(41 x 0.5) = 21
    many = np.column_stack([np.arange(1.0, 41.0), np.arange(41.0, 81.0)])
    assert conformal_widths(np.zeros((40, 2)), many, 0.5).tolist() == [21.0, 61.0]
    # 20 origins: a window of +-1 step (60 errors, 40 at the ends); each step's errors equal
    # its number, so the median is the window's middle step (the later one at the ends)
    steps = np.tile(np.arange(1.0, 6.0), (20, 1))
    assert conformal_widths(np.zeros((20, 5)), steps, 0.5).tolist() == [2.0, 2.0, 3.0, 4.0, 5.0]


def test_conformal_intervals_cover_about_as_promised_on_exchangeable_errors() -> None:
    rng = np.random.default_rng(3)
    forecast = np.zeros((400, 1))
    actual = rng.normal(0.0, 1.0, (400, 1))
    cover = conformal_coverage(actual, forecast, (0.8, 0.95))
    assert cover[0.8] == pytest.approx(0.8, abs=0.05)
    assert cover[0.95] == pytest.approx(0.95, abs=0.03)


# ---- the statistical candidates ------------------------------------------------------------


def _weekly(n: int, seed: int = 0) -> np.ndarray:
    """Weeks of sales: a level of 100, a growth of 0.2 a week, a yearly cycle of ±10 and
    noise of 2."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 100 + 0.2 * t + 10 * np.sin(2 * np.pi * t / 52) + rng.normal(0, 2, n)


@pytest.mark.parametrize(
    "make", [ETS, Theta, Arima, GlobalBoosting], ids=["ets", "theta", "arima", "lightgbm"]
)
def test_each_method_learns_the_trend_and_the_season(make: type) -> None:
    y = _weekly(208)
    history, future = y[:156], y[156:]
    model = make(season_length=52).fit(history)
    forecast = model.predict(52)
    assert forecast.shape == (52,)
    scale_from = history
    # a year ahead: well below the seasonal naive method's error, which misses the growth
    ours = mase(future, forecast, scale_from, m=52)
    seasonal = mase(future, SeasonalNaive(52).fit(history).predict(52), scale_from, m=52)
    assert ours < 0.8 * seasonal, (ours, seasonal)
    assert abs(bias(future, forecast)) < 0.05


def test_the_methods_fall_back_to_no_season_on_a_short_history() -> None:
    y = _weekly(70)  # one year and a bit: no second cycle to learn the season from
    ets = ETS(52).fit(y)
    assert not ets.season_.any() and ets.trend_ in ("none", "additive damped")
    assert Theta(52).fit(y).seasonal_ is False
    arima = Arima(52).fit(y)
    assert arima.fourier_pairs_ == 0 and len(arima.order_) == 3
    for model in (ets, arima):
        assert np.isfinite(model.predict(10)).all()


def test_arima_differences_a_trending_series_and_not_a_level_one() -> None:
    rng = np.random.default_rng(1)
    trending = np.cumsum(rng.normal(1.0, 1.0, 120))
    level = 50 + rng.normal(0, 1.0, 120)
    assert Arima(1).fit(trending).order_[1] == 1
    assert Arima(1).fit(level).order_[1] == 0


def test_the_statistical_methods_refuse_a_series_too_short_to_fit() -> None:
    for make, need in ((ETS, 4), (Theta, 4), (Arima, 8), (GlobalBoosting, 16)):
        with pytest.raises(FitError, match=f"needs {need} periods at least"):
            make(52).fit([1.0, 2.0, 3.0])


def test_the_boosted_model_forecasts_only_as_far_as_it_learnt_and_keeps_zeros() -> None:
    model = GlobalBoosting(52, max_steps=13, rounds=20).fit(_weekly(120))
    assert model.predict(13).shape == (13,)
    with pytest.raises(CustvalError, match="learnt 13 steps ahead; 20 were asked"):
        model.predict(20)
    # a series that stopped selling: the scale is 1, the forecast stays near 0
    stopped = np.r_[_weekly(60), np.zeros(60)]
    assert np.abs(GlobalBoosting(52, rounds=50).fit(stopped).predict(8)).max() < 1.0


# ---- customer-based (bottom-up) --------------------------------------------------------------


def _simulate_bgnbd(n: int, T: float, horizon: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A BG/NBD population (r 0.5, alpha 5, a 0.8, b 3), all arriving at 0: each customer's
    (x, t_x) up to T and their repeat purchases in (T, T + horizon]. A loop over purchase
    rounds, not over customers."""
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(0.5, 1 / 5.0, n), rng.beta(0.8, 3.0, n)
    t, x, tx, after = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        t = t + rng.exponential(1 / lam)
        before, later = alive & (t < T), alive & (t >= T) & (t < T + horizon)
        x[before] += 1
        tx[before] = t[before]
        after[later] += 1
        alive &= (t < T + horizon) & (rng.random(n) >= p)  # a repeat purchase, then maybe gone
    return x, tx, np.full(n, T), after


def test_the_bottom_up_forecast_matches_a_simulated_base() -> None:
    from custval.models.btyd import BetaGeo

    x, tx, T, after = _simulate_bgnbd(40_000, T=52.0, horizon=26.0)
    bg = BetaGeo().fit(x, tx, T)
    cumulative = base_purchases(bg, x, tx, T, [13.0, 26.0])
    assert cumulative[0] < cumulative[1]
    # the expected total against what the simulated customers did: within 3%
    assert cumulative[1] == pytest.approx(after.sum(), rel=0.03)
    # the sum over customers, one evaluation per distinct (x, T)
    each = bg.conditional_expected_purchases(26.0, x, tx, T)
    assert cumulative[1] == pytest.approx(each.sum(), rel=1e-10)


def test_new_customers_follow_the_new_customer_curve() -> None:
    from custval.models.btyd import BetaGeo

    x, tx, T, _ = _simulate_bgnbd(5_000, T=52.0, horizon=1.0)
    bg = BetaGeo().fit(x, tx, T)
    got = new_customer_purchases(bg, [100.0, 50.0], [0.0, 10.0], [5.0, 20.0])
    curve = bg.expected_purchases_new_customer
    assert got[0] == pytest.approx(100 * curve(5.0)[0])  # the second cohort has not arrived
    assert got[1] == pytest.approx(100 * curve(20.0)[0] + 50 * curve(10.0)[0])
    with pytest.raises(CustvalError, match="increasing"):
        new_customer_purchases(bg, [1.0], [0.0], [5.0, 2.0])


def test_a_method_fitted_elsewhere_is_judged_with_the_others() -> None:
    y = _seasonal(60, 4, noise=1.0)
    origins = backtest_origins(60, horizon=4, n_origins=5, min_train=5)
    assert origins.tolist() == [40, 44, 48, 52, 56]
    # a perfect outside forecast: the actuals themselves
    perfect = np.stack([y[t : t + 4] for t in origins])
    bt = rolling_origin(
        y,
        {"naive": Naive},
        horizon=4,
        n_origins=5,
        season_length=4,
        external={"customer-based": perfect},
    )
    assert bt.leaderboard.method.tolist()[0] == "customer-based"
    assert bt.leaderboard.set_index("method").loc["customer-based", "mase"] == 0.0
    with pytest.raises(CustvalError, match=r"\(origins x horizon\)"):
        rolling_origin(y, {"naive": Naive}, horizon=4, n_origins=5, external={"x": perfect[:2]})


def test_the_base_forecast_in_money_weighs_each_customer_by_their_spend() -> None:
    from custval.models.btyd import BetaGeo

    x, tx, T, _ = _simulate_bgnbd(5_000, T=52.0, horizon=1.0)
    bg = BetaGeo().fit(x, tx, T)
    spend = np.where(x > 2, 50.0, 10.0)
    money = base_purchases(bg, x, tx, T, [26.0], weights=spend)
    each = bg.conditional_expected_purchases(26.0, x, tx, T) * spend
    assert money[0] == pytest.approx(each.sum(), rel=1e-10)


def test_the_forecast_ahead_has_the_backtests_conformal_intervals() -> None:
    y = _seasonal(120, 4, noise=1.0)
    methods = {"naive": Naive, "seasonal naive": lambda: SeasonalNaive(4)}
    bt = rolling_origin(y, methods, horizon=4, n_origins=12, step=4, season_length=4)
    futures = {n: make().fit(y).predict(4) for n, make in methods.items()}
    ahead = forecast_ahead(y, bt, "seasonal naive", futures)
    assert ahead.columns.tolist() == ["step", "point", "lo_80", "hi_80", "lo_95", "hi_95"]
    np.testing.assert_allclose(ahead["point"], futures["seasonal naive"])
    width = conformal_widths(bt.actual, bt.forecasts["seasonal naive"], 0.8)
    np.testing.assert_allclose(ahead["hi_80"] - ahead["point"], width)
    assert (ahead["hi_95"] >= ahead["hi_80"]).all() and (ahead["lo_95"] <= ahead["lo_80"]).all()
    # the combination's point: its methods' futures weighted by their backtest MASE
    both = forecast_ahead(y, bt, "combination", futures)
    lo = np.minimum(futures["naive"], futures["seasonal naive"])
    hi = np.maximum(futures["naive"], futures["seasonal naive"])
    assert ((both["point"] >= lo - 1e-9) & (both["point"] <= hi + 1e-9)).all()
    with pytest.raises(CustvalError, match="no method 'prophet'"):
        forecast_ahead(y, bt, "prophet", futures)
