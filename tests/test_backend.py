"""The array-backend seam: numpy by default, CuPy only where a GPU is present."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from gpu import needs_gpu
from itsacat.backend import get_backend, namespace, to_numpy
from itsacat.config import TrainParams
from itsacat.errors import ConfigError
from itsacat.network import init_network
from itsacat.training import fit


def test_numpy_is_the_default_backend() -> None:
    assert get_backend(TrainParams().backend) is np
    a = np.zeros(3)
    assert namespace(a) is np and to_numpy(a) is a


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_cupy_without_cupy_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train.backend is 'cupy' but CuPy is not installed"):
        get_backend("cupy")


@pytest.mark.gpu
@needs_gpu
def test_cupy_trains_the_same_network_as_numpy() -> None:
    cupy = get_backend("cupy")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 40))
    Y = (X[:1] > 0).astype(np.float64)
    params = TrainParams(
        optimizer="adam",
        learning_rate=0.01,
        epochs=50,
        dtype="float64",
        insight_every=0,
        log_every=10,
    )
    cpu = fit(
        init_network([50, 6, 1], "relu", "he", np.random.default_rng(1), "float64"),
        X,
        Y,
        params,
        np.random.default_rng(2),
    ).network
    gpu_net = init_network([50, 6, 1], "relu", "he", np.random.default_rng(1), "float64", cupy)
    gpu = fit(gpu_net, cupy.asarray(X), cupy.asarray(Y), params, np.random.default_rng(2)).network
    for a, b in zip(cpu.W, gpu.W, strict=True):
        assert np.allclose(a, to_numpy(b), rtol=1e-6, atol=1e-9)
