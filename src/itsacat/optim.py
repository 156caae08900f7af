"""Gradient descent, momentum, RMSprop and Adam, updating a `Network` in place.

Each optimiser keeps one state array per parameter, and one scratch array, allocated once;
a step then updates every weight with in-place array operations and allocates nothing the
size of a weight matrix. Bias correction for Adam uses the step count t (1, 2, …).

`SpanLayer` is the same gradient descent and momentum for a first layer kept in the span of
the training images (the Gram path of `training`): there W[0] = a·W0 + C·Xᵀ, and a step
moves the scalar a and the (n_1, m) matrix C instead of the (n_1, 12288) weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from itsacat.backend import namespace
from itsacat.network import Grads, Network

Array = Any

SPAN_OPTIMIZERS = ("gd", "momentum")  # updates that are linear in the gradient


@dataclass
class Optimizer:
    """The update rule and its per-parameter state."""

    kind: str
    momentum: float = 0.9  # β1 for momentum and Adam
    beta2: float = 0.999  # β2 for RMSprop and Adam
    epsilon: float = 1e-8
    t: int = 0
    v: list[Any] = field(default_factory=list)  # first moments (momentum, Adam)
    s: list[Any] = field(default_factory=list)  # second moments (RMSprop, Adam)
    scratch: list[Any] = field(default_factory=list)  # one work array per parameter

    def step(self, net: Network, grads: Grads, lr: float) -> None:
        """One update of every W and b with learning rate `lr`."""
        self.update([*net.W, *net.b], [*grads.dW, *grads.db], lr)

    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        """One update of `params` (in place) from `grads` (left untouched)."""
        if self.kind not in ("gd", "momentum", "rmsprop", "adam"):
            raise ValueError(f"unknown optimizer {self.kind!r}")
        self.t += 1
        if not self.scratch:
            self.scratch = [namespace(p).empty_like(p) for p in params]
        if not self.v and self.kind in ("momentum", "adam"):
            self.v = [namespace(p).zeros_like(p) for p in params]
        if not self.s and self.kind in ("rmsprop", "adam"):
            self.s = [namespace(p).zeros_like(p) for p in params]
        b1, b2, eps = self.momentum, self.beta2, self.epsilon
        xp = namespace(params[0])
        for i, (p, dp) in enumerate(zip(params, grads, strict=True)):
            tmp = self.scratch[i]
            if self.kind == "gd":
                xp.multiply(dp, lr, out=tmp)
                p -= tmp
            elif self.kind == "momentum":
                v = self.v[i]
                v *= b1
                xp.multiply(dp, 1 - b1, out=tmp)
                v += tmp
                xp.multiply(v, lr, out=tmp)
                p -= tmp
            else:  # rmsprop, adam: per-coordinate scaling by √s
                s = self.s[i]
                s *= b2
                xp.multiply(dp, dp, out=tmp)
                tmp *= 1 - b2
                s += tmp
                if self.kind == "rmsprop":
                    num, step_lr, c2 = dp, lr, 1.0
                else:
                    v = self.v[i]
                    v *= b1
                    xp.multiply(dp, 1 - b1, out=tmp)
                    v += tmp
                    num, step_lr = v, lr / (1 - b1**self.t)
                    c2 = 1 - b2**self.t
                xp.multiply(s, 1.0 / c2, out=tmp)
                xp.sqrt(tmp, out=tmp)
                tmp += eps
                xp.divide(num, tmp, out=tmp)
                tmp *= step_lr
                p -= tmp


@dataclass
class SpanLayer:
    """A first layer W = a·W0 + C·Xᵀ that gradient descent or momentum keep in that form.

    With dJ/dW = dZ Xbᵀ + (λ/m_b)·W, where Xb = X[:, idx] is the batch, the update is
    linear in things already in the span: C moves by a multiple of itself and by dZ
    scattered into the batch's columns, a by a multiple of itself. Momentum's velocity
    V = α·W0 + D·Xᵀ has the same form. W0 and X are never touched here.
    """

    C: Array  # (n_1, m): coefficients on the training images
    kind: str = "gd"
    momentum: float = 0.9
    a: float = 1.0  # coefficient on W0
    D: Array | None = None  # momentum's coefficients on the images
    alpha: float = 0.0  # momentum's coefficient on W0

    def step(self, dZ: Array, idx: Array | None, m_b: int, lr: float, l2: float) -> None:
        """One update from the batch's dJ/dZ[0] (n_1, m_b); idx None means the full batch."""
        if self.kind not in SPAN_OPTIMIZERS:
            raise ValueError(f"optimizer {self.kind!r} does not keep W[0] in the span")
        shrink = l2 / m_b  # dJ/dW's L2 part is shrink·W
        if self.kind == "gd":
            if shrink:
                self.C *= 1.0 - lr * shrink
                self.a *= 1.0 - lr * shrink
            _scatter_add(self.C, idx, dZ, -lr)
            return
        b1 = self.momentum
        if self.D is None:
            self.D = namespace(self.C).zeros_like(self.C)
        self.D *= b1
        if shrink:
            self.D += ((1 - b1) * shrink) * self.C
        _scatter_add(self.D, idx, dZ, 1 - b1)
        self.alpha = b1 * self.alpha + (1 - b1) * shrink * self.a
        self.C -= lr * self.D
        self.a -= lr * self.alpha


def _scatter_add(target: Array, idx: Array | None, values: Array, scale: float) -> None:
    """target[:, idx] += scale·values (idx holds no repeats, so plain indexing is exact)."""
    if idx is None:
        target += scale * values
    else:
        target[:, idx] += scale * values
