"""Running the command line as a user does: a subprocess, its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``custval ARGS`` in ``cwd`` (a wide terminal, so that tables are not wrapped)."""
    return subprocess.run(
        [sys.executable, "-m", "custval", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )
