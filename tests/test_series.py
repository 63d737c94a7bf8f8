"""Sales as regular series (custval.features.series): weekly and monthly totals, gaps as
zeros, whole periods only, by a column, acquisitions; worked out by hand."""

from __future__ import annotations

from datetime import date, datetime

import ibis
import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError
from custval.features.series import (
    acquisitions,
    forecast_summary,
    net_share,
    period_start,
    sales_series,
)


def _tx() -> ibis.Table:
    rows = [
        # customer, when, amount, refund, channel
        ("A", datetime(2025, 1, 6, 10), 10.0, False, "web"),  # Monday of week 2025-01-06
        ("A", datetime(2025, 1, 6, 18), 5.0, False, "web"),  # same day: one purchase
        ("B", datetime(2025, 1, 8, 9), 20.0, False, "store"),
        ("B", datetime(2025, 1, 9, 9), -4.0, True, "store"),  # a refund: revenue only
        # nothing in the week of 2025-01-13
        ("A", datetime(2025, 1, 21, 12), 7.0, False, None),
        ("C", datetime(2025, 2, 3, 12), 30.0, False, "web"),  # week of 2025-02-03
        ("C", datetime(2025, 2, 5, 12), 1.0, False, "web"),  # after the end: left out
    ]
    frame = pd.DataFrame(
        rows, columns=["customer_id", "timestamp", "amount", "is_refund", "channel"]
    )
    return ibis.memtable(frame)


END = date(2025, 2, 5)  # a Wednesday: the week of 2025-02-03 is not whole


def test_weekly_totals_with_gaps_as_zeros_and_whole_weeks_only() -> None:
    got = sales_series(_tx(), END, freq="week")
    assert got["period"].dt.date.tolist() == [
        date(2025, 1, 6),
        date(2025, 1, 13),
        date(2025, 1, 20),
        date(2025, 1, 27),
    ]
    assert got["series"].unique().tolist() == ["total"]
    assert got["revenue"].tolist() == [31.0, 0.0, 7.0, 0.0]
    assert got["purchases"].tolist() == [2, 0, 1, 0]  # A's two lines on one day: one
    assert got["customers"].tolist() == [2, 0, 1, 0]


def test_by_a_column_each_series_from_its_first_sale() -> None:
    got = sales_series(_tx(), date(2025, 2, 10), freq="week", by="channel")
    per = {s: rows for s, rows in got.groupby("series")}
    assert sorted(per) == ["store", "unknown", "web"]
    assert per["web"]["revenue"].tolist() == [15.0, 0.0, 0.0, 0.0, 31.0]  # to 2025-02-10
    assert per["store"]["revenue"].tolist() == [16.0, 0.0, 0.0, 0.0, 0.0]
    assert per["unknown"]["period"].dt.date.min() == date(2025, 1, 20)
    with pytest.raises(CustvalError, match="no column 'region'") as e:
        sales_series(_tx(), END, by="region")
    assert "channel" in (e.value.hint or "")


def test_months_and_acquisitions() -> None:
    got = sales_series(_tx(), date(2025, 3, 1), freq="month")
    assert got["period"].dt.date.tolist() == [date(2025, 1, 1), date(2025, 2, 1)]
    assert got["revenue"].tolist() == [38.0, 31.0]
    firsts = acquisitions(_since(_tx()), END, freq="week")
    assert firsts["customers"].tolist() == [2, 0, 0, 0]  # C's first purchase is after them
    assert firsts["period"].dt.date.iloc[0] == date(2025, 1, 6)
    march = date(2025, 3, 1)
    months = acquisitions(_since(_tx(), march), march, freq="month")
    assert months["customers"].tolist() == [2, 1]
    assert period_start(date(2025, 2, 5), "week") == date(2025, 2, 3)
    with pytest.raises(CustvalError, match="unknown frequency"):
        period_start(END, "day")


def test_nothing_before_the_end_is_a_clear_error() -> None:
    with pytest.raises(CustvalError, match="no transactions before 2024-01-01"):
        sales_series(_tx(), date(2024, 1, 1))


def _since(tx: ibis.Table, end: date = END) -> np.ndarray:
    summary = forecast_summary(tx, end, one_row_per_order=True).to_pandas()
    return summary["days_since_first_purchase"].to_numpy()


def test_the_first_purchases_by_hand() -> None:
    summary = (
        forecast_summary(_tx(), END, one_row_per_order=True).to_pandas().set_index("customer_id")
    )
    # first days: A 10 + 5 on 6 Jan, B 20 on 8 Jan, C 30 on 3 Feb (5 Feb is at the end: out)
    assert summary["first_spend"].to_dict() == pytest.approx({"A": 15.0, "B": 20.0, "C": 30.0})
    assert summary["days_since_first_purchase"].to_dict() == {"A": 30, "B": 28, "C": 2}
    # gross 10 + 5 + 20 + 7 + 30 = 72, net 72 - 4 = 68
    assert net_share(_tx(), END) == pytest.approx(68.0 / 72.0)
    # D only ever refunded: no first purchase, but her refund is money; E refunded before her
    # first purchase, which is her first purchase day all the same
    more = pd.DataFrame(
        [
            ("D", datetime(2025, 1, 10, 9), -3.0, True, "web"),
            ("E", datetime(2025, 1, 7, 9), -2.0, True, "web"),
            ("E", datetime(2025, 1, 20, 9), 12.0, False, "web"),
        ],
        columns=["customer_id", "timestamp", "amount", "is_refund", "channel"],
    )
    both = _tx().union(ibis.memtable(more))
    assert acquisitions(_since(both), END)["customers"].tolist() == [2, 0, 1, 0]
    assert forecast_summary(both, END, one_row_per_order=True).to_pandas()[
        "first_spend"
    ].sum() == pytest.approx(77.0)
    assert net_share(both, END) == pytest.approx((84.0 - 4.0 - 3.0 - 2.0) / 84.0)
