"""custval.data.sources against real files, databases and HTTP servers (no mocks).

One small data set of 50 transactions is written as CSV, Parquet, JSON lines, a glob of two CSV
files, a DuckDB file, a SQLite file, a PostgreSQL table and a paged HTTP API; every form must
open and stage to the same rows.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import ibis
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custval.config import HttpOptions, SourceSpec, mask_url
from custval.data.sources import fetch_http, open_source, stage, working_connection
from custval.errors import SourceError
from tests.factories import HttpServer

COLUMNS = ["tx_id", "customer_id", "amount", "quantity", "price", "ts", "channel"]
N_ROWS = 50


def _rows() -> list[dict[str, Any]]:
    start = datetime(2024, 1, 5, 10, 0, 0)
    rows = []
    for i in range(1, N_ROWS + 1):
        rows.append(
            {
                "tx_id": i,
                "customer_id": f"C{i % 7:03d}",
                # Raw text as exports write it: a thousands separator must survive as written.
                "amount": "1,234.50" if i == 3 else f"{i * 3 + 0.25:.2f}",
                "quantity": i % 4 + 1,
                "price": i + 0.99,
                "ts": start + timedelta(days=i, hours=i % 5, minutes=i),
                "channel": None if i % 10 == 1 else ("web" if i % 2 else "store"),
            }
        )
    return rows


ROWS = _rows()


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


EXPECTED = sorted(
    ([_as_text(r[c]) for c in COLUMNS] for r in ROWS), key=lambda row: int(row[0] or 0)
)


def _json_record(row: dict[str, Any]) -> dict[str, Any]:
    # Keys whose value is missing are left out, as many APIs do: the reader must take the union.
    return {k: _as_text(v) if k == "ts" else v for k, v in row.items() if v is not None}


def _arrow() -> pa.Table:
    return pa.table(
        {
            "tx_id": pa.array([r["tx_id"] for r in ROWS], pa.int64()),
            "customer_id": [r["customer_id"] for r in ROWS],
            "amount": [r["amount"] for r in ROWS],
            "quantity": pa.array([r["quantity"] for r in ROWS], pa.int64()),
            "price": pa.array([r["price"] for r in ROWS], pa.float64()),
            "ts": pa.array([r["ts"] for r in ROWS], pa.timestamp("us")),
            "channel": pa.array([r["channel"] for r in ROWS], pa.string()),
        }
    )


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else _as_text(row[c]) for c in columns])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data set in every file and embedded-database form."""
    root = tmp_path_factory.mktemp("sources")
    _write_csv(root / "tx.csv", ROWS)
    pq.write_table(_arrow(), root / "tx.parquet")
    with (root / "tx.jsonl").open("w", encoding="utf-8") as fh:
        for row in ROWS:
            fh.write(json.dumps(_json_record(row)) + "\n")
    (root / "parts").mkdir()
    _write_csv(root / "parts" / "tx_1.csv", ROWS[:25])
    # The second export lists its columns in another order; they must still line up by name.
    _write_csv(root / "parts" / "tx_2.csv", ROWS[25:], list(reversed(COLUMNS)))

    con = duckdb.connect(str(root / "tx.duckdb"))
    arrow = _arrow()
    con.register("arrow_rows", arrow)
    con.execute("CREATE TABLE tx AS SELECT * FROM arrow_rows")
    con.execute("CREATE SCHEMA sales; CREATE TABLE sales.tx AS SELECT * FROM arrow_rows")
    con.execute("CREATE TABLE customers AS SELECT DISTINCT customer_id FROM arrow_rows")
    con.close()

    lite = sqlite3.connect(root / "tx.sqlite")
    lite.execute(
        "CREATE TABLE tx (tx_id INTEGER, customer_id TEXT, amount TEXT, quantity INTEGER, "
        "price REAL, ts TIMESTAMP, channel TEXT)"
    )
    lite.executemany(
        "INSERT INTO tx VALUES (?, ?, ?, ?, ?, ?, ?)",
        [[_as_text(r[c]) if c == "ts" else r[c] for c in COLUMNS] for r in ROWS],
    )
    lite.commit()
    lite.close()
    return root


