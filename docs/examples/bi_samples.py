"""The sample questions of docs/bi.md, asked of the demo's store.

    python docs/examples/bi_samples.py at-risk          # the answer, as a table
    python docs/examples/bi_samples.py --sql at-risk    # the question's SQL

`make docs` runs both for each question, so the SQL and the answers printed in docs/bi.md
come from here and cannot drift apart. ``--demo DIR`` names the folder `custval demo --out`
wrote (default demo-output); the store is read read-only, and relative files in the SQL
(features.parquet) are read from that folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import duckdb

QUESTIONS = {
    "at-risk": """\
SELECT customer_id, ROUND(value_probability, 2) AS probability, ROUND(p_alive, 2) AS p_alive,
       ROUND(clv_expected) AS clv
FROM v1_latest_predictions
WHERE value_class = 1 AND p_alive < 0.5
ORDER BY clv_expected DESC
LIMIT 5;""",
    "reasons": """\
SELECT feature, direction, SUM(as_first_reason) AS first_reason, SUM(customers) AS among_top
FROM v1_reason_summary
WHERE is_latest AND value_class = 1
GROUP BY feature, direction
ORDER BY first_reason DESC
LIMIT 5;""",
    "classes": """\
SELECT value_class, customers, ROUND(mean_probability, 3) AS mean_probability,
       ROUND(clv_total) AS clv_total, ROUND(mean_p_alive, 3) AS mean_p_alive
FROM v1_customer_value_summary
WHERE is_latest
ORDER BY value_class;""",
    "segments": """\
SELECT segment, customers, high_value_customers, ROUND(clv_total) AS clv_total
FROM v1_segment_value_summary
WHERE is_latest
ORDER BY clv_total DESC;""",
    "regions": """\
SELECT f.region, COUNT(*) AS customers, SUM(p.value_class) AS high_value,
       ROUND(SUM(p.clv_expected)) AS clv_next_year
FROM v1_latest_predictions p
JOIN read_parquet('features.parquet') f ON f.customer_id = p.customer_id  -- or your CRM table
GROUP BY f.region
ORDER BY clv_next_year DESC;""",
}


def store_of(demo: Path) -> Path:
    """The demo's store: beside its data folder, or in it."""
    for path in (demo / "custval.duckdb", demo / "data" / "custval.duckdb"):
        if path.exists():
            return path
    raise SystemExit(f"no store in {demo}: run `make demo` first")


def answer(demo: Path, question: str) -> str:
    store = store_of(demo).resolve()
    os.chdir(demo)
    with duckdb.connect(str(store), read_only=True) as con:
        frame = con.sql(QUESTIONS[question]).df().convert_dtypes()
    return frame.to_string(index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", choices=sorted(QUESTIONS))
    parser.add_argument("--sql", action="store_true", help="print the question's SQL")
    parser.add_argument("--demo", type=Path, default=Path("demo-output"))
    args = parser.parse_args()
    print(QUESTIONS[args.question] if args.sql else answer(args.demo, args.question))


if __name__ == "__main__":
    main()
