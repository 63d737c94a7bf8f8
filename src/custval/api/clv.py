"""CLV at request time: the CLV of the customers of a prediction request, by the method of the
store's latest scoring run, so that the service gives the CLV ``custval score`` stored.

The run's models are read by :class:`custval.api.state.StoreState`; here they are applied to a
request's customers, whose features must then include what those models read (the BTYD summary,
or the machine-learned model's features). A summary that cannot be one is a 422.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from custval.api.http import customer_error
from custval.columns import SUMMARY_COLUMNS
from custval.models.btyd_clv import point_clv

__all__ = ["add_clv", "check_summary", "clv_inputs"]

log = logging.getLogger("custval.api")

#: the runs whose CLV model was said to need features the requests lack (said once each)
_SAID_MISSING: set[Any] = set()


def add_clv(
    predictions: list[dict[str, Any]], customers: list[dict[str, Any]], saved: dict[str, Any]
) -> None:
    """CLV over the stored horizon by the method of the latest scoring run: its
    machine-learned model, for customers with that model's features; else the customer-base
    models, for customers whose features include the BTYD summary (null for those who never
    bought)."""

    if not customers:
        return
    if saved.get("spend_model") is not None:  # the run's CLV is machine-learned
        served = saved.get("served")
        if served is None:  # it could not be loaded (logged): no CLV, not another one
            return
        missing = [c for c in served.columns if c not in customers[0]]
        if missing and saved.get("run_id") not in _SAID_MISSING:
            _SAID_MISSING.add(saved.get("run_id"))
            log.warning(
                "no CLV: the run's CLV model needs features the requests do not have: %s",
                ", ".join(missing[:10]),
            )
        if not missing:
            check_summary(customers)
            clv, _, _ = served.predict(pd.DataFrame(customers))
            for row, value in zip(predictions, clv, strict=True):
                row["clv"] = float(value)
        # without the model's features (a value model trained on others) no CLV is given:
        # the BTYD one would not be the CLV the run stored
        return
    if saved.get("fitted") is None or any(c not in customers[0] for c in SUMMARY_COLUMNS):
        return
    x, tx, t, m, buyers = check_summary(customers)
    if not buyers.any():
        return
    purchases, spend = saved["fitted"]
    m = np.nan_to_num(m, nan=0.0)
    _, clv = point_clv(
        purchases,
        spend,
        x[buyers],
        tx[buyers],
        t[buyers],
        m[buyers],
        horizon=float(saved["horizon"]),
        discount=float(saved["discount"]),
    )
    for i, value in zip(np.flatnonzero(buyers), clv, strict=True):
        predictions[i]["clv"] = float(value)


def check_summary(customers: list[dict[str, Any]]) -> tuple[Any, Any, Any, Any, Any]:
    """The customers' BTYD summary (x, recency, T, monetary value, who bought), refused with
    a 422 when it cannot be one; all missing when the features do not include it."""

    if any(c not in customers[0] for c in SUMMARY_COLUMNS):
        nothing = np.full(len(customers), np.nan)
        return nothing, nothing, nothing, nothing, np.zeros(len(customers), dtype=bool)
    x, tx, t, m = (
        np.array([np.nan if r[c] is None else r[c] for r in customers], dtype=np.float64)
        for c in SUMMARY_COLUMNS
    )
    buyers = ~np.isnan(t) & ~np.isnan(x) & ~np.isnan(tx)
    # a BTYD summary the models can read: whole repeat counts, 0 <= recency <= T
    with np.errstate(invalid="ignore"):
        bad = buyers & (
            (x < 0)
            | (x != np.round(x))
            | (tx < 0)
            | (t < 0)
            | (tx > t * (1 + 1e-12) + 1e-12)
            | (m < 0)
        )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise customer_error(
            i,
            "recency",
            "not a BTYD summary",
            "value_error",
            f"customers[{i}]: frequency, recency, T and monetary_value are not a customer "
            "summary (frequency a whole number >= 0, 0 <= recency <= T, monetary_value >= 0)",
        )
    return x, tx, t, m, buyers


def clv_inputs(saved: dict[str, Any] | None) -> list[str] | None:
    """The features the store's CLV model computes a customer's CLV from (the BTYD summary, or
    the machine-learned model's columns); None when the store has no usable CLV model."""
    if saved is None:
        return None
    if saved.get("spend_model") is not None:
        served = saved.get("served")
        return None if served is None else list(served.columns)
    return None if saved.get("fitted") is None else list(SUMMARY_COLUMNS)
