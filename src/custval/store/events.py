"""The events and the customers' running state (issue 21), in the store.

Migration 13 adds:

- ``events``: every event accepted (:data:`custval.data.events.EVENT_COLUMNS`), one row per
  ``event_id`` (the primary key makes a retry a no-op), with its ``fingerprint`` and when it
  was received;
- ``customer_state``: one row per customer, the parts of :mod:`custval.features.incremental`
  as JSON (``buys``, ``web``, ``use``, ``profile``, ``tickets``, ``subs``, ``offers``) and, for
  BI tools, the purchase days, first and last purchase, spend, and the events applied;
- ``state_watermark``: until when ``customer_state`` holds every event received (a service
  that keeps states in memory writes them later; on its next start the events after the
  watermark are applied again);
- ``state_builds``: each rebuild of the state (when, the as-of date, the data's last day, the
  customers and events, and the levels and kinds the features need, as JSON ``meta``).

An event changes its customer's row and adds its own in one transaction
(:func:`apply_events`). On PostgreSQL a transaction-scoped advisory lock per customer makes
concurrent events of one customer wait for each other, across processes, while other
customers' go on; a DuckDB file has one writing process, whose threads the caller serialises
per customer.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from custval.data.events import EVENT_COLUMNS
from custval.store import journal

__all__ = [
    "BUILD_COLUMNS",
    "STATE_COLUMNS",
    "STATE_PARTS",
    "build_meta",
    "event_schema",
    "events_after",
    "events_since",
    "events_table",
    "has_state_tables",
    "hold_gate",
    "insert_events",
    "journal_events",
    "known_events",
    "latest_run_finished",
    "migration_13",
    "read_states",
    "recover_journal",
    "replace_state",
    "replace_states",
    "set_watermark",
    "state_row",
    "watermark",
    "write_states",
]

#: the JSON parts of a customer's state (custval.features.incremental)
STATE_PARTS = ("buys", "web", "use", "profile", "tickets", "subs", "offers")
STATE_COLUMNS = {
    "customer_id": "TEXT",
    **dict.fromkeys(STATE_PARTS, "TEXT"),
    "purchase_days": "INTEGER",
    "first_purchase": "DATE",
    "last_purchase": "DATE",
    "spend": "DOUBLE PRECISION",
    "events_applied": "BIGINT",
    "last_event_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
}
BUILD_COLUMNS = {
    "built_at": "TIMESTAMP",
    "as_of": "DATE",
    "data_through": "DATE",
    "customers": "BIGINT",
    "events": "BIGINT",
    "meta": "TEXT",
}


def _state_table(name: str) -> str:
    cols = ", ".join(f"{c} {t}" for c, t in STATE_COLUMNS.items())
    return f"CREATE TABLE {name} ({cols})"


def _state_key(name: str) -> str:
    # PostgreSQL's upsert needs the key; DuckDB maintains a key's index at a cost of
    # milliseconds per written row and finds rows by scanning anyway, and its one writer
    # keeps one row per customer itself
    return f"ALTER TABLE {name} ADD PRIMARY KEY (customer_id)"


def migration_13(create: Any) -> list[str]:
    """Migration 13's statements (``create`` writes a CREATE TABLE without keys)."""
    cols = ", ".join(f"{c} {t}" for c, t in EVENT_COLUMNS.items())
    return [
        f"CREATE TABLE events ({cols}, PRIMARY KEY (event_id))",
        "CREATE INDEX events_customer ON events (customer_id, received_at)",
        _state_table("customer_state"),
        f"postgres only: {_state_key('customer_state')}",
        create("state_builds", BUILD_COLUMNS),
        # until when customer_state holds every event received (custval.flows.realtime)
        "CREATE TABLE state_watermark (received_through TIMESTAMP NOT NULL)",
    ]


# ---- reading --------------------------------------------------------------------------------


def build_meta(store: Any) -> dict[str, Any] | None:
    """The latest rebuild of the state: its columns and ``meta`` parsed; None before any (or
    in a store opened to read that is older than migration 13)."""
    if not has_state_tables(store):
        return None
    rows = store.query(
        f"SELECT {', '.join(BUILD_COLUMNS)} FROM state_builds ORDER BY built_at DESC LIMIT 1"
    )
    if not rows:
        return None
    found = dict(zip(BUILD_COLUMNS, rows[0], strict=True))
    found["meta"] = json.loads(found["meta"])
    return found