@pytest.fixture
def tx_schema(pg_url: str, pg_schema: str) -> str:
    """A schema of its own in the test PostgreSQL database, with the data set as ``tx``."""
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(
            f'CREATE TABLE "{pg_schema}".tx (tx_id bigint, customer_id text, amount text, '
            "quantity bigint, price double precision, ts timestamp, channel text)"
        )
        with con.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{pg_schema}".tx VALUES (%s, %s, %s, %s, %s, %s, %s)',
                [[r[c] for c in COLUMNS] for r in ROWS],
            )
    return pg_schema


def _spec(uri: str, **kwargs: Any) -> SourceSpec:
    return SourceSpec(name=kwargs.pop("name", "tx_src"), kind="transactions", uri=uri, **kwargs)


def _text_rows(table: ibis.Table) -> list[list[str | None]]:
    """Rows as text, sorted by tx_id: CSV gives text, so every form is compared as text."""
    as_text = table.select(**{c: table[c].cast("string") for c in COLUMNS})
    rows = as_text.to_pyarrow().to_pylist()
    return sorted(([r[c] for c in COLUMNS] for r in rows), key=lambda row: int(row[0] or 0))


def _serve_pages(server: HttpServer) -> str:
    def pages(query: dict[str, str], _n: int) -> tuple[int, Any, dict[str, str]]:
        page, size = int(query["page"]), int(query["page_size"])
        chunk = ROWS[(page - 1) * size : page * size]
        return 200, {"data": [_json_record(r) for r in chunk], "page": page}, {}

    return server.route("/v1/tx", pages)


def _serve_cursor(server: HttpServer, size: int = 15) -> str:
    def cursor(query: dict[str, str], _n: int) -> tuple[int, Any, dict[str, str]]:
        offset = int(query.get("after", "0"))
        chunk = ROWS[offset : offset + size]
        nxt = str(offset + size) if offset + size < len(ROWS) else None
        body = {"result": {"items": [_json_record(r) for r in chunk]}, "paging": {"next": nxt}}
        return 200, body, {}

    return server.route("/v2/tx", cursor)


# --------------------------------------------------------------------------------------------
# every form gives the same rows
# --------------------------------------------------------------------------------------------

FILE_AND_EMBEDDED = {
    "csv": lambda d: _spec(str(d / "tx.csv")),
    "parquet": lambda d: _spec(str(d / "tx.parquet")),
    "jsonl": lambda d: _spec(str(d / "tx.jsonl")),
    "csv-glob": lambda d: _spec(str(d / "parts" / "tx_*.csv")),
    "csv-folder": lambda d: _spec(str(d / "parts")),
    "duckdb": lambda d: _spec(f"duckdb://{d / 'tx.duckdb'}", table="tx"),
    "duckdb-schema": lambda d: _spec(f"duckdb://{d / 'tx.duckdb'}", table="sales.tx"),
    "sqlite": lambda d: _spec(f"sqlite://{d / 'tx.sqlite'}", table="tx"),
}


@pytest.mark.parametrize("form", sorted(FILE_AND_EMBEDDED))
def test_every_file_and_embedded_form_gives_the_same_rows(data_dir: Path, form: str) -> None:
    con = working_connection()
    table = open_source(FILE_AND_EMBEDDED[form](data_dir), con)
    staged = stage(table, con, f"staged_{form.replace('-', '_')}")
    assert staged.get_backend() is con
    assert _text_rows(staged) == EXPECTED


def test_http_page_and_cursor_pagination_give_the_same_rows(http_server: HttpServer) -> None:
    con = working_connection()
    page_url = _serve_pages(http_server)
    by_page = _spec(page_url, name="api_pages", http=HttpOptions(page_size=20))
    assert _text_rows(stage(open_source(by_page, con), con, "p")) == EXPECTED
    # 20 + 20 + 10 records: the short third page ends the paging.
    assert http_server.hits["/v1/tx"] == 3

    cursor_url = _serve_cursor(http_server)
    by_cursor = _spec(
        cursor_url,
        name="api_cursor",
        http=HttpOptions(
            pagination="cursor",
            records_field="result.items",
            cursor_param="after",
            next_cursor_field="paging.next",
        ),
    )
    table = open_source(by_cursor, con)
    assert table.get_name() == "src_api_cursor"
    assert _text_rows(stage(table, con, "c")) == EXPECTED
    assert http_server.hits["/v2/tx"] == 4  # 15 + 15 + 15 + 5


