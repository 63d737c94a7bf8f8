"""Opening a source named by a URI as an Ibis table.

A source is a file or a glob of files (CSV, Parquet, JSON lines), a database table or query
(DuckDB, SQLite, PostgreSQL, or any other backend Ibis can reach by URL), or a paged HTTP JSON API.
:func:`open_source` turns any of them into an Ibis table; :func:`stage` copies a table onto the
pipeline's working engine so that sources from different places can be joined there.

Files are read lazily by DuckDB. CSV columns are read as text on purpose: the cleaning step parses
dates and amounts itself and needs to see "1,234.50" and mixed date formats as written.

Every failure a user can cause (missing file, empty file, unreachable database, missing table,
failing query, failing API) raises :class:`~custval.errors.SourceError` with a one-paragraph
message that names the source; passwords and secret query parameters never appear in it.

Example
-------
>>> from custval.config import SourceSpec
>>> con = working_connection()
>>> spec = SourceSpec(name="orders", kind="transactions", uri="data/orders_*.csv")
>>> orders = open_source(spec, con)  # doctest: +SKIP
>>> orders.count().execute()  # doctest: +SKIP
50
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import json
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import duckdb
import ibis
import ibis.expr.schema as sch
import pyarrow as pa
import sqlglot as sg

from custval.config import (
    SECRET_PARAM,
    USERINFO_PASSWORD,
    FileFormat,
    HttpOptions,
    SourceSpec,
    mask_url,
)
from custval.data import postgres, spark
from custval.data.engine import working_connection
from custval.data.textfiles import TextLayout, read_xlsx, text_layout
from custval.errors import CustvalError, SourceError, one_line

if TYPE_CHECKING:
    import httpx

__all__ = ["fetch_http", "open_source", "stage", "working_connection"]

#: Rows per Arrow record batch when copying between engines: small enough to keep memory flat,
#: large enough that per-batch overhead does not matter.
BATCH_ROWS = 100_000

#: Longest wait honoured from a Retry-After header, in seconds.
MAX_RETRY_AFTER_S = 30.0

#: Longest exponential-backoff wait between two attempts, in seconds.
MAX_BACKOFF_S = 60.0

#: How many available tables a "missing table" message lists.
MAX_LISTED_TABLES = 10

_EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".xlsx": "xlsx",
}
_COMPRESSIONS = (".gz", ".zst")
_FORMAT_TITLES: dict[str, str] = {
    "csv": "CSV",
    "parquet": "Parquet",
    "json": "JSON",
    "xlsx": "an Excel workbook",
}
_DB_SCHEMES = {"duckdb", "sqlite", "postgresql", "postgres"}
_GLOB_MAGIC = re.compile(r"[*?\[]")
# Where a CSV's first data row would appear, if there is one; a header longer than this is
# taken to be followed by rows rather than read to its end.
_HEAD_BYTES = 64 * 1024


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def open_source(spec: SourceSpec, con: ibis.BaseBackend | None = None) -> ibis.Table:
    """Open the source ``spec`` names as an Ibis table.

    Files and HTTP APIs end up on ``con`` (a DuckDB connection from :func:`working_connection`;
    one is created when ``con`` is None) under the name ``src_<spec.name>``, so opening the same
    source again replaces the earlier table. Files are read lazily; CSV columns are all strings.
    Database sources come back bound to their own database; pass them through :func:`stage` to
    join them with tables on ``con``.

    Raises :class:`SourceError` (naming the source) when the source cannot be opened.

    Example
    -------
    >>> from custval.config import SourceSpec
    >>> spec = SourceSpec(name="crm", kind="customers", uri="sqlite:///data/crm.db",
    ...                   table="customers")
    >>> customers = open_source(spec)  # doctest: +SKIP
    >>> customers.columns  # doctest: +SKIP
    ('customer_id', 'signup_date', 'country')
    """
    scheme = _scheme(spec.uri)
    is_file = scheme in {"", "file"}
    if con is not None and spark.is_spark(con) and (is_file or spark.opens_here(spec)):
        return _open_on_spark(spec, con)
    if con is not None and postgres.is_postgres(con):
        if postgres.in_place(spec, con):
            return _table_or_query(spec, con, "PostgreSQL")  # read in place
        if is_file:  # read here, then copied in by stage()
            con = working_connection()
    if (spec.table or spec.query) and (is_file or scheme in {"http", "https"}):
        raise _error(
            spec,
            f"'table' and 'query' apply to database sources, and {mask_url(spec.uri)} is "
            f"{'a file' if is_file else 'an HTTP API'}",
            hint="Remove them, or point uri at a database (duckdb://, sqlite://, postgresql://)",
        )
    if scheme in {"http", "https"}:
        con = con if con is not None else working_connection()
        records = fetch_http(spec)
        if records.num_rows == 0:
            raise _error(spec, f"the API at {mask_url(spec.uri)} returned no records")
        return _load_into(spec, con, _table_name(spec), records.to_reader(BATCH_ROWS))
    if scheme in _DB_SCHEMES:
        return _open_database(spec, scheme)
    if is_file:
        con = con if con is not None else working_connection()
        return _open_files(spec, con)
    return _open_other_backend(spec)


def stage(table: ibis.Table, con: ibis.BaseBackend, name: str) -> ibis.Table:
    """Put ``table`` on ``con``: as it is if it already lives there, else as a copy.

    The copy is a temporary table called ``name``, filled through Arrow record batches of
    ``BATCH_ROWS`` rows, so memory stays bounded however large the source is. The pipeline
    stages every source on its working connection so that they can be joined.

    Example
    -------
    >>> import ibis
    >>> con = working_connection()
    >>> other = ibis.sqlite.connect()
    >>> t = other.create_table("t", schema=ibis.schema({"x": "int64"}))
    >>> stage(t, con, "t_staged").get_name()
    't_staged'
    """
    backends, has_unbound = table._find_backends()
    if has_unbound:
        raise ValueError("stage() needs a table bound to a backend, not an unbound table")
    if len(backends) > 1:
        raise ValueError("stage() needs a table from one backend; this one mixes several")
    if backends and backends[0] is con:
        return table
    try:
        if not backends and spark.is_spark(con):
            return spark.load_arrow(con, name, table.to_pyarrow())
        if not backends:
            # An in-memory table (ibis.memtable) can be materialised by the engine itself.
            _drop_temp(con, name)
            return con.create_table(name, table, temp=True, overwrite=True)
        reader = _record_batches(backends[0], table)
        return _copy_batches(con, name, reader)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(
            f"copying the table onto the working engine failed: {one_line(exc)}",
            source=name,
        ) from exc


def fetch_http(spec: SourceSpec, client: httpx.Client | None = None) -> pa.Table:
    """Fetch every record of a paged HTTP JSON API into an Arrow table.

    Paging, the records' location in each response, extra headers and query parameters, the
    timeout (seconds) and the retry policy come from ``spec.http``
    (:class:`~custval.config.HttpOptions`). 429, 5xx, connection errors and timeouts are retried
    with exponential backoff; other 4xx fail at once. Columns are the union of the records' keys;
    values keep their JSON types, except that a column whose values mix types (say numbers and
    strings) becomes text, and a column that is null throughout is typed as text.

    Example
    -------
    >>> from custval.config import HttpOptions, SourceSpec
    >>> spec = SourceSpec(name="orders", kind="transactions",
    ...                   uri="https://api.example.com/v1/orders",
    ...                   http=HttpOptions(pagination="cursor", records_field="data"))
    >>> fetch_http(spec).num_rows  # doctest: +SKIP
    1250
    """
    # httpx and psycopg are imported where a source needs them: a file source spares every run
    # their import time
    import httpx

    own_client = client is None
    if client is None:
        client = httpx.Client(timeout=spec.http.timeout_s, follow_redirects=True)
    try:
        return _records_to_arrow(list(_iter_records(spec, client)))
    finally:
        if own_client:
            client.close()


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------


def _label(spec: SourceSpec) -> str:
    return spec.name or mask_url(spec.uri)


def _secrets(spec: SourceSpec) -> list[str]:
    """Strings from the URI that must never reach a message."""
    found: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urlsplit(spec.uri)
        if parts.password:
            found.append(parts.password)
        found += [v for k, v in parse_qsl(parts.query) if SECRET_PARAM.search(k) and v]
    found += [v for k, v in spec.http.params.items() if SECRET_PARAM.search(k) and v]
    # Longest first, so that a secret containing another is replaced whole.
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def _scrub(text: str, spec: SourceSpec) -> str:
    text = USERINFO_PASSWORD.sub(r"\g<head>:***@", text)
    for secret in _secrets(spec):
        text = text.replace(secret, "***")
    return text


def _error(spec: SourceSpec, problem: str, hint: str | None = None) -> SourceError:
    return SourceError(_scrub(problem, spec), source=_label(spec), hint=hint)


def read_error(spec: SourceSpec, exc: BaseException) -> SourceError:
    """A library's error while reading ``spec`` (say a malformed row deep in a large CSV, which
    lazy reading meets only when a query runs) as a one-paragraph SourceError."""
    return _error(spec, f"could not be read: {one_line(exc)}")


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def _table_name(spec: SourceSpec) -> str:
    return "src_" + (re.sub(r"\W", "_", spec.name) or "source")


def _file_format(path: str) -> FileFormat | None:
    name = path.lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    return _EXTENSIONS.get(Path(name).suffix)


def _list_files(spec: SourceSpec) -> tuple[str, list[str]]:
    """The resolved path or pattern, and the regular files it names (sorted)."""
    text = spec.uri[len("file://") :] if spec.uri.lower().startswith("file://") else spec.uri
    path = Path(text).expanduser()
    resolved = str(path if path.is_absolute() else Path.cwd() / path)
    if _GLOB_MAGIC.search(text):
        # glob.glob, not Path.glob: the pattern is absolute and may have wildcards in folders.
        matches = glob.glob(resolved, recursive=True)  # noqa: PTH207
        files = sorted(p for p in matches if Path(p).is_file())
        if not files:
            raise _error(
                spec,
                f"no file matches the pattern '{resolved}'",
                hint="Check the folder and the pattern in the source's uri",
            )
        return resolved, files
    target = Path(resolved)
    if target.is_dir():
        wanted = set(_EXTENSIONS) if spec.format is None else _suffixes(spec.format)
        files = sorted(
            str(p) for p in target.rglob("*") if p.is_file() and _has_suffix(str(p), wanted)
        )
        if not files:
            raise _error(spec, f"the folder '{resolved}' holds no CSV, Parquet or JSON files")
        return resolved, files
    if not target.exists():
        raise _error(spec, f"the file '{resolved}' does not exist")
    return resolved, [resolved]


def _suffixes(fmt: FileFormat) -> set[str]:
    return {ext for ext, f in _EXTENSIONS.items() if f == fmt}


def _has_suffix(path: str, suffixes: set[str]) -> bool:
    name = path.lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    return Path(name).suffix in suffixes


def _decide_format(spec: SourceSpec, where: str, files: list[str]) -> FileFormat:
    if spec.format is not None:
        return spec.format
    formats = {_file_format(f) for f in files}
    if None in formats or not formats:
        unknown = next(f for f in files if _file_format(f) is None)
        raise _error(
            spec,
            f"cannot tell the format of '{unknown}' from its extension",
            hint='Set format = "csv", "parquet" or "json" for this source',
        )
    if len(formats) > 1:
        raise _error(
            spec,
            f"'{where}' mixes file formats ({', '.join(sorted(str(f) for f in formats))})",
            hint="Make the pattern match one format, or set format for this source",
        )
    return formats.pop()  # type: ignore[return-value]


def _csv_has_rows(path: str, header: bool = True) -> bool:
    """Whether a CSV holds a line after its header, looking at its first bytes only."""
    lower = path.lower()
    if lower.endswith(".zst"):
        return True  # no zstd reader in the standard library; DuckDB will tell
    opener = gzip.open if lower.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    lines = [line for line in head.splitlines() if line.strip()]
    return len(lines) >= (2 if header else 1) or len(head) >= _HEAD_BYTES


def _check_files(spec: SourceSpec, where: str, files: list[str], fmt: FileFormat) -> list[str]:
    """Cheap checks before DuckDB sees the files; returns the files worth reading.

    In a glob, an empty file is skipped (a day without orders is not an error) as long as some
    file has content. A single file that is empty, or a CSV with a header only, is an error.
    """
    try:
        sizes = {f: Path(f).stat().st_size for f in files}
        if len(files) == 1:
            (only,) = files
            if sizes[only] == 0:
                raise _error(spec, f"the file '{only}' is empty (0 bytes)")
            if fmt == "csv" and not _csv_has_rows(only, spec.csv.header):
                raise _error(spec, f"the file '{only}' has no rows, only a header")
            with Path(only).open("rb"):  # unreadable (permissions): say so here, clearly
                pass
            return files
        nonempty = [f for f in files if sizes[f] > 0]
    except OSError as exc:
        raise _error(
            spec, f"cannot read '{exc.filename or where}': {exc.strerror or exc}"
        ) from None
    if not nonempty:
        raise _error(spec, f"all {len(files)} files matching '{where}' are empty (0 bytes)")
    return nonempty


def _open_files(spec: SourceSpec, con: ibis.BaseBackend) -> ibis.Table:
    where, files = _list_files(spec)
    fmt = _decide_format(spec, where, files)
    files = _check_files(spec, where, files, fmt)
    if con.name != "duckdb":
        # Only DuckDB reads files lazily here; read there and copy onto the caller's engine.
        duck = working_connection()
        table = _open_files_on(spec, duck, where, files, fmt)
        return _load_into(spec, con, _table_name(spec), _record_batches(duck, table))
    return _open_files_on(spec, con, where, files, fmt)


def _open_on_spark(spec: SourceSpec, con: ibis.BaseBackend) -> ibis.Table:
    """A source Spark reads itself: its catalog's tables, a cluster's files, and files of
    this machine (for a local Spark; their format and CSV layout are detected here)."""
    name = _table_name(spec)
    if _scheme(spec.uri) == spark.CATALOG_SCHEME:
        return spark.open_catalog(spec, con, name)
    if spark.opens_here(spec):
        fmt = spec.format or _file_format(spec.uri.rstrip("/"))
        if fmt is None:
            raise _error(
                spec,
                f"cannot tell the format of '{spec.uri}' from its name",
                hint='Set format = "csv", "parquet" or "json" for this source',
            )
        return spark.open_files(spec, con, name, [[spec.uri]], fmt)
    where, files = _list_files(spec)
    fmt = _decide_format(spec, where, files)
    files = _check_files(spec, where, files, fmt)
    if fmt == "xlsx":
        return _read_xlsx(spec, con, name, files)
    if fmt != "csv":
        return spark.open_files(spec, con, name, [files], fmt)
    layout = _layout(spec, files)
    read = spec.model_copy(
        update={
            "csv": spec.csv.model_copy(
                update={
                    "header": layout.header,
                    "names": layout.names,
                    "encoding": layout.encoding,
                }
            )
        }
    )
    groups = _by_header(layout) if layout.header and len(layout.files) > 1 else [layout.files]
    return spark.open_files(read, con, name, groups, fmt, delimiter=layout.separator)


def _by_header(layout: TextLayout) -> list[list[str]]:
    """The files grouped by their header row, first seen first: exports split over several
    files do not always keep the column order, and Spark takes every file's columns in the
    first one's order (DuckDB's reading is by name; Spark's groups are joined by name)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for path in layout.files:
        groups.setdefault(_header_row(path, layout), []).append(path)
    return list(groups.values())


