"""The customer-base CLV: a purchase model and Gamma-Gamma fitted on a BTYD summary, each
customer's P(alive), purchases, spend and discounted CLV, and the models as JSON parameters.

Pure maths on arrays: the flows (:mod:`custval.flows.customer_base`) bring the summary, the service
(:mod:`custval.api`) the parameters a run stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from custval.errors import CustvalError, FitError
from custval.models import btyd
from custval.models.clv import (
    clv_interval,
    discounted_expected_purchases,
    expected_purchases_interval,
)

PURCHASE_MODELS = {"bgnbd": "BetaGeo", "mbgnbd": "ModifiedBetaGeo", "pnbd": "ParetoNBD"}


def point_clv(
    purchases: Any,
    spend: Any,
    x: Any,
    tx_: Any,
    t: Any,
    m: Any,
    *,
    horizon: float,
    discount: float,
) -> tuple[Any, Any]:
    """Each customer's expected spend per purchase and discounted CLV over ``horizon``: their
    own purchases at the spend the model expects of them (the population's mean for one-time
    buyers and for repeat buyers without spend data)."""

    informative = (x > 0) & (m > 0)
    xs = np.where(informative, x, 0.0)
    ms = np.where(informative, m, 0.0)
    expected_spend = spend.conditional_expected_average_spend(xs, ms)
    purchases_ = discounted_expected_purchases(
        purchases, x, tx_, t, horizon=horizon, discount=discount
    )
    return expected_spend, expected_spend * purchases_


def clv_models_json(purchases: Any, spend: Any, horizon: float, discount: float) -> dict[str, Any]:
    """The fitted customer-base models as the store keeps them with a run (for the service)."""
    return {
        "purchases": {"model": type(purchases).__name__, "params": dict(purchases.params_)},
        "spend": {"model": type(spend).__name__, "params": dict(spend.params_)},
        "horizon": horizon,
        "discount": discount,
    }


def clv_models_from_json(saved: dict[str, Any]) -> tuple[Any, Any]:
    """The purchase and spend models of :func:`clv_models_json`, ready to predict."""
    return purchase_model(saved["purchases"]), model_from_json(saved["spend"], ("GammaGamma",))


def purchase_model(saved: dict[str, Any]) -> Any:
    """A fitted purchase model from ``{"model": class name, "params": {...}}``."""
    return model_from_json(saved, tuple(PURCHASE_MODELS.values()))


def model_from_json(saved: dict[str, Any], known: tuple[str, ...]) -> Any:
    """The model of ``{"model": class name, "params": {...}}``, one of the classes ``known``."""
    name = saved.get("model")
    if name not in known:
        raise CustvalError(f"the store names an unknown customer-base model '{name}'")
    return getattr(btyd, str(name)).from_params(saved["params"])


@dataclass
class BtydFit:
    """The customer-base models fitted on one BTYD summary and their predictions per customer
    (arrays in the summary's order)."""

    purchases: Any
    spend: Any
    columns: dict[str, Any]
    interval: dict[str, Any] | None
    spend_excluded: int


def btyd_predictions(
    x: Any,
    tx_: Any,
    t: Any,
    m: Any,
    *,
    model: str = "bgnbd",
    horizon: float = 52.0,
    discount: float = 0.0,
    level: float | None = 0.9,
    n_draws: int = 200,
    purchases_interval: bool = True,
) -> BtydFit:
    """Fit the purchase model and Gamma-Gamma on the summary (frequency ``x``, recency ``tx_``,
    age ``t``, mean repeat spend ``m``) and predict each customer's P(alive), purchases over
    ``horizon``, expected spend and discounted CLV, with central ``level`` intervals of the CLV
    (and of the purchases when ``purchases_interval``). See :func:`clv`."""

    if model not in PURCHASE_MODELS:
        raise CustvalError(
            f"unknown model '{model}'", hint="Use one of " + ", ".join(PURCHASE_MODELS)
        )
    if np.size(x) == 0:
        raise FitError("no customer has a purchase: the purchase model has nothing to learn from")
    purchases = getattr(btyd, PURCHASE_MODELS[model])().fit(x, tx_, t)
    informative = (x > 0) & (m > 0)
    if not informative.any():
        raise FitError(
            f"none of the {np.size(x):,} customers made a repeat purchase with a positive "
            "spend: the Gamma-Gamma spend model needs repeat buyers"
        )
    spend = btyd.GammaGamma().fit(x[informative], m[informative])
    xs = np.where(informative, x, 0.0)
    ms = np.where(informative, m, 0.0)
    out = {
        "frequency": x,
        "recency": tx_,
        "T": t,
        "monetary_value": m,
        "p_alive": purchases.probability_alive(x, tx_, t),
        "expected_purchases": purchases.conditional_expected_purchases(horizon, x, tx_, t),
    }
    out["expected_spend"], out["clv"] = point_clv(
        purchases, spend, x, tx_, t, m, horizon=horizon, discount=discount
    )
    interval = None
    if level is not None:
        clv_iv = clv_interval(
            purchases,
            spend,
            x,
            tx_,
            t,
            ms,
            spend_frequency=xs,
            horizon=horizon,
            discount=discount,
            level=level,
            n_draws=n_draws,
        )
        interval = {"level": level, "draws": n_draws, "method": clv_iv.method}
        if purchases_interval:
            purchases_iv = expected_purchases_interval(
                purchases, x, tx_, t, horizon=horizon, level=level, n_draws=n_draws
            )
            out["expected_purchases_lower"] = purchases_iv.lower
            out["expected_purchases_upper"] = purchases_iv.upper
            interval["expected_purchases_total"] = dict(
                zip(("estimate", "lower", "upper"), purchases_iv.total, strict=True)
            )
        out["clv_lower"] = clv_iv.lower
        out["clv_upper"] = clv_iv.upper
        interval["clv_total"] = dict(zip(("estimate", "lower", "upper"), clv_iv.total, strict=True))
    excluded = int(((x > 0) & ~informative).sum())
    return BtydFit(purchases, spend, out, interval, excluded)
