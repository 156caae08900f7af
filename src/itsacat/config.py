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
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from itsacat.errors import ConfigError

OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")

MAX_SHIFT = 16  # pixels: a quarter of the 64-pixel photo
# Units per hidden layer. The first layer alone holds 12288 × size weights: at 4096 that is
# 50M floats (200 MB in float32, 400 MB in float64), and Adam keeps two more copies plus the
# gradients, so about 1.6 GB; far past what 209 photos can use, still short of a MemoryError.
MAX_HIDDEN = 4096

Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid"]
Optimizer = Literal["gd", "momentum", "rmsprop", "adam"]


def _fail(key: str, value: object, allowed: str, source: str) -> typing.NoReturn:
    raise ConfigError(f"{key} must be {allowed}, got {value!r} ({source})")


def _check_seed(key: str, seed: int, source: str) -> None:
    # numpy's default_rng takes any integer >= 0, and raises a bare ValueError otherwise.
    if seed < 0:
        _fail(key, seed, ">= 0", source)


@dataclass(frozen=True)
class PrepareParams:
    """How raw photos become network input, and how the validation set is split off."""

    val_fraction: float = 0.0
    center: bool = True  # Adam and RMSprop need it; the mean travels inside the model
    flip: bool = True  # add a mirrored copy of every training photo
    shift: int = 4  # add copies moved this many pixels up, down, left and right (0 = none)
    seed: int = 0

    def check(self, source: str) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            _fail("prepare.val_fraction", self.val_fraction, "in [0, 1)", source)
        if not 0 <= self.shift <= MAX_SHIFT:
            _fail("prepare.shift", self.shift, f"an integer in [0, {MAX_SHIFT}] (pixels)", source)
        _check_seed("prepare.seed", self.seed, source)


@dataclass(frozen=True)
class ModelParams:
    """The architecture: hidden layer sizes, their activation and the initialisation."""

    hidden: tuple[int, ...] = (20, 7, 5)
    activation: Activation = "relu"
    init: Literal["he", "xavier"] = "he"
    threshold: float = 0.35  # P(cat) from which a photo is a cat; travels inside the model

    def check(self, source: str) -> None:
        for size in self.hidden:
            if not 1 <= size <= MAX_HIDDEN:
                _fail(
                    "model.hidden",
                    list(self.hidden),
                    f"a list of layer sizes from 1 to {MAX_HIDDEN}",
                    source,
                )
        if not 0.0 < self.threshold < 1.0:
            _fail("model.threshold", self.threshold, "in (0, 1)", source)


@dataclass(frozen=True)
class TrainParams:
    """The fit loop: optimiser, schedule, regularisation, stopping and bookkeeping."""

    optimizer: Optimizer = "gd"
    learning_rate: float = 0.0075
    epochs: int = 2500
    batch_size: int = 0  # 0 = full batch
    l2: float = 1.0
    dropout: float = 0.0  # probability of dropping a hidden unit
    class_weight: Literal["none", "balanced"] = "balanced"  # balanced: each class half the loss
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
        _check_seed("train.seed", self.seed, source)


@dataclass(frozen=True)
class EvaluateParams:
    """How predictions are scored and shown (at the model's own threshold)."""

    gallery_size: int = 16

    def check(self, source: str) -> None:
        if self.gallery_size < 0:
            _fail("evaluate.gallery_size", self.gallery_size, ">= 0", source)


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_ECR_IMAGE = re.compile(
    r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$"
)
_INSTANCE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")


