"""The store's events in the batch tables: every batch command sees the records the real-time
state holds (:mod:`custval.flows.realtime`), so a scoring run over the same records gives the
same numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from custval.data import engine
from custval.data.contracts import CONTRACTS
from custval.data.events import EVENT_KINDS
from custval.errors import CustvalError
from custval.store import events as stored
from custval.store import open_store

__all__ = ["event_kind_tables", "order_ids", "stored_events", "with_events"]


#: each source kind's columns that events fill (the rest are null): its contract's, with the
#: event's timestamp for the day of product use
_KIND_COLUMNS = {
    kind: tuple("timestamp" if c.name == "date" else c.name for c in CONTRACTS[kind].columns)
    for kind in ("transactions", "web_sessions", "product_usage")
}


def event_kind_tables(events: pa.Table) -> dict[str, pa.Table]:
    """The store's events as rows of their sources (transactions with ``is_refund``, web
    sessions, product usage), in those sources' cleaned column names."""
    out: dict[str, pa.Table] = {}
    kinds = pa.array([EVENT_KINDS[t] for t in events.column("type").to_pylist()], pa.string())
    for kind, columns in _KIND_COLUMNS.items():
        rows = events.filter(pc.equal(kinds, kind)).select(list(columns))
        if rows.num_rows == 0:
            continue
        if kind == "transactions":
            rows = rows.append_column("is_refund", pc.less(rows.column("amount"), 0.0))
        if kind == "web_sessions":
            rows = rows.set_column(
                rows.schema.get_field_index("converted"),
                "converted",
                pc.not_equal(rows.column("converted"), 0),
            )
        if kind == "product_usage":
            day = pc.cast(rows.column("timestamp"), pa.date32())
            rows = rows.drop_columns(["timestamp"]).append_column("date", day)
        out[kind] = rows
    return out


def with_events(prepared: Any, events: pa.Table) -> None:
    """Add the store's ``events`` to the ``prepared`` tables of their kinds (in place): every
    batch command then sees the records the state holds. Orders are then counted by id,
    and a row without one (a source without order ids) is an order of its own."""
    if events.num_rows == 0:
        return
    prepared.events_through = pc.max(events.column("received_at")).as_py()
    for kind, rows in event_kind_tables(events).items():
        have = prepared.tables.get(kind)
        if have is None:
            raise CustvalError(
                f"the store has {rows.num_rows:,} {kind.replace('_', ' ')} events but the "
                f"project has no {kind} source",
                source="store events",
                hint=f"Add a {kind} source to custval.toml, or remove those events",
            )
        schema = have.schema()
        extra = {c: ibis.null(schema[c]) for c in schema.names if c not in rows.column_names}
        table = engine.load_arrow(prepared.con, f"_events_{kind}", rows)
        table = table.mutate(**extra).select(*schema.names).cast(schema)
        prepared.tables[kind] = have.union(table)
    if "transactions" in prepared.tables:
        prepared.tables["transactions"] = order_ids(prepared.tables["transactions"])
        prepared.one_row_per_order = False


def order_ids(tx: Any) -> Any:
    """Transactions with an order id on every row: a row without one gets its own."""
    n = ibis.row_number().over(group_by=[tx.customer_id, tx.timestamp.date()], order_by=tx.amount)
    return tx.mutate(order_id=tx.order_id.fill_null("~ROW~" + n.cast("string")))


def stored_events(store_url: str | Path | None) -> pa.Table | None:
    """The events of the store at ``store_url``; None when there is no store yet or it has
    none."""
    if not store_url:
        return None
    text = str(store_url)
    local = not text.startswith(("postgresql://", "postgres://"))
    if local and not Path(text.removeprefix("duckdb://")).exists():
        return None
    with open_store(text, read_only=True) as store:
        if not stored.has_state_tables(store):
            return None
        events = stored.events_table(store)
    return events if events.num_rows else None
