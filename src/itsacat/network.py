"""The L-layer perceptron, in plain array maths (numpy or CuPy, see `backend`).

Layout, as in the course this project grew from: examples are columns.

    X, A[0]   (n_x, m)          n_x = 64·64·3 = 12288 pixels, m photos
    W[l]      (n_l, n_{l-1})    b[l]  (n_l, 1)
    Z[l] = W[l] A[l-1] + b[l]   A[l] = g(Z[l])   hidden g from params, sigmoid at the output
    cost = mean binary cross-entropy of sigmoid(Z[L]) against Y (1, m), plus L2

Layers are counted from 0 in the lists (`W[0]` is the first layer's weights). The cost and
the output gradient are computed from the logits, so nothing saturates into NaN or inf.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from itsacat.backend import namespace

Array = Any  # an NDArray of numpy or CuPy
LEAKY_SLOPE = 0.01
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")  # the hidden layers' choices


@dataclass
class Network:
    """Weights and biases of every layer, and the hidden activation's name."""

    W: list[Array]
    b: list[Array]
    activation: str

    @property
    def sizes(self) -> list[int]:
        """[n_x, n_1, …, n_L]."""
        return [self.W[0].shape[1], *(w.shape[0] for w in self.W)]

    def copy(self) -> Network:
        return Network([w.copy() for w in self.W], [b.copy() for b in self.b], self.activation)


@dataclass
class Cache:
    """What the forward pass keeps for the backward pass (and for insight)."""

    Z: list[Array]  # Z[l]: (n_l, m) pre-activations
    A: list[Array]  # A[0] = X, A[l+1] = g(Z[l]); A[-1] is the output probability
    masks: list[Array | None] = field(default_factory=list)  # dropout keep-masks / keep_prob


@dataclass
class Grads:
    """dJ/dW and dJ/db of every layer, and dJ/dZ of the first (what the Gram path needs)."""

    dW: list[Array]
    db: list[Array]
    dZ0: Array | None = None  # (n_1, m)


def layer_sizes(n_x: int, hidden: Sequence[int]) -> list[int]:
    """[n_x, *hidden, 1]: a binary classifier with one sigmoid output."""
    return [n_x, *hidden, 1]


def init_network(
    sizes: Sequence[int],
    activation: str,
    init: str,
    rng: np.random.Generator,
    dtype: str = "float32",
    xp: Any = np,
) -> Network:
    """He (std √(2/fan_in)) or Xavier (std √(1/fan_in)) weights, zero biases.

    Weights are drawn on the host from `rng`, so the same seed gives the same network on
    every backend.
    """
    gain = 2.0 if init == "he" else 1.0
    W, b = [], []
    for fan_in, fan_out in itertools.pairwise(sizes):
        w = rng.standard_normal((fan_out, fan_in)) * np.sqrt(gain / fan_in)
        W.append(xp.asarray(w.astype(dtype)))
        b.append(xp.zeros((fan_out, 1), dtype=dtype))
    return Network(W, b, activation)


def sigmoid(Z: Array, xp: Any = None) -> Array:
    """σ(z) = ½(1 + tanh(z/2)): exact identity, and never overflows."""
    xp = xp or namespace(Z)
    S = xp.multiply(Z, 0.5)
    xp.tanh(S, out=S)
    S += 1.0
    S *= 0.5
    return S


def activate(Z: Array, name: str, xp: Any = None) -> Array:
    """g(Z) for a hidden layer, as a new array."""
    xp = xp or namespace(Z)
    if name == "relu":
        return xp.maximum(Z, 0)
    if name == "leaky_relu":
        return xp.where(Z > 0, Z, LEAKY_SLOPE * Z)
    if name == "tanh":
        return xp.tanh(Z)
    if name == "sigmoid":
        return sigmoid(Z, xp)
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(Z: Array, A: Array, name: str) -> Array:
    """g'(Z), using the already computed A = g(Z) where that is cheaper."""
    if name == "relu":
        return (Z > 0).astype(Z.dtype)
    if name == "leaky_relu":
        xp = namespace(Z)
        return xp.where(Z > 0, 1.0, LEAKY_SLOPE).astype(Z.dtype)
    if name == "tanh":
        return 1.0 - A * A
    if name == "sigmoid":
        return A * (1.0 - A)
    raise ValueError(f"unknown activation {name!r}")


