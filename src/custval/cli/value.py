"""The value classifier's commands: ``custval evaluate``, ``custval train``, ``custval predict``.

They register on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from custval.cli.common import (
    ConfigOpt,
    JsonSummaryOpt,
    TopKOpt,
    check_output,
    friendly,
    load,
    out,
    parse_date,
    write_table,
)
from custval.errors import CustvalError

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

FoldsOpt = Annotated[int, typer.Option(help="Cross-validation folds.", min=2)]
CandidatesOpt = Annotated[
    str, typer.Option(help="Candidate models, comma-separated, simplest first.")
]
FitSeedOpt = Annotated[int, typer.Option(help="Seed of the folds and the models.")]
# simplest first: within one standard error of the best, the simplest is chosen
DEFAULT_CANDIDATES = "logistic,lightgbm,random_forest,mlp"

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
    forward = "time_split_roc_auc" in board
    if forward:
        table.add_column("ROC AUC, next period", justify="right")
    table.add_column("seconds", justify="right")
    for row in board.to_dict("records"):
        name = row["model"] + (" (chosen)" if row["model"] == chosen else "")
        cells = [f"{row[m + '_mean']:.4f} ± {row[m + '_std']:.4f}" for m in METRIC_LABELS]
        if forward:
            cells.append(f"{row['time_split_roc_auc']:.4f}")
        table.add_row(name, *cells, f"{row['seconds']:.1f}")
    out.print(table)


def leaderboard_json(board: Any, chosen: str) -> dict[str, Any]:
    return {
        "chosen": chosen,
        "models": {
            row["model"]: {
                **{m: {"mean": row[m + "_mean"], "std": row[m + "_std"]} for m in METRIC_LABELS},
                **{k: v for k, v in row.items() if k.startswith("time_split_")},
                "seconds": row["seconds"],
            }
            for row in board.to_dict("records")
        },
    }


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
    folds: FoldsOpt = 5,
    models: CandidatesOpt = DEFAULT_CANDIDATES,
    seed: FitSeedOpt = 0,
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
    from custval.data.tables import identifier_columns, read_customer_table
    from custval.models.value import ValueClassifier, binary_label

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


TrainCutoffOpt = Annotated[
    str | None,
    typer.Option(
        help="Date, YYYY-MM-DD, the features are taken at and the future value counted "
        "from (default: the project's as-of date less the horizon)."
    ),
]
HorizonWeeksOpt = Annotated[
    int, typer.Option(help="Weeks after the cutoff whose spend makes the label.", min=1)
]
TopShareOpt = Annotated[
    float, typer.Option(help="Share of customers whose future spend labels them high.")
]
LabelColumnOpt = Annotated[
    str | None,
    typer.Option(help="Instead of future spend: a column of the feature table holding the label."),
]
PositiveOpt = Annotated[str | None, typer.Option(help="With --label: the value meaning high.")]
ThresholdRuleOpt = Annotated[
    str,
    typer.Option(
        help="How the class is decided: top_share (the --top-share most likely are high) "
        "or best_f1 (the out-of-fold threshold with the best F1)."
    ),
]
ModelsDirOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Folder for model versions (default: models/ by the project)."),
]


# a Typer command takes one parameter per flag: the argument-count rules (PLR0913, PLR0917) do
# not fit it
@friendly
def train(
    config: ConfigOpt = Path("custval.toml"),
    cutoff: TrainCutoffOpt = None,
    horizon_weeks: HorizonWeeksOpt = 52,
    top_share: TopShareOpt = 0.2,
    label: LabelColumnOpt = None,
    positive: PositiveOpt = None,
    folds: FoldsOpt = 5,
    models: CandidatesOpt = DEFAULT_CANDIDATES,
    threshold_rule: ThresholdRuleOpt = "top_share",
    out_dir: ModelsDirOpt = None,
    seed: FitSeedOpt = 0,
    as_json: JsonSummaryOpt = False,
) -> None:
    """Train the high/low value classifier of a project and store it as a model bundle.

    The label is future value: a customer is high when her spend in the --horizon-weeks after
    the --cutoff is in the top --top-share of all customers' (or a column you name with
    --label). Transaction, web, product and service features are computed at the cutoff from
    earlier data only; the CRM profile (plan, region, services) is its current snapshot, as the
    CRM keeps no history. The candidates are
    cross-validated (leaderboard printed and stored), the chosen one refitted on all customers,
    its calibration checked, and the bundle written to models/<version>/ with a JSON manifest.
    """
    from custval import flows

    project = load(config)
    result = flows.train_value(
        project,
        cutoff=parse_date(cutoff) if cutoff else None,
        horizon_weeks=horizon_weeks,
        top_share=top_share,
        label=label,
        positive=positive,
        folds=folds,
        candidates=tuple(m.strip() for m in models.split(",") if m.strip()),
        seed=seed,
        out_dir=out_dir or (config.parent / "models"),
        threshold_rule=threshold_rule,
    )
    if as_json:
        out.print_json(data=_trained_json(result))
        return
    out.print(
        f"{len(result.y):,} customers at {result.cutoff}, {result.y.mean():.1%} high"
        + (
            f" (top {top_share:.0%} of spend in the next {horizon_weeks} weeks, at least "
            f"{result.label['threshold_spend']:,.2f})"
            if label is None
            else f" ('{label}')"
        )
    )
    _print_trained(result, folds)


def _trained_json(result: Any) -> dict[str, Any]:
    clf, y = result.clf, result.y
    return {
        **leaderboard_json(clf.leaderboard_, clf.chosen_),
        "customers": len(y),
        "high_share": float(y.mean()),
        "label": result.label,
        "calibration_error": clf.calibration_error_,
        "threshold": clf.threshold_,
        "threshold_rule": clf.threshold_rule,
        "reliability": clf.reliability_.to_dict("records"),
        "model_dir": str(result.folder),
        "importance": result.importance.head(10).to_dict("records"),
        "conditions": result.profile["conditions"].to_dict("records"),
    }


def _print_trained(result: Any, folds: int) -> None:
    """The leaderboard, the chosen model's calibration and threshold, what drives it."""
    clf = result.clf
    print_leaderboard(clf.leaderboard_, clf.chosen_, f"{folds}-fold cross-validation")
    out.print(
        f"chosen: {clf.chosen_}, refitted on all customers; calibration error "
        f"{clf.calibration_error_:.3f}; threshold {clf.threshold_:.3f}"
    )
    ts = result.label.get("time_split")
    if ts:
        out.print(
            f"chosen forward in time: every candidate trained at {ts['trained_at']} and scored "
            f"at {ts['scored_at']}; {clf.chosen_}: ROC AUC {ts['roc_auc']:.4f}, lift in the top "
            f"10% {ts['lift_top_decile']:.2f}"
        )
    print_insights(result.importance, result.profile, result.catalogue)
    out.print(f"model: {result.folder}")


