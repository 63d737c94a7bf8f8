"""Churn risk for a project: the label from the data (cancellations when a subscriptions source
records them, else lapses against the BTYD model), the churn classifier trained one horizon
before the as-of date, and every customer's risk and reasons at the as-of date.

Training looks back: features at the cutoff c = as_of − horizon, the label from what happened in
[c, as_of). Scoring looks ahead: features at the as-of date, P(churn within the next horizon).
With a cancellation label both feature tables carry the BTYD model's view of each customer
(P(alive), the expected gap between purchases, the gap over it, the chance of no purchase in
the horizon; :func:`custval.models.churn.btyd_churn_features`), fitted at their own date, as
the hybrid CLV adds them. A lapse label is drawn from that same model, so there the classifier
learns from the plain features alone (measured: they predict the planted departures better).
1 − P(alive) at the as-of date is stored beside the risk: the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.config import Project
from custval.errors import CustvalError
from custval.features.holdout import calibration_holdout
from custval.features.subscriptions import cancelled_between
from custval.features.transactions import UNIT_DAYS
from custval.flows.preparation import Prepared, features
from custval.models.btyd import BetaGeo
from custval.models.churn import ChurnClassifier, btyd_churn_features, lapse_label
from custval.models.explain import reasons
from custval.store import long_reasons

__all__ = ["ChurnFit", "churn_label_kind", "score_churn", "train_churn"]

RFM = ["frequency", "recency", "T"]
#: what the BTYD columns of the churn features mean, for the reasons
BTYD_MEANINGS = {
    "btyd_p_alive": "P(still a customer) by BG/NBD",
    "btyd_expected_gap": "expected time between purchases by BG/NBD",
    "btyd_gap_ratio": "time since the last purchase over the expected gap",
    "btyd_p_quiet": "chance of no purchase in the horizon by BG/NBD",
}


@dataclass
class ChurnFit:
    """A churn classifier trained on a project, and what its label means."""

    clf: ChurnClassifier
    label_kind: str  # "cancellation" or "lapse"
    horizon_days: int
    cutoff: date
    customers: int
    churned_share: float
    keys: list[str]
    catalogue: dict[str, str]


def churn_label_kind(prepared: Prepared) -> str:
    """``cancellation`` when the project has subscriptions, else ``lapse``."""
    return "cancellation" if "subscriptions" in prepared.tables else "lapse"


def _table_at(
    project: Project, prepared: Prepared, at: date, horizon_days: int
) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """The feature table at ``at`` with the BTYD columns of BG/NBD fitted there (NaN without a
    purchase), its key columns and what each feature means."""
    ft = features(project, prepared, as_of=at)
    table = ft.to_pyarrow().to_pandas()
    keys = [f.name for f in ft.catalogue if f.role != "feature" and f.name in table.columns]
    meaning = {**{f.name: f.description for f in ft.catalogue}, **BTYD_MEANINGS}
    return _with_btyd(project, table, horizon_days), keys, meaning


def _with_btyd(project: Project, table: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """``table`` with the BTYD columns of BG/NBD fitted on its customers who bought."""
    if not set(RFM) <= set(table.columns):
        return table
    buyers = table[RFM].notna().all(axis=1).to_numpy()
    if buyers.sum() >= 10:
        summary = table.loc[buyers, RFM]
        bg = BetaGeo().fit(summary.frequency, summary.recency, summary["T"])
        horizon = horizon_days / UNIT_DAYS[project.time_unit]
        extra = btyd_churn_features(bg, summary.reset_index(drop=True), horizon)
        extra.index = table.index[buyers]
        table = table.join(extra)
    return table


def _labels(
    project: Project, prepared: Prepared, table: pd.DataFrame, cut: date, horizon_days: int
) -> pd.Series:
    """The churn label of the customers who have one at ``cut`` (index: customer_id)."""
    if churn_label_kind(prepared) == "cancellation":
        end = cut + timedelta(days=horizon_days)
        got = cancelled_between(prepared.tables["subscriptions"], cut, end).to_pandas()
        return pd.Series(got.cancelled.to_numpy(np.float64), index=got.customer_id.astype(str))
    if "transactions" not in prepared.tables:
        raise CustvalError(
            "churn needs cancellations (a subscriptions source) or purchases (transactions)",
            hint="Add a source of kind subscriptions or transactions, or set churn = false",
        )
    unit = UNIT_DAYS[project.time_unit]
    after = calibration_holdout(
        prepared.tables["transactions"],
        cut,
        cut + timedelta(days=horizon_days),
        time_unit=project.time_unit,
        one_row_per_order=prepared.one_row_per_order,
    ).to_pandas()
    after = after.set_index(after.customer_id.astype(str)).frequency_holdout
    rows = table[table.customer_id.astype(str).isin(after.index)].reset_index(drop=True)
    summary = rows[RFM]
    bg = BetaGeo().fit(summary.frequency, summary.recency, summary["T"])
    y = lapse_label(
        bg,
        summary,
        after.reindex(rows.customer_id.astype(str)).to_numpy(),
        horizon_days / unit,
        observed_after=(project.as_of - cut).days / unit,
    )
    return pd.Series(y, index=rows.customer_id.astype(str).to_numpy()).dropna()


def train_churn(
    project: Project,
    prepared: Prepared,
    *,
    horizon_days: int = 91,
    candidates: tuple[str, ...] = ("logistic", "lightgbm"),
    folds: int = 3,
    seed: int = 0,
) -> ChurnFit:
    """The churn classifier of a project, trained at as_of − ``horizon_days`` on what happened
    up to the as-of date (:mod:`custval.flows.churn`)."""
    cut = project.as_of - timedelta(days=horizon_days)
    table, keys, catalogue = _table_at(project, prepared, cut, horizon_days)
    y = _labels(project, prepared, table, cut, horizon_days)
    ids = table.customer_id.astype(str)
    rows = table[ids.isin(y.index).to_numpy()].reset_index(drop=True)
    labels = y.reindex(rows.customer_id.astype(str)).to_numpy()
    if rows.empty or np.unique(labels).size < 2:
        raise CustvalError(
            f"churn cannot be learnt: {len(rows):,} customers labelled at {cut}, "
            f"{int(np.nansum(labels)):,} of them churned",
            hint="A longer history, or a horizon (horizon_days in [actions]) with some churn",
        )
    clf = ChurnClassifier(candidates, folds=folds, seed=seed, top_share=float(labels.mean()))
    drop = list(keys)
    if churn_label_kind(prepared) == "lapse":
        # the lapse label is drawn from the same BG/NBD fit: as features its columns repeat
        # the label's rule, and against the planted departures of the generated company
        # they lowered the ROC AUC (0.803 without, 0.773 with; bench/results/churn.txt)
        drop += [c for c in BTYD_MEANINGS if c in rows.columns]
    clf.fit(rows.drop(columns=drop), labels)
    return ChurnFit(
        clf,
        churn_label_kind(prepared),
        horizon_days,
        cut,
        len(rows),
        float(labels.mean()),
        keys,
        catalogue,
    )


def score_churn(
    fit: ChurnFit,
    project: Project,
    prepared: Prepared,
    p_alive: Any = None,
    top_k: int = 3,
    table: pd.DataFrame | None = None,
) -> tuple[pa.Table, pa.Table, pd.DataFrame]:
    """Every customer's churn risk at the as-of date: the store's ``churn_risk`` and
    ``churn_reasons`` rows, and a frame (customer_id, p_churn) for the other actions. With a
    cancellation label only the customers subscribed at the as-of date are scored.
    ``table``: the project's feature table at the as-of date, when the caller has it."""
    if table is None:
        table = _table_at(project, prepared, project.as_of, fit.horizon_days)[0]
    elif set(BTYD_MEANINGS) & set(fit.clf.schema_.columns):
        table = _with_btyd(project, table.copy(), fit.horizon_days)
    if fit.label_kind == "cancellation":
        active = table.get("subscribed", pd.Series(0, index=table.index)).fillna(0) > 0
        table = table[active.to_numpy()].reset_index(drop=True)
    ids = table.customer_id.astype(str).to_numpy()
    frame = table.reindex(columns=fit.clf.schema_.columns)
    explained = reasons(fit.clf, frame, top_k=top_k, catalogue=fit.catalogue, source="features")
    p = explained.probability.to_numpy(np.float64)
    risk = {
        "customer_id": ids,
        "p_churn": p,
        "churn_class": explained.predicted_class.to_numpy().astype(np.int32),
        "label_kind": np.full(ids.size, fit.label_kind),
        "horizon_days": np.full(ids.size, fit.horizon_days, np.int32),
        "p_alive": _aligned(p_alive, ids),
    }
    return (
        pa.table(risk),
        long_reasons(explained, ids, top_k),
        pd.DataFrame({"customer_id": ids, "p_churn": p}),
    )


def _aligned(p_alive: Any, ids: np.ndarray) -> np.ndarray:
    if p_alive is None:
        return np.full(ids.size, np.nan)
    series = pd.Series(np.asarray(p_alive[1], np.float64), index=np.asarray(p_alive[0]))
    return series.reindex(ids).to_numpy(np.float64)
