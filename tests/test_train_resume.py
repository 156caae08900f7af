"""The train stage, interrupted by a real Ctrl-C (SIGINT) or SIGTERM, keeps its training in
a checkpoint, and the next run carries on to the very model an uninterrupted run writes.

Oracle: the same stage run once without interruption, in a copy of the same directory.
Each run is `python -m itsacat.stages.train` in a subprocess, as `dvc repro` runs it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from itsacat.stages.train import Paths, fingerprint, load_checkpoint
from signals import signal_when
from stage import prepared_stage_dir, run_stage

EPOCHS = 500  # the signal follows epoch 100's log line: a margin for a busy machine


@pytest.fixture(scope="module")
def prepared_dir(
    tmp_path_factory: pytest.TempPathFactory, repo_root: Path, shared_dir: Path
) -> Path:
    """A stage directory: data/, params.yaml (Adam on the 209 photos: the direct path, a few
    ms an epoch) and prepared/ from the real prepare stage."""
    return prepared_stage_dir(
        tmp_path_factory.mktemp("resume"),
        repo_root,
        shared_dir,
        prepare={"flip": False, "shift": 0},
        train={
            "optimizer": "adam",
            "learning_rate": 0.0005,
            "epochs": EPOCHS,
            "log_every": 10,
            "insight_every": 50,
        },
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _train(cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_stage("train", cwd)


def _interrupt(cwd: Path, sig: int, at_epoch: int) -> tuple[int, str]:
    """Run the stage, send `sig` once it has logged epoch `at_epoch`; → (status, log)."""
    args = [sys.executable, "-m", "itsacat.stages.train"]
    return signal_when(args, f"epoch {at_epoch}: loss", sig, cwd)


def _model(cwd: Path) -> dict[str, object]:
    return json.loads((cwd / "model" / "model.json").read_text())


def _losses(cwd: Path) -> list[str]:
    tsv = cwd / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"
    return tsv.read_text().splitlines()  # "step\tloss", then one line per record


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_train_stage_resumes_to_the_uninterrupted_model(
    prepared_dir: Path, tmp_path: Path, sig: int
) -> None:
    whole = _copy(prepared_dir, tmp_path / "whole")
    assert _train(whole).returncode == 0
    cut = _copy(prepared_dir, tmp_path / "cut")

    status, err = _interrupt(cut, sig, at_epoch=100)
    assert status == 130, err
    assert "saving a checkpoint when this epoch ends" in err
    assert f"of {EPOCHS} to " in err and "run the stage again" in err
    assert not (cut / "model").exists()  # nothing half-trained was saved as a model
    checkpoint = Paths(model=cut / "model").checkpoint_file()
    assert checkpoint == cut / ".itsacat" / "checkpoints" / "train.npz"
    from itsacat.config import load_params

    found = load_checkpoint(
        checkpoint, lambda: fingerprint(load_params(cut / "params.yaml"), cut / "prepared")
    )
    assert found is not None
    state, recorder = found
    assert 100 <= state.epoch < EPOCHS
    # the signal lands a few epochs after the marker, more on a busy machine: the insight
    # records are exactly those up to the checkpoint's epoch
    assert recorder.epochs == [1, *range(50, state.epoch + 1, 50)]

    again = _train(cut)
    assert again.returncode == 0, again.stderr
    assert f"after epoch {state.epoch}" in again.stderr and "resuming" in again.stderr
    assert not checkpoint.exists()
    assert _model(cut)["version"] == _model(whole)["version"]  # the weights' own hash
    assert _model(cut)["metadata"]["epochs_run"] == EPOCHS
    assert len(_losses(whole)) == 1 + 1 + EPOCHS // 10  # header, epoch 1, every 10th
    assert _losses(cut) == _losses(whole)  # dvclive holds every record, once
    for name in ("layers.json", "perceptrons.npz"):
        assert (cut / "insight" / name).read_bytes() == (whole / "insight" / name).read_bytes()


def test_a_checkpoint_from_other_params_is_not_resumed(prepared_dir: Path, tmp_path: Path) -> None:
    cut = _copy(prepared_dir, tmp_path / "cut")
    status, err = _interrupt(cut, signal.SIGINT, at_epoch=50)
    assert status == 130, err
    params = yaml.safe_load((cut / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.001
    (cut / "params.yaml").write_text(yaml.safe_dump(params))
    again = _train(cut)
    assert again.returncode == 0, again.stderr
    assert "taken with other params, data or code" in again.stderr
    assert "resuming after epoch" not in again.stderr  # fit started from epoch 1
    assert _model(cut)["metadata"]["epochs_run"] == EPOCHS


def test_an_unreadable_checkpoint_is_reported_and_training_starts_over(
    prepared_dir: Path, tmp_path: Path
) -> None:
    cut = _copy(prepared_dir, tmp_path / "cut")
    checkpoint = cut / ".itsacat" / "checkpoints" / "train.npz"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 not really a zip")
    again = _train(cut)
    assert again.returncode == 0, again.stderr
    assert "cannot read the checkpoint" in again.stderr and "starts over" in again.stderr
    assert not checkpoint.exists()


def test_without_a_checkpoint_the_photos_and_code_are_not_hashed(
    prepared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint reads every prepared photo and source file: only worth it when a
    checkpoint is there to compare with, or to be written."""
    import itsacat.stages.train as stage
    from itsacat.config import load_params

    calls: list[Path] = []
    real = stage.fingerprint
    monkeypatch.setattr(stage, "fingerprint", lambda p, d: calls.append(d) or real(p, d))
    params = load_params(prepared_dir / "params.yaml")
    paths = Paths(prepared=prepared_dir / "prepared", model=tmp_path / "model")
    stage.train(params, replace(paths, insight=tmp_path / "insight"))
    assert calls == [] and (tmp_path / "model" / "model.json").exists()
    stage.save_checkpoint(  # a stale one from other params: now it must be compared
        paths.checkpoint_file(),
        stage.FitState(1, "direct", {}, {}, {}, []),
        stage.InsightRecorder(),
        "another fingerprint",
    )
    stage.train(params, replace(paths, insight=tmp_path / "insight"))
    assert len(calls) == 1 and not paths.checkpoint_file().exists()