def has_state_tables(store: Any) -> bool:
    """Whether the store has the tables of migration 13 (a store opened to read is not
    upgraded)."""
    found = store.query(
        "SELECT COUNT(*) FROM information_schema.tables "
        "WHERE table_name = 'state_builds' AND table_schema = current_schema()"
    )
    return bool(found[0][0])


def known_events(store: Any, event_ids: list[str]) -> dict[str, str]:
    """``{event_id: fingerprint}`` of those of ``event_ids`` the store has (read inside the
    caller's transaction)."""
    if not event_ids:
        return {}
    marks = ", ".join("?" for _ in event_ids)
    rows = store.fetch(
        f"SELECT event_id, fingerprint FROM events WHERE event_id IN ({marks})", tuple(event_ids)
    )
    return {r[0]: r[1] for r in rows}


def read_states(
    store: Any, customer_ids: Iterable[str] | None, *, locked: bool = False
) -> dict[str, dict[str, Any]]:
    """The states of those customers the store has (every customer's: ``None``):
    ``{customer_id: {part: value}}`` with the JSON parts parsed and ``events_applied``.
    ``locked``: read inside the caller's transaction, which holds the customers
    (:func:`lock_customers`)."""
    cols = ("customer_id", *STATE_PARTS, "events_applied")
    select = f"SELECT {', '.join(cols)} FROM customer_state"
    read = store.fetch if locked else store.query
    if customer_ids is None:
        rows = read(select)
    else:
        ids, rows = list(customer_ids), []
        for k in range(0, len(ids), 10_000):  # PostgreSQL takes at most 65,535 parameters
            part = ids[k : k + 10_000]
            marks = ", ".join("?" for _ in part)
            rows += read(f"{select} WHERE customer_id IN ({marks})", tuple(part))
    out = {}
    for row in rows:
        state: dict[str, Any] = {
            p: None if v is None else json.loads(v)
            for p, v in zip(STATE_PARTS, row[1:-1], strict=True)
        }
        state["events_applied"] = row[-1] or 0
        out[row[0]] = state
    return out


def events_since(store: Any, customer_id: str, since: datetime | None) -> int:
    """How many events of the customer the store received after ``since`` (all: None)."""
    if since is None:
        return int(
            store.query("SELECT COUNT(*) FROM events WHERE customer_id = ?", (customer_id,))[0][0]
        )
    return int(
        store.query(
            "SELECT COUNT(*) FROM events WHERE customer_id = ? AND received_at > ?",
            (customer_id, since),
        )[0][0]
    )


def latest_run_finished(store: Any) -> datetime | None:
    """When the latest succeeded scoring run finished (None: no run)."""
    rows = store.query(
        "SELECT MAX(finished_at) FROM runs WHERE status = 'succeeded' AND kind = 'score'"
    )
    return rows[0][0] if rows else None


def events_table(store: Any) -> pa.Table:
    """Every event, as Arrow (for a rebuild and the batch runs): the ``events`` table's and,
    on a DuckDB file, those its service has acknowledged but not written yet (its journal)."""
    table = store.all_rows("events", EVENT_COLUMNS)
    unwritten = journal_events(store)
    return table if unwritten is None else pa.concat_tables([table, unwritten])


def journal_events(store: Any) -> pa.Table | None:
    """The events in a DuckDB store's journal (:mod:`custval.store.journal`) that its
    ``events`` table lacks, as Arrow; None when there are none."""
    if store.engine != "duckdb":
        return None
    rows = journal.pending_rows(store.url)
    if not rows:
        return None
    table = pa.Table.from_pylist(rows, schema=event_schema())
    # a segment whose transaction committed just before its writer stopped is in both
    store.con.register("__journal", table)
    try:
        missing = store.con.execute(
            "SELECT * FROM __journal WHERE event_id NOT IN (SELECT event_id FROM events)"
        ).fetch_arrow_table()
    finally:
        store.con.unregister("__journal")
    return missing.cast(event_schema()) if missing.num_rows else None


