"""Whom to contact with a retention offer, for a project: learnt from its campaign log when it
has one (uplift), else the labelled CLV × P(churn) heuristic.

With a ``treatments`` source (a campaign's log: who was contacted, who was held out at random,
who was retained): the latest campaign's customers, with their features at the day it was sent,
train the T- and X-learner (:mod:`custval.models.uplift`); the one with the larger area
between its Qini curve and the random line on a held-out third of the campaign's customers
(in outcome units: the normalised coefficient is undefined when both arms retain the same
share overall, as small campaigns can) is refitted on all of them and
predicts every eligible customer's uplift at the as-of date (subscribers active then, when the
project has subscriptions). The decision is Lemmens & Gupta's (2020): contact when
uplift × CLV − cost > 0, highest first, within the budget.

Without one: CLV × P(churn), said to be a heuristic, with the control group the next campaign
should hold out (:func:`custval.models.uplift.heuristic_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.config import Project
from custval.errors import CustvalError, FitError
from custval.flows.preparation import Prepared, features
from custval.models.uplift import (
    TargetList,
    TLearner,
    XLearner,
    choose_targets,
    heuristic_targets,
    qini_coefficient,
    treatment_indicator,
)

__all__ = ["Targeting", "UpliftFit", "target", "train_uplift"]

HOLDOUT_SHARE = 1 / 3


@dataclass
class UpliftFit:
    """The uplift model learnt from a project's latest campaign, and how it was chosen."""

    model: Any
    chosen: str
    campaign: str
    sent: Any
    customers: int
    treated_share: float
    qini: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0


@dataclass
class Targeting:
    """A targeting list for the store (``targeting`` rows) and what it rests on."""

    targets: TargetList
    rows: pa.Table
    uplift: UpliftFit | None


def _campaign(prepared: Prepared) -> tuple[pd.DataFrame, str]:
    """The latest campaign's rows (customer_id, sent_at, group, retained, cost) and its id."""
    log = prepared.tables["treatments"].to_pandas()
    if "retained" not in log or log["retained"].isna().all():
        raise CustvalError(
            "the treatment log has no outcome: uplift needs whether each customer was retained",
            source="treatments",
            column="retained",
            hint='Map the campaign\'s outcome column: [sources.NAME.columns] retained = "..."',
        )
    if "campaign_id" in log and log["campaign_id"].notna().any():
        latest = log.groupby("campaign_id")["sent_at"].min().idxmax()
        log = log[log["campaign_id"] == latest]
    else:
        latest = "all"
    log = log.dropna(subset=["retained"]).drop_duplicates("customer_id", keep="last")
    return log.reset_index(drop=True), str(latest)


#: features that would tell the campaign's treated from its controls after it was sent: the
#: model learns from the day it was sent, when nobody had the offer yet
OFFER_FEATURES = ("offers_received", "weeks_since_last_offer")


def _features_of(project: Project, prepared: Prepared, at: Any, ids: Any) -> pd.DataFrame:
    ft = features(project, prepared, as_of=at)
    table = ft.to_pyarrow().to_pandas()
    keys = [f.name for f in ft.catalogue if f.role != "feature" and f.name in table.columns]
    table = table.set_index(table.customer_id.astype(str))
    drop = keys + [c for c in OFFER_FEATURES if c in table.columns]
    return table.reindex(pd.Index(ids, dtype=str)).drop(columns=drop)


def train_uplift(project: Project, prepared: Prepared, *, seed: int = 0) -> UpliftFit:
    """The T- or X-learner, whichever has the better held-out Qini, refitted on the latest
    campaign of the project's treatment log (:mod:`custval.flows.targeting`)."""
    log, campaign = _campaign(prepared)
    sent = pd.Timestamp(log["sent_at"].min()).date()
    treated = treatment_indicator(log["group"], source="treatments")
    y = log["retained"].astype(float).to_numpy()
    frame = _features_of(project, prepared, sent, log["customer_id"].astype(str))
    rng = np.random.default_rng(seed)
    held = rng.random(len(log)) < HOLDOUT_SHARE
    qini = {}
    for name, make in (("x-learner", XLearner), ("t-learner", TLearner)):
        model = make(seed=seed).fit(frame[~held], treated[~held], y[~held], source="treatments")
        qini[name] = qini_coefficient(
            model.predict_uplift(frame[held]), treated[held], y[held], normalize=False
        )
    chosen = max(qini, key=qini.__getitem__)
    make = XLearner if chosen == "x-learner" else TLearner
    model = make(seed=seed).fit(frame, treated, y, source="treatments")
    cost = _mean_cost(log)
    return UpliftFit(model, chosen, campaign, sent, len(log), float(treated.mean()), qini, cost)


