"""DVC stage `train`: fit the network on the prepared photos and save the model.

    python -m itsacat.stages.train            (what `dvc repro train` runs)

Reads prepared/ and params `model.*` and `train.*`; writes model/ (weights + model.json,
atomically), insight/ (per-layer and per-perceptron statistics) and dvclive/ (per-epoch
loss and accuracy for `dvc plots`). A progress bar on a terminal, log lines otherwise.

Interrupted training is not lost: every `CHECKPOINT_EVERY_S` seconds, and when Ctrl-C or
SIGTERM arrives (at the end of the running epoch), the whole training state goes to
.itsacat/checkpoints/train.npz beside model/ (not a DVC output, so `dvc repro` leaves it).
The next run with the same params, prepared data and code carries on from there and ends
with the very model an uninterrupted run would have written; any other run ignores it. It
is deleted once the model is saved. numpy backend only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itsacat.artifacts import Model, save_model
from itsacat.backend import get_backend, to_numpy
from itsacat.config import Params, load_params, params_to_dict
from itsacat.copies import find_copies
from itsacat.data import load_preprocessing, load_split, network_xy
from itsacat.errors import ItsacatError
from itsacat.fileio import NPZ_ERRORS, atomic_write_bytes, writable_folder
from itsacat.insight import InsightRecorder
from itsacat.network import Network, init_network, layer_sizes
from itsacat.stages._common import run_stage
from itsacat.training import (
    Checkpoints,
    EpochLog,
    FitResult,
    FitState,
    check_data_fits,
    choose_path,
    factors_copies,
    fit,
)

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 60.0  # seconds of training between checkpoints (and one on Ctrl-C)
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class Paths:
    prepared: Path = Path("prepared")
    model: Path = Path("model")
    insight: Path = Path("insight")
    live: Path = Path("dvclive")
    checkpoint: Path | None = None  # None: .itsacat/checkpoints/train.npz beside model/

    def checkpoint_file(self) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint
        return self.model.parent / ".itsacat" / "checkpoints" / "train.npz"


def fingerprint(params: Params, prepared: Path) -> str:
    """What a checkpoint must have been taken under to be resumed: the model and train
    params, the prepared photos, and itsacat's own code (sha256)."""
    import itsacat

    h = hashlib.sha256()
    h.update(json.dumps({k: params_to_dict(params)[k] for k in ("model", "train")}).encode())
    files = [
        prepared / n for n in ("train.npz", "val.npz", "preprocessing.json", "preprocessing.npz")
    ]
    for f in [*files, *sorted(Path(itsacat.__file__).parent.rglob("*.py"))]:
        h.update(f.name.encode())
        if f.exists():  # in 1 MiB pieces: the photos are not held twice, even briefly
            with f.open("rb") as stream:
                while piece := stream.read(1 << 20):
                    h.update(piece)
        else:
            h.update(b"-")
    return h.hexdigest()


def save_checkpoint(path: Path, state: FitState, recorder: InsightRecorder, key: str) -> None:
    """One .npz, written atomically: the fit state's arrays, the insight so far, and a JSON
    record of the rest (no pickles)."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": key,
        "epoch": state.epoch,
        "path": state.path,
        "scalars": state.scalars,
        "rng": state.rng,
        "history": [asdict(e) for e in state.history],
        "insight_rows": recorder.rows,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    arrays = {f"fit/{k}": v for k, v in state.arrays.items()}
    arrays |= {f"insight/{k}": v for k, v in recorder.arrays().items()}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, key: Callable[[], str]) -> tuple[FitState, InsightRecorder] | None:
    """The checkpoint at `path` if it was taken under `key()` (see `fingerprint`; computed
    only when there is a checkpoint), else None (with a log line saying why not)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {k: npz[k] for k in npz.files if k != "meta"}
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("fingerprint") != key():
            log.info(
                "not resuming from %s: it was taken with other params, data or code; "
                "training starts over (and replaces it)",
                path,
            )
            return None
        state = FitState(
            epoch=int(meta["epoch"]),
            path=str(meta["path"]),
            arrays={k[4:]: v for k, v in arrays.items() if k.startswith("fit/")},
            scalars={k: float(v) for k, v in meta["scalars"].items()},
            rng=meta["rng"],
            history=[EpochLog(**e) for e in meta["history"]],
        )
        insight = {k[8:]: v for k, v in arrays.items() if k.startswith("insight/")}
        recorder = InsightRecorder.restored(meta["insight_rows"], insight)
    except (*NPZ_ERRORS, KeyError, TypeError) as exc:  # a damaged file, or one of ours changed
        log.warning("cannot read the checkpoint %s (%s); training starts over", path, exc)
        return None
    log.info("resuming from %s, written %s after epoch %d", path, meta["written_at"], state.epoch)
    return state, recorder


@contextlib.contextmanager
def _live(folder: Path, on: bool) -> Iterator[Any]:
    """dvclive's `Live` in `folder` (which it empties on opening), or None when off."""
    if not on:
        yield None
        return
    from dvclive import Live

    with Live(str(folder), dvcyaml=False, save_dvc_exp=False) as live:
        yield live


