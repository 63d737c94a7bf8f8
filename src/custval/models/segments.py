"""Customer segments: clusters with profiles and names, RFM segments, and assignment.

* :class:`SegmentPrep` chooses the features (default: RFM, predicted CLV, tenure and behaviour,
  those the table has), takes ``log1p`` of skewed non-negative money and counts, and scales
  robustly (median and interquartile range); the choices are kept (``features_``, ``logged_``).
* :class:`Segmenter` clusters: k-means (default), hierarchical (Ward on a sample of at most
  5,000 customers, the rest assigned to the nearest centroid, so it scales), HDBSCAN (with a
  noise segment, -1) or a Gaussian mixture. ``k="auto"`` tries k over ``k_range`` on a sample
  and keeps the k with the best silhouette (Calinski-Harabasz breaks near-ties), and reports
  the stability of the chosen segmentation: the mean adjusted Rand index between the
  segmentation of the whole sample and those of bootstrap resamples.
* :func:`profile_segments` describes each segment against the whole base: size, share of
  revenue and of predicted CLV, per-feature medians and lift, the features that set it apart;
  :func:`name_segments` names it from that profile with the rule stated.
* :func:`rfm_segments`: quintile R, F and M scores and the familiar named RFM segments.
* Assignment of new customers: a :class:`custval.models.segment_assign.SegmentAssigner`.

Example
-------
>>> seg = Segmenter(k="auto", seed=0).fit(features)  # doctest: +SKIP
>>> seg.k_, seg.silhouette_, seg.stability_
(4, 0.41, 0.97)
>>> profiles = profile_segments(features, seg.labels_, revenue="revenue")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from custval.errors import CustvalError, FitError
from custval.models.base import Estimator

__all__ = [
    "ALGORITHMS",
    "DEFAULT_FEATURES",
    "SegmentPrep",
    "Segmenter",
    "name_segments",
    "profile_segments",
    "rfm_segments",
    "segment_mapping",
]

Array = npt.NDArray[np.float64]

ALGORITHMS = ("kmeans", "hierarchical", "hdbscan", "gmm")

#: the default features, those of them a table has: RFM, predicted CLV, tenure, behaviour
DEFAULT_FEATURES = (
    "recency_days",
    "orders",
    "revenue",
    "avg_order_value",
    "clv",
    "tenure_days",
    "website_sessions",
    "product_active_days",
)


@dataclass
class SegmentPrep(Estimator):
    """Feature choice, log of skewed money and counts, robust scaling (see the module doc).

    Parameters
    ----------
    features : list of str, optional
        Columns to segment on (numeric); default: :data:`DEFAULT_FEATURES` that the table has.
    log : "auto", True or False
        ``"auto"`` takes ``log1p`` of non-negative columns whose skewness is above 1.
    """

    features: list[str] | None = None
    log: str | bool = "auto"

    def fit(self, X: pd.DataFrame) -> SegmentPrep:
        chosen = (
            list(self.features)
            if self.features
            else [c for c in DEFAULT_FEATURES if c in X.columns]
        )
        if not chosen:
            raise CustvalError(
                "none of the default segmentation features is in the table: "
                + ", ".join(DEFAULT_FEATURES),
                hint="Name the features to segment on (--features)",
            )
        missing = [c for c in chosen if c not in X.columns]
        if missing:
            raise CustvalError(
                f"the table has no column {', '.join(missing[:5])}", column=missing[0]
            )
        values = {}
        for c in chosen:
            v = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(v).all():
                raise CustvalError(
                    f"column '{c}' has no numeric value: it cannot place customers",
                    column=c,
                    hint="Drop it from the features",
                )
            values[c] = v
        constant = [c for c, v in values.items() if np.nanmax(v) == np.nanmin(v)]
        if constant:
            raise CustvalError(
                f"column{'s' if len(constant) > 1 else ''} {', '.join(constant[:5])} "
                "holds one value for every customer: it cannot separate segments",
                column=constant[0],
                hint="Drop it from the features",
            )
        self.features_ = chosen
        self.logged_ = []
        self.median_ = {}
        self.center_ = {}
        self.scale_ = {}
        for c, v in values.items():
            ok = v[~np.isnan(v)]
            skewed = ok.min() >= 0 and _skewness(ok) > 1.0
            if self.log is True or (self.log == "auto" and skewed):
                if ok.min() < 0:
                    raise CustvalError(f"column '{c}' has negative values: no log", column=c)
                self.logged_.append(c)
                ok = np.log1p(ok)
            self.median_[c] = float(np.median(ok))
            q1, q3 = np.percentile(ok, [25, 75])
            spread = q3 - q1
            if spread <= 0:  # most customers share one value: scale by the standard deviation
                spread = float(ok.std()) or 1.0
            self.center_[c] = float(np.median(ok))
            self.scale_[c] = float(spread)
        return self

    def transform(self, X: pd.DataFrame) -> Array:
        """The scaled matrix (rows x ``features_``); a missing value gets the median."""
        cols = []
        for c in self.features_:
            if c not in X.columns:
                raise CustvalError(f"the table has no column '{c}'", column=c)
            v = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=np.float64)
            if c in self.logged_:
                v = np.log1p(np.maximum(v, 0.0))
            v = np.where(np.isnan(v), self.median_[c], v)
            cols.append((v - self.center_[c]) / self.scale_[c])
        return np.column_stack(cols)

    def record(self) -> dict[str, Any]:
        return {
            "features": self.features_,
            "logged": self.logged_,
            "median": self.median_,
            "center": self.center_,
            "scale": self.scale_,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SegmentPrep:
        prep = cls(list(record["features"]))
        prep.features_ = list(record["features"])
        prep.logged_ = list(record["logged"])
        prep.median_ = {k: float(v) for k, v in record["median"].items()}
        prep.center_ = {k: float(v) for k, v in record["center"].items()}
        prep.scale_ = {k: float(v) for k, v in record["scale"].items()}
        return prep


def centroid_model(segmenter: Segmenter, names: dict[int, str]) -> dict[str, Any] | None:
    """What places a new customer in a segment (the preparation and the centroids), as JSON;
    None for a Gaussian mixture, which assigns by its covariances, not by the nearest centre."""
    if segmenter.algorithm == "gmm":
        return None
    return {
        "algorithm": segmenter.algorithm,
        "preparation": segmenter.prep_.record(),
        "centers": np.asarray(segmenter.centers_).tolist(),
        "names": {str(k): v for k, v in names.items()},
    }


def assign_nearest(model: dict[str, Any], X: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Segments of the rows of ``X`` by a :func:`centroid_model`: the nearest centre."""
    prep = SegmentPrep.from_record(model["preparation"])
    return _nearest(prep.transform(X), np.asarray(model["centers"], dtype=np.float64))


