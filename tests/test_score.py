"""Scoring in the library: the CLV columns of a run, and where runs are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from custval import flows
from custval.columns import SUMMARY_COLUMNS
from custval.config import load_project
from custval.flows.scoring import score_clv
from custval.models.btyd_clv import clv_models_from_json, point_clv
from custval.store import long_reasons
from tests.factories import Companies


@pytest.fixture(scope="module")
def company(companies: Companies) -> Path:
    return companies.shared(900, seed=11, fmt="parquet").config_path


def test_clv_from_the_feature_table_equals_clv_from_the_transactions(company: Path) -> None:
    project = load_project(company)
    prepared = flows.prepare(project)
    table = flows.features(project, prepared).to_pyarrow().to_pandas()
    from_features, models, _ = score_clv(project, prepared, table)
    # without the rfm columns the summary is computed from the transactions again
    bare = table.drop(columns=list(SUMMARY_COLUMNS))
    from_transactions, _, _ = score_clv(project, prepared, bare)
    buyers = table["T"].notna().to_numpy()
    assert 0 < buyers.sum() < len(table)  # some customers never bought
    for col, values in from_features.items():
        assert np.isnan(values[~buyers]).all(), col
        np.testing.assert_allclose(values, from_transactions[col], rtol=1e-6, err_msg=col)
    # and both are what `custval clv` predicts over a year with a 10% yearly discount
    direct = flows.clv(
        prepared,
        calibration_end=project.as_of,
        horizon=52.0,
        discount=1.1 ** (1 / 52) - 1,
    ).predictions.to_pandas()
    direct = direct.set_index("customer_id").reindex(table["customer_id"])
    np.testing.assert_allclose(from_features["clv_expected"], direct["clv"], rtol=1e-6)
    np.testing.assert_allclose(from_features["p_alive"], direct["p_alive"], rtol=1e-6)
    lower, expected = from_features["clv_lower"][buyers], from_features["clv_expected"][buyers]
    assert (lower <= expected).mean() > 0.99
    # the models as the store keeps them (JSON) give the same CLV: the service's path
    purchases, spend = clv_models_from_json(json.loads(json.dumps(models)))
    x, tx, t, m = (table[c].to_numpy(np.float64)[buyers] for c in SUMMARY_COLUMNS)
    _, again = point_clv(
        purchases, spend, x, tx, t, m, horizon=models["horizon"], discount=models["discount"]
    )
    np.testing.assert_allclose(again, expected, rtol=1e-12)
    # the purchase model is chosen (--model auto) and the store keeps which one and why
    chosen = models["purchases"]["choice"]["model"]
    assert chosen in MODEL_CLASSES
    assert models["purchases"]["model"] == MODEL_CLASSES[chosen] and models["horizon"] == 52.0


MODEL_CLASSES = {"bgnbd": "BetaGeo", "mbgnbd": "ModifiedBetaGeo", "pnbd": "ParetoNBD"}


def test_the_store_setting_is_relative_to_the_project_file_or_a_url(
    company: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = company.read_text()
    assert load_project(company).store == str((company.parent / "custval.duckdb").resolve())
    # the same project in another folder: its store moves with it
    moved = tmp_path / "with_store.toml"
    moved.write_text('store = "runs/store.duckdb"\n' + text)
    assert load_project(moved).store == str((tmp_path / "runs" / "store.duckdb").resolve())
    monkeypatch.setenv("CUSTVAL_SECRET_PW", "s3cret")
    moved.write_text('store = "postgresql://u:${CUSTVAL_SECRET_PW}@db:5432/x"\n' + text)
    assert load_project(moved).store == "postgresql://u:s3cret@db:5432/x"


def test_reasons_go_to_the_store_customer_by_customer_rank_by_rank() -> None:
    import pandas as pd

    wide = pd.DataFrame(
        {
            "reason_1": ["a1", "b1"],
            "reason_1_feature": ["x", "y"],
            "reason_1_value": ["1", "2"],
            "reason_1_contribution": [0.5, -0.25],
            "reason_2": ["a2", "b2"],
            "reason_2_feature": ["y", "z"],
            "reason_2_value": ["3", "red"],
            "reason_2_contribution": [0.0, 0.125],
        }
    )
    long = long_reasons(wide, np.array(["A", "B"]), 2).to_pylist()
    assert [(r["customer_id"], r["rank"], r["text"]) for r in long] == [
        ("A", 1, "a1"),
        ("A", 2, "a2"),
        ("B", 1, "b1"),
        ("B", 2, "b2"),
    ]
    assert [r["direction"] for r in long] == ["raises", "none", "lowers", "raises"]
    assert [r["feature_value"] for r in long] == ["1", "3", "2", "red"]
