"""Forecast reconciliation: bottom-up and MinT with the shrunk covariance, checked by hand, by
the GLS formula with explicit inverses, and against hierarchicalforecast's numbers
(custval.models.reconciliation)."""

from __future__ import annotations

import numpy as np
import pytest

from custval.errors import CustvalError, FitError
from custval.models.reconciliation import (
    bottom_up,
    mint_shrink,
    shrinkage,
    summing_matrix,
)

# ---- the reference: hierarchicalforecast -------------------------------------------------
# RES (5 series x 20 periods: the total, then 4 bottoms with a common factor) and BASE (5 x 3,
# incoherent) were drawn once and rounded; REF is what hierarchicalforecast 1.5.3 (numpy 2.4.6,
# pandas 3.1.1, in a throwaway venv) gives for
#     MinTrace(method="mint_shrink").fit_predict(
#         S=summing_matrix(4), y_hat=BASE, y_insample=RES, y_hat_insample=np.zeros_like(RES)
#     )["mean"]
# printed to 10 decimals, and LAM_REF its λ, read off its W as 1 - W_ij / np.cov(RES)_ij.
# hierarchicalforecast centres the errors (custval does not: the module docstring), so custval
# is given RES minus each row's mean. It also adds 2e-8 to the standard deviations and to λ's
# denominator, hence the tolerances (measured: 6.6e-11 relative on ỹ, 4.3e-10 on λ).
RES = np.array(
    [
        [-1.59, -11.83, 1.02, -13.86, 18.95, 12.08, -2.23, 10.77, 11.51, 29.01, -10.85, 11.32,
         4.27, -5.65, 28.87, 15.93, 2.91, -10.27, -2.0, -2.39],
        [-0.76, -2.86, 0.98, -2.57, 6.92, 3.15, -0.61, 3.6, 4.02, 10.39, -2.58, 3.81, 1.67,
         1.46, 5.3, 2.03, 2.85, 2.64, 1.57, -0.61],
        [-1.08, -2.45, 1.63, -2.52, 2.59, 2.7, -2.94, -0.69, 2.08, 4.29, -2.09, 1.61, 1.63,
         -2.32, 4.65, 1.22, 0.86, -1.82, -0.79, -1.82],
        [1.21, -5.46, -1.56, -5.38, -0.58, 0.93, -5.47, 6.58, -3.65, 0.56, -0.93, 3.44, 1.31,
         -0.13, 2.92, 1.9, -2.95, 1.8, -2.67, -4.32],
        [-0.99, -4.54, 4.15, -3.26, 8.51, 5.31, -0.65, 0.9, 10.03, 12.84, -3.17, 6.69, 1.01,
         -1.27, 6.92, 0.19, 4.17, 1.2, 1.81, 1.11],
    ]
)  # fmt: skip
BASE = np.array(
    [
        [152.0, 135.5, 150.25],
        [38.71, 43.33, 45.24],
        [23.73, 23.49, 24.01],
        [59.13, 58.76, 57.92],
        [17.94, 15.36, 20.17],
    ]
)
REF = np.array(
    [
        [140.9565615876, 140.3099523590, 147.6770291609],
        [39.0387339569, 43.1868204383, 45.3165905376],
        [23.3323492520, 23.6631961625, 23.9173527881],
        [59.9362828397, 58.4088247680, 58.1078529274],
        [18.6491955390, 15.0511109902, 20.3352329078],
    ]
)
LAM_REF = 0.1097139686430828


def _centred(e: np.ndarray) -> np.ndarray:
    return e - e.mean(axis=1, keepdims=True)


def _gls(base: np.ndarray, W: np.ndarray, S: np.ndarray) -> np.ndarray:
    """S (S'W⁻¹S)⁻¹ S'W⁻¹ ŷ with explicit inverses: the textbook formula, independent of the
    module's constraint form."""
    Wi = np.linalg.inv(W)
    return S @ np.linalg.inv(S.T @ Wi @ S) @ S.T @ Wi @ base


def _grouped() -> np.ndarray:
    """S of 2 segments x 2 channels (4 bottoms: A-x, A-y, B-x, B-y) with the total, both
    segments and both channels on top (9 x 4)."""
    C = np.array(
        [
            [1, 1, 1, 1],  # total
            [1, 1, 0, 0],  # segment A
            [0, 0, 1, 1],  # segment B
            [1, 0, 1, 0],  # channel x
            [0, 1, 0, 1],  # channel y
        ],
        dtype=float,
    )
    return np.vstack([C, np.eye(4)])


def test_mint_shrink_matches_hierarchicalforecast() -> None:
    out = mint_shrink(BASE, _centred(RES))
    np.testing.assert_allclose(out, REF, rtol=1e-9, atol=0)
    assert shrinkage(_centred(RES)).lam == pytest.approx(LAM_REF, abs=1e-8)


