"""``custval target``: whom to contact with a retention offer, within a budget.

It registers on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from custval.cli.common import ConfigOpt, JsonSummaryOpt, check_output, friendly, load, out, steps
from custval.errors import CustvalError

# custval's own modules are imported inside the commands: `custval --help` stays fast


@friendly
def target(
    budget: Annotated[
        float,
        typer.Option(help="What the contacts may cost in all, in the data's currency.", min=0),
    ],
    config: ConfigOpt = Path("custval.toml"),
    cost: Annotated[
        float | None,
        typer.Option(
            help="The cost of one contact (default: the campaign log's mean cost, else 0).",
            min=0,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Where runs are kept: a DuckDB file or a postgresql:// URL (default: the "
            "project's store setting)."
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Also write the list to this .csv or .parquet file."),
    ] = None,
    as_json: JsonSummaryOpt = False,
) -> None:
    """Choose whom to contact with a retention offer, within --budget, and store the list.

    With a campaign log (a source of kind treatments: who was contacted, who was held out at
    random, who stayed), custval learns each customer's uplift, the change the offer makes to
    their chance of staying (T- and X-learner, the better by held-out Qini), and contacts the
    customers with the highest uplift x CLV - cost above 0, until the budget is spent
    (Lemmens & Gupta 2020). Without one, it ranks by CLV x P(churn): a heuristic, said to be
    one, with the control group the next campaign should hold out so that uplift can be learnt.
    The list is stored as a run of kind target (BI view v1_latest_targeting).
    """
    from custval import flows

    if out_path is not None:
        check_output(out_path)
    if budget <= 0:
        raise CustvalError("--budget must be above 0", hint="e.g. --budget 5000")
    project = load(config)
    with steps(3 * len(project.sources) + 4) as advance:
        result = flows.target_run(
            project,
            store_url=store or project.store,
            budget=budget,
            cost=cost,
            progress=advance,
        )
    listed = result.targeting.targets
    if out_path is not None:
        import pyarrow as pa

        from custval.cli.common import write_table

        write_table(pa.Table.from_pandas(listed.table, preserve_index=False), out_path)
    if as_json:
        out.print_json(data=_summary(result))
        return
    _print(result)


def _summary(result: Any) -> dict[str, Any]:
    listed = result.targeting.targets
    fit = result.targeting.uplift
    return {
        "run_id": result.run_id,
        "method": listed.method,
        "budget": listed.budget,
        "spent": listed.spent,
        "contacted": listed.contacted,
        "expected_profit": listed.expected_profit,
        "note": listed.note,
        "control_group": listed.control_group,
        "uplift_model": None
        if fit is None
        else {
            "chosen": fit.chosen,
            "campaign": fit.campaign,
            "customers": fit.customers,
            "treated_share": fit.treated_share,
            "heldout_qini_area": fit.qini,
        },
    }


def _print(result: Any) -> None:
    listed = result.targeting.targets
    top = listed.table[listed.table["contact"]].head(10)
    title = f"first {len(top)} of {listed.contacted:,} customers to contact ({listed.method})"
    table = Table(title=title)
    # (heading, column, format): the list has an uplift or a P(churn), as its method says
    shown = [
        ("customer", "customer_id", ""),
        ("uplift", "uplift", "+.3f"),
        ("value", "value", ",.0f"),
        ("cost", "cost", ",.2f"),
        ("expected profit", "expected_profit", ",.0f"),
        ("P(churn)", "p_churn", ".2f"),
    ]
    shown = [s for s in shown if s[1] not in top or top[s[1]].notna().any()]
    for heading, _, _ in shown:
        table.add_column(heading, justify="left" if heading == "customer" else "right")
    for row in top.to_dict("records"):
        table.add_row(*(_num(row[c], f) if f else str(row[c]) for _, c, f in shown))
    out.print(table)
    fit = result.targeting.uplift
    if fit is not None:
        out.print(
            f"uplift by the {fit.chosen} from campaign {fit.campaign} ({fit.customers:,} "
            f"customers, {fit.treated_share:.0%} treated, sent {fit.sent})"
        )
    out.print(listed.note)
    out.print(f"run {result.run_id} stored (view v1_latest_targeting)")


def _num(value: Any, spec: str) -> str:
    return "" if value is None or value != value else format(value, spec)
