"""The prepare stage on the real photos: a validation split that leaves a class without
training or validation photos is refused before anything is written, naming the range that
works; a bad params.yaml makes `python -m itsacat.stages.prepare` print one line, exit 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from itsacat.config import PrepareParams
from itsacat.errors import ConfigError
from itsacat.stages import prepare as prepare_stage


@pytest.fixture
def paths(shared_dir: Path, tmp_path: Path) -> prepare_stage.Paths:
    data = shared_dir / "datasets" / "catvnoncat"
    return prepare_stage.Paths(
        data / "train_catvnoncat.h5", data / "test_catvnoncat.h5", tmp_path / "prepared"
    )


def _prepare(paths: prepare_stage.Paths, val_fraction: float) -> dict[str, object]:
    params = PrepareParams(val_fraction=val_fraction, flip=False, shift=0)
    return prepare_stage.prepare(params, paths)


def _has_both_classes(summary: dict[str, object], split: str) -> bool:
    counts = summary[split]
    assert isinstance(counts, dict)
    return 0 < counts["cats"] < counts["photos"]


@pytest.mark.parametrize("val_fraction", [0.999, 0.995, 0.001])
def test_val_fraction_that_empties_a_class_is_refused_naming_what_works(
    paths: prepare_stage.Paths, val_fraction: float
) -> None:
    """0.999 used to leave no training photo ("cats: nan%", then a misleading train error);
    0.001 an empty validation set, so early stopping was silently off."""
    with pytest.raises(ConfigError) as err:
        _prepare(paths, val_fraction)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("prepare.val_fraction must be 0 or from ")
    assert message.endswith(f", got {val_fraction} (params.yaml)")
    assert not paths.out.exists(), "refused before any output is written"

    # Oracle: the range the message names is exactly where the split keeps both classes.
    found = re.search(r"from ([0-9.]+) to ([0-9.]+)", message)
    assert found, message
    low, high = float(found[1]), float(found[2])
    for fraction in (low, high):
        summary = _prepare(paths, fraction)
        assert _has_both_classes(summary, "train") and _has_both_classes(summary, "val")
    for fraction in (round(low - 0.001, 3), round(high + 0.001, 3)):
        with pytest.raises(ConfigError):
            _prepare(paths, fraction)


def test_val_fraction_zero_keeps_every_photo_for_training(paths: prepare_stage.Paths) -> None:
    summary = _prepare(paths, 0.0)
    assert summary["val"] == {"photos": 0, "cats": 0, "cat_share": None}
    assert _has_both_classes(summary, "train")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("prepare:\n  seed: -1\n", "prepare.seed must be >= 0, got -1 (params.yaml)"),
        ("prepare:\n  val_fraction: 0.999\n", "prepare.val_fraction must be 0 or from "),
        (
            "prepare:\n  seed: 1\n  seed: 2\n",
            "params.yaml is not valid YAML: line 3, column 3: duplicate key 'seed'",
        ),
    ],
)
def test_stage_refuses_bad_params_in_one_line(
    shared_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    line: str,
) -> None:
    (tmp_path / "data").symlink_to(shared_dir / "datasets" / "catvnoncat")
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert prepare_stage.main() == 1
    err = capsys.readouterr().err
    assert err.startswith(f"itsacat: error: {line}")
    assert err.count("\n") == 1, err
    assert not (tmp_path / "prepared").exists()