def _header_row(path: str, layout: TextLayout) -> tuple[str, ...]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding=layout.encoding or "utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter=layout.separator):
            if any(cell.strip() for cell in row):
                return tuple(cell.strip() for cell in row)
    return ()


def _open_files_on(
    spec: SourceSpec, con: ibis.BaseBackend, where: str, files: list[str], fmt: FileFormat
) -> ibis.Table:
    name = _table_name(spec)
    options: dict[str, Any] = {}
    if len(files) > 1:
        # Exports split over several files do not always keep the column order.
        options["union_by_name"] = True
    _drop_temp(con, name)
    try:
        if fmt == "csv":
            layout = _layout(spec, files)
            if layout.delimiter == "whitespace":
                table = _read_whitespace(spec, con, name, layout)
            else:
                options |= _csv_options(layout)
                # Every column as text and no type sniffing: cleaning parses "1,234.50" and
                # mixed date formats itself and must see them as written.
                table = con.read_csv(layout.files, table_name=name, all_varchar=True, **options)
        elif fmt == "xlsx":
            table = _read_xlsx(spec, con, name, files)
        elif fmt == "parquet":
            table = con.read_parquet(files, table_name=name, **options)
        else:
            if all(_has_suffix(f, {".jsonl", ".ndjson"}) for f in files):
                options["format"] = "newline_delimited"
            table = con.read_json(files, table_name=name, **options)
        # One row tells whether the source is empty, and reading it makes DuckDB report a
        # broken file here, with the source's name, rather than deep inside the pipeline.
        probe = con.con.sql(f"SELECT 1 FROM {_quote(name)} LIMIT 1").fetchall()
    except duckdb.Error as exc:
        target = files[0] if len(files) == 1 else where
        raise _error(
            spec,
            f"cannot read '{target}' as {_FORMAT_TITLES[fmt]}: {one_line(exc)}",
            hint=None if spec.format is None else "Check that format matches the files",
        ) from None
    if not probe:
        if len(files) == 1:
            raise _error(spec, f"the file '{files[0]}' has no rows")
        raise _error(spec, f"the {len(files)} files matching '{where}' have no rows")
    return table