def recover_journal(store: Any) -> int:
    """Put the events a stopped writer left in the journal of a DuckDB store into its
    ``events`` table, then delete the journal; returns how many were missing. The caller
    holds the store for writing, with no writer appending to the journal."""
    missing = journal_events(store)
    if missing is not None:
        with store._transaction():
            store._bulk("events", EVENT_COLUMNS, missing)
    if store.engine == "duckdb":
        journal.discard_all(store.url)
    return 0 if missing is None else missing.num_rows


# ---- writing --------------------------------------------------------------------------------


#: the advisory lock that every ingest holds shared and a replay alone (PostgreSQL); outside
#: the customers' keys (crc32: below 2**32)
_GATE = 2**40


def hold_gate(store: Any, *, alone: bool = False) -> None:
    """PostgreSQL: hold the ingestion's gate to the end of the caller's transaction, shared
    with the other ingests, or ``alone`` (a replay: no ingest is between writing its events
    and moving the watermark while it reads them, so none is applied twice). DuckDB:
    nothing (one writing process)."""
    if store.engine != "postgres":
        return
    lock = "pg_advisory_xact_lock" if alone else "pg_advisory_xact_lock_shared"
    store._execute(f"SELECT {lock}(?)", (_GATE,))


def lock_customers(store: Any, customer_ids: Iterable[str]) -> None:
    """PostgreSQL: wait for the other transactions holding these customers, then hold them
    to the end of this one (advisory locks, taken in one order so two requests cannot wait for
    each other). DuckDB: nothing (one writing process, serialised by the caller)."""
    if store.engine != "postgres":
        return
    for key in sorted({zlib.crc32(c.encode()) for c in customer_ids}):
        store._execute("SELECT pg_advisory_xact_lock(?)", (key,))


def insert_events(store: Any, events: dict[str, list[Any]]) -> None:
    """Add the ``events`` (columns of the event table); the caller holds the transaction."""
    names = list(EVENT_COLUMNS)
    # PostgreSQL copies them; a DuckDB service's second of events goes in bulk too
    if store.engine == "postgres" or len(events[names[0]]) > _CHUNK:
        store._bulk("events", EVENT_COLUMNS, pa.table(events, schema=event_schema()))
        return
    # DuckDB pays milliseconds per statement, little per row: one statement for them all
    _insert_values(store, "events", names, list(zip(*(events[c] for c in names), strict=True)))


def write_states(
    store: Any,
    states: dict[str, dict[str, Any]],
    summaries: dict[str, dict[str, Any]],
    existing: set[str],
    through: datetime,
) -> None:
    """Write the customers' ``states`` with their BI ``summaries`` (``existing``: those the
    table has a row of) and move the watermark to ``through``: the state then holds every
    event received until then. The caller holds the transaction."""
    cols = list(STATE_COLUMNS)
    rows = [state_row(c, state, summaries[c]) for c, state in states.items()]
    if store.engine == "postgres":
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        sql = (
            f"INSERT INTO customer_state ({', '.join(cols)}) VALUES "
            f"({', '.join('%s' for _ in cols)}) ON CONFLICT (customer_id) DO UPDATE SET {updates}"
        )
        store.con.cursor().executemany(sql, [tuple(r[c] for c in cols) for r in rows])
    else:
        # an UPDATE costs DuckDB milliseconds per column it changes: the rows are deleted by
        # the key's index and written again, in two statements
        old = [r["customer_id"] for r in rows if r["customer_id"] in existing]
        for k in range(0, len(old), _CHUNK):
            part = old[k : k + _CHUNK]
            store._execute(
                f"DELETE FROM customer_state WHERE customer_id IN ({', '.join('?' for _ in part)})",
                tuple(part),
            )
        _insert_values(store, "customer_state", cols, [tuple(r[c] for c in cols) for r in rows])
    set_watermark(store, through)


