"""The fit loop: mini-batches, learning-rate decay, early stopping and callbacks.

`fit` is pure apart from the callbacks it is handed: arrays and params in, a trained
`Network` and its history out, randomness only from the `np.random.Generator` given.
Callbacks are how the edges watch it: `on_log` (per-epoch figures, for dvclive and the
log), `on_insight` (the layer and perceptron statistics), `on_epoch` (a progress bar).

Two paths compute the same training, and `fit` picks one (`FitResult.path` says which):

direct  every step multiplies by the batch of 12288-pixel images twice (Z[0] = W[0] Xb
        and dW[0] = dZ[0] Xbᵀ). Any optimiser.
gram    with gradient descent or momentum (any batch size, L2, dropout, lr decay), the
        first layer's weights only ever move inside the span of the training images:
        W[0] = a·W0 + C·Xᵀ, with a a scalar and C (n_1, m). Then W[0] Xb = a·W0 Xb + C·XᵀXb,
        so every step works with the (m, m) Gram matrix XᵀX, computed once, instead of X:
        per step n_1·m·m_b multiply-adds instead of 2·n_1·12288·m_b. Dropout only touches
        hidden units, so it leaves the span alone. W[0] is materialised at the end, at
        insight checkpoints and when patience keeps a best network. Adam and RMSprop scale
        each coordinate separately, which breaks the span: they take the direct path. So
        does a training set with at least as many photos as pixels, where XᵀX would be
        bigger than X.

With up to two BLAS threads (small machines), `fit` holds numpy's BLAS at one thread
(restored on return) and shares the first layer's products among as many Python threads
as BLAS had (Z[0] by photos, dW[0] by pixels); with more it leaves them to BLAS; see
`_threads` for why.

Checkpoints: given `checkpoints`, `fit` hands out its whole state (`FitState`: weights,
optimiser state, the random generator's state, history, patience) at the end of an epoch
every `Checkpoints.every_s` seconds, and on Ctrl-C or SIGTERM: the signal is held until
the running epoch ends, the state is handed out, then KeyboardInterrupt is raised (a
second Ctrl-C stops at once). `fit(..., resume=state)` carries on from that epoch and
trains exactly as the uninterrupted run would have, weights bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from itsacat.backend import namespace
from itsacat.config import TrainParams
from itsacat.copies import Copies, Factored
from itsacat.errors import ConfigError
from itsacat.network import (
    Cache,
    Grads,
    Network,
    backward,
    cost,
    cross_entropy,
    forward,
    squared_norm,
)
from itsacat.optim import SPAN_OPTIMIZERS, Optimizer, SpanLayer

log = logging.getLogger(__name__)
Array = Any
PATHS = ("auto", "direct", "gram")


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
    diverged: bool = False  # the cost turned NaN or infinite: the network is garbage


InsightHook = Callable[[int, Network, Cache, Grads, list[Array]], None]


@dataclass
class FitState:
    """Everything `fit` needs to carry on after `epoch` (host arrays; numpy backend)."""

    epoch: int  # epochs completed
    path: str
    arrays: dict[str, np.ndarray]
    scalars: dict[str, float]
    rng: dict[str, Any]  # the np.random.Generator's bit_generator.state
    history: list[EpochLog]


class Checkpoints:
    """When `fit` hands its state to `save`: at the end of an epoch every `every_s` seconds
    of training (0 = only when interrupted), and when Ctrl-C or SIGTERM arrives (held until
    the epoch ends; `fit` then raises KeyboardInterrupt). Signals are only watched from the
    main thread; elsewhere an interrupt stops at once, as it would without checkpoints."""

    def __init__(self, save: Callable[[FitState], None], every_s: float = 60.0) -> None:
        self.save = save
        self.every_s = every_s
        self.interrupted = False
        self.saved_epoch = 0  # the epoch of the last state handed out (0: none yet)
        self._last = time.monotonic()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Checkpoints:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.interrupted:  # the second one: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.interrupted = True
        log.warning(
            "%s: saving a checkpoint when this epoch ends (Ctrl-C again stops at once)",
            signal.Signals(signum).name,
        )

    def due(self) -> bool:
        return self.interrupted or (
            self.every_s > 0 and time.monotonic() - self._last >= self.every_s
        )

    def hand_out(self, state: FitState) -> None:
        self.save(state)
        self.saved_epoch = state.epoch
        self._last = time.monotonic()
        if self.interrupted:
            raise KeyboardInterrupt


ClassWeights = tuple[float, float] | None  # (non-cat, cat) loss weights; None = all 1


def class_weights(Y: Array, mode: str) -> ClassWeights:
    """The per-class loss weights `train.class_weight` asks for, from the training labels.

    "balanced" weighs each class by m / (2·its count): both classes then carry half of the
    loss, as if the photos were half cats, whatever share of cats the training set has
    (34% here, 66% in test). The weights sum to m, so the cost stays a mean per photo.
    """
    if mode == "none":
        return None
    m = Y.shape[1]
    cats = round(float(Y.sum()))
    if cats in (0, m):
        raise ConfigError(
            f"train.class_weight: balanced needs both classes among the training photos, "
            f"but all {m} are {'cats' if cats else 'non-cats'}; set train.class_weight: none "
            "(params.yaml)"
        )
    return m / (2 * (m - cats)), m / (2 * cats)


def photo_weights(cw: ClassWeights, Y: Array) -> Array | None:
    """Each photo's loss weight (shaped like Y) from the class weights; None for none."""
    if cw is None:
        return None
    w = Y * (cw[1] - cw[0])
    w += cw[0]
    return w


