"""PostgreSQL as the engine: features computed in the database where the customer data lives.

``[engine] kind = "postgres"`` with ``url = "postgresql://..."``: contracts, cleaning, identity
and features run as the same Ibis expressions, compiled to PostgreSQL's SQL. Sources in that
database (``uri`` the engine's server and database, with ``table`` or ``query``) are read in
place; every other source (files, HTTP APIs, other databases) is read here and copied into a
temporary table through ``COPY``.

Two things PostgreSQL lacks, and DuckDB's pipeline relies on, are supplied per connection as
``pg_temp`` functions (they vanish with the connection and need no rights beyond a temporary
table's):

* a *try* cast: ``try_cast`` compiles to a plain ``CAST`` on PostgreSQL, which aborts the whole
  query on the first value that does not parse. Text that a regular expression proves
  castable is cast inline; any other goes through a PL/pgSQL function that returns NULL where
  the cast fails (an exception block costs a subtransaction, so only the doubtful rows pay it);
* DuckDB's ``try_strptime``: ``to_timestamp`` reads a strftime format's text, but leniently
  (any separator matches any other, trailing text is ignored), so the text must first match
  the format's shape, written as a regular expression with DuckDB's widths.

The session runs in UTC, as DuckDB's timestamps are read; working tables are temporary and
analysed once made (autovacuum never visits temporary tables, and without statistics the
planner joins millions of rows as if they were a thousand).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlglot.expressions as sge

from custval.config import EngineOptions, SourceSpec, mask_url
from custval.errors import EngineError, one_line

DEFAULT_PORT = 5432

# strftime directives: PostgreSQL's to_timestamp pattern, and the text DuckDB's strptime reads
# for them: up to the field's width, and its full width when another field follows at once
# (both read a number greedily); a zero month or day, which to_timestamp reads as the first, is
# no date to DuckDB
_DIRECTIVES: dict[str, tuple[str, str, str]] = {
    "Y": ("YYYY", "[0-9]{1,4}", "[0-9]{4}"),
    "m": ("MM", "(0?[1-9]|[1-9][0-9])", "(0[1-9]|[1-9][0-9])"),
    "d": ("DD", "(0?[1-9]|[1-9][0-9])", "(0[1-9]|[1-9][0-9])"),
    "H": ("HH24", "[0-9]{1,2}", "[0-9]{2}"),
    "M": ("MI", "[0-9]{1,2}", "[0-9]{2}"),
    "S": ("SS", "[0-9]{1,2}", "[0-9]{2}"),
    "f": ("US", "[0-9]{1,6}", "[0-9]{6}"),
    "y": ("YY", "[0-9]{2}", "[0-9]{2}"),
    "b": ("Mon", "[A-Za-z]{3}", "[A-Za-z]{3}"),
    "B": ("FMMonth", "[A-Za-z]{3,9}", "[A-Za-z]{3,9}"),
    "p": ("AM", "[AaPp][Mm]", "[AaPp][Mm]"),
    "I": ("HH12", "[0-9]{1,2}", "[0-9]{2}"),
}

#: numbers a plain cast reads for sure (digits, a sign, one decimal point, blanks around)
_PLAIN_NUMBER = r"^\s*[+-]?[0-9]{1,15}(\.[0-9]{0,15})?\s*$"
#: the numbers DuckDB's cast reads (PostgreSQL's also reads hexadecimal, 0x10)
_NUMBER = r"^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|nan|inf|infinity)\s*$"
#: ISO timestamps a plain cast reads for sure (every day of every month exists up to the 28th)
_PLAIN_TIMESTAMP = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"([ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?)?$"
)
#: the ISO text DuckDB's cast to a timestamp accepts (PostgreSQL's also takes 'now', 'Jan 5'...)
_ISO_TIMESTAMP = (
    r"^\s*[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"([ T][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\.[0-9]{1,9})?)?)?\s*$"
)

_FUNCTIONS = rf"""
CREATE OR REPLACE FUNCTION pg_temp.custval_try_float(t text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF t !~* '{_NUMBER}' THEN
        RETURN NULL;
    END IF;
    RETURN t::double precision;
EXCEPTION
    WHEN numeric_value_out_of_range THEN
        IF t ~* 'e-' THEN
            RETURN 0;
        END IF;
        RETURN CASE WHEN t ~ '^\s*-' THEN '-Infinity' ELSE 'Infinity' END;
    WHEN others THEN
        RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.custval_try_timestamp(t text) RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF t !~ '{_ISO_TIMESTAMP}' THEN
        RETURN NULL;
    END IF;
    RETURN t::timestamp;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.custval_strptime(t text, shape text, fmt text)
RETURNS timestamp LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF t !~ shape THEN
        RETURN NULL;
    END IF;
    RETURN to_timestamp(t, fmt)::timestamp;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
"""


@ibis.udf.scalar.builtin(name="custval_strptime", database="pg_temp")
def _strptime(value: str, shape: str, fmt: str) -> dt.Timestamp(): ...  # type: ignore[valid-type]


def is_postgres(con: ibis.BaseBackend) -> bool:
    """Whether ``con`` is Ibis' PostgreSQL backend."""
    return con.name == "postgres"


# --------------------------------------------------------------------------------------------
# the connection
# --------------------------------------------------------------------------------------------


def connect(options: EngineOptions) -> ibis.BaseBackend:
    """An Ibis PostgreSQL connection to ``options.url`` (without one: where libpq's variables
    PGHOST, PGPORT, PGUSER, PGDATABASE point, as for psql), in UTC, with the try functions
    made; waits at most ``connect_timeout_s`` for the server; :class:`EngineError` otherwise."""
    url = options.url
    if url and not url.startswith(("postgresql://", "postgres://")):
        raise EngineError(
            f"the PostgreSQL engine's url {mask_url(url)} is not a postgresql:// URL",
            hint='Set url = "postgresql://user@host:5432/database" under [engine] in custval.toml',
        )
    wait = max(1, round(options.connect_timeout_s))
    try:
        if url:
            con = ibis.connect(url, connect_timeout=wait)
        else:
            port = int(os.environ.get("PGPORT") or DEFAULT_PORT)
            con = ibis.postgres.connect(port=port, connect_timeout=wait)
        with con.begin() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            # the feature query's cost estimate (hundreds of joined aggregates) makes the JIT
            # compile it: 1.1 s for 2,000 customers, over ten minutes for 100,000, to save
            # milliseconds
            cur.execute("SET jit = off")
            cur.execute(_FUNCTIONS)
    except Exception as exc:
        where = _address(url) if url else "the address of PGHOST and PGPORT"
        raise EngineError(
            f"PostgreSQL at {where} cannot be reached: {one_line(exc)}",
            hint='Check the server, and url = "postgresql://user@host:5432/database" under '
            "[engine] (or the PGHOST, PGPORT, PGUSER and PGDATABASE variables); "
            "connect_timeout_s sets the wait",
        ) from None
    con.compiler = _compiler()
    # Table.cache() (the features' shared parts) as an analysed temporary table
    con._create_cached_table = partial(materialise, con)
    return con


def _compiler() -> Any:
    """Ibis' PostgreSQL compiler, with ``try_cast`` that returns NULL for text that does not
    parse (to numbers and timestamps), as DuckDB's does, booleans cast to any number, and text
    sorted in byte order."""
    from ibis.backends.sql.compilers.postgres import PostgresCompiler

    class TryCasts(PostgresCompiler):
        def visit_Cast(self, op: Any, *, arg: Any, to: Any) -> Any:  # noqa: N802
            if op.arg.dtype.is_boolean() and to.is_numeric() and to != dt.int32:
                # PostgreSQL casts a boolean to integer, and to no other number type
                arg = sge.Cast(this=arg, to=sge.DataType.build("INT"))
            return super().visit_Cast(op, arg=arg, to=to)

        def visit_SortKey(self, op: Any, *, arg: Any, ascending: bool, nulls_first: bool) -> Any:  # noqa: N802
            if op.arg.dtype.is_string():
                # byte order, as DuckDB sorts: a database's locale (en_US) would put "a" before
                # "B", and the rows a model learns from in another order
                arg = sge.Collate(
                    this=arg, expression=sge.Column(this=sge.to_identifier("C", quoted=True))
                )
            return super().visit_SortKey(op, arg=arg, ascending=ascending, nulls_first=nulls_first)

        def visit_TryCast(self, op: Any, *, arg: Any, to: Any) -> Any:  # noqa: N802
            if not op.arg.dtype.is_string() or not (to.is_floating() or to.is_timestamp()):
                return self.visit_Cast(op, arg=arg, to=to)
            plain, careful = (
                (_PLAIN_NUMBER, "custval_try_float")
                if to.is_floating()
                else (_PLAIN_TIMESTAMP, "custval_try_timestamp")
            )
            fast = sge.RegexpLike(this=arg, expression=sge.convert(plain))
            slow = sge.Anonymous(this=f"pg_temp.{careful}", expressions=[arg])
            return self.if_(fast, self.cast(arg, to), self.cast(slow, to))

    return TryCasts()


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or DEFAULT_PORT}"


