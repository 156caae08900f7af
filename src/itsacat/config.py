"""params.yaml → frozen, validated dataclasses.

`load_params("params.yaml")` is the one way configuration enters the program. Every
section is a frozen dataclass; unknown or misspelled keys are rejected, and every bad value
fails before any work starts with one line naming the key, the value and what is allowed:

    train.learning_rate must be > 0, got -0.1 (params.yaml)

SageMaker passes hyperparameters as strings; `params_from_hyperparameters` turns them into
the very same dataclasses, through the same checks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from itsacat.errors import ConfigError

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")

Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid"]
Optimizer = Literal["gd", "momentum", "rmsprop", "adam"]


def _fail(key: str, value: object, allowed: str, source: str) -> typing.NoReturn:
    raise ConfigError(f"{key} must be {allowed}, got {value!r} ({source})")


@dataclass(frozen=True)
class PrepareParams:
    """How raw photos become network input, and how the validation set is split off."""

    val_fraction: float = 0.0
    center: bool = True
    seed: int = 0

    def check(self, source: str) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            _fail("prepare.val_fraction", self.val_fraction, "in [0, 1)", source)


@dataclass(frozen=True)
class ModelParams:
    """The architecture: hidden layer sizes, their activation and the initialisation."""

    hidden: tuple[int, ...] = (20, 7, 5)
    activation: Activation = "relu"
    init: Literal["he", "xavier"] = "he"

    def check(self, source: str) -> None:
        for size in self.hidden:
            if size < 1:
                _fail("model.hidden", list(self.hidden), "a list of layer sizes >= 1", source)


@dataclass(frozen=True)
class TrainParams:
    """The fit loop: optimiser, schedule, regularisation, stopping and bookkeeping."""

    optimizer: Optimizer = "adam"
    learning_rate: float = 0.0075
    epochs: int = 2500
    batch_size: int = 0  # 0 = full batch
    l2: float = 0.0
    dropout: float = 0.0  # probability of dropping a hidden unit
    lr_decay: float = 0.0  # lr_t = lr / (1 + lr_decay * epoch)
    momentum: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    stop_cost: float = 0.0  # stop once the training cost falls below this (0 = never)
    patience: int = 0  # stop after this many checks without a better val loss (0 = never)
    seed: int = 1
    dtype: Literal["float32", "float64"] = "float32"
    backend: Literal["numpy", "cupy"] = "numpy"
    compute: Literal["local", "sagemaker"] = "local"
    log_every: int = 25
    insight_every: int = 100

    def check(self, source: str) -> None:
        if not self.learning_rate > 0:
            _fail("train.learning_rate", self.learning_rate, "> 0", source)
        if self.epochs < 1:
            _fail("train.epochs", self.epochs, ">= 1", source)
        if self.batch_size < 0:
            _fail("train.batch_size", self.batch_size, ">= 0 (0 means full batch)", source)
        if self.l2 < 0:
            _fail("train.l2", self.l2, ">= 0", source)
        if not 0.0 <= self.dropout < 1.0:
            _fail("train.dropout", self.dropout, "in [0, 1)", source)
        if self.lr_decay < 0:
            _fail("train.lr_decay", self.lr_decay, ">= 0", source)
        if not 0.0 <= self.momentum < 1.0:
            _fail("train.momentum", self.momentum, "in [0, 1)", source)
        if not 0.0 <= self.beta2 < 1.0:
            _fail("train.beta2", self.beta2, "in [0, 1)", source)
        if not self.epsilon > 0:
            _fail("train.epsilon", self.epsilon, "> 0", source)
        if self.stop_cost < 0:
            _fail("train.stop_cost", self.stop_cost, ">= 0 (0 disables it)", source)
        if self.patience < 0:
            _fail("train.patience", self.patience, ">= 0 (0 disables it)", source)
        if self.log_every < 1:
            _fail("train.log_every", self.log_every, ">= 1", source)
        if self.insight_every < 0:
            _fail("train.insight_every", self.insight_every, ">= 0 (0 disables it)", source)


@dataclass(frozen=True)
class EvaluateParams:
    """How predictions are scored and shown."""

    threshold: float = 0.5
    gallery_size: int = 16

    def check(self, source: str) -> None:
        if not 0.0 < self.threshold < 1.0:
            _fail("evaluate.threshold", self.threshold, "in (0, 1)", source)
        if self.gallery_size < 0:
            _fail("evaluate.gallery_size", self.gallery_size, ">= 0", source)


@dataclass(frozen=True)
class AwsParams:
    """Where the project lives on AWS. Real AWS by configuration alone; tests use moto."""

    region: str = "us-east-1"

    def check(self, source: str) -> None:
        pass


@dataclass(frozen=True)
class TuneParams:
    """Hyperparameter search ranges for `itsacat tune` (local DVC queue or SageMaker)."""

    def check(self, source: str) -> None:
        pass


@dataclass(frozen=True)
class DeployParams:
    """`itsacat deploy`: target, endpoint names, traffic shifting, smoke test."""

    target: Literal["local", "sagemaker", "lambda"] = "local"

    def check(self, source: str) -> None:
        pass


@dataclass(frozen=True)
class NotifyParams:
    """Who hears when training ends, a deploy succeeds or a rollback happens."""

    def check(self, source: str) -> None:
        pass


@dataclass(frozen=True)
class ReportParams:
    """The pull-request report: which metrics are guarded, and by how much."""

    def check(self, source: str) -> None:
        pass


@dataclass(frozen=True)
class Params:
    """Everything params.yaml holds. Sections left out take their defaults."""

    prepare: PrepareParams = field(default_factory=PrepareParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    aws: AwsParams = field(default_factory=AwsParams)
    tune: TuneParams = field(default_factory=TuneParams)
    deploy: DeployParams = field(default_factory=DeployParams)
    notify: NotifyParams = field(default_factory=NotifyParams)
    report: ReportParams = field(default_factory=ReportParams)

    def check(self, source: str) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).check(source)


def _convert(key: str, value: Any, hint: Any, source: str) -> Any:
    """Coerce one YAML value to the field's type, or fail naming the key."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            _fail(key, value, "one of " + ", ".join(map(str, allowed)), source)
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(key, value, args[0], source)
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            _fail(key, value, "a list", source)
        return tuple(_convert(key, v, item, source) for v in value)
    if origin is dict:
        key_type, item = typing.get_args(hint)
        if not isinstance(value, Mapping):
            _fail(key, value, "a mapping", source)
        return {
            _convert(key, k, key_type, source): _convert(f"{key}.{k}", v, item, source)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(hint):
        return _build_section(hint, key, value, source)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(key, value, "true or false", source)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, value, "a whole number", source)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, value, "a number", source)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _fail(key, value, "a string", source)
        return value
    raise TypeError(f"unsupported field type {hint!r} for {key}")


