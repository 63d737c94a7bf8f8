"""Spark as the engine: the session, the sources Spark reads, and dates in Spark's patterns.

The session is reached through Spark Connect (``sc://host:15002``: Databricks, EMR, Dataproc,
or a pysail server) or started here with a master (``local[4]``: needs the full pyspark and
Java). Ibis' PySpark backend (ibis 12) supports pyspark 3.5 up to, not including, 4.1; another
version is refused by name before anything runs.

Sources that Spark reads open as Ibis tables where they lie: Parquet, CSV and JSON lines files
(local paths for a local Spark; ``s3://``, ``abfss://``, ``gs://``, ``hdfs://``, ``dbfs:/`` for
a cluster), and tables or queries of its catalog (``uri = "catalog://db.table"``, or
``uri = "catalog://"`` with ``query``). CSV columns are read as text, as on DuckDB, so that
cleaning parses them with the same rules.

Every failure names the source (or the engine's address), never a Java stack trace.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import ibis
import pyarrow as pa

from custval.config import EngineOptions, FileFormat, SourceSpec, mask_url
from custval.errors import EngineError, SourceError

if TYPE_CHECKING:
    import ibis.expr.types as ir

#: the pyspark versions ibis 12's PySpark backend supports: [low, high)
SUPPORTED_PYSPARK = ((3, 5), (4, 1))
#: the file systems only a cluster reads: their paths are handed to Spark as they are
REMOTE_SCHEMES = frozenset(
    {"s3", "s3a", "s3n", "gs", "hdfs", "abfs", "abfss", "wasb", "wasbs", "dbfs", "adl", "oci"}
)
CATALOG_SCHEME = "catalog"
DEFAULT_CONNECT_PORT = 15002

# strftime directives and the Spark (java.time) pattern letters that read the same text; the
# one-letter forms accept one or two digits, as DuckDB's strptime does
_JAVA: dict[str, tuple[str, str]] = {
    "Y": ("yyyy", "yyyy"),
    "m": ("M", "MM"),
    "d": ("d", "dd"),
    "H": ("H", "HH"),
    "M": ("m", "mm"),
    "S": ("s", "ss"),
    "f": ("SSSSSS", "SSSSSS"),
    "y": ("yy", "yy"),
    "b": ("MMM", "MMM"),
    "B": ("MMMM", "MMMM"),
    "p": ("a", "a"),
    "I": ("h", "hh"),
}


# the project file's encodings by their Java names
_CHARSETS = {
    "utf-8": "UTF-8",
    "utf-16": "UTF-16",
    "latin-1": "ISO-8859-1",
    "cp1252": "windows-1252",
}


def is_spark(con: ibis.BaseBackend) -> bool:
    """Whether ``con`` is Ibis' PySpark backend."""
    return con.name == "pyspark"


# --------------------------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------------------------


def check_pyspark() -> str:
    """The installed pyspark's version, or :class:`EngineError` naming it and the range."""
    try:
        import pyspark
    except ImportError:
        raise EngineError(
            "the Spark engine needs pyspark, which is not installed",
            hint="pip install 'custval[spark]' (pyspark-client for Spark Connect)",
        ) from None
    version = str(pyspark.__version__)
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    low, high = SUPPORTED_PYSPARK
    if not low <= parts < high:
        raise EngineError(
            f"pyspark {version} is installed, and custval's Spark engine (through ibis 12) "
            f"supports pyspark {low[0]}.{low[1]} up to, not including, {high[0]}.{high[1]}",
            hint="pip install 'custval[spark]', which brings a supported pyspark-client",
        )
    return version


def connect(options: EngineOptions) -> ibis.BaseBackend:
    """An Ibis PySpark connection to the Spark ``options`` name (Spark Connect or a master),
    in UTC, with the options' Spark settings."""
    con = ibis.pyspark.connect(session(options))
    con.compiler = _compiler()
    # ibis 12 asserts that Spark reports a released cache as released, which Spark Connect
    # servers do not always do (pysail): the assertion's traceback would be printed at exit
    con._drop_cached_table = partial(_release, con)
    con._create_cached_table = partial(_cache, con)
    return con


