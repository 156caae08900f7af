"""What every layer and every perceptron is doing while the network learns.

At every `train.insight_every` epochs the fit loop hands `InsightRecorder` the network,
the last batch's forward cache, its gradients and the weights before the step. From them:

per layer       weight_norm ‖W‖, grad_norm ‖dW‖, update_ratio ‖ΔW‖/‖W‖,
                act_mean, act_std, dead_fraction (units that fired for no photo in the batch)
per perceptron  act_mean, fire_rate (share of photos it fired for), weight_norm (its
                incoming weights, a row of W), grad_norm (that row of dW)

A unit "fires" when its output is above its activation's midpoint: > 0 for relu,
leaky_relu and tanh, > ½ for sigmoid. Layers are numbered from 1 (first hidden) to L
(the output). Saved as `layers.json` (one row per epoch and layer) and `perceptrons.npz`
(for layer l and stat s, `L{l}_{s}` of shape (records, n_l), and `epochs`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itsacat.backend import to_numpy
from itsacat.errors import ModelError
from itsacat.fileio import NPZ_ERRORS, atomic_write_bytes, atomic_write_text
from itsacat.network import Cache, Grads, Network, activate

LAYER_STATS = ("weight_norm", "grad_norm", "update_ratio", "act_mean", "act_std", "dead_fraction")
PERCEPTRON_STATS = ("act_mean", "fire_rate", "weight_norm", "grad_norm")


def _fires(A: np.ndarray, activation: str) -> np.ndarray:
    return (0.5 if activation == "sigmoid" else 0.0) < A


def snapshot(
    net: Network, cache: Cache, grads: Grads, W_before: list[Any]
) -> tuple[list[dict[str, float]], list[dict[str, np.ndarray]]]:
    """Per-layer rows and per-perceptron arrays for one moment of training."""
    L = len(net.W)
    rows, units = [], []
    for l in range(L):
        W, dW, W0 = to_numpy(net.W[l]), to_numpy(grads.dW[l]), to_numpy(W_before[l])
        activation = "sigmoid" if l == L - 1 else net.activation
        A = to_numpy(activate(cache.Z[l], activation))  # (n_l, m), before any dropout
        fires = _fires(A, activation)
        w_norm = float(np.linalg.norm(W))
        rows.append(
            {
                "layer": l + 1,
                "size": int(W.shape[0]),
                "weight_norm": w_norm,
                "grad_norm": float(np.linalg.norm(dW)),
                "update_ratio": float(np.linalg.norm(W - W0) / (w_norm or 1.0)),
                "act_mean": float(A.mean()),
                "act_std": float(A.std()),
                "dead_fraction": float((~fires.any(axis=1)).mean()),
            }
        )
        units.append(
            {
                "act_mean": A.mean(axis=1),
                "fire_rate": fires.mean(axis=1),
                "weight_norm": np.linalg.norm(W, axis=1),
                "grad_norm": np.linalg.norm(dW, axis=1),
            }
        )
    return rows, units


@dataclass
class InsightRecorder:
    """A fit-loop hook that keeps every snapshot in memory until `save`."""

    epochs: list[int] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    units: list[list[dict[str, np.ndarray]]] = field(default_factory=list)

    def __call__(
        self, epoch: int, net: Network, cache: Cache, grads: Grads, W_before: list[Any]
    ) -> None:
        rows, units = snapshot(net, cache, grads, W_before)
        self.epochs.append(epoch)
        self.rows.extend({"epoch": epoch, **r} for r in rows)
        self.units.append(units)

    def arrays(self) -> dict[str, np.ndarray]:
        """`epochs`, and `L{l}_{stat}` (records, n_l) for every layer and perceptron stat."""
        arrays: dict[str, np.ndarray] = {"epochs": np.asarray(self.epochs, dtype=np.int64)}
        n_layers = len(self.units[0]) if self.units else 0
        for l in range(n_layers):
            for stat in PERCEPTRON_STATS:
                arrays[f"L{l + 1}_{stat}"] = np.stack([u[l][stat] for u in self.units])
        return arrays

    @classmethod
    def restored(
        cls, rows: list[dict[str, float]], arrays: dict[str, np.ndarray]
    ) -> InsightRecorder:
        """The recorder whose `rows` and `arrays()` these are (a checkpoint's)."""
        epochs = [int(e) for e in arrays["epochs"]]
        n_layers = sum(k.endswith(f"_{PERCEPTRON_STATS[0]}") for k in arrays)
        units = [
            [{s: arrays[f"L{l + 1}_{s}"][i] for s in PERCEPTRON_STATS} for l in range(n_layers)]
            for i in range(len(epochs))
        ]
        return cls(epochs, list(rows), units)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        atomic_write_text(directory / "layers.json", json.dumps(self.rows, indent=1) + "\n")
        buf = io.BytesIO()
        np.savez(buf, **self.arrays())  # type: ignore[arg-type]  # the stub reads ** as allow_pickle
        atomic_write_bytes(directory / "perceptrons.npz", buf.getvalue())


@dataclass(frozen=True)
class Insight:
    """A saved insight record, read back."""

    rows: list[dict[str, float]]
    epochs: np.ndarray
    units: dict[str, np.ndarray]

    @property
    def n_layers(self) -> int:
        return max((int(r["layer"]) for r in self.rows), default=0)

    def layer_rows(self, epoch: int | None = None) -> list[dict[str, float]]:
        """Rows of one epoch (the last recorded when None)."""
        if not self.rows:
            return []
        epoch = int(self.epochs[-1]) if epoch is None else epoch
        return [r for r in self.rows if r["epoch"] == epoch]

    def perceptrons(self, layer: int, epoch: int | None = None) -> dict[str, np.ndarray]:
        """Per-perceptron stats of `layer` at `epoch` (the last recorded when None)."""
        i = -1 if epoch is None else int(np.flatnonzero(self.epochs == epoch)[0])
        return {s: self.units[f"L{layer}_{s}"][i] for s in PERCEPTRON_STATS}


def load_insight(directory: str | Path) -> Insight:
    """Read the record `InsightRecorder.save` wrote, checking it is whole."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ModelError(
            f"{directory} is a file, not an insight folder (layers.json, perceptrons.npz); "
            f"name the folder the train stage writes, or {_RETRAIN}"
        )
    layers, npz_path = directory / "layers.json", directory / "perceptrons.npz"
    missing = ModelError(
        f"no insight record in {directory}; run the train stage (`dvc repro train`) "
        "with train.insight_every > 0"
    )
    try:
        rows = json.loads(layers.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise missing from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _damaged(layers, f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise _damaged(layers, f"unreadable ({exc.strerror or exc})") from None
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            units = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise missing from None
    except NPZ_ERRORS as exc:
        raise _damaged(npz_path, f"unreadable ({exc})") from None
    _check(layers, rows, npz_path, units)
    return Insight(rows, units.pop("epochs"), units)


_RETRAIN = "re-run the train stage (`dvc repro train`) to write it again"


def _damaged(path: Path, problem: str) -> ModelError:
    return ModelError(f"{path} is damaged: {problem}; {_RETRAIN}")


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _check(layers: Path, rows: Any, npz_path: Path, units: dict[str, np.ndarray]) -> None:
    """Every field `Insight`'s readers (`itsacat inspect`, the plots) index is there."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _damaged(layers, "it holds no list of per-layer rows")
    for i, row in enumerate(rows):
        bad = [k for k in ("epoch", "layer", "size") if not _is(row.get(k), int)]
        bad += [k for k in LAYER_STATS if not _is(row.get(k), (int, float))]
        if bad or row["layer"] < 1:
            raise _damaged(layers, f"row {i} has no number for {', '.join(bad or ['layer'])}")
    epochs = units.get("epochs")
    if epochs is None or epochs.ndim != 1 or not np.issubdtype(epochs.dtype, np.integer):
        raise _damaged(npz_path, "it lacks `epochs`, the recorded epochs")
    for l in range(1, max((int(r["layer"]) for r in rows), default=0) + 1):
        for stat in PERCEPTRON_STATS:
            a = units.get(f"L{l}_{stat}")
            if a is None or a.ndim != 2 or a.shape[0] != len(epochs):
                raise _damaged(
                    npz_path, f"it lacks L{l}_{stat} of shape ({len(epochs)} records, units)"
                )
