"""The dashboard's pages as data: headline cards, charts (Vega-Lite) and tables, read from the
store's small per-run tables (:mod:`custval.store.dashboard`), never by scanning customers.

Each page function takes an open store and returns a :class:`Page`; the service renders it as
HTML (:mod:`custval.api.dashboard`) and ``custval report`` could print the same. A page with
nothing to show says why and which command fills it (``Page.empty``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from custval.flows import charts
from custval.models.btyd_clv import purchase_model
from custval.store.dashboard import run_summaries, score_runs

__all__ = [
    "PAGES",
    "Card",
    "Chart",
    "Page",
    "Table",
    "clv_page",
    "comparison_tables",
    "customer_page",
    "drivers_page",
    "forecast_page",
    "importance_chart",
    "listed",
    "monitoring_page",
    "overview_page",
    "p_alive_chart",
    "profile_table",
    "segment_table",
    "segments_page",
    "tracking_chart",
]


@dataclass
class Card:
    """A headline figure: ``label``, the formatted ``value``, a line of context."""

    label: str
    value: str
    note: str = ""


@dataclass
class Chart:
    spec: dict[str, Any]
    caption: str = ""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    #: the columns holding numbers (right-aligned)
    numeric: tuple[int, ...] = ()


@dataclass
class Page:
    """One page: what it is about (``subtitle``: the run it shows), its parts, and ``empty``
    (why there is nothing to show and what fills it) instead of them when there is not."""

    name: str
    title: str
    subtitle: str = ""
    cards: list[Card] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    empty: str | None = None


#: the pages in the menu's order: (name, title)
PAGES = (
    ("overview", "Overview"),
    ("customer", "Customer"),
    ("drivers", "Value drivers"),
    ("segments", "Segments"),
    ("clv", "CLV model"),
    ("forecast", "Forecast"),
    ("monitoring", "Monitoring"),
)
NO_RUN = "No scoring run yet. Score the customers first: custval score -c PROJECT"


def fmt(value: Any, spec: str = ",.0f", none: str = "–") -> str:
    """A number for people: thousands separated, ``none`` for a missing one."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return none
    return format(value, spec)


def _share(part: float | None, whole: float | None) -> str:
    return fmt(part / whole, ".1%") if part is not None and whole else "–"


def listed(value: Any) -> str:
    """A list (or its JSON text, as the store keeps it) as words: "a, b, c"."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def run_label(as_of: Any, run_id: str) -> str:
    """A run on a chart's axis: its as-of date and the start of its id (runs share dates)."""
    return f"{as_of} · {run_id[:8]}"


def _subtitle(run: dict[str, Any]) -> str:
    return (
        f"scoring run {run['run_id']} · as of {run['as_of']} · model {run['model_version']} · "
        f"{fmt(run['n_customers'])} customers"
    )


# ---- overview -----------------------------------------------------------------------------


def overview_page(store: Any) -> Page:
    """The latest run: customers by value class and segment, CLV's total and distribution, and
    the change since the previous run."""
    runs = score_runs(store)
    page = Page("overview", "Overview")
    if not runs:
        page.empty = NO_RUN
        return page
    latest = runs[0]
    sums = run_summaries(store, [r["run_id"] for r in runs])
    now = sums[latest["run_id"]]
    page.subtitle = _subtitle(latest)
    if "totals" not in now:
        page.empty = (
            "This run was written before custval kept the dashboard's summaries. "
            "Score again (custval score -c PROJECT) to see it here."
        )
        return page
    before = sums[runs[1]["run_id"]] if len(runs) > 1 else {}
    page.cards = _overview_cards(now["totals"], before.get("totals"))
    page.charts.append(Chart(charts.class_counts(now["classes"])))
    if "segments" in now:
        page.charts.append(Chart(_segment_chart(now["segments"])))
    if "clv_histogram" in now:
        page.charts.append(
            Chart(
                charts.histogram(
                    now["clv_histogram"],
                    title="Distribution of CLV",
                    x_title="CLV over the horizon (symlog scale)",
                    log=True,
                ),
                "Customers per band of expected CLV; the bands widen as the values grow.",
            )
        )
    page.charts.append(
        Chart(
            charts.histogram(
                now["probability"],
                title="Distribution of the value probability",
                x_title="probability of high value",
                fmt=".2f",
            )
        )
    )
    page.tables.append(_runs_table(runs, sums))
    return page


