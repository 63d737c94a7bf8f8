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
    purchase_predictions,
)
from custval.models.evaluation import compare_models

PURCHASE_MODELS = {"bgnbd": "BetaGeo", "mbgnbd": "ModifiedBetaGeo", "pnbd": "ParetoNBD"}
#: what ``model`` may be: a purchase model, or ``auto`` to let :func:`choose_purchase_model` pick
PURCHASE_MODEL_CHOICES = ("auto", *PURCHASE_MODELS)
#: the purchase models' names as people write them
MODEL_LABELS = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}


@dataclass
class PurchaseChoice:
    """The purchase model used, fitted, and why: ``rule`` is ``given`` (asked for by name),
    ``holdout_mae`` (the lowest holdout MAE of repeat purchases per customer) or ``aic`` (the
    lowest AIC, no holdout); ``scores`` holds every candidate's figure by that rule, best first,
    and ``comparison`` the full table of :func:`custval.models.evaluation.compare_models`."""

    name: str
    purchases: Any
    rule: str
    scores: dict[str, float]
    comparison: Any = None

    @property
    def label(self) -> str:
        return MODEL_LABELS[self.name]

    def reason(self) -> str:
        """Why this model, in words: "lowest AIC of 3: MBG/NBD 190,681.9, ..." """
        if self.rule == "given":
            return "asked for"
        figures = ", ".join(
            f"{MODEL_LABELS[k]} {v:{_FORMAT[self.rule]}}" for k, v in self.scores.items()
        )
        if self.rule == "aic":
            return f"lowest AIC of {len(self.scores)}: {figures}"
        return (
            f"lowest holdout MAE of {len(self.scores)}, in repeat purchases per customer: {figures}"
        )

    def summary(self) -> dict[str, Any]:
        """What the JSON summaries and the store keep of the choice."""
        return {
            "model": self.name,
            "label": self.label,
            "rule": self.rule,
            "scores": dict(self.scores),
            "reason": self.reason(),
        }


_FORMAT = {"aic": ",.1f", "holdout_mae": ".4f"}


def choose_purchase_model(
    x: Any,
    tx_: Any,
    t: Any,
    *,
    model: str = "auto",
    holdout_frequency: Any = None,
    holdout_duration: Any = None,
) -> PurchaseChoice:
    """The one rule for which purchase model custval uses (``custval clv``, ``custval score``,
    the demo, the leaderboard): ``model`` when it names one; with ``auto``, BG/NBD, MBG/NBD and
    Pareto/NBD are all fitted and the one with the lowest holdout MAE (repeat purchases per
    customer, :func:`custval.models.evaluation.holdout_errors`) wins when holdout purchases
    are given, else the one with the lowest AIC (all three have four parameters, so that is
    the highest likelihood). A model that cannot be fitted drops out; when none can, the
    first one's error is raised."""
    if model not in PURCHASE_MODEL_CHOICES:
        raise CustvalError(
            f"unknown model '{model}'", hint="Use one of " + ", ".join(PURCHASE_MODEL_CHOICES)
        )
    if model != "auto":
        purchases = getattr(btyd, PURCHASE_MODELS[model])().fit(x, tx_, t)
        return PurchaseChoice(model, purchases, "given", {})
    fitted = {name: getattr(btyd, cls)() for name, cls in PURCHASE_MODELS.items()}
    table = compare_models(
        x,
        tx_,
        t,
        holdout_frequency=holdout_frequency,
        holdout_duration=holdout_duration,
        models=fitted,
    )
    rule = "aic" if holdout_frequency is None else "holdout_mae"
    ok = table[table["error"].isna()].sort_values([rule, "model"], kind="stable")
    if ok.empty:
        raise FitError(str(table["error"].iloc[0]))
    scores = dict(zip(ok["model"], ok[rule].astype(float), strict=True))
    best = str(ok["model"].iloc[0])
    return PurchaseChoice(best, fitted[best], rule, scores, table)


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
    discounted: Any = None,
) -> tuple[Any, Any]:
    """Each customer's expected spend per purchase and discounted CLV over ``horizon``: their
    own purchases at the spend the model expects of them (the population's mean for one-time
    buyers and for repeat buyers without spend data). ``discounted``: the discounted expected
    purchases when already computed (:func:`custval.models.clv.purchase_predictions`)."""

    informative = (x > 0) & (m > 0)
    xs = np.where(informative, x, 0.0)
    ms = np.where(informative, m, 0.0)
    expected_spend = spend.conditional_expected_average_spend(xs, ms)
    purchases_ = discounted
    if purchases_ is None:
        purchases_ = discounted_expected_purchases(
            purchases, x, tx_, t, horizon=horizon, discount=discount
        )
    return expected_spend, expected_spend * purchases_