def in_place(spec: SourceSpec, con: ibis.BaseBackend) -> bool:
    """Whether the database source ``spec`` lives in the database of the engine ``con``
    (read in place, no copy)."""
    parts = urlsplit(spec.uri)
    if parts.scheme not in {"postgresql", "postgres"}:
        return False
    info = con.con.info
    given = (parts.hostname or "localhost", parts.port or DEFAULT_PORT, parts.path.lstrip("/"))
    engine = (info.host, info.port, info.dbname)
    return _local(given) == _local(engine)


def _local(where: tuple[str, int, str]) -> tuple[str, int, str]:
    host, port, database = where
    return ("127.0.0.1" if host in {"localhost", "::1", ""} else host, int(port), database)


# --------------------------------------------------------------------------------------------
# working tables
# --------------------------------------------------------------------------------------------


def materialise(con: ibis.BaseBackend, name: str, expr: ir.Table) -> ir.Table:
    """``expr`` as the temporary table ``name``, analysed."""
    table = con.create_table(name, expr, temp=True, overwrite=True)
    _analyse(con, name)
    return table


def load_arrow(con: ibis.BaseBackend, name: str, data: pa.Table | pa.RecordBatchReader) -> ir.Table:
    """Arrow data as the temporary table ``name``, through ``COPY`` a batch at a time."""
    schema = data.schema
    con.drop_table(name, force=True)
    con.create_table(name, schema=ibis.Schema.from_pyarrow(schema), temp=True)
    columns = ", ".join(_quote(f.name) for f in schema)
    statement = f"COPY {_quote(name)} ({columns}) FROM STDIN WITH (FORMAT csv)"
    batches: Iterable[pa.RecordBatch] = (
        data.to_batches(max_chunksize=100_000) if isinstance(data, pa.Table) else data
    )
    with con.con.cursor() as cur, con.con.transaction(), cur.copy(statement) as copy:
        for batch in batches:
            if batch.num_rows:
                copy.write(_csv(batch))
    _analyse(con, name)
    return con.table(name)


