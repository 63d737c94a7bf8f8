"""``GET /v1/models``, ``GET /v1/models/{version}`` and ``POST /v1/models/{version}/activate``:
the model versions of the models folder, and the switch of the active one (admin scope)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from custval.api.deps import ServiceDep, require
from custval.api.http import ApiError, guarded, json_response
from custval.errors import CustvalError
from custval.store.registry import ModelRegistry

__all__ = ["router"]

log = logging.getLogger("custval.api")

router = APIRouter(tags=["models"])


@router.get("/v1/models", dependencies=[Depends(require("read"))])
@guarded
async def models(service: ServiceDep) -> Response:
    """The model versions in the models folder, newest first, and which one is active."""
    active = service.registry.active.version
    out = []
    for folder in sorted(service.settings.models_dir.iterdir(), reverse=True):
        manifest = _manifest(folder)
        if manifest is not None:
            out.append({**_summary(manifest, folder.name), "active": folder.name == active})
    aliases = ModelRegistry(service.settings.models_dir).aliases()
    return json_response({"active": active, "aliases": aliases, "models": out})


@router.get("/v1/models/{version}", responses={404: {}}, dependencies=[Depends(require("read"))])
@guarded
async def model_detail(version: str, service: ServiceDep) -> Response:
    """A version's manifest: metrics, threshold, features, leaderboard, global
    importance."""
    registry = service.registry
    manifest = _manifest(registry.folder(version))
    if manifest is None:
        raise ApiError(404, f"there is no model version '{version}'")
    schema = manifest.get("schema", {})
    detail = {
        **_summary(manifest, version),
        "active": version == registry.active.version,
        "threshold": manifest.get("threshold"),
        "threshold_rule": manifest.get("threshold_rule"),
        "label": manifest.get("label"),
        "features": {
            "numeric": schema.get("numeric", []),
            "categorical": schema.get("categorical", {}),
        },
        "leaderboard": manifest.get("leaderboard"),
        "importance": manifest.get("importance"),
        "libraries": manifest.get("libraries"),
    }
    return json_response(detail)


@router.post(
    "/v1/models/{version}/activate",
    responses={404: {}, 409: {}, 422: {}},
    dependencies=[Depends(require("admin"))],
)
@guarded
async def activate(version: str, service: ServiceDep) -> Response:
    """Make ``version`` the active model and the registry's champion (admin scope). Requests
    in flight finish on the model they started with; other workers follow within a second or
    so. 409 while another promotion runs."""
    registry = service.registry
    registry.folder(version)
    try:
        model = await run_in_threadpool(registry.load, version)
    except CustvalError as exc:
        raise ApiError(422, f"model {version} cannot be loaded: {exc}") from None
    previous = registry.active.version
    try:  # the registry's champion too, so that score and a restart agree with the service
        await run_in_threadpool(
            ModelRegistry(service.settings.models_dir).promote,
            version,
            reason="POST /v1/models/{version}/activate",
        )
    except CustvalError as exc:  # another promotion is running
        raise ApiError(409, str(exc).splitlines()[0]) from None
    registry.activate(model)
    log.info("model switched from %s to %s", previous, version)
    return json_response({"active": version, "previous": previous})


def _manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest; None for a folder that is not a model version."""
    try:
        return dict(json.loads((folder / "manifest.json").read_text()))
    except (OSError, ValueError):
        return None


def _summary(manifest: dict[str, Any], version: str) -> dict[str, Any]:
    """What ``GET /v1/models`` shows of a version."""
    return {
        "version": version,
        "created_at": manifest.get("created_at"),
        "model": manifest.get("model"),
        "metrics": manifest.get("metrics"),
    }