def forward(
    net: Network,
    X: Array | None,
    *,
    dropout: float = 0.0,
    rng: Any = None,
    first: Array | None = None,
) -> Cache:
    """Forward pass over a batch X (n_x, m). Inverted dropout on hidden units when asked.

    `first` is the first layer's pre-activation Z[0] = W[0] X + b[0] when the caller already
    has it (the Gram path in `training` computes it without touching X's 12288 rows); X may
    then be None, and `Cache.A[0]` is whatever X was.
    """
    xp = namespace(net.W[0])
    keep = 1.0 - dropout
    Z: list[Array] = []
    A: list[Array] = [X]
    masks: list[Array | None] = []
    last = len(net.W) - 1
    a = X
    for l, (W, b) in enumerate(zip(net.W, net.b, strict=True)):
        if l == 0 and first is not None:
            z = first
        else:
            z = W @ a  # (n_l, m)
            z += b
        Z.append(z)
        if l == last:
            A.append(sigmoid(z, xp))
            masks.append(None)
            break
        a = activate(z, net.activation, xp)
        mask = None
        if dropout > 0.0:
            mask = (rng.random(a.shape, dtype=a.dtype) < keep).astype(a.dtype)
            mask *= 1.0 / keep
            a *= mask
        masks.append(mask)
        A.append(a)
    return Cache(Z, A, masks)


def cross_entropy(ZL: Array, Y: Array, weights: Array | None = None) -> float:
    """Mean binary cross-entropy of sigmoid(ZL) against Y, from the logits (stable).

    −[y log σ(z) + (1−y) log(1−σ(z))] = log(1 + eᶻ) − y·z, and logaddexp(0, z) computes
    log(1 + eᶻ) without overflow at either end. `weights` (shaped like Y) weighs each
    photo's loss; the sum is still divided by the number of photos.
    """
    xp = namespace(ZL)
    losses = xp.logaddexp(0.0, ZL)
    losses -= ZL * Y
    if weights is not None:
        losses *= weights
    return float(losses.sum()) / losses.size


def cost(
    net: Network, cache: Cache, Y: Array, l2: float = 0.0, weights: Array | None = None
) -> float:
    """Cross-entropy (weighted per photo by `weights`, if given) plus the L2 penalty
    λ/(2m)·Σ‖W‖²."""
    J = cross_entropy(cache.Z[-1], Y, weights)
    if l2 > 0.0:
        m = Y.shape[1]
        J += l2 / (2 * m) * sum(squared_norm(W) for W in net.W)
    return J


def squared_norm(W: Array) -> float:
    """‖W‖² as one BLAS dot product (no temporary the size of W)."""
    w = W.reshape(-1)
    return float(w @ w)


def backward(
    net: Network,
    cache: Cache,
    Y: Array,
    l2: float = 0.0,
    *,
    input_layer: bool = True,
    weights: Array | None = None,
) -> Grads:
    """Gradients of `cost` (with the same per-photo `weights`) with respect to every W and b.

    The gradient with respect to the input X is never formed: nothing needs it, and at
    12288 × m it would be the single most expensive product of the pass. With
    `input_layer=False` the first layer's dW (the other 12288-wide product) is skipped too,
    and left None: the Gram path updates that layer from `Grads.dZ0` alone.
    """
    xp = namespace(net.W[0])
    m = Y.shape[1]
    L = len(net.W)
    dW: list[Array] = [None] * L
    db: list[Array] = [None] * L
    dZ = cache.A[-1] - Y  # (1, m): dJ/dZ[L] for sigmoid + cross-entropy
    if weights is not None:
        dZ *= weights
    dZ *= 1.0 / m
    for l in range(L - 1, -1, -1):
        db[l] = xp.add.reduce(dZ, axis=1, keepdims=True)
        if l > 0 or input_layer:
            dW[l] = dZ @ cache.A[l].T  # (n_l, n_{l-1})
            if l2 > 0.0:
                dW[l] += (l2 / m) * net.W[l]
        if l == 0:
            break
        dA = net.W[l].T @ dZ  # (n_{l-1}, m)
        mask = cache.masks[l - 1]
        if mask is not None:
            dA *= mask
        dZ = _through_activation(dA, cache.Z[l - 1], cache.A[l], mask, net.activation)
    return Grads(dW, db, dZ)


def _through_activation(dA: Array, Z: Array, A: Array, mask: Array | None, name: str) -> Array:
    """dZ = dA · g'(Z), in place on dA; g(Z) is read back from A where that is exact."""
    if name == "relu":
        dA *= Z > 0
        return dA
    if mask is not None and name in ("tanh", "sigmoid"):  # A holds g(Z)·mask: recompute
        A = activate(Z, name)
    dA *= activation_grad(Z, A, name)
    return dA


def predict_proba(net: Network, X: Array) -> Array:
    """P(cat) for each column of X: (1, m)."""
    return forward(net, X).A[-1]
