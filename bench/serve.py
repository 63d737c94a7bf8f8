"""The REST service under load, on loopback: custval against a bare LightGBM FastAPI app.

Data: a generated company of ``--customers`` (default 100,000) in Parquet under
``bench/.data/serve`` with a LightGBM value model trained on it (made once and reused; not
timed). The requests carry real feature rows of that company.

Measured (bounded: a fixed number of requests, a time limit each, 127.0.0.1 only):

* ``custval serve --workers 2``: ``POST /v1/predict`` with one customer (probability, class,
  CLV and the top 3 reasons with sentences): requests per second, p50 and p99 latency, at 8
  concurrent connections; and with 100 customers a request: p50 and p99, at 2 connections;
* the floor: a minimal FastAPI app on the same uvicorn settings (2 workers) whose endpoint only
  parses the rows and calls LightGBM's ``predict`` on the same model (no reasons, no
  validation, no auth), with the same requests; the overhead ratio is custval's time over it.

The load generator is a small asyncio client on raw sockets (keep-alive HTTP/1.1), so that it
takes little of the two cores from the servers; it runs in this process.

Targets (issue 6): single-customer requests with reasons at least 1,500 per second with p99 at
most 20 ms; 100-customer requests p50 at most 40 ms (2 cores). Exits 1 when one is missed.
Run: ``.venv/bin/python bench/serve.py [--customers N] [--requests N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: concurrent connections of the single-customer runs: enough to keep both workers busy
SINGLE = 8

FLOOR_APP = """
import json
import os

import lightgbm as lgb
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

booster = lgb.Booster(model_file=os.environ["FLOOR_MODEL"])
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    rows = np.array(json.loads(await request.body())["rows"], dtype=np.float64)
    p = booster.predict(rows, num_threads=1)
    return Response(json.dumps({"p": p.tolist()}), media_type="application/json")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], path: str = "/readyz") -> None:
    import httpx

    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not start in 60 s")


