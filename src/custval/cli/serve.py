"""The service's commands: ``custval serve`` and ``custval api-key``.

They register on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from custval.cli.common import (
    friendly,
    load,
    out,
)
from custval.errors import CustvalError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from custval.api.app import ServiceSettings

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.


ServeConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="The project file: its models/ folder and its store."),
]
ModelsOpt = Annotated[
    Path | None,
    typer.Option(help="The models folder (default: models/ beside the project file)."),
]
VersionOpt = Annotated[
    str,
    typer.Option(
        help="The version to serve: 'champion' (the registry's; see 'custval models'), "
        "'challenger', 'latest' or a version."
    ),
]
ServeStoreOpt = Annotated[
    str | None,
    typer.Option(
        help="The store (DuckDB file or postgresql:// URL) for stored customers, CLV models, "
        "API keys and --log-predictions (default: the project's)."
    ),
]
HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes (one per core).", min=1)]
BatchLimitOpt = Annotated[
    int, typer.Option(help="Most customers in one request (413 beyond).", min=1)
]
MaxBodyOpt = Annotated[
    float, typer.Option(help="Largest request body in MB (413 beyond).", min=0.01)
]
CorsOpt = Annotated[
    list[str] | None,
    typer.Option(help="An origin browsers may call from (repeat it); CORS is off without."),
]
LogPredictionsOpt = Annotated[
    bool,
    typer.Option(
        "--log-predictions",
        help="Keep online predictions in the store (runs of kind 'online', batched).",
    ),
]

RealtimeOpt = Annotated[
    bool,
    typer.Option(
        "--realtime",
        help="Take events (POST /v1/events, a key of scope events) and answer GET "
        "/v1/customers/{id} as of now from each customer's state (build it first: 'custval "
        "rebuild'). The service holds a DuckDB store while it runs: one worker; use PostgreSQL "
        "for several, or for batch commands beside it.",
    ),
]

NoMetricsOpt = Annotated[
    bool,
    typer.Option(
        "--no-metrics",
        help="No GET /metrics (Prometheus text: requests, errors, latency, predictions by "
        "class, the model version; no customer id in any label).",
    ),
]


# a Typer command takes one parameter per flag: the argument-count rules (PLR0913, PLR0917) do
# not fit it
@friendly
def serve(
    config: ServeConfigOpt = None,
    models: ModelsOpt = None,
    model: VersionOpt = "champion",
    store: ServeStoreOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    workers: WorkersOpt = 1,
    batch_limit: BatchLimitOpt = 1000,
    max_body_mb: MaxBodyOpt = 10.0,
    cors_origin: CorsOpt = None,
    log_predictions: LogPredictionsOpt = False,
    no_metrics: NoMetricsOpt = False,
    realtime: RealtimeOpt = False,
) -> None:
    """Serve predictions with reasons over HTTP: POST /v1/predict and /v1/predict/records,
    GET /v1/customers/{id}, /v1/models; OpenAPI at /docs and /redoc (offline: the assets are
    served from the package). Says "serving" once the port is bound; a taken port exits 2.

    Every /v1 request needs an API key (Authorization: Bearer <key>): make one with
    'custval api-key new' and give the service its line in CUSTVAL_API_KEYS, or keep it in the
    store. /healthz, /readyz and /metrics (Prometheus) are open. Bad input gets a 4xx with a
    JSON body naming the field and the customer; nothing of a customer is logged. The dashboard
    is at /dashboard (sign in with a key of read scope; see 'custval dashboard').
    """
    from custval.api.app import ServiceSettings, create_app

    if config is not None:
        project = load(config)
        models = models or project.root / "models"
        store = store or project.store
    if models is None:
        raise CustvalError("say where the models are: --config custval.toml or --models DIR")
    is_file = store is not None and not store.startswith(("postgresql://", "postgres://"))
    if is_file and not Path(str(store)).exists():
        store = None  # no scoring run yet: nothing stored to serve
    settings = ServiceSettings(
        models_dir=models.resolve(),
        model=model,
        store=store,
        batch_limit=batch_limit,
        max_body_bytes=int(max_body_mb * 2**20),
        cors_origins=cors_origin or [],
        log_predictions=log_predictions,
        metrics=not no_metrics,
        realtime=realtime,
    )
    _check_realtime(settings, workers)
    # build it once here: a missing model or key fails now, with a clear message
    service = create_app(settings)
    _run(service, settings, host, port, workers)


def _check_realtime(settings: Any, workers: int) -> None:
    """--realtime needs a store, and a DuckDB store admits one writing process."""
    if not settings.realtime:
        return
    if settings.store is None:
        raise CustvalError(
            "--realtime needs a store with a customer state",
            hint="Give --store (or --config with a store), then run 'custval rebuild'",
        )
    if workers > 1 and not settings.store.startswith(("postgresql://", "postgres://")):
        raise CustvalError(
            f"--realtime with --workers {workers} needs a PostgreSQL store: a DuckDB file has "
            "one writing process",
            hint="Use --workers 1, or keep the store in PostgreSQL (store = 'postgresql://...')",
        )
    _check_hand_built(settings)


def _check_hand_built(settings: Any) -> None:
    """The customer state keeps what the hand-built features need: a model trained with the
    generated ones (train --auto-features) cannot be answered from it."""
    from custval.flows.scoring import model_folder, trained_on_generated
    from custval.store.bundles import bundle_parts

    try:
        folder = model_folder(settings.models_dir, settings.model)
        manifest = bundle_parts(folder)[0]
    except CustvalError:
        return  # no such model: create_app says so, with its own message
    if trained_on_generated(manifest):
        raise CustvalError(
            f"--realtime answers from each customer's state, which keeps the hand-built "
            f"features; the model {folder.name} was trained with generated features "
            "(train --auto-features)",
            hint="Serve a model trained without --auto-features, or serve without --realtime",
        )


@friendly
def dashboard(
    config: ServeConfigOpt = None,
    store: ServeStoreOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
) -> None:
    """Serve the dashboard alone (custval serve also serves it, beside the API): the store's
    latest run by value class and segment, a customer's numbers and reasons, value drivers,
    segments, the CLV model, forecasts and monitoring, at http://HOST:PORT/dashboard.

    Sign in with an API key of read scope ('custval api-key new --name NAME -c PROJECT'); the
    browser keeps a session cookie for 8 hours, not the key. The pages read summaries the
    scoring runs kept, so they answer quickly on any number of customers.
    """
    from custval.api.app import ServiceSettings, create_dashboard_app

    if config is None and store is None:
        raise CustvalError("say which store to show: --config custval.toml or --store URL")
    project = load(config) if config is not None else None
    store = store or (project.store if project else None)
    is_file = store is not None and not store.startswith(("postgresql://", "postgres://"))
    if is_file and not Path(str(store)).exists():
        raise CustvalError(
            f"there is no store at '{store}': nothing to show yet",
            hint="Score the customers first: custval score -c PROJECT",
        )
    root = project.root if project else Path.cwd()
    settings = ServiceSettings(models_dir=(root / "models").resolve(), store=store)
    app = create_dashboard_app(settings)
    sock = _bind(host, port)
    out.print(f"dashboard on http://{host}:{port}/dashboard (sign in with an API key)")
    import uvicorn

    config_ = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning")
    uvicorn.Server(config_).run(sockets=[sock])


def _announce(service: FastAPI, host: str, port: int, workers: int) -> None:
    """Said once the port is bound, so that a client told "serving" can connect."""
    out.print(
        f"serving model {service.state.registry.active.version} on http://{host}:{port} "
        f"({workers} worker{'s' if workers > 1 else ''}); OpenAPI at /docs",
        highlight=False,
    )


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The port bound (listening unless ``reuse_port``, the workers' probe), or a clear error
    when it is taken or the address is not this machine's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        taken = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        raise CustvalError(
            f"cannot listen on {host}:{port}: "
            + ("the port is taken by another process" if taken else str(exc.strerror or exc)),
            hint="Stop the other process, or serve on another port with --port "
            + str(port + 1 if port else 8001)
            if taken
            else "Check --host: an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None
    if not reuse_port:
        sock.listen(2048)
    return sock


def _run(service: FastAPI, settings: ServiceSettings, host: str, port: int, workers: int) -> None:
    """The service in this process, or in ``workers`` worker processes it supervises; the
    port is bound before "serving" is said."""
    import uvicorn

    common = {
        "host": host,
        "port": port,
        "access_log": False,  # paths carry customer ids
        "log_level": "warning",
        "loop": "auto",
        "http": "auto",
    }
    if workers == 1:
        sock = _bind(host, port)
        _announce(service, host, port, workers)
        uvicorn.Server(uvicorn.Config(service, **common)).run(sockets=[sock])  # type: ignore[arg-type]
        return
    # this process only supervises the workers: its check of the store can stop
    service.state.service.close()
    if settings.metrics and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # the workers write their figures there and /metrics adds them up (read at their start)
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="custval-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["CUSTVAL_SERVE_SETTINGS"] = settings.model_dump_json()
    if hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux"):
        # the probe holds the port (SO_REUSEPORT, not listening: it takes no connection), so
        # that a port taken by another process is said here, before "serving"
        probe = _bind(host, port, reuse_port=True)
        _announce(service, host, port, workers)
        try:
            _run_workers(host, port, workers, common)
        finally:
            probe.close()
        return
    _bind(host, port).close()
    _announce(service, host, port, workers)
    uvicorn.run("custval.api.app:app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket of its own for one worker, on a port the workers share: with
    SO_REUSEPORT the kernel spreads new connections evenly over the workers' sockets (one
    shared socket lets the first worker to wake take every connection of a burst)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int, common: dict[str, Any]) -> None:
    import uvicorn

    from custval.api.app import app_from_env

    sock = _listen(host, port)
    options = {k: v for k, v in common.items() if k not in ("host", "port")}
    uvicorn.Server(uvicorn.Config(app_from_env(), **options)).run(sockets=[sock])


def _run_workers(host: str, port: int, workers: int, common: dict[str, Any]) -> None:
    """Start ``workers`` processes, each with its own socket on the port; start again one that
    dies; stop them all on SIGINT or SIGTERM."""
    import multiprocessing
    import signal
    import time

    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> Any:
        proc = context.Process(target=_worker, args=(host, port, common), daemon=False)
        proc.start()
        return proc

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    procs = [start() for _ in range(workers)]
    restarts: list[float] = []
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping:
                restarts = [t for t in restarts if t > time.monotonic() - 60] + [time.monotonic()]
                if len(restarts) > 5:  # failing at start: no endless restarts
                    out.print("workers keep stopping (6 times in a minute): stopping the service")
                    stopping = True
                    break
                out.print(f"worker {proc.pid} stopped ({proc.exitcode}); starting another")
                _forget_worker(proc.pid)
                procs[i] = start()
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=30)


def _forget_worker(pid: int | None) -> None:
    """A dead worker's live gauges (the model it served) leave /metrics; its counts stay."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _store_of(store: str | None, config: Path | None) -> str | None:
    if store is not None or config is None:
        return store

    return load(config).store


