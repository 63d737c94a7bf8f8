"""`custval segment`: any customer table or a project, printed, as JSON, to a file, stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

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


# ---- custval's own outputs feed `segment` ----------------------------------------------------

CLV_FEATURES = ["frequency", "recency", "monetary_value", "p_alive", "clv"]


@pytest.fixture(scope="module")
def clv_output(companies: Companies, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`custval clv`'s output for a small generated company's transactions."""
    folder = tmp_path_factory.mktemp("clv-out")
    transactions = companies.shared(1500, seed=9, fmt="csv").files["transactions"]
    done = run(
        "clv",
        "-t",
        str(transactions),
        "--customer-id",
        "account_id",
        "--date",
        "ts",
        "--order-id",
        "order_id",
        "--calibration-end",
        "2026-01-01",
        "-o",
        "clv.parquet",
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    return folder / "clv.parquet"


def segment_json(*args: str, cwd: Path) -> dict:
    done = run("segment", *args, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_segment_custval_clv_output_on_its_meaningful_columns(
    clv_output: Path, tmp_path: Path
) -> None:
    clv = pd.read_parquet(clv_output)
    n = len(clv)
    summary = segment_json("-d", str(clv_output), "--k", "3", cwd=tmp_path)
    # before: segmented on clv alone
    assert summary["preparation"]["features"] == CLV_FEATURES
    assert "frequency, recency, monetary_value, p_alive, clv" in summary["note"]
    assert "custval clv's output" in summary["note"]
    segments = summary["segments"]
    assert summary["k"] == 3 and sum(s["customers"] for s in segments) == n
    assert sum(s["clv_share"] for s in segments) == pytest.approx(1.0)
    # each profile's medians are the table's, so the columns were read as they are
    assert max(s["frequency"] for s in segments) <= clv["frequency"].max()
    printed = run("segment", "-d", str(clv_output), "--k", "3", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "segmenting on frequency, recency, monetary_value, p_alive, clv" in " ".join(
        printed.stdout.split()
    )
    chosen = segment_json(
        "-d", str(clv_output), "--k", "3", "--features", "frequency,clv", cwd=tmp_path
    )
    assert chosen["preparation"]["features"] == ["frequency", "clv"] and "note" not in chosen


def test_rfm_segments_from_custval_clv_output(clv_output: Path, tmp_path: Path) -> None:
    from custval.models.segments import rfm_segments

    clv = pd.read_parquet(clv_output)
    summary = segment_json("-d", str(clv_output), "--algorithm", "rfm", cwd=tmp_path)
    assert summary["rfm_columns"] == {
        "recency": "T - recency",
        "frequency": "frequency",
        "monetary": "monetary_value",
    }
    assert "RFM from recency = T - recency" in summary["note"]
    # the same segments as RFM scores of the time since the last purchase, the repeat
    # purchases and the mean repeat spend
    expected = rfm_segments(clv["T"] - clv["recency"], clv["frequency"], clv["monetary_value"])
    counts = {s["name"]: s["customers"] for s in summary["segments"]}
    assert counts == expected["segment"].value_counts().to_dict()
    assert sum(counts.values()) == len(clv) and "Champions" in counts
    champions = next(s for s in summary["segments"] if s["name"] == "Champions")
    lost = next(s for s in summary["segments"] if s["name"] == "Lost")
    assert champions["since_last_purchase"] < lost["since_last_purchase"]


def test_segment_a_scoring_runs_predictions(clv_output: Path, tmp_path: Path) -> None:
    # the shape of `custval export`'s predictions.parquet
    clv = pd.read_parquet(clv_output)
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "run_id": "r1",
            "customer_id": clv["customer_id"],
            "as_of": pd.Timestamp("2026-01-01").date(),
            "value_probability": rng.beta(2, 5, len(clv)),
            "value_class": 0,
            "clv_expected": clv["clv"],
            "clv_lower": clv["clv_lower"],
            "clv_upper": clv["clv_upper"],
            "p_alive": clv["p_alive"],
            "expected_purchases": clv["expected_purchases"],
            "segment": None,
        }
    ).to_parquet(tmp_path / "predictions.parquet")
    summary = segment_json("-d", "predictions.parquet", "--k", "3", cwd=tmp_path)
    assert summary["preparation"]["features"] == [
        "expected_purchases",
        "p_alive",
        "clv_expected",
        "value_probability",
    ]
    assert "a scoring run's predictions" in summary["note"]
    assert sum(s["clv_share"] for s in summary["segments"]) == pytest.approx(1.0)
    rfm = run("segment", "-d", "predictions.parquet", "--algorithm", "rfm", cwd=tmp_path)
    assert rfm.returncode == 2 and "Traceback" not in rfm.stderr
    assert "RFM segments need recency, frequency and monetary value" in rfm.stderr
    # the shape of `custval predict`'s output for a model of a churn label
    pd.DataFrame(
        {
            "customerID": clv["customer_id"],
            "p_churn": rng.beta(2, 5, len(clv)),
            "predicted_churn": "No",
            "reason_1": "a sentence",
        }
    ).to_csv(tmp_path / "churn.csv", index=False)
    churn = segment_json("-d", "churn.csv", "--id", "customerID", "--k", "2", cwd=tmp_path)
    assert churn["preparation"]["features"] == ["p_churn"]
    assert "custval predict's output" in churn["note"]


def test_impossible_numbers_of_segments_are_refused(clv_output: Path, tmp_path: Path) -> None:
    n = len(pd.read_parquet(clv_output))
    cases = [
        ("1", "--k 1 asks for one segment: the whole base; segments need at least 2"),
        ("0", "segments need at least 2"),
        (str(n + 1), f"--k {n + 1} asks for more segments than the table's {n:,} customers"),
    ]
    for k, message in cases:
        done = run("segment", "-d", str(clv_output), "--k", k, "-o", "seg.csv", cwd=tmp_path)
        assert done.returncode == 2, (k, done.stdout)
        assert message in " ".join(done.stderr.split()), (k, done.stderr)
        assert "silhouette" not in done.stdout and "Traceback" not in done.stderr
        assert not (tmp_path / "seg.csv").exists()


def test_segment_reads_files_as_people_have_them(clv_output: Path, tmp_path: Path) -> None:
    # custval clv's output as a spreadsheet exports it: ';' between fields, decimal commas,
    # six decimals (the same numbers in Parquet, to compare)
    clv = pd.read_parquet(clv_output).round(6)
    clv.to_parquet(tmp_path / "clv.parquet")
    clv.to_csv(tmp_path / "clv.csv", sep=";", decimal=",", float_format="%.6f", index=False)
    args = ("--k", "3", "--seed", "1")
    parquet = segment_json("-d", "clv.parquet", *args, cwd=tmp_path)
    text = segment_json("-d", "clv.csv", "--delimiter", ";", "--decimal", ",", *args, cwd=tmp_path)
    assert text["preparation"]["features"] == CLV_FEATURES
    for mine, theirs in zip(text["segments"], parquet["segments"], strict=True):
        assert mine["customers"] == theirs["customers"]
        assert mine["monetary_value"] == pytest.approx(theirs["monetary_value"], rel=1e-9)
    # without a header row: the names given
    clv.to_csv(tmp_path / "bare.csv", header=False, float_format="%.6f", index=False)
    bare = segment_json(
        "-d", "bare.csv", "--no-header", "--names", ",".join(clv.columns), *args, cwd=tmp_path
    )
    assert [s["customers"] for s in bare["segments"]] == [
        s["customers"] for s in parquet["segments"]
    ]
