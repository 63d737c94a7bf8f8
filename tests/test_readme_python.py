"""The README's Python examples use only custval's public names, and they run as written."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import custval
from custval.data.synth import generate

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(_python_blocks()) >= 2


@pytest.mark.parametrize("block", range(len(_python_blocks())))
def test_examples_import_only_public_names(block: int) -> None:
    for node in ast.walk(ast.parse(_python_blocks()[block])):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("custval"):
            assert node.module == "custval", f"imports from {node.module}"
            assert {a.name for a in node.names} <= set(custval.__all__)
        if isinstance(node, ast.Import):
            assert all(a.name == "custval" or not a.name.startswith("custval") for a in node.names)
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "custval":
            assert node.attr in custval.__all__, f"custval.{node.attr} is not public"


def test_examples_run_after_the_demo(tmp_path: Path) -> None:
    """Each block as written, in a folder holding what `make demo` generates first (the
    sample company in demo-output/data; a smaller one, the same code)."""
    generate(1500, tmp_path / "demo-output" / "data", seed=0, fmt="csv")
    for code in _python_blocks():
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
