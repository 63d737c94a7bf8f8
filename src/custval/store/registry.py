"""The model registry: a project's models folder as immutable versions with aliases.

Every trained value model is a version: a bundle folder (:mod:`custval.store.bundles`) whose
manifest keeps the data fingerprint, the training window, the metrics, the code that trained
it (custval's version and a hash of its source) and the training run's id, and whose content
hash makes any later change to it a refused load. Versions are never changed or removed here.

Two aliases name the versions in use, as MLflow's registry does since it deprecated stages:

- ``champion``: the version ``custval score`` and ``custval serve`` use;
- ``challenger``: a candidate (``custval retrain`` trains one; a later ``custval train`` is one),
  used only when named.

They live in ``registry.json`` in the models folder, with the log of every decision (action,
alias, version, the version it replaced, forced or not, why), written whole or not at all. A
change of champion also rewrites the ``ACTIVE`` file that running services follow: each worker
loads the new model off the request path and switches between requests, so none is dropped.
Two promotions at once are refused: a lock file, taken atomically, holds the registry while one
runs. With a store, each decision is also appended to its ``model_decisions`` table and the
version to its ``models`` table, for BI tools (``v1_model_versions``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custval.errors import CustvalError
from custval.store.bundles import load_bundle
from custval.store.runs import open_store

__all__ = ["ACTIVE_FILE", "ALIASES", "REGISTRY_FILE", "ModelRegistry"]

#: the file that names the version running services serve (:mod:`custval.api.state`)
ACTIVE_FILE = "ACTIVE"
REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
ALIASES = ("champion", "challenger")
#: how long a decision waits for a DuckDB store another process holds
STORE_WAIT_S = 15.0
#: a lock older than this is taken to be left by a process that died
STALE_LOCK_S = 600.0


@dataclass(frozen=True)
class Version:
    """What ``custval models list`` shows of a version (its manifest, summarised)."""

    version: str
    created_at: str | None
    model: str | None
    metrics: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    code: dict[str, Any]
    training_run: str | None
    label: dict[str, Any]


class ModelRegistry:
    """The registry of the models folder ``root`` (module docstring); ``store_url``, when
    given, also receives every decision."""

    def __init__(self, root: str | Path, store_url: str | Path | None = None) -> None:
        self.root = Path(root)
        self.store_url = store_url

    # ---- reading ----------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        """Every version in the folder, oldest first (versions are UTC timestamps)."""
        found = []
        for folder in sorted(self.root.glob("*")):
            manifest = _manifest(folder)
            if manifest is not None:
                found.append(_version(folder.name, manifest))
        return found

    def aliases(self) -> dict[str, str]:
        """Alias: version, for the aliases set."""
        return dict(self._read()["aliases"])

    def history(self) -> list[dict[str, Any]]:
        """Every decision, oldest first."""
        return list(self._read()["history"])

    def resolve(self, name: str | None = None) -> str:
        """The version ``name`` stands for: an alias, ``latest`` (the newest version) or a
        version; None is the champion (the newest version while none is set)."""
        versions = [v.version for v in self.versions()]
        if not versions:
            raise CustvalError(
                f"there is no trained model in '{self.root}'", hint="Run 'custval train' first"
            )
        aliases = self.aliases()
        if name is None:
            name = "champion" if "champion" in aliases else "latest"
        if name == "latest":
            return versions[-1]
        if name in ALIASES:
            if name not in aliases:
                raise CustvalError(
                    f"no version of '{self.root}' is the {name}",
                    hint=f"Set one with 'custval models promote VERSION --alias {name}'",
                )
            return aliases[name]
        self.check(name)
        return name

    def check(self, version: str) -> Path:
        """The folder of ``version``, refused when it is not a version here (naming those
        that are)."""
        folder = self.root / version
        if Path(version).name != version or _manifest(folder) is None:
            known = [v.version for v in self.versions()]
            shown = ", ".join(known[-5:]) or "none"
            raise CustvalError(
                f"there is no model version '{version}' in '{self.root}'",
                count=len(known),
                hint=f"Versions there (newest last): {shown}; 'custval models list' shows all",
            )
        return folder

    # ---- decisions --------------------------------------------------------------------------

    def register(self, version: str) -> str:
        """A newly trained ``version``: the champion when there is none yet, else the
        challenger. Returns the alias it got."""
        alias = "champion" if "champion" not in self.aliases() else "challenger"
        self.promote(version, alias=alias, action="train", reason="trained")
        return alias

    def promote(
        self,
        version: str,
        *,
        alias: str = "champion",
        reason: str = "",
        forced: bool = False,
        action: str = "promote",
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (checked: it loads and its hashes hold) and log the
        decision; refused while another decision is being made. Returns the decision."""
        if alias not in ALIASES:
            raise CustvalError(f"unknown alias '{alias}'", hint="Use champion or challenger")
        with self._locked():
            load_bundle(self.check(version))  # a damaged version is never promoted
            state = self._read()
            decision = {
                "decided_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                "action": action,
                "alias": alias,
                "version": version,
                "previous": state["aliases"].get(alias),
                "forced": forced,
                "reason": reason,
                "details": details or {},
            }
            state["aliases"][alias] = version
            decisions = [decision]
            if alias == "champion" and state["aliases"].get("challenger") == version:
                # promoted: no longer a candidate
                del state["aliases"]["challenger"]
                decisions.append(
                    {
                        **decision,
                        "action": "clear",
                        "alias": "challenger",
                        "version": None,
                        "previous": version,
                        "reason": "promoted to champion",
                    }
                )
            state["history"].extend(decisions)
            self._commit(state, decisions)
        return decision

    def rollback(self, *, reason: str = "") -> dict[str, Any]:
        """The champion back to the version it replaced, logged as a rollback."""
        history = [d for d in self.history() if d["alias"] == "champion"]
        if not history or not history[-1].get("previous"):
            raise CustvalError(
                f"there is no earlier champion in '{self.root}' to roll back to",
                hint="'custval models list' shows the versions; promote one by name",
            )
        return self.promote(history[-1]["previous"], reason=reason or "rollback", action="rollback")

    def record(self, decision: dict[str, Any]) -> None:
        """Log a decision that changes no alias (a challenger kept out), locked like the
        others."""
        with self._locked():
            state = self._read()
            state["history"].append(
                {"decided_at": datetime.now(UTC).isoformat(timespec="microseconds"), **decision}
            )
            self._commit(state, state["history"][-1:])

    # ---- plumbing ---------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        path = self.root / REGISTRY_FILE
        if not path.exists():
            return {"aliases": {}, "history": []}
        try:
            state = dict(json.loads(path.read_text()))
            return {"aliases": dict(state["aliases"]), "history": list(state["history"])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CustvalError(
                f"the registry '{path}' cannot be read: {exc}",
                source=str(path),
                hint="Restore it from a backup; the model versions themselves are intact",
            ) from None

    def _commit(self, state: dict[str, Any], decisions: list[dict[str, Any]]) -> None:
        """The new state on disk (and the decisions in the store) whole or not at all: the
        store first, so that a store that cannot be written changes nothing."""
        if self.store_url is not None:
            self._to_store(decisions)
        _write_atomic(self.root / REGISTRY_FILE, json.dumps(state, indent=2) + "\n")
        champion = state["aliases"].get("champion")
        if champion and any(d["alias"] == "champion" for d in decisions):
            _write_atomic(self.root / ACTIVE_FILE, champion + "\n")

    def _to_store(self, decisions: list[dict[str, Any]]) -> None:
        # a running service may be reading a DuckDB store: wait for it rather than fail
        with open_store(self.store_url, wait=STORE_WAIT_S) as store:  # type: ignore[arg-type]
            for version in {d["version"] for d in decisions if d.get("version")}:
                store.save_model(version, _manifest(self.root / version) or {})
            store.record_decisions(
                [
                    {
                        **d,
                        "decided_at": datetime.fromisoformat(d["decided_at"]).replace(tzinfo=None),
                        "forced": int(bool(d.get("forced"))),
                        "details": json.dumps(d.get("details") or {}, default=str),
                    }
                    for d in decisions
                ]
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The registry held for one decision; another at the same time is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / LOCK_FILE
        _clear_stale(lock)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise CustvalError(
                f"another promotion is running on '{self.root}' ({_holder(lock)})",
                hint="Wait for it to finish and try again; nothing was changed",
            ) from None
        try:
            os.write(fd, f"{os.getpid()} {time.time():.0f}\n".encode())
            os.close(fd)
            yield
        finally:
            lock.unlink(missing_ok=True)


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((folder / "manifest.json").read_text()))
    except (OSError, ValueError):
        return None


def _version(name: str, manifest: dict[str, Any]) -> Version:
    return Version(
        version=name,
        created_at=manifest.get("created_at"),
        model=manifest.get("model"),
        metrics=dict(manifest.get("metrics") or {}),
        data=dict(manifest.get("data") or {}),
        training=dict(manifest.get("training") or {}),
        code=dict(manifest.get("code") or {"custval": manifest.get("custval_version")}),
        training_run=manifest.get("training_run"),
        label=dict(manifest.get("label") or {}),
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CustvalError(f"cannot write '{path}': {exc}", source=str(path)) from None


def _holder(lock: Path) -> str:
    try:
        pid, since = lock.read_text().split()
        started = datetime.fromtimestamp(float(since), UTC).isoformat(timespec="seconds")
        return f"process {pid}, since {started}"
    except (OSError, ValueError):
        return "its lock file is being written"


def _clear_stale(lock: Path) -> None:
    """Remove a lock left by a process that died (gone, or held far too long)."""
    try:
        pid, since = lock.read_text().split()
    except (OSError, ValueError):
        return
    alive = True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        alive = False
    except (PermissionError, ValueError):
        pass
    if not alive or time.time() - float(since) > STALE_LOCK_S:
        lock.unlink(missing_ok=True)
