"""The Lambda handler with real-shaped events (API Gateway REST v1, HTTP API v2, function
URLs, direct invoke), and the deployment zip run in a clean interpreter."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imaging import npy
from itsacat.predict import Predictor
from itsacat.serve import lambda_handler
from itsacat.serve.lambda_handler import handler
from itsacat.serve.package import (
    LAMBDA_HANDLER,
    LAMBDA_MAX_UNZIPPED,
    LAMBDA_MAX_ZIPPED,
    build_lambda_zip,
    read_lambda_manifest,
)

PIXELS = np.random.default_rng(5).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


def rest_v1(body: str | None, b64: Any, ctype: str, method: str = "POST", **extra: Any) -> dict:
    """An API Gateway REST API (payload 1.0) proxy event, as AWS documents it."""
    return {
        "resource": "/{proxy+}",
        "path": "/invocations",
        "httpMethod": method,
        "headers": {"Content-Type": ctype, "Accept": "*/*", "Host": "abc.execute-api.aws"},
        "multiValueHeaders": {"Content-Type": [ctype], "Accept": ["*/*"]},
        "queryStringParameters": extra.get("query"),
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": "invocations"},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": "/prod/invocations",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "pytest"},
            "apiId": "abc",
        },
        "body": body,
        "isBase64Encoded": b64,
    }


def http_v2(
    body: str | None,
    b64: bool,
    ctype: str,
    method: str = "POST",
    query: str = "",
    function_url: bool = False,
) -> dict:
    """An HTTP API (payload 2.0) event; a Lambda function URL sends the same shape."""
    domain = "abcdefg.lambda-url.us-east-1.on.aws" if function_url else "api.execute-api.aws"
    return {
        "version": "2.0",
        "routeKey": "$default" if function_url else "POST /invocations",
        "rawPath": "/invocations",
        "rawQueryString": query,
        "headers": {"content-type": ctype, "accept": "application/json", "host": domain},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdefg",
            "domainName": domain,
            "http": {
                "method": method,
                "path": "/invocations",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": "id",
            "routeKey": "$default",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "body": body,
        "isBase64Encoded": b64,
    }


@pytest.fixture
def model(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Predictor:
    monkeypatch.setenv("ITSACAT_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setattr(lambda_handler, "_PREDICTOR", None)
    return Predictor.load(tiny_model_dir)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("shape", ["rest_v1", "http_v2", "function_url"])
def test_base64_photo_and_json_bodies(shape: str, model: Predictor, photos: list[Path]) -> None:
    def event(body: str, is_b64: bool, ctype: str, **kw: Any) -> dict:
        if shape == "rest_v1":
            return rest_v1(body, is_b64, ctype, **kw)
        return http_v2(body, is_b64, ctype, function_url=shape == "function_url", **kw)

    photo = photos[0].read_bytes()
    r = handler(event(b64(photo), True, "image/jpeg"), None)
    assert r["statusCode"] == 200 and r["headers"]["Content-Type"] == "application/json"
    assert json.loads(r["body"]) == model.predict_bytes(photo).to_json()

    r = handler(event(json.dumps(PIXELS.tolist()), False, "application/json"), None)
    assert json.loads(r["body"]) == model.predict_images(PIXELS[None])[0].to_json()

    r = handler(event(json.dumps({"instances": [b64(photo)] * 2}), False, "application/json"), None)
    assert [p["probability"] for p in json.loads(r["body"])["predictions"]] == [
        model.predict_bytes(photo).probability
    ] * 2

    trace_kw = {"query": {"trace": "1"}} if shape == "rest_v1" else {"query": "trace=1"}
    r = handler(event(b64(photo), True, "image/jpeg", **trace_kw), None)
    assert len(json.loads(r["body"])["trace"]) == len(model.model.network.W)


@pytest.mark.parametrize(
    ("event", "status", "words"),
    [
        (rest_v1("not base64 at all!", True, "image/jpeg"), 400, "not base64"),
        (rest_v1("\xff\xd8\xff binary as text", False, "image/jpeg"), 400, "binary media"),
        (rest_v1(None, False, "image/jpeg"), 400, "empty"),
        (http_v2(b64(b"hello"), True, "image/png"), 400, "not a JPEG, PNG"),
        (http_v2("[NaN]", False, "application/json"), 400, "NaN"),
        (http_v2("{}", False, "text/csv"), 415, "unsupported content type"),
        (http_v2("{}", False, "application/json", method="DELETE"), 405, "POST"),
        (http_v2('"https://example.com/cat.jpg"', False, "application/json"), 400, "URL"),
    ],
)
def test_errors_are_http_responses(event: dict, status: int, words: str, model: Predictor) -> None:
    r = handler(copy.deepcopy(event), None)
    assert r["statusCode"] == status
    assert words in json.loads(r["body"])["error"]


def _with(event: dict, **fields: Any) -> dict:
    return {**event, **fields}


V1 = rest_v1(json.dumps(PIXELS.tolist()), False, "application/json")
V2 = http_v2(json.dumps(PIXELS.tolist()), False, "application/json")


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"requestContext": None}, "requestContext"),
        ({"requestContext": "POST"}, "requestContext"),
        (_with(V2, requestContext={"http": "POST"}), "requestContext.http"),
        (_with(V2, requestContext={"http": {"method": ["POST"]}}), "requestContext.http.method"),
        (_with(V1, headers=[["Content-Type", "application/json"]]), "headers"),
        (_with(V1, httpMethod=5), "httpMethod"),
        (_with(V1, queryStringParameters=["trace"]), "queryStringParameters"),
        (_with(V2, rawQueryString=["trace=1"]), "rawQueryString"),
    ],
)
def test_malformed_events_are_400_naming_the_field(
    event: dict, field: str, model: Predictor
) -> None:
    r = handler(copy.deepcopy(event), None)
    assert r["statusCode"] == 400, r
    assert f"the event's {field} must be" in json.loads(r["body"])["error"]


def test_is_base64_encoded_means_true_only(model: Predictor, photos: list[Path]) -> None:
    photo = photos[0].read_bytes()
    want = model.predict_bytes(photo).to_json()
    for flag in [True, "true", "TRUE"]:
        r = handler(rest_v1(b64(photo), flag, "image/jpeg"), None)
        assert r["statusCode"] == 200 and json.loads(r["body"]) == want, flag
    for flag in [False, "false", "False", None]:
        r = handler(rest_v1(json.dumps(PIXELS.tolist()), flag, "application/json"), None)
        assert r["statusCode"] == 200, (flag, r["body"])


def test_base64_body_wrapped_over_lines(model: Predictor, photos: list[Path]) -> None:
    photo = photos[0].read_bytes()
    wrapped = "\n".join(textwrap.wrap(b64(photo), 76)) + "\n"  # as GNU base64 writes it
    r = handler(rest_v1(wrapped, True, "image/jpeg"), None)
    assert r["statusCode"] == 200, r["body"]
    assert json.loads(r["body"]) == model.predict_bytes(photo).to_json()
    r = handler(rest_v1(wrapped.replace("\n", "*", 3), True, "image/jpeg"), None)
    assert r["statusCode"] == 400 and "not base64" in json.loads(r["body"])["error"]


def test_npy_that_arrived_as_text_says_to_send_base64(model: Predictor) -> None:
    r = handler(rest_v1(npy(PIXELS).decode("latin-1"), False, "application/x-npy"), None)
    assert r["statusCode"] == 400
    assert "send it base64-encoded (isBase64Encoded: true" in json.loads(r["body"])["error"]
    r = handler(rest_v1(b64(npy(PIXELS)), True, "application/x-npy"), None)
    assert r["statusCode"] == 200


@pytest.mark.parametrize("broken", ["missing", "garbage"])
def test_a_model_that_cannot_load_is_a_500_without_the_path(
    broken: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "secret-location" / "model"
    if broken == "garbage":
        model_dir.mkdir(parents=True)
        (model_dir / "model.json").write_text("{not json")
    monkeypatch.setenv("ITSACAT_MODEL_DIR", str(model_dir))
    monkeypatch.setattr(lambda_handler, "_PREDICTOR", None)
    caplog.set_level(logging.ERROR, logger=lambda_handler.__name__)
    for event in [
        http_v2(None, False, "", method="GET"),
        rest_v1(None, False, "", method="GET"),
        copy.deepcopy(V1),
        copy.deepcopy(V2),
    ]:
        r = handler(event, None)
        assert r["statusCode"] == 500
        error = json.loads(r["body"])["error"]
        assert error == "the model could not be loaded; see the function's logs"
    direct = handler({"instances": [PIXELS.tolist()]}, None)
    assert direct == {
        "error": "the model could not be loaded; see the function's logs",
        "status": 500,
    }
    assert "secret-location" in caplog.text  # the details go to the log, not to the client


def test_accept_and_health_check(model: Predictor) -> None:
    event = rest_v1(json.dumps(PIXELS.tolist()), False, "application/json")
    event["headers"]["Accept"] = "text/csv"
    assert handler(event, None)["statusCode"] == 406
    r = handler(http_v2(None, False, "", method="GET"), None)
    assert r["statusCode"] == 200
    assert json.loads(r["body"]) == {"status": "ok", "model_version": model.version}


def test_direct_invoke(model: Predictor, photos: list[Path]) -> None:
    photo = photos[0].read_bytes()
    assert handler({"image": b64(photo)}, None) == model.predict_bytes(photo).to_json()
    assert handler({"image": "nope"}, None)["status"] == 400


def test_model_is_loaded_once_per_container(
    model: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = []
    real_load = Predictor.load

    def counting_load(*args: Any, **kwargs: Any) -> Predictor:
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(Predictor, "load", counting_load)
    event = http_v2(json.dumps(PIXELS.tolist()), False, "application/json")
    for _ in range(3):
        assert handler(copy.deepcopy(event), None)["statusCode"] == 200
    assert len(loads) == 1


@pytest.fixture(scope="module")
def lambda_zip(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lambda_zip(tiny_model_dir, tmp_path_factory.mktemp("lambda") / "lambda.zip")


def test_zip_fits_lambda_and_names_its_handler(lambda_zip: Path, tiny_model_dir: Path) -> None:
    assert lambda_zip.stat().st_size < LAMBDA_MAX_ZIPPED
    with zipfile.ZipFile(lambda_zip) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
    assert sum(i.file_size for i in infos) < LAMBDA_MAX_UNZIPPED
    assert {
        "itsacat/serve/lambda_handler.py",
        "model/model.json",
        "numpy/__init__.py",
        "PIL/__init__.py",
    } <= names
    # Bytecode only as unchecked-hash pycs in __pycache__ (Lambda's task root is read-only).
    pycs = [n for n in names if n.endswith(".pyc")]
    assert (
        "itsacat/serve/__pycache__/lambda_handler." + sys.implementation.cache_tag + ".pyc" in pycs
    )
    assert all("/__pycache__/" in n for n in pycs)
    with zipfile.ZipFile(lambda_zip) as zf:
        assert zf.read(pycs[0])[4:8] == b"\x01\0\0\0"  # PEP 552: hash-based, unchecked
    manifest = read_lambda_manifest(lambda_zip)
    assert manifest["handler"] == LAMBDA_HANDLER == "itsacat.serve.lambda_handler.handler"
    assert manifest["model_version"] == Predictor.load(tiny_model_dir).version
    assert str(manifest["runtime"]).startswith("python3.")


def test_zip_bytes_are_reproducible(lambda_zip: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_lambda_zip(tiny_model_dir, tmp_path / "again.zip")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(again) == digest(lambda_zip)


def test_zip_runs_alone_in_a_clean_interpreter(
    lambda_zip: Path, tmp_path: Path, photos: list[Path], tiny_model_dir: Path
) -> None:
    """Unzipped like /var/task and run with only the zip on sys.path: no venv, no src/."""
    task = tmp_path / "task"
    with zipfile.ZipFile(lambda_zip) as zf:
        zf.extractall(task)
    event = rest_v1(b64(photos[0].read_bytes()), True, "image/jpeg")
    (tmp_path / "event.json").write_text(json.dumps(event))
    script = (
        "import sys, json, importlib\n"
        f"sys.path.insert(0, {str(task)!r})\n"
        "module, _, name = sys.argv[1].rpartition('.')\n"
        "handler = getattr(importlib.import_module(module), name)\n"
        "import itsacat.serve.lambda_handler as h, numpy, PIL\n"
        "paths = [h.__file__, numpy.__file__, PIL.__file__]\n"
        "result = handler(json.load(open(sys.argv[2])), None)\n"
        "print(json.dumps({'paths': paths, 'result': result}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, LAMBDA_HANDLER, str(tmp_path / "event.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert all(p.startswith(str(task)) for p in reply["paths"]), reply["paths"]
    assert reply["result"]["statusCode"] == 200
    expected = Predictor.load(tiny_model_dir).predict_bytes(photos[0].read_bytes()).to_json()
    assert json.loads(reply["result"]["body"]) == expected