def decision_logit(threshold: float) -> float:
    """The output logit at and above which a photo is a cat: σ(z) ≥ threshold ⇔ z ≥ this."""
    return math.log(threshold / (1.0 - threshold))


def _loss_acc(
    ZL: Array, Y: Array, cw: ClassWeights = None, cut: float = 0.0
) -> tuple[float, float]:
    """Cross-entropy (class-weighted like the cost) and accuracy (cats from logit `cut` up,
    see `decision_logit`) from the output logits."""
    return cross_entropy(ZL, Y, photo_weights(cw, Y)), float(((cut <= ZL) == (Y > 0.5)).mean())


def loss_and_accuracy(
    net: Network, X: Array, Y: Array, chunk: int = 4096, threshold: float = 0.5
) -> tuple[float, float]:
    """Cross-entropy and accuracy (cats from P(cat) `threshold` up) of `net` on (X, Y),
    without dropout."""
    m = X.shape[1]
    cut = decision_logit(threshold)
    loss_sum, correct = 0.0, 0.0
    for start in range(0, m, chunk):
        xb, yb = X[:, start : start + chunk], Y[:, start : start + chunk]
        ZL = forward(net, xb).Z[-1]
        loss_sum += cross_entropy(ZL, yb) * xb.shape[1]
        correct += float(((cut <= ZL) == (yb > 0.5)).sum())
    return loss_sum / m, correct / m


GRAM_SHARE_MIN = 1024  # photos from which the Gram path's (m × m) products are shared too
OWN_THREADS_MAX = 2  # BLAS threads up to which fit shares its products out itself


