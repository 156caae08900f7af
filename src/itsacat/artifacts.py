"""Save and load a model directory, atomically.

A model directory holds two kinds of file:

    model.json              architecture, preprocessing, classes, version, schema version
    weights-<sha>.npz       W0…, b0…, and `mean` when inputs are centred (no pickles)

`model.json` names its weights file, whose name is the hash of its content. Saving writes
the new weights under a new name, then replaces `model.json` in one atomic rename, then
removes weight files no longer named. Interrupted at any moment, the directory still holds
a complete model: the previous one or the new one.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itsacat.data import CLASSES, IMAGE_SIZE, N_X, Preprocessing
from itsacat.errors import ModelError
from itsacat.fileio import atomic_write_bytes, atomic_write_text
from itsacat.network import Network

SCHEMA_VERSION = 1
MODEL_JSON = "model.json"


@dataclass
class Model:
    """A trained network with everything needed to use it on a photo."""

    network: Network
    preprocessing: Preprocessing
    classes: tuple[str, ...] = CLASSES
    version: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5  # P(cat) from which a photo is called a cat


def save_model(model: Model, directory: str | Path) -> str:
    """Write `model` into `directory` atomically and return its version (weights hash)."""
    directory = Path(directory)
    arrays: dict[str, np.ndarray] = {}
    for l, (W, b) in enumerate(zip(model.network.W, model.network.b, strict=True)):
        arrays[f"W{l}"] = np.asarray(W)
        arrays[f"b{l}"] = np.asarray(b)
    if model.preprocessing.mean is not None:
        arrays["mean"] = np.asarray(model.preprocessing.mean, dtype=np.float32)
    # in the hashed file: the version names how the model calls photos, not only its weights
    arrays["threshold"] = np.asarray(model.threshold, dtype=np.float64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle
    blob = buf.getvalue()
    version = hashlib.sha256(blob).hexdigest()[:16]
    weights_name = f"weights-{version}.npz"
    atomic_write_bytes(directory / weights_name, blob)
    spec = {
        "schema_version": SCHEMA_VERSION,
        "format": "itsacat-mlp",
        "version": version,
        "weights_file": weights_name,
        "layer_sizes": model.network.sizes,
        "hidden_activation": model.network.activation,
        "output_activation": "sigmoid",
        "dtype": str(np.asarray(model.network.W[0]).dtype),
        "classes": list(model.classes),
        "threshold": model.threshold,
        "preprocessing": model.preprocessing.to_json(),
        "metadata": model.metadata,
    }
    atomic_write_text(directory / MODEL_JSON, json.dumps(spec, indent=2) + "\n")
    for stale in directory.glob("weights-*.npz"):
        if stale.name != weights_name:
            stale.unlink(missing_ok=True)
    model.version = version
    return version


def load_model(directory: str | Path) -> Model:
    """Read a model directory written by `save_model`, checking it is complete."""
    directory = Path(directory)
    spec_path = directory / MODEL_JSON
    if not spec_path.exists():
        raise ModelError(
            f"{directory} holds no {MODEL_JSON}; train a model first (`dvc repro` or "
            "`itsacat train`), or point --model-dir at a model directory"
        )
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{spec_path} is not valid JSON ({exc}); retrain the model") from None
    if spec.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(
            f"{spec_path} has schema_version {spec.get('schema_version')!r}, this itsacat "
            f"reads {SCHEMA_VERSION}; retrain the model with this version"
        )
    weights_path = directory / str(spec.get("weights_file", ""))
    if not weights_path.is_file():
        raise ModelError(f"{spec_path} names {weights_path.name}, which is missing; retrain")
    try:
        with np.load(weights_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"{weights_path} is unreadable ({exc}); retrain the model") from None
    sizes = spec["layer_sizes"]
    L = len(sizes) - 1
    try:
        W = [arrays[f"W{l}"] for l in range(L)]
        b = [arrays[f"b{l}"] for l in range(L)]
    except KeyError as exc:
        raise ModelError(f"{weights_path} lacks {exc}; retrain the model") from None
    for l in range(L):
        if W[l].shape != (sizes[l + 1], sizes[l]) or b[l].shape != (sizes[l + 1], 1):
            raise ModelError(
                f"{weights_path}: layer {l} has shape {W[l].shape}, but model.json says "
                f"{(sizes[l + 1], sizes[l])}; retrain the model"
            )
    if sizes[0] != N_X or spec["preprocessing"].get("image_size") != IMAGE_SIZE:
        raise ModelError(f"{spec_path}: input size {sizes[0]} is not 64×64×3 = {N_X}")
    prep = spec["preprocessing"]
    mean = arrays.get("mean") if prep.get("center") else None
    if prep.get("center") and mean is None:
        raise ModelError(f"{weights_path} lacks the training mean that model.json promises")
    threshold = float(arrays["threshold"]) if "threshold" in arrays else 0.5  # older models
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"{weights_path}: threshold {threshold} is not in (0, 1); retrain")
    return Model(
        network=Network(W, b, spec["hidden_activation"]),
        preprocessing=Preprocessing(scale=float(prep["scale"]), mean=mean),
        classes=tuple(spec["classes"]),
        version=spec["version"],
        metadata=spec.get("metadata", {}),
        threshold=threshold,
    )
