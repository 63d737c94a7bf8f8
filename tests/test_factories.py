"""The shared test helpers can fail: the gradient check catches a wrong gradient, and the cache of
generated companies hands out one generation and notices a test writing into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.factories import Companies, assert_gradient_close, numeric_gradient


def cubic(x: np.ndarray) -> float:
    return float(np.sum(x**3) + x[0] * x[1])


def cubic_gradient(x: np.ndarray) -> np.ndarray:
    return 3 * x**2 + np.array([x[1], x[0], 0.0])


def test_finite_differences_match_a_known_gradient_and_catch_a_wrong_one() -> None:
    x = np.array([0.5, -2.0, 0.0])  # a zero component is stepped too
    np.testing.assert_allclose(numeric_gradient(cubic, x), cubic_gradient(x), rtol=1e-8, atol=1e-9)
    fd = assert_gradient_close(cubic_gradient(x), cubic, x, rtol=1e-6, atol=1e-9)
    assert fd.shape == (3,)
    wrong = cubic_gradient(x) * np.array([1.0, 1.0 + 1e-4, 1.0])
    with pytest.raises(AssertionError):
        assert_gradient_close(wrong, cubic, x, rtol=1e-5)
    # the floor relative to the largest component lets a tiny error in a small one pass
    small = cubic_gradient(x) + np.array([0.0, 0.0, 1e-7])
    with pytest.raises(AssertionError):
        assert_gradient_close(small, cubic, x, rtol=1e-5)
    assert_gradient_close(small, cubic, x, rtol=1e-5, atol_of_max=1e-6)


def test_companies_are_generated_once_copied_apart_and_guarded(tmp_path: Path) -> None:
    made = Companies(tmp_path / "cache")
    first = made.shared(30, seed=1, fmt="csv")
    assert made.shared(30, seed=1, fmt="csv") is first
    assert made.shared(30, seed=2, fmt="csv").out != first.out
    copy = made.copy(tmp_path / "mine", 30, seed=1, fmt="csv")
    assert copy.config_path == tmp_path / "mine" / "custval.toml"
    assert copy.files["transactions"].read_bytes() == first.files["transactions"].read_bytes()
    (copy.out / "custval.duckdb").write_text("a store")
    assert made.changed() == []
    (first.out / "custval.duckdb").write_text("a store")
    (changed,) = made.changed()
    assert str(first.out) in changed and "custval.duckdb" in changed
