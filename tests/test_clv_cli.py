"""`custval clv` on a generated company: one command from a transactions file to CLV."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv

from custval.data.synth import generate


def test_clv_command_on_a_sample_company(tmp_path: Path) -> None:
    result = generate(3000, tmp_path / "co", seed=5, fmt="csv")
    out = tmp_path / "clv.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "custval",
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
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
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


def test_clv_command_bad_input(tmp_path: Path) -> None:
    (tmp_path / "tx.csv").write_text("customer_id,date,amount\nC1,2024-01-05,10\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "custval",
            "clv",
            "-t",
            "tx.csv",
            "--calibration-end",
            "2024-02-01",
            "--model",
            "magic",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown model 'magic'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "clv.parquet").exists()
