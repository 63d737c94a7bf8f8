"""High/low value on CDNOW: custval's classifier against the ranking by BTYD CLV.

Data: the CDNOW master file (23,570 customers, ``../shared/data/cdnow/CDNOW_master.txt``).
Label: a customer is high value when her spend in weeks 40-78 (1997-10-01 to 1998-06-30) is in
the top 20% of all customers' (customers who spend nothing are never high). Features: custval's
RFM, rhythm and trend features at 1997-10-01, from weeks 1-39 only.

* custval: ``ValueClassifier`` (logistic regression, LightGBM, random forest, neural network),
  5-fold stratified cross-validation; its figures are the chosen model's out-of-fold ROC AUC and
  top-decile lift.
* baseline: each customer's 39-week CLV from BG/NBD and Gamma-Gamma fitted on weeks 1-39
  (custval's own probabilistic models, the standard practice), used as a score; it sees no
  labels, so its figures are over all customers.

Target (issue 4): the classifier at least matches the baseline's ROC AUC. Exits 1 otherwise.
Run: ``.venv/bin/python bench/value_cdnow.py``.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

import ibis
import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
CAL_END, HOLD_END = date(1997, 10, 1), date(1998, 7, 1)


def load() -> pd.DataFrame:
    raw = pd.read_csv(DATA, sep=r"\s+", dtype={"customer_id": str, "date": str})
    return pd.DataFrame(
        {
            "customer_id": raw.customer_id.str.strip(),
            "order_id": "",
            "timestamp": pd.to_datetime(raw.date, format="%Y%m%d").astype("datetime64[us]"),
            "amount": raw.dollar_value.astype(float),
            "is_refund": False,
        }
    )


def holdout(tx_df: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """Each customer's spend and purchase days in weeks 40-78 (1997-10-01 to 1998-06-30),
    zero for none, in the order of ``ids``."""
    later = tx_df[
        (tx_df.timestamp >= pd.Timestamp(CAL_END)) & (tx_df.timestamp < pd.Timestamp(HOLD_END))
    ]
    per = (
        later.assign(day=later.timestamp.dt.normalize())
        .groupby("customer_id")
        .agg(spend=("amount", "sum"), days=("day", "nunique"))
    )
    return per.reindex(ids).fillna(0.0)


def lift_top_decile(y: np.ndarray, score: np.ndarray) -> float:
    k = max(1, round(0.1 * y.size))
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def main() -> int:
    if not DATA.exists():
        print(f"{DATA} is absent: nothing to measure")
        return 0
    from sklearn.metrics import roc_auc_score

    from custval.features.transactions import rfm_features
    from custval.models.btyd import BetaGeo, GammaGamma
    from custval.models.clv import customer_lifetime_value
    from custval.models.value import ValueClassifier, derive_value_label

    tx_df = load()
    con = ibis.duckdb.connect()
    tx = con.create_table("tx", tx_df)
    feats = rfm_features(tx, CAL_END, one_row_per_order=True).to_pandas()
    future = holdout(tx_df, feats.customer_id).spend.to_numpy()
    y = derive_value_label(future, 0.2)
    table = feats.drop(columns=["customer_id"])
    print(
        f"CDNOW master: {len(feats):,} customers, {len(table.columns)} features at {CAL_END}; "
        f"high = top 20% of spend in weeks 40-78 ({int(y.sum()):,} customers, at least "
        f"${future[y == 1].min():.2f})"
    )

    start = time.perf_counter()
    clf = ValueClassifier(folds=5).fit(table, y)
    seconds = time.perf_counter() - start
    board = clf.leaderboard_

    # baseline: BG/NBD + Gamma-Gamma CLV over the next 39 weeks, undiscounted
    x, tx_, t, m = (
        feats[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T", "monetary_value")
    )
    bg = BetaGeo().fit(x, tx_, t)
    buyers = (x > 0) & (m > 0)
    gg = GammaGamma().fit(x[buyers], m[buyers])
    clv = customer_lifetime_value(bg, gg, x, tx_, t, np.where(buyers, m, 0.0), horizon=39)
    base_auc = float(roc_auc_score(y, clv))
    base_lift = lift_top_decile(y, clv)

    print(f"{'model':<28}{'ROC AUC':>18}{'lift top 10%':>18}")
    for row in board.to_dict("records"):
        mark = " (chosen)" if row["model"] == clf.chosen_ else ""
        print(
            f"{row['model'] + mark:<28}{row['roc_auc_mean']:>10.4f} ± {row['roc_auc_std']:.3f}"
            f"{row['lift_top_decile_mean']:>10.3f} ± {row['lift_top_decile_std']:.2f}"
        )
    print(f"{'BTYD CLV (BG/NBD + GG)':<28}{base_auc:>10.4f}{'':8}{base_lift:>10.3f}")
    chosen = board.set_index("model").loc[clf.chosen_]
    auc, lift = chosen.roc_auc_mean, chosen.lift_top_decile_mean
    met = auc >= base_auc
    print()
    print(f"custval selection (4 candidates x 5 folds) and refit: {seconds:.1f} s")
    print(
        f"chosen {clf.chosen_}: ROC AUC {auc:.4f} vs BTYD CLV {base_auc:.4f} "
        f"(ratio {auc / base_auc:.4f}); lift {lift:.2f} vs {base_lift:.2f}; "
        f"target (AUC >= baseline): {'met' if met else 'NOT MET'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
