"""What a scoring run adds when the project asks (``[actions]`` in custval.toml): churn risk,
category propensity, next best offers, a targeting list, and the playbooks per segment and per
customer; each as rows of the store's action tables, written in the same all-or-nothing run as
the predictions (:func:`custval.flows.scoring.score`).

Order matters: the targeting list uses the churn risk (the heuristic ranks by CLV × P(churn));
the playbooks use everything before them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.config import Project
from custval.errors import CustvalError, FitError
from custval.features.transactions import UNIT_DAYS
from custval.flows.churn import ChurnFit, score_churn, train_churn
from custval.flows.customer_base import btyd_columns, clv_settings
from custval.flows.offers import OfferFit, score_offers
from custval.flows.preparation import Prepared, features, prepare
from custval.flows.targeting import Targeting, target
from custval.models.playbook import (
    CHANNEL_PREFIX,
    customer_playbooks,
    next_purchase_wait,
    segment_playbooks,
)
from custval.store import open_store

__all__ = ["ActionResult", "TargetRun", "planned_stages", "score_actions", "target_run"]


@dataclass
class ActionResult:
    """The action tables of a scoring run (by store table name) and what they rest on."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    churn: ChurnFit | None = None
    targeting: Targeting | None = None
    offers: OfferFit | None = None
    #: the propensities and next best offers as pandas frames, for the playbooks
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: files kept with the run for the service (the offers' ranker and sources)
    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def score_actions(
    project: Project,
    prepared: Prepared,
    table: pd.DataFrame,
    preds: dict[str, Any],
    clv_models: dict[str, Any] | None,
    progress: Callable[[str], None] | None = None,
) -> ActionResult:
    """The actions ``project.actions`` asks for, at the as-of date, for the customers of the
    feature ``table`` and their scored ``preds`` (customer_id, CLV, P(alive), segment)."""
    say = progress or (lambda _stage: None)
    opts = project.actions
    out = ActionResult()
    ids = np.asarray(preds["customer_id"]).astype(str)
    p_alive = (ids, preds.get("p_alive", np.full(ids.size, np.nan)))
    churn_frame = None
    if (
        opts.churn
        or opts.playbooks
        or (opts.targeting_budget and "treatments" not in prepared.tables)
    ):
        say(f"churn risk over {opts.horizon_days} days")
        out.churn = train_churn(project, prepared, horizon_days=opts.horizon_days)
        risk, why, churn_frame = score_churn(out.churn, project, prepared, p_alive, table=table)
        out.tables.update({"churn_risk": risk, "churn_reasons": why})
    if opts.propensity or opts.next_best_offers:
        tables, out.frames, out.offers = score_offers(project, prepared, say)
        out.tables.update(tables)
        out.files.update(out.offers.files)
    if opts.targeting_budget:
        say("the targeting list")
        clv = pd.Series(np.asarray(preds.get("clv_expected", np.zeros(ids.size))), index=ids)
        churn = None if churn_frame is None else churn_frame.set_index("customer_id")["p_churn"]
        out.targeting = target(
            project,
            prepared,
            clv=clv,
            p_churn=churn,
            budget=opts.targeting_budget,
            cost=opts.contact_cost,
        )
        out.tables["targeting"] = out.targeting.rows
        out.notes.append(out.targeting.targets.note)
    if opts.playbooks:
        say("the playbooks")
        out.tables.update(_playbooks(project, table, preds, clv_models, out))
    return out


def _customers(
    project: Project,
    table: pd.DataFrame,
    preds: dict[str, Any],
    clv_models: dict[str, Any] | None,
    out: ActionResult,
) -> pd.DataFrame:
    """One row per customer with what the playbooks read."""
    frame = pd.DataFrame(
        {
            "customer_id": np.asarray(preds["customer_id"]).astype(str),
            "segment": preds.get("segment"),
            "p_alive": preds.get("p_alive"),
        }
    )
    if frame["segment"].isna().all():
        raise CustvalError(
            "the playbooks are per segment, and this run has no segments",
            hint="Segment the customers first: custval segment -c custval.toml",
        )
    frame["next_purchase_days"] = _wait_days(project, table, clv_models)
    keep = [c for c in table.columns if c.startswith(CHANNEL_PREFIX)] + ["favourite_channel"]
    for c in keep:
        if c in table:
            frame[c] = table[c].to_numpy()
    if out.targeting is not None:
        rows = out.targeting.rows.to_pandas().set_index("customer_id")
        for c in ("contact", "method", "expected_profit"):
            frame[c] = frame["customer_id"].map(rows[c])
    return frame


def _wait_days(
    project: Project, table: pd.DataFrame, clv_models: dict[str, Any] | None
) -> np.ndarray:
    """The median wait to each customer's next purchase, in days (NaN without a purchase or
    a purchase model)."""
    params = (clv_models or {}).get("purchases", {}).get("params", {})
    if not {"r", "alpha"} <= set(params) or "frequency" not in table:
        return np.full(len(table), np.nan)
    wait = next_purchase_wait(params["r"], params["alpha"], table["frequency"], table["T"])
    return np.asarray(wait, np.float64) * UNIT_DAYS[project.time_unit]


def _playbooks(
    project: Project,
    table: pd.DataFrame,
    preds: dict[str, Any],
    clv_models: dict[str, Any] | None,
    out: ActionResult,
) -> dict[str, pa.Table]:
    customers = _customers(project, table, preds, clv_models, out)
    propensity, offers = None, None
    if "propensities" in out.frames:
        rows = out.frames["propensities"]
        propensity = rows.pivot(index="customer_id", columns="category", values="probability")
        top = rows[rows["rank"] == 1].set_index("customer_id")["category"]
        customers["top_category"] = customers["customer_id"].map(top)
    if "next_best_offers" in out.frames:
        offers = out.frames["next_best_offers"].rename(columns={"product_name": "label"})
    segments = segment_playbooks(customers, propensity=propensity, offers=offers)
    own = customer_playbooks(customers, offers=offers)
    return {
        "playbooks": pa.Table.from_pandas(segments, preserve_index=False),
        "customer_playbooks": pa.Table.from_pandas(own, preserve_index=False),
    }


def planned_stages(project: Project) -> int:
    """How many progress stages :func:`score_actions` will report (churn counted whenever the
    playbooks or the churn risk are asked for)."""
    opts = project.actions
    churn = opts.churn or opts.playbooks
    return (
        int(churn)
        + int(opts.propensity)
        + int(bool(opts.next_best_offers))
        + int(bool(opts.targeting_budget))
        + int(opts.playbooks)
    )


def _churn_for_targeting(
    project: Project, prepared: Prepared, table: pd.DataFrame, say: Callable[[str], None]
) -> tuple[ChurnFit, pd.Series]:
    """The churn classifier and each customer's P(churn), for the heuristic list."""
    say(f"churn risk over {project.actions.horizon_days} days")
    churn = train_churn(project, prepared, horizon_days=project.actions.horizon_days)
    _, _, frame = score_churn(churn, project, prepared, table=table)
    return churn, frame.set_index("customer_id")["p_churn"]


@dataclass
class TargetRun:
    """A targeting list made by ``custval target`` and stored as a run of kind ``target``."""

    run_id: str
    targeting: Targeting
    churn: ChurnFit | None


def target_run(
    project: Project,
    *,
    store_url: str | Path,
    budget: float,
    cost: float | None = None,
    prepared: Prepared | None = None,
    progress: Callable[[str], None] | None = None,
) -> TargetRun:
    """The targeting list at the project's as-of date within ``budget``, stored as one run of
    kind ``target`` (all or nothing): uplift × CLV − cost from the project's campaign log, or
    the CLV × P(churn) heuristic without one (:mod:`custval.flows.targeting`). CLV by BG/NBD and
    Gamma-Gamma over the project's horizon."""
    say = progress or (lambda _stage: None)
    store = open_store(store_url)  # an unreachable store fails before any work
    try:
        prepared = prepared or prepare(project, progress=say)
        say("CLV by btyd")
        table = features(project, prepared).to_pyarrow().to_pandas()
        horizon, discount = clv_settings(project)
        cols, clv_models = btyd_columns(
            project, prepared, table, horizon=horizon, discount=discount, level=None
        )
        ids = table.customer_id.astype(str).to_numpy()
        clv = pd.Series(np.asarray(cols["clv_expected"], np.float64), index=ids)
        churn, p_churn = None, None
        if "treatments" not in prepared.tables:
            churn, p_churn = _churn_for_targeting(project, prepared, table, say)
        say("the targeting list")
        try:
            found = target(project, prepared, clv=clv, p_churn=p_churn, budget=budget, cost=cost)
        except FitError:
            if p_churn is not None:
                raise
            # a campaign too small to learn uplift from: the labelled heuristic instead, which
            # needs churn risk (target's note says why uplift was not learnt)
            churn, p_churn = _churn_for_targeting(project, prepared, table, say)
            found = target(project, prepared, clv=clv, p_churn=p_churn, budget=budget, cost=cost)
        say("writing the run to the store")
        listed = found.rows.select(["customer_id"])
        run_id = store.write_run(
            kind="target",
            predictions=listed,
            as_of=project.as_of,
            clv_models=clv_models,
            extra={"targeting": found.rows},
        )
    finally:
        store.close()
    return TargetRun(run_id, found, churn)
