"""Run a command and send it a signal once it has printed a given line (a real Ctrl-C,
SIGTERM or spot reclaim at a known point of its work)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path


def signal_when(
    args: Sequence[str],
    marker: str,
    sig: int,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    group: bool = False,
) -> tuple[int, str]:
    """Start `args`; once a line of its output (stdout and stderr together) holds `marker`,
        send `sig`; → (exit status, the whole output). Fails if it ends without the marker, or
    has not printed it within `timeout` seconds (it is killed then).
        With `group`, the command leads its own process group and the signal goes to the whole
        group, as a terminal's Ctrl-C does (`dvc repro` and the stage it runs)."""
    proc = subprocess.Popen(
        list(args),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=group,
    )
    assert proc.stdout is not None
    # a marker that never comes must not hang the suite: kill it after `timeout`
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
                break
        else:
            proc.wait(timeout=timeout)
            raise AssertionError(f"{args} ended without printing {marker!r}:\n" + "".join(lines))
    finally:
        watchdog.cancel()
    lines.extend(proc.stdout)
    return proc.wait(timeout=timeout), "".join(lines)
