"""The charts of the dashboard and the reports, as Vega-Lite specifications.

Each function takes rows already aggregated (a few hundred at most: the store keeps summaries,
not customers, for them; :mod:`custval.flows.summaries`) and returns a Vega-Lite v6
specification as a dict, with its data inline. The browser draws it with the vendored vega,
vega-lite and vega-embed (``custval/web/static/vendor``); text in the data (a customer id, a
feature value) is drawn as SVG text, never parsed as HTML. One look for all of them
(:data:`CONFIG`): the same fonts, colours for high and low value, for raising and lowering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "CONFIG",
    "bars",
    "calibration",
    "class_counts",
    "contributions",
    "deciles",
    "drift_heatmap",
    "forecast",
    "histogram",
    "lines_over_runs",
    "matrix",
    "tracking",
]

Rows = Sequence[dict[str, Any]]

SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
HIGH, LOW, ACCENT, RAISES, LOWERS = "#1b7f5b", "#a3adb8", "#2f5d8a", "#1b7f5b", "#b83b2e"
#: the look every chart shares: readable at a glance, no chart junk
CONFIG: dict[str, Any] = {
    "font": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "view": {"stroke": None},
    "axis": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": 500, "grid": False},
    "axisY": {"grid": True, "gridColor": "#eceff3"},
    "legend": {"labelFontSize": 12, "titleFontSize": 12, "orient": "bottom"},
    "title": {"fontSize": 14, "fontWeight": 600, "anchor": "start", "offset": 10},
    "range": {"category": [ACCENT, "#e08e2b", HIGH, "#8e5ea2", "#c0504d", "#4bacc6", LOW]},
}


def _spec(title: str, rows: Rows, height: int = 240, **body: Any) -> dict[str, Any]:
    return {
        "$schema": SCHEMA,
        "title": title,
        "width": "container",
        "height": height,
        "data": {"values": [dict(r) for r in rows]},
        "config": CONFIG,
        **body,
    }


def _tip(*fields: tuple[str, str, str]) -> list[dict[str, Any]]:
    """Tooltips: (field, title, d3 format or "" for text)."""
    return [
        {"field": f, "title": t, **({"type": "quantitative", "format": fmt} if fmt else {})}
        for f, t, fmt in fields
    ]


def class_counts(rows: Rows, *, title: str = "Customers by value class") -> dict[str, Any]:
    """Horizontal bars of ``customers`` per ``value_class`` ("high"/"low"), with the CLV each
    class holds in the tooltip (rows: value_class, customers, clv_total)."""
    return _spec(
        title,
        rows,
        height=90,
        mark={"type": "bar", "cornerRadiusEnd": 3},
        encoding={
            "y": {"field": "value_class", "type": "nominal", "title": None, "sort": ["high"]},
            "x": {"field": "customers", "type": "quantitative", "title": "customers"},
            "color": {
                "field": "value_class",
                "type": "nominal",
                "scale": {"domain": ["high", "low"], "range": [HIGH, LOW]},
                "legend": None,
            },
            "tooltip": _tip(
                ("value_class", "class", ""),
                ("customers", "customers", ",d"),
                ("clv_total", "CLV, total", ",.0f"),
            ),
        },
    )


def bars(
    rows: Rows,
    *,
    category: str,
    value: str,
    title: str,
    value_title: str,
    fmt: str = ",.0f",
    color: str = ACCENT,
    tooltip: Sequence[tuple[str, str, str]] = (),
    limit_height: bool = True,
    sort: bool = True,
) -> dict[str, Any]:
    """Horizontal bars of ``value`` per ``category``, largest first (``sort``) or in the rows'
    order."""
    height = max(60, 22 * len(rows)) if limit_height else 240
    return _spec(
        title,
        rows,
        height=height,
        mark={"type": "bar", "color": color, "cornerRadiusEnd": 3},
        encoding={
            "y": {
                "field": category,
                "type": "nominal",
                "title": None,
                "sort": "-x" if sort else None,
                "axis": {"labelLimit": 320},
            },
            "x": {
                "field": value,
                "type": "quantitative",
                "title": value_title,
                "axis": {"format": fmt},
            },
            "tooltip": _tip((category, category, ""), (value, value_title, fmt), *tooltip),
        },
    )


def histogram(
    rows: Rows, *, title: str, x_title: str, fmt: str = ",.0f", log: bool = False
) -> dict[str, Any]:
    """Pre-binned counts as touching bars (rows: start, end, customers); ``log``: a symlog x
    axis for a skewed measure such as CLV."""
    scale = {"type": "symlog"} if log else {}
    return _spec(
        title,
        rows,
        height=200,
        mark={"type": "rect", "color": ACCENT, "stroke": "white", "strokeWidth": 0.5},
        encoding={
            "x": {"field": "start", "type": "quantitative", "title": x_title, "scale": scale},
            "x2": {"field": "end"},
            "y": {"field": "customers", "type": "quantitative", "title": "customers"},
            "tooltip": _tip(
                ("start", "from", fmt), ("end", "to", fmt), ("customers", "customers", ",d")
            ),
        },
    )


def contributions(rows: Rows, *, title: str) -> dict[str, Any]:
    """A customer's reasons as signed bars (rows: label, contribution, text): what raises the
    probability to the right in green, what lowers it to the left in red."""
    return _spec(
        title,
        rows,
        height=max(60, 30 * len(rows)),
        mark={"type": "bar", "cornerRadius": 2},
        encoding={
            "y": {
                "field": "label",
                "type": "nominal",
                "title": None,
                "sort": None,
                "axis": {"labelLimit": 320},
            },
            "x": {
                "field": "contribution",
                "type": "quantitative",
                "title": "contribution to the model's score (log-odds)",
            },
            "color": {
                "condition": {"test": "datum.contribution >= 0", "value": RAISES},
                "value": LOWERS,
            },
            "tooltip": _tip(("text", "reason", ""), ("contribution", "contribution", "+.3f")),
        },
    )


def lines_over_runs(
    rows: Rows,
    *,
    x: str,
    y: str,
    series: str,
    title: str,
    y_title: str,
    fmt: str = ",.0f",
    x_type: str = "ordinal",
    zero: bool = True,
    domain: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One line with points per ``series`` over ``x``: runs in their order (ordinal, labelled
    by their as-of date and id, since two runs may share a date), or dates (temporal)."""
    return _spec(
        title,
        rows,
        mark={"type": "line", "point": True},
        encoding={
            "x": {"field": x, "type": x_type, "title": None, "sort": None},
            "y": {
                "field": y,
                "type": "quantitative",
                "title": y_title,
                "scale": {"zero": zero, **({"domain": list(domain)} if domain else {})},
                "axis": {"format": fmt},
            },
            "color": {"field": series, "type": "nominal", "title": None},
            "tooltip": _tip((series, "", ""), (x, x, ""), (y, y_title, fmt)),
        },
    )


