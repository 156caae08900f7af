"""No train/serve skew: for the 50 test photos, the live endpoint answers what evaluate computed.

A small real model is trained here on the real data set (a few dozen epochs), saved, scored
the way the evaluate stage scores it (`Predictor.predict_proba`), then served by
`itsacat serve`; the photos go over HTTP as raw uint8 pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from itsacat.artifacts import Model, load_model, save_model
from itsacat.config import TrainParams
from itsacat.data import Dataset, fit_preprocessing, load_h5, preprocess
from itsacat.network import init_network
from itsacat.predict import Predictor
from itsacat.serve.process import ServerProcess
from itsacat.training import fit


@pytest.fixture(scope="module")
def trained(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    data = shared_dir / "datasets/catvnoncat"
    train = load_h5(data / "train_catvnoncat.h5", "train")
    test = load_h5(data / "test_catvnoncat.h5", "test")
    prep = fit_preprocessing(train.images, center=True)
    X = preprocess(train.images, prep, "float32")
    Y = train.labels.reshape(1, -1).astype(np.float32)
    rng = np.random.default_rng(0)
    net = init_network([X.shape[0], 16, 4, 1], "relu", "he", rng, "float32")
    params = TrainParams(
        epochs=40, learning_rate=0.005, class_weight="none", log_every=1000, insight_every=0
    )
    result = fit(net, X, Y, params, rng)
    model_dir = tmp_path_factory.mktemp("skew-model")
    save_model(Model(result.network, prep, train.classes), model_dir)
    return model_dir, test


@pytest.fixture(scope="module")
def server(trained: tuple[Path, Dataset]) -> Iterator[str]:
    with ServerProcess.start(trained[0], workers=2) as proc:
        yield proc.url


def test_endpoint_answers_what_evaluate_computed(
    trained: tuple[Path, Dataset], server: str
) -> None:
    model_dir, test = trained
    # What src/itsacat/stages/evaluate.py does: Predictor(load_model(...)).predict_proba.
    p_eval = Predictor(load_model(model_dir)).predict_proba(test.images)
    assert len(p_eval) == 50
    # The model learnt something, so agreement is not two constant answers matching.
    assert np.ptp(p_eval) > 0.1

    buf = io.BytesIO()
    np.save(buf, test.images)
    r = requests.post(
        server + "/invocations",
        data=buf.getvalue(),
        headers={"Content-Type": "application/x-npy"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    served = r.json()["predictions"]
    assert [p["probability"] for p in served] == [round(float(p), 6) for p in p_eval]
    assert [p["label"] for p in served] == [test.classes[int(p >= 0.5)] for p in p_eval]

    # One photo per request, as nested JSON arrays: same answers (a 1-column matmul may
    # differ from the 50-column one in the last float32 bit, hence the 1e-6).
    for i in range(0, 50, 7):
        r = requests.post(
            server + "/invocations",
            data=json.dumps(test.images[i].tolist()),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert r.json()["probability"] == pytest.approx(float(p_eval[i]), abs=1.5e-6)


def test_the_endpoint_calls_photos_at_the_models_own_threshold(
    trained: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """A model saved with another threshold is served with it: labels follow P >= t."""
    model_dir, test = trained
    model = load_model(model_dir)
    p_eval = Predictor(model).predict_proba(test.images)
    model.threshold = float(np.median(p_eval))  # half the photos on each side
    save_model(model, tmp_path / "m")
    buf = io.BytesIO()
    np.save(buf, test.images)
    with ServerProcess.start(tmp_path / "m", workers=1) as proc:
        r = requests.post(
            proc.url + "/invocations",
            data=buf.getvalue(),
            headers={"Content-Type": "application/x-npy"},
            timeout=60,
        )
    labels = [p["label"] for p in r.json()["predictions"]]
    assert labels == [test.classes[int(p >= model.threshold)] for p in p_eval]
    assert {p["threshold"] for p in r.json()["predictions"]} == {model.threshold}  # and says so
    assert labels != [test.classes[int(p >= 0.5)] for p in p_eval]  # the threshold mattered
