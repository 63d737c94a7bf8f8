"""The layout keeps itself tidy: the layering contract, no import cycles, imports at the top of
modules, short functions and a public face that resolves (docs/architecture.md)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "custval"
#: the longest function, in lines with its signature and docstring
MAX_LINES = 80
#: a comment right above a longer function says why it is long
LONG_MARK = "# over 80 lines:"


def test_the_import_contracts_hold() -> None:
    """Arrows only point down (.importlinter); `make lint` runs the same check."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                part = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == node:
                        break
                if len(part) > 1:
                    found.append(sorted(part))
    return found


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle between any two modules, function-local imports included (grimp sees
    them): a cycle hidden inside a function is still a cycle."""
    graph = grimp.build_graph("custval", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_custval_modules_are_imported_at_the_top() -> None:
    """Function-local imports hid the old cycles. Only the command line keeps them, so that
    `custval --help` answers without loading pandas and the models (each cli module says so)."""
    found = []
    for path in _modules():
        text = path.read_text()
        if path.parent.name == "cli":
            if "def " in text and "imported inside the commands" not in text:
                found.append(f"{path.name}: no comment saying why it imports inside functions")
            continue
        for fn in _functions(ast.parse(text)):
            for node in ast.walk(fn):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                if any(n == "custval" or n.startswith("custval.") for n in names):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} in {fn.name}")
    assert found == []


def test_functions_are_short() -> None:
    """At most 80 lines, signature and docstring included, unless a comment right above the
    function says why (a table of rules, say)."""
    found = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for fn in _functions(ast.parse("\n".join(lines))):
            start = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
            if fn.end_lineno - fn.lineno + 1 <= MAX_LINES:
                continue
            if lines[start - 2].strip().startswith(LONG_MARK):
                continue
            found.append(f"{path.relative_to(SRC)}:{fn.lineno} {fn.name}")
    assert found == []


def test_the_public_face_loads_lazily() -> None:
    """`import custval` loads none of the heavy layers: the command line starts fast."""
    code = (
        "import sys, custval; "
        "print(sorted(m for m in sys.modules if m.startswith(('custval.', 'pandas', 'ibis'))))"
    )
    assert _printed(code) == "['custval.version']"


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md keeps one line for each module: every module is named there by its
    path, and every path named there exists."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    modules = {
        str(p.relative_to(SRC)) for p in _modules() if p.name not in ("__init__.py", "__main__.py")
    }
    named = set(re.findall(r"`([a-z_]+(?:/[a-z_]+)*\.py)`", page))
    assert sorted(modules - named) == []
    # a path is the package's (flows/scoring.py), or from src/ or the repository's root
    roots = (SRC, SRC.parent, ROOT)
    assert sorted(n for n in named if not any((r / n).exists() for r in roots)) == []


@pytest.mark.parametrize("package", ["custval", "custval.flows"])
def test_lazy_names_are_not_shadowed_by_modules(package: str) -> None:
    """A package that loads its names lazily must not have a module of the same name: once
    imported, the module would replace the function (`flows.score` would stop being callable)."""
    module = importlib.import_module(package)
    folder = Path(module.__file__).parent
    own = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    assert sorted(own & set(module.__all__)) == []
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_a_flow_loads_only_what_it_runs() -> None:
    """`flows.prepare` does not load the machine learning behind the leaderboard."""
    code = (
        "import sys; from custval import flows; flows.prepare; "
        "print(sorted(m for m in ('lightgbm', 'sklearn', 'custval.flows.leaderboard') "
        "if m in sys.modules))"
    )
    assert _printed(code) == "[]"


def _printed(code: str) -> str:
    """What ``code`` prints in a fresh interpreter: which modules an import loads."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()
