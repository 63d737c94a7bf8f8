"""Churn risk: the churn labels, the P(alive) baseline, and the supervised churn classifier.

Who is about to leave is a binary question about a horizon after a cutoff, so the churn model is
the value classifier (:class:`custval.models.value.ValueClassifier`: the same candidates, the
same cross-validated leaderboard and one-standard-error choice, the same reliability table and
calibration error, the same contributions and reasons) with churn as its positive class:
:class:`ChurnClassifier`. What is churn-specific is the label and the baseline.

The label
---------
* **Cancellation** (:func:`cancellation_label`), when the data record cancellations (a
  subscription's ``cancelled_at``): among the customers active at the cutoff c (started before
  c, not cancelled before c), y = 1 when the cancellation falls in [c, c + h). The interval is
  custval's as-of convention (what happens before the cutoff instant is known at it, as in the
  features and the BTYD holdout), so a subscription the features call active at c is labelled.
* **Lapse** (:func:`lapse_label`), when they do not: y = 1 when a customer makes no purchase in
  the horizon although the BTYD model expected them to. While alive a customer buys at Poisson
  rate lambda ~ Gamma(r, alpha); for a customer alive at T with x repeat purchases the rate's
  posterior is Gamma(r + x, alpha + T) (Fader, Hardie & Lee 2005, "Counting your customers the
  easy way", Marketing Science 24(2): the alive branch of the individual likelihood,
  lambda^x e^(-lambda T), is conjugate to the Gamma prior; their conditional expectation, eq. 10,
  rests on this posterior). Its mean (r + x) / (alpha + T) makes the customer's own expected
  inter-purchase time

      g_i = (alpha + T_i) / (r + x_i)              (x_i > 0)
      g_i = alpha / r                              (x_i = 0: the population's, 1 / E[lambda])

  A customer alive at rate 1 / g_i makes no purchase in a gap of length s with probability
  exp(-s / g_i), so a gap is implausible for a live customer, at the 5% level, once
  exp(-s / g_i) <= 0.05, that is s >= ln(20) g_i ~ 3.0 g_i. The label is

      lapse_i = 1  when  y_i[c, c + h) = 0  and  (T_i - t_x,i) + h > k g_i,   k = ln 20

  with (T_i - t_x,i) + h the gap since the last purchase at the end of the horizon, and k a
  parameter (:data:`LAPSE_K`). A customer who buys in the horizon has not lapsed in it; one who
  does not, but whose gap is still short for their own rhythm (a slow buyer), has not either.

Both label functions return floats: 1.0 churned, 0.0 stayed, NaN for customers who have no label
at the cutoff (not active then, or no purchase yet), which the caller leaves out.

The baseline
------------
1 - P(alive) at the cutoff from the fitted BTYD model (:func:`palive_baseline`; BG/NBD, Fader,
Hardie & Lee 2005, eq. 13), the probability that the customer has already left, is what
practitioners rank by without a supervised model. It answers "has this customer left?", not
"will they lapse in the horizon?"; the BTYD model's own answer to the second question is
:func:`lapse_probability`, the stronger purchase-history-only baseline for a lapse label.
Under BG/NBD a customer without a repeat purchase is alive for sure, so 1 - P(alive) ranks
one-time buyers lowest however long they have been quiet. :func:`compare_with_baseline` puts
the scores side by side (ROC AUC, PR AUC, lift in the top 10%) with a paired bootstrap interval
of each one's ROC AUC gain over the baseline.

The BTYD model's view of each customer may also be features of the supervised model
(:func:`btyd_churn_features`: P(alive), the expected gap, the gap over it, the chance of no
purchase in the horizon), computed from data before the cutoff, as the hybrid CLV adds them.

Example
-------
>>> bg = BetaGeo().fit(summary.frequency, summary.recency, summary.T)  # doctest: +SKIP
>>> y = lapse_label(bg, summary, purchases_after, horizon=13.0)  # doctest: +SKIP
>>> keep = ~np.isnan(y)  # doctest: +SKIP
>>> clf = ChurnClassifier(top_share=y[keep].mean()).fit(features[keep], y[keep])
... # doctest: +SKIP
>>> compare_with_baseline(y[keep], {"model": clf.oof_proba_, "1 - P(alive)":
...     palive_baseline(bg, summary[keep])}, baseline="1 - P(alive)")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError, FitError
from custval.models.btyd import BetaGeo
from custval.models.value import ValueClassifier, classification_metrics

__all__ = [
    "BTYD_CHURN_COLUMNS",
    "LAPSE_K",
    "ChurnClassifier",
    "btyd_churn_features",
    "cancellation_label",
    "churn_metrics",
    "compare_with_baseline",
    "expected_gap",
    "lapse_label",
    "lapse_probability",
    "lapse_threshold",
    "palive_baseline",
    "quiet_probability",
]

Array = npt.NDArray[np.float64]

#: the lapse threshold in expected inter-purchase times: a live customer's chance of so long a
#: gap is exp(-k) = 5%
LAPSE_K = math.log(20.0)

#: the BTYD model's view of each customer, as features a supervised churn model may add
BTYD_CHURN_COLUMNS = ("btyd_p_alive", "btyd_expected_gap", "btyd_gap_ratio", "btyd_p_quiet")

_RFT = ("frequency", "recency", "T")


# ---- labels ---------------------------------------------------------------------------------


def _times(values: Any, name: str) -> pd.Series:
    """Date-times as a timezone-naive pandas Series (missing: NaT); a clear error when the
    column cannot be read as dates."""
    try:
        s = pd.to_datetime(pd.Series(values), errors="raise", format="mixed")
    except (TypeError, ValueError) as exc:
        raise CustvalError(f"{name} must hold dates ({exc})", column=name) from None
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.reset_index(drop=True)


def _instant(value: date | datetime | str, name: str) -> pd.Timestamp:
    """A date or date-time as a naive timestamp (a date is its midnight)."""
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        raise CustvalError(f"the {name} is missing")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _horizon(horizon: timedelta | pd.Timedelta) -> pd.Timedelta:
    h = pd.Timedelta(horizon)
    if pd.isna(h) or h <= pd.Timedelta(0):
        raise CustvalError(
            f"the churn horizon must be positive, not {horizon}",
            hint="Give the length of the period after the cutoff, e.g. 13 weeks",
        )
    return h


def cancellation_label(
    cancelled_at: Any,
    cutoff: date | datetime | str,
    horizon: timedelta | pd.Timedelta,
    *,
    started_at: Any = None,
    data_end: date | datetime | str | None = None,
) -> Array:
    """1.0 when a customer active at ``cutoff`` cancels in [cutoff, cutoff + horizon), 0.0
    when they are still active at its end, NaN when they were not active at the cutoff.

    Active at the cutoff c: started before c (when ``started_at`` is given) and not cancelled
    before c. ``cancelled_at`` is missing (NaT) for customers who never
    cancelled. A date means its midnight. ``data_end`` is the last instant the data cover
    (default: the latest start or cancellation in them); a cutoff at or after it, or a horizon
    that runs past it, is an error: the label would count as "stayed" cancellations not yet
    recorded.

    Example
    -------
    >>> cancellation_label(["2024-02-10", None, "2024-01-05", "2024-06-01"], "2024-01-31",
    ...     timedelta(weeks=4), data_end="2024-12-31").tolist()
    [1.0, 0.0, nan, 0.0]
    """
    cancelled = _times(cancelled_at, "cancelled_at")
    c = _instant(cutoff, "cutoff")
    h = _horizon(horizon)
    active = ~(cancelled < c)  # NaT compares False: never cancelled is active
    known = [cancelled.max()]
    if started_at is not None:
        started = _times(started_at, "started_at")
        if started.size != cancelled.size:
            raise CustvalError(
                f"started_at has {started.size} values but cancelled_at {cancelled.size}"
            )
        active &= started < c
        known.append(started.max())
    seen = [t for t in known if not pd.isna(t)]
    end = _instant(data_end, "data end") if data_end is not None else (max(seen) if seen else None)
    if end is None:
        raise CustvalError(
            "no start or cancellation date is known: the data's end cannot be told",
            hint="Pass data_end",
        )
    if c >= end:
        raise CustvalError(
            f"the cutoff {c:%Y-%m-%d} is at or after the end of the data ({end:%Y-%m-%d}): "
            "nothing after it is known",
            hint="Choose an earlier cutoff",
        )
    if c + h > end:
        raise CustvalError(
            f"the horizon from the cutoff {c:%Y-%m-%d} ends {c + h:%Y-%m-%d}, after the data "
            f"({end:%Y-%m-%d}): cancellations after the data's end would count as staying",
            hint=f"Use a cutoff on or before {end - h:%Y-%m-%d}, or pass data_end when the "
            "data reach further than their latest date",
        )
    churned = (cancelled >= c) & (cancelled < c + h)
    y = churned.to_numpy(dtype=np.float64)
    y[~active.to_numpy(dtype=bool)] = np.nan
    return y


def _summary_arrays(summary: Any) -> tuple[Array, Array, Array, npt.NDArray[np.bool_]]:
    """frequency, recency and T as floats, and which rows have all three (a customer with no
    purchase before the cutoff has none)."""
    missing = [c for c in _RFT if c not in summary]
    if missing:
        raise CustvalError(
            f"the BTYD summary has no column {', '.join(missing)}",
            column=missing[0],
            hint="Pass the summary at the cutoff: frequency, recency and T (custval.columns)",
        )
    x, tx, t = (np.asarray(summary[c], dtype=np.float64).ravel() for c in _RFT)
    known = np.isfinite(x) & np.isfinite(tx) & np.isfinite(t)
    bad = known & ((x < 0) | (tx < 0) | (tx > t * (1 + 1e-12) + 1e-12))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CustvalError(
            f"{rows.size} customers have a negative count or time, or a recency above T",
            column="recency",
            count=int(rows.size),
            examples=[
                {"row": int(i), "frequency": x[i], "recency": tx[i], "T": t[i]} for i in rows[:5]
            ],
            hint="Pass the BTYD summary (recency is the age at the last purchase, at most T)",
        )
    return x, tx, t, known


def _rate_params(model: Any) -> tuple[float, float]:
    params = getattr(model, "params_", None)
    if params is None:
        raise CustvalError("the BTYD model is not fitted yet", hint="Fit it on the summary first")
    if "r" not in params or "alpha" not in params:
        raise CustvalError(
            f"{type(model).__name__} has no purchase rate (r, alpha)",
            hint="Use BG/NBD, MBG/NBD or Pareto/NBD",
        )
    return float(params["r"]), float(params["alpha"])


def expected_gap(model: Any, summary: Any) -> Array:
    """Each customer's expected inter-purchase time g_i in the summary's time unit:
    (alpha + T) / (r + x), the reciprocal of the posterior mean rate of a customer alive at T
    (Fader, Hardie & Lee 2005); alpha / r, the population's, for customers without a repeat
    purchase (x = 0). NaN where the summary is missing.

    ``model`` is a fitted BG/NBD, MBG/NBD or Pareto/NBD (all share the Gamma(r, alpha) rate).
    """
    r, alpha = _rate_params(model)
    x, _, t, known = _summary_arrays(summary)
    with np.errstate(invalid="ignore"):
        gap = np.where(x > 0, (alpha + t) / (r + x), alpha / r)
    return np.where(known, gap, np.nan)


def lapse_threshold(model: Any, summary: Any, k: float = LAPSE_K) -> Array:
    """The gap since the last purchase beyond which a customer has lapsed: k g_i (module
    docstring; ``k`` = ln 20 makes such a gap a 5% event for a live customer)."""
    if not (math.isfinite(k) and k > 0):
        raise CustvalError(f"the lapse multiple k must be positive, not {k}")
    return k * expected_gap(model, summary)


def _positive_horizon(horizon: float) -> float:
    h = float(horizon)
    if not (math.isfinite(h) and h > 0):
        raise CustvalError(
            f"the churn horizon must be positive, not {horizon}",
            hint="Give the horizon in the summary's time unit, e.g. 13 (weeks)",
        )
    return h


def lapse_label(
    model: Any,
    summary: Any,
    purchases_after: Any,
    horizon: float,
    *,
    k: float = LAPSE_K,
    observed_after: float | None = None,
) -> Array:
    """1.0 when a customer lapsed in the ``horizon`` after the cutoff, else 0.0; NaN for
    customers with no purchase before the cutoff (no summary).

    Lapsed: no purchase in the horizon (``purchases_after`` == 0, the purchase days in it) and
    a gap since the last purchase at the horizon's end, (T - recency) + horizon, longer than
    ``k`` expected inter-purchase times (:func:`lapse_threshold`). ``summary`` holds the BTYD
    summary at the cutoff (frequency, recency, T; :data:`custval.columns.SUMMARY_COLUMNS`) and
    ``model`` the BTYD model fitted on it; ``horizon`` is in the summary's time unit.
    ``observed_after``, when given, is how long after the cutoff the data reach (same unit):
    a cutoff at or after the data's end, or a horizon that runs past it, is an error.

    Example
    -------
    With r = 1, alpha = 10 (g = (10 + T) / (1 + x)): x = 4, T = 40 gives g = 10 and a
    threshold of 30 weeks; a last purchase 20 weeks before the cutoff and 13 quiet weeks
    after it is a 33-week gap, a lapse.
    """
    h = _positive_horizon(horizon)
    if observed_after is not None:
        if observed_after <= 0:
            raise CustvalError(
                "the cutoff is at or after the end of the data: no purchase after it is known",
                hint="Choose an earlier cutoff",
            )
        if h > observed_after:
            raise CustvalError(
                f"the horizon ({h:g}) runs past the end of the data ({observed_after:g} after "
                "the cutoff): purchases not yet made would count as lapses",
                hint="Use an earlier cutoff or a shorter horizon",
            )
    threshold = lapse_threshold(model, summary, k)
    x, tx, t, known = _summary_arrays(summary)
    after = np.asarray(purchases_after, dtype=np.float64).ravel()
    if after.size != x.size:
        raise CustvalError(
            f"purchases_after has {after.size} values but the summary {x.size} customers"
        )
    if np.any(known & ~(after >= 0)):
        raise CustvalError(
            "purchases_after must be a non-negative count for every customer in the summary",
            column="purchases_after",
        )
    lapsed = (after == 0) & ((t - tx) + h > threshold)
    return np.where(known, lapsed.astype(np.float64), np.nan)


# ---- the baseline ---------------------------------------------------------------------------


def palive_baseline(model: Any, summary: Any) -> Array:
    """1 - P(alive at T | x, t_x, T) from the fitted BTYD ``model`` (BG/NBD: Fader, Hardie &
    Lee 2005, eq. 13), the churn score without a supervised model; NaN where the summary is
    missing. Under BG/NBD a customer without a repeat purchase is alive for sure (score 0)."""
    _rate_params(model)
    x, tx, t, known = _summary_arrays(summary)
    out = np.full(x.size, np.nan)
    if known.any():
        out[known] = 1.0 - model.probability_alive(x[known], tx[known], t[known])
    return out


def quiet_probability(model: Any, summary: Any, horizon: float) -> Array:
    """P(no purchase in the next ``horizon`` | x, t_x, T) by BG/NBD (or MBG/NBD):

        P(Y(h) = 0 | x, t_x, T) = 1 - P(alive) + P(alive) ((alpha + T) / (alpha + T + h))^(r + x)

    A customer who has left buys nothing; one alive at T leaves only at a purchase, so buys
    nothing with chance E[exp(-lambda h)] under the Gamma(r + x, alpha + T) posterior of their
    rate; P(alive) is Fader, Hardie & Lee (2005), eq. 13. NaN where the summary is missing.
    (Under Pareto/NBD a customer may also leave between purchases, so the formula differs: it
    is refused.)"""
    if not isinstance(model, BetaGeo):
        raise CustvalError(
            f"the chance of no purchase is derived for BG/NBD and MBG/NBD, not "
            f"{type(model).__name__}",
            hint="Fit BetaGeo or ModifiedBetaGeo on the summary",
        )
    h = _positive_horizon(horizon)
    r, alpha = _rate_params(model)
    x, _, t, known = _summary_arrays(summary)
    gone = palive_baseline(model, summary)
    quiet = gone + (1.0 - gone) * np.exp((r + x) * (np.log(alpha + t) - np.log(alpha + t + h)))
    return np.where(known, quiet, np.nan)


def lapse_probability(model: Any, summary: Any, horizon: float, *, k: float = LAPSE_K) -> Array:
    """P(lapse in the horizon | x, t_x, T) by the BG/NBD (or MBG/NBD) model itself: the gap
    condition of :func:`lapse_label` is known at the cutoff, so

        P(lapse) = [(T - t_x) + h > k g] P(Y(h) = 0 | x, t_x, T)

    with the chance of no purchase of :func:`quiet_probability`. The best a model of the
    purchases alone can say about the lapse label; NaN where the summary is missing."""
    quiet = quiet_probability(model, summary, horizon)
    _, tx, t, _ = _summary_arrays(summary)
    due = (t - tx) + float(horizon) > lapse_threshold(model, summary, k)
    return np.where(due, quiet, np.where(np.isnan(quiet), np.nan, 0.0))


def btyd_churn_features(model: Any, summary: Any, horizon: float) -> pd.DataFrame:
    """The BTYD model's view of each customer as feature columns (:data:`BTYD_CHURN_COLUMNS`):
    P(alive), the expected inter-purchase time g_i, the gap since the last purchase over it,
    (T - recency) / g_i, and the chance of no purchase in the ``horizon``
    (:func:`quiet_probability`); NaN where the summary is missing. Computed from data before
    the cutoff only, so a supervised churn model may add them without leaking its label (as
    the hybrid CLV adds the BTYD columns)."""
    _, tx, t, known = _summary_arrays(summary)
    gap = expected_gap(model, summary)
    return pd.DataFrame(
        {
            "btyd_p_alive": 1.0 - palive_baseline(model, summary),
            "btyd_expected_gap": gap,
            "btyd_gap_ratio": np.where(known, (t - tx) / gap, np.nan),
            "btyd_p_quiet": quiet_probability(model, summary, horizon),
        },
        index=getattr(summary, "index", None),
    )


# ---- judging --------------------------------------------------------------------------------


def churn_metrics(y: Any, p: Any) -> dict[str, float]:
    """ROC AUC, PR AUC, log-loss, Brier score and the lift in the top 10% of churn scores
    ``p`` (:func:`custval.models.value.classification_metrics`)."""
    yv, pv = _labelled(y, p)
    return classification_metrics(yv, pv)


def _labelled(y: Any, p: Any) -> tuple[Array, Array]:
    yv = np.asarray(y, dtype=np.float64).ravel()
    pv = np.asarray(p, dtype=np.float64).ravel()
    if yv.size != pv.size:
        raise CustvalError(f"the label has {yv.size} values but the scores {pv.size}")
    if not np.isin(yv, (0.0, 1.0)).all():
        raise CustvalError(
            "the churn label must be 0/1 for every customer compared",
            hint="Leave out the customers without a label (NaN)",
        )
    if yv.min() == yv.max():
        raise FitError("the churn label has one class only: no score can be judged on it")
    if not np.isfinite(pv).all():
        raise CustvalError(f"{int((~np.isfinite(pv)).sum())} scores are missing or infinite")
    return yv, pv


def _ranking_metrics(y: Array, score: Array) -> dict[str, float]:
    """ROC AUC, PR AUC and top-decile lift: what a score that is no probability (a rank, a
    margin) can be judged by; the same figures as
    :func:`custval.models.value.classification_metrics`."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = max(1, round(0.1 * y.size))
    top = np.argsort(-score, kind="stable")[:k]
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "lift_top_decile": float(y[top].mean() / y.mean()),
    }