@dataclass(frozen=True)
class AwsParams:
    """Where the project lives on AWS. Real AWS by configuration alone; tests use moto."""

    region: str = "us-east-1"
    bucket: str = ""  # "" = the bucket of DVC remote `s3` in .dvc/config
    prefix: str = "itsacat"  # S3 key prefix and job-name prefix for SageMaker work
    role_arn: str = ""  # the SageMaker execution role (needed for compute: sagemaker)
    training_image: str = ""  # "" = AWS's prebuilt PyTorch image (CPU or GPU by train.backend)
    instance_type: str = ""  # "" = ml.m5.large (numpy) or ml.g4dn.xlarge (cupy)
    volume_gb: int = 10
    max_runtime_s: int = 3600
    poll_s: float = 15.0
    spot: bool = False  # managed spot training: spare capacity, interrupted jobs resume
    max_wait_s: int = 7200  # with spot: waiting for capacity plus running, >= max_runtime_s

    def check(self, source: str) -> None:
        if not _REGION.match(self.region):
            _fail("aws.region", self.region, "an AWS region like us-east-1", source)
        if self.bucket and (not _BUCKET.match(self.bucket) or ".." in self.bucket):
            _fail(
                "aws.bucket",
                self.bucket,
                "an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens) "
                "or empty for the DVC remote's bucket",
                source,
            )
        if self.prefix.startswith("/") or self.prefix.endswith("/") or not self.prefix:
            _fail(
                "aws.prefix", self.prefix, "a non-empty S3 key prefix without end slashes", source
            )
        if self.role_arn and not _ROLE_ARN.match(self.role_arn):
            _fail(
                "aws.role_arn",
                self.role_arn,
                "an IAM role ARN like arn:aws:iam::123456789012:role/NAME",
                source,
            )
        if self.training_image and not _ECR_IMAGE.match(self.training_image):
            _fail(
                "aws.training_image",
                self.training_image,
                "an ECR image URI like ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG "
                "(or empty for the prebuilt PyTorch image)",
                source,
            )
        if self.instance_type and not _INSTANCE.match(self.instance_type):
            _fail(
                "aws.instance_type",
                self.instance_type,
                "a SageMaker instance type like ml.m5.large (or empty)",
                source,
            )
        if self.volume_gb < 1:
            _fail("aws.volume_gb", self.volume_gb, ">= 1", source)
        if not 1 <= self.max_runtime_s <= 28 * 24 * 3600:
            _fail("aws.max_runtime_s", self.max_runtime_s, "in [1, 2419200] (28 days)", source)
        if not self.poll_s > 0:
            _fail("aws.poll_s", self.poll_s, "> 0", source)
        if self.spot and not self.max_runtime_s <= self.max_wait_s <= 28 * 24 * 3600:
            _fail(
                "aws.max_wait_s",
                self.max_wait_s,
                f"at least aws.max_runtime_s ({self.max_runtime_s}) and at most 2419200 "
                "when aws.spot is true",
                source,
            )


# The sections a search may vary; the others say where and how, not what is learnt.
TUNABLE_SECTIONS = ("prepare", "model", "train")


@dataclass(frozen=True)
class TuneRange:
    """One searched hyperparameter: a numeric interval, or a list of values (YAML text)."""

    low: float | None = None
    high: float | None = None
    scale: Literal["linear", "log"] = "linear"
    values: tuple[str, ...] | None = None  # None: not given (an empty list is refused)

    def check(self, key: str, source: str) -> None:
        name = f"tune.ranges.{key}"
        section, _, field_name = key.partition(".")
        fields = (
            {f.name: f for f in dataclasses.fields(_SECTION_TYPES[section])}
            if section in TUNABLE_SECTIONS
            else {}
        )
        if field_name not in fields or key == "train.compute":
            _fail(
                "tune.ranges",
                key,
                "keys named section.key from "
                + ", ".join(TUNABLE_SECTIONS)
                + " (e.g. train.learning_rate; not train.compute)",
                source,
            )
        hint = typing.get_type_hints(_SECTION_TYPES[section])[field_name]
        if self.values is not None:
            if self.low is not None or self.high is not None:
                _fail(name, "low/high and values", "either low and high, or values", source)
            if not self.values:
                default = fields[field_name].default  # every tunable key has a plain default
                example = default if isinstance(default, str) else json.dumps(default)
                raise ConfigError(
                    f"{name}.values is empty; list the values to try as YAML text, "
                    f'e.g. values: ["{example}"] ({source})'
                )
            for value in self.values:
                parsed = _parse_hyperparameter(value)
                params_from_dict({section: {field_name: parsed}}, f"{name}.values, {source}")
            return
        if hint not in (int, float):
            raise ConfigError(
                f"{name} must list values: [...], since {key} is not a number ({source})"
            )
        if self.low is None or self.high is None:
            raise ConfigError(f"{name} needs both low and high, or values: [...] ({source})")
        if not self.low < self.high:
            _fail(f"{name}.high", self.high, f"> low ({self.low})", source)
        if hint is int and not round(self.low) < round(self.high):  # as points are rounded
            _fail(
                name,
                f"low {self.low}, high {self.high}",
                "a range holding two whole numbers or more (it is searched in integers)",
                source,
            )
        if self.scale == "log" and not self.low > 0:
            _fail(f"{name}.low", self.low, "> 0 for scale: log", source)
        # The ends through the key's own checks: every limit of a numeric key is an
        # interval, so a range whose ends pass holds only points that pass.
        for end, bound in (("low", self.low), ("high", self.high)):
            point = round(bound) if hint is int else bound
            params_from_dict({section: {field_name: point}}, f"{name}.{end}, {source}")


