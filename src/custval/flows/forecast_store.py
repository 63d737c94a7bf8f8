"""A forecast run into the store (:mod:`custval.store.forecasts`): the forecasts (the chosen
method's per series, and the reconciled ones when there are), the backtest's leaderboard and
the series themselves, as one all-or-nothing run of kind ``forecast``."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from custval.flows.forecasting import ForecastRun
from custval.store import open_store

__all__ = ["forecast_tables", "store_forecast"]

_INTERVAL = ("point", "lo_80", "hi_80", "lo_95", "hi_95")


def forecast_tables(run: ForecastRun) -> dict[str, pa.Table]:
    """The run's rows of ``forecasts``, ``forecast_backtest`` and ``forecast_series``."""
    fc = run.forecasts
    forecasts = pa.table(
        {
            "series": pa.array(fc["series"].astype(str).tolist()),
            "period": pa.array(pd.to_datetime(fc["period"]).dt.date.tolist(), pa.date32()),
            "step": pa.array(fc["step"].to_numpy(np.int32)),
            "measure": pa.array([run.measure] * len(fc)),
            "freq": pa.array([run.freq] * len(fc)),
            "method": pa.array(fc["method"].astype(str).tolist()),
            "reconciliation": pa.array(fc.get("reconciliation", pd.Series("base", fc.index))),
            **{c: _finite(fc[c]) for c in _INTERVAL},
        }
    )
    board = run.leaderboard
    numbers = ("mase", "rmsse", "bias", "wape", "coverage_80", "coverage_95")
    backtest = pa.table(
        {
            "series": pa.array(board["series"].astype(str).tolist()),
            "method": pa.array(board["method"].astype(str).tolist()),
            "chosen": pa.array(board["chosen"].astype(bool).to_numpy(np.int32)),
            **{
                c: _finite(board[c] if c in board else np.full(len(board), np.nan)) for c in numbers
            },
        }
    )
    s = run.series
    series = pa.table(
        {
            "series": pa.array(s["series"].astype(str).tolist()),
            "period": pa.array(pd.to_datetime(s["period"]).dt.date.tolist(), pa.date32()),
            "measure": pa.array([run.measure] * len(s)),
            "actual": _finite(s[run.measure]),
        }
    )
    return {"forecasts": forecasts, "forecast_backtest": backtest, "forecast_series": series}


def _finite(values: object) -> pa.Array:
    """Numbers with null where there is none (an undefined MASE, an interval too wide for the
    backtest's origins): NULL in both engines and null in JSON, never NaN or infinity."""
    x = np.asarray(values, dtype=np.float64)
    return pa.array(x, mask=~np.isfinite(x))


def store_forecast(run: ForecastRun, url: str, as_of: date) -> str:
    """Write the run into the store at ``url``; returns its run id."""
    tables = forecast_tables(run)
    with open_store(url) as store:
        return store.write_run(
            kind="forecast",
            predictions=pa.table({"customer_id": pa.array([], pa.string())}),
            as_of=as_of,
            extra=tables,
        )