_LAYOUTS: dict[tuple[Any, ...], TextLayout] = {}


def _layout(spec: SourceSpec, files: list[str]) -> TextLayout:
    """How the source's text files are read (see :func:`custval.data.textfiles.text_layout`),
    settled once per file version: validation asks again for the field separator."""
    stats = tuple((f, Path(f).stat().st_mtime_ns, Path(f).stat().st_size) for f in files)
    key = (stats, spec.csv.model_dump_json())
    if key not in _LAYOUTS:
        try:
            _LAYOUTS[key] = text_layout(files, spec.csv, _label(spec))
        except CustvalError as exc:
            raise _error(spec, exc.problem, exc.hint) from None
        except OSError as exc:
            raise _error(spec, f"cannot read '{exc.filename}': {exc.strerror or exc}") from None
    return _LAYOUTS[key]


def _read_xlsx(spec: SourceSpec, con: ibis.BaseBackend, name: str, files: list[str]) -> ibis.Table:
    """Excel workbooks (their first sheet), as text like a CSV file's; several are stacked by
    column name."""
    try:
        sheets = [read_xlsx(f, spec.csv, _label(spec)) for f in files]
    except CustvalError as exc:
        raise _error(spec, exc.problem, exc.hint) from None
    table = pa.concat_tables(sheets, promote_options="permissive")
    return _load_into(spec, con, name, table.to_reader(BATCH_ROWS))


