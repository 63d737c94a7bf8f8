"""Reasons for every prediction, global importance and the profile of high-value customers.

Reasons come from the value model's per-feature contributions (exact for LightGBM and the
logistic regression; see :mod:`custval.models.candidates` for the others), which add up with
the base value to the model's score. For each customer the ``top_k`` features with the largest
absolute contribution become reasons: the feature, the customer's value, the direction and a
sentence built from the feature catalogue, e.g.

    "Purchase days (repeat): 14 (typical customer: 2) raises the chance of high value"

or, for a model trained on a labelled table, the label's name: "... raises the chance of churn".
The "typical customer" is the training median (numeric) or the most common category. Features
without a catalogue entry are described by their column name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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


def _thousands(whole: npt.NDArray[np.int64]) -> pa.Array:
    """Whole numbers with thousands separators (1,234,567), vectorised in Arrow."""
    text = pc.cast(pa.array(np.abs(whole)), pa.string())
    length = pc.utf8_length(text).to_numpy(zero_copy_only=False)
    for n_digits in np.unique(length[length > 3]):  # a loop over digit counts (at most 16)
        rows = length == n_digits
        sub = text.filter(pa.array(rows))
        head = int(n_digits) % 3 or 3
        parts = [pc.utf8_slice_codeunits(sub, 0, head)]
        parts += [pc.utf8_slice_codeunits(sub, i, i + 3) for i in range(head, int(n_digits), 3)]
        text = pc.replace_with_mask(text, pa.array(rows), pc.binary_join_element_wise(*parts, ","))
    return pc.if_else(pa.array(whole < 0), pc.binary_join_element_wise("-", text, ""), text)


def numbers_as_text(v: Array) -> pa.Array:
    """Numbers as a reader writes them: 1,320 and 14, 2.5 and 0.0371; NaN as "missing".

    Whole numbers and anything from 100 up are rounded to units with thousands separators;
    smaller ones keep 3 significant digits, written without exponent down to 1e-6. Vectorised
    (Arrow's shortest round-trip text of the rounded value)."""
    v = np.asarray(v, dtype=np.float64)
    ok = ~np.isnan(v)
    finite = ok & np.isfinite(v)
    big = finite & ((v == np.round(v)) | (np.abs(v) >= 100)) & (np.abs(v) < 1e15)
    whole = np.where(big, np.round(v), 0.0).astype(np.int64)
    # 3 significant digits: round at 10**(2 - exponent); |v| < 100 here, so the scale is exact
    small = finite & ~big & (np.abs(v) < 100) & (np.abs(v) >= 1e-6)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.abs(np.where(small, v, 1.0))))
        scale = 10.0 ** (2 - exponent)
        rounded = np.where(small, np.round(v * scale) / scale, v)
        # near a tie the scaled product can round the wrong way (46.85 is 46.8500...01):
        # those few are rounded by Python, which rounds the exact binary value
        near_tie = np.flatnonzero(small & (np.abs(np.abs(v * scale) % 1.0 - 0.5) < 1e-6))
    rounded[near_tie] = [float(f"{x:.3g}") for x in v[near_tie]]
    out = pc.if_else(pa.array(big), _thousands(whole), pc.cast(pa.array(rounded), pa.string()))
    # huge or tiny: rare, so formatted one by one, by the same rules
    other = np.flatnonzero(finite & ~big & ~small)
    if other.size:
        texts = pa.array([number_text(x) for x in v[other]], pa.string())
        mask = np.zeros(v.size, dtype=bool)
        mask[other] = True
        out = pc.replace_with_mask(out, pa.array(mask), texts)
    return pc.if_else(pa.array(ok), out, pa.scalar("missing"))


def top_k_columns(contrib: Array, k: int) -> npt.NDArray[np.int64]:
    """Per row, the columns of the ``k`` largest absolute values, largest first; ties go to
    the first column (as a stable sort would), in O(rows x columns) rather than a full sort."""
    a = np.abs(contrib)
    a[np.isnan(a)] = -1.0  # a NaN contribution is never a reason before a number
    n, p = a.shape
    if k >= p:
        return np.argsort(-a, axis=1, kind="stable")
    kth = -np.partition(-a, k - 1, axis=1)[:, k - 1 : k]  # the k-th largest per row
    above = a > kth
    # as many of the columns tied at the k-th value as are still needed, first ones first
    tied = a == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(n, k)  # ascending column order per row
    picked = np.take_along_axis(a, cols, axis=1)
    return np.take_along_axis(cols, np.argsort(-picked, axis=1, kind="stable"), axis=1)


