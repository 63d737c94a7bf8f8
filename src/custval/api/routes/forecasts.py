"""``GET /v1/forecasts``: the latest stored forecast run (``custval forecast``): per series, the
chosen method, its backtest leaderboard and the forecast with 80% and 95% intervals."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, guarded, json_response
from custval.api.routes.customers import lookup

__all__ = ["NO_FORECAST", "router"]

router = APIRouter(tags=["stored runs"])

NO_FORECAST = (
    "the store has no forecast run: run 'custval forecast -c custval.toml' and start the "
    "service with its store"
)


@router.get("/v1/forecasts", responses={404: {}}, dependencies=[Depends(require("read"))])
@guarded
async def forecasts(
    service: ServiceDep,
    series: Annotated[
        str | None,
        Query(max_length=200, description="One series (e.g. a channel); all when left out."),
    ] = None,
) -> Response:
    """The latest forecast run: every series (or the one asked) with its chosen method, the
    leaderboard of its backtest (MASE, RMSSE, bias, WAPE, interval coverage) and the forecast
    per period; reconciled forecasts too when the run was by a column."""
    store = service.settings.store
    if not store:
        raise ApiError(404, "the service has no store (start it with --store)")
    found = await run_in_threadpool(lookup, store, series, "forecast")
    if found is None:
        raise ApiError(404, NO_FORECAST)
    if "unknown_series" in found:
        known = ", ".join(found["unknown_series"])
        raise ApiError(404, f"the latest forecast run has no series '{series}'; it has: {known}")
    return json_response(found)