@dataclass(frozen=True)
class TuneParams:
    """Hyperparameter search ranges for `itsacat tune` (local DVC queue or SageMaker)."""

    # Exactly what the train stage logs (dvclive, and the SageMaker entry point's
    # `itsacat-metric` lines): a search can rank by nothing else, and never by a test metric.
    OBJECTIVES: typing.ClassVar[tuple[str, ...]] = (
        "train/loss",
        "train/accuracy",
        "val/loss",
        "val/accuracy",
    )

    backend: Literal["local", "sagemaker"] = "local"
    strategy: Literal["grid", "random"] = "random"
    max_points: int = 8  # random: points tried; grid: at most this many (else refused)
    grid_steps: int = 3  # points per numeric range in a grid
    parallel: int = 2  # experiments (or SageMaker jobs) at once
    seed: int = 0  # seed of the random points
    objective: str = "val/accuracy"  # a metric the train stage logs (never test/*)
    goal: Literal["maximize", "minimize"] = "maximize"
    ranges: dict[str, TuneRange] = field(default_factory=dict)

    def check(self, source: str) -> None:
        if self.max_points < 1:
            _fail("tune.max_points", self.max_points, ">= 1", source)
        if self.grid_steps < 2:
            _fail("tune.grid_steps", self.grid_steps, ">= 2", source)
        if self.parallel < 1:
            _fail("tune.parallel", self.parallel, ">= 1", source)
        _check_seed("tune.seed", self.seed, source)
        if self.objective not in self.OBJECTIVES:
            _fail(
                "tune.objective",
                self.objective,
                "one of the metrics the train stage logs: " + ", ".join(self.OBJECTIVES),
                source,
            )
        for key, rng in self.ranges.items():
            rng.check(key, source)


_AWS_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # SageMaker resource names


@dataclass(frozen=True)
class SmokeParams:
    """The smoke test every deploy runs on the new model before it takes traffic."""

    photos: tuple[str, ...] = ()  # empty = every JPEG/PNG in photo_dir
    photo_dir: str = "../shared/images"
    max_photos: int = 3  # at most this many photos are sent (0 = all)
    expect: dict[str, str] = field(default_factory=dict)  # photo file name → expected label
    timeout_s: float = 60.0  # per request

    def check(self, source: str) -> None:
        if self.max_photos < 0:
            _fail("deploy.smoke.max_photos", self.max_photos, ">= 0 (0 means all)", source)
        if not self.timeout_s > 0:
            _fail("deploy.smoke.timeout_s", self.timeout_s, "> 0", source)
        for photo, label in self.expect.items():
            if label not in ("cat", "non-cat"):
                _fail(f"deploy.smoke.expect.{photo}", label, "cat or non-cat", source)


