"""The value classifier's commands: ``custval evaluate``, ``custval train``, ``custval predict``.

They register on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from custval.cli import app, friendly, out
from custval.errors import CustvalError

METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "log_loss": "log-loss",
    "brier": "Brier",
    "lift_top_decile": "lift top 10%",
}


def print_leaderboard(board: Any, chosen: str, title: str) -> None:
    """The cross-validated leaderboard as a table: mean ± standard deviation over the folds."""
    table = Table(title=title)
    table.add_column("model", justify="left")
    for label in METRIC_LABELS.values():
        table.add_column(label, justify="right")
    table.add_column("seconds", justify="right")
    for row in board.to_dict("records"):
        name = row["model"] + (" (chosen)" if row["model"] == chosen else "")
        cells = [f"{row[m + '_mean']:.4f} ± {row[m + '_std']:.4f}" for m in METRIC_LABELS]
        table.add_row(name, *cells, f"{row['seconds']:.1f}")
    out.print(table)


def leaderboard_json(board: Any, chosen: str) -> dict[str, Any]:
    return {
        "chosen": chosen,
        "models": {
            row["model"]: {
                **{m: {"mean": row[m + "_mean"], "std": row[m + "_std"]} for m in METRIC_LABELS},
                "seconds": row["seconds"],
            }
            for row in board.to_dict("records")
        },
    }


@app.command()
@friendly
def evaluate(
    data: Annotated[
        Path, typer.Option("--data", "-d", help="A labelled customer table (.csv or .parquet).")
    ],
    label: Annotated[str, typer.Option(help="The label column (e.g. high_value, churn).")],
    positive: Annotated[
        str | None,
        typer.Option(
            help="The label value meaning high (default: read from yes/no, true/false, 1/0, "
            "high/low)."
        ),
    ] = None,
    id_col: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="Column identifying customers, left out of the features (default: columns "
            "with a different text or whole number on every row are taken as ids).",
        ),
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds.", min=2)] = 5,
    models: Annotated[
        str,
        typer.Option(help="Candidate models, comma-separated, simplest first."),
    ] = "logistic,lightgbm,random_forest,mlp",
    seed: Annotated[int, typer.Option(help="Seed of the folds and the models.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the leaderboard as JSON.")] = False,
) -> None:
    """Cross-validate the candidate classifiers on any labelled customer table.

    No project file needed: every column except the label and the id is a feature (text
    columns are categories, numeric text with blanks is numeric with missing values). Each
    candidate (regularised logistic regression, LightGBM, random forest, a small neural network)
    is scored on the same stratified folds: ROC AUC, PR AUC, log-loss, Brier score and the lift
    in the top 10%, as mean ± standard deviation over the folds. The chosen model is the best
    mean ROC AUC, or the simplest within one standard error of it.
    """
    from custval.models.value import ValueClassifier, binary_label
    from custval.tables import identifier_columns, read_customer_table

    df = read_customer_table(data)
    if label not in df.columns:
        raise CustvalError(
            f"the table has no column '{label}'",
            source=str(data),
            column=label,
            hint="Columns: " + ", ".join(df.columns[:20]),
        )
    if id_col is not None and id_col not in df.columns:
        raise CustvalError(f"the table has no column '{id_col}'", source=str(data), column=id_col)
    y = binary_label(df[label], positive, column=label)
    ids = [id_col] if id_col else identifier_columns(df, exclude=(label,))
    features = df.drop(columns=[label, *ids])
    candidates = tuple(m.strip() for m in models.split(",") if m.strip())
    clf = ValueClassifier(candidates, folds=folds, seed=seed).fit(features, y)
    if as_json:
        out.print_json(
            data={
                **leaderboard_json(clf.leaderboard_, clf.chosen_),
                "rows": len(df),
                "positive_share": float(y.mean()),
                "folds": folds,
                "id_columns": ids,
                "features": clf.schema_.columns,
                "calibration_error": clf.calibration_error_,
            }
        )
        return
    out.print(
        f"{len(df):,} customers, {y.mean():.1%} positive ('{label}'); "
        f"{len(clf.schema_.columns)} features"
        + (f"; left out as ids: {', '.join(ids)}" if ids else "")
    )
    print_leaderboard(clf.leaderboard_, clf.chosen_, f"{folds}-fold cross-validation")
    out.print(
        f"chosen: {clf.chosen_}; calibration error of its out-of-fold probabilities "
        f"{clf.calibration_error_:.3f}"
    )