def number_text(x: float) -> str:
    """One number as :func:`numbers_as_text` writes it (the same text, tested), for a few
    values where an Arrow round trip costs more than the formatting."""
    x = float(x)
    if x != x:
        return "missing"
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf"
    if abs(x) < 1e15 and (x == round(x) or abs(x) >= 100):
        return f"{round(x):,}"
    if 1e-300 < abs(x) < 100:
        r = float(f"{x:.3g}")
        if abs(r) >= 1e-6:
            return np.format_float_positional(r, trim="-")
        return np.format_float_scientific(r, trim="-", exp_digits=1)
    return f"{x:.3g}"


#: the words for a contribution below, at and above zero
DIRECTIONS = ("lowers", "does not change", "raises")


@dataclass(frozen=True)
class Phrases:
    """The fixed parts of each feature's reason sentence, in the schema's column order:
    ``before[j] + value + after[j] + direction + ending``."""

    before: list[str]
    after: list[str]
    ending: str

    @classmethod
    def of(
        cls,
        schema: Any,
        catalogue: Mapping[str, str] | None,
        outcome: str = "high value",
        ending: str | None = None,
    ) -> Phrases:
        describe = dict(catalogue or {})
        medians = np.array(
            [schema.medians.get(c, np.nan) for c in schema.numeric], dtype=np.float64
        )
        typical = dict(zip(schema.numeric, numbers_as_text(medians).to_pylist(), strict=True))
        typical.update({c: schema.modes.get(c, "") for c in schema.categorical})
        names = schema.columns
        return cls(
            [_capitalise(describe.get(c, c)) + ": " for c in names],
            [f" (typical customer: {typical[c]}) " for c in names],
            f" the chance of {outcome}" if ending is None else ending,
        )


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def reasons(
    clf: Any,
    X: pd.DataFrame,
    *,
    top_k: int = 3,
    catalogue: Mapping[str, str] | None = None,
    outcome: str | None = None,
    source: str = "input",
    contributions: tuple[Array, Array] | None = None,
) -> pd.DataFrame:
    """Probability, class and the ``top_k`` reasons of every row of ``X``.

    Columns: ``probability``, ``predicted_class`` (1 = high), then for i = 1..top_k
    ``reason_i`` (the sentence), ``reason_i_feature``, ``reason_i_value`` (the customer's value,
    as text) and ``reason_i_contribution`` (in the model's score: log-odds, or probability for
    the random forest; positive raises the chance). ``catalogue`` maps feature names to
    descriptions. ``outcome`` names what the chance is of (default: the classifier's
    ``label_name_``, "high value" for the derived label, "churn" for a churn column).
    ``contributions`` (from ``clf.contributions(X)``) saves computing them again when the
    caller has them.

    Example
    -------
    >>> reasons(clf, customers, top_k=3).reason_1.iloc[0]  # doctest: +SKIP
    'Contract: Month-to-month (typical customer: Month-to-month) raises the chance of churn'
    """
    schema = clf.schema_
    contrib, base = contributions or clf.contributions(X, source)
    # the score is the base plus the contributions: no second pass through the model
    raw = base + contrib.sum(axis=1)
    proba = expit(raw) if clf.score_kind_ == "log-odds" else raw
    out = pd.DataFrame(
        {
            "probability": proba,
            "predicted_class": (proba >= clf.threshold_).astype(np.int64),
        },
        index=X.index,
    )
    why = reason_columns(
        schema,
        X,
        contrib,
        top_k=top_k,
        catalogue=catalogue,
        ending=f" the chance of {outcome or getattr(clf, 'label_name_', 'high value')}",
        source=source,
    )
    return pd.concat([out, why], axis=1)


