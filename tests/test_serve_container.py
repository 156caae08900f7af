"""The Docker entry point as SageMaker calls it (`serve` / `train`), without Docker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from itsacat.predict import Predictor
from itsacat.serve.process import ServerProcess, free_port

REPO = Path(__file__).resolve().parent.parent


def test_serve_reads_sagemakers_environment(tiny_model_dir: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SM_MODEL_DIR": str(tiny_model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "itsacat.serve.container", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = ServerProcess(proc, "127.0.0.1", port)
    try:
        server.wait_ready(60)
        r = requests.get(server.url + "/ping", timeout=5)
        assert r.json()["model_version"] == Predictor.load(tiny_model_dir).version
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_unknown_command_is_refused() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "itsacat.serve.container", "predict"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "serve | train" in r.stderr


def test_dockerfile_runs_the_entry_point_and_ships_only_what_it_needs() -> None:
    docker = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "itsacat.serve.container"]' in docker
    assert "EXPOSE 8080" in docker
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!src/"]
