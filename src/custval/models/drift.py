"""Drift between a reference and a later run, from compact, mergeable statistics.

A feature's **profile** is a histogram: for a numeric feature, counts in bins whose edges are
the reference's quantiles (the outer bins open to ±∞, so every later value has a bin), for a
categorical one, counts per category (the reference's most frequent ones, the rest as one
"other" bin), and the count of missing values as a bin of its own in both. A later run is
profiled on the *reference's* bins (:meth:`Profile.like`), so the two are comparable bin by
bin. Profiles on the same bins merge by adding counts (:meth:`Profile.merge`): partitions of a
run (Spark's, or a run read in chunks) are profiled apart and merged, and no raw rows are
kept.

The comparison (:func:`compare`) of reference proportions p (N values) and current ones q
(M values) over B bins:

- the population stability index, PSI = Σ_b (q_b − p_b) ln(q_b / p_b) (a symmetrised
  Kullback-Leibler divergence), with empty bins given half a count so that it stays finite;
- the Jensen-Shannon distance, √JS with JS = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q), in bits:
  0 for equal histograms, 1 for disjoint ones;
- a test that knows the sample sizes. Yurdakul & Naranjo (2020, "Statistical properties of
  the population stability index", Journal of Risk Model Validation 14(4)) show that when both
  samples are independent multinomial draws from the same distribution,

      PSI / (1/N + 1/M)  ~  χ²_{B−1}   (approximately, for large N and M),

  so the PSI that a sample of that size reaches by chance alone is
  χ²_{B−1, 1−α} (1/N + 1/M). The fixed cut-offs of practice (0.1, 0.25) ignore N and M: at
  a few hundred customers chance alone crosses 0.1, at a million a real shift stays under it.
  A feature alarms when its p-value is under ``alpha`` *and* its PSI is at least
  ``min_psi`` (a shift too small to matter is not worth an alarm, however large the sample).

The test's assumption is stated with every result: the two runs are independent samples. A
later scoring run of the same customers is not (the same customer is in both), and its
features move together from run to run, so the test then errs on the side of alarming.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from custval.errors import CustvalError

__all__ = ["DriftResult", "Profile", "compare", "profile"]

Array = np.ndarray

#: bins of a numeric feature (deciles of the reference) and categories kept by name
BINS = 10
TOP_CATEGORIES = 20
#: the name of the categories beyond the kept ones, and of the missing values' bin
OTHER = "(other)"
MISSING = "(missing)"
#: the default level of the test and the smallest PSI worth an alarm
ALPHA = 0.01
#: (a tenth of a standard deviation on the mean of a normal feature makes a PSI near 0.009)
MIN_PSI = 0.005
ASSUMPTION = (
    "the two runs are independent samples of their populations (Yurdakul & Naranjo 2020); "
    "runs of the same customers are not, which makes the test alarm more readily"
)


@dataclass(frozen=True)
class Profile:
    """The histogram of one feature (module docstring). ``edges``: the inner bin edges of a
    numeric feature (bin i holds edges[i-1] < x <= edges[i], the first and last open);
    ``categories``: the kept categories of a categorical one, in order; ``counts``: one per
    bin, then the other categories (categorical), then the missing values."""

    name: str
    kind: str  # "numeric" or "categorical"
    counts: Array
    edges: Array | None = None
    categories: tuple[str, ...] | None = None

    @property
    def n(self) -> int:
        """How many values the profile counts, missing ones included."""
        return int(self.counts.sum())

    @property
    def labels(self) -> tuple[str, ...]:
        """The bins' names, for reports: "<= 3.2", "3.2 to 7.5", "> 7.5" or the categories,
        then the other categories (categorical) and the missing values."""
        if self.kind == "numeric":
            e = [] if self.edges is None else [f"{v:.4g}" for v in self.edges]
            if not e:
                return ("all values", MISSING)
            middle = [f"{a} to {b}" for a, b in itertools.pairwise(e)]
            return (f"<= {e[0]}", *middle, f"> {e[-1]}", MISSING)
        return (*(self.categories or ()), OTHER, MISSING)

    def like(self, values: Any) -> Profile:
        """The profile of ``values`` on this profile's bins: what a later run is compared by."""
        if self.kind == "numeric":
            return replace(self, counts=_numeric_counts(values, self.edges, self.name))
        return replace(self, counts=_category_counts(values, self.categories or ()))

    def merge(self, other: Profile) -> Profile:
        """The profile of both sets of values: counts added, on the same bins only."""
        self.check_bins(other)
        return replace(self, counts=self.counts + other.counts)

    def check_bins(self, other: Profile) -> None:
        """Refuse ``other`` unless it counts on this profile's bins (:meth:`like` made it)."""
        same = (
            self.kind == other.kind
            and self.categories == other.categories
            and (self.edges is None) == (other.edges is None)
            and (self.edges is None or np.array_equal(self.edges, other.edges))
        )
        if not same:
            raise CustvalError(
                f"the profiles of '{self.name}' and '{other.name}' have different bins",
                column=self.name,
                hint="Profile every part with Profile.like of one reference, then merge",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: what the store keeps per feature and run."""
        return {
            "name": self.name,
            "kind": self.kind,
            "counts": self.counts.astype(int).tolist(),
            "edges": None if self.edges is None else self.edges.tolist(),
            "categories": None if self.categories is None else list(self.categories),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        edges = None if data.get("edges") is None else np.asarray(data["edges"], np.float64)
        categories = None if data.get("categories") is None else tuple(data["categories"])
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            counts=np.asarray(data["counts"], np.int64),
            edges=edges,
            categories=categories,
        )


def profile(values: Any, name: str, *, bins: int = BINS, top: int = TOP_CATEGORIES) -> Profile:
    """The reference profile of one feature's ``values``: numeric values get quantile bins
    (at most ``bins``; fewer when values repeat, since equal edges would make empty bins),
    anything else is categorical with its ``top`` most frequent categories kept by name."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        x = arr.astype(np.float64)
        seen = x[np.isfinite(x)]
        inner = np.quantile(seen, np.arange(1, bins) / bins) if seen.size else np.empty(0)
        edges = np.unique(inner)
        return Profile(name, "numeric", _numeric_counts(x, edges, name), edges=edges)
    codes, uniques = _category_codes(arr)
    per = np.bincount(codes[codes >= 0], minlength=len(uniques))
    kept = np.array(uniques, dtype=object)
    order = np.lexsort((kept, -per))[:top]  # most frequent first, ties by name
    categories = tuple(str(c) for c in kept[order])
    return Profile(name, "categorical", _category_counts(arr, categories), categories=categories)


@dataclass(frozen=True)
class DriftResult:
    """One feature's comparison (module docstring)."""

    name: str
    psi: float
    js_distance: float
    critical_psi: float
    p_value: float
    alarm: bool
    n_reference: int
    n_current: int
    assumption: str = ASSUMPTION


def compare(
    reference: Profile, current: Profile, *, alpha: float = ALPHA, min_psi: float = MIN_PSI
) -> DriftResult:
    """PSI, Jensen-Shannon distance and the sample-size-aware test of ``current`` against
    ``reference`` (both on the reference's bins; module docstring)."""
    reference.check_bins(current)
    n, m = reference.n, current.n
    if n == 0 or m == 0:
        side = "reference" if n == 0 else "current run"
        raise CustvalError(f"the {side} has no values of '{reference.name}' to compare")
    used = (reference.counts + current.counts) > 0
    p = _proportions(reference.counts[used])
    q = _proportions(current.counts[used])
    psi = float(np.sum((q - p) * np.log(q / p)))
    scale = 1.0 / n + 1.0 / m
    dof = max(int(used.sum()) - 1, 1)
    p_value = float(stats.chi2.sf(psi / scale, dof))
    return DriftResult(
        name=reference.name,
        psi=psi,
        js_distance=_js_distance(reference.counts[used], current.counts[used]),
        critical_psi=float(stats.chi2.ppf(1 - alpha, dof) * scale),
        p_value=p_value,
        alarm=bool(p_value < alpha and psi >= min_psi),
        n_reference=n,
        n_current=m,
    )


# ---- helpers ----------------------------------------------------------------------------------


def _numeric_counts(values: Any, edges: Array | None, name: str) -> Array:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CustvalError(
            f"'{name}' was numeric in the reference and is not here ({exc})", column=name
        ) from exc
    finite = np.isfinite(x)
    inner = np.empty(0) if edges is None else edges
    bins = np.searchsorted(inner, x[finite], side="left")  # edges[i-1] < x <= edges[i] -> i
    counts = np.bincount(bins, minlength=inner.size + 1)
    return np.append(counts, int((~finite).sum())).astype(np.int64)


def _category_codes(values: Any) -> tuple[Array, list[str]]:
    """Each value's code (-1 when missing) and the distinct values as strings: hashed by
    ``pandas.factorize``, so that only the few distinct values become strings, not every
    customer's."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    return codes, [str(u) for u in uniques]


def _category_counts(values: Any, categories: tuple[str, ...]) -> Array:
    codes, uniques = _category_codes(values)
    index = {c: i for i, c in enumerate(categories)}
    other, missing = len(categories), len(categories) + 1
    slot = np.array([index.get(u, other) for u in uniques] + [missing], np.int64)
    return np.bincount(slot[codes], minlength=len(categories) + 2).astype(np.int64)


def _proportions(counts: Array) -> Array:
    """Shares with an empty bin given half a count, so that logarithms stay finite."""
    c = np.where(counts == 0, 0.5, counts).astype(np.float64)
    return c / c.sum()


def _js_distance(a: Array, b: Array) -> float:
    """√(Jensen-Shannon divergence) in bits of two histograms (empty bins add nothing)."""
    p, q = a / a.sum(), b / b.sum()
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / mid), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / mid), 0.0).sum()
    return float(np.sqrt(max((kl_p + kl_q) / 2, 0.0)))
