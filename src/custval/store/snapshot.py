"""What the latest runs recommend for each customer, read from memory-mapped files rather than
the store, for ``GET /v1/customers/{id}/recommendations`` at the service's latency.

A lookup in the store costs a connection (a DuckDB file is opened per request, so that a
scoring run can write between requests) and a query per action table: about 40 ms for one
customer of a 100,000-customer run. A snapshot holds one run's rows of each table the answer
reads, sorted by customer id, in Arrow IPC files under a cache folder; the service maps them
into memory (the pages are shared by its workers and by the operating system's cache) and
finds a customer by binary search: well under a millisecond, the same answer as
:meth:`custval.store.runs.Store.recommendations` (tested).

A snapshot is made once per run (``<cache>/<run_id>-<targeting run>/``, written to a
temporary folder and renamed, so that two workers never read half a snapshot) and never
changes: a new scoring run makes a new one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from custval.store.runs import RECOMMENDATION_PARTS, TARGETING_COLUMNS, Store

__all__ = ["CustomerSnapshot", "latest_runs"]

#: the snapshot's tables besides the recommendation parts: who the run knows, and the targeting
_KNOWN = "predictions"
_TARGETING = "targeting"


def latest_runs(store: Store) -> tuple[str, str | None] | None:
    """(the latest scoring run, the latest run with a targeting list), or None without a run."""
    run_id = store.latest_run()
    if run_id is None:
        return None
    rows = store.query("SELECT run_id FROM v1_latest_targeting LIMIT 1")
    return run_id, (rows[0][0] if rows else None)


def _sorted(rows: pa.Table, order: str | None) -> pa.Table:
    keys = [("customer_id", "ascending")] + ([(order, "ascending")] if order else [])
    # one record batch: the column is then one array, which a binary search can index
    return rows.take(pc.sort_indices(rows, sort_keys=keys)).combine_chunks()


def _write(path: Path, rows: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
        writer.write_table(rows, max_chunksize=max(rows.num_rows, 1))


def _read(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


class CustomerSnapshot:
    """One scoring run's per-customer recommendation rows (and the latest targeting list),
    memory-mapped from ``folder``; :meth:`recommendations` answers as the store would."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder, self.run_id = folder, run_id
        names = [table for _, table, _ in RECOMMENDATION_PARTS] + [_KNOWN, _TARGETING]
        self.tables = {name: _read(folder / f"{name}.arrow") for name in names}
        self._ids = {
            name: t.column("customer_id").chunk(0) if t.num_rows else None
            for name, t in self.tables.items()
        }

    @classmethod
    def load(cls, store: Store, cache: Path) -> CustomerSnapshot | None:
        """The snapshot of the store's latest runs, made in ``cache`` if it is not there yet;
        None when the store has no scoring run."""
        runs = latest_runs(store)
        if runs is None:
            return None
        run_id, targeting_run = runs
        folder = cache / f"{run_id}-{targeting_run or 'none'}"
        if not folder.exists():
            cls._make(store, folder, run_id, targeting_run)
        return cls(folder, run_id)

    @staticmethod
    def _make(store: Store, folder: Path, run_id: str, targeting_run: str | None) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".making-", dir=folder.parent))
        try:
            for _, table, order in RECOMMENDATION_PARTS:  # a loop over five tables
                _write(work / f"{table}.arrow", _sorted(store.run_rows(table, run_id), order))
            known = store.run_rows(_KNOWN, run_id).select(["customer_id"])
            _write(work / f"{_KNOWN}.arrow", _sorted(known, None))
            aimed = store.run_rows(_TARGETING, targeting_run) if targeting_run else None
            if aimed is None:
                schema = pa.schema([(c, pa.string()) for c in TARGETING_COLUMNS])
                aimed = schema.empty_table()
            _write(work / f"{_TARGETING}.arrow", _sorted(aimed, None))
            try:
                work.rename(folder)
            except OSError:  # another worker made it first: theirs is the same
                shutil.rmtree(work, ignore_errors=True)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _rows(self, name: str, customer_id: str) -> list[dict[str, Any]]:
        """The rows of ``customer_id`` in table ``name`` (binary search on the sorted ids)."""
        ids = self._ids[name]
        if ids is None:
            return []
        lo, hi = _bounds(ids, customer_id)
        return self.tables[name].slice(lo, hi - lo).to_pylist()

    def recommendations(self, customer_id: str) -> dict[str, Any] | None:
        """As :meth:`custval.store.runs.Store.recommendations`: None when the run does not
        know the customer."""
        if not self._rows(_KNOWN, customer_id):
            return None
        found: dict[str, Any] = {"customer_id": customer_id, "run_id": self.run_id}
        for key, table, order in RECOMMENDATION_PARTS:
            rows = [
                {k: v for k, v in r.items() if k not in ("run_id", "customer_id")}
                for r in self._rows(table, customer_id)
            ]
            found[key] = rows if order else (rows[0] if rows else None)
        aimed = self._rows(_TARGETING, customer_id)
        found["targeting"] = aimed[0] if aimed else None
        return found


def _bounds(ids: pa.StringArray, key: str) -> tuple[int, int]:
    """[lo, hi): the positions of ``key`` in the sorted ``ids`` (bisect on Arrow scalars;
    Arrow sorts text by its UTF-8 bytes, which is Python's order of code points)."""
    lo, hi = 0, len(ids)
    while lo < hi:  # the first position not below key
        mid = (lo + hi) // 2
        if ids[mid].as_py() < key:
            lo = mid + 1
        else:
            hi = mid
    end, top = lo, len(ids)
    while end < top:  # the first position above key
        mid = (end + top) // 2
        if ids[mid].as_py() <= key:
            end = mid + 1
        else:
            top = mid
    return lo, end