@friendly
def new_api_key(
    name: Annotated[str, typer.Option(help="Who uses the key, e.g. crm-screen.")],
    scope: Annotated[
        str,
        typer.Option(
            help="read; events (may send events: POST /v1/events); or admin (may switch models)."
        ),
    ] = "read",
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Keep it in this project's store.")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Keep it in this store (DuckDB file or PostgreSQL URL).")
    ] = None,
) -> None:
    """Make an API key and print it once. Without a store, prints the line to add to
    CUSTVAL_API_KEYS; with --store or --config, keeps its hash in the store's api_keys table."""
    from custval.api.keys import new_key

    key, stored = new_key(name, scope)
    target = _store_of(store, config)
    if target is not None:
        from custval.store import open_store

        with open_store(target) as s:
            s.add_api_key(stored.name, stored.scope, stored.sha256)
        where = "kept (as a hash) in the store"
    else:
        where = f"add this to CUSTVAL_API_KEYS (comma-separated): {stored.entry}"
    # one line each, never wrapped: they are copied
    out.print(f"key for {name} ({scope}): {key}", highlight=False, soft_wrap=True)
    out.print(f"{where}. The key is not shown again.", highlight=False, soft_wrap=True)


StoreOpt = Annotated[
    str | None, typer.Option(help="The store (DuckDB file or PostgreSQL URL) that keeps the keys.")
]
KeysConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="The project whose store keeps the keys.")
]


