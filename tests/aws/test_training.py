"""SageMaker training: the entry point under the training contract, and train_on_sagemaker
end to end against moto (extended to really run the submitted job; see conftest.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import forget_aws_credentials
from itsacat.artifacts import load_model
from itsacat.aws.clients import client
from itsacat.aws.sm_entry import main as entry_main
from itsacat.aws.training import JobLocations, hyperparameters, job_request, train_on_sagemaker
from itsacat.config import Params, params_from_dict
from itsacat.errors import AWSError, ConfigError
from itsacat.stages.train import Paths, train

from .conftest import BUCKET, ROLE, Run, SpotReclaim

SMALL = {
    "model": {"hidden": [4, 3]},
    "train": {"epochs": 30, "learning_rate": 0.01, "log_every": 10, "insight_every": 10},
}


def small_params(**sections: dict[str, object]) -> Params:
    raw = {k: dict(v) for k, v in SMALL.items()}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return params_from_dict(raw)


def opt_ml(root: Path, prepared: Path, hps: dict[str, str]) -> Path:
    """An /opt/ml-shaped folder as SageMaker lays it out before starting the container."""
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
    channel = root / "input" / "data" / "prepared"
    channel.mkdir(parents=True)
    for f in prepared.iterdir():
        (channel / f.name).write_bytes(f.read_bytes())
    return root


def local_run(params: Params, prepared: Path, out: Path) -> str:
    paths = Paths(prepared, out / "model", out / "insight", out / "dvclive")
    train(params, paths)
    return load_model(paths.model).version


def test_entry_point_trains_what_the_local_run_trains(prepared: Path, tmp_path: Path) -> None:
    params = small_params()
    root = opt_ml(tmp_path / "opt-ml", prepared, hyperparameters(params))
    assert entry_main(["--root", str(root)], environ={}) == 0
    assert not (root / "output" / "failure").exists()
    model = load_model(root / "model" / "model")
    assert model.version == local_run(params, prepared, tmp_path / "local")
    assert model.network.sizes == [12288, 4, 3, 1]
    assert (root / "model" / "insight" / "layers.json").exists()
    live = json.loads((root / "model" / "dvclive" / "metrics.json").read_text())
    assert live["step"] == 30 and 0.0 <= live["val"]["accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("hps", "needle"),
    [
        ({"train.learning_rate": "-0.1"}, "train.learning_rate must be > 0, got -0.1"),
        ({"train.optimiser": '"adam"'}, "unknown key train.optimiser"),
        ({"epochs": "3"}, "must be named section.key"),
        ({"model.hidden": "[0]"}, "model.hidden must be a list of layer sizes"),
    ],
)
def test_entry_point_bad_hyperparameters_write_the_failure(
    prepared: Path, tmp_path: Path, hps: dict[str, str], needle: str
) -> None:
    root = opt_ml(tmp_path / "opt-ml", prepared, {"train.epochs": "2", **hps})
    assert entry_main(["--root", str(root)], environ={}) == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("ConfigError: ") and needle in failure
    assert not (root / "model" / "model").exists()


def test_entry_point_without_channel_data_says_so(tmp_path: Path) -> None:
    root = tmp_path / "opt-ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text("{}")
    assert entry_main(["--root", str(root)], environ={}) == 1
    assert "channel" in (root / "output" / "failure").read_text()


def test_entry_point_reads_sm_environment(prepared: Path, tmp_path: Path) -> None:
    """No hyperparameters.json: SM_HPS, then SM_HP_*; SM_CHANNEL_PREPARED, SM_MODEL_DIR."""
    model_dir = tmp_path / "out"
    env = {
        "SM_HPS": json.dumps({"train.epochs": 3, "model.hidden": "[2]", "sagemaker_program": "x"}),
        "SM_CHANNEL_PREPARED": str(prepared),
        "SM_MODEL_DIR": str(model_dir),
    }
    assert entry_main(["--root", str(tmp_path / "root"), "--train.epochs", "3"], env) == 0
    assert load_model(model_dir / "model").network.sizes == [12288, 2, 1]
    env = {k: v for k, v in env.items() if k != "SM_HPS"} | {
        "SM_HP_MODEL.HIDDEN": "[5]",
        "SM_HP_TRAIN.EPOCHS": "3",
    }
    assert entry_main(["--root", str(tmp_path / "root")], env) == 0
    assert load_model(model_dir / "model").network.sizes == [12288, 5, 1]


def test_job_request_runs_our_program_on_the_prebuilt_image() -> None:
    params = small_params(aws={"role_arn": ROLE, "region": "eu-west-1"}, train={"backend": "cupy"})
    where = JobLocations("b", "itsacat/training/job-1")
    req = job_request(params, "job-1", where)
    assert req["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/"
        "pytorch-training:2.3.0-gpu-py311-cu121-ubuntu20.04-sagemaker"
    )
    assert req["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    hps = req["HyperParameters"]
    assert json.loads(hps["sagemaker_submit_directory"]) == (
        "s3://b/itsacat/training/job-1/source/sourcedir.tar.gz"
    )
    assert hps["train.compute"] == '"local"' and hps["model.hidden"] == "[4, 3]"
    assert all(isinstance(v, str) for v in hps.values())
    assert req["OutputDataConfig"]["S3OutputPath"] == "s3://b/itsacat/training/"


def test_spot_job_request_keeps_checkpoints_in_the_jobs_own_prefix() -> None:
    where = JobLocations("b", "itsacat/training/job-1")
    plain = job_request(small_params(aws={"role_arn": ROLE}), "job-1", where)
    assert "EnableManagedSpotTraining" not in plain and "CheckpointConfig" not in plain
    assert "MaxWaitTimeInSeconds" not in plain["StoppingCondition"]
    params = small_params(aws={"role_arn": ROLE, "spot": True, "max_wait_s": 5400})
    req = job_request(params, "job-1", where)
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 5400}
    assert req["CheckpointConfig"] == {
        "S3Uri": "s3://b/itsacat/training/job-1/checkpoints/",
        "LocalPath": "/opt/ml/checkpoints",
    }


def _paths(tmp_path: Path, prepared: Path) -> Paths:
    out = tmp_path / "work"
    return Paths(prepared, out / "model", out / "insight", out / "dvclive")


@pytest.mark.aws
def test_train_on_sagemaker_fills_the_local_outputs(
    bucket: str, sagemaker_runs: list[Run], prepared: Path, tmp_path: Path
) -> None:
    sns, sqs = client("sns", "us-east-1"), client("sqs", "us-east-1")
    topic = sns.create_topic(Name="itsacat")["TopicArn"]
    queue = sqs.create_queue(QueueName="itsacat")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    params = small_params(
        aws={"role_arn": ROLE, "bucket": bucket, "poll_s": 0.01},
        train={"compute": "sagemaker"},
        notify={"sns_topic_arn": topic},
    )
    paths = _paths(tmp_path, prepared)
    paths.model.mkdir(parents=True)
    (paths.model / "stale.txt").write_text("from an older run")

    name = train_on_sagemaker(params, paths=paths)

    (run,) = sagemaker_runs
    assert run.status == "Completed", run.logs
    assert run.job.training_job_name == name
    local_version = local_run(
        replace(params, train=replace(params.train, compute="local")), prepared, tmp_path / "local"
    )
    assert load_model(paths.model).version == local_version
    assert not (paths.model / "stale.txt").exists()
    assert (paths.insight / "perceptrons.npz").exists()
    assert json.loads((paths.live / "metrics.json").read_text())["step"] == 30
    assert (paths.live / "plots" / "metrics" / "train" / "loss.tsv").exists()
    assert "itsacat-metric val/accuracy=" in run.logs
    msgs = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    body = json.loads(json.loads(msgs[0]["Body"])["Message"])
    assert body["event"] == "training_ended" and body["details"]["job"] == name


@pytest.mark.aws
def test_failed_job_reports_the_container_failure(
    bucket: str, sagemaker_runs: list[Run], prepared: Path, tmp_path: Path
) -> None:
    # cupy is not installed here: the "GPU container" fails the way a broken image would.
    params = small_params(
        aws={"role_arn": ROLE, "bucket": bucket, "poll_s": 0.01},
        train={"compute": "sagemaker", "backend": "cupy"},
    )
    paths = _paths(tmp_path, prepared)
    with pytest.raises(AWSError, match=r"ended Failed: ConfigError: .*cupy") as info:
        train_on_sagemaker(params, paths=paths)
    assert "run `dvc repro train` again" in str(info.value)
    assert not paths.model.exists()


@pytest.mark.aws
def test_bad_configuration_fails_before_anything_is_made(
    aws_env: str, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = client("s3", "us-east-1")
    paths = _paths(tmp_path, prepared)
    no_role = small_params(aws={"bucket": BUCKET}, train={"compute": "sagemaker"})
    with pytest.raises(ConfigError, match=r"aws.role_arn"):
        train_on_sagemaker(no_role, paths=paths)
    no_bucket = small_params(aws={"bucket": "no-such-bucket", "role_arn": ROLE})
    with pytest.raises(AWSError, match=r"bucket does not exist.*itsacat aws bootstrap"):
        train_on_sagemaker(no_bucket, paths=paths)
    assert s3.list_buckets()["Buckets"] == []
    with pytest.raises(ConfigError, match=r"aws.role_arn must be an IAM role ARN"):
        small_params(aws={"role_arn": "itsacat-sagemaker"})

    forget_aws_credentials(monkeypatch, tmp_path / "none")
    with pytest.raises(AWSError, match=r"no AWS credentials found.*AWS_ACCESS_KEY_ID"):
        train_on_sagemaker(no_bucket, paths=paths)


@pytest.mark.aws
def test_refused_job_removes_what_it_uploaded(
    bucket: str, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise ValidationError(message="Invalid ImageUri for this region")

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", refuse)
    params = small_params(aws={"role_arn": ROLE, "bucket": bucket}, train={"compute": "sagemaker"})
    with pytest.raises(AWSError, match=r"Invalid ImageUri.*removed the \d+ uploaded input"):
        train_on_sagemaker(params, paths=_paths(tmp_path, prepared))
    assert client("s3", "us-east-1").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_unsafe_archive_is_refused(tmp_path: Path, prepared: Path) -> None:
    import io
    import tarfile

    from itsacat.aws.training import unpack_outputs

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    paths = _paths(tmp_path, prepared)
    paths.model.parent.mkdir()
    with pytest.raises(AWSError, match="unsafe entry"):
        unpack_outputs(archive, paths)
    assert list(paths.model.parent.iterdir()) == []


@pytest.mark.aws
def test_ctrl_c_while_waiting_stops_the_job_on_sagemaker(
    bucket: str, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job left running after Ctrl-C would run on (and bill): waiting stops it first.
    moto has no stop_training_job and finishes jobs at once; both are taught here."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    create = SageMakerModelBackend.create_training_job

    def create_running(self: SageMakerModelBackend, *args: object, **kwargs: object) -> object:
        job = create(self, *args, **kwargs)
        job.training_job_status = "InProgress"
        return job

    def stop(self: SageMakerModelBackend, name: str) -> None:
        self.training_jobs[name].training_job_status = "Stopped"

    def handler(self: SageMakerResponse) -> ActionResult:
        self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
        return ActionResult({})

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_running)
    monkeypatch.setattr(SageMakerModelBackend, "stop_training_job", stop, raising=False)
    monkeypatch.setattr(SageMakerResponse, "stop_training_job", handler, raising=False)

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    params = small_params(aws={"role_arn": ROLE, "bucket": bucket}, train={"compute": "sagemaker"})
    with pytest.raises(KeyboardInterrupt):
        train_on_sagemaker(params, paths=_paths(tmp_path, prepared), sleep=interrupt)
    sm = client("sagemaker", "us-east-1")
    jobs = sm.list_training_jobs()["TrainingJobSummaries"]
    assert [j["TrainingJobStatus"] for j in jobs] == ["Stopped"]


@pytest.mark.aws
def test_ctrl_c_when_the_job_cannot_be_stopped_is_still_an_interrupt_naming_the_command(
    bucket: str,
    prepared: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """moto, untaught, refuses StopTrainingJob, as SageMaker refuses to stop a job that
    ended meanwhile: the user pressed Ctrl-C, so the interrupt is what they get (not an
    AWSError), with the command to stop the job should it still run."""
    from moto.sagemaker.models import SageMakerModelBackend

    create = SageMakerModelBackend.create_training_job

    def create_running(self: SageMakerModelBackend, *args: object, **kwargs: object) -> object:
        job = create(self, *args, **kwargs)
        job.training_job_status = "InProgress"
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_running)

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    params = small_params(aws={"role_arn": ROLE, "bucket": bucket}, train={"compute": "sagemaker"})
    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt):
        train_on_sagemaker(params, paths=_paths(tmp_path, prepared), sleep=interrupt)
    assert "aws sagemaker stop-training-job --training-job-name itsacat-" in caplog.text


@pytest.mark.aws
def test_a_reclaimed_spot_job_resumes_from_its_checkpoint_to_the_same_model(
    bucket: str,
    sagemaker_runs: list[Run],
    spot_reclaim: SpotReclaim,
    prepared: Path,
    tmp_path: Path,
) -> None:
    """SageMaker reclaims the spot instance (SIGTERM) at epoch 1000 of 4000; the train
    stage saves its state in /opt/ml/checkpoints, SageMaker carries it to a new container
    through S3, and the job ends with the model an uninterrupted run trains."""
    params = small_params(
        aws={"role_arn": ROLE, "bucket": bucket, "poll_s": 0.01, "spot": True},
        train={
            "compute": "sagemaker",
            "optimizer": "adam",
            "learning_rate": 0.001,
            "epochs": 4000,
            "log_every": 100,
            "insight_every": 1000,
        },
    )
    spot_reclaim.at_epoch = 1000
    paths = _paths(tmp_path, prepared)

    name = train_on_sagemaker(params, paths=paths)

    (run,) = sagemaker_runs
    assert run.status == "Completed", run.logs
    assert run.job.enable_managed_spot_training
    assert "SIGTERM: saving a checkpoint when this epoch ends" in run.logs
    assert "the training state is in" in run.logs  # the first container said where
    assert "resuming after epoch" in run.logs  # the second carried on
    local_version = local_run(
        replace(params, train=replace(params.train, compute="local")), prepared, tmp_path / "local"
    )
    assert load_model(paths.model).version == local_version
    assert load_model(paths.model).metadata["epochs_run"] == 4000
    s3 = client("s3", "us-east-1")
    where = JobLocations(bucket, f"itsacat/training/{name}")
    left = s3.list_objects_v2(Bucket=bucket, Prefix=where.checkpoint_prefix)
    assert left["KeyCount"] == 0  # the job is done: train_on_sagemaker removed them


def _fail_describe(monkeypatch: pytest.MonkeyPatch, code: str, times: int) -> list[str]:
    """moto's DescribeTrainingJob answers `code` for its first `times` calls; → the calls."""
    from moto.core.exceptions import JsonRESTError
    from moto.sagemaker.models import SageMakerModelBackend

    calls: list[str] = []
    describe = SageMakerModelBackend.describe_training_job

    def flaky(self: SageMakerModelBackend, training_job_name: str) -> object:
        calls.append(training_job_name)
        if len(calls) <= times:
            raise JsonRESTError(code, "Rate exceeded" if "Thrott" in code else "not allowed")
        return describe(self, training_job_name)

    monkeypatch.setattr(SageMakerModelBackend, "describe_training_job", flaky)
    return calls


