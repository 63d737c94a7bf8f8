"""The building blocks of reasons: numbers as readers write them, and the top features."""

from __future__ import annotations

import numpy as np
import pytest

from custval.models.explain import number_text, numbers_as_text, top_k_columns


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1320.0, "1,320"),
        (14.0, "14"),
        (0.0, "0"),
        (2.5, "2.5"),
        (0.037123, "0.0371"),
        (-1234567.4, "-1,234,567"),
        (123.456, "123"),
        (99.96, "100"),
        (3.71e-5, "0.0000371"),
        (1e20, "1e+20"),
        (float("nan"), "missing"),
        (float("inf"), "inf"),
        (999_999_999_999_999.0, "999,999,999,999,999"),
    ],
)
def test_numbers_read_as_a_person_writes_them(value: float, text: str) -> None:
    assert numbers_as_text(np.array([value])).to_pylist() == [text]
    assert number_text(value) == text


def test_numbers_match_python_formatting_on_many_values() -> None:
    rng = np.random.default_rng(3)
    v = np.concatenate(
        [
            rng.lognormal(0, 4, 20_000) * rng.choice([-1, 1], 20_000),
            rng.integers(-(10**9), 10**9, 5_000).astype(float),
            np.round(rng.normal(0, 50, 5_000), 2),
        ]
    )
    tiny = [1.23e-5, 1.23e-6, 1.23e-7, 1e-7, 9.99e-7, 9.996e-7, 3.3e-262, 5e-320, -4.4e-30]
    v = np.concatenate([v, tiny, [-float("inf")]])
    got = numbers_as_text(v).to_pylist()
    # the one-value formatter of the online service writes the same text
    assert got == [number_text(x) for x in v]
    for x, t in zip(v, got, strict=True):  # the reference is Python's own formatting
        if not np.isfinite(x):
            assert t == "-inf"
        elif x == round(x) or abs(x) >= 100:
            assert t == f"{round(x):,}", (x, t)
        else:
            assert float(t) == float(f"{x:.3g}"), (x, t)
            assert "e" not in t or abs(x) < 1e-6, (x, t)


def test_top_k_equals_a_stable_sort_with_ties() -> None:
    rng = np.random.default_rng(0)
    # few distinct values: many ties, also at the k-th place; signs must not matter
    contrib = rng.integers(-3, 4, size=(5_000, 12)).astype(float)
    for k in (1, 3, 12):
        expected = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_k_columns(contrib, k), expected)


def test_reasons_speak_the_label_the_classifier_was_trained_for() -> None:
    from custval.models.value import ValueClassifier
    from tests.factories import value_customers

    X, y = value_customers(300, seed=5)
    churn = ValueClassifier(
        ("logistic",), folds=2, label_name="churn", class_names=("No", "Yes")
    ).fit(X, y)
    assert churn.label_name_ == "churn" and churn.class_names_ == ("No", "Yes")
    from custval.models.explain import reasons

    said = reasons(churn, X.head(50), top_k=2)
    for k in (1, 2):
        assert said[f"reason_{k}"].str.endswith(" the chance of churn").all()
    # a project's derived label keeps its words; an explicit outcome still wins
    value = ValueClassifier(("logistic",), folds=2).fit(X, y)
    assert reasons(value, X.head(5)).reason_1.str.endswith("the chance of high value").all()
    named = reasons(churn, X.head(5), outcome="leaving")
    assert named.reason_1.str.endswith("the chance of leaving").all()
