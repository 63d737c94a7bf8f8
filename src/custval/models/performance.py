"""The value classifier's performance before its labels exist, and once they do.

**Before labels** (the confidence-based performance estimation of NannyML, "CBPE"): when the
classifier's probabilities are calibrated, customer i is high-value with probability p_i, so
she counts as p_i of a positive and 1 − p_i of a negative. Sorting customers by score,
highest first, the expected true and false positives above each cut are the cumulative sums of
p and of 1 − p, and

    E[TPR_k] ≈ Σ_{j<=k} p_j / Σ_j p_j,      E[FPR_k] ≈ Σ_{j<=k} (1 − p_j) / Σ_j (1 − p_j),

whose curve's area is the expected ROC AUC (ratios of expectations: exact as the run grows);
the expected precision of the top k is the mean of their p, and the lift of the top share
that precision over the mean of all p. The assumption, stated with every estimate: the
probabilities are calibrated *on the new data*, which holds under covariate shift (the
customers change, the relation of features to value does not) and fails under concept shift,
which only labels can show.

**With labels**: the same metrics realised (:func:`realised`), so that estimate and truth can
be kept side by side per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from custval.errors import CustvalError

__all__ = [
    "ASSUMPTION",
    "ClassifierPerformance",
    "by_decile",
    "estimated",
    "migration_matrix",
    "realised",
]

Array = np.ndarray

ASSUMPTION = (
    "estimated from the calibrated probabilities alone (CBPE): right when the probabilities "
    "stay calibrated on the new customers (a covariate shift), wrong under a concept shift"
)
#: how far outside [0, 1] a probability may be from floating-point rounding alone
ROUNDING = 1e-9
#: the top share whose precision and lift are reported
TOP_SHARE = 0.1


@dataclass(frozen=True)
class ClassifierPerformance:
    """ROC AUC, the precision of the top :data:`TOP_SHARE` by score and its lift over the
    base rate, for ``n`` customers; ``estimated`` says whether labels were used."""

    roc_auc: float
    precision_top: float
    lift_top: float
    base_rate: float
    n: int
    estimated: bool
    assumption: str | None = None


def estimated(probability: Any, *, top_share: float = TOP_SHARE) -> ClassifierPerformance:
    """The expected performance from calibrated ``probability`` alone (module docstring)."""
    p = _checked(probability, "probability")
    outside = (p < -ROUNDING) | (p > 1 + ROUNDING)
    if np.any(outside):
        raise CustvalError(
            f"probabilities must lie between 0 and 1: {int(outside.sum())} do not",
            column="probability",
            count=int(outside.sum()),
            examples=[{"probability": float(v)} for v in p[outside][:3]],
        )
    # a calibration map's arithmetic can leave -3e-16 for a probability of 0
    p = np.clip(p, 0.0, 1.0)
    return _metrics(p, p, top_share, estimated=True)


def realised(score: Any, label: Any, *, top_share: float = TOP_SHARE) -> ClassifierPerformance:
    """The performance ``score`` reached once the labels (1 high value, 0 not) are known."""
    s = _checked(score, "score")
    y = _checked(label, "label")
    if y.shape != s.shape:
        raise CustvalError(f"{y.size} labels for {s.size} scores", column="label")
    if not np.all((y == 0) | (y == 1)):
        raise CustvalError("labels must be 0 or 1", column="label")
    return _metrics(s, y, top_share, estimated=False)


def by_decile(predicted: Any, actual: Any, bins: int = 10) -> pd.DataFrame:
    """Customers in ``bins`` groups of equal size by ``predicted`` (lowest first): their
    count, mean prediction and mean actual outcome, the calibration check of a CLV, of
    P(alive) against repeat purchase, of expected against actual purchases."""
    p, a = _checked(predicted, "predicted"), _checked(actual, "actual")
    if p.shape != a.shape:
        raise CustvalError(f"{a.size} outcomes for {p.size} predictions", column="actual")
    groups = np.array_split(np.argsort(p, kind="stable"), min(bins, p.size))
    return pd.DataFrame(
        {
            "decile": np.arange(1, len(groups) + 1),
            "customers": [g.size for g in groups],
            "predicted": [float(p[g].mean()) for g in groups],
            "actual": [float(a[g].mean()) for g in groups],
        }
    )


def migration_matrix(before: Any, after: Any) -> pd.DataFrame:
    """Customers by their segment in an earlier run (rows) and in a later one (columns), for
    the customers in both; a customer without a segment in either is "(none)"."""
    old = pd.Series(before, dtype=object).fillna("(none)").astype(str)
    new = pd.Series(after, dtype=object).fillna("(none)").astype(str)
    return pd.crosstab(old.rename("before"), new.rename("after"))


def _metrics(
    score: Array, positive: Array, top_share: float, *, estimated: bool
) -> ClassifierPerformance:
    """AUC, top precision and lift of ``score`` when customer i is ``positive[i]`` of a
    positive (a probability, or a 0/1 label)."""
    if not 0 < top_share <= 1:
        raise CustvalError(f"the top share must be in (0, 1], not {top_share}")
    order = np.argsort(-score, kind="stable")
    s, pos = score[order], positive[order]
    neg = 1.0 - pos
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        raise CustvalError(
            "the ROC AUC needs both classes",
            hint="None of the customers is (expected to be) high value, or all are",
        )
    # tied scores form one step of the curve: cut only where the score changes
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tpr = np.r_[0.0, np.cumsum(pos)[last] / total_pos]
    fpr = np.r_[0.0, np.cumsum(neg)[last] / total_neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    k = max(round(top_share * s.size), 1)
    base = float(total_pos / s.size)
    precision = float(pos[:k].mean())
    return ClassifierPerformance(
        roc_auc=auc,
        precision_top=precision,
        lift_top=precision / base,
        base_rate=base,
        n=int(s.size),
        estimated=estimated,
        assumption=ASSUMPTION if estimated else None,
    )


def _checked(values: Any, name: str) -> Array:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise CustvalError(f"there are no {name} values", column=name)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise CustvalError(
            f"{int(bad.sum())} {name} values are missing or infinite",
            column=name,
            count=int(bad.sum()),
        )
    return arr
