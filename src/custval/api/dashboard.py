"""The dashboard: server-rendered pages of the store's runs, under ``/dashboard``.

``custval serve`` mounts it beside the API, ``custval dashboard`` serves it alone. Pages
(:mod:`custval.flows.dashboard`): the overview, a customer, value drivers, segments, the CLV
model, the forecast and monitoring; their charts are Vega-Lite drawn in the browser by the
vendored scripts under ``/dashboard/static`` (no CDN: it works offline).

Reading needs an API key of read scope, as the API does. A browser signs in once at
``/dashboard/login``: the key is checked and the answer sets an HTTP-only, SameSite=Strict
cookie holding the key's hash, an expiry and an HMAC of both under the process's session
secret (``CUSTVAL_SESSION_SECRET``, which ``custval serve`` shares with its workers; a new
process without it signs everyone out). The key itself is never stored in the browser. A
revoked key's session ends at the next request; an expired or tampered cookie leads back to the
sign-in page.

Every answer carries a content security policy that allows scripts and styles from the
server alone (Vega compiles its expressions, hence ``'unsafe-eval'``), no frames and no
requests elsewhere, so a value that slipped markup past the templates' escaping still could
not run.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from custval.api.keys import digest
from custval.data.values import normalise_id
from custval.flows import dashboard as pages
from custval.flows.html import render_login, render_page, web_folder
from custval.store import open_store

__all__ = ["COOKIE", "ROOT", "mount", "router"]

log = logging.getLogger("custval.api")

ROOT = "/dashboard"
COOKIE = "custval_session"
#: how long a sign-in lasts
SESSION_SECONDS = 8 * 3600
#: the most of a sign-in form read (a key is 60 characters)
LOGIN_BODY_LIMIT = 4096
SECRET_ENV = "CUSTVAL_SESSION_SECRET"
POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


def session_secret() -> bytes:
    """The secret that signs sessions: ``CUSTVAL_SESSION_SECRET`` when set (the same for every
    worker and host behind one name), else one made now for this process and kept in its
    environment, which the workers it starts inherit."""
    value = os.environ.get(SECRET_ENV)
    if not value:
        value = secrets.token_hex(32)
        os.environ[SECRET_ENV] = value
    return value.encode()


def _sign(text: str) -> str:
    return hmac.new(session_secret(), text.encode(), hashlib.sha256).hexdigest()


def make_cookie(key_sha256: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_SECONDS)
    body = f"{expires}.{key_sha256}"
    return f"{body}.{_sign(body)}"


def _session(request: Request) -> tuple[bool, str | None]:
    """(signed in, why not): a valid, unexpired cookie of a key that still allows reading."""
    value = request.cookies.get(COOKIE)
    if not value:
        return False, None
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return False, "Your session is not valid. Sign in again."
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(body), parts[2]):
        return False, "Your session is not valid. Sign in again."
    if int(parts[0]) < time.time():
        return False, "Your session has expired. Sign in again."
    key = _ring(request).by_digest(parts[1])
    if key is None or not key.allows("read"):
        return False, "The key of this session is no longer valid. Sign in with another."
    return True, None


def _ring(request: Request) -> Any:
    return request.app.state.store_state.key_ring()


def _store_url(request: Request) -> str | None:
    return request.app.state.store_state.settings.store


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _to_login(request: Request, message: str | None) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"{ROOT}/login?next={quote(target, safe='')}"
    if message:
        url += "&expired=1"
    response = RedirectResponse(url, status_code=303, headers=HEADERS)
    if message:
        response.delete_cookie(COOKIE, path=ROOT)
    return response


def _safe_next(value: str | None) -> str:
    """Back where the user was, on this dashboard only (never another host)."""
    if value and value.startswith(ROOT) and not value.startswith("//") and "\\" not in value:
        return value
    return ROOT


# ---- signing in and out ---------------------------------------------------------------------


@router.get(f"{ROOT}/login")
async def login_form(request: Request) -> Response:
    expired = request.query_params.get("expired")
    message = "Your session has ended. Sign in again." if expired else None
    page = render_login(
        root=ROOT, next_url=_safe_next(request.query_params.get("next")), message=message
    )
    return _html(page)


@router.post(f"{ROOT}/login")
async def login(request: Request) -> Response:
    body = await request.body()
    form = parse_qs(body[:LOGIN_BODY_LIMIT].decode("utf-8", "replace"))
    key_text = (form.get("key") or [""])[0].strip()
    next_url = _safe_next((form.get("next") or [None])[0])
    key = _ring(request).find(key_text) if key_text else None
    if key is None or not key.allows("read"):
        why = "That key is not valid." if key is None else f"The key '{key.name}' cannot read."
        return _html(render_login(root=ROOT, next_url=next_url, message=why), 401)
    response = RedirectResponse(next_url, status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        make_cookie(digest(key_text)),
        max_age=SESSION_SECONDS,
        path=ROOT,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post(f"{ROOT}/logout")
async def logout() -> Response:
    response = RedirectResponse(f"{ROOT}/login", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path=ROOT)
    return response


# ---- the pages ------------------------------------------------------------------------------


async def _render(
    request: Request,
    build: Callable[[Any], pages.Page],
    *,
    customer_id: str | None = None,
) -> Response:
    signed_in, why = _session(request)
    if not signed_in:
        return _to_login(request, why)
    url = _store_url(request)
    if not url:
        page = pages.Page(
            "overview", "custval", empty="The service has no store: start it with --store."
        )
        return _html(render_page(page, root=ROOT))
    try:
        page = await run_in_threadpool(_read, url, build)
    except Exception as exc:  # a store being written (DuckDB's lock), or unreachable
        log.error("dashboard page failed: %s", type(exc).__name__)
        page = pages.Page(
            "overview", "custval", empty="The store cannot be read now; try again shortly."
        )
        return _html(render_page(page, root=ROOT), 503)
    status = 404 if page.name == "customer" and customer_id and page.empty else 200
    return _html(render_page(page, root=ROOT, customer_id=customer_id), status)


def _read(url: str, build: Callable[[Any], pages.Page]) -> pages.Page:
    with open_store(url, read_only=True) as store:
        return build(store)


@router.get(ROOT)
async def overview(request: Request) -> Response:
    return await _render(request, pages.overview_page)


@router.get(f"{ROOT}/customer")
async def customer(request: Request) -> Response:
    raw = (request.query_params.get("id") or "").strip()
    if not raw:
        empty = pages.Page("customer", "Customer", empty="Type a customer id to look them up.")
        return await _render(request, lambda _: empty)
    try:
        wanted = normalise_id(raw)
    except Exception:  # an id the cleaning would never keep: no customer of any run
        wanted = None
    snapshot = request.app.state.store_state.snapshot

    def build(store: Any) -> pages.Page:
        found = store.customer(wanted) if wanted else None
        extra = None
        if found is not None:
            extra = snapshot.recommendations(wanted) if snapshot else store.recommendations(wanted)
        return pages.customer_page(store, raw, found, extra)

    return await _render(request, build, customer_id=raw)


_BUILDERS = {
    "drivers": pages.drivers_page,
    "segments": pages.segments_page,
    "clv": pages.clv_page,
    "forecast": pages.forecast_page,
    "monitoring": pages.monitoring_page,
}


@router.get(ROOT + "/{name}")
async def page(name: str, request: Request) -> Response:
    build = _BUILDERS.get(name)
    if build is None:
        signed_in, why = _session(request)
        if not signed_in:
            return _to_login(request, why)
        missing = pages.Page("overview", "Not found", empty=f"There is no page '{name}'.")
        return _html(render_page(missing, root=ROOT), 404)
    return await _render(request, build)


def mount(app: Any) -> None:
    """The dashboard's routes and static files on ``app`` (whose ``state.store_state`` holds
    the store's settings and keys)."""
    app.mount(
        f"{ROOT}/static",
        StaticFiles(directory=str(web_folder() / "static")),
        name="dashboard-static",
    )
    app.include_router(router)
    session_secret()  # made now, before any worker could need it
