"""Evidently's side of the drift benchmark (bench/monitor.py): Evidently's data drift report, run
with its default settings in its own virtual environment, never as a dependency of custval.

Evidently 0.7.23 fails to import with pandas 3.1 (custval's), so it lives in
``bench/.data/venv-evidently``, created on first use from ``bench/requirements-evidently.txt``
(``python3 -m venv``, then ``pip install -r``; a stamp file holding the requirements' text says
when it is up to date), as bench/forecast_competitors.py does for statsforecast and Prophet.
``run_evidently`` writes the reference and each current table to Parquet in a temporary folder
and runs this same file with the venv's interpreter (``python bench/monitor_evidently.py child
ARGS.json``); the child imports only its venv's packages and the standard library and writes
Evidently's per-column verdicts and its seconds to JSON. bench/monitor.py imports
``run_evidently`` under custval's own interpreter, which never imports evidently.

What Evidently is run with, and why (what a user of its drift report gets)
-------------------------------------------------------------------------
Evidently (0.7.23, the 0.7 API): the columns are declared, ``DataDefinition(numerical_columns=
[...], categorical_columns=[...])`` (every column not named categorical is numerical), so that
Evidently's type inference does not decide which test a column gets; each table is wrapped as
``Dataset.from_pandas(frame, data_definition=definition)`` and each current table is checked by
``Report([DataDriftPreset()], include_tests=True).run(current, reference)``, the preset with all
its defaults (no method, no threshold, ``drift_share`` 0.5). ``include_tests=True`` only makes
the report carry its per-column verdicts ("Value Drift for column X": FAIL when drift is
detected), which ``Snapshot.dict()`` exports beside each ``ValueDrift`` metric (its column, the
method and threshold Evidently resolved, and the score); the tests change no computation.

Evidently's automatic choice of test (``_get_default_stattest`` in
``evidently.legacy.calculations.stattests.registry``) depends on the column's declared type, on
the number of rows of the REFERENCE (not the current) and on the number of distinct values of
reference and current together:

* reference of at most 1,000 rows: numerical with more than 5 distinct values, the two-sample
  Kolmogorov-Smirnov test ("K-S p_value"); categorical with more than 2 values, or numerical
  with 3-5, the chi-square test ("chi-square p_value"); 2 values or fewer, the two-proportion
  Z-test ("Z-test p_value"). The score is the p-value, threshold 0.05: drift when p < 0.05
  (K-S: p <= 0.05).
* reference of more than 1,000 rows (every size this benchmark uses, 20,000 and up): numerical
  with more than 5 distinct values, the Wasserstein distance divided by the reference's standard
  deviation ("Wasserstein distance (normed)"), in standard deviations; categorical, and
  numerical with at most 5 distinct values, the Jensen-Shannon distance (natural log) of the two
  frequency tables ("Jensen-Shannon distance"). The score is the distance, threshold 0.1: drift
  when score >= 0.1. The rule does not change with size above 1,000 rows and nothing is
  sampled: the whole columns are compared and a fixed distance, not a p-value, decides, so a
  pure shift of the mean by 0.1 SD or more (whose normed Wasserstein distance is the shift in
  SDs) is flagged whatever the sample size, and a clearly smaller one never, however large.

The dataset-level verdict of the preset (``DriftedColumnsCount``: the share of drifted columns,
dataset drift when it reaches 0.5) is returned as ``drifted_share``; it is computed by Evidently
on its own path (its legacy ``DatasetDriftMetric``) and must agree with the per-column verdicts,
which the child checks. So a run of the preset computes each column's test three times (for
``ValueDrift``, for ``DriftedColumnsCount`` and for the ``DataDriftTable`` widget its render
draws), each with its histograms, and builds the plotly figures of the report: that is what a run
of the preset costs, and so is in its seconds (at 200,000 rows by 40 columns, profiled: about a
quarter of the time in the tests themselves, a fifth in the widgets and figures, the rest in the
repeated distributions, unique counts and Doane bins).

Caveat of the small-data branch (not reached here): Evidently's chi-square takes the reference's
proportions as known (``scipy.stats.chisquare`` of the current counts against them), not as a
sample, so its p-values are smaller than a two-sample test's and it alarms more often than 5% on
two samples of one distribution (e.g. 800 rows of 4 equal categories: p = 0.001 where the
two-sample contingency test gives 0.048).

Seconds: per current table, ``Dataset.from_pandas`` of the current table, the report's run and
the extraction of the results (``Snapshot.dict()``), by ``time.perf_counter``; reading the
Parquet is not timed. Before the first timed run the child runs the same report once, untimed,
on the reference's first 2,000 rows against themselves, so that the lazy imports and first-call
costs of a fresh interpreter (about half a second) fall into ``setup_seconds`` (the child's
imports, the reference's reading and wrapping, and that warm-up) and not into the first run.

Run: ``.venv/bin/python bench/monitor_evidently.py selftest [N]`` for the self-test (N = 20,000
rows by default: 3 standard normal numeric columns, 1 categorical with 4 equally likely values;
current 1 shifts num_0 by 0.5 SD, current 2 is drawn from the reference's distribution); it
creates the environment when it is missing (about 1 GB, about a minute).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competitor_env import venv_python

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
#: rows of the reference the child's untimed warm-up run uses (over 1,000: the large-data tests)
WARMUP_ROWS = 2_000


# ---- the parent side (custval's environment) ------------------------------------------------


def evidently_python() -> Path:
    """The interpreter of ``bench/.data/venv-evidently`` (made on first use)."""
    return venv_python("evidently")


def check_tables(
    reference: dict[str, np.ndarray],
    currents: list[dict[str, np.ndarray]],
    categorical: list[str],
) -> None:
    """Fail early, in the parent, on input the child would misread."""
    names = list(reference)
    if not names:
        raise ValueError("reference has no columns")
    unknown = sorted(set(categorical) - set(names))
    if unknown:
        raise ValueError(f"categorical names columns the reference lacks: {unknown}")
    for i, table in enumerate([reference, *currents]):
        if sorted(table) != sorted(names):
            raise ValueError(f"table {i} (0 = reference) has other columns than the reference")
        sizes = {np.asarray(v).shape for v in table.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"table {i} (0 = reference): columns must be 1-D of one length")
    for name in names:
        if name not in categorical and not np.issubdtype(
            np.asarray(reference[name]).dtype, np.number
        ):
            raise ValueError(f"column {name!r} is not numeric; name it in categorical")


def write_table(table: dict[str, np.ndarray], names: list[str], path: Path) -> None:
    """One table to Parquet, its columns in the reference's order."""
    pd.DataFrame({name: np.asarray(table[name]) for name in names}).to_parquet(path, index=False)


