"""Bytes for tests: images encoded as a client would send them, arrays as .npy."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    """`img` as the bytes of a `fmt` file (JPEG, PNG, …)."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def npy(arr: np.ndarray) -> bytes:
    """`arr` as the bytes of an .npy file (application/x-npy)."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