def field_separator(spec: SourceSpec) -> str | None:
    """The field separator of a text-file source (``"whitespace"`` for runs of blanks); None
    for other sources. Cleaning asks, to tell a thousands comma from a decimal one."""
    if _scheme(spec.uri) not in {"", "file"}:
        return None
    try:
        where, files = _list_files(spec)
        if _decide_format(spec, where, files) != "csv":
            return None
        return _layout(spec, files).separator
    except (SourceError, OSError):
        return None


def _csv_options(layout: TextLayout) -> dict[str, Any]:
    """DuckDB's CSV options for the files: delimiter, header, column names and encoding."""
    options: dict[str, Any] = {"header": layout.header}
    if layout.delimiter is not None:
        options["delim"] = layout.delimiter
    if layout.names:
        options["names"] = layout.names
    if layout.encoding:
        options["encoding"] = layout.encoding
    return options


def _read_whitespace(
    spec: SourceSpec, con: ibis.BaseBackend, name: str, layout: TextLayout
) -> ibis.Table:
    """Text whose fields are separated by runs of spaces or tabs, with leading and trailing
    blanks (CDNOW's master file: ``" 00001 19970101  1   11.77"``). DuckDB's CSV reader takes
    one delimiter character, so each line is read whole and split here, in DuckDB."""
    strings = ", ".join("'" + f.replace("'", "''") + "'" for f in layout.files)
    encoding = f", encoding='{layout.encoding}'" if layout.encoding else ""
    blanks = "' ' || chr(9) || chr(13)"  # space, tab and the CR of Windows line ends
    lines = (
        f"SELECT string_split_regex(trim(column0, {blanks}), '[ \\t]+') AS f, column0 "
        f"FROM read_csv([{strings}], columns={{'column0': 'VARCHAR'}}, delim='\x01', "
        f"header=false, quote='', escape='', auto_detect=false{encoding}) "
        f"WHERE trim(column0, {blanks}) <> ''"
    )
    header: list[str] | None = None
    if layout.header:
        first = con.con.sql(f"SELECT f FROM ({lines}) LIMIT 1").fetchone()
        header = list(first[0]) if first else []
    names = layout.names or header
    if names is None:
        widest = con.con.sql(f"SELECT max(len(f)) FROM ({lines})").fetchone()
        names = [f"column{i}" for i in range((widest[0] if widest else None) or 0)]
    rows = f"SELECT * FROM ({lines})"
    if header is not None:
        listed = ", ".join("'" + h.replace("'", "''") + "'" for h in header)
        rows += f" WHERE f <> [{listed}]"  # the header line of every file
    bad = con.con.sql(
        f"SELECT len(f), column0 FROM ({rows}) WHERE len(f) <> {len(names)} LIMIT 3"
    ).fetchall()
    if bad:
        examples = "; ".join(f"'{line.strip()[:80]}' ({n} fields)" for n, line in bad)
        raise _error(
            spec,
            f"lines with other than the {len(names)} fields of the columns "
            f"{', '.join(names)}, e.g. {examples}",
            hint="Check the file's columns, or csv.names",
        )
    picked = ", ".join(f"f[{i + 1}] AS {_quote(n)}" for i, n in enumerate(names))
    con.con.execute(f"CREATE TEMP VIEW {_quote(name)} AS SELECT {picked} FROM ({rows})")
    return con.table(name)


