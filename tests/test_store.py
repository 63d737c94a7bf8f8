"""The prediction store: the same cases on DuckDB and on the real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import date

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from custval.errors import CustvalError
from custval.store import MIGRATIONS, open_store
from tests.factories import search_path_url


def run_tables(n: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    ids = [f"C{i:07d}" for i in range(n)]
    p = rng.random(n)
    predictions = pa.table(
        {
            "customer_id": ids,
            "value_probability": p,
            "value_class": (p > 0.8).astype(np.int32),
            "clv_expected": rng.gamma(2, 50, n),
            "clv_lower": rng.gamma(2, 30, n),
            "clv_upper": rng.gamma(2, 80, n),
            "p_alive": rng.random(n),
            "expected_purchases": rng.gamma(1, 2, n),
        }
    )
    features = np.array(["recency_days", "frequency", "plan"])
    reasons = pa.table(
        {
            "customer_id": np.repeat(ids, 2),
            "rank": np.tile(np.array([1, 2], dtype=np.int32), n),
            "feature": features[rng.integers(0, 3, 2 * n)],
            "feature_value": ["4"] * (2 * n),
            "contribution": rng.normal(size=2 * n),
            "direction": np.where(rng.random(2 * n) > 0.5, "raises", "lowers"),
            "text": ["a sentence"] * (2 * n),
        }
    )
    return predictions, reasons


def test_schema_is_migrated_once_and_recorded(store_url: str) -> None:
    with open_store(store_url) as store:
        assert store.query("SELECT MAX(version) FROM schema_version")[0][0] == len(MIGRATIONS)
    with open_store(store_url) as store:  # opening again applies nothing twice
        assert store.query("SELECT COUNT(*) FROM schema_version")[0][0] == len(MIGRATIONS)
        for view in (
            "latest_predictions",
            "customer_value_summary",
            "reason_summary",
            "latest_segment_profiles",
            "segment_value_summary",
        ):
            assert store.query(f"SELECT COUNT(*) FROM {view}")[0][0] == 0


def test_runs_and_views(store_url: str) -> None:
    predictions, reasons = run_tables(500)
    with open_store(store_url) as store:
        first = store.write_run(
            kind="score",
            predictions=predictions,
            reasons=reasons,
            model_version="v1",
            as_of=date(2026, 1, 1),
        )
        second_pred, second_reasons = run_tables(300, seed=1)
        second = store.write_run(
            kind="score",
            predictions=second_pred,
            reasons=second_reasons,
            model_version="v1",
            as_of=date(2026, 2, 1),
        )
        assert store.latest_run() == second
        rows = store.query("SELECT run_id, status, n_customers FROM runs ORDER BY started_at")
        assert rows == [(first, "succeeded", 500), (second, "succeeded", 300)]
        latest = store.query("SELECT COUNT(*), MIN(as_of) FROM latest_predictions")[0]
        assert latest[0] == 300 and str(latest[1]) == "2026-02-01"
        summary = store.query(
            "SELECT value_class, customers FROM customer_value_summary WHERE run_id = ? "
            "ORDER BY value_class",
            (second,),
        )
        expected = np.bincount(second_pred.column("value_class").to_numpy(), minlength=2)
        assert [r[1] for r in summary] == expected.tolist()
        firsts = store.query(
            "SELECT SUM(as_first_reason), SUM(customers) FROM reason_summary WHERE run_id = ?",
            (first,),
        )[0]
        assert (firsts[0], firsts[1]) == (500, 1000)


def test_a_failure_mid_write_leaves_nothing_and_keeps_the_previous_run(store_url: str) -> None:
    good_pred, good_reasons = run_tables(1000)
    big_pred, big_reasons = run_tables(100_000, seed=2)
    with open_store(store_url) as store:
        good = store.write_run(kind="score", predictions=good_pred, reasons=good_reasons)

        def boom() -> None:
            raise RuntimeError("disk full (simulated)")

        with pytest.raises(RuntimeError, match="disk full"):
            store.write_run(
                kind="score", predictions=big_pred, reasons=big_reasons, before_commit=boom
            )
        failed = store.query("SELECT run_id, status, error FROM runs WHERE status = 'failed'")
        assert len(failed) == 1 and "disk full" in failed[0][2]
        bad_id = failed[0][0]
        assert store.query("SELECT COUNT(*) FROM predictions WHERE run_id = ?", (bad_id,)) == [(0,)]
        assert store.query("SELECT COUNT(*) FROM reasons WHERE run_id = ?", (bad_id,)) == [(0,)]
        assert store.latest_run() == good
        assert store.query("SELECT COUNT(*) FROM latest_predictions") == [(1000,)]


def test_postgres_reader_sees_old_or_new_never_half(pg_url: str, pg_schema: str) -> None:
    url = search_path_url(pg_url, pg_schema)
    old_pred, _ = run_tables(2000)
    new_pred, _ = run_tables(100_000, seed=3)
    with open_store(url) as store:
        store.write_run(kind="score", predictions=old_pred)
        seen: list[int] = []
        writing = threading.Event()
        done = threading.Event()

        def read() -> None:
            with psycopg.connect(url, autocommit=True) as reader:
                writing.wait(10)
                while not done.is_set():
                    seen.append(
                        reader.execute("SELECT COUNT(*) FROM latest_predictions").fetchone()[0]
                    )

        t = threading.Thread(target=read)
        t.start()
        writing.set()
        store.write_run(kind="score", predictions=new_pred)
        done.set()
        t.join(30)
        seen.append(store.query("SELECT COUNT(*) FROM latest_predictions")[0][0])
    assert len(seen) > 2
    assert set(seen) <= {2000, 100_000} and seen[-1] == 100_000


def test_unreachable_store_is_a_clear_error() -> None:
    with pytest.raises(CustvalError, match="cannot reach the store postgresql://u:\\*\\*\\*@127"):
        open_store("postgresql://u:secret@127.0.0.1:1/none")


def test_a_run_reads_back_in_bulk_exactly_as_written(store_url: str) -> None:
    predictions, reasons = run_tables(200, seed=3)
    # NULL CLV (a customer without purchases) must stay NULL, an empty text must stay empty,
    # and text with commas, quotes and line breaks must survive COPY's CSV
    clv = predictions.column("clv_expected").to_pylist()
    clv[:5] = [None] * 5
    predictions = predictions.set_column(
        predictions.schema.get_field_index("clv_expected"), "clv_expected", pa.array(clv)
    )
    texts = reasons.column("text").to_pylist()
    texts[:3] = ["", 'Plan: "Gold, yearly"\nraises it', "ümlaut, €"]
    reasons = reasons.set_column(reasons.schema.get_field_index("text"), "text", pa.array(texts))
    with open_store(store_url) as store:
        run_id = store.write_run(
            kind="score", predictions=predictions, reasons=reasons, as_of=date(2026, 3, 1)
        )
        back = store.run_rows("predictions", run_id).sort_by("customer_id")
        back_reasons = store.run_rows("reasons", run_id).sort_by(
            [("customer_id", "ascending"), ("rank", "ascending")]
        )
        assert store.run_rows("predictions", "no-such-run").num_rows == 0
    assert back.column_names[:3] == ["run_id", "customer_id", "as_of"]
    assert back.column("clv_expected").to_pylist() == clv
    assert back.column("value_probability").to_pylist() == (
        predictions.column("value_probability").to_pylist()
    )
    assert set(back.column("as_of").to_pylist()) == {date(2026, 3, 1)}
    assert back.column("segment").null_count == 200
    assert back_reasons.column("text").to_pylist() == texts
    assert back_reasons.column("rank").type == pa.int32()


def test_a_run_keeps_its_files_and_clv_reasons_all_or_nothing(store_url: str) -> None:
    predictions, reasons = run_tables(50)
    blob = bytes(range(256)) * 4000  # a model file: any bytes, NUL included
    with open_store(store_url) as store:
        run_id = store.write_run(
            kind="score",
            predictions=predictions,
            reasons=reasons,
            clv_models={"method": "hybrid", "spend_model": {"file": "clv_spend_model"}},
            extra={"clv_reasons": reasons},
            files={"clv_spend_model": blob},
        )
        assert store.run_file(run_id, "clv_spend_model") == blob
        assert store.run_file(run_id, "other") is None
        saved = store.latest_clv_models()
        assert saved is not None and saved["run_id"] == run_id and saved["method"] == "hybrid"
        rows = store.query("SELECT COUNT(*) FROM clv_reasons WHERE run_id = ?", (run_id,))
        assert rows[0][0] == reasons.num_rows

        def fail() -> None:
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError):
            store.write_run(
                kind="score",
                predictions=predictions,
                files={"clv_spend_model": b"half"},
                before_commit=fail,
            )
        assert store.query("SELECT COUNT(*) FROM run_files")[0][0] == 1
        assert store.latest_clv_models()["run_id"] == run_id  # type: ignore[index]
        # a damaged file is refused, not handed to the service
        store._execute("UPDATE run_files SET sha256 = 'x' WHERE run_id = ?", (run_id,))
        if store.engine == "postgres":
            store.con.commit()
        with pytest.raises(CustvalError, match="damaged"):
            store.run_file(run_id, "clv_spend_model")
