"""The fit loop: every optimiser learns, stopping rules work, bad batch settings fail early."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from itsacat.config import OPTIMIZERS, TrainParams
from itsacat.errors import ConfigError
from itsacat.network import cross_entropy, forward, init_network, predict_proba
from itsacat.training import (
    class_weights,
    decision_logit,
    fit,
    loss_and_accuracy,
    photo_weights,
)


def _separable(seed: int = 0, n_x: int = 10, m: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, m))
    w = rng.standard_normal((1, n_x))
    Y = (w @ X > 0).astype(np.float64)
    return X, Y


def _params(**kw: object) -> TrainParams:
    # plain training: these tests are about the loop, not about params.yaml's chosen defaults
    base = {
        "learning_rate": 0.05,
        "epochs": 200,
        "log_every": 10,
        "insight_every": 0,
        "l2": 0.0,
        "class_weight": "none",
    }
    return TrainParams(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("batch_size", [0, 16])
def test_loss_falls_for_every_optimizer(optimizer: str, batch_size: int) -> None:
    X, Y = _separable()
    rng = np.random.default_rng(1)
    net = init_network([10, 8, 1], "relu", "he", rng, "float64")
    before, _ = loss_and_accuracy(net, X, Y)
    lr = 0.01 if optimizer in ("adam", "rmsprop") else 0.1
    result = fit(
        net, X, Y, _params(optimizer=optimizer, learning_rate=lr, batch_size=batch_size), rng
    )
    after, acc = loss_and_accuracy(result.network, X, Y)
    assert after < 0.5 * before
    assert acc >= 0.9
    assert result.history[-1].train_loss == pytest.approx(after)


def test_same_seed_same_trained_weights() -> None:
    X, Y = _separable()

    def run() -> list[np.ndarray]:
        rng = np.random.default_rng(4)
        net = init_network([10, 5, 1], "relu", "he", rng, "float64")
        params = _params(optimizer="adam", learning_rate=0.01, batch_size=8, dropout=0.2)
        return fit(net, X, Y, params, rng).network.W

    assert all(np.array_equal(a, b) for a, b in zip(run(), run(), strict=True))


def test_stop_cost_ends_training_early() -> None:
    X, Y = _separable()
    rng = np.random.default_rng(0)
    net = init_network([10, 8, 1], "relu", "he", rng, "float64")
    result = fit(
        net, X, Y, _params(optimizer="adam", learning_rate=0.02, epochs=5000, stop_cost=0.1), rng
    )
    assert result.epochs_run < 5000
    assert "fell below 0.1" in result.stopped


def test_patience_stops_and_keeps_the_best_weights() -> None:
    X, Y = _separable(m=40)
    rng = np.random.default_rng(0)
    X_val = rng.standard_normal((10, 30))
    Y_val = (rng.random((1, 30)) > 0.5).astype(np.float64)  # noise: val loss soon rises
    net = init_network([10, 16, 1], "relu", "he", rng, "float64")
    result = fit(
        net,
        X,
        Y,
        _params(
            optimizer="adam",
            learning_rate=0.05,
            epochs=3000,
            patience=3,
            log_every=5,
            class_weight="none",  # the logged val loss is then loss_and_accuracy's
        ),
        rng,
        X_val=X_val,
        Y_val=Y_val,
    )
    assert result.epochs_run < 3000
    assert "did not improve" in result.stopped
    best = min(e.val_loss for e in result.history if e.val_loss is not None)
    assert loss_and_accuracy(result.network, X_val, Y_val)[0] == pytest.approx(best)


def test_lr_decay_shrinks_the_logged_learning_rate() -> None:
    X, Y = _separable()
    rng = np.random.default_rng(0)
    net = init_network([10, 4, 1], "relu", "he", rng, "float64")
    result = fit(net, X, Y, _params(lr_decay=0.1, epochs=50), rng)
    assert result.history[-1].lr == pytest.approx(0.05 / (1 + 0.1 * 49))


def test_batch_bigger_than_data_fails_before_training() -> None:
    X, Y = _separable(m=20)
    net = init_network([10, 4, 1], "relu", "he", np.random.default_rng(0), "float64")
    with pytest.raises(ConfigError, match=r"train.batch_size must be at most .*\(20\), got 64"):
        fit(net, X, Y, _params(batch_size=64), np.random.default_rng(0))


def test_patience_without_validation_set_fails_clearly() -> None:
    X, Y = _separable(m=20)
    net = init_network([10, 4, 1], "relu", "he", np.random.default_rng(0), "float64")
    with pytest.raises(ConfigError, match="prepare.val_fraction"):
        fit(net, X, Y, _params(patience=2), np.random.default_rng(0))


def test_divergence_stops_with_a_reason_naming_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    X, Y = _separable()
    X, Y = (X * 1e3).astype(np.float32), Y.astype(np.float32)
    net = init_network([10, 4, 1], "relu", "he", np.random.default_rng(0), "float32")
    with caplog.at_level(logging.WARNING), np.errstate(all="ignore"):
        result = fit(
            net,
            X,
            Y,
            _params(optimizer="gd", learning_rate=1e30, epochs=50),
            np.random.default_rng(0),
        )
    assert result.epochs_run < 50
    assert result.diverged and "cost became" in result.stopped
    assert "lower train.learning_rate" in caplog.text


def test_balanced_class_weights_give_each_class_half_the_loss() -> None:
    Y = np.array([[1.0, 0.0, 0.0, 0.0]])
    cw = class_weights(Y, "balanced")
    assert cw == pytest.approx((4 / 6, 2.0))
    w = photo_weights(cw, Y)
    assert w is not None
    assert float(w[Y == 1].sum()) == pytest.approx(float(w[Y == 0].sum()))
    assert float(w.sum()) == pytest.approx(4.0)  # still a mean per photo
    assert class_weights(Y, "none") is None and photo_weights(None, Y) is None


def test_balanced_class_weights_with_one_class_only_fail_clearly() -> None:
    with pytest.raises(ConfigError, match=r"train\.class_weight.*both classes.*all 3 are cats"):
        class_weights(np.ones((1, 3)), "balanced")


def test_balanced_class_weights_lift_the_rare_class() -> None:
    """On overlapping classes with 20% positives, unweighted training calls most positives
    negative; balanced weights trade some of that for recall, as they should."""
    rng = np.random.default_rng(2)
    m = 400
    Y = (rng.random((1, m)) < 0.2).astype(np.float64)
    X = rng.standard_normal((10, m)) + 0.8 * Y  # the classes overlap: no perfect fit
    recalls, rates = {}, {}
    for mode in ("none", "balanced"):
        rng_w = np.random.default_rng(3)
        net = init_network([10, 6, 1], "relu", "he", rng_w, "float64")
        result = fit(net, X, Y, _params(learning_rate=0.1, class_weight=mode), rng_w)
        called = predict_proba(result.network, X) >= 0.5
        recalls[mode] = float(called[Y == 1].mean())
        rates[mode] = float(called.mean())
    assert recalls["balanced"] > recalls["none"] + 0.2
    assert rates["balanced"] > rates["none"]


def test_with_balanced_weights_the_logged_losses_and_patience_use_the_training_weights() -> None:
    X, Y = _separable(m=40)
    Y[:, :30] = 0.0  # few positives, so balanced weights differ from 1
    rng = np.random.default_rng(0)
    X_val = rng.standard_normal((10, 30))
    Y_val = (rng.random((1, 30)) > 0.5).astype(np.float64)
    net = init_network([10, 16, 1], "relu", "he", rng, "float64")
    params = _params(
        optimizer="adam",
        learning_rate=0.05,
        epochs=3000,
        patience=3,
        log_every=5,
        class_weight="balanced",
    )
    result = fit(net, X, Y, params, rng, X_val=X_val, Y_val=Y_val)
    assert "did not improve" in result.stopped
    w_val = photo_weights(class_weights(Y, "balanced"), Y_val)
    kept = cross_entropy(forward(result.network, X_val).Z[-1], Y_val, w_val)
    best = min(e.val_loss for e in result.history if e.val_loss is not None)
    assert kept == pytest.approx(best)
    assert loss_and_accuracy(result.network, X_val, Y_val)[0] != pytest.approx(best)


@pytest.mark.parametrize("threshold", [0.05, 0.35, 0.5, 0.9])
def test_the_decision_logit_is_where_the_sigmoid_crosses_the_threshold(threshold: float) -> None:
    z = decision_logit(threshold)
    assert 1.0 / (1.0 + np.exp(-z)) == pytest.approx(threshold, rel=1e-12)
    assert decision_logit(0.5) == 0.0


@pytest.mark.parametrize("path", ["direct", "gram"])
def test_logged_accuracies_call_cats_at_the_models_threshold(path: str) -> None:
    """dvclive's train/val accuracy (and `itsacat tune`'s val/accuracy) must score the
    network as evaluate and serving will: a cat from P(cat) >= model.threshold, not ½.
    The threshold changes what is logged, never the training."""
    X, Y = _separable(m=60)
    rng = np.random.default_rng(3)
    X_val = rng.standard_normal((10, 40))
    Y_val = (rng.random((1, 40)) > 0.5).astype(np.float64)

    def run(threshold: float) -> tuple[list[np.ndarray], object]:
        rng = np.random.default_rng(5)
        net = init_network([10, 6, 1], "relu", "he", rng, "float64")
        params = _params(learning_rate=0.02, epochs=20, log_every=20)
        result = fit(
            net, X, Y, params, rng, X_val=X_val, Y_val=Y_val, path=path, threshold=threshold
        )
        return result.network.W, result

    W_half, half = run(0.5)
    p, p_val = predict_proba(half.network, X)[0], predict_proba(half.network, X_val)[0]
    t = float(np.quantile(p, 0.3))  # a threshold that calls more photos cats than ½ does
    assert ((p >= t) == Y[0]).mean() != ((p >= 0.5) == Y[0]).mean()  # it matters here
    W_t, at_t = run(t)
    for a, b in zip(W_half, W_t, strict=True):
        np.testing.assert_array_equal(a, b)
    last, last_half = at_t.history[-1], half.history[-1]
    assert last.train_accuracy == pytest.approx(((p >= t) == Y[0]).mean())
    assert last.val_accuracy == pytest.approx(((p_val >= t) == Y_val[0]).mean())
    assert last_half.train_accuracy == pytest.approx(((p >= 0.5) == Y[0]).mean())
    assert (last.train_loss, last.val_loss) == (last_half.train_loss, last_half.val_loss)
    assert loss_and_accuracy(at_t.network, X, Y, threshold=t)[1] == last.train_accuracy


@pytest.mark.parametrize("optimizer", ["adam", "gd"], ids=["direct", "gram"])
def test_mini_batches_of_photo_by_photo_data_copy_no_more_than_a_batch(optimizer: str) -> None:
    """The train stage stores X photo by photo (F order). Gathering a mini-batch must copy
    the batch's photos only: numpy's take along axis 1 of an F-order array first copies all
    of X, on every batch. The same network comes out of either layout."""
    import tracemalloc

    X, Y = _separable(n_x=2000, m=400)
    params = _params(optimizer=optimizer, learning_rate=0.01, epochs=3, batch_size=16)
    nets = {}
    for order in ("F", "C"):
        Xo = np.asfortranarray(X) if order == "F" else np.ascontiguousarray(X)
        rng = np.random.default_rng(1)
        net = init_network([2000, 6, 1], "relu", "he", rng, "float64")
        tracemalloc.start()
        result = fit(net, Xo, Y, params, rng)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if order == "F":
            assert peak < X.nbytes / 4, f"fit allocated {peak} bytes; X is {X.nbytes}"
        nets[order] = result.network
    for a, b in zip(nets["F"].W, nets["C"].W, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
