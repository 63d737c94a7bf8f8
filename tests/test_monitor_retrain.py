"""The monitoring loop end to end, as a scheduler runs it: a planted shift makes `custval
monitor` fail, `custval retrain` trains a challenger and promotes it only if it is better on
the same time-based holdout, and the running service serves the new champion without a failed
request. Then the registry's record of it, and the refusals of `retrain`."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from custval.api.keys import new_key
from custval.store import open_store
from tests.factories import Companies, run, serving
from tests.test_monitor_cli import plant_plan_shift


def with_groups(config: Path, groups: list[str]) -> None:
    """The project's feature groups set to ``groups`` (the generated file has no
    [features])."""
    base = config.with_name("base.toml")
    if not base.exists():
        base.write_text(config.read_text())
    assert "[features]" not in base.read_text()
    config.write_text(base.read_text() + f"\n[features]\ngroups = {json.dumps(groups)}\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, companies: Companies) -> Path:
    """A company whose first model knows the customers' profile alone: the champion a
    retrained model on every feature should beat."""
    root = tmp_path_factory.mktemp("loop")
    company = companies.copy(root / "co", 1500, seed=12, fmt="csv")
    config = company.config_path
    with_groups(config, ["profile"])
    done = run("train", "-c", str(config), "--models", "logistic", "--folds", "3", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "(champion)" in done.stdout
    done = run("score", "-c", str(config), "--no-clv", cwd=root)
    assert done.returncode == 0, done.stderr
    return config


class Traffic:
    """Predictions requested without pause in a thread: every answer's status and version."""

    def __init__(self, url: str, key: str, body: dict) -> None:
        self.url, self.key, self.body = url, key, body
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=30) as c:
            while not self._stop.is_set():
                r = c.post(f"{self.url}/v1/predict", json=self.body)
                version = r.json().get("model_version") if r.status_code == 200 else None
                self.answers.append((r.status_code, version))

    def stop(self) -> list[tuple[int, str | None]]:
        self._stop.set()
        self._thread.join(30)
        return self.answers


def feature_rows(config: Path, n: int) -> list[dict]:
    """Customers as a client sends them: every feature of the project at its as-of date."""
    import math

    from custval import flows
    from custval.config import load_project

    project = load_project(config)
    table = flows.features(project, flows.prepare(project)).to_pyarrow().to_pandas().head(n)
    rows = []
    for rec in table.to_dict("records"):
        row: dict = {}
        for k, v in rec.items():
            if (isinstance(v, float) and math.isnan(v)) or v is None:
                row[k] = None
            elif isinstance(v, bool | int | float):
                row[k] = float(v)
            elif isinstance(v, str):
                row[k] = v
        row["customer_id"] = str(rec["customer_id"])
        rows.append(row)
    return rows


