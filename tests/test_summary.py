"""The BTYD summary of an in-memory transaction table, and the tracking table's purchase times."""

from __future__ import annotations

from datetime import date

import ibis
import numpy as np
import pandas as pd
import pytest

from custval.errors import CustvalError
from custval.features.holdout import tracking_times
from custval.features.summary import btyd_summary

# C1: two purchases on day 1 (one day), a repeat on Jan 15, one in the holdout;
# C2: one purchase and a refund; C3: first purchase after the calibration end.
TX = pd.DataFrame(
    {
        "id": ["C1", "C1", "C1", "C1", "C2", "C2", "C3"],
        "when": [
            "2024-01-01",
            "2024-01-01 15:00",
            "2024-01-15",
            "2024-02-05",
            "2024-01-20",
            "2024-01-25",
            "2024-02-10",
        ],
        "amt": [10.0, 5.0, 20.0, 30.0, 7.0, -7.0, 3.0],
    }
)
CAL, HOLD = date(2024, 2, 1), date(2024, 3, 1)


def test_summary_by_hand() -> None:
    s = btyd_summary(
        TX, customer_id="id", date="when", amount="amt", calibration_end=CAL, holdout_end=HOLD
    )
    assert list(s.index) == ["C1", "C2"]
    c1, c2 = s.loc["C1"], s.loc["C2"]
    # T runs to the day before the calibration end (literature convention): 30 days
    assert (c1.frequency, c1.recency, c1["T"], c1.monetary_value) == (1, 2.0, 30 / 7, 20.0)
    assert (c2.frequency, c2.recency, c2["T"]) == (0, 0.0, 11 / 7)
    assert (c1.frequency_holdout, c1.spend_holdout) == (1, 30.0)
    assert c2.frequency_holdout == 0
    assert c1.duration_holdout == pytest.approx(29 / 7)
    days = btyd_summary(
        TX, customer_id="id", date="when", amount="amt", calibration_end=CAL, time_unit="days"
    )
    assert (days.loc["C1", "recency"], days.loc["C1", "T"]) == (14.0, 30.0)
    assert "frequency_holdout" not in days.columns


def test_summary_errors_name_the_column_and_rows() -> None:
    bad = TX.assign(when=["not a date", *TX.when[1:]])
    with pytest.raises(CustvalError, match=r"column 'when'.*1 transactions have a missing.*row=0"):
        btyd_summary(bad, customer_id="id", date="when", amount="amt", calibration_end=CAL)
    with pytest.raises(CustvalError, match="no column 'amount'"):
        btyd_summary(TX, customer_id="id", date="when", calibration_end=CAL)
    with pytest.raises(CustvalError, match="no customer bought before"):
        btyd_summary(
            TX, customer_id="id", date="when", amount="amt", calibration_end=date(2023, 1, 1)
        )
    with pytest.raises(CustvalError, match="unknown time unit"):
        btyd_summary(TX, customer_id="id", date="when", calibration_end=CAL, time_unit="hours")


def test_tracking_times() -> None:
    tx = ibis.memtable(
        pd.DataFrame(
            {
                "customer_id": TX.id,
                "timestamp": pd.to_datetime(TX.when, format="mixed"),
                "is_refund": TX.amt < 0,
            }
        )
    )
    origin, first, repeats = tracking_times(tx, CAL, HOLD, time_unit="days")
    assert origin == date(2024, 1, 1)
    np.testing.assert_array_equal(np.sort(first), [0.0, 19.0])  # C3 started after CAL
    np.testing.assert_array_equal(np.sort(repeats), [14.0, 35.0])  # C2's refund is no purchase


def test_summary_keeps_id_types_reads_string_dates_and_local_days() -> None:
    tx = TX.assign(id=TX.id.str[1:].astype(int))
    s = btyd_summary(tx, customer_id="id", date="when", amount="amt", calibration_end="2024-02-01")
    assert list(s.index) == [1, 2]
    # midnight in Paris is the previous evening in UTC: the local day must count
    paris = pd.DataFrame(
        {
            "id": ["A", "A"],
            "when": pd.to_datetime(["2024-01-01 00:30", "2024-01-08 00:30"]).tz_localize(
                "Europe/Paris"
            ),
            "amt": [1.0, 1.0],
        }
    )
    p = btyd_summary(
        paris, customer_id="id", date="when", amount="amt", calibration_end=CAL, time_unit="days"
    )
    assert (p.loc["A", "recency"], p.loc["A", "T"]) == (7.0, 30.0)
    with pytest.raises(CustvalError, match="calibration_end must be a date"):
        btyd_summary(TX, customer_id="id", date="when", amount="amt", calibration_end="soon")
