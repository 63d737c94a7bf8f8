"""Cleaning: from a raw source to a typed table under custval's column names.

Every rule says how many rows it changed or dropped, so nothing is lost silently. The policy,
per column kind:

- ids: white space stripped and upper-cased (``" c0042 "`` and ``"C0042"`` are one customer);
  rows without an id are dropped (they cannot belong to a customer).
- timestamps and dates: parsed from any of the source's ``date_formats``; rows without the
  required timestamp are dropped; rows dated after the moment of cleaning are impossible and
  are dropped as future dates.
- amounts and numbers: read with the source's decimal mark, configured or detected when the
  values leave no doubt (``"1,234.50"`` is 1234.5, and so is ``"1.234,50"`` in a file with
  decimal commas; ``"1,234"`` alone in a ``;``-separated file is an error asking which);
  negative amounts are refunds,
  kept and flagged (``is_refund``) so that features can net them out of revenue and leave them
  out of purchase counts.
- categories: trimmed and lower-cased; missing values become ``"unknown"``.
- measures (counts, durations): missing values stay missing (no value is invented); aggregates
  skip them.
- duplicates: rows equal in every column after the rules above are kept once; in transactions
  without order ids every row is an order, so identical rows are kept.
- one row per key: a customer's profile, a product of a catalogue and a subscription (by its
  id, when the source has one) are each kept once, conflicting rows resolved deterministically;
  of a subscription's rows, a cancelled one wins over an older snapshot that is still open.
- ranges the contract states (a treatment group that is neither treatment nor control, a
  cancellation before its start) are errors of validation, not cleaning rules.

Unparseable values never reach cleaning: validation (:mod:`custval.data.contracts`) stops first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir

from custval.config import SourceSpec
from custval.data import engine
from custval.data.contracts import (
    DECIMAL_COMMAS_READ,
    Contract,
    coerce,
    decimal_mark,
    is_blank,
    sql_substring,
    with_decimal,
)

_IBIS_TYPES = {
    "id": "string",
    "timestamp": "timestamp",
    "date": "date",
    "amount": "float64",
    "number": "float64",
    "bool": "boolean",
    "category": "string",
    "text": "string",
}
UNKNOWN = "unknown"
# where a blank raw value and an unparseable one both parse to null, so blanks are flagged;
# ids, categories and text are null after parsing exactly when they were blank
_BLANK_DIFFERS = {"timestamp", "date", "amount", "number", "bool"}


@dataclass(frozen=True)
class RuleResult:
    """What one cleaning rule did to one source."""

    source: str
    rule: str
    changed: int = 0
    dropped: int = 0


@dataclass
class Cleaned:
    """A cleaned source: its table (on the working connection: materialised, or the staged table
    filtered when cleaning only filters and fills) and the rule log."""

    name: str
    kind: str
    table: ir.Table
    rows_in: int
    rows_out: int
    rules: list[RuleResult]
    unlinked_rows: int = 0
    unlinked_ids: int = 0
    one_row_per_order: bool | None = None


def _typed(spec: SourceSpec, raw: ir.Table, contract: Contract) -> tuple[ir.Table, list[str]]:
    """Select the contract's columns, typed, with boolean flag columns: ``_blank:<column>`` for
    raw values that are empty (validation and the missing-value rules count them) and
    ``_<rule>:<column>`` for what other rules change."""
    cols: dict[str, ir.Value] = {}
    flags: dict[str, ir.Value] = {}
    for col in contract.columns:
        own = spec.column(col.name)
        if own not in raw.columns:
            cols[col.name] = ibis.null(_IBIS_TYPES[col.type])
            continue
        value = raw[own]
        parsed = coerce(value, col, spec.formats, spec.csv.decimal or ".")
        cols[col.name] = parsed
        if col.type in _BLANK_DIFFERS and not value.type().is_string():
            # not text: blank means null, and a null value parses to null
            flags[f"_blank:{col.name}"] = value.isnull()
        elif col.type in _BLANK_DIFFERS:
            # a blank value always parses to null; testing only those saves a trim per row
            flags[f"_blank:{col.name}"] = ibis.cases(
                (parsed.isnull(), is_blank(value)), else_=False
            )
        if col.type == "id" and value.type().is_string():
            flags[f"_ids_normalised:{col.name}"] = value != parsed
        elif col.type in {"timestamp", "date"} and value.type().is_string():
            # every ISO layout has "-" as its 5th character; no other default layout does
            flags[f"_dates_in_non_iso_formats_parsed:{col.name}"] = parsed.notnull() & (
                sql_substring(value, 5, 1) != "-"
            )
        elif col.type in {"amount", "number"} and value.type().is_string():
            if spec.csv.decimal == ",":
                flags[f"_{DECIMAL_COMMAS_READ}:{col.name}"] = value.contains(",")
            elif col.type == "amount":
                flags[f"_thousands_separators_removed:{col.name}"] = value.contains(",")
    typed = raw.select(**cols, **{k: v.fill_null(False) for k, v in flags.items()})
    return typed, list(flags)


@dataclass
class Staged:
    """A source parsed into custval's columns and types, materialised once, with the flags that
    validation and cleaning count."""

    spec: SourceSpec
    contract: Contract
    table: ir.Table
    flags: list[str]
    present: list[str]


def stage_typed(
    con: ibis.BaseBackend, spec: SourceSpec, raw: ir.Table, contract: Contract
) -> Staged:
    """Parse ``raw`` once into a temporary table on ``con`` (see :func:`clean_source`), with
    the decimal mark its amounts leave no doubt about (else an error asking for it)."""
    spec = with_decimal(spec, decimal_mark(spec, raw, contract))
    typed, flags = _typed(spec, raw, contract)
    present = [c.name for c in contract.columns if spec.column(c.name) in raw.columns]
    # the columns the source lacks are null throughout: they are added back as constants
    # rather than stored, a row at a time, in the copy
    absent = [c for c in contract.columns if c.name not in present]
    stored = engine.materialise(con, f"_typed_{spec.name}", typed.drop(*(c.name for c in absent)))
    table = stored.mutate(**{c.name: ibis.null(_IBIS_TYPES[c.type]) for c in absent}).select(
        *typed.columns
    )
    return Staged(spec, contract, table, flags, present)


def clean_source(
    con: ibis.BaseBackend,
    staged: Staged,
    *,
    now: datetime | None = None,
    link: Callable[[ir.Table], ir.Table] | None = None,
) -> Cleaned:
    """Apply the cleaning policy to one staged source and materialise the result on ``con``.

    The result has custval's column names and types (missing optional columns are null), plus
    ``is_refund`` for transactions. ``now`` is the moment after which dates count as future.
    ``link`` (see :func:`custval.data.identity.linker`) gives rows their customer's primary id
    in the same pass; rows it cannot link are counted in ``unlinked_rows``/``unlinked_ids`` and
    left out of the table.

    Example
    -------
    >>> staged = stage_typed(con, spec, raw, CONTRACTS["transactions"])  # doctest: +SKIP
    >>> cleaned = clean_source(con, staged)
    >>> [(r.rule, r.changed, r.dropped) for r in cleaned.rules][:2]
    [('ids normalised (customer_id)', 12, 0), ('duplicate rows', 0, 31)]
    """
    now = now or datetime.now()
    spec, contract = staged.spec, staged.contract
    drops, future = _drop_rules(staged, now)
    # a required category (a treatment group) is never filled: its blank rows are dropped
    categories = [
        c.name
        for c in contract.columns
        if c.type == "category"
        and c.name in staged.present
        and not (c.required and c.values_required)
    ]
    counts = _rule_counts(staged, drops, future, categories)
    rules = _rule_log(staged, counts, drops, future, categories)
    remaining = int(counts["rows"])
    # without order ids an identical row may be a second purchase of the same thing on the same
    # day, so rows are kept as they are; with them, a repeated row is a repeated export
    no_order_ids = contract.kind == "transactions" and "order_id" not in staged.present
    deduped = _cleaned_rows(staged, drops, future, categories, no_order_ids=no_order_ids, link=link)
    before_dedupe = remaining - sum(r.dropped for r in rules)
    if no_order_ids and link is None:
        # rows filtered and values filled, nothing deduplicated or linked: the staged table
        # with these rules applied on the fly is the cleaned table, and a copy of millions of
        # rows would cost more than every later query's filter together
        final, counted = deduped, {"rows": before_dedupe}
    else:
        final = engine.materialise(con, f"_clean_{spec.name}", deduped)
        counted = _final_counts(
            final,
            linked=link is not None,
            # one row per order lets features count rows instead of distinct order ids per
            # day, which costs twice this one global count
            order_ids=contract.kind == "transactions" and not no_order_ids,
        )
        engine.drop(con, f"_typed_{spec.name}")
    keyed = _one_row_key(staged) is not None
    label = "duplicate or conflicting rows" if keyed else "duplicate rows"
    rules.append(RuleResult(spec.name, label, dropped=before_dedupe - int(counted["rows"])))
    unlinked_rows = int(counted.get("unlinked_rows") or 0)
    if link is not None:
        final = final.filter(final.customer_id.notnull()).drop("_source_id")
    one_row_per_order = None
    if contract.kind == "transactions":
        one_row_per_order = no_order_ids or int(counted["order_ids"]) == int(counted["rows"])
    return Cleaned(
        spec.name,
        contract.kind,
        final,
        remaining,
        int(counted["rows"]) - unlinked_rows,
        rules,
        unlinked_rows,
        int(counted.get("unlinked_ids") or 0),
        one_row_per_order,
    )


def _drop_rules(
    staged: Staged, now: datetime
) -> tuple[dict[str, ir.BooleanColumn], dict[str, ir.BooleanColumn]]:
    """The rows to drop, by rule label, and the optional dates to empty (after ``now``), by
    column."""
    contract, typed, present = staged.contract, staged.table, staged.present
    times = [c.name for c in contract.columns if c.type in {"timestamp", "date"}]
    drops: dict[str, ir.BooleanColumn] = {}
    for col in contract.columns:
        # a row without a value in a required column (id, order, timestamp, amount) cannot be
        # used; blank ids are null after normalisation
        if col.name in present and ((col.required and col.values_required) or col.drop_blank):
            drops[f"rows without {col.name}"] = typed[col.name].isnull()
    # a date after the moment of cleaning is impossible: in a row's own timestamp the row is
    # dropped; in an attribute (a birth date) only the value is
    future: dict[str, ir.BooleanColumn] = {}
    for name in times:
        late = (typed[name].cast("timestamp") > ibis.literal(now)).fill_null(False)
        if contract.get(name).required:
            drops[f"future dates ({name} after {now:%Y-%m-%d %H:%M})"] = late
        else:
            future[name] = late
    return drops, future


def _rule_counts(
    staged: Staged,
    drops: dict[str, ir.BooleanColumn],
    future: dict[str, ir.BooleanColumn],
    categories: list[str],
) -> dict[str, Any]:
    """What every rule counts, in one query over the staged table."""
    typed = staged.table
    aggs: dict[str, ir.Value] = {"rows": typed.count()}
    aggs.update({f"future:{k}": v.sum() for k, v in future.items()})
    aggs.update({k: typed[k].sum() for k in staged.flags})
    # each drop rule counts only rows that earlier rules kept, so the counts add up
    kept_so_far = ibis.literal(True)
    for label, predicate in drops.items():
        aggs[f"drop:{label}"] = (kept_so_far & predicate).sum()
        kept_so_far = kept_so_far & ~predicate
    aggs.update({f"_missing:{c}": typed[c].isnull().sum() for c in categories})
    if staged.contract.kind == "transactions":
        aggs["refunds"] = (typed.amount < 0).sum()
    return typed.aggregate(**aggs).to_pyarrow().to_pylist()[0]


def _rule_log(
    staged: Staged,
    counts: dict[str, Any],
    drops: dict[str, ir.BooleanColumn],
    future: dict[str, ir.BooleanColumn],
    categories: list[str],
) -> list[RuleResult]:
    """One :class:`RuleResult` per rule, from :func:`_rule_counts` (the duplicates, counted
    after the cleaned table is made, are added by :func:`clean_source`)."""
    spec, contract = staged.spec, staged.contract
    rules: list[RuleResult] = []
    for key in [*staged.flags, *(f"_missing:{c}" for c in categories)]:
        label, col = key[1:].split(":")
        kind = contract.get(col).type
        if label == "missing":
            label = "missing set to unknown"
        elif label == "blank":
            if kind in {"number", "bool"}:
                label = "missing left empty"
            else:
                continue  # required columns: counted by the drop rules below
        n = int(counts[key] or 0)
        rules.append(RuleResult(spec.name, f"{label.replace('_', ' ')} ({col})", changed=n))
    for label in drops:
        rules.append(RuleResult(spec.name, label, dropped=int(counts[f"drop:{label}"] or 0)))
    if contract.kind == "transactions":
        rules.append(
            RuleResult(
                spec.name, "negative amounts flagged as refunds", changed=int(counts["refunds"])
            )
        )
    for name in future:
        n = int(counts[f"future:{name}"] or 0)
        rules.append(RuleResult(spec.name, f"future dates set to empty ({name})", changed=n))
    return rules


def _cleaned_rows(
    staged: Staged,
    drops: dict[str, ir.BooleanColumn],
    future: dict[str, ir.BooleanColumn],
    categories: list[str],
    *,
    no_order_ids: bool,
    link: Callable[[ir.Table], ir.Table] | None,
) -> ir.Table:
    """The staged rows the drop rules keep, with the value rules applied, deduplicated,
    linked, and for customers one profile each."""
    typed = staged.table
    keep = ibis.literal(True)
    for predicate in drops.values():
        keep = keep & ~predicate
    # categories the source has get "unknown" for missing values; ones it lacks stay empty
    fills: dict[str, ir.Value] = {c: typed[c].fill_null(UNKNOWN) for c in categories}
    fills |= {name: ibis.ifelse(late, ibis.null(), typed[name]) for name, late in future.items()}
    kept = typed.filter(keep).drop(*staged.flags).mutate(**fills)
    deduped = kept if no_order_ids else kept.distinct()
    if staged.contract.kind == "transactions":
        deduped = deduped.mutate(is_refund=deduped.amount < 0)
    if link is not None:
        deduped = link(deduped)
    key_name = _one_row_key(staged)
    if key_name is not None:
        # one profile per customer, also when the source knows a customer under two ids:
        # conflicting rows are resolved deterministically (unlinked rows, with a null id, stay
        # apart so that they are counted as unlinked, not as duplicates)
        key = deduped[key_name]
        if link is not None and key_name == "customer_id":
            key = ibis.ifelse(key.isnull(), "unlinked:" + deduped._source_id, "linked:" + key)
        # the first row in the order of all columns (nulls last), whatever order rows come in;
        # a subscription's cancelled row first, as the later state of it
        first: list[ir.Value] = []
        if staged.contract.kind == "subscriptions":
            first = [deduped.cancelled_at.isnull()]
        rank = ibis.row_number().over(group_by=key, order_by=[*first, *deduped.columns])
        deduped = deduped.mutate(_rank=rank).filter(lambda t: t._rank == 0).drop("_rank")
    return deduped


#: the column each kind keeps one row per (when the source has it)
_ONE_ROW_PER = {
    "customers": "customer_id",
    "products": "product_id",
    "subscriptions": "subscription_id",
}


def _one_row_key(staged: Staged) -> str | None:
    key = _ONE_ROW_PER.get(staged.contract.kind)
    return key if key in staged.present else None


def _final_counts(final: ir.Table, *, linked: bool, order_ids: bool) -> dict[str, Any]:
    """Rows of the cleaned table, the unlinked ones when ``linked``, distinct order ids when
    ``order_ids``: one query."""
    stats: dict[str, ir.Value] = {"rows": final.count()}
    if linked:
        unlinked = final.customer_id.isnull()
        stats |= {
            "unlinked_rows": unlinked.sum(),
            "unlinked_ids": final._source_id.nunique(where=unlinked),
        }
    if order_ids:
        stats["order_ids"] = final.order_id.nunique()
    return final.aggregate(**stats).to_pyarrow().to_pylist()[0]
