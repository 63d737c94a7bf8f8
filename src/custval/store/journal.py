"""The events a service on a DuckDB file has acknowledged but not yet written to the store.

DuckDB pays 2.5-3 ms for any transaction that writes, however small (docs/realtime.md),
while appending a line to a file and syncing it to the disk costs 0.15-0.3 ms. So the one
writer of a DuckDB file acknowledges a group of events once they are in this journal, and
writes them to the ``events`` table, with the states they changed, in one transaction a
second (:class:`custval.flows.realtime.StateCache`).

The journal is a folder beside the store (``store.duckdb.journal``) of numbered segments,
one JSON line per group of events. The writer closes its segment when it writes the groups so
far to the store, and deletes it once that transaction has committed. Whatever a stopped
writer left is put into the store at its next start (the events not there yet: a segment
whose transaction committed just before the stop is skipped); the batch commands read it
too, without writing. A last line that was not written whole was never
acknowledged (its group failed with the process) and is ignored.

Reading the journal into the store is :mod:`custval.store.events`' work
(:func:`~custval.store.events.recover_journal`, :func:`~custval.store.events.events_table`).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from custval.data.events import EVENT_COLUMNS

__all__ = ["Journal", "discard_all", "journal_dir", "pending_rows"]

_NAMES = list(EVENT_COLUMNS)
_TIMES = {i for i, c in enumerate(_NAMES) if EVENT_COLUMNS[c] == "TIMESTAMP"}


def journal_dir(store_path: str | Path) -> Path:
    """The journal's folder beside a DuckDB store file."""
    return Path(f"{store_path}.journal")


class Journal:
    """The segments of one writing process: :meth:`append` a group durably, :meth:`rotate`
    to close the segment about to be written to the store, :meth:`discard` once it is."""

    def __init__(self, store_path: str | Path) -> None:
        self.folder = journal_dir(store_path)
        self.folder.mkdir(parents=True, exist_ok=True)
        found = _segments(self.folder)
        self._number = int(found[-1].stem) + 1 if found else 1
        self._fd = self._open()

    def _open(self) -> int:
        path = self.folder / f"{self._number:012d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _sync_folder(self.folder)  # the new name survives a power cut, as its lines do
        return fd

    def append(self, rows: list[dict[str, Any]]) -> None:
        """One group of event rows (:data:`EVENT_COLUMNS`), on the disk when this returns."""
        line = json.dumps([[_encode(r[c]) for c in _NAMES] for r in rows], separators=(",", ":"))
        os.write(self._fd, line.encode() + b"\n")
        os.fsync(self._fd)

    def rotate(self) -> int:
        """Close the current segment (the groups about to be written to the store) and start
        the next; returns the closed segment's number."""
        os.close(self._fd)
        closed = self._number
        self._number += 1
        self._fd = self._open()
        return closed

    def discard(self, through: int) -> None:
        """Delete the segments up to number ``through``: the store holds their events."""
        for path in _segments(self.folder):
            if int(path.stem) <= through:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the current segment (an empty one is deleted, and then an empty folder)."""
        os.close(self._fd)
        path = self.folder / f"{self._number:012d}.jsonl"
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        if not any(self.folder.iterdir()):
            self.folder.rmdir()


def pending_rows(store_path: str | Path) -> list[dict[str, Any]]:
    """Every event row in the journal of a DuckDB store, oldest first (the store may hold some
    of them already)."""
    rows: list[dict[str, Any]] = []
    for path in _segments(journal_dir(store_path)):
        for line in path.read_bytes().split(b"\n"):
            try:
                group = json.loads(line)
            except ValueError:  # a line cut short: its group was never acknowledged
                continue
            rows += [_decode(values) for values in group]
    return rows


def discard_all(store_path: str | Path) -> None:
    """Delete every segment of a DuckDB store's journal (the store holds their events)."""
    for path in _segments(journal_dir(store_path)):
        path.unlink()


def _segments(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(folder.glob("*.jsonl"), key=lambda p: int(p.stem))


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _decode(values: list[Any]) -> dict[str, Any]:
    row = dict(zip(_NAMES, values, strict=True))
    for i in _TIMES:
        name = _NAMES[i]
        if row[name] is not None:
            row[name] = datetime.fromisoformat(row[name])
    return row
