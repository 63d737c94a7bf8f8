"""``custval models list|show|promote|rollback``: the model registry of a project
(:mod:`custval.store.registry`).

They register as a command group on the main Typer app of :mod:`custval.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from custval.cli.common import JsonSummaryOpt, ModelsFolderOpt, friendly, load, out

# custval's own modules are imported inside the commands: `custval --help` and a mistyped
# flag answer without loading pandas, Ibis and the models.

RegistryConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="The project file: its models/ folder and its store."),
]
ReasonOpt = Annotated[
    str, typer.Option(help="Why, in words: kept in the registry's log and the store.")
]


def _registry(config: Path, models_dir: Path | None, *, with_store: bool = False) -> Any:
    from custval.store.registry import ModelRegistry

    store = None
    if config.exists():
        project = load(config)
        models_dir = models_dir or project.root / "models"
        store = project.store if with_store else None
    if models_dir is None:
        from custval.errors import CustvalError

        raise CustvalError(
            f"there is no project file '{config}' to find the models folder from",
            hint="Give -c PROJECT or --models DIR",
        )
    return ModelRegistry(models_dir, store_url=store)


@friendly
def models_list(
    config: RegistryConfigOpt = Path("custval.toml"),
    models_dir: ModelsFolderOpt = None,
    as_json: JsonSummaryOpt = False,
) -> None:
    """Every model version, oldest first: on what it was trained (rows, the date of its
    features), how well (cross-validated ROC AUC, and forward in time: trained a label
    horizon earlier and scored on a period it had not seen), by which code (custval's version
    and a hash of its source), and which is the champion (used by score and serve) and the
    challenger."""
    registry = _registry(config, models_dir)
    versions, aliases = registry.versions(), registry.aliases()
    named = {v: a for a, v in aliases.items()}
    if as_json:
        out.print_json(data={"aliases": aliases, "versions": [{**vars(v)} for v in versions]})
        return
    table = Table(
        title=f"model versions in {_shown(registry.root)} (ROC AUC cross-validated, and "
        "forward: trained a horizon earlier; code: custval's version + source hash)"
    )
    for c in ("version", "alias", "model", "rows", "as of", "ROC AUC", "forward", "code"):
        right = c in ("rows", "ROC AUC", "forward")
        table.add_column(c, justify="right" if right else "left", no_wrap=c == "version")
    for v in versions:
        forward = (v.label.get("time_split") or {}).get("roc_auc")
        table.add_row(
            v.version,
            named.get(v.version, ""),
            str(v.model),
            f"{v.data.get('rows', 0):,}",
            str(v.training.get("features_as_of") or v.label.get("cutoff") or "-"),
            _num(v.metrics.get("roc_auc")),
            _num(forward),
            f"{v.code.get('custval', '?')}+{str(v.code.get('sha256', ''))[:7]}",
        )
    out.print(table)
    if not versions:
        out.print("no model yet: 'custval train -c PROJECT' trains the first, the champion")


@friendly
def models_show(
    version: Annotated[str, typer.Argument(help="A version, champion, challenger or latest.")],
    config: RegistryConfigOpt = Path("custval.toml"),
    models_dir: ModelsFolderOpt = None,
) -> None:
    """One version in full: its data fingerprint, training window, metrics, code and training
    run, its files checked against their hashes, and the registry's decisions about it."""
    import json

    from custval.store.bundles import load_bundle

    registry = _registry(config, models_dir)
    name = registry.resolve(version)
    clf = load_bundle(registry.root / name)  # the hashes checked
    manifest = clf.manifest_
    aliases = [a for a, v in registry.aliases().items() if v == name]
    shown = {
        "version": name,
        "aliases": aliases,
        "created_at": manifest.get("created_at"),
        "model": manifest.get("model"),
        "data": manifest.get("data"),
        "training": manifest.get("training"),
        "label": manifest.get("label"),
        "metrics": manifest.get("metrics"),
        "code": manifest.get("code") or {"custval": manifest.get("custval_version")},
        "training_run": manifest.get("training_run"),
        "files_checked": True,
        "decisions": [d for d in registry.history() if d.get("version") == name],
    }
    out.print_json(json.dumps(shown, default=str))


@friendly
def models_promote(
    version: Annotated[str, typer.Argument(help="The version to promote, or 'challenger'.")],
    config: RegistryConfigOpt = Path("custval.toml"),
    models_dir: ModelsFolderOpt = None,
    alias: Annotated[
        str, typer.Option(help="The alias to point at it: champion or challenger.")
    ] = "champion",
    reason: ReasonOpt = "promoted by hand",
) -> None:
    """Point an alias (the champion by default) at a version. The version's files are checked
    first; a running service switches to a new champion within a second or two, between
    requests (none is dropped); the decision is logged (registry.json and the store's
    model_decisions). Refused while another promotion runs."""
    registry = _registry(config, models_dir, with_store=True)
    name = registry.resolve(version)
    decision = registry.promote(name, alias=alias, reason=reason, forced=True)
    was = decision["previous"] or "none"
    out.print(f"{alias}: {name} (was {was})")


@friendly
def models_rollback(
    config: RegistryConfigOpt = Path("custval.toml"),
    models_dir: ModelsFolderOpt = None,
    reason: ReasonOpt = "rolled back by hand",
) -> None:
    """Make the version the champion replaced the champion again; logged, and followed by a
    running service like a promotion."""
    registry = _registry(config, models_dir, with_store=True)
    decision = registry.rollback(reason=reason)
    out.print(f"champion: {decision['version']} (was {decision['previous']})")


def _shown(path: Path) -> str:
    """A path as the user gave it: relative to the working folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"
