"""Gradient descent, momentum, RMSprop and Adam, updating a `Network` in place.

Each optimiser keeps one state array per parameter, allocated once, and updates weights
with in-place array operations, so a step allocates little beyond its temporaries.
Bias correction for Adam uses the step count t (1, 2, …).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from itsacat.backend import namespace
from itsacat.network import Grads, Network


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

    def step(self, net: Network, grads: Grads, lr: float) -> None:
        """One update of every W and b with learning rate `lr`."""
        params = [*net.W, *net.b]
        g = [*grads.dW, *grads.db]
        self.t += 1
        if self.kind == "gd":
            for p, dp in zip(params, g, strict=True):
                p -= lr * dp
            return
        if not self.v and self.kind in ("momentum", "adam"):
            self.v = [namespace(p).zeros_like(p) for p in params]
        if not self.s and self.kind in ("rmsprop", "adam"):
            self.s = [namespace(p).zeros_like(p) for p in params]
        b1, b2, eps = self.momentum, self.beta2, self.epsilon
        if self.kind == "momentum":
            for p, dp, v in zip(params, g, self.v, strict=True):
                v *= b1
                v += (1 - b1) * dp
                p -= lr * v
        elif self.kind == "rmsprop":
            for p, dp, s in zip(params, g, self.s, strict=True):
                s *= b2
                s += (1 - b2) * dp * dp
                p -= lr * dp / (namespace(p).sqrt(s) + eps)
        elif self.kind == "adam":
            c1 = 1 - b1**self.t
            c2 = 1 - b2**self.t
            for p, dp, v, s in zip(params, g, self.v, self.s, strict=True):
                v *= b1
                v += (1 - b1) * dp
                s *= b2
                s += (1 - b2) * dp * dp
                p -= (lr / c1) * v / (namespace(p).sqrt(s / c2) + eps)
        else:
            raise ValueError(f"unknown optimizer {self.kind!r}")
