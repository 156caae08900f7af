"""`itsacat aws bootstrap` against moto: the bucket is made once and right, a second run
changes nothing, the printed policies are ones IAM accepts, bad set-ups get one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from itsacat.aws.bootstrap import (
    ci_policy,
    ensure_bucket,
    github_trust_policy,
    resolve_bucket,
)
from itsacat.aws.clients import client
from itsacat.cli import main as cli_main
from itsacat.config import AwsParams
from itsacat.errors import AWSError, ConfigError

ACCOUNT = "123456789012"


def bucket_state(s3: Any, bucket: str) -> dict[str, Any]:
    return {
        "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"),
        "block": s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "sse": s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
            "Rules"
        ][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
    }


@pytest.mark.aws
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_bucket_is_made_once_and_right(aws_env: str, region: str) -> None:
    s3 = client("s3", region)
    first = ensure_bucket(s3, "itsacat-data", region)
    assert first.created and first.turned_on == (
        "versioning",
        "public access block",
        "default encryption",
    )
    assert bucket_state(s3, "itsacat-data") == {
        "versioning": "Enabled",
        "block": {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
        "sse": "AES256",
    }
    again = ensure_bucket(s3, "itsacat-data", region)
    assert not again.created and again.turned_on == ()
    assert again.already_on == first.turned_on
    location = s3.get_bucket_location(Bucket="itsacat-data").get("LocationConstraint")
    assert (location or "us-east-1") == region


@pytest.mark.aws
def test_an_existing_plain_bucket_gets_the_missing_settings(aws_env: str) -> None:
    s3 = client("s3", "us-east-1")
    s3.create_bucket(Bucket="plain")
    s3.put_bucket_versioning(Bucket="plain", VersioningConfiguration={"Status": "Enabled"})
    report = ensure_bucket(s3, "plain", "us-east-1")
    assert not report.created
    assert report.already_on == ("versioning",)
    assert report.turned_on == ("public access block", "default encryption")
    assert bucket_state(s3, "plain")["sse"] == "AES256"


@pytest.mark.aws
def test_wrong_region_names_the_bucket_region(aws_env: str) -> None:
    ensure_bucket(client("s3", "eu-west-1"), "itsacat-eu", "eu-west-1")
    with pytest.raises(AWSError, match=r"is in eu-west-1 but aws.region says us-east-1"):
        ensure_bucket(client("s3", "us-east-1"), "itsacat-eu", "us-east-1")


@pytest.mark.aws
def test_a_half_made_bucket_is_reported(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.s3.exceptions import S3ClientError
    from moto.s3.models import S3Backend

    def deny(self: Any, *args: Any, **kwargs: Any) -> None:
        raise S3ClientError("AccessDenied", "Access Denied")

    monkeypatch.setattr(S3Backend, "put_bucket_encryption", deny)
    with pytest.raises(AWSError) as info:
        ensure_bucket(client("s3", "us-east-1"), "half-made", "us-east-1")
    message = str(info.value)
    assert "bucket half-made was created, but turning on default encryption failed" in message
    assert "already done: versioning, public access block" in message
    assert "aws s3 rb s3://half-made" in message


@pytest.mark.aws
def test_policies_are_accepted_by_iam(aws_env: str) -> None:
    iam = client("iam", "us-east-1")
    trust = github_trust_policy(ACCOUNT, "octocat/itsacat")
    role = iam.create_role(RoleName="itsacat-ci", AssumeRolePolicyDocument=json.dumps(trust))
    policy = ci_policy(
        ACCOUNT, "us-east-1", "itsacat-data", "itsacat", f"arn:aws:iam::{ACCOUNT}:role/sm"
    )
    created = iam.create_policy(PolicyName="itsacat-ci", PolicyDocument=json.dumps(policy))
    iam.attach_role_policy(RoleName="itsacat-ci", PolicyArn=created["Policy"]["Arn"])
    stored = role["Role"]["AssumeRolePolicyDocument"]
    condition = stored["Statement"][0]["Condition"]
    assert condition["StringLike"]["token.actions.githubusercontent.com:sub"] == [
        "repo:octocat/itsacat:ref:refs/heads/main",
        "repo:octocat/itsacat:pull_request",
        "repo:octocat/itsacat:environment:production",
        "repo:octocat/itsacat:environment:gpu-runner",
    ]
    resources = json.dumps(policy)
    assert "arn:aws:s3:::itsacat-data/*" in resources
    assert f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/itsacat-*" in resources


def test_trust_policy_admits_every_environment_the_workflows_use(repo_root: Path) -> None:
    """A job with `environment:` presents that environment as its OIDC subject."""
    import re

    used = set()
    for workflow in (repo_root / ".github" / "workflows").glob("*.yml"):
        used |= set(re.findall(r"^\s+environment:\s*([\w-]+)", workflow.read_text(), re.M))
    assert used, "no workflow job runs in a GitHub environment"
    subjects = github_trust_policy(ACCOUNT, "o/r")["Statement"][0]["Condition"]["StringLike"]
    for env in used:
        assert f"repo:o/r:environment:{env}" in subjects["token.actions.githubusercontent.com:sub"]


def test_trust_policy_refuses_a_bad_repository() -> None:
    with pytest.raises(ConfigError, match="OWNER/NAME"):
        github_trust_policy(ACCOUNT, "https://github.com/octocat/itsacat")


def test_bucket_comes_from_the_dvc_remote(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "['remote \"s3\"']\n    url = s3://my-fork-data/dvc\n"
    )
    assert resolve_bucket(AwsParams(), tmp_path) == "my-fork-data"
    assert resolve_bucket(AwsParams(bucket="other"), tmp_path) == "other"
    (tmp_path / ".dvc" / "config").write_text("['remote \"s3\"']\n    url = /mnt/store\n")
    with pytest.raises(ConfigError, match="not s3://BUCKET"):
        resolve_bucket(AwsParams(), tmp_path)
    (tmp_path / ".dvc" / "config").write_text("")
    with pytest.raises(ConfigError, match="DVC remote 's3' is not in"):
        resolve_bucket(AwsParams(), tmp_path)


@pytest.mark.aws
def test_cli_prints_the_bucket_and_both_policies(
    aws_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("aws:\n  region: eu-west-1\n  bucket: itsacat-cli\n")
    argv = ["aws", "bootstrap", "--params", str(params), "--github-repo", "octocat/itsacat"]
    assert cli_main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bucket"]["created"] is True and out["bucket"]["region"] == "eu-west-1"
    assert out["trust_policy"]["Statement"][0]["Principal"]["Federated"] == (
        f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    )
    assert f"arn:aws:iam::{ACCOUNT}:role/itsacat-*" in json.dumps(out["ci_policy"])
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "bucket s3://itsacat-cli (eu-west-1): found" in text
    assert "versioning: already on" in text and "sts:AssumeRoleWithWebIdentity" in text


@pytest.mark.aws
def test_cli_bad_setup_is_one_line(
    aws_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("aws:\n  bucket: Not_A_Bucket\n")
    assert cli_main(["aws", "bootstrap", "--params", str(params), "--github-repo", "o/n"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("itsacat: error: aws.bucket must be an S3 bucket name")
    assert len(err.splitlines()) == 1
    client("s3", "us-east-1").create_bucket(Bucket="itsacat-east")
    params.write_text("aws:\n  region: eu-west-1\n  bucket: itsacat-east\n")
    assert cli_main(["aws", "bootstrap", "--params", str(params), "--github-repo", "o/n"]) == 1
    assert "is in us-east-1 but aws.region says eu-west-1" in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["itsacat", "cat-experiments", "Team/Cats.v2"])
def test_policy_admits_the_job_names_the_jobs_get(prefix: str) -> None:
    """The policy must match the names training and tuning really give their jobs, which
    clean and shorten aws.prefix (a tuning job name has at most 32 characters)."""
    from fnmatch import fnmatchcase

    from itsacat.aws.training import job_name
    from itsacat.aws.tuning import tuning_job_name

    policy = ci_policy(ACCOUNT, "us-east-1", "itsacat-data", prefix, "arn:aws:iam::1:role/sm")
    (statement,) = [s for s in policy["Statement"] if s["Sid"] == "SageMakerTrainAndTune"]
    sm = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:"
    tuning = tuning_job_name(prefix)
    arns = [
        f"{sm}training-job/{job_name(prefix)}",
        f"{sm}hyper-parameter-tuning-job/{tuning}",
        f"{sm}training-job/{tuning}-001-0a1b2c3d",  # one the tuning job starts
    ]
    for arn in arns:
        # SageMaker lowercases names in ARNs; the names are lower case already
        assert arn == arn.lower()
        assert any(fnmatchcase(arn, r) for r in statement["Resource"]), (arn, statement)
