"""A forecast run in the store (DuckDB and PostgreSQL): its tables and BI views, all or nothing,
and ``GET /v1/forecasts`` serving it."""

from __future__ import annotations

from typing import Any

import pytest

from custval.api.state import ServiceSettings
from custval.flows.forecast_store import store_forecast
from custval.flows.forecasting import ForecastRun, forecast
from custval.store import open_store
from tests.test_api import Trained, start, trained  # noqa: F401  (the fixtures)
from tests.test_forecast_flow import END, _transactions


@pytest.fixture(scope="module")
def run() -> ForecastRun:
    # the quick candidates: the store keeps whatever the backtest had
    quick = ("naive", "seasonal naive", "moving average", "ets", "theta")
    return forecast(
        _transactions(), END, freq="week", horizon=13, by="channel", n_origins=3, methods=quick
    )


def test_the_run_and_its_views(run: ForecastRun, store_url: str) -> None:
    run_id = store_forecast(run, store_url, END)
    with open_store(store_url) as store:
        ((kind, status),) = store.query("SELECT kind, status FROM runs WHERE run_id = ?", (run_id,))
        assert (kind, status) == ("forecast", "succeeded")
        rows = store.query(
            "SELECT series, COUNT(*), MIN(step), MAX(step), SUM(point) FROM v1_latest_forecasts "
            "WHERE reconciliation = 'base' GROUP BY series ORDER BY series"
        )
        assert [r[:4] for r in rows] == [
            ("store", 13, 1, 13),
            ("total", 13, 1, 13),
            ("web", 13, 1, 13),
        ]
        for name, *_, total in rows:
            base = run.forecasts[run.forecasts.reconciliation == "base"]
            assert total == pytest.approx(base.loc[base.series == name, "point"].sum())
        # reconciled: the total is the sum of the channels, period by period
        for kind in ("bottom_up", "mint_shrink"):
            gaps = store.query(
                "SELECT MAX(ABS(t.point - c.point)) FROM v1_latest_forecasts t JOIN "
                "(SELECT period, SUM(point) AS point FROM v1_latest_forecasts WHERE "
                "reconciliation = ? AND series <> 'total' GROUP BY period) c "
                "ON c.period = t.period WHERE t.series = 'total' AND t.reconciliation = ?",
                (kind, kind),
            )
            assert gaps[0][0] < 1e-6, kind
        (n,) = store.query(
            "SELECT COUNT(*) FROM v1_latest_forecast_backtest "
            "WHERE SUBSTR(method, 1, 11) = 'reconciled:'"
        )[0]
        assert n == 2 * 3  # bottom-up and MinT, for each of the three series
        chosen = store.query(
            "SELECT series, method FROM v1_latest_forecast_backtest WHERE chosen = 1 "
            "ORDER BY series"
        )
        board = run.leaderboard[run.leaderboard.chosen].sort_values("series")
        assert chosen == list(zip(board.series, board.method, strict=True))
        (n,) = store.query("SELECT COUNT(*) FROM v1_latest_forecast_backtest")[0]
        assert n == len(run.leaderboard)
        (n, total) = store.query("SELECT COUNT(*), SUM(actual) FROM v1_latest_forecast_series")[0]
        assert n == len(run.series) and total == pytest.approx(run.series["revenue"].sum())
        # the service's answer: per series, the chosen method, its leaderboard and periods
        answer = store.forecast()
        names = [s["series"] for s in answer["series"]] if answer else []
        assert names == ["store", "total", "web"]
        web = store.forecast("web")
        assert web is not None and len(web["series"]) == 1
        assert web["series"][0]["method"] == dict(chosen)["web"]
        assert len([p for p in web["series"][0]["forecast"] if p["reconciliation"] == "base"]) == 13
        assert store.forecast("email") == {"unknown_series": ["store", "total", "web"]}
        # a newer run is the latest; the older one stays, whole
        newer = store_forecast(run, store_url, END)
        assert store.forecast()["run_id"] == newer  # type: ignore[index]
        (n,) = store.query("SELECT COUNT(*) FROM forecasts WHERE run_id = ?", (run_id,))[0]
        assert n == len(run.forecasts)


def test_the_service_serves_the_latest_forecast(
    run: ForecastRun,
    trained: Trained,  # noqa: F811
    start: Any,  # noqa: F811
) -> None:
    run_id = store_forecast(run, str(trained.store), END)
    service = start(
        ServiceSettings(
            models_dir=trained.models, model=trained.versions[0], store=str(trained.store)
        )
    )
    with service.client() as c:
        r = c.get("/v1/forecasts")
        assert r.status_code == 200, r.text
        body = r.json()
        names = [s["series"] for s in body["series"]]
        assert body["run_id"] == run_id and names == ["store", "total", "web"]
        first = body["series"][0]["forecast"][0]
        assert set(first) >= {"period", "step", "point", "lo_80", "hi_80", "lo_95", "hi_95"}
        assert (
            c.get("/v1/forecasts", params={"series": "web"}).json()["series"][0]["series"] == "web"
        )
        missing = c.get("/v1/forecasts", params={"series": "email"})
        assert (
            missing.status_code == 404 and "it has: store, total, web" in missing.json()["detail"]
        )
    with service.client(key=None) as c:
        assert c.get("/v1/forecasts").status_code == 401