def test_shift_alarms_retrain_promotes_and_the_service_follows(
    project: Path, tmp_path: Path
) -> None:
    root = project.parent
    champion = (root / "models" / "ACTIVE").read_text().strip()
    # a later month: half the free plans became premium; the project now computes every
    # feature group (the team added the transaction features)
    plant_plan_shift(project)
    with_groups(project, ["rfm", "rhythm", "trend", "mix", "profile", "web", "product"])
    done = run("score", "-c", str(project), "--no-clv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    monitored = run("monitor", "-c", str(project), "--json", cwd=tmp_path)
    assert monitored.returncode == 1, monitored.stderr  # the scheduler's cue to retrain
    assert any("plan" in a for a in json.loads(monitored.stdout)["drift_alarms"])

    read, read_key = new_key("tests", "read")
    with serving(project, {"CUSTVAL_API_KEYS": read_key.entry}) as url:
        assert httpx.get(f"{url}/readyz").json()["model_version"] == champion
        traffic = Traffic(url, read, {"customers": feature_rows(project, 3)})
        retrained = run("retrain", "-c", str(project), "--json", cwd=tmp_path)
        assert retrained.returncode == 0, retrained.stderr
        result = json.loads(retrained.stdout)
        gain = result["challenger_metrics"]["roc_auc"] - result["champion_metrics"]["roc_auc"]
        # promoted exactly when better by the margin on the same holdout
        assert result["promoted"] == (gain >= result["margin"]), result
        assert result["promoted"], result  # every feature beats the profile alone
        new = result["challenger"]
        assert new != champion and result["champion"] == champion
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/readyz").json()["model_version"] != new:
            assert time.monotonic() < deadline, "the service did not switch"
            time.sleep(0.1)
        time.sleep(0.5)
        answers = traffic.stop()
    # no request failed on the way, and the new champion answered the last ones
    assert answers and all(status == 200 for status, _ in answers), answers[:5]
    assert {v for _, v in answers} == {champion, new}
    assert answers[-1][1] == new
    # the decision is on record, with its figures, in the registry and the store
    registry = json.loads((root / "models" / "registry.json").read_text())
    assert registry["aliases"] == {"champion": new}
    last = [d for d in registry["history"] if d["action"] == "retrain"][-1]
    assert last["version"] == new and last["details"]["challenger_metrics"]
    # the challenger alias was cleared by the promotion, on record too
    assert registry["history"][-1]["action"] == "clear"
    with open_store(root / "custval.duckdb") as store:
        kept = store.query(
            "SELECT action, version, previous FROM model_decisions WHERE action = 'retrain'"
        )
        assert kept == [("retrain", new, champion)]
        assert ("champion",) in store.query(
            "SELECT aliases FROM v1_model_versions WHERE version = ?", (new,)
        )
    # score uses the new champion now
    done = run("score", "-c", str(project), "--no-clv", cwd=tmp_path)
    assert done.returncode == 0 and f"(model {new})" in done.stdout


def test_a_challenger_that_is_not_better_is_kept_out_and_recorded(
    project: Path, tmp_path: Path
) -> None:
    """Retraining on the same data again: the new challenger does not beat the champion by
    the margin, so nothing changes but the log; --force promotes it anyway. The store's
    segmentation (made half a year earlier) is redone each time: kept only when it keeps
    enough customers together, with the mapping from the old segments to the new."""
    root = project.parent
    text = project.read_text()
    as_of = re.search(r'^as_of = "(\d{4}-\d{2}-\d{2})"', text, re.M).group(1)
    earlier = date.fromisoformat(as_of) - timedelta(weeks=26)
    early = project.with_name("half_year_earlier.toml")
    early.write_text(text.replace(f'as_of = "{as_of}"', f'as_of = "{earlier}"', 1))
    done = run("segment", "-c", str(early), "--k", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before = (root / "models" / "ACTIVE").read_text()
    strict = project.with_name("strict.toml")
    strict.write_text(text + "\n[monitor]\npromote_margin = 0.5\nsegment_stability = 1.0\n")
    done = run("retrain", "-c", str(strict), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not result["promoted"] and "not better by the margin" in result["reason"]
    assert (root / "models" / "ACTIVE").read_text() == before
    registry = json.loads((root / "models" / "registry.json").read_text())
    assert registry["aliases"]["challenger"] == result["challenger"]
    retrained = [d for d in registry["history"] if d["action"] == "retrain"]
    assert retrained[-1]["reason"] == result["reason"]
    seg = result["segmentation"]
    # half a year on, not every customer stays with her segment: not kept at 1.0
    assert 0 < seg["stability"] < 1 and not seg["kept_new"] and seg["run_id"] is None
    assert len(seg["mapping"]) == 3
    assert registry["history"][-1]["action"] == "segment"
    loose = project.with_name("loose.toml")
    loose.write_text(text + "\n[monitor]\npromote_margin = 0.5\nsegment_stability = 0.0\n")
    forced = run("retrain", "-c", str(loose), "--force", "--json", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    promoted = json.loads(forced.stdout)
    assert promoted["promoted"] and promoted["reason"].startswith("forced")
    assert (root / "models" / "ACTIVE").read_text().strip() == promoted["challenger"]
    kept = promoted["segmentation"]
    assert kept["kept_new"] and kept["run_id"]
    with open_store(root / "custval.duckdb") as store:
        assert store.latest_run("segment") == kept["run_id"]
