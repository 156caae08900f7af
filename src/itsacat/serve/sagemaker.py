"""SageMaker's prebuilt scikit-learn serving container: the four handler functions.

`itsacat package --kind sagemaker` puts this package under `code/` in model.tar.gz with a
one-line `code/inference.py` that re-exports these functions; the container then calls,
per the SageMaker Python SDK's sklearn contract:

    model = model_fn(model_dir)                         once per worker
    data = input_fn(request_body, content_type)         per request
    prediction = predict_fn(data, model)
    body, content_type = output_fn(prediction, accept)

Bad input must answer 4xx, but the container turns any exception raised by `input_fn`
into a 500. So `input_fn` never raises for a bad body: it returns a `Failure`, which
`predict_fn` passes through and `output_fn` renders as a JSON error with its 4xx status
(a `worker.Response` carrying the status inside the container; `(body, content_type)`
elsewhere, the status then in the JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from itsacat.errors import ItsacatError
from itsacat.predict import Prediction, Predictor
from itsacat.serve.codec import (
    JSON_TYPE,
    Request,
    RequestError,
    decode_request,
    encode_response,
    error_body,
    negotiate,
)


@dataclass(frozen=True)
class Failure:
    """A request refused before prediction: the HTTP status and what was wrong."""

    status: int
    message: str


@dataclass(frozen=True)
class Result:
    predictions: list[Prediction]
    batch: bool


def model_fn(model_dir: str, context: Any = None) -> Predictor:
    """Load the model from the unpacked model.tar.gz (model.json at its root)."""
    return Predictor.load(model_dir)


def input_fn(
    request_body: bytes | str, request_content_type: str | None, context: Any = None
) -> Request | Failure:
    """The request body → a decoded `Request`, or a `Failure` naming what is wrong."""
    body = request_body.encode() if isinstance(request_body, str) else bytes(request_body or b"")
    try:
        return decode_request(body, request_content_type)
    except RequestError as exc:
        return Failure(exc.status, str(exc))
    except ItsacatError as exc:
        return Failure(400, str(exc))


def predict_fn(
    input_data: Request | Failure, model: Predictor, context: Any = None
) -> Result | Failure:
    """Classify the decoded images (a `Failure` passes through untouched)."""
    if isinstance(input_data, Failure):
        return input_data
    predictions = model.predict_images(input_data.images, trace=input_data.trace)
    return Result(predictions, input_data.batch)


def output_fn(prediction: Result | Failure, accept: str | None, context: Any = None) -> Any:
    """The JSON answer; a 4xx JSON error for a `Failure` or an unsatisfiable Accept."""
    try:
        content_type = negotiate(None if accept in (None, "", "*/*") else accept)
        if isinstance(prediction, Failure):
            status, body = prediction.status, error_body(prediction.message, prediction.status)
        else:
            status, body = 200, encode_response(prediction.predictions, prediction.batch)
    except RequestError as exc:
        status, body, content_type = exc.status, error_body(str(exc), exc.status), JSON_TYPE
    if status == 200:
        return body, content_type
    try:  # inside the container, where the status code can be set
        from sagemaker_containers.beta.framework import worker
    except ImportError:
        return body, content_type
    return worker.Response(response=body, status=status, mimetype=content_type)
