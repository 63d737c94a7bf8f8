"""Tests of custval.models.evaluation: tracking table and model comparison on simulated cohorts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from custval.errors import CustvalError
from custval.models.btyd import BetaGeo, ModifiedBetaGeo
from custval.models.evaluation import compare_models, holdout_errors, tracking_table

TRUTH = {"r": 0.5, "alpha": 4.0, "a": 0.8, "b": 2.5}
CAL_END, END = 39.0, 78.0  # weeks: a 12-week cohort, 39-week calibration, 39-week holdout
N = 5000


# ---- simulator (vectorised over customers and transactions) ----------------------------------


def simulate_cohort(n, r, alpha, a, b, seed, modified=False):
    """A BG/NBD (MBG/NBD) cohort acquired in weeks 0-12, observed until week 78, on a day grid.

    Returns each customer's first purchase time, and the customer and time (weeks) of every repeat
    transaction. A customer would buy at the times of a Poisson(lambda) process, lambda ~
    Gamma(r, alpha); she drops out after her K-th repeat purchase, K geometric on 1, 2, ...
    (0, 1, ... for the MBG/NBD) with p ~ Beta(a, b). Given their number, the would-be purchase
    times are uniform on (s_i, END]; the first K of them are made. Times are rounded down to
    their day and same-day purchases merged (the BTYD convention).
    """
    rng = np.random.default_rng(seed)
    births = rng.integers(0, 84, n) / 7.0
    lam = rng.gamma(r, 1 / alpha, n)
    k = rng.geometric(rng.beta(a, b, n)) - (1 if modified else 0)
    horizon = END - births
    n_events = rng.poisson(lam * horizon)
    cust = np.repeat(np.arange(n), n_events)
    times = births[cust] + rng.uniform(0, 1, cust.size) * horizon[cust]
    order = np.lexsort((times, cust))
    cust, times = cust[order], times[order]
    first = np.concatenate([[0], np.cumsum(n_events)[:-1]])
    made = (np.arange(cust.size) - first[cust]) < k[cust]
    # a purchase is dated by the day it falls in; one on the first purchase's day is part of
    # that first transaction, not a repeat
    days = np.floor(times[made] * 7 + 1e-9).astype(np.int64)
    repeat = days > np.round(births[cust[made]] * 7).astype(np.int64)
    key = np.unique(cust[made][repeat] * 1000 + days[repeat])  # one transaction a customer-day
    return births, key // 1000, (key % 1000) / 7.0


def btyd_summary(births, cust, times, n):
    """Calibration (x, t_x, T) and holdout repeat purchases per customer.

    As in custval's data: the calibration holds the purchase days before its end; a purchase on
    the end day is in the holdout."""
    cal = times < CAL_END
    x = np.bincount(cust[cal], minlength=n).astype(float)
    last = np.full(n, -np.inf)
    np.maximum.at(last, cust[cal], times[cal])
    tx = np.where(x > 0, last - births, 0.0)
    holdout = np.bincount(cust[~cal], minlength=n).astype(float)
    return x, tx, CAL_END - births, holdout


@pytest.fixture(scope="module")
def cohort():
    births, cust, times = simulate_cohort(N, *TRUTH.values(), seed=0)
    x, tx, T, holdout = btyd_summary(births, cust, times, N)
    return {"births": births, "times": times, "x": x, "tx": tx, "T": T, "holdout": holdout}


@pytest.fixture(scope="module")
def fitted(cohort):
    return BetaGeo().fit(cohort["x"], cohort["tx"], cohort["T"])


@pytest.fixture(scope="module")
def comparison(cohort):
    return compare_models(
        cohort["x"],
        cohort["tx"],
        cohort["T"],
        holdout_frequency=cohort["holdout"],
        holdout_duration=CAL_END,
    )


# ---- tracking table ---------------------------------------------------------------------------


def test_tracking_table_tracks_the_simulated_cohort(cohort, fitted):
    ends = np.arange(1.0, END + 1)
    table = tracking_table(fitted, cohort["births"], cohort["times"], ends)
    assert list(table.columns) == [
        "period_end",
        "actual",
        "predicted",
        "cumulative_actual",
        "cumulative_predicted",
    ]
    assert len(table) == 78
    at_cal = table.set_index("period_end").loc[CAL_END]
    assert at_cal["cumulative_actual"] == np.sum(cohort["x"])
    # the fitted model reproduces the calibration total and forecasts the holdout total
    assert at_cal["cumulative_predicted"] == pytest.approx(at_cal["cumulative_actual"], rel=0.02)
    last = table.iloc[-1]
    assert last["cumulative_actual"] == (cohort["times"] < END).sum()
    assert last["cumulative_predicted"] == pytest.approx(last["cumulative_actual"], rel=0.05)
    # weekly figures: during acquisition (weeks 1-12) the model follows the growth of the base
    early = table.iloc[:12]
    assert np.corrcoef(early["actual"], early["predicted"])[0, 1] > 0.9
    assert early["predicted"].sum() == pytest.approx(early["actual"].sum(), rel=0.1)


def test_tracking_table_is_internally_consistent(cohort, fitted):
    ends = np.array([5.0, 12.0, 20.0, 39.0, 52.0, 78.0])
    table = tracking_table(fitted, cohort["births"], cohort["times"], ends)
    np.testing.assert_allclose(
        table["predicted"], np.diff(table["cumulative_predicted"], prepend=0.0), rtol=1e-12
    )
    np.testing.assert_array_equal(table["cumulative_actual"], np.cumsum(table["actual"]))
    starts = np.concatenate([[-np.inf], ends[:-1]])
    times = cohort["times"][:, None]
    expected_actual = ((times >= starts) & (times < ends)).sum(axis=0)  # periods [start, end)
    np.testing.assert_array_equal(table["actual"], expected_actual)
    # the predicted total is sum_i E[X(last_end - s_i)], customer by customer
    per_customer = fitted.expected_purchases_new_customer(ends[-1] - cohort["births"])
    assert table["predicted"].sum() == pytest.approx(float(per_customer.sum()), rel=1e-12)
    # and at an intermediate end, customers born later contribute nothing
    at = ends[1]
    alive = cohort["births"] < at
    partial = fitted.expected_purchases_new_customer(at - cohort["births"][alive]).sum()
    assert table["cumulative_predicted"].iloc[1] == pytest.approx(float(partial), rel=1e-12)


def test_tracking_table_by_hand():
    model = BetaGeo()
    model.params_ = dict(TRUTH)
    table = tracking_table(model, [0.0, 1.0, 1.0], [0.5, 1.0, 1.5, 1.7, 2.5], [1.0, 2.0])
    e = model.expected_purchases_new_customer([1.0, 2.0])
    # [.., 1): 0.5; [1, 2): 1.0, 1.5 and 1.7; 2.5 is after the last end
    assert table["actual"].tolist() == [1, 3]
    assert table["cumulative_predicted"].tolist() == pytest.approx([e[0], e[1] + 2 * e[0]])
    assert table["predicted"].tolist() == pytest.approx([e[0], e[1] + e[0]])


@pytest.mark.parametrize(
    ("births", "repeats", "ends"),
    [([0.0], [1.0], [2.0, 1.0]), ([0.0], [1.0], []), ([], [1.0], [1.0]), ([np.nan], [], [1.0])],
)
def test_tracking_table_rejects_bad_input(births, repeats, ends):
    model = BetaGeo()
    model.params_ = dict(TRUTH)
    with pytest.raises(CustvalError):
        tracking_table(model, births, repeats, ends)


# ---- model comparison -------------------------------------------------------------------------


def test_comparison_prefers_the_true_model(comparison, cohort):
    assert comparison["model"].tolist()[0] == "bgnbd"
    assert set(comparison["model"]) == {"bgnbd", "mbgnbd", "pnbd"}
    assert comparison["error"].isna().all() and comparison["error"].iloc[0] is None
    assert comparison["converged"].all()
    assert (np.diff(comparison["aic"]) > 0).all()
    # the BG/NBD is better by a clear margin, not by a rounding error
    assert comparison["aic"].iloc[1] - comparison["aic"].iloc[0] > 20
    k, ll = comparison["n_params"].astype(float), comparison["log_likelihood"]
    np.testing.assert_allclose(comparison["aic"], 2 * k - 2 * ll)
    np.testing.assert_allclose(comparison["bic"], k * math.log(N) - 2 * ll)
    assert (comparison["n_params"] == 4).all()
    assert (comparison["fit_seconds"] > 0).all()
    # the preferred model recovers the purchase rate (a and b are individually less well
    # determined; their mean dropout probability a / (a + b) is)
    best = comparison["params"].iloc[0]
    assert set(best) == set(TRUTH)
    assert best["r"] == pytest.approx(TRUTH["r"], rel=0.15)
    assert best["alpha"] == pytest.approx(TRUTH["alpha"], rel=0.15)
    assert best["a"] / (best["a"] + best["b"]) == pytest.approx(0.8 / 3.3, rel=0.15)


def test_comparison_holdout_figures(comparison, cohort):
    row = comparison.set_index("model").loc["bgnbd"]
    model = BetaGeo()
    model.params_ = row["params"]
    predicted = model.conditional_expected_purchases(
        CAL_END, cohort["x"], cohort["tx"], cohort["T"]
    )
    errors = holdout_errors(predicted, cohort["holdout"])
    assert row["holdout_mae"] == pytest.approx(errors["mae"])
    assert row["holdout_rmse"] == pytest.approx(errors["rmse"])
    assert row["holdout_aggregate_error"] == pytest.approx(errors["aggregate_error"])
    # over seeds 0-5 the aggregate error of the true model spreads from -6% to +4% (sd ~3.5%)
    assert abs(row["holdout_aggregate_error"]) < 0.1
    assert 0.5 < row["holdout_mae"] < 2.0  # purchases per customer over 39 weeks


def test_comparison_prefers_mbgnbd_on_mbgnbd_data():
    births, cust, times = simulate_cohort(N, *TRUTH.values(), seed=1, modified=True)
    x, tx, T, _ = btyd_summary(births, cust, times, N)
    table = compare_models(x, tx, T, models={"bgnbd": BetaGeo(), "mbgnbd": ModifiedBetaGeo()})
    assert table["model"].tolist() == ["mbgnbd", "bgnbd"]
    assert "holdout_mae" not in table.columns


class _Unfittable:
    def fit(self, frequency, recency, T):
        raise CustvalError("the data do not determine the parameters", hint="Fit on more data")


def test_failed_fit_is_reported_not_raised(cohort):
    table = compare_models(
        cohort["x"][:500],
        cohort["tx"][:500],
        cohort["T"][:500],
        holdout_frequency=cohort["holdout"][:500],
        holdout_duration=CAL_END,
        models={"broken": _Unfittable(), "bgnbd": BetaGeo()},
    )
    assert table["model"].tolist() == ["bgnbd", "broken"]
    broken = table.iloc[1]
    assert "do not determine" in broken["error"]
    assert math.isnan(broken["aic"]) and math.isnan(broken["holdout_mae"])
    assert broken["params"] is None and not broken["converged"]
    assert table.iloc[0]["error"] is None and np.isfinite(table.iloc[0]["holdout_mae"])


def test_real_failed_fit_is_reported():
    # nobody ever buys again: the likelihood rises towards a purchase rate of zero
    table = compare_models(np.zeros(50), np.zeros(50), np.full(50, 10.0))
    assert len(table) == 3
    assert table["error"].notna().all()
    assert table["aic"].isna().all()


def test_holdout_arguments_go_together(cohort):
    with pytest.raises(CustvalError, match="together"):
        compare_models(cohort["x"], cohort["tx"], cohort["T"], holdout_frequency=cohort["holdout"])
    with pytest.raises(CustvalError, match="holdout_frequency"):
        compare_models(
            cohort["x"],
            cohort["tx"],
            cohort["T"],
            holdout_frequency=cohort["holdout"][:10],
            holdout_duration=CAL_END,
        )
