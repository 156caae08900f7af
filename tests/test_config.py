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
        (
            {"model": {"hidden": [20, 0, 5]}},
            "model.hidden must be a list of layer sizes from 1 to 4096",
        ),
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
        (
            {
                "train": {"backend": "cupy", "compute": "sagemaker"},
                "aws": {"instance_type": "ml.m5.large"},
            },
            "aws.instance_type must be an NVIDIA GPU instance (ml.g*, ml.p*) for "
            "train.backend: cupy",
        ),
        (
            {"tune": {"ranges": {"train.epochs": {"low": 1.5, "high": 1.9}}}},
            "tune.ranges.train.epochs must be a range holding two whole numbers or more",
        ),
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


def _yaml_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "params.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("train:\n  l2: .nan\n", "train.l2 must be a finite number, got nan"),
        ("train:\n  lr_decay: .NaN\n", "train.lr_decay must be a finite number, got nan"),
        ("train:\n  stop_cost: .inf\n", "train.stop_cost must be a finite number, got inf"),
        ("train:\n  epsilon: .inf\n", "train.epsilon must be a finite number, got inf"),
        ("train:\n  learning_rate: .inf\n", "train.learning_rate must be a finite number"),
        ("model:\n  threshold: .nan\n", "model.threshold must be a finite number, got nan"),
        ("aws:\n  poll_s: .inf\n", "aws.poll_s must be a finite number, got inf"),
        ("notify:\n  timeout_s: .inf\n", "notify.timeout_s must be a finite number, got inf"),
        (
            "deploy:\n  sagemaker:\n    poll_s: .nan\n",
            "deploy.sagemaker.poll_s must be a finite number, got nan",
        ),
        (
            "deploy:\n  aws_lambda:\n    timeout_wait_s: .inf\n",
            "deploy.aws_lambda.timeout_wait_s must be a finite number, got inf",
        ),
        (
            "deploy:\n  smoke:\n    timeout_s: .inf\n",
            "deploy.smoke.timeout_s must be a finite number, got inf",
        ),
        (
            "tune:\n  ranges:\n    train.l2: {low: 0.1, high: .inf}\n",
            "tune.ranges.train.l2.high must be a finite number, got inf",
        ),
        (
            "report:\n  guards:\n    test.accuracy: .nan\n",
            "report.guards.test.accuracy must be a finite number, got nan",
        ),
        (
            "report:\n  guards:\n    test.log_loss: .inf\n",
            "report.guards.test.log_loss must be a finite number, got inf",
        ),
    ],
)
def test_nan_and_infinity_are_refused_for_every_float_key(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """A NaN L2 makes training diverge (and the stage blames the learning rate); a NaN
    guard compares false with everything, so the report's regression check never fires."""
    with pytest.raises(ConfigError) as err:
        load_params(_yaml_file(tmp_path, text))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_nan_from_sagemaker_hyperparameters_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"train\.l2 must be a finite number, got nan"):
        params_from_hyperparameters({"train.l2": "NaN"})