def child_env() -> dict[str, str]:
    """The environment without anything that would let custval's packages leak into the child,
    and with Evidently's usage reporting off (the reports send nothing; its UI and collector
    would)."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(DO_NOT_TRACK="1", EVIDENTLY_DISABLE_TELEMETRY="1")
    return env


def run_evidently(
    reference: dict[str, np.ndarray],
    currents: list[dict[str, np.ndarray]],
    categorical: list[str],
    timeout: float | None = None,
) -> dict[str, Any]:
    """Evidently's data drift report (``DataDriftPreset``, defaults) on each current table
    against the reference, from its own environment.

    ``reference`` and each of ``currents``: column name -> 1-D array, every table with the same
    columns; ``categorical``: the columns Evidently is told are categorical, all others are
    declared numerical. Returns ``{"version": evidently's version, "runs": [...], one per
    current table in order, "setup_seconds", "venv_seconds", "child_seconds", "peak_mib"}``;
    a run is ``{"columns": {name: {"drift": bool, "method": str, "score": float, "threshold":
    float}}, "drifted_share": float, "seconds": float}`` with ``method`` Evidently's name of the
    test it chose (e.g. "Wasserstein distance (normed)"), ``score`` its p-value or distance and
    ``seconds`` the current table's wrapping, the report's run and the results' extraction.
    ``setup_seconds`` is the child's imports, reading of the reference and untimed warm-up run;
    ``venv_seconds`` the parent's making the environment ready (near 0 when it is current);
    ``child_seconds`` the child process's wall time; ``peak_mib`` the child's peak resident
    memory (MiB, its tables included). Raises ``TimeoutError`` when the child runs
    past ``timeout`` seconds (it is then killed) and ``RuntimeError`` with the end of its stderr
    when it fails.
    """
    check_tables(reference, currents, categorical)
    start = time.perf_counter()
    py = evidently_python()
    venv_seconds = time.perf_counter() - start
    names = list(reference)
    with tempfile.TemporaryDirectory(prefix="monitor-evidently-") as tmp:
        folder = Path(tmp)
        write_table(reference, names, folder / "reference.parquet")
        paths = []
        for i, table in enumerate(currents):
            paths.append(folder / f"current-{i}.parquet")
            write_table(table, names, paths[-1])
        args = {
            "reference": str(folder / "reference.parquet"),
            "currents": [str(p) for p in paths],
            "categorical": [c for c in names if c in set(categorical)],
            "out": str(folder / "result.json"),
        }
        (folder / "args.json").write_text(json.dumps(args))
        command = [str(py), str(Path(__file__).resolve()), "child", str(folder / "args.json")]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=child_env()
            )
        except subprocess.TimeoutExpired as err:
            raise TimeoutError(f"evidently did not finish within {timeout} s") from err
        child_seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError("evidently side failed:\n" + done.stderr[-3000:])
        result = json.loads((folder / "result.json").read_text())
    result["venv_seconds"] = venv_seconds
    result["child_seconds"] = child_seconds
    return result


# ---- the child side (Evidently's environment: its packages and the stdlib only) -------------


def status_of(test: dict[str, Any]) -> str:
    """A test's status as text ("SUCCESS", "FAIL", ...), whether enum or string."""
    status = test["status"]
    return str(getattr(status, "value", status))