def _delta(now: float | None, before: float | None, spec: str) -> str:
    if now is None or before is None:
        return ""
    change = now - before
    if format(abs(change), spec) == format(0, spec):
        return "no change since the previous run"
    return f"{change:+{spec}} since the previous run"


def _overview_cards(now: dict[str, Any], before: dict[str, Any] | None) -> list[Card]:
    before = before or {}
    share_now = now["high"] / now["customers"] if now["customers"] else None
    share_before = before["high"] / before["customers"] if before.get("customers") else None
    cards = [
        Card(
            "customers",
            fmt(now["customers"]),
            _delta(now["customers"], before.get("customers"), ",d"),
        ),
        Card(
            "high value",
            f"{fmt(now['high'])} ({_share(now['high'], now['customers'])})",
            _delta(share_now, share_before, ".1%"),
        ),
    ]
    if "clv_total" in now:
        cards += [
            Card(
                "CLV, total",
                fmt(now["clv_total"]),
                _delta(now["clv_total"], before.get("clv_total"), ",.0f"),
            ),
            Card(
                "CLV, median customer",
                fmt(now["clv_median"], ",.1f"),
                f"90th percentile {fmt(now['clv_p90'], ',.0f')}",
            ),
        ]
    if now.get("p_alive_mean") is not None:
        cards.append(Card("P(alive), mean", fmt(now["p_alive_mean"], ".2f")))
    return cards


def _segment_chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    shown = [
        {**r, "high_share": (r["high"] or 0) / r["customers"] if r["customers"] else 0.0}
        for r in rows
    ]
    return charts.bars(
        shown,
        category="segment",
        value="customers",
        title="Customers by segment",
        value_title="customers",
        tooltip=[("high_share", "share high value", ".1%"), ("clv_mean", "CLV, mean", ",.0f")],
    )


def _runs_table(runs: list[dict[str, Any]], sums: dict[str, Any]) -> Table:
    rows = []
    for r in runs:
        t = sums[r["run_id"]].get("totals", {})
        rows.append(
            [
                str(r["as_of"]),
                str(r["finished_at"])[:16],
                str(r["model_version"]),
                fmt(r["n_customers"]),
                _share(t.get("high"), t.get("customers")),
                fmt(t.get("clv_total")),
            ]
        )
    return Table(
        "Scoring runs, newest first",
        ["as of", "finished (UTC)", "model", "customers", "high value", "CLV, total"],
        rows,
        numeric=(3, 4, 5),
    )


# ---- a customer ---------------------------------------------------------------------------


def customer_page(
    store: Any, customer_id: str, found: dict[str, Any] | None, extra: dict[str, Any] | None
) -> Page:
    """One customer: ``found`` is what ``GET /v1/customers/{id}`` answers (the same numbers),
    ``extra`` what the latest runs recommend (churn risk, next best offers)."""
    page = Page("customer", f"Customer {customer_id}")
    if found is None:
        page.empty = f"The latest scoring run has no customer '{customer_id}'."
        return page
    page.subtitle = f"as of {found['as_of']}"
    page.cards = _customer_cards(found, extra)
    reasons = [
        {
            "label": f"{r['feature']} = {r['value']}",
            "contribution": r["contribution"],
            "text": r["text"],
        }
        for r in found["reasons"]
    ]
    if reasons:
        page.charts.append(
            Chart(
                charts.contributions(reasons, title="Why: each reason's pull on the probability"),
                "Green raises the chance of high value, red lowers it.",
            )
        )
        page.tables.append(
            Table(
                "Reasons, strongest first",
                ["", "reason", "contribution"],
                [
                    [str(r["rank"]), r["text"], fmt(r["contribution"], "+.3f")]
                    for r in found["reasons"]
                ],
                numeric=(2,),
            )
        )
    page.tables += _recommendation_tables(extra or {})
    history = _history(store, found["customer_id"])
    if len(history) > 1:
        chart, table = _history_parts(history)
        page.charts.append(chart)
        page.tables.append(table)
    return page


