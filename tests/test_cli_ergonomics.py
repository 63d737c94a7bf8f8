"""The command line as people meet it: --quiet and --verbose on every command, progress on
stderr for long commands, CUSTVAL_LOG_LEVEL, every environment variable documented, flags shown
as flags, the commands grouped by task, and -V."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from custval.cli.main import app
from custval.config import load_project
from custval.version import __version__
from tests.factories import Companies, run

ROOT = Path(__file__).resolve().parents[1]
#: `custval --help`'s panels, in order, and their commands
PANELS = {
    "Start": ("demo", "quickstart", "init", "synth"),
    "Data and features": ("validate", "features"),
    "Customer value": ("clv", "evaluate", "train", "predict"),
    "Segments": ("segment",),
    "Actions": ("target", "forecast"),
    "Store and service": ("score", "export", "report", "serve", "dashboard", "api-key"),
    "Monitoring": ("monitor", "retrain", "models"),
    "Real time": ("ingest", "rebuild"),
}
STEP = re.compile(r"^\[(\d+)/(\d+)\] (.+) \.\.\. (\d+\.\d) s$")


def _commands() -> dict[str, click.Command]:
    """Every command the app registers, by its full name ('api-key new')."""
    found: dict[str, click.Command] = {}

    # Typer's groups are click commands with sub-commands, not click.Group
    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = command

    walk(typer.main.get_command(app), "")
    return found


def _help(*args: str) -> str:
    done = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"}, prog_name="custval")
    assert done.exit_code == 0, done.output
    return done.output


def _row(text: str, flag: str) -> str:
    """The help line of ``flag``: the line of its panel's table that starts with it."""
    rows = [line for line in text.splitlines() if re.match(rf"│\s+{flag}(?![\w-])", line)]
    assert rows, (flag, text)
    return rows[0]


def test_every_command_takes_quiet_and_verbose() -> None:
    commands = _commands()
    # the commands of issue 16 at least; new ones are checked as they come
    assert {
        "init",
        "synth",
        "validate",
        "features",
        "clv",
        "demo",
        "segment",
        "serve",
        "dashboard",
        "score",
        "export",
        "evaluate",
        "train",
        "predict",
        "api-key new",
    } <= set(commands)
    for name in commands:
        text = _help(*name.split())
        assert "─ Output ─" in text, name
        assert re.search(r"--quiet\s+-q\s", _row(text, "--quiet")), name
        assert re.search(r"--verbose\s+-v\s", _row(text, "--verbose")), name


def test_flags_are_shown_without_a_type() -> None:
    clv = _help("clv")
    # a flag takes no value: nothing between its name and its help
    assert re.search(r"--compare\s{2,}Also fit BG/NBD", _row(clv, "--compare"))
    assert re.search(r"--json\s{2,}Print a JSON summary", _row(clv, "--json"))
    # an option that takes a value keeps its type
    assert "<float>" in _row(clv, "--horizon")
    assert "<int range>" in _row(clv, "--draws")
    for name in _commands():
        assert "<bool>" not in _help(*name.split()), name
    assert "<bool>" not in _help()


