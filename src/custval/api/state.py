"""What the requests of a worker share: the settings, the active model, what is read from the
store (keys, CLV models, segmentation, the offers' ranker) and the prediction log.

:class:`Service` holds them; ``create_app`` builds it once and keeps it in ``app.state.service``,
where the route handlers reach it (:func:`custval.api.deps.get_service`). The model and the store's
contents change while the service runs (an activation, a new scoring run, a revoked key), so
each is read through an object that switches atomically: a request takes a reference once and
finishes on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from custval.api.http import ApiError
from custval.api.keys import ApiKey, KeyRing, parse_env
from custval.api.metrics import serving
from custval.api.online import OnlineModel
from custval.api.prediction_log import PredictionLog
from custval.api.realtime import Realtime
from custval.errors import CustvalError
from custval.flows.offers import OFFER_FILES, ServedOffers
from custval.models.btyd_clv import clv_models_from_json
from custval.models.clv_serving import ServedClv
from custval.store import open_store
from custval.store.registry import ACTIVE_FILE, ModelRegistry
from custval.store.snapshot import CustomerSnapshot

__all__ = ["ACTIVE_FILE", "Registry", "Service", "ServiceSettings", "StoreState"]

log = logging.getLogger("custval.api")

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")


class ServiceSettings(BaseModel):
    """What ``custval serve`` passes to the app (also through ``CUSTVAL_SERVE_SETTINGS``)."""

    models_dir: Path
    model: str = "champion"
    store: str | None = None
    batch_limit: int = Field(1000, ge=1)
    max_body_bytes: int = Field(10 * 2**20, ge=1024)
    cors_origins: list[str] = Field(default_factory=list)
    log_predictions: bool = False
    top_k: int = Field(3, ge=1)
    #: GET /metrics and the counting behind it (custval.api.metrics)
    metrics: bool = True
    #: the dashboard under /dashboard (custval.api.dashboard)
    dashboard: bool = True
    #: POST /v1/events and customers' numbers as of now (custval.api.realtime)
    realtime: bool = False


# ---- the active model -----------------------------------------------------------------------


class Registry:
    """The active model, shared by all requests of a worker and switched atomically: a request
    takes the reference once and finishes on that model. Workers follow the ACTIVE file of the
    models folder (checked at most once a second, the new model loaded off the request path)."""

    def __init__(self, settings: ServiceSettings, *, worker: bool = False) -> None:
        self.settings = settings
        self.dir = settings.models_dir
        stamp = self._marker_stamp()
        if worker and stamp[1]:
            # a worker (re)started by uvicorn serves what is active now, and never decides it:
            # a restart must not undo an activation
            version = stamp[1]
        else:
            # the registry's champion (the newest version while none is set), an alias,
            # "latest" or a version
            wanted = None if settings.model == "champion" else settings.model
            version = ModelRegistry(self.dir).resolve(wanted)
        self._active = self.load(version)
        if not worker:
            self._write_marker(version)
        self._marker_seen = self._marker_stamp()
        self._checked = time.monotonic()
        self._loading = False
        self._lock = threading.Lock()

    def folder(self, version: str) -> Path:
        """The version's folder; a 404 for a name that is not a version (nor a path out of the
        models folder)."""
        if not _VERSION.fullmatch(version) or ".." in version:
            raise ApiError(404, f"there is no model version '{version[:100]}'")
        folder = self.dir / version
        if not (folder / "manifest.json").exists():
            raise ApiError(404, f"there is no model version '{version}'")
        return folder

    def load(self, version: str) -> OnlineModel:
        return OnlineModel(self.folder(version), top_k=self.settings.top_k)

    @property
    def _active(self) -> OnlineModel:
        return self._model

    @_active.setter
    def _active(self, model: OnlineModel) -> None:
        # every switch (start, activation, following another worker) is the served version
        self._model = model
        if self.settings.metrics:
            serving(model.version)

    @property
    def active(self) -> OnlineModel:
        now = time.monotonic()
        if now - self._checked > 1.0:
            self._checked = now
            self._follow_marker()
        return self._active

    def activate(self, model: OnlineModel) -> None:
        self._active = model
        self._write_marker(model.version)
        self._marker_seen = self._marker_stamp()

    def _marker_stamp(self) -> tuple[float, str]:
        path = self.dir / ACTIVE_FILE
        try:
            return path.stat().st_mtime, path.read_text().strip()
        except OSError:
            return 0.0, ""

    def _write_marker(self, version: str) -> None:
        tmp = self.dir / f".{ACTIVE_FILE}.{os.getpid()}"
        tmp.write_text(version + "\n")
        tmp.replace(self.dir / ACTIVE_FILE)

    def _follow_marker(self) -> None:
        stamp = self._marker_stamp()
        if stamp == self._marker_seen or not stamp[1] or stamp[1] == self._active.version:
            self._marker_seen = stamp
            return
        with self._lock:
            if self._loading:
                return
            self._loading = True

        def load() -> None:
            try:
                self._active = self.load(stamp[1])
                self._marker_seen = stamp
            except Exception as exc:  # keep serving the model we have
                log.error("cannot switch to model %s: %s", stamp[1], type(exc).__name__)
            finally:
                self._loading = False

        threading.Thread(target=load, daemon=True, name="custval-model-switch").start()


# ---- what the store holds for the service ---------------------------------------------------


def _with_store(
    settings: ServiceSettings, read: Callable[[Any], Any], *, migrate: bool, attempts: int = 20
) -> Any:
    """``read(store)`` on the settings' store; a DuckDB file locked by another process (a
    scoring run, another worker starting) is retried for a few seconds."""

    for attempt in range(attempts):
        try:
            with open_store(str(settings.store), read_only=not migrate) as store:
                return read(store)
        except CustvalError as exc:
            if "lock" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.25)
    return None


def _keys(settings: ServiceSettings, *, migrate: bool, attempts: int = 20) -> KeyRing:
    """The keys of ``CUSTVAL_API_KEYS`` and of the store; none at all is an error, since every
    ``/v1`` request would be refused."""
    keys: list[ApiKey] = parse_env()
    if settings.store:
        rows = _with_store(settings, lambda s: s.api_keys(), migrate=migrate, attempts=attempts)
        keys += [ApiKey(*row) for row in rows]
    if not keys:
        raise CustvalError(
            "the service has no API keys: every /v1 request would be refused",
            hint="Make one with 'custval api-key new --name NAME --scope read' and put its line "
            "in CUSTVAL_API_KEYS, or add --store to keep it in the store",
        )
    return KeyRing(keys)


def _clv_models(
    settings: ServiceSettings, *, migrate: bool, have: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The CLV models of the store's latest scoring run, built to predict: the BTYD models
    (``fitted``) and, when the run chose a machine-learned CLV, that model (``served``, a
    :class:`custval.models.clv_serving.ServedClv`). ``have``: the models already loaded, kept when
    they are the latest run's."""
    if not settings.store:
        return None

    def read(store: Any) -> tuple[dict[str, Any] | None, bytes | None]:
        saved = store.latest_clv_models()
        if saved is None or (have is not None and have.get("run_id") == saved["run_id"]):
            return saved, None
        spend = saved.get("spend_model")
        if not spend:
            return saved, None
        try:
            return saved, store.run_file(saved["run_id"], spend["file"]) or b""
        except CustvalError:  # damaged: refused by its hash below
            return saved, b""

    saved, payload = _with_store(settings, read, migrate=migrate)
    if saved is None:
        return None
    if have is not None and have.get("run_id") == saved["run_id"]:
        return have
    # the models are built once; every request uses them
    out: dict[str, Any] = {**saved, "fitted": None, "served": None}
    if "purchases" in saved:  # not when the run's BTYD model could not be fitted
        out["fitted"] = clv_models_from_json(saved)
    if payload is not None:
        try:
            out["served"] = ServedClv.load(saved["spend_model"], payload)
        except Exception as exc:  # another scikit-learn, a damaged file, a newer LightGBM
            # no CLV rather than the BTYD one or the previous run's; kept for this run, so
            # the file is not read again every refresh; the value predictions go on
            out["served_error"] = str(exc).split("\n", 1)[0]
            log.error("the run's CLV model cannot be loaded: %s", out["served_error"])
    return out


