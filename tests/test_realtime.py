"""Real time: events into the store, each customer's state, their numbers as of now.

One trained and scored company (tests/test_api.py's, built once per run) is copied per test.
Covered: the state after thousands of random events (late, retried, new customers, refunds,
web sessions, product use) equals the batch feature code on the same records, on DuckDB and
PostgreSQL; a scoring run over the same events gives the numbers the service answers, to
1e-9; a damaged state is found and rebuilt; a retry changes nothing; bad events are refused
whole; concurrent events of one customer all count, across writers.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pytest
import uvicorn

from custval import flows
from custval.api.app import ServiceSettings, create_app
from custval.api.keys import new_key
from custval.config import Project, load_project
from custval.data.events import EventBatch
from custval.flows import realtime as rt
from custval.store import open_store
from tests.factories import built_once, free_port
from tests.test_api import _train

AS_OF = date(2026, 1, 1)  # the trained company's as-of date: its data ends the day before


@dataclass
class Company:
    root: Path
    project: Project
    models: Path
    version: str

    @property
    def store(self) -> str:
        return self.project.store


def _with_state(shared_dir: Path) -> Any:
    """The trained company with its customers' state built (once per test run)."""

    def build(folder: Path) -> None:
        shutil.copytree(built_once(shared_dir, "api-trained", _train), folder, dirs_exist_ok=True)
        project = load_project(folder / "co" / "custval.toml")
        rt.rebuild(project.model_copy(update={"store": str(folder / "store.duckdb")}))

    return build


@pytest.fixture
def company(shared_dir: Path, tmp_path: Path) -> Company:
    """A copy of the trained company (its DuckDB store has one scoring run), state built."""
    built = built_once(shared_dir, "realtime-company", _with_state(shared_dir))
    shutil.copytree(built, tmp_path, dirs_exist_ok=True)
    meta = json.loads((tmp_path / "trained.json").read_text())
    project = load_project(tmp_path / "co" / "custval.toml")
    project = project.model_copy(update={"store": str(tmp_path / "store.duckdb")})
    return Company(tmp_path, project, tmp_path / "models", meta["versions"][0])


def customer_ids(store_url: str, buyers: bool = False) -> list[str]:
    """The customers of the state (only those with a purchase: ``buyers``)."""
    where = " WHERE purchase_days > 0" if buyers else ""
    with open_store(store_url, read_only=True) as store:
        return sorted(r[0] for r in store.query(f"SELECT customer_id FROM customer_state{where}"))


def random_event(rng: random.Random, i: int, ids: list[str], late: bool = False) -> dict:
    """One event of any kind for a known or new customer; ``late`` dates it within the batch
    data (before the as-of date), else anywhere from two months before it to now."""
    start = datetime(2025, 11, 1)
    end = datetime(2025, 12, 31) if late else datetime.now(UTC).replace(tzinfo=None)
    when = start + (end - start) * rng.random()
    kind = rng.choice(["purchase"] * 5 + ["refund", "web_session", "product_usage"] * 2)
    event: dict[str, Any] = {
        "event_id": f"e{i}",
        "type": kind,
        "customer_id": rng.choice(ids) if rng.random() < 0.97 else f"NEW{rng.randint(1, 40)}",
        "timestamp": when.isoformat(timespec="seconds"),
    }
    if kind == "purchase":
        event["amount"] = round(rng.uniform(1, 300), 2)
        event["category"] = rng.choice(["Books", " electronics ", None, "a-new-one"])
        event["channel"] = rng.choice(["web", "app", None, "Phone"])
        if rng.random() < 0.3:  # a second line of an order already seen, sometimes
            event["order_id"] = f"O{rng.randint(1, 400)}"
    elif kind == "refund":
        if rng.random() < 0.98:  # mostly of buyers; a new customer's refund is refused
            event["customer_id"] = rng.choice(ids)
        event["amount"] = round(rng.uniform(0.5, 15), 2)
    elif kind == "web_session":
        event |= {
            "page_views": rng.choice([None, rng.randint(0, 30)]),
            "duration_sec": rng.choice([None, rng.uniform(0, 2000)]),
            "blogs_viewed": rng.randint(0, 3),
            "converted": rng.choice([None, True, False]),
        }
    else:
        event |= {
            "features_used": rng.choice([None, rng.randint(0, 12)]),
            "sessions": rng.randint(0, 6),
            "time_sec": rng.choice([None, rng.uniform(0, 9000)]),
        }
    return event


