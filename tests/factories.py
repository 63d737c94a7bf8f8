"""Builders that several test files share, in one place.

- the hand-made company (``write_csv_company`` and its tables), whose features
  test_features.py computes by hand; raw sources as small in-memory tables (``raw_table``);
- generated sample companies (:class:`Companies`: each generated once per session and shared
  read-only, or copied for a test that writes into the folder; the ``companies`` fixture of
  conftest.py);
- BTYD draws: frequency/recency/T (or n) simulated from known parameters;
- planted structure: customers with planted segments, customers with a planted chance of high
  value;
- one finite-difference check of analytic gradients;
- the command line run as a user runs it, and a real HTTP server programmed with routes.

Test modules import from here (or take the fixtures of conftest.py), never from each other.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

if TYPE_CHECKING:
    from custval.data.synth import SynthResult

# =============================================================================================
# The command line
# =============================================================================================


def run(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``custval ARGS`` in ``cwd`` as a user runs it: a subprocess, its output captured, a wide
    terminal (tables are not wrapped) and without CUSTVAL_DEBUG (errors are shown as users see
    them, without a traceback), CUSTVAL_PROGRESS or CUSTVAL_LOG_LEVEL (progress and log lines
    as by default), plus ``env``."""
    unset = {"CUSTVAL_DEBUG", "CUSTVAL_PROGRESS", "CUSTVAL_LOG_LEVEL"}
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "custval", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**base, "COLUMNS": "200", **(env or {})},
    )


# =============================================================================================
# The hand-made company: features computed by hand in test_features.py
# =============================================================================================
# as_of is 2024-03-01. Rows in AFTER lie on or after as_of and must not change any feature.

AS_OF = "2024-03-01"

CRM = [
    (
        "crm_id",
        "signup_date",
        "birth_date",
        "region",
        "acquisition_channel",
        "plan",
        "services",
        "segment_label",
    ),
    ("C1", "2023-06-01", "1990-03-01", "North", "search", "premium", "streaming;backup", "vip"),
    ("c2 ", "15.12.2023", "", "south", "social", "basic", "", ""),
    ("C3", "2024-04-01", "1980-01-01", "east", "direct", "free", "", ""),
    ("C4", "2023/01/01", "2000-06-30", "west", "referral", "free", "support", "occasional"),
]
ID_MAP = [
    ("crm_id", "account_id", "visitor_id"),
    ("C1", "A1", "V1"),
    ("C2", "a2", ""),
    ("C3", "A3", "V3"),
    ("C4", "", "V4"),
]
TRANSACTIONS = [
    ("order_id", "account_id", "ts", "amount", "category", "channel"),
    ("O1", "A1", "2024-01-01 10:00:00", "100.00", "books", "web"),
    ("O2", "A1", "2024/01/01 15:00", "50.00", "home", "app"),
    ("O3", "A1", "15.01.2024 09:00", "1,200.00", "Home", "web"),
    ("O4", "A1", "2024-02-10 12:00:00", "30.00", "books", "web"),
    ("R1", "A1", "2024-02-12 08:00:00", "-50.00", "home", "web"),
    ("O6", "A2", "2024-02-20 11:00:00", "20.00", "sports", "branch"),
    ("O6", "A2", "2024-02-20 11:00:00", "20.00", "sports", "branch"),  # exact duplicate
    ("O7", " a2 ", "2099-01-01 10:00:00", "10.00", "sports", "branch"),  # future: dropped
    ("O8", "A9", "2024-01-01 10:00:00", "5.00", "books", "web"),  # not in the id map
    ("O9", "A1", "2024-01-20 10:00:00", "0.00", "", ""),  # a free order: categories unknown
]
WEB = [
    (
        "session_id",
        "visitor_id",
        "started_at",
        "page_views",
        "duration_sec",
        "blogs_viewed",
        "videos_viewed",
        "whitepapers_viewed",
        "converted",
    ),
    ("S1", "V1", "2024-02-01 10:00:00", "10", "600", "1", "0", "1", "true"),
    ("S2", "v1", "2024-02-15 10:00:00", "4", "120", "0", "2", "0", "false"),
    ("S3", "V4", "2024-01-10 10:00:00", "", "60", "0", "0", "0", "no"),
]
PRODUCT = [
    ("account_id", "date", "features_used", "sessions", "time_sec"),
    ("A1", "2024-02-01", "3", "2", "1200"),
    ("A1", "2024-02-02", "5", "1", "600"),
    ("A2", "2024-02-25", "1", "1", "60"),
]
TICKETS = [
    ("ticket_id", "crm_id", "opened_at", "kind", "resolved", "resolution_hours"),
    ("T1", "C1", "2024-02-01 09:00:00", "complaint", "true", "5"),
    ("T2", "c2", "2024-02-20 09:00:00", "question", "", ""),
    ("T3", "C2", "2024-01-05 09:00:00", "incident", "false", ""),
]

