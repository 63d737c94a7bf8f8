"""Real time: events into the store, each customer's running state, their numbers as of now.

- :func:`ingest` applies events (a request, a file, a queue's messages): each batch all or
  nothing, a retry a no-op, one transaction per group of batches.
- :func:`rebuild` recomputes every customer's state from the project's sources and the
  store's events (after a fault, or after the sources were refreshed).
- :func:`customer_now` answers a customer's features, P(alive), expected purchases, CLV and
  segment at an as-of date from their state and the latest scoring run's models; the service
  adds the value probability and reasons (:mod:`custval.api.online`).
- :func:`check_state` compares the state with the batch feature code on the same records.

The batch commands read the store's events too (:func:`with_events`): a scoring run over the
same records gives the same numbers as the state.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import queue
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.columns import SUMMARY_COLUMNS
from custval.config import Project
from custval.data.events import EventBatch, event_columns, event_row
from custval.errors import CustvalError
from custval.features import incremental as inc
from custval.features.build import GROUPS, build_features
from custval.flows.events import order_ids
from custval.flows.preparation import prepare
from custval.models.btyd_clv import clv_models_from_json, point_clv
from custval.models.clv import purchase_predictions
from custval.models.segments import assign_nearest
from custval.store import Store, open_store
from custval.store import events as stored
from custval.store.journal import Journal

__all__ = [
    "IngestError",
    "Ingested",
    "StateCheck",
    "check_state",
    "customer_now",
    "ingest",
    "rebuild",
    "state_tables",
]

Progress = Callable[[str], None]
log = logging.getLogger("custval.realtime")


def _noop(_: str) -> None:
    pass


# ---- rebuilding the state -------------------------------------------------------------------


@dataclass
class Rebuilt:
    """A rebuild: the customers whose state it wrote, the events it counted, its data's last
    day and the seconds it took."""

    customers: int
    events: int
    data_through: date | None
    seconds: float


def state_tables(prepared: Any) -> dict[str, pa.Table]:
    """The cleaned tables a state is built from, as Arrow (every order with an id)."""
    tables = dict(prepared.tables)
    if "transactions" in tables and prepared.one_row_per_order is not False:
        tables["transactions"] = order_ids(tables["transactions"])
    tables.pop("products", None)
    return {k: t.to_pyarrow() for k, t in tables.items() if k in set(inc.PART_KINDS.values())}


def build_states(tables: dict[str, pa.Table]) -> tuple[pa.Table, dict[str, Any]]:
    """Every customer's state row (the store's ``customer_state``) and the build's meta."""
    parts = inc.state_parts(tables)
    ids = pa.concat_arrays(
        [t.column("customer_id").combine_chunks() for t in parts.values()]
    ).unique()
    frame = pd.DataFrame({"customer_id": ids.to_numpy(zero_copy_only=False)})
    for part in stored.STATE_PARTS:
        if part in parts:
            found = parts[part].to_pandas().set_index("customer_id")["part"]
            frame[part] = found.reindex(frame["customer_id"]).to_numpy()
        else:
            frame[part] = None
    summary = _summaries_bulk(tables)
    frame = frame.merge(summary, on="customer_id", how="left")
    frame["events_applied"] = 0
    frame["last_event_at"] = pd.NaT
    frame["updated_at"] = pd.Timestamp(datetime.now(UTC).replace(tzinfo=None))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.select(list(stored.STATE_COLUMNS)).cast(stored.state_schema())
    levels = inc.levels_of(tables)
    meta = {
        "kinds": sorted(tables),
        "levels": {
            "categories": levels.categories,
            "channels": levels.channels,
            "services": levels.services,
        },
    }
    return table, meta


