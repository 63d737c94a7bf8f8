"""Features computed in PostgreSQL (``--engine postgres``) against the same on DuckDB.

Data: the generated company of ``bench/score.py`` (``--customers``, default 100,000, Parquet
under ``bench/.data/score``). Timed, one after the other: reading, checking, cleaning, linking
and the features on DuckDB; the same with PostgreSQL as the engine, first with the Parquet
files read here and copied in (``COPY``), then with the same rows already in the database as
tables (read in place; loading them is not timed). Each PostgreSQL feature table is compared
with DuckDB's, value by value.

For information (issue 22 sets no speed target for PostgreSQL): the per-customer costs
docs/scale.md quotes. Exits 1 when the tables differ. Run: ``.venv/bin/python
bench/pg_engine.py [--customers N] [--pg URL]`` (default URL: CUSTVAL_TEST_PG_URL).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from score import company  # noqa: E402


def timed_features(project) -> tuple[float, pa.Table]:
    from custval import flows

    t0 = time.perf_counter()
    table = flows.features(project, flows.prepare(project)).to_pyarrow()
    return time.perf_counter() - t0, table


def largest_difference(left: pa.Table, right: pa.Table) -> float:
    """The largest relative difference between two feature tables (inf when their customers,
    columns or text differ)."""
    if left.column_names != right.column_names or left.num_rows != right.num_rows:
        return math.inf
    worst = 0.0
    for name in left.column_names:
        a, b = left[name].to_pylist(), right[name].to_pylist()
        if not pa.types.is_floating(left.schema.field(name).type):
            if a != b:
                return math.inf
            continue
        for x, y in zip(a, b, strict=True):
            if x is None or y is None or math.isnan(x) or math.isnan(y):
                if (x is None) != (y is None) or (x is not None and math.isnan(x) != math.isnan(y)):
                    return math.inf
                continue
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-12))
    return worst


def load_tables(url: str, schema: str, project, folder: Path) -> None:
    """The company's sources as tables of ``schema`` (how its own database would hold them)."""
    import ibis
    import psycopg

    con = ibis.connect(url)
    try:
        con.raw_sql(f'CREATE SCHEMA "{schema}"')
        for name, spec in project.sources.items():
            data = pq.read_table(folder / spec.uri)
            con.create_table(name, schema=ibis.Schema.from_pyarrow(data.schema), database=schema)
            buf = io.BytesIO()
            pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False))
            statement = f'COPY "{schema}"."{name}" FROM STDIN WITH (FORMAT csv)'
            with psycopg.connect(url) as pg, pg.cursor() as cur, cur.copy(statement) as copy:
                copy.write(buf.getvalue())
    finally:
        con.disconnect()


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--pg", default=os.environ.get("CUSTVAL_TEST_PG_URL"))
    args = parser.parse_args()
    if not args.pg:
        print("no PostgreSQL: give --pg URL or set CUSTVAL_TEST_PG_URL; skipped")
        return 0
    from custval.config import load_project, with_engine

    config, _ = company(args.customers)
    n = args.customers
    duck_s, duck = timed_features(load_project(config))
    copied = with_engine(load_project(config), "postgres")
    copied.engine.url = args.pg
    copy_s, from_files = timed_features(copied)

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        t0 = time.perf_counter()
        load_tables(args.pg, schema, copied, config.parent)
        load_s = time.perf_counter() - t0
        for name, spec in copied.sources.items():
            spec.uri, spec.table = args.pg, f"{schema}.{name}"
        place_s, in_place = timed_features(copied)
    finally:
        drop_schema(args.pg, schema)

    print(f"{n:,} customers, {duck.num_columns - 1} features; 2 cores")
    rows = (
        ("DuckDB (this process; Parquet read where it lies)", duck_s, duck),
        ("PostgreSQL, the files read here and copied in", copy_s, from_files),
        (f"PostgreSQL, the tables read in place (loaded in {load_s:.0f} s, not timed)", place_s,
         in_place),
    )  # fmt: skip
    same = True
    for label, seconds, table in rows:
        diff = largest_difference(duck, table)
        same &= diff <= 1e-9
        print(
            f"{label}: {seconds:.1f} s = {seconds / n * 1e6:.0f} µs a customer; "
            f"{seconds / duck_s:.1f}x DuckDB; largest relative difference {diff:.1e}"
        )
    print(f"features equal DuckDB's (1e-9): {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