def _blocks(n: int, k: int) -> list[slice]:
    """0..n cut into k consecutive blocks of (nearly) equal size."""
    return [slice(i * n // k, (i + 1) * n // k) for i in range(k)]


def _parts(m: int, pool: ThreadPoolExecutor | None, threads: int) -> list[slice]:
    """The photos (columns) each thread takes: one slice when there is nothing to share."""
    if pool is None or threads == 1 or m < 8 * threads:
        return [slice(0, m)]
    return _blocks(m, threads)


def _by_columns(
    product: Callable[[slice], Array], parts: list[slice], pool: ThreadPoolExecutor | None, xp: Any
) -> Array:
    """`product(columns)` for each part on the pool's threads, side by side."""
    if pool is None or len(parts) == 1:
        return product(parts[0])
    return xp.concatenate(list(pool.map(product, parts)), axis=1)


@contextlib.contextmanager
def _threads(xp: Any, path: str, m: int) -> Iterator[tuple[ThreadPoolExecutor | None, int]]:
    """Up to `OWN_THREADS_MAX` BLAS threads: numpy's BLAS on one thread while fit runs, and
    as many Python threads as BLAS had, each multiplying its share of the photos (dW[0]: of
    the pixels): on the direct path always, on the Gram path from `GRAM_SHARE_MIN` photos
    (mirrored and shifted copies make 2,090). With more, BLAS keeps its threads.

    OpenBLAS splits the first layer's (n_1 × 12288) · (12288 × m) products between its
    threads with a barrier per block of pixels; on this 2-core machine, busy with other
    work, a descheduled thread then stalled every barrier (measured: 4-5× slower than one
    thread, 25× on the Gram path's small products). Splitting the work between our own
    threads instead needs one join per product, and each thread writes its own columns
    of the result, so results do not depend on scheduling. Below `GRAM_SHARE_MIN` photos
    the Gram path's products are too small to be worth a join.

    With more than `OWN_THREADS_MAX` BLAS threads both paths leave BLAS alone. On an idle
    16-core machine (an H200 host) OpenBLAS's own 16 threads ran 500 direct-path
    iterations on 418 photos in 0.91 s, our split over 16, 8 or 4 threads in 2.15, 1.83
    and 2.07 s; the Gram path, 2500 iterations on 418 photos: 0.48 s against 0.66 s on one
    thread; 500 on 2,090 photos: 0.54 s against 1.07-1.32 s split over 4-16 threads.
    """
    if xp is not np:
        yield None, 1
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    k = max(blas, default=1)
    if k > OWN_THREADS_MAX:
        yield None, 1
        return
    with threadpool_limits(limits=1, user_api="blas"):
        if k == 1 or (path == "gram" and m < GRAM_SHARE_MIN):
            yield None, 1
            return
        with ThreadPoolExecutor(k, thread_name_prefix="itsacat-blas") as pool:
            yield pool, k


def choose_path(train: TrainParams, n_x: int, m: int) -> tuple[str, str]:
    """The path `fit` takes by itself, and why."""
    if train.optimizer not in SPAN_OPTIMIZERS:
        return "direct", f"{train.optimizer} scales each weight separately"
    if m >= n_x:
        return "direct", f"{m} photos ≥ {n_x} pixels: the Gram matrix would not be smaller"
    return "gram", f"{train.optimizer} keeps W[0] in the span of the {m} training photos"


def factors_copies(train: TrainParams, path: str, m: int, xp: Any) -> bool:
    """Whether `fit` on `path` multiplies by the originals alone when told X's moved copies:
    the direct path's full-batch steps, numpy (callers skip looking for copies otherwise)."""
    return path == "direct" and train.batch_size in (0, m) and xp is np


class _Engine:
    """What both paths share: the training data, the optimiser, the threads, and the
    full-batch forward pass a loss check leaves for the next step to start from."""

    name = ""
    cut = 0.0  # the logit from which the logged accuracy calls a cat (`decision_logit`)

    def __init__(
        self,
        net: Network,
        X: Array,
        Y: Array,
        train: TrainParams,
        cw: ClassWeights = None,
        pool: ThreadPoolExecutor | None = None,
        threads: int = 1,
    ) -> None:
        self.net, self.X, self.Y, self.train, self.cw = net, X, Y, train, cw
        self.opt = Optimizer(train.optimizer, train.momentum, train.beta2, train.epsilon)
        self.xp = namespace(X)
        self.pool, self.threads = pool, threads  # None, 1: nothing shared (see _threads)
        self._pending: Cache | None = None  # the full-batch forward at the current weights

    def batch_forward(self, idx: Array | None, dropout: float, rng: Any) -> Cache:
        raise NotImplementedError

    def forward(self, idx: Array | None, dropout: float, rng: Any) -> Cache:
        if idx is None and dropout == 0.0 and self._pending is not None:
            cache, self._pending = self._pending, None
            return cache
        return self.batch_forward(idx, dropout, rng)

    def backward(self, cache: Cache, yb: Array, wb: Array | None) -> Grads:
        """Backprop without the first layer's dW (each path forms it its own way)."""
        return backward(self.net, cache, yb, self.train.l2, input_layer=False, weights=wb)

    def train_loss(self) -> tuple[float, float]:
        cache = self.batch_forward(None, 0.0, None)
        self._pending = cache  # the next full-batch step starts from these very weights
        return _loss_acc(cache.Z[-1], self.Y, self.cw, self.cut)

    def finish(self) -> Network:
        return self.net

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The arrays and numbers `restore` needs (host copies)."""
        net, opt = self.net, self.opt
        arrays = {f"b{i}": np.array(b) for i, b in enumerate(net.b)}
        arrays |= {f"W{i}": np.array(W) for i, W in enumerate(net.W)}
        arrays |= {f"opt_v{i}": np.array(v) for i, v in enumerate(opt.v)}
        arrays |= {f"opt_s{i}": np.array(s) for i, s in enumerate(opt.s)}
        return arrays, {"opt_t": opt.t}

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict[str, float]) -> None:
        net, opt, xp = self.net, self.opt, self.xp
        for i, b in enumerate(net.b):
            b[...] = xp.asarray(arrays[f"b{i}"])
        for i, W in enumerate(net.W):
            if f"W{i}" in arrays:
                W[...] = xp.asarray(arrays[f"W{i}"])
        opt.t = int(scalars["opt_t"])
        for name in ("v", "s"):
            n = sum(k.startswith(f"opt_{name}") for k in arrays)
            setattr(opt, name, [xp.asarray(arrays[f"opt_{name}{i}"]) for i in range(n)])


class _Direct(_Engine):
    """Plain training: the first layer multiplies by the 12288-row batch every step."""

    name = "direct"

    def __init__(self, *args: Any, copies: Copies | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffers: dict[int, Array] = {}  # batch size → gathered-batch buffer
        # full-batch products over X₀ alone when X is moved copies of it (itsacat.copies)
        self.factored = None if copies is None else Factored(self.X, copies)
        self._D: Array | None = None  # (J·n₁, 12288) buffer of the factored dW's product

    def batch(self, idx: Array | None) -> Array:
        if idx is None:
            return self.X
        photo_by_photo = bool(self.X.flags.f_contiguous)
        buf = self._buffers.get(len(idx))
        if buf is None:  # the batch keeps X's layout
            shape, order = (self.X.shape[0], len(idx)), "F" if photo_by_photo else "C"
            buf = self._buffers[len(idx)] = self.xp.empty(shape, self.X.dtype, order=order)
        if photo_by_photo:
            # photos are the rows of Xᵀ: gather whole rows. Taking columns of an F-order X
            # would first copy all of X into C order, on every batch.
            self.xp.take(self.X.T, idx, axis=0, out=buf.T)
        else:
            self.xp.take(self.X, idx, axis=1, out=buf)
        return buf

    def first(self, Xb: Array) -> Array:
        """Z[0] = W[0] Xb + b[0], each thread taking its share of the photos (columns)."""
        W = self.net.W[0]
        if self.factored is not None and Xb is self.X:
            X0 = self.factored.X0
            parts0 = _parts(X0.shape[1], self.pool, self.threads)
            return self.factored.first(
                W,
                self.net.b[0],
                lambda S: _by_columns(lambda c: S @ X0[:, c], parts0, self.pool, self.xp),
            )
        parts = _parts(Xb.shape[1], self.pool, self.threads)
        Z = _by_columns(lambda c: W @ Xb[:, c], parts, self.pool, self.xp)  # (n_1, m)
        Z += self.net.b[0]
        return Z

    def batch_forward(self, idx: Array | None, dropout: float, rng: Any) -> Cache:
        Xb = self.batch(idx)
        return forward(self.net, Xb, dropout=dropout, rng=rng, first=self.first(Xb))

    def backward(self, cache: Cache, yb: Array, wb: Array | None) -> Grads:
        """Backprop, with dW[0] = dZ[0] Xbᵀ, each thread writing its own block of pixels."""
        grads = super().backward(cache, yb, wb)
        Xb, dZ = cache.A[0], grads.dZ0
        assert dZ is not None
        if self.factored is not None and Xb is self.X:
            dW = self.factored.grad(dZ, self._times_X0T)
        elif self.pool is None:
            dW = dZ @ Xb.T  # (n_1, n_x)
        else:
            # Blocks of pixels, not of photos: no thread's result needs adding to another's
            # (a sum of per-photo-block shares cost a serial pass over dW per thread).
            dW = self.xp.empty((dZ.shape[0], Xb.shape[0]), dZ.dtype)
            pixels = _blocks(Xb.shape[0], self.threads)
            list(self.pool.map(lambda r: self.xp.matmul(dZ, Xb[r].T, out=dW[:, r]), pixels))
        if self.train.l2 > 0.0:
            dW += (self.train.l2 / yb.shape[1]) * self.net.W[0]
        grads.dW[0] = dW
        return grads

    def _times_X0T(self, dZS: Array) -> Array:
        """dZS X₀ᵀ (J·n₁, 12288) into a reused buffer, each thread a block of pixels."""
        X0 = self.factored.X0  # type: ignore[union-attr]
        shape = (dZS.shape[0], X0.shape[0])
        if self._D is None or self._D.shape != shape:
            self._D = self.xp.empty(shape, dZS.dtype)
        D = self._D
        if self.pool is None:
            return self.xp.matmul(dZS, X0.T, out=D)
        pixels = _blocks(X0.shape[0], self.threads)
        list(self.pool.map(lambda r: self.xp.matmul(dZS, X0[r].T, out=D[:, r]), pixels))
        return D

    def cost(self, cache: Cache, yb: Array, wb: Array | None) -> float:
        return cost(self.net, cache, yb, self.train.l2, wb)

    def step(self, grads: Grads, idx: Array | None, m_b: int, lr: float) -> None:
        self._pending = None
        self.opt.step(self.net, grads, lr)

    def weights(self) -> list[Array]:
        """Copies of the current weights."""
        return [w.copy() for w in self.net.W]

    def step_watched(
        self, grads: Grads, idx: Array | None, m_b: int, lr: float
    ) -> tuple[Network, Grads, list[Array]]:
        """`step`, returning the network after it, the gradients and the weights before."""
        W_before = self.weights()
        self.step(grads, idx, m_b, lr)
        return self.net, grads, W_before

    def val_loss(self, X_val: Array, Y_val: Array) -> tuple[float, float]:
        return _loss_acc(
            forward(self.net, X_val, first=self.first(X_val)).Z[-1], Y_val, self.cw, self.cut
        )


class _Gram(_Engine):
    """Training with W[0] = a·W0 + C·Xᵀ: every step sees XᵀX (m, m), never X (12288, m)."""

    name = "gram"

    def __init__(
        self,
        net: Network,
        X: Array,
        Y: Array,
        train: TrainParams,
        X_val: Array | None,
        cw: ClassWeights = None,
        pool: ThreadPoolExecutor | None = None,
        threads: int = 1,
    ) -> None:
        super().__init__(net, X, Y, train, cw, pool, threads)
        xp = self.xp
        self.W0 = net.W[0]  # left as it is until `finish`
        self.parts = _parts(X.shape[1], pool, threads)
        G = _by_columns(lambda c: X.T @ X[:, c], self.parts, pool, xp)  # (m, m)
        if len(self.parts) > 1:  # blocks summed in their own orders: make it exactly symmetric
            G = G + G.T
            G *= 0.5
        self.G = G
        self.P0 = self.W0 @ X  # (n_1, m): W0's share of Z[0], constant
        self.K = X.T @ X_val if X_val is not None else None  # (m, m_val)
        self.P0_val = self.W0 @ X_val if X_val is not None else None
        self.W0_sq = squared_norm(self.W0)
        self.span = SpanLayer(xp.zeros_like(self.P0), train.optimizer, train.momentum)

    def first(self, idx: Array | None) -> Array:
        """Z[0] = a·W0 Xb + C·XᵀXb + b[0] for the batch's columns idx (None: all)."""
        s = self.span
        if idx is None:  # G is symmetric: its rows are its columns, stored contiguously
            Z = _by_columns(lambda c: s.C @ self.G[c].T, self.parts, self.pool, self.xp)
            P = self.P0
        else:
            Z = s.C @ self.G[idx].T  # G is symmetric: rows gather contiguously
            P = self.P0[:, idx]
        if s.a == 1.0:
            Z += P
        else:
            Z += s.a * P
        Z += self.net.b[0]
        return Z

    def batch_forward(self, idx: Array | None, dropout: float, rng: Any) -> Cache:
        return forward(self.net, None, dropout=dropout, rng=rng, first=self.first(idx))

    def W0_norm_sq(self, Z0: Array | None = None) -> float:
        """‖a·W0 + C·Xᵀ‖² = a²‖W0‖² + 2a⟨C, W0 X⟩ + ⟨C, C·XᵀX⟩, without forming W[0].

        Given Z0 = C·XᵀX + a·W0 X + b[0], the whole batch's first-layer output at these
        very weights, ⟨C, C·XᵀX⟩ = ⟨C, Z0⟩ − a⟨C, W0 X⟩ − b[0]·(C 1) comes without the
        (n_1 × m × m) product again, which would double the cost of every L2 step.
        """
        s = self.span
        c = s.C.reshape(-1)
        c_p0 = float(c @ self.P0.reshape(-1))
        if Z0 is None:
            c_cg = float(c @ (s.C @ self.G).reshape(-1))
        else:
            c_cg = float(c @ Z0.reshape(-1)) - s.a * c_p0
            c_cg -= float(self.net.b[0][:, 0] @ s.C.sum(axis=1))
        return s.a * s.a * self.W0_sq + 2.0 * s.a * c_p0 + c_cg

    def cost(self, cache: Cache, yb: Array, wb: Array | None) -> float:
        l2 = self.train.l2
        J = cross_entropy(cache.Z[-1], yb, wb)
        if l2 > 0.0:
            rest = sum(squared_norm(W) for W in self.net.W[1:])
            full = cache.Z[0].shape[1] == self.P0.shape[1]  # Z[0] of the whole batch
            J += l2 / (2 * yb.shape[1]) * (self.W0_norm_sq(cache.Z[0] if full else None) + rest)
        return J

    def step(self, grads: Grads, idx: Array | None, m_b: int, lr: float) -> None:
        self._pending = None
        self.opt.update([*self.net.W[1:], *self.net.b], [*grads.dW[1:], *grads.db], lr)
        self.span.step(grads.dZ0, idx, m_b, lr, self.train.l2)

    def materialise(self) -> Array:
        """W[0] = a·W0 + C·Xᵀ, as a new array (n_1, n_x)."""
        W = self.span.C @ self.X.T
        W += self.span.a * self.W0
        return W

    def weights(self) -> list[Array]:
        return [self.materialise(), *(w.copy() for w in self.net.W[1:])]

    def step_watched(
        self, grads: Grads, idx: Array | None, m_b: int, lr: float
    ) -> tuple[Network, Grads, list[Array]]:
        """`step`, plus what the insight hook needs: the network after the step with W[0]
        formed, the gradients with dW[0] formed, and the weights before the step.

        One product by Xᵀ gives W[0] before the step and dZ[0] Xbᵀ (and momentum's velocity):
        [C; dZ[0] in the batch's columns; D] Xᵀ.
        """
        s, xp = self.span, self.xp
        a_before, W_rest = s.a, [w.copy() for w in self.net.W[1:]]
        dZ = grads.dZ0
        if idx is not None:
            dZ = xp.zeros_like(s.C)
            dZ[:, idx] = grads.dZ0
        blocks = [s.C.copy(), dZ]  # C before the step, which updates it in place
        self.step(grads, idx, m_b, lr)
        if s.kind == "momentum":
            assert s.D is not None
            blocks.append(s.D)
        n1 = s.C.shape[0]
        P = xp.concatenate(blocks) @ self.X.T  # (2 or 3 · n_1, n_x)
        W_before = P[:n1]
        W_before += a_before * self.W0
        dW0 = P[n1 : 2 * n1]
        if self.train.l2 > 0.0:
            dW0 += (self.train.l2 / m_b) * W_before
        if s.kind == "momentum":  # W after = W before − lr·V, V = α·W0 + D·Xᵀ
            V = P[2 * n1 :]
            V += s.alpha * self.W0
            W_after = W_before - lr * V
        else:
            W_after = W_before - lr * dW0
        after = Network([W_after, *self.net.W[1:]], self.net.b, self.net.activation)
        full = Grads([dW0, *grads.dW[1:]], grads.db, grads.dZ0)
        return after, full, [W_before, *W_rest]

    def val_loss(self, X_val: Array, Y_val: Array) -> tuple[float, float]:
        assert self.K is not None and self.P0_val is not None
        Z = self.span.C @ self.K  # (n_1, m_val)
        Z += self.span.a * self.P0_val
        Z += self.net.b[0]
        return _loss_acc(forward(self.net, None, first=Z).Z[-1], Y_val, self.cw, self.cut)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The other layers and optimiser as on the direct path, W[0] as a, C (and momentum's
        α, D): W0 is the initial W[0], which the resumed run draws again from the seed."""
        arrays, scalars = super().state()
        del arrays["W0"]  # net.W[0] is W0 itself until `finish`
        s = self.span
        arrays["span_C"] = np.array(s.C)
        if s.D is not None:
            arrays["span_D"] = np.array(s.D)
        return arrays, scalars | {"span_a": s.a, "span_alpha": s.alpha}

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict[str, float]) -> None:
        super().restore(arrays, scalars)
        s, xp = self.span, self.xp
        s.C[...] = xp.asarray(arrays["span_C"])
        s.D = xp.asarray(arrays["span_D"]) if "span_D" in arrays else None
        s.a, s.alpha = float(scalars["span_a"]), float(scalars["span_alpha"])

    def finish(self) -> Network:
        """Write W[0] = a·W0 + C·Xᵀ into the network's own first-layer array."""
        W = self.span.C @ self.X.T
        self.W0 *= self.span.a
        self.W0 += W
        return self.net


@dataclass(frozen=True)
class _Hooks:
    on_log: Callable[[EpochLog], None] | None
    on_insight: InsightHook | None
    on_epoch: Callable[[int, float], None] | None


def _epochs(
    engine: _Direct | _Gram,
    result: FitResult,
    train: TrainParams,
    batch: int,
    rng: np.random.Generator,
    drop_rng: Any,
    X_val: Array | None,
    Y_val: Array | None,
    hooks: _Hooks,
    started: float,
    resume: FitState | None = None,
    checkpoints: Checkpoints | None = None,
) -> None:
    """The epoch loop, on either path: steps, logging, insight, stopping rules. `started`
    is when `fit` began (setup included), so a checkpoint's time is the time `fit` reports."""
    Y = engine.Y
    m = Y.shape[1]
    xp = engine.xp
    weights = photo_weights(engine.cw, Y)  # the full batch's, computed once
    best_val, best_net, checks_since_best = float("inf"), None, 0
    first = 1
    if resume is not None:
        first = resume.epoch + 1
        best_val = float(resume.scalars["best_val"])
        checks_since_best = int(resume.scalars["checks_since_best"])
        if "best_W0" in resume.arrays:
            n = len(engine.net.W)
            best_net = Network(
                [xp.asarray(resume.arrays[f"best_W{i}"]) for i in range(n)],
                [xp.asarray(resume.arrays[f"best_b{i}"]) for i in range(n)],
                engine.net.activation,
            )

    def state(epoch: int) -> FitState:
        arrays, scalars = engine.state()
        if best_net is not None:
            arrays |= {f"best_W{i}": np.array(W) for i, W in enumerate(best_net.W)}
            arrays |= {f"best_b{i}": np.array(b) for i, b in enumerate(best_net.b)}
        scalars |= {"best_val": best_val, "checks_since_best": checks_since_best}
        scalars["seconds"] = result.seconds + time.perf_counter() - started
        return FitState(
            epoch, engine.name, arrays, scalars, dict(rng.bit_generator.state), list(result.history)
        )

    for epoch in range(first, train.epochs + 1):
        lr = train.learning_rate / (1.0 + train.lr_decay * (epoch - 1))
        order = rng.permutation(m) if batch < m else None
        epoch_cost = 0.0
        insight_now = bool(hooks.on_insight and train.insight_every) and (
            epoch % train.insight_every == 0 or epoch == 1
        )
        for start in range(0, m, batch):
            if order is None:
                idx, yb = None, Y
            else:
                idx = order[start : start + batch]
                if xp is not np:
                    idx = xp.asarray(idx)
                yb = Y[:, idx]
            m_b = yb.shape[1]
            cache = engine.forward(idx, train.dropout, drop_rng)
            wb = weights if idx is None else photo_weights(engine.cw, yb)
            grads = engine.backward(cache, yb, wb)
            epoch_cost += engine.cost(cache, yb, wb) * m_b
            if insight_now and start + batch >= m and hooks.on_insight:
                after, full, W_before = engine.step_watched(grads, idx, m_b, lr)
                hooks.on_insight(epoch, after, cache, full, W_before)
            else:
                engine.step(grads, idx, m_b, lr)
        epoch_cost /= m
        result.epochs_run = epoch
        if hooks.on_epoch:
            hooks.on_epoch(epoch, epoch_cost)
        if not np.isfinite(epoch_cost):
            result.stopped = f"the cost became {epoch_cost} at epoch {epoch}"
            result.diverged = True
            log.warning("%s: lower train.learning_rate", result.stopped)
            return

        if epoch % train.log_every == 0 or epoch == train.epochs or epoch == 1:
            train_loss, train_acc = engine.train_loss()
            entry = EpochLog(epoch, lr, train_loss, train_acc)
            if X_val is not None and Y_val is not None:
                val_loss, val_acc = engine.val_loss(X_val, Y_val)
                entry = EpochLog(epoch, lr, train_loss, train_acc, val_loss, val_acc)
                if train.patience:
                    if val_loss < best_val:
                        best_val, checks_since_best = val_loss, 0
                        net = engine.net
                        best_net = Network(
                            engine.weights(), [b.copy() for b in net.b], net.activation
                        )
                    else:
                        checks_since_best += 1
            result.history.append(entry)
            if hooks.on_log:
                hooks.on_log(entry)
            if train.patience and checks_since_best >= train.patience and best_net:
                result.network = best_net
                result.stopped = (
                    f"validation loss did not improve for {train.patience} checks; "
                    f"kept the best weights (val loss {best_val:.4f})"
                )
                return
        if train.stop_cost and epoch_cost < train.stop_cost:
            result.stopped = f"training cost {epoch_cost:.4g} fell below {train.stop_cost}"
            return
        if checkpoints is not None and epoch < train.epochs and checkpoints.due():
            checkpoints.hand_out(state(epoch))


def check_data_fits(train: TrainParams, m: int, has_val: bool) -> None:
    """Refuse train params that cannot work with `m` training photos (and a validation set
    or none): the checks `fit` makes first, for callers that must make them earlier."""
    if (train.batch_size or m) > m:
        raise ConfigError(
            f"train.batch_size must be at most the number of training photos ({m}), "
            f"got {train.batch_size}; use 0 for full batch (params.yaml)"
        )
    if train.patience and not has_val:
        raise ConfigError(
            "train.patience needs a validation set, but prepare.val_fraction is 0; "
            "set prepare.val_fraction > 0 or train.patience: 0 (params.yaml)"
        )


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
    path: str = "auto",
    checkpoints: Checkpoints | None = None,
    resume: FitState | None = None,
    copies: Copies | None = None,
    threshold: float = 0.5,
) -> FitResult:
    """Train `net` in place on X (n_x, m), Y (1, m) and return it with its history.

    `path` is "auto" (the Gram path whenever it computes the same training, else direct),
    or forces "direct" or "gram" (benchmarks and tests compare the two). `checkpoints`
    and `resume`: see the module's docstring; `resume` needs `net` as initialised for the
    interrupted run (same seed) and the same X, Y and params. `copies`: X's columns are
    moved copies laid out so (`copies.find_copies`); the direct path's full-batch steps
    then multiply by the originals alone (numpy backend). `threshold`: the model's
    `model.threshold`, where the logged accuracies call a photo a cat.
    """
    n_x, m = X.shape
    check_data_fits(train, m, X_val is not None)
    batch = train.batch_size or m
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    chosen, why = choose_path(train, n_x, m)
    if path == "gram" and train.optimizer not in SPAN_OPTIMIZERS:
        raise ValueError(f"the gram path needs gd or momentum, not {train.optimizer!r}")
    if path != "auto":
        chosen, why = path, "asked for"
    cw = class_weights(Y, train.class_weight)
    xp = namespace(X)
    if (checkpoints or resume) and xp is not np:
        raise ValueError("checkpoints need the numpy backend (CuPy's generator state is not saved)")
    if resume is not None and resume.path != chosen:
        raise ValueError(f"the checkpoint was taken on the {resume.path} path, not {chosen}")
    drop_rng = rng if xp is np else xp.random.default_rng(int(rng.integers(2**31)))
    result = FitResult(net, path=chosen)
    if resume is not None:
        result.history = list(resume.history)
        result.epochs_run = resume.epoch
        result.seconds = float(resume.scalars["seconds"])
    factor = copies if factors_copies(train, chosen, m, xp) else None
    if factor is not None:
        why += (
            f"; its products over the {factor.originals} photos the {len(factor.moves) - 1} "
            "moved copies came from"
        )
    started = time.perf_counter()
    log.info(
        "training %s on %d photos: %s, batch %d, %d epochs%s; %s path (%s)",
        net.sizes,
        m,
        train.optimizer,
        batch,
        train.epochs,
        "" if cw is None else f", class weights non-cat {cw[0]:.3f} cat {cw[1]:.3f}",
        chosen,
        why,
    )
    with _threads(xp, chosen, m) as (pool, threads):
        engine: _Direct | _Gram = (
            _Gram(net, X, Y, train, X_val, cw, pool, threads)
            if chosen == "gram"
            else _Direct(net, X, Y, train, cw, pool, threads, copies=factor)
        )
        engine.cut = decision_logit(threshold)
        hooks = _Hooks(on_log, on_insight, on_epoch)
        if resume is not None:
            engine.restore(resume.arrays, resume.scalars)
            rng.bit_generator.state = resume.rng
            log.info("resuming after epoch %d of %d", resume.epoch, train.epochs)
        with checkpoints or contextlib.nullcontext():
            _epochs(
                engine,
                result,
                train,
                batch,
                rng,
                drop_rng,
                X_val,
                Y_val,
                hooks,
                started,
                resume,
                checkpoints,
            )
        engine.finish()
    result.seconds += time.perf_counter() - started
    log.info(
        "stopped after %d epochs: %s (%.2f s, %s path)",
        result.epochs_run,
        result.stopped,
        result.seconds,
        chosen,
    )
    return result
