"""What a scoring run's predictions turned into, once the outcome is known (issue 19).

A run scored at its as-of date A predicted: each customer's value class (high when her spend
in the label's horizon h after A is in the top share), CLV over the CLV horizon, P(alive) and
expected purchases. When the project's data reach A + h (its as-of date, moved on), the labels
have matured and the run is judged:

- the value class's realised ROC AUC, top-decile precision and lift
  (:func:`custval.models.performance.realised`), next to what was estimated before;
- CLV against the spend realised over the CLV horizon (when that has passed too), by decile
  of predicted CLV, with the total's relative error. The CLV is discounted and the spend is
  not: over a year at 10% the discount alone makes the CLV some 5% lower;
- P(alive) against whether the customer bought again in the horizon (a lower bound of being
  alive: a live customer may not buy in a given year), and expected against actual purchases
  (distinct purchase days), by decile.

A forecast run (``custval forecast``) is judged when a later one exists: the later run keeps
the series' history (``forecast_series``), which holds the actual values of periods the earlier
one forecast; per earlier run and series, for the periods both cover: the WAPE, the bias of the
total and how often the 80% and 95% intervals held the actual (:func:`forecast_outcomes`).

The figures go to the store's ``run_performance`` (kind ``realised``) per run, so that the
trend is visible next to the estimates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.config import Project
from custval.errors import CustvalError
from custval.features._util import cutoff as midnight
from custval.features.transactions import UNIT_DAYS
from custval.flows.preparation import Prepared, future_spend, prepare
from custval.models.performance import ClassifierPerformance, by_decile, realised
from custval.models.value import derive_value_label
from custval.store import Store

__all__ = ["Outcomes", "forecast_outcomes", "matured_on", "realised_outcomes"]


@dataclass
class Outcomes:
    """A run's predictions against what happened."""

    window: tuple[date, date]
    value: ClassifierPerformance | None
    #: by decile of predicted CLV: customers, predicted (CLV) and actual (spend) means
    clv: pd.DataFrame | None = None
    clv_total_error: float | None = None
    p_alive: pd.DataFrame | None = None
    purchases: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """The single figures kept per run."""
        out: dict[str, float] = {}
        if self.value is not None:
            out.update(
                roc_auc=self.value.roc_auc,
                precision_top=self.value.precision_top,
                lift_top=self.value.lift_top,
            )
        if self.clv_total_error is not None:
            out["clv_total_error"] = self.clv_total_error
        if self.p_alive is not None:
            table = self.p_alive
            weights = table["customers"] / table["customers"].sum()
            out["p_alive_mean"] = float((table["predicted"] * weights).sum())
            out["bought_again_share"] = float((table["actual"] * weights).sum())
        return out

    def to_json(self) -> dict[str, Any]:
        def records(t: pd.DataFrame | None) -> Any:
            return None if t is None else t.to_dict("records")

        return {
            "window": [d.isoformat() for d in self.window],
            "metrics": self.metrics(),
            "clv_by_decile": records(self.clv),
            "p_alive_by_decile": records(self.p_alive),
            "purchases_by_decile": records(self.purchases),
            "notes": self.notes,
        }


def matured_on(manifest: dict[str, Any], run_as_of: date) -> date | None:
    """The day a run's value labels are known (its as-of date plus the label's horizon);
    None for a label that is a column of the data, not a future."""
    label = manifest.get("label") or {}
    if label.get("kind") != "future_spend":
        return None
    return run_as_of + timedelta(weeks=int(label.get("horizon_weeks", 52)))


