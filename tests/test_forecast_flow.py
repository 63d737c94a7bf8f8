"""custval.flows.forecasting on transactions with a planted weekly pattern: every candidate on
one backtest, the chosen one forecast with intervals, by a column, and the bad inputs."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError
from custval.flows.forecasting import forecast
from tests.factories import Companies, run
from tests.test_synth_actions import when

START = date(2022, 1, 3)  # a Monday
WEEKS = 156
END = START + timedelta(weeks=WEEKS)


def _transactions(seed: int = 0) -> ibis.Table:
    """Three years of weeks: revenue 100 + 0.2 a week + a yearly cycle of ±10 + noise, in five
    purchases a week (Monday to Friday), web and store taking 70% and 30%."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(WEEKS):  # a loop over the weeks of a small test table
        total = 100 + 0.2 * w + 10 * np.sin(2 * np.pi * w / 52) + rng.normal(0, 2)
        for d in range(5):
            when = datetime.combine(START + timedelta(weeks=w, days=d), datetime.min.time())
            channel = "web" if d < 3 else "store"
            share = 0.7 / 3 if channel == "web" else 0.3 / 2
            rows.append(
                (
                    f"C{rng.integers(0, 300)}",
                    when + timedelta(hours=10),
                    total * share,
                    False,
                    channel,
                )
            )
    frame = pd.DataFrame(
        rows, columns=["customer_id", "timestamp", "amount", "is_refund", "channel"]
    )
    frame["order_id"] = [f"O{i}" for i in range(len(frame))]
    return ibis.memtable(frame)


def test_every_candidate_on_one_backtest_and_the_best_forecast_with_intervals() -> None:
    run = forecast(_transactions(), END, freq="week", horizon=26, n_origins=3)
    board = run.leaderboard
    methods = set(board.method)
    assert {
        "naive",
        "seasonal naive",
        "ets",
        "theta",
        "arima",
        "lightgbm",
        "combination",
    } <= methods
    chosen = board[board.chosen]
    assert len(chosen) == 1 and chosen.method.iloc[0] not in ("naive", "moving average")
    # the chosen method beats the seasonal naive one clearly on this trending series
    seasonal = board.set_index("method").loc["seasonal naive", "mase"]
    assert chosen.mase.iloc[0] < 0.9 * seasonal
    ahead = run.forecasts
    assert len(ahead) == 26 and ahead.step.tolist() == list(range(1, 27))
    assert ahead.period.iloc[0] == pd.Timestamp(END)  # the first week after the data
    assert (ahead.lo_95 <= ahead.lo_80).all() and (ahead.lo_80 <= ahead.point).all()
    assert (ahead.point <= ahead.hi_80).all() and (ahead.hi_80 <= ahead.hi_95).all()
    # a level near the planted one a few months ahead: 100 + 0.2 x 160 + season
    assert 115 < ahead.point.iloc[4] < 150


def test_by_a_column_each_series_has_its_own_choice() -> None:
    quick = ("naive", "seasonal naive", "moving average", "ets", "theta")
    run = forecast(
        _transactions(), END, freq="week", horizon=13, by="channel", n_origins=3, methods=quick
    )
    base = run.forecasts[run.forecasts.reconciliation == "base"]
    assert sorted(base.series.unique()) == ["store", "total", "web"]
    assert run.leaderboard.groupby("series").chosen.sum().tolist() == [1, 1, 1]
    assert set(run.leaderboard.method) - {"reconciled: bottom-up", "reconciled: MinT"} <= {
        *quick,
        "combination",
        "customer-based",
    }
    web = base[base.series == "web"].point.mean()
    store = base[base.series == "store"].point.mean()
    assert web / store == pytest.approx(70 / 30, rel=0.15)
    # reconciled: the channels add up to the total, period by period
    for kind in ("bottom_up", "mint_shrink"):
        rows = run.forecasts[run.forecasts.reconciliation == kind].pivot(
            index="step", columns="series", values="point"
        )
        np.testing.assert_allclose(rows["total"], rows["store"] + rows["web"], rtol=1e-9)
    # buying customers do not add up (one customer, two channels): not reconciled
    counted = forecast(
        _transactions(),
        END,
        horizon=13,
        by="channel",
        n_origins=3,
        methods=quick,
        measure="customers",
    )
    assert set(counted.forecasts.series) == {"store", "web"}
    with pytest.raises(CustvalError, match="unknown forecasting method 'prophet'"):
        forecast(_transactions(), END, horizon=13, methods=("prophet",))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 0}, "horizon must be at least 1 week"),
        ({"freq": "day"}, "unknown frequency 'day'"),
        ({"measure": "profit"}, "cannot forecast 'profit'"),
        ({"by": "region"}, "no column 'region'"),
    ],
)
def test_bad_requests_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(CustvalError, match=message):
        forecast(_transactions(), END, **kwargs)


def test_too_short_a_history_says_how_much_is_needed() -> None:
    with pytest.raises(CustvalError, match="needs"):
        forecast(_transactions(), START + timedelta(weeks=60), horizon=26)


def test_the_command_prints_the_leaderboard_and_writes_the_forecast(
    companies: Companies, tmp_path: Path
) -> None:
    company = companies.copy(tmp_path / "co", 600, seed=2, fmt="parquet")
    out = tmp_path / "forecast.csv"
    done = run(
        "forecast",
        "-c",
        str(company.config_path),
        "--horizon",
        "13",
        "--origins",
        "3",
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "the candidates on the backtest" in done.stdout and "(chosen)" in done.stdout
    assert "80% interval" in done.stdout
    written = pd.read_csv(out)
    assert len(written) == 13 and {"point", "lo_80", "hi_95", "method"} <= set(written.columns)
    # too long a horizon for the history: exit 2, saying how many weeks it needs
    done = run(
        "forecast",
        "-c",
        str(company.config_path),
        "--horizon",
        "200",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "needs" in done.stderr and "Traceback" not in done.stderr
    # one transactions file: the history ends the day after its last purchase
    file = company.files["transactions"]
    flags = ("--customer-id", "account_id", "--date", "ts", "--horizon", "4", "--origins", "2")
    done = run("forecast", "-t", str(file), *flags, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    stamps = when(pd.read_parquet(file, columns=["ts"])["ts"]).dropna()
    last = stamps[stamps.dt.year < 2090].max()  # the planted far-future rows are dropped
    assert summary["as_of"] == str((last + pd.Timedelta(days=1)).date())
    assert summary["run_id"] and (tmp_path / "custval.duckdb").exists()
    both = run("forecast", "-t", str(file), "-c", str(company.config_path), cwd=tmp_path)
    assert both.returncode == 2 and "either --transactions" in both.stderr
