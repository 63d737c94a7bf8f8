"""Featuretools' Deep Feature Synthesis (DFS) on the tables custval's generated features use, so
that a benchmark can compare the two feature sets (cross-validated ROC AUC, seconds, memory).

Featuretools 1.31.0 fails on pandas 3 (custval's), so its side runs in its own virtual
environment, ``bench/.data/venv-featuretools``, made on first use from
``bench/requirements-featuretools.txt`` by :func:`competitor_env.venv_python`. The two sides meet
in a folder of Parquet files:

* :func:`export` (custval's environment) loads a project as ``custval features -c X.toml`` does,
  prepares it (validation, cleaning, identity linking), and writes ``customers.parquet`` (the
  customers of the hand-built feature table's spine), one ``<kind>.parquet`` per relation of
  ``flows.generation.relations`` (customer_id, the time column, the numeric, categorical and
  group columns: every cleaned row, also those at or after the as-of date) and
  ``relations.json``. The engine writes the Parquet, so no table passes through Python.
* :func:`main` (Featuretools' environment: ``python bench/featuretools_dfs.py --tables DIR --out
  FILE``) builds the EntitySet and runs DFS, writing customer_id and every feature to Parquet and
  one JSON line of counts, seconds and peak memory to stdout.
* :func:`run` (custval's environment) runs :func:`main` in a child process with the venv's
  interpreter and returns that JSON line with the child's wall time.

The DFS settings, and why (fairness: the same tables, the same cutoff, comparable primitives)
-----------------------------------------------------------------------------------------------
* The EntitySet: ``customers`` (index customer_id, one row per customer of the spine); each
  relation's table with a made-up index, its time column as ``time_index`` and customer_id
  related to ``customers``; numeric columns as Double (booleans as Boolean), categorical ones as
  Categorical, ids as Unknown. Where a relation has a group (the transactions' order_id), an
  ``orders`` dataframe is normalised from it (``normalize_dataframe``, its time index the first
  line's time) and takes the customer_id: customers -> orders -> transactions, so that depth 2
  aggregates per order and then across a customer's orders, as custval's grouped features do,
  and Featuretools still aggregates the lines straight to the customer along that path
  (``SUM(transactions.amount)``). Keeping transactions related to customers as well (a diamond)
  made every line feature twice and odd ones through both paths. The order key is customer_id
  and order_id together, as custval groups by both; a line without an order is an order alone.
* Primitives: Featuretools' default aggregation primitives (sum, std, max, skew, min, mean,
  count, percent_true, num_unique, mode) plus those of custval's set they lack (trend,
  time_since_first, time_since_last); its default transform primitives (day, year, month,
  weekday of the time columns; age, haversine, num_words and num_characters find no input
  here). ``max_depth`` 2 by default. No interesting values, so no where-features. Trend is
  Featuretools' slowest primitive (a least-squares fit per group in Python): about 80% of the
  DFS seconds on the sample company (profiled at 5,000 customers).
* Point in time: one cutoff time per customer, midnight at the start of the as-of date, with
  ``include_cutoff_time=False``: Featuretools then uses the rows with time < cutoff (its default,
  True, would keep rows AT the cutoff), the rows custval's features see. With ``--windows 30,90``
  DFS runs once per window with ``training_window="30 days"``, keeping the rows with
  cutoff - 30 days <= time < cutoff (custval's ``_days <= 30``), and the columns get the window
  as suffix (``__30d``, ``__all``: custval's names of windows). Last time indexes are added
  (``add_last_time_indexes``), as Featuretools advises with training windows, so an order
  counts in a window from its last line, as in custval.

Output: customer_id and every feature, numbers as float64, categorical and mode features as
strings, booleans as 0/1; names as Featuretools gives them (``MEAN(orders.SUM(transactions.
amount))``), but without the characters JSON-based model libraries (LightGBM) reject: the
``, `` between a primitive's inputs becomes ``;``, spaces and ``: " [ ] { }`` become ``_``.
Seconds: ``seconds_entityset`` is reading the Parquet and building the EntitySet;
``seconds_dfs`` all DFS runs and the join of the windows; ``peak_rss_mib`` the child's peak
resident memory.

Standard library only at the top level: both environments import this file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Featuretools' default aggregation primitives (1.31), then custval's that they lack
AGG_PRIMITIVES = (
    "sum",
    "std",
    "max",
    "skew",
    "min",
    "mean",
    "count",
    "percent_true",
    "num_unique",
    "mode",
    "trend",
    "time_since_first",
    "time_since_last",
)
#: the characters that JSON-based model libraries (LightGBM) reject in a feature's name, and
#: spaces; ", " between a primitive's inputs becomes ";" (``TREND(web_sessions.page_views;
#: timestamp)``)
_UNSAFE = re.compile(r'[\s:"\[\]{}]+')


# ---- custval's side -------------------------------------------------------------------------


def export(project_toml: Path, out: Path, as_of: date | None = None) -> dict[str, Any]:
    """Write the customers, the relations' cleaned tables and ``relations.json`` of the project
    at ``project_toml`` into ``out``, as custval's generated features would see them at
    ``as_of`` (default: the project's). Every row is written, also those at or after as-of:
    leaving them out is DFS's work (its cutoff time), part of what is compared. Returns the
    as-of date and the rows of each table."""
    from custval import flows
    from custval.config import load_project
    from custval.flows import generation

    project = load_project(Path(project_toml))
    prepared = flows.prepare(project)
    spine = flows.features(project, prepared, as_of)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {"customers": _write(spine.table.select("customer_id"), out / "customers.parquet")}
    described = []
    for rel in generation.relations(project, prepared):
        columns = _relation_columns(rel)
        table = prepared.tables[rel.kind].select(*columns)
        rows[rel.kind] = _write(table, out / f"{rel.kind}.parquet")
        described.append(
            {
                "kind": rel.kind,
                "time": rel.time,
                "numeric": list(rel.numeric),
                "categorical": list(rel.categorical),
                "group": rel.group,
            }
        )
    meta = {"as_of": spine.as_of.isoformat(), "relations": described}
    (out / "relations.json").write_text(json.dumps(meta, indent=1))
    return {"as_of": meta["as_of"], "rows": rows}


def _relation_columns(rel: Any) -> list[str]:
    """customer_id, the time column, then the numeric, categorical and group columns, each
    once."""
    wanted = ["customer_id", rel.time, *rel.numeric, *rel.categorical]
    if rel.group:
        wanted.append(rel.group)
    return list(dict.fromkeys(wanted))


def _write(table: Any, path: Path) -> int:
    """``table`` to Parquet by the engine (sorted by customer_id, so that runs are alike);
    returns its rows, read from the file's metadata."""
    import pyarrow.parquet as pq

    table.order_by("customer_id").to_parquet(path)
    return pq.ParquetFile(path).metadata.num_rows


def run(
    tables: Path,
    out: Path,
    depth: int = 2,
    windows: str = "all",
    timeout: float | None = None,
) -> dict[str, Any]:
    """DFS on the tables :func:`export` wrote to ``tables``, in a child process of Featuretools'
    environment (made on first use), its features written to ``out``. Returns the child's JSON
    line with ``child_seconds`` (its wall time) and ``venv_seconds`` (making the environment
    ready). Raises ``TimeoutError`` past ``timeout`` seconds and ``RuntimeError`` with the end
    of the child's stderr when it fails."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from competitor_env import venv_python

    start = time.perf_counter()
    py = venv_python("featuretools", "Featuretools DFS")
    venv_seconds = time.perf_counter() - start
    command = [str(py), str(Path(__file__).resolve()), "--tables", str(tables)]
    command += ["--out", str(out), "--depth", str(depth), "--windows", windows]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=_child_env()
        )
    except subprocess.TimeoutExpired as err:
        raise TimeoutError(f"featuretools did not finish within {timeout} s") from err
    child_seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError("featuretools side failed:\n" + done.stderr[-3000:])
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("featuretools side printed no result:\n" + done.stdout[-3000:])
    result = json.loads(lines[-1])
    result.update(child_seconds=child_seconds, venv_seconds=venv_seconds)
    return result


def _child_env() -> dict[str, str]:
    """The environment without what would let custval's packages leak into the child."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


# ---- Featuretools' side ---------------------------------------------------------------------


def read_tables(folder: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The customers, each relation's table (by kind) and ``relations.json`` of ``folder``."""
    import pandas as pd

    meta = json.loads((folder / "relations.json").read_text())
    customers = pd.read_parquet(folder / "customers.parquet")
    tables = {
        r["kind"]: pd.read_parquet(folder / f"{r['kind']}.parquet") for r in meta["relations"]
    }
    return customers, tables, meta


def typed(frame: Any, rel: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The relation's table with pandas types Woodwork takes as meant, and its logical types:
    the time as datetime64[ns], booleans as Boolean (BooleanNullable with nulls), every other
    numeric column as Double, categorical ones as Categorical, ids as Unknown."""
    import pandas as pd

    frame = frame.copy()
    frame[rel["time"]] = pd.to_datetime(frame[rel["time"]]).astype("datetime64[ns]")
    types = {"customer_id": "Unknown", rel["time"]: "Datetime"}
    for column in rel["numeric"]:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or _is_boolean_object(values):
            nullable = bool(values.isna().any())
            frame[column] = values.astype("boolean" if nullable else "bool")
            types[column] = "BooleanNullable" if nullable else "Boolean"
        else:
            frame[column] = pd.to_numeric(values).astype("float64")
            types[column] = "Double"
    for column in rel["categorical"]:
        types[column] = "Categorical"
    if rel["group"]:
        frame[rel["group"]] = group_key(frame, rel["group"])
        types[rel["group"]] = "Unknown"
    return frame, types


def group_key(frame: Any, group: str) -> Any:
    """The key of a row's group: customer_id and the group together, as custval groups by both
    (an order id two customers share makes two orders, not one moved to the first customer);
    a row without a group is a group of its own, so that it still reaches its customer through
    the groups' table."""
    customer = frame["customer_id"].astype(str)
    key = customer + "|" + frame[group].astype(str)
    alone = customer + "|#" + frame.index.astype(str)
    return key.where(frame[group].notna(), alone)


def _is_boolean_object(values: Any) -> bool:
    """Whether an object column holds only booleans and nulls (Parquet booleans with nulls)."""
    if values.dtype != object:
        return False
    present = values.dropna()
    return len(present) > 0 and all(isinstance(v, bool) for v in present.head(1000))


def group_name(group: str) -> str:
    """The dataframe a group key is normalised into: ``order_id`` -> ``orders``."""
    return group.removesuffix("_id") + "s"


def entityset(customers: Any, tables: dict[str, Any], meta: dict[str, Any]) -> Any:
    """The EntitySet: customers, and each relation's table related to them by customer_id;
    a table with groups (order lines) reaches them through its groups (orders, normalised from
    it and taking the customer_id), so that depth 2 can aggregate per group and then across a
    customer's groups without a second path from customers to the lines."""
    import featuretools as ft

    es = ft.EntitySet(id="custval")
    es.add_dataframe(
        dataframe_name="customers",
        dataframe=customers[["customer_id"]].copy(),
        index="customer_id",
        logical_types={"customer_id": "Unknown"},
    )
    for rel in meta["relations"]:
        kind = rel["kind"]
        frame, types = typed(tables.pop(kind), rel)
        es.add_dataframe(
            dataframe_name=kind,
            dataframe=frame,
            index=f"{kind}_row",
            make_index=True,
            time_index=rel["time"],
            logical_types=types,
        )
        parent = kind
        if rel["group"]:
            parent = group_name(rel["group"])
            es.normalize_dataframe(
                base_dataframe_name=kind,
                new_dataframe_name=parent,
                index=rel["group"],
                additional_columns=["customer_id"],
                make_time_index=True,
            )
        es.add_relationship("customers", "customer_id", parent, "customer_id")
    es.add_last_time_indexes()
    return es


def parse_windows(text: str) -> list[int | None]:
    """``all`` -> [None]; ``30,90,365,all`` -> [30, 90, 365, None] (None: no training window)."""
    found: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        window = None if part == "all" else int(part)
        if window is not None and window <= 0:
            raise ValueError(f"a window must be a positive number of days, not {part!r}")
        if window not in found:
            found.append(window)
    if not found:
        raise ValueError("--windows names no window")
    return found


def safe_name(name: str) -> str:
    """Featuretools' feature name, readable, without the characters model libraries reject."""
    return _UNSAFE.sub("_", re.sub(r",\s*", ";", name)).strip("_")


def as_output(matrix: Any) -> Any:
    """The feature matrix as written: numbers as float64, booleans as 0/1 floats, categorical
    and mode features (and anything else) as strings, nulls kept."""
    import pandas as pd

    out = {}
    for column in matrix.columns:
        values = matrix[column]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[column] = values.astype("float64")
        else:
            text = values.astype(object).map(lambda v: None if pd.isna(v) else str(v))
            # a string dtype, so that a column with no value is still a string in Parquet
            out[column] = text.astype("string")
    return pd.DataFrame(out, index=matrix.index)


def synthesize(es: Any, ids: Any, as_of: date, depth: int, window: int | None, jobs: int) -> Any:
    """One DFS run: the features of every customer at midnight of ``as_of``, from the rows
    strictly before it (``include_cutoff_time=False``) and, with ``window``, at most that many
    days before it."""
    import featuretools as ft
    import pandas as pd

    cutoff = pd.DataFrame(
        {"customer_id": ids, "time": pd.Timestamp(datetime.combine(as_of, datetime.min.time()))}
    )
    matrix, _ = ft.dfs(
        entityset=es,
        target_dataframe_name="customers",
        agg_primitives=list(AGG_PRIMITIVES),
        max_depth=depth,
        cutoff_time=cutoff,
        include_cutoff_time=False,
        training_window=None if window is None else f"{window} days",
        n_jobs=jobs,
        verbose=False,
    )
    return matrix.reindex(ids)


def features(
    es: Any, ids: Any, as_of: date, depth: int, windows: list[int | None], jobs: int
) -> Any:
    """customer_id and the features of every window, suffixed with the window's name when
    more than the whole history is asked for, their names made safe."""
    import pandas as pd

    parts = []
    for window in windows:
        matrix = as_output(synthesize(es, ids, as_of, depth, window, jobs))
        names = [safe_name(c) for c in matrix.columns]
        if windows != [None]:
            suffix = "all" if window is None else f"{window}d"
            names = [f"{n}__{suffix}" for n in names]
        matrix.columns = names
        parts.append(matrix)
    table = pd.concat(parts, axis=1)
    if table.columns.duplicated().any():
        raise RuntimeError("two features share a name after it was made safe")
    table.index.name = "customer_id"
    return table.reset_index()


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the child."""
    parser = argparse.ArgumentParser(description="Featuretools DFS on custval's exported tables")
    parser.add_argument("--tables", type=Path, required=True, help="folder export() wrote")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file of the features")
    parser.add_argument("--depth", type=int, default=2, help="max_depth of DFS (default 2)")
    parser.add_argument("--windows", default="all", help="all, or days such as 30,90,365,all")
    parser.add_argument("--jobs", type=int, default=1, help="n_jobs of DFS (>1 needs dask)")
    args = parser.parse_args(argv)
    if args.jobs > 1 and importlib.util.find_spec("distributed") is None:
        # Featuretools runs n_jobs > 1 on a dask cluster; its environment here has no dask
        parser.error("--jobs > 1 needs dask's distributed in Featuretools' environment")
    return args


def main(argv: list[str] | None = None) -> int:
    """The child: read the tables, build the EntitySet, run DFS per window, write the features
    and print one JSON line."""
    import warnings

    args = arguments(argv)
    windows = parse_windows(args.windows)
    warnings.simplefilter("ignore")  # Featuretools warns per primitive; the result says all
    start = time.perf_counter()
    customers, tables, meta = read_tables(args.tables)
    es = entityset(customers, tables, meta)
    seconds_entityset = time.perf_counter() - start
    start = time.perf_counter()
    as_of = date.fromisoformat(meta["as_of"])
    ids = customers["customer_id"].to_numpy()
    table = features(es, ids, as_of, args.depth, windows, args.jobs)
    seconds_dfs = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    result = {
        "features": table.shape[1] - 1,
        "seconds_entityset": round(seconds_entityset, 3),
        "seconds_dfs": round(seconds_dfs, 3),
        "rows": len(table),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "depth": args.depth,
        "windows": args.windows,
        "featuretools": _version("featuretools"),
        "pandas": _version("pandas"),
    }
    print(json.dumps(result), flush=True)
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
