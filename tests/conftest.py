"""Shared test fixtures: a real PostgreSQL server (by URL) with a schema per test, a real HTTP
server in a thread, generated sample companies and the hand-made company's features (each built
once per session). The builders behind them are in factories.py."""

from __future__ import annotations

import copy
import gc
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from tests.factories import (
    Companies,
    HttpHandler,
    HttpServer,
    feature_rows,
    search_path_url,
    write_csv_company,
)

# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The URL of the test PostgreSQL server, from CUSTVAL_TEST_PG_URL.

    Outside CI a missing or silent server skips the test; under CI (CI=true) it fails it,
    so that a broken CI database cannot pass as a green run.
    """
    url = os.environ.get("CUSTVAL_TEST_PG_URL")
    under_ci = os.environ.get("CI", "").lower() == "true"
    if not url:
        if under_ci:
            pytest.fail("CUSTVAL_TEST_PG_URL is not set; under CI the PostgreSQL tests must run")
        pytest.skip("CUSTVAL_TEST_PG_URL is not set; PostgreSQL tests need a server")
    try:
        with psycopg.connect(url, connect_timeout=5) as con:
            con.execute("SELECT 1").fetchall()
    except psycopg.Error as exc:
        message = f"the PostgreSQL server of CUSTVAL_TEST_PG_URL does not answer: {exc}"
        if under_ci:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of the test RabbitMQ broker, from CUSTVAL_TEST_AMQP_URL (set by .ci/run): a
    missing or silent broker skips the test, and fails it under CI, as for PostgreSQL."""
    import socket
    from urllib.parse import urlparse

    url = os.environ.get("CUSTVAL_TEST_AMQP_URL")
    under_ci = os.environ.get("CI", "").lower() == "true"
    if not url:
        if under_ci:
            pytest.fail("CUSTVAL_TEST_AMQP_URL is not set; under CI the broker tests must run")
        pytest.skip("CUSTVAL_TEST_AMQP_URL is not set; the queue consumer test needs a broker")
    parts = urlparse(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=5).close()
    except OSError as exc:
        message = f"the broker of CUSTVAL_TEST_AMQP_URL does not answer: {exc}"
        if under_ci:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def spark_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect address for the Spark tests: CUSTVAL_TEST_SPARK_URL when set (a
    cluster's, or a local Spark's where Java is), else a pysail server (a Spark Connect server
    without a JVM, from the test extras) started on 127.0.0.1 for the session. Without pysail
    the tests skip on a laptop and fail under CI."""
    url = os.environ.get("CUSTVAL_TEST_SPARK_URL")
    if url:
        yield url
        return
    try:
        from pysail.spark import SparkConnectServer
    except ImportError as exc:
        message = f"the Spark tests need pysail (pip install -e '.[test]'): {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    # where pysail keeps what custval computes once (local checkpoints; without a folder it
    # computes every working table again in each query)
    checkpoints = tmp_path_factory.mktemp("sail-checkpoints")
    os.environ.setdefault("SAIL_EXECUTION__CHECKPOINT__PATH", str(checkpoints))
    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    host, port = server.listening_address
    try:
        yield f"sc://{host}:{port}"
    finally:
        # the tests' checkpointed tables release themselves on the server when collected: after
        # it stops, each would retry for minutes at the session's end
        gc.collect()
        server.stop()


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """An empty schema of its own in the test PostgreSQL database, dropped after the test."""
    schema = f"custval_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["duckdb", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store on each engine: a DuckDB file, and a schema of its own in PostgreSQL."""
    if request.param == "duckdb":
        yield str(tmp_path / "store.duckdb")
        return
    yield search_path_url(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema"))


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A threaded HTTP server on a free port of 127.0.0.1, stopped after the test."""
    handler = type("Handler", (HttpHandler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.block_on_close = False
    state = HttpServer(url=f"http://127.0.0.1:{server.server_address[1]}")
    handler.state = state
    # A short poll interval: shutdown() waits up to one interval, at every teardown.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Companies
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def companies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Companies]:
    """Generated sample companies, each generated once per session (per xdist worker):
    ``companies.shared(n, seed=, fmt=)`` to read, ``companies.copy(dest, n, seed=, fmt=)`` to
    write in. A test that wrote into a shared company fails the session at its end."""
    made = Companies(tmp_path_factory.mktemp("companies"))
    yield made
    changed = made.changed()
    assert not changed, f"a test wrote into a shared company (use companies.copy): {changed}"


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder all test processes of this run share (xdist workers' base folders have one
    parent per run); for :func:`tests.factories.built_once`."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def _hand_made_features(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list]:
    return feature_rows(write_csv_company(tmp_path_factory.mktemp("hand_made")))


@pytest.fixture
def hand_made_features(_hand_made_features: tuple[list[dict], list]) -> tuple[list[dict], list]:
    """The feature rows and catalogue of the hand-made company (factories.write_csv_company),
    computed once per session; each test gets its own copy to change."""
    return copy.deepcopy(_hand_made_features)
