"""The store's tables of sales forecasts (``custval forecast``), their BI views and how the
service reads the latest forecast run.

- ``forecasts``: one row per run, series, method kind and period ahead: the point forecast and
  its 80% and 95% intervals. ``reconciliation`` says which forecast it is: ``base`` (the chosen
  method's, per series on its own), ``bottom_up`` or ``mint_shrink`` (made to add up to the
  total, when the run is by a column).
- ``forecast_backtest``: the leaderboard of every series and candidate (MASE, RMSSE, bias,
  WAPE, interval coverage; ``chosen`` = 1 for the one forecast), and the reconciled methods'
  errors on the same backtest.
- ``forecast_series``: the series the run learnt from, so that a chart draws the history
  beside the forecast.
"""

from __future__ import annotations

from typing import Any

FORECAST_COLUMNS = {
    "run_id": "TEXT",
    "series": "TEXT",
    "period": "DATE",
    "step": "INTEGER",
    "measure": "TEXT",
    "freq": "TEXT",
    "method": "TEXT",
    "reconciliation": "TEXT",
    "point": "DOUBLE PRECISION",
    "lo_80": "DOUBLE PRECISION",
    "hi_80": "DOUBLE PRECISION",
    "lo_95": "DOUBLE PRECISION",
    "hi_95": "DOUBLE PRECISION",
}
BACKTEST_COLUMNS = {
    "run_id": "TEXT",
    "series": "TEXT",
    "method": "TEXT",
    "chosen": "INTEGER",
    "mase": "DOUBLE PRECISION",
    "rmsse": "DOUBLE PRECISION",
    "bias": "DOUBLE PRECISION",
    "wape": "DOUBLE PRECISION",
    "coverage_80": "DOUBLE PRECISION",
    "coverage_95": "DOUBLE PRECISION",
}
SERIES_COLUMNS = {
    "run_id": "TEXT",
    "series": "TEXT",
    "period": "DATE",
    "measure": "TEXT",
    "actual": "DOUBLE PRECISION",
}
FORECAST_TABLES = {
    "forecasts": FORECAST_COLUMNS,
    "forecast_backtest": BACKTEST_COLUMNS,
    "forecast_series": SERIES_COLUMNS,
}

#: added to the BI contract v1 by migration 9 (view: grain)
BI_VIEWS_9 = {
    "v1_latest_forecasts": (
        "series, reconciliation and period, in the latest succeeded forecast run"
    ),
    "v1_latest_forecast_backtest": "series and method, in the latest succeeded forecast run",
    "v1_latest_forecast_series": "series and period, in the latest succeeded forecast run",
}


def migration(create: Any, version: str, latest: str) -> list[str]:
    """Migration 9's statements: the tables, their indexes and the BI views (``create``
    writes a CREATE TABLE; ``latest`` is the query of the latest forecast run's id)."""
    return [
        *(create(name, cols) for name, cols in FORECAST_TABLES.items()),
        *(f"CREATE INDEX {name}_run ON {name} (run_id, series)" for name in FORECAST_TABLES),
        *(
            f"INSERT INTO bi_contract VALUES ('{version}', '{view}', 'one row per {grain}')"
            for view, grain in BI_VIEWS_9.items()
        ),
        f"""CREATE VIEW v1_latest_forecasts AS
            SELECT run_id, series, period, step, measure, freq, method, reconciliation, point,
                   lo_80, hi_80, lo_95, hi_95
            FROM forecasts WHERE run_id = {latest}""",
        f"""CREATE VIEW v1_latest_forecast_backtest AS
            SELECT run_id, series, method, chosen, mase, rmsse, bias, wape, coverage_80,
                   coverage_95
            FROM forecast_backtest WHERE run_id = {latest}""",
        f"""CREATE VIEW v1_latest_forecast_series AS
            SELECT run_id, series, period, measure, actual
            FROM forecast_series WHERE run_id = {latest}""",
    ]


def latest_forecast(store: Any, series: str | None = None) -> dict[str, Any] | None:
    """The latest succeeded forecast run as the service answers it: per series, the chosen
    method, its backtest figures and the forecast periods (all reconciliations stored);
    ``series`` keeps one. None without a forecast run; a series the run does not have gives
    ``{"unknown_series": [...known]}``."""
    run = store.query(
        "SELECT run_id, as_of, finished_at FROM runs WHERE status = 'succeeded' AND "
        "kind = 'forecast' ORDER BY finished_at DESC, run_id DESC LIMIT 1"
    )
    if not run:
        return None
    run_id, as_of, finished = run[0]
    board = store.run_rows("forecast_backtest", run_id).to_pylist()
    known = sorted({r["series"] for r in board})
    if series is not None and series not in known:
        return {"unknown_series": known}
    wanted = [series] if series is not None else known
    rows = store.run_rows("forecasts", run_id).to_pylist()
    return {
        "run_id": run_id,
        "as_of": str(as_of),
        "finished_at": str(finished),
        "series": [_one(name, board, rows) for name in wanted],
    }


def _one(name: str, board: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    mine = sorted(
        (r for r in rows if r["series"] == name), key=lambda r: (r["reconciliation"], r["step"])
    )
    leaderboard = [
        {k: v for k, v in r.items() if k not in ("run_id", "series")}
        for r in board
        if r["series"] == name
    ]
    chosen = next((r["method"] for r in leaderboard if r["chosen"] == 1), None)
    first = mine[0] if mine else {}
    return {
        "series": name,
        "measure": first.get("measure"),
        "freq": first.get("freq"),
        "method": chosen,
        "leaderboard": leaderboard,
        "forecast": [
            {
                k: (str(v) if k == "period" else v)
                for k, v in r.items()
                if k not in ("run_id", "series", "measure", "freq")
            }
            for r in mine
        ],
    }
