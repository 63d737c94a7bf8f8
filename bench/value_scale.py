"""Speed of the value classifier: selection and training on 1M customers x 40 features, and
the reasons for every one of them.

Data (generated, seeded): 1,000,000 customers with 30 numeric features (skewed spends and counts,
some missing) and 10 categorical ones (3 to 12 categories), a label from a logistic model with a
few non-linear terms and interactions (about 20% positive).

Measured, each in this process on the 2-core machine:

* training: ``ValueClassifier(folds=5)``: the four candidates compared by 5-fold
  cross-validation (on a stratified sample of ``max_selection_rows``, 100,000 rows, as the
  classifier does beyond that many rows) and the chosen one refitted on all 1M rows;
* reasons: ``custval.models.explain.reasons`` for all 1M customers (probability, class, the top 3
  reasons with their sentences);
* for scale, a bare LightGBM fit (300 rounds, the same parameters) on all 1M rows.

Targets (issue 4): training under 5 minutes, reasons under 2 minutes. Exits 1 when one is
missed. Run: ``.venv/bin/python bench/value_scale.py [-n ROWS]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import pandas as pd
from scipy.special import expit


def generate(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for j in range(30):
        if j % 3 == 0:
            v = rng.gamma(1.5, 40.0, n)
        elif j % 3 == 1:
            v = rng.poisson(3 + j % 5, n).astype(float)
        else:
            v = rng.normal(0, 1, n)
        v[rng.random(n) < 0.02] = np.nan
        cols[f"num_{j:02d}"] = v
    for j in range(10):
        k = 3 + j
        cols[f"cat_{j}"] = rng.choice([f"c{i}" for i in range(k)], n)
    df = pd.DataFrame(cols)
    z = (
        -2.2
        + 0.01 * np.nan_to_num(df.num_00)
        + 0.25 * np.nan_to_num(df.num_01)
        - 0.5 * np.nan_to_num(df.num_02) ** 2 / 2
        + 0.4 * (df.cat_0 == "c1")
        + 0.3 * np.nan_to_num(df.num_04) * (df.cat_1 == "c2")
        + 0.2 * np.nan_to_num(df.num_05)
        - 0.004 * np.nan_to_num(df.num_06)
    )
    y = (rng.random(n) < expit(z.to_numpy())).astype(float)
    return df, y


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--rows", type=int, default=1_000_000)
    args = ap.parse_args()

    import lightgbm as lgb

    from custval.models.candidates import LightGBM
    from custval.models.explain import reasons
    from custval.models.value import ValueClassifier

    t0 = time.perf_counter()
    X, y = generate(args.rows)  # noqa: N806 (scikit-learn naming)
    print(
        f"{len(X):,} customers x {X.shape[1]} features ({y.mean():.1%} positive) generated in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    t0 = time.perf_counter()
    clf = ValueClassifier(folds=5, max_selection_rows=100_000).fit(X, y)
    train_s = time.perf_counter() - t0
    print(
        clf.leaderboard_[["model", "roc_auc_mean", "roc_auc_std", "seconds"]]
        .round(4)
        .to_string(index=False)
    )
    print(
        f"training (selection on {clf.selection_rows_:,} rows, refit of {clf.chosen_} on "
        f"{len(X):,}): {train_s:.1f} s (refit {clf.refit_seconds_:.1f} s)",
        flush=True,
    )

    t0 = time.perf_counter()
    r = reasons(clf, X, top_k=3)
    reasons_s = time.perf_counter() - t0
    print(
        f"reasons for {len(r):,} customers: {reasons_s:.1f} s; e.g. {r.reason_1.iloc[0]!r}",
        flush=True,
    )

    schema = clf.schema_
    codes = schema.codes(X)
    cats = list(range(len(schema.numeric), len(schema.columns)))
    t0 = time.perf_counter()
    lgb.train(
        LightGBM().params(),
        lgb.Dataset(codes, label=y, categorical_feature=cats),
        num_boost_round=LightGBM.rounds,
    )
    bare_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        f"bare LightGBM fit on all rows (no selection, no encoding): {bare_s:.1f} s; "
        f"training / bare fit = {train_s / bare_s:.1f}x; peak memory {peak:.2f} GB"
    )
    ok_train, ok_reasons = train_s < 300, reasons_s < 120
    print(
        f"targets: training < 300 s: {'met' if ok_train else 'NOT MET'}; "
        f"reasons < 120 s: {'met' if ok_reasons else 'NOT MET'}"
    )
    return 0 if ok_train and ok_reasons else 1


if __name__ == "__main__":
    sys.exit(main())