# On or after as_of: must change nothing.
AFTER = {
    "crm_customers": [("C5", "2024-03-01", "1970-01-01", "north", "search", "premium", "x", "")],
    "id_map": [("C5", "A5", "V5")],
    "transactions": [
        ("O10", "A1", "2024-03-01 00:00:00", "999.00", "garden", "phone"),
        ("O11", "A2", "2024-03-05 10:00:00", "5.00", "books", "web"),
        ("O12", "A5", "2024-03-02 10:00:00", "5.00", "books", "web"),
        ("R2", "A1", "2024-03-02 10:00:00", "-100.00", "books", "web"),
    ],
    "web_sessions": [
        ("S4", "V1", "2024-03-01 00:00:00", "100", "6000", "9", "9", "9", "true"),
        ("S5", "V5", "2024-03-03 00:00:00", "1", "1", "1", "1", "1", "true"),
    ],
    "product_usage": [("A1", "2024-03-01", "50", "9", "9000"), ("A2", "2024-04-01", "1", "1", "1")],
    "interactions": [("T4", "C1", "2024-03-10 09:00:00", "complaint", "true", "1")],
}

TABLES = {
    "crm_customers": CRM,
    "id_map": ID_MAP,
    "transactions": TRANSACTIONS,
    "web_sessions": WEB,
    "product_usage": PRODUCT,
    "interactions": TICKETS,
}


def rows(name: str, after: bool = False) -> list[tuple]:
    """Header and rows of one table, with the after-as_of rows when ``after``."""
    return list(TABLES[name]) + (AFTER.get(name, []) if after else [])


def project_toml(uris: dict[str, str], extra: dict[str, str] | None = None) -> str:
    """A project file whose sources are at ``uris`` (name -> uri); ``extra`` adds lines per
    source (e.g. table = "x")."""
    extra = extra or {}
    spec = {
        "crm_customers": ("customers", "crm_id", {"customer_id": "crm_id"}),
        "transactions": (
            "transactions",
            "account_id",
            {"customer_id": "account_id", "timestamp": "ts"},
        ),
        "web_sessions": (
            "web_sessions",
            "visitor_id",
            {"customer_id": "visitor_id", "timestamp": "started_at"},
        ),
        "product_usage": ("product_usage", "account_id", {"customer_id": "account_id"}),
        "interactions": (
            "interactions",
            "crm_id",
            {"customer_id": "crm_id", "timestamp": "opened_at"},
        ),
        "id_map": ("id_map", None, {}),
    }
    lines = [
        f'as_of = "{AS_OF}"',
        'time_unit = "weeks"',
        "[identity]",
        'map_source = "id_map"',
        'primary = "crm_id"',
        "[features]",
        "trend_window_days = 30",
    ]
    for name, uri in uris.items():
        kind, ns, cols = spec[name]
        lines += [f"[sources.{name}]", f'kind = "{kind}"', f'uri = "{uri}"']
        if ns:
            lines.append(f'id_namespace = "{ns}"')
        if name in extra:
            lines.append(extra[name])
        if cols:
            lines.append(f"[sources.{name}.columns]")
            lines += [f'{k} = "{v}"' for k, v in cols.items()]
    return "\n".join(lines) + "\n"


