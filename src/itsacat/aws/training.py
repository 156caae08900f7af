"""`train.compute: sagemaker`: the train stage runs as a SageMaker training job.

    dvc repro train          (with train.compute: sagemaker and aws.role_arn in params.yaml)

`train_on_sagemaker` uploads prepared/ and this very package (script mode: a
`sourcedir.tar.gz` with `train_itsacat.py`, the `itsacat` package and a requirements.txt
from our own dependency list), starts a training job on AWS's prebuilt PyTorch image
(we use its Python, not its torch), shows the job's progress while it waits, then
downloads model.tar.gz and unpacks it into model/, insight/ and dvclive/: the outputs the
local run writes, in the same format, so evaluate and deploy cannot tell the difference.

Why the PyTorch deep-learning container: it comes as a CPU and a CUDA 12 GPU image with
the same Python 3.11 and SageMaker's training toolkit (script mode), and it already holds
numpy, h5py, Pillow and PyYAML. `train.backend: numpy` runs on the CPU image
(ml.m5.large), `train.backend: cupy` on the GPU image (ml.g4dn.xlarge) whose CUDA 12.1
matches `cupy-cuda12x`. The scikit-learn image would do for the CPU but has no GPU variant.
`aws.training_image` and `aws.instance_type` override both choices.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import re
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from itsacat.aws.clients import aws_errors, client, error_code, explain, require_instance_type
from itsacat.aws.sm_entry import CHANNEL, CHECKPOINT_DIR
from itsacat.config import Params, params_to_dict
from itsacat.errors import AWSError, ConfigError, DataError
from itsacat.stages.train import Paths

log = logging.getLogger(__name__)

ENTRY_SCRIPT = "train_itsacat.py"
LAUNCHER = '''"""SageMaker script-mode launcher: the itsacat train stage, training contract."""

from itsacat.aws.sm_entry import main

raise SystemExit(main())
'''
# AWS deep-learning containers: PyTorch 2.3 training, Python 3.11, one tag per processor.
IMAGE_REPOSITORY = "pytorch-training"
IMAGE_TAGS = {
    "numpy": "2.3.0-cpu-py311-ubuntu20.04-sagemaker",
    "cupy": "2.3.0-gpu-py311-cu121-ubuntu20.04-sagemaker",
}
DEFAULT_INSTANCE = {"numpy": "ml.m5.large", "cupy": "ml.g4dn.xlarge"}
DLC_ACCOUNT = "763104351884"
DLC_ACCOUNT_BY_REGION = {  # the regions whose images live in another registry account
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-southeast-3": "907027046896",
    "eu-south-1": "692866216735",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
}
TRAINED_DIRS = ("model", "insight", "dvclive")  # inside model.tar.gz → Paths fields
TERMINAL = ("Completed", "Failed", "Stopped")


def training_image(params: Params) -> str:
    """aws.training_image, else the prebuilt PyTorch image for the region and backend."""
    if params.aws.training_image:
        return params.aws.training_image
    region = params.aws.region
    account = DLC_ACCOUNT_BY_REGION.get(region, DLC_ACCOUNT)
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    tag = IMAGE_TAGS[params.train.backend]
    return f"{account}.dkr.ecr.{region}.{domain}/{IMAGE_REPOSITORY}:{tag}"


def instance_type(params: Params) -> str:
    return params.aws.instance_type or DEFAULT_INSTANCE[params.train.backend]


def name_prefix(prefix: str, limit: int) -> str:
    """aws.prefix as the start of a SageMaker job name: what SageMaker accepts, at most
    `limit` chars, lower case (SageMaker lowercases names in ARNs, which IAM policies match;
    `itsacat aws bootstrap`'s policy is written from this same function)."""
    return re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:limit] or "itsacat"


def job_name(prefix: str, kind: str = "train") -> str:
    """A unique SageMaker job name: PREFIX-KIND-YYYYmmdd-HHMMSS-xxxx, at most 63 chars."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{name_prefix(prefix, 32)}-{kind}-{stamp}-{secrets.token_hex(2)}"


def hyperparameters(params: Params) -> dict[str, str]:
    """The params the train stage reads, as SageMaker's strings (`section.key` → JSON text)."""
    plain = params_to_dict(params)
    out = {
        f"{section}.{key}": json.dumps(value)
        for section in ("model", "train")
        for key, value in plain[section].items()
    }
    out["train.compute"] = json.dumps("local")  # the job itself trains locally
    return out


