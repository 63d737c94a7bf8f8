"""The model registry (custval.store.registry): immutable versions with their record, the
champion and challenger aliases, promotion and rollback logged in the folder and the store,
the ACTIVE file a running service follows, and the refusals (an unknown version, a damaged
one, a promotion while another runs), each leaving the registry as it was."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from custval.errors import CustvalError
from custval.models.value import ValueClassifier
from custval.store import open_store
from custval.store.bundles import code_fingerprint, data_fingerprint, save_bundle
from custval.store.registry import ACTIVE_FILE, LOCK_FILE, REGISTRY_FILE, ModelRegistry
from tests.factories import run, value_customers


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with three versions of a small logistic model."""
    root = tmp_path_factory.mktemp("registry") / "models"
    X, y = value_customers(400)
    clf = ValueClassifier(("logistic",), folds=3).fit(X, y)
    for name in ("v1", "v2", "v3"):
        save_bundle(clf, root / name, label={}, fingerprint=data_fingerprint(X, y))
    return root


@pytest.fixture
def models(versions: Path, tmp_path: Path) -> Path:
    """A fresh copy of the versions, with no registry yet."""
    import shutil

    dest = tmp_path / "models"
    shutil.copytree(versions, dest)
    return dest


def state(root: Path) -> tuple[str | None, str | None]:
    """(registry.json, ACTIVE) as text, None when absent."""
    files = (root / REGISTRY_FILE, root / ACTIVE_FILE)
    return tuple(f.read_text() if f.exists() else None for f in files)  # type: ignore[return-value]


def test_versions_keep_their_record(models: Path) -> None:
    found = ModelRegistry(models).versions()
    assert [v.version for v in found] == ["v1", "v2", "v3"]
    v = found[0]
    assert v.data["rows"] == 400 and len(v.data["sha256"]) == 64
    assert v.code["sha256"] == code_fingerprint() and v.code["custval"]
    assert len(v.training_run or "") == 32 and "roc_auc" in v.metrics
    # each version was trained by its own run
    assert len({x.training_run for x in found}) == 3


def test_first_is_champion_later_ones_challengers_and_promotion(models: Path) -> None:
    reg = ModelRegistry(models)
    assert reg.resolve() == "v3"  # no champion yet: the newest
    assert reg.register("v1") == "champion"
    assert reg.register("v2") == "challenger"
    assert reg.resolve() == "v1" and reg.resolve("challenger") == "v2"
    assert reg.resolve("latest") == "v3"
    assert (models / ACTIVE_FILE).read_text().strip() == "v1"
    decision = reg.promote("v2", reason="better by 0.02")
    assert decision["previous"] == "v1" and decision["reason"] == "better by 0.02"
    # promoted: the champion, no longer the challenger
    assert reg.aliases() == {"champion": "v2"}
    assert (models / ACTIVE_FILE).read_text().strip() == "v2"
    back = reg.rollback(reason="complaints")
    assert back["version"] == "v1" and back["action"] == "rollback"
    assert reg.resolve() == "v1" and (models / ACTIVE_FILE).read_text().strip() == "v1"
    actions = [d["action"] for d in reg.history()]
    assert actions == ["train", "train", "promote", "clear", "rollback"]


def test_unknown_or_damaged_versions_change_nothing(models: Path) -> None:
    reg = ModelRegistry(models)
    reg.register("v1")
    before = state(models)
    with pytest.raises(CustvalError, match="no model version 'v9'") as err:
        reg.promote("v9")
    assert "v3" in str(err.value)  # the versions there are named
    with pytest.raises(CustvalError, match="no model version"):
        reg.promote("../v1")
    manifest = models / "v3" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["threshold"] = 0.01  # tampered after training
    manifest.write_text(json.dumps(data))
    with pytest.raises(CustvalError, match="changed after training"):
        reg.promote("v3")
    with pytest.raises(CustvalError, match="unknown alias"):
        reg.promote("v2", alias="staging")
    assert state(models) == before
    with pytest.raises(CustvalError, match="no earlier champion"):
        reg.rollback()


def _hold_lock(root: str, ready: object, release: object) -> None:
    """In another process: hold the registry's lock as a promotion does, until released."""
    reg = ModelRegistry(root)
    with reg._locked():
        ready.set()  # type: ignore[attr-defined]
        release.wait(30)  # type: ignore[attr-defined]


def test_a_promotion_while_another_runs_is_refused(models: Path) -> None:
    reg = ModelRegistry(models)
    reg.register("v1")
    before = state(models)
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_lock, args=(str(models), ready, release))
    other.start()
    try:
        assert ready.wait(60)
        with pytest.raises(CustvalError, match="another promotion is running") as err:
            reg.promote("v2")
        assert f"process {other.pid}" in str(err.value)
        assert state(models) == before
    finally:
        release.set()
        other.join(30)
    # once it is done, the promotion goes through
    assert reg.promote("v2")["previous"] == "v1"


def test_a_lock_left_by_a_dead_process_is_cleared(models: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    gone = ctx.Process(target=time.sleep, args=(0,))
    gone.start()
    gone.join()
    (models / LOCK_FILE).write_text(f"{gone.pid} {time.time():.0f}\n")
    assert ModelRegistry(models).register("v1") == "champion"
    assert not (models / LOCK_FILE).exists()
    # and a live one is respected
    (models / LOCK_FILE).write_text(f"{os.getpid()} {time.time():.0f}\n")
    with pytest.raises(CustvalError, match="another promotion"):
        ModelRegistry(models).promote("v2")


def test_decisions_go_to_the_store_for_bi_tools(models: Path, store_url: str) -> None:
    reg = ModelRegistry(models, store_url=store_url)
    reg.register("v1")
    reg.register("v2")
    reg.promote("v2", reason="better", forced=True)
    with open_store(store_url) as store:
        rows = store.query(
            "SELECT action, alias, version, previous, forced, reason FROM model_decisions "
            "WHERE action <> 'clear' ORDER BY decided_at"
        )
        view = dict(store.query("SELECT version, aliases FROM v1_model_versions"))
    assert [r[:4] for r in rows] == [
        ("train", "champion", "v1", None),
        ("train", "challenger", "v2", None),
        ("promote", "champion", "v2", "v1"),
    ]
    assert rows[-1][4:] == (1, "better")
    assert view == {"v1": None, "v2": "champion"}


def test_models_commands(models: Path, tmp_path: Path) -> None:
    ModelRegistry(models).register("v1")
    listed = run("models", "list", "--models", str(models), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["aliases"] == {"champion": "v1"} and len(data["versions"]) == 3
    done = run("models", "promote", "v3", "--models", str(models), cwd=tmp_path)
    assert done.returncode == 0 and "champion: v3 (was v1)" in done.stdout
    shown = run("models", "show", "champion", "--models", str(models), cwd=tmp_path)
    detail = json.loads(shown.stdout)
    assert detail["version"] == "v3" and detail["aliases"] == ["champion"]
    assert detail["files_checked"] and detail["decisions"][-1]["previous"] == "v1"
    back = run("models", "rollback", "--models", str(models), cwd=tmp_path)
    assert back.returncode == 0 and "champion: v1 (was v3)" in back.stdout
    bad = run("models", "promote", "nope", "--models", str(models), cwd=tmp_path)
    assert bad.returncode == 2 and "no model version 'nope'" in bad.stderr
