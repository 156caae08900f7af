"""The train stage on `train.backend: cupy`: the same model, insight and metadata as numpy.

Runs only where CuPy sees a CUDA GPU. Each test prepares the real photos from ../shared
with the default prepare params, runs the stage's own `train` (dvclive aside) once with
`backend: numpy` and once with `backend: cupy`, and compares what each wrote to disk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu import needs_gpu
from itsacat.artifacts import load_model
from itsacat.config import Params
from itsacat.data import load_preprocessing, load_split, network_xy
from itsacat.insight import load_insight
from itsacat.network import predict_proba
from itsacat.stages import prepare as prepare_stage
from itsacat.stages import train as train_stage
from itsacat.training import FitResult

pytestmark = [
    pytest.mark.gpu,
    needs_gpu,
]


@pytest.fixture(scope="module")
def prepared(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    data = shared_dir / "datasets" / "catvnoncat"
    paths = prepare_stage.Paths(
        data / "train_catvnoncat.h5", data / "test_catvnoncat.h5", out / "prepared"
    )
    prepare_stage.prepare(Params().prepare, paths)
    return out / "prepared"


def _run(prepared: Path, out: Path, backend: str, **train: Any) -> FitResult:
    base = Params()
    params = dataclasses.replace(
        base, train=dataclasses.replace(base.train, backend=backend, **train)
    )
    paths = train_stage.Paths(prepared, out / "model", out / "insight", out / "dvclive")
    return train_stage.train(params, paths)


def _compare(a: Path, b: Path, rtol: float) -> None:
    ma, mb = load_model(a / "model"), load_model(b / "model")
    assert ma.metadata["path"] == mb.metadata["path"]
    for Wa, Wb in zip([*ma.network.W, *ma.network.b], [*mb.network.W, *mb.network.b], strict=True):
        assert isinstance(Wb, np.ndarray) and Wb.dtype == Wa.dtype  # saved as host arrays
        np.testing.assert_allclose(Wb, Wa, rtol=rtol, atol=rtol * np.abs(Wa).max())
    ia, ib = load_insight(a / "insight"), load_insight(b / "insight")
    np.testing.assert_array_equal(ia.epochs, ib.epochs)
    assert len(ia.rows) == len(ib.rows) > 0
    for ra, rb in zip(ia.rows, ib.rows, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra:
            np.testing.assert_allclose(rb[key], ra[key], rtol=1e-4, atol=1e-7, err_msg=key)


@pytest.mark.parametrize(
    ("setting", "epochs"),
    [
        ({}, 150),  # the defaults: full-batch GD, L2, balanced weights -> the Gram path
        ({"optimizer": "adam", "learning_rate": 0.001, "batch_size": 64}, 50),  # direct path
    ],
    ids=["defaults-gram", "adam-minibatch-direct"],
)
def test_cupy_stage_writes_the_numpy_stage_model(
    prepared: Path, tmp_path: Path, setting: dict[str, Any], epochs: int
) -> None:
    """float64, so the two devices agree to rounding: weights, insight, the path taken.

    Adam on mini-batches amplifies rounding (seen on an H200: the logged losses agreed to
    7 digits up to epoch 50, then drifted apart by epoch 100), so that case runs 50 epochs."""
    kw = {"dtype": "float64", "epochs": epochs, "insight_every": 25, **setting}
    cpu = _run(prepared, tmp_path / "cpu", "numpy", **kw)
    gpu = _run(prepared, tmp_path / "gpu", "cupy", **kw)
    assert gpu.path == cpu.path == ("gram" if not setting else "direct")
    assert gpu.epochs_run == cpu.epochs_run == epochs
    np.testing.assert_allclose(
        [e.train_loss for e in gpu.history], [e.train_loss for e in cpu.history], rtol=1e-6
    )
    _compare(tmp_path / "cpu", tmp_path / "gpu", rtol=1e-5)


def test_cupy_default_float32_model_serves_like_the_numpy_one(
    prepared: Path, tmp_path: Path
) -> None:
    """The default params exactly (float32, 2500 epochs) on the GPU: a float32 model that the
    CPU loads and serves, calling the 50 test photos as the numpy-trained model does.

    Not to rounding: over 2,500 float32 steps cuBLAS's and OpenBLAS's sums drift apart
    (seen on an H200: test probabilities up to 0.09 apart)."""
    cpu = _run(prepared, tmp_path / "cpu", "numpy")
    gpu = _run(prepared, tmp_path / "gpu", "cupy")
    assert gpu.path == cpu.path and gpu.epochs_run == cpu.epochs_run
    m_cpu, m_gpu = load_model(tmp_path / "cpu" / "model"), load_model(tmp_path / "gpu" / "model")
    assert m_gpu.network.W[0].dtype == np.float32
    test = load_split(prepared / "test.npz")
    X, _ = network_xy(test, load_preprocessing(prepared), "float32")
    p_cpu, p_gpu = predict_proba(m_cpu.network, X), predict_proba(m_gpu.network, X)
    agree = int(((p_gpu >= 0.5) == (p_cpu >= 0.5)).sum())
    print(f"test photos called alike: {agree}/50; max |ΔP| {np.abs(p_gpu - p_cpu).max():.3f}")
    assert agree >= 45
    np.testing.assert_allclose(p_gpu, p_cpu, atol=0.25)
    assert gpu.history[-1].train_accuracy > 0.9
