"""Shared fixtures: paths to ../shared, a tiny saved model, the moto server on 127.0.0.1.

Fixtures here are used across suites; a suite's own fixtures live in its own test files.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from itsacat.artifacts import Model, save_model
from itsacat.data import N_X, Preprocessing
from itsacat.network import init_network

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the clone (ITSACAT_SHARED overrides): data set, DVC store, photos."""
    path = Path(os.environ.get("ITSACAT_SHARED", REPO.parent / "shared")).resolve()
    if not (path / "datasets").is_dir():
        pytest.fail(f"{path} is not the shared folder; set ITSACAT_SHARED to it")
    return path


@pytest.fixture(scope="session")
def photos(shared_dir: Path) -> list[Path]:
    """The real photos in ../shared/images (large JPEGs, cats and non-cats)."""
    found = sorted((shared_dir / "images").glob("*.jp*g"))
    assert found, "no photos in ../shared/images"
    return found


def make_model(directory: Path, hidden: tuple[int, ...] = (4, 3), seed: int = 0) -> Path:
    """Save a small random (untrained) model with centred preprocessing into `directory`."""
    rng = np.random.default_rng(seed)
    net = init_network([N_X, *hidden, 1], "relu", "he", rng, "float32")
    mean = rng.uniform(0.3, 0.6, size=(N_X, 1)).astype(np.float32)
    save_model(Model(net, Preprocessing(mean=mean), metadata={"note": "test"}), directory)
    return directory


@pytest.fixture(scope="session")
def model_factory() -> Callable[..., Path]:
    """`make_model(directory, hidden=(4, 3), seed=0)`, for tests that need several models."""
    return make_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved, untrained [12288, 4, 3, 1] model: fast, valid, deterministic."""
    return make_model(tmp_path_factory.mktemp("tiny-model"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The moto server, in this process, on 127.0.0.1; yields its URL.

    Running in-process lets a test extend a moto backend (e.g. SageMaker's missing
    update_endpoint) while every call still goes over real HTTP through boto3.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def forget_aws_credentials(monkeypatch: pytest.MonkeyPatch, nowhere: Path) -> None:
    """No AWS credentials anywhere botocore looks (env, files, instance metadata) for the
    rest of the test: its clients then fail as on a machine never configured."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS_* pointed at the moto server with dummy credentials; resets moto's state after."""
    import requests

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    yield moto_server
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
