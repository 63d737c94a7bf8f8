"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

``python tools/screenshots.py URL KEY OUT_DIR`` signs in to the dashboard at URL with the API key
KEY, visits every page and writes ``OUT_DIR/dashboard-<page>.png``; ``make docs`` runs it on the
demo's store for the README (tools/docs.py). tests/test_dashboard.py drives the same functions
and asserts what a person would see: no console error, no request to another host, every
chart drawn.

Playwright cannot download browsers here, so it is given the system's binary (``chromium`` on
PATH: Debian's package, which ``.ci/run`` installs when it is missing). custval does not import
this module.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: the dashboard's pages and a path of each (the customer's is given an id)
PAGES = {
    "overview": "/dashboard",
    "customer": "/dashboard/customer?id={customer}",
    "drivers": "/dashboard/drivers",
    "segments": "/dashboard/segments",
    "clv": "/dashboard/clv",
    "forecast": "/dashboard/forecast",
    "monitoring": "/dashboard/monitoring",
}
#: what a drawn chart's SVG holds: one element per bar, point, cell or line
MARKS = ", ".join(
    f".vis svg g.mark-{kind} path" for kind in ("rect", "symbol", "line", "area", "rule")
)


def chromium_path() -> str:
    """Debian's Chromium on PATH, or a clear error saying how to install it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no chromium on PATH: install Debian's package (apt-get install chromium); "
        "Playwright's own browsers cannot be downloaded here"
    )


@dataclass
class Visit:
    """What one page showed: its HTTP status, console errors, the hosts asked, the charts
    and the marks drawn in them, and whether it said it had nothing to show."""

    url: str
    status: int
    errors: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    charts: int = 0
    drawn: int = 0
    marks: int = 0
    empty: bool = False


@contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API, one per process at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield chrome
        finally:
            chrome.close()


def new_page(chrome: Any) -> Any:
    """A page 1280 pixels wide in a context of its own (its own cookies)."""
    return chrome.new_context(viewport={"width": 1280, "height": 900}).new_page()


def sign_in(page: Any, base: str, key: str) -> int:
    """Sign in through the form; the status of the page the form led to."""
    page.goto(f"{base}/dashboard/login")
    page.fill("input[name=key]", key)
    with page.expect_navigation():
        page.click("button[type=submit]")
    response = page.evaluate("() => performance.getEntriesByType('navigation')[0].responseStatus")
    return int(response or 0)


def visit(page: Any, url: str, shot: Path | None = None, timeout_ms: int = 20_000) -> Visit:
    """Open ``url``, wait until its charts are drawn, count what is there; a full-page
    screenshot to ``shot`` when given."""
    errors: list[str] = []
    hosts: set[str] = set()
    on_console = lambda m: errors.append(m.text) if m.type == "error" else None  # noqa: E731
    on_error = lambda e: errors.append(str(e))  # noqa: E731
    on_request = lambda r: hosts.add(urlsplit(r.url).netloc or r.url.split(":")[0])  # noqa: E731
    page.on("console", on_console)
    page.on("pageerror", on_error)
    page.on("request", on_request)
    try:
        response = page.goto(url)
        page.wait_for_selector("body[data-charts=drawn]", state="attached", timeout=timeout_ms)
        found = Visit(url, response.status if response else 0, errors, hosts)
        found.charts = page.locator("[data-spec]").count()
        found.drawn = page.locator("[data-drawn=true]").count()
        found.marks = page.locator(MARKS).count()
        found.empty = page.locator("[data-empty]").count() > 0
        if shot is not None:
            page.screenshot(path=str(shot), full_page=True)
    finally:
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_error)
        page.remove_listener("request", on_request)
    return found


def main(argv: list[str]) -> int:
    base, key, out = argv[0].rstrip("/"), argv[1], Path(argv[2])
    customer = argv[3] if len(argv) > 3 else ""
    out.mkdir(parents=True, exist_ok=True)
    with browser() as chrome:
        page = new_page(chrome)
        sign_in(page, base, key)
        for name, path in PAGES.items():
            seen = visit(page, base + path.format(customer=customer), out / f"dashboard-{name}.png")
            print(f"{name}: {seen.status}, {seen.drawn}/{seen.charts} charts, {seen.marks} marks")
            if seen.errors:
                print("  console errors:", seen.errors)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
