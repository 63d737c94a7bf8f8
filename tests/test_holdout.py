"""Calibration/holdout split on the hand-made company, by hand."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from custval import flows
from custval.config import load_project
from custval.errors import CustvalError
from custval.features.holdout import calibration_holdout
from tests.factories import write_csv_company


def test_calibration_and_holdout_by_hand(tmp_path: Path) -> None:
    project = load_project(write_csv_company(tmp_path))
    prepared = flows.prepare(project)
    table = calibration_holdout(
        prepared.tables["transactions"], date(2024, 1, 16), date(2024, 3, 1)
    ).to_pyarrow()
    rows = {r["customer_id"]: r for r in table.to_pylist()}
    # C2 first buys in the holdout: not a customer of the calibration period
    assert list(rows) == ["C1"]
    c1 = rows["C1"]
    # calibration: Jan 1 (150) and Jan 15 (1200); holdout: Jan 20 (0) and Feb 10 (30); the refund
    # of Feb 12 is not a purchase
    assert (c1["frequency"], c1["recency"], c1["T"]) == (1, 2.0, 14 / 7)
    assert c1["monetary_value"] == 1200
    assert (c1["frequency_holdout"], c1["spend_holdout"]) == (2, 30)
    assert c1["duration_holdout"] == (date(2024, 3, 1) - date(2024, 1, 16)).days / 7


def test_holdout_must_follow_calibration(tmp_path: Path) -> None:
    project = load_project(write_csv_company(tmp_path))
    prepared = flows.prepare(project)
    with pytest.raises(CustvalError, match="must come after the calibration end"):
        calibration_holdout(prepared.tables["transactions"], date(2024, 2, 1), date(2024, 1, 1))


CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_sample.txt"


@pytest.mark.skipif(not CDNOW.exists(), reason="the CDNOW reference data is not beside the project")
def test_cdnow_sample_counts_match_the_literature(tmp_path: Path) -> None:
    # Fader, Hardie & Lee's CDNOW sample: 2,357 customers, 2,457 repeat transactions in the 39
    # calibration weeks (946 repeat buyers), 1,882 in the 39 holdout weeks
    with (tmp_path / "tx.csv").open("w") as out:
        out.write("customer_id,timestamp,cds,amount\n")
        for line in CDNOW.read_text().splitlines():
            _master, sample, day, cds, dollars = line.split()
            out.write(f"{sample},{day},{cds},{dollars}\n")
    config = tmp_path / "custval.toml"
    config.write_text('as_of = "1997-10-01"\n[sources.tx]\nkind = "transactions"\nuri = "tx.csv"\n')
    prepared = flows.prepare(load_project(config))
    table = calibration_holdout(
        prepared.tables["transactions"],
        date(1997, 10, 1),
        date(1998, 7, 1),
        one_row_per_order=prepared.one_row_per_order,
    ).to_pyarrow()
    frequency = table.column("frequency").to_pylist()
    assert table.num_rows == 2357
    assert sum(frequency) == 2457
    assert sum(f > 0 for f in frequency) == 946
    assert sum(table.column("frequency_holdout").to_pylist()) == 1882
    assert set(table.column("duration_holdout").to_pylist()) == {39.0}


def cdnow_csv(folder: Path) -> Path:
    path = folder / "tx.csv"
    with path.open("w") as out:
        out.write("customer_id,date,cds,amount\n")
        for line in CDNOW.read_text().splitlines():
            _master, sample, day, cds, dollars = line.split()
            out.write(f"{sample},{day},{cds},{dollars}\n")
    return path


@pytest.mark.skipif(not CDNOW.exists(), reason="the CDNOW reference data is not beside the project")
def test_clv_command_reproduces_the_published_cdnow_fits(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    cdnow_csv(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "custval",
            "clv",
            "--model",
            "bgnbd",  # the published fits are BG/NBD's; auto would pick Pareto/NBD
            "-t",
            "tx.csv",
            "--calibration-end",
            "1997-10-01",
            "--holdout-end",
            "1998-07-01",
            "-o",
            "clv.parquet",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(result.stdout)
    bg = summary["purchases"]["params"]
    published = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}
    for name, value in published.items():
        assert f"{bg[name]:.4g}" == f"{value:.4g}", name
    assert summary["purchases"]["log_likelihood"] == pytest.approx(-9582.43, abs=0.01)
    gg = summary["spend"]["params"]
    assert (round(gg["p"], 2), round(gg["q"], 2), round(gg["gamma"], 2)) == (6.25, 3.74, 15.44)
    assert summary["holdout"]["actual_total"] == 1882
    assert (tmp_path / "clv.parquet").exists()