def _build_section(cls: type, name: str, raw: Any, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        _fail(name, raw, "a mapping of keys to values", source)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"unknown key {name}.{key} ({source}); known keys in {name}: "
                + ", ".join(sorted(known))
            )
    kwargs = {k: _convert(f"{name}.{k}", v, hints[k], source) for k, v in raw.items()}
    return cls(**kwargs)


def params_from_dict(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a parsed params.yaml mapping and return the frozen `Params`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        _fail("params.yaml", raw, "a mapping of sections", source)
    hints = typing.get_type_hints(Params)
    sections = {f.name for f in dataclasses.fields(Params)}
    for name in raw:
        if name not in sections:
            raise ConfigError(
                f"unknown section {name!r} ({source}); known sections: "
                + ", ".join(sorted(sections))
            )
    params = Params(**{name: _build_section(hints[name], name, raw[name], source) for name in raw})
    params.check(source)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. A missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        return params_from_dict({}, str(path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return params_from_dict(raw, str(path))


def params_to_dict(params: Params) -> dict[str, Any]:
    """The plain-dict form of `params` (tuples as lists), for JSON and YAML."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, tuple) else v

    return {
        name: {k: plain(v) for k, v in dataclasses.asdict(getattr(params, name)).items()}
        for name in (f.name for f in dataclasses.fields(params))
    }


def params_from_hyperparameters(
    hyperparameters: Mapping[str, str], base: Params | None = None
) -> Params:
    """SageMaker's string hyperparameters (`"train.learning_rate": "0.01"`) → `Params`.

    Each value is parsed as YAML, so "0.01", "[20, 7, 5]" and "true" mean what they say;
    keys are `section.key`, layered over `base` (defaults when None).
    """
    merged = params_to_dict(base or Params())
    for dotted, text in hyperparameters.items():
        if "." not in dotted:
            raise ConfigError(
                f"hyperparameter {dotted!r} must be named section.key, "
                "e.g. train.learning_rate (SageMaker hyperparameters)"
            )
        section, key = dotted.split(".", 1)
        try:
            value = yaml.safe_load(text) if isinstance(text, str) else text
        except yaml.YAMLError:
            value = text
        merged.setdefault(section, {})[key] = value
    return params_from_dict(merged, "SageMaker hyperparameters")
