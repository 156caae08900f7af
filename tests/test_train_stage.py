"""The train stage on bad runs: whatever stops it keeps what the last good run saved.

Each run is `python -m itsacat.stages.train` in a subprocess, as `dvc repro` runs it, in a
scratch directory with data/, params.yaml and prepared/ from the real prepare stage.
Oracle: the files the last good run wrote, byte for byte.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from itsacat.artifacts import load_model
from itsacat.data import load_preprocessing, load_split, network_xy
from itsacat.network import predict_proba
from stage import prepared_stage_dir, run_stage, saved_outputs

OUTPUTS = ("model", "insight", "dvclive")  # every file the last good run wrote
LOSSES = Path("dvclive") / "plots" / "metrics" / "train" / "loss.tsv"


@pytest.fixture(scope="module")
def trained_dir(
    tmp_path_factory: pytest.TempPathFactory, repo_root: Path, shared_dir: Path
) -> Path:
    """A stage directory after one good prepare and train (Adam, 30 epochs on 209 photos)."""
    root = prepared_stage_dir(
        tmp_path_factory.mktemp("stage"),
        repo_root,
        shared_dir,
        prepare={"flip": False, "shift": 0},
        train={"optimizer": "adam", "learning_rate": 0.0005, "epochs": 30, "log_every": 10},
    )
    assert _train(root).returncode == 0
    return root


def test_the_logged_accuracy_calls_cats_at_the_models_threshold(trained_dir: Path) -> None:
    """dvclive's train/accuracy (what `dvc metrics show` and `itsacat tune` read) scores the
    saved network at its own threshold, as evaluate and every serving path call photos."""
    model = load_model(trained_dir / "model")
    prepared = trained_dir / "prepared"
    X, Y = network_xy(load_split(prepared / "train.npz"), load_preprocessing(prepared), "float32")
    p = predict_proba(model.network, X)[0]
    at = {t: float(((p >= t) == (Y[0] > 0.5)).mean()) for t in (model.threshold, 0.5)}
    assert model.threshold != 0.5 and at[model.threshold] != at[0.5]  # the check can tell
    logged = json.loads((trained_dir / "dvclive" / "metrics.json").read_text())
    assert logged["train"]["accuracy"] == pytest.approx(at[model.threshold], abs=1e-9)


def _train(cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_stage("train", cwd)


def _with(src: Path, dst: Path, **train: object) -> Path:
    """A copy of `src` whose params.yaml has these train.* values."""
    shutil.copytree(src, dst, symlinks=True)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["train"].update(train)
    (dst / "params.yaml").write_text(yaml.safe_dump(params))
    return dst


def _one_line_error(run: subprocess.CompletedProcess[str], *words: str) -> str:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "Warning" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("itsacat: error:")]
    assert len(errors) == 1, run.stderr
    for word in words:
        assert word in errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "breakage",
    ["batch bigger than the data", "prepared/ missing", "model/ is a file"],
)
def test_a_run_that_cannot_start_leaves_the_last_run_as_it_was(
    trained_dir: Path, tmp_path: Path, breakage: str
) -> None:
    root = _with(trained_dir, tmp_path / "run")
    if breakage == "batch bigger than the data":
        root = _with(trained_dir, tmp_path / "big", batch_size=100_000)
    elif breakage == "prepared/ missing":
        shutil.rmtree(root / "prepared")
    else:
        shutil.rmtree(root / "model")
        (root / "model").write_text("not a folder")
    before = saved_outputs(root, *OUTPUTS)
    assert (root / LOSSES).read_text().count("\n") > 1  # the good run's records are there

    run = _train(root)

    _one_line_error(run)
    assert "epoch 1:" not in run.stderr  # refused before any training
    assert saved_outputs(root, *OUTPUTS) == before  # dvclive/ was not emptied, model/ untouched


def test_a_diverging_run_saves_no_model_and_says_why_in_one_line(
    trained_dir: Path, tmp_path: Path
) -> None:
    root = _with(trained_dir, tmp_path / "run", optimizer="gd", learning_rate=1.0e30)
    model_before = saved_outputs(root, "model")

    run = _train(root)

    line = _one_line_error(run, "diverged", "train.learning_rate", "no model was saved")
    assert "nan" in line or "inf" in line
    assert saved_outputs(root, "model") == model_before
