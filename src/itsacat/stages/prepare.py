"""DVC stage `prepare`: validate the h5 files, split off a validation set, fit preprocessing.

    python -m itsacat.stages.prepare          (what `dvc repro prepare` runs)

Reads data/{train,test}_catvnoncat.h5 and params `prepare.*`; writes prepared/: train.npz,
val.npz, test.npz (uint8 images and labels), preprocessing.json/.npz (the scale and the
training mean that every later path applies) and summary.json (counts, class balance, and
photos that appear in both train and test).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from itsacat.config import PrepareParams, load_params
from itsacat.data import (
    Dataset,
    find_duplicates,
    load_h5,
    save_preprocessing,
    save_split,
    split_and_fit,
    stratified_split,
)
from itsacat.errors import ConfigError
from itsacat.fileio import atomic_write_text
from itsacat.stages._common import run_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    train_h5: Path = Path("data/train_catvnoncat.h5")
    test_h5: Path = Path("data/test_catvnoncat.h5")
    out: Path = Path("prepared")


def _keeps_both_classes(labels: NDArray[Any], val_fraction: float) -> bool:
    """Whether the split leaves every class a training photo and a validation photo.
    Counted by the split itself, so its rounding is the one used."""
    train_idx, val_idx = stratified_split(labels, val_fraction, np.random.default_rng(0))
    return all(
        (labels[train_idx] == cls).any() and (labels[val_idx] == cls).any() for cls in (0, 1)
    )


def check_val_fraction(train_all: Dataset, val_fraction: float, source: str) -> None:
    """Refuse a `prepare.val_fraction` that empties a class on either side of the split.

    No training photo of a class makes the preprocessing mean NaN and training fail later
    for another reason; a validation set without a class has no ROC AUC (NaN in
    metrics.json), and an empty one silently turns early stopping off.
    """
    labels = train_all.labels
    if val_fraction == 0 or _keeps_both_classes(labels, val_fraction):
        return  # with 0 every photo trains: a missing class is the data's fault, not this key's
    working = [f for f in (i / 1000 for i in range(1, 1000)) if _keeps_both_classes(labels, f)]
    allowed = f"0 or from {working[0]} to {working[-1]}" if working else "0"
    counts = " and ".join(
        f"{int((labels == cls).sum())} {name}" for cls, name in enumerate(train_all.classes)
    )
    raise ConfigError(
        f"prepare.val_fraction must be {allowed}, so that each class keeps a training photo "
        f"and a validation photo ({counts} photos to split), got {val_fraction} ({source})"
    )


def prepare(params: PrepareParams, paths: Paths = Paths()) -> dict[str, object]:
    """Do the stage's work and return its summary."""
    train_all = load_h5(paths.train_h5, "train")
    test = load_h5(paths.test_h5, "test")
    check_val_fraction(train_all, params.val_fraction, "params.yaml")
    train, val, prep = split_and_fit(
        train_all, params.val_fraction, params.seed, params.center, params.flip, params.shift
    )

    duplicates = find_duplicates(train_all.images, test.images)
    for i, j in duplicates:
        log.warning("photo %d of train is photo %d of test: test accuracy is optimistic", i, j)
    for name, split in (("train", train), ("val", val), ("test", test)):
        save_split(paths.out / f"{name}.npz", split)
    save_preprocessing(paths.out, prep)
    summary: dict[str, object] = {
        name: {
            "photos": len(s),
            "cats": int(s.labels.sum()),
            "cat_share": round(float(s.labels.mean()), 4) if len(s) else None,
        }
        for name, s in (("train", train), ("val", val), ("test", test))
    }
    summary["train_test_duplicates"] = [{"train": i, "test": j} for i, j in duplicates]
    atomic_write_text(paths.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "prepared %d train, %d val, %d test photos (cats: %.0f%% / %s / %.0f%%); centred: %s",
        len(train),
        len(val),
        len(test),
        100 * train.labels.mean(),
        f"{100 * val.labels.mean():.0f}%" if len(val) else "-",
        100 * test.labels.mean(),
        params.center,
    )
    return summary


def main() -> int:
    return run_stage(lambda: prepare(load_params().prepare))


if __name__ == "__main__":
    raise SystemExit(main())
