"""AWS Lambda: API Gateway (REST v1, HTTP API v2) and function URLs in front of `Predictor`.

Handler: `itsacat.serve.lambda_handler.handler` (`LAMBDA_HANDLER`); the zip built by
`itsacat package --kind lambda` holds this package, numpy, Pillow and the model in `model/`
(`ITSACAT_MODEL_DIR` overrides where the model is read from).

    POST (any path), body = a photo (base64, as API Gateway sends binary media) or JSON
        → 200 {"label", "probability", "model_version"}   (or {"predictions": [...]})
    GET  (any path)            → 200 {"status": "ok", "model_version": ...}
    a direct invoke            → the event itself is the JSON request; the answer is a dict

Bodies mean what they mean on the HTTP endpoint (`codec`); `?trace=1` adds each layer's
outputs. Every mistake is an HTTP 4xx with a JSON error; nothing a client sends makes a 5xx.
The model is loaded on the first call and kept in a module global, so a warm container
answers without reloading it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path
from typing import Any

from itsacat.errors import ItsacatError
from itsacat.predict import Predictor
from itsacat.serve.codec import (
    JSON_TYPE,
    RequestError,
    decode_request,
    encode_response,
    error_body,
    negotiate,
    wants_trace,
)

LAMBDA_HANDLER = "itsacat.serve.lambda_handler.handler"
ENV_MODEL_DIR = "ITSACAT_MODEL_DIR"

log = logging.getLogger(__name__)

# The one module-level state in itsacat: a warm Lambda container keeps its model here.
_PREDICTOR: Predictor | None = None


def model_dir() -> Path:
    """$ITSACAT_MODEL_DIR, else `model/` beside the `itsacat` folder (the zip's root)."""
    configured = os.environ.get(ENV_MODEL_DIR)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "model"


def get_predictor() -> Predictor:
    """The container's predictor, loaded on first use."""
    global _PREDICTOR
    if _PREDICTOR is None:
        _PREDICTOR = Predictor.load(model_dir())
        log.info("loaded model %s", _PREDICTOR.version)
    return _PREDICTOR


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point."""
    if not isinstance(event, dict):
        return _response(400, error_body("the event must be a JSON object", 400))
    if "httpMethod" not in event and "requestContext" not in event:
        return _direct(event)
    try:
        return _http(event)
    except RequestError as exc:
        return _response(exc.status, error_body(str(exc), exc.status))
    except ItsacatError as exc:
        return _response(400, error_body(str(exc), 400))
    except Exception:  # the outermost layer: log it, answer a JSON 500
        log.exception("unexpected error")
        return _response(500, error_body("internal error; see the function's log", 500))


def _http(event: dict[str, Any]) -> dict[str, Any]:
    method = event.get("httpMethod") or event.get("requestContext", {}).get("http", {}).get(
        "method", ""
    )
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    predictor = get_predictor()
    if method.upper() in ("GET", "HEAD"):
        return _response(200, json.dumps({"status": "ok", "model_version": predictor.version}))
    if method.upper() != "POST":
        return _response(405, error_body(f"method {method!r} not allowed; use POST", 405))
    negotiate(headers.get("accept"))
    body = _body(event, headers.get("content-type", ""))
    trace = wants_trace(_query(event), headers.get("x-amzn-sagemaker-custom-attributes"))
    request = decode_request(body, headers.get("content-type"), trace)
    predictions = predictor.predict_images(request.images, trace=request.trace)
    return _response(200, encode_response(predictions, request.batch))


def _body(event: dict[str, Any], content_type: str) -> bytes:
    raw = event.get("body")
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise RequestError("the event's body must be a string")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                "the event says isBase64Encoded but its body is not base64"
            ) from None
    if content_type.lower().startswith(("image/", "application/x-image", "application/octet")):
        raise RequestError(
            "a binary body arrived as text; send it base64-encoded (API Gateway: add "
            "image/* and application/x-image to the API's binary media types)"
        )
    return raw.encode("utf-8", "surrogatepass")


def _query(event: dict[str, Any]) -> str:
    if "rawQueryString" in event:  # HTTP API v2 and function URLs
        return str(event.get("rawQueryString") or "")
    params = event.get("queryStringParameters") or {}
    return "&".join(f"{k}={v}" for k, v in params.items())


def _direct(event: dict[str, Any]) -> dict[str, Any]:
    """A direct invoke (`aws lambda invoke --payload '{"image": "<base64>"}'`)."""
    try:
        request = decode_request(json.dumps(event).encode(), JSON_TYPE)
        predictions = get_predictor().predict_images(request.images, trace=request.trace)
        result: dict[str, Any] = json.loads(encode_response(predictions, request.batch))
        return result
    except RequestError as exc:
        return {"error": str(exc), "status": exc.status}
    except ItsacatError as exc:
        return {"error": str(exc), "status": 400}


def _response(status: int, body: bytes | str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": JSON_TYPE},
        "body": body.decode() if isinstance(body, bytes) else body,
        "isBase64Encoded": False,
    }