def _no_retry_sagemaker() -> object:
    """A SageMaker client whose own retries are spent at once (as after botocore's five)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker", config=Config(retries={"mode": "standard", "total_max_attempts": 1})
    )


@pytest.mark.aws
def test_throttled_polling_keeps_waiting_for_the_job(
    bucket: str,
    sagemaker_runs: list[Run],
    prepared: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A throttled (or dropped) status check must not abandon a job that runs and bills on."""
    calls = _fail_describe(monkeypatch, "ThrottlingException", times=3)
    params = small_params(aws={"role_arn": ROLE, "bucket": bucket}, train={"compute": "sagemaker"})
    paths = _paths(tmp_path, prepared)
    waits: list[float] = []
    name = train_on_sagemaker(
        params, paths=paths, sagemaker=_no_retry_sagemaker(), sleep=waits.append
    )
    assert len(calls) == 4 and waits == [params.aws.poll_s] * 3
    assert load_model(paths.model).metadata["epochs_run"] == 30
    assert f"checking SageMaker training job {name} failed" in caplog.text
    assert "ThrottlingException" in caplog.text


@pytest.mark.aws
def test_polling_that_cannot_go_on_says_the_job_runs_on(
    bucket: str, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fail_describe(monkeypatch, "AccessDeniedException", times=100)
    params = small_params(aws={"role_arn": ROLE, "bucket": bucket}, train={"compute": "sagemaker"})
    with pytest.raises(AWSError) as info:
        train_on_sagemaker(params, paths=_paths(tmp_path, prepared), sleep=lambda s: None)
    (name,) = set(calls)
    message = str(info.value)
    assert "\n" not in message and "access denied" in message
    assert f"job {name} goes on running on SageMaker" in message
    assert f"aws sagemaker stop-training-job --training-job-name {name}" in message
    assert f"s3://{bucket}/itsacat/training/{name}/output/model.tar.gz" in message


@pytest.mark.aws
def test_bucket_in_another_region_is_refused_before_uploading(
    aws_env: str, prepared: Path, tmp_path: Path
) -> None:
    s3 = client("s3", "eu-west-1")
    s3.create_bucket(
        Bucket="itsacat-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    params = small_params(
        aws={"role_arn": ROLE, "bucket": "itsacat-eu", "region": "us-east-1"},
        train={"compute": "sagemaker"},
    )
    with pytest.raises(
        AWSError,
        match=r"bucket itsacat-eu is in eu-west-1 but aws.region says "
        r"us-east-1; set aws.region: eu-west-1",
    ):
        train_on_sagemaker(params, paths=_paths(tmp_path, prepared))
    assert s3.list_objects_v2(Bucket="itsacat-eu")["KeyCount"] == 0
    assert client("sagemaker", "us-east-1").list_training_jobs()["TrainingJobSummaries"] == []


@pytest.mark.aws
@pytest.mark.parametrize(
    ("chosen", "suggested"),
    [("ml.t2.medium", "ml.m5.large"), ("ml.m5.larg", "ml.m5.large, ml.m5.xlarge")],
)
def test_an_instance_type_sagemaker_does_not_train_on_is_refused_before_uploading(
    bucket: str, prepared: Path, tmp_path: Path, chosen: str, suggested: str
) -> None:
    """ml.t2.medium hosts endpoints but never trains: CreateTrainingJob would refuse it
    after the upload; botocore's own list of training instance types refuses it first."""
    params = small_params(
        aws={"role_arn": ROLE, "bucket": bucket, "instance_type": chosen},
        train={"compute": "sagemaker"},
    )
    with pytest.raises(ConfigError) as info:
        train_on_sagemaker(params, paths=_paths(tmp_path, prepared))
    message = str(info.value)
    assert f"aws.instance_type {chosen!r} is not an instance type SageMaker trains on" in message
    assert f"pick one such as {suggested}" in message and "\n" not in message
    assert client("s3", "us-east-1").list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert client("sagemaker", "us-east-1").list_training_jobs()["TrainingJobSummaries"] == []


@pytest.mark.aws
def test_a_multi_line_failure_reason_is_reported_in_one_line(
    bucket: str, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SageMaker's own reasons span lines (`AlgorithmError: ExecuteUserScriptError:\\n…`)."""
    from moto.sagemaker.models import SageMakerModelBackend

    create = SageMakerModelBackend.create_training_job
    reason = 'AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "MemoryError"\n'

    def create_failing(self: SageMakerModelBackend, *args: object, **kwargs: object) -> object:
        job = create(self, *args, **kwargs)
        job.training_job_status = "Failed"
        job.failure_reason = reason
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_failing)
    params = small_params(aws={"role_arn": ROLE, "bucket": bucket}, train={"compute": "sagemaker"})
    with pytest.raises(AWSError) as info:
        train_on_sagemaker(params, paths=_paths(tmp_path, prepared))
    message = str(info.value)
    assert "\n" not in message
    assert 'ExecuteUserScriptError: ExitCode 1 ErrorMessage "MemoryError"; see its log' in message
