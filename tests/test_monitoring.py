"""Drift reports of tables against a reference run's profiles."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from custval.errors import CustvalError
from custval.flows.monitoring import (
    drift_report,
    merge_profiles,
    profiles_like,
    reference_profiles,
)


def _table(n: int, seed: int, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    spend = rng.lognormal(3 + shift, 1, n)
    orders = pa.array(rng.poisson(3, n), mask=rng.random(n) < 0.05)  # nulls: missing values
    channel = np.array(["web", "store", "app"], dtype=object)[rng.integers(0, 3, n)]
    return pa.table(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "spend": spend,
            "orders": orders,
            "channel": channel,
            "is_member": rng.random(n) < 0.3,
        }
    )


def test_a_planted_shift_alarms_on_its_column_only() -> None:
    ref = reference_profiles(_table(50_000, 0))
    assert set(ref) == {"spend", "orders", "channel", "is_member"}  # the id is not profiled
    assert ref["orders"].counts[-1] == pytest.approx(2500, rel=0.1)  # the missing values' bin
    report = drift_report(ref, profiles_like(ref, _table(50_000, 1, shift=0.1)))
    assert report.iloc[0]["feature"] == "spend" and report.iloc[0]["alarm"]
    assert report.set_index("feature")["alarm"].sum() == 1
    quiet = drift_report(ref, profiles_like(ref, _table(50_000, 2)))
    assert not quiet["alarm"].any()


def test_a_run_read_in_parts_is_the_run() -> None:
    ref = reference_profiles(_table(5000, 0))
    whole = _table(3000, 4)
    parts = [profiles_like(ref, b) for b in (whole.slice(0, 1000), whole.slice(1000))]
    merged, at_once = merge_profiles(parts), profiles_like(ref, whole)
    for name in ref:
        assert merged[name].counts.tolist() == at_once[name].counts.tolist()


def test_different_features_than_the_reference_are_named() -> None:
    ref = reference_profiles(_table(500, 0))
    other = _table(500, 1).drop_columns(["channel"]).append_column("tenure", pa.array([1.0] * 500))
    with pytest.raises(CustvalError, match="lacks 1 of the reference's columns and has 1") as e:
        profiles_like(ref, other)
    assert e.value.examples == [{"missing": "channel"}, {"new": "tenure"}]
    assert "{missing='channel'}" in str(e.value)


def test_profiles_go_into_the_store_with_their_run_and_come_back(store_url: str) -> None:
    from custval.flows.monitoring import profile_rows, profiles_from_rows
    from custval.store import open_store
    from tests.test_store import run_tables

    table = _table(2000, 0)
    ref = reference_profiles(table)
    predictions, _ = run_tables(50)
    with open_store(store_url) as store:
        run_id = store.write_run(
            kind="score",
            predictions=predictions,
            extra={"run_profiles": profile_rows(ref, "features")},
        )
        rows = store.run_rows("run_profiles", run_id)
    assert rows.num_rows == 4 and set(rows.column("n").to_pylist()) == {2000}
    back = profiles_from_rows(rows, "features")
    assert profiles_from_rows(rows, "outputs") == {}
    for name, p in ref.items():
        assert back[name].counts.tolist() == p.counts.tolist() and back[name].kind == p.kind
        assert back[name].labels == p.labels
    # a later run compares with the stored profiles as with the ones in memory
    later = profiles_like(back, _table(2000, 1))
    assert drift_report(back, later).equals(drift_report(ref, profiles_like(ref, _table(2000, 1))))


def test_earlier_forecasts_are_judged_on_a_later_runs_history(store_url: str) -> None:
    """A forecast run of 4 weeks, then a later run whose history holds 3 of them: WAPE, bias
    and coverage over those 3, kept per earlier run; the later run itself is not judged."""
    import datetime as dt

    import pytest

    from custval.flows.outcomes import forecast_outcomes
    from custval.store import open_store

    weeks = [dt.date(2026, 1, 5) + dt.timedelta(weeks=i) for i in range(4)]
    point = [100.0, 110.0, 120.0, 130.0]
    first = pa.table(
        {
            "series": ["total"] * 4,
            "period": pa.array(weeks, pa.date32()),
            "step": pa.array([1, 2, 3, 4], pa.int32()),
            "measure": ["revenue"] * 4,
            "freq": ["week"] * 4,
            "method": ["ets"] * 4,
            "reconciliation": ["base"] * 4,
            "point": point,
            "lo_80": [90.0, 100.0, 115.0, 120.0],
            "hi_80": [110.0, 120.0, 125.0, 140.0],
            "lo_95": [80.0, 90.0, 100.0, 110.0],
            "hi_95": [120.0, 130.0, 140.0, 150.0],
        }
    )
    actual = [105.0, 95.0, 150.0]  # in 80%, in 95% only, in neither
    history = pa.table(
        {
            "series": ["total"] * 3,
            "period": pa.array(weeks[:3], pa.date32()),
            "measure": ["revenue"] * 3,
            "actual": actual,
        }
    )
    empty = pa.table({"customer_id": pa.array([], pa.string())})
    with open_store(store_url) as store:
        assert forecast_outcomes(store).empty
        earlier = store.write_run(kind="forecast", predictions=empty, extra={"forecasts": first})
        assert forecast_outcomes(store).empty  # no later run yet
        store.write_run(
            kind="forecast",
            predictions=empty,
            extra={"forecasts": first, "forecast_series": history},
        )
        found = forecast_outcomes(store)
        kept = dict(
            store.query(
                "SELECT metric, value FROM run_performance WHERE run_id = ? AND kind = ?",
                (earlier, "realised"),
            )
        )
    assert found["run_id"].tolist() == [earlier] and int(found["periods"].iloc[0]) == 3
    row = found.iloc[0]
    assert row["wape"] == pytest.approx((5 + 15 + 30) / 350)
    assert row["bias"] == pytest.approx((330 - 350) / 350)
    assert row["coverage_80"] == pytest.approx(1 / 3) and row["coverage_95"] == pytest.approx(2 / 3)
    assert kept["forecast_wape"] == pytest.approx(row["wape"])
