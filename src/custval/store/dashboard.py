"""What the dashboard reads from the store (issue 20): small rows, never a scan of customers.

Migration 12 adds ``run_summaries``: per scoring run, a few named JSON documents written with
the run in its transaction (:mod:`custval.flows.summaries`): the customers and CLV by value
class and by segment, the histograms of CLV and of the value probability, and the CLV model's
tracking table. A page of the dashboard reads those and the other small per-run tables
(importance, profiles, drift, performance), so it answers in milliseconds whether the run
scored a thousand customers or a million. A customer's page reads that customer's rows by the
(run_id, customer_id) index.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SUMMARY_COLUMNS", "migration_12", "run_summaries", "score_runs"]

SUMMARY_COLUMNS = {"run_id": "TEXT", "name": "TEXT", "payload": "TEXT"}


def migration_12(create: Any) -> list[str]:
    """Migration 12's statements (``create`` writes a CREATE TABLE)."""
    return [
        create("run_summaries", SUMMARY_COLUMNS),
        "CREATE INDEX run_summaries_run ON run_summaries (run_id, name)",
    ]


def score_runs(store: Any, limit: int = 24) -> list[dict[str, Any]]:
    """The latest succeeded scoring runs, newest first: run_id, as_of, finished_at,
    model_version, n_customers."""
    rows = store.query(
        "SELECT run_id, as_of, finished_at, model_version, n_customers FROM runs "
        "WHERE status = 'succeeded' AND kind = 'score' "
        "ORDER BY finished_at DESC, run_id DESC LIMIT ?",
        (limit,),
    )
    keys = ("run_id", "as_of", "finished_at", "model_version", "n_customers")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def run_summaries(store: Any, run_ids: list[str], names: tuple[str, ...] = ()) -> dict:
    """``{run_id: {name: document}}`` of the runs' summaries (only ``names`` when given)."""
    if not run_ids:
        return {}
    marks = ", ".join("?" for _ in run_ids)
    sql = f"SELECT run_id, name, payload FROM run_summaries WHERE run_id IN ({marks})"
    params: tuple[Any, ...] = tuple(run_ids)
    if names:
        sql += f" AND name IN ({', '.join('?' for _ in names)})"
        params += tuple(names)
    out: dict[str, dict[str, Any]] = {r: {} for r in run_ids}
    for run_id, name, payload in store.query(sql, params):
        out[run_id][name] = json.loads(payload)
    return out
