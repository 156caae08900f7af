"""AWS Lambda: API Gateway (REST v1, HTTP API v2) and function URLs in front of `Predictor`.

Handler: `itsacat.serve.lambda_handler.handler` (`LAMBDA_HANDLER`); the zip built by
`itsacat package --kind lambda` holds this package, numpy, Pillow and the model in `model/`
(`ITSACAT_MODEL_DIR` overrides where the model is read from).

    POST (any path), body = a photo (base64, as API Gateway sends binary media) or JSON
        → 200 {"label", "probability", "threshold", "model_version"}   (or {"predictions": [...]})
    GET  (any path)            → 200 {"status": "ok", "model_version": ...}
    a direct invoke            → the event itself is the JSON request; the answer is a dict

Bodies mean what they mean on the HTTP endpoint (`codec`); `?trace=1` adds each layer's
outputs. Every mistake, in the body or in the event's shape, is an HTTP 4xx with a JSON
error; nothing a client sends makes a 5xx. A model that cannot load is the deployment's
fault: a 500 whose details go to the function's log, never to the client. The model is
loaded on the first call and kept in a module global, so a warm container answers without
reloading it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from itsacat.errors import ItsacatError
from itsacat.predict import Predictor
from itsacat.serve.codec import (
    BINARY_TYPES,
    JSON_TYPE,
    NPY_TYPE,
    RequestError,
    b64decode,
    decode_request,
    encode_response,
    error_body,
    media_type,
    negotiate,
    wants_trace,
)

LAMBDA_HANDLER = "itsacat.serve.lambda_handler.handler"
ENV_MODEL_DIR = "ITSACAT_MODEL_DIR"

log = logging.getLogger(__name__)

_NO_MODEL = "the model could not be loaded; see the function's logs"

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


class _ModelUnavailable(Exception):
    """The function's own model failed to load: a 500, not the client's mistake."""


def _loaded_predictor() -> Predictor:
    """`get_predictor`, its failure logged in full and answered without the details."""
    try:
        return get_predictor()
    except ItsacatError as exc:
        log.error("the model in %s could not be loaded: %s", model_dir(), exc)
        raise _ModelUnavailable from exc


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
    except _ModelUnavailable:
        return _response(500, error_body(_NO_MODEL, 500))
    except ItsacatError as exc:
        return _response(400, error_body(str(exc), 400))
    except Exception:  # the outermost layer: log it, answer a JSON 500
        log.exception("unexpected error")
        return _response(500, error_body("internal error; see the function's log", 500))


def _http(event: dict[str, Any]) -> dict[str, Any]:
    method = _method(event)
    headers = {str(k).lower(): str(v) for k, v in _object(event.get("headers"), "headers").items()}
    if method in ("GET", "HEAD"):
        version = _loaded_predictor().version
        return _response(200, json.dumps({"status": "ok", "model_version": version}))
    if method != "POST":
        return _response(405, error_body(f"method {method!r} not allowed; use POST", 405))
    negotiate(headers.get("accept"))
    body = _body(event, headers.get("content-type", ""))
    trace = wants_trace(_query(event), headers.get("x-amzn-sagemaker-custom-attributes"))
    request = decode_request(body, headers.get("content-type"), trace)
    predictions = _loaded_predictor().predict_images(request.images, trace=request.trace)
    return _response(200, encode_response(predictions, request.batch))


def _method(event: dict[str, Any]) -> str:
    """REST APIs (payload 1.0) name the method at the top; HTTP APIs (payload 2.0) and
    function URLs in requestContext.http."""
    if "httpMethod" in event:
        field, method = "httpMethod", event["httpMethod"]
    else:
        context = _object(event.get("requestContext"), "requestContext", required=True)
        http = _object(context.get("http"), "requestContext.http", required=True)
        field, method = "requestContext.http.method", http.get("method")
    if not isinstance(method, str) or not method:
        raise RequestError(
            f'the event\'s {field} must be an HTTP method such as "POST", got {_json_kind(method)}'
        )
    return method.upper()


def _object(value: Any, field: str, *, required: bool = False) -> dict[str, Any]:
    """An event field that must be a JSON object; absent or null reads as {} unless required."""
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"the event's {field} must be a JSON object, got {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    """A value's type as JSON names it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    kinds: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _body(event: dict[str, Any], content_type: str) -> bytes:
    raw = event.get("body")
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise RequestError("the event's body must be a string")
    flag = event.get("isBase64Encoded")
    if flag is True or (isinstance(flag, str) and flag.lower() == "true"):
        try:
            return b64decode(raw)
        except ValueError:  # binascii.Error, and non-ASCII text
            raise RequestError(
                "the event says isBase64Encoded but its body is not base64"
            ) from None
    kind = media_type(content_type)
    if kind.startswith("image/") or kind in (*BINARY_TYPES, NPY_TYPE):
        raise RequestError(
            "the binary body arrived as text; send it base64-encoded (isBase64Encoded: true; "
            "on API Gateway, add image/*, application/x-image and application/x-npy to the "
            "API's binary media types)"
        )
    return raw.encode("utf-8", "surrogatepass")


def _query(event: dict[str, Any]) -> str:
    if "rawQueryString" in event:  # HTTP API v2 and function URLs
        raw = event["rawQueryString"]
        if raw is not None and not isinstance(raw, str):
            raise RequestError(
                f"the event's rawQueryString must be a string, got {_json_kind(raw)}"
            )
        return raw or ""
    params = _object(event.get("queryStringParameters"), "queryStringParameters")
    return "&".join(f"{k}={v}" for k, v in params.items())


def _direct(event: dict[str, Any]) -> dict[str, Any]:
    """A direct invoke (`aws lambda invoke --payload '{"image": "<base64>"}'`)."""
    try:
        request = decode_request(json.dumps(event).encode(), JSON_TYPE)
        predictions = _loaded_predictor().predict_images(request.images, trace=request.trace)
        result: dict[str, Any] = json.loads(encode_response(predictions, request.batch))
        return result
    except RequestError as exc:
        return {"error": str(exc), "status": exc.status}
    except _ModelUnavailable:
        return {"error": _NO_MODEL, "status": 500}
    except ItsacatError as exc:
        return {"error": str(exc), "status": 400}


def _response(status: int, body: bytes | str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": JSON_TYPE},
        "body": body.decode() if isinstance(body, bytes) else body,
        "isBase64Encoded": False,
    }
