"""Fixtures for the deploy tests: models A and B, boto3 clients on moto, moto extensions.

moto has no SageMaker `update_endpoint`; `sagemaker_update_endpoint` adds one to moto's
backend and response handler in this process (the moto server runs in-process), records
every DeploymentConfig it receives, and removes itself after the test. moto's
sagemaker-runtime server also decodes every request body as UTF-8, so a JPEG body crashes
it; `sagemaker_runtime_binary` lets it take raw bytes and refuse endpoints that do not
exist. The production code calls both APIs exactly as on AWS and knows nothing of this.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from conftest import make_model
from itsacat.predict import Predictor

REGION = "us-east-1"
_SESSION = boto3.session.Session()
ROLE = "arn:aws:iam::123456789012:role/itsacat-deploy-test"


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """`itsacat.cli.main` may attach a handler to this test's captured stderr; drop it after."""
    handlers = logging.root.handlers[:]
    yield
    logging.root.handlers[:] = handlers


@pytest.fixture(scope="session")
def model_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("model-a"), seed=1)


@pytest.fixture(scope="session")
def model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("model-b"), seed=2)


@functools.cache
def client(service: str, moto_url: str) -> Any:
    """A boto3 client on moto, made once per test run (making clients is slow)."""
    return _SESSION.client(service, region_name=REGION, endpoint_url=moto_url)


def fresh_client(service: str, moto_url: str) -> Any:
    """A client from a new session, resolving credentials from the environment now."""
    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=moto_url)


def answers(model_dir: Path, photos: list[Path]) -> list[dict[str, Any]]:
    """What the real inference code says about each photo: the body a real endpoint returns."""
    predictor = Predictor.load(model_dir)
    return [predictor.predict_bytes(p.read_bytes()).to_json() for p in photos]


def queue_sagemaker_answers(moto_url: str, bodies: list[Any]) -> None:
    """Queue invoke_endpoint results, moto's documented way of driving sagemaker-runtime."""
    results = [
        {"Body": json.dumps(b), "ContentType": "application/json", "InvokedProductionVariant": ""}
        for b in bodies
    ]
    r = requests.post(
        f"{moto_url}/moto-api/static/sagemaker/endpoint-results",
        json={"results": results},
        timeout=10,
    )
    r.raise_for_status()


@pytest.fixture
def sagemaker_update_endpoint(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Teach moto's SageMaker `update_endpoint` for this test; yields the calls it received."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    calls: list[dict] = []

    def update_endpoint(
        self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str, **kw: Any
    ) -> Any:
        if endpoint_name not in self.endpoints:
            raise ValidationError(message=f"Could not find endpoint '{endpoint_name}'.")
        config = self.describe_endpoint_config(endpoint_config_name)
        endpoint = self.endpoints[endpoint_name]
        endpoint.endpoint_config_name = endpoint_config_name
        endpoint.production_variants = endpoint._process_production_variants(
            config["ProductionVariants"]
        )
        endpoint.last_modified_time = utcnow()
        calls.append(
            {"EndpointName": endpoint_name, "EndpointConfigName": endpoint_config_name, **kw}
        )
        return endpoint

    def handler(self: SageMakerResponse) -> ActionResult:
        endpoint = self.sagemaker_backend.update_endpoint(
            self._get_param("EndpointName"),
            self._get_param("EndpointConfigName"),
            DeploymentConfig=self._get_param("DeploymentConfig"),
        )
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerModelBackend, "update_endpoint", update_endpoint, raising=False)
    monkeypatch.setattr(SageMakerResponse, "update_endpoint", handler, raising=False)
    return calls


@pytest.fixture
def sagemaker_runtime_binary(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let moto's invoke_endpoint take binary bodies (photos) and check the endpoint exists."""
    from urllib.parse import unquote

    from moto.sagemaker.models import sagemaker_backends
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    def invoke_endpoint(self: SageMakerRuntimeResponse) -> Any:
        name = unquote(self.path.split("/")[2])
        endpoints = sagemaker_backends[self.current_account][self.region].endpoints
        if name not in endpoints or endpoints[name].endpoint_status != "InService":
            error = {"__type": "ValidationError", "message": f"Endpoint {name} not found."}
            return 400, {"Content-Type": "application/json"}, json.dumps(error)
        unique = {k: v for k, v in self.headers.items() if k.lower().startswith("x-amzn-sagemaker")}
        unique["Accept"] = self.headers.get("Accept")
        unique["Body"] = hashlib.sha256(self.raw_body).hexdigest()
        body, content_type, variant, _attrs = self.sagemakerruntime_backend.invoke_endpoint(
            endpoint_name=name, unique_repr=base64.b64encode(json.dumps(unique).encode())
        )
        headers = {"Content-Type": content_type}
        if variant:
            headers["x-Amzn-Invoked-Production-Variant"] = variant
        return 200, headers, body

    monkeypatch.setattr(SageMakerRuntimeResponse, "use_raw_body", True)
    monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)


@pytest.fixture
def lambda_without_docker(aws_env: str) -> Iterator[str]:
    """moto's Docker-free Lambda backend (there is no Docker engine here) for this test."""
    requests.post(f"{aws_env}/moto-api/config", json={"lambda": {"use_docker": False}}, timeout=10)
    yield aws_env
    requests.post(f"{aws_env}/moto-api/config", json={"lambda": {"use_docker": True}}, timeout=10)