def test_uncentred_errors_differ_from_centred_ones() -> None:
    # custval takes the errors' mean square (the total's errors average +4.8 here), so RES as
    # given reconciles differently from hierarchicalforecast's centred covariance
    assert np.abs(mint_shrink(BASE, RES) - REF).max() > 0.1
    assert abs(shrinkage(RES).lam - LAM_REF) > 0.01


# ---- coherence and the projection ---------------------------------------------------------


def test_summing_matrix() -> None:
    S = summing_matrix(3)
    assert S.shape == (4, 3)
    assert S.tolist() == [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert summing_matrix(np.int64(1)).tolist() == [[1.0], [1.0]]


def test_bottom_up_is_coherent() -> None:
    bottom = np.random.default_rng(0).gamma(2.0, 50.0, size=(6, 8))
    out = bottom_up(bottom)
    assert out.shape == (7, 8)
    np.testing.assert_array_equal(out[1:], bottom)
    np.testing.assert_allclose(out[0], bottom.sum(axis=0), rtol=0, atol=1e-9)
    grouped = bottom_up(bottom[:4], _grouped())
    np.testing.assert_allclose(grouped[1], bottom[:2].sum(axis=0), rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mint_is_coherent_and_equals_the_gls_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, T = 5, 30
    e_bottom = rng.normal(size=(n, T)) + rng.normal(size=T)  # correlated through a factor
    e = np.vstack([e_bottom.sum(axis=0) + rng.normal(0, 3, T), e_bottom])
    base = rng.gamma(5.0, 20.0, size=(n + 1, 4))
    out = mint_shrink(base, e)
    np.testing.assert_allclose(out[0], out[1:].sum(axis=0), rtol=0, atol=1e-9)
    W, lam = shrinkage(e)
    assert 0.0 < lam < 1.0
    np.testing.assert_allclose(out, _gls(base, W, summing_matrix(n)), rtol=1e-10)


def test_mint_with_several_aggregates() -> None:
    rng = np.random.default_rng(7)
    S = _grouped()
    e = S @ rng.normal(size=(4, 40)) + rng.normal(0, 0.5, size=(9, 40))
    base = S @ rng.gamma(5.0, 10.0, size=(4, 3)) + rng.normal(0, 5, size=(9, 3))
    out = mint_shrink(base, e, S)
    np.testing.assert_allclose(out[:5], S[:5] @ out[5:], rtol=0, atol=1e-9)
    np.testing.assert_allclose(out, _gls(base, shrinkage(e).covariance, S), rtol=1e-10)
    coherent = S @ rng.gamma(5.0, 10.0, size=(4, 3))
    np.testing.assert_allclose(mint_shrink(coherent, e, S), coherent, rtol=1e-12)


def test_a_coherent_forecast_is_left_unchanged() -> None:
    rng = np.random.default_rng(4)
    bottom = rng.gamma(3.0, 30.0, size=(4, 6))
    coherent = bottom_up(bottom)
    out = mint_shrink(coherent, RES)
    np.testing.assert_allclose(out, coherent, rtol=1e-12, atol=0)


def test_mint_by_hand_with_two_bottoms() -> None:
    # errors orthogonal in sample: λ = 1 and W = diag(4, 1, 1); the incoherence 12 - 4 - 2 = 6
    # is shared in proportion to the variances (u'Wu = 6): total -4, each bottom +1
    e = np.array([[2.0, -2, 2, -2], [1, 1, -1, -1], [1, -1, -1, 1]])
    W, lam = shrinkage(e)
    assert lam == 1.0
    np.testing.assert_array_equal(W, np.diag([4.0, 1.0, 1.0]))
    out = mint_shrink(np.array([[12.0], [4.0], [2.0]]), e)
    np.testing.assert_allclose(out.ravel(), [8.0, 5.0, 3.0], rtol=1e-12)


def test_a_noisy_total_is_pulled_to_the_sum_of_bottoms() -> None:
    # independent bottoms with errors of sd 1, a total whose own errors have sd 30: the total's
    # base forecast (150) is the one to distrust, so MinT lands near the bottoms' sum (100)
    rng = np.random.default_rng(11)
    e = np.vstack([rng.normal(0, 30, 60), rng.normal(0, 1, (4, 60))])
    base = np.array([[150.0], [10.0], [20.0], [30.0], [40.0]])
    out = mint_shrink(base, e)
    assert abs(out[0, 0] - 100.0) < 2.5
    assert np.abs(out[1:, 0] - base[1:, 0]).max() < 0.5
    assert out[0, 0] == pytest.approx(out[1:, 0].sum(), abs=1e-9)


def test_a_steadily_biased_total_counts_as_noisy() -> None:
    # the total is always 8 off, the bottoms ±1: uncentred, the total's mean square is 64
    rng = np.random.default_rng(12)
    e = np.vstack([np.full(40, 8.0), rng.choice([-1.0, 1.0], size=(3, 40))])
    out = mint_shrink(np.array([[90.0], [20.0], [30.0], [30.0]]), e)
    assert abs(out[0, 0] - 80.0) < 1.0


# ---- the shrinkage -----------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "T"), [(0, 3), (1, 8), (2, 50), (3, 500)])
def test_lambda_is_in_the_unit_interval(seed: int, T: int) -> None:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(6, T)) + 0.5 * rng.normal(size=T)
    W, lam = shrinkage(e)
    assert 0.0 <= lam <= 1.0
    np.testing.assert_allclose(W, W.T)
    assert np.linalg.eigvalsh(W).min() > 0


def test_lambda_shrinks_less_with_more_periods() -> None:
    # the sample correlations' noise (the numerator) falls like 1/T; the correlation does not
    rng = np.random.default_rng(5)
    e = rng.normal(size=(5, 2000)) + rng.normal(size=2000)
    lams = [shrinkage(e[:, :T]).lam for T in (10, 100, 2000)]
    assert lams[0] > lams[1] > lams[2]
    assert lams[2] < 0.05


def test_lambda_is_zero_for_errors_that_move_exactly_together() -> None:
    # every standardised product is the same ±1 each period: no sampling noise in r_ij = ±1
    s = np.array([1.0, -1, 1, -1, -1, 1])
    e = np.outer([3.0, 1.0, -2.0], s)
    W, lam = shrinkage(e)
    assert lam == 0.0
    np.testing.assert_allclose(W, e @ e.T / e.shape[1])


def test_a_series_without_error_gets_a_ridge_not_a_singular_w() -> None:
    rng = np.random.default_rng(6)
    e = rng.normal(size=(5, 24))
    e[3] = 0.0  # a segment without sales, forecast exactly as zero
    W, lam = shrinkage(e)
    assert np.isfinite(lam)
    assert W[3, 3] == pytest.approx(1e-12 * np.diag(W).max())
    assert np.count_nonzero(W[3]) == 1
    base = np.array([[120.0], [30.0], [40.0], [0.0], [35.0]])
    out = mint_shrink(base, e)
    assert np.isfinite(out).all()
    assert out[0, 0] == pytest.approx(out[1:, 0].sum(), abs=1e-9)
    assert abs(out[3, 0]) < 1e-9  # all but fixed: the in-sample evidence says it is exact


def test_all_errors_zero_is_ols() -> None:
    W, _ = shrinkage(np.zeros((3, 5)))
    np.testing.assert_array_equal(W, np.eye(3))
    out = mint_shrink(np.array([[13.0], [4.0], [6.0]]), np.zeros((3, 5)))
    np.testing.assert_allclose(out.ravel(), [12.0, 5.0, 7.0])  # 13 - 10 = 3, a third each


# ---- missing residuals --------------------------------------------------------------------


def test_periods_with_a_missing_error_are_dropped() -> None:
    e = RES.copy()
    e[2, 0] = np.nan  # a segment without the first origin
    e[0, 7] = np.nan
    kept = np.delete(RES, [0, 7], axis=1)
    np.testing.assert_array_equal(mint_shrink(BASE, e), mint_shrink(BASE, kept))
    assert shrinkage(e).lam == shrinkage(kept).lam


def test_too_few_complete_periods_is_a_fit_error() -> None:
    e = RES[:, :3].copy()
    e[1, 0] = e[2, 1] = np.nan
    with pytest.raises(FitError, match="1 periods where every series has an error"):
        mint_shrink(BASE, e)


# ---- bad input ---------------------------------------------------------------------------


def test_bad_shapes_are_named() -> None:
    with pytest.raises(CustvalError, match=r"2-D array \(series x horizon\); the shape is \(4,\)"):
        bottom_up(np.ones(4))
    with pytest.raises(CustvalError, match=r"residuals have 4 series \(shape \(4, 20\)\)"):
        mint_shrink(BASE, RES[:4])
    with pytest.raises(CustvalError, match=r"S \(6, 5\) has 6"):
        mint_shrink(BASE, RES, summing_matrix(5))
    with pytest.raises(CustvalError, match=r"must be \[C; I\]"):
        mint_shrink(BASE, RES, np.ones((5, 4)))
    with pytest.raises(CustvalError, match="S \\(4, 3\\) sums 3"):
        bottom_up(np.ones((4, 2)), summing_matrix(3))
    with pytest.raises(CustvalError, match="a total and 1 bottom"):
        mint_shrink(np.ones((1, 3)), np.ones((1, 5)))


def test_bad_values_are_named() -> None:
    with pytest.raises(CustvalError, match="missing or infinite"):
        mint_shrink(np.where(BASE > 150, np.nan, BASE), RES)
    e = RES.copy()
    e[1, 2] = np.inf
    with pytest.raises(CustvalError, match=r"1 infinite values\. Examples: \{series=1, column=2\}"):
        mint_shrink(BASE, e)
    for n in (0, -2, True, 2.0):
        with pytest.raises(CustvalError, match="1 bottom series at least"):
            summing_matrix(n)  # type: ignore[arg-type]
