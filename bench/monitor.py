"""Monitoring (issue 19), first part: the drift check's speed and memory at a million
customers by 40 features (30 numeric, 10 categorical), the reference profiled once and a later
run profiled on its bins and compared. To come: the false-alarm rate over 20 stable runs of the
generated company, the detection of planted shifts and Evidently on the same data.

Run: ``.venv/bin/python bench/monitor.py [--n N]``. Target: under 10 s and under 1 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

from custval.models.drift import compare, profile

NUMERIC, CATEGORICAL = 30, 10


def columns(n: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Features like a scoring run's: skewed amounts, counts, shares and a few categories."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for j in range(NUMERIC):
        kind = j % 3
        if kind == 0:
            out[f"num_{j}"] = rng.lognormal(3 + shift, 1.0, n)
        elif kind == 1:
            out[f"num_{j}"] = rng.poisson(3.0, n).astype(np.float64)
        else:
            out[f"num_{j}"] = rng.beta(2, 5, n)
    names = np.array(["web", "store", "app", "phone", "partner", "unknown"], dtype=object)
    for j in range(CATEGORICAL):
        out[f"cat_{j}"] = names[rng.integers(0, names.size, n)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"# bench/monitor.py; load average at the start {os.getloadavg()[0]:.2f} (2 cores)")
    reference, current = columns(args.n, 0), columns(args.n, 1)
    start = time.perf_counter()
    profiles = {name: profile(values, name) for name, values in reference.items()}
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    results = [compare(profiles[name], profiles[name].like(v)) for name, v in current.items()]
    check_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    alarms = sum(r.alarm for r in results)
    print(
        f"{args.n:,} customers x {len(current)} features: reference profiled in {ref_s:.1f} s; "
        f"a run profiled on its bins and compared in {check_s:.1f} s ({alarms} alarms, none "
        f"planted); peak {peak:,.0f} MiB (the data itself included)"
    )
    ok = check_s < 10 and peak < 1024
    print(f"target under 10 s and 1 GB: {'met' if ok else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
