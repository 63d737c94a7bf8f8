"""Shared test fixtures: a real PostgreSQL server (by URL) and a real HTTP server in a thread."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest

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


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

#: A route answers (query parameters, how many times this path was hit, 1-based) with
#: (status, body, headers); a body that is not bytes is sent as JSON.
Route = Callable[[dict[str, str], int], tuple[int, Any, dict[str, str]]]


@dataclass
class HttpServer:
    """A real HTTP server on 127.0.0.1 that tests program with routes."""

    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    #: Set at teardown; routes that hang wait on it so that their threads end.
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, path: str, handler: Route) -> str:
        """Serve ``handler`` at ``path``; returns the full URL."""
        self.routes[path] = handler
        return self.url + path


class _Handler(BaseHTTPRequestHandler):
    state: HttpServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        state = self.state
        with state.lock:
            state.hits[parts.path] += 1
            n = state.hits[parts.path]
            state.requests.append((parts.path, query, dict(self.headers)))
        handler = state.routes.get(parts.path)
        if handler is None:
            status, body, headers = 404, b"no such route", {}
        else:
            status, body, headers = handler(query, n)
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout test); nothing to tell it

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A threaded HTTP server on a free port of 127.0.0.1, stopped after the test."""
    handler = type("Handler", (_Handler,), {})
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
