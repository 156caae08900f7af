"""AWS-suite fixtures: tiny prepared data, a bucket on moto, and a SageMaker that trains.

moto records a training job as Completed at once and never runs anything. `sagemaker_runs`
extends its backend, inside this process, so that a created job really runs: it fetches
the job's channel and `sagemaker_submit_directory` from (moto's) S3 into an /opt/ml-shaped
folder, runs the submitted `sagemaker_program` in a fresh Python with SM_ROOT pointing
there, and, like SageMaker, uploads model/ as model.tar.gz or reports output/failure as
the job's FailureReason. The production code only ever sees boto3 answers.

A managed spot job can be reclaimed on request (`spot_reclaim_at`): the first container
gets SIGTERM once it has logged that epoch; like SageMaker, the harness then uploads its
/opt/ml/checkpoints to the job's CheckpointConfig.S3Uri, lays out a fresh container with
them put back, and runs the job again there.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from itsacat.aws.clients import client
from itsacat.data import Dataset, fit_preprocessing, save_preprocessing, save_split
from itsacat.scratch import copy_worktree, init_scratch_repo
from signals import signal_when

BUCKET = "itsacat-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/itsacat-sagemaker"


def write_prepared(directory: Path, m: int = 24, seed: int = 0, val: int = 8) -> Path:
    """A tiny prepared/ folder: m separable-ish photos for train, `val` for val and test."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Dataset:
        labels = (np.arange(n) % 2).astype(np.uint8)
        images = rng.integers(0, 120, size=(n, 64, 64, 3), dtype=np.uint8)
        images[labels == 1] += 100  # cats are brighter: learnable in a few epochs
        return Dataset(images, labels)

    directory.mkdir(parents=True, exist_ok=True)
    train = split(m)
    save_split(directory / "train.npz", train)
    save_split(directory / "val.npz", split(val))
    save_split(directory / "test.npz", split(val))
    save_preprocessing(directory, fit_preprocessing(train.images, center=True))
    return directory


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return write_prepared(tmp_path / "prepared")


@pytest.fixture
def bucket(aws_env: str) -> str:
    client("s3", "us-east-1").create_bucket(Bucket=BUCKET)
    return BUCKET


def _s3_get_prefix(s3: Any, uri: str, dest: Path) -> None:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(prefix) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))


@dataclass
class Run:
    """One job the extended moto ran: its moto object, final status and container log."""

    job: Any
    status: str
    reason: str
    logs: str


def _s3_put_dir(s3: Any, src: Path, uri: str) -> None:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    for path in sorted(src.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + str(path.relative_to(src)))


def _reclaimed(program: str, code: Path, env: dict[str, str], at_epoch: int) -> str:
    """Run the container until it logs `at_epoch`, then SIGTERM it (a spot reclaim)."""
    args = [sys.executable, program]
    status, logs = signal_when(args, f"epoch {at_epoch}:", signal.SIGTERM, code, env)
    return logs + f"[harness] the first container exited with {status}\n"


def run_container(job: Any, workdir: Path, reclaim_at: int | None = None) -> tuple[str, str, str]:
    """Do what SageMaker's script mode does for `job`; → (status, failure reason, log)."""
    s3 = client("s3", "us-east-1")
    first_logs = ""
    if reclaim_at is not None and job.enable_managed_spot_training:
        code, env, program = _lay_out(job, workdir / "opt-ml-reclaimed")
        first_logs = _reclaimed(program, code, env, reclaim_at)
        _s3_put_dir(
            s3, workdir / "opt-ml-reclaimed" / "checkpoints", job.checkpoint_config["S3Uri"]
        )
    root = workdir / "opt-ml"
    code, env, program = _lay_out(job, root)
    if job.enable_managed_spot_training:
        _s3_get_prefix(s3, job.checkpoint_config["S3Uri"], root / "checkpoints")
    done = subprocess.run(
        [sys.executable, program], cwd=code, env=env, capture_output=True, text=True, timeout=300
    )
    logs = first_logs + done.stdout + done.stderr
    if done.returncode != 0:
        failure = root / "output" / "failure"
        reason = failure.read_text() if failure.exists() else "AlgorithmError: no reason"
        return "Failed", reason, logs
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted((root / "model").iterdir()):
            tar.add(item, arcname=item.name)
    out_bucket, _, out_key = job.model_artifacts["S3ModelArtifacts"][len("s3://") :].partition("/")
    s3.put_object(Bucket=out_bucket, Key=out_key, Body=buf.getvalue())
    return "Completed", "", logs