def _csv(batch: pa.RecordBatch) -> bytes:
    """A batch as CSV that COPY reads back as it was: nulls unquoted and empty, empty text
    quoted (pyarrow's way), timestamps in ISO."""
    buf = io.BytesIO()
    pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
    return buf.getvalue()


def _analyse(con: ibis.BaseBackend, name: str) -> None:
    with con.begin() as cur:
        cur.execute(f"ANALYZE {_quote(name)}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------
# dates
# --------------------------------------------------------------------------------------------


def strptime(text: ir.StringValue, fmt: str) -> ir.TimestampValue:
    """``text`` read with the strftime format ``fmt`` as DuckDB's try_strptime reads it: the
    whole text in the format's shape, null where it is not or the date does not exist."""
    shape, pattern = pg_format(fmt)
    return _strptime(text, shape, pattern)


def pg_format(fmt: str) -> tuple[str, str]:
    """The regular expression of the text the strftime format ``fmt`` reads, and the
    to_timestamp pattern that reads it.

    Example
    -------
    >>> pg_format("%d.%m.%Y")
    ('^(0?[1-9]|[1-9][0-9])\\\\.(0?[1-9]|[1-9][0-9])\\\\.[0-9]{1,4}$', 'DD.MM.YYYY')
    >>> pg_format("%Y%m%dT%H")[1]
    'YYYYMMDD"T"HH24'
    """
    tokens = re.findall(r"%.|[^%]", fmt)
    shape, pattern = ["^"], []
    for k, token in enumerate(tokens):
        if not token.startswith("%"):
            shape.append(re.escape(token))
            pattern.append(f'"{token}"' if token.isalpha() else token)
            continue
        if token[1] not in _DIRECTIVES:
            raise ValueError(f"the date format directive {token} has no PostgreSQL equivalent")
        name, alone, full = _DIRECTIVES[token[1]]
        followed = k + 1 < len(tokens) and tokens[k + 1].startswith("%")
        shape.append(full if followed else alone)
        pattern.append(name)
    shape.append("$")
    return "".join(shape), "".join(pattern)
