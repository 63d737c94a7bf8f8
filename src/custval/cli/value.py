"""The value classifier's commands: ``custval evaluate``, ``custval train``, ``custval predict``.

They register on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from custval.cli.common import (
    DateFormatOpt,
    DecimalOpt,
    DelimiterOpt,
    EncodingOpt,
    EngineOpt,
    JsonSummaryOpt,
    NamesOpt,
    NoHeaderOpt,
    ReportOpt,
    TopKOpt,
    check_output,
    check_report,
    file_options,
    friendly,
    load,
    note,
    out,
    parse_date,
    steps,
    write_html_report,
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


DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        "-d",
        help="A labelled customer table, one row per customer (.csv, .tsv, .txt, .parquet): "
        "its own columns are the features.",
        show_default=False,
    ),
]
TableLabelOpt = Annotated[
    str | None,
    typer.Option(
        help="The label column (e.g. churn, high_value). Its name speaks in the reasons and "
        "outputs: 'raises the chance of churn'.",
        show_default=False,
    ),
]
TablePositiveOpt = Annotated[
    str | None,
    typer.Option(
        help="The label value meaning yes, e.g. Yes for churn (default: read from yes/no, "
        "true/false, 1/0, high/low).",
        show_default=False,
    ),
]
IdOpt = Annotated[
    str | None,
    typer.Option(
        "--id",
        help="Column identifying customers, left out of the features (default: columns "
        "with a different text or whole number on every row are taken as ids).",
        show_default=False,
    ),
]
SaveOpt = Annotated[
    Path | None,
    typer.Option(
        "--save",
        help="Also save the chosen model, refitted on all rows, as a model bundle in this new "
        "folder (for custval predict -m FOLDER).",
        show_default=False,
    ),
]


# a Typer command takes one parameter per flag: the argument-count rules (PLR0913, PLR0917) do
# not fit it
@friendly
def evaluate(
    data: DataOpt = None,
    label: TableLabelOpt = None,
    positive: TablePositiveOpt = None,
    id_col: IdOpt = None,
    folds: FoldsOpt = 5,
    models: CandidatesOpt = DEFAULT_CANDIDATES,
    seed: FitSeedOpt = 0,
    save: SaveOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the leaderboard as JSON.")] = False,
    delimiter: DelimiterOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    names: NamesOpt = None,
    date_format: DateFormatOpt = None,
    report: ReportOpt = None,
) -> None:
    """Cross-validate the candidate classifiers on any labelled customer table.

    No project file needed: every column except the label and the id is a feature (text
    columns are categories, numeric text with blanks is numeric with missing values). Each
    candidate (regularised logistic regression, LightGBM, random forest, a small neural network)
    is scored on the same stratified folds: ROC AUC, PR AUC, log-loss, Brier score and the lift
    in the top 10%, as mean ± standard deviation over the folds. The chosen model is the best
    mean ROC AUC, or the simplest within one standard error of it. With --save FOLDER it is
    kept as a model bundle, as `custval train --data` would write it.
    """
    from custval.flows.value import fit_table, labelled_table, save_table_model
    from custval.store.bundles import check_new_folder

    opts = file_options(delimiter, decimal, encoding, no_header, names, date_format)
    data, label = _need_table(data, label, "evaluate")
    if save is not None:
        check_new_folder(save)
    check_report(report)
    with steps(3 if save else 2) as advance:
        advance(f"reading {data.name}")
        table = labelled_table(
            _read(data, opts), label, positive=positive, id_col=id_col, source=str(data)
        )
        advance(f"cross-validating the candidates on {folds} folds")
        clf = fit_table(table, folds=folds, candidates=_candidates(models), seed=seed)
        if save is not None:
            advance("explaining the chosen model and writing its bundle")
        saved = save_table_model(clf, table, save) if save is not None else None
    _value_report(report, clf, saved, f"Evaluation of the candidates on {data.name}")
    if as_json:
        out.print_json(
            data={
                **leaderboard_json(clf.leaderboard_, clf.chosen_),
                "rows": len(table.y),
                "positive_share": float(table.y.mean()),
                "label": table.label,
                "folds": folds,
                "id_columns": table.ids,
                "features": clf.schema_.columns,
                "calibration_error": clf.calibration_error_,
                **({"model_dir": str(saved.folder)} if saved else {}),
            }
        )
        return
    _print_table_header(table.y, table.label, len(table.features.columns))
    print_leaderboard(clf.leaderboard_, clf.chosen_, f"{folds}-fold cross-validation")
    out.print(
        f"chosen: {clf.chosen_}; calibration error of its out-of-fold probabilities "
        f"{clf.calibration_error_:.3f}"
    )
    if saved is not None:
        print_insights(saved.importance, saved.profile, saved.catalogue, clf)
        _print_saved(saved.folder, data)


def _need_table(data: Path | None, label: str | None, command: str) -> tuple[Path, str]:
    """The table and its label column, both required on a command that trains on a table."""
    if data is None:
        raise CustvalError(
            f"custval {command} needs a labelled customer table",
            hint="Give it with --data FILE --label COLUMN",
        )
    if not label:
        raise CustvalError(
            f"which column of '{data}' is the label?",
            source=str(data),
            hint="Name it with --label COLUMN (and --positive VALUE for the value meaning yes)",
        )
    return data, label


def _read(path: Path, opts: Any) -> Any:
    """The customer table in ``path``, read by the file flags."""
    from custval.data.tables import read_customer_table

    return read_customer_table(path, csv=opts.csv(), date_format=opts.date_format)


def _candidates(models: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in models.split(",") if m.strip())


def positive_phrase(clf: Any) -> str:
    """How the positive class is named in sentences: "high value" for the derived label,
    "churn = Yes" for a label column."""
    name = getattr(clf, "label_name_", "high value")
    classes = getattr(clf, "class_names_", ("low value", "high value"))
    return name if name == "high value" else f"{name} = {classes[1]}"


def _print_table_header(y: Any, label: dict[str, Any], n_features: int) -> None:
    """How many customers, how many of them positive, the features and the ids left out."""
    ids = label["id_columns"]
    out.print(
        f"{len(y):,} customers, {y.mean():.1%} {label['name']} = {label['positive']}"
        f" (the other class: {label['classes'][0]}); {n_features} features"
        + (f"; left out as ids: {', '.join(ids)}" if ids else "")
    )


def _print_saved(folder: Path, data: Path) -> None:
    out.print(f"model: {folder}")
    out.print(f"next: custval predict -m {folder} -d {data} -o predictions.csv")


TrainCutoffOpt = Annotated[
    str | None,
    typer.Option(
        help="With -c: date, YYYY-MM-DD, the features are taken at and the future value "
        "counted from (default: the project's as-of date less the horizon).",
        show_default=False,
    ),
]
HorizonWeeksOpt = Annotated[
    int | None,
    typer.Option(
        help="With -c: weeks after the cutoff whose spend makes the label (default: 52).",
        min=1,
        show_default=False,
    ),
]
TopShareOpt = Annotated[
    float | None,
    typer.Option(
        help="Share of customers called positive under --threshold-rule top_share "
        "(default: 0.2 with -c; with --data, the label's own positive share).",
        show_default=False,
    ),
]
LabelColumnOpt = Annotated[
    str | None,
    typer.Option(
        help="With --data: the label column (required; e.g. churn). With -c: instead of "
        "future spend, a column of the feature table holding the label. Its name speaks in "
        "the reasons: 'raises the chance of churn'.",
        show_default=False,
    ),
]
PositiveOpt = Annotated[
    str | None,
    typer.Option(
        help="With --label: the value meaning yes (default: read from yes/no, true/false, "
        "1/0, high/low).",
        show_default=False,
    ),
]
ThresholdRuleOpt = Annotated[
    str,
    typer.Option(
        help="How the class is decided: top_share (the --top-share most likely are "
        "positive) or best_f1 (the out-of-fold threshold with the best F1)."
    ),
]
ModelsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="With -c: folder for model versions (default: models/ by the project). With "
        "--data: the new folder the bundle is written to (default: models/<version>).",
        show_default=False,
    ),
]
TrainConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The project file, to train on its features (default: custval.toml).",
        show_default=False,
    ),
]


AutoFeaturesOpt = Annotated[
    bool,
    typer.Option(
        "--auto-features",
        help="Add the generated features (custval features --auto; \\[features.auto]) to "
        "the hand-built ones and keep those that raise the cross-validated ROC AUC (the "
        "choice, with each dropped feature's reason, goes into the bundle; scoring computes "
        "them again). A project only.",
    ),
]


# a Typer command takes one parameter per flag: the argument-count rules (PLR0913, PLR0917) do
# not fit it
@friendly
def train(
    config: TrainConfigOpt = None,
    data: DataOpt = None,
    label: LabelColumnOpt = None,
    positive: PositiveOpt = None,
    id_col: IdOpt = None,
    cutoff: TrainCutoffOpt = None,
    horizon_weeks: HorizonWeeksOpt = None,
    top_share: TopShareOpt = None,
    folds: FoldsOpt = 5,
    models: CandidatesOpt = DEFAULT_CANDIDATES,
    threshold_rule: ThresholdRuleOpt = "top_share",
    out_dir: ModelsDirOpt = None,
    seed: FitSeedOpt = 0,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote",
            help="Make the new version the champion at once (a project's models folder; "
            "otherwise the first version is the champion and later ones are challengers).",
        ),
    ] = False,
    as_json: JsonSummaryOpt = False,
    delimiter: DelimiterOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    names: NamesOpt = None,
    date_format: DateFormatOpt = None,
    report: ReportOpt = None,
    engine: EngineOpt = None,
    auto_features: AutoFeaturesOpt = False,
) -> None:
    """Train the value classifier, on a project or on any labelled table, and save it as a
    model bundle.

    On a labelled customer table (--data FILE --label COLUMN): the table's own columns are
    the features (identifier columns left out), the label's name speaks in the reasons
    ("raises the chance of churn"), and the bundle is written to --out for `custval predict`.

    On a project (-c): the label is future value: a customer is high when her spend in the
    --horizon-weeks after the --cutoff is in the top --top-share of all customers' (or a
    column you name with --label). Transaction, web, product and service features are computed
    at the cutoff from earlier data only; the CRM profile is its current snapshot, as the CRM
    keeps no history. The bundle goes to models/<version>/ by the project. With --engine
    spark the features and labels are computed on Spark for about [engine] train_sample
    customers drawn there, and the models learn here (docs/scale.md).

    Either way the candidates are cross-validated (leaderboard printed and stored), the chosen
    one refitted on all customers, its calibration checked, the bundle written (JSON manifest).
    """
    opts = file_options(delimiter, decimal, encoding, no_header, names, date_format)
    fit = {"folds": folds, "candidates": _candidates(models), "seed": seed, "report": report}
    fit.update(threshold_rule=threshold_rule, top_share=top_share, engine=engine)
    fit.update(auto_features=auto_features)
    if data is not None:
        if config is not None:
            raise CustvalError(
                "--data and --config both name what to train on: give one",
                hint="--data FILE --label COLUMN trains on a customer table's own columns; "
                "-c PROJECT trains on a project's features",
            )
        project_only = {k: fit.pop(k) or None for k in ("engine", "auto_features")}
        _refuse_project_flags(
            cutoff=cutoff, horizon_weeks=horizon_weeks, promote=promote or None, **project_only
        )
        _train_table(data, label, positive, id_col, out_dir, opts, fit, as_json)
        return
    _refuse_table_flags(opts, id_col)
    _train_project(
        config or Path("custval.toml"),
        cutoff,
        horizon_weeks,
        label,
        positive,
        out_dir,
        fit,
        as_json,
        promote,
    )


def _refuse_table_flags(opts: Any, id_col: str | None) -> None:
    """Flags of table training have no meaning on a project: refused rather than ignored."""
    if opts != type(opts)():
        raise CustvalError(
            "the file flags (--delimiter, --decimal, --encoding, --no-header, --names, "
            "--date-format) read a --data table; a project reads its sources as its file says",
            hint="Drop them, or train on a table with --data FILE --label COLUMN",
        )
    if id_col is not None:
        raise CustvalError("--id goes with --data", hint="A project's customers are its ids")


def _refuse_project_flags(**given: Any) -> None:
    """Flags of project training have no meaning on a table: refused rather than ignored."""
    used = [k for k, v in given.items() if v is not None]
    if used:
        flags = ", ".join("--" + k.replace("_", "-") for k in used)
        raise CustvalError(
            f"{flags} apply to training on a project (-c), not on a --data table",
            hint="A table's columns are taken as they stand; drop " + flags,
        )


def _train_table(
    data: Path,
    label: str | None,
    positive: str | None,
    id_col: str | None,
    out_dir: Path | None,
    opts: Any,
    fit: dict[str, Any],
    as_json: bool,
) -> None:
    """``train --data``: fit on the table's own columns, write the bundle, print the result."""
    from datetime import UTC, datetime

    from custval.flows.value import train_table
    from custval.store.bundles import check_new_folder

    data, label = _need_table(data, label, "train --data")
    report = fit.pop("report")
    check_report(report)
    folder = out_dir or Path("models") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    check_new_folder(folder)
    with steps(2) as advance:
        advance(f"reading {data.name}")
        table = _read(data, opts)
        advance("cross-validating the candidates, then writing the bundle")
        result = train_table(
            table, label, folder, positive=positive, id_col=id_col, source=str(data), **fit
        )
    _value_report(report, result.clf, result, f"The value model trained on {data.name}")
    if as_json:
        out.print_json(data=_trained_json(result))
        return
    _print_table_header(result.y, result.label, len(result.features.columns))
    _print_trained(result, fit["folds"])
    out.print(f"next: custval predict -m {result.folder} -d {data} -o predictions.csv")