def _customer_cards(found: dict[str, Any], extra: dict[str, Any] | None) -> list[Card]:
    klass = "high" if found["value_class"] == 1 else "low"
    cards = [Card("value probability", fmt(found["value_probability"], ".1%"), f"class: {klass}")]
    if found.get("clv_expected") is not None:
        cards.append(
            Card(
                "CLV",
                fmt(found["clv_expected"], ",.1f"),
                f"90% interval {fmt(found.get('clv_lower'), ',.1f')} to "
                f"{fmt(found.get('clv_upper'), ',.1f')}",
            )
        )
    else:
        cards.append(Card("CLV", "–", "no purchase before the as-of date"))
    if found.get("p_alive") is not None:
        cards.append(
            Card(
                "P(alive)",
                fmt(found["p_alive"], ".2f"),
                f"expected purchases {fmt(found.get('expected_purchases'), ',.2f')}",
            )
        )
    if found.get("segment"):
        cards.append(Card("segment", str(found["segment"])))
    churn = (extra or {}).get("churn")
    if churn:
        cards.append(
            Card("churn risk", fmt(churn.get("p_churn"), ".1%"), churn.get("label_kind", ""))
        )
    return cards


def _recommendation_tables(extra: dict[str, Any]) -> list[Table]:
    out = []
    offers = extra.get("offers") or []
    if offers:
        out.append(
            Table(
                "Next best offers",
                ["", "product", "category", "reason"],
                [
                    [
                        str(o.get("rank")),
                        str(o.get("product_name") or o.get("product_id")),
                        str(o.get("category") or ""),
                        str(o.get("reason") or ""),
                    ]
                    for o in offers
                ],
            )
        )
    return out


def _history(store: Any, customer_id: str) -> list[dict[str, Any]]:
    """The customer's predictions in the recent scoring runs, oldest first (read by the
    (run_id, customer_id) index, one run at a time in one query)."""
    runs = score_runs(store)
    if not runs:
        return []
    marks = ", ".join("?" for _ in runs)
    rows = store.query(
        "SELECT r.as_of, r.run_id, p.value_probability, p.value_class, p.clv_expected, "
        "p.segment FROM predictions p JOIN runs r ON r.run_id = p.run_id "
        f"WHERE p.run_id IN ({marks}) AND p.customer_id = ? ORDER BY r.finished_at, r.run_id",
        (*[r["run_id"] for r in runs], customer_id),
    )
    keys = ("as_of", "run_id", "value_probability", "value_class", "clv_expected", "segment")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _history_parts(history: list[dict[str, Any]]) -> tuple[Chart, Table]:
    rows = [
        {
            "run": run_label(h["as_of"], h["run_id"]),
            "measure": "value probability",
            "value": h["value_probability"],
        }
        for h in history
    ]
    chart = charts.lines_over_runs(
        rows,
        x="run",
        y="value",
        series="measure",
        title="The value probability over the scoring runs",
        y_title="probability of high value",
        fmt=".0%",
        domain=(0.0, 1.0),
    )
    table = Table(
        "History, newest first",
        ["run", "value probability", "class", "CLV", "segment"],
        [
            [
                run_label(h["as_of"], h["run_id"]),
                fmt(h["value_probability"], ".1%"),
                "high" if h["value_class"] == 1 else "low",
                fmt(h["clv_expected"], ",.1f"),
                h["segment"] or "",
            ]
            for h in reversed(history)
        ],
        numeric=(1, 3),
    )
    return Chart(chart), table


