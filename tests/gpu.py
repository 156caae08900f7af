"""Whether the GPU tests (marker `gpu`) can run here: CuPy installed and a CUDA GPU visible."""

from __future__ import annotations

import importlib.util

import pytest


def has_gpu() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return bool(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # CuPy without a driver or a device
        return False


needs_gpu = pytest.mark.skipif(not has_gpu(), reason="needs CuPy and a CUDA GPU")