def clv_models_json(
    purchases: Any,
    spend: Any,
    horizon: float,
    discount: float,
    choice: PurchaseChoice | None = None,
) -> dict[str, Any]:
    """The fitted customer-base models as the store keeps them with a run (for the service),
    with why the purchase model was chosen when ``choice`` is given."""
    found: dict[str, Any] = {"model": type(purchases).__name__, "params": dict(purchases.params_)}
    if choice is not None:
        found["choice"] = choice.summary()
    return {
        "purchases": found,
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
    choice: PurchaseChoice | None = None


def btyd_predictions(
    x: Any,
    tx_: Any,
    t: Any,
    m: Any,
    *,
    model: str = "auto",
    horizon: float = 52.0,
    discount: float = 0.0,
    level: float | None = 0.9,
    n_draws: int = 200,
    purchases_interval: bool = True,
    holdout_frequency: Any = None,
    holdout_duration: Any = None,
) -> BtydFit:
    """Fit the purchase model and Gamma-Gamma on the summary (frequency ``x``, recency ``tx_``,
    age ``t``, mean repeat spend ``m``) and predict each customer's P(alive), purchases over
    ``horizon``, expected spend and discounted CLV, with central ``level`` intervals of the CLV
    (and of the purchases when ``purchases_interval``). ``model`` is a purchase model or
    ``auto`` (:func:`choose_purchase_model`, judged on the holdout purchases when given).
    See :func:`clv`."""

    holdout = {"holdout_frequency": holdout_frequency, "holdout_duration": holdout_duration}
    choice, spend = fit_btyd(x, tx_, t, m, model=model, **holdout)
    out, interval = btyd_outputs(
        choice.purchases,
        spend,
        x,
        tx_,
        t,
        m,
        horizon=horizon,
        discount=discount,
        level=level,
        n_draws=n_draws,
        purchases_interval=purchases_interval,
    )
    # repeat buyers without a positive spend: the spend model cannot learn from them
    excluded = int(((x > 0) & ~(m > 0)).sum())
    return BtydFit(choice.purchases, spend, out, interval, excluded, choice)


def fit_btyd(
    x: Any,
    tx_: Any,
    t: Any,
    m: Any,
    *,
    model: str = "auto",
    holdout_frequency: Any = None,
    holdout_duration: Any = None,
) -> tuple[PurchaseChoice, Any]:
    """The purchase model (:func:`choose_purchase_model`) and Gamma-Gamma, fitted on the
    summary; Gamma-Gamma on the repeat buyers with a positive mean spend."""
    if np.size(x) == 0:
        raise FitError("no customer has a purchase: the purchase model has nothing to learn from")
    holdout = {"holdout_frequency": holdout_frequency, "holdout_duration": holdout_duration}
    choice = choose_purchase_model(x, tx_, t, model=model, **holdout)  # checks the name too
    informative = (x > 0) & (m > 0)
    if not informative.any():
        raise FitError(
            f"none of the {np.size(x):,} customers made a repeat purchase with a positive "
            "spend: the Gamma-Gamma spend model needs repeat buyers"
        )
    return choice, btyd.GammaGamma().fit(x[informative], m[informative])


def btyd_outputs(
    purchases: Any,
    spend: Any,
    x: Any,
    tx_: Any,
    t: Any,
    m: Any,
    *,
    horizon: float,
    discount: float = 0.0,
    level: float | None = 0.9,
    n_draws: int = 200,
    purchases_interval: bool = True,
    method: str = "auto",
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Each customer's P(alive), expected purchases, expected spend and CLV by the fitted
    models, with the CLV's central ``level`` interval from ``n_draws`` parameter draws
    (``method``: :func:`custval.models.clv.clv_interval`), and what the interval was.

    Customer by customer: a customer's outputs depend on their own summary and the models
    only (the draws are seeded), so any split of the customers gives the same values."""
    informative = (x > 0) & (m > 0)
    xs = np.where(informative, x, 0.0)
    ms = np.where(informative, m, 0.0)
    out = {
        "frequency": x,
        "recency": tx_,
        "T": t,
        "monetary_value": m,
    }
    out["p_alive"], out["expected_purchases"], discounted = purchase_predictions(
        purchases, x, tx_, t, horizon=horizon, discount=discount
    )
    out["expected_spend"], out["clv"] = point_clv(
        purchases, spend, x, tx_, t, m, horizon=horizon, discount=discount, discounted=discounted
    )
    if level is None:
        return out, None
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
        method=method,
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
    return out, interval