def test_http_stops_on_an_empty_page_and_sends_headers_and_params(
    http_server: HttpServer,
) -> None:
    url = _serve_pages(http_server)
    options = HttpOptions(
        page_size=25, headers={"Authorization": "Bearer t0k"}, params={"region": "eu"}
    )
    records = fetch_http(_spec(url, http=options))
    assert records.num_rows == N_ROWS
    # The first record has no "channel" key; the column still exists (union of keys).
    assert set(records.column_names) == set(COLUMNS)
    assert records.column("price").type == pa.float64()
    assert http_server.hits["/v1/tx"] == 3  # 25, 25, then an empty page
    _, query, headers = http_server.requests[0]
    assert query == {"region": "eu", "page": "1", "page_size": "25"}
    assert headers["Authorization"] == "Bearer t0k"


@pytest.mark.postgres
def test_postgresql_gives_the_same_rows(pg_url: str, tx_schema: str) -> None:
    con = working_connection()
    table = open_source(_spec(pg_url, table=f"{tx_schema}.tx"), con)
    assert table.get_backend().name == "postgres"
    staged = stage(table, con, "staged_pg")
    assert staged.get_backend() is con
    assert _text_rows(staged) == EXPECTED


# --------------------------------------------------------------------------------------------
# files: text, types, names
# --------------------------------------------------------------------------------------------


def test_csv_columns_are_raw_text(data_dir: Path, tmp_path: Path) -> None:
    table = open_source(_spec(str(data_dir / "tx.csv")))
    assert all(dtype.is_string() for dtype in table.schema().types)
    amounts = table.amount.to_pyarrow().to_pylist()
    assert "1,234.50" in amounts

    # What DuckDB would sniff as numbers and dates must stay as written.
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("id\tday\n00123\t2024-01-05\n00124\t05/01/2024\n00125\t20240105\n")
    rows = open_source(_spec(str(mixed), name="mixed")).to_pyarrow().to_pylist()
    assert rows == [
        {"id": "00123", "day": "2024-01-05"},
        {"id": "00124", "day": "05/01/2024"},
        {"id": "00125", "day": "20240105"},
    ]


def test_parquet_and_json_keep_their_types(data_dir: Path) -> None:
    schema = open_source(_spec(str(data_dir / "tx.parquet"))).schema()
    assert schema["price"].is_float64() and schema["ts"].is_timestamp()
    schema = open_source(_spec(str(data_dir / "tx.jsonl"))).schema()
    assert schema["tx_id"].is_integer() and schema["ts"].is_timestamp()


def test_reopening_a_source_replaces_its_table(tmp_path: Path, http_server: HttpServer) -> None:
    con = working_connection()
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("x\n1\n")
    second.write_text("x\n2\n3\n")
    assert open_source(_spec(str(first), name="same"), con).count().execute() == 1
    table = open_source(_spec(str(second), name="same"), con)
    assert table.get_name() == "src_same"
    assert con.table("src_same").count().execute() == 2

    # The same name can move from an API (a table) back to a file (a view).
    url = http_server.route("/one", lambda q, n: (200, [{"x": "9"}], {}))
    api = _spec(url, name="same", http=HttpOptions(pagination="none", records_field=None))
    assert open_source(api, con).x.to_pyarrow().to_pylist() == ["9"]
    assert open_source(_spec(str(first), name="same"), con).count().execute() == 1


def test_stage_returns_a_table_already_on_the_engine(data_dir: Path) -> None:
    con = working_connection()
    table = open_source(_spec(str(data_dir / "tx.csv")), con)
    assert stage(table, con, "again") is table


def test_stage_copies_onto_a_non_duckdb_engine(data_dir: Path) -> None:
    target = ibis.sqlite.connect()
    table = open_source(_spec(str(data_dir / "tx.parquet")))
    staged = stage(table, target, "tx_copy")
    assert staged.get_backend() is target
    assert staged.count().execute() == N_ROWS
    # Files opened for another engine are read by DuckDB and copied onto it.
    on_sqlite = open_source(_spec(str(data_dir / "tx.csv")), target)
    assert on_sqlite.get_backend() is target
    assert _text_rows(stage(on_sqlite, working_connection(), "back")) == EXPECTED


