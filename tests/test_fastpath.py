"""The Gram fast path trains exactly like the direct path, and is picked exactly when it may be.

Oracle: the direct path (itself checked against finite differences in test_network.py).
Every comparison runs in float64, where the two paths must agree to rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from gpu import needs_gpu
from itsacat.config import TrainParams
from itsacat.insight import InsightRecorder
from itsacat.network import Network, init_network, predict_proba
from itsacat.optim import Optimizer, SpanLayer
from itsacat.training import FitResult, choose_path, fit

N_X, M, M_VAL = 300, 40, 15  # more pixels than photos, as with the real 12288 × 209
SIZES = [N_X, 8, 4, 1]


def _data(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((1, N_X))
    X = rng.standard_normal((N_X, M))
    X_val = rng.standard_normal((N_X, M_VAL))
    Y = (w @ X > 0).astype(np.float64)
    Y_val = (rng.random((1, M_VAL)) > 0.5).astype(np.float64)
    return X, Y, X_val, Y_val


def _params(**kw: Any) -> TrainParams:
    base = {
        "optimizer": "gd",
        "learning_rate": 0.01,
        "epochs": 300,
        "log_every": 20,
        "insight_every": 0,
        "l2": 0.0,  # plain GD unless a setting asks for more
        "class_weight": "none",
    }
    return TrainParams(**{**base, "dtype": "float64", **kw})


def _train(params: TrainParams, path: str, **kw: Any) -> FitResult:
    X, Y, X_val, Y_val = _data()
    rng = np.random.default_rng(5)
    net = init_network(SIZES, "relu", "he", rng, "float64")
    return fit(net, X, Y, params, rng, X_val=X_val, Y_val=Y_val, path=path, **kw)


def _assert_same_nets(a: Network, b: Network) -> None:
    for Wa, Wb in zip([*a.W, *a.b], [*b.W, *b.b], strict=True):
        np.testing.assert_allclose(Wa, Wb, rtol=1e-9, atol=1e-12 * np.abs(Wa).max())


SETTINGS = [
    {"optimizer": "gd"},
    {"optimizer": "momentum"},
    {"optimizer": "gd", "l2": 0.5},
    {"optimizer": "momentum", "l2": 0.3, "batch_size": 16},
    {"optimizer": "gd", "batch_size": 7, "dropout": 0.2, "lr_decay": 0.01},
    {"optimizer": "momentum", "batch_size": 13, "l2": 0.2, "dropout": 0.1},
    {"optimizer": "gd", "class_weight": "balanced"},
    {"optimizer": "momentum", "batch_size": 16, "l2": 0.2, "class_weight": "balanced"},
]


@pytest.mark.parametrize(
    "setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items())
)
def test_gram_path_trains_exactly_like_the_direct_path(setting: dict[str, Any]) -> None:
    params = _params(**setting)
    direct, gram = _train(params, "direct"), _train(params, "gram")
    assert (direct.path, gram.path) == ("direct", "gram")
    _assert_same_nets(direct.network, gram.network)
    X, _, X_val, _ = _data()
    for data in (X, X_val):
        np.testing.assert_allclose(
            predict_proba(gram.network, data), predict_proba(direct.network, data), atol=1e-10
        )
    assert len(direct.history) == len(gram.history) == 300 // 20 + 1
    for d, g in zip(direct.history, gram.history, strict=True):
        assert g.train_loss == pytest.approx(d.train_loss, rel=1e-9)
        assert g.val_loss == pytest.approx(d.val_loss, rel=1e-9)
        assert (g.train_accuracy, g.val_accuracy) == (d.train_accuracy, d.val_accuracy)
    # the training moved W[0] a long way, so agreement is not just "both stayed at init"
    start = init_network(SIZES, "relu", "he", np.random.default_rng(5), "float64")
    moved = np.linalg.norm(gram.network.W[0] - start.W[0]) / np.linalg.norm(start.W[0])
    assert moved > 0.05


@pytest.mark.parametrize(
    ("optimizer", "m", "expected"),
    [
        ("gd", M, "gram"),
        ("momentum", M, "gram"),
        ("adam", M, "direct"),
        ("rmsprop", M, "direct"),
        ("gd", N_X, "direct"),  # as many photos as pixels: XᵀX is no smaller than X
    ],
)
def test_path_is_chosen_by_the_optimizer_and_shapes(optimizer: str, m: int, expected: str) -> None:
    assert choose_path(_params(optimizer=optimizer), N_X, m)[0] == expected
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_X, m))
    Y = (rng.random((1, m)) > 0.5).astype(np.float64)
    net = init_network(SIZES, "relu", "he", rng, "float64")
    result = fit(net, X, Y, _params(optimizer=optimizer, epochs=3), rng)
    assert result.path == expected


def test_l2_and_dropout_keep_the_gram_path() -> None:
    for setting in ({"l2": 0.7}, {"dropout": 0.3}, {"batch_size": 8, "lr_decay": 0.1}):
        assert _train(_params(epochs=2, **setting), "auto").path == "gram"


def test_the_log_says_which_path_ran(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="itsacat.training"):
        _train(_params(epochs=2), "auto")
        _train(_params(optimizer="adam", epochs=2), "auto")
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training ")]
    assert "gram path" in starts[0] and "span" in starts[0]
    assert "direct path" in starts[1] and "adam" in starts[1]


def test_forcing_the_gram_path_with_adam_is_refused() -> None:
    with pytest.raises(ValueError, match="gram path needs gd or momentum, not 'adam'"):
        _train(_params(optimizer="adam", epochs=1), "gram")


@pytest.mark.parametrize("setting", [{}, {"batch_size": 16, "l2": 0.4, "optimizer": "momentum"}])
def test_insight_records_from_the_gram_path_equal_the_direct_ones(setting: dict[str, Any]) -> None:
    params = _params(epochs=120, insight_every=40, **setting)
    records = {}
    for path in ("direct", "gram"):
        recorder = InsightRecorder()
        _train(params, path, on_insight=recorder)
        records[path] = recorder
    direct, gram = records["direct"], records["gram"]
    assert gram.epochs == direct.epochs == [1, 40, 80, 120]
    assert len(gram.rows) == len(direct.rows) == 4 * len(SIZES[1:])
    for d, g in zip(direct.rows, gram.rows, strict=True):
        assert g.keys() == d.keys()
        for key in d:
            assert g[key] == pytest.approx(d[key], rel=1e-8, abs=1e-12), key
    assert all(r["update_ratio"] > 0 for r in gram.rows)  # W_before really is before
    for ud, ug in zip(direct.units, gram.units, strict=True):
        for ld, lg in zip(ud, ug, strict=True):
            for stat in ld:
                np.testing.assert_allclose(lg[stat], ld[stat], rtol=1e-8, atol=1e-12)


def test_patience_keeps_the_same_best_weights_on_both_paths() -> None:
    params = _params(learning_rate=0.05, epochs=3000, patience=3, log_every=5)
    direct, gram = _train(params, "direct"), _train(params, "gram")
    assert "did not improve" in gram.stopped
    assert gram.epochs_run == direct.epochs_run < 3000
    _assert_same_nets(direct.network, gram.network)


def test_gram_path_stops_on_divergence_with_a_materialised_network() -> None:
    X, Y, _, _ = (a.astype(np.float32) for a in _data())
    rng = np.random.default_rng(0)
    net = init_network(SIZES, "relu", "he", rng, "float32")
    with np.errstate(all="ignore"):
        result = fit(net, X * 1e3, Y, _params(learning_rate=1e30, epochs=50), rng)
    assert result.path == "gram"
    assert result.epochs_run < 50
    assert result.diverged and "cost became" in result.stopped
    assert result.network.W[0].shape == (8, N_X)


def test_span_layer_step_equals_the_weight_update_it_stands_for() -> None:
    """One SpanLayer step on (a, C) == one Optimizer step on W = a·W0 + C·Xᵀ."""
    rng = np.random.default_rng(2)
    X, W0 = rng.standard_normal((30, 6)), rng.standard_normal((4, 30))
    idx = np.array([4, 1, 5])
    for kind in ("gd", "momentum"):
        span = SpanLayer(np.zeros((4, 6)), kind, momentum=0.8)
        W, opt = W0.copy(), Optimizer(kind, momentum=0.8)
        for _ in range(3):
            dZ = rng.standard_normal((4, 3))
            dW = dZ @ X[:, idx].T + (0.6 / 3) * W
            opt.update([W], [dW], lr=0.1)
            span.step(dZ, idx, 3, lr=0.1, l2=0.6)
        np.testing.assert_allclose(span.a * W0 + span.C @ X.T, W, rtol=1e-12)


@pytest.mark.parametrize("kind", ["rmsprop", "adam"])
def test_in_place_optimizer_matches_the_textbook_update(kind: str) -> None:
    rng = np.random.default_rng(3)
    p = rng.standard_normal((3, 4))
    expected, v, s = p.copy(), np.zeros_like(p), np.zeros_like(p)
    opt = Optimizer(kind, momentum=0.9, beta2=0.99, epsilon=1e-8)
    for t in range(1, 5):
        g = rng.standard_normal(p.shape)
        opt.update([p], [g], lr=0.01)
        s = 0.99 * s + 0.01 * g * g
        if kind == "rmsprop":
            expected -= 0.01 * g / (np.sqrt(s) + 1e-8)
        else:
            v = 0.9 * v + 0.1 * g
            expected -= 0.01 * (v / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.99**t)) + 1e-8)
    np.testing.assert_allclose(p, expected, rtol=1e-12)


@pytest.mark.gpu
@needs_gpu
def test_cupy_gram_and_direct_paths_match_numpy() -> None:
    import cupy

    X, Y, X_val, Y_val = _data()
    params = _params(epochs=50, batch_size=16, l2=0.1)
    reference = _train(params, "direct").network
    for path in ("direct", "gram"):
        rng = np.random.default_rng(5)
        net = init_network(SIZES, "relu", "he", rng, "float64", xp=cupy)
        dev = [cupy.asarray(a) for a in (X, Y, X_val, Y_val)]
        result = fit(net, dev[0], dev[1], params, rng, X_val=dev[2], Y_val=dev[3], path=path)
        host = Network(
            [w.get() for w in result.network.W], [b.get() for b in result.network.b], "relu"
        )
        _assert_same_nets(reference, host)


def test_direct_path_trains_alike_on_one_and_on_several_blas_threads() -> None:
    """On one thread the first layer's products take every photo at once; on several, each
    thread takes a share of the photos and dW[0] is the sum of the shares: same maths."""
    from threadpoolctl import threadpool_limits

    params = _params(optimizer="adam", learning_rate=0.005, epochs=60, batch_size=16, l2=0.2)
    with threadpool_limits(limits=2, user_api="blas"):
        several = _train(params, "direct")
    with threadpool_limits(limits=1, user_api="blas"):
        one = _train(params, "direct")
    _assert_same_nets(one.network, several.network)
    assert several.path == "direct"


@pytest.mark.parametrize(
    "setting",
    [{"l2": 0.5}, {"l2": 0.5, "class_weight": "balanced"}, {"l2": 0.3, "batch_size": 16}],
    ids=["full-batch", "full-batch-balanced", "mini-batch"],
)
def test_gram_path_epoch_costs_with_l2_equal_the_direct_ones(setting: dict[str, Any]) -> None:
    """The cost with its L2 term (what stop_cost and divergence watch): on the full batch the
    Gram path reads ‖W[0]‖² off the forward pass's Z[0] instead of a second m×m product."""
    costs: dict[str, list[float]] = {"direct": [], "gram": []}
    for path, seen in costs.items():
        _train(_params(epochs=120, **setting), path, on_epoch=lambda e, c, s=seen: s.append(c))
    assert len(costs["gram"]) == 120
    np.testing.assert_allclose(costs["gram"], costs["direct"], rtol=1e-9)
    assert costs["gram"][-1] < costs["gram"][0]


