"""``custval clv --method ml|hybrid|auto``: the CLV leaderboard, printed and written.

:func:`run` is called by ``custval clv`` (:mod:`custval.cli`) when the method is not ``btyd``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from rich.table import Table

from custval.cli.common import (
    out,
    write_table,
)

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.


def run(
    project: Any,
    prepared: Any,
    *,
    method: str,
    holdout_end: date | None,
    horizon: float,
    discount: float,
    level: float,
    out_path: Path,
    as_json: bool,
    advance: Any,
) -> dict[str, Any]:
    """Run the leaderboard, write the per-customer predictions, return the JSON summary."""
    import pyarrow as pa

    from custval.flows.leaderboard import METHOD_CANDIDATES, clv_leaderboard

    board = clv_leaderboard(
        project,
        prepared,
        horizon=horizon,
        holdout_end=holdout_end,
        methods=METHOD_CANDIDATES[method],
        choose_method=method,
        level=level,
        discount=discount,
        progress=advance,
    )
    table = board.predictions
    if board.reasons is not None:
        table = table.join(board.reasons.set_axis(table.index))
    write_table(pa.Table.from_pandas(table, preserve_index=False), out_path)
    return _json_safe(
        {
            "method": method,
            "chosen": board.chosen,
            "evaluation": board.evaluation,
            "leaderboard": board.leaderboard.to_dict("records"),
            "deciles": board.deciles[board.chosen].to_dict("records"),
            "level": board.level,
            "notes": board.notes,
            "predictions": str(out_path),
            "prediction_date": project.as_of.isoformat() if holdout_end is None else None,
        }
    )


def _json_safe(value: Any) -> Any:
    """NaN (a rank correlation of a constant prediction, say) as null: NaN is not JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def print_board(summary: dict[str, Any], time_unit: str) -> None:
    ev = summary["evaluation"]
    title = (
        f"CLV methods on the holdout {ev['from']} to {ev['to']}: {ev['customers']:,} customers, "
        f"actual spend {ev['actual_total']:,.0f}"
    )
    table = Table(title=title)
    cols = ("model", "MAE", "RMSE", "total", "Spearman", "top 20% hold", "interval covers", "s")
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for row in summary["leaderboard"]:
        mark = " (chosen)" if row["model"] == summary["chosen"] else ""
        table.add_row(
            row["model"] + mark,
            f"{row['mae']:.2f}",
            f"{row['rmse']:.2f}",
            f"{row['total_error']:+.1%}",
            "-" if row["spearman"] is None else f"{row['spearman']:.3f}",
            f"{row['top20_capture']:.1%} of {row['top20_best']:.1%}",
            f"{row['coverage']:.1%}",
            f"{row['seconds']:.1f}",
        )
    out.print(table)
    out.print(
        f"training windows of {ev['window_days']} days from {', '.join(ev['cutoffs'])} "
        f"({ev['training_rows']:,} rows); intervals at {summary['level']:.0%}; 'top 20% hold': "
        "share of the actual spend held by the predicted top 20% (of what a perfect ranking "
        "holds)",
        highlight=False,
    )
    for note in summary["notes"]:
        out.print(f"[yellow]{note}[/yellow]")
    deciles = Table(title=f"{summary['chosen']}: predicted against actual by decile")
    for c in ("decile", "customers", "predicted mean", "actual mean"):
        deciles.add_column(c, justify="right")
    for row in summary["deciles"]:
        deciles.add_row(
            str(row["decile"]),
            f"{row['customers']:,}",
            f"{row['predicted_mean']:,.2f}",
            f"{row['actual_mean']:,.2f}",
        )
    out.print(deciles)
    when = summary["prediction_date"]
    out.print(
        f"chosen: {summary['chosen']}; predictions "
        + (f"for the horizon after {when}" if when else "of the holdout")
        + f": {summary['predictions']}"
    )