# ---- value drivers ------------------------------------------------------------------------


def drivers_page(store: Any) -> Page:
    """What drives value: the model's figures, the features' global importance (in the
    catalogue's words) and the high-value profile of the most important ones."""
    runs = score_runs(store, limit=1)
    page = Page("drivers", "Value drivers")
    if not runs:
        page.empty = NO_RUN
        return page
    run = runs[0]
    page.subtitle = _subtitle(run)
    manifest = _manifest(store, run["model_version"])
    meaning = manifest.get("catalogue", {})
    page.cards = _model_cards(manifest)
    imp = store.query(
        "SELECT feature, mean_abs_contribution, share FROM feature_importance WHERE run_id = ? "
        "ORDER BY share DESC LIMIT 20",
        (run["run_id"],),
    )
    rows = [{"feature": f, "mean_abs_contribution": m, "share": sh} for f, m, sh in imp]
    page.charts.append(importance_chart(rows, meaning))
    order = [f for f, _, _ in imp]
    page.tables.append(_profile_table(store, run["run_id"], order, meaning))
    return page


def _manifest(store: Any, version: str | None) -> dict[str, Any]:
    found = store.query("SELECT manifest FROM models WHERE version = ?", (version,))
    return json.loads(found[0][0]) if found and found[0][0] else {}


def said(feature: str, meaning: dict[str, str]) -> str:
    """A feature in the catalogue's words ("Days since signup"), else its name."""
    text = meaning.get(feature)
    return text[:1].upper() + text[1:] if text else feature


def _model_cards(manifest: dict[str, Any]) -> list[Card]:
    if not manifest:
        return []
    metrics = manifest.get("metrics", {})
    split = manifest.get("label", {}).get("time_split", {})
    return [
        Card("value model", str(manifest.get("model")), f"version {manifest.get('version')}"),
        Card(
            "ROC AUC",
            fmt(metrics.get("roc_auc"), ".3f"),
            f"cross-validated; {fmt(split.get('roc_auc'), '.3f')} a horizon forward",
        ),
        Card("lift, top decile", fmt(metrics.get("lift_top_decile"), ".1f") + "×"),
        Card(
            "high value is",
            f"top {fmt(manifest.get('top_share'), '.0%')}",
            str(manifest.get("label_name", "")),
        ),
    ]


def _profile_table(store: Any, run_id: str, order: list[str], meaning: dict[str, str]) -> Table:
    found = store.query(
        "SELECT feature, kind, statistic, value, category FROM value_profiles WHERE run_id = ?",
        (run_id,),
    )
    by: dict[tuple[str, str | None], dict[str, Any]] = {}
    for feature, kind, stat, value, category in found:
        record = by.setdefault((feature, category), {"feature": feature, "kind": kind})
        record["category"] = category
        record[stat] = value
    return profile_table(list(by.values()), order, meaning)


def profile_table(
    records: list[dict[str, Any]], order: list[str], meaning: dict[str, str]
) -> Table:
    """The high-value profile (records as the bundle keeps them: feature, kind, median_high,
    median_low, ratio, or category, share_high, share_low, lift), the features in ``order``
    first, in the catalogue's words."""
    rank = {f: i for i, f in enumerate(order)}
    ordered = sorted(
        records, key=lambda r: (rank.get(r["feature"], len(rank)), str(r.get("category")))
    )
    rows = []
    for stats in ordered[:25]:
        feature = stats["feature"]
        if stats["kind"] == "numeric":
            rows.append(
                [
                    said(feature, meaning),
                    "median",
                    fmt(stats.get("median_high"), ",.2f"),
                    fmt(stats.get("median_low"), ",.2f"),
                    fmt(stats.get("ratio"), ",.2f"),
                ]
            )
        else:
            rows.append(
                [
                    f"{said(feature, meaning)}: {stats.get('category')}",
                    "share",
                    fmt(stats.get("share_high"), ".1%"),
                    fmt(stats.get("share_low"), ".1%"),
                    fmt(stats.get("lift"), ",.2f"),
                ]
            )
    return Table(
        "The high-value profile: high-value customers against the others",
        ["feature", "statistic", "high value", "others", "ratio"],
        rows,
        note="The most important features first; the ratio is high value over the others "
        "(– where the others' figure is 0).",
        numeric=(2, 3, 4),
    )


