"""Moved copies multiplied without the copies: the same products, the same training.

Oracles: `data.with_shifted` itself (the moves must reproduce what prepare builds, pixel for
pixel), an index gather and a scatter-add for the slice moves, and the plain direct path in
float64 for the factored products and for whole trainings.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from itsacat.config import TrainParams
from itsacat.copies import (
    Copies,
    Factored,
    adjoint,
    find_copies,
    gather_add,
    images_of,
    moves,
    pixel_sources,
)
from itsacat.data import N_X, Dataset, preprocess, training_set
from itsacat.network import init_network
from itsacat.training import fit
from stage import prepared_stage_dir, run_stage

ALL_MOVES = sorted({m for s in (1, 2, 4, 16) for m in moves(s)})


def _photos(m: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (m, 64, 64, 3), dtype=np.uint8)
    labels = (np.arange(m) % 2).astype(np.uint8)
    return Dataset(images, labels, ["non-cat", "cat"])


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shift", [1, 4, 16])
def test_find_copies_reads_the_layout_prepare_builds(flip: bool, shift: int) -> None:
    train, _ = training_set(_photos(6), center=True, flip=flip, shift=shift)
    m0 = 12 if flip else 6
    assert find_copies(train.images) == Copies(m0, moves(shift))
    for j, move in enumerate(moves(shift)):  # the moves are data.with_shifted's, exactly
        block = train.images[j * m0 : (j + 1) * m0].reshape(m0, N_X)
        np.testing.assert_array_equal(
            block, train.images[:m0].reshape(m0, N_X)[:, pixel_sources(move)]
        )


def test_find_copies_refuses_photos_that_are_not_such_copies() -> None:
    train, _ = training_set(_photos(6), center=True, flip=True, shift=4)
    assert find_copies(_photos(60).images) is None  # 60 unrelated photos
    assert find_copies(training_set(_photos(6), True, True, 0)[0].images) is None  # no shift
    assert find_copies(train.images[:-1]) is None  # not five blocks
    touched = train.images.copy()
    touched[-1, 10, 20, 1] ^= 1  # one pixel of the last copy
    assert find_copies(touched) is None


@pytest.mark.parametrize("move", ALL_MOVES)
def test_the_slice_moves_are_the_gather_and_its_transpose(move: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, N_X))
    src = pixel_sources(move)

    moved = rng.standard_normal((3, N_X))
    start = moved.copy()
    gather_add(images_of(a), move, images_of(moved))
    np.testing.assert_array_equal(moved, start + a[:, src])  # out += a T (gather)

    out = np.full((3, N_X), np.nan)
    adjoint(images_of(a), move, images_of(out))
    expected = np.zeros((3, N_X))
    np.add.at(expected, (slice(None), src), a)  # every source pixel: the sum of its copies
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=1e-15)


def _copied_X(flip: bool, shift: int, center: bool) -> tuple[np.ndarray, Copies]:
    train, prep = training_set(_photos(4, seed=3), center=center, flip=flip, shift=shift)
    copies = find_copies(train.images)
    assert copies is not None
    return preprocess(train.images, prep, "float64"), copies


@pytest.mark.parametrize(("flip", "shift", "center"), [(True, 4, True), (False, 2, False)])
def test_factored_products_equal_the_products_over_the_copies(
    flip: bool, shift: int, center: bool
) -> None:
    X, copies = _copied_X(flip, shift, center)
    rng = np.random.default_rng(2)
    W, b = rng.standard_normal((6, N_X)), rng.standard_normal((6, 1))
    dZ = rng.standard_normal((6, X.shape[1]))
    factored = Factored(X, copies)
    assert np.shares_memory(factored.X0, X)  # the originals are a view, not a copy
    Z = factored.first(W, b, lambda S: S @ factored.X0)
    np.testing.assert_allclose(Z, W @ X + b, rtol=1e-12, atol=1e-10)
    dW = factored.grad(dZ, lambda dZS: dZS @ factored.X0.T)
    np.testing.assert_allclose(dW, dZ @ X.T, rtol=1e-12, atol=1e-10)


def test_factored_refuses_x_of_another_layout() -> None:
    X, copies = _copied_X(True, 4, True)
    with pytest.raises(ValueError, match="not laid out"):
        Factored(X[:, :-1], copies)


def _params(**kw: Any) -> TrainParams:
    base = {"learning_rate": 0.005, "epochs": 60, "log_every": 20, "insight_every": 20}
    return TrainParams(**{**base, "dtype": "float64", **kw})


def _fit(params: TrainParams, copies: Copies | None, X: np.ndarray) -> Any:
    Y = (np.arange(X.shape[1]) % 2).reshape(1, -1).astype(np.float64)
    rng = np.random.default_rng(7)
    net = init_network([N_X, 6, 3, 1], "relu", "he", rng, "float64")
    records: list[Any] = []
    result = fit(
        net,
        X,
        Y,
        params,
        rng,
        path="direct",
        copies=copies,
        on_insight=lambda epoch, net, cache, grads, W_before: records.append(
            (epoch, grads.dW[0].copy())
        ),
    )
    return result, records


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": "gd"},
        {"optimizer": "momentum", "l2": 0.7, "class_weight": "balanced"},
        {"optimizer": "adam", "learning_rate": 0.001},
        {"optimizer": "rmsprop", "learning_rate": 0.001, "dropout": 0.2},
    ],
)
def test_fit_with_copies_trains_exactly_like_fit_over_the_copies(
    settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    X, copies = _copied_X(True, 4, True)
    params = _params(**settings)
    with caplog.at_level(logging.INFO, logger="itsacat.training"):
        factored, records = _fit(params, copies, X)
    assert "moved copies came from" in caplog.text
    plain, plain_records = _fit(params, None, X)
    for a, b in zip(
        [*factored.network.W, *factored.network.b],
        [*plain.network.W, *plain.network.b],
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())
    assert [e.train_loss for e in factored.history] == pytest.approx(
        [e.train_loss for e in plain.history], rel=1e-10
    )
    assert [e for e, _ in records] == [e for e, _ in plain_records] != []
    for (_, dW), (_, plain_dW) in zip(records, plain_records, strict=True):
        np.testing.assert_allclose(dW, plain_dW, rtol=1e-8, atol=1e-12 * np.abs(plain_dW).max())


def test_mini_batches_ignore_the_copies(caplog: pytest.LogCaptureFixture) -> None:
    X, copies = _copied_X(True, 4, True)
    with caplog.at_level(logging.INFO, logger="itsacat.training"):
        _fit(_params(optimizer="adam", batch_size=16, epochs=3), copies, X)
    assert "training" in caplog.text and "moved copies" not in caplog.text


def test_float32_factored_training_stays_within_rounding_of_the_copies() -> None:
    X64, copies = _copied_X(True, 4, True)
    X = X64.astype(np.float32, order="F")
    params = dataclasses.replace(_params(optimizer="gd", epochs=30), dtype="float32")
    Y = (np.arange(X.shape[1]) % 2).reshape(1, -1).astype(np.float32)
    nets = []
    for c in (copies, None):
        rng = np.random.default_rng(7)
        net = init_network([N_X, 6, 3, 1], "relu", "he", rng, "float32")
        fit(net, X, Y, params, rng, path="direct", copies=c)
        nets.append(net)
    for a, b in zip(nets[0].W, nets[1].W, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(b).max())


def test_the_train_stage_factors_the_copies_prepare_made(
    tmp_path: Path, repo_root: Path, shared_dir: Path
) -> None:
    prepared_stage_dir(
        tmp_path,
        repo_root,
        shared_dir,
        prepare={"flip": False, "shift": 2},
        train={"optimizer": "adam", "learning_rate": 0.0005, "epochs": 4, "log_every": 2},
    )
    run = run_stage("train", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "its products over the 209 photos the 4 moved copies came from" in run.stderr
    assert (tmp_path / "model" / "model.json").is_file()