# --------------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------------

QUERY = "SELECT * FROM {table} WHERE quantity >= 3 ORDER BY tx_id;"
FILTERED = [row for row in EXPECTED if int(row[3] or 0) >= 3]


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_query_on_an_embedded_database(data_dir: Path, kind: str) -> None:
    path = data_dir / ("tx.duckdb" if kind == "duckdb" else "tx.sqlite")
    table = open_source(_spec(f"{kind}://{path}", query=QUERY.format(table="tx")))
    con = working_connection()
    assert _text_rows(stage(table, con, "q")) == FILTERED


@pytest.mark.postgres
def test_query_on_postgresql(pg_url: str, tx_schema: str) -> None:
    table = open_source(_spec(pg_url, query=QUERY.format(table=f'"{tx_schema}".tx')))
    con = working_connection()
    assert _text_rows(stage(table, con, "q")) == FILTERED


# --------------------------------------------------------------------------------------------
# HTTP retries
# --------------------------------------------------------------------------------------------

FAST = {"backoff_s": 0.01, "timeout_s": 2.0}


def _one_shot(**kwargs: Any) -> HttpOptions:
    return HttpOptions(**{"pagination": "none", "records_field": "data", **FAST, **kwargs})


def test_http_429_with_retry_after_then_success(http_server: HttpServer) -> None:
    def route(_q: dict[str, str], n: int) -> tuple[int, Any, dict[str, str]]:
        if n == 1:
            return 429, {"error": "slow down"}, {"Retry-After": "0"}
        return 200, {"data": [{"a": 1}]}, {}

    url = http_server.route("/busy", route)
    records = fetch_http(_spec(url, http=_one_shot(backoff_s=5.0)))  # Retry-After wins
    assert records.to_pylist() == [{"a": 1}]
    assert http_server.hits["/busy"] == 2


def test_http_500_twice_then_success(http_server: HttpServer) -> None:
    def route(_q: dict[str, str], n: int) -> tuple[int, Any, dict[str, str]]:
        return (500, b"oops", {}) if n <= 2 else (200, {"data": [{"a": 1}, {"a": 2}]}, {})

    url = http_server.route("/flaky", route)
    assert fetch_http(_spec(url, http=_one_shot(max_retries=2))).num_rows == 2
    assert http_server.hits["/flaky"] == 3


def test_http_500_then_hanging_gives_up_with_a_timeout(http_server: HttpServer) -> None:
    def route(_q: dict[str, str], n: int) -> tuple[int, Any, dict[str, str]]:
        if n == 1:
            return 500, b"oops", {}
        http_server.release.wait(5)
        return 200, {"data": []}, {}

    url = http_server.route("/hangs", route)
    options = HttpOptions(
        pagination="page", page_size=10, timeout_s=0.3, max_retries=2, backoff_s=0.01
    )
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        fetch_http(_spec(url, name="slow_api", http=options))
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "slow_api" in message
    assert "timed out after 0.3 s" in message
    assert "3 attempts" in message and "page 1" in message
    assert http_server.hits["/hangs"] == 3


def test_http_404_fails_at_once(http_server: HttpServer) -> None:
    url = http_server.route("/gone", lambda q, n: (404, b"no such collection", {}))
    with pytest.raises(SourceError) as caught:
        fetch_http(_spec(url, name="gone_api", http=_one_shot(max_retries=4)))
    message = str(caught.value)
    assert "gone_api" in message and "404" in message and "no such collection" in message
    assert http_server.hits["/gone"] == 1


def test_http_errors_hide_secret_params(http_server: HttpServer) -> None:
    url = http_server.route("/down", lambda q, n: (503, b"maintenance", {}))
    spec = _spec(
        url + "?api_key=SECRET1&region=eu",
        name="keyed",
        http=_one_shot(max_retries=1, params={"access_token": "SECRET2"}),
    )
    with pytest.raises(SourceError) as caught:
        fetch_http(spec)
    message = str(caught.value)
    assert "SECRET" not in message
    assert "region=eu" in message and "503" in message and "2 attempts" in message
    _, query, _ = http_server.requests[0]
    assert query["api_key"] == "SECRET1" and query["access_token"] == "SECRET2"


