"""What each kind of table must hold, and its validation.

A contract lists custval's column names for one kind of table (transactions, customers, web
sessions, product usage, service interactions, id map, a product catalogue, subscriptions and a
campaign's treatment log), which are required, their type and their allowed range or values.
Users map their own column names onto these in ``custval.toml``.

Validation reads the raw source (strings straight from a CSV, or typed columns from Parquet or a
database) and reports, per column, how many rows break the contract with up to five example rows.
Errors stop the pipeline; warnings (for instance rows without an id, which cleaning drops) are
reported and counted but let it go on.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir
from ibis.common.exceptions import IbisError

from custval.config import DEFAULT_DATE_FORMATS, SourceSpec
from custval.data import postgres
from custval.data.sources import field_separator
from custval.data.spark import java_pattern
from custval.data.textfiles import (
    AMBIGUOUS_COMMA,
    AMBIGUOUS_DOT,
    COMMA_DECIMAL,
    DOT_DECIMAL,
    GROUPED_COMMA_NUMBER,
    GROUPED_DOT_NUMBER,
    decide_decimal,
)
from custval.errors import MAX_EXAMPLES, ContractError, CustvalError, DataValidationError

#: cleaning's rule (and flag column) for amounts read with a decimal comma
DECIMAL_COMMAS_READ = "decimal_commas_read"

ColumnType = Literal["id", "timestamp", "date", "amount", "number", "bool", "category", "text"]


@dataclass(frozen=True)
class Column:
    """One column of a contract.

    ``required`` columns must exist in the source; in a required column, blank values are
    reported (cleaning drops those rows) unless ``values_required`` is false; an optional column
    with ``drop_blank`` is treated the same way when the source has it. ``minimum`` applies
    to ``number`` and ``amount`` columns (for example counts cannot be negative); ``allowed``
    lists a category's only values (after trimming and lower-casing); ``not_before`` names a
    date or timestamp column of the same row that this one may not precede (a cancellation
    after its start).
    """

    name: str
    type: ColumnType
    required: bool = False
    description: str = ""
    minimum: float | None = None
    values_required: bool = True
    drop_blank: bool = False
    allowed: tuple[str, ...] = ()
    not_before: str | None = None


@dataclass(frozen=True)
class Contract:
    """The columns a kind of table holds. ``key`` is the column that identifies a customer."""

    kind: str
    columns: tuple[Column, ...]
    key: str = "customer_id"

    def get(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def required(self) -> list[Column]:
        return [c for c in self.columns if c.required]


_CUST = Column("customer_id", "id", True, "the customer's id in this source's id namespace")

CONTRACTS: dict[str, Contract] = {
    "transactions": Contract(
        "transactions",
        (
            _CUST,
            # without order ids every row is an order (CDNOW and many exports have none)
            Column("order_id", "id", False, "order (or refund) identifier", drop_blank=True),
            Column("timestamp", "timestamp", True, "when the order was placed"),
            Column("amount", "amount", True, "order value in currency; negative for refunds"),
            Column("category", "category", False, "product category"),
            Column("channel", "category", False, "sales channel (web, app, branch, phone...)"),
            Column("product_id", "id", False, "the product bought (see a products source)"),
        ),
    ),
    "customers": Contract(
        "customers",
        (
            _CUST,
            Column("signup_date", "date", False, "date the customer relationship began"),
            Column("birth_date", "date", False, "date of birth"),
            Column("region", "category", False, "region"),
            Column("acquisition_channel", "category", False, "how the customer was acquired"),
            Column("plan", "category", False, "subscription plan"),
            Column("services", "text", False, "subscribed services, separated by ';'"),
            # a label as the business writes it: kept as text, blanks stay missing
            Column("segment_label", "text", False, "a known segment, where one is known"),
        ),
    ),
    "web_sessions": Contract(
        "web_sessions",
        (
            _CUST,
            Column("timestamp", "timestamp", True, "session start"),
            Column("session_id", "id", False, "session identifier"),
            Column("page_views", "number", False, "pages viewed in the session", 0),
            Column("duration_sec", "number", False, "session length in seconds", 0),
            Column("blogs_viewed", "number", False, "blog posts viewed", 0),
            Column("videos_viewed", "number", False, "videos viewed", 0),
            Column("whitepapers_viewed", "number", False, "whitepapers viewed", 0),
            Column("converted", "bool", False, "the session ended in a sale"),
        ),
    ),
    "product_usage": Contract(
        "product_usage",
        (
            _CUST,
            Column("date", "date", True, "day of use"),
            Column("features_used", "number", False, "distinct product features used that day", 0),
            Column("sessions", "number", False, "product sessions that day", 0),
            Column("time_sec", "number", False, "time in the product that day, seconds", 0),
        ),
    ),
    "interactions": Contract(
        "interactions",
        (
            _CUST,
            Column("timestamp", "timestamp", True, "when the ticket was opened"),
            Column("ticket_id", "id", False, "ticket identifier"),
            Column("kind", "category", False, "question, complaint, incident..."),
            Column("resolved", "bool", False, "whether the ticket was resolved"),
            Column("resolution_hours", "number", False, "hours to resolution", 0),
        ),
    ),
    # a catalogue: one row per product, no customer in it
    "products": Contract(
        "products",
        (
            Column("product_id", "id", True, "the product's id, as transactions name it"),
            Column("name", "text", False, "the product's name"),
            Column("category", "category", False, "product category"),
            Column("price", "amount", False, "list price in currency", 0),
        ),
        key="product_id",
    ),
    "subscriptions": Contract(
        "subscriptions",
        (
            _CUST,
            Column("subscription_id", "id", False, "subscription identifier", drop_blank=True),
            Column("plan", "category", False, "the subscribed plan"),
            Column("started_at", "timestamp", True, "when the subscription began"),
            Column(
                "cancelled_at",
                "timestamp",
                False,
                "when it was cancelled; empty while active",
                not_before="started_at",
            ),
            Column("monthly_fee", "amount", False, "the fee per month, currency", 0),
        ),
    ),
    # a campaign log: who was contacted (treatment) or held out (control), when, how
    "treatments": Contract(
        "treatments",
        (
            _CUST,
            Column("campaign_id", "id", False, "the campaign"),
            Column("sent_at", "timestamp", True, "when the offer was sent (or held back)"),
            Column(
                "group",
                "category",
                True,
                "treatment (contacted) or control (held out at random)",
                allowed=("treatment", "control"),
            ),
            Column("offer", "text", False, "what was offered"),
            Column("channel", "category", False, "how: email, sms, phone..."),
            Column("cost", "amount", False, "the cost of the contact, currency", 0),
            Column("retained", "bool", False, "the customer stayed (the campaign's outcome)"),
        ),
    ),
}

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")


@ibis.udf.scalar.builtin(name="try_strptime")
def _try_strptime(value: str, fmt: str) -> dt.Timestamp(): ...  # type: ignore[valid-type]


@ibis.udf.scalar.builtin(name="try_to_timestamp")
def _try_to_timestamp(value: str, fmt: str) -> dt.Timestamp(): ...  # type: ignore[valid-type]


@ibis.udf.scalar.builtin(name="trim")
def _trim(value: str) -> str:
    """Strip surrounding spaces. Ibis' own strip also strips tabs and newlines, but DuckDB runs
    that form at a third of the speed, and ids padded with tabs have not been seen in exports."""


@ibis.udf.scalar.builtin(name="substring")
def sql_substring(value: str, start: int, length: int) -> str: ...  # 1-based, as in SQL


_EXAMPLE = datetime(2000, 11, 22, 13, 14, 15, 123456)


def _shape(text: ir.StringValue, fmt: str) -> ir.BooleanValue:
    """Cheap test that ``text`` looks like ``fmt``: same length, same separators at the places
    that tell the common formats apart (3rd, 5th and 11th character)."""
    example = _EXAMPLE.strftime(fmt)
    test = text.length() == len(example)
    for pos in (3, 5, 11):
        if pos > len(example):
            continue
        char = sql_substring(text, pos, 1)
        c = example[pos - 1]
        test &= char.between("0", "9") if c.isdigit() else char == c
    return test


def parse_dates(text: ir.StringValue, formats: tuple[str, ...]) -> ir.TimestampValue:
    """Parse text with the first of ``formats`` that fits.

    Trying every format on every row costs a failed parse per format (17 by default), and
    trimming every value costs as much again; instead, with the default formats, ISO text goes
    through DuckDB's fast cast, each other row to the format its shape matches, and only rows
    that fit no shape (" 2024-01-05", "5.1.2024") try every format in order on the trimmed text.
    """
    parse = _parser(text)
    if formats == DEFAULT_DATE_FORMATS:
        # the default list starts with every ISO layout that the cast accepts
        iso = text.try_cast("timestamp")
        if parse is not _try_strptime:
            # Spark's cast also takes "2024" and "20240105" (a year): ISO-shaped text only
            iso = ibis.ifelse(sql_substring(text, 5, 1) == "-", iso, ibis.null("timestamp"))
        first: list[ir.Value] = [iso]
        rest = [f for f in formats if not f.startswith("%Y-%m-%d")]
    else:
        first, rest = [], list(formats)
    dispatched = ibis.cases(*[(_shape(text, f), parse(text, f)) for f in rest])
    trimmed = _trim(text)
    return ibis.coalesce(*first, dispatched, *[parse(trimmed, f) for f in formats])


def _parser(value: ir.Value) -> Callable[[ir.StringValue, str], ir.TimestampValue]:
    """The engine's parse of text in a strftime format, null where it does not fit: DuckDB's
    try_strptime, Spark's try_to_timestamp with the format in Spark's pattern letters, or
    PostgreSQL's to_timestamp behind the format's shape (:func:`custval.data.postgres.strptime`)."""
    try:
        backend = value._find_backend(use_default=True)
    except IbisError:
        return _try_strptime
    if backend.name == "pyspark":
        return lambda text, fmt: _try_to_timestamp(text, java_pattern(fmt))
    if backend.name == "postgres":
        return postgres.strptime
    return _try_strptime


def coerce(
    value: ir.Column, column: Column, formats: tuple[str, ...], decimal: str = "."
) -> ir.Column:
    """Turn a raw column into its contract type; unparseable values become null.

    Strings are parsed (dates in any of ``formats``, amounts and numbers with the ``decimal``
    mark and thousands grouped by the other, such as ``"1,234.50"`` or ``"1.234,50"``,
    booleans from true/false/yes/no/1/0); typed columns are cast.

    Example
    -------
    >>> t = ibis.memtable({"a": ["1,234.50", "7"]})
    >>> coerce(t.a, Column("amount", "amount"), ()).to_pyarrow().to_pylist()  # doctest: +SKIP
    [1234.5, 7.0]
    """
    if column.type in {"amount", "number"}:
        return _as_number(value, column.type, formats, decimal)
    parse = _COERCE.get(column.type)
    if parse is None:
        raise AssertionError(f"unknown column type {column.type}")
    return parse(value, column.type, formats)


def _as_id(value: ir.Column, kind: str, formats: tuple[str, ...]) -> ir.Column:
    if value.type().is_integer():
        # digits and a sign: nothing to trim or upper-case, never empty; skipping both saves
        # a quarter of the typing of a Parquet file with millions of rows
        return value.cast("string")
    if value.type().is_floating():
        # JSON and spreadsheets turn 1001 into 1001.0; as an id it is still 1001
        whole = value == value.floor()
        value = ibis.ifelse(whole, value.cast("int64").cast("string"), value.cast("string"))
    return _trim(value.cast("string")).upper().nullif("")


def _as_text(value: ir.Column, kind: str, formats: tuple[str, ...]) -> ir.Column:
    text = _trim(value.cast("string"))
    cleaned = text.lower() if kind == "category" else text
    return ibis.ifelse(text == "", ibis.null("string"), cleaned)


def _as_time(value: ir.Column, kind: str, formats: tuple[str, ...]) -> ir.Column:
    dtype = value.type()
    if dtype.is_timestamp() or dtype.is_date():
        ts = value.cast(dt.Timestamp())
    else:
        ts = parse_dates(value.cast("string"), formats)
    return ts.date() if kind == "date" else ts


def _as_number(
    value: ir.Column, kind: str, formats: tuple[str, ...], decimal: str = "."
) -> ir.Column:
    if value.type().is_numeric():
        return value.cast("float64")
    # DuckDB's cast ignores surrounding white space itself
    text = value.cast("string")
    nothing = ibis.null("float64")
    if decimal == ",":
        plain = text.replace(".", "").replace(",", ".").try_cast("float64")
        return ibis.ifelse(text.re_search(GROUPED_COMMA_NUMBER), plain, nothing)
    # a comma is read as a thousands separator only where it groups three digits, so that
    # "11,77" is refused as not a number rather than read as 1177
    stray = text.contains(",") & ~text.re_search(GROUPED_DOT_NUMBER)
    return ibis.ifelse(stray, nothing, text.replace(",", "").try_cast("float64"))


def decimal_mark(spec: SourceSpec, table: ir.Table, contract: Contract) -> str:
    """The decimal mark of the source's amounts and numbers: the configured one, else the one
    its values leave no doubt about (one query over the text columns).

    Raises :class:`ContractError` naming the column and example rows when the values allow
    both readings (only ``1,234``-like amounts in a ``;``-separated file) or mix both marks.

    Example
    -------
    >>> decimal_mark(spec, raw, CONTRACTS["transactions"])  # doctest: +SKIP
    ','
    """
    if spec.csv.decimal is not None:
        return spec.csv.decimal
    owns = [
        spec.column(c.name)
        for c in contract.columns
        if c.type in {"amount", "number"} and spec.column(c.name) in table.columns
    ]
    owns = [o for o in owns if table[o].type().is_string()]
    if not owns:
        return "."
    counts = {own: _mark_counts(table[own]) for own in owns}
    comma = sum(c[0] for c in counts.values())
    dot = sum(c[1] for c in counts.values())
    both = sum(c[2] for c in counts.values())
    decided = decide_decimal(comma, dot, both, field_separator(spec))
    if decided is not None:
        return decided
    own = next(o for o in owns if counts[o][2] or (comma and counts[o][0]))
    raise _decimal_error(spec, table, contract, own, comma, dot, counts[own][2])


def _mark_counts(v: ir.StringColumn) -> tuple[int, int, int]:
    """Values that are surely decimal commas, surely decimal points, and ambiguous. The
    regular expressions run only where they can tell something: on values with a comma (few,
    in most files), then on values with a dot only until one tells (or when no comma did)."""
    with_comma = v.contains(",").fill_null(False)
    first = (
        v.as_table()
        .filter(with_comma)
        .aggregate(
            comma=v.re_search(COMMA_DECIMAL).sum(),
            dot=v.re_search(DOT_DECIMAL).sum(),
            both=v.re_search(AMBIGUOUS_COMMA).sum(),
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    comma, dot, both = (int(first[k] or 0) for k in ("comma", "dot", "both"))
    dot_only = v.as_table().filter(v.contains(".").fill_null(False) & ~with_comma)
    told = dot_only.filter(v.re_search(DOT_DECIMAL))
    if comma:
        # the count matters only when it contradicts the commas
        dot += int(told.count().to_pyarrow().as_py())
    elif int(told.limit(1).count().to_pyarrow().as_py()):
        dot += 1
    elif not dot:
        both += int(dot_only.filter(v.re_search(AMBIGUOUS_DOT)).count().to_pyarrow().as_py())
    return comma, dot, both


def _decimal_error(
    spec: SourceSpec,
    table: ir.Table,
    contract: Contract,
    own: str,
    comma: int,
    dot: int,
    ambiguous: int,
) -> ContractError:
    v = table[own]
    if comma and dot:
        problem = (
            f"{comma:,} values are written with a decimal comma (like 11,77) and {dot:,} with "
            "a decimal point (like 11.77), so the decimal mark is unclear"
        )
        shown = v.re_search(COMMA_DECIMAL) | v.re_search(DOT_DECIMAL)
    else:
        sep = {"\t": "tab", "whitespace": "whitespace"}.get(field_separator(spec) or "", "")
        problem = (
            f"{ambiguous:,} values such as 1,234 may be read with a thousands separator "
            f"(1234) or a decimal comma (1.234), and the {sep or repr(field_separator(spec))}-"
            "separated file does not say which"
        )
        shown = v.re_search(AMBIGUOUS_COMMA) | v.re_search(AMBIGUOUS_DOT)
    key = spec.column(contract.key)
    cols = [key, own] if key in table.columns and key != own else [own]
    return ContractError(
        problem,
        source=spec.name,
        column=own,
        count=ambiguous or comma + dot,
        examples=_examples(table, shown.fill_null(False), cols),
        hint=hint_for(
            spec,
            "decimal",
            "Say which with --decimal , (decimal comma) or --decimal . (decimal point)",
            f'Set decimal = "," or "." under [sources.{spec.name}.csv] in custval.toml',
        ),
    )


def hint_for(spec: SourceSpec, key: str, with_flag: str, in_project: str) -> str:
    """A hint naming the flag of the command that built ``spec`` (see ``SourceSpec.flags``),
    else the setting of the project file."""
    return with_flag if key in spec.flags else in_project


def _as_bool(value: ir.Column, kind: str, formats: tuple[str, ...]) -> ir.Column:
    if value.type().is_boolean():
        return value
    text = _trim(value.cast("string")).lower()
    return ibis.cases((text.isin(TRUE_WORDS), True), (text.isin(FALSE_WORDS), False)).cast(
        "boolean"
    )


#: how :func:`coerce` parses each column type: (raw column, the type, date formats) -> column
_COERCE: dict[str, Callable[[ir.Column, str, tuple[str, ...]], ir.Column]] = {
    "id": _as_id,
    "category": _as_text,
    "text": _as_text,
    "timestamp": _as_time,
    "date": _as_time,
    "amount": _as_number,
    "number": _as_number,
    "bool": _as_bool,
}


def is_blank(value: ir.Column) -> ir.BooleanColumn:
    """Null, or a string of only white space."""
    if value.type().is_string():
        return value.isnull() | (_trim(value) == "")
    return value.isnull()


@dataclass
class Finding:
    """One problem found in one column of one source."""

    source: str
    column: str | None
    severity: Literal["error", "warning"]
    problem: str
    count: int
    examples: list[dict] = field(default_factory=list)
    hint: str | None = None

    def as_error(self) -> CustvalError:
        return ContractError(
            self.problem,
            source=self.source,
            column=self.column,
            count=self.count,
            examples=self.examples,
            hint=self.hint,
        )


@dataclass
class SourceReport:
    """What validation found in one source."""

    source: str
    kind: str
    rows: int
    columns: list[str]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def id_map_contract(spec: SourceSpec, namespaces: list[str]) -> Contract:
    """The id map holds one column per id namespace (crm_id, visitor_id, account_id...)."""
    return Contract(
        "id_map",
        tuple(
            # everyone has a primary id; not everyone has every other kind of id
            Column(ns, "id", True, f"identifier in the {ns} namespace", values_required=i == 0)
            for i, ns in enumerate(namespaces)
        ),
        key=namespaces[0],
    )


def _examples(table: ir.Table, predicate: ir.BooleanColumn, cols: list[str]) -> list[dict]:
    rows = table.filter(predicate).select(*cols).limit(MAX_EXAMPLES).to_pyarrow().to_pylist()
    return [{k: (str(v) if v is not None else None) for k, v in r.items()} for r in rows]


Check = tuple[Column, str, ir.BooleanColumn]
_PROBLEMS = {
    "timestamp": "a timestamp that matches none of the date formats",
    "date": "a date that matches none of the date formats",
    "amount": "an amount that is not a number",
    "number": "a value that is not a number",
    "bool": "a value that is not true/false/yes/no/1/0",
}


def missing_columns(spec: SourceSpec, table: ir.Table, contract: Contract) -> list[Finding]:
    """Errors found from the schema alone (no query): required columns the source lacks,
    mapped columns it lacks (a mapping is a promise that the column exists) and mappings of
    names custval does not know."""
    present = list(table.columns)
    findings = []
    known = {c.name for c in contract.columns}
    for key, own in spec.columns.items():
        if key not in known:
            findings.append(
                Finding(
                    spec.name,
                    own,
                    "error",
                    f"the mapping {key} = '{own}' names no column of a {contract.kind} source; "
                    "known names: " + ", ".join(sorted(known)),
                    0,
                )
            )
        elif own not in present and not contract.get(key).required:
            findings.append(
                Finding(
                    spec.name,
                    own,
                    "error",
                    f"the column '{own}' (mapped from custval's '{key}') is missing; the source "
                    "has columns " + ", ".join(present[:20]),
                    0,
                    hint="Fix the mapping, or remove it to go without this column",
                )
            )
    for col in contract.required:
        own = spec.column(col.name)
        if own in present:
            continue
        mapped = f" (mapped from custval's '{col.name}')" if own != col.name else ""
        findings.append(
            Finding(
                spec.name,
                own,
                "error",
                f"the required column '{own}'{mapped} is missing; the source has columns "
                + ", ".join(present[:20]),
                0,
                hint=_mapping_hint(spec, col.name, own, present),
            )
        )
    return findings


def _mapping_hint(spec: SourceSpec, name: str, own: str, present: list[str]) -> str:
    """Where to say which column holds ``name``, with the likeliest of the ``present`` ones."""
    close = difflib.get_close_matches(own.lower(), [p.lower() for p in present], 1, 0.3)
    guess = next((p for p in present if close and p.lower() == close[0]), None)
    flag = spec.flags.get(name)
    if flag:
        return f"Name the column with {flag}, e.g. {flag} {guess or 'YOUR_COLUMN'}"
    return (
        f"Map it under [sources.{spec.name}.columns] in custval.toml, e.g. "
        f'{name} = "{guess or "your_column"}"'
    )


def checks(
    spec: SourceSpec, table: ir.Table, contract: Contract, typed: ir.Table | None = None
) -> dict[str, Check]:
    """Per-row predicates, one per thing that can be wrong in a column (keys like
    ``unparseable:ts``).

    Over the raw ``table``, or, when ``typed`` is given, over cleaning's typed table (parsed
    columns under custval's names and ``_blank:<name>`` flags), so that the parsing is not done
    twice.
    """
    found: dict[str, Check] = {}
    for col in contract.columns:
        own = spec.column(col.name)
        if own not in table.columns:
            continue
        if typed is None:
            decimal = spec.csv.decimal or "."
            parsed, blank = coerce(table[own], col, spec.formats, decimal), is_blank(table[own])
        else:
            parsed = typed[col.name]
            flag = f"_blank:{col.name}"
            # cleaning flags blanks only where they differ from unparseable values
            blank = typed[flag] if flag in typed.columns else parsed.isnull()
        if col.type in _PROBLEMS:
            found[f"unparseable:{own}"] = (col, _PROBLEMS[col.type], ~blank & parsed.isnull())
            if col.minimum is not None:
                found[f"range:{own}"] = (
                    col,
                    f"a value below {col.minimum:g}",
                    parsed < col.minimum,
                )
        if col.allowed:
            found[f"values:{own}"] = (
                col,
                "a value other than " + " or ".join(col.allowed),
                parsed.notnull() & ~parsed.isin(col.allowed),
            )
        earlier = _other(spec, table, contract, typed, col.not_before)
        if earlier is not None:
            found[f"order:{own}"] = (
                col,
                f"a {own} before its {spec.column(str(col.not_before))}",
                parsed < earlier,
            )
        if (col.required and col.values_required) or col.drop_blank:
            found[f"missing:{own}"] = (
                col,
                "no value in a required column; cleaning drops these rows",
                blank,
            )
    return found


def _other(
    spec: SourceSpec,
    table: ir.Table,
    contract: Contract,
    typed: ir.Table | None,
    name: str | None,
) -> ir.Column | None:
    """Another contract column of the same row, parsed (None when the source lacks it)."""
    if name is None or spec.column(name) not in table.columns:
        return None
    if typed is not None:
        return typed[name]
    col = contract.get(name)
    return coerce(table[spec.column(name)], col, spec.formats, spec.csv.decimal or ".")


def validate_source(
    spec: SourceSpec, table: ir.Table, contract: Contract, counts_from: ir.Table | None = None
) -> SourceReport:
    """Check one raw source against its contract.

    Everything is counted in one aggregate query, over ``counts_from`` when given (cleaning's
    typed table, see :func:`checks`) or else over the raw table; example rows are fetched from
    the raw table, and only for columns with problems.

    Example
    -------
    >>> report = validate_source(spec, table, CONTRACTS["transactions"])  # doctest: +SKIP
    >>> [f.problem for f in report.errors]
    ['3 of 1200 rows have a timestamp that matches none of the date formats']
    """
    report = SourceReport(spec.name, contract.kind, 0, list(table.columns))
    report.findings += missing_columns(spec, table, contract)
    if counts_from is not None:
        # cleaning's typed table was parsed with the mark it settled, and flags what it read
        read = any(c.startswith(f"_{DECIMAL_COMMAS_READ}:") for c in counts_from.columns)
        spec = with_decimal(spec, "," if read else ".")
    elif not report.findings:
        spec = with_decimal(spec, decimal_mark(spec, table, contract))
    found = checks(spec, table, contract)
    counted = table if counts_from is None else counts_from
    on_counted = found if counts_from is None else checks(spec, table, contract, counts_from)
    sums = {k: v[2].fill_null(False).sum() for k, v in on_counted.items()}
    counts = counted.aggregate(__rows=counted.count(), **sums).to_pyarrow().to_pylist()[0]
    report.rows = int(counts.pop("__rows"))
    if report.rows == 0:
        report.findings.append(Finding(spec.name, None, "error", "the source has no rows", 0))
        return report
    key_col = spec.column(contract.key)
    for key, (col, kind, predicate) in found.items():
        n = int(counts[key] or 0)
        if not n:
            continue
        own = spec.column(col.name)
        what = key.split(":", 1)[0]
        cols = [own] if own == key_col or key_col not in table.columns else [key_col, own]
        hint = None
        if what == "unparseable" and col.type in {"timestamp", "date"}:
            hint = hint_for(
                spec,
                "date_formats",
                "Give the dates' format with --date-format (strptime codes, e.g. %d/%m/%Y)",
                "Set date_formats for this source in custval.toml (strptime codes)",
            )
        report.findings.append(
            Finding(
                spec.name,
                own,
                "warning" if what == "missing" else "error",
                f"{n} of {report.rows} rows have {kind}",
                n,
                _examples(table, predicate.fill_null(False), cols),
                hint,
            )
        )
    return report


def with_decimal(spec: SourceSpec, decimal: str) -> SourceSpec:
    """``spec`` with its decimal mark settled."""
    if spec.csv.decimal == decimal:
        return spec
    return spec.model_copy(update={"csv": spec.csv.model_copy(update={"decimal": decimal})})


def raise_for_errors(reports: list[SourceReport]) -> None:
    """Raise one error that lists every contract error found, if any."""
    errors = [f.as_error() for r in reports for f in r.errors]
    if errors:
        raise DataValidationError(errors)
