"""The engine the pipeline runs on, and the few operations that differ between engines.

DuckDB in this process is the default: every kind of source meets there (files read where they
lie, databases and APIs copied in). Spark (:mod:`custval.data.spark`) reads its own sources and
runs the same Ibis expressions; so does PostgreSQL (:mod:`custval.data.postgres`), with the
sources of its own database read in place and the others copied in. Everything else in the
pipeline is engine-blind Ibis; what is not (a temporary table, a copy from Arrow) is here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from custval.config import EngineOptions
from custval.data import postgres, spark

DEFAULT_MEMORY_LIMIT = "3GB"


def connect(options: EngineOptions) -> ibis.BaseBackend:
    """The working connection of the engine ``options`` name (see :class:`EngineOptions`)."""
    if options.kind == "spark":
        return spark.connect(options)
    if options.kind == "postgres":
        return postgres.connect(options)
    return working_connection()


def working_connection() -> ibis.BaseBackend:
    """An in-memory Ibis DuckDB connection for the pipeline, where all sources meet.

    Extension auto-install is off: DuckDB would try to download an extension on first use, and
    custval runs on machines that are offline. DuckDB's memory is capped at
    ``CUSTVAL_MEMORY_LIMIT`` (default 3GB); beyond it, work spills to a temporary folder.
    ``CUSTVAL_THREADS``, when set, caps its threads as it caps the models'.

    Example
    -------
    >>> con = working_connection()
    >>> con.name
    'duckdb'
    """
    con = ibis.duckdb.connect(":memory:", autoinstall_known_extensions=False)
    # DuckDB would take up to 80% of the machine's memory; a cap makes it spill to disk instead,
    # so a pipeline on a shared machine or a laptop stays inside a known budget
    limit = os.environ.get("CUSTVAL_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT)
    spill = Path(tempfile.gettempdir()) / f"custval-spill-{os.getpid()}"
    con.raw_sql(f"SET memory_limit = '{limit}'")
    con.raw_sql(f"SET temp_directory = '{spill}'")
    # nothing downstream relies on row order (the feature table is sorted when written), and
    # keeping it costs DuckDB time and memory in every CREATE TABLE AS
    con.raw_sql("SET preserve_insertion_order = false")
    cap = os.environ.get("CUSTVAL_THREADS", "").strip()
    if cap.isdigit() and int(cap) >= 1:
        # the user's cap on custval's threads holds for the engine too (a bad value is refused
        # by custval.models.fitting.threads, in words, when the models first ask)
        con.raw_sql(f"SET threads = {int(cap)}")
    return con


def materialise(con: ibis.BaseBackend, name: str, expr: ir.Table) -> ir.Table:
    """``expr`` computed once and kept on ``con`` as the working table ``name`` (a temporary
    table; on Spark, a cached view), replacing an earlier one of that name."""
    if spark.is_spark(con):
        return spark.materialise(con, name, expr)
    if postgres.is_postgres(con):
        return postgres.materialise(con, name, expr)
    return con.create_table(name, expr, temp=True, overwrite=True)


def drop(con: ibis.BaseBackend, name: str) -> None:
    """Drop the working table ``name`` (nothing when there is none)."""
    if spark.is_spark(con):
        spark.drop(con, name)
    else:
        con.drop_table(name, force=True)


def load_arrow(con: ibis.BaseBackend, name: str, table: pa.Table) -> ir.Table:
    """An Arrow table made in this process (an API's records, the store's events) as the
    working table ``name`` on ``con``."""
    if spark.is_spark(con):
        return spark.load_arrow(con, name, table)
    if postgres.is_postgres(con):
        return postgres.load_arrow(con, name, table)
    return con.create_table(name, table, temp=True, overwrite=True)


def writes_here(con: ibis.BaseBackend) -> bool:
    """Whether ``con`` is DuckDB in this process, which writes Parquet files here and reads
    them back where they lie (Spark's and PostgreSQL's results live on their servers)."""
    return not spark.is_spark(con) and not postgres.is_postgres(con)


_SCRATCH: dict[int, Path] = {}


def scratch(con: ibis.BaseBackend) -> Path:
    """A folder for the working files of ``con``, removed with the connection (or at exit)."""
    folder = _SCRATCH.get(id(con))
    if folder is None or not folder.is_dir():
        folder = Path(tempfile.mkdtemp(prefix="custval-work-"))
        _SCRATCH[id(con)] = folder
        weakref.finalize(con, _remove, id(con), folder)
    return folder


def _remove(key: int, folder: Path) -> None:
    _SCRATCH.pop(key, None)
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def capped_memory(con: ibis.BaseBackend, megabytes: int) -> Iterator[None]:
    """DuckDB's memory limit lowered to ``megabytes`` (never raised) for the block, then put
    back; other engines are left as they are."""
    if getattr(con, "name", "") != "duckdb":
        yield
        return
    # DuckDB shows the setting rounded ('2.7 GiB'): put back as shown, a few percent lower
    before = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    limit = min(megabytes, _megabytes(str(before)))
    con.raw_sql(f"SET memory_limit = '{limit}MB'")
    try:
        yield
    finally:
        con.raw_sql(f"SET memory_limit = '{before}'")


def _megabytes(setting: str) -> int:
    """DuckDB's memory_limit setting ('2.7 GiB', '1.4 GiB', '953.6 MiB') in megabytes."""
    number, unit = setting.split()
    scale = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "TiB": 1024**2}.get(unit, 1)
    return int(float(number) * scale * 1.048576)


def compiled(con: ibis.BaseBackend, expr: ir.Expr) -> str:
    """The SQL of ``expr`` on ``con``, to run many times (:func:`arrow`) with what changes
    put in: Ibis compiles an expression of hundreds of aggregates in a fair fraction of a
    second."""
    return str(con.compile(expr))


def arrow(con: ibis.BaseBackend, sql: str) -> pa.Table:
    """The rows of ``sql`` (from :func:`compiled`) on DuckDB only (where
    :func:`writes_here`), as Arrow, in the engine's own types (a sum of integers is a
    128-bit decimal: cast to the expression's schema)."""
    return con.raw_sql(sql).to_arrow_table()
