"""The inference core every host shares: load a model once, photos in, verdicts out.

    predictor = Predictor.load("model")
    predictor.predict_bytes(open("cat.jpg", "rb").read(), trace=True)

Bytes are decoded by `data.decode_image` and turned into network input by
`data.preprocess`, the very function training used, so serving cannot drift from training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from itsacat.artifacts import Model, load_model
from itsacat.data import decode_image, preprocess
from itsacat.network import forward


@dataclass(frozen=True)
class LayerTrace:
    """What one layer's perceptrons output for one photo."""

    layer: int  # 1 = first hidden layer; the last is the output layer
    activation: str
    outputs: list[float]


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float  # P(cat)
    threshold: float  # the model's: a cat from P(cat) >= this
    model_version: str
    trace: list[LayerTrace] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.trace is None:
            del out["trace"]
        return out


class Predictor:
    """A loaded model, ready to classify photos. Thread-safe: it never mutates state."""

    def __init__(self, model: Model, threshold: float | None = None) -> None:
        self.model = model
        self.threshold = model.threshold if threshold is None else threshold
        net = model.network
        net.W = [np.asarray(w, dtype=np.float32) for w in net.W]
        net.b = [np.asarray(b, dtype=np.float32) for b in net.b]

    @classmethod
    def load(cls, model_dir: str | Path, threshold: float | None = None) -> Predictor:
        return cls(load_model(model_dir), threshold)

    @property
    def version(self) -> str:
        return self.model.version

    def predict_proba(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """P(cat) for uint8 images (m, 64, 64, 3): shape (m,)."""
        X = preprocess(images, self.model.preprocessing, "float32")
        return forward(self.model.network, X).A[-1][0]

    def predict_images(self, images: NDArray[np.uint8], trace: bool = False) -> list[Prediction]:
        """One `Prediction` per image, with the per-layer trace when asked."""
        X = preprocess(images, self.model.preprocessing, "float32")
        cache = forward(self.model.network, X)
        probs = cache.A[-1][0]
        L = len(self.model.network.W)
        results = []
        for i, p in enumerate(probs):
            layers = None
            if trace:
                layers = [
                    LayerTrace(
                        layer=l,
                        activation="sigmoid" if l == L else self.model.network.activation,
                        outputs=[round(float(v), 6) for v in cache.A[l][:, i]],
                    )
                    for l in range(1, L + 1)
                ]
            results.append(self._prediction(float(p), layers))
        return results

    def predict_bytes(self, data: bytes, trace: bool = False) -> Prediction:
        """Classify one encoded image (JPEG, PNG, …)."""
        return self.predict_images(decode_image(data)[None], trace=trace)[0]

    def _prediction(self, p: float, trace: list[LayerTrace] | None) -> Prediction:
        label = self.model.classes[1] if p >= self.threshold else self.model.classes[0]
        return Prediction(label, round(p, 6), self.threshold, self.model.version, trace)
