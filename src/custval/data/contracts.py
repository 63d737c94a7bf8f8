"""What each kind of table must hold, and its validation.

A contract lists custval's column names for one kind of table (transactions, customers, web
sessions, product usage, service interactions, id map), which are required, their type and their
allowed range. Users map their own column names onto these in ``custval.toml``.

Validation reads the raw source (strings straight from a CSV, or typed columns from Parquet or a
database) and reports, per column, how many rows break the contract with up to five example rows.
Errors stop the pipeline; warnings (for instance rows without an id, which cleaning drops) are
reported and counted but let it go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from custval.config import SourceSpec
from custval.errors import MAX_EXAMPLES, ContractError, CustvalError

ColumnType = Literal["id", "timestamp", "date", "amount", "number", "bool", "category", "text"]


@dataclass(frozen=True)
class Column:
    """One column of a contract.

    ``required`` columns must exist in the source; in a required column, blank values are
    reported (cleaning drops those rows) unless ``values_required`` is false. ``minimum`` applies
    to ``number`` columns (for example counts cannot be negative).
    """

    name: str
    type: ColumnType
    required: bool = False
    description: str = ""
    minimum: float | None = None
    values_required: bool = True


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
            Column("order_id", "id", True, "order (or refund) identifier"),
            Column("timestamp", "timestamp", True, "when the order was placed"),
            Column("amount", "amount", True, "order value in currency; negative for refunds"),
            Column("category", "category", False, "product category"),
            Column("channel", "category", False, "sales channel (web, app, branch, phone...)"),
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
}

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")


@ibis.udf.scalar.builtin(name="try_strptime")
def _try_strptime(value: str, fmt: str) -> dt.Timestamp(): ...  # type: ignore[valid-type]


def coerce(value: ir.Column, column: Column, formats: tuple[str, ...]) -> ir.Column:
    """Turn a raw column into its contract type; unparseable values become null.

    Strings are parsed (dates in any of ``formats``, amounts with thousands separators such as
    ``"1,234.50"``, booleans from true/false/yes/no/1/0); typed columns are cast.

    Example
    -------
    >>> t = ibis.memtable({"a": ["1,234.50", "7"]})
    >>> coerce(t.a, Column("amount", "amount"), ()).to_pyarrow().to_pylist()  # doctest: +SKIP
    [1234.5, 7.0]
    """
    dtype = value.type()
    if column.type == "id":
        return value.cast("string").strip().upper()
    if column.type in {"category", "text"}:
        text = value.cast("string").strip()
        cleaned = text.lower() if column.type == "category" else text
        return ibis.ifelse(text == "", ibis.null("string"), cleaned)
    if column.type in {"timestamp", "date"}:
        if dtype.is_timestamp():
            ts = value.cast(dt.Timestamp())
        elif dtype.is_date():
            ts = value.cast(dt.Timestamp())
        else:
            text = value.cast("string").strip()
            ts = ibis.coalesce(*[_try_strptime(text, f) for f in formats])
        return ts.date() if column.type == "date" else ts
    if column.type in {"amount", "number"}:
        if dtype.is_numeric():
            return value.cast("float64")
        text = value.cast("string").strip()
        if column.type == "amount":
            text = text.replace(",", "")
        return text.try_cast("float64")
    if column.type == "bool":
        if dtype.is_boolean():
            return value
        text = value.cast("string").strip().lower()
        return (
            ibis.cases((text.isin(TRUE_WORDS), True), (text.isin(FALSE_WORDS), False))
            .cast("boolean")
        )
    raise AssertionError(f"unknown column type {column.type}")


def is_blank(value: ir.Column) -> ir.BooleanColumn:
    """Null, or a string of only white space."""
    if value.type().is_string():
        return value.isnull() | (value.strip() == "")
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


def validate_source(
    spec: SourceSpec, table: ir.Table, contract: Contract
) -> SourceReport:
    """Check one raw source against its contract.

    Everything is counted in one aggregate query; example rows are fetched only for columns
    that have problems.

    Example
    -------
    >>> report = validate_source(spec, table, CONTRACTS["transactions"])  # doctest: +SKIP
    >>> [f.problem for f in report.errors]
    ['3 rows have a timestamp that matches none of the date formats']
    """
    present = list(table.columns)
    report = SourceReport(spec.name, contract.kind, 0, present)
    missing = [c for c in contract.required if spec.column(c.name) not in present]
    for col in missing:
        own = spec.column(col.name)
        mapped = f" (mapped from custval's '{col.name}')" if own != col.name else ""
        report.findings.append(
            Finding(
                spec.name,
                own,
                "error",
                f"the required column '{own}'{mapped} is missing; the source has columns "
                + ", ".join(present[:20]),
                0,
                hint="Map it under [sources."
                + spec.name
                + ".columns] in custval.toml, e.g. "
                + f'{col.name} = "your_column"',
            )
        )
    key_col = spec.column(contract.key)
    checks: dict[str, tuple[Column, str, ir.BooleanColumn]] = {}
    for col in contract.columns:
        own = spec.column(col.name)
        if own not in present:
            continue
        raw = table[own]
        parsed = coerce(raw, col, spec.formats)
        if col.type in {"timestamp", "date", "amount", "number", "bool"}:
            bad = ~is_blank(raw) & parsed.isnull()
            kind = {
                "timestamp": "a timestamp that matches none of the date formats",
                "date": "a date that matches none of the date formats",
                "amount": "an amount that is not a number",
                "number": "a value that is not a number",
                "bool": "a value that is not true/false/yes/no/1/0",
            }[col.type]
            checks[f"unparseable:{own}"] = (col, kind, bad)
            if col.minimum is not None:
                checks[f"range:{own}"] = (col, f"a value below {col.minimum:g}", parsed < col.minimum)
        if col.required and col.values_required:
            checks[f"missing:{own}"] = (col, "no value in a required column", is_blank(raw))
    counts = table.aggregate(
        __rows=table.count(), **{k: v[2].fill_null(False).sum() for k, v in checks.items()}
    ).to_pyarrow().to_pylist()[0]
    report.rows = int(counts.pop("__rows"))
    if report.rows == 0:
        report.findings.append(
            Finding(spec.name, None, "error", "the source has no rows", 0)
        )
        return report
    for key, (col, kind, predicate) in checks.items():
        n = int(counts[key] or 0)
        if not n:
            continue
        own = spec.column(col.name)
        what = key.split(":", 1)[0]
        cols = [own] if own == key_col or key_col not in present else [key_col, own]
        severity: Literal["error", "warning"] = "warning" if what == "missing" else "error"
        hint = None
        if what == "unparseable" and col.type in {"timestamp", "date"}:
            hint = "Set date_formats for this source in custval.toml (strptime codes)"
        if what == "missing":
            kind = "no value in a required column; cleaning drops these rows"
        report.findings.append(
            Finding(
                spec.name,
                own,
                severity,
                f"{n} of {report.rows} rows have {kind}",
                n,
                _examples(table, predicate.fill_null(False), cols),
                hint,
            )
        )
    return report


def raise_for_errors(reports: list[SourceReport]) -> None:
    """Raise one error that lists every contract error found, if any."""
    from custval.errors import DataValidationError

    errors = [f.as_error() for r in reports for f in r.errors]
    if errors:
        raise DataValidationError(errors)
