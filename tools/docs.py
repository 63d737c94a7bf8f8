"""The docs as an executable contract: their shell commands, and their printed outputs.

``python tools/docs.py`` (``make docs``) regenerates every printed output in README.md and
docs/*.md. An output block is a fenced block directly below a marker line

    <!-- output: COMMAND -->

COMMAND runs in bash from the repository's root, after the demo has made demo-output/ afresh
(the demo runs once, first, and its own marker reuses that run's output); the block's body
becomes its stdout, rendered at COLUMNS=100 without colour, with the run-dependent parts
(model versions, run ids, the clock) replaced by fixed placeholders of the same width.

tests/test_docs_commands.py reads the same blocks: it runs every shell command as written and
checks that every block that looks like program output is marked. custval does not import
this module.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the fenced blocks whose lines are commands to run
SHELL_LANGS = frozenset({"sh", "bash", "console", "shell"})
MARKER = re.compile(r"^<!-- output: (?P<command>.+?) -->\s*$")
FENCE = re.compile(r"^(?P<fence>```+)(?P<lang>[\w+-]*)\s*$")
#: what `make demo` runs; make docs runs it first so that every other output describes it
DEMO_COMMAND = ".venv/bin/custval demo --out demo-output"
WIDTH = 100
#: run-dependent text in outputs, each replaced by a placeholder of its width (tables keep
#: their alignment): model versions, run ids, and "now" (the future-date cleaning rule)
FILTERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b\d{8}T\d{6}Z\b"), "YYYYMMDDTHHMMSSZ"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<run id>".ljust(32, ".")),
    (re.compile(r"(?<=after )\d{4}-\d{2}-\d{2} \d{2}:\d{2}"), "YYYY-MM-DD hh:mm"),
)


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md, then docs/*.md in name order: the order make docs runs their outputs in."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """A fenced block: ``start`` and ``end`` are the indexes of its fence lines."""

    path: Path
    start: int
    end: int
    lang: str
    body: tuple[str, ...]
    marker: str | None  # the COMMAND of the marker line right above, if any
    follows_shell: bool  # it comes right after a shell block: that block's output

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.start + 1}"


@dataclass(frozen=True)
class Command:
    """One logical line of a shell block (continuations joined), without a leading ``$ ``."""

    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def program(self) -> str:
        """The first word's file name: ``custval`` for ``.venv/bin/custval`` too."""
        return Path(self.text.split(maxsplit=1)[0]).name


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip() == opening["fence"]),
            len(lines),
        )
        marker = MARKER.match(lines[i - 1]) if i else None
        previous = found[-1] if found else None
        found.append(
            Block(
                path=path,
                start=i,
                end=end,
                lang=opening["lang"],
                body=tuple(lines[i + 1 : end]),
                marker=marker["command"] if marker else None,
                follows_shell=bool(
                    previous and previous.end == i - 1 and previous.lang in SHELL_LANGS
                ),
            )
        )
        i = end + 1
    return found


def commands(path: Path) -> list[Command]:
    """The commands of a file's shell blocks, as a shell reads them (``\\`` continues a
    line); blank lines and whole-line comments are left out."""
    found: list[Command] = []
    for block in blocks(path):
        if block.lang not in SHELL_LANGS:
            continue
        pending: list[str] = []
        for offset, raw in enumerate(block.body):
            if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
                continue
            pending.append(raw.rstrip().removesuffix("\\").rstrip())
            if raw.rstrip().endswith("\\"):
                continue
            text = " ".join(p.strip() for p in pending).removeprefix("$ ")
            first = block.start + 2 + offset - (len(pending) - 1)
            found.append(Command(path=path, line=first, text=text))
            pending = []
    return found


def looks_like_output(block: Block) -> bool:
    """A block of program output: one without a language (a diagram says ``text``), or any
    block right after a shell block (the answer to a command above it)."""
    return block.lang in ("", "output") or block.follows_shell


def run(command: str, cwd: Path = ROOT) -> str:
    """COMMAND's stdout as the docs show it (fixed width, no colour, no progress display);
    its failure stops make docs with its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUSTVAL_DEBUG", "FORCE_COLOR")}
    env.update(COLUMNS=str(WIDTH), NO_COLOR="1", TERM="dumb")
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`{command}` exited {done.returncode}:\n{done.stderr[-3000:]}")
    return clean(done.stdout)


def clean(text: str) -> str:
    """Trailing blanks dropped and run-dependent text replaced (see FILTERS)."""
    for pattern, placeholder in FILTERS:
        text = pattern.sub(placeholder, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def regenerate(
    path: Path, outputs: dict[str, str], cwd: Path = ROOT, failures: list[str] | None = None
) -> bool:
    """The file's marked blocks replaced by their commands' outputs (``outputs`` caches them
    by command across files); whether the file changed. A command that fails leaves its block
    as it was and is added to ``failures`` (raised when that is None)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    new = list(lines)
    # from the end, so that the earlier blocks' line numbers stay right
    for block in reversed([b for b in blocks(path) if b.marker]):
        assert block.marker is not None
        if block.marker not in outputs:
            try:
                outputs[block.marker] = run(block.marker, cwd)
            except RuntimeError as exc:
                if failures is None:
                    raise
                failures.append(f"{block.where}: {exc}")
                continue
        new[block.start + 1 : block.end] = outputs[block.marker].splitlines()
    if new == lines:
        return False
    path.write_text("\n".join(new) + "\n", encoding="utf-8")
    return True


