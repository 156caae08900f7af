"""Model directories: save → load → same predictions; interrupted saves keep the old model."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from itsacat.artifacts import Model, load_model, save_model
from itsacat.cli import main
from itsacat.data import N_X, Preprocessing
from itsacat.errors import ModelError
from itsacat.network import init_network, predict_proba
from itsacat.predict import Predictor


def _model(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    net = init_network([N_X, 3, 1], "tanh", "xavier", rng, "float32")
    mean = rng.random((N_X, 1)).astype(np.float32)
    return Model(net, Preprocessing(mean=mean))


def test_save_load_same_predictions(tmp_path: Path) -> None:
    model = _model(0)
    version = save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    X = np.random.default_rng(1).random((N_X, 5)).astype(np.float32)
    assert np.array_equal(predict_proba(model.network, X), predict_proba(loaded.network, X))
    assert np.array_equal(loaded.preprocessing.mean, model.preprocessing.mean)
    assert loaded.version == version and loaded.network.activation == "tanh"
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    assert spec["schema_version"] == 1 and spec["layer_sizes"] == [N_X, 3, 1]


def test_resave_replaces_weights_and_leaves_no_stale_files(tmp_path: Path) -> None:
    save_model(_model(0), tmp_path)
    v2 = save_model(_model(1), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", f"weights-{v2}.npz"]


def test_same_weights_same_version(tmp_path: Path) -> None:
    assert save_model(_model(3), tmp_path / "a") == save_model(_model(3), tmp_path / "b")


@pytest.mark.parametrize("fail_at", ["weights", "model.json"])
def test_interrupted_save_leaves_previous_model_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    old = _model(0)
    old_version = save_model(old, tmp_path)
    real_replace = os.replace

    def interrupted_replace(src: str, dst: str) -> None:
        if (fail_at == "weights") == Path(dst).name.startswith("weights-"):
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-save
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        save_model(_model(1), tmp_path)
    monkeypatch.undo()
    loaded = load_model(tmp_path)
    assert loaded.version == old_version
    X = np.random.default_rng(2).random((N_X, 3)).astype(np.float32)
    assert np.array_equal(predict_proba(loaded.network, X), predict_proba(old.network, X))
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_load_errors_name_the_problem_and_fix(
    tmp_path: Path, model_factory: Callable[..., Path]
) -> None:
    with pytest.raises(ModelError, match="holds no model.json; train a model first"):
        load_model(tmp_path / "missing")
    d = model_factory(tmp_path / "m")
    spec_path = d / "model.json"
    spec = json.loads(spec_path.read_text())

    spec_path.write_text(json.dumps({**spec, "schema_version": 99}))
    with pytest.raises(ModelError, match="schema_version 99"):
        load_model(d)
    spec_path.write_text(json.dumps({**spec, "layer_sizes": [N_X, 5, 3, 1]}))
    with pytest.raises(ModelError, match="layer 0 has shape"):
        load_model(d)
    spec_path.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(d)
    spec_path.write_text(json.dumps(spec))
    next(d.glob("weights-*.npz")).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="is damaged"):
        load_model(d)


def _edit_spec(key: str, value: object = None) -> Callable[[Path], Path]:
    """Damage: set model.json's `key` to `value`, or delete it when `value` is None."""

    def damage(d: Path) -> Path:
        spec = json.loads((d / "model.json").read_text())
        if value is None:
            del spec[key]
        else:
            spec[key] = value
        (d / "model.json").write_text(json.dumps(spec))
        return d / "model.json"

    return damage


def _write_spec(content: bytes) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        (d / "model.json").write_bytes(content)
        return d / "model.json"

    return damage


def _spec_is_a_folder(d: Path) -> Path:
    (d / "model.json").unlink()
    (d / "model.json").mkdir()
    return d / "model.json"


def _truncate_weights(d: Path) -> Path:
    (weights,) = d.glob("weights-*.npz")
    weights.write_bytes(weights.read_bytes()[:-100])
    return weights


def _flip_a_weights_bit(d: Path) -> Path:
    (weights,) = d.glob("weights-*.npz")
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x10  # inside W0's float32s: zip's own checks may not see it
    weights.write_bytes(bytes(blob))
    return weights


def _diverged(value: float) -> Callable[[Path], Path]:
    """A model saved, hash and all, by a training whose weights blew up."""

    def damage(d: Path) -> Path:
        model = load_model(d)
        model.network.W[1][0, 0] = value
        save_model(model, d)
        (weights,) = d.glob("weights-*.npz")
        return weights

    return damage