def test_gram_path_shares_its_products_between_threads_from_gram_share_min_photos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With many photos each thread takes a share of the columns of XᵀX and of C·XᵀX; the
    training is the same as on one thread (and as the direct path)."""
    from threadpoolctl import threadpool_limits

    import itsacat.training as training

    monkeypatch.setattr(training, "GRAM_SHARE_MIN", 16)  # M = 40 photos: shared
    shared_parts: list[int] = []
    real = training._by_columns

    def spy(product: Any, parts: list[slice], pool: Any, xp: Any) -> Any:
        shared_parts.append(len(parts))
        return real(product, parts, pool, xp)

    monkeypatch.setattr(training, "_by_columns", spy)
    params = _params(epochs=150, l2=0.2, class_weight="balanced")
    with threadpool_limits(limits=2, user_api="blas"):
        several = _train(params, "gram")
    assert max(shared_parts) == 2  # the products really were split
    shared_parts.clear()
    with threadpool_limits(limits=1, user_api="blas"):
        one = _train(params, "gram")
    assert max(shared_parts) == 1
    _assert_same_nets(one.network, several.network)
    _assert_same_nets(_train(params, "direct").network, several.network)


@pytest.mark.parametrize("optimizer", ["adam", "gd"], ids=["direct", "gram"])
@pytest.mark.parametrize(("blas", "during"), [(2, 1), (4, 4)])
def test_more_than_two_blas_threads_are_left_to_blas(
    blas: int, during: int, optimizer: str
) -> None:
    """Up to OWN_THREADS_MAX BLAS threads fit holds BLAS at one thread and shares the
    products itself; with more, BLAS keeps its threads (faster on a 16-core host)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[int] = []

    def on_epoch(epoch: int, cost: float) -> None:
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))

    params = _params(optimizer=optimizer, learning_rate=0.005, epochs=5)
    with threadpool_limits(limits=blas, user_api="blas"):
        result = _train(params, "auto", on_epoch=on_epoch)
        after = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    assert result.path == ("direct" if optimizer == "adam" else "gram")
    assert seen == [during] * 5 and after == blas
