"""The sections of a command's ``--report FILE.html``: what it found, as the dashboard's parts.

``custval clv`` (the tracking plot, the P(alive) matrix, the purchase models compared, the CLV
methods' leaderboard), ``custval evaluate`` and ``train`` (the candidates' leaderboard, the
calibration curve, importance and the high-value profile), ``custval segment`` (the profiles
side by side) and ``custval quickstart`` (all that applies). Each function returns pages
(:class:`custval.flows.dashboard.Page`) that :func:`custval.flows.html.render_report` makes one
self-contained file of.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from custval.flows import charts
from custval.flows.dashboard import (
    Card,
    Chart,
    Page,
    Table,
    comparison_tables,
    fmt,
    importance_chart,
    p_alive_chart,
    profile_table,
    segment_table,
    tracking_chart,
)
from custval.models.btyd_clv import clv_models_json

__all__ = ["clv_board_sections", "clv_sections", "segment_sections", "value_sections"]

#: the leaderboard's metrics: (column prefix, label, format, higher is better)
VALUE_METRICS = (
    ("roc_auc", "ROC AUC", ".4f"),
    ("pr_auc", "PR AUC", ".4f"),
    ("log_loss", "log-loss", ".4f"),
    ("brier", "Brier", ".4f"),
    ("lift_top_decile", "lift, top 10%", ".2f"),
)


def _records(table: Any) -> list[dict[str, Any]]:
    if table is None:
        return []
    if isinstance(table, pd.DataFrame):
        return table.to_dict("records")
    return list(table)


# ---- CLV ------------------------------------------------------------------------------------


def clv_sections(result: Any, *, horizon: float, discount: float, time_unit: str) -> list[Page]:
    """``custval clv`` (BTYD): the fit, its tracking plot, the P(alive) matrix and the purchase
    models compared."""
    models = clv_models_json(result.purchases, result.spend, horizon, discount, result.choice)
    tracking = None
    if result.tracking is not None:
        tracking = {"unit": time_unit.removesuffix("s"), "rows": _records(result.tracking)}
    page = Page("clv", "Customer lifetime value", subtitle=_clv_subtitle(result))
    page.cards = [
        Card(
            "purchase model",
            models["purchases"].get("choice", {}).get("label") or models["purchases"]["model"],
            _params(models["purchases"]["params"]),
        ),
        Card("spend model", models["spend"]["model"], _params(models["spend"]["params"])),
        Card(
            "customers",
            fmt(result.predictions.num_rows),
            "with a purchase before the end of the calibration",
        ),
    ]
    if result.holdout:
        page.cards.append(
            Card(
                "holdout",
                f"{fmt(result.holdout.get('predicted_total'), ',.0f')} predicted",
                f"{fmt(result.holdout.get('actual_total'), ',.0f')} actual repeat purchases",
            )
        )
    if tracking:
        page.charts.append(tracking_chart(tracking))
    page.charts.append(p_alive_chart(models, tracking))
    page.tables += comparison_tables(models)
    if result.comparison is not None:
        page.tables.append(_frame_table("Every purchase model's fit", result.comparison))
    return [page]


def _clv_subtitle(result: Any) -> str:
    choice = getattr(result, "choice", None)
    return choice.reason() if choice is not None else ""


def _params(params: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in params.items())


def _frame_table(title: str, frame: pd.DataFrame) -> Table:
    """Any small table, numbers formatted to four significant digits."""
    cols = [str(c) for c in frame.columns]
    numeric = tuple(
        i for i, c in enumerate(frame.columns) if pd.api.types.is_numeric_dtype(frame[c])
    )
    rows = [
        [fmt(v, ",.4g") if i in numeric else str(v) for i, v in enumerate(r)]
        for r in frame.itertuples(index=False)
    ]
    return Table(title, cols, rows, numeric=numeric)


def clv_board_sections(board: dict[str, Any]) -> list[Page]:
    """``custval clv --method auto|ml|hybrid``: the methods judged on the last horizon."""
    ev = board["evaluation"]
    page = Page(
        "clv",
        "CLV methods compared",
        subtitle=f"on the holdout {ev['from']} to {ev['to']}: {ev['customers']:,} customers, "
        f"actual spend {ev['actual_total']:,.0f}; chosen: {board['chosen']}",
    )
    rows = board["leaderboard"]
    page.charts.append(
        Chart(
            charts.bars(
                rows,
                category="model",
                value="mae",
                title="Mean absolute error of CLV per customer (lower is better)",
                value_title="MAE",
                fmt=",.2f",
                tooltip=[
                    ("coverage", "interval coverage", ".1%"),
                    ("top20_capture", "top 20% hold", ".1%"),
                ],
            )
        )
    )
    page.tables.append(
        Table(
            "The leaderboard",
            [
                "model",
                "MAE",
                "RMSE",
                "total",
                "Spearman",
                "top 20% hold",
                "interval covers",
                "seconds",
            ],
            [
                [
                    r["model"] + (" ✓" if r["model"] == board["chosen"] else ""),
                    fmt(r["mae"], ",.2f"),
                    fmt(r["rmse"], ",.2f"),
                    fmt(r["total_error"], "+.1%"),
                    fmt(r["spearman"], ".3f"),
                    fmt(r["top20_capture"], ".1%"),
                    fmt(r["coverage"], ".1%"),
                    fmt(r["seconds"], ",.1f"),
                ]
                for r in rows
            ],
            numeric=(1, 2, 3, 4, 5, 6, 7),
        )
    )
    return [page]


# ---- the value classifier -------------------------------------------------------------------


def value_sections(
    clf: Any,
    *,
    importance: Any = None,
    profile: dict[str, Any] | None = None,
    catalogue: dict[str, str] | None = None,
) -> list[Page]:
    """``custval evaluate`` and ``train``: the candidates cross-validated, the chosen one's
    calibration, and (once explained) what drives it and the high-value profile."""
    board = clf.leaderboard_
    chosen = board.set_index("model").loc[clf.chosen_]
    page = Page("value", "The value classifier", subtitle=f"chosen: {clf.chosen_}")
    page.cards = [
        Card("chosen model", str(clf.chosen_), f"of {len(board)} candidates"),
        Card(
            "ROC AUC",
            fmt(chosen["roc_auc_mean"], ".3f"),
            f"± {fmt(chosen['roc_auc_std'], '.3f')} over the folds",
        ),
        Card("lift, top 10%", fmt(chosen["lift_top_decile_mean"], ".2f") + "×"),
        Card(
            "calibration error",
            fmt(clf.calibration_error_, ".3f"),
            "mean gap, predicted against observed",
        ),
    ]
    rows = [
        {"model": r["model"], "ROC AUC": r["roc_auc_mean"], "std": r["roc_auc_std"]}
        for r in _records(board)
    ]
    page.charts.append(
        Chart(
            charts.bars(
                rows,
                category="model",
                value="ROC AUC",
                title="The candidates' ROC AUC, cross-validated",
                value_title="ROC AUC (mean over the folds)",
                fmt=".3f",
                tooltip=[("std", "standard deviation", ".4f")],
            ),
        )
    )
    reliability = [
        {"predicted": r["mean_predicted"], "observed": r["observed"], "customers": r["customers"]}
        for r in _records(clf.reliability_)
    ]
    page.charts.append(
        Chart(
            charts.calibration(reliability, title="Calibration of the out-of-fold probabilities"),
            "On the diagonal: of customers given 0.3, 30% are high value.",
        )
    )
    page.tables.append(_value_board_table(board, clf.chosen_))
    pages = [page]
    if importance is not None:
        pages.append(_drivers(importance, profile or {}, catalogue or {}))
    return pages


def _value_board_table(board: pd.DataFrame, chosen: str) -> Table:
    rows = []
    for r in _records(board):
        rows.append(
            [
                r["model"] + (" ✓" if r["model"] == chosen else ""),
                *(f"{r[m + '_mean']:{f}} ± {r[m + '_std']:{f}}" for m, _, f in VALUE_METRICS),
                fmt(r.get("seconds"), ",.1f"),
            ]
        )
    return Table(
        "The leaderboard: mean ± standard deviation over the folds",
        ["model", *(label for _, label, _ in VALUE_METRICS), "seconds"],
        rows,
        numeric=tuple(range(1, len(VALUE_METRICS) + 2)),
    )


def _drivers(importance: Any, profile: dict[str, Any], catalogue: dict[str, str]) -> Page:
    rows = _records(importance)
    page = Page("drivers", "What drives the prediction")
    page.charts.append(importance_chart(rows, catalogue))
    order = [r["feature"] for r in rows]
    page.tables.append(profile_table(_records(profile.get("features")), order, catalogue))
    return page


# ---- segments -------------------------------------------------------------------------------


def segment_sections(profiles: Any) -> list[Page]:
    """``custval segment``: each segment's size, value and rule, side by side."""
    rows = _records(profiles)
    page = Page("segments", "Segments", subtitle=f"{len(rows)} segments")
    shown = [{**r, "segment": r.get("name", r.get("segment"))} for r in rows]
    page.charts.append(
        Chart(
            charts.bars(
                shown,
                category="segment",
                value="customers",
                title="Customers by segment",
                value_title="customers",
                tooltip=[("share", "share", ".1%")],
            )
        )
    )
    if any(r.get("clv_share") is not None for r in shown):
        page.charts.append(
            Chart(
                charts.bars(
                    shown,
                    category="segment",
                    value="clv_share",
                    title="Share of the customers' CLV",
                    value_title="share of CLV",
                    fmt=".0%",
                    color=charts.HIGH,
                )
            )
        )
    page.tables.append(segment_table(shown))
    return [page]
