"""`itsacat aws bootstrap`: the S3 bucket the DVC remote lives in, and the CI role's policies.

    itsacat aws bootstrap --github-repo OWNER/NAME [--bucket B] [--account 123456789012]

Creates the bucket if needed (idempotently: a second run changes nothing) with versioning
on (an overwritten or deleted object stays retrievable), every kind of public access
blocked and default encryption (SSE-S3) on, then prints the IAM policy the CI role needs
and the trust policy that lets GitHub Actions assume that role through OIDC, with no
long-lived keys. The bucket defaults to the one in DVC remote `s3` (.dvc/config), the one
line a fork changes.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsacat.aws.clients import aws_errors, error_code, explain
from itsacat.config import AwsParams
from itsacat.errors import AWSError, ConfigError

log = logging.getLogger(__name__)

GITHUB_OIDC = "token.actions.githubusercontent.com"
SETTINGS = ("versioning", "public access block", "default encryption")


@dataclass(frozen=True)
class BucketReport:
    """What bootstrap found and did."""

    bucket: str
    region: str
    created: bool
    turned_on: tuple[str, ...]  # settings switched on by this run
    already_on: tuple[str, ...]  # settings that were already right

    def lines(self) -> list[str]:
        head = "created" if self.created else "found"
        out = [f"bucket s3://{self.bucket} ({self.region}): {head}"]
        out += [f"  {s}: turned on" for s in self.turned_on]
        out += [f"  {s}: already on" for s in self.already_on]
        return out


def dvc_remote_url(root: Path, remote: str = "s3") -> str:
    """The URL of DVC remote `remote` in root/.dvc/config (and config.local)."""
    from dvc.config import Config

    remotes = Config(dvc_dir=str(root / ".dvc"))["remote"]
    if remote not in remotes:
        raise ConfigError(
            f"DVC remote {remote!r} is not in {root / '.dvc/config'}; add it with "
            f"`dvc remote add {remote} s3://BUCKET/dvc` or set aws.bucket in params.yaml"
        )
    return str(remotes[remote]["url"])


def resolve_bucket(aws: AwsParams, root: Path = Path()) -> str:
    """aws.bucket, or else the bucket of DVC remote `s3`."""
    if aws.bucket:
        return aws.bucket
    url = dvc_remote_url(root)
    match = re.match(r"^s3://([^/]+)", url)
    if not match:
        raise ConfigError(
            f"DVC remote 's3' has URL {url!r}, not s3://BUCKET/...; fix it in .dvc/config "
            "or set aws.bucket in params.yaml"
        )
    return match.group(1)


def bucket_region(s3: Any, bucket: str) -> str:
    """The region `bucket` lives in (GetBucketLocation's quirks undone)."""
    location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def _check_existing(s3: Any, bucket: str, region: str) -> bool:
    """True when the bucket exists and is ours in `region`; False when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        if code in ("403", "AccessDenied", "Forbidden"):
            raise AWSError(
                f"bucket {bucket} exists but these credentials cannot use it (another account "
                "owns it, or the role lacks s3:ListBucket); bucket names are global, so choose "
                "another in .dvc/config (remote s3) or grant access"
            ) from None
        raise explain(exc, f"checking bucket {bucket}", region) from None
    actual = bucket_region(s3, bucket)
    if actual != region:
        raise AWSError(
            f"bucket {bucket} is in {actual} but aws.region says {region}; set aws.region: "
            f"{actual} in params.yaml (or choose another bucket name)"
        )
    return True


def _settings_state(s3: Any, bucket: str) -> dict[str, bool]:
    from botocore.exceptions import ClientError

    state = {}
    versioning = s3.get_bucket_versioning(Bucket=bucket)
    state["versioning"] = versioning.get("Status") == "Enabled"
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        state["public access block"] = all(block.get(k) for k in _BLOCK_ALL)
    except ClientError as exc:
        if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        state["public access block"] = False
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        state["default encryption"] = bool(rules.get("Rules"))
    except ClientError as exc:
        if error_code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        state["default encryption"] = False
    return state


_BLOCK_ALL = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def _turn_on(s3: Any, bucket: str, setting: str) -> None:
    if setting == "versioning":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    elif setting == "public access block":
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration={k: True for k in _BLOCK_ALL}
        )
    elif setting == "default encryption":
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
    else:  # pragma: no cover - SETTINGS lists every branch
        raise ValueError(setting)


def ensure_bucket(s3: Any, bucket: str, region: str) -> BucketReport:
    """Make `bucket` exist in `region` with versioning, no public access and encryption.

    Idempotent. If the bucket was created here and a later step fails, the error says so
    and how to finish or undo it: nothing half-made goes unreported.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    with aws_errors(f"checking bucket {bucket}", region):
        exists = _check_existing(s3, bucket, region)
    if not exists:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "BucketAlreadyExists":
                raise AWSError(
                    f"bucket name {bucket} is taken by another AWS account (names are global); "
                    "choose another in .dvc/config (remote s3)"
                ) from None
            if error_code(exc) != "BucketAlreadyOwnedByYou":
                raise explain(exc, f"creating bucket {bucket}", region) from None
        except BotoCoreError as exc:
            raise explain(exc, f"creating bucket {bucket}", region) from None
        log.info("created bucket s3://%s in %s", bucket, region)
    turned_on: list[str] = []
    already_on: list[str] = []
    step = "reading the settings"
    try:
        state = _settings_state(s3, bucket)
        for setting in SETTINGS:
            if state[setting]:
                already_on.append(setting)
                continue
            step = f"turning on {setting}"
            _turn_on(s3, bucket, setting)
            turned_on.append(setting)
    except (BotoCoreError, ClientError) as exc:
        done = f"; already done: {', '.join(turned_on)}" if turned_on else ""
        made = f"bucket {bucket} was created, but " if not exists else ""
        raise AWSError(
            f"{made}{step} failed ({explain(exc, step, region)}){done}; fix it and run "
            f"`itsacat aws bootstrap` again (it is idempotent)"
            + (f", or remove the bucket with `aws s3 rb s3://{bucket}`" if not exists else "")
        ) from None
    return BucketReport(bucket, region, not exists, tuple(turned_on), tuple(already_on))


def ci_policy(
    account: str, region: str, bucket: str, prefix: str, execution_role_arn: str
) -> dict[str, Any]:
    """The IAM policy the CI role needs: the DVC bucket, SageMaker, Lambda, alarms, SNS.

    SageMaker resources are matched by the job-name prefixes the jobs really get
    (`aws.prefix` cleaned, lowercased and cut to fit), not by `prefix` as written."""
    from itsacat.aws.training import name_prefix
    from itsacat.aws.tuning import TUNING_PREFIX_LIMIT

    job, tuning = name_prefix(prefix, 32), name_prefix(prefix, TUNING_PREFIX_LIMIT)
    arn = f"arn:aws:{{}}:{region}:{account}:"
    sm, lam = arn.format("sagemaker"), arn.format("lambda")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DvcBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "DvcObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:PutObject",
                    "s3:DeleteObject",
                ],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
            {
                "Sid": "SageMakerTrainAndTune",
                "Effect": "Allow",
                "Action": [
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:CreateHyperParameterTuningJob",
                    "sagemaker:DescribeHyperParameterTuningJob",
                    "sagemaker:StopHyperParameterTuningJob",
                    "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
                    "sagemaker:AddTags",
                ],
                "Resource": sorted(
                    {
                        f"{sm}training-job/{job}-*",
                        f"{sm}training-job/{tuning}-*",  # a tuning job's training jobs
                        f"{sm}hyper-parameter-tuning-job/{tuning}-*",
                    }
                ),
            },
            {
                "Sid": "SageMakerDeploy",
                "Effect": "Allow",
                "Action": [
                    "sagemaker:CreateModel",
                    "sagemaker:DescribeModel",
                    "sagemaker:DeleteModel",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:DeleteEndpointConfig",
                    "sagemaker:CreateEndpoint",
                    "sagemaker:UpdateEndpoint",
                    "sagemaker:DeleteEndpoint",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:InvokeEndpoint",
                    "sagemaker:CreateModelPackageGroup",
                    "sagemaker:DescribeModelPackageGroup",
                    "sagemaker:CreateModelPackage",
                    "sagemaker:DescribeModelPackage",
                    "sagemaker:UpdateModelPackage",
                    "sagemaker:ListModelPackages",
                    "sagemaker:AddTags",
                ],
                "Resource": [
                    f"{sm}model/*",
                    f"{sm}endpoint/*",
                    f"{sm}endpoint-config/*",
                    f"{sm}model-package/*",
                    f"{sm}model-package-group/*",
                ],
            },
            {
                "Sid": "LambdaDeploy",
                "Effect": "Allow",
                "Action": [
                    "lambda:CreateFunction",
                    "lambda:GetFunction",
                    "lambda:GetFunctionConfiguration",
                    "lambda:UpdateFunctionCode",
                    "lambda:UpdateFunctionConfiguration",
                    "lambda:PublishVersion",
                    "lambda:CreateAlias",
                    "lambda:GetAlias",
                    "lambda:UpdateAlias",
                    "lambda:DeleteAlias",
                    "lambda:DeleteFunction",
                    "lambda:TagResource",
                    "lambda:InvokeFunction",
                ],
                "Resource": [f"{lam}function:*"],
            },
            {
                "Sid": "PassExecutionRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": execution_role_arn,
                "Condition": {
                    "StringEquals": {
                        "iam:PassedToService": ["sagemaker.amazonaws.com", "lambda.amazonaws.com"]
                    }
                },
            },
            {
                "Sid": "AlarmsAndNotifications",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "sns:Publish"],
                "Resource": "*",
            },
            {
                "Sid": "GpuRunnerOnEc2",  # the PR report's self-hosted GPU runner, started per job
                "Effect": "Allow",
                "Action": [
                    "ec2:RunInstances",
                    "ec2:TerminateInstances",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "ec2:CreateTags",
                ],
                "Resource": "*",
            },
            {
                "Sid": "TrainingLogs",
                "Effect": "Allow",
                "Action": ["logs:GetLogEvents", "logs:DescribeLogStreams"],
                "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/*",
            },
        ],
    }


