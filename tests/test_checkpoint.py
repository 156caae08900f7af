"""An interrupted fit hands out its state, and a fit resumed from it trains exactly as the
uninterrupted one did: the same weights bit for bit, the same history.

Oracle: the same fit run without interruption, in the same process (float64, one path).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
import pytest

from itsacat import training
from itsacat.config import TrainParams
from itsacat.network import init_network
from itsacat.training import Checkpoints, EpochLog, FitResult, FitState, fit

N_X, M, M_VAL = 300, 40, 15
SIZES = [N_X, 8, 4, 1]
EPOCHS = 90


def _data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, N_X))
    X = rng.standard_normal((N_X, M))
    X_val = rng.standard_normal((N_X, M_VAL))
    return X, (w @ X > 0).astype(np.float64), X_val, (w @ X_val > 0).astype(np.float64)


def _params(**kw: Any) -> TrainParams:
    base = {"learning_rate": 0.01, "epochs": EPOCHS, "log_every": 10, "insight_every": 0}
    return TrainParams(**{**base, "dtype": "float64", "l2": 0.0, "class_weight": "none", **kw})


def _fit(
    params: TrainParams,
    checkpoints: Checkpoints | None = None,
    resume: FitState | None = None,
    on_epoch: Any = None,
    logged: list[EpochLog] | None = None,
) -> FitResult:
    X, Y, X_val, Y_val = _data()
    rng = np.random.default_rng(5)
    net = init_network(SIZES, "relu", "he", rng, "float64")
    return fit(
        net,
        X,
        Y,
        params,
        rng,
        X_val=X_val,
        Y_val=Y_val,
        checkpoints=checkpoints,
        resume=resume,
        on_epoch=on_epoch,
        on_log=None if logged is None else logged.append,
    )


SETTINGS = [
    {"optimizer": "adam", "batch_size": 16, "dropout": 0.2},  # direct, mini-batches
    {"optimizer": "rmsprop", "learning_rate": 0.002, "lr_decay": 0.01},  # direct, full batch
    {"optimizer": "gd", "l2": 0.5},  # gram, full batch
    {"optimizer": "momentum", "batch_size": 13, "class_weight": "balanced"},  # gram
    {"optimizer": "adam", "learning_rate": 0.005, "patience": 3, "log_every": 5},  # stops at 50
]


@pytest.mark.parametrize(
    "setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items())
)
def test_a_resumed_fit_trains_exactly_like_an_uninterrupted_one(setting: dict[str, Any]) -> None:
    params = _params(**setting)
    whole = _fit(params)
    saved: list[FitState] = []
    ckpt = Checkpoints(saved.append, every_s=0)

    def press_ctrl_c(epoch: int, cost: float) -> None:
        if epoch == 40:
            ckpt.interrupted = True  # what the signal handler does

    with pytest.raises(KeyboardInterrupt):
        _fit(params, ckpt, on_epoch=press_ctrl_c)
    assert [s.epoch for s in saved] == [40]
    state = saved[0]
    assert state.path == whole.path
    logged: list[EpochLog] = []
    resumed = _fit(params, resume=state, logged=logged)
    for a, b in zip(
        [*whole.network.W, *whole.network.b], [*resumed.network.W, *resumed.network.b], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == whole.history
    assert (resumed.epochs_run, resumed.stopped) == (whole.epochs_run, whole.stopped)
    assert logged and logged[0].epoch > 40  # the resumed run logs only what is new
    if "patience" in setting:
        assert "did not improve" in whole.stopped


def test_periodic_checkpoints_come_at_epoch_ends_and_each_one_resumes_exactly() -> None:
    params = _params(optimizer="momentum", l2=0.3, batch_size=16)
    saved: list[FitState] = []
    whole = _fit(params, Checkpoints(saved.append, every_s=1e-9))  # due after every epoch
    assert [s.epoch for s in saved] == list(range(1, EPOCHS))  # none after the last
    for state in (saved[0], saved[57]):
        resumed = _fit(params, resume=state)
        np.testing.assert_array_equal(resumed.network.W[0], whole.network.W[0])
    assert saved[57].scalars["seconds"] >= saved[0].scalars["seconds"] > 0.0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_waits_for_the_epoch_to_end_then_the_state_is_saved(sig: int) -> None:
    before = signal.getsignal(sig)
    saved: list[FitState] = []

    def signal_at_epoch_30(epoch: int, cost: float) -> None:
        if epoch == 30:
            os.kill(os.getpid(), sig)

    with pytest.raises(KeyboardInterrupt):
        _fit(
            _params(optimizer="adam"),
            Checkpoints(saved.append, every_s=0),
            on_epoch=signal_at_epoch_30,
        )
    assert [s.epoch for s in saved] == [30]
    assert signal.getsignal(sig) is before  # the handlers fit set are gone again


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint() -> None:
    saved: list[FitState] = []

    def two_presses(epoch: int, cost: float) -> None:
        if epoch == 30:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _fit(_params(optimizer="adam"), Checkpoints(saved.append, every_s=0), on_epoch=two_presses)
    assert saved == []


def test_resuming_on_the_other_path_is_refused() -> None:
    saved: list[FitState] = []
    ckpt = Checkpoints(saved.append, every_s=1e-9)
    _fit(_params(optimizer="adam", epochs=3), ckpt)
    with pytest.raises(ValueError, match="taken on the direct path, not gram"):
        _fit(_params(optimizer="gd", epochs=3), resume=saved[0])


def test_the_time_a_checkpoint_keeps_counts_the_setup_before_the_first_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resumed fit reports the time of both runs, each with its setup (XᵀX on the Gram
    path, buffers on the direct one): the checkpoint keeps the time since `fit` began."""
    clock = [1000.0]

    def tick() -> float:  # a clock that moves a millisecond per reading…
        clock[0] += 1e-3
        return clock[0]

    class SlowSetup(training._Direct):  # …and 5 s while the engine is set up
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            clock[0] += 5.0
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(training.time, "perf_counter", tick)
    monkeypatch.setattr(training, "_Direct", SlowSetup)
    params = _params(optimizer="adam")
    saved: list[FitState] = []
    whole = _fit(params, Checkpoints(saved.append, every_s=1e-9))
    assert 5.0 < whole.seconds < 7.5
    assert saved[0].scalars["seconds"] > 5.0  # was the first epoch's time alone
    assert _fit(params, resume=saved[0]).seconds > 10.0  # two setups, one whole training
