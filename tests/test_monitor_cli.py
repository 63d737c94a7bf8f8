"""`custval monitor`: a scoring run against its reference, with exit codes a scheduler acts on;
the results kept in the store per run; the refusals (no run, no reference, other features)."""

from __future__ import annotations

import csv
import json
import re
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from custval.store import open_store
from tests.factories import Companies, run


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, companies: Companies) -> Path:
    """A trained project scored twice on the same data (a first run, then a second)."""
    root = tmp_path_factory.mktemp("monitor")
    company = companies.copy(root / "co", 900, seed=8, fmt="csv")
    config = company.config_path
    done = run("train", "-c", str(config), "--models", "logistic", "--folds", "3", cwd=root)
    assert done.returncode == 0, done.stderr
    for _ in range(2):
        done = run("score", "-c", str(config), "--no-clv", cwd=root)
        assert done.returncode == 0, done.stderr
    return config


def monitor(config: Path, *args: str) -> tuple[int, dict]:
    done = run("monitor", "-c", str(config), "--json", *args, cwd=config.parent)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def plant_plan_shift(config: Path, share: float = 0.5) -> None:
    """Half the customers on the free plan move to premium: the plan's mix shifts."""
    path = config.parent / "crm_customers.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    plan = rows[0].index("plan")
    free = [r for r in rows[1:] if r[plan] == "free"]
    for r in free[: int(len(free) * share)]:
        r[plan] = "premium"
    with path.open("w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)


def test_the_same_data_scored_again_does_not_alarm(scored: Path) -> None:
    code, report = monitor(scored)
    assert code == 0 and not report["alarm"] and report["drift_alarms"] == []
    assert "first" in report["reference"]
    assert max(r["psi"] for r in report["drift"]) == pytest.approx(0.0, abs=1e-12)
    # every feature of the model and the outputs it has were compared
    sources = {r["source"] for r in report["drift"]}
    assert sources == {"features", "outputs"}
    assert "value_probability" in {r["feature"] for r in report["drift"]}
    est = report["estimated_performance"]
    assert 0.5 < est["roc_auc"] <= 1 and est["estimated"] and "calibrated" in est["assumption"]
    # against the training data the same run is compared with another date and population
    code, report = monitor(scored, "--reference", "training")
    assert report["reference"].startswith("the training data")
    assert code == (1 if report["drift_alarms"] else 0)


def test_a_planted_shift_alarms_exits_1_and_is_kept_per_run(scored: Path, tmp_path: Path) -> None:
    plant_plan_shift(scored)
    done = run("score", "-c", str(scored), "--no-clv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    code, report = monitor(scored)
    assert code == 1 and report["alarm"]
    shifted = {a.split(".", 1)[1] for a in report["drift_alarms"]}
    assert any("plan" in name for name in shifted), shifted
    text = run("monitor", "-c", str(scored), cwd=tmp_path)
    assert text.returncode == 1 and "ALARM" in text.stdout and "custval retrain" in text.stdout
    with open_store(scored.parent / "custval.duckdb") as store:
        kept = store.query(
            "SELECT COUNT(*), SUM(alarm) FROM v1_drift_by_run WHERE run_id = ?",
            (report["run_id"],),
        )[0]
        assert kept == (len(report["drift"]), len(report["drift_alarms"]))
        perf = dict(
            store.query(
                "SELECT metric, value FROM v1_performance_by_run WHERE run_id = ? "
                "AND kind = 'estimated'",
                (report["run_id"],),
            )
        )
    assert perf["roc_auc"] == pytest.approx(report["estimated_performance"]["roc_auc"])
    # a tolerance in the project's [monitor] lets the same run pass
    tolerant = scored.with_name("tolerant.toml")
    tolerant.write_text(
        scored.read_text() + f"\n[monitor]\nmax_alarms = {len(report['drift_alarms'])}\n"
    )
    code, _ = monitor(tolerant)
    assert code == 0


def test_no_scoring_run_is_a_clear_error(tmp_path: Path, scored: Path) -> None:
    done = run(
        "monitor", "-c", str(scored), "--store", str(tmp_path / "empty.duckdb"), cwd=tmp_path
    )
    assert done.returncode == 2 and "no scoring run" in done.stderr
    done = run("monitor", "-c", str(scored), "--run", "nope", cwd=tmp_path)
    assert done.returncode == 2 and "'nope' is not in the store" in done.stderr


def test_the_first_run_has_no_previous_reference(scored: Path, tmp_path: Path) -> None:
    with open_store(scored.parent / "custval.duckdb") as store:
        first = store.query(
            "SELECT run_id FROM runs WHERE kind = 'score' ORDER BY finished_at LIMIT 1"
        )[0][0]
    done = run(
        "monitor", "-c", str(scored), "--run", first, "--reference", "previous", cwd=tmp_path
    )
    assert done.returncode == 2 and "no reference run" in done.stderr
    assert "--reference training" in done.stderr


def test_a_run_with_other_features_than_its_reference_is_refused(
    scored: Path, tmp_path: Path
) -> None:
    """A run whose stored features are not its reference's (another model's run named as the
    reference): the missing and new columns are named, and nothing is kept."""
    url = str(scored.parent / "custval.duckdb")
    with open_store(url) as store:
        latest = store.latest_run()
        rows = store.run_rows("run_profiles", latest)
        version = store.query("SELECT model_version FROM runs WHERE run_id = ?", (latest,))[0][0]
        names = rows.column("feature").to_pylist()
        kept = [i for i, n in enumerate(names) if n != names[0]]
        other = rows.take(kept).drop_columns(["run_id"])
        renamed = other.set_column(
            other.column_names.index("feature"),
            "feature",
            pa.array(
                [n if n != names[1] else "brand_new" for n in other.column("feature").to_pylist()]
            ),
        )
        odd = store.write_run(
            kind="score",
            predictions=store.run_rows("predictions", latest).drop_columns(["run_id"]),
            model_version=version,
            extra={"run_profiles": renamed},
        )
        before = store.query("SELECT COUNT(*) FROM run_drift")[0][0]
    done = run("monitor", "-c", str(scored), "--run", odd, "--reference", latest, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert "features differ from its reference" in done.stderr
    assert f"missing={names[0]}" in done.stderr.replace("'", "") or names[0] in done.stderr
    assert "brand_new" in done.stderr
    with open_store(url) as store:
        assert store.query("SELECT COUNT(*) FROM run_drift")[0][0] == before


def test_labels_not_matured_then_realised(scored: Path, tmp_path: Path) -> None:
    """The latest run's labels mature a horizon after it: asked for, the realised figures are
    refused until then; a run scored a year and a day before the data end has them."""
    with open_store(scored.parent / "custval.duckdb") as store:
        first = store.query(
            "SELECT run_id FROM runs WHERE kind = 'score' ORDER BY finished_at LIMIT 1"
        )[0][0]
    done = run("monitor", "-c", str(scored), "--run", first, "--realised", cwd=tmp_path)
    assert done.returncode == 2 and "have not matured" in done.stderr, done.stderr
    text = scored.read_text()
    as_of = re.search(r'^as_of = "(\d{4}-\d{2}-\d{2})"', text, re.M).group(1)
    earlier = date.fromisoformat(as_of) - timedelta(weeks=52, days=1)
    early = scored.with_name("early.toml")
    early.write_text(text.replace(f'as_of = "{as_of}"', f'as_of = "{earlier}"', 1))
    done = run("score", "-c", str(early), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open_store(scored.parent / "custval.duckdb") as store:
        run_id = store.latest_run()
    _, report = monitor(scored, "--run", run_id, "--realised")
    found = report["realised"]
    assert found["window"][0] == str(earlier)
    metrics = found["metrics"]
    assert 0.5 < metrics["roc_auc"] <= 1 and metrics["lift_top"] > 1
    # CLV by decile rises with the prediction, as realised spend does
    deciles = found["clv_by_decile"]
    assert len(deciles) == 10 and deciles[-1]["actual"] > deciles[0]["actual"]
    assert abs(metrics["clv_total_error"]) < 1
    assert 0 <= metrics["bought_again_share"] <= 1
    with open_store(scored.parent / "custval.duckdb") as store:
        kept = dict(
            store.query(
                "SELECT metric, value FROM run_performance WHERE run_id = ? AND kind = 'realised'",
                (run_id,),
            )
        )
    assert kept["roc_auc"] == pytest.approx(metrics["roc_auc"])