def _progress(total: int) -> Any:
    """A tqdm bar when a person watches a terminal, else nothing (log lines instead)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="epoch", dynamic_ncols=True, leave=False)


def train(params: Params, paths: Paths = Paths(), log_live: bool = False) -> FitResult:
    """Fit a network as params say; save model/ and insight/; with `log_live`, log each
    epoch to dvclive in `paths.live`.

    Everything that can fail on bad input (params, prepared/, the output folders) is
    checked before dvclive opens `paths.live`, which it empties: a run that cannot start
    leaves the last run's records as they were. A run whose cost turns NaN or infinite
    saves no model, so the last good one stays.
    """
    tp = params.train
    xp = get_backend(tp.backend)
    for folder in (paths.model, paths.insight):
        writable_folder(folder)
    train_set = load_split(paths.prepared / "train.npz")
    val_set = load_split(paths.prepared / "val.npz")
    prep = load_preprocessing(paths.prepared)
    if tp.optimizer in ("adam", "rmsprop") and prep.mean is None:
        log.warning(
            "train.optimizer is %s but inputs are not centred: it often collapses to "
            "'always non-cat'; set prepare.center: true (params.yaml)",
            tp.optimizer,
        )
    check_data_fits(tp, len(train_set), len(val_set) > 0)  # before dvclive empties dvclive/
    X, Y = (xp.asarray(a) for a in network_xy(train_set, prep, tp.dtype))  # (12288, m), (1, m)
    # moved copies (prepare.shift) let the direct path multiply by the originals alone
    path = choose_path(tp, X.shape[0], len(train_set))[0]
    copies = find_copies(train_set.images) if factors_copies(tp, path, len(train_set), xp) else None
    X_val = Y_val = None
    if len(val_set):
        X_val, Y_val = (xp.asarray(a) for a in network_xy(val_set, prep, tp.dtype))

    rng = np.random.default_rng(tp.seed)
    sizes = layer_sizes(X.shape[0], params.model.hidden)
    net = init_network(sizes, params.model.activation, params.model.init, rng, tp.dtype, xp)
    recorder = InsightRecorder()
    checkpoint_file = paths.checkpoint_file()
    checkpoints: Checkpoints | None = None
    resume: FitState | None = None
    if xp is np:  # CuPy's generator state is not saved: no checkpoints on the GPU
        # hashing the photos and the code is only worth it once there is a checkpoint
        key = functools.cache(lambda: fingerprint(params, paths.prepared))
        found = load_checkpoint(checkpoint_file, key)
        if found is not None:
            resume, recorder = found
        checkpoints = Checkpoints(
            lambda state: save_checkpoint(checkpoint_file, state, recorder, key()),
            CHECKPOINT_EVERY_S,
        )
    with _live(paths.live, log_live) as live:
        bar = _progress(tp.epochs)
        if bar is not None and resume is not None:
            bar.update(resume.epoch)

        def to_live(e: EpochLog) -> None:
            if live is not None:
                live.step = e.epoch
                for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                    value = getattr(e, name)
                    if value is not None:
                        split, metric = name.split("_", 1)
                        live.log_metric(f"{split}/{metric}", value)
                live.next_step()

        def on_log(e: EpochLog) -> None:
            to_live(e)
            if bar is None:
                val = (
                    f", val loss {e.val_loss:.4f} acc {e.val_accuracy:.3f}"
                    if e.val_loss is not None
                    else ""
                )
                log.info(
                    "epoch %d: loss %.4f acc %.3f%s", e.epoch, e.train_loss, e.train_accuracy, val
                )

        def on_epoch(epoch: int, cost: float) -> None:
            if bar is not None:
                bar.update(1)
                if epoch % 10 == 0:
                    bar.set_postfix(cost=f"{cost:.4f}")

        if resume is not None:  # dvclive starts afresh: give it the interrupted run's records
            for e in resume.history:
                to_live(e)
        try:
            with np.errstate(all="ignore"):  # a diverging run is reported once, below
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
                    checkpoints=checkpoints,
                    resume=resume,
                    copies=copies,
                    threshold=params.model.threshold,
                )
        except KeyboardInterrupt:
            if checkpoints is not None and checkpoints.saved_epoch:
                log.warning(
                    "saved the training after epoch %d of %d to %s; run the stage again "
                    "(`dvc repro` or `itsacat train`) to carry on from there",
                    checkpoints.saved_epoch,
                    tp.epochs,
                    checkpoint_file,
                )
            raise
        finally:
            if bar is not None:
                bar.close()
        if result.diverged:
            raise ItsacatError(
                f"training diverged: {result.stopped}, so no model was saved ({paths.model}/ "
                f"keeps the last one); lower train.learning_rate (now {tp.learning_rate:g}) "
                "in params.yaml"
            )
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
        model = Model(
            host, prep, train_set.classes, metadata=metadata, threshold=params.model.threshold
        )
        version = save_model(model, paths.model)
        if recorder.epochs:
            recorder.save(paths.insight)
        else:  # insight off: still write the declared output, empty
            InsightRecorder().save(paths.insight)
        log.info("saved model %s to %s/", version, paths.model)
        checkpoint_file.unlink(missing_ok=True)  # the model holds it all now
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
        result = train(params, Paths(), log_live=True)
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
