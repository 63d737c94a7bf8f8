"""`custval score` and `custval export`: a project scored into the store, DuckDB and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from custval.store import open_store
from tests.factories import Companies, run, search_path_url


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, companies: Companies) -> Path:
    root = tmp_path_factory.mktemp("score")
    # the model is kept in the project's folder: a copy of its own
    company = companies.copy(root / "co", 1200, seed=6, fmt="csv")
    done = run(
        "train",
        "-c",
        str(company.config_path),
        "--models",
        "logistic,lightgbm",
        "--folds",
        "3",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return company.config_path


def check_store(url: str, customers: int) -> str:
    with open_store(url) as s:
        run_id = s.latest_run()
        assert run_id is not None
        rows = s.query(
            "SELECT COUNT(*), COUNT(clv_expected), MIN(value_probability), "
            "MAX(value_probability) FROM latest_predictions"
        )[0]
        assert rows[0] == customers and 0 < rows[1] < customers  # CLV for buyers only
        assert 0 <= rows[2] <= rows[3] <= 1
        reasons = s.query(
            "SELECT COUNT(*), MIN(rank), MAX(rank) FROM reasons WHERE run_id = ?", (run_id,)
        )[0]
        assert reasons == (3 * customers, 1, 3)
        inside = s.query(
            "SELECT COUNT(*) FROM latest_predictions WHERE clv_expected IS NOT NULL"
            " AND NOT (clv_lower <= clv_expected AND clv_expected <= clv_upper)"
        )
        assert inside[0][0] <= 0.01 * customers
        assert s.query("SELECT COUNT(*) FROM models")[0][0] == 1
        profile = s.query(
            "SELECT COUNT(*), COUNT(DISTINCT feature) FROM value_profiles WHERE run_id = ?",
            (run_id,),
        )[0]
        assert profile[0] >= 3 * profile[1] > 0
        assert (
            s.query("SELECT COUNT(*) FROM feature_importance WHERE run_id = ?", (run_id,))[0][0]
            > 10
        )
    return run_id


def test_score_into_duckdb_and_export(trained: Path, tmp_path: Path) -> None:
    done = run("score", "-c", str(trained), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "top 10 high-value customers" in done.stdout
    store = trained.parent / "custval.duckdb"
    run_id = check_store(str(store), 1200)
    # the project's store setting (custval.duckdb beside it) is where export looks
    exported = run("export", "-c", str(trained), "--out", "files", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    preds = pq.read_table(tmp_path / "files" / "predictions.parquet")
    assert preds.num_rows == 1200 and set(preds.column("run_id").to_pylist()) == {run_id}
    as_csv = run("export", "--store", str(store), "--out", "csv", "--format", "csv", cwd=tmp_path)
    assert as_csv.returncode == 0, as_csv.stderr
    reasons = pacsv.read_csv(tmp_path / "csv" / "reasons.csv")
    assert reasons.num_rows == 3 * 1200 and reasons.column("text").null_count == 0
    # bad input: a clear message, nothing written
    bad = run("score", "-c", str(trained), "--model", "19990101T000000Z", cwd=tmp_path)
    assert bad.returncode == 2 and "no model version '19990101T000000Z'" in bad.stderr
    unreachable = run(
        "score", "-c", str(trained), "--store", "postgresql://x:y@127.0.0.1:1/z", cwd=tmp_path
    )
    assert unreachable.returncode == 2 and "cannot reach the store" in unreachable.stderr
    with open_store(str(store)) as s:
        assert s.query("SELECT COUNT(*) FROM runs") == [(1,)]


def test_score_into_postgres(trained: Path, tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    url = search_path_url(pg_url, pg_schema)
    done = run("score", "-c", str(trained), "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    check_store(url, 1200)


def test_features_that_do_not_match_the_model_write_nothing(trained: Path, tmp_path: Path) -> None:
    # the same project without its web source: the model's web features are missing
    lines = trained.read_text().splitlines(keepends=True)
    kept, skipping = [], False
    for line in lines:
        if line.startswith("["):
            skipping = line.startswith("[sources.web")
        if not skipping:
            kept.append(line)
    partial = trained.parent / "no_web.toml"
    partial.write_text("".join(kept))
    store = tmp_path / "store.duckdb"
    done = run(
        "score",
        "-c",
        str(partial),
        "--store",
        str(store),
        "--model",
        next(p for p in (trained.parent / "models").iterdir() if p.is_dir()).name,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout
    assert "lacks" in done.stderr and "website_sessions" in done.stderr
    assert "Traceback" not in done.stderr
    with open_store(str(store)) as s:
        assert s.query("SELECT COUNT(*) FROM runs") == [(0,)]
        assert s.query("SELECT COUNT(*) FROM predictions") == [(0,)]


def test_score_places_customers_in_the_latest_segmentation(trained: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "store.duckdb")
    done = run("segment", "-c", str(trained), "--k", "4", "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run("score", "-c", str(trained), "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "segments by segmentation run" in done.stdout
    with open_store(store, read_only=True) as s:
        rows = s.query(
            "SELECT COUNT(*), COUNT(DISTINCT p.segment), "
            "SUM(CASE WHEN p.segment = g.segment_name THEN 1 ELSE 0 END) "
            "FROM latest_predictions p JOIN segments g ON g.customer_id = p.customer_id"
        )[0]
        # the same customers at the same date: the scoring run puts each where the
        # segmentation did (k-means: its segments are the nearest centres)
        assert rows[0] == 1200 and rows[1] == 4
        assert rows[2] >= 0.99 * 1200, rows
        summary = s.query(
            "SELECT SUM(customers), COUNT(*), SUM(high_value_customers) FROM segment_value_summary"
        )[0]
        high = s.query("SELECT SUM(value_class) FROM latest_predictions")[0][0]
        assert summary == (1200, 4, high)
        named = s.query(
            "SELECT COUNT(*) FROM latest_segment_profiles p JOIN segment_value_summary"
            " v ON v.segment = p.name"
        )[0][0]
        assert named == 4


def test_a_segmentation_of_other_features_leaves_segments_empty() -> None:
    import pandas as pd

    from custval.flows.scoring import _score_segments

    model = {"preparation": {"features": ["orders", "nps"]}, "centers": [[0.0]], "names": {}}
    run_id, names, note = _score_segments(pd.DataFrame({"orders": [1.0]}), {}, "r1", model)
    assert (run_id, names) == (None, None)
    assert note is not None and "nps" in note and "r1" in note


def test_score_with_the_hybrid_clv(trained: Path, tmp_path: Path) -> None:
    import json

    store = str(tmp_path / "store.duckdb")
    done = run(
        "score", "-c", str(trained), "--store", store, "--clv-method", "hybrid", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "CLV by hybrid" in done.stdout
    with open_store(store, read_only=True) as s:
        saved = json.loads(s.query("SELECT clv_models FROM runs")[0][0])
        rows = s.query(
            "SELECT COUNT(*), COUNT(clv_expected), COUNT(p_alive), "
            "SUM(CASE WHEN clv_lower <= clv_expected AND clv_expected <= clv_upper "
            "THEN 1 ELSE 0 END) FROM latest_predictions"
        )[0]
    assert saved["method"] == "hybrid"
    assert {r["model"] for r in saved["leaderboard"]} == {"btyd", "hybrid"}
    # the service's CLV models stay: the purchase model chosen by --model auto
    assert saved["purchases"]["model"] in {"BetaGeo", "ModifiedBetaGeo", "ParetoNBD"}
    assert saved["purchases"]["choice"]["rule"]
    # the machine-learned CLV covers every customer, buyers or not; P(alive) only buyers
    assert rows[0] == rows[1] == rows[3] == 1200 and rows[2] < 1200
    bad = run("score", "-c", str(trained), "--store", store, "--clv-method", "magic", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown CLV method" in bad.stderr