def send_randomly(store_url: str, events: list[dict], rng: random.Random) -> tuple[int, int]:
    """The events in batches of 1 to 40, some batches sent twice (retries): (applied,
    refused batches)."""
    applied = refused = 0
    with open_store(store_url) as store:
        k = 0
        while k < len(events):
            size = rng.randint(1, 40)
            batch = EventBatch.model_validate({"events": events[k : k + size]})
            (done,) = rt.ingest(store, [batch])
            if isinstance(done, rt.IngestError):
                refused += 1
            else:
                applied += done.applied
                if rng.random() < 0.05:
                    (again,) = rt.ingest(store, [batch])
                    assert isinstance(again, rt.Ingested)
                    assert (again.applied, again.duplicates) == (0, len(batch.events))
            k += size
    return applied, refused


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_state_equals_the_batch_features_after_random_events(
    company: Company, engine: str, request: pytest.FixtureRequest
) -> None:
    project = company.project
    if engine == "postgres":
        from tests.factories import search_path_url

        url = search_path_url(
            request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
        )
        project = project.model_copy(update={"store": url})
        rt.rebuild(project)
    rng = random.Random(7)
    ids = customer_ids(project.store, buyers=True)
    events = [random_event(rng, i, ids, late=rng.random() < 0.2) for i in range(3000)]
    applied, refused = send_randomly(project.store, events, rng)
    assert applied > 2000
    assert refused > 0  # refunds before any purchase of a new customer, at least
    with open_store(project.store, read_only=True) as store:
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == applied

    found = rt.check_state(project)
    assert found.mismatches == []
    assert found.customers >= 1500
    assert found.columns > 60
    assert found.max_difference <= 1e-9


