"""The shared request decoder: every content type, every refusal, with real encoded images."""

from __future__ import annotations

import base64
import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from imaging import encode, npy
from itsacat.data import decode_image
from itsacat.serve.codec import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    RequestError,
    decode_request,
    media_type,
    negotiate,
    wants_trace,
)

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


PNG = encode(Image.fromarray(PIXELS), "PNG")
JPEG = encode(Image.fromarray(PIXELS), "JPEG", quality=95)


@pytest.mark.parametrize("ctype", ["image/jpeg", "application/x-image", "image/jpeg; q=1"])
def test_jpeg_bytes_decode_like_decode_image(ctype: str) -> None:
    req = decode_request(JPEG, ctype)
    assert req.images.shape == (1, 64, 64, 3) and not req.batch
    np.testing.assert_array_equal(req.images[0], decode_image(JPEG))


def test_png_is_lossless() -> None:
    np.testing.assert_array_equal(decode_request(PNG, "image/png").images[0], PIXELS)


def test_npy_one_image_and_batch_and_fortran_order() -> None:
    one = decode_request(npy(PIXELS), "application/x-npy")
    assert not one.batch
    np.testing.assert_array_equal(one.images[0], PIXELS)
    batch = np.stack([PIXELS, PIXELS[::-1]])
    got = decode_request(npy(batch), "application/x-npy")
    assert got.batch
    np.testing.assert_array_equal(got.images, batch)
    fortran = decode_request(npy(np.asfortranarray(batch)), "application/x-npy")
    np.testing.assert_array_equal(fortran.images, batch)
    as_float = decode_request(npy(batch.astype(np.float64)), "application/x-npy")
    np.testing.assert_array_equal(as_float.images, batch)


def test_json_forms() -> None:
    b64 = base64.b64encode(PNG).decode()
    cases = {
        json.dumps(PIXELS.tolist()): (1, False),
        json.dumps([PIXELS.tolist(), PIXELS.tolist()]): (2, True),
        json.dumps(b64): (1, False),
        json.dumps([b64, b64, b64]): (3, True),
        json.dumps({"instances": [PIXELS.tolist()]}): (1, True),
        json.dumps({"instances": [b64]}): (1, True),
        json.dumps({"image": "data:image/png;base64," + b64}): (1, False),
    }
    for body, (m, batch) in cases.items():
        req = decode_request(body.encode(), "application/json; charset=utf-8")
        assert req.images.shape == (m, 64, 64, 3) and req.batch == batch, body[:40]
        np.testing.assert_array_equal(req.images[0], PIXELS)
    traced = decode_request(json.dumps({"image": b64, "trace": True}).encode(), "application/json")
    assert traced.trace


@pytest.mark.parametrize(
    ("body", "ctype", "status", "words"),
    [
        (b"", "image/jpeg", 400, "empty"),
        (JPEG[: len(JPEG) // 2], "image/jpeg", 400, "not a readable image"),
        (b"hello, I am text", "image/png", 400, "not a JPEG, PNG"),
        (encode(Image.new("RGB", (1, 1)), "PNG"), "image/png", 400, "too small"),
        (PNG, "text/plain", 415, "unsupported content type"),
        (PNG, None, 415, "no Content-Type"),
        (b"[1, 2, 3]", "application/json", 400, "shape (3,)"),
        (b"[[1, 2], [3]]", "application/json", 400, "ragged"),
        (b"{", "application/json", 400, "not valid JSON"),
        (b"[NaN]", "application/json", 400, "NaN"),
        (json.dumps((PIXELS.astype(int) + 1).tolist()).encode(), "application/json", 400, "0…255"),
        (json.dumps([[[0.5] * 3] * 64] * 64).encode(), "application/json", 400, "fractional"),
        (json.dumps([[[True] * 3] * 64] * 64).encode(), "application/json", 400, "true/false"),
        (b'"https://example.com/cat.jpg"', "application/json", 400, "never fetches URLs"),
        (b'"not base64!"', "application/json", 400, "not valid base64"),
        (b"[]", "application/json", 400, "empty"),
        (b'{"instances": [], "extra": 1}', "application/json", 400, "exactly one of"),
        (b'{"image": "x", "trace": "yes"}', "application/json", 400, "trace"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "JSON"),
        (npy(PIXELS[:32]), "application/x-npy", 400, "shape (32, 64, 3)"),
        (npy(PIXELS.astype(object)), "application/x-npy", 400, "dtype object"),
        (npy(PIXELS)[:-10], "application/x-npy", 400, "send the whole file"),
        (b"\x93NUMPY garbage", "application/x-npy", 400, "not a valid .npy"),
        (npy(np.zeros((65, 64, 64, 3), np.uint8)), "application/x-npy", 413, "split the batch"),
    ],
)
def test_bad_bodies_name_the_problem(
    body: bytes, ctype: str | None, status: int, words: str
) -> None:
    with pytest.raises(RequestError) as err:
        decode_request(body, ctype)
    assert err.value.status == status
    assert words in str(err.value), str(err.value)


def test_npy_header_promising_a_huge_array_is_refused_before_allocating() -> None:
    header = npy(PIXELS).replace(b"(64, 64, 3)", b"(99999999999, 64, 64, 3)".ljust(11))
    header = b"\x93NUMPY\x01\x00" + header[8:]  # a header that claims ~1 PB of pixels
    with pytest.raises(RequestError) as err:
        decode_request(header, "application/x-npy")
    assert err.value.status == 400


def test_bodies_over_the_limit_are_413() -> None:
    with pytest.raises(RequestError) as err:
        decode_request(b"\0" * (MAX_BODY_BYTES + 1), "image/jpeg")
    assert err.value.status == 413


def test_decompression_bomb_and_huge_png_are_refused() -> None:
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")  # 400 MP in ~100 KB
    assert len(bomb) < 1_000_000
    with pytest.raises(RequestError, match="pixels allowed"):
        decode_request(bomb, "image/png")
    big = encode(Image.new("L", (6000, 6000)), "PNG")  # 36 MP: past the full-decode cap
    with pytest.raises(RequestError, match="6000×6000"):
        decode_request(big, "image/png")


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("*/*", True),
        ("application/*", True),
        ("text/html, application/json;q=0.5", True),
        ("text/csv", False),
        ("application/json;q=0", False),
        ("image/png, text/*", False),
        # RFC 9110 §12.5.1: the most specific range that matches decides.
        ("application/json;q=0, */*", False),
        ("*/*;q=0.5, application/*;q=0", False),
        ("*/*;q=0, application/json", True),
        ("application/*;q=0, application/json;q=0.1", True),
        ("text/html;q=0, application/*;q=0.2", True),
        # Only empty elements: as if there were no Accept header.
        (" , ", True),
        (",", True),
    ],
)
def test_accept_negotiation(accept: str | None, ok: bool) -> None:
    if ok:
        assert negotiate(accept) == "application/json"
    else:
        with pytest.raises(RequestError) as err:
            negotiate(accept)
        assert err.value.status == 406