def _cache(con: ibis.BaseBackend, name: str, expr: ir.Table) -> ir.Table:
    """``Table.cache()`` (the features' shared parts) as :func:`kept`."""
    frame = kept(spark_frame(con, expr))
    frame.createOrReplaceTempView(name)
    con._cached_dataframes[name] = frame
    return con.table(name)


def _release(con: ibis.BaseBackend, name: str) -> None:
    """Free what ``Table.cache()`` cached under ``name`` (the features' shared parts)."""
    frame = con._cached_dataframes.pop(name, None)
    with contextlib.suppress(Exception):
        con._session.catalog.dropTempView(name)
        if frame is not None:
            frame.unpersist()


def _compiler() -> Any:
    """Ibis' PySpark compiler, with float literals written as doubles.

    ibis 12 writes the float 7.0 as ``7.0``, which Spark reads as a DECIMAL(2, 1): a day count
    divided by it loses digits (40 / 7.0 gave 5.7142 on pysail, where DuckDB gives
    5.714285714285714). A cast keeps it the double Ibis means."""
    from ibis.backends.sql.compilers.pyspark import PySparkCompiler

    class DoubleLiterals(PySparkCompiler):
        def visit_NonNullLiteral(self, op: Any, *, value: Any, dtype: Any) -> Any:  # noqa: N802
            found = super().visit_NonNullLiteral(op, value=value, dtype=dtype)
            if dtype.is_floating() and math.isfinite(value):
                return self.cast(found, dtype)
            return found

    return DoubleLiterals()


def session(options: EngineOptions) -> Any:
    """The SparkSession ``options`` name, once the server answers (within
    ``connect_timeout_s``); :class:`EngineError` otherwise."""
    import os

    check_pyspark()
    url = options.url or os.environ.get("SPARK_REMOTE")
    if not url:
        raise EngineError(
            "the Spark engine has no address",
            hint='Set url = "sc://host:15002" (Spark Connect) or "local[4]" under [engine] in '
            "custval.toml, or the SPARK_REMOTE variable",
        )
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if url.startswith("sc://"):
        _wait_for(url, options.connect_timeout_s)
        builder = builder.remote(url)
    else:
        builder = _classic(builder, url)
    settings = {"spark.sql.session.timeZone": "UTC", **options.settings}
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
        spark.sql("SELECT 1").collect()
    except Exception as exc:
        raise EngineError(
            f"Spark at {mask_url(url)} refused the session: {_one_line(exc)}",
            hint="Check the address and the Spark settings under [engine]",
        ) from None
    return spark


def _classic(builder: Any, master: str) -> Any:
    """A builder for a Spark started by this process (a master URL: local[N], yarn...)."""
    try:
        from pyspark import SparkContext  # noqa: F401 (absent from pyspark-client)
    except ImportError:
        raise EngineError(
            f"the Spark master '{master}' needs the full pyspark, and only the Spark Connect "
            "client (pyspark-client) is installed",
            hint="Give a Spark Connect address (sc://host:15002), or pip install "
            "'pyspark>=3.5,<4.1' with Java 17",
        ) from None
    return builder.master(master)


def _wait_for(url: str, timeout_s: float) -> None:
    """Wait until the Spark Connect server at ``url`` accepts a connection, at most
    ``timeout_s`` seconds; the Connect client itself would retry for minutes."""
    parts = urlsplit(url.split(";", 1)[0])
    host, port = parts.hostname or "localhost", parts.port or DEFAULT_CONNECT_PORT
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=min(5.0, timeout_s)).close()
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"Spark Connect at {host}:{port} does not answer after {timeout_s:g} s: "
                    f"{exc.strerror or exc}",
                    hint="Check that the Spark Connect server runs and that this machine "
                    "reaches it; [engine] connect_timeout_s sets the wait",
                ) from None
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


def scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def opens_here(spec: SourceSpec) -> bool:
    """Whether Spark itself reads ``spec`` (its catalog or a cluster file system)."""
    return scheme(spec.uri) in REMOTE_SCHEMES | {CATALOG_SCHEME}