def _served_offers(
    settings: ServiceSettings, have: ServedOffers | None = None
) -> ServedOffers | None:
    """The next best offers of the store's latest scoring run, ready for ``POST
    /v1/recommend``; None when that run made none. ``have``: kept when it is that run's."""
    if not settings.store:
        return None

    def read(store: Any) -> tuple[str, Any, dict[str, bytes]] | None:
        run_id = store.latest_run()
        if run_id is None:
            return None
        if have is not None and have.run_id == run_id:
            return run_id, None, {}
        files = {name: store.run_file(run_id, name) for name in OFFER_FILES.values()}
        if any(v is None for v in files.values()):
            return None
        as_of = store.query("SELECT as_of FROM runs WHERE run_id = ?", (run_id,))[0][0]
        return run_id, as_of, files

    found = _with_store(settings, read, migrate=False)
    if found is None:
        return None
    if have is not None and have.run_id == found[0]:
        return have
    run_id, as_of, files = found
    # DuckDB gives a date, PostgreSQL's driver too; text only from an older store
    day = as_of if isinstance(as_of, date) else date.fromisoformat(str(as_of)[:10])
    return ServedOffers(run_id, day, files)


def _snapshot_cache(settings: ServiceSettings) -> Path:
    """Where the snapshots of this store go: one folder per store, in the temporary folder."""
    digest = hashlib.sha256(str(settings.store).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "custval-snapshots" / digest


def _snapshot(
    settings: ServiceSettings, have: CustomerSnapshot | None = None
) -> CustomerSnapshot | None:
    """The snapshot of the store's latest runs for the recommendations route (made once per
    run, :mod:`custval.store.snapshot`); the older ones of this store are removed."""
    if not settings.store:
        return None
    cache = _snapshot_cache(settings)
    found = _with_store(settings, lambda s: CustomerSnapshot.load(s, cache), migrate=False)
    if found is not None and (have is None or have.folder != found.folder):
        for old in cache.glob("*-*"):  # mapped files stay readable to whoever has them open
            if old != found.folder and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return found  # type: ignore[no-any-return]


def _segment_model(settings: ServiceSettings) -> tuple[str, dict[str, Any]] | None:
    """The latest segmentation run that places customers: its run id and model."""
    if not settings.store:
        return None
    return _with_store(settings, lambda s: s.latest_segment_model(), migrate=False)  # type: ignore[no-any-return]


def _file_stamp(settings: ServiceSettings) -> tuple[int, int] | None:
    """When a DuckDB store file (and its write-ahead log) last changed; None for PostgreSQL."""
    url = str(settings.store or "")
    if not url or url.startswith(("postgresql://", "postgres://")):
        return None
    path = Path(url.removeprefix("duckdb://"))
    stamps = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            stamps.append(p.stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return stamps[0], stamps[1]


class StoreState:
    """The keys and the CLV models a worker uses, read again from the store every
    ``interval`` seconds in a thread: a new scoring run's models are used without a restart.
    Keys are read again sooner, so that a revoked key stops working at once: from a DuckDB
    file as soon as the file has changed (checked on each request, a stat), from PostgreSQL
    every ``keys_interval`` seconds."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        worker: bool,
        interval: float = 30.0,
        keys_interval: float = 2.0,
    ) -> None:
        self.settings, self.interval, self.keys_interval = settings, interval, keys_interval
        # a DuckDB file is watched for other processes' writes (a key revoked); a service
        # taking events holds it, so no other process writes, and its own writes would look
        # like changes on every request
        self._stamp = None if settings.realtime else _file_stamp(settings)
        self._keys_lock = threading.Lock()
        self.ring = _keys(settings, migrate=not worker)
        self.clv = _clv_models(settings, migrate=False)
        self.segments = _segment_model(settings)
        self.offers = _served_offers(settings)
        self.snapshot = _snapshot(settings)
        self._snapshot_stamp = self._stamp
        self._stop = threading.Event()
        if settings.store:
            threading.Thread(target=self._refresh, daemon=True, name="custval-store").start()

    def key_ring(self) -> KeyRing:
        """The keys now (for the key check and :class:`custval.api.http.BodyLimit`): read
        again first when the DuckDB store file has changed since they were read (a key
        revoked by ``custval api-key revoke``); one try, so a store busy being written keeps
        the keys read before and is tried again on the next request."""
        if self._stamp is None:
            return self.ring
        stamp = _file_stamp(self.settings)
        if stamp != self._stamp and self._keys_lock.acquire(blocking=False):
            try:
                self.ring = _keys(self.settings, migrate=False, attempts=1)
                self._stamp = stamp
            except Exception as exc:  # locked by a writer: the keys we have, for now
                log.debug("keys not read again: %s", type(exc).__name__)
            finally:
                self._keys_lock.release()
        return self.ring

    def _refresh(self) -> None:
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("keys", lambda: setattr(self, "ring", _keys(self.settings, migrate=False))),
            (
                "CLV models",
                lambda: setattr(
                    self, "clv", _clv_models(self.settings, migrate=False, have=self.clv)
                ),
            ),
            ("segments", lambda: setattr(self, "segments", _segment_model(self.settings))),
            (
                "offers",
                lambda: setattr(self, "offers", _served_offers(self.settings, self.offers)),
            ),
            ("snapshot", self._new_snapshot),
        )
        last = time.monotonic()
        while not self._stop.wait(self.keys_interval):
            if self._stamp is not None and _file_stamp(self.settings) != self._snapshot_stamp:
                # a DuckDB store changed (a new run, perhaps): its snapshot within seconds
                self._guarded("snapshot", self._new_snapshot)
            due = time.monotonic() - last >= self.interval
            if not due and self._stamp is None:  # PostgreSQL: the keys on their own
                steps_now = steps[:1]
            elif due:
                last = time.monotonic()
                steps_now = steps
            else:
                continue
            # each on its own: a failure of one leaves the others refreshed
            for what, step in steps_now:
                self._guarded(what, step)

    @staticmethod
    def _guarded(what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # keep what we have; say why without details
            log.error("%s not refreshed: %s", what, type(exc).__name__)

    def _new_snapshot(self) -> None:
        stamp = _file_stamp(self.settings)
        self.snapshot = _snapshot(self.settings, self.snapshot)
        self._snapshot_stamp = stamp

    def close(self) -> None:
        self._stop.set()


# ---- all of it ------------------------------------------------------------------------------


class Service:
    """Everything the requests of a worker share, loaded now (a clear error if it cannot), so
    that a started service is ready. ``worker``: one of several uvicorn workers, which serves
    the active model and opens the store read-only."""

    def __init__(self, settings: ServiceSettings, *, worker: bool = False) -> None:
        self.settings = settings
        self.registry = Registry(settings, worker=worker)
        self.store_state = StoreState(settings, worker=worker)
        #: where ``--log-predictions`` keeps the predictions; None when they are not kept
        self.prediction_log: PredictionLog | None = None
        #: events and numbers as of now (``--realtime``); None when the service takes none
        self.realtime: Realtime | None = None
        if settings.realtime:
            if not settings.store:
                raise CustvalError("--realtime needs --store: the events and states go there")
            self.realtime = Realtime(settings.store)
        if settings.log_predictions:
            if not settings.store:
                raise CustvalError("--log-predictions needs --store: the predictions go there")
            self.prediction_log = PredictionLog(settings.store)

    def check_batch(self, n: int, what: str = "customers") -> None:
        """A 413 for more customers (or events) in one request than the batch limit."""
        if n > self.settings.batch_limit:
            raise ApiError(
                413,
                f"{n:,} {what} in one request; the limit is {self.settings.batch_limit:,}: "
                "send them in several requests",
            )

    def close(self) -> None:
        """Stops the store's refresh and writes the predictions still waiting (at shutdown)."""
        self.store_state.close()
        if self.realtime is not None:
            self.realtime.close()
        if self.prediction_log is not None:
            self.prediction_log.close()