def replace_states(store: Any, rows: list[dict[str, Any]], through: datetime) -> None:
    """Write many customers' state rows (:func:`state_row`) at once (DuckDB: their old rows
    found by one join, not a scan per customer) and move the watermark; the caller holds the
    transaction."""
    cols = list(STATE_COLUMNS)
    table = pa.table({c: [r[c] for r in rows] for c in cols}, schema=_schema(STATE_COLUMNS))
    store.con.register("__states", table)
    try:
        store._execute(
            "DELETE FROM customer_state WHERE customer_id IN (SELECT customer_id FROM __states)"
        )
        store._execute("INSERT INTO customer_state SELECT * FROM __states")
    finally:
        store.con.unregister("__states")
    set_watermark(store, through)


def set_watermark(store: Any, through: datetime) -> None:
    """The state holds every event received until ``through`` (in the caller's transaction;
    never moved back)."""
    store._execute("DELETE FROM state_watermark WHERE received_through <= ?", (through,))
    if not store.fetch("SELECT 1 FROM state_watermark"):
        store._execute("INSERT INTO state_watermark VALUES (?)", (through,))


def watermark(store: Any) -> datetime | None:
    """Until when the stored state holds every event received (None: no event yet)."""
    rows = store.fetch("SELECT MAX(received_through) FROM state_watermark")
    return rows[0][0] if rows else None


def events_after(store: Any, since: datetime | None) -> list[dict[str, Any]]:
    """The events received after ``since`` that the stored state lacks (a service that kept
    states in memory stopped before writing them), in the order received."""
    cols = list(EVENT_COLUMNS)
    where, params = ("", ()) if since is None else (" WHERE received_at > ?", (since,))
    rows = store.fetch(
        f"SELECT {', '.join(cols)} FROM events{where} ORDER BY received_at, event_id", params
    )
    return [dict(zip(cols, r, strict=True)) for r in rows]


_CHUNK = 200


def _insert_values(store: Any, table: str, cols: list[str], rows: list[tuple]) -> None:
    one = "(" + ", ".join("?" for _ in cols) + ")"
    for k in range(0, len(rows), _CHUNK):
        part = rows[k : k + _CHUNK]
        params = tuple(v for row in part for v in row)
        store._execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES {', '.join(one for _ in part)}",
            params,
        )


def state_row(customer_id: str, state: dict[str, Any], summary: dict[str, Any]) -> dict:
    """A customer's row of ``customer_state``: the state's parts as JSON and its BI columns."""
    row: dict[str, Any] = {"customer_id": customer_id}
    for part in STATE_PARTS:
        value = state.get(part)
        row[part] = None if value is None else json.dumps(value, separators=(",", ":"))
    return row | summary


def replace_state(
    store: Any, states: pa.Table, build: dict[str, Any], through: datetime | None
) -> None:
    """The whole state in place of the old one, and the build's row, in one transaction:
    readers see the old state or the new, never a mix. ``through``: the last event received
    that the states hold."""
    staging = "customer_state_next"
    store._execute(f"DROP TABLE IF EXISTS {staging}")
    store._execute(_state_table(staging))
    if store.engine == "postgres":
        store._execute(_state_key(staging))
    with store._transaction():
        store._bulk(staging, STATE_COLUMNS, states)
        store._execute("DROP TABLE customer_state")
        store._execute(f"ALTER TABLE {staging} RENAME TO customer_state")
        row = {**build, "meta": json.dumps(build["meta"], default=str)}
        marks = ", ".join("?" for _ in BUILD_COLUMNS)
        store._execute(
            f"INSERT INTO state_builds VALUES ({marks})", tuple(row[c] for c in BUILD_COLUMNS)
        )
        store._execute("DELETE FROM state_watermark")
        if through is not None:
            store._execute("INSERT INTO state_watermark VALUES (?)", (through,))


_ARROW = {
    "TEXT": pa.string(),
    "DOUBLE PRECISION": pa.float64(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
}


def _schema(columns: dict[str, str]) -> pa.Schema:
    return pa.schema([(c, _ARROW[t]) for c, t in columns.items()])


def event_schema() -> pa.Schema:
    """The Arrow schema of ``events``."""
    return _schema(EVENT_COLUMNS)


def state_schema() -> pa.Schema:
    """The Arrow schema of ``customer_state`` (a rebuild's table)."""
    return _schema(STATE_COLUMNS)


def as_date(value: Any) -> date | None:
    """A DATE as both drivers give it (a date; text from an older store)."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
