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