def open_catalog(spec: SourceSpec, con: ibis.BaseBackend, name: str) -> ir.Table:
    """A table or query of Spark's catalog (``catalog://db.table`` or ``query``)."""
    spark = con._session
    table = spec.uri.split("://", 1)[1] or spec.table
    if spec.query:
        frame = spark.sql(spec.query)
    elif table:
        frame = spark.table(table)
    else:
        raise _error(
            spec,
            "a catalog source names neither a table nor a query",
            hint='Write uri = "catalog://db.table", or uri = "catalog://" and query = "SELECT .."',
        )
    return _registered(spec, con, frame, name, table or "the query")


def open_files(
    spec: SourceSpec,
    con: ibis.BaseBackend,
    name: str,
    groups: list[list[str]],
    fmt: FileFormat,
    delimiter: str | None = None,
) -> ir.Table:
    """Files Spark reads where they lie, as an Ibis table named ``name``: CSV as text
    (``delimiter``: the detected one, else the source's, else a comma), Parquet and JSON lines
    with their types. ``groups`` are paths (or globs) read together; the groups are joined by
    column name (a column one lacks is null there). Parquet files whose column types differ
    are refused, naming the source."""
    reader = con._session.read
    frames = []
    for paths in groups:
        if fmt == "csv":
            frames.append(_read_csv(spec, reader, paths, delimiter))
        elif fmt == "parquet":
            frames.append(reader.option("mergeSchema", "true").parquet(*paths))
        elif fmt == "json":
            frames.append(reader.json(paths))
        else:
            raise _error(
                spec,
                f"Spark does not read {fmt} files",
                hint="Save the sheet as CSV or Parquet where the cluster reads it",
            )
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other, allowMissingColumns=True)
    paths = [p for group in groups for p in group]
    where = paths[0] if len(paths) == 1 else f"{len(paths)} files ({paths[0]}, ...)"
    return _registered(spec, con, frame, name, where)


def _read_csv(spec: SourceSpec, reader: Any, paths: list[str], delimiter: str | None) -> Any:
    options = spec.csv
    if (delimiter or options.delimiter) == "whitespace":
        raise _error(
            spec,
            "Spark does not read files separated by runs of blanks",
            hint="Convert the file to CSV or Parquet, or run this source on DuckDB",
        )
    frame = (
        reader.option("header", options.header)
        .option("sep", delimiter or options.delimiter or ",")
        # RFC 4180 doubles a quote inside quotes; Spark's default escape is a backslash
        .option("quote", '"')
        .option("escape", '"')
        .option("encoding", _CHARSETS.get(options.encoding or "utf-8", "UTF-8"))
        # a cluster's files whose header differs from the first's fail rather than shift
        # (Spark 3.5+; files of this machine are grouped by header before)
        .option("enforceSchema", "false")
        .csv(paths)
    )
    if options.names:
        frame = frame.toDF(*options.names)
    return frame


def _registered(spec: SourceSpec, con: ibis.BaseBackend, frame: Any, name: str, where: str):
    """``frame`` as the temporary view ``name`` on ``con``, once one row of it has been read:
    an unreadable path or mismatched files fail here, naming the source."""
    try:
        frame.createOrReplaceTempView(name)
        probe = frame.limit(1).collect()
    except Exception as exc:
        raise read_error(spec, where, exc) from None
    if not probe:
        raise _error(spec, f"{where} has no rows")
    return con.table(name)


def read_error(spec: SourceSpec, where: str, exc: BaseException) -> SourceError:
    """Spark's error reading ``where`` for ``spec``, in one line, with what to check."""
    text = _one_line(exc)
    lowered = text.lower()
    if any(word in lowered for word in ("merge", "schema", "header", "incompatible")):
        hint = "Make every file of the source have the same columns and types"
    else:
        hint = (
            "The path must be one the cluster reads, with its credentials (s3://, abfss://, "
            "gs://, hdfs://, dbfs:/ or a folder every node shares); a path on this machine "
            "serves a local Spark only"
        )
    return _error(spec, f"Spark cannot read {where}: {text}", hint=hint)


