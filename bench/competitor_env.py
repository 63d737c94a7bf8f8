"""The virtual environments of the benchmark competitors that pin old pandas or numpy
(statsforecast, Prophet, Evidently, causalml, lifetimes): one per competitor, in
``bench/.data/venv-NAME``, installed from ``bench/requirements-NAME.txt``. They are never
dependencies of custval; a benchmark runs its competitor's side in a child process with that
environment's interpreter. Standard library only: the children import this file too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"


def venv_python(name: str, label: str = "") -> Path:
    """The interpreter of ``bench/.data/venv-NAME``, created (once) when missing or when
    ``bench/requirements-NAME.txt`` changed since it was installed: a stamp file holds the
    requirements' text that was installed, so an edited pin rebuilds the environment."""
    venv = DATA / f"venv-{name}"
    reqs = HERE / f"requirements-{name}.txt"
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = reqs.read_text()
    if py.exists() and stamp.exists() and stamp.read_text() == wanted:
        return py
    # the system's python3 rather than custval's venv: a venv made from a venv may share its
    # site-packages on some platforms
    base = shutil.which("python3") or sys.executable
    print(f"creating {venv} ({label or name}, benchmark only) ...", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    DATA.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(reqs)], check=True)
    stamp.write_text(wanted)
    return py