# --------------------------------------------------------------------------------------------
# databases
# --------------------------------------------------------------------------------------------


def _db_path(spec: SourceSpec) -> str:
    rest = spec.uri.split("://", 1)[1]
    path = rest.split("?", 1)[0]
    return path or ":memory:"


def _require_table_or_query(spec: SourceSpec) -> None:
    if not spec.table and not spec.query:
        raise _error(
            spec,
            f"the database source {mask_url(spec.uri)} names neither a table nor a query",
            hint='Set table = "..." (optionally schema.table) or query = "SELECT ..."',
        )


def _open_database(spec: SourceSpec, scheme: str) -> ibis.Table:
    _require_table_or_query(spec)
    if scheme == "duckdb":
        backend = _connect_duckdb(spec)
        kind = "DuckDB"
    elif scheme == "sqlite":
        backend = _connect_sqlite(spec)
        kind = "SQLite"
    else:
        backend = _connect_postgres(spec)
        kind = "PostgreSQL"
    return _table_or_query(spec, backend, kind)


def _connect_duckdb(spec: SourceSpec) -> ibis.BaseBackend:
    path = _db_path(spec)
    if path != ":memory:" and not Path(path).is_file():
        raise _error(spec, f"the DuckDB file '{path}' does not exist")
    try:
        # read_only: several readers may share a file, and a source is never written to.
        return ibis.duckdb.connect(path, read_only=True, autoinstall_known_extensions=False)
    except duckdb.ConnectionException as exc:
        # This process already has the file open for writing; DuckDB shares that instance
        # only with connections of the same configuration.
        try:
            return ibis.duckdb.connect(path)
        except duckdb.Error:
            raise _error(spec, f"cannot open the DuckDB file '{path}': {one_line(exc)}") from None
    except duckdb.IOException as exc:
        message = one_line(exc)
        if "lock" in message.lower():
            raise _error(
                spec,
                f"the DuckDB file '{path}' is locked by another process: {message}",
                hint="DuckDB allows one writing process at a time; close it or read a copy",
            ) from None
        raise _error(spec, f"cannot open the DuckDB file '{path}': {message}") from None
    except duckdb.Error as exc:
        raise _error(spec, f"cannot open the DuckDB file '{path}': {one_line(exc)}") from None


def _connect_sqlite(spec: SourceSpec) -> ibis.BaseBackend:
    from ibis.backends.sqlite import Backend as SQLiteBackend

    path = _db_path(spec)
    if path == ":memory:":
        return ibis.sqlite.connect()
    if not Path(path).is_file():
        # sqlite3 would silently create an empty database here.
        raise _error(spec, f"the SQLite file '{path}' does not exist")
    try:
        # mode=ro: a source is never written to. Sharing across threads is safe when the
        # library is serialized (threadsafety 3), and the pipeline may stage from a worker.
        raw = sqlite3.connect(
            f"file:{quote(path)}?mode=ro", uri=True, check_same_thread=sqlite3.threadsafety != 3
        )
        raw.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.Error as exc:
        raise _error(spec, f"cannot open the SQLite file '{path}': {one_line(exc)}") from None
    return SQLiteBackend.from_connection(raw)


def _connect_postgres(spec: SourceSpec) -> ibis.BaseBackend:
    import psycopg
    from ibis.backends.postgres import Backend as PostgresBackend

    try:
        info = psycopg.conninfo.conninfo_to_dict(spec.uri)
    except psycopg.Error as exc:
        raise _error(
            spec, f"the PostgreSQL URL {mask_url(spec.uri)} is invalid: {one_line(exc)}"
        ) from None
    where = (
        f"PostgreSQL at {info.get('host') or 'localhost'}:{info.get('port') or 5432}, "
        f"database '{info.get('dbname') or info.get('user') or ''}'"
    )
    if info.get("user"):
        where += f", user '{info['user']}'"
    extra: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in info:
        extra["connect_timeout"] = 10  # an unreachable host must not hang the run
    try:
        raw = psycopg.connect(spec.uri, **extra)
    except psycopg.Error as exc:
        raise _error(
            spec,
            f"cannot connect to {where}: {one_line(exc)}",
            hint="Check that the server is running and the URL's host, port, user and database",
        ) from None
    return PostgresBackend.from_connection(raw)


