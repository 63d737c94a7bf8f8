"""Data the customer-base models cannot learn from, refused in plain words: everyone bought
once, all purchases on one day, only refunds, one customer, too few repeat buyers for the spend
model. Each exits 2 with the counts and dates, no traceback, and writes nothing. Customers whose
only rows are refunds are counted, not dropped in silence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.factories import Companies, run

CAL_END = "2024-07-01"


def _write(tmp_path: Path, rows: pd.DataFrame) -> Path:
    path = tmp_path / "tx.csv"
    rows.to_csv(path, index=False)
    return path


def _refused(tmp_path: Path, rows: pd.DataFrame) -> str:
    _write(tmp_path, rows)
    done = run("clv", "-t", "tx.csv", "--calibration-end", CAL_END, "-o", "out.csv", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "likelihood" not in done.stderr  # the statistician's words of before
    assert not (tmp_path / "out.csv").exists()
    assert not list(tmp_path.glob(".out.csv*"))
    return " ".join(done.stderr.split())


def _buyers(n: int, repeat: int, seed: int = 0) -> pd.DataFrame:
    """``n`` customers buying once in the first half of 2024, ``repeat`` of them twice more."""
    rng = np.random.default_rng(seed)
    first = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 60, n), "D")
    rows = [pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)], "date": first})]
    for k in (1, 2):
        later = first[:repeat] + pd.to_timedelta(rng.integers(10, 60, repeat) * k, "D")
        rows.append(pd.DataFrame({"customer_id": [f"C{i}" for i in range(repeat)], "date": later}))
    out = pd.concat(rows, ignore_index=True)
    out["amount"] = rng.gamma(4.0, 10.0, len(out)).round(2) + 1
    out["date"] = out["date"].dt.strftime("%Y-%m-%d")
    return out


def test_everyone_bought_once(tmp_path: Path) -> None:
    message = _refused(tmp_path, _buyers(300, 0))
    assert (
        "none of the 300 customers bought twice before 2024-07-01 (purchases on one day count "
        "once): the purchase models need repeat buyers" in message
    )


def test_all_purchases_on_one_day(tmp_path: Path) -> None:
    rows = _buyers(40, 20).assign(date="2024-03-05")
    message = _refused(tmp_path, rows)
    assert (
        "all 80 purchases of the 40 customers before 2024-07-01 were made on one day, "
        "2024-03-05" in message
    )


def test_all_amounts_are_refunds(tmp_path: Path) -> None:
    rows = _buyers(200, 50)
    rows["amount"] = -rows["amount"]
    message = _refused(tmp_path, rows)
    assert "all 300 amounts before 2024-07-01 are refunds (negative)" in message


def test_one_customer(tmp_path: Path) -> None:
    rows = _buyers(1, 1)
    assert len(rows) == 3
    message = _refused(tmp_path, rows)
    assert "only one customer (C0) bought before 2024-07-01" in message


def test_too_few_repeat_buyers_for_the_spend_model(tmp_path: Path) -> None:
    message = _refused(tmp_path, _buyers(500, 4))
    assert (
        "only 4 of the 500 customers made a repeat purchase with a positive amount before "
        "2024-07-01: the Gamma-Gamma spend model needs at least 10" in message
    )


def test_the_checks_stand_in_python_too() -> None:
    import ibis

    from custval.errors import FitError
    from custval.flows.customer_base import check_summary

    con = ibis.duckdb.connect()
    tx = con.create_table(
        "tx",
        pd.DataFrame(
            {
                "customer_id": ["A", "B"],
                "timestamp": pd.to_datetime(["2024-01-02", "2024-01-03"]),
                "amount": [5.0, 6.0],
                "is_refund": [False, False],
            }
        ),
    )
    from datetime import date

    with pytest.raises(FitError, match="none of the 2 customers bought twice before 2024-02-01"):
        check_summary(tx, date(2024, 2, 1), np.array(["A", "B"]), np.zeros(2), np.zeros(2))


def test_refund_only_customers_are_counted(companies: Companies, tmp_path: Path) -> None:
    source = companies.shared(1500, seed=9, fmt="csv").files["transactions"]
    text = source.read_text().rstrip("\n")
    # order_id, account_id, ts, amount, category, channel, product_id
    extra = [
        "X1,R1,2025-02-01 10:00,-12.0,books,app,P1001",
        "X2,R2,2025-02-03 11:00,-5.5,books,app,P1001",
        "X3,R2,2025-03-01 12:00,-7.0,books,app,P1001",
        "X4,R3,2025-04-09 09:00,-30.0,home,branch,P1001",
    ]
    (tmp_path / "plain.csv").write_text(text + "\n")
    (tmp_path / "more.csv").write_text(text + "\n" + "\n".join(extra) + "\n")
    common = ("--customer-id", "account_id", "--date", "ts", "--order-id", "order_id")
    found = {}
    for name in ("plain", "more"):
        done = run(
            "clv", "-t", f"{name}.csv", *common, "--calibration-end", "2025-07-01",
            "--level", "0", "--json", "-o", f"{name}.parquet", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        found[name] = json.loads(done.stdout)
    plain, more = found["plain"], found["more"]
    assert more["refund_only_customers"] == plain["refund_only_customers"] + 3
    assert more["customers"] == plain["customers"]
    n = more["refund_only_customers"]
    assert f"{n:,} customers with only refunds are left out" in more["notes"]
    ids = set(pq.read_table(tmp_path / "more.parquet").column("customer_id").to_pylist())
    assert not ids & {"R1", "R2", "R3"}
    printed = run(
        "clv", "-t", "more.csv", *common, "--calibration-end", "2025-07-01", "--level", "0",
        "-o", "again.parquet", cwd=tmp_path,
    )  # fmt: skip
    assert f"{n:,} customers with only refunds are left out" in " ".join(printed.stdout.split())
