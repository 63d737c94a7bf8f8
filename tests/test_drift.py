"""Drift statistics (issue 19): profiles that merge by counts, PSI and Jensen-Shannon by hand,
and a test that knows the sample sizes: quiet on stable samples, loud on a small real shift."""

from __future__ import annotations

import numpy as np
import pytest

from custval.errors import CustvalError
from custval.models.drift import MISSING, OTHER, Profile, compare, profile


def test_psi_and_js_by_hand() -> None:
    ref = profile(np.array([1.0, 2.0, 3.0, 4.0]), "x", bins=2)  # one edge, at the median 2.5
    assert ref.edges.tolist() == [2.5] and ref.counts.tolist() == [2, 2, 0]
    cur = ref.like(np.array([1.0, 1.0, 1.0, 4.0, np.nan]))
    assert cur.counts.tolist() == [3, 1, 1]
    got = compare(ref, cur)
    p = np.array([2, 2, 0.5]) / 4.5  # the empty missing bin gets half a count
    q = np.array([3, 1, 1]) / 5
    assert got.psi == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-12)
    a, b = np.array([2, 2, 0]) / 4, np.array([3, 1, 1]) / 5
    m = (a + b) / 2
    kl = lambda u: np.sum(np.where(u > 0, u * np.log2(np.where(u > 0, u, 1) / m), 0))  # noqa: E731
    assert got.js_distance == pytest.approx(np.sqrt((kl(a) + kl(b)) / 2), rel=1e-12)
    assert compare(ref, ref).psi == 0 and compare(ref, ref).js_distance == 0
    assert ref.labels == ("<= 2.5", "> 2.5", MISSING)


def test_categories_keep_the_most_frequent_and_count_the_rest() -> None:
    values = np.array(["web"] * 5 + ["store"] * 3 + ["app"] * 3 + ["fax"] + [None], dtype=object)
    ref = profile(values, "channel", top=3)
    assert ref.categories == ("web", "app", "store")  # ties by name
    assert ref.counts.tolist() == [5, 3, 3, 1, 1]  # + other (fax) + missing
    later = ref.like(np.array(["web", "phone", np.nan, "app"], dtype=object))
    assert later.counts.tolist() == [1, 1, 0, 1, 1]
    assert later.labels[-2:] == (OTHER, MISSING)


def test_profiles_of_parts_merge_into_the_profile_of_the_whole() -> None:
    rng = np.random.default_rng(0)
    ref = profile(rng.normal(size=5000), "x")
    parts = [rng.normal(0.2, 1, size=n) for n in (1000, 3000, 17)]
    merged = ref.like(parts[0]).merge(ref.like(parts[1])).merge(ref.like(parts[2]))
    whole = ref.like(np.concatenate(parts))
    assert merged.counts.tolist() == whole.counts.tolist() and merged.n == 4017
    back = Profile.from_dict(whole.to_dict())
    assert back.counts.tolist() == whole.counts.tolist() and back.labels == whole.labels
    with pytest.raises(CustvalError, match="different bins"):
        ref.merge(profile(rng.normal(size=50), "x"))


def test_stable_samples_seldom_alarm_and_a_tenth_of_a_standard_deviation_always_does() -> None:
    rng = np.random.default_rng(1)
    ref = profile(rng.normal(size=100_000), "x")
    stable = [compare(ref, ref.like(rng.normal(size=100_000))) for _ in range(100)]
    # the chance level of the test: alpha = 1% (and PSI >= 0.005 besides)
    assert sum(r.alarm for r in stable) <= 5
    assert max(r.psi for r in stable) < 0.01  # at 100k, chance stays far below 0.1
    shifted = [compare(ref, ref.like(rng.normal(0.1, 1, size=100_000))) for _ in range(20)]
    assert all(r.alarm for r in shifted)
    assert 0.007 < np.mean([r.psi for r in shifted]) < 0.012  # about 0.1² x 0.9
    # the critical PSI shrinks with the samples: the same shift is chance at 300 customers
    # (both samples drawn afresh each time: the test allows for the reference's chance too)
    pairs = [(profile(rng.normal(size=300), "x"), rng.normal(size=300)) for _ in range(300)]
    small = [compare(ref, ref.like(values)) for ref, values in pairs]
    assert np.mean([r.alarm for r in small]) < 0.03
    assert np.mean([r.psi > 0.1 for r in small]) > 0.05  # where the fixed cut-off over-alarms
    assert small[0].critical_psi > 100 * stable[0].critical_psi
    assert "independent samples" in stable[0].assumption


def test_a_feature_that_changed_type_or_has_no_values_is_a_clear_error() -> None:
    ref = profile(np.array([1.0, 2.0, 3.0]), "tenure_days")
    with pytest.raises(CustvalError, match="'tenure_days' was numeric in the reference"):
        ref.like(np.array(["a", "b"], dtype=object))
    empty = ref.like(np.array([], dtype=np.float64))
    with pytest.raises(CustvalError, match="current run has no values of 'tenure_days'"):
        compare(ref, empty)