def _mean_cost(log: pd.DataFrame) -> float:
    """What one contact of the campaign cost on average (0 when the log does not say)."""
    return float(log["cost"].mean()) if "cost" in log and log["cost"].notna().any() else 0.0


def _eligible(project: Project, prepared: Prepared) -> pd.DataFrame:
    """The customers a retention offer can go to now: subscribers active at the as-of date
    when there are subscriptions, else every customer."""
    table = features(project, prepared).to_pyarrow().to_pandas()
    if "subscribed" in table:
        table = table[table["subscribed"].fillna(0).to_numpy() > 0]
    return table.reset_index(drop=True)


def target(
    project: Project,
    prepared: Prepared,
    *,
    clv: pd.Series,
    p_churn: pd.Series | None,
    budget: float,
    cost: float | None = None,
    seed: int = 0,
) -> Targeting:
    """The targeting list at the as-of date within ``budget`` (currency): uplift × CLV − cost
    when the project has a campaign log, else the CLV × P(churn) heuristic. ``clv`` and
    ``p_churn`` are indexed by customer_id; ``cost`` per contact defaults to the campaign's
    mean cost (0 without one)."""
    now = _eligible(project, prepared)
    ids = now.customer_id.astype(str).to_numpy()
    value = clv.reindex(ids).fillna(0.0).clip(lower=0.0).to_numpy(np.float64)
    churn = None if p_churn is None else p_churn.reindex(ids).to_numpy(np.float64)
    fit, why_not, logged_cost = None, None, 0.0
    if "treatments" in prepared.tables:
        logged_cost = _mean_cost(_campaign(prepared)[0])
        try:
            fit = train_uplift(project, prepared, seed=seed)
        except FitError as exc:
            # a campaign too small or too uniform to learn from: with churn risk at hand the
            # list falls back to the heuristic and says why; without it, the error stands
            if churn is None:
                raise
            why_not = f"uplift not learnt from the campaign log: {exc.problem}. "
    if fit is not None:
        per_contact = fit.cost if cost is None else cost
        now_x = _features_of(project, prepared, project.as_of, ids)
        tau = fit.model.predict_uplift(now_x)
        targets = choose_targets(tau, value, per_contact, budget, customer_id=ids, p_churn=churn)
    else:
        if churn is None:
            raise CustvalError(
                "targeting without a campaign log ranks by CLV x P(churn): churn risk is needed",
                hint="Set churn = true in [actions], or add a treatments source",
            )
        per_contact = cost if cost is not None else logged_cost
        targets = heuristic_targets(
            np.nan_to_num(churn), value, per_contact, budget, customer_id=ids
        )
        if why_not:
            targets = replace(targets, note=why_not + targets.note)
    return Targeting(targets, _rows(targets), fit)


def _rows(targets: TargetList) -> pa.Table:
    """The store's ``targeting`` rows of a list."""
    t = targets.table
    return pa.table(
        {
            "customer_id": t["customer_id"].astype(str).to_numpy(),
            "method": np.full(len(t), targets.method),
            "priority": t["rank"].to_numpy(np.int32),
            "contact": t["contact"].astype(np.int32).to_numpy(),
            "uplift": t["uplift"].to_numpy(np.float64),
            "p_churn": t["p_churn"].to_numpy(np.float64),
            "value": t["value"].to_numpy(np.float64),
            "cost": t["cost"].to_numpy(np.float64),
            "expected_profit": _profit(t, targets.method),
            "reason": t["reason"].astype(str).to_numpy(),
        }
    )


def _profit(t: pd.DataFrame, method: str) -> np.ndarray:
    # the heuristic has no effect estimate: its "profit" is the value at risk less the cost,
    # an upper bound (an offer that kept every one of them), as docs/bi.md says
    if method == "uplift":
        return t["expected_profit"].to_numpy(np.float64)
    return (t["value_at_risk"] - t["cost"]).to_numpy(np.float64)