def _weighted_auc(y: Array, score: Array, weights: Array) -> Array:
    """ROC AUC under each row of ``weights`` (draws x customers; bootstrap counts), ties
    counted half: one sort of the scores serves every draw."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of equal scores
    w = weights[:, order]
    pos = y[order] == 1.0
    gp = np.add.reduceat(w * pos, starts, axis=1)
    gn = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(gn, axis=1) - gn
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gp * (below + 0.5 * gn)).sum(axis=1) / (gp.sum(axis=1) * gn.sum(axis=1))


def compare_with_baseline(
    y: Any,
    scores: Mapping[str, Any],
    baseline: str,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Churn scores side by side on the same customers: one row per score with ROC AUC, PR
    AUC and the lift in the top 10%, and its ROC AUC gain over the ``baseline`` score with a
    paired bootstrap interval (``n_boot`` resamples of the customers, the same resample for
    every score; central ``level``); the baseline's own row has no gain.

    Example
    -------
    >>> compare_with_baseline(y, {"churn model": p, "1 - P(alive)": b}, "1 - P(alive)")
    ... # doctest: +SKIP
    """
    if baseline not in scores:
        raise CustvalError(
            f"the baseline '{baseline}' is not among the scores", hint=", ".join(scores)
        )
    if not 0 < level < 1:
        raise CustvalError(f"level must lie between 0 and 1, not {level}")
    names = list(scores)
    if not names:
        raise CustvalError("there are no scores to compare")
    yv = _labelled(y, scores[names[0]])[0]
    checked = {name: _labelled(yv, scores[name])[1] for name in names}
    metrics = {name: _ranking_metrics(yv, p) for name, p in checked.items()}
    draws = _bootstrap_aucs(yv, [checked[n] for n in names], n_boot, seed)
    b = names.index(baseline)
    tail = (1 - level) / 2
    rows = []
    for j, name in enumerate(names):  # a loop over the few scores compared
        m = metrics[name]
        gain = m["roc_auc"] - metrics[baseline]["roc_auc"] if j != b else np.nan
        lower = upper = np.nan
        if j != b and draws is not None:
            lower, upper = np.quantile(draws[:, j] - draws[:, b], [tail, 1 - tail])
        rows.append(
            {
                "score": name,
                "roc_auc": m["roc_auc"],
                "pr_auc": m["pr_auc"],
                "lift_top_decile": m["lift_top_decile"],
                "roc_auc_gain": gain,
                "gain_lower": float(lower),
                "gain_upper": float(upper),
            }
        )
    return pd.DataFrame(rows)


