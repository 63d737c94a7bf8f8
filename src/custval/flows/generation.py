"""The generated features of a project (:mod:`custval.features.generated`): the related tables
its sources give, and the features joined to the hand-built ones.

On DuckDB the customers are taken in slices: memory follows the slice, not the table (1M
customers x 518 features are 4 GB of values alone). Each customer gets a key, its place in
customer-id order; every related table is copied once with the key for the customer and its
rows in key order, so that a slice of customers is a range of rows (filtered out of the whole
table, a slice's rows were spread thinly over DuckDB's vectors and every aggregate ran 5x
slower) and grouping is by a number, not a text. Each slice's parts are placed beside the
hand-built features by key in Arrow and written as one row group of a single Parquet file in
customer-id order: no join and no sort of a table hundreds of columns wide.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from custval.config import Project
from custval.data import engine
from custval.data.contracts import CONTRACTS
from custval.errors import CustvalError
from custval.features import generated
from custval.features.build import FeatureTable
from custval.flows.preparation import Prepared

#: the generated values (customers x features) computed at a time on DuckDB: a slice's
#: aggregation states stay well inside the engine's memory cap, and its rows in Arrow (8 bytes
#: a value: 320 MB) beside it
SLICE_CELLS = 40_000_000
#: DuckDB's memory cap (MB) while the slices are made, to leave room for a slice's rows: at
#: the default 3 GB the 1M-customer company peaked at 4.2 GB, at 2,500 MB at 3.7 GB in the
#: same time (bench/features_auto.py)
SLICE_MEMORY_LIMIT_MB = 2500

# a customer's place in customer-id order: the key of the slices
_KEY = "_custval_key"

Keep = Callable[[str, ir.Table], ir.Table]


def auto_features(project: Project, prepared: Prepared, ft: FeatureTable) -> FeatureTable:
    """``ft`` with the generated features of ``[features.auto]`` joined in
    (:mod:`custval.features.generated`): every related table aggregated in windows of days
    before the as-of date, each feature named and described from its definition. On DuckDB
    the table is a Parquet file written slice by slice (:data:`SLICE_CELLS` values each)."""
    options = project.features.auto
    con = prepared.con
    related = relations(project, prepared)
    settings = {
        "as_of": ft.as_of,
        "relations": related,
        "windows": options.windows,
        "max_features": options.max_features,
        "starts": generated.history_starts(prepared.tables, related),
    }
    if engine.writes_here(con):
        with engine.capped_memory(con, SLICE_MEMORY_LIMIT_MB), _working(con) as keep:
            return _in_slices(ft, prepared.tables, keep, settings)
    with _working(con) as keep:
        gen = generated.generate(prepared.tables, ft.table, keep=keep, **settings)
        table = ft.table.left_join(gen.table, "customer_id").drop("customer_id_right")
        table = engine.materialise(con, "_custval_auto_features", table)
        return FeatureTable(table, [*ft.catalogue, *gen.catalogue], ft.as_of)


@contextmanager
def _working(con: ibis.BaseBackend) -> Iterator[Keep]:
    """``keep(name, table)``: ``table`` computed once as the working table ``name``, dropped
    on leaving."""
    kept: set[str] = set()

    def keep(name: str, table: ir.Table) -> ir.Table:
        kept.add(name)
        return engine.materialise(con, name, table)

    try:
        yield keep
    finally:
        for name in kept:
            engine.drop(con, name)


def _in_slices(
    ft: FeatureTable, tables: dict[str, ir.Table], keep: Keep, settings: dict[str, Any]
) -> FeatureTable:
    """The hand-built and generated features, slice by slice of customers, as one Parquet
    file in customer-id order (a row group a slice). Every part's query is compiled once, for
    a slice of keys to come, and run for each slice with its keys: compiling the same few
    dozen expressions again for every slice took Ibis ~10 s of the 1M-customer run."""
    hand = keep(
        "_custval_hand_features",
        ft.table.mutate(**{_KEY: ibis.row_number().over(order_by="customer_id")}),
    )
    keyed = _keyed(tables, hand, keep, settings)
    found = generated.parts(keyed, only=_between, dated=True, **settings)
    con = hand._find_backend()
    queries = [_Query(con, _between(hand, _KEY).order_by(_KEY))]
    queries += [_Query(con, part) for part in found.tables]
    n = hand.count().to_pyarrow().as_py()
    size = max(100, SLICE_CELLS // (len(hand.columns) + len(found.catalogue)))
    path = engine.scratch(con) / f"features-{uuid.uuid4().hex}.parquet"
    names = [*(c for c in hand.columns if c != _KEY), *(f.name for f in found.catalogue)]
    writer: pq.ParquetWriter | None = None
    try:
        for low in range(0, max(n, 1), size):
            keys = range(low, low + size)
            rows = queries[0].run(keys).drop_columns([_KEY])
            for query, zeros in zip(queries[1:], found.zeros, strict=True):
                rows = _placed(rows, query.run(keys), zeros, low)
            rows = rows.select(names)
            writer = writer or pq.ParquetWriter(path, rows.schema)
            writer.write_table(rows.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    table = con.read_parquet(path)
    return FeatureTable(table, [*ft.catalogue, *found.catalogue], ft.as_of, path)


# the bounds of a slice of keys in a compiled query, put in for each slice: numbers no key
# reaches
_LOW, _HIGH = -7_700_000_000_001, -7_700_000_000_002


def _between(t: ir.Table, key: str = "customer_id") -> ir.Table:
    """The rows of ``t`` in a slice of keys, the slice's bounds to come (:class:`_Query`)."""
    return t.filter((t[key] >= ibis.literal(_LOW)) & (t[key] < ibis.literal(_HIGH)))


