"""The BI contract v1 (docs/bi.md): every view counted across every kind of run the store
records, on DuckDB and on the real PostgreSQL server; the documented columns are the views'."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from custval.store import MIGRATIONS, Store, open_store
from custval.store import runs as store_runs
from custval.store.runs import BI_ALIASES, BI_VERSION, BI_VIEWS

DOC = Path(__file__).resolve().parents[1] / "docs" / "bi.md"


def ids(n: int, start: int = 0) -> list[str]:
    return [f"C{i:06d}" for i in range(start, start + n)]


def score_run(n: int, seed: int, segments: list[str] | None = None) -> tuple[pa.Table, pa.Table]:
    """A scoring run's predictions (every customer classed) and two reasons per customer."""
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    cols: dict[str, object] = {
        "customer_id": ids(n),
        "value_probability": p,
        "value_class": (p > 0.7).astype(np.int32),
        "clv_expected": np.round(rng.gamma(2, 50, n), 2),
        "p_alive": rng.random(n),
        "expected_purchases": rng.gamma(1, 2, n),
    }
    if segments is not None:
        cols["segment"] = [segments[i % len(segments)] for i in range(n)]
    reasons = pa.table(
        {
            "customer_id": np.repeat(ids(n), 2),
            "rank": np.tile(np.array([1, 2], dtype=np.int32), n),
            "feature": np.array(["recency_days", "orders"])[rng.integers(0, 2, 2 * n)],
            "feature_value": ["1"] * (2 * n),
            "contribution": rng.normal(size=2 * n),
            "direction": np.where(rng.random(2 * n) > 0.5, "raises", "lowers"),
            "text": ["why"] * (2 * n),
        }
    )
    return pa.table(cols), reasons


def write_segmentation(store: Store, n: int, k: int) -> str:
    """A segmentation run as custval.flows.store_segments writes it: predictions with the
    segment name only (no value class, no CLV), segments, and profiles."""
    seg = np.arange(n) % k
    names = [f"Segment {s}" for s in seg]
    counts = np.bincount(seg, minlength=k)
    return store.write_run(
        kind="segment",
        predictions=pa.table({"customer_id": ids(n), "segment": names}),
        extra={
            "segments": pa.table(
                {
                    "customer_id": ids(n),
                    "segment": pa.array(seg, pa.int32()),
                    "segment_name": names,
                }
            ),
            "segment_profiles": pa.table(
                {
                    "segment": pa.array(np.arange(k), pa.int32()),
                    "name": [f"Segment {s}" for s in range(k)],
                    "rule": ["a rule"] * k,
                    "customers": pa.array(counts, pa.int64()),
                    "share": counts / n,
                    "revenue_share": counts / n,
                    "clv_share": counts / n,
                    "distinctive": ["high orders"] * k,
                    "profile": ["{}"] * k,
                }
            ),
        },
    )


@dataclass
class Filled:
    """What a store filled with every kind of run must show."""

    score: list[str] = field(default_factory=list)
    score_tables: list[pa.Table] = field(default_factory=list)
    segment: list[str] = field(default_factory=list)
    online: list[str] = field(default_factory=list)
    clv: list[str] = field(default_factory=list)


def fill(store: Store) -> Filled:
    """Several runs of each kind, interleaved: scoring (400, 300, 250 customers; the last with
    segments), segmentation (500 and 350 customers), the service's online predictions (3 and 2
    rows, with reasons), a kind the views do not know ('clv') and a failed scoring run."""
    done = Filled()

    def add_score(n: int, seed: int, segments: list[str] | None = None) -> None:
        preds, reasons = score_run(n, seed, segments)
        done.score.append(
            store.write_run(
                kind="score", predictions=preds, reasons=reasons, as_of=date(2026, 1, seed)
            )
        )
        done.score_tables.append(preds)

    def add_online(n: int, seed: int) -> None:
        preds, reasons = score_run(n, seed)
        done.online.append(store.write_run(kind="online", predictions=preds, reasons=reasons))

    add_score(400, 1)
    done.segment.append(write_segmentation(store, 500, 4))
    add_online(3, 2)
    add_score(300, 3)
    done.clv.append(
        store.write_run(
            kind="clv", predictions=score_run(600, 4)[0].select(["customer_id", "clv_expected"])
        )
    )
    done.segment.append(write_segmentation(store, 350, 3))
    add_score(250, 5, segments=["Segment 0", "Segment 1", "Segment 2"])
    add_online(2, 6)
    done.clv.append(
        store.write_run(
            kind="clv", predictions=score_run(700, 7)[0].select(["customer_id", "clv_expected"])
        )
    )

    def fail() -> None:
        raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError):
        store.write_run(kind="score", predictions=score_run(999, 8)[0], before_commit=fail)
    return done


def one(store: Store, sql: str, params: tuple[object, ...] = ()) -> tuple[object, ...]:
    return store.query(sql, params)[0]