def segment_mapping(old: Any, new: Any) -> tuple[dict[int, int], float]:
    """How a new segmentation's segments follow the old one's, for the same customers: each
    old segment paired with the new segment that shares the most of its customers, one to one
    (the assignment that keeps the most customers together, by the Hungarian method on the
    contingency table), and the share of customers whose new segment is their old one's pair
    (1: the same segments, renamed at most). Old segments left without a pair (the new
    segmentation has fewer) are not in the mapping."""
    from scipy.optimize import linear_sum_assignment

    old_codes, old_ids = pd.factorize(np.asarray(old), sort=True)
    new_codes, new_ids = pd.factorize(np.asarray(new), sort=True)
    if old_codes.size == 0 or old_codes.size != new_codes.size:
        raise ValueError("the two segmentations must label the same, non-empty customers")
    table = np.zeros((old_ids.size, new_ids.size), dtype=np.int64)
    np.add.at(table, (old_codes, new_codes), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {int(old_ids[r]): int(new_ids[c]) for r, c in zip(rows, cols, strict=True)}
    return mapping, float(table[rows, cols].sum() / old_codes.size)


def _skewness(v: Array) -> float:
    sd = v.std()
    return float(((v - v.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0


#: what ``Segmenter.fit`` learns
_LEARNED = (
    "prep_",
    "k_",
    "labels_",
    "centers_",
    "mixture_",
    "silhouette_",
    "calinski_harabasz_",
    "stability_",
    "scores_",
)


class _Clustering(NamedTuple):
    """One clustering's labels and centroids, and the mixture for a Gaussian mixture."""

    labels: npt.NDArray[np.int64]
    centers: Array
    mixture: Any = None


class Segmenter(Estimator):
    """Segments customers (see the module docstring).

    Parameters
    ----------
    algorithm : {"kmeans", "hierarchical", "hdbscan", "gmm"}
    k : "auto" or int
        Number of segments (ignored by HDBSCAN, which finds its own).
    k_range : (int, int)
        The k tried by ``k="auto"``, both ends included.
    features : list of str, optional
        As in :class:`SegmentPrep`.
    sample_size : int
        Rows used to choose k, for hierarchical clustering and for the silhouette.
    bootstrap : int
        Resamples for the stability (0: not measured).
    seed : int

    Attributes (after ``fit``, set all at once)
    -------------------------------------------
    prep_, k_, labels_, centers_ (in the scaled space), mixture_ (the fitted Gaussian mixture
    that ``predict`` assigns by; None for the other algorithms), silhouette_,
    calinski_harabasz_, stability_, scores_ (a table per k tried; only with ``k="auto"``).
    """

    def __init__(
        self,
        algorithm: str = "kmeans",
        k: str | int = "auto",
        *,
        k_range: tuple[int, int] = (2, 8),
        features: list[str] | None = None,
        sample_size: int = 20_000,
        bootstrap: int = 5,
        min_cluster_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.algorithm = algorithm
        self.k = k
        self.k_range = k_range
        self.features = features
        self.sample_size = sample_size
        self.bootstrap = bootstrap
        self.min_cluster_size = min_cluster_size
        self.seed = seed

    # ---- fitting ------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame) -> Segmenter:
        """Choose the features and k, cluster, and measure the segmentation; the learned
        attributes are set all at once at the end: a fit that fails leaves none."""
        if self.algorithm not in ALGORITHMS:
            raise CustvalError(
                f"unknown algorithm '{self.algorithm}'", hint="Use one of " + ", ".join(ALGORITHMS)
            )
        for name in _LEARNED:  # a refit that fails must not leave the previous fit's state
            self.__dict__.pop(name, None)
        prep = SegmentPrep(self.features).fit(X)
        Z = prep.transform(X)
        n = Z.shape[0]
        rng = np.random.default_rng(self.seed)
        # Ward's memory and time grow with the square of the rows: a smaller sample for it
        size = (
            min(self.sample_size, WARD_ROWS)
            if self.algorithm == "hierarchical"
            else self.sample_size
        )
        sample = np.sort(rng.choice(n, size, replace=False)) if n > size else np.arange(n)
        Zs = Z[sample]
        # Ward's tree of the sample, built once for the choice of k, the clustering and the
        # stability's reference
        tree = _ward_tree(Zs) if self.algorithm == "hierarchical" else None
        k, scores = self._number_of_segments(Zs, n, tree)
        found = self._cluster(Z, Zs, k, sample, tree)
        silhouette, calinski_harabasz = _quality(Z, found.labels, self.seed)
        stability = self._stability(Zs, k, tree) if self.bootstrap else float("nan")
        if scores is not None:
            self.scores_ = scores
        self.prep_ = prep
        self.k_ = int(found.labels.max()) + 1 if self.algorithm == "hdbscan" else k
        self.labels_ = found.labels
        self.centers_ = found.centers
        self.mixture_ = found.mixture
        self.silhouette_ = silhouette
        self.calinski_harabasz_ = calinski_harabasz
        self.stability_ = stability
        return self

    def _number_of_segments(
        self, Zs: Array, n: int, tree: Array | None
    ) -> tuple[int | None, pd.DataFrame | None]:
        """k (None for HDBSCAN, which finds its own) and, for ``k="auto"``, the table of the
        k tried on the sample ``Zs`` (of a table of ``n`` customers)."""
        if self.algorithm == "hdbscan":
            return None, None
        if self.k != "auto":
            k = int(self.k)
            if k < 1:
                raise CustvalError(f"k must be at least 1, not {k}")
            if k > n:
                raise FitError(
                    f"{n} customer{'s' if n != 1 else ''} cannot form {k} segments",
                    hint="Ask for fewer segments",
                )
            return k, None
        lo, hi = self.k_range
        if lo < 2 or hi < lo:
            raise CustvalError(f"k_range must be 2 <= low <= high, not {self.k_range}")
        distinct = _distinct_rows(Zs)
        hi = min(hi, distinct - 1)
        if hi < lo:
            raise FitError(
                f"{n} customers with {distinct} distinct profiles cannot form {lo} or more "
                "segments",
                hint="Segment more customers, or choose k yourself",
            )
        scores = self._choose_k(Zs, range(lo, hi + 1), tree)
        return int(scores.loc[scores["chosen"], "k"].iloc[0]), scores

    def _fit_labels(
        self, Z: Array, k: int | None, seed: int, tree: Array | None = None
    ) -> _Clustering:
        """Labels and centroids of ``Z`` (all rows given), and the Gaussian mixture for
        ``gmm``; ``tree``: Z's Ward tree, if built."""
        from sklearn.cluster import HDBSCAN, KMeans
        from sklearn.mixture import GaussianMixture

        if self.algorithm == "kmeans":
            km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(Z)
            return _Clustering(km.labels_.astype(np.int64), km.cluster_centers_)
        if self.algorithm == "gmm":
            gm = GaussianMixture(n_components=k, random_state=seed, n_init=2).fit(Z)
            return _Clustering(gm.predict(Z).astype(np.int64), gm.means_, gm)
        if self.algorithm == "hierarchical":
            labels = _ward_cut(_ward_tree(Z) if tree is None else tree, k or 1)
            return _Clustering(labels, _centroids(Z, labels, k or 0))
        size = self.min_cluster_size or max(10, Z.shape[0] // 50)
        labels = HDBSCAN(min_cluster_size=size, copy=True).fit_predict(Z).astype(np.int64)
        found = int(labels.max()) + 1
        return _Clustering(labels, _centroids(Z, labels, found))

    def _cluster(
        self,
        Z: Array,
        Zs: Array,
        k: int | None,
        sample: npt.NDArray[np.int64],
        tree: Array | None = None,
    ) -> _Clustering:
        if self.algorithm in ("hierarchical", "hdbscan"):
            # on a sample (Ward and HDBSCAN are quadratic in the rows; a small table is its own
            # sample), then every customer to the nearest centroid, as predict and the service
            # place them: a segment is its centre, whichever rows found it
            on_sample = self._fit_labels(Zs, k, self.seed, tree)
            labels = _nearest(Z, on_sample.centers)
            if self.algorithm == "hdbscan":
                # noise stays noise where it was found; elsewhere the nearest segment
                labels[sample[on_sample.labels < 0]] = -1
            return _Clustering(labels, on_sample.centers)
        found = self._fit_labels(Z, k, self.seed, tree)
        if self.algorithm == "kmeans":
            return _Clustering(*_order_by_size(found.labels, found.centers))
        return found

    def _choose_k(self, Zs: Array, ks: range, tree: Array | None = None) -> pd.DataFrame:
        from sklearn.metrics import calinski_harabasz_score

        rows = []
        # one Ward tree serves every k: it is cut at k segments
        for k in ks:  # a loop over the candidate k
            if tree is not None:
                labels = _ward_cut(tree, k)
            else:
                labels = self._fit_labels(Zs, k, self.seed).labels
            sil, _ = _quality(Zs, labels, self.seed)
            ch = float(calinski_harabasz_score(Zs, labels)) if len(set(labels)) > 1 else 0.0
            rows.append({"k": k, "silhouette": sil, "calinski_harabasz": ch})
        scores = pd.DataFrame(rows)
        # the best silhouette; within 0.01 of it, the best Calinski-Harabasz
        near = scores["silhouette"] >= scores["silhouette"].max() - 0.01
        best = scores[near]["calinski_harabasz"].idxmax()
        scores["chosen"] = scores.index == best
        return scores

    def _stability(self, Zs: Array, k: int | None, tree: Array | None = None) -> float:
        """Mean adjusted Rand index between the sample's segmentation and each bootstrap
        resample's, on the customers they share."""
        from sklearn.metrics import adjusted_rand_score

        base = self._fit_labels(Zs, k, self.seed, tree).labels
        rng = np.random.default_rng(self.seed + 1)
        scores = []
        for b in range(self.bootstrap):  # a loop over resamples
            idx = np.unique(rng.integers(0, Zs.shape[0], Zs.shape[0]))
            labels = self._fit_labels(Zs[idx], k, self.seed + 1 + b).labels
            scores.append(adjusted_rand_score(base[idx], labels))
        return float(np.mean(scores))

    # ---- assignment ---------------------------------------------------------------------------

    def predict(self, X: pd.DataFrame) -> npt.NDArray[np.int64]:
        """The segment of each row of ``X``: the nearest centroid (the most likely component for
        a Gaussian mixture); HDBSCAN's noise segment is not assigned to new customers."""
        if not hasattr(self, "labels_"):
            raise CustvalError("the segmenter is not fitted yet", hint="Call fit first")
        Z = self.prep_.transform(X)
        if self.mixture_ is not None:
            return self.mixture_.predict(Z).astype(np.int64)
        return _nearest(Z, self.centers_)


#: rows of the sample Ward's hierarchical clustering runs on (the rest: nearest centroid)
WARD_ROWS = 5_000


def _ward_tree(Z: Array) -> Array:
    from scipy.cluster.hierarchy import linkage

    return np.asarray(linkage(Z, method="ward"))


def _ward_cut(tree: Array, k: int) -> npt.NDArray[np.int64]:
    """The Ward tree cut into ``k`` segments, numbered 0..k-1."""
    from scipy.cluster.hierarchy import fcluster

    labels = fcluster(tree, t=k, criterion="maxclust").astype(np.int64) - 1
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _distinct_rows(Z: Array) -> int:
    return int(np.unique(np.round(Z, 12), axis=0).shape[0])


def _centroids(Z: Array, labels: npt.NDArray[np.int64], k: int) -> Array:
    return (
        np.array([Z[labels == j].mean(axis=0) for j in range(k)])
        if k
        else np.empty((0, Z.shape[1]))
    )


def _nearest(Z: Array, centers: Array) -> npt.NDArray[np.int64]:
    """Index of the nearest centre of each row, in blocks (no rows x centres x features array)."""
    out = np.empty(Z.shape[0], dtype=np.int64)
    c2 = (centers**2).sum(axis=1)
    for start in range(0, Z.shape[0], 65_536):
        block = Z[start : start + 65_536]
        # |z - c|^2 = |z|^2 - 2 z.c + |c|^2; |z|^2 is the same for every centre
        out[start : start + block.shape[0]] = np.argmin(c2 - 2 * block @ centers.T, axis=1)
    return out


def _order_by_size(
    labels: npt.NDArray[np.int64], centers: Array
) -> tuple[npt.NDArray[np.int64], Array]:
    """Segments numbered from the largest: the same segmentation reads the same each run."""
    sizes = np.bincount(labels, minlength=centers.shape[0])
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels], centers[order]


def _quality(Z: Array, labels: npt.NDArray[np.int64], seed: int) -> tuple[float, float]:
    """Silhouette (on at most 10,000 rows) and Calinski-Harabasz of a segmentation; noise
    (-1) left out."""
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    keep = labels >= 0
    if len(set(labels[keep])) < 2:
        return float("nan"), float("nan")
    Zk, lk = Z[keep], labels[keep]
    size = min(10_000, Zk.shape[0])
    sil = float(silhouette_score(Zk, lk, sample_size=size, random_state=seed))
    return sil, float(calinski_harabasz_score(Zk, lk))


# ---- profiles and names --------------------------------------------------------------------


def profile_segments(
    X: pd.DataFrame,
    labels: Any,
    *,
    features: list[str],
    revenue: str | None = "revenue",
    clv: str | None = "clv",
    top: int = 3,
) -> pd.DataFrame:
    """One row per segment: ``segment``, ``customers``, ``share`` of customers, ``revenue_share``
    and ``clv_share`` (when those columns exist), for each feature its median in the segment
    (``<feature>``) and its lift (segment median / base median, ``<feature>_lift``), and
    ``distinctive``: the ``top`` features whose segment median is furthest from the base's,
    in robust units (interquartile ranges), with the direction ("high revenue")."""
    labels = np.asarray(labels)
    segs = sorted(set(labels.tolist()))
    values = {c: pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=np.float64) for c in features}
    base_median = {c: float(np.nanmedian(v)) for c, v in values.items()}
    base_iqr = {}
    for c, v in values.items():
        q1, q3 = np.nanpercentile(v, [25, 75])
        base_iqr[c] = float(q3 - q1) or float(np.nanstd(v)) or 1.0
    money = {
        name: pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=np.float64)
        for name, col in (("revenue_share", revenue), ("clv_share", clv))
        if col and col in X.columns
    }
    rows = []
    for s in segs:  # a loop over segments
        mine = labels == s
        row: dict[str, Any] = {
            "segment": int(s),
            "customers": int(mine.sum()),
            "share": float(mine.mean()),
        }
        for name, v in money.items():
            total = np.nansum(v)
            row[name] = float(np.nansum(v[mine]) / total) if total else float("nan")
        gaps = {}
        for c, v in values.items():
            med = float(np.nanmedian(v[mine])) if np.isfinite(v[mine]).any() else float("nan")
            row[c] = med
            if base_median[c]:
                row[f"{c}_lift"] = med / base_median[c]
            else:  # a median of 0 (most customers bought once): the ratio of the means
                base_mean = float(np.nanmean(v))
                row[f"{c}_lift"] = float(np.nanmean(v[mine])) / base_mean if base_mean else 1.0
            gaps[c] = (med - base_median[c]) / base_iqr[c]
        ranked = sorted(gaps, key=lambda c: -abs(gaps[c]) if np.isfinite(gaps[c]) else 0)
        row["distinctive"] = [
            f"{'high' if gaps[c] > 0 else 'low'} {c}" for c in ranked[:top] if gaps[c] != 0
        ]
        row["_gaps"] = gaps
        rows.append(row)
    return pd.DataFrame(rows)


def name_segments(profiles: pd.DataFrame) -> pd.DataFrame:
    """A name per segment from its profile, with the rule that gave it.

    Value: "High-value" when the segment's revenue per customer (else predicted CLV per
    customer: its share of the total over its share of customers; without either column, the
    median of orders against the base's) is at least 1.5x the base's, "Low-value" at most
    0.67x, else "Mid-value"; but "Big spenders" when, not high-value, its spend per order
    (avg_order_value, else monetary_value) is at least 1.5x the base's. Activity from recency (days
    since the last purchase): "at risk" at least 1.5x the base's median, "active" at most
    0.67x; in a BTYD table without it, from P(alive): "at risk" at most 0.67x. Tenure: "new"
    at most 0.5x the base's. Orders (or repeat purchases): "loyal" with at least 1.5x the
    base's and active. A segment whose median customer has no order and that holds under 0.5%
    of the revenue is "Not yet buying" ("new" too when its tenure is at most 0.5x the base's).
    A lift against a base median of 0 is the ratio of the means. HDBSCAN's
    noise segment is "Unassigned (noise)". Returns ``segment``, ``name`` and ``rule``; equal
    names get a number."""
    named = [_name_segment(p) for _, p in profiles.iterrows()]  # a loop over segments
    names = [name for name, _ in named]
    rules = [rule for _, rule in named]
    out = pd.DataFrame({"segment": profiles["segment"].to_numpy(), "name": names, "rule": rules})
    # the same name twice: number them by size, so each segment reads differently
    shared = out["name"][out["name"].duplicated(keep=False)].unique()
    for name in shared:  # a loop over repeated names
        at = out.index[out["name"] == name]
        out.loc[at, "name"] = [f"{name} ({j})" for j in range(1, at.size + 1)]
    return out


def _name_segment(p: pd.Series) -> tuple[str, str]:
    """One segment's name and rule (:func:`name_segments`) from its profile row."""
    if p["segment"] == -1:
        return "Unassigned (noise)", "HDBSCAN found no dense group for these customers"
    tenure = p.get("tenure_days_lift", float("nan"))
    new = bool(np.isfinite(tenure) and tenure <= 0.5)
    if p.get("orders", float("nan")) == 0 and p.get("revenue_share", 0.0) < 0.005:
        # most of the segment has not bought yet: recency and value say nothing of them
        return (
            "Not yet buying, new" if new else "Not yet buying",
            "orders median 0 and under 0.5% of the revenue"
            + (f"; tenure {tenure:.2f}x" if new else ""),
        )
    value, why = _value_name(p)
    parts = [value]
    if new:
        parts.append("new")
        why.append(f"tenure {tenure:.2f}x")
    activity, said = _activity(p)
    if activity:
        parts.append(activity)
    why.extend(said)
    return " ".join(parts), "; ".join(why) or "close to the base on every named measure"


def _value_name(p: pd.Series) -> tuple[str, list[str]]:
    """ "High-value", "Low-value", "Mid-value" or "Big spenders", and the rule's words."""
    why = []
    value = "Mid-value"
    lift, said = _value_lift(p)
    if np.isfinite(lift):
        if lift >= 1.5:
            value = "High-value"
        elif lift <= 0.67:
            value = "Low-value"
        why.append(said)
    per_order = p.get("avg_order_value_lift", p.get("monetary_value_lift", float("nan")))
    if value != "High-value" and np.isfinite(per_order) and per_order >= 1.5:
        # large baskets that do not add up to high value: a different offer's audience
        value = "Big spenders"
        why.append(f"spend per order {per_order:.2f}x")
    return value, why


def _activity(p: pd.Series) -> tuple[str | None, list[str]]:
    """ "at risk", "loyal", "active" or None, from recency (else P(alive)) and orders, and the
    rule's words."""
    recency = p.get("recency_days_lift", float("nan"))
    orders = p.get("orders_lift", p.get("frequency_lift", float("nan")))
    alive = p.get("p_alive_lift", float("nan"))
    loyal = bool(np.isfinite(orders) and orders >= 1.5)
    if not np.isfinite(recency) and np.isfinite(alive):
        # a BTYD table (custval clv): P(alive) says what recency would
        if alive <= 0.67:
            return "at risk", [f"P(alive) {alive:.2f}x"]
        said = f"repeat purchases {orders:.2f}x; P(alive) {alive:.2f}x"
        return ("loyal", [said]) if loyal else (None, [])
    days = f"days since the last purchase {recency:.2f}x"
    if np.isfinite(recency) and recency >= 1.5:
        return "at risk", [days]
    if np.isfinite(recency) and recency <= 0.67:
        return ("loyal", [f"orders {orders:.2f}x", days]) if loyal else ("active", [days])
    return None, []


def _value_lift(p: pd.Series) -> tuple[float, str]:
    """How valuable a segment's customers are against the base's, and the rule's words. Per
    customer, from the shares (what marketing reads: "28% of customers, 85% of the CLV"): a
    median would call a segment holding half the base, mostly one-time buyers, average."""
    for col, label in (("revenue_share", "revenue"), ("clv_share", "predicted CLV")):
        share = p.get(col, float("nan"))
        if np.isfinite(share) and p["share"] > 0:
            lift = share / p["share"]
            return lift, (
                f"{label} per customer {lift:.2f}x the base's ({share:.1%} of it, "
                f"{p['share']:.1%} of customers)"
            )
    lift = p.get("orders_lift", float("nan"))
    return lift, f"orders median {lift:.2f}x the base's"


# ---- RFM scores ----------------------------------------------------------------------------

#: (name, rule on R and FM scores 1-5), first match wins; the usual RFM grid
RFM_SEGMENTS: tuple[tuple[str, str], ...] = (
    ("Champions", "R >= 4 and FM >= 4"),
    ("Loyal customers", "R >= 3 and FM >= 4"),
    ("Potential loyalists", "R >= 4 and FM >= 2"),
    ("New customers", "R == 5 and FM == 1"),
    ("Promising", "R == 4 and FM == 1"),
    ("Need attention", "R == 3 and FM >= 2"),
    ("About to sleep", "R == 3 and FM == 1"),
    ("Cannot lose them", "R <= 2 and FM >= 4"),
    ("At risk", "R == 2 and FM >= 2"),
    ("Hibernating", "R == 2 and FM == 1"),
    ("Lost", "R == 1"),
)


def _quintile(v: Array) -> npt.NDArray[np.int64]:
    """Scores 1-5 by rank (ties share the lower rank's quintile); missing: 1."""
    ok = ~np.isnan(v)
    out = np.ones(v.size, dtype=np.int64)
    if ok.sum() == 0:
        return out
    ranks = pd.Series(v[ok]).rank(method="min", pct=True).to_numpy()
    out[ok] = np.clip(np.ceil(ranks * 5), 1, 5).astype(np.int64)
    return out


def rfm_segments(recency: Any, frequency: Any, monetary: Any) -> pd.DataFrame:
    """Quintile scores (R: recent is 5; F and M: more is 5), the FM score (the rounded mean of
    F and M) and the named segment of :data:`RFM_SEGMENTS`."""
    r = np.asarray(recency, dtype=np.float64)
    f = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    if not (r.size == f.size == m.size):
        raise CustvalError("recency, frequency and monetary have different lengths")
    R = _quintile(-r)
    F = _quintile(f)
    M = _quintile(m)
    FM = np.floor((F + M) / 2 + 0.5).astype(np.int64)
    names = np.full(r.size, "Other", dtype=object)
    done = np.zeros(r.size, dtype=bool)
    env = {"R": R, "FM": FM}
    for name, rule in RFM_SEGMENTS:  # a loop over the named segments
        hold = _rule(rule, env) & ~done
        names[hold] = name
        done |= hold
    return pd.DataFrame(
        {"r_score": R, "f_score": F, "m_score": M, "fm_score": FM, "segment": names}
    )


def _rule(rule: str, env: dict[str, Any]) -> npt.NDArray[np.bool_]:
    """A conjunction like ``R >= 4 and FM == 1`` over score arrays."""
    ops = {">=": np.greater_equal, "<=": np.less_equal, "==": np.equal}
    out = np.ones(next(iter(env.values())).size, dtype=bool)
    for clause in rule.split(" and "):
        name, op, value = clause.split()
        out &= ops[op](env[name], int(value))
    return out
