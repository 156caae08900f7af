"""params.yaml → dataclasses: every bad value and key fails with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from itsacat.config import (
    Params,
    load_params,
    params_from_dict,
    params_from_hyperparameters,
    params_to_dict,
)
from itsacat.errors import ConfigError


def test_repo_params_yaml_is_valid_and_matches_defaults_shape(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    assert params.model.hidden == (20, 7, 5)
    assert params.train.backend == "numpy"


def test_repo_params_yaml_holds_the_defaults_a_missing_key_gets(repo_root: Path) -> None:
    """A key left out of params.yaml gets the dataclass default: the chosen defaults must
    be the same in both places, or deleting a line would silently change the model."""
    params, defaults = load_params(repo_root / "params.yaml"), Params()
    for section in ("prepare", "model", "train", "evaluate"):
        assert getattr(params, section) == getattr(defaults, section), section


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_params(tmp_path / "nope.yaml") == Params()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"train": {"learning_rate": -0.1}}, "train.learning_rate must be > 0, got -0.1"),
        ({"model": {"activation": "swish"}}, "model.activation must be one of relu"),
        ({"model": {"hidden": [20, 0, 5]}}, "model.hidden must be a list of layer sizes >= 1"),
        ({"train": {"optimizer": "adagrad"}}, "train.optimizer must be one of gd"),
        ({"train": {"optmizer": "adam"}}, "unknown key train.optmizer"),
        ({"trian": {}}, "unknown section 'trian'"),
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be a whole number"),
        ({"train": {"batch_size": -1}}, "train.batch_size must be >= 0"),
        ({"train": {"dropout": 1.0}}, "train.dropout must be in [0, 1)"),
        ({"train": {"dtype": "float16"}}, "train.dtype must be one of float32, float64"),
        ({"prepare": {"val_fraction": 1.5}}, "prepare.val_fraction must be in [0, 1)"),
        ({"prepare": {"center": "yes"}}, "prepare.center must be true or false"),
        (
            {"prepare": {"shift": 20}},
            "prepare.shift must be an integer in [0, 16] (pixels), got 20",
        ),
        ({"prepare": {"shift": -1}}, "prepare.shift must be an integer in [0, 16]"),
        ({"prepare": {"shift": 1.5}}, "prepare.shift must be a whole number"),
        ({"train": {"class_weight": "auto"}}, "train.class_weight must be one of none, balanced"),
        ({"model": {"threshold": 0}}, "model.threshold must be in (0, 1)"),
        (
            {"evaluate": {"threshold": 0.6}},
            "evaluate.threshold (params.yaml) is now model.threshold: the threshold travels "
            "inside the model",
        ),
        ({"train": "fast"}, "train must be a mapping"),
        (
            {"aws": {"spot": True, "max_runtime_s": 3600, "max_wait_s": 600}},
            "aws.max_wait_s must be at least aws.max_runtime_s (3600) and at most 2419200 "
            "when aws.spot is true, got 600",
        ),
        ({"aws": {"spot": "yes"}}, "aws.spot must be true or false"),
    ],
)
def test_bad_values_name_key_value_and_allowed(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        params_from_dict(raw)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_params_are_frozen() -> None:
    params = Params()
    with pytest.raises(AttributeError):
        params.train.learning_rate = 1.0  # type: ignore[misc]


def test_sagemaker_string_hyperparameters_reach_the_same_dataclasses() -> None:
    params = params_from_hyperparameters(
        {"train.learning_rate": "0.01", "model.hidden": "[8, 4]", "prepare.center": "false"}
    )
    assert params.train.learning_rate == 0.01
    assert params.model.hidden == (8, 4)
    assert params.prepare.center is False
    with pytest.raises(ConfigError, match="SageMaker hyperparameters"):
        params_from_hyperparameters({"train.learning_rate": "-1"})
    with pytest.raises(ConfigError, match="section.key"):
        params_from_hyperparameters({"learning_rate": "0.1"})


def test_round_trip_through_plain_dict() -> None:
    params = params_from_dict({"model": {"hidden": [3, 2]}, "train": {"l2": 0.5}})
    assert params_from_dict(params_to_dict(params)) == params
