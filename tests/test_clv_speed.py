"""The fast paths of `custval clv` give the numbers of the plain computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from custval.cli.common import write_table
from custval.models.btyd import BetaGeo, GammaGamma
from custval.models.clv import discounted_expected_purchases, purchase_predictions
from tests.factories import simulate_bgnbd, simulate_gg


def test_gamma_gamma_sums_once_per_distinct_frequency() -> None:
    x, m = simulate_gg(5_000, p=6.0, q=4.0, gamma=15.0, seed=3)
    w = np.random.default_rng(0).integers(1, 4, x.size).astype(float)
    gg = GammaGamma()
    state = gg._prepare((x, m), w)
    # the terms in x alone are summed per distinct frequency (1..14), not per row
    assert state["ux"].tolist() == list(range(1, 15))
    for theta in (np.array([6.0, 4.0, 15.0]), np.array([0.7, 2.5, 3.0])):
        ll, grad = gg._value_and_grad(theta, state, w)
        assert abs(ll - w @ gg._loglik_rows(theta, (x, m))) <= 1e-10 * abs(ll)
        np.testing.assert_allclose(grad, gg._grad_rows(theta, (x, m)) @ w, rtol=1e-9)
    fitted = GammaGamma().fit(x, m)
    assert fitted.converged_
    for k, v in {"p": 6.0, "q": 4.0, "gamma": 15.0}.items():
        assert abs(fitted.params_[k] / v - 1) < 0.15


def test_purchase_predictions_are_the_models_own_numbers() -> None:
    x, tx, t = simulate_bgnbd(20_000, 0.25, 4.0, 0.8, 2.5, seed=5)
    t = np.ceil(t * 7) / 7  # whole days, as from a transaction log: many customers alike
    tx = np.minimum(np.ceil(tx * 7) / 7, t)
    bg = BetaGeo().fit(x, tx, t)
    alive, expected, discounted = purchase_predictions(bg, x, tx, t, horizon=52.0, discount=0.00183)
    np.testing.assert_array_equal(alive, bg.probability_alive(x, tx, t))
    np.testing.assert_array_equal(expected, bg.conditional_expected_purchases(52.0, x, tx, t))
    np.testing.assert_array_equal(
        discounted, discounted_expected_purchases(bg, x, tx, t, horizon=52.0, discount=0.00183)
    )
    assert 0 < discounted.sum() < expected.sum()


def test_written_amounts_are_not_dictionary_encoded(tmp_path: Path) -> None:
    n = 5_000
    table = pa.table(
        {
            "customer_id": [f"c{i % 50}" for i in range(n)],
            "clv": np.random.default_rng(1).gamma(2.0, 50.0, n),
        }
    )
    path = tmp_path / "clv.parquet"
    write_table(table, path)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {meta.column(j).path_in_schema: meta.column(j).encodings for j in range(2)}
    assert not any("DICTIONARY" in e for e in encodings["clv"])
    assert any("DICTIONARY" in e for e in encodings["customer_id"])
    assert pq.read_table(path).equals(table)
