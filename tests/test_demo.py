"""`custval demo`: the whole path on a generated company, as `make demo` runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tests.factories import run


def test_demo_runs_the_whole_path(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = run("demo", "-n", "1500", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    features = pq.read_table(out / "features.parquet")
    assert features.num_rows == 1500
    clv = pq.read_table(out / "clv.parquet").to_pandas()
    assert len(clv) > 500
    assert (clv.clv_lower <= clv.clv).mean() > 0.99 and (clv.clv <= clv.clv_upper).mean() > 0.99
    assert clv.p_alive.between(0, 1).all()
    tracking = pacsv.read_csv(out / "clv_tracking.csv").to_pandas()
    end = tracking.iloc[-1]
    assert abs(end.cumulative_predicted / end.cumulative_actual - 1) < 0.1
    np.testing.assert_allclose(tracking.predicted.cumsum(), tracking.cumulative_predicted)
    for needle in (
        "purchase models compared",
        "holdout: predicted",
        str(out / "clv.parquet"),
        "5-fold cross-validation",
        "top 10 high-value customers today",
    ):
        assert needle in done.stdout
    (model_dir,) = (out / "data" / "models").iterdir()
    assert (model_dir / "manifest.json").exists()
    from custval.store import open_store

    with open_store(out / "data" / "custval.duckdb") as store:
        assert store.query("SELECT COUNT(*) FROM latest_predictions") == [(1500,)]
        texts = store.query("SELECT text FROM reasons WHERE rank = 1")
        assert len(texts) == 1500
        assert all(t.endswith("the chance of high value") for (t,) in texts)
        # the scoring run places everyone in the segmentation made before it
        placed = store.query(
            "SELECT SUM(s.customers), COUNT(*) FROM segment_value_summary s JOIN "
            "latest_segment_profiles p ON p.name = s.segment WHERE s.run_id = "
            "(SELECT run_id FROM latest_predictions LIMIT 1)"
        )[0]
        segments = store.query("SELECT COUNT(*) FROM latest_segment_profiles")[0][0]
        assert placed == (1500, segments) and segments >= 2
    assert "value by segment" in done.stdout
    assert "top 10 high-value customers today" in done.stdout