def reason_columns(
    schema: Any,
    X: pd.DataFrame,
    contrib: Array,
    *,
    top_k: int = 3,
    catalogue: Mapping[str, str] | None = None,
    ending: str = " the chance of high value",
    source: str = "input",
) -> pd.DataFrame:
    """The ``top_k`` reasons of every row of ``X`` from its per-feature contributions
    (rows x ``schema.columns``, in any model's score): for i = 1..top_k ``reason_i`` (the
    sentence, ending with ``ending``), ``reason_i_feature``, ``reason_i_value`` and
    ``reason_i_contribution``. Strongest first, by absolute contribution."""
    if top_k < 1:
        raise CustvalError(f"top_k must be at least 1, not {top_k}")
    frame = schema.frame(X, source)
    names = schema.columns
    k = min(top_k, len(names))
    order = top_k_columns(contrib, k)
    rows = np.arange(contrib.shape[0])[:, None]
    top_values = contrib[rows, order]
    phrases = Phrases.of(schema, catalogue, ending=ending)
    before = pa.array(phrases.before, pa.string())
    after = pa.array(phrases.after, pa.string())
    name_arr = pa.array(names, pa.string())
    words = pa.array(list(DIRECTIONS), pa.string())
    ending = phrases.ending
    numeric_pos = np.full(len(names), -1)
    numeric_pos[[names.index(c) for c in schema.numeric]] = np.arange(len(schema.numeric))
    numbers = (
        frame[schema.numeric].to_numpy(dtype=np.float64)
        if schema.numeric
        else np.empty((len(frame), 0))
    )
    if schema.categorical:
        category_pos = np.full(len(names), -1)
        category_pos[[names.index(c) for c in schema.categorical]] = np.arange(
            len(schema.categorical)
        )
        categories = pa.concat_arrays(
            [
                pa.array(frame[c].to_numpy(dtype=object), pa.string(), from_pandas=True)
                for c in schema.categorical
            ]
        ).fill_null("missing")
    out = pd.DataFrame(index=X.index)
    n = len(frame)
    for i in range(k):  # a loop over the k reasons; each is vectorised over rows
        feature = order[:, i]
        is_number = numeric_pos[feature] >= 0
        value = numbers_as_text(
            np.where(is_number, numbers[np.arange(n), np.maximum(numeric_pos[feature], 0)], 0.0)
        )
        if schema.categorical:
            # categorical values sit in one concatenated array, column after column
            at = np.maximum(category_pos[feature], 0) * n + np.arange(n)
            value = pc.if_else(pa.array(is_number), value, categories.take(pa.array(at)))
        direction = words.take(pa.array(np.sign(top_values[:, i]).astype(np.int64) + 1))
        taken = pa.array(feature)
        sentence = pc.binary_join_element_wise(
            before.take(taken), value, after.take(taken), direction, ending, ""
        )
        out[f"reason_{i + 1}"] = _strings(sentence, out.index)
        out[f"reason_{i + 1}_feature"] = _strings(name_arr.take(taken), out.index)
        out[f"reason_{i + 1}_value"] = _strings(value, out.index)
        out[f"reason_{i + 1}_contribution"] = top_values[:, i]
    return out


def _strings(values: pa.Array, index: pd.Index) -> pd.Series:
    """An Arrow string array as a pandas string column (no copy through Python objects)."""
    return pd.Series(pd.array(values, dtype=pd.StringDtype("pyarrow")), index=index)


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
        row, found = _numeric_profile(c, f[c].to_numpy(dtype=np.float64), yv, high, base)
        rows.append(row)
        conditions.extend(found)
    for c in schema.categorical:
        v = f[c].fillna("missing").to_numpy(dtype=object)
        row, found = _categorical_profile(c, v, high, base)
        rows.append(row)
        conditions.extend(found)
    cond = pd.DataFrame(conditions)
    if not cond.empty:
        cond = cond.sort_values("lift", ascending=False, kind="stable").head(top)
    return {
        "high_share": float(base),
        "features": pd.DataFrame(rows),
        "conditions": cond.reset_index(drop=True),
    }


def _numeric_profile(
    c: str, v: Array, yv: Array, high: npt.NDArray[np.bool_], base: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A numeric feature's row of :func:`value_profile` (medians of high and low customers)
    and its conditions: above and at most each of five quantiles."""
    ok = ~np.isnan(v)
    in_high, in_low = v[ok & high], v[ok & ~high]
    mh = float(np.median(in_high)) if in_high.size else float("nan")
    ml = float(np.median(in_low)) if in_low.size else float("nan")
    row = {
        "feature": c,
        "kind": "numeric",
        "median_high": float(mh),
        "median_low": float(ml),
        "ratio": float(mh / ml) if ml else float("nan"),
    }
    conditions: list[dict[str, Any]] = []
    if not ok.any():
        return row, conditions
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
    return row, conditions


def _categorical_profile(
    c: str, v: npt.NDArray[np.object_], high: npt.NDArray[np.bool_], base: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A categorical feature's row of :func:`value_profile` (its category most
    over-represented among high customers) and its conditions: each category held by 5% of
    the customers or more."""
    cats, inv = np.unique(v.astype(str), return_inverse=True)
    n_all = np.bincount(inv, minlength=cats.size)
    n_high = np.bincount(inv[high], minlength=cats.size)
    lift = (n_high / np.maximum(n_all, 1)) / base
    best = int(np.argmax(np.where(n_all >= 0.05 * v.size, lift, -np.inf)))
    row = {
        "feature": c,
        "kind": "categorical",
        "category": str(cats[best]),
        "share_high": float(n_high[best] / max(high.sum(), 1)),
        "share_low": float((n_all[best] - n_high[best]) / max((~high).sum(), 1)),
        "lift": float(lift[best]),
    }
    conditions = []
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
    return row, conditions
