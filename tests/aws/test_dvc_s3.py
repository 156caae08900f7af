"""The S3 DVC remote on moto, with DVC's own CLI: push, a fresh clone pulls identical
files, and after a second version is pushed the first is still there at its git revision.

DVC reaches S3 through the `dvc-s3` plugin (the `aws` extra). Where it cannot be
installed beside this environment's boto3 (its aiobotocore pins an older botocore), point
ITSACAT_DVC_S3_PATH at a folder holding dvc-s3 and its own botocore
(`pip install --target DIR dvc-s3`): only the dvc subprocesses see it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest

from itsacat.aws.bootstrap import ensure_bucket, resolve_bucket
from itsacat.aws.clients import client
from itsacat.config import AwsParams

from .conftest import sh, venv_env


@pytest.fixture
def dvc_s3_env(aws_env: str) -> dict[str, str]:
    """The environment the dvc CLI needs to talk to S3 (moto, through AWS_* variables)."""
    if importlib.util.find_spec("dvc_s3") is not None:
        return venv_env()
    overlay = os.environ.get("ITSACAT_DVC_S3_PATH", "")
    if not overlay or not (Path(overlay) / "dvc_s3").is_dir():
        pytest.skip(
            "dvc-s3 is not installed: `pip install 'itsacat[aws]'`, or set ITSACAT_DVC_S3_PATH"
        )
    return venv_env(PYTHONPATH=overlay)


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def use_moto(repo: Path, endpoint: str, env: dict[str, str]) -> None:
    """What a developer's .dvc/config.local says to use a local S3: the endpoint only."""
    sh(["dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint], repo, env)


@pytest.mark.aws
@pytest.mark.pipeline
def test_push_clone_pull_and_the_first_version_survives(
    dvc_s3_env: dict[str, str], project: Path, aws_env: str, tmp_path: Path
) -> None:
    env = dvc_s3_env
    s3 = client("s3", "us-east-1")
    bucket = resolve_bucket(AwsParams(), project)  # the bucket .dvc/config names
    ensure_bucket(s3, bucket, "us-east-1")
    use_moto(project, aws_env, env)
    v1 = digests(project / "data")
    v1_rev = sh(["git", "rev-parse", "HEAD"], project).strip()

    sh(["dvc", "push", "-r", "s3", "data.dvc"], project, env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("dvc/files/md5/") for k in keys)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    use_moto(clone, aws_env, env)
    sh(["dvc", "pull", "-r", "s3", "data.dvc"], clone, env)
    assert digests(clone / "data") == v1

    # a second version of the data: one h5 file changes
    train_h5 = project / "data" / "train_catvnoncat.h5"
    train_h5.chmod(0o644)
    train_h5.write_bytes(train_h5.read_bytes() + b"\0" * 16)
    sh(["dvc", "add", "-q", "data"], project, env)
    sh(["git", "commit", "-q", "-am", "data v2"], project)
    sh(["dvc", "push", "-r", "s3", "data.dvc"], project, env)
    v2 = digests(project / "data")
    assert v2 != v1

    # a fresh clone at the first revision still gets the first version
    old = tmp_path / "old"
    sh(["git", "clone", "-q", str(project), str(old)], tmp_path)
    sh(["git", "checkout", "-q", v1_rev], old)
    use_moto(old, aws_env, env)
    sh(["dvc", "pull", "-r", "s3", "data.dvc"], old, env)
    assert digests(old / "data") == v1
    # and the clone made earlier moves to v2 with git pull + dvc pull
    sh(["git", "pull", "-q"], clone)
    sh(["dvc", "pull", "-r", "s3", "data.dvc"], clone, env)
    assert digests(clone / "data") == v2

    # the bucket keeps versions: deleting an object (a `dvc gc -c` too far) can be undone
    key = keys[0]
    s3.delete_object(Bucket=bucket, Key=key)
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key)
    assert versions["DeleteMarkers"] and versions["Versions"][0]["Key"] == key