def _train_project(
    config: Path,
    cutoff: str | None,
    horizon_weeks: int | None,
    label: str | None,
    positive: str | None,
    out_dir: Path | None,
    fit: dict[str, Any],
    as_json: bool = False,
    promote: bool = False,
) -> None:
    """``train -c``: the project's features at the cutoff, the label from future spend."""
    from custval import flows
    from custval.store.registry import ModelRegistry

    project = load(config, fit.pop("engine"))
    report = fit.pop("report")
    check_report(report)
    weeks = horizon_weeks or 52
    share = 0.2 if fit["top_share"] is None else fit["top_share"]
    with steps(3 * len(project.sources) + 3) as advance:
        result = flows.train_value(
            project,
            cutoff=parse_date(cutoff, flag="--cutoff") if cutoff else None,
            horizon_weeks=weeks,
            label=label,
            positive=positive,
            out_dir=out_dir or (config.parent / "models"),
            progress=advance,
            **{**fit, "top_share": share},
        )
    if promote and result.alias != "champion":
        ModelRegistry(result.folder.parent).promote(
            result.folder.name, reason="train --promote", forced=True
        )
        result.alias = "champion"
    _value_report(report, result.clf, result, f"The value model of {config.name}")
    if as_json:
        out.print_json(data=_trained_json(result))
        return
    out.print(
        f"{len(result.y):,} customers at {result.cutoff}, {result.y.mean():.1%} high"
        + (
            f" (top {share:.0%} of spend in the next {weeks} weeks, at least "
            f"{result.label['threshold_spend']:,.2f})"
            if label is None
            else f" ('{label}')"
        )
    )
    _print_trained(result, fit["folds"])


