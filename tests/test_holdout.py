"""Calibration/holdout split on the hand-made company, by hand."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from custval import pipeline
from custval.config import load_project
from custval.features.holdout import calibration_holdout
from tests.company import write_csv_company


def test_calibration_and_holdout_by_hand(tmp_path: Path) -> None:
    project = load_project(write_csv_company(tmp_path))
    prepared = pipeline.prepare(project)
    table = calibration_holdout(
        prepared.tables["transactions"], date(2024, 1, 16), date(2024, 3, 1)
    ).to_pyarrow()
    rows = {r["customer_id"]: r for r in table.to_pylist()}
    # C2 first buys in the holdout: not a customer of the calibration period
    assert list(rows) == ["C1"]
    c1 = rows["C1"]
    # calibration: Jan 1 (150) and Jan 15 (1200); holdout: Jan 20 (0) and Feb 10 (30); the refund
    # of Feb 12 is not a purchase
    assert (c1["frequency"], c1["recency"], c1["T"]) == (1, 2.0, 15 / 7)
    assert c1["monetary_value"] == 1200
    assert (c1["frequency_holdout"], c1["spend_holdout"]) == (2, 30)
    assert c1["duration_holdout"] == (date(2024, 3, 1) - date(2024, 1, 16)).days / 7


def test_holdout_must_follow_calibration(tmp_path: Path) -> None:
    project = load_project(write_csv_company(tmp_path))
    prepared = pipeline.prepare(project)
    with pytest.raises(ValueError, match="after calibration_end"):
        calibration_holdout(prepared.tables["transactions"], date(2024, 2, 1), date(2024, 1, 1))