def extract(snapshot: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], float]:
    """Per-column verdicts and the share of drifted columns from ``Snapshot.dict()`` of a
    ``DataDriftPreset`` report run with ``include_tests=True``."""
    verdicts: dict[str, str] = {}
    for test in snapshot["tests"]:
        if test["id"] == "drift":
            verdicts[test["metric_config"]["metric_id"]] = status_of(test)
    columns: dict[str, dict[str, Any]] = {}
    share = float("nan")
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif config["type"].endswith(":ValueDrift"):
            verdict = verdicts[metric["id"]]
            if verdict not in {"SUCCESS", "FAIL"}:
                raise RuntimeError(f"drift test of {config['column']!r} ended {verdict}")
            columns[config["column"]] = {
                "drift": verdict == "FAIL",
                "method": str(config["method"]),
                "score": float(metric["value"]),
                "threshold": float(config["threshold"]),
            }
    drifted = sum(c["drift"] for c in columns.values()) / max(len(columns), 1)
    if not np.isclose(drifted, share):
        raise RuntimeError(
            f"per-column verdicts ({drifted:.3f}) disagree with the preset's {share}"
        )
    return columns, share


def drift_report(reference: Any, frame: pd.DataFrame, definition: Any) -> dict[str, Any]:
    """One current table against the wrapped reference: the timed part of a run."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    start = time.perf_counter()
    current = Dataset.from_pandas(frame, data_definition=definition)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(current, reference)
    columns, share = extract(snapshot.dict())
    seconds = time.perf_counter() - start
    return {"columns": columns, "drifted_share": share, "seconds": seconds}


def child_main(args_path: Path) -> int:
    """The child: read the reference, warm up, then one timed report per current table."""
    import warnings

    start = time.perf_counter()
    warnings.filterwarnings("ignore")
    import evidently
    from evidently import DataDefinition, Dataset

    args = json.loads(args_path.read_text())
    table = pd.read_parquet(args["reference"])
    categorical = list(args["categorical"])
    numerical = [c for c in table.columns if c not in categorical]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    reference = Dataset.from_pandas(table, data_definition=definition)
    head = table.head(WARMUP_ROWS)
    drift_report(Dataset.from_pandas(head, data_definition=definition), head, definition)
    setup_seconds = time.perf_counter() - start
    runs = []
    for path in args["currents"]:
        frame = pd.read_parquet(path)[list(table.columns)]
        runs.append(drift_report(reference, frame, definition))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "version": evidently.__version__,
        "runs": runs,
        "setup_seconds": setup_seconds,
        "peak_mib": peak_mib,
    }
    Path(args["out"]).write_text(json.dumps(out))
    return 0


# ---- self-test ---------------------------------------------------------------------------------


def synthetic(n: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """3 standard normal columns (num_0 moved by ``shift`` SD) and 1 categorical of 4 values."""
    rng = np.random.default_rng(seed)
    out = {f"num_{j}": rng.normal(0.0, 1.0, n) for j in range(3)}
    out["num_0"] = out["num_0"] + shift
    out["cat_0"] = np.array(["web", "store", "app", "phone"], dtype=object)[rng.integers(0, 4, n)]
    return out


def self_test(n: int = 20_000) -> int:
    """Run the report on a planted shift and on a stable table; 0 when only num_0 drifts, in
    the first table only."""
    print(f"self-test: {n:,} rows; current 1 shifts num_0 by 0.5 SD, current 2 is stable")
    start = time.perf_counter()
    evidently_python()
    print(f"  environment evidently: ready in {time.perf_counter() - start:.1f} s", flush=True)
    reference = synthetic(n, 0)
    currents = [synthetic(n, 1, shift=0.5), synthetic(n, 2)]
    result = run_evidently(reference, currents, ["cat_0"], timeout=600)
    print(
        f"  evidently {result['version']}: child {result['child_seconds']:.1f} s wall, setup "
        f"(imports, reference, warm-up) {result['setup_seconds']:.2f} s, peak "
        f"{result['peak_mib']:,.0f} MiB"
    )
    flagged = []
    for i, run in enumerate(result["runs"], start=1):
        print(f"\n  current {i}: {run['seconds']:.3f} s, drifted share {run['drifted_share']}")
        for name, c in run["columns"].items():
            verdict = "DRIFT" if c["drift"] else "-"
            print(
                f"    {name:6} {c['method']:32} score {c['score']:.4f}"
                f"  threshold {c['threshold']:g}  {verdict}"
            )
        flagged.append(sorted(name for name, c in run["columns"].items() if c["drift"]))
    ok = flagged == [["num_0"], []]
    print(f"\ndrift on num_0 in current 1 only: {'yes' if ok else f'no, flagged {flagged}'}")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        sys.exit(child_main(Path(sys.argv[2])))
    if len(sys.argv) > 1 and sys.argv[1] != "selftest":
        sys.exit("usage: monitor_evidently.py [selftest [N]] | child ARGS.json")
    sys.exit(self_test(int(sys.argv[2]) if len(sys.argv) > 2 else 20_000))