def _value_report(path: Path | None, clf: Any, explained: Any, title: str) -> None:
    """--report: the leaderboard and calibration, and what drives the model once explained
    (a saved bundle's importance and profile)."""
    if path is None:
        return
    from custval.flows.report import value_sections

    sections = value_sections(
        clf,
        importance=getattr(explained, "importance", None),
        profile=getattr(explained, "profile", None),
        catalogue=getattr(explained, "catalogue", None),
    )
    write_html_report(path, title, sections)


def _trained_json(result: Any) -> dict[str, Any]:
    clf, y = result.clf, result.y
    return {
        **leaderboard_json(clf.leaderboard_, clf.chosen_),
        "customers": len(y),
        "high_share": float(y.mean()),
        "label_name": clf.label_name_,
        "class_names": list(clf.class_names_),
        "label": result.label,
        "calibration_error": clf.calibration_error_,
        "threshold": clf.threshold_,
        "threshold_rule": clf.threshold_rule,
        "reliability": clf.reliability_.to_dict("records"),
        "model_dir": str(result.folder),
        "alias": result.alias,
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
    print_insights(result.importance, result.profile, result.catalogue, clf)
    out.print(f"model: {result.folder}" + (f" ({result.alias})" if result.alias else ""))
    if result.alias == "challenger":
        out.print(
            "score and serve use the champion; 'custval models promote "
            f"{result.folder.name} -c PROJECT' makes this one the champion, 'custval retrain' "
            "promotes only a better one"
        )


def print_insights(
    imp: Any, profile: dict[str, Any], catalogue: dict[str, str], clf: Any = None
) -> None:
    """The most important features and the conditions that most separate the positive
    customers (high value, or the label's positive class: churn = Yes)."""
    phrase = positive_phrase(clf)
    named = phrase != "high value"
    table = Table(
        title="what drives the prediction"
        + (f" of {clf.label_name_}" if named else "")
        + " (mean absolute contribution)"
    )
    for c in ("feature", "meaning", "share"):
        table.add_column(c, justify="right" if c == "share" else "left")
    for row in imp.head(5).to_dict("records"):
        meaning = catalogue.get(row["feature"], "")
        # a table's columns are described by their own names: no need to say it twice
        meaning = "" if meaning == row["feature"].replace("_", " ") else meaning
        table.add_row(row["feature"], meaning, f"{row['share']:.0%}")
    out.print(table)
    cond = profile["conditions"]
    if len(cond):
        who = f"customers with {phrase}" if named else "high-value customers"
        table = Table(
            title=f"{who} ({profile['high_share']:.0%} of all) are most over-represented where"
        )
        among = f"{phrase} among them" if named else "high among them"
        for c in ("condition", "customers", among, "lift"):
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
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="A model bundle from train or evaluate --save (or a models/ folder: its "
            "newest version).",
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            "-d",
            help="Customers to score (.csv, .tsv, .txt, .parquet), with the model's feature "
            "columns.",
            show_default=False,
        ),
    ] = None,
    input_path: Annotated[
        Path | None, typer.Option("--input", "-i", hidden=True, help="Old name of --data.")
    ] = None,
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Predictions with reasons (.csv or .parquet).")
    ] = Path("predictions.parquet"),
    id_col: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="Column identifying customers, copied to the output (default: the id column "
            "the model was trained with, else customer_id).",
            show_default=False,
        ),
    ] = None,
    top_k: TopKOpt = 3,
    delimiter: DelimiterOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    names: NamesOpt = None,
    date_format: DateFormatOpt = None,
) -> None:
    """Score customers with a trained model: probability, class and the top reasons.

    The input needs the model's feature columns (any order, extra columns such as the label
    ignored); a missing column or text in a numeric one is refused with a clear message, and
    categories the model has not seen are handled. Writes per customer the id, the probability
    and the predicted class, named after the label (p_churn and predicted_churn, with the
    label's own values, for a model of a churn column; probability and predicted_class, 1 =
    high, for a project's value model), and for each of the --top-k reasons the sentence
    ("... raises the chance of churn"), the feature, the customer's value and its contribution.
    """
    opts = file_options(delimiter, decimal, encoding, no_header, names, date_format)
    if data is None and input_path is not None:
        note("--input/-i is now -d/--data, as in train and evaluate")
    data = data or input_path
    if data is None:
        raise CustvalError(
            "which customers should be scored?", hint="Give their table with -d/--data FILE"
        )
    check_output(out_path)
    _predict(model, data, out_path, id_col, top_k, opts)


