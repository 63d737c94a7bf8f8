"""``GET /healthz`` and ``GET /readyz``: for load balancers and orchestrators, without a key."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from custval.api.deps import ServiceDep
from custval.api.http import json_response

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
