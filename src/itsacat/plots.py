"""PNG pictures, rendered offline with matplotlib's Agg backend.

Training curves, ROC, confusion matrix, per-layer insight curves, a per-perceptron
heatmap and a gallery of misclassified photos. Every function takes data and a path and
writes one PNG atomically; matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from itsacat.fileio import atomic_write_bytes
from itsacat.insight import LAYER_STATS, PERCEPTRON_STATS, Insight


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def training_curves(
    curves: dict[str, dict[str, Sequence[float]]], path: str | Path, title: str = ""
) -> None:
    """Loss and accuracy over epochs. `curves` maps a run name to {epoch, train_loss,
    train_accuracy, val_loss?, val_accuracy?} lists; several runs share the axes."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for run, c in curves.items():
        for split, style in (("train", "-"), ("val", "--")):
            if c.get(f"{split}_loss"):
                ax_loss.plot(c["epoch"], c[f"{split}_loss"], style, label=f"{run} {split}")
                ax_acc.plot(c["epoch"], c[f"{split}_accuracy"], style, label=f"{run} {split}")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def roc(
    fpr: NDArray[Any],
    tpr: NDArray[Any],
    auc: float,
    path: str | Path,
    operating: tuple[float, float, float] | None = None,
) -> None:
    """The ROC curve; `operating` = (fpr, tpr, threshold) marks where the model decides."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    if operating is not None:
        f, t, cut = operating
        ax.plot([f], [t], "o", color="black", label=f"a cat from {cut:g}: TPR {t:.2f}, FPR {f:.2f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    _save(fig, path)


def confusion_matrix(
    c: dict[str, int], path: str | Path, classes: Sequence[str], threshold: float | None = None
) -> None:
    plt = _pyplot()
    grid = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(grid, cmap="Blues")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > grid.max() / 2 else "black"
        )
    ax.set_xticks([0, 1], [f"pred {c}" for c in classes])
    ax.set_yticks([0, 1], [f"true {c}" for c in classes])
    ax.set_title(
        "confusion (test)" if threshold is None else f"confusion (test, cat from {threshold:g})"
    )
    _save(fig, path)


def insight_layers(insight: Insight, path: str | Path) -> None:
    """One panel per layer statistic, one line per layer, over epochs."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, stat in zip(axes.flat, LAYER_STATS, strict=True):
        for layer in range(1, insight.n_layers + 1):
            rows = [r for r in insight.rows if r["layer"] == layer]
            ax.plot([r["epoch"] for r in rows], [r[stat] for r in rows], label=f"layer {layer}")
        ax.set(title=stat, xlabel="epoch")
        if stat in ("update_ratio", "grad_norm"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("per-layer insight")
    fig.tight_layout()
    _save(fig, path)


def insight_perceptrons(insight: Insight, path: str | Path, stat: str = "act_mean") -> None:
    """A heatmap per layer: perceptrons down, recorded epochs across, colour = `stat`."""
    assert stat in PERCEPTRON_STATS
    plt = _pyplot()
    L = insight.n_layers
    heights = [insight.units[f"L{l}_{stat}"].shape[1] for l in range(1, L + 1)]
    from matplotlib.ticker import MaxNLocator

    rows = [max(h, 3) for h in heights]
    fig, axes = plt.subplots(
        L,
        1,
        figsize=(10, 1.0 + 0.22 * sum(rows)),
        gridspec_kw={"height_ratios": rows},
        squeeze=False,
        layout="constrained",
    )
    epochs = insight.epochs
    for l, ax in zip(range(1, L + 1), axes[:, 0], strict=True):
        grid = insight.units[f"L{l}_{stat}"].T  # (n_l, records)
        im = ax.imshow(
            grid,
            aspect="auto",
            cmap="viridis",
            interpolation="nearest",
            extent=(float(epochs[0]), float(epochs[-1]), grid.shape[0] - 0.5, -0.5),
        )
        ax.set_ylabel(f"layer {l}\nperceptron")
        if grid.shape[0] <= 8:
            ax.set_yticks(range(grid.shape[0]))
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(im, ax=ax, pad=0.01, aspect=10)
    axes[-1, 0].set_xlabel("epoch")
    fig.suptitle(f"per-perceptron {stat}")
    _save(fig, path)


def gallery(
    images: NDArray[np.uint8], captions: Sequence[str], path: str | Path, title: str
) -> None:
    """A grid of photos with a caption each (an empty note when there are none)."""
    plt = _pyplot()
    n = len(images)
    cols = min(max(n, 1), 8)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions, strict=False):
        ax.imshow(img)
        ax.set_title(cap, fontsize=7)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