def requirements(backend: str) -> list[str]:
    """What the job's container pip-installs: our own runtime dependencies."""
    try:
        declared = importlib.metadata.requires("itsacat") or []
    except importlib.metadata.PackageNotFoundError:  # running from a bare checkout
        declared = []
    reqs = [r for r in declared if "extra ==" not in r]
    if backend == "cupy":
        reqs += [r.split(";")[0].strip() for r in declared if 'extra == "gpu"' in r]
    return reqs


def source_tarball(backend: str) -> bytes:
    """sourcedir.tar.gz for script mode: the launcher, the itsacat package, requirements.txt."""
    import itsacat

    package = Path(itsacat.__file__).resolve().parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:

        def add_text(name: str, text: str) -> None:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))

        add_text(ENTRY_SCRIPT, LAUNCHER)
        add_text("requirements.txt", "\n".join(requirements(backend)) + "\n")
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                info = tar.gettarinfo(str(path), arcname=f"itsacat/{path.relative_to(package)}")
                info.mtime = 0
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


@dataclass(frozen=True)
class JobLocations:
    """Where one job's inputs and outputs live in S3."""

    bucket: str
    base: str  # PREFIX/training/JOB

    @property
    def source_key(self) -> str:
        return f"{self.base}/source/sourcedir.tar.gz"

    @property
    def input_prefix(self) -> str:
        return f"{self.base}/input/{CHANNEL}/"

    @property
    def checkpoint_prefix(self) -> str:  # the container's /opt/ml/checkpoints, synced
        return f"{self.base}/checkpoints/"

    @property
    def output_path(self) -> str:  # SageMaker appends JOB/output/model.tar.gz
        return f"s3://{self.bucket}/{self.base.rsplit('/', 1)[0]}/"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def job_request(
    params: Params, name: str, where: JobLocations, static: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The CreateTrainingJob request (pure: no AWS calls). With `aws.spot`, a managed spot
    job: SageMaker keeps the container's /opt/ml/checkpoints in S3, and when spot capacity
    is reclaimed (SIGTERM, two minutes' notice) it restarts the job with them there; the
    entry point's train stage saves its state on SIGTERM and resumes from it."""
    hps = dict(static) if static is not None else hyperparameters(params)
    hps.update(
        {
            "sagemaker_program": json.dumps(ENTRY_SCRIPT),
            "sagemaker_submit_directory": json.dumps(where.uri(where.source_key)),
            "sagemaker_region": json.dumps(params.aws.region),
            "sagemaker_container_log_level": "20",
        }
    )
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": training_image(params),
            "TrainingInputMode": "File",
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "RoleArn": params.aws.role_arn,
        "HyperParameters": hps,
        "InputDataConfig": [
            {
                "ChannelName": CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": where.uri(where.input_prefix),
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": where.output_path},
        "ResourceConfig": {
            "InstanceType": instance_type(params),
            "InstanceCount": 1,
            "VolumeSizeInGB": params.aws.volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": params.aws.max_runtime_s},
        "Tags": [{"Key": "project", "Value": "itsacat"}],
    }
    if params.aws.spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = params.aws.max_wait_s
        request["CheckpointConfig"] = {
            "S3Uri": where.uri(where.checkpoint_prefix),
            "LocalPath": CHECKPOINT_DIR,
        }
    return request


def check_ready(params: Params, s3: Any, sagemaker: Any, bucket: str, prepared: Path) -> None:
    """Fail before uploading anything: no role, an instance type SageMaker does not train on,
    no prepared data, no bucket, or a bucket in another region (boto3 follows S3's
    redirect, but SageMaker reads only its own)."""
    from itsacat.aws.bootstrap import bucket_region

    if not params.aws.role_arn:
        raise ConfigError(
            "train.compute: sagemaker needs aws.role_arn, the SageMaker execution role, "
            "like arn:aws:iam::123456789012:role/itsacat-sagemaker (params.yaml)"
        )
    require_instance_type(
        sagemaker, "TrainingInstanceType", instance_type(params), "aws.instance_type", "trains on"
    )
    if not (prepared / "train.npz").exists():
        raise DataError(f"{prepared}/train.npz does not exist; run `dvc repro prepare` first")
    region = params.aws.region
    with aws_errors(f"checking bucket {bucket}", region):
        s3.head_bucket(Bucket=bucket)
        actual = bucket_region(s3, bucket)
    if actual != region:
        raise AWSError(
            f"bucket {bucket} is in {actual} but aws.region says {region}; set aws.region: "
            f"{actual} in params.yaml (SageMaker reads only buckets in its own region)"
        )


def upload_inputs(s3: Any, where: JobLocations, prepared: Path, backend: str) -> None:
    s3.put_object(Bucket=where.bucket, Key=where.source_key, Body=source_tarball(backend))
    for path in sorted(prepared.iterdir()):
        if path.is_file():
            s3.upload_file(str(path), where.bucket, where.input_prefix + path.name)


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix`; returns how many."""
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            n += len(keys)
    return n


# kind → (describe call, stop call, name key, status key)
JOB_API = {
    "training": (
        "describe_training_job",
        "stop_training_job",
        "TrainingJobName",
        "TrainingJobStatus",
    ),
    "tuning": (
        "describe_hyper_parameter_tuning_job",
        "stop_hyper_parameter_tuning_job",
        "HyperParameterTuningJobName",
        "HyperParameterTuningJobStatus",
    ),
}


# Answers worth asking again after: throttling, AWS's own 5xx, a dropped connection.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
MAX_POLL_FAILURES = 20  # consecutive failed status checks before giving up on waiting


def transient(exc: BaseException) -> bool:
    """True for a failure that a later try may not meet (botocore's own retries spent)."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in TRANSIENT_CODES or int(status or 0) >= 500
    return False


def _cli(call: str, key: str, name: str) -> str:
    """The AWS CLI spelling of a SageMaker call on one job."""
    flag = re.sub(r"(?<!^)(?=[A-Z])", "-", key).lower()
    return f"`aws sagemaker {call.replace('_', '-')} --{flag} {name}`"


def wait_for_job(
    sagemaker: Any,
    name: str,
    poll_s: float,
    *,
    kind: str = "training",
    result: str = "",
    on_status: Callable[[dict[str, Any]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll a SageMaker training or tuning job until it ends, logging each new status;
    return its description. A status check that fails for a while (throttling, the
    network) is tried again; one that cannot go on says that the job runs on, how to
    follow or stop it and where `result` (its output) will be. Ctrl-C stops the job on
    SageMaker too (it would run on, and bill, otherwise), then re-raises."""
    from botocore.exceptions import BotoCoreError, ClientError

    describe, stop, key, status_key = JOB_API[kind]
    seen: set[tuple[str, str]] = set()
    failures = 0
    try:
        while True:
            action = f"checking SageMaker {kind} job {name}"
            try:
                desc = getattr(sagemaker, describe)(**{key: name})
            except (BotoCoreError, ClientError) as exc:
                failures += 1
                if not transient(exc) or failures >= MAX_POLL_FAILURES:
                    output = f"; its output will be in {result}" if result else ""
                    raise AWSError(
                        f"{explain(exc, action)}; the job {name} goes on running on SageMaker: "
                        f"follow it with {_cli(describe, key, name)}, stop it with "
                        f"{_cli(stop, key, name)}{output}"
                    ) from None
                log.warning(
                    "%s; trying again in %g s (%d/%d)",
                    explain(exc, action),
                    poll_s,
                    failures,
                    MAX_POLL_FAILURES,
                )
                sleep(poll_s)
                continue
            failures = 0
            transitions = desc.get("SecondaryStatusTransitions") or [
                {"Status": desc.get("SecondaryStatus", desc[status_key]), "StatusMessage": ""}
            ]
            for t in transitions:
                mark = (str(t.get("Status")), str(t.get("StatusMessage", "")))
                if mark not in seen:
                    seen.add(mark)
                    log.info("SageMaker job %s: %s %s", name, mark[0], mark[1])
            if on_status is not None:
                on_status(desc)
            if desc[status_key] in TERMINAL:
                return desc
            sleep(poll_s)
    except KeyboardInterrupt:
        try:
            with aws_errors(f"stopping SageMaker {kind} job {name}"):
                getattr(sagemaker, stop)(**{key: name})
        except AWSError as exc:  # the interrupt still wins: say what may be left running
            log.warning(
                "%s; if the job still runs (and bills), stop it with %s", exc, _cli(stop, key, name)
            )
        else:
            log.warning(
                "stopped SageMaker %s job %s (it leaves no model; run again for a new job); "
                "its inputs remain in S3",
                kind,
                name,
            )
        raise


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
            raise AWSError(f"model.tar.gz holds an unsafe entry {m.name!r}; refusing to unpack it")
        members.append(m)
    return members


def unpack_outputs(archive: Path, paths: Paths) -> None:
    """Unpack model.tar.gz into paths.model/insight/live, replacing each one whole."""
    targets = {"model": paths.model, "insight": paths.insight, "dvclive": paths.live}
    staging = Path(tempfile.mkdtemp(prefix=".itsacat-sm-", dir=paths.model.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, members=_safe_members(tar))
        missing = [d for d in TRAINED_DIRS if not (staging / d).is_dir()]
        if missing or not (staging / "model" / "model.json").exists():
            raise AWSError(
                f"model.tar.gz lacks {', '.join(missing) or 'model/model.json'}; was the job "
                "run with the itsacat entry point (aws.training_image)?"
            )
        for name, target in targets.items():
            old = staging / f"{name}.old"
            if target.exists():
                target.rename(old)
            (staging / name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def one_line(text: object) -> str:
    """SageMaker's multi-line FailureReason (`AlgorithmError: …:\nExitCode 1\n…`) on one line."""
    return " ".join(str(text or "").split())


def failure_message(desc: Mapping[str, Any], where: JobLocations, region: str) -> str:
    name = desc.get("TrainingJobName", "?")
    reason = one_line(desc.get("FailureReason")) or "no reason given"
    logs = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs"
    )
    return (
        f"SageMaker training job {name} ended {desc.get('TrainingJobStatus')}: {reason}; "
        f"see its log ({logs}, stream {name}/…), fix the cause and run `dvc repro train` "
        f"again (its inputs remain under {where.uri(where.base)}/)"
    )


def start_job(
    s3: Any,
    where: JobLocations,
    prepared: Path,
    params: Params,
    what: str,
    create: Callable[[], object],
) -> None:
    """Upload a job's inputs, then `create` it; if SageMaker refuses the job, remove the
    inputs again and say so (nothing half-made is left behind unreported)."""
    region = params.aws.region
    with aws_errors(f"uploading the inputs of {what} to {where.uri(where.base)}/", region):
        upload_inputs(s3, where, prepared, params.train.backend)
    try:
        create()
    except Exception as exc:
        removed = delete_prefix(s3, where.bucket, where.base + "/")
        error = explain(exc, f"creating SageMaker {what}", region)
        raise AWSError(f"{error}; removed the {removed} uploaded input objects") from None


def train_on_sagemaker(
    params: Params,
    *,
    s3: Any = None,
    sagemaker: Any = None,
    sns: Any = None,
    paths: Paths | None = None,
    root: Path = Path(),
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run the train stage as a SageMaker job; fill `paths` as the local run does. → job name."""
    paths = paths or Paths()
    from itsacat.aws.bootstrap import resolve_bucket
    from itsacat.aws.notify import notify

    region = params.aws.region
    bucket = resolve_bucket(params.aws, root)
    s3 = s3 if s3 is not None else client("s3", region)
    sagemaker = sagemaker if sagemaker is not None else client("sagemaker", region)
    check_ready(params, s3, sagemaker, bucket, paths.prepared)

    name = job_name(params.aws.prefix)
    where = JobLocations(bucket, f"{params.aws.prefix}/training/{name}")
    start_job(
        s3,
        where,
        paths.prepared,
        params,
        f"training job {name}",
        lambda: sagemaker.create_training_job(**job_request(params, name, where)),
    )
    log.info("started SageMaker training job %s (%s)", name, training_image(params))
    desc = wait_for_job(
        sagemaker,
        name,
        params.aws.poll_s,
        result=f"{where.output_path}{name}/output/model.tar.gz",
        sleep=sleep,
    )
    if desc["TrainingJobStatus"] != "Completed":
        message = failure_message(desc, where, region)
        notify("training_ended", message, params.notify, sns=sns, job=name, status="failed")
        raise AWSError(message)
    if params.aws.spot:  # the job is done: its checkpoints are of no more use
        delete_prefix(s3, bucket, where.checkpoint_prefix)
    artifact = desc["ModelArtifacts"]["S3ModelArtifacts"]
    match = re.match(r"^s3://([^/]+)/(.+)$", artifact)
    if not match:
        raise AWSError(f"SageMaker job {name} reported an odd model location {artifact!r}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with aws_errors(f"downloading {artifact}", region):
            s3.download_file(match.group(1), match.group(2), str(archive))
        paths.model.parent.mkdir(parents=True, exist_ok=True)
        unpack_outputs(archive, paths)
    spec = json.loads((paths.model / "model.json").read_text())
    seconds = desc.get("BillableTimeInSeconds") or desc.get("TrainingTimeInSeconds")
    message = f"model {spec.get('version')} trained by SageMaker job {name}"
    log.info("%s; unpacked into %s/, %s/, %s/", message, paths.model, paths.insight, paths.live)
    notify(
        "training_ended",
        message,
        params.notify,
        sns=sns,
        job=name,
        version=spec.get("version"),
        compute="sagemaker",
        billable_seconds=seconds,
    )
    return name