def importance_chart(rows: list[dict[str, Any]], meaning: dict[str, str]) -> Chart:
    """The features' global importance (rows: feature, mean_abs_contribution, share)."""
    shown = [{**r, "label": said(r["feature"], meaning)} for r in rows[:20]]
    return Chart(
        charts.bars(
            shown,
            category="label",
            value="share",
            title="What the value model leans on",
            value_title="share of the mean absolute contribution",
            fmt=".0%",
            tooltip=[
                ("feature", "feature", ""),
                ("mean_abs_contribution", "mean |contribution|", ".3f"),
            ],
        ),
        "Global importance over every customer (exact TreeSHAP, or the linear model's terms).",
    )


# ---- segments -----------------------------------------------------------------------------


def segments_page(store: Any) -> Page:
    """The latest segmentation's profiles side by side, and the segments' size and value over
    the scoring runs."""
    page = Page("segments", "Segments")
    found = store.query(
        "SELECT name, rule, customers, share, revenue_share, clv_share, distinctive "
        "FROM latest_segment_profiles ORDER BY customers DESC"
    )
    if not found:
        page.empty = "No segmentation yet. Make one: custval segment -c PROJECT"
        return page
    keys = ("segment", "rule", "customers", "share", "revenue_share", "clv_share", "distinctive")
    page.tables.append(segment_table([dict(zip(keys, row, strict=True)) for row in found]))
    runs = score_runs(store)
    sums = run_summaries(store, [r["run_id"] for r in runs], ("segments",))
    over = [
        {
            "run": run_label(r["as_of"], r["run_id"]),
            "segment": s["segment"],
            "customers": s["customers"],
            "clv_total": s.get("clv_total"),
        }
        for r in reversed(runs)
        for s in sums[r["run_id"]].get("segments", [])
    ]
    if over:
        page.charts.append(
            Chart(
                charts.lines_over_runs(
                    over,
                    x="run",
                    y="customers",
                    series="segment",
                    title="Customers per segment over the scoring runs",
                    y_title="customers",
                )
            )
        )
        if any(o["clv_total"] is not None for o in over):
            page.charts.append(
                Chart(
                    charts.lines_over_runs(
                        over,
                        x="run",
                        y="clv_total",
                        series="segment",
                        title="CLV per segment over the scoring runs",
                        y_title="CLV, total",
                    )
                )
            )
    return page


def segment_table(rows: list[dict[str, Any]]) -> Table:
    """The segments side by side (rows: segment, rule, customers, share, revenue_share,
    clv_share, distinctive)."""
    return Table(
        "The segments, side by side",
        [
            "segment",
            "rule",
            "customers",
            "share",
            "revenue share",
            "CLV share",
            "what sets it apart",
        ],
        [
            [
                str(r["segment"]),
                str(r.get("rule") or ""),
                fmt(r.get("customers")),
                fmt(r.get("share"), ".1%"),
                fmt(r.get("revenue_share"), ".1%"),
                fmt(r.get("clv_share"), ".1%"),
                listed(r.get("distinctive")),
            ]
            for r in rows
        ],
        numeric=(2, 3, 4, 5),
    )


# ---- the CLV model --------------------------------------------------------------------------