@pytest.mark.parametrize("section", ["prepare", "train", "tune"])
def test_negative_seeds_are_refused(section: str) -> None:
    """numpy's default_rng raises a bare ValueError on a negative seed, mid-stage."""
    with pytest.raises(ConfigError) as err:
        params_from_dict({section: {"seed": -1}})
    assert f"{section}.seed must be >= 0, got -1 (params.yaml)" in str(err.value)
    assert params_from_dict({section: {"seed": 2**40}})  # numpy takes any size


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("train:\n  epochs: 5\n  epochs: 7\n", "line 3, column 3: duplicate key 'epochs'"),
        (
            "train:\n  epochs: 5\nmodel:\n  hidden: [4]\ntrain:\n  l2: 0.5\n",
            "line 5, column 1: duplicate key 'train' (first on line 1;",
        ),
        ("report:\n  guards: {test.f1: 0.1, test.f1: 0.2}\n", "duplicate key 'test.f1'"),
    ],
)
def test_duplicate_keys_are_refused_not_last_wins(tmp_path: Path, text: str, fragment: str) -> None:
    path = _yaml_file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path} is not valid YAML: line ")
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    """`<<: *base` then overriding a merged key is not a duplicate."""
    text = (
        "deploy:\n"
        "  sagemaker:\n"
        "    traffic: &shift {mode: linear, wait_s: 60}\n"
        "  local:\n"
        "    <<: {port: 9000, workers: 2}\n"
        "    port: 9001\n"
    )
    params = load_params(_yaml_file(tmp_path, text))
    assert params.deploy.local.port == 9001
    assert params.deploy.local.workers == 2


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-05", 1e-05), ("1e-3", 0.001), ("2E-4", 0.0002), ("+1.5e-3", 0.0015), ("1.0e-3", 0.001)],
)
def test_exponents_read_as_numbers_as_dvc_writes_them(
    tmp_path: Path, text: str, value: float
) -> None:
    """`dvc exp run -S train.learning_rate=1e-5` writes `learning_rate: 1e-05`, which
    YAML 1.1 (PyYAML) reads as text: no learning rate under 1e-4 could be tried that way,
    and the fix the error gave could not be typed into -S."""
    params = load_params(_yaml_file(tmp_path, f"train:\n  learning_rate: {text}\n"))
    assert params.train.learning_rate == value


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "train:\n  learning_rate: '1e-3'\n",
            "train.learning_rate must be a number, got the string '1e-3' "
            "(quoted, so YAML reads it as text; write 1.0e-3 or 0.001)",
        ),
        (
            "train:\n  epochs: 1e3\n",
            "train.epochs must be a whole number: write 1000, got 1000.0",
        ),
        ("train:\n  l2: '0.5'\n", "train.l2 must be a number, got the string '0.5' (quoted"),
    ],
)
def test_numbers_yaml_reads_as_text_say_how_to_write_them(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(_yaml_file(tmp_path, text))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    path = _yaml_file(tmp_path, "train:\n  epochs: [5\n  l2: 1\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path} is not valid YAML: line 3, column 5: ")
    assert "expected ',' or ']'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            b"train:\n  l2: \xff\n",
            "is not UTF-8 text: byte 0xff on line 2 (offset 13); save it as UTF-8",
        ),
        (b"train:\n  l2: \x07\n", "is not valid YAML: line 2, column 7: "),
    ],
)
def test_unreadable_text_is_one_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = _yaml_file(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(str(path))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_params_yaml_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.mkdir()
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == f"{path} is a directory, not a params file"


def test_hidden_layers_have_an_upper_bound() -> None:
    """A billion-unit layer would need 12288 × 10⁹ weights: a MemoryError mid-stage."""
    assert params_from_dict({"model": {"hidden": [4096, 4096]}}).model.hidden == (4096, 4096)
    with pytest.raises(ConfigError) as err:
        params_from_dict({"model": {"hidden": [20, 1000000000]}})
    assert str(err.value) == (
        "model.hidden must be a list of layer sizes from 1 to 4096, got [20, 1000000000] "
        "(params.yaml)"
    )


def test_a_cpu_instance_for_cupy_matters_only_where_sagemaker_trains() -> None:
    local = {"train": {"backend": "cupy"}, "aws": {"instance_type": "ml.m5.large"}}
    assert params_from_dict(local).aws.instance_type == "ml.m5.large"  # local: unused
    gpu = {
        "train": {"backend": "cupy", "compute": "sagemaker"},
        "aws": {"instance_type": "ml.g5.xlarge"},
    }
    assert params_from_dict(gpu).aws.instance_type == "ml.g5.xlarge"
    whole = {"tune": {"ranges": {"train.epochs": {"low": 100, "high": 300}}}}
    assert params_from_dict(whole).tune.ranges["train.epochs"].high == 300
