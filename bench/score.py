"""Scoring a million customers into the store: DuckDB and PostgreSQL.

Data: a generated company of ``--customers`` (default 1,000,000) in Parquet under
``bench/.data/score`` (made once and reused). A value model is trained on it once (selection on
a 100,000-customer sample, refit on all; not timed). Then ``custval.flows.scoring`` is timed,
as ``custval score`` runs it: reading, checking and cleaning the six sources, features at the
as-of date, value probability, class and top-3 reasons, CLV with its 90% interval and P(alive)
from BG/NBD and Gamma-Gamma, all written as one run, into the DuckDB file and, when
``CUSTVAL_TEST_PG_URL`` (or ``--pg``) names a server, into PostgreSQL. Prints the seconds and
rows per second of each, and the time of each part.

Targets (issue 5): DuckDB under 2 minutes, PostgreSQL under 4 minutes on 2 cores. Exits 1 when
one is missed. Run: ``.venv/bin/python bench/score.py [--customers N] [--pg URL]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def company(customers: int) -> tuple[Path, Path]:
    """The generated company of ``customers`` under bench/.data/score (made once) and its
    models folder, with a value model trained on it once (not timed)."""
    from custval import flows
    from custval.config import load_project
    from custval.data.synth import generate

    folder = HERE / ".data" / "score" / str(customers)
    config = folder / "custval.toml"
    if not config.exists():
        t0 = time.perf_counter()
        generate(customers, folder, seed=1, fmt="parquet")
        print(f"generated {customers:,} customers in {time.perf_counter() - t0:.0f} s")
    models = folder / "models"
    if not any(models.glob("*/manifest.json")):
        t0 = time.perf_counter()
        project = load_project(config)
        prepared = flows.prepare(project)
        flows.train_value(
            project, prepared=prepared, out_dir=models, candidates=("logistic", "lightgbm")
        )
        print(f"trained the value model in {time.perf_counter() - t0:.0f} s (not timed below)")
    return config, models


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--pg", default=os.environ.get("CUSTVAL_TEST_PG_URL"))
    args = ap.parse_args()

    import psycopg

    from custval import flows
    from custval.config import load_project

    config, models = company(args.customers)
    project = load_project(config)

    results = {}
    targets = {"duckdb": 120.0, "postgres": 240.0}
    stores = {"duckdb": str(config.parent / f"store-{uuid.uuid4().hex[:6]}.duckdb")}
    schema = None
    if args.pg:
        schema = f"custval_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.pg, autocommit=True) as con:
            con.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in args.pg else "?"
        stores["postgres"] = f"{args.pg}{sep}options=-csearch_path%3D{schema}"
    try:
        for engine, url in stores.items():
            t0 = time.perf_counter()
            # the whole command: reading and cleaning the sources is part of the time
            result = flows.score(project, store_url=url, models_dir=models)
            seconds = time.perf_counter() - t0
            results[engine] = seconds
            print(
                f"{engine}: {result.customers:,} customers scored and stored in {seconds:.0f} s "
                f"({result.customers / seconds:,.0f} customers/s; "
                f"{4 * result.customers / seconds:,.0f} rows/s with 3 reasons each)",
                flush=True,
            )
            print(
                "  steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()),
                flush=True,
            )
    finally:
        if schema:
            with psycopg.connect(args.pg, autocommit=True) as con:
                con.execute(f"DROP SCHEMA {schema} CASCADE")
        Path(stores["duckdb"]).unlink(missing_ok=True)
    met = {e: s < targets[e] for e, s in results.items()}
    for e, ok in met.items():
        print(f"target {e} < {targets[e]:.0f} s: {'met' if ok else 'NOT MET'}")
    if "postgres" not in results:
        print("PostgreSQL not measured: set CUSTVAL_TEST_PG_URL or --pg")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
