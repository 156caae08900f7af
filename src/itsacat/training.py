"""The fit loop: mini-batches, learning-rate decay, early stopping and callbacks.

`fit` is pure apart from the callbacks it is handed: arrays and params in, a trained
`Network` and its history out, randomness only from the `np.random.Generator` given.
Callbacks are how the edges watch it: `on_log` (per-epoch figures, for dvclive and the
log), `on_insight` (the layer and perceptron statistics), `on_epoch` (a progress bar).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from itsacat.backend import namespace
from itsacat.config import TrainParams
from itsacat.errors import ConfigError
from itsacat.network import Cache, Grads, Network, backward, cost, cross_entropy, forward
from itsacat.optim import Optimizer

log = logging.getLogger(__name__)
Array = Any


@dataclass(frozen=True)
class EpochLog:
    """Figures logged every `train.log_every` epochs (val_* are None without a val set)."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float | None = None
    val_accuracy: float | None = None


@dataclass
class FitResult:
    network: Network
    history: list[EpochLog] = field(default_factory=list)
    epochs_run: int = 0
    stopped: str = "completed all epochs"
    seconds: float = 0.0
    path: str = "direct"


InsightHook = Callable[[int, Network, Cache, Grads, list[Array]], None]


def loss_and_accuracy(net: Network, X: Array, Y: Array, chunk: int = 4096) -> tuple[float, float]:
    """Cross-entropy and accuracy (threshold ½) of `net` on (X, Y), without dropout."""
    m = X.shape[1]
    loss_sum, correct = 0.0, 0.0
    for start in range(0, m, chunk):
        xb, yb = X[:, start : start + chunk], Y[:, start : start + chunk]
        ZL = forward(net, xb).Z[-1]
        loss_sum += cross_entropy(ZL, yb) * xb.shape[1]
        correct += float(((ZL > 0) == (yb > 0.5)).sum())
    return loss_sum / m, correct / m


def fit(
    net: Network,
    X: Array,
    Y: Array,
    train: TrainParams,
    rng: np.random.Generator,
    *,
    X_val: Array | None = None,
    Y_val: Array | None = None,
    on_log: Callable[[EpochLog], None] | None = None,
    on_insight: InsightHook | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train `net` in place on X (n_x, m), Y (1, m) and return it with its history."""
    m = X.shape[1]
    batch = train.batch_size or m
    if batch > m:
        raise ConfigError(
            f"train.batch_size must be at most the number of training photos ({m}), "
            f"got {batch}; use 0 for full batch (params.yaml)"
        )
    if train.patience and X_val is None:
        raise ConfigError(
            "train.patience needs a validation set, but prepare.val_fraction is 0; "
            "set prepare.val_fraction > 0 or train.patience: 0 (params.yaml)"
        )
    xp = namespace(X)
    drop_rng = rng if xp is np else xp.random.default_rng(int(rng.integers(2**31)))
    opt = Optimizer(train.optimizer, train.momentum, train.beta2, train.epsilon)
    result = FitResult(net)
    best_val, best_net, checks_since_best = float("inf"), None, 0
    started = time.perf_counter()
    log.info(
        "training %s on %d photos: %s, batch %d, %d epochs (direct path)",
        net.sizes,
        m,
        train.optimizer,
        batch,
        train.epochs,
    )

    for epoch in range(1, train.epochs + 1):
        lr = train.learning_rate / (1.0 + train.lr_decay * (epoch - 1))
        order = rng.permutation(m) if batch < m else None
        epoch_cost = 0.0
        insight_now = bool(on_insight and train.insight_every) and (
            epoch % train.insight_every == 0 or epoch == 1
        )
        for start in range(0, m, batch):
            if order is None:
                xb, yb = X, Y
            else:
                idx = order[start : start + batch]
                xb, yb = X[:, idx], Y[:, idx]
            cache = forward(net, xb, dropout=train.dropout, rng=drop_rng)
            grads = backward(net, cache, yb, train.l2)
            epoch_cost += cost(net, cache, yb, train.l2) * xb.shape[1]
            last_batch = start + batch >= m
            W_before = [w.copy() for w in net.W] if insight_now and last_batch else []
            opt.step(net, grads, lr)
            if insight_now and last_batch and on_insight:
                on_insight(epoch, net, cache, grads, W_before)
        epoch_cost /= m
        result.epochs_run = epoch
        if on_epoch:
            on_epoch(epoch, epoch_cost)
        if not np.isfinite(epoch_cost):
            result.stopped = f"cost became {epoch_cost} at epoch {epoch}: lower train.learning_rate"
            log.warning("%s", result.stopped)
            break

        if epoch % train.log_every == 0 or epoch == train.epochs or epoch == 1:
            train_loss, train_acc = loss_and_accuracy(net, X, Y)
            entry = EpochLog(epoch, lr, train_loss, train_acc)
            if X_val is not None and Y_val is not None:
                val_loss, val_acc = loss_and_accuracy(net, X_val, Y_val)
                entry = EpochLog(epoch, lr, train_loss, train_acc, val_loss, val_acc)
                if train.patience:
                    if val_loss < best_val:
                        best_val, best_net, checks_since_best = val_loss, net.copy(), 0
                    else:
                        checks_since_best += 1
            result.history.append(entry)
            if on_log:
                on_log(entry)
            if train.patience and checks_since_best >= train.patience and best_net:
                result.network = best_net
                result.stopped = (
                    f"validation loss did not improve for {train.patience} checks; "
                    f"kept the best weights (val loss {best_val:.4f})"
                )
                break
        if train.stop_cost and epoch_cost < train.stop_cost:
            result.stopped = f"training cost {epoch_cost:.4g} fell below {train.stop_cost}"
            break

    result.seconds = time.perf_counter() - started
    log.info(
        "stopped after %d epochs: %s (%.2f s)", result.epochs_run, result.stopped, result.seconds
    )
    return result
