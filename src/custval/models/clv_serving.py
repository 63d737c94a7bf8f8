"""The machine-learned CLV a scoring run chose, as the store keeps it and the service uses it.

A scoring run with ``[clv] method`` other than ``btyd`` (:func:`custval.flows.scoring.score`) keeps
the chosen model with the run: the spend model's file (LightGBM text or skops) in the store's
``run_files`` and, in the run's ``clv_models`` JSON under ``spend_model``, its description
(:meth:`custval.models.clv_ml.SpendRegressor.dumps`) and how its spend over the training window
becomes the CLV over the horizon (:func:`serving_spec`). :class:`ServedClv` turns a customer's
features into the same CLV and interval as the scoring run gave, so ``POST /v1/predict``
answers what ``custval score`` stored:

1. for the hybrid, the BTYD model's P(alive), expected purchases and expected spend over the
   window, from the BG/NBD and Gamma-Gamma parameters the run fitted at its date;
2. the spend model's expected spend over the window, and its conformal interval;
3. times each customer's factor from the window to the horizon (the BG/NBD curve of expected
   purchases, :func:`carry_factor`; 1 when the window is the horizon) and the discounting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.columns import HYBRID_COLUMNS, SUMMARY_COLUMNS
from custval.errors import CustvalError
from custval.models.btyd_clv import clv_models_from_json, point_clv, purchase_model
from custval.models.clv_ml import SpendRegressor

__all__ = [
    "FILE_NAME",
    "ServedClv",
    "carry_factor",
    "hybrid_columns",
    "serving_spec",
]

Array = npt.NDArray[np.float64]

#: the spend model's file among the run's files
FILE_NAME = "clv_spend_model"


def carry_factor(
    purchases: Any, x: Array, tx: Array, t: Array, *, window: float, horizon: float, scale: float
) -> Array:
    """Each customer's E[X(horizon)] / E[X(window)] by the fitted purchase model (time units),
    within [1, ``scale``]: how much of the spend over the window to expect over the horizon.
    ``scale`` (horizon / window, the window's rate carried on) for customers without a
    BTYD summary (NaN) and where the ratio is not finite."""
    out = np.full(x.shape, scale)
    known = np.isfinite(x) & np.isfinite(tx) & np.isfinite(t)
    if known.any():
        with np.errstate(all="ignore"):
            # P(alive) multiplies both and cancels: the ratio of the purchases if alive stays
            # defined where P(alive) underflows to 0 (a heavy buyer long silent)
            longer, shorter = (
                purchases._purchases_if_alive(w, x[known], t[known]) for w in (horizon, window)
            )
            ratio = longer / shorter
        # E[X(t)] is concave in t, so the ratio lies in [1, scale]; rounding aside
        out[known] = np.where(np.isfinite(ratio), np.clip(ratio, 1.0, scale), scale)
    return out


def hybrid_columns(purchases: Any, spend: Any, frame: pd.DataFrame, window: float) -> pd.DataFrame:
    """``frame`` with the hybrid's columns: the BTYD model's expected spend, P(alive) and
    expected purchases over ``window`` time units, from the summary columns of ``frame``
    (missing for a customer without one, or where the model's terms overflow)."""
    x, tx, t, m = (
        pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in SUMMARY_COLUMNS
    )
    known = np.isfinite(x) & np.isfinite(tx) & np.isfinite(t)
    cols = {c: np.full(len(frame), np.nan) for c in HYBRID_COLUMNS}
    if known.any():
        xs, txs, ts = x[known], tx[known], t[known]
        with np.errstate(all="ignore"):
            cols["btyd_p_alive"][known] = purchases.probability_alive(xs, txs, ts)
            cols["btyd_purchases"][known] = purchases.conditional_expected_purchases(
                window, xs, txs, ts
            )
            ms = np.nan_to_num(m[known], nan=0.0)
            cols["btyd_spend"][known] = point_clv(
                purchases, spend, xs, txs, ts, ms, horizon=window, discount=0.0
            )[1]
    out = frame.copy()
    for name, values in cols.items():
        out[name] = np.where(np.isfinite(values), values, np.nan)
    return out


def serving_spec(
    *,
    method: str,
    window: float,
    horizon: float,
    scale: float,
    discount_share: float,
    carry: dict[str, Any] | None,
    btyd: dict[str, Any] | None,
) -> dict[str, Any]:
    """How the spend over the window becomes the CLV (JSON): ``window`` and ``horizon`` in
    time units, ``scale`` (their ratio), ``discount_share`` (what spend spread evenly over the
    horizon is worth today), ``carry`` (the purchase model of :func:`carry_factor`, or None:
    the window's rate), ``btyd`` (the hybrid's BTYD models, :func:`custval.models.
    btyd_clv.clv_models_json`, or None)."""
    return {
        "method": method,
        "window": window,
        "horizon": horizon,
        "scale": scale,
        "discount_share": discount_share,
        "carry": carry,
        "btyd": btyd,
    }


@dataclass
class ServedClv:
    """The chosen machine-learned CLV, ready to predict (see the module docstring)."""

    model: Any  # SpendRegressor
    spec: dict[str, Any]
    carry: Any  # the purchase model of carry_factor, or None
    btyd: tuple[Any, Any] | None  # the hybrid's purchase and spend models

    @classmethod
    def load(cls, saved: dict[str, Any], payload: bytes) -> ServedClv:
        """From a run's ``clv_models["spend_model"]`` and its file."""
        try:
            spec = saved["serving"]
            model = SpendRegressor.loads(saved["model"], payload)
            carry = purchase_model(spec["carry"]) if spec.get("carry") else None
            # None when the run's BTYD model could not be fitted: the hybrid then learnt
            # without its columns, and predicts without them
            btyd = clv_models_from_json(spec["btyd"]) if spec.get("btyd") else None
        except (KeyError, TypeError, ValueError) as exc:
            raise CustvalError(f"the stored CLV model is incomplete ({exc})") from None
        return cls(model, spec, carry, btyd)

    @property
    def columns(self) -> list[str]:
        """The features a customer needs: the model's, and for the hybrid the BTYD summary
        its BTYD columns are computed from here (without it the CLV would not be the run's)."""
        needed = [c for c in self.model.schema_.columns if c not in HYBRID_COLUMNS]
        if self.spec["method"] == "hybrid" and self.btyd is not None:
            needed += [c for c in SUMMARY_COLUMNS if c not in needed]
        return needed

    def predict(self, frame: pd.DataFrame) -> tuple[Array, Array, Array]:
        """(CLV, lower, upper) over the horizon for each row of ``frame`` (the features)."""
        spec = self.spec
        if spec["method"] == "hybrid":
            if self.btyd is not None:
                frame = hybrid_columns(*self.btyd, frame, spec["window"])
            else:
                frame = frame.assign(**dict.fromkeys(HYBRID_COLUMNS, np.nan))
        window_spend = self.model.predict(frame)
        lower, upper = self.model.interval(frame, window_spend)
        scale = float(spec["scale"])
        if self.carry is not None and all(c in frame.columns for c in SUMMARY_COLUMNS[:3]):
            x, tx, t = (
                pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
                for c in SUMMARY_COLUMNS[:3]
            )
            factor = carry_factor(
                self.carry, x, tx, t, window=spec["window"], horizon=spec["horizon"], scale=scale
            )
        else:
            factor = np.full(len(frame), scale)
        factor = factor * float(spec["discount_share"])
        return window_spend * factor, lower * factor, upper * factor
