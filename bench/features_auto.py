"""Speed and memory of the generated features (issue 23) on the 1M-customer generated company.

Data: ``custval synth -n 1000000 --format parquet --seed 1`` (25.8M rows in six related
tables and an id map), made once in ``bench/.data/company-1000000-1``. Each run is a child
process (wall time and its own peak resident memory from ``wait4``), DuckDB with its default
3 GB cap (2.5 GB while the generated features are made), in the same run:

- ``custval features`` (the hand-built features, reading and cleaning included): the baseline;
- ``custval features --auto`` with the default ``[features.auto]`` (windows 30, 90, 365 days
  and the whole history: 512 generated features);
- ``custval features --auto`` with ``windows = [90]`` (90 days and the whole history).

The generated features' own time is a run's wall time less the baseline's (both read, clean
and link the same sources). Target (issue 23): at least 150 generated features in under
60 s and under 4 GB.

Usage::

    python bench/features_auto.py                 # 1M customers
    python bench/features_auto.py -n 100000       # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features import ensure_data, measure

SECONDS_TARGET = 60.0
MEMORY_TARGET_MIB = 4096
MIN_FEATURES = 150


def _project(data: Path, folder: Path, windows: list[int] | None) -> Path:
    """The company's project file, with ``[features.auto] windows`` when given."""
    text = (data / "custval.toml").read_text()
    if windows is not None:
        text = text.replace("\n[identity]", f"\n[features.auto]\nwindows = {windows}\n\n[identity]")
    text = text.replace('uri = "', f'uri = "{data}/')
    path = folder / f"custval-{'default' if windows is None else '-'.join(map(str, windows))}.toml"
    path.write_text(text)
    return path


def _run(config: Path, out: Path, auto: bool) -> dict:
    cmd = [sys.executable, "-m", "custval", "features", "-c", str(config), "-o", str(out), "-q"]
    found = measure([*cmd, "--auto"] if auto else cmd)
    names = pq.read_schema(out).names
    found["generated"] = sum("__" in n for n in names)
    found["columns"] = len(names) - 1
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data = ensure_data(args.customers, args.seed)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        default = _project(data, tmp, None)
        runs = {
            "custval features (hand-built)": _run(default, tmp / "hand.parquet", False),
            "custval features --auto (default windows)": _run(default, tmp / "a.parquet", True),
            "custval features --auto (windows = [90])": _run(
                _project(data, tmp, [90]), tmp / "b.parquet", True
            ),
        }
    base = runs["custval features (hand-built)"]
    print(
        f"\n{args.customers:,} customers (generated company, seed {args.seed}); "
        f"{os.cpu_count()} cores; DuckDB capped at its default 3 GB (2.5 GB while generating)"
    )
    print(f"{'run':<44} {'columns':>7} {'generated':>9} {'wall s':>7} {'gen s':>6} {'peak MiB':>8}")
    verdicts = []
    for name, r in runs.items():
        own = r["wall_s"] - base["wall_s"] if r is not base else 0.0
        print(
            f"{name:<44} {r['columns']:>7} {r['generated']:>9} {r['wall_s']:>7.1f} "
            f"{own:>6.1f} {r['peak_mib']:>8.0f}"
        )
        if r is not base:
            met = (
                r["generated"] >= MIN_FEATURES
                and own < SECONDS_TARGET
                and r["peak_mib"] < MEMORY_TARGET_MIB
            )
            verdicts.append(
                f"{name}: {r['generated']} generated features in {own:.1f} s "
                f"beyond the hand-built run, peak {r['peak_mib']:.0f} MiB: "
                + ("met" if met else "NOT MET")
            )
    print(
        f"\ntarget: >= {MIN_FEATURES} generated features in < {SECONDS_TARGET:.0f} s and "
        f"< {MEMORY_TARGET_MIB} MiB"
    )
    print("\n".join(verdicts))
    print(json.dumps({"customers": args.customers, "runs": runs}))
    return 0 if any(v.endswith(" met") for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
