"""``custval quickstart``: one transactions file to everything, checked against the separate
commands' results on the same data, and the commands it then suggests run on what it wrote."""

from __future__ import annotations

import re
import tomllib
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from custval.errors import CustvalError
from tests.factories import Companies, run

N = 800
WEEKLY_10_PERCENT = f"{1.1 ** (1 / 52) - 1:.12f}"


@pytest.fixture(scope="module")
def quick(companies: Companies, tmp_path_factory: pytest.TempPathFactory) -> dict:
    company = companies.shared(N, seed=3, fmt="csv")
    out = tmp_path_factory.mktemp("quick") / "qs"
    res = run(
        "quickstart",
        "-t",
        str(company.out / "transactions.csv"),
        "--customer-id",
        "account_id",
        "--date",
        "ts",
        "-o",
        str(out),
        "--report",
        str(out.parent / "quickstart.html"),
        cwd=out.parent,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return {"out": out, "stdout": res.stdout, "company": company}


def test_the_report_holds_every_step_drawn_offline(quick: dict) -> None:
    from tests.test_dashboard import assert_report

    seen = assert_report(quick["out"].parent / "quickstart.html")
    # the overview, CLV (tracking and P(alive)), the value class (leaderboard, calibration,
    # importance) and the segments (customers, CLV share)
    assert seen.charts >= 10


def _periods(stdout: str) -> tuple[date, date]:
    found = re.search(
        r"fitted on the purchases before (\S+), judged on the \d+ weeks to (\S+);", stdout
    )
    assert found, stdout
    return date.fromisoformat(found[1]), date.fromisoformat(found[2])


def test_quickstart_writes_a_project_every_command_takes(quick: dict) -> None:
    out: Path = quick["out"]
    project = tomllib.loads((out / "custval.toml").read_text())
    calibration_end, as_of = _periods(quick["stdout"])
    assert project["as_of"] == as_of.isoformat()
    assert project["store"] == "custval.duckdb"
    assert project["sources"]["transactions"]["columns"] == {
        "customer_id": "account_id",
        "timestamp": "ts",
    }
    for command in ("custval serve -c", "custval export -c", "custval score -c"):
        assert f"{command} {out}/custval.toml" in quick["stdout"]
    assert (as_of - calibration_end) == timedelta(weeks=26)


def test_quickstart_clv_equals_the_clv_command(quick: dict, tmp_path: Path) -> None:
    calibration_end, as_of = _periods(quick["stdout"])
    res = run(
        "clv",
        "-t",
        str(quick["company"].out / "transactions.csv"),
        "--customer-id",
        "account_id",
        "--date",
        "ts",
        "--calibration-end",
        calibration_end.isoformat(),
        "--holdout-end",
        as_of.isoformat(),
        "--model",
        "auto",
        "--discount",
        WEEKLY_10_PERCENT,
        "-o",
        str(tmp_path / "clv.parquet"),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    mine = pq.read_table(quick["out"] / "clv.parquet").to_pandas().set_index("customer_id")
    theirs = pq.read_table(tmp_path / "clv.parquet").to_pandas().set_index("customer_id")
    assert len(mine) == len(theirs) > 0.5 * N
    theirs = theirs.loc[mine.index]
    for column in ("p_alive", "expected_purchases", "clv"):
        np.testing.assert_allclose(mine[column], theirs[column], rtol=1e-6)


def test_quickstart_store_agrees_with_a_second_score(quick: dict) -> None:
    out: Path = quick["out"]
    res = run("score", "-c", str(out / "custval.toml"), cwd=out)
    assert res.returncode == 0, res.stderr
    with duckdb.connect(str(out / "custval.duckdb"), read_only=True) as con:
        runs = con.sql(
            "SELECT run_id FROM runs WHERE kind = 'score' ORDER BY started_at"
        ).fetchall()
        assert len(runs) == 2
        first, second = (
            con.sql(
                "SELECT customer_id, value_probability, segment FROM predictions "
                "WHERE run_id = ? ORDER BY customer_id",
                params=[r[0]],
            ).fetchall()
            for r in runs
        )
        segments = con.sql("SELECT count(*) FROM runs WHERE kind = 'segment'").fetchone()
    assert segments == (1,)
    assert len(first) == len(second) > 0.5 * N
    assert [(c, s) for c, _, s in first] == [(c, s) for c, _, s in second]
    np.testing.assert_allclose([p for _, p, _ in first], [p for _, p, _ in second], rtol=1e-9)
    assert {s for *_, s in first} - {None}, "the quickstart's segments reach the scoring run"


def test_quickstart_needs_a_history(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    days = [date(2024, 1, 1) + timedelta(days=d) for d in range(0, 40, 3)]
    path.write_text(
        "customer_id,date,amount\n"
        + "".join(f"c{i % 5},{d},{10 + i}\n" for i, d in enumerate(days))
    )
    res = run("quickstart", "-t", str(path), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2
    assert "span 5 weeks" in res.stderr and "at least 12" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "custval.toml").exists()


def test_columns_are_guessed_by_name_then_by_values() -> None:
    import pandas as pd

    from custval.flows.quickstart import guess_columns

    cdnow = pd.DataFrame(
        {
            "customer_id": ["00001", "00002", "00002"],
            "date": ["19970101", "19970112", "19970112"],
            "number_of_cds": ["1", "5", "2"],
            "dollar_value": ["11.77", "77.00", "20.76"],
        }
    )
    guess = guess_columns(cdnow, {"customer_id": None, "timestamp": None, "amount": None})
    assert guess.columns == {
        "timestamp": "date",
        "amount": "dollar_value",
        "customer_id": "customer_id",
    }
    assert guess.date_format == "%Y%m%d"
    assert guess.notes == ["--amount dollar_value"]
    headless = cdnow.set_axis(["column1", "column2", "column3", "column4"], axis=1)
    guess = guess_columns(headless, {"customer_id": None, "timestamp": None, "amount": None})
    assert guess.columns == {"timestamp": "column2", "amount": "column4", "customer_id": "column1"}
    given = guess_columns(headless, {"customer_id": "column3", "timestamp": None, "amount": None})
    assert given.columns["customer_id"] == "column3"
    with pytest.raises(CustvalError, match="looks like the amount") as caught:
        guess_columns(headless.drop(columns="column4"), {"customer_id": None})
    assert caught.value.hint == "Name it with --amount"
