"""DVC stage `train`: fit the network on the prepared photos and save the model.

    python -m itsacat.stages.train            (what `dvc repro train` runs)

Reads prepared/ and params `model.*` and `train.*`; writes model/ (weights + model.json,
atomically), insight/ (per-layer and per-perceptron statistics) and dvclive/ (per-epoch
loss and accuracy for `dvc plots`). A progress bar on a terminal, log lines otherwise.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itsacat.artifacts import Model, save_model
from itsacat.backend import get_backend, to_numpy
from itsacat.config import Params, load_params, params_to_dict
from itsacat.data import load_preprocessing, load_split, network_xy
from itsacat.insight import InsightRecorder
from itsacat.network import Network, init_network, layer_sizes
from itsacat.stages._common import run_stage
from itsacat.training import EpochLog, FitResult, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    prepared: Path = Path("prepared")
    model: Path = Path("model")
    insight: Path = Path("insight")
    live: Path = Path("dvclive")


def _progress(total: int) -> Any:
    """A tqdm bar when a person watches a terminal, else nothing (log lines instead)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="epoch", dynamic_ncols=True, leave=False)


def train(params: Params, paths: Paths = Paths(), live: Any = None) -> FitResult:
    """Fit a network as params say; save model/ and insight/; log to `live` if given."""
    tp = params.train
    xp = get_backend(tp.backend)
    train_set = load_split(paths.prepared / "train.npz")
    val_set = load_split(paths.prepared / "val.npz")
    prep = load_preprocessing(paths.prepared)
    if tp.optimizer in ("adam", "rmsprop") and prep.mean is None:
        log.warning(
            "train.optimizer is %s but inputs are not centred: it often collapses to "
            "'always non-cat'; set prepare.center: true (params.yaml)",
            tp.optimizer,
        )
    X, Y = (xp.asarray(a) for a in network_xy(train_set, prep, tp.dtype))  # (12288, m), (1, m)
    X_val = Y_val = None
    if len(val_set):
        X_val, Y_val = (xp.asarray(a) for a in network_xy(val_set, prep, tp.dtype))

    rng = np.random.default_rng(tp.seed)
    sizes = layer_sizes(X.shape[0], params.model.hidden)
    net = init_network(sizes, params.model.activation, params.model.init, rng, tp.dtype, xp)
    recorder = InsightRecorder()
    bar = _progress(tp.epochs)

    def on_log(e: EpochLog) -> None:
        if live is not None:
            live.step = e.epoch
            for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                value = getattr(e, name)
                if value is not None:
                    split, metric = name.split("_", 1)
                    live.log_metric(f"{split}/{metric}", value)
            live.next_step()
        if bar is None:
            val = (
                f", val loss {e.val_loss:.4f} acc {e.val_accuracy:.3f}"
                if e.val_loss is not None
                else ""
            )
            log.info("epoch %d: loss %.4f acc %.3f%s", e.epoch, e.train_loss, e.train_accuracy, val)

    def on_epoch(epoch: int, cost: float) -> None:
        if bar is not None:
            bar.update(1)
            if epoch % 10 == 0:
                bar.set_postfix(cost=f"{cost:.4f}")

    try:
        result = fit(
            net,
            X,
            Y,
            tp,
            rng,
            X_val=X_val,
            Y_val=Y_val,
            on_log=on_log,
            on_insight=recorder,
            on_epoch=on_epoch,
        )
    finally:
        if bar is not None:
            bar.close()
    host = Network(
        [to_numpy(w) for w in result.network.W],
        [to_numpy(b) for b in result.network.b],
        result.network.activation,
    )
    metadata = {
        "params": params_to_dict(params),
        "epochs_run": result.epochs_run,
        "stopped": result.stopped,
        "train_seconds": round(result.seconds, 3),
        "path": result.path,
        "train_photos": len(train_set),
        "val_photos": len(val_set),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    version = save_model(Model(host, prep, train_set.classes, metadata=metadata), paths.model)
    if recorder.epochs:
        recorder.save(paths.insight)
    else:  # insight off: still write the declared output, empty
        InsightRecorder().save(paths.insight)
    log.info("saved model %s to %s/", version, paths.model)
    if live is not None:
        live.summary["train_seconds"] = round(result.seconds, 3)
        live.summary["epochs_run"] = result.epochs_run
    return result


def main() -> int:
    def body() -> None:
        params = load_params()
        if params.train.compute == "sagemaker":
            from itsacat.aws.training import train_on_sagemaker

            train_on_sagemaker(params)
            return
        from dvclive import Live

        with Live(str(Paths.live), dvcyaml=False, save_dvc_exp=False) as live:
            result = train(params, Paths(), live)
        from itsacat.aws.notify import notify

        version = json.loads((Paths.model / "model.json").read_text())["version"]
        notify(
            "training_ended",
            f"model {version} trained locally ({result.epochs_run} epochs, {result.seconds:.1f} s)",
            params.notify,
            compute="local",
            version=version,
            epochs_run=result.epochs_run,
        )

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
