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
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itsacat.data import CLASSES, IMAGE_SIZE, N_X, Preprocessing
from itsacat.errors import ModelError
from itsacat.fileio import NPZ_ERRORS, atomic_write_bytes, atomic_write_text
from itsacat.network import ACTIVATIONS, Network

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


def content_version(blob: bytes) -> str:
    """A model's version: the first 16 hex digits of its weights file's sha256."""
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_file(version: str) -> str:
    """The name of model `version`'s weights file, as its model.json names it."""
    return f"weights-{version}.npz"


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
    version = content_version(blob)
    weights_name = weights_file(version)
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
    """Read a model directory written by `save_model`, checking it is complete and intact.

    A damaged or hand-edited directory raises one `ModelError` naming the file and the fix;
    the weights must hash to the version their name carries, so any damage to them shows.
    """
    directory = Path(directory)
    spec_path = directory / MODEL_JSON
    if not spec_path.exists():
        raise ModelError(
            f"{directory} holds no {MODEL_JSON}; train a model first (`dvc repro` or "
            "`itsacat train`), or point --model-dir at a model directory"
        )
    spec = _read_spec(spec_path)
    weights_path = directory / spec["weights_file"]
    arrays = _read_weights(weights_path, spec["version"])
    sizes = spec["layer_sizes"]
    L = len(sizes) - 1
    try:
        W = [arrays[f"W{l}"] for l in range(L)]
        b = [arrays[f"b{l}"] for l in range(L)]
    except KeyError as exc:
        raise ModelError(f"{weights_path} lacks {exc}; {_FIX}") from None
    for l in range(L):
        if W[l].shape != (sizes[l + 1], sizes[l]) or b[l].shape != (sizes[l + 1], 1):
            raise ModelError(
                f"{weights_path}: layer {l} has shape {W[l].shape}, but model.json says "
                f"{(sizes[l + 1], sizes[l])}; {_FIX}"
            )
    prep = spec["preprocessing"]
    if sizes[0] != N_X or prep["image_size"] != IMAGE_SIZE:
        raise ModelError(f"{spec_path}: input size {sizes[0]} is not 64×64×3 = {N_X}; {_FIX}")
    mean = arrays.get("mean") if prep["center"] else None
    if prep["center"] and mean is None:
        raise ModelError(f"{weights_path} lacks the training mean model.json promises; {_FIX}")
    named = {f"W{l}": W[l] for l in range(L)} | {f"b{l}": b[l] for l in range(L)}
    if mean is not None:
        named["mean"] = mean
    for name, array in named.items():
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise ModelError(
                f"{weights_path}: {name} holds NaN, infinite or non-numeric values (a training "
                f"that diverged?); {_FIX}, with a lower train.learning_rate if it diverged"
            )
    threshold = 0.5  # models saved before the threshold travelled with them
    if "threshold" in arrays:
        t = arrays["threshold"]
        threshold = float(t) if t.shape == () and np.issubdtype(t.dtype, np.floating) else np.nan
    if not 0.0 < threshold < 1.0:
        raise ModelError(f"{weights_path}: threshold {threshold} is not in (0, 1); {_FIX}")
    if "threshold" in spec and spec["threshold"] != threshold:
        # the weights file's threshold decides (its hash is the version): an edit to
        # model.json alone would change nothing, silently
        raise ModelError(
            f"{spec_path} says threshold {spec['threshold']!r}, but the weights (whose hash is "
            f"version {spec['version']}) carry {threshold}; to call cats at another threshold "
            "set model.threshold in params.yaml and run `dvc repro`, or restore model.json"
        )
    return Model(
        network=Network(W, b, spec["hidden_activation"]),
        preprocessing=Preprocessing(scale=float(prep["scale"]), mean=mean),
        classes=tuple(spec["classes"]),
        version=spec["version"],
        metadata=spec["metadata"],
        threshold=threshold,
    )


_FIX = "retrain the model (`dvc repro train`) or restore the model directory"


def _is_size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# key → (the check its value must pass, what the message says it should be)
_SPEC: dict[str, tuple[Callable[[Any], bool], str]] = {
    "version": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "weights_file": (lambda v: isinstance(v, str), "the file name weights-<version>.npz"),
    "layer_sizes": (
        lambda v: isinstance(v, list) and len(v) >= 2 and all(_is_size(n) for n in v),
        "a list of two or more positive layer sizes",
    ),
    "hidden_activation": (lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "classes": (
        lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(c, str) for c in v),
        'two class names, as ["non-cat", "cat"]',
    ),
    "preprocessing": (lambda v: isinstance(v, dict), "an object"),
    "metadata": (lambda v: isinstance(v, dict), "an object"),
}
_PREPROCESSING: dict[str, tuple[Callable[[Any], bool], str]] = {
    "image_size": (_is_size, "a positive integer"),
    "scale": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "center": (lambda v: isinstance(v, bool), "true or false"),
}


def _check(
    spec_path: Path,
    obj: dict[str, Any],
    checks: dict[str, tuple[Callable[[Any], bool], str]],
    prefix: str = "",
) -> None:
    for key, (ok, expected) in checks.items():
        if key not in obj:
            raise ModelError(f"{spec_path} lacks the key {prefix}{key}; {_FIX}")
        if not ok(obj[key]):
            raise ModelError(
                f"{spec_path}: {prefix}{key} is {reprlib.repr(obj[key])}, expected {expected}; "
                f"{_FIX}"
            )


def _read_spec(spec_path: Path) -> dict[str, Any]:
    """model.json, parsed and checked key by key."""
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{spec_path} is not valid JSON ({exc}); {_FIX}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{spec_path} is not UTF-8 text, so not JSON; {_FIX}") from None
    except OSError as exc:
        raise ModelError(f"cannot read {spec_path} ({exc.strerror or exc}); {_FIX}") from None
    if not isinstance(spec, dict):
        raise ModelError(f"{spec_path} holds a JSON {type(spec).__name__}, not an object; {_FIX}")
    if spec.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(
            f"{spec_path} has schema_version {spec.get('schema_version')!r}, this itsacat "
            f"reads {SCHEMA_VERSION}; retrain the model with this version"
        )
    spec.setdefault("metadata", {})
    _check(spec_path, spec, _SPEC)
    _check(spec_path, spec["preprocessing"], _PREPROCESSING, "preprocessing.")
    if spec["weights_file"] != weights_file(spec["version"]):
        raise ModelError(
            f"{spec_path} names weights file {spec['weights_file']}, but version "
            f"{spec['version']} (whose weights are {weights_file(spec['version'])}); {_FIX}"
        )
    return spec


def _read_weights(weights_path: Path, version: str) -> dict[str, np.ndarray]:
    """The arrays of a weights file, once its content is shown to hash to `version`."""
    try:
        blob = weights_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"{weights_path.parent / MODEL_JSON} names {weights_path.name}, which is missing; "
            f"{_FIX}"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read {weights_path} ({exc.strerror or exc}); {_FIX}") from None
    if content_version(blob) != version:
        raise ModelError(
            f"{weights_path} is damaged: its {len(blob):,} bytes are not the weights of "
            f"version {version} (truncated or altered); {_FIX}"
        )
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except NPZ_ERRORS as exc:  # a hand-made file: damage is caught by the hash above
        raise ModelError(f"{weights_path} is unreadable ({exc}); {_FIX}") from None
