"""`custval clv` on a generated company: one command from a transactions file to CLV."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.factories import Companies, run


def test_clv_command_on_a_sample_company(companies: Companies, tmp_path: Path) -> None:
    result = companies.shared(3000, seed=5, fmt="csv")
    out = tmp_path / "clv.csv"
    done = run(
        "clv",
        "-t",
        str(result.files["transactions"]),
        "--customer-id",
        "account_id",
        "--date",
        "ts",
        "--order-id",
        "order_id",
        "--calibration-end",
        "2025-07-01",
        "--holdout-end",
        "2026-01-01",
        "--model",
        "mbgnbd",
        "--horizon",
        "26",
        "--discount",
        "0.001",
        "-o",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["purchases"]["converged"] and summary["spend"]["converged"]
    # the generator is an MBG/NBD process: the holdout total is predicted within 15%
    assert abs(summary["holdout"]["aggregate_error"]) < 0.15
    table = pacsv.read_csv(out)
    assert table.num_rows == summary["customers"] > 1500
    p_alive = table.column("p_alive").to_pylist()
    assert all(0 <= p <= 1 for p in p_alive)
    assert min(table.column("clv").to_pylist()) >= 0
    assert not list(tmp_path.glob(".clv.csv.tmp"))
    # intervals: per customer around the estimate, and for the totals
    for name in ("clv", "expected_purchases"):
        est = np.array(table.column(name).to_pylist())
        lo = np.array(table.column(f"{name}_lower").to_pylist())
        hi = np.array(table.column(f"{name}_upper").to_pylist())
        assert np.all(lo <= hi) and np.mean((lo <= est) & (est <= hi)) > 0.99
        assert np.median((hi - lo) / est) > 0.001
    total = summary["interval"]["clv_total"]
    assert total["lower"] < total["estimate"] < total["upper"]
    assert total["estimate"] == pytest.approx(sum(table.column("clv").to_pylist()), rel=1e-9)
    assert summary["interval"]["level"] == 0.9


@pytest.fixture
def run_clv(companies: Companies, tmp_path: Path) -> Callable[..., CompletedProcess[str]]:
    """``custval clv EXTRA`` in tmp_path on the transactions of a generated company."""
    transactions = companies.shared(1500, seed=9, fmt="csv").files["transactions"]

    def clv(*extra: str) -> CompletedProcess[str]:
        return run(
            "clv",
            "-t",
            str(transactions),
            "--customer-id",
            "account_id",
            "--date",
            "ts",
            "--order-id",
            "order_id",
            "--calibration-end",
            "2025-07-01",
            "--json",
            *extra,
            cwd=tmp_path,
        )

    return clv


def test_clv_time_unit_rescales_the_rate_parameters(
    run_clv: Callable[..., CompletedProcess[str]], tmp_path: Path
) -> None:
    weeks = run_clv("--model", "bgnbd", "--level", "0", "-o", "w.parquet")
    months = run_clv("--model", "bgnbd", "--level", "0", "--time-unit", "months", "-o", "m.parquet")
    assert weeks.returncode == 0 and months.returncode == 0, weeks.stderr + months.stderr
    w, m = json.loads(weeks.stdout), json.loads(months.stdout)
    # the same fit in another unit: shapes unchanged, alpha scaled by weeks per month
    per_month = 365.25 / 12 / 7
    pw, pm = w["purchases"]["params"], m["purchases"]["params"]
    assert pm["r"] == pytest.approx(pw["r"], rel=1e-4)
    assert pm["a"] == pytest.approx(pw["a"], rel=1e-4)
    assert pm["alpha"] == pytest.approx(pw["alpha"] / per_month, rel=1e-4)
    assert w["interval"] is None
    assert "clv_lower" not in pq.read_table(tmp_path / "w.parquet").column_names
    bad = run_clv("--time-unit", "fortnights")
    assert bad.returncode == 2
    assert "unknown time unit 'fortnights'" in bad.stderr and "Traceback" not in bad.stderr


def test_clv_command_bad_input(tmp_path: Path) -> None:
    (tmp_path / "tx.csv").write_text("customer_id,date,amount\nC1,2024-01-05,10\n")
    done = run(
        "clv", "-t", "tx.csv", "--calibration-end", "2024-02-01", "--model", "magic", cwd=tmp_path
    )
    assert done.returncode == 2
    assert "unknown model 'magic'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "clv.parquet").exists()


def test_clv_compare_and_tracking(
    run_clv: Callable[..., CompletedProcess[str]], tmp_path: Path
) -> None:
    done = run_clv(
        "--model",
        "bgnbd",
        "--holdout-end",
        "2026-01-01",
        "--level",
        "0",
        "--compare",
        "--tracking",
        "track.csv",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    rows = summary["comparison"]
    assert sorted(r["model"] for r in rows) == ["bgnbd", "mbgnbd", "pnbd"]
    aics = [r["aic"] for r in rows]
    assert aics == sorted(aics)
    # the generator is an MBG/NBD process: its model fits best
    assert rows[0]["model"] == "mbgnbd"
    bg = next(r for r in rows if r["model"] == "bgnbd")
    assert bg["log_likelihood"] == pytest.approx(summary["purchases"]["log_likelihood"], rel=1e-9)
    assert bg["holdout_mae"] == pytest.approx(summary["holdout"]["mae"], rel=1e-9)
    table = pacsv.read_csv(tmp_path / "track.csv").to_pandas()
    assert (table.period_end.diff().dropna() > 0).all()
    track, ahead = table[table.period != "forecast"], table[table.period == "forecast"]
    assert track.actual.sum() == track.cumulative_actual.iloc[-1]
    np.testing.assert_allclose(track.predicted.cumsum(), track.cumulative_predicted, rtol=1e-9)
    end = track.iloc[-1]
    # extended forward one week at a time over the horizon: the base's decay, from where it stands
    assert len(ahead) == 52 and ahead.actual.isna().all()
    np.testing.assert_allclose(ahead.period_end - end.period_end, np.arange(1, 53))
    assert (np.diff(ahead.predicted) < 0).all() and (ahead.predicted > 0).all()
    np.testing.assert_allclose(
        ahead.cumulative_predicted, end.cumulative_actual + ahead.predicted.cumsum(), rtol=1e-12
    )
    assert summary["tracking"]["forecast"]["expected"] == pytest.approx(ahead.predicted.sum())
    assert summary["tracking"]["cumulative_actual"] == end.cumulative_actual
    # the tracking counts the same repeat purchases as the calibration summary and the holdout
    predictions = pq.read_table(tmp_path / "clv.parquet").to_pandas()
    at_cal = summary["tracking"]["calibration_end"]
    assert at_cal["cumulative_actual"] == predictions.frequency.sum()
    assert end.cumulative_actual == (
        predictions.frequency.sum() + predictions.frequency_holdout.sum()
    )
    assert summary["settings"]["horizon"] == 52 and summary["settings"]["time_unit"] == "weeks"
    assert abs(end.cumulative_predicted / end.cumulative_actual - 1) < 0.1
    # without a holdout: the calibration, then forward from its end, where the predictions stand
    no_holdout = run_clv("--model", "bgnbd", "--level", "0", "--tracking", "t2.csv")
    assert no_holdout.returncode == 0, no_holdout.stderr
    t2 = pacsv.read_csv(tmp_path / "t2.csv").to_pandas()
    assert set(t2.period) == {"calibration", "forecast"}
    alone = pq.read_table(tmp_path / "clv.parquet").to_pandas()
    # the first 52 forward weeks of the base are the customers' expected purchases in the horizon
    forward = t2[t2.period == "forecast"].predicted.sum()
    assert forward == pytest.approx(alone.expected_purchases.sum(), rel=1e-9)
    backwards = run_clv("--holdout-end", "2025-01-01")
    assert backwards.returncode == 2 and "must come after" in backwards.stderr
    assert "Traceback" not in backwards.stderr


def test_clv_methods_side_by_side_on_a_project(companies: Companies, tmp_path: Path) -> None:
    # the project's store is written beside its project file: a copy of its own
    company = companies.copy(tmp_path / "co", 1500, seed=8, fmt="parquet")
    done = run(
        "clv",
        "-c",
        str(company.config_path),
        "--calibration-end",
        "2025-01-01",
        "--holdout-end",
        "2026-01-01",
        "--method",
        "hybrid",
        "--json",
        "-o",
        "board.parquet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["chosen"] == "hybrid"
    assert [r["model"] for r in summary["leaderboard"]] != []
    assert {r["model"] for r in summary["leaderboard"]} == {"btyd", "hybrid"}
    assert len(summary["deciles"]) == 10
    board = pq.read_table(tmp_path / "board.parquet").to_pandas()
    assert {"clv", "clv_lower", "clv_upper", "clv_btyd", "clv_hybrid", "actual"} <= set(board)
    assert board["reason_1"].str.endswith("the expected CLV").all()
    # profile features reach the machine-learned model
    assert board.filter(like="_feature").stack().isin(["plan", "region", "tenure_days"]).any()
    printed = run(
        "clv",
        "-c",
        str(company.config_path),
        "--method",
        "auto",
        "-o",
        "x.parquet",
        "--horizon",
        "26",
        cwd=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr
    assert "CLV methods on the holdout" in printed.stdout and "(chosen)" in printed.stdout
    for args, message in (
        ((), "either --transactions"),
        (("-t", "x.csv"), "--calibration-end is needed"),
        (("-c", str(company.config_path), "--method", "magic"), "unknown CLV method"),
    ):
        bad = run("clv", *args, cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)


def test_clv_picks_the_purchase_model_by_aic_and_by_holdout_error(
    run_clv: Callable[..., CompletedProcess[str]], tmp_path: Path
) -> None:
    # no holdout: the lowest AIC of the three, said and recorded
    done = run_clv("--level", "0", "--compare")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    choice = summary["purchase_model"]
    rows = {r["model"]: r for r in summary["comparison"]}
    best_aic = min(rows, key=lambda m: rows[m]["aic"])
    # the generator is an MBG/NBD process
    assert choice["model"] == summary["model"] == best_aic == "mbgnbd"
    assert choice["rule"] == "aic" and next(iter(choice["scores"])) == "mbgnbd"
    assert choice["scores"]["bgnbd"] == pytest.approx(rows["bgnbd"]["aic"], rel=1e-12)
    assert summary["purchases"]["aic"] == pytest.approx(rows["mbgnbd"]["aic"], rel=1e-12)
    assert (
        pq.read_table(tmp_path / "clv.parquet").schema.metadata[b"custval.purchase_model"]
        == b"mbgnbd"
    )
    # with a holdout: the lowest holdout MAE of repeat purchases per customer
    held = json.loads(run_clv("--level", "0", "--holdout-end", "2026-01-01", "--compare").stdout)
    maes = {r["model"]: r["holdout_mae"] for r in held["comparison"]}
    assert held["purchase_model"]["rule"] == "holdout_mae"
    assert held["model"] == min(maes, key=maes.__getitem__)
    assert held["holdout"]["mae"] == pytest.approx(min(maes.values()), rel=1e-12)


def test_clv_says_what_it_picked_and_what_bgnbd_assumes(
    companies: Companies, tmp_path: Path
) -> None:
    transactions = companies.shared(1500, seed=9, fmt="csv").files["transactions"]
    common = (
        "clv", "-t", str(transactions), "--customer-id", "account_id", "--date", "ts",
        "--order-id", "order_id", "--calibration-end", "2025-07-01", "--level", "0",
    )  # fmt: skip
    auto = run(*common, cwd=tmp_path)
    assert auto.returncode == 0, auto.stderr
    text = " ".join(auto.stdout.split())
    assert "purchase model: MBG/NBD (lowest AIC of 3: MBG/NBD " in text
    # like a project: 10% a year, stated per year and per time unit
    assert "discount 10% a year (0.183% a week)" in text
    assert "P(alive) = 1" not in text
    forced = run(*common, "--model", "bgnbd", "--json", "-o", "bg.parquet", cwd=tmp_path)
    summary = json.loads(forced.stdout)
    frequency = pq.read_table(tmp_path / "bg.parquet").column("frequency").to_numpy()
    once = int((frequency == 0).sum())
    assert 100 < once < len(frequency) == summary["customers"]
    assert summary["no_repeat_customers"] == once
    assert summary["settings"]["discount"] == pytest.approx(1.1 ** (1 / 52) - 1, rel=1e-12)
    assert summary["settings"]["discount_per_year"] == pytest.approx(0.10, rel=1e-12)
    note = (
        f"{once:,} of {len(frequency):,} customers have no repeat purchase: BG/NBD gives them "
        "P(alive) = 1 by construction; MBG/NBD or Pareto/NBD do not"
    )
    assert note in summary["notes"]
    p_alive = pq.read_table(tmp_path / "bg.parquet").column("p_alive").to_numpy()
    assert (p_alive[frequency == 0] == 1).all()
    printed = run(*common, "--model", "bgnbd", "-o", "bg2.parquet", cwd=tmp_path)
    assert note in " ".join(printed.stdout.split())
    assert "purchase model: BG/NBD (asked for)" in " ".join(printed.stdout.split())


def test_a_date_flag_in_another_format_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "tx.csv").write_text("customer_id,date,amount\nC1,2024-01-05,10\n")
    for flag in ("--calibration-end", "--holdout-end"):
        args = {"--calibration-end": "01/07/1998", "--holdout-end": "01/07/1999"}
        cal = args["--calibration-end"] if flag == "--calibration-end" else "1998-07-01"
        extra = ("--holdout-end", args["--holdout-end"]) if flag == "--holdout-end" else ()
        done = run("clv", "-t", "tx.csv", "--calibration-end", cal, *extra, cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"{flag} '{args[flag]}' is not a date like 2025-06-30" in done.stderr
        assert "--as-of" not in done.stderr


def test_hybrid_on_a_short_history_is_a_clear_refusal(companies: Companies, tmp_path: Path) -> None:
    # 86 days of history before the calibration end, a holdout of 153 days: the training
    # windows would be 24 days, too short to learn spend over 153 (before: KeyError 'hybrid')
    transactions = companies.shared(1500, seed=9, fmt="csv").files["transactions"]
    done = run(
        "clv", "-t", str(transactions), "--customer-id", "account_id", "--date", "ts",
        "--order-id", "order_id", "--calibration-end", "2023-04-01",
        "--holdout-end", "2023-09-01", "--method", "hybrid", "-o", "h.parquet",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "KeyError" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "--method hybrid needs at least 116 days of history before 2023-04-01" in message
    assert "the history from the first purchase (2023-01-04) has 87 days" in message
    assert not (tmp_path / "h.parquet").exists()
