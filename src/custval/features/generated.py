"""Generated features: aggregations over each table related to the customer, in windows of
days before the as-of date, point in time (in the manner of Featuretools' deep feature
synthesis, as Ibis expressions that run on every engine).

For each related table (a :class:`Relation`: its time column, numeric and categorical columns,
and the key of a group of rows, such as an order's lines) and each window (30, 90 and 365 days
by default, and the whole history):

* the rows: how many;
* each numeric column: total, mean, standard deviation, smallest, largest, and the trend (the
  least-squares slope over the days, per 30 days);
* each categorical column: distinct values, the most frequent value (a tie goes to the first in
  byte order) and the share of the rows that have it;
* depth 2, where rows form groups: each group's total and rows, then their mean, largest and
  standard deviation across the groups;
* over the whole history: days since the first and the last row;
* the recent windows' rows and totals as a share of the longest window's.

Only rows strictly before the as-of date count. Every feature's name and catalogue sentence
follow from its definition (``web__page_views__mean__90d``: "Mean page views per web session
in the last 90 days"), so a reason quotes it. A window longer than the table's history is
marked as partial in its sentence rather than left to look complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

import ibis
import ibis.expr.types as ir

from custval.errors import CustvalError
from custval.features._util import cutoff, days_between, safe_ratio
from custval.features.catalogue import Feature

#: the windows of days before the as-of date, and None for the whole history
DEFAULT_WINDOWS: tuple[int, ...] = (30, 90, 365)
#: the days the trend's slope is given per
TREND_DAYS = 30
# the parts joined in one expression before the join is kept as a working table
_JOINS = 8

# a related table's short name and what one of its rows (and one of its groups) is called
_KINDS: dict[str, tuple[str, str, str]] = {
    "transactions": ("tx", "purchase", "purchases"),
    "web_sessions": ("web", "web session", "web sessions"),
    "product_usage": ("usage", "day of product use", "days of product use"),
    "interactions": ("tickets", "service ticket", "service tickets"),
    "subscriptions": ("subs", "subscription", "subscriptions"),
    "treatments": ("offers", "offer", "offers"),
}
_GROUPS = {"order_id": ("order", "orders")}
#: the kinds of table a customer's rows can be generated from
KINDS: tuple[str, ...] = tuple(_KINDS)
# what a column is called in a sentence, where its name alone would not say
_LABELS = {
    "duration_sec": "session seconds",
    "time_sec": "seconds of use",
    "converted": "sales (1 a converted session)",
    "resolved": "resolved tickets (1 each)",
    "kind": "ticket kind",
    "group": "group (treatment or control)",
}


@dataclass(frozen=True)
class Relation:
    """How a table relates to the customer: ``kind`` (the table's kind, keyed by customer_id
    after identity linking), its ``time`` column, the ``numeric`` and ``categorical`` columns
    aggregated, ``group``, the key of a group of rows (an order's lines) or None, and which
    numeric columns are ``money`` (their unit is the currency)."""

    kind: str
    time: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    group: str | None = None
    money: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        return _KINDS.get(self.kind, (self.kind, "", ""))[0]

    @property
    def noun(self) -> str:
        return _KINDS.get(self.kind, ("", "row", ""))[1]

    @property
    def plural(self) -> str:
        return _KINDS.get(self.kind, ("", "", f"{self.kind} rows"))[2]


@dataclass(frozen=True)
class Generated:
    """The generated features: one row per customer of ``table`` (customer_id and the
    features; customers without a related row have zero counts and totals, and no other
    value), and their catalogue."""

    table: ir.Table
    catalogue: list[Feature]


# --------------------------------------------------------------------------------------------
# names and sentences
# --------------------------------------------------------------------------------------------


def is_generated(name: str) -> bool:
    """Whether the feature ``name`` is a generated one: their names join their parts with a
    double underscore, which no hand-built feature's name holds."""
    return "__" in name


def window_name(window: int | None) -> str:
    return "all" if window is None else f"{window}d"


def _when(window: int | None) -> str:
    return "over the whole history" if window is None else f"in the last {window} days"


def label(column: str) -> str:
    """A column as a sentence names it (``page_views`` -> "page views")."""
    return _LABELS.get(column, column.replace("_", " "))


def _feature(
    rel: Relation, parts: Sequence[str], sentence: str, unit: str, window: int | None
) -> Feature:
    name = "__".join([rel.short, *parts, window_name(window)])
    return Feature(name, f"{sentence} {_when(window)}".strip(), unit, rel.kind)


# --------------------------------------------------------------------------------------------
# the expressions
# --------------------------------------------------------------------------------------------


class _Builder:
    """The aggregates of one relation in one window, added with their catalogue entries, over
    the window's rows alone.

    Aggregates cost the engine time in proportion to their number and more (DuckDB took 7x
    one window's time for four windows' aggregates in one query, each with its filter), so a
    window is a query of its own over its rows, and the builder shares what it can: a mean is
    its total over its count, a trend's sums reuse the total and the count, and a column
    without missing values shares the window's row count and day sums with every other such
    column."""

    def __init__(
        self, rel: Relation, rows: ir.Table, window: int | None, complete: frozenset[str]
    ) -> None:
        self.rel = rel
        self.t = rows  # the rows of the window
        self.window = window
        self.days = rows["_days"]  # days before the as-of date, 1 for the day before it
        self.complete = complete  # the numeric columns without a missing value
        self.aggs: dict[str, ir.Scalar] = {}
        self.after: dict[str, object] = {}  # name: fn(table) -> column, computed from aggs
        self.hidden: list[str] = []
        self.catalogue: list[Feature] = []
        self.zeros: dict[str, int | float] = {}

    def feature(self, parts: Sequence[str], sentence: str, unit: str) -> Feature:
        return _feature(self.rel, parts, sentence, unit, self.window)

    def add(self, feature: Feature, expr: ir.Scalar, zero: float | None = None) -> None:
        self.aggs[feature.name] = expr
        self.catalogue.append(feature)
        if zero is not None:
            self.zeros[feature.name] = zero

    def hide(self, name: str, expr: ir.Scalar) -> str:
        """An aggregate that features are computed from, dropped from the result."""
        self.aggs[name] = expr
        self.hidden.append(name)
        return name

    def rows(self) -> None:
        rel = self.rel
        feature = self.feature(["count"], f"Number of {rel.plural}", "count")
        self.add(feature, self.t.count(), 0)

    def numeric(self, column: str, unit: str) -> None:
        rel, v = self.rel, self.t[column].cast("float64")
        name, w = label(column), window_name(self.window)
        count = f"{rel.short}__count__{w}"
        if column not in self.complete:
            count = self.hide(f"_{rel.short}__{column}__n__{w}", v.count())
        total = self.feature([column, "sum"], f"Total {name} over {rel.plural}", unit)
        self.add(total, v.sum(), 0.0)
        mean = self.feature([column, "mean"], f"Mean {name} per {rel.noun}", unit)
        self.after[mean.name] = lambda t, s=total.name, n=count: safe_ratio(t[s], t[n])
        self.catalogue.append(mean)
        for primitive, sentence, expr in (
            ("std", f"Standard deviation of {name} per {rel.noun}", v.std()),
            ("min", f"Smallest {name} in one {rel.noun}", v.min()),
            ("max", f"Largest {name} in one {rel.noun}", v.max()),
        ):
            self.add(self.feature([column, primitive], sentence, unit), expr)
        self._trend(v, column, unit, (count, total.name))

    def _trend(
        self, v: ir.FloatingColumn, column: str, unit: str, count_total: tuple[str, str]
    ) -> None:
        """The least-squares slope of the column over the days, per TREND_DAYS days (rising
        when later rows are larger). The days are whole numbers, so the denominator's sums
        are exact on every engine."""
        rel, x, w = self.rel, self.days.cast("float64"), window_name(self.window)
        shared = column in self.complete
        owner = "" if shared else f"{column}__"
        where = None if shared else v.notnull()
        sums = [
            self._day_sum(f"_{rel.short}__{owner}sx__{w}", x, where),
            self._day_sum(f"_{rel.short}__{owner}sxx__{w}", x * x, where),
            self.hide(f"_{rel.short}__{column}__sxv__{w}", (x * v).sum()),
        ]
        feature = self.feature(
            [column, "trend"],
            f"Trend of {label(column)} per {rel.noun} (change per {TREND_DAYS} days)",
            f"{unit} per {TREND_DAYS} days",
        )
        keys = (*count_total, *sums)

        def slope(t: ir.Table) -> ir.FloatingColumn:
            n, sv, sx, sxx, sxv = (t[k].cast("float64") for k in keys)
            # days count backwards from the as-of date: a rise over time is a negative slope
            return -safe_ratio(n * sxv - sx * sv, n * sxx - sx * sx) * TREND_DAYS

        self.after[feature.name] = slope
        self.catalogue.append(feature)

    def _day_sum(self, name: str, expr: ir.FloatingColumn, where: ir.BooleanColumn | None) -> str:
        """A sum over the days, kept once however many columns share it."""
        return name if name in self.aggs else self.hide(name, expr.sum(where=where))

    def recency(self) -> None:
        rel = self.rel
        for primitive, sentence, expr in (
            ("first", f"Days since the first {rel.noun}", self.days.max()),
            ("last", f"Days since the last {rel.noun}", self.days.min()),
        ):
            name = f"{rel.short}__days_since_{primitive}"
            self.aggs[name] = expr
            self.catalogue.append(Feature(name, sentence, "days", rel.kind))

    def ratios(self, recent: Sequence[int], numeric: Sequence[str]) -> None:
        """The ``recent`` windows' rows and totals as a share of this (the longest) window's:
        the recent ones' are counted again here, as hidden aggregates."""
        rel, longest = self.rel, self.window
        for window in recent:
            where = self.days <= window
            # a total over no rows is zero, as the recent window's own (filled) is
            pairs = [("count", rel.plural.capitalize(), self.t.count(where=where))] + [
                (
                    f"{c}__sum",
                    f"Total {label(c)}",
                    self.t[c].cast("float64").sum(where=where).fill_null(0.0),
                )
                for c in numeric
            ]
            for stem, what, expr in pairs:
                short = self.hide(f"_{rel.short}__{stem}__{window_name(window)}", expr)
                long_ = f"{rel.short}__{stem}__{window_name(longest)}"
                name = f"{rel.short}__{stem}__ratio_{window}d_{longest}d"
                sentence = f"{what} in the last {window} days as a share of the last {longest}"
                self.after[name] = lambda t, s=short, lo=long_: safe_ratio(t[s], t[lo])
                self.catalogue.append(Feature(name, sentence, "share", rel.kind))


def _aggregated(
    t: ir.Table,
    rel: Relation,
    windows: Sequence[int | None],
    units: dict,
    complete: frozenset[str],
) -> list[tuple[ir.Table, list[Feature], dict]]:
    """Per window, one row per customer with a row in it: the rows and numeric features of
    ``rel``; over the whole history, the recency too; in the longest finite window, the
    recent windows' shares of it. ``complete``: the numeric columns without a missing value."""
    finite = sorted(w for w in windows if w is not None)
    found = []
    for window in windows:
        b = _Builder(rel, t if window is None else t.filter(t._days <= window), window, complete)
        b.rows()
        for column in rel.numeric:
            b.numeric(column, units.get(column, ""))
        if window is None:
            b.recency()
        elif window == finite[-1]:
            b.ratios(finite[:-1], rel.numeric)
        table = b.t.group_by("customer_id").aggregate(**b.aggs)
        table = table.mutate(**{name: fn(table) for name, fn in b.after.items()})
        found.append((table.drop(*b.hidden), b.catalogue, b.zeros))
    return found


def complete(
    tables: dict[str, ir.Table], relations: Iterable[Relation]
) -> dict[str, frozenset[str]]:
    """Per relation, its numeric columns without a missing value in its table (one query
    each): such columns share their window's row count and day sums."""
    found: dict[str, frozenset[str]] = {}
    for rel in relations:
        t = tables[rel.kind]
        if not rel.numeric:
            found[rel.kind] = frozenset()
            continue
        counts = t.aggregate(_rows=t.count(), **{c: t[c].count() for c in rel.numeric})
        n = counts.to_pyarrow().to_pylist()[0]
        found[rel.kind] = frozenset(c for c in rel.numeric if n[c] == n["_rows"])
    return found


def _categorical(
    t: ir.Table, rel: Relation, column: str, windows: Sequence[int | None]
) -> tuple[ir.Table, list[Feature], dict]:
    """One row per customer: distinct values, the most frequent one and its share, per window."""
    rows = t.filter(t[column].notnull())
    counts = rows.group_by("customer_id", column).aggregate(
        **{
            f"_n_{window_name(w)}": rows.count(where=None if w is None else rows._days <= w)
            for w in windows
        }
    )
    ranks = {}
    for w in windows:
        n = counts[f"_n_{window_name(w)}"]
        order = [ibis.desc(n), counts[column]]
        ranks[f"_r_{window_name(w)}"] = ibis.row_number().over(
            group_by="customer_id", order_by=order
        )
    ranked = counts.mutate(**ranks)
    aggs: dict[str, ir.Scalar] = {}
    catalogue: list[Feature] = []
    name = label(column)
    for w in windows:
        n, r = ranked[f"_n_{window_name(w)}"], ranked[f"_r_{window_name(w)}"]
        top = (r == 0) & (n > 0)
        specs = (
            (
                "nunique",
                f"Number of distinct {name} values among {rel.plural}",
                (n > 0).cast("int64").sum(),
                "count",
            ),
            (
                "mode",
                f"Most frequent {name} among {rel.plural}",
                ranked[column].max(where=top),
                "category",
            ),
            (
                "top_share",
                f"Share of {rel.plural} with their most frequent {name}",
                n.max(where=top).cast("float64") / n.sum().nullif(0),
                "share",
            ),
        )
        for primitive, sentence, expr, unit in specs:
            feature = _feature(rel, [column, primitive], sentence, unit, w)
            aggs[feature.name] = expr
            catalogue.append(feature)
    zeros = {
        f.name: 0
        for f in catalogue
        if f.name.endswith(tuple(f"nunique__{window_name(w)}" for w in windows))
    }
    return ranked.group_by("customer_id").aggregate(**aggs), catalogue, zeros


def _grouped(
    t: ir.Table, rel: Relation, windows: Sequence[int | None], units: dict
) -> tuple[ir.Table, list[Feature], dict]:
    """Depth 2: each group's (order's) total of every numeric column and its rows, then their
    mean, largest and standard deviation across the customer's groups, per window."""
    assert rel.group is not None
    noun, plural = _GROUPS.get(rel.group, (label(rel.group), label(rel.group) + "s"))
    rows = t.filter(t[rel.group].notnull())
    groups = rows.group_by("customer_id", rel.group).aggregate(
        _days=rows._days.min(),  # a group counts in a window from its last row
        _lines=rows.count(),
        **{f"_total_{c}": rows[c].cast("float64").sum() for c in rel.numeric},
    )
    aggs: dict[str, ir.Scalar] = {}
    catalogue: list[Feature] = []
    measures = [("lines", "rows", "count")] + [
        (f"total_{c}", f"{label(c)} (its rows added)", units.get(c, "")) for c in rel.numeric
    ]
    for w in windows:
        where = None if w is None else groups._days <= w
        for stem, what, unit in measures:
            v = groups[f"_{stem}"].cast("float64")
            for primitive, sentence, expr in (
                ("mean", f"Mean {what} per {noun}", v.mean(where=where)),
                ("max", f"Largest {what} of one {noun}", v.max(where=where)),
                ("std", f"Standard deviation of {what} per {noun}", v.std(where=where)),
            ):
                feature = _feature(rel, [noun, stem, primitive], sentence, unit, w)
                aggs[feature.name] = expr
                catalogue.append(feature)
        feature = _feature(rel, [noun, "count"], f"Number of {plural}", "count", w)
        aggs[feature.name] = groups.count(where=where)
        catalogue.append(feature)
    zeros = {f.name: 0 for f in catalogue if f"__{noun}__count__" in f.name}
    return groups.group_by("customer_id").aggregate(**aggs), catalogue, zeros


# --------------------------------------------------------------------------------------------
# relations
# --------------------------------------------------------------------------------------------


def check_relation(rel: Relation, tables: dict[str, ir.Table], source: str) -> None:
    """A clear error where ``rel`` cannot be generated from: a table with no customer key, a
    time column that is not a time, a column the table lacks."""
    table = tables.get(rel.kind)
    if rel.kind not in _KINDS or table is None or "customer_id" not in table.columns:
        raise CustvalError(
            f"the source has no key path to the customer (its kind is {rel.kind})",
            source=source,
            hint="Generated features aggregate tables whose rows name a customer: "
            + ", ".join(_KINDS),
        )
    schema = table.schema()
    for column in (rel.time, *rel.numeric, *rel.categorical, *([rel.group] if rel.group else [])):
        if column not in schema:
            raise CustvalError(
                f"the column '{column}' named for generated features is not in the cleaned table",
                source=source,
                column=column,
                hint="Name one of: " + ", ".join(c for c in schema.names if c != "customer_id"),
            )
    if not (schema[rel.time].is_timestamp() or schema[rel.time].is_date()):
        raise CustvalError(
            f"the time column '{rel.time}' is not a time (it holds {schema[rel.time]})",
            source=source,
            column=rel.time,
            hint="Name a date or timestamp column as time under [features.auto.sources]",
        )


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """The generated features as computed: one table per part (a related table's aggregates,
    one categorical column's, or its groups'), each with a row for every customer who has a
    related row, and what the others have (``zeros``: zero counts and totals); the
    ``catalogue`` of all their features."""

    tables: list[ir.Table]
    zeros: list[dict[str, int | float]]
    catalogue: list[Feature]


def parts(
    tables: dict[str, ir.Table],
    as_of: date,
    relations: Iterable[Relation],
    windows: Sequence[int] = DEFAULT_WINDOWS,
    max_features: int = 2000,
    *,
    keep: Callable[[str, ir.Table], ir.Table] | None = None,
    only: Callable[[ir.Table], ir.Table] | None = None,
    starts: dict[str, date | None] | None = None,
    dated: bool = False,
) -> Parts:
    """The generated features at ``as_of`` from the ``relations``' tables, part by part;
    :class:`CustvalError` when they would be more than ``max_features``. ``keep(name,
    table)``, when given, computes each part once as a working table. ``only(table)``, when
    given, keeps the rows of some customers (a slice of them) in every related table: their
    features, with the catalogue of all (a window is partial by the whole table's history).
    ``starts``, when given, is :func:`history_starts` of the tables, computed once for many
    slices. ``dated``: the tables hold only rows before ``as_of``, with their ``_days``
    (:func:`before` applied once), and :func:`complete` is read from them whole; the parts
    are then expressions to run for many slices (``keep`` is refused, ``starts`` needed)."""
    if dated and (keep is not None or starts is None):
        raise ValueError("dated tables give expressions per slice: no keep, and starts given")
    spans: tuple[int | None, ...] = (*sorted(set(windows)), None)
    found: list[tuple[ir.Table, list[Feature], dict]] = []
    relations = list(relations)
    select = only or (lambda table: table)
    rows = {
        rel.kind: select(tables[rel.kind] if dated else before(tables[rel.kind], rel, as_of))
        for rel in relations
    }
    # dated tables are whole tables, sliced many times: read them once
    full = complete(tables if dated else rows, relations)
    for rel in relations:
        t, units = rows[rel.kind], _units(rel)
        found += _aggregated(t, rel, spans, units, full[rel.kind])
        found += [_categorical(t, rel, c, spans) for c in rel.categorical]
        if rel.group:
            found.append(_grouped(t, rel, spans, units))
    catalogue = [f for _, features, _ in found for f in features]
    if len(catalogue) > max_features:
        raise CustvalError(
            f"{len(catalogue):,} generated features, more than the {max_features:,} allowed",
            hint="Use fewer windows or columns under [features.auto], or raise max_features",
        )
    stored = [
        table if keep is None else keep(f"_custval_generated_{k}", table)
        for k, (table, _, _) in enumerate(found)
    ]
    if starts is None:
        starts = history_starts(tables, relations)
    return Parts(stored, [zeros for _, _, zeros in found], _marked(catalogue, starts, as_of))


def generate(
    tables: dict[str, ir.Table],
    spine: ir.Table,
    as_of: date,
    relations: Iterable[Relation],
    windows: Sequence[int] = DEFAULT_WINDOWS,
    max_features: int = 2000,
    *,
    keep: Callable[[str, ir.Table], ir.Table] | None = None,
    starts: dict[str, date | None] | None = None,
) -> Generated:
    """The generated features of every customer of ``spine`` (its customer_id) at ``as_of``
    from the ``relations``' tables (:func:`parts`, joined). ``keep(name, table)``, when given,
    computes each part once as a working table, and the join every few parts: the joined
    expression then stays small enough for Ibis to compile in a moment (hundreds of
    aggregates joined in one expression took it 5 s; Spark's compiler ran out of recursion
    on a chain of 31 joins)."""
    found = parts(tables, as_of, relations, windows, max_features, keep=keep, starts=starts)
    table = spine.select("customer_id")
    fills: dict[str, object] = {}
    for k, (part, zeros) in enumerate(zip(found.tables, found.zeros, strict=True)):
        table = table.left_join(part, "customer_id").drop("customer_id_right")
        fills.update(zeros)
        if keep is not None and k % _JOINS == _JOINS - 1:
            # a chain of dozens of joins overflowed the SQL compiler's recursion (Spark)
            table = keep(f"_custval_joined_{k}", table)
    table = table.mutate(**{c: table[c].fill_null(v) for c, v in fills.items()})
    names = [f.name for f in found.catalogue]
    return Generated(table.select("customer_id", *names), found.catalogue)


def before(table: ir.Table, rel: Relation, as_of: date) -> ir.Table:
    """The rows of ``rel``'s table before ``as_of``, with ``_days``: whole days before it
    (1: the day before)."""
    time = table[rel.time]
    early = time < cutoff(as_of) if time.type().is_timestamp() else time < ibis.date(as_of)
    rows = table.filter(early)
    day = rows[rel.time].date() if time.type().is_timestamp() else rows[rel.time]
    return rows.mutate(_days=days_between(ibis.date(as_of), day))


def used(rel: Relation) -> list[str]:
    """The columns of its table that the features of ``rel`` read, once each."""
    named = ["customer_id", rel.time, *rel.numeric, *rel.categorical, *filter(None, [rel.group])]
    return list(dict.fromkeys(named))


def _units(rel: Relation) -> dict[str, str]:
    return {c: "currency" if c in rel.money else "number" for c in rel.numeric}


def history_starts(
    tables: dict[str, ir.Table], relations: Iterable[Relation]
) -> dict[str, date | None]:
    """The first day of each relation's table (None when it is empty): one query each."""
    starts: dict[str, date | None] = {}
    for rel in relations:
        first = tables[rel.kind][rel.time].min().to_pyarrow().as_py()
        starts[rel.kind] = (
            None if first is None else (first.date() if hasattr(first, "date") else first)
        )
    return starts


def _marked(catalogue: list[Feature], starts: dict[str, date | None], as_of: date) -> list[Feature]:
    """The catalogue with every feature of a window longer than its table's history marked."""
    marked = []
    for f in catalogue:
        span = f.name.rsplit("__", 1)[-1]
        start = starts.get(f.source)
        window = int(span[:-1]) if span.endswith("d") and span[:-1].isdigit() else None
        if window is not None and start is not None and as_of - timedelta(days=window) < start:
            note = f"(partial: the history starts on {start})"
            f = replace(f, description=f"{f.description} {note}")
        marked.append(f)
    return marked
