"""Property-based: random bytes and random JSON never make a 5xx, always a JSON error.

Thrown at the live endpoint's /invocations, at the Lambda handler and at SageMaker's
input_fn (rendered through predict_fn/output_fn as the container would).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itsacat.predict import Predictor
from itsacat.serve import lambda_handler
from itsacat.serve.process import ServerProcess
from itsacat.serve.sagemaker import input_fn, output_fn, predict_fn

CONTENT_TYPES = st.sampled_from(
    [
        "image/jpeg",
        "image/png",
        "application/x-image",
        "application/x-npy",
        "application/json",
        "text/plain",
        "application/octet-stream",
        "",
    ]
)
# Magic numbers, so random tails reach the image and .npy parsers, not just the sniffer.
PREFIXES = st.sampled_from(
    [
        b"",
        b"\xff\xd8\xff\xe0",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"BM",
        b"RIFF\0\0\0\0WEBP",
        b"II*\0",
        b"\x93NUMPY\x01\x00",
    ]
)
BYTES = st.builds(lambda p, b: p + b, PREFIXES, st.binary(max_size=1024))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
JSON_BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"instances": JSON_VALUES}),
    st.fixed_dictionaries({"image": st.text(max_size=40)}),
).map(lambda v: json.dumps(v).encode())
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    with ServerProcess.start(tiny_model_dir, workers=1) as proc:
        yield proc.url


def check_http(status: int, body: bytes) -> None:
    assert status < 500, body
    payload = json.loads(body)
    if status >= 400:
        assert isinstance(payload["error"], str) and payload["error"]


@SETTINGS
@given(body=BYTES, ctype=CONTENT_TYPES)
def test_endpoint_random_bytes(server: str, body: bytes, ctype: str) -> None:
    r = requests.post(
        server + "/invocations",
        data=body,
        headers={"Content-Type": ctype} if ctype else {},
        timeout=30,
    )
    check_http(r.status_code, r.content)


@SETTINGS
@given(body=JSON_BODIES)
def test_endpoint_random_json(server: str, body: bytes) -> None:
    r = requests.post(
        server + "/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    check_http(r.status_code, r.content)


@pytest.fixture
def lambda_model(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITSACAT_MODEL_DIR", str(tiny_model_dir))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(BYTES, JSON_BODIES), ctype=CONTENT_TYPES, as_b64=st.booleans(), v2=st.booleans()
)
def test_lambda_random_bodies(
    lambda_model: None, body: bytes, ctype: str, as_b64: bool, v2: bool
) -> None:
    text = base64.b64encode(body).decode() if as_b64 else body.decode("latin-1")
    if v2:
        event = {
            "version": "2.0",
            "rawQueryString": "",
            "headers": {"content-type": ctype},
            "requestContext": {"http": {"method": "POST"}},
            "body": text,
            "isBase64Encoded": as_b64,
        }
    else:
        event = {
            "httpMethod": "POST",
            "headers": {"Content-Type": ctype},
            "queryStringParameters": None,
            "body": text,
            "isBase64Encoded": as_b64,
        }
    r = lambda_handler.handler(event, None)
    check_http(r["statusCode"], r["body"].encode())


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    event=st.fixed_dictionaries(
        {"requestContext": JSON_VALUES},
        optional={
            "httpMethod": st.one_of(st.sampled_from(["GET", "POST"]), JSON_VALUES),
            "headers": JSON_VALUES,
            "queryStringParameters": JSON_VALUES,
            "rawQueryString": JSON_VALUES,
            "isBase64Encoded": JSON_VALUES,
            "body": JSON_VALUES,
        },
    )
)
def test_lambda_malformed_events(lambda_model: None, event: dict) -> None:
    """Any field of any JSON type: a 4xx naming the problem, or a 200, never a 5xx."""
    r = lambda_handler.handler(event, None)
    check_http(r["statusCode"], r["body"].encode())


@settings(max_examples=100, deadline=None)
@given(body=st.one_of(BYTES, JSON_BODIES), ctype=CONTENT_TYPES)
def test_input_fn_random_bodies(tiny_model_dir: Path, body: bytes, ctype: str) -> None:
    model = _model(tiny_model_dir)
    out = output_fn(predict_fn(input_fn(body, ctype), model), "application/json")
    status_body, content_type = out
    assert content_type == "application/json"
    payload = json.loads(status_body)
    assert "error" in payload or "probability" in payload or "predictions" in payload
    if "error" in payload:
        assert 400 <= payload["status"] < 500


_MODELS: dict[Path, Predictor] = {}


def _model(path: Path) -> Predictor:
    if path not in _MODELS:
        _MODELS[path] = Predictor.load(path)
    return _MODELS[path]
