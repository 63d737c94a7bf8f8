"""Benchmark of ``custval features`` against the same RFM hand-written in DuckDB SQL.

Data: the sample company with 1,000,000 customers (about 10M transactions) as Parquet, made
once by ``custval.data.synth`` and kept in ``bench/.data``. Each contender runs in its own child
process, so that its wall time and peak resident memory (``ru_maxrss`` from ``wait4``) are its
own:

- ``custval features --groups rfm`` on a project with the transactions and the id map:
  validation, cleaning with every rule counted, identity linking, RFM in both conventions;
- the hand-written SQL: one DuckDB query doing the same cleaning (ids, dates in the three
  formats the data uses, amounts with thousands separators, duplicates, refunds, future dates,
  the id-map join) and the BTYD and marketing RFM, written to Parquet;
- for information, ``custval features`` with every transaction feature (RFM, purchase rhythm,
  spend trend, product mix and channels) and on the whole company (all six sources).

Targets: custval at most 1.5x the hand-written SQL's wall time; peak memory under 4 GB. The
RFM columns of both outputs are compared, so the two do the same work.

Usage::

    python bench/features.py                 # 1M customers
    python bench/features.py -n 100000       # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
RATIO_TARGET = 1.5
MEMORY_TARGET_MIB = 4096

HAND_SQL = r"""
COPY (
WITH idmap AS (
    SELECT DISTINCT upper(trim(crm_id)) AS customer_id, upper(trim(account_id)) AS account_id
    FROM read_parquet('{data}/id_map.parquet')
    WHERE nullif(trim(crm_id), '') IS NOT NULL AND nullif(trim(account_id), '') IS NOT NULL
),
tx AS (
    SELECT DISTINCT
        upper(trim(order_id)) AS order_id,
        upper(trim(account_id)) AS account_id,
        -- the fastest form we know: DuckDB's ISO cast first, then the two other formats
        coalesce(try_cast(ts AS TIMESTAMP),
                 try_strptime(ts, '%Y/%m/%d %H:%M'),
                 try_strptime(ts, '%d.%m.%Y %H:%M')) AS ts,
        try_cast(replace(trim(amount), ',', '') AS DOUBLE) AS amount,
        coalesce(nullif(lower(trim(category)), ''), 'unknown') AS category,
        coalesce(nullif(lower(trim(channel)), ''), 'unknown') AS channel
    FROM read_parquet('{data}/transactions.parquet')
),
linked AS (
    SELECT idmap.customer_id, tx.* FROM tx JOIN idmap USING (account_id)
    WHERE tx.ts IS NOT NULL AND tx.ts <= now()::TIMESTAMP AND tx.ts < DATE '{as_of}'
),
days AS (
    SELECT customer_id, ts::DATE AS day, sum(amount) AS spend, count(DISTINCT order_id) AS orders
    FROM linked WHERE amount >= 0 GROUP BY ALL
),
per AS (
    SELECT customer_id, count(*) AS n_days, min(day) AS first_day, max(day) AS last_day,
           sum(spend) AS spend, arg_min(spend, day) AS first_spend, sum(orders) AS orders
    FROM days GROUP BY ALL
),
refunds AS (
    SELECT customer_id, -sum(amount) AS refund_amount FROM linked WHERE amount < 0 GROUP BY ALL
)
SELECT per.customer_id,
       n_days - 1 AS frequency,
       date_diff('day', first_day, last_day) / 7 AS recency,
       (date_diff('day', first_day, DATE '{as_of}') - 1) / 7 AS "T",
       CASE WHEN n_days > 1 THEN (spend - first_spend) / (n_days - 1) ELSE 0 END AS monetary_value,
       date_diff('day', last_day, DATE '{as_of}') AS recency_days,
       orders,
       spend - coalesce(refund_amount, 0) AS revenue
FROM per LEFT JOIN refunds USING (customer_id)
ORDER BY customer_id
) TO '{out}' (FORMAT parquet)
"""

TX_ONLY_TOML = """\
as_of = "{as_of}"
time_unit = "weeks"
[identity]
map_source = "id_map"
primary = "crm_id"
[sources.transactions]
kind = "transactions"
uri = "{data}/transactions.parquet"
id_namespace = "account_id"
[sources.transactions.columns]
customer_id = "account_id"
timestamp = "ts"
[sources.id_map]
kind = "id_map"
uri = "{data}/id_map.parquet"
"""


def measure(cmd: list[str]) -> dict:
    """Run ``cmd`` in a child process; wall time (s) and its own peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{stdout}\n{stderr}")
    return {"wall_s": wall, "peak_mib": usage.ru_maxrss / 1024}


