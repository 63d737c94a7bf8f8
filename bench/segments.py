"""Segmenting a million customers: k-means with automatic k, and hierarchical on a sample.

Data (generated, seeded): ``--customers`` (default 1,000,000) customers x 10 features (money and
counts log-normal, shares, durations) drawn around 5 planted segments, so that the benchmark
also checks what it finds (adjusted Rand index with the planted segments).

Measured, each in this process on the 2-core machine, the whole ``Segmenter.fit``: preparation
(log of skewed columns, robust scaling), the choice of k over 2..8 on a 20,000-row sample by
silhouette and Calinski-Harabasz, the stability over 5 bootstrap resamples, the final
clustering of every customer, and the silhouette; then profiles and names. For scale, one
scikit-learn ``KMeans(k=5, n_init=3)`` on all rows (what a user would run by hand, knowing k).

Targets (issue 7): k-means with automatic k under 60 s; hierarchical (Ward on the sample, every
customer to the nearest centroid) under 60 s. Exits 1 when one is missed.
Run: ``.venv/bin/python bench/segments.py [--customers N]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd


def company(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, n)
    centre = rng.uniform(0.5, 2.0, size=(5, 10))
    centre[:, :4] *= np.array([50, 4, 300, 60])  # recency, orders, revenue, order value
    cols = {}
    names = [
        "recency_days",
        "orders",
        "revenue",
        "avg_order_value",
        "tenure_days",
        "website_sessions",
        "product_active_days",
        "tickets",
        "share_online",
        "clv",
    ]
    for j, name in enumerate(names):
        base = centre[truth, j]
        if name == "share_online":
            cols[name] = np.clip(base / 2 + rng.normal(0, 0.05, n), 0, 1)
        else:
            cols[name] = base * rng.lognormal(0, 0.2, n) * (100 if name == "tenure_days" else 1)
    return pd.DataFrame(cols), truth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    args = ap.parse_args()

    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from custval.models.segments import Segmenter, name_segments, profile_segments

    t0 = time.perf_counter()
    X, truth = company(args.customers)  # noqa: N806
    print(
        f"{len(X):,} customers x {X.shape[1]} features generated in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    check = np.random.default_rng(1).choice(len(X), 100_000, replace=False)
    results = {}
    for algorithm in ("kmeans", "hierarchical"):
        t0 = time.perf_counter()
        seg = Segmenter(algorithm, "auto", features=list(X.columns), seed=0).fit(X)
        profiles = profile_segments(X, seg.labels_, features=seg.prep_.features_)
        names = name_segments(profiles)
        seconds = time.perf_counter() - t0
        results[algorithm] = seconds
        ari = adjusted_rand_score(truth[check], seg.labels_[check])
        print(
            f"{algorithm}, automatic k: {seconds:.1f} s; k = {seg.k_} (planted 5), silhouette "
            f"{seg.silhouette_:.3f}, stability {seg.stability_:.3f}, ARI with the planted "
            f"segments {ari:.3f} (on 100,000 customers); names: {', '.join(names['name'])}",
            flush=True,
        )
    t0 = time.perf_counter()
    KMeans(n_clusters=5, n_init=3, random_state=0).fit(np.log1p(X.to_numpy()))
    bare = time.perf_counter() - t0
    print(f"for scale: scikit-learn KMeans(k=5, n_init=3) on all rows, k known: {bare:.1f} s")
    print(
        "custval k-means with automatic k / bare KMeans with k known: "
        f"{results['kmeans'] / bare:.2f}x"
    )
    met = {a: s < 60 for a, s in results.items()}
    for a, ok in met.items():
        print(f"target {a} < 60 s: {'met' if ok else 'NOT MET'}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
