"""The array-backend seam: numpy everywhere, CuPy when `train.backend: cupy` and a GPU exist.

Core code never imports cupy. It asks `namespace(array)` for the module that owns an array
and calls `xp.exp`, `xp.maximum`… on it, so one implementation runs on either device.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from itsacat.errors import ConfigError


def namespace(array: Any) -> types.ModuleType:
    """numpy or cupy, whichever owns `array`."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def get_backend(name: str) -> types.ModuleType:
    """The array module named by `train.backend`, with a clear error when CuPy is absent."""
    if name == "numpy":
        return np
    if name == "cupy":
        try:
            import cupy
        except ImportError:
            raise ConfigError(
                "train.backend is 'cupy' but CuPy is not installed; "
                "pip install 'itsacat[gpu]' on a machine with a CUDA GPU, "
                "or set train.backend: numpy (params.yaml)"
            ) from None
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception:
            raise ConfigError(
                "train.backend is 'cupy' but no CUDA GPU is visible; "
                "set train.backend: numpy (params.yaml)"
            ) from None
        return cupy
    raise ConfigError(f"train.backend must be numpy or cupy, got {name!r} (params.yaml)")


def to_numpy(array: Any) -> np.ndarray:
    """A host copy of any backend's array (a no-op for numpy)."""
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array)
