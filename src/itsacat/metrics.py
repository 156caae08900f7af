"""Classification metrics from labels and probabilities, in plain numpy.

`y` holds labels 0/1 and `p` the predicted probability of class 1 (cat), both shape (m,).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

EPS = 1e-15


def confusion(y: NDArray[Any], p: NDArray[Any], threshold: float = 0.5) -> dict[str, int]:
    """True/false positives and negatives at `threshold`."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p) >= threshold
    return {
        "tp": int((pred & y).sum()),
        "fp": int((pred & ~y).sum()),
        "tn": int((~pred & ~y).sum()),
        "fn": int((~pred & y).sum()),
    }


def roc_curve(y: NDArray[Any], p: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """(fpr, tpr, thresholds), one point per distinct score, from (0, 0) to (1, 1)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(p_sorted)), p_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_run]
    fps = (last_of_run + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, p_sorted[last_of_run]]
    return fpr, tpr, thresholds


def roc_auc(y: NDArray[Any], p: NDArray[Any]) -> float:
    """Area under the ROC curve (trapezoids; ties count half). NaN with one class only."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def log_loss(y: NDArray[Any], p: NDArray[Any]) -> float:
    """Mean binary cross-entropy, with p clipped away from 0 and 1."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def classification_metrics(
    y: NDArray[Any], p: NDArray[Any], threshold: float = 0.5
) -> dict[str, float]:
    """accuracy, balanced_accuracy, precision, recall, f1, roc_auc, log_loss (precision and
    recall 0 when undefined).

    Balanced accuracy is the mean of the recall on cats and on non-cats (of the classes
    present): what accuracy would be on a set half cats, whatever share of cats this has.
    """
    c = confusion(y, p, threshold)
    m = max(len(np.asarray(y)), 1)
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_class = [
        hits / (hits + misses)
        for hits, misses in ((c["tp"], c["fn"]), (c["tn"], c["fp"]))
        if hits + misses
    ]
    return {
        "accuracy": (c["tp"] + c["tn"]) / m,
        "balanced_accuracy": sum(per_class) / max(len(per_class), 1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
    }
