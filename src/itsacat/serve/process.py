"""`itsacat serve` as a child process: start it, wait for /ping, stop it with SIGTERM.

    with ServerProcess.start(Path("model"), port=8080) as server:
        urllib.request.urlopen(server.url + "/ping")

Used by the tests, the load bench and anything that deploys the local endpoint.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from itsacat.errors import ItsacatError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        model_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        workers: int = 2,
        extra_args: tuple[str, ...] = (),
        log_path: Path | None = None,
        timeout: float = 60.0,
    ) -> ServerProcess:
        """Start `itsacat serve` and return once /ping answers 200."""
        port = port or free_port(host)
        cmd = [sys.executable, "-m", "itsacat.serve.server", "--model-dir", str(model_dir)]
        cmd += ["--host", host, "--port", str(port), "--workers", str(workers), *extra_args]
        if log_path:
            with open(log_path, "ab") as out:  # the child keeps its own copy of the handle
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        else:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = cls(proc, host, port, log_path)
        server.wait_ready(timeout)
        return server

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ItsacatError(
                    f"`itsacat serve` exited with {self.process.returncode} before answering "
                    f"/ping{'; see ' + str(self.log_path) if self.log_path else ''}"
                )
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise ItsacatError(f"`itsacat serve` did not answer {self.url}/ping in {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the graceful exit (kill after `timeout`); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