def _open_other_backend(spec: SourceSpec) -> ibis.Table:
    _require_table_or_query(spec)
    try:
        backend = ibis.connect(spec.uri)
    except Exception as exc:
        raise _error(spec, f"cannot connect to {mask_url(spec.uri)}: {one_line(exc)}") from None
    return _table_or_query(spec, backend, backend.name)


def _split_table(spec: SourceSpec) -> tuple[str, str | tuple[str, str] | None]:
    parts = (spec.table or "").split(".")
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2:
        return parts[1], parts[0]
    return parts[-1], (parts[-3], parts[-2])


def _list_tables(backend: ibis.BaseBackend, database: Any) -> list[str]:
    """Tables (and views) of one schema; the default schema when ``database`` is None."""
    if backend.name == "duckdb":
        # ibis 12's DuckDB list_tables calls a cursor method that DuckDB 2 removed.
        sql = "SELECT DISTINCT table_name FROM information_schema.tables WHERE table_schema = ?"
        params: list[str] = []
        if isinstance(database, tuple):
            sql += " AND table_catalog = ?"
            params = [database[1], database[0]]
        else:
            sql += " AND table_catalog IN (current_database(), 'temp')"
            params = [database or "main"]
        rows = backend.con.execute(sql, params).fetchall()
        return sorted(r[0] for r in rows)
    return sorted(backend.list_tables(database=database) if database else backend.list_tables())


_DEFAULT_SCHEMAS = {"duckdb": "main", "postgres": "public"}


def _all_tables(backend: ibis.BaseBackend) -> list[str]:
    """Every user table as a user would name it (``schema.table`` outside the default schema).

    Used only to help in a "no such table" message: the table may sit in another schema.
    """
    default = _DEFAULT_SCHEMAS.get(backend.name)
    if default is None:
        return _list_tables(backend, None)
    sql = (
        "SELECT DISTINCT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') "
        "AND table_schema NOT LIKE 'pg\\_%'"
    )
    if backend.name == "duckdb":
        sql += " AND table_catalog = current_database()"
    rows = backend.con.execute(sql).fetchall()
    names = [name if schema == default else f"{schema}.{name}" for schema, name in rows]
    return sorted(names, key=lambda n: (n.count("."), n))


def _table_or_query(spec: SourceSpec, backend: ibis.BaseBackend, kind: str) -> ibis.Table:
    if spec.query:
        return _run_query(spec, backend, kind)
    name, database = _split_table(spec)
    try:
        available = _list_tables(backend, database)
    except Exception as exc:
        raise _error(
            spec, f"cannot list the tables of the {kind} database: {one_line(exc)}"
        ) from None
    if name not in available:
        # Unquoted names fold case in most databases; accept the one match that differs in case.
        matches = [t for t in available if t.lower() == name.lower()]
        if len(matches) != 1:
            if database is None:
                with contextlib.suppress(Exception):
                    available = _all_tables(backend)
            shown = ", ".join(available[:MAX_LISTED_TABLES]) or "none"
            more = (
                f" (and {len(available) - MAX_LISTED_TABLES} more)"
                if (len(available) > MAX_LISTED_TABLES)
                else ""
            )
            raise _error(
                spec,
                f"the {kind} database {mask_url(spec.uri)} has no table '{spec.table}'; "
                f"available tables: {shown}{more}",
            )
        name = matches[0]
    try:
        return backend.table(name, database=database)
    except Exception as exc:
        raise _error(spec, f"cannot open the table '{spec.table}': {one_line(exc)}") from None


def _run_query(spec: SourceSpec, backend: ibis.BaseBackend, kind: str) -> ibis.Table:
    # A trailing semicolon is natural in SQL files but breaks the query as a subquery.
    query = (spec.query or "").strip().rstrip(";").strip()
    try:
        if backend.name == "duckdb":
            # ibis 12 infers a DuckDB query's schema through a cursor method DuckDB 2 removed;
            # describing the query ourselves and handing ibis the schema avoids that path.
            rows = backend.con.sql(f"DESCRIBE {query}").fetchall()
            mapper = backend.compiler.type_mapper
            schema = sch.Schema(
                {
                    col: mapper.from_string(typ, nullable=null == "YES")
                    for col, typ, null, *_ in rows
                }
            )
            return backend.sql(query, schema=schema)
        return backend.sql(query)
    except Exception as exc:
        raise _error(spec, f"the query on the {kind} database failed: {one_line(exc)}") from None


# --------------------------------------------------------------------------------------------
# staging
# --------------------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return sg.to_identifier(name, quoted=True).sql("duckdb")


def _drop_temp(con: ibis.BaseBackend, name: str) -> None:
    """Remove a temporary table or view ``name`` from a DuckDB ``con``, whichever it is.

    A source reopened in another form (a file after an API) must be able to take its name back,
    and DuckDB will not replace a view with a table or the reverse.
    """
    if con.name != "duckdb":
        return
    rows = con.con.execute(
        "SELECT 'TABLE' FROM duckdb_tables() WHERE temporary AND table_name = ? "
        "UNION ALL SELECT 'VIEW' FROM duckdb_views() WHERE temporary AND view_name = ?",
        [name, name],
    ).fetchall()
    for (kind,) in rows:
        con.con.execute(f"DROP {kind} IF EXISTS temp.main.{_quote(name)}").fetchall()