def print_insights(imp: Any, profile: dict[str, Any], catalogue: dict[str, str]) -> None:
    """The most important features and the conditions that most separate high customers."""
    table = Table(title="what drives the prediction (mean absolute contribution)")
    for c in ("feature", "meaning", "share"):
        table.add_column(c, justify="right" if c == "share" else "left")
    for row in imp.head(5).to_dict("records"):
        table.add_row(row["feature"], catalogue.get(row["feature"], ""), f"{row['share']:.0%}")
    out.print(table)
    cond = profile["conditions"]
    if len(cond):
        table = Table(
            title=f"high-value customers ({profile['high_share']:.0%} of all) are most "
            "over-represented where"
        )
        for c in ("condition", "customers", "high among them", "lift"):
            table.add_column(c, justify="left" if c == "condition" else "right")
        for row in cond.to_dict("records"):
            table.add_row(
                row["condition"],
                f"{row['support']:.0%}",
                f"{row['high_share']:.0%}",
                f"{row['lift']:.1f}x",
            )
        out.print(table)


@friendly
def predict(
    model: Annotated[Path, typer.Option("--model", "-m", help="A model folder from train.")],
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="Customers to score (.csv or .parquet).")
    ],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Predictions with reasons (.csv or .parquet).")
    ] = Path("predictions.parquet"),
    id_col: Annotated[
        str | None, typer.Option("--id", help="Column identifying customers, copied to the output.")
    ] = "customer_id",
    top_k: TopKOpt = 3,
) -> None:
    """Score customers with a trained model: probability, class and the top reasons.

    The input needs the model's feature columns (any order, extra columns ignored); a missing
    column or text in a numeric one is refused with a clear message, and categories the model
    has not seen are handled. Writes per customer: probability of high value, predicted class
    (1 = high, by the model's threshold), and for each of the --top-k reasons the sentence, the
    feature, the customer's value and its contribution.
    """
    import pyarrow as pa

    from custval.data.tables import read_customer_table
    from custval.models.explain import reasons
    from custval.store.bundles import load_bundle

    check_output(out_path)
    clf = load_bundle(model)
    df = read_customer_table(input_path)
    catalogue = clf.manifest_.get("catalogue", {})
    label = clf.manifest_.get("label", {})
    outcome = f"'{label['column']}'" if label.get("kind") == "column" else "high value"
    result = reasons(
        clf, df, top_k=top_k, catalogue=catalogue, outcome=outcome, source=str(input_path)
    )
    if id_col and id_col in df.columns:
        result.insert(0, id_col, df[id_col].to_numpy())
    elif id_col:
        out.print(f"note: the input has no column '{id_col}'; rows are in the input's order")
    write_table(pa.Table.from_pandas(result, preserve_index=False), out_path)
    out.print(
        f"{len(result):,} customers scored with {clf.chosen_} ({model}); "
        f"{int(result.predicted_class.sum()):,} high; predictions: {out_path}"
    )
