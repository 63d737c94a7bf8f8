"""`custval evaluate` (and the value commands) as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_value import customers


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custval", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    X, y = customers(600, seed=3)
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
