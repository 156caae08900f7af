"""Run a DVC stage's module as `dvc repro` runs it: `python -m itsacat.stages.NAME` in a
stage directory, its output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def run_stage(name: str, cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"itsacat.stages.{name}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def prepared_stage_dir(
    root: Path,
    repo_root: Path,
    shared_dir: Path,
    prepare: dict[str, Any],
    train: dict[str, Any],
) -> Path:
    """`root` as a stage directory: data/ (the shared data set), params.yaml (the
    project's, with these prepare.* and train.* values) and prepared/ from the real
    prepare stage."""
    (root / "data").symlink_to(shared_dir / "datasets" / "catvnoncat")
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["prepare"].update(prepare)
    params["train"].update(train)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "itsacat.stages.prepare"], cwd=root, check=True)
    return root
