"""A playbook per segment and per customer: which offer, which channel, when, and whether to spend
on retention, each with the rule and the numbers behind it.

Every recommendation is computed from predictions custval has already made and stored:

- **offer**: the categories with the highest mean propensity in the segment (and their lift over
  the whole base), and the products most often among the segment's next best offers;
- **channel**: the channels with the largest mean share of the segment's orders (behaviour, not
  a declared preference);
- **timing**: the expected wait to the next purchase of the segment's active customers, from the
  customer-base model (:func:`next_purchase_wait`);
- **retention**: the expected incremental profit of contacting the segment's targeted customers
  (uplift × value − cost, from an experiment), or, without an experiment, the CLV × P(churn)
  ranking, labelled as the heuristic it is.

The functions take pandas tables and return pandas tables; nothing here reads a file or a store.

Example
-------
>>> rows = segment_playbooks(customers, propensity=prop, offers=offers)  # doctest: +SKIP
>>> rows[["segment", "aspect", "recommendation"]]  # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError

__all__ = [
    "ASPECTS",
    "CHANNEL_PREFIX",
    "customer_playbooks",
    "next_purchase_wait",
    "segment_playbooks",
]

Array = npt.NDArray[np.float64]
ASPECTS = ("offer", "channel", "timing", "retention")
#: the feature table's columns of each channel's share of a customer's orders
CHANNEL_PREFIX = "share_orders_"
ACTIVE = 0.5  # P(alive) from which a customer counts as active for the segment's timing


def next_purchase_wait(
    r: float, alpha: float, frequency: Any, T: Any, quantile: float = 0.5
) -> Array:
    """The ``quantile`` of the wait to a customer's next purchase, if they are still active, in
    the time unit of ``alpha`` and ``T``.

    In the BG/NBD, MBG/NBD and Pareto/NBD alike, purchases of an active customer are Poisson
    with rate λ ~ Gamma(r, α); after x repeat purchases in (0, T] and alive at T, the posterior
    of λ is Gamma(r + x, α + T) (Fader, Hardie & Lee 2005, "Counting your customers the easy
    way", section 2, whose likelihood λ^x e^(−λT) is conjugate to the gamma). The wait W to the
    next purchase, λ integrated out, is Lomax:

        P(W > t) = ((α + T) / (α + T + t))^(r + x),

    so its q-quantile is (α + T) ((1 − q)^(−1 / (r + x)) − 1). The median is used rather than
    the mean, which is infinite when r + x ≤ 1. Whether the customer is still active is the
    model's P(alive), reported beside it, not folded in (a lost customer has no next purchase).
    """
    if not 0.0 < quantile < 1.0:
        raise CustvalError(f"the quantile of the wait must be between 0 and 1, not {quantile}")
    if r <= 0 or alpha <= 0:
        raise CustvalError(f"r and alpha must be positive, not r={r}, alpha={alpha}")
    shape = r + np.asarray(frequency, dtype=np.float64)
    scale = alpha + np.asarray(T, dtype=np.float64)
    return scale * np.expm1(-np.log1p(-quantile) / shape)


def _channels(customers: pd.DataFrame) -> list[str]:
    return [c for c in customers.columns if c.startswith(CHANNEL_PREFIX)]


def _share_text(shares: pd.Series, top: int = 2) -> tuple[str, dict[str, float]]:
    best = shares.sort_values(ascending=False).head(top)
    names = {str(k).removeprefix(CHANNEL_PREFIX): round(float(v), 4) for k, v in best.items()}
    return ", ".join(f"{k} ({v:.0%})" for k, v in names.items()), names


def _offer_row(
    segment: str,
    members: pd.Index,
    propensity: pd.DataFrame | None,
    offers: pd.DataFrame | None,
    base_mean: pd.Series | None,
) -> tuple[str, str, dict[str, Any]]:
    """(recommendation, rule, numbers) of a segment's offer."""
    numbers: dict[str, Any] = {}
    parts: list[str] = []
    if propensity is not None and base_mean is not None:
        mean = propensity.loc[propensity.index.intersection(members)].mean()
        top = mean.sort_values(ascending=False).head(3)
        numbers["categories"] = {
            str(c): {"mean_probability": round(float(p), 4), "lift": round(float(p / b), 2)}
            for c, p, b in zip(top.index, top, base_mean[top.index], strict=True)
            if b > 0
        }
        parts.append(
            ", ".join(f"{c} ({v['lift']:.1f}x the base)" for c, v in numbers["categories"].items())
        )
    if offers is not None:
        mine = offers[offers["customer_id"].isin(members) & (offers["rank"] <= 3)]
        counts = mine.groupby("label").size().sort_values(ascending=False).head(3)
        share = counts / max(len(members), 1)
        numbers["products"] = {str(k): round(float(v), 4) for k, v in share.items()}
        if len(counts):
            parts.append(
                "products: " + ", ".join(f"{k} ({v:.0%})" for k, v in numbers["products"].items())
            )
    rule = (
        "the categories with the highest mean propensity in the segment (lift: over the whole "
        "base); the products most often among its customers' top 3 next best offers (share of "
        "the segment)"
    )
    text = "; ".join(parts) if parts else "no propensity or offers in this run"
    return text, rule, numbers


def _timing_row(group: pd.DataFrame) -> tuple[str, str, dict[str, Any]]:
    active = group[group["p_alive"] >= ACTIVE]["next_purchase_days"].dropna()
    rule = (
        f"the median expected wait to the next purchase of the segment's active customers "
        f"(P(alive) >= {ACTIVE}), from the customer-base model"
    )
    if active.empty:
        return "no active buyers: win back rather than time an offer", rule, {"active": 0}
    q25, q50, q75 = (float(active.quantile(q)) for q in (0.25, 0.5, 0.75))
    numbers = {
        "active": len(active),
        "median_days": round(q50, 1),
        "quartiles_days": [round(q25, 1), round(q75, 1)],
    }
    return (
        f"contact within {q50:.0f} days (half of the active wait {q25:.0f}-{q75:.0f})",
        rule,
        numbers,
    )


def _retention_row(group: pd.DataFrame) -> tuple[str, str, dict[str, Any]]:
    if "contact" not in group or group["contact"].isna().all():
        return "no targeting list in this run", "none", {}
    method = str(group["method"].dropna().iloc[0]) if group["method"].notna().any() else ""
    chosen = group[group["contact"] == 1]
    profit = float(chosen["expected_profit"].sum())
    numbers = {
        "method": method,
        "contacted": len(chosen),
        "share": round(len(chosen) / max(len(group), 1), 4),
        "expected_profit": round(profit, 2),
    }
    if chosen.empty:
        rule = "contact when the expected profit (uplift x value, or CLV x P(churn)) - cost > 0"
        text = "no contact: no customer here is worth the cost within the budget"
    elif method == "uplift":
        rule = "contact when uplift x value - cost > 0, highest first, within the budget"
        text = f"contact {len(chosen):,} ({numbers['share']:.0%}): incremental profit {profit:,.0f}"
    else:
        rule = (
            "heuristic, no experiment: CLV x P(churn) - cost, highest first, within the budget; "
            "the offer's effect is unknown"
        )
        text = f"contact {len(chosen):,} ({numbers['share']:.0%}) by CLV x P(churn) (heuristic)"
    return text, rule, numbers


def segment_playbooks(
    customers: pd.DataFrame,
    *,
    propensity: pd.DataFrame | None = None,
    offers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per segment and aspect (offer, channel, timing, retention): ``segment``,
    ``customers``, ``aspect``, ``recommendation``, ``rule``, ``numbers`` (JSON).

    ``customers``: one row per customer with ``customer_id``, ``segment``, ``p_alive``,
    ``next_purchase_days``, the ``share_orders_*`` channel columns and, with a targeting list,
    ``contact``, ``method`` and ``expected_profit``. ``propensity``: customers (index) by
    categories (columns), probabilities. ``offers``: ``customer_id``, ``rank``, ``label`` (the
    product's name or id).
    """
    _check(customers)
    table = customers.set_index("customer_id", drop=False)
    channels = _channels(table)
    base_mean = propensity.mean() if propensity is not None else None
    rows: list[dict[str, Any]] = []
    for segment, group in table.groupby("segment", sort=True, observed=True):
        name = str(segment)
        found = {
            "offer": _offer_row(name, group.index, propensity, offers, base_mean),
            "timing": _timing_row(group),
            "retention": _retention_row(group),
        }
        if channels:
            text, shares = _share_text(group[channels].mean())
            found["channel"] = (
                f"{text}",
                "the channels with the largest mean share of the segment's orders",
                {"order_shares": shares},
            )
        else:
            found["channel"] = ("no channel in the transactions", "none", {})
        for aspect in ASPECTS:
            text, rule, numbers = found[aspect]
            rows.append(
                {
                    "segment": name,
                    "customers": len(group),
                    "aspect": aspect,
                    "recommendation": text,
                    "rule": rule,
                    "numbers": json.dumps(numbers),
                }
            )
    return pd.DataFrame(rows)


def _check(customers: pd.DataFrame) -> None:
    needed = {"customer_id", "segment", "p_alive", "next_purchase_days"}
    missing = sorted(needed - set(customers.columns))
    if missing:
        raise CustvalError(
            "the playbook needs each customer's segment and timing",
            column=", ".join(missing),
            hint="segment the customers first (custval segment) and score them",
        )


def customer_playbooks(
    customers: pd.DataFrame, *, offers: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per customer: ``customer_id``, ``segment``, ``offer``, ``channel``,
    ``next_purchase_days``, ``retention``, ``reason`` (a sentence with the numbers).

    The offer is the customer's first next best offer (``offers`` with ``rank`` 1), else their
    most likely category (``top_category``, when given); the channel their favourite one
    (``favourite_channel``), else their segment's; the retention ``contact``, ``no contact``
    or ``not needed`` (a targeting list that does not contact them), as the columns say.
    """
    _check(customers)
    out = customers[["customer_id", "segment", "next_purchase_days"]].copy()
    offer = pd.Series(pd.NA, index=customers.index, dtype="object")
    if offers is not None:
        first = offers[offers["rank"] == 1].set_index("customer_id")["label"]
        offer = customers["customer_id"].map(first).astype("object")
    if "top_category" in customers:
        offer = offer.fillna(customers["top_category"])
    out["offer"] = offer
    out["channel"] = _customer_channel(customers)
    out["retention"] = _retention_words(customers)
    out["reason"] = _sentences(out, customers)
    return out[
        ["customer_id", "segment", "offer", "channel", "next_purchase_days", "retention", "reason"]
    ]


def _customer_channel(customers: pd.DataFrame) -> pd.Series:
    own = customers.get("favourite_channel", pd.Series(pd.NA, index=customers.index))
    channels = _channels(customers)
    if not channels:
        return own.astype("object")
    by_segment = customers.groupby("segment", observed=True)[channels].mean().idxmax(axis=1)
    fallback = customers["segment"].map(by_segment.str.removeprefix(CHANNEL_PREFIX))
    return own.astype("object").fillna(fallback)


def _retention_words(customers: pd.DataFrame) -> pd.Series:
    if "contact" not in customers:
        return pd.Series("no targeting list", index=customers.index)
    words = np.where(customers["contact"].fillna(0).to_numpy() == 1, "contact", "no contact")
    return pd.Series(words, index=customers.index)


def _sentences(out: pd.DataFrame, customers: pd.DataFrame) -> pd.Series:
    days = out["next_purchase_days"].round(0)
    when = np.where(
        days.notna(), "in about " + days.astype("Int64").astype(str) + " days", "when they return"
    )
    offer = np.where(out["offer"].notna(), "offer " + out["offer"].astype(str), "no offer")
    channel = np.where(out["channel"].notna(), "by " + out["channel"].astype(str), "")
    text = pd.Series(offer, index=out.index) + " " + channel + ", " + when
    if "expected_profit" in customers:
        known = customers["expected_profit"].notna()
        profit = customers["expected_profit"].round(2).astype(str)
        retention = "; retention: " + out["retention"] + " (expected profit " + profit + ")"
        text = text + retention.where(known, "")
    return text.str.replace(r"\s+,", ",", regex=True)