def _lay_out(job: Any, root: Path) -> tuple[Path, dict[str, str], str]:
    """An /opt/ml-shaped `root` for `job`: code, channels, hyperparameters, model/.
    → (code dir, environment, program)."""
    s3 = client("s3", "us-east-1")
    code = root / "code"
    code.mkdir(parents=True)
    hps = {k: str(v) for k, v in job.hyper_parameters.items()}
    submit = json.loads(hps["sagemaker_submit_directory"])
    bucket, _, key = submit[len("s3://") :].partition("/")
    with tarfile.open(
        fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    ) as t:
        t.extractall(code, filter="data")
    for channel in job.input_data_config:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        _s3_get_prefix(s3, uri, root / "input" / "data" / channel["ChannelName"])
    (root / "input" / "config").mkdir(parents=True, exist_ok=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
    (root / "model").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SM_"))}
    env.update(SM_ROOT=str(root), MPLBACKEND="Agg", PYTHONPATH="")
    return code, env, json.loads(hps["sagemaker_program"])


class SpotReclaim:
    """Set `at_epoch` to have the next spot job's first container reclaimed there."""

    at_epoch: int | None = None


@pytest.fixture
def spot_reclaim() -> SpotReclaim:
    return SpotReclaim()


@pytest.fixture
def sagemaker_runs(
    aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spot_reclaim: SpotReclaim
) -> Iterator[list[Run]]:
    """moto's SageMaker, extended so that create_training_job runs the job; yields the jobs."""
    from moto.sagemaker.models import SageMakerModelBackend

    runs: list[Run] = []
    original = SageMakerModelBackend.create_training_job

    def create_and_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        job = original(self, *args, **kwargs)
        status, reason, logs = run_container(
            job, tmp_path / f"job-{len(runs)}", spot_reclaim.at_epoch
        )
        job.training_job_status = job.secondary_status = status
        if reason:
            job.failure_reason = reason
        runs.append(Run(job, status, reason, logs))
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_and_run)
    yield runs


@dataclass
class Tuning:
    """One tuning job the extended moto ran: its training runs and their summaries."""

    name: str
    config: dict[str, Any]
    runs: list[Run]
    summaries: list[dict[str, Any]]