def _record_batches(backend: ibis.BaseBackend, table: ibis.Table) -> pa.RecordBatchReader:
    """Stream ``table`` out of ``backend`` as Arrow record batches of ``BATCH_ROWS`` rows."""
    schema = table.schema()
    if backend.name == "duckdb":
        # ibis 12 streams DuckDB results through a cursor method that DuckDB 2 removed (and a
        # failed attempt leaves the connection unusable), so compile and stream here instead.
        backend._run_pre_execute_hooks(table)  # registers in-memory tables the query uses
        relation = backend.con.sql(backend.compile(table))
        read = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
        return read(BATCH_ROWS)
    if backend.name == "sqlite":
        # ibis' SQLite backend reads the whole result before handing out batches.
        return pa.RecordBatchReader.from_batches(
            schema.to_pyarrow(), _sqlite_batches(backend, table, schema)
        )
    return table.to_pyarrow_batches(chunk_size=BATCH_ROWS)


def _sqlite_batches(
    backend: ibis.BaseBackend, table: ibis.Table, schema: sch.Schema
) -> Iterator[pa.RecordBatch]:
    import pandas as pd
    from ibis.backends.sqlite.converter import SQLitePandasData

    target = schema.to_pyarrow()
    cursor = backend.con.execute(backend.compile(table))
    try:
        while rows := cursor.fetchmany(BATCH_ROWS):
            frame = pd.DataFrame.from_records(rows, columns=schema.names, coerce_float=True)
            frame = SQLitePandasData.convert_table(frame, schema)
            yield from pa.Table.from_pandas(frame, schema=target, preserve_index=False).to_batches()
    finally:
        cursor.close()


