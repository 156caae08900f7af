"""Run a DVC stage's module as `dvc repro` runs it: `python -m itsacat.stages.NAME` in a
stage directory, its output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_stage(name: str, cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"itsacat.stages.{name}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