def _summaries_bulk(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """The state's BI columns for every buyer: purchase days, first and last, spend."""
    import duckdb

    if "transactions" not in tables:
        return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
    con = duckdb.connect()
    try:
        con.register("transactions", tables["transactions"])
        return con.execute(
            "SELECT customer_id, COUNT(DISTINCT CAST(timestamp AS DATE))::INTEGER AS purchase_days,"
            " MIN(CAST(timestamp AS DATE)) AS first_purchase,"
            " MAX(CAST(timestamp AS DATE)) AS last_purchase, SUM(amount) AS spend "
            "FROM transactions WHERE NOT is_refund GROUP BY customer_id"
        ).df()
    finally:
        con.close()


def _data_through(tables: dict[str, pa.Table]) -> date | None:
    """The last day any record of ``tables`` falls on."""
    columns = {
        "transactions": "timestamp",
        "web_sessions": "timestamp",
        "product_usage": "date",
        "interactions": "timestamp",
        "subscriptions": "started_at",
        "treatments": "sent_at",
    }
    found = []
    for kind, col in columns.items():
        if kind in tables and tables[kind].num_rows:
            value = pa.compute.max(tables[kind].column(col)).as_py()
            if value is not None:
                found.append(value.date() if isinstance(value, datetime) else value)
    if "subscriptions" in tables and tables["subscriptions"].num_rows:
        value = pa.compute.max(tables["subscriptions"].column("cancelled_at")).as_py()
        if value is not None:
            found.append(value.date())
    return max(found) if found else None


def _events_through(prepared: Any) -> datetime | None:
    """When the last of the events a rebuild read was received (its states hold them)."""
    return prepared.events_through  # type: ignore[no-any-return]


def rebuild(project: Project, *, progress: Progress = _noop) -> Rebuilt:
    """Recompute every customer's state from the project's sources and the store's events and
    put it in place of the store's, in one transaction."""

    started = time.perf_counter()
    prepared = prepare(project, progress=progress)
    progress("building every customer's state")
    tables = state_tables(prepared)
    states, meta = build_states(tables)
    through = _data_through(tables)
    progress("writing the state to the store")
    with open_store(project.store, wait=30.0) as store:
        stored.recover_journal(store)  # its events are in the state now: in the table too
        n_events = int(store.query("SELECT COUNT(*) FROM events")[0][0])
        build = {
            "built_at": datetime.now(UTC).replace(tzinfo=None),
            "as_of": project.as_of,
            "data_through": through,
            "customers": states.num_rows,
            "events": n_events,
            "meta": meta,
        }
        stored.replace_state(store, states, build, _events_through(prepared))
    return Rebuilt(states.num_rows, n_events, through, time.perf_counter() - started)


# ---- ingesting events -----------------------------------------------------------------------


class IngestError(CustvalError):
    """A batch of events refused whole: ``status`` is the HTTP status that says why (409 for
    an event id used by another event, 422 for an event the state cannot take)."""

    def __init__(self, message: str, status: int = 422, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status = status


@dataclass
class Ingested:
    """What a batch of events did: how many were applied, how many were retries of events
    already applied, and which customers' states were recomputed because an event fell
    before their latest record (a late event)."""

    applied: int = 0
    duplicates: int = 0
    customers: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "duplicates": self.duplicates,
            "customers": self.customers,
            "recomputed": self.late,
        }


#: per-customer locks of a process's threads (DuckDB has one writing process; PostgreSQL
#: adds its advisory locks across processes)
_LOCKS = [threading.Lock() for _ in range(256)]


def _lock_for(customer_ids: list[str]) -> list[threading.Lock]:
    slots = sorted({zlib.crc32(c.encode()) % len(_LOCKS) for c in customer_ids})
    return [_LOCKS[i] for i in slots]


def ingest(
    store: Store,
    batches: list[EventBatch],
    build: dict[str, Any] | None = None,
    cache: StateCache | None = None,
) -> list[Ingested | IngestError]:
    """Apply ``batches`` of events, each all or nothing, together: for each batch what it
    did, or why it was refused (nothing of it applied). The store must have a built state
    (:func:`rebuild`; ``build``: its latest, when the caller has read it). Without a
    ``cache`` the events and the changed states are written in one transaction; with one
    (the one writer of a DuckDB file) the events go to its journal and the changed states
    stay in memory until it writes both to the store (:meth:`StateCache.flush`)."""
    build = build or stored.build_meta(store)
    if build is None:
        raise CustvalError(
            "the store has no customer state yet",
            source=store.url,
            hint="Run 'custval rebuild -c custval.toml' once: it builds every customer's state "
            "from the sources",
        )
    customers = sorted({e.customer_id for b in batches for e in b.events})
    locks = _lock_for(customers)
    for lock in locks:
        lock.acquire()
    try:
        if cache is not None:
            return _ingest_locked(store, batches, customers, build, cache)
        with store._transaction():
            stored.hold_gate(store)
            stored.lock_customers(store, customers)
            return _ingest_locked(store, batches, customers, build, None)
    finally:
        for lock in reversed(locks):
            lock.release()


def _ingest_locked(
    store: Store,
    batches: list[EventBatch],
    customers: list[str],
    build: dict[str, Any],
    cache: StateCache | None,
) -> list[Ingested | IngestError]:
    ids = [e.event_id for b in batches for e in b.events]
    if cache is not None:
        seen, states = cache.known(store, ids), cache.read(customers)
    else:
        seen = stored.known_events(store, ids)
        states = stored.read_states(store, customers, locked=True)
    existing = set(states)
    through = stored.as_date(build["data_through"])
    outcomes: list[Ingested | IngestError] = []
    accepted: list[dict[str, Any]] = []  # the new events' rows
    touched: set[str] = set()
    for batch in batches:
        try:
            result, changed, new = _apply_batch(batch, states, seen, through)
        except IngestError as exc:
            outcomes.append(exc)
            continue
        states.update(changed)
        touched.update(changed)
        accepted += new
        outcomes.append(result)
    if accepted:
        now = _received_now()
        for row in accepted:
            row["received_at"] = now
        last = {r["customer_id"]: r["timestamp"] for r in accepted}
        summaries = {c: _summary(states[c], last.get(c), now) for c in touched}
        changed_states = {c: states[c] for c in touched}
        if cache is None:
            stored.insert_events(store, event_columns(accepted))
            stored.write_states(store, changed_states, summaries, existing, now)
        else:
            cache.add(accepted, changed_states, summaries, now)
    return outcomes


_LAST_RECEIVED = [datetime(1970, 1, 1)]


def _received_now() -> datetime:
    """When a group of events is received: the clock, and never the same as or before the
    previous group's (the watermark orders events by it)."""
    now = max(datetime.now(UTC).replace(tzinfo=None), _LAST_RECEIVED[0] + timedelta(microseconds=1))
    _LAST_RECEIVED[0] = now
    return now


class StateCache:
    """Every customer's state in memory, for the one writing process of a DuckDB file.

    DuckDB pays 2.5-3 ms for any transaction that writes, however small, and finds rows by
    scanning (its key index serves uniqueness, not lookups). So the states are read once at
    the start, and a group of events is acknowledged once it is in the store's journal
    (:mod:`custval.store.journal`, a synced append: 0.2 ms); a thread of its own writes the
    journal's events and the changed states to the store in one transaction every second
    (:meth:`flush`), with the watermark. A process that stops before that leaves its events
    in the journal, put into the store and applied at the next start (:func:`replay`).

    An event id seen before is found among the events not written yet, or by a 64-bit hash
    of every stored id (kept sorted in memory: 8 bytes an event) and, on a match, the store.
    The events since the latest scoring run are counted here too."""

    def __init__(self, store: Store) -> None:
        cols = ("customer_id", *stored.STATE_PARTS, "events_applied")
        rows = store.query(f"SELECT {', '.join(cols)} FROM customer_state")
        self._raw: dict[str, tuple[Any, ...]] = {r[0]: r[1:] for r in rows}
        # the states read now live as long as the process: out of the garbage collector's
        # sight, whose full passes over them would stall requests for a tenth of a second
        gc.freeze()
        self._parsed: dict[str, dict[str, Any]] = {}
        #: the changed customers' states and BI columns, made into rows of customer_state
        #: by the flush (once a second however many events changed them, and off the
        #: requests' path; a state is never changed in place, so reading it there is safe)
        self.dirty: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.through: datetime | None = None
        self._lock = threading.Lock()
        self._journal = Journal(store.url)
        self._journal_lock = threading.Lock()  # a group's append and its keeping, together
        self._unwritten: list[dict[str, Any]] = []  # in the journal, not yet in the store
        self._recent: dict[str, str] = {}  # their event ids' fingerprints
        self._hashes = _stored_hashes(store)
        self._written: set[int] = set()  # hashes of the ids written since _hashes was made
        self.since_run: dict[str, int] = {}
        run_finished = stored.latest_run_finished(store)
        if run_finished is not None:
            counted = store.query(
                "SELECT customer_id, COUNT(*) FROM events WHERE received_at > ? "
                "GROUP BY customer_id",
                (run_finished,),
            )
            self.since_run = {r[0]: int(r[1]) for r in counted}

    def get(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's state (None: not a customer of the state)."""
        with self._lock:
            found = self._parsed.get(customer_id)
            raw = self._raw.get(customer_id) if found is None else None
        if raw is None:
            return found
        parts = zip(stored.STATE_PARTS, raw[:-1], strict=True)
        state = {p: None if v is None else json.loads(v) for p, v in parts}
        state["events_applied"] = raw[-1] or 0
        return state

    def read(self, customers: list[str]) -> dict[str, dict[str, Any]]:
        """The states of those of ``customers`` the state has."""
        found = {c: self.get(c) for c in customers}
        return {c: s for c, s in found.items() if s is not None}

    def known(self, store: Store, event_ids: list[str]) -> dict[str, str]:
        """``{event_id: fingerprint}`` of those of ``event_ids`` applied before."""
        found: dict[str, str] = {}
        maybe: list[str] = []
        hashes = np.array([_id_hash(i) for i in event_ids], dtype=np.uint64)
        at = np.searchsorted(self._hashes, hashes).clip(max=max(len(self._hashes) - 1, 0))
        stored_hit = (
            self._hashes[at] == hashes if len(self._hashes) else np.zeros(hashes.size, bool)
        )
        with self._lock:
            for event_id, h, hit in zip(event_ids, hashes.tolist(), stored_hit, strict=True):
                if event_id in self._recent:
                    found[event_id] = self._recent[event_id]
                elif hit or h in self._written:
                    maybe.append(event_id)
        return found | stored.known_events(store, maybe)  # written: the store says

    def add(
        self,
        rows: list[dict[str, Any]],
        states: dict[str, dict[str, Any]],
        summaries: dict[str, dict[str, Any]],
        received: datetime,
    ) -> None:
        """A group's new events (``rows``) into the journal, then their changed ``states``
        kept: the group is applied when this returns."""
        with self._journal_lock:
            self._journal.append(rows)
            with self._lock:
                for cid, state in states.items():
                    self._parsed[cid] = state
                    self._raw.pop(cid, None)
                    self.dirty[cid] = (state, summaries[cid])
                for row in rows:  # one per event received
                    cid = row["customer_id"]
                    self.since_run[cid] = self.since_run.get(cid, 0) + 1
                    self._recent[row["event_id"]] = row["fingerprint"]
                self._unwritten += rows
                self.through = received

    def flush(self, store: Store) -> int:
        """Write the events not written yet and the changed states, with the watermark, in
        one transaction; returns how many events."""
        with self._journal_lock:
            with self._lock:
                dirty, through, events = dict(self.dirty), self.through, self._unwritten
                self._unwritten = []
            if not events and not dirty:
                return 0
            segment = self._journal.rotate()  # the groups of this write, and no other
        try:
            rows = _state_rows(dirty)
            with store._transaction():
                if events:
                    stored.insert_events(store, event_columns(events))
                if rows and through is not None:
                    stored.replace_states(store, rows, through)
        except Exception:
            with self._lock:  # kept, written with the next (the journal keeps them too)
                self._unwritten = events + self._unwritten
            raise
        self._journal.discard(segment)
        with self._lock:
            for cid, found in dirty.items():
                if self.dirty.get(cid) is found:  # not changed again meanwhile
                    del self.dirty[cid]
            for row in events:
                self._recent.pop(row["event_id"], None)
                self._written.add(_id_hash(row["event_id"]))
            if len(self._written) > 100_000:  # into the sorted array, now and then
                merged = np.fromiter(self._written, dtype=np.uint64, count=len(self._written))
                self._hashes = np.sort(np.concatenate([self._hashes, merged]))
                self._written = set()
        return len(events)

    def close(self) -> None:
        """Close the journal (after the last :meth:`flush`)."""
        self._journal.close()


def _state_rows(dirty: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> list[dict]:
    """The changed states' rows of ``customer_state``, made in the flush's thread; it lets a
    request waiting for the interpreter go first every few rows (the JSON of 700 states
    holds it 70 ms, and a waiting thread would otherwise get it only every 5 ms)."""
    rows = []
    for k, (cid, (state, summary)) in enumerate(dirty.items()):
        rows.append(stored.state_row(cid, state, summary))
        if k % 8 == 7:
            time.sleep(0)
    return rows


def _id_hash(event_id: str) -> int:
    """An event id's 64-bit hash, as DuckDB's ``md5_number_upper`` gives it."""
    return int.from_bytes(hashlib.md5(event_id.encode()).digest()[:8], "little")


def _stored_hashes(store: Store) -> np.ndarray:
    """The sorted hashes (:func:`_id_hash`) of every event id in the store."""
    found = store.con.execute("SELECT md5_number_upper(event_id) AS h FROM events").fetchnumpy()
    return np.sort(np.asarray(found["h"], dtype=np.uint64))


def replay(store: Store) -> int:
    """Apply the events the stored state lacks: first the journal's of a DuckDB file put into
    the store, then those received after the state's watermark (a writer that kept states in
    memory stopped before writing them), in one transaction; returns how many."""
    stored.recover_journal(store)
    with store._transaction():
        # alone: a writer of another process that started meanwhile could otherwise commit
        # events and states between the watermark read here and the events read after it,
        # and have them applied twice (seen once: a PostgreSQL service of 2 workers)
        stored.hold_gate(store, alone=True)
        rows = stored.events_after(store, stored.watermark(store))
        if not rows:
            return 0
        customers = sorted({r["customer_id"] for r in rows})
        states = stored.read_states(store, customers, locked=True)
        existing = set(states)
        last: dict[str, datetime] = {}
        for row in rows:  # the events a writer left: a few seconds' worth at most
            state = states.setdefault(row["customer_id"], {})
            _apply_row(state, row, 0)
            state["events_applied"] = state.get("events_applied", 0) + 1
            last[row["customer_id"]] = row["timestamp"]
        through = max(r["received_at"] for r in rows)
        summaries = {c: _summary(states[c], last[c], through) for c in customers}
        stored.write_states(store, {c: states[c] for c in customers}, summaries, existing, through)
    return len(rows)


def _apply_batch(
    batch: EventBatch,
    states: dict[str, dict[str, Any]],
    seen: dict[str, str],
    through: date | None,
) -> tuple[Ingested, dict[str, dict[str, Any]], list[Any]]:
    """One batch applied to copies of its customers' states: (what it did, the changed
    states, the new events' rows); an :class:`IngestError` leaves ``states`` and ``seen`` as
    they were."""
    result = Ingested()
    changed: dict[str, dict[str, Any]] = {}
    new: list[Any] = []
    marks: dict[str, str] = {}
    copied: set[tuple[str, str]] = set()
    for i, event in enumerate(batch.events):
        row = event_row(event)  # once: its fingerprint, the state and the insert use it
        mark = row["fingerprint"]
        before = marks.get(event.event_id) or seen.get(event.event_id)
        if before is not None:
            if before != mark:
                raise IngestError(
                    f"events[{i}]: event_id '{event.event_id}' was used for another event",
                    409,
                    hint="Give every event its own event_id; send the same id only to retry "
                    "the same event",
                )
            result.duplicates += 1
            continue
        cid = event.customer_id
        if cid not in changed:  # the parts are copied as events touch them (they are large)
            changed[cid] = dict(states.get(cid) or {})
        state = changed[cid]
        part = _PARTS[event.type]
        if (cid, part) not in copied:
            state[part] = inc.copy_part(state.get(part))
            copied.add((cid, part))
        late = _is_late(state, event, through)
        _apply_row(state, row, i)
        state["events_applied"] = state.get("events_applied", 0) + 1
        marks[event.event_id] = mark
        new.append(row)
        result.applied += 1
        if late and cid not in result.late:
            result.late.append(cid)
    seen.update(marks)
    result.customers = sorted(changed)
    return result, changed, new


#: the state's part each event type changes
_PARTS = {"purchase": "buys", "refund": "buys", "web_session": "web", "product_usage": "use"}


def _is_late(state: dict[str, Any], event: Any, through: date | None) -> bool:
    """Whether the event falls before the customer's latest record or within the batch data:
    the customer's numbers are then recomputed from their buckets, not moved forward."""
    day = inc.day_of(event.timestamp.date())
    last = inc.last_day(state)
    return (last is not None and day < last) or (
        through is not None and event.timestamp.date() <= through
    )


def _apply_row(state: dict[str, Any], row: dict[str, Any], i: int) -> None:
    """One event, as the event table holds it (:func:`custval.data.events.event_rows`), into
    the customer's state; a refund larger than their net spend is refused."""
    day = inc.day_of(row["timestamp"].date())
    kind = row["type"]
    if kind == "purchase":
        inc.add_purchase(
            state, day, row["amount"], row["order_id"], row["category"], row["channel"]
        )
    elif kind == "refund":
        buys = state.get("buys") or {}
        spent = math.fsum(buys.get("spend", [])) - buys.get("refund_amount", 0.0)
        if -row["amount"] > spent + 1e-9:
            raise IngestError(
                f"events[{i}]: a refund of {-row['amount']:,.2f} is more than customer "
                f"{row['customer_id']}'s net spend of {spent:,.2f}",
                hint="Send the purchase first, or a refund no larger than what was paid",
            )
        inc.add_refund(state, -row["amount"])
    elif kind == "web_session":
        web = dict(row)
        web["converted"] = None if row["converted"] is None else bool(row["converted"])
        inc.add_web(state, day, web)
    else:
        inc.add_usage(state, day, row)


def _summary(state: dict[str, Any], last_event: datetime | None, now: datetime) -> dict:
    """The state's BI columns (``customer_state``) after an event."""
    buys = state.get("buys") or {}
    days = buys.get("days") or []
    return {
        "purchase_days": len(days),
        "first_purchase": inc.EPOCH + timedelta(days=days[0]) if days else None,
        "last_purchase": inc.EPOCH + timedelta(days=days[-1]) if days else None,
        "spend": math.fsum(buys.get("spend", [])) if days else None,
        "events_applied": state.get("events_applied", 0),
        "last_event_at": last_event,
        "updated_at": now,
    }


class EventWriter:
    """Applies the events of many threads in groups: each :meth:`enqueue` gets a future of
    the transaction that holds its batch. While one group is being written the next gathers,
    so a busy writer commits hundreds of events per transaction and a quiet one commits each
    at once (group commit: DuckDB pays milliseconds per statement, not per row).

    One writer per process holds ``store``. On DuckDB (one writing process) a group is
    applied once its events are in the store's journal; the changed states stay in memory
    (:class:`StateCache`), and both are written to the store every second. At its start it
    applies the events a previous writer left unwritten (:func:`replay`). On PostgreSQL
    several processes' writers share the work, each transaction writing its states, their
    customers' locks making them wait for each other only on the same customers."""

    def __init__(
        self,
        store: Store,
        *,
        max_events: int = 5_000,
        build: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        """``build``: the state's latest build, for a caller that reads it already (the
        service); else the writer reads it every two seconds itself."""
        self.store = store
        self.max_events = max_events
        self.replayed = replay(store)
        self.cache: StateCache | None = None
        if store.engine == "duckdb":
            self.cache = StateCache(store)
            # the flush, this process's one heavy statement, runs in its own thread (at a
            # lower priority), not across DuckDB's threads competing with the requests
            store.con.execute("SET threads TO 1")
        self._build: dict[str, Any] | None = None
        self._build_read = 0.0
        self._given_build = build
        self._queue: queue.Queue[tuple[EventBatch, Future[Any]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="custval-events")
        self._thread.start()
        self._flusher: threading.Thread | None = None
        if self.cache is not None:
            self._flusher = threading.Thread(
                target=self._flush_every_second, daemon=True, name="custval-states"
            )
            self._flusher.start()

    def submit(self, batch: EventBatch, timeout: float = 30.0) -> Ingested:
        """Apply one batch (all or nothing) and say what it did; an :class:`IngestError`
        when it is refused."""
        return outcome_of(self.enqueue(batch).result(timeout=timeout))

    def enqueue(self, batch: EventBatch) -> Future[Any]:
        """Queue one batch; the future gets what it did, or the :class:`IngestError` that
        refused it, once its transaction is over (for callers that wait in an event loop)."""
        done: Future[Any] = Future()
        self._queue.put((batch, done))
        return done

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group, size = [item], len(item[0].events)
            while size < self.max_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                group.append(more)
                size += len(more[0].events)
            self._write(group)

    def _flush_every_second(self) -> None:
        """Write the states kept in memory every second, on a connection of its own (the
        group commits go on meanwhile), and once more at the end."""
        cache = self.cache
        assert cache is not None
        store = open_store(self.store.url)
        _background()
        try:
            while not self._stop.wait(1.0):
                self._flush(cache, store)
                # the states parsed since are long-lived too: a full collection over them
                # found nothing to free and stalled requests for 25-100 ms every few seconds
                gc.freeze()
            self._flush(cache, store)
            cache.close()
        finally:
            store.close()

    @staticmethod
    def _flush(cache: StateCache, store: Store) -> None:
        try:
            cache.flush(store)
        except Exception as exc:  # kept in memory, tried again; the events are stored
            log.error("the states were not written: %s", type(exc).__name__)

    def _latest_build(self) -> dict[str, Any] | None:
        if self._given_build is not None:
            return self._given_build()
        if time.monotonic() - self._build_read > 2.0:  # a rebuild shows within seconds
            self._build = stored.build_meta(self.store)
            self._build_read = time.monotonic()
        return self._build

    def _write(self, group: list[tuple[EventBatch, Future[Any]]]) -> None:
        try:
            batches = [batch for batch, _ in group]
            outcomes = ingest(self.store, batches, self._latest_build(), self.cache)
        except Exception as exc:  # the transaction failed: nothing of the group is applied
            for _, done in group:
                done.set_exception(exc)
            return
        for (_, done), outcome in zip(group, outcomes, strict=True):
            done.set_result(outcome)

    def state(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's state kept in memory (newer than the store's), if any."""
        return None if self.cache is None else self.cache.get(customer_id)

    def events_since_run(self, customer_id: str) -> int | None:
        """The customer's events received after the latest scoring run, counted in memory
        (None: not kept here)."""
        if self.cache is None:
            return None
        return self.cache.since_run.get(customer_id, 0)

    def close(self) -> None:
        """Finish the batches waiting, write the states kept in memory, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=60)
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=60)


def _background() -> None:
    """This thread's work yields to the requests': a lower priority (Linux: per thread), and
    its DuckDB statements run in it, not in DuckDB's threads at the requests' priority."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def outcome_of(outcome: Ingested | IngestError) -> Ingested:
    """What a batch did, or the error that refused it, raised."""
    if isinstance(outcome, IngestError):
        raise outcome
    return outcome


# ---- a customer now -------------------------------------------------------------------------


@dataclass
class FeatureOptions:
    """How the served model's features are computed (its manifest's ``features``) and what
    the state's build found (kinds, levels)."""

    kinds: list[str]
    levels: inc.Levels
    groups: list[str]
    time_unit: str = "weeks"
    trend_window_days: int = 90

    def features(self, state: dict[str, Any], as_of: date) -> dict[str, Any]:
        """The feature row of ``state`` at ``as_of`` (:func:`inc.features_at`)."""
        return inc.features_at(
            state,
            as_of,
            kinds=self.kinds,
            groups=self.groups,
            levels=self.levels,
            time_unit=self.time_unit,
            trend_window_days=self.trend_window_days,
        )

    @classmethod
    def of(cls, build: dict[str, Any], manifest_features: dict[str, Any]) -> FeatureOptions:
        meta = build["meta"]
        return cls(
            kinds=list(meta["kinds"]),
            levels=inc.Levels(**meta["levels"]),
            groups=list(manifest_features.get("groups") or GROUPS),
            time_unit=manifest_features.get("time_unit", "weeks"),
            trend_window_days=int(manifest_features.get("trend_window_days", 90)),
        )


def default_as_of() -> date:
    """As of now: every record of today counts (features see records before the as-of date)."""
    return datetime.now(UTC).date() + timedelta(days=1)


def customer_now(
    store: Store,
    customer_id: str,
    options: FeatureOptions,
    *,
    as_of: date | None = None,
    clv_saved: dict[str, Any] | None = None,
    segments: tuple[str, dict[str, Any]] | None = None,
    since: datetime | None = None,
    state: dict[str, Any] | None = None,
    events_since: int | None = None,
) -> dict[str, Any] | None:
    """The customer's numbers at ``as_of`` (default: now) from their state: ``features``
    (the row the value model scores), ``p_alive``, ``expected_purchases``, ``clv_expected``
    by the latest run's customer-base models (``clv_saved``, its ``clv_models``), ``segment``
    by the latest segmentation, ``events_since_run`` (received after ``since``); ``state``:
    the customer's state and ``events_since`` when the caller has them (newer than the
    store's). None when
    the state does not know the customer as a customer (no profile, no purchase)."""
    found = state or stored.read_states(store, [customer_id]).get(customer_id)
    if found is None or not inc.known_customer(found):
        return None
    when = as_of or default_as_of()
    last = inc.last_day(found)
    if last is not None and inc.day_of(when) <= last:
        raise IngestError(
            f"as_of {when} is not after customer {customer_id}'s latest record "
            f"({inc.EPOCH + timedelta(days=last)})",
            hint="Ask for a later as_of, or none (now)",
        )
    row = options.features(found, when)
    row["customer_id"] = customer_id
    out: dict[str, Any] = {"customer_id": customer_id, "as_of": when.isoformat(), "features": row}
    out |= customer_clv(row, clv_saved)
    out["segment"] = customer_segment(row, out.get("clv_expected"), segments)
    if events_since is None:
        events_since = stored.events_since(store, customer_id, since)
    out["events_since_run"] = events_since
    return out


def customer_clv(row: dict[str, Any], saved: dict[str, Any] | None) -> dict[str, Any]:
    """P(alive), expected purchases and CLV of one feature row by the run's customer-base
    models (closed forms; NaN-free: None for a customer without a purchase). ``saved``: the
    run's ``clv_models``, with the models built already as ``fitted`` when the caller keeps
    them (the service: :mod:`custval.api.state`)."""
    empty = {"p_alive": None, "expected_purchases": None, "clv_expected": None}
    if saved is None or "purchases" not in saved or row.get("T") is None:
        return empty
    purchases, spend = saved.get("fitted") or clv_models_from_json(saved)
    x, tx, t, m = (np.array([float(row[c] or 0.0)]) for c in SUMMARY_COLUMNS)
    horizon, discount = float(saved["horizon"]), float(saved["discount"])
    alive, expected, discounted = purchase_predictions(
        purchases, x, tx, t, horizon=horizon, discount=discount
    )
    _, clv = point_clv(
        purchases, spend, x, tx, t, m, horizon=horizon, discount=discount, discounted=discounted
    )
    out = {
        "p_alive": float(alive[0]),
        "expected_purchases": float(expected[0]),
        "clv_expected": float(clv[0]),
    }
    if saved.get("spend_model") is not None:  # the run's CLV is machine-learned
        served = saved.get("served")
        clv_ml = None
        if served is not None and all(c in row for c in served.columns):
            clv_ml = float(served.predict(pd.DataFrame([row]))[0][0])
        out["clv_expected"] = clv_ml
    return out


def customer_segment(
    row: dict[str, Any], clv: float | None, segments: tuple[str, dict[str, Any]] | None
) -> str | None:
    """The segment of one feature row by the latest segmentation (None when it needs a
    feature the row lacks)."""
    if segments is None:
        return None
    model = segments[1]
    wanted = list(model["preparation"]["features"])
    values = {**row, "clv": clv}
    if any(f not in values for f in wanted):
        return None
    frame = pd.DataFrame([{f: values[f] for f in wanted}])
    label = int(assign_nearest(model, frame)[0])
    return str(model["names"].get(str(label), str(label)))


# ---- checking the state against the batch ---------------------------------------------------


@dataclass
class StateCheck:
    """The state's features against the batch feature code's at one as-of date."""

    as_of: date
    customers: int
    columns: int
    max_difference: float
    mismatches: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def check_state(
    project: Project, *, as_of: date | None = None, tolerance: float = 1e-9
) -> StateCheck:
    """Every customer's features from the store's state against the batch feature table of
    the same records (the project's sources and the store's events) at ``as_of`` (default:
    now): the largest relative difference, and the first mismatches."""
    when = as_of or default_as_of()
    prepared = prepare(project)
    levels = inc.levels_of(state_tables(prepared))
    batch = (
        build_features(
            prepared.tables,
            when,
            time_unit=project.time_unit,
            trend_window_days=project.features.trend_window_days,
            groups=project.features.groups,
            one_row_per_order=prepared.one_row_per_order,
        )
        .to_pyarrow()
        .to_pandas()
        .set_index("customer_id")
    )
    with open_store(project.store, read_only=True) as store:
        build = stored.build_meta(store)
        if build is None:
            raise CustvalError("the store has no customer state yet", hint="Run 'custval rebuild'")
        options = FeatureOptions.of(
            build,
            {
                "groups": project.features.groups,
                "time_unit": project.time_unit,
                "trend_window_days": project.features.trend_window_days,
            },
        )
        states = stored.read_states(store, None)
    options.levels = levels  # the batch's columns: everyone's levels now, events' too
    return _compare(batch, states, options, when, tolerance)


def _compare(
    batch: pd.DataFrame,
    states: dict[str, dict[str, Any]],
    options: FeatureOptions,
    when: date,
    tolerance: float,
) -> StateCheck:
    mismatches: list[dict[str, Any]] = []
    worst = 0.0
    for cid, expected in batch.iterrows():  # a check, not a hot path: one row per customer
        state = states.get(str(cid))
        if state is None:
            mismatches.append({"customer_id": cid, "column": None, "batch": "a row", "state": None})
            continue
        row = options.features(state, when)
        for col, want in expected.items():
            diff = _difference(want, row.get(col, "<absent>"))
            worst = max(worst, diff if diff != float("inf") else worst)
            if diff > tolerance and len(mismatches) < 20:
                mismatches.append(
                    {"customer_id": cid, "column": col, "batch": want, "state": row.get(col)}
                )
    return StateCheck(when, len(batch), batch.shape[1], worst, mismatches)


def _difference(want: Any, got: Any) -> float:
    """Relative difference of two feature values (0 when equal, inf when one is missing or
    they are different text)."""
    missing_want = want is None or (isinstance(want, float) and np.isnan(want))
    missing_got = got is None or (isinstance(got, float) and np.isnan(got))
    if missing_want or missing_got:
        return 0.0 if missing_want and missing_got else float("inf")
    if isinstance(want, str) or isinstance(got, str):
        return 0.0 if str(want) == str(got) else float("inf")
    a, b = float(want), float(got)
    return abs(a - b) / max(1.0, abs(a))
