"""The generated company's calendar: the planted daily multiplier is written beside the data,
and the purchases follow it (yearly cycle, weekday pattern, promotion weeks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custval.data._synth_base import DAY
from custval.data._synth_season import Calendar, Season
from custval.data.synth import generate
from tests.test_synth_actions import when as stamps


def test_the_time_warp_is_a_bijection_of_the_history() -> None:
    start, horizon = 20_000 * DAY, 21_000 * DAY
    calendar = Calendar.of(start, horizon, Season())
    assert calendar.multiplier.mean() == pytest.approx(1.0)
    t = np.array([start, start + 12_345, start + 500 * DAY + 7, horizon - 1])
    back = calendar.unwarp(calendar.warp(t))
    assert np.abs(back - t).max() <= 1  # to the second (the floor)
    # a day's share of intensity is its multiplier
    one = calendar.warp(np.array([start + DAY])) - calendar.warp(np.array([start]))
    assert one[0] == pytest.approx(calendar.multiplier[0] * DAY)


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(20_000, tmp_path_factory.mktemp("season") / "c", seed=8, fmt="parquet").out


def test_the_purchases_follow_the_planted_calendar(company: Path) -> None:
    calendar = pd.read_parquet(company / "truth" / "calendar.parquet")
    assert calendar["sales_multiplier"].mean() == pytest.approx(1.0)
    assert calendar["promotion"].sum() == 2 * 7 * 3  # two weeks a year, three years
    truth = pd.read_parquet(company / "truth" / "customers.parquet")
    assert len(truth) == 20_000
    tx = pd.read_parquet(company / "transactions.parquet", columns=["ts", "amount"])
    when = stamps(tx["ts"]).dropna()  # the generator's three formats
    when = when[when.dt.year < 2090]  # the planted far-future rows
    days = when.dt.normalize().value_counts()
    by_day = calendar.assign(day=pd.to_datetime(calendar["day"])).set_index("day")
    joined = by_day.join(days.rename("orders"), how="inner")
    late = joined[joined.index >= joined.index.max() - pd.Timedelta(days=730)]
    # orders per day over the planted multiplier: flat when the calendar is followed (the
    # growing base is the only other trend, so compare within the last two years by month)
    ratio = (late["orders"] / late["sales_multiplier"]).groupby(late.index.month).mean()
    raw = late["orders"].groupby(late.index.month).mean()
    assert ratio.std() / ratio.mean() < raw.std() / raw.mean()
    # Saturdays busiest, promotion days well above their neighbours
    weekday = late["orders"].groupby(late.index.dayofweek).mean()
    assert weekday.idxmax() == 5
    promo = late.loc[late["promotion"], "orders"].mean()
    assert promo > 1.3 * late.loc[~late["promotion"], "orders"].mean()
