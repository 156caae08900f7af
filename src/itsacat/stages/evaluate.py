"""DVC stage `evaluate`: score the model on test, train and validation; draw the pictures.

    python -m itsacat.stages.evaluate         (what `dvc repro evaluate` runs)

Reads model/, prepared/, insight/ and params `evaluate.*`; writes metrics.json
(accuracy, precision, recall, F1, ROC AUC, log loss per split), eval/plots/roc.json and
eval/plots/confusion.json for `dvc plots`, eval/predictions.json (every test photo's
probability) and PNGs: ROC, confusion matrix, misclassified test photos, per-layer and
per-perceptron insight. Predictions go through `Predictor`, exactly as serving does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itsacat import plots
from itsacat.artifacts import load_model, weights_file
from itsacat.config import EvaluateParams, load_params
from itsacat.data import load_split
from itsacat.fileio import atomic_write_text, writable_folder
from itsacat.insight import load_insight
from itsacat.metrics import classification_metrics, confusion, roc_curve
from itsacat.predict import Predictor
from itsacat.stages._common import run_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    prepared: Path = Path("prepared")
    model: Path = Path("model")
    insight: Path = Path("insight")
    metrics: Path = Path("metrics.json")
    out: Path = Path("eval")


def _json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def evaluate(params: EvaluateParams, paths: Paths = Paths()) -> dict[str, Any]:
    """Score every split, write metrics and pictures, return the metrics."""
    # before any work: an unwritable eval/ found after metrics.json is rewritten would
    # leave the new metrics beside the old pictures
    for folder in (paths.metrics.parent, paths.out, paths.out / "plots"):
        writable_folder(folder)
    model = load_model(paths.model)
    threshold = model.threshold  # the model's own, as every serving path uses it
    predictor = Predictor(model)
    metrics: dict[str, Any] = {}
    probs: dict[str, np.ndarray] = {}
    splits = {name: load_split(paths.prepared / f"{name}.npz") for name in ("train", "val", "test")}
    for name, split in splits.items():
        if len(split) == 0:
            continue
        probs[name] = predictor.predict_proba(split.images)
        metrics[name] = {
            k: round(v, 6)
            for k, v in classification_metrics(split.labels, probs[name], threshold).items()
        }
    # the file model.json names: a stale one an interrupted save left may lie beside it
    weights = paths.model / weights_file(model.version)
    metrics["model"] = {
        "size_bytes": weights.stat().st_size,
        "train_seconds": model.metadata.get("train_seconds"),
        "epochs_run": model.metadata.get("epochs_run"),
        "threshold": threshold,
    }
    _json(paths.metrics, metrics)

    test, p_test = splits["test"], probs["test"]
    classes = test.classes
    plots_dir = paths.out / "plots"
    fpr, tpr, thr = roc_curve(test.labels, p_test)
    _json(
        plots_dir / "roc.json",
        {
            "roc": [
                {
                    "fpr": round(float(f), 6),
                    "tpr": round(float(t), 6),
                    "threshold": None if not np.isfinite(h) else round(float(h), 6),
                }
                for f, t, h in zip(fpr, tpr, thr, strict=True)
            ]
        },
    )
    predicted = p_test >= threshold
    _json(
        plots_dir / "confusion.json",
        [
            {"actual": classes[int(y)], "predicted": classes[int(p)]}
            for y, p in zip(test.labels, predicted, strict=True)
        ],
    )
    _json(
        paths.out / "predictions.json",
        [
            {"index": i, "label": int(y), "probability": round(float(p), 6)}
            for i, (y, p) in enumerate(zip(test.labels, p_test, strict=True))
        ],
    )

    c = confusion(test.labels, p_test, threshold)
    operating = (
        c["fp"] / max(c["fp"] + c["tn"], 1),
        c["tp"] / max(c["tp"] + c["fn"], 1),
        threshold,
    )
    plots.roc(fpr, tpr, metrics["test"]["roc_auc"], paths.out / "roc.png", operating)
    plots.confusion_matrix(c, paths.out / "confusion.png", classes, threshold)
    wrong = np.flatnonzero(predicted != test.labels.astype(bool))[: params.gallery_size]
    plots.gallery(
        test.images[wrong],
        [f"#{i}: truly {classes[int(test.labels[i])]}\nP(cat) = {p_test[i]:.2f}" for i in wrong],
        paths.out / "misclassified.png",
        f"misclassified test photos ({len(wrong)} shown; a cat from P(cat) {threshold:g})",
    )
    insight = load_insight(paths.insight)
    pictures = {"insight_layers.png": plots.insight_layers}
    pictures["insight_perceptrons.png"] = plots.insight_perceptrons
    for name, draw in pictures.items():
        if insight.rows:
            draw(insight, paths.out / name)
        else:  # eval/ persists between runs (dvc.yaml): no picture of an older training
            (paths.out / name).unlink(missing_ok=True)
    log.info(
        "test: accuracy %.3f, F1 %.3f, ROC AUC %.3f, log loss %.3f",
        metrics["test"]["accuracy"],
        metrics["test"]["f1"],
        metrics["test"]["roc_auc"],
        metrics["test"]["log_loss"],
    )
    return metrics


def main() -> int:
    return run_stage(lambda: evaluate(load_params().evaluate))


if __name__ == "__main__":
    raise SystemExit(main())
