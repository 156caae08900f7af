"""The network's maths against oracles: finite differences, seeds, saturation."""

from __future__ import annotations

import numpy as np
import pytest

from itsacat.network import (
    ACTIVATIONS,
    Network,
    backward,
    cost,
    cross_entropy,
    forward,
    init_network,
    predict_proba,
    sigmoid,
)


def _data(rng: np.random.Generator, n_x: int = 6, m: int = 9) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((n_x, m))
    Y = (rng.random((1, m)) > 0.5).astype(np.float64)
    return X, Y


def _numeric_grad(net: Network, X: np.ndarray, Y: np.ndarray, l2: float) -> list[np.ndarray]:
    eps = 1e-6
    grads = []
    for P in [*net.W, *net.b]:
        g = np.zeros_like(P)
        for idx in np.ndindex(P.shape):
            old = P[idx]
            P[idx] = old + eps
            plus = cost(net, forward(net, X), Y, l2)
            P[idx] = old - eps
            minus = cost(net, forward(net, X), Y, l2)
            P[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_backprop_matches_finite_differences(activation: str, l2: float) -> None:
    rng = np.random.default_rng(3)
    X, Y = _data(rng)
    net = init_network([6, 5, 3, 1], activation, "xavier", rng, "float64")
    for b in net.b:  # non-zero biases, so bias gradients are exercised too
        b += rng.standard_normal(b.shape) * 0.1
    grads = backward(net, forward(net, X), Y, l2)
    analytic = np.concatenate([g.ravel() for g in [*grads.dW, *grads.db]])
    numeric = np.concatenate([g.ravel() for g in _numeric_grad(net, X, Y, l2)])
    rel = np.linalg.norm(analytic - numeric) / (np.linalg.norm(analytic) + np.linalg.norm(numeric))
    assert rel < 1e-6, f"relative error {rel:.2e} for {activation}, l2={l2}"


def test_weighted_backprop_matches_finite_differences_of_the_weighted_cost() -> None:
    """Per-photo loss weights (train.class_weight) enter the cost and its gradient alike."""
    rng = np.random.default_rng(4)
    X, Y = _data(rng)
    weights = 0.5 + rng.random(Y.shape) * 2
    net = init_network([6, 5, 3, 1], "relu", "xavier", rng, "float64")
    grads = backward(net, forward(net, X), Y, 0.3, weights=weights)
    eps, numeric = 1e-6, []
    for P in [*net.W, *net.b]:
        g = np.zeros_like(P)
        for idx in np.ndindex(P.shape):
            old = P[idx]
            P[idx] = old + eps
            plus = cost(net, forward(net, X), Y, 0.3, weights)
            P[idx] = old - eps
            minus = cost(net, forward(net, X), Y, 0.3, weights)
            P[idx] = old
            g[idx] = (plus - minus) / (2 * eps)
        numeric.append(g)
    analytic = np.concatenate([g.ravel() for g in [*grads.dW, *grads.db]])
    flat = np.concatenate([g.ravel() for g in numeric])
    assert np.linalg.norm(analytic - flat) / np.linalg.norm(flat) < 1e-6
    unweighted = backward(net, forward(net, X), Y, 0.3)
    assert not np.allclose(unweighted.dW[0], grads.dW[0])  # the weights did change it


def test_weighted_cross_entropy_is_the_weighted_mean_of_the_losses() -> None:
    ZL = np.array([[2.0, -1.0, 0.5]])
    Y = np.array([[1.0, 0.0, 0.0]])
    losses = np.logaddexp(0.0, ZL) - ZL * Y
    w = np.array([[3.0, 1.0, 0.5]])
    assert cross_entropy(ZL, Y, w) == pytest.approx(float((w * losses).sum()) / 3)
    assert cross_entropy(ZL, Y, np.ones_like(Y)) == pytest.approx(cross_entropy(ZL, Y))


def test_dropout_gradient_matches_finite_differences_for_a_fixed_mask() -> None:
    """With the dropout mask held fixed, backprop is the gradient of the masked network."""
    rng = np.random.default_rng(5)
    X, Y = _data(rng)
    net = init_network([6, 4, 1], "tanh", "xavier", rng, "float64")
    cache = forward(net, X, dropout=0.5, rng=np.random.default_rng(9))
    mask = cache.masks[0]
    assert mask is not None and (mask == 0).any()
    grads = backward(net, cache, Y)

    def masked_cost() -> float:
        a1 = np.tanh(net.W[0] @ X + net.b[0]) * mask
        return cross_entropy(net.W[1] @ a1 + net.b[1], Y)

    eps = 1e-6
    W = net.W[0]
    numeric = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        old = W[idx]
        W[idx] = old + eps
        plus = masked_cost()
        W[idx] = old - eps
        minus = masked_cost()
        W[idx] = old
        numeric[idx] = (plus - minus) / (2 * eps)
    assert np.allclose(grads.dW[0], numeric, atol=1e-8)


def test_same_seed_same_weights_different_seed_different_weights() -> None:
    a = init_network([12, 4, 1], "relu", "he", np.random.default_rng(7), "float32")
    b = init_network([12, 4, 1], "relu", "he", np.random.default_rng(7), "float32")
    c = init_network([12, 4, 1], "relu", "he", np.random.default_rng(8), "float32")
    assert all(np.array_equal(x, y) for x, y in zip(a.W, b.W, strict=True))
    assert not np.array_equal(a.W[0], c.W[0])
    assert a.W[0].dtype == np.float32


@pytest.mark.parametrize(("init", "gain"), [("he", 2.0), ("xavier", 1.0)])
def test_initialisation_scale(init: str, gain: float) -> None:
    net = init_network([4000, 300, 1], "relu", init, np.random.default_rng(0), "float64")
    assert net.W[0].std() == pytest.approx(np.sqrt(gain / 4000), rel=0.02)
    assert not net.b[0].any()


def test_no_nan_or_inf_at_saturation() -> None:
    Z = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype=np.float32)
    Y = np.array([[1.0, 0.0, 1.0, 1.0, 0.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s = sigmoid(Z)
        J = cross_entropy(Z, Y)
    assert np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    assert np.isfinite(J) and pytest.approx((1000 + 0 + np.log(2) + 0 + 1000) / 5, rel=1e-5) == J


def test_float32_stays_float32_through_forward_and_backward() -> None:
    rng = np.random.default_rng(1)
    net = init_network([6, 3, 1], "leaky_relu", "he", rng, "float32")
    X = rng.standard_normal((6, 4)).astype(np.float32)
    Y = np.ones((1, 4), np.float32)
    cache = forward(net, X)
    grads = backward(net, cache, Y, l2=0.1)
    assert cache.A[-1].dtype == np.float32
    assert all(g.dtype == np.float32 for g in [*grads.dW, *grads.db])
    assert predict_proba(net, X).shape == (1, 4)
