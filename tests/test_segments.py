"""Segments: planted segments found, named, assigned; RFM scores; clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from custval.errors import CustvalError, FitError
from custval.models.segment_assign import SegmentAssigner
from custval.models.segments import (
    Segmenter,
    name_segments,
    profile_segments,
    rfm_segments,
)
from tests.factories import planted_segments as planted


def test_kmeans_finds_the_planted_k_and_segments() -> None:
    X, truth = planted()
    seg = Segmenter("kmeans", "auto", sample_size=3000, seed=1).fit(X)
    assert seg.k_ == 4
    assert adjusted_rand_score(truth, seg.labels_) >= 0.9
    assert seg.stability_ >= 0.9 and seg.silhouette_ > 0.5
    assert seg.scores_["chosen"].sum() == 1 and list(seg.scores_["k"]) == list(range(2, 9))
    assert seg.prep_.features_ == ["recency_days", "orders", "revenue", "tenure_days"]
    assert "revenue" in seg.prep_.logged_  # skewed money is logged
    # new customers go to the segment of the planted group they come from
    new, new_truth = planted(1000, seed=5)
    assigned = seg.predict(new)
    assert adjusted_rand_score(new_truth, assigned) >= 0.9


@pytest.mark.parametrize("algorithm", ["hierarchical", "gmm"])
def test_other_algorithms_find_the_planted_segments(algorithm: str) -> None:
    X, truth = planted(4000)
    seg = Segmenter(algorithm, 4, sample_size=2000, bootstrap=2).fit(X)
    assert seg.k_ == 4 and adjusted_rand_score(truth, seg.labels_) >= 0.9


@pytest.mark.parametrize("algorithm", ["kmeans", "hierarchical", "hdbscan", "gmm"])
@pytest.mark.parametrize("sample_size", [1000, 5000])
def test_predict_on_the_training_rows_gives_their_labels(algorithm: str, sample_size: int) -> None:
    # the stability check refits on bootstrap resamples: none of those fits may stay behind.
    # Ward and HDBSCAN run on a sample (5,000: the whole table) and then place every row as
    # predict does, at the nearest centroid; HDBSCAN's noise is not assigned to new customers.
    X, _ = planted(3000)
    seg = Segmenter(algorithm, 4, sample_size=sample_size, bootstrap=2).fit(X)
    found = seg.labels_ >= 0
    assert found.mean() > 0.5
    mismatched = int((seg.predict(X)[found] != seg.labels_[found]).sum())
    assert mismatched == 0, f"{mismatched} of {int(found.sum())} rows"


def test_a_failed_refit_leaves_no_fitted_state() -> None:
    X, _ = planted(600)
    seg = Segmenter("gmm", 3, bootstrap=1).fit(X)
    assert seg.mixture_ is not None
    with pytest.raises(FitError, match="cannot form 5 segments"):
        seg.set_params(k=5).fit(X.head(3))
    assert not any(hasattr(seg, name) for name in ("labels_", "prep_", "mixture_", "k_"))
    with pytest.raises(CustvalError, match="not fitted"):
        seg.predict(X)


def test_hdbscan_marks_noise_and_finds_dense_groups() -> None:
    X, truth = planted(4000)
    rng = np.random.default_rng(3)
    outliers = pd.DataFrame(
        {
            "customer_id": [f"O{i}" for i in range(40)],
            "recency_days": rng.uniform(1, 3000, 40),
            "orders": rng.integers(1, 300, 40).astype(float),
            "revenue": rng.uniform(1, 1e6, 40),
            "tenure_days": rng.uniform(1, 5000, 40),
        }
    )
    seg = Segmenter("hdbscan", sample_size=5000, bootstrap=0).fit(pd.concat([X, outliers]))
    assert seg.k_ >= 4 and (seg.labels_ == -1).any()
    found = seg.labels_[: len(X)]
    assert adjusted_rand_score(truth[found >= 0], found[found >= 0]) >= 0.8


def test_profiles_and_names() -> None:
    X, truth = planted()
    seg = Segmenter("kmeans", 4, bootstrap=0).fit(X)
    prof = profile_segments(X, seg.labels_, features=seg.prep_.features_)
    assert prof["customers"].sum() == len(X) and prof["revenue_share"].sum() == pytest.approx(1)
    names = name_segments(prof).set_index("segment")
    # the planted group with high revenue, many orders and recent purchases
    best = pd.Series(seg.labels_[truth == 0]).mode().iloc[0]
    assert names.loc[best, "name"] == "High-value loyal"
    assert "revenue per customer" in names.loc[best, "rule"]
    newest = pd.Series(seg.labels_[truth == 2]).mode().iloc[0]
    assert " new" in names.loc[newest, "name"]
    lost = pd.Series(seg.labels_[truth == 3]).mode().iloc[0]
    assert names.loc[lost, "name"].startswith("Low-value at risk")
    assert len(set(names["name"])) == 4


def test_assignment_learns_labelled_segments() -> None:
    X, truth = planted(6000)
    rng = np.random.default_rng(1)
    X["plan"] = np.where(truth == 2, "pro", np.where(rng.random(len(X)) < 0.5, "basic", "free"))
    labels = np.array(["champions", "sleepers", "newcomers", "lost"], dtype=object)[truth]
    labels[rng.random(len(X)) < 0.1] = None  # unlabelled customers are left out
    train = np.arange(len(X)) < 4500
    model = SegmentAssigner(seed=0).fit(X[train], labels[train], exclude=("customer_id",))
    test = ~train & pd.notna(labels)
    accuracy = (model.predict(X[test]) == labels[test]).mean()
    assert accuracy >= 0.9
    why = model.reasons(X[test].head(20))
    assert (why["segment"].to_numpy() == model.predict(X[test].head(20))).all()
    assert why["reason_1"].str.contains('the chance of segment "').all()
    assert (why["reason_1_contribution"].abs() >= why["reason_2_contribution"].abs()).all()


def test_rfm_scores_and_named_segments() -> None:
    recency = [1, 2, 3, 4, 5, 100, 200, 300, 400, 500]
    frequency = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    monetary = [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100]
    rfm = rfm_segments(recency, frequency, monetary)
    assert rfm["r_score"].tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert rfm["f_score"].tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert rfm["fm_score"].tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert rfm["segment"].iloc[0] == "Champions" and rfm["segment"].iloc[-1] == "Lost"


def test_clear_errors() -> None:
    X, _ = planted(200)
    with pytest.raises(CustvalError, match="one value for every customer"):
        Segmenter(k=3).fit(X.assign(tenure_days=5.0))
    with pytest.raises(CustvalError, match="no numeric value"):
        Segmenter(k=3).fit(X.assign(tenure_days=np.nan))
    # too few customers or profiles for the segments asked: the data do not determine them
    with pytest.raises(FitError, match="cannot form 5 segments"):
        Segmenter(k=5).fit(X.head(3))
    with pytest.raises(FitError, match="distinct profiles"):
        Segmenter(k="auto").fit(pd.concat([X.head(2)] * 10))
    with pytest.raises(CustvalError, match="unknown algorithm"):
        Segmenter("spectral").fit(X)
    with pytest.raises(CustvalError, match="no column"):
        Segmenter(features=["revenue", "nps"]).fit(X)
    with pytest.raises(FitError, match="nothing to tell apart"):
        SegmentAssigner().fit(X, ["A"] * len(X))


def test_value_names_follow_value_per_customer_not_the_median() -> None:
    # half the base, mostly one-time buyers: its CLV median is the base's, its CLV per
    # customer a sixth of it (CDNOW's largest segment)
    profiles = pd.DataFrame(
        {
            "segment": [0, 1, 2],
            "customers": [500, 300, 200],
            "share": [0.5, 0.3, 0.2],
            "clv_share": [0.08, 0.86, 0.06],
            "clv_lift": [0.96, 8.9, 1.3],
            "monetary_value_lift": [0.0, 2.2, 1.8],
        }
    )
    names = name_segments(profiles)
    # lapsed customers with large baskets: low value ahead, but not like the one-time buyers
    assert names["name"].tolist() == ["Low-value", "High-value", "Big spenders"]
    assert "spend per order 1.80x" in names["rule"][2]
    assert names["rule"][0].startswith("predicted CLV per customer 0.16x the base's (8.0% of it")


def test_a_segment_that_has_not_bought_is_named_so() -> None:
    profiles = pd.DataFrame(
        {
            "segment": [0, 1],
            "customers": [300, 700],
            "share": [0.3, 0.7],
            "revenue_share": [0.0, 1.0],
            "orders": [0.0, 4.0],
            "revenue_lift": [0.0, 1.4],
            "recency_days_lift": [2.6, 0.8],
        }
    )
    names = name_segments(profiles)
    assert names["name"].tolist()[0] == "Not yet buying"
    assert names["rule"][0].startswith("orders median 0")