def tracking(rows: Rows, *, calibration_end: float | None, unit: str) -> dict[str, Any]:
    """Actual against predicted cumulative repeat purchases (rows: period_end, series,
    purchases), with a rule where the fitted period ends (Fader, Hardie & Lee 2005, Fig. 2)."""
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "line", "strokeWidth": 2},
            "encoding": {
                "x": {"field": "period_end", "type": "quantitative", "title": f"{unit}s"},
                "y": {
                    "field": "purchases",
                    "type": "quantitative",
                    "title": "cumulative repeat purchases",
                },
                "color": {
                    "field": "series",
                    "type": "nominal",
                    "title": None,
                    "scale": {
                        "domain": ["actual", "predicted", "expected ahead"],
                        "range": [ACCENT, "#e08e2b", "#8e5ea2"],
                    },
                },
                "strokeDash": {
                    "field": "series",
                    "type": "nominal",
                    "title": None,
                    "scale": {
                        "domain": ["actual", "predicted", "expected ahead"],
                        "range": [[1, 0], [6, 3], [2, 2]],
                    },
                },
                "tooltip": _tip(
                    ("series", "", ""),
                    ("period_end", unit, ",.0f"),
                    ("purchases", "purchases", ",.0f"),
                ),
            },
        }
    ]
    if calibration_end is not None:
        layers.append(
            {
                "data": {"values": [{"end": calibration_end, "label": "fitted until here"}]},
                "layer": [
                    {"mark": {"type": "rule", "strokeDash": [2, 2], "color": "#666"}},
                    {
                        "mark": {"type": "text", "align": "right", "dx": -4, "dy": -4, "y": 0},
                        "encoding": {"text": {"field": "label"}},
                    },
                ],
                "encoding": {"x": {"field": "end", "type": "quantitative"}},
            }
        )
    return _spec(
        "Repeat purchases: actual and predicted, cumulative", rows, height=260, layer=layers
    )


def matrix(
    rows: Rows, *, x: str, y: str, value: str, title: str, x_title: str, y_title: str
) -> dict[str, Any]:
    """A heat map of ``value`` (0 to 1) on a grid (the P(alive) matrix)."""
    return _spec(
        title,
        rows,
        height=260,
        mark={"type": "rect"},
        encoding={
            "x": {"field": x, "type": "ordinal", "title": x_title},
            "y": {"field": y, "type": "ordinal", "title": y_title, "sort": "descending"},
            "color": {
                "field": value,
                "type": "quantitative",
                "title": value,
                "scale": {"domain": [0, 1], "scheme": "blues"},
            },
            "tooltip": _tip((x, x_title, ",.0f"), (y, y_title, ",.0f"), (value, value, ".2f")),
        },
    )