def ensure_data(n: int, seed: int) -> Path:
    folder = HERE / ".data" / f"company-{n}-{seed}"
    if not (folder / "transactions.parquet").exists():
        from custval.data.synth import generate

        print(f"generating {n:,} customers as Parquet in {folder} ...", flush=True)
        generate(n, folder, seed=seed, fmt="parquet")
    return folder


def as_of_of(data: Path) -> str:
    import tomllib

    return tomllib.loads((data / "custval.toml").read_text())["as_of"]


def compare(custval_out: Path, sql_out: Path) -> None:
    """The RFM columns must agree, or the comparison is not of the same work."""
    a = pq.read_table(custval_out).sort_by("customer_id")
    b = pq.read_table(sql_out).sort_by("customer_id")
    a = a.filter(a["frequency"].is_valid())
    assert a["customer_id"].to_pylist() == b["customer_id"].to_pylist(), "customer sets differ"
    for col in ("frequency", "recency", "T", "monetary_value", "recency_days", "orders", "revenue"):
        x = a[col].to_numpy(zero_copy_only=False).astype(float)
        y = b[col].to_numpy(zero_copy_only=False).astype(float)
        assert np.allclose(x, y, rtol=1e-9, atol=1e-6), f"column {col} differs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = ensure_data(args.customers, args.seed)
    as_of = as_of_of(data)
    tx_rows = pq.ParquetFile(data / "transactions.parquet").metadata.num_rows
    exe = [sys.executable, "-m", "custval"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "tx.toml"
        config.write_text(TX_ONLY_TOML.format(as_of=as_of, data=data))
        sql = HAND_SQL.format(data=data, as_of=as_of, out=tmp / "sql.parquet")
        runs = {
            "hand-written DuckDB SQL (RFM)": measure(
                [sys.executable, "-c", f"import duckdb; duckdb.sql({sql!r})"]
            ),
            "custval features --groups rfm (the same RFM)": measure(
                [
                    *exe,
                    "features",
                    "-c",
                    str(config),
                    "-o",
                    str(tmp / "custval.parquet"),
                    "--groups",
                    "rfm",
                ]
            ),
            "custval features (all transaction features)": measure(
                [*exe, "features", "-c", str(config), "-o", str(tmp / "tx.parquet")]
            ),
            "custval features (whole company, 6 sources)": measure(
                [*exe, "features", "-c", str(data / "custval.toml"), "-o", str(tmp / "all.parquet")]
            ),
        }
        compare(tmp / "custval.parquet", tmp / "sql.parquet")
    base = runs["hand-written DuckDB SQL (RFM)"]["wall_s"]
    print(
        f"\n{args.customers:,} customers, {tx_rows:,} transaction rows (Parquet), "
        f"{os.cpu_count()} cores"
    )
    print(f"{'contender':<48} {'wall s':>8} {'peak MiB':>9} {'x SQL':>6}")
    for name, r in runs.items():
        print(f"{name:<48} {r['wall_s']:>8.2f} {r['peak_mib']:>9.0f} {r['wall_s'] / base:>6.2f}")
    compared = runs["custval features --groups rfm (the same RFM)"]
    ratio = compared["wall_s"] / base
    peak = max(r["peak_mib"] for r in runs.values())
    ok = ratio <= RATIO_TARGET and peak < MEMORY_TARGET_MIB
    print(
        f"\nratio custval / SQL = {ratio:.2f} (target <= {RATIO_TARGET}); peak memory "
        f"{peak:.0f} MiB (target < {MEMORY_TARGET_MIB}); RFM columns agree: yes"
    )
    print("targets met" if ok else "TARGETS MISSED")
    print(json.dumps({"customers": args.customers, "transactions": tx_rows, "runs": runs}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
