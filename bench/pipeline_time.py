"""How long until the model stops improving, and how long the whole pipeline takes.

    python bench/pipeline_time.py                  # both parts
    python bench/pipeline_time.py --plateau-only   # skip the `dvc repro` from scratch
    python bench/pipeline_time.py --val 0.2 --seeds 5

plateau   params.yaml's model and train settings (its path chosen as `fit` chooses it), on a
          stratified validation split of the training photos (default 0.2, since the
          default params train on all 209): the first logged epoch at which validation
          accuracy comes within one photo of the best it ever reaches (after it, more
          epochs buy no validation accuracy), the wall time to that epoch, and the epoch of
          the lowest validation loss; per seed, then the median (--direct: the direct path
          too).
repro     a scratch copy of this working tree (tracked and untracked-not-ignored files, as
          tests/test_pipeline.py makes it), `dvc pull` of the data, then `dvc repro` from
          scratch (every stage runs), then a second `dvc repro` that should do nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from itsacat.config import Params, load_params
from itsacat.data import load_h5, network_xy, split_and_fit
from itsacat.network import init_network, layer_sizes
from itsacat.scratch import copy_worktree, init_scratch_repo
from itsacat.training import EpochLog, fit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclasses.dataclass(frozen=True)
class Plateau:
    seed: int
    epoch: int  # first logged epoch with val accuracy within one photo of the run's best
    seconds: float  # wall time from the start of fit to that epoch's log
    best: float
    total_seconds: float
    path: str
    best_loss_epoch: int  # where validation loss was lowest (what patience would keep)
    final: float  # val accuracy after all epochs


def plateau_run(params: Params, val_fraction: float, seed: int, data: Path, path: str) -> Plateau:
    train_all = load_h5(data / "train_catvnoncat.h5", "train")
    pp = params.prepare
    train, val, prep = split_and_fit(train_all, val_fraction, pp.seed, pp.center, pp.flip, pp.shift)
    tp = dataclasses.replace(params.train, seed=seed, patience=0, stop_cost=0.0)
    X, Y = network_xy(train, prep, tp.dtype)
    X_val, Y_val = network_xy(val, prep, tp.dtype)

    rng = np.random.default_rng(seed)
    sizes = layer_sizes(X.shape[0], params.model.hidden)
    net = init_network(sizes, params.model.activation, params.model.init, rng, tp.dtype)
    logged: list[tuple[EpochLog, float]] = []
    start = time.perf_counter()

    def on_log(entry: EpochLog) -> None:
        logged.append((entry, time.perf_counter() - start))

    result = fit(net, X, Y, tp, rng, X_val=X_val, Y_val=Y_val, on_log=on_log, path=path)
    total = time.perf_counter() - start
    accs = [float(e.val_accuracy or 0.0) for e, _ in logged]
    best = max(accs)
    near = best - 1.0 / len(val) - 1e-9  # within one validation photo of the best
    i = next(i for i, a in enumerate(accs) if a >= near)
    losses = [float(e.val_loss or 0.0) for e, _ in logged]
    best_loss = logged[int(np.argmin(losses))][0].epoch
    return Plateau(
        seed, logged[i][0].epoch, logged[i][1], best, total, result.path, best_loss, accs[-1]
    )


def plateau_section(params: Params, args: argparse.Namespace) -> None:
    tp = params.train
    print(
        f"plateau: model {params.model.hidden} {params.model.activation}, "
        f"{tp.optimizer} lr {tp.learning_rate}, batch {tp.batch_size or 'full'}, "
        f"{tp.epochs} epochs, checks every {tp.log_every}; validation {args.val:.0%} "
        f"of the training photos"
    )
    for path in ("auto", "direct") if args.direct else ("auto",):
        runs = [plateau_run(params, args.val, s, args.data, path) for s in range(args.seeds)]
        for r in runs:
            print(
                f"  {r.path:6s} seed {r.seed}: val accuracy within one photo of its best "
                f"({r.best:.3f}) at epoch {r.epoch}, after {r.seconds:.2f} s; lowest val "
                f"loss at epoch {r.best_loss_epoch}; after all {tp.epochs} epochs "
                f"({r.total_seconds:.2f} s) val accuracy {r.final:.3f}"
            )
        print(
            f"  {runs[0].path:6s} median: epoch {statistics.median(r.epoch for r in runs):.0f}, "
            f"{statistics.median(r.seconds for r in runs):.2f} s to the plateau, "
            f"{statistics.median(r.total_seconds for r in runs):.2f} s for all epochs"
        )


def _run(cwd: Path, *cmd: str) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def repro_section(args: argparse.Namespace) -> None:
    print("dvc repro from scratch (a scratch copy of this working tree)")
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        copy_worktree(ROOT, dest)
        init_scratch_repo(dest, args.shared / "dvc-store")
        pull = _run(dest, "dvc", "pull", "-q", "data.dvc")
        repro = _run(dest, "dvc", "repro")
        again = _run(dest, "dvc", "repro")
        model_json = (dest / "model" / "model.json").read_text()
    meta = json.loads(model_json).get("metadata", {})
    print(f"  dvc pull data.dvc:              {pull:6.2f} s")
    print(f"  dvc repro (every stage runs):   {repro:6.2f} s")
    print(f"  dvc repro again (nothing to do): {again:5.2f} s")
    if meta:
        print(
            f"  inside the train stage, fit took {meta.get('train_seconds')} s on the "
            f"{meta.get('path')} path"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--val", type=float, default=0.2, help="validation fraction for the plateau")
    ap.add_argument("--seeds", type=int, default=3, help="seeds for the plateau")
    ap.add_argument(
        "--direct", action="store_true", help="also time the plateau on the direct path"
    )
    ap.add_argument("--plateau-only", action="store_true")
    ap.add_argument("--repro-only", action="store_true")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    args.data = args.shared / "datasets/catvnoncat"
    logging.basicConfig(level=logging.WARNING)
    params = load_params(ROOT / "params.yaml")
    if not args.repro_only:
        plateau_section(params, args)
    if not args.plateau_only:
        repro_section(args)


if __name__ == "__main__":
    main()