def _key_store(store: str | None, config: Path | None) -> str:
    target = _store_of(store, config)
    if target is None:
        raise CustvalError(
            "say which store keeps the keys: --store FILE_OR_URL or --config custval.toml",
            hint="Keys in CUSTVAL_API_KEYS are not kept anywhere: remove their line there",
        )
    return target


@friendly
def list_api_keys(store: StoreOpt = None, config: KeysConfigOpt = None) -> None:
    """List the API keys kept in a store: name, scope, when made and when revoked. Never the
    key (it is not kept) nor its hash."""
    from rich.table import Table

    from custval.store import open_store

    with open_store(_key_store(store, config), read_only=True) as s:
        keys = s.api_key_list()
    if not keys:
        out.print("the store keeps no API keys; make one with 'custval api-key new --store ...'")
        return
    table = Table("name", "scope", "created (UTC)", "revoked (UTC)", box=None)
    for name, scope, created, revoked in keys:
        table.add_row(
            name,
            scope,
            f"{created:%Y-%m-%d %H:%M}",
            "" if revoked is None else f"{revoked:%Y-%m-%d %H:%M}",
        )
    out.print(table)
    active = sum(r[3] is None for r in keys)
    out.print(f"{len(keys)} key{'s' if len(keys) != 1 else ''}, {active} active", highlight=False)


@friendly
def revoke_api_key(
    name: Annotated[str, typer.Argument(help="The key's name, as 'custval api-key list' shows.")],
    store: StoreOpt = None,
    config: KeysConfigOpt = None,
) -> None:
    """Revoke an API key kept in a store: a running service refuses it (401) from its next
    request on (DuckDB) or within 2 seconds (PostgreSQL). The key stays listed, as revoked."""
    from custval.store import open_store

    with open_store(_key_store(store, config)) as s:
        if not s.revoke_api_key(name):
            known = [r[0] for r in s.api_key_list() if r[3] is None]
            raise CustvalError(
                f"the store has no active API key named '{name}'",
                hint="Active keys: "
                + (", ".join(known) if known else "none")
                + ". See 'custval api-key list'",
            )
    out.print(f"revoked the API key '{name}'", highlight=False)