def test_help_groups_the_commands_by_task() -> None:
    text = _help()
    assert "─ Commands ─" not in text  # every command is in a task's panel
    starts = {panel: text.index(f"─ {panel} ─") for panel in PANELS}
    assert list(starts.values()) == sorted(starts.values())  # in the order of PANELS
    ends = [*list(starts.values())[1:], len(text)]
    listed = [name for name in _commands() if " " not in name] + ["api-key"]
    expected = {name: panel for panel, names in PANELS.items() for name in names}
    for (panel, start), end in zip(starts.items(), ends, strict=True):
        block = text[start:end]
        inside = {n for n in listed if re.search(rf"│ {re.escape(n)}\s", block)}
        assert inside == {n for n in listed if expected.get(n) == panel}, panel
    assert {n for n in listed if n not in expected} == set()


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str, tmp_path: Path) -> None:
    done = run(flag, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"custval {__version__}"


def test_every_environment_variable_is_documented() -> None:
    read = set()
    for path in (ROOT / "src").rglob("*.py"):
        read |= set(re.findall(r"\bCUSTVAL_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert {"CUSTVAL_DEBUG", "CUSTVAL_PROGRESS", "CUSTVAL_THREADS", "CUSTVAL_LOG_LEVEL"} <= read
    page = (ROOT / "docs" / "environment.md").read_text()
    # one table row each: | `NAME` | what it does | default | example |
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", page, re.M)}
    for name in read - {"CUSTVAL_PG_PASSWORD"}:
        assert name in rows, f"{name} is read in src/ but not documented in docs/environment.md"
        assert rows[name].count(" | ") >= 3, rows[name]
    # the template's example secret is documented with ${VAR}
    assert "CUSTVAL_PG_PASSWORD" in page
    # nothing documented that no code reads
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))
    assert {n for n in rows if n not in read and n not in tests} == set()
    assert "(docs/environment.md)" in (ROOT / "README.md").read_text()


def test_log_level_and_verbose_set_the_log(tmp_path: Path) -> None:
    debug_line = re.compile(r"^\d\d:\d\d:\d\d DEBUG custval\.cli: custval init ", re.M)
    plain = run("init", "-o", str(tmp_path / "a.toml"), cwd=tmp_path)
    assert plain.returncode == 0 and not debug_line.search(plain.stderr)
    verbose = run("init", "-o", str(tmp_path / "b.toml"), "--verbose", cwd=tmp_path)
    assert verbose.returncode == 0 and debug_line.search(verbose.stderr), verbose.stderr
    env = {"CUSTVAL_LOG_LEVEL": "debug"}
    by_env = run("init", "-o", str(tmp_path / "c.toml"), cwd=tmp_path, env=env)
    assert by_env.returncode == 0 and debug_line.search(by_env.stderr), by_env.stderr
    # --quiet wins over the variable: only errors
    quiet = run("init", "-o", str(tmp_path / "d.toml"), "-q", cwd=tmp_path, env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""
    bad = run("init", "-o", str(tmp_path / "e.toml"), cwd=tmp_path, env={"CUSTVAL_LOG_LEVEL": "x"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "CUSTVAL_LOG_LEVEL 'X' is not a log level" in bad.stderr
    assert "DEBUG, INFO, WARNING, ERROR" in bad.stderr
    assert not (tmp_path / "e.toml").exists()
    both = run("init", "-o", str(tmp_path / "f.toml"), "-q", "-v", cwd=tmp_path)
    assert both.returncode == 2 and "--quiet and --verbose contradict" in both.stderr


def _steps(stderr: str) -> list[tuple[int, int, str, float]]:
    lines = [STEP.match(line) for line in stderr.splitlines()]
    return [(int(m[1]), int(m[2]), m[3], float(m[4])) for m in lines if m]


def _check_steps(stderr: str, expected: list[str]) -> None:
    """One line per step, numbered 1..n of n, with the steps named in ``expected`` in order."""
    steps = _steps(stderr)
    assert [s[0] for s in steps] == list(range(1, len(steps) + 1)), stderr
    assert steps[-1][1] == len(steps), stderr
    names = [s[2] for s in steps]
    assert [n for n in names if n in expected] == expected, names
    assert all(s[3] >= 0 for s in steps)


def test_train_and_score_show_their_steps_unless_quiet(
    companies: Companies, tmp_path: Path
) -> None:
    company = companies.copy(tmp_path / "co", 800, seed=3, fmt="csv")
    config = str(company.config_path)
    trained = run("train", "-c", config, "--models", "logistic", "--folds", "3", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    prepare = [f"reading {s}" for s in ("crm", "transactions", "web")]
    _check_steps(
        trained.stderr,
        [*prepare, "cross-validating 1 candidates on 3 folds"],
    )
    # every source read, validated and (but the id map) cleaned, the id map linked; then the
    # features and label, the candidates, the bundle
    n = len(load_project(company.config_path).sources)
    preparing = n + n + (n - 1) + 1
    assert len(_steps(trained.stderr)) == preparing + 3

    scored = run("score", "-c", config, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    _check_steps(
        scored.stderr,
        [
            *prepare,
            "computing the features",
            "CLV by btyd",
            "the customers' segments",
            "the dashboard's summaries",
        ],
    )
    assert len(_steps(scored.stderr)) == preparing + 7

    quiet = run("score", "-c", config, "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    # the result is the same either way: the top 10 table and the run line
    assert "top 10 high-value customers" in quiet.stdout
    assert re.search(r"^run \w+: 800 customers", quiet.stdout, re.M)
    # CUSTVAL_PROGRESS=off silences the steps of every command (validate: the cheapest)
    shown = run("validate", "-c", config, cwd=tmp_path)
    assert shown.returncode == 0 and len(_steps(shown.stderr)) >= 6, shown.stderr
    off = run("validate", "-c", config, cwd=tmp_path, env={"CUSTVAL_PROGRESS": "off"})
    assert off.returncode == 0 and _steps(off.stderr) == [], off.stderr


def test_evaluate_shows_its_steps(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=n)
    table = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "tenure": rng.integers(1, 60, n),
            "spend": np.round(50 + 10 * x, 2),
            "churn": np.where(x + rng.normal(size=n) > 0.8, "yes", "no"),
        }
    )
    table.to_csv(tmp_path / "t.csv", index=False)
    args = ("evaluate", "-d", "t.csv", "--label", "churn", "--models", "logistic", "--folds", "3")
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _check_steps(done.stderr, ["reading t.csv", "cross-validating the candidates on 3 folds"])
    assert len(_steps(done.stderr)) == 2
    verbose = run(*args, "-v", cwd=tmp_path)
    assert len(_steps(verbose.stderr)) == 2
    assert "DEBUG custval.cli: custval evaluate" in verbose.stderr
    quiet = run(*args, "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "chosen: logistic" in quiet.stdout


def test_a_bad_thread_count_is_a_clear_error(companies: Companies, tmp_path: Path) -> None:
    company = companies.shared(1000, seed=5, fmt="csv")
    args = (
        "clv",
        "-t",
        str(company.files["transactions"]),
        "--customer-id",
        "account_id",
        "--date",
        "ts",
        "--calibration-end",
        "2025-07-01",
        "--model",
        "bgnbd",
    )
    bad = run(*args, "-o", "a.parquet", cwd=tmp_path, env={"CUSTVAL_THREADS": "abc"})
    assert bad.returncode == 2, bad.stderr
    assert "CUSTVAL_THREADS='abc' is not a whole number of threads" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "a.parquet").exists()
    good = run(*args, "-o", "b.parquet", cwd=tmp_path, env={"CUSTVAL_THREADS": "1"})
    assert good.returncode == 0, good.stderr