def test_http_unreachable_server_is_retried_then_reported() -> None:
    spec = _spec("http://127.0.0.1:1/api", name="nowhere", http=_one_shot(max_retries=1))
    with pytest.raises(SourceError, match=r"nowhere.*connection failed.*2 attempts"):
        fetch_http(spec)


def test_http_bad_bodies(http_server: HttpServer) -> None:
    html = http_server.route("/html", lambda q, n: (200, b"<html>hi</html>", {}))
    with pytest.raises(SourceError, match=r"'html_api'.*/html.*not JSON"):
        fetch_http(_spec(html, name="html_api", http=_one_shot()))

    obj = http_server.route("/obj", lambda q, n: (200, {"data": {"a": 1}}, {}))
    with pytest.raises(SourceError, match=r"'obj_api'.*'data'.*dict, not a list"):
        fetch_http(_spec(obj, name="obj_api", http=_one_shot()))

    with pytest.raises(SourceError, match=r"no field 'rows'"):
        fetch_http(_spec(obj, name="obj_api", http=_one_shot(records_field="rows")))


def test_http_api_ignoring_the_page_parameter_is_caught(http_server: HttpServer) -> None:
    url = http_server.route("/same", lambda q, n: (200, {"data": [{"a": 1}, {"a": 2}]}, {}))
    with pytest.raises(SourceError, match="ignore 'page'"):
        fetch_http(_spec(url, http=HttpOptions(page_size=2, **FAST)))
    assert http_server.hits["/same"] == 2


def test_http_source_with_no_records(http_server: HttpServer) -> None:
    url = http_server.route("/empty", lambda q, n: (200, {"data": []}, {}))
    with pytest.raises(SourceError, match=r"'void'.*returned no records"):
        open_source(_spec(url, name="void", http=HttpOptions(**FAST)))


def test_http_mixed_types_become_text(http_server: HttpServer) -> None:
    records = [{"id": 1, "code": 7}, {"id": 2, "code": "A7"}, {"id": 3, "nothing": None}]
    url = http_server.route("/mixed", lambda q, n: (200, records, {}))
    table = fetch_http(_spec(url, http=HttpOptions(pagination="none", records_field=None)))
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("code").to_pylist() == ["7", "A7", None]
    assert table.column("nothing").type == pa.string()


# --------------------------------------------------------------------------------------------
# errors users cause
# --------------------------------------------------------------------------------------------


def _raises(spec: SourceSpec, *fragments: str) -> str:
    with pytest.raises(SourceError) as caught:
        open_source(spec)
    message = str(caught.value)
    assert f"source '{spec.name}'" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    _raises(_spec(str(tmp_path / "nope.csv"), name="orders"), str(tmp_path / "nope.csv"))


def test_relative_missing_file_names_the_resolved_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _raises(_spec("data/nope.parquet", name="orders"), str(tmp_path / "data" / "nope.parquet"))


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    _raises(_spec(str(tmp_path / "empty.csv"), name="e"), "empty (0 bytes)")
    (tmp_path / "empty.parquet").write_bytes(b"")
    _raises(_spec(str(tmp_path / "empty.parquet"), name="e"), "empty (0 bytes)")
    (tmp_path / "header.csv").write_text("tx_id,amount\n")
    _raises(_spec(str(tmp_path / "header.csv"), name="h"), "has no rows")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    _raises(_spec(str(tmp_path / "blank.jsonl"), name="j"), "has no rows")
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), tmp_path / "none.parquet")
    _raises(_spec(str(tmp_path / "none.parquet"), name="p"), "has no rows")


def test_glob_skips_empty_files_but_not_all(tmp_path: Path) -> None:
    (tmp_path / "d1.csv").write_text("a\n1\n")
    (tmp_path / "d2.csv").write_bytes(b"")
    assert open_source(_spec(str(tmp_path / "d*.csv"))).count().execute() == 1
    (tmp_path / "e1.csv").write_bytes(b"")
    (tmp_path / "e2.csv").write_bytes(b"")
    _raises(_spec(str(tmp_path / "e*.csv"), name="g"), "all 2 files", "empty")
    (tmp_path / "h1.csv").write_text("a\n")
    (tmp_path / "h2.csv").write_text("a\n")
    _raises(_spec(str(tmp_path / "h*.csv"), name="g"), "2 files", "have no rows")