def _error(spec: SourceSpec, problem: str, hint: str | None = None) -> SourceError:
    return SourceError(problem, source=spec.name or mask_url(spec.uri), hint=hint)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a Spark error, without the JVM's stack trace or error class prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = " ".join(text.split()).rstrip(" .")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# working tables
# --------------------------------------------------------------------------------------------


def spark_frame(con: ibis.BaseBackend, expr: ir.Table) -> Any:
    """The Spark DataFrame of the Ibis table ``expr`` on ``con`` (its in-memory tables sent)."""
    con._run_pre_execute_hooks(expr)
    return con._session.sql(con.compile(expr))


def materialise(con: ibis.BaseBackend, name: str, expr: ir.Table) -> ir.Table:
    """``expr`` computed once and kept by Spark under the temporary view ``name``: what a
    temporary table is on DuckDB."""
    drop(con, name)
    frame = kept(spark_frame(con, expr))
    frame.createOrReplaceTempView(name)
    _cached(con)[name] = frame
    return con.table(name)


def kept(frame: Any) -> Any:
    """``frame`` computed now and kept by the executors (a local checkpoint), so that later
    queries read it rather than compute it again; where the server has no checkpoints (Spark
    Connect before 4.0, pysail without ``SAIL_EXECUTION__CHECKPOINT__PATH``), cached (which
    pysail 0.7 ignores: each query then computes it again)."""
    try:
        return frame.localCheckpoint(eager=True)
    except Exception as exc:
        text = str(exc).lower()
        if "checkpoint" not in text and "support" not in text and "unknown" not in text:
            raise
        return frame.cache()


def drop(con: ibis.BaseBackend, name: str) -> None:
    """Forget the view ``name`` and free what Spark cached for it."""
    frame = _cached(con).pop(name, None)
    quoted = "`" + name.replace("`", "``") + "`"
    con._session.sql(f"DROP VIEW IF EXISTS {quoted}").collect()
    if frame is not None:
        frame.unpersist()


def load_arrow(con: ibis.BaseBackend, name: str, table: pa.Table) -> ir.Table:
    """An Arrow table made on this machine (an API's records, a database's rows) sent to
    Spark as the temporary view ``name``."""
    drop(con, name)
    frame = con._session.createDataFrame(table)
    frame.createOrReplaceTempView(name)
    return con.table(name)


def _cached(con: ibis.BaseBackend) -> dict[str, Any]:
    found = getattr(con, "_custval_cached", None)
    if found is None:
        found = {}
        con._custval_cached = found
    return found


# --------------------------------------------------------------------------------------------
# dates
# --------------------------------------------------------------------------------------------


def java_pattern(fmt: str) -> str:
    """The Spark datetime pattern that reads what the strftime format ``fmt`` reads.

    Fields written next to each other without a separator (``%Y%m%d``) take their fixed
    widths; elsewhere one or two digits are accepted, as DuckDB's strptime accepts them.
    Literal text is quoted.

    Example
    -------
    >>> java_pattern("%d.%m.%Y %H:%M")
    'd.M.yyyy H:m'
    >>> java_pattern("%Y%m%d")
    'yyyyMMdd'
    >>> java_pattern("%Y-%m-%dT%H:%M:%SZ")
    "yyyy-M-d'T'H:m:s'Z'"
    """
    tokens: list[tuple[str, str]] = []  # ("field", directive) or ("text", literal)
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            tokens.append(("field", fmt[i + 1]))
            i += 2
        else:
            tokens.append(("text", fmt[i]))
            i += 1
    out: list[str] = []
    for k, (kind, value) in enumerate(tokens):
        if kind == "text":
            out.append(_literal(value))
            continue
        if value not in _JAVA:
            raise ValueError(f"the date format directive %{value} has no Spark equivalent")
        touching = any(0 <= j < len(tokens) and tokens[j][0] == "field" for j in (k - 1, k + 1))
        out.append(_JAVA[value][1 if touching else 0])
    return "".join(out)


def _literal(char: str) -> str:
    return f"'{char}'" if char.isalpha() else ("''" if char == "'" else char)