def clv_page(store: Any) -> Page:
    """The latest run's CLV model: its tracking plot, the P(alive) matrix, the calibration of
    CLV by decile once outcomes are known, and the comparison of the candidate models."""
    runs = score_runs(store, limit=1)
    page = Page("clv", "CLV model")
    if not runs:
        page.empty = NO_RUN
        return page
    run = runs[0]
    page.subtitle = _subtitle(run)
    models = store.latest_clv_models()  # the same latest scoring run
    if not models or "purchases" not in models:
        page.empty = "The latest scoring run fitted no CLV model (no transactions, or --no-clv)."
        return page
    page.cards = _clv_cards(models)
    tracking = run_summaries(store, [run["run_id"]], ("tracking",))[run["run_id"]].get("tracking")
    if tracking:
        page.charts.append(tracking_chart(tracking))
    page.charts.append(p_alive_chart(models, tracking))
    page.charts += _decile_charts(store)
    page.tables += comparison_tables(models)
    return page


#: the CLV methods of ``[clv] method`` in words
METHOD_LABELS = {
    "btyd": "purchases × spend",
    "lightgbm": "LightGBM",
    "random_forest": "random forest",
    "mlp": "neural network",
    "hybrid": "hybrid (LightGBM on BTYD)",
}


def _clv_cards(models: dict[str, Any]) -> list[Card]:
    purchases = models["purchases"]
    params = ", ".join(f"{k} {v:.3g}" for k, v in purchases["params"].items())
    choice = purchases.get("choice", {})
    return [
        Card("purchase model", choice.get("label") or purchases["model"], params),
        Card(
            "CLV method",
            METHOD_LABELS.get(str(models.get("method", "btyd")), str(models.get("method"))),
            f"over {fmt(models.get('horizon'), ',.0f')} time units, discounted "
            f"{fmt(models.get('discount'), '.3%')} per unit",
        ),
        Card(
            "spend model",
            models["spend"]["model"],
            ", ".join(f"{k} {v:.3g}" for k, v in models["spend"]["params"].items()),
        ),
    ]


def tracking_chart(tracking: dict[str, Any]) -> Chart:
    rows = []
    calibration_end = None
    for r in tracking["rows"]:
        if r["period"] == "calibration":
            calibration_end = r["period_end"]
        if r["cumulative_actual"] is not None:
            rows.append(
                {
                    "period_end": r["period_end"],
                    "series": "actual",
                    "purchases": r["cumulative_actual"],
                }
            )
        # ahead, the base's expectation continues from the actual count: its own line
        series = "expected ahead" if r["period"] == "forecast" else "predicted"
        rows.append(
            {
                "period_end": r["period_end"],
                "series": series,
                "purchases": r["cumulative_predicted"],
            }
        )
    return Chart(
        charts.tracking(rows, calibration_end=calibration_end, unit=tracking["unit"]),
        "The model's expected repeat purchases from each customer's first (blind to her history) "
        "against the actual count; past the rule, the base's expected purchases ahead.",
    )


def p_alive_chart(models: dict[str, Any], tracking: dict[str, Any] | None) -> Chart:
    """P(alive) on a grid of frequency and recency, for customers whose first purchase was
    ``age`` time units before the as-of date (the oldest customers when the tracking says)."""
    model = purchase_model(models["purchases"])
    unit = f"{tracking['unit']}s" if tracking else "time units"
    age = 52.0
    if tracking:
        ends = [r["period_end"] for r in tracking["rows"] if r["period"] == "calibration"]
        age = float(np.floor(max(ends))) if ends else age
    freq = np.arange(0, 21)
    recency = np.unique(np.round(np.linspace(0, age, 13)))
    x, t = np.meshgrid(freq, recency)
    x_flat, t_flat = x.ravel().astype(float), t.ravel()
    # a customer with no repeat purchase has recency 0 by definition
    t_flat = np.where(x_flat == 0, 0.0, t_flat)
    alive = model.probability_alive(x_flat, t_flat, np.full(x_flat.size, age))
    rows = [
        {"frequency": int(a), "recency": int(b), "P(alive)": float(p)}
        for a, b, p in zip(x.ravel(), t.ravel(), alive, strict=True)
    ]
    return Chart(
        charts.matrix(
            rows,
            x="frequency",
            y="recency",
            value="P(alive)",
            title=f"P(alive) by frequency and recency, for customers {age:,.0f} {unit} old",
            x_title="repeat purchases (frequency)",
            y_title="recency (time of the last purchase)",
        ),
        "Frequent buyers who have not bought for a long time are the likeliest to have left.",
    )


