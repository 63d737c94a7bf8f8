"""Reasons for every prediction, global importance and the profile of high-value customers.

Reasons come from the value model's per-feature contributions (exact for LightGBM and the
logistic regression; see :mod:`custval.models.candidates` for the others), which add up with
the base value to the model's score. For each customer the ``top_k`` features with the largest
absolute contribution become reasons: the feature, the customer's value, the direction and a
sentence built from the feature catalogue, e.g.

    "Purchase days (repeat): 14 (typical customer: 2) raises the chance of high value"

The "typical customer" is the training median (numeric) or the most common category. Features
without a catalogue entry are described by their column name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit

from custval.errors import CustvalError

__all__ = ["importance", "reasons", "value_profile"]

Array = npt.NDArray[np.float64]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:,.0f}" if v == round(v) else f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(value)


def _numbers_as_text(v: Array) -> npt.NDArray[np.object_]:
    """Numbers as a reader writes them: 1,320 and 14, 2.5 and 0.0371; NaN as "missing".

    Whole numbers and anything from 100 up are rounded to units with thousands separators,
    smaller ones keep 3 significant digits (no exponents below 1e-3 but the value's digits)."""
    out = np.full(v.shape, "missing", dtype=object)
    ok = ~np.isnan(v)
    big = ok & ((v == np.round(v)) | (np.abs(v) >= 100)) & (np.abs(v) < 1e15)
    out[big] = pd.Series(np.round(v[big])).map("{:,.0f}".format).to_numpy(dtype=object)
    rest = ok & ~big
    if rest.any():
        out[rest] = pd.Series(v[rest]).map(lambda x: f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2e}")
    return out


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def reasons(
    clf: Any,
    X: pd.DataFrame,
    *,
    top_k: int = 3,
    catalogue: Mapping[str, str] | None = None,
    outcome: str = "high value",
    source: str = "input",
    contributions: tuple[Array, Array] | None = None,
) -> pd.DataFrame:
    """Probability, class and the ``top_k`` reasons of every row of ``X``.

    Columns: ``probability``, ``predicted_class`` (1 = high), then for i = 1..top_k
    ``reason_i`` (the sentence), ``reason_i_feature``, ``reason_i_value`` (the customer's value,
    as text) and ``reason_i_contribution`` (in the model's score: log-odds, or probability for
    the random forest; positive raises the chance). ``catalogue`` maps feature names to
    descriptions. ``contributions`` (from ``clf.contributions(X)``) saves computing them again
    when the caller has them.

    Example
    -------
    >>> reasons(clf, customers, top_k=3).reason_1.iloc[0]  # doctest: +SKIP
    'Contract: Month-to-month (typical customer: Month-to-month) raises the chance of churn'
    """
    if top_k < 1:
        raise CustvalError(f"top_k must be at least 1, not {top_k}")
    schema = clf.schema_
    contrib, base = contributions or clf.contributions(X, source)
    # the score is the base plus the contributions: no second pass through the model
    raw = base + contrib.sum(axis=1)
    proba = expit(raw) if clf.score_kind_ == "log-odds" else raw
    frame = schema.frame(X, source)
    names = schema.columns
    k = min(top_k, len(names))
    # the k largest absolute contributions per row, largest first (vectorised)
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
    rows = np.arange(contrib.shape[0])[:, None]
    top_values = contrib[rows, order]
    describe = dict(catalogue or {})
    described = {c: _capitalise(describe.get(c, c)) for c in names}
    medians = np.array([schema.medians.get(c, np.nan) for c in schema.numeric], dtype=np.float64)
    typical = dict(zip(schema.numeric, _numbers_as_text(medians), strict=True))
    typical.update({c: schema.modes.get(c, "") for c in schema.categorical})
    numeric_index = {c: j for j, c in enumerate(schema.numeric)}
    numbers = frame[schema.numeric].to_numpy(dtype=np.float64) if schema.numeric else None
    categories = {c: frame[c].to_numpy(dtype=object) for c in schema.categorical}
    out = pd.DataFrame(
        {
            "probability": proba,
            "predicted_class": (proba >= clf.threshold_).astype(np.int64),
        },
        index=X.index,
    )
    name_arr = np.array(names, dtype=object)
    for i in range(k):  # a loop over the k reasons; each is vectorised over rows
        feat = name_arr[order[:, i]]
        value = np.empty(len(frame), dtype=object)
        picked = np.full(len(frame), np.nan)
        is_number = np.zeros(len(frame), dtype=bool)
        for j, c in enumerate(names):  # a loop over features, not rows
            pick = order[:, i] == j
            if not pick.any():
                continue
            if c in numeric_index:
                assert numbers is not None
                picked[pick] = numbers[pick, numeric_index[c]]
                is_number |= pick
            else:
                texts = categories[c][pick]
                value[pick] = np.where(pd.isna(texts), "missing", texts)
        value[is_number] = _numbers_as_text(picked[is_number])
        label = pd.Series(feat).map(described).to_numpy(dtype=object)
        usual = pd.Series(feat).map(typical).to_numpy(dtype=object)
        direction = np.select(
            [top_values[:, i] > 0, top_values[:, i] < 0], ["raises", "lowers"], "does not change"
        )
        sentence = (
            pd.Series(label, dtype=object)
            + ": "
            + pd.Series(value, dtype=object)
            + " (typical customer: "
            + pd.Series(usual, dtype=object)
            + ") "
            + pd.Series(direction, dtype=object)
            + f" the chance of {outcome}"
        )
        out[f"reason_{i + 1}"] = sentence.to_numpy()
        out[f"reason_{i + 1}_feature"] = feat
        out[f"reason_{i + 1}_value"] = value
        out[f"reason_{i + 1}_contribution"] = top_values[:, i]
    return out


def importance(
    clf: Any, X: pd.DataFrame, *, contributions: tuple[Array, Array] | None = None
) -> pd.DataFrame:
    """Mean absolute contribution of each feature over ``X``, largest first, with its share
    (``contributions`` as in :func:`reasons`)."""
    contrib, _ = contributions or clf.contributions(X)
    mean_abs = np.abs(contrib).mean(axis=0)
    total = mean_abs.sum()
    out = pd.DataFrame(
        {
            "feature": clf.schema_.columns,
            "mean_abs_contribution": mean_abs,
            "share": mean_abs / total if total > 0 else 0.0,
        }
    )
    return out.sort_values("mean_abs_contribution", ascending=False, kind="stable").reset_index(
        drop=True
    )


def value_profile(schema: Any, X: pd.DataFrame, y: Any, *, top: int = 5) -> dict[str, Any]:
    """How high-value customers differ from the others.

    Returns ``features``: per feature, for numeric ones the medians of high and low customers
    and their ratio, for categorical ones the category most over-represented among the high
    ones with its share in both groups and the lift (share among high / share among all); and
    ``conditions``: the ``top`` single-feature conditions ("tenure <= 5", "contract =
    Month-to-month") with the highest lift among those that hold for at least 5% of customers,
    with their support and the share of high customers among those they hold for.
    """
    f = schema.frame(X)
    yv = np.asarray(y, dtype=np.float64)
    base = yv.mean()
    high = yv == 1
    rows: list[dict[str, Any]] = []
    conditions: list[dict[str, Any]] = []
    for c in schema.numeric:  # a loop over features
        v = f[c].to_numpy(dtype=np.float64)
        ok = ~np.isnan(v)
        in_high, in_low = v[ok & high], v[ok & ~high]
        mh = float(np.median(in_high)) if in_high.size else float("nan")
        ml = float(np.median(in_low)) if in_low.size else float("nan")
        rows.append(
            {
                "feature": c,
                "kind": "numeric",
                "median_high": float(mh),
                "median_low": float(ml),
                "ratio": float(mh / ml) if ml else float("nan"),
            }
        )
        if not ok.any():
            continue
        for q in (0.1, 0.25, 0.5, 0.75, 0.9):  # candidate cut points: quantiles
            cut = float(np.quantile(v[ok], q))
            for op, hold in ((">", v > cut), ("<=", v <= cut)):
                support = hold.mean()
                if support >= 0.05 and hold.any():
                    share = yv[hold].mean()
                    conditions.append(
                        {
                            "condition": f"{c} {op} {_fmt(cut)}",
                            "support": float(support),
                            "high_share": float(share),
                            "lift": float(share / base),
                        }
                    )
    for c in schema.categorical:
        v = f[c].fillna("missing").to_numpy(dtype=object)
        cats, inv = np.unique(v.astype(str), return_inverse=True)
        n_all = np.bincount(inv, minlength=cats.size)
        n_high = np.bincount(inv[high], minlength=cats.size)
        lift = (n_high / np.maximum(n_all, 1)) / base
        best = int(np.argmax(np.where(n_all >= 0.05 * v.size, lift, -np.inf)))
        rows.append(
            {
                "feature": c,
                "kind": "categorical",
                "category": str(cats[best]),
                "share_high": float(n_high[best] / max(high.sum(), 1)),
                "share_low": float((n_all[best] - n_high[best]) / max((~high).sum(), 1)),
                "lift": float(lift[best]),
            }
        )
        for j in range(cats.size):  # a loop over a column's categories
            support = n_all[j] / v.size
            if support >= 0.05:
                conditions.append(
                    {
                        "condition": f"{c} = {cats[j]}",
                        "support": float(support),
                        "high_share": float(n_high[j] / n_all[j]),
                        "lift": float(lift[j]),
                    }
                )
    cond = pd.DataFrame(conditions)
    if not cond.empty:
        cond = cond.sort_values("lift", ascending=False, kind="stable").head(top)
    return {
        "high_share": float(base),
        "features": pd.DataFrame(rows),
        "conditions": cond.reset_index(drop=True),
    }