def raw_request(port: int, path: str, body: bytes, key: str | None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if key:
        head.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def load(
    port: int, requests: list[bytes], total: int, seconds: float, connections: int
) -> tuple[np.ndarray, int, float]:
    """Send ``total`` requests (cycling through ``requests``) over ``connections`` keep-alive
    connections, for at most ``seconds``; returns the latencies (s), the non-200 count and
    the wall time."""
    latencies: list[float] = []
    failed = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal failed, sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < total and time.perf_counter() < deadline:
                request = requests[sent % len(requests)]
                sent += 1
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if head[9:12] != b"200":
                    failed += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return np.array(latencies), failed, time.perf_counter() - t0


def measure(
    label: str,
    port: int,
    requests: list[bytes],
    total: int,
    seconds: float,
    connections: int,
) -> dict[str, float]:
    # a short warm-up on every worker, then the measured run
    asyncio.run(load(port, requests, min(200, total), 10, connections))
    lat, failed, wall = asyncio.run(load(port, requests, total, seconds, connections))
    out = {
        "requests": float(lat.size),
        "rps": lat.size / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "failed": float(failed),
    }
    print(
        f"{label}: {lat.size:,} requests in {wall:.1f} s = {out['rps']:,.0f}/s; "
        f"p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms; {failed} not 200",
        flush=True,
    )
    return out


def prepare(customers: int) -> tuple[Path, Path, Any]:
    from custval import flows
    from custval.config import load_project
    from custval.data.synth import generate
    from custval.store.bundles import latest_model

    folder = HERE / ".data" / "serve" / str(customers)
    config = folder / "custval.toml"
    if not config.exists():
        generate(customers, folder, seed=3, fmt="parquet")
    project = load_project(config)
    prepared = flows.prepare(project)
    models = folder / "models"
    if not any(models.glob("*/manifest.json")):
        t0 = time.perf_counter()
        flows.train_value(
            project, prepared=prepared, out_dir=models, candidates=("lightgbm",), folds=3
        )
        print(f"trained the value model in {time.perf_counter() - t0:.0f} s (not timed)")
    store = folder / "store.duckdb"
    if not store.exists():  # a scoring run: its customer-base models give the service's CLV
        flows.score(project, store_url=store, models_dir=models, prepared=prepared)
    table = flows.features(project, prepared).to_pyarrow().to_pandas()
    return folder, latest_model(models), table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=20_000, help="single-customer requests")
    ap.add_argument("--seconds", type=float, default=40.0, help="time limit of each run")
    args = ap.parse_args()

    from custval.api.keys import new_key
    from custval.api.online import OnlineModel

    folder, model_dir, table = prepare(args.customers)
    model = OnlineModel(model_dir)
    booster = model.clf._fitted().model_
    print(
        f"model {model.version}: {booster.num_trees()} trees, {len(model.schema.columns)} features"
    )
    cols = model.schema.columns
    rows = table.sample(n=min(2_000, len(table)), random_state=0)
    customers = []
    for record in rows.to_dict("records"):
        item: dict[str, Any] = {"customer_id": str(record["customer_id"])}
        for c in cols:
            v = record[c]
            item[c] = (
                None
                if v is None or (isinstance(v, float) and np.isnan(v))
                else (v if isinstance(v, str) else float(v))
            )
        customers.append(item)
    codes = model.schema.codes(rows)
    key, stored = new_key("bench", "read")
    env = {**os.environ, "CUSTVAL_API_KEYS": stored.entry}
    results: dict[str, dict[str, float]] = {}

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "custval",
            "serve",
            "--models",
            str(model_dir.parent),
            "--model",
            model.version,
            "--port",
            str(port),
            "--workers",
            "2",
            "--store",
            str(folder / "store.duckdb"),
        ],
        env=env,
    )
    try:
        wait_ready(port, server)
        single = [
            raw_request(port, "/v1/predict", json.dumps({"customers": [c]}).encode(), key)
            for c in customers
        ]
        check = json.loads(single[0].split(b"\r\n\r\n", 1)[1])
        import httpx

        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/predict",
            json=check,
            headers={"Authorization": f"Bearer {key}"},
        ).json()["predictions"][0]
        print(
            f"e.g. {answer['customer_id']}: p={answer['value_probability']:.3f}, "
            f"CLV {answer['clv']}, '{answer['reasons'][0]['text']}'"
        )
        results["custval 1"] = measure(
            "custval, 1 customer with reasons", port, single, args.requests, args.seconds, SINGLE
        )
        hundred = [
            raw_request(
                port, "/v1/predict", json.dumps({"customers": customers[i : i + 100]}).encode(), key
            )
            for i in range(0, len(customers) - 100, 100)
        ]
        results["custval 100"] = measure(
            "custval, 100 customers with reasons", port, hundred, 600, args.seconds, 2
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    floor_dir = folder / "floor"
    floor_dir.mkdir(exist_ok=True)
    (floor_dir / "floor_app.py").write_text(FLOOR_APP)
    booster.save_model(str(floor_dir / "model.txt"))
    port = free_port()
    floor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--app-dir",
            str(floor_dir),
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env={**env, "FLOOR_MODEL": str(floor_dir / "model.txt")},
    )
    try:
        wait_ready(port, floor, "/docs")
        rows_json = [
            [None if np.isnan(v) else float(v) for v in codes[i]] for i in range(len(codes))
        ]
        single = [
            raw_request(port, "/predict", json.dumps({"rows": [r]}).encode(), None)
            for r in rows_json
        ]
        results["floor 1"] = measure(
            "floor (bare LightGBM predict), 1 customer",
            port,
            single,
            args.requests,
            args.seconds,
            SINGLE,
        )
        hundred = [
            raw_request(
                port, "/predict", json.dumps({"rows": rows_json[i : i + 100]}).encode(), None
            )
            for i in range(0, len(rows_json) - 100, 100)
        ]
        results["floor 100"] = measure(
            "floor (bare LightGBM predict), 100 customers", port, hundred, 600, args.seconds, 2
        )
    finally:
        floor.terminate()
        floor.wait(timeout=30)

    one, floor_one = results["custval 1"], results["floor 1"]
    many, floor_many = results["custval 100"], results["floor 100"]
    print(
        f"overhead vs the floor: 1 customer {floor_one['rps'] / one['rps']:.2f}x the time per "
        f"request (throughput), p50 {one['p50_ms'] / floor_one['p50_ms']:.2f}x; "
        f"100 customers p50 {many['p50_ms'] / floor_many['p50_ms']:.2f}x"
    )
    checks = {
        "1 customer >= 1,500 requests/s": one["rps"] >= 1500,
        "1 customer p99 <= 20 ms": one["p99_ms"] <= 20,
        "100 customers p50 <= 40 ms": many["p50_ms"] <= 40,
        "no failed request": one["failed"] == 0 and many["failed"] == 0,
    }
    for name, ok in checks.items():
        print(f"target {name}: {'met' if ok else 'NOT MET'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
