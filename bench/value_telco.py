"""`custval evaluate` on the telco churn data, against a plain one-hot logistic regression.

Data: ``../shared/data/telco/telco_churn.csv`` (7,043 customers, label ``churn``, positive
``Yes``). custval runs as a user would run it, with no per-data-set settings:
``custval evaluate --data telco_churn.csv --label churn --positive Yes --json`` (5 stratified
folds, seed 0; the id column is recognised and left out). The competitor, measured in the same
run on the same folds: scikit-learn's one-hot encoding of the text columns, standardisation and
a logistic regression (C = 1), the baseline the data's README quotes (ROC AUC 0.845).

Target (issue 4): 5-fold ROC AUC of custval's chosen model at least 0.84. Exits 1 otherwise.
Run: ``.venv/bin/python bench/value_telco.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "telco" / "telco_churn.csv"
TARGET = 0.84


def baseline(df: pd.DataFrame) -> tuple[float, float, float]:
    """Mean and sd of the 5-fold ROC AUC of a one-hot + standardised logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    y = (df["churn"] == "Yes").to_numpy(dtype=int)
    feats = df.drop(columns=["churn", "customer_id"])
    feats["total_charges"] = pd.to_numeric(feats["total_charges"], errors="coerce").fillna(0.0)
    numeric = [c for c in feats.columns if pd.api.types.is_numeric_dtype(feats[c])]
    text = [c for c in feats.columns if c not in numeric]
    start = time.perf_counter()
    aucs = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(feats, y):
        model = make_pipeline(
            ColumnTransformer(
                [
                    ("text", OneHotEncoder(handle_unknown="ignore"), text),
                    ("num", StandardScaler(), numeric),
                ]
            ),
            LogisticRegression(C=1.0, max_iter=5000),
        )
        model.fit(feats.iloc[train], y[train])
        aucs.append(roc_auc_score(y[test], model.predict_proba(feats.iloc[test])[:, 1]))
    return float(np.mean(aucs)), float(np.std(aucs, ddof=1)), time.perf_counter() - start


def main() -> int:
    if not DATA.exists():
        print(f"{DATA} is absent: nothing to measure")
        return 0
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "custval",
            "evaluate",
            "--data",
            str(DATA),
            "--label",
            "churn",
            "--positive",
            "Yes",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr)
        return 1
    result = json.loads(done.stdout)
    base_mean, base_sd, base_seconds = baseline(pd.read_csv(DATA))
    print(
        f"telco churn: {result['rows']:,} customers, {result['positive_share']:.1%} churned; "
        f"id columns left out: {', '.join(result['id_columns'])}"
    )
    print(f"{'model':<26}{'ROC AUC':>16}{'PR AUC':>16}{'lift top 10%':>16}")
    for name, m in result["models"].items():
        mark = " (chosen)" if name == result["chosen"] else ""
        print(
            f"{name + mark:<26}"
            f"{m['roc_auc']['mean']:>9.4f} ± {m['roc_auc']['std']:.3f}"
            f"{m['pr_auc']['mean']:>9.4f} ± {m['pr_auc']['std']:.3f}"
            f"{m['lift_top_decile']['mean']:>9.3f} ± {m['lift_top_decile']['std']:.2f}"
        )
    chosen_auc = result["models"][result["chosen"]]["roc_auc"]["mean"]
    print(f"{'sklearn one-hot logistic':<26}{base_mean:>9.4f} ± {base_sd:.3f}")
    print()
    print(
        f"custval evaluate (4 candidates, whole command): {seconds:.1f} s; "
        f"baseline (1 model): {base_seconds:.1f} s"
    )
    print(
        f"chosen {result['chosen']}: ROC AUC {chosen_auc:.4f}; baseline {base_mean:.4f}; "
        f"ratio {chosen_auc / base_mean:.4f}; target >= {TARGET}: "
        f"{'met' if chosen_auc >= TARGET else 'NOT MET'}"
    )
    return 0 if chosen_auc >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
