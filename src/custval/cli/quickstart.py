"""``custval quickstart``: one transactions file to CLV, value class, segments and a store."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from custval.cli import value as cli_value
from custval.cli.clv import clv_summary, print_clv
from custval.cli.common import (
    DateFormatOpt,
    DecimalOpt,
    DelimiterOpt,
    EncodingOpt,
    FileOptions,
    NamesOpt,
    NoHeaderOpt,
    ReportOpt,
    SeedOpt,
    cell,
    check_report,
    file_options,
    friendly,
    out,
    parse_date,
    print_rules,
    steps,
    write_html_report,
    write_table,
)
from custval.cli.demo import invoked_as, print_scored_run
from custval.cli.segment import print_segments

if TYPE_CHECKING:
    from custval.config import Project
    from custval.flows.quickstart import Periods

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

TransactionsOpt = Annotated[
    Path,
    typer.Option(
        "--transactions", "-t", help="Transactions: one row per purchase (CSV, Parquet, Excel...)."
    ),
]
CustomersOpt = Annotated[
    Path | None,
    typer.Option(
        "--customers",
        help="Optional customer profiles, one row per customer, with the same customer ids: "
        "their columns (region, plan...) become features of the value class.",
    ),
]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for everything.")]
CustomerIdOpt = Annotated[
    str | None,
    typer.Option(help="Column with the customer's id (default: customer_id, else guessed)."),
]
DateColumnOpt = Annotated[
    str | None,
    typer.Option("--date", help="Column with the purchase date (default: date, else guessed)."),
]
AmountOpt = Annotated[
    str | None,
    typer.Option(help="Column with the purchase amount (default: amount, else guessed)."),
]
OrderIdOpt = Annotated[
    str | None, typer.Option(help="Column with the order id (without: every row is one).")
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(help="The date to value customers at, YYYY-MM-DD (default: after the last one)."),
]

CLV_FILE = "clv.parquet"
STORE_FILE = "custval.duckdb"
MODELS_DIR = "models"


# a Typer command takes one parameter per flag
@friendly
def quickstart(
    transactions: TransactionsOpt,
    customers: CustomersOpt = None,
    out_dir: OutDirOpt = Path("quickstart-output"),
    customer_id: CustomerIdOpt = None,
    date_col: DateColumnOpt = None,
    amount: AmountOpt = None,
    order_id: OrderIdOpt = None,
    as_of: AsOfOpt = None,
    delimiter: DelimiterOpt = None,
    decimal: DecimalOpt = None,
    encoding: EncodingOpt = None,
    no_header: NoHeaderOpt = False,
    names: NamesOpt = None,
    date_format: DateFormatOpt = None,
    seed: SeedOpt = 0,
    report: ReportOpt = None,
) -> None:
    """Everything from one transactions file, in one command.

    Reads and cleans the purchases; values every customer (the purchase models fitted on the
    history before a holdout, judged on it and compared; CLV over the next year at 10% a year
    with 90% intervals, and P(alive)); trains the high/low value class (high: the top 20% of
    spend over the next period) with a reason for every customer; segments the customers and
    names the segments; and scores them all into a DuckDB store with the BI views.

    The output folder then holds a project file (custval.toml) that every other command takes
    with -c: score again, serve the predictions over HTTP, export for BI tools. The holdout
    and the label period are a third and a half of the history, at most 26 and 52 weeks.
    """
    from custval import flows
    from custval.flows.quickstart import PROJECT_FILE, periods, project_toml

    _check_out_dir(out_dir)
    check_report(report)
    opts = file_options(delimiter, decimal, encoding, no_header, names, date_format)
    given = {"customer_id": customer_id, "timestamp": date_col, "amount": amount}
    out.rule("1. reading and cleaning the purchases")
    # the sources do not depend on the as-of date: prepare once, then date the project
    with steps(4) as advance:
        advance("reading the first rows")
        reading = _Reading(transactions, customers, out_dir, opts, given, order_id)
        prepared = flows.prepare(reading.project(date.today()), progress=advance)
    when = periods(prepared, parse_date(as_of) if as_of else None)
    data = reading.data(when.as_of)
    project = _load(data, out_dir)
    _print_reading(prepared, when, reading.guess.notes)
    out.rule("2. customer lifetime value: purchase models fitted, judged on a holdout, compared")
    valued = _clv(prepared, when, out_dir)
    out.rule("3. high/low value class: candidates compared, a reason for every customer")
    trained = _value(project, prepared, when, out_dir, seed)
    out.rule("4. segments: profiled and named")
    with steps(2) as advance:
        advance("the features and CLV to segment on")
        table = flows.segment_features(project, prepared)
        advance("clustering and naming")
        segmented = flows.segment_table(table, seed=seed)
    print_segments(segmented)
    flows.store_segments(segmented, str(out_dir / STORE_FILE), project.as_of)
    out.rule("5. every customer scored into the store")
    with steps(9) as advance:
        run = flows.score(
            project,
            store_url=out_dir / STORE_FILE,
            models_dir=out_dir / MODELS_DIR,
            prepared=prepared,
            progress=advance,
        )
    print_scored_run(out_dir / STORE_FILE, run)
    config = out_dir / PROJECT_FILE
    config.write_text(project_toml(data), encoding="utf-8")
    _report(report, out_dir, valued, trained, segmented)
    out.rule("done")
    _print_done(out_dir, config, run, trained)


class _Reading:
    """The project the flags describe, its columns guessed where the flags are silent."""

    def __init__(
        self,
        transactions: Path,
        customers: Path | None,
        out_dir: Path,
        opts: FileOptions,
        given: dict[str, str | None],
        order_id: str | None,
    ) -> None:
        from custval.flows.quickstart import guess_columns, read_sample

        self.transactions, self.customers, self.out_dir = transactions, customers, out_dir
        self.opts, self.order_id = opts, order_id
        self.csv = opts.csv().model_dump(exclude_defaults=True)
        self.guess = guess_columns(read_sample(self.project(date.today(), given={})), given)

    def data(self, at: date, given: dict[str, str] | None = None) -> dict[str, Any]:
        from custval.flows.quickstart import quickstart_project

        # the raw sample is read before any guess, under the file's own names
        columns = dict(self.guess.columns if given is None else given)
        date_format = self.opts.date_format
        if given is None:
            date_format = date_format or self.guess.date_format
        if self.order_id:
            columns["order_id"] = self.order_id
        return quickstart_project(
            self.transactions,
            columns=columns,
            customers=self.customers,
            customer_columns={"customer_id": columns.get("customer_id", "customer_id")},
            csv=self.csv,
            date_format=date_format,
            out_dir=self.out_dir,
            as_of=at,
        )

    def project(self, at: date, given: dict[str, str] | None = None) -> Project:
        return _load(self.data(at, given), self.out_dir)


def _load(data: dict[str, Any], out_dir: Path) -> Project:
    from custval.flows.quickstart import load_quickstart

    return load_quickstart(data, out_dir)


def _check_out_dir(out_dir: Path) -> None:
    from custval.errors import CustvalError

    if out_dir.exists() and not out_dir.is_dir():
        raise CustvalError(f"--out '{out_dir}' is a file", hint="Name a folder for everything")
    out_dir.mkdir(parents=True, exist_ok=True)


def _print_reading(prepared: Any, when: Periods, guessed: list[str]) -> None:
    tx = prepared.tables["transactions"]
    customers = tx.customer_id.nunique().execute()
    rows_in = sum(prepared.rows_in.values())
    out.print(
        f"{rows_in:,} rows read, {tx.count().execute():,} purchases kept, from "
        f"{customers:,} customers, {when.first} to {when.as_of - timedelta(days=1)} "
        f"({when.weeks:.0f} weeks); customers are valued as of {when.as_of}"
    )
    if guessed:
        out.print(f"columns taken by their names and values: {', '.join(guessed)}")
    print_rules(prepared)


def _clv(prepared: Any, when: Periods, out_dir: Path) -> Any:
    from custval import flows
    from custval.flows.customer_base import discount_per_unit

    # the purchase model is chosen as everywhere: the lowest error on the holdout
    model = "auto"
    with steps(1) as advance:
        advance("fitting and comparing the purchase models")
        result = flows.clv(
            prepared,
            calibration_end=when.calibration_end,
            holdout_end=when.as_of,
            model=model,
            horizon=52,
            discount=discount_per_unit(0.10, "weeks"),
            compare=True,
        )
    path = out_dir / CLV_FILE
    write_table(result.predictions, path)
    out.print(
        f"fitted on the purchases before {when.calibration_end}, judged on the "
        f"{when.holdout_weeks} weeks to {when.as_of}; CLV over the next 52 weeks at 10% a year"
    )
    print_clv(result, clv_summary(result, model, path), model, 52, "weeks", None)
    return result


def _value(project: Project, prepared: Any, when: Periods, out_dir: Path, seed: int) -> Any:
    from custval import flows

    with steps(3) as advance:
        trained = flows.train_value(
            project,
            prepared=prepared,
            horizon_weeks=when.label_weeks,
            out_dir=out_dir / MODELS_DIR,
            seed=seed,
            progress=advance,
        )
    out.print(
        f"high value: the top 20% of spend in the {when.label_weeks} weeks after "
        f"{trained.cutoff} ({trained.y.sum():,.0f} of {trained.y.size:,} customers); features "
        "from before it"
    )
    clf = trained.clf
    cli_value.print_leaderboard(clf.leaderboard_, clf.chosen_, "5-fold cross-validation")
    cli_value.print_insights(trained.importance, trained.profile, trained.catalogue)
    return trained


def _report(path: Path | None, out_dir: Path, valued: Any, trained: Any, segmented: Any) -> None:
    """--report: the scored run's overview, CLV, the value class and the segments."""
    if path is None:
        return
    from custval.flows import report
    from custval.flows.customer_base import discount_per_unit
    from custval.flows.dashboard import overview_page
    from custval.store import open_store

    with open_store(out_dir / STORE_FILE, read_only=True) as store:
        sections = [overview_page(store)]
    sections += report.clv_sections(
        valued, horizon=52, discount=discount_per_unit(0.10, "weeks"), time_unit="weeks"
    )
    sections += report.value_sections(
        trained.clf,
        importance=trained.importance,
        profile=trained.profile,
        catalogue=trained.catalogue,
    )
    sections += report.segment_sections(segmented.profiles)
    write_html_report(path, "Quickstart", sections, f"from {out_dir}")


def _print_done(out_dir: Path, config: Path, run: Any, trained: Any) -> None:
    table = Table(title="what the quickstart wrote")
    table.add_column("file")
    table.add_column("what it holds")
    for path, what in (
        (config, "the project file: every command takes it with -c"),
        (out_dir / CLV_FILE, "per customer: P(alive), purchases and CLV with 90% intervals"),
        (trained.folder, f"the value class model ({trained.clf.chosen_})"),
        (
            out_dir / STORE_FILE,
            f"run {run.run_id}: {run.customers:,} customers, {run.high:,} high value; "
            "segments; the BI views",
        ),
    ):
        table.add_row(cell(str(path)), what)
    out.print(table)
    exe = invoked_as()
    out.rule("next")
    for command, what in (
        (f"{exe} score -c {config}", "score again when the data has grown: a new run"),
        (f"{exe} api-key new --name me -c {config}", "a key for the service, kept hashed"),
        (f"{exe} serve -c {config}", "predictions and reasons over HTTP"),
        (f"{exe} export -c {config} -o {out_dir / 'export'}", "the latest run as files"),
    ):
        # unwrapped: a command broken over two lines would not paste
        out.print(f"{escape(command)}\n    [dim]# {what}[/dim]", soft_wrap=True)