@dataclass(frozen=True)
class LocalDeployParams:
    """Blue/green on one machine: a front proxy on `port`, backends on free ports behind it."""

    host: str = "127.0.0.1"  # where the front proxy listens; 0.0.0.0 exposes it
    port: int = 8080
    state_dir: str = ".itsacat/endpoint"  # state.json, model snapshots, logs
    start_timeout_s: float = 60.0  # for a new backend's /ping to answer 200
    drain_timeout_s: float = 30.0  # for the old backend's in-flight requests
    keep_models: int = 3  # model snapshots kept for rollback
    workers: int = 0  # `itsacat serve --workers` per backend; 0 = one per CPU

    def check(self, source: str) -> None:
        if not 1 <= self.port <= 65535:
            _fail("deploy.local.port", self.port, "a TCP port in 1…65535", source)
        if not self.state_dir:
            _fail("deploy.local.state_dir", self.state_dir, "a folder path", source)
        for key in ("start_timeout_s", "drain_timeout_s"):
            if not getattr(self, key) > 0:
                _fail(f"deploy.local.{key}", getattr(self, key), "> 0", source)
        if self.workers < 0:
            _fail("deploy.local.workers", self.workers, ">= 0 (0 means one per CPU)", source)
        if self.keep_models < 2:
            _fail("deploy.local.keep_models", self.keep_models, ">= 2 (live + previous)", source)


@dataclass(frozen=True)
class TrafficParams:
    """Blue/green traffic shifting: how much of the traffic the new fleet gets, and when."""

    mode: Literal["all_at_once", "canary", "linear"] = "canary"
    canary_percent: int = 10  # canary: share sent to the new fleet first
    linear_step_percent: int = 25  # linear: share added at each step
    wait_s: int = 300  # between steps, watching the alarms (SageMaker: 0…3600)
    termination_wait_s: int = 0  # old fleet kept this long after the shift (rollback window)
    alarms: tuple[str, ...] = ()  # CloudWatch alarms that roll the shift back
    create_alarms: bool = True  # also create (idempotently) a 5xx-errors alarm per endpoint

    def check(self, source: str, key: str) -> None:
        if not 1 <= self.canary_percent <= 99:
            _fail(f"{key}.canary_percent", self.canary_percent, "in 1…99", source)
        if not 1 <= self.linear_step_percent <= 99:
            _fail(f"{key}.linear_step_percent", self.linear_step_percent, "in 1…99", source)
        if not 0 <= self.wait_s <= 3600:
            _fail(f"{key}.wait_s", self.wait_s, "in 0…3600 seconds", source)
        if not 0 <= self.termination_wait_s <= 3600:
            _fail(f"{key}.termination_wait_s", self.termination_wait_s, "in 0…3600", source)


@dataclass(frozen=True)
class SageMakerDeployParams:
    """A real-time SageMaker endpoint on the prebuilt scikit-learn serving image."""

    endpoint_name: str = "itsacat"
    model_package_group: str = "itsacat"  # the model registry group each deploy registers in
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    image_uri: str = ""  # "" = SageMaker's scikit-learn 1.2-1 CPU image for aws.region
    traffic: TrafficParams = field(default_factory=TrafficParams)
    ab_new_weight: float = 0.0  # > 0: A/B test; the new model's share, the live one keeps the rest
    poll_s: float = 30.0  # between status checks while waiting
    timeout_s: float = 3600.0  # give up waiting for InService after this long

    def check(self, source: str) -> None:
        for key in ("endpoint_name", "model_package_group"):
            value = getattr(self, key)
            if not re.match(_AWS_NAME, value) or len(value) > 50:
                _fail(
                    f"deploy.sagemaker.{key}",
                    value,
                    "1…50 letters, digits and single hyphens (a SageMaker name)",
                    source,
                )
        if not self.instance_type.startswith("ml."):
            _fail("deploy.sagemaker.instance_type", self.instance_type, "ml.<type>", source)
        if self.instance_count < 1:
            _fail("deploy.sagemaker.instance_count", self.instance_count, ">= 1", source)
        if not 0.0 <= self.ab_new_weight < 1.0:
            _fail("deploy.sagemaker.ab_new_weight", self.ab_new_weight, "in [0, 1)", source)
        if self.poll_s < 0:
            _fail("deploy.sagemaker.poll_s", self.poll_s, ">= 0", source)
        if not self.timeout_s > 0:
            _fail("deploy.sagemaker.timeout_s", self.timeout_s, "> 0", source)
        self.traffic.check(source, "deploy.sagemaker.traffic")