def write_csv_company(folder: Path, after: bool = False) -> Path:
    """Write the company as CSV files and a project file; returns the project file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        with (folder / f"{name}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows(name, after))
    config = folder / "custval.toml"
    config.write_text(project_toml({name: f"{name}.csv" for name in TABLES}))
    return config


def assert_same_rows(
    left: list[dict],
    right: list[dict],
    tolerance: float = 1e-9,
    looser: dict[str, float] | None = None,
    key: str = "customer_id",
) -> None:
    """Value for value: the same rows (by ``key``) and columns; numbers within ``tolerance``
    (relative; ``looser`` for the columns it names), everything else equal."""
    assert len(left) == len(right)
    assert [r[key] for r in left] == [r[key] for r in right]
    assert list(left[0]) == list(right[0])
    for a, b in zip(left, right, strict=True):
        for column, value in a.items():
            other = b[column]
            if isinstance(value, float) and isinstance(other, float | int):
                if math.isnan(value):
                    assert math.isnan(other), (a[key], column, value, other)
                else:
                    rel = (looser or {}).get(column, tolerance)
                    assert other == pytest.approx(value, rel=rel, abs=1e-12), (
                        a[key],
                        column,
                    )
            else:
                assert value == other, (a[key], column, value, other)


def broken_company(folder: Path) -> Path:
    """The hand-made company with contract violations: an impossible and an unreadable date, a
    negative page count and a flag that is no flag; returns the project file's path."""
    config = write_csv_company(folder)
    tx = list(TABLES["transactions"])
    tx[2] = ("O2", "A1", "2024-13-45 99:00", "50.00", "home", "app")
    tx[3] = ("O3", "A1", "next tuesday", "1,200.00", "home", "web")
    web = list(TABLES["web_sessions"])
    web[1] = ("S1", "V1", "2024-02-01 10:00:00", "-3", "600", "1", "0", "1", "maybe")
    for name, rows_ in (("transactions", tx), ("web_sessions", web)):
        with (folder / f"{name}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows(rows_)
    return config


def contract_report(project: Any) -> list[tuple]:
    """Every finding of validating ``project``'s sources on its engine, sorted, as tuples."""
    from custval import flows
    from custval.data import engine

    con = engine.connect(project.engine)
    raw = flows.open_all(project, con)
    found = flows.validate(project, con, raw)
    return sorted(
        (f.source, f.column, f.severity, f.problem, f.count, tuple(map(str, f.examples)))
        for r in found
        for f in r.findings
    )


def run_rows(store: Path, table: str, order: str) -> list[dict]:
    """The rows of the latest succeeded scoring run in ``table`` of the DuckDB store, without
    the run id, in ``order``."""
    import duckdb

    con = duckdb.connect(str(store), read_only=True)
    try:
        run_id = con.execute(
            "SELECT run_id FROM runs WHERE kind = 'score' AND status = 'succeeded' "
            "ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()[0]
        found = con.execute(
            f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? ORDER BY {order}", [run_id]
        ).fetch_arrow_table()
    finally:
        con.close()
    return found.to_pylist()


def feature_rows(config: Path) -> tuple[list[dict], list]:
    """The feature table of the project at ``config`` (prepared and built as the CLI does), as
    rows, with its catalogue."""
    from custval import flows
    from custval.config import load_project

    project = load_project(config)
    ft = flows.features(project, flows.prepare(project))
    return ft.to_pyarrow().to_pylist(), ft.catalogue


# =============================================================================================
# Raw sources
# =============================================================================================


def raw_table(con: Any, name: str, columns: dict[str, list[str | None]]) -> Any:
    """A raw source as a CSV export reads (every column text, blanks as they were written), as
    a temporary table ``name`` on the Ibis connection ``con``."""
    import pyarrow as pa

    data = pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
    return con.create_table(name, data, temp=True)


# =============================================================================================
# Generated sample companies
# =============================================================================================


def _fingerprint(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


Format = Literal["csv", "parquet", "duckdb"]


class Companies:
    """Sample companies of :func:`custval.data.synth.generate`, each generated once into
    ``root`` and handed out again on later requests (a cache for one session of one worker).

    :meth:`shared` gives the cached folder itself: tests must only read it (open its sources,
    prepare it, point ``-t`` at a file and write their output elsewhere). A test that writes
    into the company folder (a store beside the project file, a trained model, another project
    file) takes :meth:`copy`. :meth:`changed` lists shared folders whose files changed after
    generation; the ``companies`` fixture fails the session on any.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[int, int, str], tuple[SynthResult, dict]] = {}

    def shared(self, n: int, *, seed: int, fmt: Format = "parquet") -> SynthResult:
        """The company of ``n`` customers from ``seed`` in ``fmt``: read only."""
        from custval.data.synth import generate

        key = (n, seed, fmt)
        if key not in self._made:
            result = generate(n, self.root / f"n{n}-seed{seed}-{fmt}", seed=seed, fmt=fmt)
            self._made[key] = (result, _fingerprint(result.out))
        return self._made[key][0]

    def copy(self, dest: Path, n: int, *, seed: int, fmt: Format = "parquet") -> SynthResult:
        """A copy of that company at ``dest`` (a folder that must not exist yet), to write in.

        The project file names its sources relative to itself, so the copy stands alone."""
        from custval.data.synth import SynthResult

        source = self.shared(n, seed=seed, fmt=fmt)
        shutil.copytree(source.out, dest)
        return SynthResult(
            out=dest,
            files={k: dest / v.relative_to(source.out) for k, v in source.files.items()},
            rows=dict(source.rows),
            config_path=dest / source.config_path.relative_to(source.out),
        )

    def changed(self) -> list[str]:
        """Shared companies whose folder no longer holds exactly the files generated."""
        return [
            f"{result.out}: {sorted(set(_fingerprint(result.out).items()) ^ set(before.items()))}"
            for result, before in self._made.values()
            if _fingerprint(result.out) != before
        ]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # the other xdist worker waits here
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_once(shared: Path, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``shared/name``, made by ``build(folder)`` by the first test process that
    asks (the others wait for it): what is slow to make and the same for every worker (a
    trained company) is made once per test run, not once per worker. Read only: copy it to
    write in it. A build that failed leaves no folder, so the next asker builds again."""
    folder = shared / name
    with _locked(shared / f"{name}.lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            try:
                build(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            (folder / ".built").touch()
    return folder


def planted_dirt(company: SynthResult) -> dict:
    """The counts of every defect the generator planted (truth/dirt.json)."""
    return json.loads((company.out / "truth" / "dirt.json").read_text())


# =============================================================================================
# BTYD draws: summaries simulated from known parameters (vectorised over customers)
# =============================================================================================


def simulate_bgnbd(n, r, alpha, a, b, seed=0, t_max=52.0, modified=False, t_min=1.0):
    """BG/NBD (or MBG/NBD) summaries (x, t_x, T): x = min(K, N(T)), t_x = T * Beta(x, N - x + 1),
    ages T uniform on [t_min, t_max]."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(t_min, t_max, n)
    n_events = rng.poisson(lam * T)
    # repeat purchases made before dropping out: geometric on 1, 2, ... (0, 1, ... for MBG)
    k = rng.geometric(p) - (1 if modified else 0)
    x = np.minimum(k, n_events)
    # the x-th of N uniform event times on [0, T]
    pos = x > 0
    tx = np.zeros(n)
    tx[pos] = T[pos] * rng.beta(x[pos], n_events[pos] - x[pos] + 1)
    return x.astype(float), tx, T


def simulate_pnbd(n, r, alpha, s, beta, seed=0, t_max=52.0):
    """Pareto/NBD summaries (x, t_x, T): purchases at rate lambda until an exponential lifetime."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    mu = rng.gamma(s, 1 / beta, n)
    T = rng.uniform(1.0, t_max, n)
    alive_until = np.minimum(rng.exponential(1 / mu), T)
    x = rng.poisson(lam * alive_until)
    tx = np.where(x > 0, alive_until * rng.beta(np.maximum(x, 1), 1), 0.0)
    return x.astype(float), tx, T


def simulate_gg(n, p, q, gamma, seed=0):
    """Gamma-Gamma spend: (x, mean spend of x purchases) with nu ~ Gamma(q, gamma) per customer."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 15, n).astype(float)
    nu = rng.gamma(q, 1 / gamma, n)
    m = rng.gamma(p * x, 1 / (nu * x))
    return x, m


def simulate_bgbb(
    params: tuple[float, float, float, float], n_customers: int, n_periods: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw (x, t_x, n) from the BG/BB story: dropout before each opportunity, then Bernoulli."""
    a, b, g, d = params
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, n_customers)
    theta = rng.beta(g, d, n_customers)
    # opportunities alive: P(L = k) = theta (1-theta)^k, k = 0, 1, ...
    alive_for = rng.geometric(theta) - 1
    t = np.arange(1, n_periods + 1)
    buys = (rng.random((n_customers, n_periods)) < p[:, None]) & (t[None, :] <= alive_for[:, None])
    x = buys.sum(axis=1)
    tx = np.where(x > 0, n_periods - np.argmax(buys[:, ::-1], axis=1), 0)
    return x, tx, np.full(n_customers, n_periods)


# =============================================================================================
# Planted structure
# =============================================================================================

#: four planted segments: (recency days, orders, revenue, tenure days) medians
PLANTED_SEGMENTS = np.array(
    [[10, 12, 2000, 800], [200, 2, 60, 700], [30, 4, 300, 60], [400, 1, 20, 1200]], float
)


def planted_segments(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers drawn around the four PLANTED_SEGMENTS (lognormal noise), and each one's
    segment."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n)
    noise = lambda s: rng.lognormal(0, s, n)  # noqa: E731
    X = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "recency_days": PLANTED_SEGMENTS[truth, 0] * noise(0.25),
            "orders": np.maximum(1, np.round(PLANTED_SEGMENTS[truth, 1] * noise(0.25))),
            "revenue": PLANTED_SEGMENTS[truth, 2] * noise(0.25),
            "tenure_days": PLANTED_SEGMENTS[truth, 3] * noise(0.2),
        }
    )
    return X, truth


def value_customers(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers whose chance of high value rises with frequency and falls with recency days,
    with a plan (categorical) that matters, a noise column and missing values; and the labels."""
    rng = np.random.default_rng(seed)
    freq = rng.poisson(3, n).astype(float)
    days = rng.exponential(60, n).round()
    plan = rng.choice(["free", "basic", "premium"], n, p=[0.5, 0.3, 0.2])
    region = rng.choice(["north", "south", "east"], n)
    noise = rng.normal(size=n)
    score = (
        -1.0
        + 0.6 * freq
        - 0.02 * days
        + np.select([plan == "premium", plan == "basic"], [1.5, 0.5], 0.0)
    )
    y = (rng.random(n) < expit(score)).astype(float)
    days_with_gaps = days.copy()
    days_with_gaps[rng.random(n) < 0.05] = np.nan
    X = pd.DataFrame(
        {
            "frequency": freq,
            "days_since_last": days_with_gaps,
            "plan": plan,
            "region": region,
            "noise": noise,
        }
    )
    return X, y


# =============================================================================================
# Gradients
# =============================================================================================


def numeric_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, rel_step: float = 1e-6
) -> np.ndarray:
    """Central finite differences of the scalar function ``f`` at ``x``; component j is
    stepped by ``rel_step * |x_j|`` (by ``rel_step`` where x_j is 0)."""
    x = np.asarray(x, dtype=float)
    grad = np.empty(x.size)
    for j in range(x.size):
        h = rel_step * abs(x[j]) or rel_step
        up, down = x.copy(), x.copy()
        up[j] += h
        down[j] -= h
        grad[j] = (f(up) - f(down)) / (2 * h)
    return grad


def assert_gradient_close(
    grad: np.ndarray,
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    *,
    rtol: float = 1e-5,
    atol: float = 0.0,
    atol_of_max: float = 0.0,
    rel_step: float = 1e-6,
) -> np.ndarray:
    """Assert that the analytic ``grad`` of ``f`` at ``x`` equals central finite differences,
    component by component within ``rtol``, with an absolute floor of ``atol`` plus
    ``atol_of_max`` times the largest finite-difference component (for components that nearly
    cancel). Returns the finite differences."""
    fd = numeric_gradient(f, x, rel_step)
    floor = atol + atol_of_max * float(np.abs(fd).max())
    np.testing.assert_allclose(grad, fd, rtol=rtol, atol=floor)
    return fd


# =============================================================================================
# PostgreSQL and HTTP
# =============================================================================================


def search_path_url(pg_url: str, schema: str) -> str:
    """``pg_url`` with ``schema`` as the search path: unqualified tables live in the schema."""
    return f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"


#: A route answers (query parameters, how many times this path was hit, 1-based) with
#: (status, body, headers); a body that is not bytes is sent as JSON.
Route = Callable[[dict[str, str], int], tuple[int, Any, dict[str, str]]]


@dataclass
class HttpServer:
    """A real HTTP server on 127.0.0.1 that tests program with routes (the ``http_server``
    fixture of conftest.py)."""

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


class HttpHandler(BaseHTTPRequestHandler):
    """Answers GET requests from the routes of its ``state``."""

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


def wait_ready(url: str) -> None:
    """Until the service at ``url`` answers /readyz (30 s at most)."""
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the service did not start")


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(project: Path, env: dict[str, str] | None = None, *flags: str) -> Iterator[str]:
    """`custval serve -c project` as a user starts it (with ``flags``), on a free port, with
    ``env`` added; its URL once ready, stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "custval", "serve", "-c", str(project), "--port", str(port), *flags],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
