"""constraints.txt, the lock every install goes through, covers every dependency we declare."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement ("ibis-framework[duckdb]>=12")."""
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _requirements(project: dict, extra: str) -> list[str]:
    """The requirements of an extra, with those of the extras it takes in (custval[spark])."""
    found = []
    for requirement in project["optional-dependencies"][extra]:
        own = re.fullmatch(rf"{project['name']}\[(\w+)\]", requirement)
        found += _requirements(project, own.group(1)) if own else [requirement]
    return found


def test_every_declared_dependency_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"] + _requirements(project, "test")}
    assert {"pyspark", "pysail"} <= declared  # the Spark extra, taken in by the test extra
    locked = {
        _name(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    }
    assert sorted(declared - locked) == [], "run `make lock`, then `make test`"