def _predict(
    model: Path, data: Path, out_path: Path, id_col: str | None, top_k: int, opts: Any
) -> None:
    import pyarrow as pa

    from custval.models.explain import reasons
    from custval.store.bundles import load_bundle
    from custval.store.registry import ModelRegistry

    if model.is_dir() and not (model / "manifest.json").exists():
        model = model / ModelRegistry(model).resolve()  # the champion of a models folder
    clf = load_bundle(model)
    df = _read(data, opts)
    result = reasons(
        clf, df, top_k=top_k, catalogue=clf.manifest_.get("catalogue", {}), source=str(data)
    )
    result, summary = _name_outputs(clf, result)
    label = clf.manifest_.get("label", {})
    wanted = [id_col] if id_col else [*label.get("id_columns", []), "customer_id"]
    present = [c for c in wanted if c in df.columns]
    if present:
        result.insert(0, present[0], df[present[0]].to_numpy())
    else:
        note(f"the input has no column '{wanted[0]}'; rows are in the input's order")
    write_table(pa.Table.from_pandas(result, preserve_index=False), out_path)
    out.print(
        f"{len(result):,} customers scored with {clf.chosen_} ({model}); {summary}; "
        f"predictions: {out_path}"
    )


def _name_outputs(clf: Any, result: Any) -> tuple[Any, str]:
    """The probability and class columns named after the label (``p_churn`` and
    ``predicted_churn`` holding the label's values), and the count of positives in words; a
    project's value model keeps ``probability`` and ``predicted_class`` (1 = high)."""
    import re

    import numpy as np

    positives = int(result.predicted_class.sum())
    if positive_phrase(clf) == "high value" or "class_names" not in clf.manifest_:
        return result, f"{positives:,} high"
    slug = re.sub(r"[^0-9a-z]+", "_", clf.label_name_.lower()).strip("_") or "label"
    negative, positive = clf.class_names_
    named = result.rename(columns={"probability": f"p_{slug}"})
    named["predicted_class"] = np.where(result.predicted_class == 1, positive, negative)
    named = named.rename(columns={"predicted_class": f"predicted_{slug}"})
    return named, f"{positives:,} predicted {positive_phrase(clf)}"