@dataclass(frozen=True)
class LambdaDeployParams:
    """An AWS Lambda function with a published version per model and a shifting alias."""

    function_name: str = "itsacat"
    alias: str = "live"
    role_arn: str = ""  # the function's execution role (required for target lambda)
    site_packages: str = ""  # Linux wheels of numpy/Pillow for the runtime; "" = this Python's
    rehearse: bool = True  # run the zip's handler on the smoke photos here first, when it can
    memory_mb: int = 1024
    timeout_s: int = 30
    canary_percent: int = 10  # 0 = shift the alias all at once
    canary_wait_s: int = 60  # the canary runs this long, watched by `alarms`
    alarms: tuple[str, ...] = ()  # CloudWatch alarms that roll the canary back
    poll_s: float = 2.0
    timeout_wait_s: float = 600.0

    def check(self, source: str) -> None:
        if not re.match(r"^[a-zA-Z0-9_-]{1,64}$", self.function_name):
            _fail(
                "deploy.aws_lambda.function_name",
                self.function_name,
                "1…64 of [A-Za-z0-9_-]",
                source,
            )
        if not re.match(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$", self.alias):
            _fail(
                "deploy.aws_lambda.alias",
                self.alias,
                "a name of [A-Za-z0-9_-], not all digits",
                source,
            )
        if self.role_arn and not _ROLE_ARN.match(self.role_arn):
            _fail(
                "deploy.aws_lambda.role_arn",
                self.role_arn,
                "an IAM role ARN like arn:aws:iam::123456789012:role/itsacat-lambda",
                source,
            )
        if not 128 <= self.memory_mb <= 10240:
            _fail("deploy.aws_lambda.memory_mb", self.memory_mb, "in 128…10240", source)
        if not 1 <= self.timeout_s <= 900:
            _fail("deploy.aws_lambda.timeout_s", self.timeout_s, "in 1…900 seconds", source)
        if not 0 <= self.canary_percent <= 99:
            _fail("deploy.aws_lambda.canary_percent", self.canary_percent, "in 0…99", source)
        if self.canary_wait_s < 0:
            _fail("deploy.aws_lambda.canary_wait_s", self.canary_wait_s, ">= 0", source)
        if self.poll_s < 0 or not self.timeout_wait_s > 0:
            _fail("deploy.aws_lambda.poll_s", self.poll_s, ">= 0 (and timeout_wait_s > 0)", source)


@dataclass(frozen=True)
class DeployParams:
    """`itsacat deploy`: the target, and how each target ships, smoke-tests and shifts traffic."""

    target: Literal["local", "sagemaker", "lambda"] = "local"
    smoke: SmokeParams = field(default_factory=SmokeParams)
    local: LocalDeployParams = field(default_factory=LocalDeployParams)
    sagemaker: SageMakerDeployParams = field(default_factory=SageMakerDeployParams)
    aws_lambda: LambdaDeployParams = field(default_factory=LambdaDeployParams)

    def check(self, source: str) -> None:
        self.smoke.check(source)
        self.local.check(source)
        self.sagemaker.check(source)
        self.aws_lambda.check(source)


@dataclass(frozen=True)
class NotifyParams:
    """Who hears when training ends, a deploy succeeds or a rollback happens."""

    sns_topic_arn: str = ""  # "" = none (env ITSACAT_NOTIFY_SNS_TOPIC_ARN also works)
    webhook_url: str = ""  # "" = none (env ITSACAT_NOTIFY_WEBHOOK_URL also works)
    timeout_s: float = 5.0

    def check(self, source: str) -> None:
        if self.sns_topic_arn and not _SNS_ARN.match(self.sns_topic_arn):
            _fail(
                "notify.sns_topic_arn",
                self.sns_topic_arn,
                "an SNS topic ARN like arn:aws:sns:us-east-1:123456789012:NAME",
                source,
            )
        if self.webhook_url and not _URL.match(self.webhook_url):
            _fail(
                "notify.webhook_url",
                self.webhook_url,
                "an http(s):// URL like https://hooks.example.com/itsacat",
                source,
            )
        if not self.timeout_s > 0:
            _fail("notify.timeout_s", self.timeout_s, "> 0", source)


@dataclass(frozen=True)
class ReportParams:
    """The pull-request report (`itsacat report`): which metrics must be there, which are
    guarded and by how much, and which photos it classifies.

    Metric names are keys of `metrics_file` as `dvc metrics diff` spells them
    (`test.accuracy`). A guard is the most a metric may get worse than on the base branch,
    in absolute units, before the report fails: a drop for higher-is-better metrics, a rise
    for lower-is-better ones. Which way is better is read from the metric's last name part.
    """

    HIGHER_IS_BETTER: typing.ClassVar[frozenset[str]] = frozenset(
        {"accuracy", "precision", "recall", "f1", "roc_auc"}
    )
    LOWER_IS_BETTER: typing.ClassVar[frozenset[str]] = frozenset(
        {"loss", "log_loss", "size_bytes", "train_seconds"}
    )

    metrics_file: str = "metrics.json"  # the file whose keys `require` and `guards` name
    require: tuple[str, ...] = (
        "test.accuracy",
        "test.precision",
        "test.recall",
        "test.f1",
        "test.roc_auc",
        "test.log_loss",
        "train.accuracy",
        "train.log_loss",
        "model.size_bytes",
        "model.train_seconds",
    )
    guards: dict[str, float] = field(
        default_factory=lambda: {"test.accuracy": 0.02, "test.roc_auc": 0.02}
    )
    photos: tuple[str, ...] = ()  # empty = the first max_photos JPEG/PNG in photo_dir
    photo_dir: str = "../shared/images"
    max_photos: int = 3

    @classmethod
    def direction(cls, metric: str) -> int:
        """+1 if a larger `metric` is better, -1 if a smaller one is, 0 if neither."""
        leaf = metric.rsplit(".", 1)[-1]
        return 1 if leaf in cls.HIGHER_IS_BETTER else -1 if leaf in cls.LOWER_IS_BETTER else 0

    def check(self, source: str) -> None:
        known = sorted(self.HIGHER_IS_BETTER | self.LOWER_IS_BETTER)
        for metric, max_worse in self.guards.items():
            if self.direction(metric) == 0:
                _fail(
                    f"report.guards.{metric}",
                    metric,
                    "a metric whose last part says which way is better (" + ", ".join(known) + ")",
                    source,
                )
            if max_worse < 0:
                _fail(f"report.guards.{metric}", max_worse, ">= 0 (0 allows no regression)", source)
        if not self.metrics_file:
            _fail("report.metrics_file", self.metrics_file, "a metrics file path", source)
        if self.max_photos < 0:
            _fail("report.max_photos", self.max_photos, ">= 0 (0 means all)", source)


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
        on_sagemaker = self.train.compute == "sagemaker" or self.tune.backend == "sagemaker"
        family = self.aws.instance_type.split(".")[1] if self.aws.instance_type else ""
        if on_sagemaker and self.train.backend == "cupy" and family[:1] not in ("", "g", "p"):
            _fail(
                "aws.instance_type",
                self.aws.instance_type,
                'an NVIDIA GPU instance (ml.g*, ml.p*) for train.backend: cupy, or "" for '
                "ml.g4dn.xlarge",
                source,
            )


# Section name → its dataclass, for checks that look a key up by name (tune ranges).
_SECTION_TYPES: dict[str, type] = {
    "prepare": PrepareParams,
    "model": ModelParams,
    "train": TrainParams,
}


_EXPONENT = re.compile(r"^([-+]?)(\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)$")


def _fail_number(key: str, value: Any, allowed: str, source: str) -> typing.NoReturn:
    """Fail for a value that is not a number. YAML 1.1 reads 1e-3 (no dot, unsigned exponent)
    and quoted numbers as text: such a string is named as one, with spellings YAML reads."""
    whole = allowed == "a whole number"
    try:
        number = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        number = math.nan
    if math.isfinite(number) and (number.is_integer() or not whole):
        spellings = [str(int(number))] if whole else [repr(number)]
        exponent = _EXPONENT.match(value.strip())
        if exponent and not whole:
            sign, units, decimals, exp_sign, exp = exponent.groups()
            spellings.insert(0, f"{sign}{units}.{decimals or '0'}e{exp_sign or '+'}{exp}")
        number_type = int if whole else float
        spellings = [s for s in dict.fromkeys(spellings) if type(_yaml_value(s)) is number_type]
        if spellings:
            why = (
                "quoted, so YAML reads it as text"
                if isinstance(_yaml_value(value), (int, float))
                else f"YAML reads {value.strip()} as text"
            )
            raise ConfigError(
                f"{key} must be {allowed}, got the string {value!r} "
                f"({why}; write {' or '.join(spellings)}) ({source})"
            )
    _fail(key, value, allowed, source)


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
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build_section(hint, key, value, source)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(key, value, "true or false", source)
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():  # 1e3, 1000.0
            _fail(key, value, f"a whole number: write {int(value)}", source)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail_number(key, value, "a whole number", source)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail_number(key, value, "a number", source)
        # Every float key passes here: NaN compares false with every bound in the checks
        # (a NaN guard never fires) and infinity passes every lower bound.
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            _fail(key, value, "a finite number", source)
        return number
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # YAML read a number
            raise ConfigError(
                f'{key} must be a string, got the number {value}; quote it: "{value}" ({source})'
            )
        if not isinstance(value, str):
            _fail(key, value, "a string", source)
        return value
    raise TypeError(f"unsupported field type {hint!r} for {key}")


MOVED = {  # keys that moved, and where: an old params.yaml is told what to change
    "evaluate.threshold": "is now model.threshold: the threshold travels inside the model, "
    "so every serving path calls a photo as evaluate does; move the line to the model section",
}


def _build_section(cls: type, name: str, raw: Any, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        _fail(name, raw, "a mapping of keys to values", source)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if f"{name}.{key}" in MOVED:
            raise ConfigError(f"{name}.{key} ({source}) {MOVED[f'{name}.{key}']}")
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


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, where PyYAML silently keeps
    the last (a second `train:` section would drop the first). Merge keys (`<<`) may still
    be overridden: only the keys written in the mapping itself are compared.

    It also reads 1e-5 as the number YAML 1.2 says it is, as DVC does (`dvc exp run -S
    train.learning_rate=1e-5` writes `1e-05` into params.yaml): YAML 1.1 wants a dot and a
    signed exponent, and PyYAML alone reads it as text."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if earlier is not key_node:
                raise _DuplicateKeyError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {earlier.start_mark.line + 1}; "
                    "YAML would silently keep only the last)",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_value(text: str) -> Any:
    """`text` read as params.yaml's values are."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """The parser's complaint as one line: where it stopped, and why."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        line, column = exc.problem_mark.line + 1, exc.problem_mark.column + 1
        problem = exc.problem or "not YAML"
        if exc.context and exc.context_mark is not None:
            problem += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    else:
        return " ".join(str(exc).split())
    return f"line {line}, column {column}: " + " ".join(problem.split())


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. A missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        return params_from_dict({}, str(path))
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a params file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} "
            f"(offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        raw = _yaml_value(text)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc, text)}") from None
    return params_from_dict(raw, str(path))