def test_glob_matching_nothing(tmp_path: Path) -> None:
    pattern = str(tmp_path / "tx_*.csv")
    _raises(_spec(pattern, name="daily"), "no file matches", pattern)


def test_corrupt_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet at all")
    _raises(_spec(str(tmp_path / "bad.parquet"), name="pq"), "cannot read", "as Parquet")
    (tmp_path / "bad.jsonl").write_text('{"a": 1,\n')
    _raises(_spec(str(tmp_path / "bad.jsonl"), name="js"), "as JSON")
    (tmp_path / "latin1.csv").write_bytes("id,name\n1,J\xe9r\xf4me\n".encode("latin-1"))
    # declared UTF-8, the file is refused (undeclared, it is read as cp1252: see
    # test_files_as_people_have_them.py)
    utf8 = _spec(str(tmp_path / "latin1.csv"), name="l1", csv={"encoding": "utf-8"})
    message = _raises(utf8, "as CSV", "utf-8")
    assert "J" not in message.split("as CSV", 1)[1]  # no row of the user's data
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    _raises(_spec(str(tmp_path / "data.xlsx"), name="x"), "as an Excel workbook")
    (tmp_path / "data.ods").write_bytes(b"PK")
    _raises(_spec(str(tmp_path / "data.ods"), name="x"), "cannot tell the format")


def test_database_without_table_or_query(data_dir: Path) -> None:
    _raises(_spec(f"sqlite://{data_dir / 'tx.sqlite'}", name="lite"), "neither a table nor")


def test_missing_database_files_are_not_created(tmp_path: Path) -> None:
    for kind in ("sqlite", "duckdb"):
        path = tmp_path / f"nope.{kind}"
        _raises(_spec(f"{kind}://{path}", table="tx", name=kind), str(path), "does not exist")
        assert not path.exists()


def test_missing_table_lists_the_available_ones(data_dir: Path) -> None:
    duck = _spec(f"duckdb://{data_dir / 'tx.duckdb'}", table="orders", name="duck")
    # Tables in other schemas are listed too, as the user would name them.
    _raises(duck, "no table 'orders'", "available tables: customers, tx, sales.tx")
    lite = _spec(f"sqlite://{data_dir / 'tx.sqlite'}", table="orders", name="lite")
    _raises(lite, "no table 'orders'", "available tables: tx")


def test_table_names_fold_case(data_dir: Path) -> None:
    table = open_source(_spec(f"sqlite://{data_dir / 'tx.sqlite'}", table="TX"))
    assert table.count().execute() == N_ROWS


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_bad_sql(data_dir: Path, kind: str) -> None:
    path = data_dir / ("tx.duckdb" if kind == "duckdb" else "tx.sqlite")
    spec = _spec(f"{kind}://{path}", query="SELECT no_such_column FROM tx", name="q")
    _raises(spec, "query", "failed", "no_such_column")


def test_duckdb_file_open_for_writing_in_this_process_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    writer = duckdb.connect(str(path))
    writer.execute("CREATE TABLE t AS SELECT 1 AS x")
    try:
        table = open_source(_spec(f"duckdb://{path}", table="t"))
        assert table.x.to_pyarrow().to_pylist() == [1]
    finally:
        writer.close()


def test_duckdb_file_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
            "c.execute('CREATE TABLE t AS SELECT 1 AS x'); print('ready', flush=True); "
            "sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        _raises(_spec(f"duckdb://{path}", table="t", name="busy"), "locked by another process")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


def test_table_or_query_on_a_file_is_refused(data_dir: Path) -> None:
    _raises(_spec(str(data_dir / "tx.csv"), table="tx", name="f"), "apply to database sources")


def test_unreachable_postgresql_hides_the_password() -> None:
    spec = _spec("postgresql://postgres:secret@127.0.0.1:1/test", table="tx", name="warehouse")
    message = _raises(spec, "127.0.0.1:1", "database 'test'", "Connection refused")
    assert "secret" not in message