def _decile_charts(store: Any) -> list[Chart]:
    found = store.query(
        "SELECT detail FROM run_performance WHERE kind = 'realised' AND metric = 'clv_total_error' "
        "ORDER BY checked_at DESC LIMIT 1"
    )
    if not found:
        return []
    detail = json.loads(found[0][0])
    rows = [
        {"decile": d["decile"], "series": s, "value": d[s]}
        for d in detail.get("clv_by_decile") or []
        for s in ("predicted", "actual")
    ]
    if not rows:
        return []
    return [
        Chart(
            charts.deciles(
                rows,
                title="CLV by decile: predicted against realised spend",
                y_title="mean per customer",
            ),
            "From custval monitor, once the CLV horizon has passed.",
        )
    ]


def comparison_tables(models: dict[str, Any]) -> list[Table]:
    out = []
    choice = models["purchases"].get("choice")
    if choice and choice.get("scores"):
        out.append(
            Table(
                f"Purchase models compared ({choice['rule']})",
                ["model", choice["rule"]],
                [
                    [k, fmt(v, ",.1f" if choice["rule"] == "aic" else ",.4f")]
                    for k, v in choice["scores"].items()
                ],
                note=choice.get("reason", ""),
                numeric=(1,),
            )
        )
    board = models.get("leaderboard")
    if board:
        keys = [k for k in board[0] if k != "model"]
        out.append(
            Table(
                "CLV methods on the last horizon (the leaderboard)",
                ["model", *keys],
                [
                    [
                        str(r["model"]),
                        *(
                            fmt(r[k], ",.4g") if isinstance(r[k], int | float) else str(r[k])
                            for k in keys
                        ),
                    ]
                    for r in board
                ],
                numeric=tuple(range(1, len(keys) + 1)),
            )
        )
    return out


# ---- forecast -------------------------------------------------------------------------------


def forecast_page(store: Any) -> Page:
    """The latest forecast run: each series' history and forecast with its 80% interval, and
    the backtest that chose its method."""
    page = Page("forecast", "Forecast")
    found = store.forecast()
    if not found:
        page.empty = "No forecast run yet. Make one: custval forecast -c PROJECT"
        return page
    page.subtitle = f"forecast run {found['run_id']} · as of {found['as_of']}"
    history = store.run_rows("forecast_series", found["run_id"]).to_pylist()
    for series in found["series"][:6]:
        page.charts.append(Chart(_forecast_chart(series, history)))
        page.tables.append(_backtest_table(series))
    return page


