"""Accuracy over seeds: one lucky seed proves nothing on 50 test photos.

    python bench/seeds.py                         # params.yaml, 10 seeds, test accuracy
    python bench/seeds.py --val 0.2 -S train.optimizer=adam -S train.learning_rate=0.001

Trains from params.yaml (with -S overrides, as `dvc exp run -S` takes them) once per seed
(train.seed = 0…N-1, or N seeds from --start, so a long run can be split over processes)
and prints mean ± std, min and max of train, validation (with --val) and test accuracy
at the params' `model.threshold`, as evaluate scores them (--per-seed: each seed's too).
Choose defaults on validation (--val), never on test.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import yaml

from itsacat.config import load_params, params_from_dict, params_to_dict
from itsacat.data import load_h5, network_xy, split_and_fit
from itsacat.network import init_network, layer_sizes
from itsacat.stages._common import run_stage
from itsacat.training import fit, loss_and_accuracy

ROOT = Path(__file__).resolve().parent.parent


def parse_set(ap: argparse.ArgumentParser, item: str) -> tuple[str, str, object]:
    """`-S section.key=value` → (section, key, the value read as YAML), as `dvc exp run -S`
    reads it; a malformed one is refused as argparse refuses a bad argument."""
    key, eq, text = item.partition("=")
    section, dot, name = key.partition(".")
    if not (eq and dot and section and name):
        ap.error(f"-S takes section.key=value (e.g. -S train.learning_rate=0.01), got {item!r}")
    try:
        return section, name, yaml.safe_load(text)
    except yaml.YAMLError:
        ap.error(f"-S {item}: {text!r} is not a YAML value (quote it, or fix it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--start", type=int, default=0, help="first seed (to split a run in shards)")
    ap.add_argument("--per-seed", action="store_true", help="also print each seed's accuracies")
    ap.add_argument("--val", type=float, default=None, help="validation fraction (overrides)")
    ap.add_argument("-S", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/catvnoncat")
    args = ap.parse_args()
    if args.seeds < 1:
        ap.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.start < 0:
        ap.error(f"--start must be 0 or more (seeds are non-negative), got {args.start}")
    sets = [parse_set(ap, item) for item in args.sets]
    logging.getLogger().setLevel(logging.WARNING)  # run_stage logs INFO; fit's lines are noise

    raw = params_to_dict(load_params(ROOT / "params.yaml"))
    for section, name, value in sets:
        # an unknown section is named by params_from_dict, as an unknown key is
        raw.setdefault(section, {})[name] = value
    if args.val is not None:
        raw["prepare"]["val_fraction"] = args.val
    params = params_from_dict(raw, "command line")
    tp, threshold = params.train, params.model.threshold

    train_all = load_h5(args.data / "train_catvnoncat.h5", "train")
    test = load_h5(args.data / "test_catvnoncat.h5", "test")
    pp = params.prepare
    train, val, prep = split_and_fit(
        train_all, pp.val_fraction, pp.seed, pp.center, pp.flip, pp.shift
    )
    (X, Y), (Xt, Yt) = network_xy(train, prep, tp.dtype), network_xy(test, prep, tp.dtype)
    Xv, Yv = network_xy(val, prep, tp.dtype) if len(val) else (None, None)
    print(
        "settings:",
        {
            k: v
            for k, v in raw["train"].items()
            if k
            in ("optimizer", "learning_rate", "epochs", "batch_size", "l2", "dropout", "lr_decay")
        },
        "hidden",
        list(params.model.hidden),
        params.model.activation,
        "center",
        params.prepare.center,
        "val",
        params.prepare.val_fraction,
        "threshold",
        threshold,
        flush=True,  # seen at once when piped (`| tee`), before the long training
    )
    acc: dict[str, list[float]] = {"train": [], "val": [], "test": []}
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        tps = dataclasses.replace(
            tp,
            seed=seed,
            log_every=max(tp.epochs, 1),
            insight_every=0,
            patience=tp.patience if Xv is not None else 0,
        )
        rng = np.random.default_rng(seed)
        net = init_network(
            layer_sizes(X.shape[0], params.model.hidden),
            params.model.activation,
            params.model.init,
            rng,
            tp.dtype,
        )
        result = fit(net, X, Y, tps, rng, X_val=Xv, Y_val=Yv, threshold=threshold)
        acc["train"].append(loss_and_accuracy(result.network, X, Y, threshold=threshold)[1])
        acc["test"].append(loss_and_accuracy(result.network, Xt, Yt, threshold=threshold)[1])
        if Xv is not None:
            acc["val"].append(loss_and_accuracy(result.network, Xv, Yv, threshold=threshold)[1])
        if args.per_seed:
            print(
                f"seed {seed}",
                " ".join(f"{k} {v[-1]:.4f}" for k, v in acc.items() if v),
                flush=True,
            )
    for split, values in acc.items():
        if values:
            v = np.array(values)
            print(
                f"{split:5s} accuracy {v.mean():.3f} ± {v.std():.3f} "
                f"(min {v.min():.2f}, max {v.max():.2f}, {len(v)} seeds)"
            )
    print(f"{(time.perf_counter() - started) / args.seeds:.2f} s per seed")


if __name__ == "__main__":
    raise SystemExit(run_stage(main))  # a mistake or Ctrl-C: one line, as the CLI's
