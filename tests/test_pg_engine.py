"""PostgreSQL as the engine ([engine] kind = "postgres"): the same parsing, features, contract
reports and scoring run as on DuckDB, with the sources of its own database read in place and
the others copied in; and clear errors for what only the engine can get wrong."""

from __future__ import annotations

import io
import socket
import time
from datetime import datetime
from pathlib import Path

import ibis
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from custval import flows
from custval.config import EngineOptions, load_project, with_engine
from custval.data import engine, postgres
from custval.data.contracts import Column, coerce
from custval.errors import EngineError
from tests.factories import (
    Companies,
    assert_same_rows,
    broken_company,
    contract_report,
    feature_rows,
    run,
    run_rows,
    search_path_url,
    write_csv_company,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine_url(pg_url: str, pg_schema: str) -> str:
    """The engine's address: the test database, with a schema of this test's own first on the
    search path (where the in-place tables go; working tables are temporary)."""
    return search_path_url(pg_url, pg_schema)


def on_postgres(config: Path, url: str):
    project = with_engine(load_project(config), "postgres")
    project.engine.url = url
    return project


def pg_rows(config: Path, url: str) -> list[dict]:
    project = on_postgres(config, url)
    return flows.features(project, flows.prepare(project)).to_pyarrow().to_pylist()


# --------------------------------------------------------------------------------------------
# the same parsing
# --------------------------------------------------------------------------------------------

TEXT = [
    "2024-01-05", "2024-01-05 10:11:12", "2024-01-05T10:11:12", "2024-01-05 10:11:12.250",
    "2024-01-05T10:11:12Z", "2024-01-05 10:11", "2024-02-29", "2023-02-29", "2024-02-30",
    "2024-13-01", "2024-01-05 25:00:00", "2024/01/05", "2024/1/5 10:11", "05.01.2024",
    "5.1.2024 10:11", "05/01/2024", "31/04/2024", "20240105", "2024010", "2024015",
    "2024-00-05", "00.01.2024", " 2024-01-05", "2024-01-05 ", "now", "today", "Jan 5 2024",
    "05-01-2024", "2024", "", "  ", "n/a",
    "2024-01-05 extra", "5/1/24", "99.99.9999", None,
]  # fmt: skip
NUMBERS = [
    "12", "12.50", " 7 ", "-3", "+4.5", "1,234.50", "1234,5", "1e3", "1.5E-2", ".5", "5.",
    "abc", "", "12 34", "1,23", "nan", "inf", "-Infinity", "0x10", "1e999", "--1", None,
]  # fmt: skip


def parsed(con: ibis.BaseBackend, values: list, column: Column, formats: tuple = ()) -> list:
    table = pa.table({"v": pa.array(values, pa.string())})
    name = f"parse_{column.type}"
    staged = engine.load_arrow(con, name, table) if con.name != "duckdb" else None
    t = staged if staged is not None else con.create_table(name, table, temp=True, overwrite=True)
    found = t.select(t.v, out=coerce(t.v, column, formats)).to_pyarrow().to_pylist()
    return [row["out"] for row in sorted(found, key=lambda r: values.index(r["v"]))]


def test_dates_and_numbers_parse_as_on_duckdb(engine_url: str) -> None:
    """Text in every default date format, impossible dates, words PostgreSQL's own cast would
    take ('now', 'Jan 5 2024'), thousands separators, blanks: the same values or the same
    nulls, value for value, and no query aborted by one bad value."""
    pg = engine.connect(EngineOptions(kind="postgres", url=engine_url))
    duck = engine.working_connection()
    from custval.config import DEFAULT_DATE_FORMATS

    timestamp = Column("timestamp", "timestamp")
    duck_dates = parsed(duck, TEXT, timestamp, DEFAULT_DATE_FORMATS)
    assert parsed(pg, TEXT, timestamp, DEFAULT_DATE_FORMATS) == duck_dates
    assert duck_dates[0] == datetime(2024, 1, 5) and duck_dates[TEXT.index("now")] is None
    assert sum(d is not None for d in duck_dates) >= 15
    custom = ("%d-%m-%Y", "%Y%m%d")
    assert parsed(pg, TEXT, timestamp, custom) == parsed(duck, TEXT, timestamp, custom)
    amount = Column("amount", "amount")
    duck_numbers = parsed(duck, NUMBERS, amount)
    assert parsed(pg, NUMBERS, amount, ()) == pytest.approx(duck_numbers, nan_ok=True)
    assert duck_numbers[:2] == [12.0, 12.5]


def test_the_strftime_formats_read_as_to_timestamp_patterns() -> None:
    assert postgres.pg_format("%d/%m/%Y %H:%M") == (
        r"^(0?[1-9]|[1-9][0-9])/(0?[1-9]|[1-9][0-9])/[0-9]{1,4}\ [0-9]{1,2}:[0-9]{1,2}$",
        "DD/MM/YYYY HH24:MI",
    )
    with pytest.raises(ValueError, match="%Q has no PostgreSQL equivalent"):
        postgres.pg_format("%Q")


# --------------------------------------------------------------------------------------------
# the same features
# --------------------------------------------------------------------------------------------


def test_the_hand_made_company_gives_the_same_features_on_postgres(
    tmp_path: Path, engine_url: str, hand_made_features: tuple[list[dict], list]
) -> None:
    """Three date formats, thousands separators, an id map, blanks and duplicates, copied in
    from CSV files: parsed, cleaned, linked and summed in PostgreSQL as on DuckDB."""
    config = write_csv_company(tmp_path)
    assert_same_rows(hand_made_features[0], pg_rows(config, engine_url))


def test_the_generated_company_gives_the_same_features_on_postgres(
    companies: Companies, engine_url: str
) -> None:
    """Every feature group of 800 customers with the usual dirt, value for value (1e-9)."""
    config = companies.shared(800, seed=5, fmt="csv").config_path
    duck, _ = feature_rows(config)
    assert len(duck) > 700
    assert_same_rows(duck, pg_rows(config, engine_url))


def copy_into(url: str, table: str, data: pa.Table) -> None:
    """``data`` as the table ``table`` of the database at ``url`` (how the company's own
    tables would be there)."""
    con = ibis.connect(url)
    try:
        con.create_table(table, schema=ibis.Schema.from_pyarrow(data.schema))
    finally:
        con.disconnect()
    buf = io.BytesIO()
    pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False))
    statement = f'COPY "{table}" FROM STDIN WITH (FORMAT csv)'
    with psycopg.connect(url) as pg, pg.cursor() as cur, cur.copy(statement) as copy:
        copy.write(buf.getvalue())