def _forecast_chart(series: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [
        {"period": str(h["period"]), "kind": "actual", "value": h["actual"]}
        for h in history
        if h["series"] == series["series"]
    ][-104:]
    # one reconciliation of the forecast (the store keeps each one a hierarchy has)
    shown = series["forecast"][0].get("reconciliation") if series["forecast"] else None
    rows += [
        {
            "period": f["period"],
            "kind": "forecast",
            "value": f["point"],
            "lower": f["lo_80"],
            "upper": f["hi_80"],
        }
        for f in series["forecast"]
        if f.get("reconciliation") == shown
    ]
    return charts.forecast(
        rows,
        title=f"{series['series']}: {series['measure']} per {series['freq']}, 80% interval",
        y_title=str(series["measure"]),
    )


def _backtest_table(series: dict[str, Any]) -> Table:
    keys = ("mase", "rmsse", "wape", "bias", "coverage_80")
    return Table(
        f"{series['series']}: the methods' backtest (chosen: {series['method']})",
        ["method", *keys],
        [
            [r["method"] + (" ✓" if r["chosen"] else ""), *(fmt(r.get(k), ",.3f") for k in keys)]
            for r in series["leaderboard"]
        ],
        numeric=(1, 2, 3, 4, 5),
    )


# ---- monitoring -----------------------------------------------------------------------------


def monitoring_page(store: Any) -> Page:
    """Drift and performance over the scoring runs (what ``custval monitor`` kept), and the
    registry's decisions."""
    page = Page("monitoring", "Monitoring")
    # each run's latest check (a run checked against several references shows the last)
    drift = store.query(
        "SELECT r.as_of, d.run_id, d.feature, d.psi, d.alarm FROM run_drift d "
        "JOIN runs r ON r.run_id = d.run_id WHERE d.checked_at = "
        "(SELECT MAX(x.checked_at) FROM run_drift x WHERE x.run_id = d.run_id) "
        "ORDER BY r.finished_at, r.run_id"
    )
    perf = store.query(
        "SELECT r.as_of, p.run_id, p.kind, p.value FROM run_performance p "
        "JOIN runs r ON r.run_id = p.run_id WHERE p.metric = 'roc_auc' "
        "ORDER BY r.finished_at, r.run_id"
    )
    decisions = store.query(
        "SELECT decided_at, action, alias, version, previous, reason FROM model_decisions "
        "ORDER BY decided_at DESC LIMIT 20"
    )
    if not drift and not perf and not decisions:
        page.empty = "Nothing monitored yet. Check the latest run: custval monitor -c PROJECT"
        return page
    if drift:
        page.charts += _drift_charts(drift)
    if perf:
        rows = [
            {"run": run_label(a, run_id), "series": f"ROC AUC, {k}", "value": v}
            for a, run_id, k, v in perf
        ]
        page.charts.append(
            Chart(
                charts.lines_over_runs(
                    rows,
                    x="run",
                    y="value",
                    series="series",
                    title="The value model's ROC AUC: estimated before labels, realised after",
                    y_title="ROC AUC",
                    fmt=".3f",
                    zero=False,
                )
            )
        )
    if decisions:
        page.tables.append(
            Table(
                "The registry's decisions, newest first",
                ["when (UTC)", "action", "alias", "version", "replaced", "why"],
                [
                    [str(w)[:16], a, al or "", v or "", p or "", r or ""]
                    for w, a, al, v, p, r in decisions
                ],
            )
        )
    return page


def _drift_charts(drift: list[tuple[Any, ...]]) -> list[Chart]:
    per_run: dict[str, dict[str, Any]] = {}
    for as_of, run_id, _, psi, alarm in drift:
        r = per_run.setdefault(
            run_id, {"run": run_label(as_of, run_id), "alarms": 0, "max_psi": 0.0}
        )
        r["alarms"] += int(alarm or 0)
        r["max_psi"] = max(r["max_psi"], float(psi or 0.0))
    out = [
        Chart(
            charts.bars(
                list(per_run.values()),
                category="run",
                value="alarms",
                title="Columns alarming per checked run",
                value_title="columns alarming",
                fmt=",d",
                color=charts.LOWERS,
                tooltip=[("max_psi", "largest PSI", ".4f")],
                sort=False,
            ),
            "Each run's latest check by custval monitor; 0 is a run like its reference.",
        )
    ]
    # the heat map: the runs checked last, the columns that drifted most
    recent = list(per_run)[-8:]
    worst: dict[str, float] = {}
    for _, run_id, feature, psi, _ in drift:
        if run_id in recent:
            worst[feature] = max(worst.get(feature, 0.0), float(psi or 0.0))
    top = sorted(worst, key=lambda f: -worst[f])[:15]
    cells = [
        {
            "run": per_run[run_id]["run"],
            "feature": feature,
            "psi": psi,
            "alarm": bool(alarm),
        }
        for _, run_id, feature, psi, alarm in drift
        if run_id in recent and feature in top
    ]
    out.append(
        Chart(
            charts.drift_heatmap(
                cells, title="PSI of the columns that moved most (alarms outlined)"
            )
        )
    )
    return out
