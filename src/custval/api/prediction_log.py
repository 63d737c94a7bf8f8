"""``--log-predictions``: online predictions kept in the store, in batches, off the request path.

A request only appends its predictions to a queue; a thread writes what has gathered every
``interval`` seconds as runs of kind ``online`` of at most ``batch`` predictions, with their
reasons, all or nothing like every run (:mod:`custval.store`). When ``capacity`` predictions
already wait (the store is slow or down), new ones are dropped rather than slow the service
down or fill its memory, and the log says how many were dropped.
A DuckDB store file has one writer at a time: with several workers, log into PostgreSQL.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from custval.store import directions, open_store

__all__ = ["PredictionLog"]

log = logging.getLogger("custval.api")


class PredictionLog:
    """Gathers predictions and writes them to the store at ``url`` in runs of kind ``online``."""

    def __init__(
        self, url: str, *, interval: float = 2.0, batch: int = 5_000, capacity: int = 200_000
    ) -> None:
        self.url, self.interval, self.batch = url, interval, batch
        self._queue: queue.Queue[tuple[str, list[dict[str, Any]]]] = queue.Queue()
        self.capacity = capacity
        self._waiting = 0  # predictions in the queue
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.dropped = 0
        self._dropped_said = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="custval-log")
        self._thread.start()

    def add(self, version: str, predictions: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._waiting + len(predictions) > self.capacity:
                self.dropped += len(predictions)
                return
            self._waiting += len(predictions)
        self._queue.put_nowait((version, predictions))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.interval)
            self.flush()
        self.flush()

    def flush(self) -> None:
        if self.dropped > self._dropped_said:
            log.warning("online predictions dropped so far (store too slow): %d", self.dropped)
            self._dropped_said = self.dropped
        by_version: dict[str, list[dict[str, Any]]] = {}
        taken = 0
        while taken < self.capacity:
            try:
                version, predictions = self._queue.get_nowait()
            except queue.Empty:
                break
            taken += len(predictions)
            by_version.setdefault(version, []).extend(predictions)
        with self._lock:
            self._waiting -= taken
        for version, predictions in by_version.items():
            for start in range(0, len(predictions), self.batch):
                try:
                    self._write(version, predictions[start : start + self.batch])
                except Exception as exc:  # the service goes on; the log says why
                    log.error("online predictions not stored: %s", type(exc).__name__)

    def _write(self, version: str, predictions: list[dict[str, Any]]) -> None:

        ids = [p["customer_id"] for p in predictions]
        preds = pa.table(
            {
                "customer_id": pa.array(ids, pa.string()),
                "value_probability": pa.array([p["value_probability"] for p in predictions]),
                "value_class": pa.array([p["value_class"] for p in predictions], pa.int32()),
                "clv_expected": pa.array([p.get("clv") for p in predictions], pa.float64()),
            }
        )
        reasons = [
            (p["customer_id"], r, k) for p in predictions for k, r in enumerate(p["reasons"], 1)
        ]
        contribution = np.array([r["contribution"] for _, r, _ in reasons], dtype=np.float64)
        reason_table = pa.table(
            {
                "customer_id": pa.array([c for c, _, _ in reasons], pa.string()),
                "rank": pa.array([k for _, _, k in reasons], pa.int32()),
                "feature": pa.array([r["feature"] for _, r, _ in reasons], pa.string()),
                "feature_value": pa.array([r["value"] for _, r, _ in reasons], pa.string()),
                "contribution": pa.array(contribution),
                "direction": directions(contribution),
                "text": pa.array([r["text"] for _, r, _ in reasons], pa.string()),
            }
        )
        with open_store(self.url) as store:
            store.write_run(
                kind="online", predictions=preds, reasons=reason_table, model_version=version
            )
        self.written += len(predictions)
