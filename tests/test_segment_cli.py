"""`custval segment`: any customer table or a project, printed, as JSON, to a file, stored."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from custval.store import open_store
from tests.factories import Companies, planted_segments, run


def test_segment_a_customer_table(tmp_path: Path) -> None:
    X, _ = planted_segments(3000)
    X.to_csv(tmp_path / "customers.csv", index=False)
    done = run(
        "segment",
        "--data",
        "customers.csv",
        "--id",
        "customer_id",
        "--out",
        "seg.parquet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "4 segments" in done.stdout and "High-value loyal" in done.stdout
    seg = pq.read_table(tmp_path / "seg.parquet").to_pandas()
    assert len(seg) == 3000 and seg["segment"].nunique() == 4
    assert list(seg["customer_id"]) == list(X["customer_id"])
    as_json = run("segment", "--data", "customers.csv", "--k", "3", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    summary = json.loads(as_json.stdout)
    assert summary["k"] == 3 and len(summary["segments"]) == 3
    assert {"name", "rule", "customers", "revenue_share"} <= set(summary["segments"][0])
    assert summary["preparation"]["features"] == [
        "recency_days",
        "orders",
        "revenue",
        "tenure_days",
    ]
    rfm = run("segment", "--data", "customers.csv", "--algorithm", "rfm", "--json", cwd=tmp_path)
    assert rfm.returncode == 0, rfm.stderr
    assert "Champions" in {s["name"] for s in json.loads(rfm.stdout)["segments"]}


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    X, _ = planted_segments(300)
    X.assign(tenure_days=7).to_csv(tmp_path / "flat.csv", index=False)
    pd_dup = X.copy()
    pd_dup.loc[5, "customer_id"] = pd_dup.loc[4, "customer_id"]
    pd_dup.to_csv(tmp_path / "dup.csv", index=False)
    cases = [
        (("--data", "flat.csv"), "one value for every customer"),
        (("--data", "dup.csv"), "repeats customers"),
        (("--data", "flat.csv", "--features", "revenue,nps"), "no column nps"),
        (("--data", "flat.csv", "--k", "many"), "--k must be auto or a whole number"),
        (("--data", "flat.csv", "--algorithm", "spectral"), "unknown algorithm"),
        ((), "either --config"),
    ]
    for args, message in cases:
        done = run("segment", *args, "--out", "out.parquet", cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "out.parquet").exists()


def test_segment_a_project_into_its_store(companies: Companies, tmp_path: Path) -> None:
    # the store is written beside the project file: a copy of its own
    company = companies.copy(tmp_path / "co", 1500, seed=4, fmt="parquet")
    done = run("segment", "-c", str(company.config_path), "--k", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "stored (tables segments, segment_profiles)" in done.stdout
    with open_store(str(company.config_path.parent / "custval.duckdb"), read_only=True) as s:
        runs = s.query("SELECT run_id, kind, status, n_customers FROM runs")
        assert [r[1:] for r in runs] == [("segment", "succeeded", 1500)]
        profiles = s.query(
            "SELECT segment, name, customers, clv_share FROM segment_profiles ORDER BY segment"
        )
        assert len(profiles) == 4 and sum(p[2] for p in profiles) == 1500
        assert abs(sum(p[3] for p in profiles) - 1) < 1e-9  # predicted CLV was a feature
        counts = s.query("SELECT COUNT(*), COUNT(DISTINCT segment) FROM segments")[0]
        assert counts == (1500, 4)
        named = s.query("SELECT COUNT(segment) FROM predictions")[0][0]
        assert named == 1500


def test_learn_the_segments_a_company_already_has(tmp_path: Path) -> None:
    import numpy as np

    X, truth = planted_segments(3000)
    labels = np.array(["champions", "sleepers", "newcomers", "lost"], dtype=object)[truth]
    hidden = np.random.default_rng(2).random(len(X)) < 0.3
    X["crm_segment"] = np.where(hidden, "", labels)
    X.to_csv(tmp_path / "crm.csv", index=False)
    done = run(
        "segment",
        "--data",
        "crm.csv",
        "--labels",
        "crm_segment",
        "--out",
        "placed.csv",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["held_out_accuracy"] >= 0.9 and summary["placed"] == int(hidden.sum())
    placed = __import__("pandas").read_csv(tmp_path / "placed.csv")
    model_rows = placed["source"] == "model"
    assert (placed.loc[model_rows, "segment"] == labels[hidden]).mean() >= 0.9
    assert placed.loc[model_rows, "reason_1"].str.contains("the chance of segment").all()
    X.assign(crm_segment=np.where(np.arange(len(X)) < 10, labels, "")).to_csv(
        tmp_path / "few.csv", index=False
    )
    few = run("segment", "--data", "few.csv", "--labels", "crm_segment", cwd=tmp_path)
    assert few.returncode == 2 and "too few to learn from" in few.stderr
    missing = run("segment", "--data", "crm.csv", "--labels", "nps", cwd=tmp_path)
    assert missing.returncode == 2 and "no column 'nps'" in missing.stderr