@pytest.mark.parametrize(
    "damage",
    [
        _truncate_weights,
        _flip_a_weights_bit,
        _write_spec(b"[]"),
        _write_spec(b"\xff\xfe not UTF-8 \x80"),
        _spec_is_a_folder,
        _edit_spec("layer_sizes"),
        _edit_spec("preprocessing"),
        _edit_spec("classes", ["cat"]),
        _edit_spec("hidden_activation", "swish"),
        _edit_spec("weights_file", "../weights-elsewhere.npz"),
        _diverged(np.nan),
        _diverged(np.inf),
    ],
    ids=[
        "truncated-weights",
        "bit-flipped-weights",
        "spec-a-list",
        "spec-not-utf8",
        "spec-a-folder",
        "no-layer_sizes",
        "no-preprocessing",
        "one-class",
        "unknown-activation",
        "weights-elsewhere",
        "nan-weights",
        "infinite-weights",
    ],
)
def test_a_damaged_model_is_one_line_naming_the_file_and_the_fix(
    tmp_path: Path,
    model_factory: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], Path],
) -> None:
    d = model_factory(tmp_path / "model")
    damaged = damage(d)
    with pytest.raises(
        ModelError, match=r"retrain the model \(`dvc repro train`\) or restore"
    ) as e:
        load_model(d)
    assert str(damaged) in str(e.value)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"never read: the model fails first")
    assert main(["predict", str(photo), "--model-dir", str(d)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("itsacat: error: ") and err.count("\n") == 1, err


def test_predictor_classifies_real_photos(tiny_model_dir: Path, photos: list[Path]) -> None:
    predictor = Predictor.load(tiny_model_dir)
    for photo in photos:
        p = predictor.predict_bytes(photo.read_bytes(), trace=True)
        assert p.label in ("cat", "non-cat") and 0.0 <= p.probability <= 1.0
        assert p.label == ("cat" if p.probability >= 0.5 else "non-cat")
        assert [len(t.outputs) for t in p.trace or []] == [4, 3, 1]
        assert p.trace and p.trace[-1].outputs[0] == pytest.approx(p.probability, abs=1e-6)


def test_the_threshold_travels_inside_the_model_and_names_its_version(tmp_path: Path) -> None:
    model = _model(0)
    model.threshold = 0.3
    version = save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.threshold == 0.3
    assert json.loads((tmp_path / "m" / "model.json").read_text())["threshold"] == 0.3
    assert Predictor(loaded).threshold == Predictor.load(tmp_path / "m").threshold == 0.3
    model.threshold = 0.5  # same weights, another decision rule: another version
    assert save_model(model, tmp_path / "n") != version


def test_a_threshold_edited_in_model_json_alone_is_refused_not_ignored(tmp_path: Path) -> None:
    """The weights file's threshold decides (its hash is the version); an edit to model.json
    alone changed nothing, silently."""
    model = _model(0)
    model.threshold = 0.3
    save_model(model, tmp_path)
    spec = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**spec, "threshold": 0.4}))
    with pytest.raises(ModelError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "says threshold 0.4" in message and "carry 0.3" in message
    assert "set model.threshold in params.yaml" in message
    (tmp_path / "model.json").write_text(json.dumps(spec))  # restored: loads again
    assert load_model(tmp_path).threshold == 0.3


def test_a_model_saved_before_thresholds_travelled_calls_at_one_half(tmp_path: Path) -> None:
    save_model(_model(0), tmp_path)
    (weights,) = tmp_path.glob("weights-*.npz")
    with np.load(weights) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "threshold"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    # as such a model was saved: named by the hash of its weights file
    version = hashlib.sha256(buf.getvalue()).hexdigest()[:16]
    weights.unlink()
    (tmp_path / f"weights-{version}.npz").write_bytes(buf.getvalue())
    spec = json.loads((tmp_path / "model.json").read_text())
    spec.update(version=version, weights_file=f"weights-{version}.npz")
    (tmp_path / "model.json").write_text(json.dumps(spec))
    assert load_model(tmp_path).threshold == 0.5


def test_saved_files_get_the_permissions_open_gives_not_owner_only(tmp_path: Path) -> None:
    """Atomic writes go through a temporary file, created 0600; the result must not be."""
    (tmp_path / "plain.txt").write_text("made by open()")
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    save_model(_model(0), tmp_path / "m")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert len(modes) == 2 and set(modes.values()) == {expected}, modes