class _Query:
    """An expression filtered by :func:`_between`, compiled once and run for a slice of keys."""

    def __init__(self, con: ibis.BaseBackend, expr: ir.Table) -> None:
        self.con = con
        self.sql = engine.compiled(con, expr)
        self.schema = expr.schema().to_pyarrow()
        if str(_LOW) not in self.sql or str(_HIGH) not in self.sql:
            raise RuntimeError("the slice's bounds are not in its compiled SQL")

    def run(self, keys: range) -> pa.Table:
        sql = self.sql.replace(str(_LOW), str(int(keys.start)))
        sql = sql.replace(str(_HIGH), str(int(keys.stop)))
        return engine.arrow(self.con, sql).cast(self.schema)


def _keyed(
    tables: dict[str, ir.Table], hand: ir.Table, keep: Keep, settings: dict[str, Any]
) -> dict[str, ir.Table]:
    """Each related table's rows before the as-of date, with their days before it
    (:func:`custval.features.generated.before`) and the columns its features read, the
    customer's key as customer_id, in key order (customers not in ``hand`` left out)."""
    keys = hand.select("customer_id", _KEY)
    found = {}
    for rel in settings["relations"]:
        rows = generated.before(tables[rel.kind], rel, settings["as_of"])
        # the days before the as-of date stand for the time column from here on
        read = [c for c in generated.used(rel) if c != rel.time]
        rows = rows.select(*read, "_days").inner_join(keys, "customer_id")
        rows = rows.drop("customer_id").rename(customer_id=_KEY)
        found[rel.kind] = keep(f"_custval_keyed_{rel.short}", rows.order_by("customer_id"))
    return found


def _placed(rows: pa.Table, part: pa.Table, zeros: dict[str, int | float], low: int) -> pa.Table:
    """``rows`` (the customers of keys ``low``, ``low`` + 1, ... in turn) with the columns of
    ``part`` (a row per customer it has, keyed by customer_id) beside them: a customer it
    lacks has its ``zeros`` (zero counts and totals) or nothing."""
    at = np.full(rows.num_rows, -1, np.int64)
    at[part.column("customer_id").to_numpy() - low] = np.arange(part.num_rows)
    taken = part.drop_columns(["customer_id"]).take(pa.array(at, mask=at < 0))
    for name in taken.column_names:
        column = taken.column(name)
        rows = rows.append_column(
            name, pc.fill_null(column, zeros[name]) if name in zeros else column
        )
    return rows


# columns that record what happened after their row (a campaign's outcome): never a feature
_OUTCOMES = {("treatments", "retained")}


def default_relations(tables: dict[str, ir.Table]) -> list[generated.Relation]:
    """The relations the tables' contracts give: every kind with a customer and a time column,
    its amounts, numbers and flags as numeric columns, its categories as categorical, and an
    order's lines as a group where the transactions have order ids."""
    found = []
    for kind in generated.KINDS:
        if kind not in tables:
            continue
        columns = tables[kind].columns
        contract = CONTRACTS[kind]
        present = [
            c for c in contract.columns if c.name in columns and (kind, c.name) not in _OUTCOMES
        ]
        time = next(c.name for c in contract.columns if c.type in {"timestamp", "date"})
        found.append(
            generated.Relation(
                kind,
                time,
                numeric=tuple(c.name for c in present if c.type in {"amount", "number", "bool"}),
                categorical=tuple(c.name for c in present if c.type == "category"),
                group="order_id" if kind == "transactions" and "order_id" in columns else None,
                money=tuple(c.name for c in present if c.type == "amount"),
            )
        )
    return found


def relations(project: Project, prepared: Prepared) -> list[generated.Relation]:
    """The related tables of the generated features: the contracts' defaults, with what
    ``[features.auto.sources]`` declares for a source's kind."""
    found = {r.kind: r for r in default_relations(prepared.tables)}
    for name, declared in project.features.auto.sources.items():
        spec = project.sources.get(name)
        if spec is None:
            raise CustvalError(
                f"[features.auto.sources.{name}] names no source of the project",
                hint="Sources: " + ", ".join(project.sources),
            )
        rel = found.get(spec.kind) or generated.Relation(spec.kind, declared.time or "")
        settings = declared.model_dump(exclude_none=True)
        rel = replace(
            rel, **{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        )
        generated.check_relation(rel, prepared.tables, name)
        found[spec.kind] = rel
    return list(found.values())