@pytest.fixture
def sagemaker_tunes(
    aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[Tuning]]:
    """moto's SageMaker, extended so that a Grid tuning job runs one training job per point
    (each through `run_container`), reads the objective from the job's log with the job's
    own metric regex, and answers ListTrainingJobsForHyperParameterTuningJob (which moto
    lacks)."""
    import itertools
    import re
    import time

    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    tunings: list[Tuning] = []
    original_tune = SageMakerModelBackend.create_hyper_parameter_tuning_job
    create_job = SageMakerModelBackend.create_training_job

    def create_and_run(self: Any, **kwargs: Any) -> str:
        arn = original_tune(self, **kwargs)
        name = kwargs["hyper_parameter_tuning_job_name"]
        config = kwargs["hyper_parameter_tuning_job_config"]
        definition = kwargs["training_job_definition"]
        assert config["Strategy"] == "Grid", "this emulator runs grids only"
        cats = config["ParameterRanges"]["CategoricalParameterRanges"]
        objective = config["HyperParameterTuningJobObjective"]["MetricName"]
        (regex,) = [
            m["Regex"]
            for m in definition["AlgorithmSpecification"]["MetricDefinitions"]
            if m["Name"] == objective
        ]
        tuning = Tuning(name, config, [], [])
        combos = list(itertools.product(*(c["Values"] for c in cats)))
        for i, combo in enumerate(combos[: config["ResourceLimits"]["MaxNumberOfTrainingJobs"]]):
            tuned = {c["Name"]: v for c, v in zip(cats, combo, strict=True)}
            job = create_job(
                self,
                training_job_name=f"{name}-{i + 1:03d}-{i:08x}",
                hyper_parameters={**definition["StaticHyperParameters"], **tuned},
                algorithm_specification=dict(definition["AlgorithmSpecification"]),
                role_arn=definition["RoleArn"],
                input_data_config=definition["InputDataConfig"],
                output_data_config=definition["OutputDataConfig"],
                resource_config=definition["ResourceConfig"],
                vpc_config={},
                stopping_condition=definition["StoppingCondition"],
                tags=[],
                enable_network_isolation=False,
                enable_inter_container_traffic_encryption=False,
                enable_managed_spot_training=False,
                checkpoint_config={},
                debug_hook_config={},
                debug_rule_configurations=[],
                tensor_board_output_config={},
                experiment_config={},
            )
            status, reason, logs = run_container(job, tmp_path / f"{name}-{i}")
            tuning.runs.append(Run(job, status, reason, logs))
            found = re.findall(regex, logs)
            summary: dict[str, Any] = {
                "TrainingJobName": job.training_job_name,
                "TrainingJobArn": job.arn,
                "CreationTime": time.time(),
                "TrainingJobStatus": status,
                "TunedHyperParameters": tuned,
            }
            if found:
                summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                    "MetricName": objective,
                    "Value": float(found[-1]),
                }
            tuning.summaries.append(summary)
        backend_job = self.hyper_parameter_tuning_jobs[name]
        backend_job.training_job_status_counters["Completed"] = sum(
            r.status == "Completed" for r in tuning.runs
        )
        backend_job.training_job_status_counters["NonRetryableError"] = sum(
            r.status == "Failed" for r in tuning.runs
        )
        tunings.append(tuning)
        return arn

    def list_for_tuning(self: Any) -> str:
        name = self._get_param("HyperParameterTuningJobName")
        (tuning,) = [t for t in tunings if t.name == name]
        return json.dumps({"TrainingJobSummaries": tuning.summaries})

    monkeypatch.setattr(SageMakerModelBackend, "create_hyper_parameter_tuning_job", create_and_run)
    monkeypatch.setattr(
        SageMakerResponse,
        "list_training_jobs_for_hyper_parameter_tuning_job",
        list_for_tuning,
        raising=False,
    )
    yield tunings


def venv_env(**extra: str) -> dict[str, str]:
    """This environment with this Python's bin first on PATH (DVC stages run `python`)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="itsacat tests",
        GIT_AUTHOR_EMAIL="tests@itsacat.invalid",
        GIT_COMMITTER_NAME="itsacat tests",
        GIT_COMMITTER_EMAIL="tests@itsacat.invalid",
        MPLBACKEND="Agg",
    )
    env.update(extra)
    return env


def sh(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output when it fails."""
    if args[0] == "dvc":
        args = [str(Path(sys.executable).with_name("dvc")), *args[1:]]
    done = subprocess.run(args, cwd=cwd, env=env or venv_env(), capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture
def project(tmp_path: Path, repo_root: Path, shared_dir: Path) -> Path:
    """A git repo holding this project's tracked files, its data pulled from ../shared."""
    dest = tmp_path / "project"
    dest.mkdir()
    copy_worktree(repo_root, dest)
    init_scratch_repo(dest, shared_dir / "dvc-store")
    sh(["dvc", "pull", "-q", "-r", "local", "data.dvc"], dest)
    return dest
