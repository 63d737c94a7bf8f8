"""HTML from pages (:class:`custval.flows.dashboard.Page`): the dashboard's server-rendered
pages and the one-file reports of the command-line jobs.

Jinja2 templates (``custval/web/templates``) with autoescaping: every string from the data (a
customer id, a feature value, a segment's name) is escaped, never markup. A chart's Vega-Lite
specification goes in a ``<script type="application/json">`` element with ``<``, ``>`` and
``&`` written as JSON escapes, so no value can end the element; ``dashboard.js`` parses it and
vega-embed draws it as SVG. A report inlines the style sheet and the vendored scripts and
forbids every request by its content security policy: one file that opens offline.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup

from custval.flows.dashboard import PAGES, Page
from custval.version import __version__

__all__ = ["VENDOR_SCRIPTS", "render_page", "render_report", "spec_json", "web_folder"]

#: the scripts a page loads, in order
VENDOR_SCRIPTS = ("vendor/vega.min.js", "vendor/vega-lite.min.js", "vendor/vega-embed.min.js")


def web_folder() -> Path:
    """The package's ``web`` folder (templates and static files)."""
    return Path(str(resources.files("custval") / "web"))


def _finite(value: Any) -> Any:
    """NaN and infinities (a missing value in a table) as null, which JSON can hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def spec_json(spec: dict[str, Any]) -> Markup:
    """A specification as JSON safe inside a script element: no ``<``, ``>`` or ``&`` left,
    so a value holding ``</script>`` or markup stays a string of the data."""
    text = json.dumps(_finite(spec), allow_nan=False, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


@functools.cache
def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(web_folder() / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["spec_json"] = spec_json
    return env


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M")


def render_page(page: Page, *, root: str, customer_id: str | None = None) -> str:
    """A dashboard page, its assets under ``{root}/static``."""
    return (
        _environment()
        .get_template("dashboard.html")
        .render(
            page=page,
            pages=PAGES,
            root=root,
            static=f"{root}/static",
            customer_id=customer_id,
            version=__version__,
            generated=_now(),
        )
    )


def render_login(*, root: str, next_url: str, message: str | None) -> str:
    return (
        _environment()
        .get_template("login.html")
        .render(root=root, static=f"{root}/static", next=next_url, message=message)
    )


def _inline(name: str) -> str:
    text = (web_folder() / "static" / name).read_text(encoding="utf-8")
    return text.replace("</script", "<\\/script")


def render_report(
    title: str, sections: list[Page], *, subtitle: str = "", command: str = ""
) -> str:
    """One self-contained HTML file: the sections (pages) with their charts, the style sheet
    and the vendored scripts inline; it makes no request when opened."""
    return (
        _environment()
        .get_template("report.html")
        .render(
            title=title,
            subtitle=subtitle,
            sections=sections,
            # the package's own files, not data: inlined as they are
            css=Markup(_inline("dashboard.css")),
            scripts=[Markup(_inline(n)) for n in (*VENDOR_SCRIPTS, "dashboard.js")],
            version=__version__,
            generated=_now(),
            command=command,
        )
    )


def write_report(path: Path, html: str) -> Path:
    """Write a report all at once (a temporary file renamed), so that a failure leaves no
    half-written file (the commands check the path before any work: cli.common.check_report)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