def params_to_dict(params: Params) -> dict[str, Any]:
    """The plain-dict form of `params` (tuples as lists), for JSON and YAML."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, tuple) else v

    return {
        name: {k: plain(v) for k, v in dataclasses.asdict(getattr(params, name)).items()}
        for name in (f.name for f in dataclasses.fields(params))
    }


def _parse_hyperparameter(text: Any) -> Any:
    """JSON first (SageMaker writes 1e-05, which YAML 1.1 reads as a string), then YAML."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def params_from_hyperparameters(
    hyperparameters: Mapping[str, str],
    base: Params | None = None,
    source: str = "SageMaker hyperparameters",
) -> Params:
    """String hyperparameters (`"train.learning_rate": "0.01"`) → `Params`: SageMaker's, and
    `itsacat tune --set` (with `source="--set"`, which every message then names).

    Each value is parsed as JSON, else YAML, so "1e-05", "[20, 7, 5]", "true" and "adam"
    mean what they say; keys are `section.key`, layered over `base` (defaults when None).
    """
    merged = params_to_dict(base or Params())
    for dotted, text in hyperparameters.items():
        if "." not in dotted:
            raise ConfigError(
                f"hyperparameter {dotted!r} must be named section.key, "
                f"e.g. train.learning_rate ({source})"
            )
        section, key = dotted.split(".", 1)
        value = _parse_hyperparameter(text)
        merged.setdefault(section, {})[key] = value
    return params_from_dict(merged, source)