def _without_null_types(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    # A column that is null throughout has Arrow type null, which engines cannot store.
    schema = reader.schema
    if not any(pa.types.is_null(field.type) for field in schema):
        return reader
    target = pa.schema(
        [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    )
    return reader.cast(target)


def _copy_batches(con: ibis.BaseBackend, name: str, reader: pa.RecordBatchReader) -> ibis.Table:
    reader = _without_null_types(reader)
    schema = reader.schema
    if spark.is_spark(con):
        return spark.load_arrow(con, name, reader.read_all())
    if postgres.is_postgres(con):
        return postgres.load_arrow(con, name, reader)
    if con.name == "duckdb":
        _drop_temp(con, name)
        view = f"_custval_batch_{uuid.uuid4().hex}"
        target = _quote(name)
        # One batch at a time, pulled here rather than by DuckDB: DuckDB would read a registered
        # reader from its own threads, and a SQLite cursor may only be used by its own thread.
        batches = iter(reader)
        first = next(batches, None)
        chunk = pa.Table.from_batches([first] if first is not None else [], schema=schema)
        statement = f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT * FROM {_quote(view)}"
        while chunk is not None:
            con.con.register(view, chunk)
            try:
                con.con.execute(statement).fetchall()
            finally:
                con.con.unregister(view)
            statement = f"INSERT INTO {target} SELECT * FROM {_quote(view)}"
            batch = next(batches, None)
            chunk = None if batch is None else pa.Table.from_batches([batch], schema=schema)
        return con.table(name)
    con.create_table(name, schema=sch.Schema.from_pyarrow(schema), temp=True, overwrite=True)
    for batch in reader:
        if batch.num_rows:
            con.insert(name, pa.Table.from_batches([batch], schema=schema))
    return con.table(name)


def _load_into(
    spec: SourceSpec, con: ibis.BaseBackend, name: str, reader: pa.RecordBatchReader
) -> ibis.Table:
    try:
        return _copy_batches(con, name, reader)
    except Exception as exc:
        raise _error(
            spec, f"cannot load the records onto the working engine: {one_line(exc)}"
        ) from None


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def _dig(body: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted ``path`` in a JSON body; list items by number ("items.0.id")."""
    value = body
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return False, None
    return True, value


#: Query parameters in order; a list, since a key may repeat (?status=a&status=b).
Params = list[tuple[str, str]]


def _query(spec: SourceSpec, paging: Mapping[str, str]) -> tuple[str, Params]:
    """The URL without its query, and all query parameters of one request.

    Parameters written in the URI are kept (httpx would replace them with ``params``); those in
    ``http.params`` and the paging ones override parameters of the same name.
    """
    base, _, rest = spec.uri.partition("?")
    written = parse_qsl(rest.partition("#")[0], keep_blank_values=True)
    override = {**spec.http.params, **paging}
    return base, [(k, v) for k, v in written if k not in override] + list(override.items())


def _display_url(spec: SourceSpec, params: Params) -> str:
    base = spec.uri.partition("?")[0]
    return mask_url(f"{base}?{urlencode(params)}" if params else base)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; the exponential backoff serves as well
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _request(spec: SourceSpec, client: httpx.Client, params: Params, what: str) -> Any:
    """GET one page with retries; returns the parsed JSON body."""
    import httpx

    http = spec.http
    attempts = 0
    while True:
        attempts += 1
        wait: float | None = None
        try:
            response = client.get(
                spec.uri.partition("?")[0],
                params=params,
                headers=http.headers,
                timeout=http.timeout_s,
            )
        except httpx.TimeoutException:
            last = f"timed out after {http.timeout_s:g} s"
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise _error(
                spec, f"cannot request {_display_url(spec, params)}: {one_line(exc)}"
            ) from None
        except httpx.TransportError as exc:
            last = f"connection failed ({type(exc).__name__}: {one_line(exc) or 'no detail'})"
        except httpx.HTTPError as exc:
            raise _error(
                spec, f"GET {_display_url(spec, params)} ({what}) failed: {one_line(exc)}"
            ) from None
        else:
            status = response.status_code
            if status == 429 or status >= 500:
                last = f"HTTP {status} {response.reason_phrase}".rstrip()
                if status in (429, 503):
                    wait = _retry_after(response)
            elif status >= 300:
                body = " ".join(response.text[:200].split())
                hint = (
                    "Check the credentials in http.headers or http.params"
                    if status in (401, 403)
                    else None
                )
                raise _error(
                    spec,
                    f"GET {_display_url(spec, params)} ({what}) failed with HTTP {status} "
                    f"{response.reason_phrase}: {body!r}",
                    hint=hint,
                )
            else:
                return _parse_json(spec, response, params, what)
        if attempts > http.max_retries:
            raise _error(
                spec,
                f"GET {_display_url(spec, params)} ({what}) failed: {last}; gave up after "
                f"{attempts} attempt{'s' if attempts != 1 else ''}",
                hint="Check that the API is up, or raise http.timeout_s or http.max_retries",
            )
        if wait is None:
            wait = min(http.backoff_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
        time.sleep(wait)


def _parse_json(spec: SourceSpec, response: httpx.Response, params: Params, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        start = " ".join(response.text[:80].split())
        raise _error(
            spec,
            f"the response to GET {_display_url(spec, params)} ({what}) is not JSON "
            f"({kind}; it starts {start!r})",
        ) from None


def _page_records(spec: SourceSpec, body: Any, params: Params, what: str) -> list[dict[str, Any]]:
    field = spec.http.records_field
    if field is None:
        records = body
        if isinstance(body, dict):
            raise _error(
                spec,
                f"the response to GET {_display_url(spec, params)} ({what}) is a JSON object, "
                f"not a list of records (its fields: {', '.join(list(body)[:10])})",
                hint="Set http.records_field to the field that holds the records",
            )
    else:
        found, records = _dig(body, field)
        if not found:
            fields = ", ".join(list(body)[:10]) if isinstance(body, dict) else type(body).__name__
            raise _error(
                spec,
                f"the response to GET {_display_url(spec, params)} ({what}) has no field "
                f"'{field}' (records_field); it holds: {fields}",
            )
    where = "the body" if field is None else f"'{field}'"
    if not isinstance(records, list):
        raise _error(
            spec,
            f"{where} in the response to GET {_display_url(spec, params)} ({what}) is "
            f"{type(records).__name__}, not a list of records",
        )
    bad = next((r for r in records if not isinstance(r, dict)), None)
    if bad is not None:
        raise _error(
            spec,
            f"{where} in the response to GET {_display_url(spec, params)} ({what}) holds "
            f"{type(bad).__name__} values, not JSON objects (first: {json.dumps(bad)[:60]})",
        )
    return records


def _iter_records(spec: SourceSpec, client: httpx.Client) -> Iterator[dict[str, Any]]:
    http: HttpOptions = spec.http
    if http.pagination == "none":
        _, params = _query(spec, {})
        body = _request(spec, client, params, "single request")
        yield from _page_records(spec, body, params, "single request")
        return
    previous: list[dict[str, Any]] | None = None
    cursor: str | None = None
    seen_cursors: set[str] = set()
    for n in range(http.max_pages):
        paging: dict[str, str] = {}
        if http.pagination == "page":
            page = http.first_page + n
            paging = {http.page_param: str(page), http.page_size_param: str(http.page_size)}
            what = f"page {page}"
        else:
            if cursor is not None:
                paging = {http.cursor_param: cursor}
            what = "first page" if cursor is None else f"cursor {cursor!r}"
        _, params = _query(spec, paging)
        body = _request(spec, client, params, what)
        records = _page_records(spec, body, params, what)
        if http.pagination == "page":
            if records and records == previous:
                raise _error(
                    spec,
                    f"the API at {mask_url(spec.uri)} returned the same records for "
                    f"{what} as for the page before; it seems to ignore '{http.page_param}'",
                    hint='Set http.pagination = "none" if it returns everything at once',
                )
            yield from records
            if len(records) < http.page_size:
                return
            previous = records
        else:
            yield from records
            found, value = _dig(body, http.next_cursor_field)
            if not found or value is None or value == "":
                return
            cursor = str(value)
            if cursor in seen_cursors:
                raise _error(
                    spec,
                    f"the API at {mask_url(spec.uri)} returned the cursor {cursor!r} twice; "
                    "paging would never end",
                )
            seen_cursors.add(cursor)
    raise _error(
        spec,
        f"the API at {mask_url(spec.uri)} still had more records after {http.max_pages} pages",
        hint="Raise http.max_pages, or a larger http.page_size",
    )


def _records_to_arrow(records: list[dict[str, Any]]) -> pa.Table:
    """Records with possibly different keys as one Arrow table (columns: the union of keys)."""
    keys = dict.fromkeys(key for record in records for key in record)
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [record.get(key) for record in records]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # Mixed types in one column (3 and "3", or a number too large for int64): keep every
            # value, as text, rather than fail; cleaning parses text anyway.
            array = pa.array(
                [v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                type=pa.string(),
            )
        if pa.types.is_null(array.type):
            array = array.cast(pa.string())
        columns[str(key)] = array
    return pa.table(columns) if columns else pa.table({})
