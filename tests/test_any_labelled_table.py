"""Any labelled customer table, end to end through the command line: `train --data` and
`evaluate --save` write a bundle from the table's own columns, `predict -d` uses it, and the
reasons and outputs speak the label's name ("raises the chance of churn")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from tests.factories import run

N_TRAIN, N_HOLDOUT = 1500, 600
# the planted signal's own ROC AUC on the held-out rows (seed 7) is 0.804 (measured; see
# telco_like); a model of the table must come close to it
ORACLE_AUC = 0.80


def telco_like(n: int, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """A telco-like customer table: an id, tenure, contract, internet service, charges (total
    charges as text with blanks for new customers), paperless billing and a Yes/No churn
    label drawn from a planted logistic model; and each row's true churn probability."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.25, 0.2])
    internet = rng.choice(["DSL", "Fiber optic", "No"], n, p=[0.35, 0.45, 0.2])
    monthly = np.round(rng.uniform(18, 118, n), 2)
    paperless = rng.choice(["Yes", "No"], n)
    logit = (
        -1.2
        + 1.6 * (contract == "Month-to-month")
        - 0.8 * (contract == "Two year")
        - 0.035 * tenure
        + 0.9 * (internet == "Fiber optic")
        + 0.01 * (monthly - 65)
    )
    p = expit(logit)
    churn = np.where(rng.random(n) < p, "Yes", "No")
    total = np.where(tenure == 0, "", np.round(monthly * tenure, 2).astype(str))
    df = pd.DataFrame(
        {
            "customer_id": [f"{i:04d}-{'ABCDEFGH'[i % 8]}XQZ" for i in range(n)],
            "tenure": tenure,
            "contract": contract,
            "internet_service": internet,
            "monthly_charges": monthly,
            "total_charges": total,
            "paperless_billing": paperless,
            "churn": churn,
        }
    )
    return df, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


