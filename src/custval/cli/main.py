"""The ``custval`` command line: the Typer app, with each command group's module registered on it.

Commands live in one module per group (:mod:`.project`, :mod:`.clv`, :mod:`.value`,
:mod:`.segment`, :mod:`.store`, :mod:`.serve`, :mod:`.demo`); what they share is in
:mod:`.common`. Exit codes: 0 success, 1 data that fails validation, 2 bad input.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from custval.cli import clv, demo, project, segment, serve, store, value
from custval.cli.common import out
from custval.version import __version__

# the command modules load fast: custval's own modules are imported inside the commands, so
# that `custval --help` and a mistyped flag answer without loading pandas, Ibis and the models.

app = typer.Typer(
    name="custval",
    help=(
        "custval turns raw customer data (files, databases, HTTP APIs) into a clean customer "
        "360 table and features for customer value.\n\n"
        "Start with 'custval demo' to see the whole path on generated data, or 'custval init' "
        "to write a project file for your own data, then 'custval validate' and "
        "'custval features'. 'custval clv' gives customer lifetime values from one "
        "transactions file."
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        out.print(f"custval {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """custval: customer value from raw customer data."""


# in the order `custval --help` lists them
for command in (
    project.init,
    project.synth,
    project.validate,
    project.features,
    clv.clv,
    demo.demo,
    segment.segment,
):
    app.command()(command)

keys_app = typer.Typer(help="API keys of the REST service: made once, shown once, kept hashed.")
keys_app.command("new")(serve.new_api_key)
app.add_typer(keys_app, name="api-key")

for command in (serve.serve, store.score, store.export, value.evaluate, value.train, value.predict):
    app.command()(command)


def main() -> None:
    """Entry point of ``python -m custval``."""
    app(prog_name="custval")
    sys.exit(0)
