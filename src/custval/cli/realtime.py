"""``custval ingest`` and ``custval rebuild``: events from a file, and each customer's state
(:mod:`custval.flows.realtime`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from custval.cli.common import ConfigOpt, friendly, load, out, steps
from custval.cli.store import StoreUrlOpt
from custval.errors import CustvalError

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

FileArg = Annotated[
    Path,
    typer.Argument(
        help='Events as JSON lines (one event per line), a JSON document {"events": [...]} or '
        "CSV (a column per field).",
        metavar="FILE",
    ),
]


@friendly
def ingest(
    file: FileArg,
    config: ConfigOpt = Path("custval.toml"),
    store: StoreUrlOpt = None,
) -> None:
    """Apply the events of FILE to the store, as POST /v1/events does: purchases, refunds, web
    sessions and product use, checked by the same rules (every event's errors are listed
    with its line before anything is applied). The file is one batch: all of it or nothing.
    An event_id the store has already is a retry and changes nothing, so a file can be sent
    again. Needs a built state ('custval rebuild')."""
    import time

    from custval.flows.realtime import IngestError, ingest, replay
    from custval.store import open_store

    target = store or load(config).store
    events = _read_events(file)
    batch = _validated(events, file)
    started = time.perf_counter()
    with open_store(target, wait=10.0) as s:
        replay(s)  # what a stopped service left unwritten comes first
        (done,) = ingest(s, [batch])
    if isinstance(done, IngestError):
        raise CustvalError(str(done), source=str(file))
    seconds = time.perf_counter() - started
    out.print(
        f"{done.applied:,} events applied, {done.duplicates:,} already applied (retries), "
        f"{len(done.customers):,} customers updated, {len(done.late):,} recomputed for late "
        f"events; {seconds:.1f} s ({len(events) / max(seconds, 1e-9):,.0f} events/s)"
    )


def _read_events(path: Path) -> list[dict[str, Any]]:
    """The file's events as dicts: JSON lines, a JSON document, or CSV."""
    import json

    if not path.exists():
        raise CustvalError(f"there is no file '{path}'")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        return _csv_events(path)
    stripped = text.lstrip()
    if stripped.startswith("{") and '"events"' in stripped[:200] and "\n{" not in stripped:
        return list(json.loads(text).get("events") or [])
    events = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError as exc:
            raise CustvalError(
                f"line {n} is not JSON: {exc.msg}", source=str(path), hint="One event per line"
            ) from None
    return events


def _csv_events(path: Path) -> list[dict[str, Any]]:
    """CSV rows as events: blanks are absent, numbers and true/false typed."""
    import csv

    rows = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            event: dict[str, Any] = {}
            for key, value in row.items():
                if value is None or value.strip() == "":
                    continue
                event[key] = _typed(key, value.strip())
            rows.append(event)
    return rows


_TEXT = {
    "event_id",
    "type",
    "customer_id",
    "timestamp",
    "order_id",
    "category",
    "channel",
    "product_id",
    "session_id",
}


def _typed(key: str, value: str) -> Any:
    if key in _TEXT:
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return float(value)
    except ValueError:
        return value  # the event's check names it


def _validated(events: list[dict[str, Any]], path: Path) -> Any:
    """The events as one batch, or every event's errors with its line (at most 10 shown)."""
    from pydantic import ValidationError

    from custval.data.events import EventBatch

    if not events:
        raise CustvalError("the file has no event", source=str(path))
    try:
        return EventBatch.model_validate({"events": events})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = [p for p in err["loc"] if p != "events"]
            where = f"event {loc[0] + 1}" if loc and isinstance(loc[0], int) else "the file"
            field = ".".join(str(p) for p in loc[1:] if str(p) not in _TYPES)
            problems.append(f"{where}{' ' + field if field else ''}: {err['msg']}")
        raise CustvalError(
            f"{len(problems):,} problems in {len(events):,} events; nothing was applied",
            source=str(path),
            count=len(problems),
            examples=[{"problem": p} for p in problems[:10]],
            hint="Fix those events and run the command again",
        ) from None


_TYPES = {"purchase", "refund", "web_session", "product_usage"}


@friendly
def rebuild(
    config: ConfigOpt = Path("custval.toml"),
    store: StoreUrlOpt = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Write nothing: compare the store's state with the batch features of the "
            "same records (the sources and the store's events) now; exit 1 on a difference.",
        ),
    ] = False,
) -> None:
    """Recompute every customer's state from the project's sources and the store's events, in
    place of the store's (one transaction): after a fault, after the sources were refreshed,
    or before the first 'custval serve --realtime'. With a DuckDB store, stop the service
    first: it holds the file."""
    from custval.flows.realtime import check_state, rebuild

    project = load(config)
    if store is not None:
        project = project.model_copy(update={"store": store})
    if check:
        with steps(3 * len(project.sources) + 1) as advance:
            advance("comparing the state with the batch features")
            found = check_state(project)
        _print_check(found)
        if not found.ok:
            raise typer.Exit(1)
        return
    with steps(3 * len(project.sources) + 2) as advance:
        done = rebuild(project, progress=advance)
    out.print(
        f"state rebuilt: {done.customers:,} customers from the sources and {done.events:,} "
        f"events (data through {done.data_through}) in {done.seconds:.1f} s"
    )


def _print_check(found: Any) -> None:
    from rich.table import Table

    if found.ok:
        out.print(
            f"the state equals the batch features at {found.as_of}: {found.customers:,} "
            f"customers x {found.columns} columns, largest relative difference "
            f"{found.max_difference:.1e}"
        )
        return
    table = Table(title=f"state against batch at {found.as_of}: first differences")
    for c in ("customer", "column", "batch", "state"):
        table.add_column(c)
    for m in found.mismatches:
        table.add_row(*(str(m[k]) for k in ("customer_id", "column", "batch", "state")))
    out.print(table)
    out.print(f"{len(found.mismatches)} differences: run 'custval rebuild' to repair the state")