def test_a_damaged_state_is_found_and_rebuilt(company: Company) -> None:
    rng = random.Random(3)
    ids = customer_ids(company.store, buyers=True)
    send_randomly(company.store, [random_event(rng, i, ids) for i in range(300)], rng)
    cli = [
        sys.executable,
        "-m",
        "custval",
        "rebuild",
        "-c",
        str(company.project.root / "custval.toml"),
    ]
    cli += ["--store", company.store]
    with open_store(company.store) as store:
        store.query(
            "UPDATE customer_state SET buys = NULL WHERE customer_id IN (?, ?)", tuple(ids[:2])
        )
        store.query("DELETE FROM customer_state WHERE customer_id = ?", (ids[5],))
    damaged = subprocess.run([*cli, "--check"], capture_output=True, text=True)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert ids[0] in damaged.stdout and "custval rebuild" in damaged.stdout
    fixed = subprocess.run(cli, capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr
    assert "state rebuilt" in fixed.stdout
    again = subprocess.run([*cli, "--check"], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
    assert "equals the batch features" in again.stdout


# ---- over HTTP ------------------------------------------------------------------------------


@dataclass
class Running:
    url: str
    headers: dict[str, str]
    stop: Any

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)


@pytest.fixture
def serve(company: Company, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start the service with --realtime in a thread (stopped by the returned handle, or at
    the end): its key has scope admin (events and reads)."""
    key, entry = new_key("ops", "admin")
    monkeypatch.setenv("CUSTVAL_API_KEYS", entry.entry)
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start() -> Running:
        settings = ServiceSettings(
            models_dir=company.models, model=company.version, store=company.store, realtime=True
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        running.append((server, thread))

        def stop() -> None:
            server.should_exit = True
            thread.join(timeout=30)

        return Running(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}, stop)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=30)


NUMBERS = ("value_probability", "clv_expected", "p_alive", "expected_purchases")


def test_a_scoring_run_over_the_events_gives_the_numbers_the_service_answers(
    company: Company, serve: Any
) -> None:
    rng = random.Random(11)
    ids = customer_ids(company.store)
    chosen = ids[:: len(ids) // 25][:25]
    # late events (before the as-of date): a scoring run at that date includes them
    events = [
        {
            "event_id": f"late{i}",
            "type": "purchase",
            "customer_id": cid,
            "timestamp": f"2025-12-{rng.randint(1, 30):02d}T12:00:00",
            "amount": round(rng.uniform(5, 400), 2),
            "category": rng.choice(["books", "electronics", "home"]),
            "channel": "web",
        }
        for i, cid in enumerate(chosen * 2)
    ]
    service = serve()
    with service.client() as http:
        before = {
            c: http.get(f"/v1/customers/{c}", params={"as_of": "2026-01-01"}).json() for c in chosen
        }
        done = http.post("/v1/events", json={"events": events})
        assert done.status_code == 200, done.text
        assert done.json()["applied"] == len(events)
        assert sorted(done.json()["recomputed"]) == sorted(chosen)  # late: within the batch data
    service.stop()

    flows.score(
        company.project,
        store_url=company.store,
        models_dir=company.models,
        model_version=company.version,
    )
    service = serve()
    with open_store(company.store, read_only=True) as store:
        stored = {c: store.customer(c) for c in [*chosen, *ids[1:6]]}
    with service.client() as http:
        for cid, run in stored.items():
            now = http.get(f"/v1/customers/{cid}", params={"as_of": "2026-01-01"}).json()
            assert now["source"] == "state" and now["run_id"] == run["run_id"]
            for key in NUMBERS:
                assert now[key] == pytest.approx(run[key], rel=1e-9, abs=1e-12), (cid, key)
            assert [r["feature"] for r in now["reasons"]] == [r["feature"] for r in run["reasons"]]
            assert now["events_since_run"] == 0
    # the events moved those customers: their CLV at the as-of date rose with the purchases
    rose = [stored[c]["clv_expected"] > (before[c]["clv_expected"] or 0.0) for c in chosen]
    assert sum(rose) >= 20


def test_events_change_the_numbers_at_once_and_a_retry_changes_nothing(
    company: Company, serve: Any
) -> None:
    cid = customer_ids(company.store)[10]
    service = serve()
    purchase = {
        "event_id": "p-1",
        "type": "purchase",
        "customer_id": cid.lower(),  # ids are trimmed and upper-cased, as the sources' are
        "timestamp": datetime.now(UTC).isoformat(),
        "amount": 250.0,
    }
    with service.client() as http:
        before = http.get(f"/v1/customers/{cid}").json()
        assert before["as_of"] == (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
        first = http.post("/v1/events", json=purchase)  # one event alone is a batch of one
        assert first.json() == {"applied": 1, "duplicates": 0, "customers": [cid], "recomputed": []}
        after = http.get(f"/v1/customers/{cid}").json()
        assert after["p_alive"] > before["p_alive"]
        assert after["clv_expected"] > before["clv_expected"]
        assert after["events_since_run"] == before["events_since_run"] + 1
        state = _state_row(http, service, company, cid)
        again = http.post("/v1/events", json={"events": [purchase]})
        assert again.json() == {"applied": 0, "duplicates": 1, "customers": [], "recomputed": []}
        assert http.get(f"/v1/customers/{cid}").json() == after
        assert _state_row(http, service, company, cid) == state


def _state_row(http: httpx.Client, service: Running, company: Company, cid: str) -> Any:
    """The customer's state row and the events count, read through the service's own store
    (it holds the DuckDB file)."""
    from custval.store.events import read_states

    with open_store(company.store, read_only=True) as store:
        return read_states(store, [cid]), store.query("SELECT COUNT(*) FROM events")[0][0]


def test_bad_events_are_refused_whole(company: Company, serve: Any) -> None:
    ids = customer_ids(company.store)
    service = serve()
    now = datetime.now(UTC)
    ok = {
        "event_id": "ok-1",
        "type": "purchase",
        "customer_id": ids[0],
        "amount": 10.0,
        "timestamp": now.isoformat(),
    }
    with service.client() as http:
        state = _state_row(http, service, company, ids[0])
        cases = {
            "future": (
                {**ok, "event_id": "f", "timestamp": (now + timedelta(days=1)).isoformat()},
                422,
                "in the future",
            ),
            "type": ({**ok, "event_id": "t", "type": "visit"}, 422, "does not match any"),
            "refund": (
                {
                    "event_id": "r",
                    "type": "refund",
                    "customer_id": ids[0],
                    "timestamp": now.isoformat(),
                    "amount": 10**7,
                },
                422,
                "more than customer",
            ),
            "negative": ({**ok, "event_id": "n", "amount": -5}, 422, "type 'refund'"),
            "text": ({**ok, "event_id": "x", "amount": "12"}, 422, "a number is needed"),
            "field": ({**ok, "event_id": "y", "colour": "red"}, 422, "colour"),
        }
        for name, (bad, status, says) in cases.items():
            answer = http.post("/v1/events", json={"events": [ok, bad]})
            assert answer.status_code == status, (name, answer.text)
            assert says in answer.text, (name, answer.text)
        too_many = [{**ok, "event_id": f"m{i}"} for i in range(10_000)]
        answer = http.post("/v1/events", json={"events": too_many})
        assert answer.status_code == 413 and "the limit is 1,000" in answer.text
        # nothing of any of them was applied
        assert _state_row(http, service, company, ids[0]) == state
        # an event id used for another event: 409, and the first stays as it was
        assert http.post("/v1/events", json=ok).status_code == 200
        other = http.post("/v1/events", json={**ok, "amount": 99.0})
        assert other.status_code == 409 and "used for another event" in other.text
        late = {**ok, "event_id": "late", "timestamp": "2024-03-01T10:00:00"}
        assert http.post("/v1/events", json=late).json()["recomputed"] == [ids[0]]
        early = http.get(f"/v1/customers/{ids[0]}", params={"as_of": "2024-01-01"})
        assert early.status_code == 422 and "not after customer" in early.text
        web_only = {
            "event_id": "w",
            "type": "web_session",
            "customer_id": "VISITOR-1",
            "timestamp": now.isoformat(),
        }
        assert http.post("/v1/events", json=web_only).status_code == 200
        assert http.get("/v1/customers/VISITOR-1").status_code == 404


def test_concurrent_events_of_one_customer_all_count(
    company: Company, request: pytest.FixtureRequest
) -> None:
    """Eight threads send 40 purchases each for one customer and for others, through two
    writers (two connections, as two workers of a PostgreSQL service would be)."""
    from tests.factories import search_path_url

    url = search_path_url(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema"))
    project = company.project.model_copy(update={"store": url})
    rt.rebuild(project)
    cid = customer_ids(url)[0]
    writers = [rt.EventWriter(open_store(url)) for _ in range(2)]
    now = datetime.now(UTC).isoformat()

    def send(t: int) -> None:
        for i in range(40):
            batch = EventBatch.model_validate(
                {
                    "events": [
                        {
                            "event_id": f"{t}-{i}",
                            "type": "purchase",
                            "customer_id": cid,
                            "timestamp": now,
                            "amount": 1.0,
                        },
                        {
                            "event_id": f"{t}-{i}-o",
                            "type": "purchase",
                            "customer_id": f"N{t}-{i % 3}",
                            "timestamp": now,
                            "amount": 2.0,
                        },
                    ]
                }
            )
            writers[t % 2].submit(batch)

    with open_store(url, read_only=True) as store:
        before = store.query("SELECT spend FROM customer_state WHERE customer_id = ?", (cid,))[0][0]
    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
        w.store.close()
    with open_store(url, read_only=True) as store:
        after = store.query("SELECT spend FROM customer_state WHERE customer_id = ?", (cid,))[0][0]
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == 640
        others = store.query(
            "SELECT SUM(spend) FROM customer_state WHERE left(customer_id, 1) = 'N'"
        )
    assert after == pytest.approx(before + 320.0)
    assert others[0][0] == pytest.approx(640.0)


def test_one_customers_events_wait_for_each_other_and_others_do_not(
    company: Company, request: pytest.FixtureRequest
) -> None:
    """A transaction holding a customer (as an ingest holds it while it writes) makes a second
    writer's event of that customer wait until it commits; another customer's goes through."""
    from custval.store.events import lock_customers
    from tests.factories import search_path_url

    url = search_path_url(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema"))
    rt.rebuild(company.project.model_copy(update={"store": url}))
    held, other = customer_ids(url, buyers=True)[:2]
    now = datetime.now(UTC).isoformat()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with open_store(url) as store, store._transaction():
            lock_customers(store, [held])
            locked.set()
            release.wait(5)

    def send(cid: str, seconds: dict[str, float]) -> None:
        batch = EventBatch.model_validate(
            {
                "events": [
                    {
                        "event_id": f"w-{cid}",
                        "type": "purchase",
                        "customer_id": cid,
                        "timestamp": now,
                        "amount": 3.0,
                    }
                ]
            }
        )
        started = time.perf_counter()
        with open_store(url) as store:
            (done,) = rt.ingest(store, [batch])
        assert isinstance(done, rt.Ingested) and done.applied == 1
        seconds[cid] = time.perf_counter() - started

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(5)
    seconds: dict[str, float] = {}
    waiting = threading.Thread(target=send, args=(held, seconds))
    waiting.start()
    send(other, seconds)  # another customer: not held up
    time.sleep(0.5)
    assert held not in seconds  # still waiting for the holder
    release.set()
    holder.join()
    waiting.join()
    assert seconds[other] < 0.5 <= seconds[held]


def test_a_queue_consumer_feeds_the_state_through_the_same_function(
    company: Company, amqp_url: str
) -> None:
    """docs/examples/rabbitmq_consumer.py against the machine's RabbitMQ: 100 messages of 3
    events, one message sent twice (a redelivery), one that is no event and one the state
    refuses; the state then equals the batch features, as after HTTP."""
    import importlib.util
    import uuid

    import pika

    path = Path(__file__).parents[1] / "docs" / "examples" / "rabbitmq_consumer.py"
    spec = importlib.util.spec_from_file_location("rabbitmq_consumer", path)
    consumer = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(consumer)  # type: ignore[union-attr]
    queue = f"custval-test-{uuid.uuid4().hex[:8]}"
    rng = random.Random(5)
    ids = customer_ids(company.store, buyers=True)
    messages = [
        json.dumps({"events": [random_event(rng, 3 * m + j, ids) for j in range(3)]})
        for m in range(100)
    ]
    messages = [m for m in messages if '"refund"' not in m]  # refunds may be refused: kept apart
    refused = {
        "event_id": "big-refund",
        "type": "refund",
        "customer_id": ids[0],
        "timestamp": datetime.now(UTC).isoformat(),
        "amount": 1e9,
    }
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    try:
        for body in [*messages, messages[0], "not json", json.dumps(refused)]:
            channel.basic_publish(exchange="", routing_key=queue, body=body)
        counts = consumer.consume(company.store, amqp_url, queue, prefetch=50, idle_seconds=1.0)
        dead = channel.queue_declare(queue=f"{queue}.dead", passive=True).method.message_count
        _, props, body = channel.basic_get(f"{queue}.dead", auto_ack=True)
    finally:
        channel.queue_delete(queue=queue)
        channel.queue_delete(queue=f"{queue}.dead")
        connection.close()
    assert counts == {"applied": 3 * len(messages), "duplicates": 3, "dead": 2}
    assert dead == 2 and body == b"not json" and "JSON" in props.headers["reason"]
    with open_store(company.store, read_only=True) as store:
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == 3 * len(messages)
    assert rt.check_state(company.project).mismatches == []


CRASHING_WRITER = """
import json, os, sys
from custval.data.events import EventBatch
from custval.flows.realtime import EventWriter
from custval.store.runs import hold_store

writer = EventWriter(hold_store(sys.argv[1]))
for line in open(sys.argv[2]):
    writer.submit(EventBatch.model_validate(json.loads(line)))
os._exit(0)  # a crash: the states kept in memory are not written
"""


def test_a_writer_that_stops_before_writing_its_states_loses_nothing(
    company: Company, tmp_path: Path
) -> None:
    """The DuckDB writer keeps states in memory; a process killed before it writes them
    leaves only its events, and the next writer applies them again (the watermark)."""
    from custval.store.events import events_table, watermark
    from custval.store.journal import journal_dir

    rng = random.Random(13)
    ids = customer_ids(company.store, buyers=True)
    batches = tmp_path / "batches.jsonl"
    with batches.open("w") as f:
        for k in range(150):
            events = [random_event(rng, 2 * k + j, ids) for j in range(2)]
            f.write(
                json.dumps({"events": [e for e in events if e["type"] != "refund"] or events[:1]})
                + "\n"
            )
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_WRITER)
    done = subprocess.run(
        [sys.executable, str(script), company.store, str(batches)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    sent = sum(len(json.loads(line)["events"]) for line in batches.read_text().splitlines())
    with open_store(company.store, read_only=True) as store:
        in_table = store.query("SELECT COUNT(*) FROM events")[0][0]
        behind = watermark(store)
        every = events_table(store)  # the table's and the journal's
    # every acknowledged event is kept, but not all of them in the table: the journal has
    # those of the last second, and the stored state lacks them
    assert every.num_rows == sent == len(set(every.column("event_id").to_pylist()))
    assert in_table < sent
    assert behind is None or behind < pc.max(every.column("received_at")).as_py()
    assert rt.check_state(company.project).mismatches != []
    writer = rt.EventWriter(open_store(company.store))
    writer.close()
    writer.store.close()
    assert writer.replayed > 0
    with open_store(company.store, read_only=True) as store:
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == sent
    assert not journal_dir(company.store).exists()
    assert rt.check_state(company.project).mismatches == []


def test_ingest_takes_a_file_whole_or_lists_its_problems(company: Company, tmp_path: Path) -> None:
    """`custval ingest`: JSON lines and CSV apply all their events, a file sent again changes
    nothing, a file with bad events is refused whole naming each event's line."""
    ids = customer_ids(company.store, buyers=True)
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None).isoformat()
    cli = [sys.executable, "-m", "custval", "ingest"]
    where = ["-c", str(company.project.root / "custval.toml"), "--store", company.store]
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        "\n".join(
            json.dumps(
                {
                    "event_id": f"f{i}",
                    "type": "purchase",
                    "customer_id": ids[i],
                    "timestamp": now,
                    "amount": 10.0 + i,
                }
            )
            for i in range(20)
        )
    )
    table = tmp_path / "events.csv"
    table.write_text(
        "event_id,type,customer_id,timestamp,page_views,converted\n"
        f"w1,web_session,{ids[0]},{now},4,true\nw2,web_session,{ids[1]},{now},,false\n"
    )
    first = subprocess.run([*cli, str(lines), *where], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "20 events applied, 0 already applied" in first.stdout
    again = subprocess.run([*cli, str(lines), *where], capture_output=True, text=True)
    assert "0 events applied, 20 already applied" in again.stdout
    web = subprocess.run([*cli, str(table), *where], capture_output=True, text=True)
    assert "2 events applied" in web.stdout, web.stdout + web.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {
                "event_id": "b1",
                "type": "purchase",
                "customer_id": ids[0],
                "timestamp": now,
                "amount": 5.0,
            }
        )
        + "\n"
        + json.dumps({"event_id": "b2", "type": "purchse", "customer_id": ids[0], "timestamp": now})
        + "\n"
        + json.dumps(
            {
                "event_id": "b3",
                "type": "purchase",
                "customer_id": ids[0],
                "timestamp": now,
                "amount": "5",
            }
        )
        + "\n"
    )
    refused = subprocess.run([*cli, str(bad), *where], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "2 problems in 3 events; nothing was applied" in refused.stderr
    assert "event 2" in refused.stderr and "event 3 amount" in refused.stderr
    with open_store(company.store, read_only=True) as store:
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == 22
    assert rt.check_state(company.project).mismatches == []


def test_the_journal_keeps_what_was_acknowledged_and_recovery_adds_only_what_is_missing(
    tmp_path: Path,
) -> None:
    """A DuckDB service acknowledges events once they are in its journal: what a stopped
    writer left there is read by the batch commands and put into the store once, skipping
    a segment whose transaction had committed and a last line cut short."""
    from custval.data.events import event_row
    from custval.store.events import events_table, insert_events, recover_journal
    from custval.store.journal import Journal, journal_dir

    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    batch = EventBatch.model_validate(
        {
            "events": [
                {"event_id": f"j{i}", "type": "purchase", "customer_id": f"c{i}"}
                | {"timestamp": (now - timedelta(hours=i)).isoformat(), "amount": 10.5 + i}
                for i in range(3)
            ]
        }
    )
    rows = [event_row(e, now + timedelta(microseconds=i)) for i, e in enumerate(batch.events)]
    path = tmp_path / "store.duckdb"
    with open_store(path) as store:
        journal = Journal(path)
        journal.append(rows[:2])
        journal.rotate()  # written to the store (below), stopped before deleting it
        journal.append(rows[2:])
        insert_events(store, {c: [r[c] for r in rows[:2]] for c in rows[0]})
        segment = sorted(journal_dir(path).glob("*.jsonl"))[-1]
        with segment.open("ab") as f:
            f.write(b'[["j9","C9","purch')  # the process stopped in the middle of a line
        every = events_table(store)
        assert sorted(every.column("event_id").to_pylist()) == ["j0", "j1", "j2"]
        got = every.filter(pc.equal(every.column("event_id"), "j2")).to_pylist()[0]
        assert got == rows[2]  # every column back as it was, the times included
        assert recover_journal(store) == 1
        assert recover_journal(store) == 0
        assert store.query("SELECT COUNT(*) FROM events")[0][0] == 3
        assert list(journal_dir(path).glob("*.jsonl")) == []
        # the writer's hash of an id is DuckDB's: a stored id is found without a scan
        for event_id in ("j0", "an id", "ü-ñ"):
            found = store.query("SELECT md5_number_upper(?)", (event_id,))[0][0]
            assert rt._id_hash(event_id) == found


@pytest.mark.usefixtures("pg_url")
def test_a_replay_waits_for_the_ingests_in_flight(
    company: Company, request: pytest.FixtureRequest
) -> None:
    """A worker starting (its replay of the events after the watermark) while another
    worker's ingest is writing waits for that ingest to commit, and then applies nothing
    twice: on PostgreSQL without the wait, the ingest's events could be read as missing
    from the state that already holds them."""
    from custval.store.events import build_meta, hold_gate, lock_customers
    from tests.factories import search_path_url

    url = search_path_url(request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema"))
    rt.rebuild(company.project.model_copy(update={"store": url}))
    cid = customer_ids(url, buyers=True)[0]
    event = {"event_id": "in-flight", "type": "purchase", "customer_id": cid}
    batch = EventBatch.model_validate(
        {"events": [event | {"timestamp": datetime.now(UTC).isoformat(), "amount": 7.5}]}
    )
    written, release = threading.Event(), threading.Event()

    def ingest_in_flight() -> None:  # what rt.ingest does, held open before its commit
        with open_store(url) as store:
            build = build_meta(store)  # before: its read commits
            with store._transaction():
                hold_gate(store)
                lock_customers(store, [cid])
                (done,) = rt._ingest_locked(store, [batch], [cid], build, None)
                assert isinstance(done, rt.Ingested) and done.applied == 1
                written.set()
                release.wait(5)

    replayed: list[int] = []

    def replay() -> None:
        with open_store(url) as store:
            replayed.append(rt.replay(store))

    writer = threading.Thread(target=ingest_in_flight)
    writer.start()
    assert written.wait(10)
    starting = threading.Thread(target=replay)
    starting.start()
    time.sleep(0.5)
    assert replayed == []  # waiting for the ingest
    release.set()
    writer.join()
    starting.join(10)
    assert replayed == [0]
    with open_store(url, read_only=True) as store:
        applied = store.query(
            "SELECT events_applied FROM customer_state WHERE customer_id = ?", (cid,)
        )
    assert applied == [(1,)]
