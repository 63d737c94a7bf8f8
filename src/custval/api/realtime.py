"""The service's real time (``custval serve --realtime``): events in, a customer's numbers as of
now out (:mod:`custval.flows.realtime`).

The worker holds the store for writing while it runs (a DuckDB file admits one writing
process, which then shares it with the worker's readers); its :class:`EventWriter` commits
the events of concurrent requests together. A request reads the customer's state through its
thread's own connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import date, datetime
from typing import Any

from custval.api.online import OnlineModel
from custval.data.events import EventBatch
from custval.errors import CustvalError
from custval.flows.realtime import (
    EventWriter,
    FeatureOptions,
    Ingested,
    customer_now,
    outcome_of,
)
from custval.store import Store, directions, open_store
from custval.store import events as stored
from custval.store.runs import hold_store

__all__ = ["Realtime"]

#: how long the state's build and the latest run are trusted before they are read again
_FRESH_SECONDS = 2.0


class Realtime:
    """Events and the customers' numbers as of now, for one worker."""

    def __init__(self, store_url: str) -> None:
        self.url = store_url
        self.store = hold_store(store_url, wait=10.0)
        self._local = threading.local()
        self._readers: list[Store] = []
        self._readers_lock = threading.Lock()
        self._lock = threading.Lock()
        self._read_at = 0.0
        self._build: dict[str, Any] | None = None
        self._run: tuple[str | None, datetime | None] = (None, None)
        # the writer takes the build this worker reads anyway (no second read in its thread)
        self.writer = EventWriter(self.store, build=lambda: self.fresh()[0])
        # read in a thread of its own: a read in the request that finds them old would hold
        # the event loop (the DuckDB answers are computed there) for 5-10 ms
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, daemon=True, name="custval-fresh")
        self._refresher.start()

    @property
    def in_memory(self) -> bool:
        """Whether the states are in this process's memory (a DuckDB file's one writer)."""
        return self.writer.cache is not None

    def reader(self) -> Store:
        """This thread's connection to the store (kept: a connection per request would cost
        more than the request)."""
        store = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.url, read_only=True)
            self._local.store = store
            with self._readers_lock:
                self._readers.append(store)
        return store  # type: ignore[no-any-return]

    def fresh(self) -> tuple[dict[str, Any] | None, tuple[str | None, datetime | None]]:
        """The state's latest build and the latest scoring run (id, finished), read again
        every two seconds (a rebuild or a run on PostgreSQL shows within them)."""
        if self._read_at == 0.0:  # not read yet: now
            self._read()
        return self._build, self._run

    def _refresh(self) -> None:
        while not self._stop.wait(_FRESH_SECONDS):
            try:
                self._read()
            except Exception:  # kept as they were; read again in two seconds
                continue

    def _read(self) -> None:
        with self._lock:
            reader = self.reader()
            build = stored.build_meta(reader)
            rows = reader.query(
                "SELECT run_id, finished_at FROM runs WHERE status = 'succeeded' AND "
                "kind = 'score' ORDER BY finished_at DESC, run_id DESC LIMIT 1"
            )
            self._build, self._run = build, (rows[0][0], rows[0][1]) if rows else (None, None)
            self._read_at = time.monotonic()

    async def ingest(self, batch: EventBatch) -> Ingested:
        """Apply one batch of events (all or nothing), with the other requests' at once; the
        request waits in the event loop, not in a thread."""
        if self.fresh()[0] is None:
            raise CustvalError(
                "the store has no customer state yet",
                hint="Run 'custval rebuild -c custval.toml' once (with the service stopped "
                "when the store is a DuckDB file), then start the service again",
            )
        return outcome_of(await asyncio.wrap_future(self.writer.enqueue(batch)))

    def customer(
        self,
        customer_id: str,
        model: OnlineModel,
        *,
        as_of: date | None,
        clv: dict[str, Any] | None,
        segments: tuple[str, dict[str, Any]] | None,
    ) -> dict[str, Any] | None:
        """The customer's numbers as of ``as_of`` (default: now) from their state, scored by
        ``model``: value probability, class and reasons, CLV, P(alive), expected purchases,
        segment; None when the state has no such customer."""
        build, (run_id, finished) = self.fresh()
        if build is None:
            return None
        options = FeatureOptions.of(build, model.manifest.get("features", {}))
        found = customer_now(
            self.reader(),
            customer_id,
            options,
            as_of=as_of,
            clv_saved=clv,
            segments=segments,
            since=finished,
            state=self.writer.state(customer_id),
            events_since=self.writer.events_since_run(customer_id),
        )
        if found is None:
            return None
        features = found.pop("features")
        row = {c: features.get(c) for c in model.schema.columns}
        row["customer_id"] = customer_id
        scored = model.score([row])[0]
        # the store's words for the sign (a scoring run's reasons), so that both answers agree
        words = directions([r["contribution"] for r in scored["reasons"]]).to_pylist()
        reasons = [
            {
                "rank": k + 1,
                "feature": r["feature"],
                "value": r["value"],
                "contribution": r["contribution"],
                "direction": word,
                "text": r["text"],
            }
            for k, (r, word) in enumerate(zip(scored["reasons"], words, strict=True))
        ]
        return {
            "customer_id": customer_id,
            "as_of": found["as_of"],
            "source": "state",
            "run_id": run_id,
            "model_version": model.version,
            "value_probability": scored["value_probability"],
            "value_class": scored["value_class"],
            "clv_expected": found.get("clv_expected"),
            "p_alive": found.get("p_alive"),
            "expected_purchases": found.get("expected_purchases"),
            "segment": found.get("segment"),
            "events_since_run": found["events_since_run"],
            "reasons": reasons,
        }

    def close(self) -> None:
        """Finish the events waiting; release the store (the readers' connections first: a
        DuckDB file stays open while one of them is)."""
        self._stop.set()
        self._refresher.join(timeout=10)
        self.writer.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self.store.close()
