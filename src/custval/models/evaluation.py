"""How well a customer-base model predicted a holdout period."""

from __future__ import annotations

from typing import Any

import numpy as np


def holdout_errors(predicted: Any, actual: Any) -> dict[str, float]:
    """Per-customer and aggregate errors of predicted against actual holdout purchases.

    Returns ``mae`` and ``rmse`` (purchases per customer), ``predicted_total``,
    ``actual_total`` and ``aggregate_error`` ((predicted - actual) / actual, a share).

    Example
    -------
    >>> holdout_errors([1.0, 0.5], [1, 0])["mae"]
    0.25
    """
    p = np.asarray(predicted, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    diff = p - a
    total_a = float(a.sum())
    return {
        "customers": float(p.size),
        "mae": float(np.abs(diff).mean()),
        "rmse": float(np.sqrt((diff**2).mean())),
        "predicted_total": float(p.sum()),
        "actual_total": total_a,
        "aggregate_error": float(p.sum() / total_a - 1) if total_a else float("nan"),
    }