def realised_outcomes(
    project: Project,
    store: Store,
    run_id: str,
    run_as_of: date,
    manifest: dict[str, Any],
    prepared: Prepared | None = None,
) -> Outcomes:
    """The run's predictions against the project's data (module docstring); an error when
    the labels have not matured by the project's as-of date."""
    due = matured_on(manifest, run_as_of)
    if due is None:
        raise CustvalError(
            "the run's model predicts a label of the data, not a future: there is nothing to "
            "wait for; evaluate it on labelled data ('custval evaluate')"
        )
    if due > project.as_of:
        raise CustvalError(
            f"the labels of run {run_id} have not matured: its horizon ends on {due}, the "
            f"project's data on {project.as_of}",
            hint=f"Monitor it again once the data reach {due} (the project's as_of)",
        )
    prepared = prepared or prepare(project)
    preds = store.run_rows("predictions", run_id).to_pandas()
    ids = preds["customer_id"].to_numpy()
    label = manifest["label"]
    spend = _spend(prepared, ids, run_as_of, due)
    y = derive_value_label(spend, float(label.get("top_share", 0.2)))
    found = Outcomes((run_as_of, due), realised(preds["value_probability"], y))
    _clv_outcomes(found, project, prepared, store, run_id, preds, run_as_of)
    _keep(store, run_id, found)
    return found


def _spend(prepared: Prepared, ids: Any, start: date, end: date) -> np.ndarray:
    return np.asarray(future_spend(prepared, ids, start, end), dtype=np.float64)


def _clv_outcomes(
    found: Outcomes,
    project: Project,
    prepared: Prepared,
    store: Store,
    run_id: str,
    preds: pd.DataFrame,
    run_as_of: date,
) -> None:
    """CLV, P(alive) and expected purchases against the horizon's spend and purchases."""
    rows = store.query("SELECT clv_models FROM runs WHERE run_id = ?", (run_id,))
    models = json.loads(rows[0][0]) if rows and rows[0][0] else None
    if not models or preds["clv_expected"].notna().sum() == 0:
        found.notes.append("the run has no CLV: nothing to compare with spend")
        return
    days = float(models.get("horizon", 52)) * UNIT_DAYS[project.time_unit]
    end = run_as_of + timedelta(days=round(days))
    if end > project.as_of:
        found.notes.append(f"the CLV horizon ends on {end}: CLV is compared once it has passed")
        return
    have = preds["clv_expected"].notna().to_numpy()
    ids = preds["customer_id"].to_numpy()[have]
    spend, bought = _activity(prepared, ids, run_as_of, end)
    clv = preds["clv_expected"].to_numpy(dtype=np.float64)[have]
    found.clv = by_decile(clv, spend)
    found.clv_total_error = float((clv.sum() - spend.sum()) / spend.sum()) if spend.sum() else None
    found.p_alive = by_decile(preds["p_alive"].to_numpy(dtype=np.float64)[have], bought > 0)
    found.purchases = by_decile(
        preds["expected_purchases"].to_numpy(dtype=np.float64)[have], bought
    )


def _activity(prepared: Prepared, ids: Any, start: date, end: date) -> tuple[Any, Any]:
    """Each customer's net spend and distinct purchase days in [start, end)."""
    tx = prepared.tables["transactions"]
    window = tx.filter((tx.timestamp >= midnight(start)) & (tx.timestamp < midnight(end)))
    bought = window.filter(window.amount > 0)
    spend = window.group_by("customer_id").aggregate(spend=window.amount.sum()).to_pandas()
    days = (
        bought.group_by("customer_id").aggregate(days=bought.timestamp.date().nunique()).to_pandas()
    )
    index = np.asarray(ids)
    s = pd.Series(spend.spend.to_numpy(), index=spend.customer_id.to_numpy())
    d = pd.Series(days.days.to_numpy(), index=days.customer_id.to_numpy())
    return (
        s.reindex(index).fillna(0.0).to_numpy(dtype=np.float64),
        d.reindex(index).fillna(0).to_numpy(dtype=np.float64),
    )


