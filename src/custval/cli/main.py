"""The ``custval`` command line: the Typer app, with each command group's module registered on it.

Commands live in one module per group (:mod:`.project`, :mod:`.clv`, :mod:`.value`,
:mod:`.segment`, :mod:`.store`, :mod:`.serve`, :mod:`.demo`); what they share is in
:mod:`.common`. Exit codes: 0 success, 1 data that fails validation, 2 bad input.
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated

import typer
from typer.core import TyperCommand
from typer.models import CommandInfo

from custval.cli import (
    actions,
    clv,
    demo,
    forecast,
    monitoring,
    project,
    quickstart,
    realtime,
    registry,
    segment,
    serve,
    store,
    value,
)
from custval.cli.common import FlagsCommand, FlagsGroup, out
from custval.version import __version__

# the command modules load fast: custval's own modules are imported inside the commands, so
# that `custval --help` and a mistyped flag answer without loading pandas, Ibis and the models.

app = typer.Typer(
    name="custval",
    help=(
        "custval turns raw customer data (files, databases, HTTP APIs) into a clean customer "
        "360 table and features for customer value.\n\n"
        "Start with 'custval demo' to see the whole path on generated data, or "
        "'custval quickstart -t purchases.csv' to take your own purchases all the way (CLV, "
        "value class, segments, a store). For several sources, 'custval init' writes a "
        "project file, then 'custval validate' and 'custval features'."
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    cls=FlagsGroup,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"custval {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."
        ),
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
    quickstart.quickstart,
    segment.segment,
):
    app.command()(command)

keys_app = typer.Typer(
    help="API keys of the REST service: made once, shown once, kept hashed.", cls=FlagsGroup
)
keys_app.command("new")(serve.new_api_key)
keys_app.command("list")(serve.list_api_keys)
keys_app.command("revoke")(serve.revoke_api_key)
app.add_typer(keys_app, name="api-key", rich_help_panel="Store and service")

models_app = typer.Typer(
    help="The model registry: versions, the champion (used by score and serve) and the "
    "challenger, promotions and rollbacks.",
    cls=FlagsGroup,
)
models_app.command("list")(registry.models_list)
models_app.command("show")(registry.models_show)
models_app.command("promote")(registry.models_promote)
models_app.command("rollback")(registry.models_rollback)
app.add_typer(models_app, name="models", rich_help_panel="Monitoring")

for command in (
    serve.serve,
    serve.dashboard,
    store.score,
    store.export,
    store.report,
    value.evaluate,
    value.train,
    value.predict,
    actions.target,
    forecast.forecast,
    monitoring.monitor,
    monitoring.retrain,
    realtime.ingest,
    realtime.rebuild,
):
    app.command()(command)

# `custval --help` groups the commands by task: these panels, each listing its commands in order
PANELS = {
    "Start": ("demo", "quickstart", "init", "synth"),
    "Data and features": ("validate", "features"),
    "Customer value": ("clv", "evaluate", "train", "predict"),
    "Segments": ("segment",),
    "Actions": ("target", "forecast"),
    "Store and service": ("score", "export", "report", "serve", "dashboard"),
    "Monitoring": ("monitor", "retrain"),
    "Real time": ("ingest", "rebuild"),
}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}
_ORDER = {name: n for n, name in enumerate(_PANEL_OF)}


def _finish(typer_app: typer.Typer) -> None:
    """Every command in its task's panel, with its flags shown as flags (:class:`FlagsCommand`)."""
    for info in typer_app.registered_commands:
        # Typer's default class, given when a command names none, shows flags with a type
        if info.cls in (None, TyperCommand):
            info.cls = FlagsCommand
        if typer_app is app:
            info.rich_help_panel = info.rich_help_panel or _PANEL_OF.get(_name(info))
        # the list of commands shows the docstring's first paragraph: as one line, not with the
        # source's line breaks
        if info.short_help is None and info.callback is not None and info.callback.__doc__:
            first = inspect.cleandoc(info.callback.__doc__).split("\n\n")[0]
            info.short_help = " ".join(first.split())
    if typer_app is app:
        typer_app.registered_commands.sort(key=lambda info: _ORDER.get(_name(info), len(_ORDER)))
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _finish(group.typer_instance)


def _name(info: CommandInfo) -> str:
    """The command's name, as Typer derives it from the function's when none is given."""
    return info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")


_finish(app)


def main() -> None:
    """Entry point of ``python -m custval``."""
    app(prog_name="custval")
    sys.exit(0)
