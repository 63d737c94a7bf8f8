"""``GET /healthz``, ``GET /readyz`` and ``GET /metrics``: for load balancers, orchestrators
and Prometheus, without a key (:mod:`custval.api.metrics`: no customer id in any label)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from custval.api.deps import ServiceDep
from custval.api.http import ApiError, json_response
from custval.api.metrics import CONTENT_TYPE, exposition

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(service: ServiceDep) -> Response:
    """A model is loaded and requests can be scored."""
    return json_response({"status": "ready", "model_version": service.registry.active.version})


@router.get("/metrics", responses={200: {"content": {"text/plain": {}}}, 404: {}})
async def metrics(service: ServiceDep) -> Response:
    """Requests and errors by endpoint and status, a latency histogram, predictions by class
    and the model version served, in the Prometheus text format (all workers' together)."""
    if not service.settings.metrics:
        raise ApiError(404, "metrics are off (custval serve --no-metrics)")
    return Response(exposition(), media_type=CONTENT_TYPE)
