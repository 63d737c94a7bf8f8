"""Benchmark of ``custval.data.synth.generate``: wall time, rows and peak memory.

The requirement: 1,000,000 customers (about 10M transactions) in under 60 s, as CSV and as
Parquet, on a 2-core machine (DuckDB is measured too, without a limit: its ingest of 25M rows
alone takes about 40 s there). Each run happens in a child process so that its peak resident
memory (``ru_maxrss``) is its own; the output goes to a temporary folder that is removed after.

Usage::

    python bench/synth.py                      # 1M customers, csv and parquet
    python bench/synth.py -n 200000 -f duckdb  # other sizes and formats
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 60.0


def run_one(n: int, fmt: str, seed: int, folder: Path) -> dict:
    """Generate once in this process; wall time in s, peak RSS in MiB (Linux reports KiB)."""
    from custval.data.synth import generate

    start = time.perf_counter()
    result = generate(n, folder / "company", seed=seed, fmt=fmt)  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    size = sum(p.stat().st_size for p in result.out.rglob("*") if p.is_file())
    return {
        "format": fmt,
        "customers": n,
        "wall_s": round(wall, 2),
        "rows": result.rows,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bytes_written": size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--customers", type=int, default=1_000_000)
    parser.add_argument("-f", "--format", action="append", choices=["csv", "parquet", "duckdb"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    formats = args.format or ["csv", "parquet"]

    if args.child:
        print(json.dumps(run_one(args.customers, formats[0], args.seed, args.folder)))
        return 0

    failed = False
    for fmt in formats:
        folder = Path(tempfile.mkdtemp(prefix="custval-bench-synth-"))
        try:
            cmd = [sys.executable, __file__, "--child", "-n", str(args.customers), "-f", fmt]
            cmd += ["--seed", str(args.seed), "--folder", str(folder)]
            child = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if child.returncode != 0:
                print(child.stderr, file=sys.stderr)
                return child.returncode
            res = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        # the limit is set for CSV and Parquet at 1M customers; DuckDB's own ingest is slower
        limited = fmt != "duckdb" and args.customers == 1_000_000
        ok = res["wall_s"] < LIMIT_S or not limited
        failed |= not ok
        verdict = ("ok" if ok else f"SLOWER THAN {LIMIT_S:.0f} s") if limited else "(no limit)"
        rows = res["rows"]
        print(
            f"{fmt:8s} {res['customers']:>10,} customers  {res['wall_s']:6.1f} s  "
            f"transactions {rows['transactions']:>11,}  all rows {sum(rows.values()):>11,}  "
            f"peak RSS {res['peak_rss_mib']:8.0f} MiB  written {res['bytes_written'] / 2**20:7.0f}"
            f" MiB  {verdict}"
        )
        print("         rows per source: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
