"""The insight record: saved → read back the same; a damaged one is one clear line."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from itsacat.cli import main
from itsacat.errors import ModelError
from itsacat.insight import InsightRecorder, load_insight
from itsacat.network import backward, forward, init_network
from test_cli import reader_gone


@pytest.fixture
def recorder() -> InsightRecorder:
    """Two snapshots of a [6, 4, 3, 1] network on 8 random photos."""
    rng = np.random.default_rng(0)
    net = init_network([6, 4, 3, 1], "relu", "he", rng, "float64")
    X, Y = rng.random((6, 8)), (rng.random((1, 8)) > 0.5).astype(float)
    recorder = InsightRecorder()
    for epoch in (1, 5):
        cache = forward(net, X)
        grads = backward(net, cache, Y)
        W_before = [w.copy() for w in net.W]
        net.W = [w - 0.1 * dw for w, dw in zip(net.W, grads.dW, strict=True)]
        recorder(epoch, net, cache, grads, W_before)
    return recorder


@pytest.fixture
def saved(recorder: InsightRecorder, tmp_path: Path) -> Path:
    recorder.save(tmp_path / "insight")
    return tmp_path / "insight"


def test_a_saved_record_reads_back_the_same(recorder: InsightRecorder, saved: Path) -> None:
    insight = load_insight(saved)
    assert insight.rows == recorder.rows and insight.n_layers == 3
    assert insight.epochs.tolist() == [1, 5]
    for l in (1, 2, 3):
        for stat, values in insight.perceptrons(l, 1).items():
            np.testing.assert_array_equal(values, recorder.units[0][l - 1][stat])


def test_an_empty_record_reads_back_empty(tmp_path: Path) -> None:
    InsightRecorder().save(tmp_path)
    insight = load_insight(tmp_path)
    assert insight.rows == [] and len(insight.epochs) == 0


def _layers(content: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        (d / "layers.json").write_text(content)
        return d / "layers.json"

    return damage


def _truncate_npz(d: Path) -> Path:
    npz = d / "perceptrons.npz"
    npz.write_bytes(npz.read_bytes()[:-50])
    return npz


def _npz_without(key: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        npz = d / "perceptrons.npz"
        with np.load(npz) as f:
            arrays = {k: f[k] for k in f.files if k != key}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        npz.write_bytes(buf.getvalue())
        return npz

    return damage


def _row_without(key: str) -> Callable[[Path], Path]:
    def damage(d: Path) -> Path:
        rows = json.loads((d / "layers.json").read_text())
        del rows[1][key]
        (d / "layers.json").write_text(json.dumps(rows))
        return d / "layers.json"

    return damage


def _a_file(d: Path) -> Path:
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    d.write_text("not a folder")
    return d


@pytest.mark.parametrize(
    "damage",
    [
        _layers("[{"),
        _layers('{"a": 1}'),
        _layers("[1, 2]"),
        _row_without("layer"),
        _row_without("act_mean"),
        _truncate_npz,
        _npz_without("epochs"),
        _npz_without("L2_fire_rate"),
        _a_file,
    ],
    ids=[
        "layers-cut-short",
        "layers-an-object",
        "layers-not-rows",
        "row-without-layer",
        "row-without-a-stat",
        "npz-truncated",
        "npz-without-epochs",
        "npz-without-a-stat",
        "insight-dir-a-file",
    ],
)
def test_damaged_insight_is_one_line_naming_the_file_and_the_fix(
    saved: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[Path], Path]
) -> None:
    damaged = damage(saved)
    with pytest.raises(ModelError, match=r"`dvc repro train`") as e:
        load_insight(saved)
    assert str(damaged) in str(e.value)
    for layer in ([], ["--layer", "2"]):
        assert main(["inspect", "--insight-dir", str(saved), *layer]) == 1
        err = capsys.readouterr().err
        assert err.startswith("itsacat: error: ") and err.count("\n") == 1, err
        assert str(damaged) in err


def test_inspect_into_a_closed_pipe_exits_quietly(saved: Path) -> None:
    status, err = reader_gone("inspect", "--layer", "1", "--insight-dir", str(saved))
    assert (status, err) == (1, "")