def test_trace_flags_and_media_type() -> None:
    assert wants_trace("trace=1")
    assert wants_trace("a=b&trace=true")
    assert wants_trace("", "foo=bar; trace=true")
    assert not wants_trace("trace=0", "trace=false")
    assert media_type(" Image/PNG ; x=y") == "image/png"


@pytest.mark.parametrize("wrap", [lambda batch: batch, lambda batch: {"instances": batch}])
def test_json_batch_over_the_limit_is_413_before_its_arrays_are_built(wrap: object) -> None:
    # [[[0]]] is no 64×64×3 image: converted first, the batch would be refused for its shape.
    body = json.dumps(wrap([[[[0]]]] * (MAX_BATCH + 1))).encode()  # type: ignore[operator]
    with pytest.raises(RequestError) as err:
        decode_request(body, "application/json")
    assert err.value.status == 413
    assert f"holds {MAX_BATCH + 1} images" in str(err.value), str(err.value)
    # The count reads the nesting: one image's 64 rows are not 64 images.
    one = decode_request(json.dumps(PIXELS.tolist()).encode(), "application/json", max_batch=2)
    np.testing.assert_array_equal(one.images[0], PIXELS)
    three = json.dumps([[[[0]]]] * 3).encode()
    with pytest.raises(RequestError) as err:
        decode_request(three, "application/json", max_batch=2)
    assert err.value.status == 413


def test_base64_wrapped_over_lines_is_accepted() -> None:
    b64 = base64.b64encode(PNG).decode()
    for wrapped in [
        "\n".join(textwrap.wrap(b64, 76)) + "\n",  # GNU base64's output
        "\r\n".join(textwrap.wrap(b64, 64)),  # PEM style
        " \t".join(textwrap.wrap(b64, 10)),
    ]:
        for body in [wrapped, {"image": wrapped}, {"image": "data:image/png;base64," + wrapped}]:
            req = decode_request(json.dumps(body).encode(), "application/json")
            np.testing.assert_array_equal(req.images[0], PIXELS)
    for bad in [b64[:40] + "!" + b64[40:], b64[:40] + "\u00a0" + b64[40:]]:
        with pytest.raises(RequestError, match="not valid base64"):
            decode_request(json.dumps(bad).encode(), "application/json")


def test_a_bool_among_integer_pixels_is_refused() -> None:
    image = PIXELS.tolist()
    image[5][7][1] = True  # numpy alone would read it as 1
    for body in [image, [PIXELS.tolist(), image], {"instances": [image], "trace": True}]:
        with pytest.raises(RequestError) as err:
            decode_request(json.dumps(body).encode(), "application/json")
        assert err.value.status == 400
        assert "true/false" in str(err.value), str(err.value)
    # "trace": true beside the pixels is no pixel.
    traced = {"instances": [PIXELS.tolist()], "trace": True}
    req = decode_request(json.dumps(traced).encode(), "application/json")
    assert req.trace
    np.testing.assert_array_equal(req.images[0], PIXELS)