# The GitHub environments the workflows' jobs run in (.github/workflows/*.yml).
CI_ENVIRONMENTS = ("production", "gpu-runner")


def github_trust_policy(account: str, repo: str, branch: str = "main") -> dict[str, Any]:
    """The trust policy letting GitHub Actions of `repo` (OWNER/NAME) assume the CI role.

    Pushes to `branch`, pull requests (training, reports) and the jobs that run in the
    workflows' GitHub environments may assume it: a job with `environment:` presents the
    subject `repo:R:environment:NAME` instead of its branch (Deploy runs in `production`,
    the GPU runner's start/stop jobs in `gpu-runner`). Other repositories may not.
    """
    if not re.match(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$", repo):
        raise ConfigError(f"--github-repo must be OWNER/NAME like octocat/itsacat, got {repo!r}")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "GitHubActionsOidc",
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{account}:oidc-provider/{GITHUB_OIDC}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {f"{GITHUB_OIDC}:aud": "sts.amazonaws.com"},
                    "StringLike": {
                        f"{GITHUB_OIDC}:sub": [
                            f"repo:{repo}:ref:refs/heads/{branch}",
                            f"repo:{repo}:pull_request",
                            *(f"repo:{repo}:environment:{env}" for env in CI_ENVIRONMENTS),
                        ]
                    },
                },
            }
        ],
    }


def github_repo_from_git(root: Path) -> str | None:
    """OWNER/NAME of the `origin` remote when it is on GitHub, else None."""
    try:
        url = subprocess.run(
            ["git", "remote", "get-url", "origin"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"github\.com[:/]([^/]+/[^/]+?)(\.git)?$", url)
    return match.group(1) if match else None