def _bootstrap_aucs(y: Array, scores: list[Array], n_boot: int, seed: int) -> Array | None:
    """draws x scores ROC AUCs over bootstrap resamples of the customers, in blocks of draws
    so that the weight matrix stays near 16 MB whatever the number of customers."""
    if n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    n = y.size
    block = max(1, 2_000_000 // n)
    out = np.empty((n_boot, len(scores)))
    for start in range(0, n_boot, block):  # a loop over blocks of resamples
        size = min(block, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        for j, s in enumerate(scores):
            out[start : start + size, j] = _weighted_auc(y, s, w)
    return out


# ---- the classifier -------------------------------------------------------------------------


class ChurnClassifier(ValueClassifier):
    """The churn risk model: :class:`~custval.models.value.ValueClassifier` (its candidates,
    cross-validated leaderboard, one-standard-error choice, reliability table, calibration
    error, contributions and threshold) with churn as the positive class.

    ``predict_proba`` gives P(churn within the label's horizon). Under the ``"top_share"``
    threshold rule, pass the label's churn share as ``top_share`` to call as many customers
    churners as churned (as :func:`custval.flows.value.fit_table` does). ``reasons`` of
    :mod:`custval.models.explain` speak of "the chance of churn". A bundle
    (:func:`custval.store.bundles.save_bundle`) keeps it like a value model; loaded back it
    predicts the same.

    Example
    -------
    >>> clf = ChurnClassifier(folds=5).fit(features, y)  # doctest: +SKIP
    >>> clf.leaderboard_, clf.reliability_, clf.threshold_  # doctest: +SKIP
    """

    _what: ClassVar[str] = "churn classifier"

    def __init__(
        self,
        candidates: tuple[str, ...] = ("logistic", "lightgbm", "random_forest", "mlp"),
        *,
        folds: int = 5,
        threshold_rule: str = "top_share",
        top_share: float = 0.2,
        max_selection_rows: int = 100_000,
        seed: int = 0,
        threads: int = 2,
        label_name: str = "churn",
        class_names: tuple[str, str] = ("stays", "churns"),
    ) -> None:
        self.candidates = candidates
        self.folds = folds
        self.threshold_rule = threshold_rule
        self.top_share = top_share
        self.max_selection_rows = max_selection_rows
        self.seed = seed
        self.threads = threads
        self.label_name = label_name
        self.class_names = class_names

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        *,
        groups: Any = None,
        earlier: tuple[pd.DataFrame, Any] | None = None,
    ) -> Self:
        """Select, refit and calibrate-check on customers ``X`` and their churn label ``y``
        (1 churned in the horizon, 0 stayed); ``groups`` and ``earlier`` as for the value
        classifier (``earlier``: the table and label one period before, a time-based split)."""
        yv = _churn_y(y, "the churn label")
        if earlier is not None:
            earlier = (earlier[0], _churn_y(earlier[1], "the earlier period's churn label"))
        return super().fit(X, yv, groups=groups, earlier=earlier)

    def predict_proba(self, X: pd.DataFrame, source: str = "input") -> Array:
        """P(churn within the label's horizon) per row (features taken by name)."""
        return super().predict_proba(X, source)


def _churn_y(y: Any, what: str) -> Array:
    """A churn label as 0/1 floats, with churn's own words for what is wrong with it."""
    yv = np.asarray(y, dtype=np.float64).ravel()
    unlabelled = np.isnan(yv)
    if unlabelled.any():
        n = int(unlabelled.sum())
        raise CustvalError(
            f"{what} is missing for {n} customer{'s' if n != 1 else ''} (not active at the "
            "cutoff, or no purchase before it)",
            count=n,
            examples=[{"row": int(i)} for i in np.flatnonzero(unlabelled)[:5]],
            hint="Leave them out: keep the rows where the label is not NaN",
        )
    if not np.isin(yv, (0.0, 1.0)).all():
        raise CustvalError(f"{what} must be 0 (stayed) or 1 (churned)")
    churned = int(yv.sum())
    if churned == 0 or churned == yv.size:
        who = "no customer" if churned == 0 else "every customer"
        raise FitError(
            f"{what} has one class only: {who} churned in the horizon, so there is nothing "
            "to tell apart",
            hint="Use a longer horizon or an earlier cutoff",
        )
    return yv
