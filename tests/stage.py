"""Run a DVC stage's module as `dvc repro` runs it: `python -m itsacat.stages.NAME` in a
stage directory, its output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def saved_outputs(root: Path, *names: str) -> dict[str, bytes]:
    """Every file of these outputs of `root` (folders or files), by path: what the last
    good run left, to compare byte for byte after a run that must not touch them."""
    out = {}
    for name in names:
        path = root / name
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        assert files and files[0].exists(), f"{name} is missing"
        out |= {str(f.relative_to(root)): f.read_bytes() for f in files}
    return out


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