def deciles(rows: Rows, *, title: str, y_title: str, fmt: str = ",.0f") -> dict[str, Any]:
    """Predicted against actual per decile of the prediction (rows: decile, series, value)."""
    return _spec(
        title,
        rows,
        height=220,
        mark={"type": "bar"},
        encoding={
            "x": {"field": "decile", "type": "ordinal", "title": "decile of the prediction"},
            "xOffset": {"field": "series"},
            "y": {"field": "value", "type": "quantitative", "title": y_title},
            "color": {
                "field": "series",
                "type": "nominal",
                "title": None,
                "scale": {"domain": ["predicted", "actual"], "range": ["#e08e2b", ACCENT]},
            },
            "tooltip": _tip(("series", "", ""), ("decile", "decile", ""), ("value", y_title, fmt)),
        },
    )


def calibration(rows: Rows, *, title: str = "Calibration") -> dict[str, Any]:
    """Observed share against mean predicted probability per bin (rows: predicted, observed,
    customers), with the diagonal of perfect calibration."""
    diagonal = {
        "data": {"values": [{"p": 0.0}, {"p": 1.0}]},
        "mark": {"type": "line", "color": "#999", "strokeDash": [4, 4]},
        "encoding": {
            "x": {"field": "p", "type": "quantitative"},
            "y": {"field": "p", "type": "quantitative"},
        },
    }
    points = {
        "mark": {"type": "line", "point": True, "color": ACCENT},
        "encoding": {
            "x": {
                "field": "predicted",
                "type": "quantitative",
                "title": "predicted probability",
                "scale": {"domain": [0, 1]},
            },
            "y": {
                "field": "observed",
                "type": "quantitative",
                "title": "observed share high value",
                "scale": {"domain": [0, 1]},
            },
            "tooltip": _tip(
                ("predicted", "predicted", ".2f"),
                ("observed", "observed", ".2f"),
                ("customers", "customers", ",d"),
            ),
        },
    }
    return _spec(title, rows, height=260, layer=[diagonal, points])


def forecast(rows: Rows, *, title: str, y_title: str) -> dict[str, Any]:
    """A forecast with its interval as a band and the actual values as a line (rows: period,
    kind ("actual" or "forecast"), value, lower, upper)."""
    band = {
        "transform": [{"filter": "datum.kind == 'forecast'"}],
        "mark": {"type": "area", "opacity": 0.25, "color": "#e08e2b"},
        "encoding": {
            "x": {"field": "period", "type": "temporal", "title": None},
            "y": {"field": "lower", "type": "quantitative", "title": y_title},
            "y2": {"field": "upper"},
        },
    }
    lines = {
        "mark": {"type": "line", "point": {"size": 20}},
        "encoding": {
            "x": {"field": "period", "type": "temporal"},
            "y": {"field": "value", "type": "quantitative"},
            "color": {
                "field": "kind",
                "type": "nominal",
                "title": None,
                "scale": {"domain": ["actual", "forecast"], "range": [ACCENT, "#e08e2b"]},
            },
            "tooltip": _tip(
                ("kind", "", ""),
                ("period", "period", ""),
                ("value", y_title, ",.0f"),
                ("lower", "lower", ",.0f"),
                ("upper", "upper", ",.0f"),
            ),
        },
    }
    return _spec(title, rows, height=260, layer=[band, lines])


def drift_heatmap(rows: Rows, *, title: str) -> dict[str, Any]:
    """PSI per feature and run (rows: run, feature, psi, alarm), alarms outlined."""
    return _spec(
        title,
        rows,
        height=max(120, 16 * len({r["feature"] for r in rows})),
        mark={"type": "rect", "stroke": None},
        encoding={
            "x": {"field": "run", "type": "ordinal", "title": None},
            "y": {"field": "feature", "type": "nominal", "title": None},
            "color": {
                "field": "psi",
                "type": "quantitative",
                "title": "PSI",
                "scale": {"scheme": "oranges", "domainMin": 0},
            },
            "stroke": {
                "condition": {"test": "datum.alarm", "value": LOWERS},
                "value": None,
            },
            "strokeWidth": {"value": 2},
            "tooltip": _tip(
                ("feature", "feature", ""),
                ("run", "run", ""),
                ("psi", "PSI", ".4f"),
                ("alarm", "alarm", ""),
            ),
        },
    )