def _keep(store: Store, run_id: str, found: Outcomes) -> None:
    """The figures into ``run_performance`` (kind ``realised``), replacing earlier ones."""
    metrics = found.metrics()
    detail = json.dumps(found.to_json(), default=float)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = pa.table(
        {
            "run_id": [run_id] * len(metrics),
            "kind": ["realised"] * len(metrics),
            "metric": list(metrics),
            "value": pa.array([float(v) for v in metrics.values()], pa.float64()),
            "detail": [detail] * len(metrics),
            "checked_at": pa.array([now] * len(metrics), pa.timestamp("us")),
        }
    )
    store.replace_rows(("run_performance", {"run_id": run_id, "kind": "realised"}, rows))


#: the chosen forecasts of earlier runs next to the actual values a later run's history holds
_FORECAST_VS_ACTUAL = """
    SELECT f.run_id, f.series, f.period, f.point, f.lo_80, f.hi_80, f.lo_95, f.hi_95, a.actual
    FROM forecasts f
    JOIN runs r ON r.run_id = f.run_id AND r.status = 'succeeded'
    JOIN forecast_series a ON a.run_id = ? AND a.series = f.series AND a.period = f.period
        AND a.measure = f.measure
    WHERE f.run_id <> ? AND f.reconciliation = 'base'
        AND f.freq = (SELECT MIN(freq) FROM forecasts WHERE run_id = ?)
    ORDER BY f.run_id, f.series, f.period
"""


def forecast_outcomes(store: Store) -> pd.DataFrame:
    """Per earlier forecast run and series: the periods whose actual value the latest forecast
    run's history holds, the WAPE, the total's bias and the intervals' coverage; kept in
    ``run_performance`` (kind ``realised``, metrics ``forecast_*`` of the total series, or the
    first when there is no total). Empty without two forecast runs."""
    latest = store.latest_run("forecast")
    if latest is None:
        return pd.DataFrame()
    rows = store.query(_FORECAST_VS_ACTUAL, (latest, latest, latest))
    names = ["run_id", "series", "period", "point", "lo_80", "hi_80", "lo_95", "hi_95", "actual"]
    frame = pd.DataFrame(rows, columns=names)
    if frame.empty:
        return frame
    found = frame.groupby(["run_id", "series"], sort=False).apply(
        _forecast_figures, include_groups=False
    )
    found = found.reset_index()
    _keep_forecasts(store, found)
    return found


def _forecast_figures(g: pd.DataFrame) -> pd.Series:
    point, actual = g["point"].astype(float), g["actual"].astype(float)
    total = float(actual.sum())
    return pd.Series(
        {
            "periods": len(g),
            "first": g["period"].min(),
            "last": g["period"].max(),
            "wape": float((point - actual).abs().sum() / total) if total else float("nan"),
            "bias": float((point.sum() - total) / total) if total else float("nan"),
            "coverage_80": float(((g["lo_80"] <= actual) & (actual <= g["hi_80"])).mean()),
            "coverage_95": float(((g["lo_95"] <= actual) & (actual <= g["hi_95"])).mean()),
        }
    )


def _keep_forecasts(store: Store, found: pd.DataFrame) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    parts = []
    for run_id, group in found.groupby("run_id", sort=False):
        row = group[group["series"] == "total"]
        row = (row if len(row) else group).iloc[0]
        metrics = {k: float(row[k]) for k in ("wape", "bias", "coverage_80", "coverage_95")}
        detail = json.dumps(group.astype({"first": str, "last": str}).to_dict("records"))
        table = pa.table(
            {
                "run_id": [run_id] * len(metrics),
                "kind": ["realised"] * len(metrics),
                "metric": [f"forecast_{k}" for k in metrics],
                "value": pa.array(list(metrics.values()), pa.float64()),
                "detail": [detail] * len(metrics),
                "checked_at": pa.array([now] * len(metrics), pa.timestamp("us")),
            }
        )
        parts.append(("run_performance", {"run_id": run_id, "kind": "realised"}, table))
    store.replace_rows(*parts)
