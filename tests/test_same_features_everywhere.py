"""The same company read from CSV, Parquet, JSON lines, DuckDB, SQLite, PostgreSQL and an HTTP
API gives the same feature table, value for value."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.factories import TABLES, HttpServer, feature_rows, project_toml, rows, write_csv_company


def as_arrow(name: str) -> pa.Table:
    header, *body = rows(name)
    # raw exports keep text, as a CSV would; blanks are nulls as in a database
    cols = {h: [r[i] if r[i] != "" else None for r in body] for i, h in enumerate(header)}
    return pa.table(cols, schema=pa.schema([(h, pa.string()) for h in header]))


@pytest.fixture
def baseline(hand_made_features: tuple[list[dict], list]) -> list[dict]:
    """The features of the company written as CSV files: what every other form must give."""
    return hand_made_features[0]


def write_config(folder: Path, uris: dict[str, str], extra: dict[str, str] | None = None) -> Path:
    config = folder / "custval.toml"
    config.write_text(project_toml(uris, extra))
    return config


def typed_transactions() -> pa.Table:
    """The transactions as a database would hold them: timestamps and numbers, not text."""
    _header, *body = rows("transactions")
    formats = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M", "%d.%m.%Y %H:%M")

    def when(text: str) -> datetime:
        for fmt in formats:
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                pass
        raise AssertionError(text)

    return pa.table(
        {
            "order_id": [r[0] for r in body],
            "account_id": [r[1] for r in body],
            "ts": pa.array([when(r[2]) for r in body], pa.timestamp("us")),
            "amount": pa.array([float(r[3].replace(",", "")) for r in body], pa.float64()),
            "category": [r[4] or None for r in body],
            "channel": [r[5] or None for r in body],
        }
    )


def test_typed_columns(tmp_path: Path, baseline: list[dict], pg_url: str, pg_schema: str) -> None:
    """Timestamps and numbers typed in Parquet, DuckDB and PostgreSQL give the same features."""
    typed = typed_transactions()
    uris = {name: f"{name}.csv" for name in TABLES}
    write_csv_company(tmp_path)
    pq.write_table(typed, tmp_path / "tx.parquet")
    config = write_config(tmp_path, uris | {"transactions": "tx.parquet"})
    assert feature_rows(config)[0] == baseline

    con = duckdb.connect(str(tmp_path / "tx.duckdb"))
    con.execute("CREATE TABLE tx AS SELECT * FROM typed")
    con.close()
    config = write_config(
        tmp_path, uris | {"transactions": "duckdb://tx.duckdb"}, {"transactions": 'table = "tx"'}
    )
    assert feature_rows(config)[0] == baseline

    with psycopg.connect(pg_url, autocommit=True) as pg:
        pg.execute(
            f"CREATE TABLE {pg_schema}.tx (order_id TEXT, account_id TEXT, ts TIMESTAMP, "
            "amount NUMERIC(12, 2), category TEXT, channel TEXT)"
        )
        with pg.cursor().copy(f"COPY {pg_schema}.tx FROM STDIN") as copy:
            for rec in typed.to_pylist():
                copy.write_row(list(rec.values()))
    config = write_config(
        tmp_path,
        uris | {"transactions": pg_url},
        {"transactions": f'table = "{pg_schema}.tx"'},
    )
    assert feature_rows(config)[0] == baseline


@pytest.mark.parametrize("form", ["parquet", "jsonl"])
def test_files(tmp_path: Path, baseline: list[dict], form: str) -> None:
    for name in TABLES:
        if form == "parquet":
            pq.write_table(as_arrow(name), tmp_path / f"{name}.parquet")
        else:
            with (tmp_path / f"{name}.jsonl").open("w") as fh:
                for rec in as_arrow(name).to_pylist():
                    fh.write(json.dumps(rec) + "\n")
    config = write_config(tmp_path, {name: f"{name}.{form}" for name in TABLES})
    assert feature_rows(config)[0] == baseline


def test_duckdb_file(tmp_path: Path, baseline: list[dict]) -> None:
    con = duckdb.connect(str(tmp_path / "company.duckdb"))
    for name in TABLES:
        data = as_arrow(name)  # noqa: F841 - read by DuckDB's replacement scan
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM data")
    con.close()
    uris = dict.fromkeys(TABLES, "duckdb://company.duckdb")
    config = write_config(tmp_path, uris, {n: f'table = "{n}"' for n in TABLES})
    assert feature_rows(config)[0] == baseline


def test_sqlite_file(tmp_path: Path, baseline: list[dict]) -> None:
    con = sqlite3.connect(tmp_path / "company.sqlite")
    for name in TABLES:
        header, *body = rows(name)
        con.execute(f"CREATE TABLE {name} ({', '.join(f'{h} TEXT' for h in header)})")
        con.executemany(
            f"INSERT INTO {name} VALUES ({', '.join('?' * len(header))})",
            [[v if v != "" else None for v in r] for r in body],
        )
    con.commit()
    con.close()
    uris = dict.fromkeys(TABLES, "sqlite://company.sqlite")
    # a query instead of a table, for one source
    extra = {n: f'table = "{n}"' for n in TABLES}
    extra["transactions"] = 'query = "SELECT * FROM transactions WHERE amount IS NOT NULL"'
    config = write_config(tmp_path, uris, extra)
    assert feature_rows(config)[0] == baseline


@pytest.fixture
def pg_company(pg_url: str, pg_schema: str) -> str:
    """The company's tables, as text, in a schema of their own."""
    with psycopg.connect(pg_url, autocommit=True) as con:
        for name in TABLES:
            header, *body = rows(name)
            con.execute(
                f"CREATE TABLE {pg_schema}.{name} ({', '.join(f'{h} TEXT' for h in header)})"
            )
            with con.cursor().copy(f"COPY {pg_schema}.{name} FROM STDIN") as copy:
                for r in body:
                    copy.write_row([v if v != "" else None for v in r])
    return pg_schema


def test_postgresql(tmp_path: Path, baseline: list[dict], pg_url: str, pg_company: str) -> None:
    uris = dict.fromkeys(TABLES, pg_url)
    extra = {n: f'table = "{pg_company}.{n}"' for n in TABLES}
    config = write_config(tmp_path, uris, extra)
    assert feature_rows(config)[0] == baseline


def test_http_api(tmp_path: Path, baseline: list[dict], http_server: HttpServer) -> None:
    uris = {}
    for name in TABLES:
        records = as_arrow(name).to_pylist()

        def pages(query: dict[str, str], _n: int, records: list = records) -> tuple:
            page, size = int(query["page"]), int(query["page_size"])
            return 200, {"data": records[(page - 1) * size : page * size]}, {}

        uris[name] = http_server.route(f"/api/{name}", pages)
    extra = dict.fromkeys(TABLES, "[sources.{name}.http]\npage_size = 2")
    extra = {n: e.format(name=n) for n, e in extra.items()}
    config = write_config(tmp_path, uris, extra)
    assert feature_rows(config)[0] == baseline
    # 3 or 4 records a table, two a page: every table took more than one page
    assert all(http_server.hits[f"/api/{n}"] >= 2 for n in TABLES)
