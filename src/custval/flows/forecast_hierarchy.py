"""Forecasts by a column (segment, channel, category) made to add up to the total: the total is
forecast on its own too, then reconciled two ways (:mod:`custval.models.reconciliation`):

- ``bottom_up``: the total is the sum of the series' forecasts;
- ``mint_shrink``: MinT with the shrunk covariance of the chosen methods' backtest errors
  (Wickramasuriya, Athanasopoulos & Hyndman 2019), every series moved as little as their
  errors' covariance allows.

Both are judged on the same backtest as the unreconciled forecasts: at each origin the chosen
methods' forecasts are reconciled (MinT's covariance from the other origins' errors only, so
that no origin is judged with its own errors) and scored like any candidate, as rows
``reconciled: bottom-up`` and ``reconciled: MinT`` of every series' leaderboard. Their
forecasts past the data are stored beside the base ones; the intervals keep the base
forecast's widths around the reconciled point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custval.errors import FitError
from custval.models.forecasting import Backtest, leaderboard
from custval.models.reconciliation import bottom_up, mint_shrink, summing_matrix

__all__ = ["RECONCILED", "Reconciled", "reconcile"]

#: the reconciliations and their rows' names in the leaderboard
RECONCILED = {"bottom_up": "reconciled: bottom-up", "mint_shrink": "reconciled: MinT"}
_BOUNDS = ("lo_80", "hi_80", "lo_95", "hi_95")


@dataclass
class Reconciled:
    """The leaderboard with the reconciled rows, the forecasts with the reconciled ones
    (column ``reconciliation``: base, bottom_up or mint_shrink) and notes."""

    leaderboard: pd.DataFrame
    forecasts: pd.DataFrame
    notes: list[str]


def reconcile(
    values: Mapping[str, np.ndarray],
    backtests: Mapping[str, Backtest],
    board: pd.DataFrame,
    forecasts: pd.DataFrame,
    *,
    total: str,
    season: int,
) -> Reconciled:
    """Reconcile the series ``values`` (by name; ``total`` the sum of the others) from their
    ``backtests``, leaderboard (``chosen`` marks each series' method) and base ``forecasts``."""
    order = [total, *sorted(s for s in values if s != total)]
    chosen = dict(
        zip(board.loc[board.chosen, "series"], board.loc[board.chosen, "method"], strict=True)
    )
    if any(chosen.get(s, "zero") == "zero" for s in order):
        note = "a series sold nothing or has no forecast: the forecasts are not reconciled"
        return Reconciled(board, forecasts.assign(reconciliation="base"), [note])
    tests = [backtests[s] for s in order]
    fcast = np.stack([t.forecasts[chosen[s]] for t, s in zip(tests, order, strict=True)], axis=1)
    actual = np.stack([t.actual for t in tests], axis=1)  # origins x series x horizon
    summing = summing_matrix(len(order) - 1)
    errors = actual - fcast
    made = {"bottom_up": np.stack([bottom_up(f[1:], summing) for f in fcast])}
    notes = []
    try:
        made["mint_shrink"] = np.stack(
            [mint_shrink(f, _others(errors, i), summing) for i, f in enumerate(fcast)]
        )
    except FitError as exc:
        notes.append(f"MinT left out: {exc.problem}")
    rows = [
        leaderboard(
            values[s],
            t.origins,
            t.actual,
            {RECONCILED[k]: v[:, j] for k, v in made.items()},
            season,
        ).assign(series=s, chosen=False)
        for j, (s, t) in enumerate(zip(order, tests, strict=True))
    ]
    ahead = _ahead(forecasts, order, errors, summing, list(made))
    return Reconciled(pd.concat([board, *rows], ignore_index=True), ahead, notes)


def _others(errors: np.ndarray, skip: int) -> np.ndarray:
    """The errors of every origin but ``skip``, series x (origins x horizon)."""
    kept = np.delete(errors, skip, axis=0)
    return kept.transpose(1, 0, 2).reshape(errors.shape[1], -1)


def _ahead(
    forecasts: pd.DataFrame,
    order: list[str],
    errors: np.ndarray,
    summing: np.ndarray,
    kinds: list[str],
) -> pd.DataFrame:
    """The base forecasts and, for each reconciliation, the same rows with the reconciled
    point and the base's interval widths around it."""
    base = forecasts.assign(reconciliation="base")
    rows = {s: base[base.series == s].sort_values("step") for s in order}
    points = np.stack([rows[s]["point"].to_numpy(np.float64) for s in order])
    residuals = errors.transpose(1, 0, 2).reshape(len(order), -1)
    out = [base]
    for kind in kinds:  # two reconciliations
        if kind == "bottom_up":
            done = bottom_up(points[1:], summing)
        else:
            done = mint_shrink(points, residuals, summing)
        for j, s in enumerate(order):
            shift = done[j] - points[j]
            part = rows[s].assign(reconciliation=kind, point=done[j])
            for col in _BOUNDS:
                part[col] = rows[s][col].to_numpy(np.float64) + shift
            out.append(part)
    return pd.concat(out, ignore_index=True)