@pytest.mark.postgres
def test_postgresql_missing_table_and_bad_sql(pg_url: str, tx_schema: str) -> None:
    _raises(
        _spec(pg_url, table=f"{tx_schema}.orders", name="pg"),
        "no table",
        "orders",
        "available tables: tx",
    )
    bad = _spec(pg_url, query=f'SELECT nope FROM "{tx_schema}".tx', name="pg")
    message = _raises(bad, "query", "failed", 'column "nope" does not exist')
    assert "ibis" not in message  # no internals of how the query was wrapped


@pytest.mark.postgres
def test_postgres_scheme_alias(pg_url: str, tx_schema: str) -> None:
    url = pg_url.replace("postgresql://", "postgres://", 1)
    assert open_source(_spec(url, table=f"{tx_schema}.tx")).count().execute() == N_ROWS


def test_mask_url() -> None:
    assert mask_url("postgresql://bob:hunter2@db:5432/crm") == "postgresql://bob:***@db:5432/crm"
    assert mask_url("https://x.io/v1?api_key=k&page=2&Token=t#f") == "https://x.io/v1?page=2#f"
    assert mask_url("duckdb:///data/x.db") == "duckdb:///data/x.db"
    assert mask_url("https://x.io/a?secret_id=1") == "https://x.io/a"


def test_csv_options_for_a_whitespace_file_without_header(tmp_path: Path) -> None:
    # the layout of CDNOW's master file: space separated, no header, dates as YYYYMMDD
    path = tmp_path / "cdnow.txt"
    path.write_text("00001 19970101 1 11.77\n00002 19970112 1 12.00\n00002 19970112 5 77.00\n")
    spec = SourceSpec(
        name="cdnow",
        kind="transactions",
        uri=str(path),
        csv={"delimiter": " ", "header": False, "names": ["id", "date", "cds", "dollars"]},
    )
    rows = open_source(spec).to_pyarrow().to_pylist()
    assert rows[0] == {"id": "00001", "date": "19970101", "cds": "1", "dollars": "11.77"}
    assert len(rows) == 3


def test_csv_fields_separated_by_runs_of_blanks(tmp_path: Path) -> None:
    # CDNOW's master file as published: leading blanks, runs of spaces, Windows line ends
    (tmp_path / "a.txt").write_bytes(
        b" customer_id  date number_of_cds  dollar_value\r\n"
        b" 00001 19970101  1   11.77\r\n"
        b"\r\n"
        b" 00002\t19970112  1   12.00 \r\n"
    )
    (tmp_path / "b.txt").write_text(
        " customer_id date number_of_cds dollar_value\n 00003 19970102 2 9\n"
    )
    spec = SourceSpec(
        name="cdnow",
        kind="transactions",
        uri=str(tmp_path / "*.txt"),
        csv={"delimiter": "whitespace"},
    )
    rows = open_source(spec).to_pyarrow().to_pylist()
    assert sorted(r["customer_id"] for r in rows) == ["00001", "00002", "00003"]
    assert {
        "customer_id": "00002",
        "date": "19970112",
        "number_of_cds": "1",
        "dollar_value": "12.00",
    } in rows
    # without a header, with names
    (tmp_path / "b.txt").unlink()
    (tmp_path / "c.txt").write_text("00001 19970101 1 11.77\n  00002  19970112 5 77.00\n")
    spec = SourceSpec(
        name="cdnow",
        kind="transactions",
        uri=str(tmp_path / "c.txt"),
        csv={"delimiter": "whitespace", "header": False, "names": ["id", "date", "cds", "usd"]},
    )
    assert open_source(spec).to_pyarrow().column("usd").to_pylist() == ["11.77", "77.00"]
    # a line with a missing field is named, not read as a shifted row
    (tmp_path / "c.txt").write_text("00001 19970101 1 11.77\n00002 19970112 77.00\n")
    with pytest.raises(SourceError) as err:
        open_source(spec)
    assert "source 'cdnow'" in str(err.value)
    assert "other than the 4 fields" in str(err.value) and "'00002 19970112 77.00' (3" in str(
        err.value
    )


def test_csv_latin1_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("id,city\n1,Zürich\n".encode("latin-1"))
    spec = SourceSpec(name="l", kind="customers", uri=str(path), csv={"encoding": "latin-1"})
    assert open_source(spec).to_pyarrow().to_pylist() == [{"id": "1", "city": "Zürich"}]
