"""`custval evaluate` (and the value commands) as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.factories import Companies, run, value_customers


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    X, y = value_customers(600, seed=3)
    X.insert(0, "account", [f"A{i:05d}" for i in range(len(X))])
    X["high_value"] = np.where(y == 1, "yes", "no")
    path = tmp_path_factory.mktemp("value") / "customers.csv"
    X.to_csv(path, index=False)
    return path


def test_evaluate_json(table: Path) -> None:
    done = run(
        "evaluate",
        "--data",
        str(table),
        "--label",
        "high_value",
        "--folds",
        "3",
        "--models",
        "logistic,lightgbm",
        "--json",
        cwd=table.parent,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["id_columns"] == ["account"]
    assert set(result["models"]) == {"logistic", "lightgbm"}
    assert result["chosen"] in result["models"]
    for m in result["models"].values():
        assert 0.7 < m["roc_auc"]["mean"] <= 1 and m["roc_auc"]["std"] >= 0
        assert m["lift_top_decile"]["mean"] > 1.5
    assert "high_value" not in result["features"] and "account" not in result["features"]


def test_evaluate_bad_input_is_a_clear_error(table: Path) -> None:
    for args, needle in [
        (("--label", "nothing"), "has no column 'nothing'"),
        (("--label", "plan"), "the label has 3 values"),
        (("--label", "high_value", "--positive", "maybe"), "'maybe' does not occur"),
        (("--label", "high_value", "--models", "logistic,svm"), "unknown candidate models: svm"),
    ]:
        done = run("evaluate", "--data", str(table), *args, cwd=table.parent)
        assert done.returncode == 2, done.stdout
        assert needle in done.stderr and "Traceback" not in done.stderr
    missing = run("evaluate", "--data", "nope.csv", "--label", "x", cwd=table.parent)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_train_then_predict_on_a_project(companies: Companies, tmp_path: Path) -> None:
    # the model is kept in the project's folder: a copy of its own
    company = companies.copy(tmp_path / "co", 1500, seed=4, fmt="csv")
    config = company.config_path
    done = run(
        "train",
        "-c",
        str(config),
        "--models",
        "logistic,lightgbm",
        "--folds",
        "3",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["label"]["kind"] == "future_spend"
    assert summary["high_share"] == pytest.approx(0.2, abs=0.02)
    best = summary["models"][summary["chosen"]]["roc_auc"]["mean"]
    assert best > 0.8  # past purchases predict next year's spend well on this company
    # a time-based split chose the model: trained a horizon earlier, scored on the cutoff's
    ts = summary["label"]["time_split"]
    assert ts["scored_at"] == summary["label"]["cutoff"] and ts["roc_auc"] > 0.75
    forward = {m: v["time_split_roc_auc"] for m, v in summary["models"].items()}
    assert forward[summary["chosen"]] >= max(forward.values()) - 0.02
    model_dir = Path(summary["model_dir"])
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["label"]["cutoff"] < manifest["created_at"][:10]
    # score today's customers: features at the project's as-of date
    features = tmp_path / "features.parquet"
    assert run("features", "-c", str(config), "-o", str(features), cwd=tmp_path).returncode == 0
    out = tmp_path / "pred.csv"
    scored = run("predict", "-m", str(model_dir), "-d", str(features), "-o", str(out), cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    import pandas as pd

    pred = pd.read_csv(out)
    assert len(pred) == 1500 and pred.customer_id.is_unique
    assert pred.probability.between(0, 1).all()
    assert pred.reason_1.str.contains(r"(?:raises|lowers) the chance of high value").all()
    assert pred.reason_1.str[0].str.isupper().all()
    # a table without one of the model's columns is refused, nothing is written
    import pyarrow.parquet as pq

    table = pq.read_table(features).drop_columns(["frequency"])
    pq.write_table(table, tmp_path / "partial.parquet")
    refused = run(
        "predict", "-m", str(model_dir), "-d", "partial.parquet", "-o", "p2.csv", cwd=tmp_path
    )
    assert refused.returncode == 2 and "frequency" in refused.stderr
    assert not (tmp_path / "p2.csv").exists()


def test_table_reading_ids_delimiters_and_duplicate_names(tmp_path: Path) -> None:
    import pandas as pd

    from custval.data.tables import identifier_columns, read_customer_table
    from custval.errors import CustvalError

    n = 40
    df = pd.DataFrame(
        {
            "customer_no": range(100, 100 + n),
            "cents": np.arange(n) * 7 + 3,  # unique whole numbers, but a quantity
            "email": [f"u{i}@x.org" for i in range(n)],
            "plan": ["a", "b"] * (n // 2),
        }
    )
    assert identifier_columns(df) == ["customer_no", "email"]
    (tmp_path / "one.csv").write_text("plan\na\nb\n")
    assert list(read_customer_table(tmp_path / "one.csv").columns) == ["plan"]
    (tmp_path / "semi.csv").write_text("a;b\n1;2\n")
    assert list(read_customer_table(tmp_path / "semi.csv").columns) == ["a", "b"]
    (tmp_path / "dup.csv").write_text("x,x \n1,2\n")
    with pytest.raises(CustvalError, match="'x' twice"):
        read_customer_table(tmp_path / "dup.csv")