@pytest.fixture(scope="module")
def telco(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("telco")
    df, p = telco_like(N_TRAIN + N_HOLDOUT)
    df.iloc[:N_TRAIN].to_csv(folder / "train.csv", index=False)
    # the held-out customers keep their label: predict ignores columns the model does not use
    df.iloc[N_TRAIN:].to_csv(folder / "holdout.csv", index=False)
    held = df.iloc[N_TRAIN:].reset_index(drop=True)
    return {"folder": folder, "held": held, "p_true": p[N_TRAIN:]}


FAST = ("--models", "logistic,lightgbm", "--folds", "3")
ONE = ("--models", "logistic", "--folds", "3")


def test_the_planted_signal_is_what_the_threshold_says(telco: dict) -> None:
    y = (telco["held"].churn == "Yes").to_numpy(dtype=float)
    assert roc_auc(y, telco["p_true"]) == pytest.approx(ORACLE_AUC, abs=0.01)


def test_train_data_then_predict_speaks_the_label(telco: dict) -> None:
    folder = telco["folder"]
    done = run(
        "train", "--data", "train.csv", "--label", "churn", "--positive", "Yes",
        "--out", "churn-model", *FAST, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "1,500 customers" in text and "churn = Yes (the other class: No)" in text
    assert "left out as ids: customer_id" in text
    assert "customers with churn = Yes" in text and "churn = Yes among them" in text
    assert "high value" not in text and "high-value" not in text
    manifest = json.loads((folder / "churn-model" / "manifest.json").read_text())
    assert manifest["label_name"] == "churn" and manifest["class_names"] == ["No", "Yes"]
    assert manifest["label"]["kind"] == "table" and manifest["label"]["positive"] == "Yes"
    assert manifest["label"]["id_columns"] == ["customer_id"]
    # the table's own columns, no more: the id and the label are left out
    schema = manifest["schema"]
    assert sorted([*schema["numeric"], *schema["categorical"]]) == sorted(
        ["tenure", "contract", "internet_service", "monthly_charges", "total_charges",
         "paperless_billing"]
    )  # fmt: skip
    assert manifest["data"]["rows"] == N_TRAIN

    scored = run("predict", "-m", "churn-model", "-d", "holdout.csv", "-o", "pred.csv", cwd=folder)
    assert scored.returncode == 0, scored.stderr
    assert "predicted churn = Yes" in scored.stdout
    pred = pd.read_csv(folder / "pred.csv", keep_default_na=False)
    held = telco["held"]
    assert list(pred.columns[:3]) == ["customer_id", "p_churn", "predicted_churn"]
    assert (pred.customer_id == held.customer_id).all()
    # held-out rows: close to the planted signal's own AUC (0.80)
    y = (held.churn == "Yes").to_numpy(dtype=float)
    auc = roc_auc(y, pred.p_churn.to_numpy())
    assert auc > ORACLE_AUC - 0.03, auc
    assert pred.p_churn.between(0, 1).all()
    # mean probability near the observed churn rate
    assert pred.p_churn.mean() == pytest.approx(y.mean(), abs=0.05)
    # the class speaks the label's values; as many called Yes as churned in training
    assert set(pred.predicted_churn) == {"Yes", "No"}
    train_share = manifest["profile"]["high_share"]
    assert (pred.predicted_churn == "Yes").mean() == pytest.approx(train_share, abs=0.06)
    for k in (1, 2, 3):
        assert pred[f"reason_{k}"].str.contains(r"(?:raises|lowers) the chance of churn$").all()
        assert not pred[f"reason_{k}"].str.contains("high value").any()
    # month-to-month customers are told so: the planted strongest cause
    m2m = pred[held.contract == "Month-to-month"]
    assert m2m.reason_1.str.contains("Contract: Month-to-month").mean() > 0.5
    assert "Monthly charges: " in " ".join(pred.filter(like="reason_").stack().astype(str))

    # the bundle reloads and predicts the file's numbers
    from custval.store.bundles import load_bundle

    clf = load_bundle(folder / "churn-model")
    assert clf.label_name_ == "churn" and clf.class_names_ == ("No", "Yes")
    again = clf.predict_proba(pd.read_csv(folder / "holdout.csv", dtype=str))
    np.testing.assert_allclose(again, pred.p_churn.to_numpy(), rtol=1e-9, atol=1e-12)


def test_evaluate_save_writes_the_same_model_as_train(telco: dict) -> None:
    folder = telco["folder"]
    shown = run(
        "evaluate", "-d", "train.csv", "--label", "churn", "--positive", "Yes",
        "--save", "evaluated", *ONE, cwd=folder,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    # evaluate --save says what drives churn, where the model is and the next command
    assert "what drives the prediction of churn" in shown.stdout
    assert "model: evaluated" in shown.stdout
    assert "next: custval predict -m evaluated -d train.csv" in shown.stdout
    manifest = json.loads((folder / "evaluated" / "manifest.json").read_text())
    assert manifest["label_name"] == "churn" and manifest["label"]["id_columns"] == ["customer_id"]
    trained = run(
        "train", "-d", "train.csv", "--label", "churn", "--positive", "Yes",
        "-o", "trained", "--json", *ONE, cwd=folder,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["model_dir"] == "trained" and summary["label_name"] == "churn"
    assert summary["class_names"] == ["No", "Yes"]
    outputs = []
    for model in ("evaluated", "trained"):
        done = run("predict", "-m", model, "-d", "holdout.csv", "-o", f"{model}.csv", cwd=folder)
        assert done.returncode == 0, done.stderr
        outputs.append(pd.read_csv(folder / f"{model}.csv"))
    # the same folds, seed and candidates: the same model, the same predictions
    np.testing.assert_allclose(outputs[0].p_churn, outputs[1].p_churn, rtol=1e-9)


def test_project_flags_and_misuse_are_refused_before_any_work(telco: dict) -> None:
    folder = telco["folder"]
    (folder / "taken").mkdir()
    (folder / "taken" / "keep.txt").write_text("mine")
    cases = [
        (("train", "--data", "train.csv", "-c", "custval.toml", "--label", "churn"),
         "--data and --config both name what to train on: give one"),
        (("train", "--data", "train.csv"), "Name it with --label COLUMN"),
        (("train", "--data", "train.csv", "--label", "churn", "--cutoff", "2024-01-01"),
         "--cutoff apply to training on a project"),
        (("train", "--data", "train.csv", "--label", "churned"), "has no column 'churned'"),
        (("train", "--data", "train.csv", "--label", "churn", "--out", "taken"),
         "'taken' exists and is not empty"),
        (("train", "-c", "custval.toml", "--delimiter", ";"), "read a --data table"),
        (("evaluate", "--label", "churn"), "needs a labelled customer table"),
        (("predict", "-m", "nowhere", "-o", "p.csv"), "Give their table with -d/--data FILE"),
    ]  # fmt: skip
    for args, needle in cases:
        done = run(*args, cwd=folder)
        assert done.returncode == 2, (args, done.stdout)
        assert needle in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert [p.name for p in (folder / "taken").iterdir()] == ["keep.txt"]
    assert not (folder / "models").exists()


def test_predict_keeps_input_as_a_hidden_old_name(telco: dict) -> None:
    folder = telco["folder"]
    if not (folder / "churn-model").exists():
        pytest.skip("needs the model of test_train_data_then_predict_speaks_the_label")
    done = run("predict", "-m", "churn-model", "-i", "holdout.csv", "-o", "old.csv", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "--input/-i is now -d/--data" in done.stderr
    assert len(pd.read_csv(folder / "old.csv")) == N_HOLDOUT
    shown = run("predict", "--help", cwd=folder)
    assert "--data" in shown.stdout and "--input" not in shown.stdout


def test_file_flags_read_a_semicolon_decimal_comma_table(telco: dict) -> None:
    folder = telco["folder"]
    df, _ = telco_like(400, seed=11)
    text = df.to_csv(sep=";", index=False, decimal=",")
    # total_charges is text: its decimal points become commas by hand
    (folder / "eu.csv").write_text(text.replace(".", ","), encoding="latin-1")
    done = run(
        "train", "-d", "eu.csv", "--label", "churn", "--positive", "Yes", "-o", "eu-model",
        "--delimiter", ";", "--decimal", ",", "--encoding", "latin-1", *ONE, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    schema = json.loads((folder / "eu-model" / "manifest.json").read_text())["schema"]
    # monthly charges read as numbers, not as 18,55 text nor 1855
    assert "monthly_charges" in schema["numeric"]
    median = schema["medians"]["monthly_charges"]
    assert median == pytest.approx(float(df.monthly_charges.median()), rel=1e-9)


def test_the_service_speaks_the_label_of_a_table_model(
    telco: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LightGBM's fast path in the service phrases its own reasons: the label's, too."""
    from fastapi.testclient import TestClient

    from custval.api.app import ServiceSettings, create_app
    from custval.api.keys import new_key

    models = tmp_path / "models"
    done = run(
        "train", "-d", str(telco["folder"] / "train.csv"), "--label", "churn",
        "--positive", "Yes", "--models", "lightgbm", "--folds", "3",
        "-o", str(models / "20260101T000000Z"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key, entry = new_key("tests", "read")
    monkeypatch.setenv("CUSTVAL_API_KEYS", entry.entry)
    # a JSON client sends numbers as numbers (the service refuses numeric text)
    row = {
        k: (None if pd.isna(v) else v)
        for k, v in telco["held"].drop(columns=["churn"]).iloc[0].to_dict().items()
    }
    for column in ("tenure", "monthly_charges", "total_charges"):
        number = pd.to_numeric(row[column], errors="coerce")
        row[column] = None if pd.isna(number) else float(number)
    with TestClient(create_app(ServiceSettings(models_dir=models))) as client:
        r = client.post(
            "/v1/predict",
            json={"customers": [row]},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 200, r.text
    texts = [reason["text"] for reason in r.json()["predictions"][0]["reasons"]]
    assert texts and all(t.endswith("the chance of churn") for t in texts), texts
