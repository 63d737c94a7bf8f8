"""BG/BB on the donations data of Fader, Hardie & Shang (2010): custval against the paper.

Data: ``../shared/data/donations/donations.csv`` (columns frequency, recency, periods, weights):
11,104 first-time supporters of a non-profit in 1995, the number who donated again in each of
the six following years (1996-2001), compressed to 22 (x, t_x, n) patterns with counts. Time
unit: one year, one transaction opportunity a year. The data stays outside the repository.

Check: the maximum-likelihood alpha, beta, gamma, delta agree with the published 1.204, 0.750,
0.657, 2.783 (FHS 2010, table 2) to within half a unit in the third significant digit; the
script exits 1 if any does not (2 if the data is missing) and prints the log-likelihood
(published: -33,225.6).

Usage::

    python bench/btyd_donations.py [--data PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from custval.models.btyd_discrete import BetaGeoBetaBinom

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "donations" / "donations.csv"
)
PUBLISHED = {"alpha": 1.204, "beta": 0.750, "gamma": 0.657, "delta": 2.783}
PUBLISHED_LL = -33_225.6


def third_digit_tolerance(value: float) -> float:
    """Half a unit in the third significant digit of ``value`` (0.005 for 1.204)."""
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"donations data not found at {args.data}", file=sys.stderr)
        return 2

    df = pd.read_csv(args.data)
    start = time.perf_counter()
    model = BetaGeoBetaBinom().fit(df["frequency"], df["recency"], df["periods"], df["weights"])
    seconds = time.perf_counter() - start

    print(f"BG/BB on donations: {int(df['weights'].sum()):,} donors, {len(df)} patterns")
    print(f"{'param':<7}{'published':>11}{'custval':>11}{'se':>9}{'|diff|':>10}{'tol':>9}  ok")
    failed = False
    for name, published in PUBLISHED.items():
        value, se = model.params_[name], model.standard_errors_[name]
        diff = abs(value - published)
        tol = third_digit_tolerance(published)
        ok = diff <= tol
        failed |= not ok
        print(
            f"{name:<7}{published:>11.3f}{value:>11.4f}{se:>9.4f}{diff:>10.5f}{tol:>9.4f}"
            f"  {'yes' if ok else 'NO'}"
        )
    print(f"log-likelihood: {model.log_likelihood_:.3f} (published {PUBLISHED_LL:,.1f})")
    print(
        f"converged={model.converged_} iterations={model.n_iter_} "
        f"grad_norm={model.grad_norm_:.2e} fit={seconds * 1000:.1f} ms"
    )
    e6 = model.expected_transactions_new_customer(np.array([6]))[0]
    print(f"expected repeat donations of a new donor in 6 years: {e6:.3f}")
    if failed:
        print("FAIL: a parameter differs from the published value", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