def predict_example(root: Path = ROOT) -> str:
    """The README's answer of the service: `custval serve` on the demo's project, asked over
    HTTP (POST /v1/predict) about the demo's customer with the most revenue, with a fresh
    read key; the answer as JSON."""
    import pandas as pd

    key, entry = _new_key("docs", root)
    port = _free_port()
    env = {**os.environ, "CUSTVAL_API_KEYS": entry}
    server = subprocess.Popen(
        [
            "bash",
            "-c",
            f"exec .venv/bin/custval serve -c demo-output/data/custval.toml --port {port}",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ask = _Client(f"http://127.0.0.1:{port}", key)
    try:
        ask.wait_ready(server)
        version = ask("/v1/models")["active"]
        schema = ask(f"/v1/models/{version}")["features"]
        names = [*schema["numeric"], *schema["categorical"]]
        features = pd.read_parquet(root / "demo-output" / "features.parquet")
        row = features.loc[features.revenue.idxmax()]
        customer = {"customer_id": row.customer_id, **{n: _plain(row[n]) for n in names}}
        answer = ask("/v1/predict", {"customers": [customer]})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return json.dumps(answer, indent=1, ensure_ascii=False)


def _new_key(name: str, root: Path) -> tuple[str, str]:
    """A fresh read key from `custval api-key new`: (the key, its CUSTVAL_API_KEYS entry)."""
    printed = run(f".venv/bin/custval api-key new --name {name} --scope read", root)
    entry = re.search(rf"\b{name}:read:[0-9a-f]{{64}}\b", printed)
    key = re.search(r"\bcv_\S+", printed)
    if not (entry and key):
        raise RuntimeError(f"api-key new printed no key:\n{printed}")
    return key.group(), entry.group()


def dashboard_screenshots(root: Path = ROOT) -> list[Path]:
    """The README's pictures of the dashboard: `custval serve` on the demo's project (after a
    forecast run, so that every page has something to show), signed in with a fresh read key,
    each page drawn in Chromium and saved as docs/img/dashboard-<page>.png."""
    if str(ROOT) not in sys.path:  # run as a script, its own folder is on the path, not ROOT
        sys.path.insert(0, str(ROOT))
    from tools import screenshots

    run(".venv/bin/custval forecast -c demo-output/data/custval.toml --horizon 13 --quiet", root)
    key, entry = _new_key("screenshots", root)
    port = _free_port()
    server = subprocess.Popen(
        [
            "bash",
            "-c",
            f"exec .venv/bin/custval serve -c demo-output/data/custval.toml --port {port}",
        ],
        cwd=root,
        env={**os.environ, "CUSTVAL_API_KEYS": entry},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    out = root / "docs" / "img"
    try:
        _Client(base, key).wait_ready(server)
        screenshots.main([base, key, str(out), _top_customer(root)])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return sorted(out.glob("dashboard-*.png"))


def _top_customer(root: Path) -> str:
    """A typical high-value customer of the demo: a CLV, and a value probability near 0.75
    (the most certain ones are outliers whose reasons are extreme)."""
    import duckdb

    con = duckdb.connect(str(root / "demo-output" / "data" / "custval.duckdb"), read_only=True)
    try:
        return str(
            con.execute(
                "SELECT customer_id FROM latest_predictions WHERE clv_expected IS NOT NULL "
                "ORDER BY ABS(value_probability - 0.75), customer_id LIMIT 1"
            ).fetchone()[0]
        )
    finally:
        con.close()


def _plain(value: object) -> object:
    """A feature value as JSON has it: NaN is null, numpy scalars are numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _Client:
    """JSON over HTTP with a bearer key: GET without a body, POST with one."""

    base: str
    key: str

    def __call__(self, path: str, body: object | None = None) -> dict:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def wait_ready(self, server: subprocess.Popen[bytes], seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"custval serve exited {server.returncode}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"custval serve did not answer /healthz within {seconds:.0f} s")


def main() -> int:
    """make docs: the demo afresh, then every marked output of every doc file."""
    if sys.argv[1:] == ["predict-example"]:
        print(clean(predict_example()))
        return 0
    print(f"running {DEMO_COMMAND} ...", flush=True)
    outputs = {DEMO_COMMAND: run(DEMO_COMMAND)}
    failures: list[str] = []
    for path in doc_files():
        marked = [b.marker for b in blocks(path) if b.marker]
        changed = regenerate(path, outputs, failures=failures)
        state = "updated" if changed else "unchanged"
        print(f"{path.relative_to(ROOT)}: {len(marked)} outputs, {state}", flush=True)
    for shot in dashboard_screenshots():
        print(f"{shot.relative_to(ROOT)}: drawn", flush=True)
    for failure in failures:
        print(f"NOT REGENERATED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