def test_the_databases_own_tables_are_read_in_place(
    companies: Companies, engine_url: str, tmp_path: Path
) -> None:
    """A company whose tables are in the engine's database: no copy (the sources are the
    database's tables), and the features DuckDB computes from the same rows as files."""
    config = companies.copy(tmp_path / "company", 800, seed=5, fmt="parquet").config_path
    project = on_postgres(config, engine_url)
    for name, spec in project.sources.items():
        copy_into(engine_url, f"co_{name}", pq.read_table(config.parent / spec.uri))
        spec.uri, spec.table = engine_url, f"co_{name}"
    con = engine.connect(project.engine)
    raw = flows.open_all(project, con)
    assert {t.get_name() for t in raw.values()} == {f"co_{n}" for n in project.sources}
    pg = flows.features(project, flows.prepare(project, con=con)).to_pyarrow().to_pylist()
    duck, _ = feature_rows(config)
    assert_same_rows(duck, pg)


def test_features_on_the_command_line_with_engine_postgres(
    companies: Companies, pg_url: str, tmp_path: Path
) -> None:
    config = companies.copy(tmp_path / "company", 800, seed=5, fmt="parquet").config_path
    text = config.read_text()
    config.write_text(f'{text}\n[engine]\nurl = "${{CUSTVAL_PG}}"\n')
    out = tmp_path / "features.parquet"
    done = run(
        "features", "-c", str(config), "-o", str(out), "--engine", "postgres",
        cwd=tmp_path, env={"CUSTVAL_PG": pg_url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "features: 800 customers" in " ".join(done.stdout.split())
    duck, _ = feature_rows(config)
    assert_same_rows(duck, pq.read_table(out).to_pylist())


# --------------------------------------------------------------------------------------------
# the same errors
# --------------------------------------------------------------------------------------------


def test_contract_violations_give_the_same_report_on_postgres(
    tmp_path: Path, engine_url: str
) -> None:
    """Unparseable dates, a negative count and a bad flag: the same problems, counts and
    example rows on both engines."""
    config = broken_company(tmp_path)
    duck = contract_report(load_project(config))
    assert any(f[1] == "ts" and f[4] == 2 for f in duck), duck
    assert contract_report(on_postgres(config, engine_url)) == duck


def test_an_unreachable_postgres_is_named_after_a_bounded_wait() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/test"
    started = time.monotonic()
    with pytest.raises(EngineError) as caught:
        engine.connect(EngineOptions(kind="postgres", url=url, connect_timeout_s=2))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"PostgreSQL at 127.0.0.1:{port} cannot be reached" in message
    assert "under [engine]" in message and "connect_timeout_s" in message


def test_without_a_url_libpqs_variables_name_the_server(
    engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No [engine] url: PGHOST, PGPORT, PGUSER and PGDATABASE, as psql reads them; a URL of
    another kind is refused by name."""
    from urllib.parse import urlsplit

    parts = urlsplit(engine_url)
    for name, value in (
        ("PGHOST", parts.hostname), ("PGPORT", str(parts.port or 5432)),
        ("PGUSER", parts.username), ("PGDATABASE", parts.path.lstrip("/")),
    ):  # fmt: skip
        monkeypatch.setenv(name, value or "")
    con = engine.connect(EngineOptions(kind="postgres"))
    assert con.raw_sql("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    monkeypatch.setenv("PGPORT", "1")
    with pytest.raises(EngineError, match="PGHOST and PGPORT cannot be reached"):
        engine.connect(EngineOptions(kind="postgres", connect_timeout_s=2))
    with pytest.raises(EngineError, match="is not a postgresql:// URL"):
        engine.connect(EngineOptions(kind="postgres", url="sc://127.0.0.1:15002"))


# --------------------------------------------------------------------------------------------
# the same scoring run
# --------------------------------------------------------------------------------------------


def test_a_scoring_run_on_postgres_equals_the_run_on_duckdb(
    companies: Companies, engine_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Features computed in PostgreSQL, then scored here: every prediction and reason equal."""
    folder = tmp_path_factory.mktemp("pg_scoring") / "company"
    config = companies.copy(folder, 800, seed=5, fmt="parquet").config_path
    flows.train_value(load_project(config), candidates=("lightgbm",), folds=3)
    duck_store, pg_store = folder / "duck.duckdb", folder / "pg.duckdb"
    flows.score(load_project(config), store_url=duck_store)
    flows.score(on_postgres(config, engine_url), store_url=pg_store)
    duck = run_rows(duck_store, "predictions", "customer_id")
    assert len(duck) > 700
    assert_same_rows(duck, run_rows(pg_store, "predictions", "customer_id"))
    order = "customer_id, rank"
    assert_same_rows(run_rows(duck_store, "reasons", order), run_rows(pg_store, "reasons", order))


def test_the_documented_engine_section_loads() -> None:
    """docs/scale.md's [engine] example for PostgreSQL is a valid project section."""
    import re
    import tomllib

    text = (Path(__file__).parent.parent / "docs" / "scale.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if 'kind = "postgres"' in b]
    assert len(found) == 1
    options = EngineOptions(**tomllib.loads(found[0])["engine"])
    assert options.kind == "postgres" and options.url.startswith("postgresql://")


def test_the_generated_features_are_the_same_on_postgres(
    companies: Companies, engine_url: str
) -> None:
    """`features --auto`: every generated feature (windows, modes with their ties, trends,
    the orders' depth 2) of 300 customers equal on both engines, value for value (1e-9)."""
    config = companies.shared(300, seed=5, fmt="parquet").config_path

    def auto_rows(project) -> list[dict]:
        prepared = flows.prepare(project)
        ft = flows.auto_features(project, prepared, flows.features(project, prepared))
        assert len([f for f in ft.catalogue if "__" in f.name]) >= 150
        return ft.to_pyarrow().to_pylist()

    duck = auto_rows(load_project(config))
    assert_same_rows(duck, auto_rows(on_postgres(config, engine_url)))
