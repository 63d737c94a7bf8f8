"""Real time under load, on loopback: events in, a customer's numbers as of now out (issue 21).

Data: a generated company of ``--customers`` (default 100,000) in Parquet under
``bench/.data/realtime`` with a LightGBM value model, one scoring run and the customers' state
built (``custval rebuild``) in a DuckDB store, and the same in a PostgreSQL store when
``--pg URL`` is given (made once and reused; not timed).

Measured with ``custval serve --realtime`` (a copy of the store for each run, so every run
starts from the same state):

* the pair: ``POST /v1/events`` with one purchase of a random customer, then ``GET
  /v1/customers/{id}`` of that customer (the value probability with reasons, CLV, P(alive),
  segment as of now, with the purchase counted): p50 and p99 of the pair for one client,
  alone, then while 500 single-purchase requests a second of other customers arrive (open
  loop: the load a service with room to spare takes), then for 4 clients sending pairs
  without pause (the server saturated: their latency is mostly each other's queue);
* sustained ingestion: single-purchase ``POST /v1/events`` at 16 connections for
  ``--seconds``: events per second, p50 and p99; and the same with 10 purchases a request
  (for information: how far batching producers go);
* afterwards ``custval rebuild --check`` on the store: the state equals the batch features of
  the same records (the events included).

DuckDB: one worker (a DuckDB file has one writing process); PostgreSQL: ``--workers 2``.
The load generator is the asyncio raw-socket client of ``bench/serve.py``, in this process.

Targets (DuckDB store, 2 cores): the pair's p99 at most 20 ms, while the 500 events/s
arrive; at least 1,000 events/s sustained. The PostgreSQL figures are printed for
information. Exits 1 when one is missed.
Run: ``.venv/bin/python bench/realtime.py [--customers N] [--seconds S] [--pg URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from serve import free_port, raw_get, raw_request, wait_ready

HERE = Path(__file__).resolve().parent
PAIR_CONNECTIONS = 4
#: events per second of other customers while the pair's latency is measured (half the
#: sustained target: a service with room to spare, as one is run)
BACKGROUND = 500.0
INGEST_CONNECTIONS = 16


def prepare(customers: int, pg: str | None) -> tuple[Path, Path, list[str]]:
    """The company, its model, a scored DuckDB store with the state built (and the same in
    PostgreSQL): (project file, DuckDB store, customer ids)."""
    from custval import flows
    from custval.config import load_project
    from custval.data.synth import generate
    from custval.flows.realtime import rebuild

    folder = HERE / ".data" / "realtime" / str(customers)
    config = folder / "custval.toml"
    if not config.exists():
        generate(customers, folder, seed=4, fmt="parquet")
    project = load_project(config)
    models = folder / "models"
    store = folder / "store.duckdb"
    if not (folder / ".built").exists():
        t0 = time.perf_counter()
        prepared = flows.prepare(project)
        flows.train_value(
            project, prepared=prepared, out_dir=models, candidates=("lightgbm",), folds=3
        )
        store.unlink(missing_ok=True)
        flows.score(project, store_url=store, models_dir=models, prepared=prepared)
        rebuild(project.model_copy(update={"store": str(store)}))
        (folder / ".built").touch()
        print(
            f"trained, scored and built the state in {time.perf_counter() - t0:.0f} s (not timed)"
        )
    if pg:
        t0 = time.perf_counter()
        flows.score(project, store_url=pg, models_dir=models)
        rebuild(project.model_copy(update={"store": pg}))
        print(
            f"scored into PostgreSQL and built its state in {time.perf_counter() - t0:.0f} s "
            "(not timed)"
        )
    ids = customer_ids(str(store))
    return config, store, ids


def customer_ids(store: str) -> list[str]:
    from custval.store import open_store

    with open_store(store, read_only=True) as s:
        return [r[0] for r in s.query("SELECT customer_id FROM customer_state")]


#: this run's tag in the event ids: a PostgreSQL store keeps the events of earlier runs
RUN = uuid.uuid4().hex[:8]


def event_body(i: int, customer: str) -> bytes:
    return json.dumps(
        {
            "event_id": f"bench-{RUN}-{i}",
            "type": "purchase",
            "customer_id": customer,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "amount": round(5 + (i % 97) * 1.5, 2),
            "category": "books",
            "channel": "web",
        }
    ).encode()


def batch_body(i: int, customers: list[str]) -> bytes:
    if len(customers) == 1:
        return event_body(i, customers[0])
    events = [json.loads(event_body(i + k, c)) for k, c in enumerate(customers)]
    return json.dumps({"events": events}).encode()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return head[9:12]


async def pairs(
    port: int,
    key: str,
    ids: list[str],
    total: int,
    start: int,
    connections: int = PAIR_CONNECTIONS,
    background: float = 0.0,
) -> dict[str, Any]:
    """POST one purchase, then GET that customer, ``total`` times over ``connections``;
    with ``background`` events per second of other customers sent meanwhile (open loop)."""
    rng = random.Random(start)
    latencies: list[float] = []
    failed = 0
    sent = 0

    async def connection() -> None:
        nonlocal failed, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < total:
                sent += 1
                customer = rng.choice(ids)
                post = raw_request(port, "/v1/events", event_body(start + sent, customer), key)
                get = raw_get(port, f"/v1/customers/{customer}", key)
                t0 = time.perf_counter()
                writer.write(post)
                status = await read_answer(reader)
                writer.write(get)
                status2 = await read_answer(reader)
                latencies.append(time.perf_counter() - t0)
                failed += (status != b"200") + (status2 != b"200")
        finally:
            writer.close()

    # the other customers' events come from a process of their own, as they would from other
    # clients: in this one their answers would delay the reading of the pair's
    stream = None
    if background > 0:
        args = (port, key, ids, background, start + 100_000_000)
        stream = multiprocessing.get_context("fork").Process(target=stream_events, args=args)
        stream.start()
        await asyncio.sleep(1.0)  # under way
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(connection() for _ in range(connections)))
    finally:
        if stream is not None:
            stream.terminate()
            stream.join()
    return summary(np.array(latencies), failed, time.perf_counter() - t0)


def stream_events(port: int, key: str, ids: list[str], rate: float, start: int) -> None:
    """:func:`steady` until the process is ended."""
    asyncio.run(steady(port, key, ids, rate, start))


async def steady(port: int, key: str, ids: list[str], rate: float, start: int) -> None:
    """Single-purchase POSTs at ``rate`` per second, each on time whatever the answers'
    pace (over connections of its own), until cancelled."""
    if rate <= 0:
        return
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
    free: asyncio.Queue[Any] = asyncio.Queue()
    for stream in streams:
        free.put_nowait(stream)
    rng = random.Random(start)

    async def send(i: int) -> None:
        reader, writer = await free.get()
        writer.write(raw_request(port, "/v1/events", event_body(i, rng.choice(ids)), key))
        await read_answer(reader)
        free.put_nowait((reader, writer))

    tasks: set[asyncio.Task[None]] = set()
    t0, i = time.perf_counter(), 0
    try:
        while True:
            i += 1
            task = asyncio.ensure_future(send(start + i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
    finally:
        for task in tasks:
            task.cancel()
        for _, writer in streams:
            writer.close()


async def ingestion(
    port: int, key: str, ids: list[str], seconds: float, start: int, per_request: int = 1
) -> dict:
    """POSTs of ``per_request`` purchases each at full speed for ``seconds``; the figures
    count events."""
    rng = random.Random(start)
    latencies: list[float] = []
    failed = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal failed, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                sent += per_request
                body = batch_body(start + sent, [rng.choice(ids) for _ in range(per_request)])
                t0 = time.perf_counter()
                writer.write(raw_request(port, "/v1/events", body, key))
                status = await read_answer(reader)
                latencies.extend([time.perf_counter() - t0] * per_request)
                failed += status != b"200"
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(INGEST_CONNECTIONS)))
    return summary(np.array(latencies), failed, time.perf_counter() - t0)


def summary(lat: np.ndarray, failed: int, wall: float) -> dict[str, float]:
    return {
        "n": float(lat.size),
        "per_s": lat.size / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "failed": float(failed),
    }


def run(label: str, config: Path, store: str, workers: int, ids: list[str], args: Any) -> dict:
    """The service on ``store``: the pairs, then the sustained ingestion; the state checked."""
    from custval.api.keys import new_key

    key, entry = new_key("bench", "admin")
    port = free_port()
    env = {**os.environ, "CUSTVAL_API_KEYS": entry.entry}
    cmd = [
        sys.executable,
        "-m",
        "custval",
        "serve",
        "-c",
        str(config),
        "--store",
        store,
        "--realtime",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, proc)
        asyncio.run(pairs(port, key, ids, 200, 10_000_000))  # warm-up
        alone = asyncio.run(pairs(port, key, ids, args.pairs, 15_000_000, connections=1))
        pair = asyncio.run(
            pairs(port, key, ids, args.pairs, 20_000_000, connections=1, background=BACKGROUND)
        )
        busy = asyncio.run(pairs(port, key, ids, args.pairs, 25_000_000))
        ingest = asyncio.run(ingestion(port, key, ids, args.seconds, 30_000_000))
        batched = asyncio.run(ingestion(port, key, ids, args.seconds, 40_000_000, 10))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    for what, found in (
        ("alone", alone),
        (f"while {BACKGROUND:,.0f} other events/s arrive", pair),
        (f"{PAIR_CONNECTIONS} clients at once, no pause", busy),
    ):
        print(
            f"{label}: ingest + read of one customer, {what}: {found['n']:,.0f} pairs, p50 "
            f"{found['p50_ms']:.2f} ms, p99 {found['p99_ms']:.2f} ms, "
            f"{found['failed']:.0f} not 200",
            flush=True,
        )
    print(
        f"{label}: sustained ingestion: {ingest['n']:,.0f} events in {args.seconds:.0f} s = "
        f"{ingest['per_s']:,.0f} events/s; p50 {ingest['p50_ms']:.2f} ms, p99 "
        f"{ingest['p99_ms']:.2f} ms; {ingest['failed']:.0f} not 200",
        flush=True,
    )
    print(
        f"{label}: batches of 10 events: {batched['n']:,.0f} events in {args.seconds:.0f} s = "
        f"{batched['per_s']:,.0f} events/s; p50 {batched['p50_ms']:.2f} ms, p99 "
        f"{batched['p99_ms']:.2f} ms per request; {batched['failed']:.0f} not 200",
        flush=True,
    )
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "custval",
            "rebuild",
            "-c",
            str(config),
            "--store",
            store,
            "--check",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # its sentence on one line
    )
    print(f"{label}: {check.stdout.strip()}", flush=True)
    failed = sum(f["failed"] for f in (alone, pair, busy, ingest, batched))
    return {"pair": pair, "ingest": ingest, "failed": failed, "check_ok": check.returncode == 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=3_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pg", help="a PostgreSQL URL for the second run (optional)")
    args = parser.parse_args()
    config, store, ids = prepare(args.customers, args.pg)
    print(f"{args.customers:,} customers; state of {len(ids):,} customers; 2 cores")
    copy = store.with_name("store-run.duckdb")
    shutil.copyfile(store, copy)
    duck = run("DuckDB, 1 worker", config, str(copy), 1, ids, args)
    ok = (
        duck["pair"]["p99_ms"] <= 20.0
        and duck["ingest"]["per_s"] >= 1000
        and duck["check_ok"]
        and duck["failed"] == 0
    )
    if args.pg:
        run("PostgreSQL, 2 workers", config, args.pg, 2, ids, args)
    print(
        f"targets (DuckDB): pair p99 <= 20 ms while {BACKGROUND:,.0f} events/s arrive, "
        ">= 1,000 events/s, state = batch: "
        f"{'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