def test_every_view_counts_each_customer_once_across_run_kinds(store_url: str) -> None:
    with open_store(store_url) as store:
        runs = fill(store)
        latest_score, latest_preds = runs.score[-1], runs.score_tables[-1]
        n = latest_preds.num_rows  # 250
        high = int(np.sum(latest_preds.column("value_class").to_numpy()))
        clv_total = float(np.sum(latest_preds.column("clv_expected").to_numpy()))

        # v1_runs: succeeded runs only, one latest per kind
        assert one(store, "SELECT COUNT(*) FROM v1_runs") == (9,)
        latest = dict(store.query("SELECT kind, run_id FROM v1_runs WHERE is_latest"))
        assert latest == {
            "score": latest_score,
            "segment": runs.segment[-1],
            "online": runs.online[-1],
            "clv": runs.clv[-1],
        }
        assert store.latest_run() == latest_score

        # v1_latest_predictions: the latest scoring run, each customer once
        assert one(
            store,
            "SELECT COUNT(*), COUNT(DISTINCT customer_id), SUM(value_class), "
            "MIN(run_id), MAX(run_id) FROM v1_latest_predictions",
        ) == (n, n, high, latest_score, latest_score)

        # v1_customer_value_summary: scoring runs only, no NULL class from other kinds
        rows = store.query("SELECT run_id, value_class, customers FROM v1_customer_value_summary")
        assert {r[0] for r in rows} == set(runs.score)
        assert all(r[1] is not None for r in rows)
        assert one(store, "SELECT SUM(customers) FROM v1_customer_value_summary") == (950,)
        got = one(
            store,
            "SELECT SUM(customers), SUM(CASE WHEN value_class = 1 THEN customers END), "
            "SUM(clv_total), COUNT(*) FROM v1_customer_value_summary WHERE is_latest",
        )
        assert got[:2] == (n, high) and got[3] == 2
        assert float(got[2]) == pytest.approx(clv_total, rel=1e-12)

        # v1_reason_summary: scoring runs only (the online runs' reasons stay out)
        assert {r[0] for r in store.query("SELECT DISTINCT run_id FROM v1_reason_summary")} == set(
            runs.score
        )
        assert one(
            store,
            "SELECT SUM(as_first_reason), SUM(customers) FROM v1_reason_summary WHERE is_latest",
        ) == (n, 2 * n)
        assert one(store, "SELECT SUM(as_first_reason) FROM v1_reason_summary") == (950,)

        # segmentation: the latest run's customers and profiles, once each
        assert one(
            store,
            "SELECT COUNT(*), COUNT(DISTINCT customer_id), MIN(run_id) FROM v1_latest_segments",
        ) == (350, 350, runs.segment[-1])
        profiles = one(
            store, "SELECT COUNT(*), SUM(customers), SUM(share) FROM v1_latest_segment_profiles"
        )
        assert profiles[:2] == (3, 350) and float(profiles[2]) == pytest.approx(1.0)

        # value by segment: the scoring runs that carry segments (here the latest only)
        seg = store.query(
            "SELECT run_id, segment, customers, high_value_customers FROM v1_segment_value_summary"
        )
        assert {r[0] for r in seg} == {latest_score}
        assert sum(r[2] for r in seg) == n and sum(r[3] for r in seg) == high
        assert sorted((r[1], r[2]) for r in seg) == [
            ("Segment 0", 84),
            ("Segment 1", 83),
            ("Segment 2", 83),
        ]

        # the unversioned names are the same views
        for alias, view in BI_ALIASES.items():
            assert store.query(f"SELECT COUNT(*) FROM {alias}") == store.query(
                f"SELECT COUNT(*) FROM {view}"
            ), alias
        assert one(
            store, "SELECT COUNT(*) FROM customer_value_summary WHERE value_class IS NULL"
        ) == (0,)


def test_an_older_store_is_upgraded_to_the_contract(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a store as the released code made it (the migrations before the contract), with a
    # scoring run and a segmentation run: its customer_value_summary counted both
    before = 6  # the contract v1 came with migration 7
    with monkeypatch.context() as m:
        m.setattr(store_runs, "MIGRATIONS", MIGRATIONS[:before])
        with open_store(store_url) as old:
            preds, reasons = score_run(120, 1)
            old.write_run(kind="score", predictions=preds, reasons=reasons)
            write_segmentation(old, 120, 2)
            assert one(old, "SELECT SUM(customers) FROM customer_value_summary") == (240,)
    with open_store(store_url) as store:
        assert one(store, "SELECT MAX(version) FROM schema_version") == (len(MIGRATIONS),)
        assert one(store, "SELECT SUM(customers) FROM customer_value_summary") == (120,)
        assert one(store, "SELECT COUNT(*) FROM latest_segment_profiles") == (2,)


def documented_views() -> dict[str, list[str]]:
    """Each view's columns as docs/bi.md lists them: a '### `view`' heading, then a table
    whose first cell is the column in backticks."""
    views: dict[str, list[str]] = {}
    current: str | None = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^### `(v\d+_\w+)`", line)
        if heading:
            current = heading.group(1)
            views[current] = []
        elif line.startswith("#"):
            current = None
        elif current is not None:
            cell = re.match(r"^\| `(\w+)` \|", line)
            if cell:
                views[current].append(cell.group(1))
    return views


def test_the_documented_columns_are_the_views_columns(store_url: str) -> None:
    documented = documented_views()
    assert set(documented) == set(BI_VIEWS)
    with open_store(store_url) as store:
        contract = dict(
            store.query("SELECT view_name, grain FROM bi_contract WHERE version = ?", (BI_VERSION,))
        )
        assert set(contract) == set(BI_VIEWS)
        for view, columns in documented.items():
            cur = store._execute(f"SELECT * FROM {view} LIMIT 0")
            actual = [d[0] for d in cur.description]
            if store.engine == "postgres":
                store.con.commit()
            assert actual == columns, view
            # the grain the doc states is the grain the store records
            assert f"One row per {contract[view].removeprefix('one row per ')}" in DOC.read_text()
        for alias, view in BI_ALIASES.items():
            cur = store._execute(f"SELECT * FROM {alias} LIMIT 0")
            assert [d[0] for d in cur.description] == documented[view], alias
            if store.engine == "postgres":
                store.con.commit()
