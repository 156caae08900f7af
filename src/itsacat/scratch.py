"""A scratch copy of a project's working tree, as a fresh git repo.

For tests and benchmarks that run DVC's own CLI without touching the checkout they come
from: copy the files git tracks (and the untracked ones it does not ignore), make a new
git repo of them, and point the `local` DVC remote at the shared store by absolute path
(the relative URL in .dvc/config only works beside ../shared). Pull-only: nothing here
pushes to that store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def _run(cwd: Path, *cmd: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")


def copy_worktree(repo: Path, dest: Path, exclude: Sequence[str] = ()) -> None:
    """Copy `repo`'s tracked and untracked-not-ignored files into `dest`, except paths
    starting with any of `exclude`."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in filter(None, listed.split("\0")):
        src = repo / rel
        if src.is_file() and not rel.startswith(tuple(exclude)):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def init_scratch_repo(
    dest: Path, store: Path, *, branch: str = "main", commit: bool = True
) -> None:
    """`git init` (and commit everything, when asked) in `dest`; the `local` DVC remote
    then reads `store` by absolute path, set in .dvc/config.local."""
    _run(dest, "git", "init", "-q", "-b", branch)
    if commit:
        _run(dest, "git", "add", "-A")
        _run(
            dest,
            "git",
            "-c",
            "user.name=scratch",
            "-c",
            "user.email=scratch@localhost",
            "commit",
            "-qm",
            "scratch copy",
        )
    _run(dest, "dvc", "remote", "modify", "--local", "local", "url", str(store))
