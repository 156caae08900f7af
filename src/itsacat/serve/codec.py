"""Request bodies in, JSON out: the one decoding path every host shares.

The HTTP server, the Lambda handler and SageMaker's `input_fn`/`output_fn` call
`decode_request` and `encode_response`, so a body means the same thing wherever it lands.

Content types (parameters such as `; charset=utf-8` are ignored):

    image/jpeg, image/png, image/*,       one encoded photo, any size (`data.decode_image`)
    application/x-image, …/octet-stream
    application/x-npy                     a uint8 array (64, 64, 3), or (m, 64, 64, 3) for a batch
    application/json                      one of
        [[[r, g, b], …64], …64]           one image as nested 64×64×3 integers 0…255
        [image, image, …]                 a batch of such arrays
        "<base64>"                        one encoded photo, base64 (a data: URL is fine too)
        ["<base64>", …]                   a batch of encoded photos
        {"instances": <any of the above>, "trace": true}
        {"image": "<base64>"}

The answer is always JSON: one prediction object for one image, `{"predictions": [...]}`
for a batch. URLs are refused, never fetched. Every bad body raises `RequestError` with
the HTTP status to answer and a message naming the problem and the fix.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from itsacat.data import IMAGE_SIZE, decode_image
from itsacat.errors import ImageError, ItsacatError
from itsacat.predict import Prediction

MAX_BODY_BYTES = 16 * 1024 * 1024  # a 12-megapixel JPEG is ~5 MB; 64 base64 photos fit
MAX_BATCH = 64
JSON_TYPE = "application/json"
NPY_TYPE = "application/x-npy"
BINARY_TYPES = ("application/x-image", "application/octet-stream")
ACCEPTED_TYPES = ("image/jpeg", "image/png", *BINARY_TYPES, NPY_TYPE, JSON_TYPE)
SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
# The Accept ranges that match JSON, by how specific they are.
_JSON_RANGES = {JSON_TYPE: 3, "application/*": 2, "*/*": 1}
_ASCII_SPACE = str.maketrans("", "", " \t\n\r\f\v")


class RequestError(ItsacatError):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """A decoded request: images ready for `Predictor.predict_images`."""

    images: NDArray[np.uint8]  # (m, 64, 64, 3)
    batch: bool  # answer with {"predictions": [...]} rather than one object
    trace: bool = False


def media_type(header: str | None) -> str:
    """'Application/JSON; charset=utf-8' → 'application/json' ('' when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def negotiate(accept: str | None) -> str:
    """The response type for an Accept header: JSON, or `RequestError` 406.

    As RFC 9110 §12.5.1 reads: JSON's quality is that of the most specific range that
    matches it (`application/json` over `application/*` over `*/*`), and q=0 means "not
    acceptable". A header of only empty elements counts as no header.
    """
    best: tuple[int, float] | None = None  # (specificity, q) of the best range for JSON
    for item in (accept or "").split(","):
        kind, *params = (p.strip() for p in item.split(";"))
        if not kind:
            continue
        specificity = _JSON_RANGES.get(kind.lower())
        if best is None:
            best = (0, 0.0)  # a non-empty header: JSON is refused unless a range names it
        if specificity is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = max(best, (specificity, q))
    if best is None or best[1] > 0:
        return JSON_TYPE
    raise RequestError(
        f"cannot answer in {accept!r}: the only response type is {JSON_TYPE}; "
        f"send Accept: {JSON_TYPE} (or none)",
        406,
    )


def wants_trace(query: str = "", custom_attributes: str | None = None) -> bool:
    """`?trace=1` or SageMaker's `X-Amzn-SageMaker-Custom-Attributes: trace=true`."""
    for part in (query or "").split("&") + (custom_attributes or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "trace" and value.strip().lower() in ("1", "true", "yes"):
            return True
    return False


def decode_request(
    body: bytes, content_type: str | None, trace: bool = False, max_batch: int = MAX_BATCH
) -> Request:
    """A request body and its Content-Type → images (m, 64, 64, 3) to classify."""
    kind = media_type(content_type)
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(
            f"the body is {len(body):,} bytes, more than the {MAX_BODY_BYTES:,} allowed; "
            "send one photo or a smaller batch",
            413,
        )
    if not body:
        raise RequestError(
            "the body is empty; send the bytes of a photo (Content-Type: image/jpeg)"
        )
    if kind.startswith("image/") or kind in BINARY_TYPES:
        return Request(_decode_photo(body)[None], batch=False, trace=trace)
    if kind == NPY_TYPE:
        images, batch = _decode_npy(body, max_batch)
        return Request(images, batch, trace)
    if kind == JSON_TYPE:
        return _decode_json(body, trace, max_batch)
    shown = repr(content_type) if content_type else "no Content-Type"
    raise RequestError(
        f"unsupported content type {shown}; send one of {', '.join(ACCEPTED_TYPES)}", 415
    )


def encode_response(predictions: Sequence[Prediction], batch: bool) -> bytes:
    """Predictions → the JSON body: one object, or {"predictions": [...]} for a batch."""
    if batch:
        return _dumps({"predictions": [p.to_json() for p in predictions]})
    return _dumps(predictions[0].to_json())


def error_body(message: str, status: int) -> bytes:
    """The JSON body of every error answer."""
    return _dumps({"error": message, "status": status})


def b64decode(text: str) -> bytes:
    """Strict base64, except that ASCII whitespace is skipped: `base64` wraps at 76 columns.

    Raises `ValueError` (binascii.Error) on any other character outside the alphabet.
    """
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # stripped only when needed: 30 ms per 16 MB, 60 % of the decode
        return base64.b64decode(text.translate(_ASCII_SPACE), validate=True)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _decode_photo(data: bytes, what: str = "the image") -> NDArray[np.uint8]:
    try:
        return decode_image(data)
    except ImageError as exc:
        raise RequestError(f"{what}: {exc}" if what != "the image" else str(exc)) from None


def _check_pixels(
    arr: NDArray[Any], where: str, max_batch: int, batch_only: bool = False
) -> tuple[NDArray[np.uint8], bool]:
    """A numeric array of one image or a batch → uint8 (m, 64, 64, 3) and whether a batch."""
    shape = tuple(arr.shape)
    if shape[-3:] != SHAPE or arr.ndim not in ((4,) if batch_only else (3, 4)):
        expected = "(m, 64, 64, 3)" if batch_only else "(64, 64, 3) for one image or (m, 64, 64, 3)"
        raise RequestError(f"{where} has shape {shape}, expected {expected} for a batch")
    batch = arr.ndim == 4
    if not batch:
        arr = arr[None]
    if arr.shape[0] == 0:
        raise RequestError(f"{where} holds no images; send at least one")
    if arr.shape[0] > max_batch:
        raise RequestError(
            f"{where} holds {arr.shape[0]} images, more than the {max_batch} allowed in one "
            "request; split the batch",
            413,
        )
    if arr.dtype == np.uint8:
        return arr, batch
    if arr.dtype.kind not in "iuf":
        raise RequestError(f"{where} holds {arr.dtype} values; pixels must be integers 0…255")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise RequestError(f"{where} holds NaN or infinite values; pixels must be integers 0…255")
    if arr.min() < 0 or arr.max() > 255:
        raise RequestError(
            f"{where} holds values from {arr.min()} to {arr.max()}; pixels must be 0…255 "
            "(send raw uint8 pixels, not scaled or centred ones)"
        )
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise RequestError(
            f"{where} holds fractional values; pixels must be whole numbers 0…255 (uint8)"
        )
    return arr.astype(np.uint8), batch


def _decode_npy(body: bytes, max_batch: int) -> tuple[NDArray[np.uint8], bool]:
    """An .npy body, its header checked before any array is allocated."""
    fmt = np.lib.format
    f = io.BytesIO(body)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise RequestError(
            f"the body is not a valid .npy array ({exc}); send np.save() output as {NPY_TYPE}"
        ) from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise RequestError(f"the .npy array has dtype {dtype}; send uint8 pixels (0…255)")
    if not (len(shape) in (3, 4) and tuple(shape[-3:]) == SHAPE):
        raise RequestError(
            f"the .npy array has shape {shape}, expected (64, 64, 3) for one image or "
            "(m, 64, 64, 3) for a batch"
        )
    count = math.prod(shape)
    offset = f.tell()
    if len(body) - offset != count * dtype.itemsize:
        raise RequestError(
            f"the .npy array of shape {shape} needs {count * dtype.itemsize:,} data bytes, "
            f"the body holds {len(body) - offset:,}; send the whole file"
        )
    arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return _check_pixels(arr, "the .npy array", max_batch)


def _refuse_constant(name: str) -> Any:
    raise RequestError(f"the JSON holds {name}; pixels must be integers 0…255")


def _decode_json(body: bytes, trace: bool, max_batch: int) -> Request:
    try:
        obj = json.loads(body, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(f"the body is not valid JSON ({exc})") from None
    if isinstance(obj, dict):
        unknown = sorted(set(obj) - {"instances", "image", "trace"})
        if unknown or ("instances" in obj) == ("image" in obj):
            raise RequestError(
                'a JSON object must hold exactly one of "instances" (a list of images) or '
                f'"image" (one base64 photo), and optionally "trace"; got keys {sorted(obj)}'
            )
        if "trace" in obj:
            if not isinstance(obj["trace"], bool):
                raise RequestError(f'"trace" must be true or false, got {obj["trace"]!r}')
            trace = trace or obj["trace"]
        if "image" in obj:
            if not isinstance(obj["image"], str):
                raise RequestError('"image" must be a base64 string of a JPEG or PNG file')
            return Request(_decode_b64(obj["image"], "the image")[None], False, trace)
        instances = obj["instances"]
        if not isinstance(instances, list):
            raise RequestError('"instances" must be a list of images')
        images, _ = _json_images(
            instances, max_batch, force_batch=True, stray_bools=_stray_bools(body, obj)
        )
        return Request(images, True, trace)
    images, batch = _json_images(
        obj, max_batch, force_batch=False, stray_bools=_stray_bools(body, obj)
    )
    return Request(images, batch, trace)


def _stray_bools(body: bytes, obj: Any) -> bool:
    """Whether the JSON may hold true/false other than its "trace" flag.

    A cheap scan of the bytes, so that only such bodies pay for `_holds_bool`'s walk.
    """
    literals = body.count(b"true") + body.count(b"false")
    return literals > int(isinstance(obj, dict) and "trace" in obj)


def _holds_bool(obj: Any) -> bool:
    """Whether nested lists hold true or false anywhere (numpy reads them as 1 and 0)."""
    if isinstance(obj, bool):
        return True
    return isinstance(obj, list) and any(map(_holds_bool, obj))


def _json_count(obj: list[Any], force_batch: bool) -> int:
    """How many images a non-empty JSON list holds, read from its first item's nesting.

    One 64×64×3 array nests three lists deep, a batch of them four; a list of anything else
    (strings, objects…) holds one image per item.
    """
    if force_batch:
        return len(obj)
    first, depth = obj[0], 1
    while isinstance(first, list) and first and depth < 4:
        first, depth = first[0], depth + 1
    one_image = depth < 4 and isinstance(first, list | int | float)
    return 1 if one_image else len(obj)


def _json_images(
    obj: Any, max_batch: int, *, force_batch: bool, stray_bools: bool
) -> tuple[NDArray[np.uint8], bool]:
    if isinstance(obj, str):
        if force_batch:
            raise RequestError('"instances" must be a list, not one string')
        return _decode_b64(obj, "the image")[None], False
    if not isinstance(obj, list):
        raise RequestError(
            f"the JSON is a {type(obj).__name__}; send a 64×64×3 array, a base64 string, a "
            'list of either, or {"instances": [...]}'
        )
    if not obj:
        raise RequestError("the JSON list is empty; send at least one image")
    count = _json_count(obj, force_batch)
    if count > max_batch:  # before a single array is built
        raise RequestError(
            f"the JSON holds {count} images, more than the {max_batch} allowed in one "
            "request; split the batch",
            413,
        )
    if all(isinstance(x, str) for x in obj):
        return np.stack([_decode_b64(x, f"image {i}") for i, x in enumerate(obj)]), True
    if any(isinstance(x, str) for x in obj):
        raise RequestError("the JSON list mixes strings and arrays; send one kind")
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(
            "the JSON arrays are ragged or hold non-numbers; each image must be 64 rows "
            "of 64 pixels of 3 integers 0…255"
        ) from None
    if arr.dtype == bool or (stray_bools and arr.dtype.kind in "iuf" and _holds_bool(obj)):
        raise RequestError(
            "the JSON arrays hold true/false; pixels must be integers 0…255, not booleans"
        )
    if arr.dtype.kind not in "iuf":
        raise RequestError(
            "the JSON arrays hold non-numbers; each image must be 64 rows of 64 pixels "
            "of 3 integers 0…255"
        )
    return _check_pixels(arr, "the JSON array", max_batch, batch_only=force_batch)


def _decode_b64(text: str, what: str) -> NDArray[np.uint8]:
    head = text[:16].lower()
    if head.startswith(("http://", "https://", "ftp://", "file:", "s3://")):
        raise RequestError(
            f"{what} is a URL; this server never fetches URLs. Send the photo's bytes, "
            "base64-encoded"
        )
    if head.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        data = b64decode(text)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise RequestError(
            f"{what} is not valid base64; send base64 of a JPEG or PNG file"
        ) from None
    if not data:
        raise RequestError(f"{what} is empty; send base64 of a JPEG or PNG file")
    return _decode_photo(data, what)
