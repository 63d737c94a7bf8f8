"""The customer-based (bottom-up) sales forecast: its parts add up by hand, and on a generated
company it forecasts the purchases of the weeks after an origin it did not see."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from custval import flows
from custval.config import load_project
from custval.errors import CustvalError, FitError
from custval.features.series import period_start, sales_series
from custval.flows.customer_forecast import customer_based
from custval.flows.forecasting import forecast
from custval.models.btyd import BetaGeo
from custval.models.customer_forecast import (
    base_purchases,
    customer_forecast,
    new_customer_purchases,
    seasonal_index,
)
from tests.factories import Companies, simulate_bgnbd


def test_the_parts_add_up_by_hand() -> None:
    x, tx, T = simulate_bgnbd(4000, r=0.5, alpha=5.0, a=0.8, b=3.0, seed=1)
    bg = BetaGeo().fit(x, tx, T)
    ends = np.array([1.0, 2.0, 3.0, 4.0])
    arrivals = np.array([10.0, 20.0, 0.0, 5.0])
    spend = np.where(x > 1, 30.0, 12.0)
    got = customer_forecast(
        bg,
        x,
        tx,
        T,
        ends,
        arrivals=arrivals,
        spend=spend,
        first_spend=50.0,
        new_spend=20.0,
        net_share=0.9,
    )
    existing = np.diff(base_purchases(bg, x, tx, T, ends), prepend=0.0)
    np.testing.assert_allclose(got["existing"], existing, rtol=1e-12)
    # newcomers arrive at the middle of their period
    mids = np.array([0.5, 1.5, 2.5, 3.5])
    new = np.diff(new_customer_purchases(bg, arrivals, mids, ends), prepend=0.0)
    np.testing.assert_allclose(got["new_repeat"], new, rtol=1e-12)
    np.testing.assert_allclose(got["purchases"], existing + arrivals + new, rtol=1e-12)
    money = np.diff(base_purchases(bg, x, tx, T, ends, spend), prepend=0.0)
    np.testing.assert_allclose(
        got["revenue"], 0.9 * (money + 50.0 * arrivals + 20.0 * new), rtol=1e-12
    )
    assert got["new_repeat"][0] > 0 and got["existing"][0] > got["existing"][-1]
    with pytest.raises(CustvalError, match="3 periods of arrivals for 4"):
        customer_forecast(bg, x, tx, T, ends, arrivals=[1.0, 2.0, 3.0])


@pytest.fixture(scope="module")
def generated(companies: Companies) -> tuple:
    company = companies.shared(3000, seed=3, fmt="parquet")
    project = load_project(company.config_path)
    return project, flows.prepare(project).tables["transactions"]


def test_it_forecasts_weeks_it_did_not_see_on_a_generated_company(generated: tuple) -> None:
    project, tx = generated
    weekly = sales_series(tx, project.as_of, freq="week")
    for h, measure in ((52, "purchases"), (52, "revenue"), (13, "purchases"), (13, "revenue")):
        origin = weekly["period"].iloc[-h]
        history = weekly.loc[weekly["period"] < origin, measure].to_numpy(np.float64)
        truth = weekly.loc[weekly["period"] >= origin, measure].to_numpy(np.float64)
        got = customer_based(
            tx, origin.date(), horizon=h, freq="week", season=52, measure=measure, history=history
        )
        assert got.shape == (h,) and (got > 0).all()
        if h == 52:  # a year's total within 8% of what the generated customers did
            assert got.sum() == pytest.approx(truth.sum(), rel=0.08), measure
        # the weeks' ups and downs come from the history's seasonal index: without it, worse
        flat = customer_based(tx, origin.date(), horizon=h, freq="week", season=52, measure=measure)
        assert np.abs(got - truth).mean() < np.abs(flat - truth).mean(), (h, measure)
    origin = weekly["period"].iloc[-13]
    # monthly: the periods are calendar months, longer than four weeks
    monthly = customer_based(
        tx,
        period_start(origin.date(), "month"),
        horizon=3,
        freq="month",
        season=12,
        measure="purchases",
    )
    weeks = customer_based(  # the calendar left out of both: months against weeks
        tx,
        period_start(origin.date(), "month"),
        horizon=13,
        freq="week",
        season=52,
        measure="purchases",
    )
    assert monthly.sum() == pytest.approx(weeks.sum(), rel=0.05)
    with pytest.raises(FitError, match="no customer bought before"):
        first = pd.Timestamp(weekly["period"].iloc[0]).date()
        customer_based(tx, first - timedelta(days=7), horizon=4, freq="week", season=52)


def test_the_flow_judges_it_with_the_others(generated: tuple) -> None:
    project, tx = generated
    run = forecast(tx, project.as_of, freq="week", horizon=13, n_origins=2, measure="purchases")
    board = run.leaderboard.set_index("method")
    assert "customer-based" in board.index
    assert board.loc["customer-based", "mase"] < board.loc["seasonal naive", "mase"]
    # the measure it cannot forecast: said why, not silently missing
    run = forecast(tx, project.as_of, freq="month", horizon=3, n_origins=2, measure="customers")
    assert "customer-based" not in set(run.leaderboard["method"])
    assert "forecasts revenue and purchases only" in run.errors["total"]["customer-based"]


def test_the_seasonal_index_finds_the_planted_calendar(companies: Companies) -> None:
    company = companies.shared(3000, seed=3, fmt="parquet")
    calendar = pd.read_parquet(company.out / "truth" / "calendar.parquet")
    day = pd.to_datetime(calendar["day"])
    weekly = calendar.groupby(day - pd.to_timedelta(day.dt.weekday, "D"))["sales_multiplier"]
    planted = weekly.mean()[weekly.size() == 7].to_numpy()[:104]  # two whole years of weeks
    noisy = planted * np.random.default_rng(0).normal(1.0, 0.03, planted.size)
    index = seasonal_index(np.concatenate([noisy, noisy]) * np.linspace(1, 1.5, 208), 52)
    assert index is not None and index.mean() == pytest.approx(1.0)
    expected = planted[:52] / planted[:52].mean()
    # the promotion weeks and the yearly cycle, recovered through a rising trend
    assert np.corrcoef(index, expected)[0, 1] > 0.9
    assert np.argmax(index) == np.argmax(expected)
    assert seasonal_index(np.ones(100), 52) is None  # under two seasons: no index


def test_a_sampled_fit_repeats_whatever_the_rows_order(generated: tuple) -> None:
    project, tx = generated
    origin = period_start(project.as_of - timedelta(days=91), "week")
    kwargs = {"horizon": 13, "freq": "week", "season": 52, "measure": "revenue"}
    full = customer_based(tx, origin, **kwargs)
    sampled = customer_based(tx, origin, fit_sample=800, **kwargs)
    # the models learn from 800 of the customers and predict for all of them
    assert sampled.sum() == pytest.approx(full.sum(), rel=0.05) and sampled.sum() != full.sum()
    # the sample is the lowest hashes of the ids: the same customers however the rows come
    shuffled = tx.order_by(tx.amount.desc(), tx.customer_id)
    again = customer_based(shuffled, origin, fit_sample=800, **kwargs)
    np.testing.assert_allclose(again, sampled, rtol=1e-6)  # the optimiser sums in another order
