"""A scoring run's summaries: what the dashboard draws, computed once when the run is written.

:func:`run_summaries` turns the run's columns (value probability and class, CLV, P(alive),
segment) into a few small JSON documents kept in the store's ``run_summaries`` with the run
(:mod:`custval.store.dashboard`): counts and sums by value class and by segment, histograms of
CLV and of the value probability, headline figures and, when the run fitted a BTYD model, its
tracking table (actual against predicted cumulative repeat purchases over the customers'
history, then ahead). Vectorised: a million customers cost well under a second, the tracking
table aside (one evaluation per period and distinct first-purchase day).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.columns import SUMMARY_COLUMNS
from custval.config import Project
from custval.flows.customer_base import clv_settings, tracking_rows
from custval.flows.preparation import Prepared
from custval.models.btyd_clv import purchase_model

__all__ = ["SUMMARY_NAMES", "clv_edges", "run_summaries", "summary_table"]

SUMMARY_NAMES = ("totals", "classes", "segments", "clv_histogram", "probability", "tracking")
#: bins of the value probability
PROBABILITY_BINS = 20


def run_summaries(
    preds: dict[str, Any],
    project: Project | None = None,
    prepared: Prepared | None = None,
    clv_models: dict[str, Any] | None = None,
    features: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The run's summaries by name (plain JSON values) from its prediction columns; with the
    project, its prepared sources and the fitted CLV models, the tracking table (faster when
    the ``features`` hold the BTYD summary)."""
    frame = pd.DataFrame({k: v for k, v in preds.items() if np.ndim(v) == 1})
    frame["value_class"] = np.where(frame["value_class"].to_numpy() == 1, "high", "low")
    out: dict[str, Any] = {
        "totals": _totals(frame),
        "classes": _by(frame, "value_class"),
        "probability": _histogram(
            frame["value_probability"].to_numpy(dtype=float),
            np.linspace(0, 1, PROBABILITY_BINS + 1),
        ),
    }
    if "segment" in frame and frame["segment"].astype(str).str.len().gt(0).any():
        out["segments"] = _by(frame, "segment")
    if "clv_expected" in frame:
        clv = frame["clv_expected"].to_numpy(dtype=float)
        out["clv_histogram"] = _histogram(clv, clv_edges(clv))
    if project is not None and prepared is not None and clv_models and "purchases" in clv_models:
        out["tracking"] = _tracking(project, prepared, clv_models, _summary(features))
    return out


def summary_table(summaries: dict[str, Any]) -> pa.Table:
    """The summaries as the store's rows (name, payload as JSON text)."""
    names = list(summaries)
    payloads = [json.dumps(summaries[n], allow_nan=False) for n in names]
    return pa.table({"name": pa.array(names, pa.string()), "payload": pa.array(payloads)})


def _number(value: Any) -> float | None:
    """A JSON number: NaN and infinities (no CLV) become null."""
    v = float(value)
    return v if math.isfinite(v) else None


def _totals(frame: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {
        "customers": len(frame),
        "high": int((frame["value_class"] == "high").sum()),
        "probability_mean": _number(frame["value_probability"].mean()),
    }
    if "clv_expected" in frame:
        clv = frame["clv_expected"].dropna()
        quantiles = clv.quantile([0.5, 0.9, 0.99]) if len(clv) else pd.Series([np.nan] * 3)
        out |= {
            "with_clv": len(clv),
            "clv_total": _number(clv.sum()),
            "clv_mean": _number(clv.mean()) if len(clv) else None,
            "clv_median": _number(quantiles.iloc[0]),
            "clv_p90": _number(quantiles.iloc[1]),
            "clv_p99": _number(quantiles.iloc[2]),
        }
    if "p_alive" in frame:
        out["p_alive_mean"] = (
            _number(frame["p_alive"].mean()) if frame["p_alive"].notna().any() else None
        )
    return out


def _by(frame: pd.DataFrame, column: str) -> list[dict[str, Any]]:
    """Customers, high-value customers and CLV per value of ``column``."""
    agg: dict[str, Any] = {
        "customers": ("is_high", "size"),
        "high": ("is_high", "sum"),
        "probability_mean": ("value_probability", "mean"),
    }
    if "clv_expected" in frame:
        agg |= {"clv_total": ("clv_expected", "sum"), "clv_mean": ("clv_expected", "mean")}
    keys = frame[column].astype(str).rename(column)
    grouped = frame.assign(is_high=frame["value_class"] == "high").groupby(keys).agg(**agg)
    grouped = grouped.reset_index()
    return [
        {k: (v if isinstance(v, str) else _number(v)) for k, v in row.items()}
        for row in grouped.to_dict("records")
    ]


def clv_edges(clv: np.ndarray) -> np.ndarray:
    """Bin edges a person reads at once for a skewed amount: 0, then 1, 2, 5, 10, 20, 50, ...
    up to the first edge above the largest CLV (a few dozen bins for any currency)."""
    top = np.nanmax(clv) if np.isfinite(clv).any() else 1.0
    top = max(float(top), 1.0)
    steps = [m * 10.0**k for k in range(int(math.log10(top)) + 2) for m in (1, 2, 5)]
    edges = [0.0] + [s for s in steps if s < top]
    edges.append(min(s for s in steps if s >= top))
    return np.asarray(edges)


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[dict[str, Any]]:
    finite = values[np.isfinite(values)]
    counts, _ = np.histogram(np.clip(finite, edges[0], edges[-1]), bins=edges)
    return [
        {"start": float(a), "end": float(b), "customers": int(c)}
        for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def _summary(features: pd.DataFrame | None) -> tuple[np.ndarray, ...] | None:
    """The buyers' (frequency, recency, T) from the feature table, when it has them."""
    if features is None or not all(c in features for c in SUMMARY_COLUMNS[:3]):
        return None
    buyers = features["T"].notna().to_numpy()
    return tuple(
        features[c].to_numpy(dtype=np.float64, na_value=np.nan)[buyers] for c in SUMMARY_COLUMNS[:3]
    )


def _tracking(
    project: Project,
    prepared: Prepared,
    clv_models: dict[str, Any],
    summary: tuple[np.ndarray, ...] | None = None,
) -> dict[str, Any]:
    """The fitted purchase model's tracking table over the customers' history to the as-of
    date, then the horizon ahead (:func:`custval.flows.customer_base.tracking_rows`)."""
    horizon, _ = clv_settings(project)
    rows = tracking_rows(
        prepared.tables["transactions"],
        purchase_model(clv_models["purchases"]),
        (project.as_of, project.as_of),
        project.time_unit,
        horizon,
        prepared.one_row_per_order,
        summary,
    )
    keep = [
        "period_end",
        "period",
        "actual",
        "predicted",
        "cumulative_actual",
        "cumulative_predicted",
    ]
    records = rows[keep].to_dict("records")
    return {
        "unit": project.time_unit.removesuffix("s"),
        "model": clv_models["purchases"].get("model"),
        "rows": [
            {k: v if isinstance(v, str) else _number(v) for k, v in r.items()} for r in records
        ],
    }
