"""boto3 clients, made at the edge, and AWS failures turned into one line that says the fix.

    with aws_errors("creating the training job", region=params.aws.region):
        sagemaker.create_training_job(...)

boto3 honours `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) by itself, which is how
the tests reach the moto server; nothing here knows about moto.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from itsacat.errors import AWSError, ConfigError

CREDENTIALS_FIX = (
    "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (locally: `aws configure`; "
    "in GitHub Actions: aws-actions/configure-aws-credentials with the OIDC role that "
    "`itsacat aws bootstrap` prints)"
)


def client(service: str, region: str) -> Any:
    """A boto3 client for `service` in `region`, with standard retries and short timeouts."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session(region_name=region).client(service, config=config)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def explain(exc: BaseException, action: str, region: str | None = None) -> AWSError:
    """One AWSError for a botocore failure while doing `action`: what went wrong, what to do."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    where = f" in region {region}" if region else ""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AWSError(f"no AWS credentials found while {action}; {CREDENTIALS_FIX}")
    if isinstance(exc, NoRegionError):
        return AWSError(f"no AWS region while {action}; set aws.region in params.yaml")
    if isinstance(exc, EndpointConnectionError):
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        hint = f" (AWS_ENDPOINT_URL={endpoint})" if endpoint else ""
        return AWSError(
            f"cannot reach AWS{where}{hint} while {action}: {exc}; check aws.region in "
            "params.yaml (a real region such as us-east-1) and your network"
        )
    if not isinstance(exc, ClientError):
        return AWSError(f"{action} failed{where}: {exc}")
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    if code in (
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    ):
        return AWSError(
            f"AWS rejected the credentials while {action} ({code}: {message}); {CREDENTIALS_FIX}"
        )
    if code in ("AccessDenied", "AccessDeniedException", "403", "Forbidden"):
        return AWSError(
            f"access denied while {action}{where} ({message}); grant the role the permission "
            "(`itsacat aws bootstrap` prints the policy the CI role needs)"
        )
    if code in ("NoSuchBucket", "404", "NotFound") and "bucket" in action:
        return AWSError(
            f"the S3 bucket does not exist while {action}{where}; create it with "
            "`itsacat aws bootstrap` or fix the bucket in .dvc/config (remote s3) / aws.bucket"
        )
    if code in (
        "PermanentRedirect",
        "301",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
    ):
        actual = (
            exc.response.get("ResponseMetadata", {})
            .get("HTTPHeaders", {})
            .get("x-amz-bucket-region", "")
        ) or str(exc.response.get("Error", {}).get("Region", ""))
        found = f" it is in {actual}," if actual else ""
        return AWSError(
            f"wrong region while {action}:{found} but aws.region says {region}; "
            "set aws.region in params.yaml to the bucket's region"
        )
    if code == "ResourceLimitExceeded":
        return AWSError(
            f"an AWS quota stops {action}{where} ({message}); pick another aws.instance_type "
            "or ask for a quota increase in the Service Quotas console"
        )
    return AWSError(f"{action} failed{where}: {code}: {message}")


@contextmanager
def aws_errors(action: str, region: str | None = None) -> Iterator[None]:
    """Turn botocore exceptions raised inside the block into one clear AWSError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, action, region) from None


def require_instance_type(sagemaker: Any, shape: str, chosen: str, key: str, does: str) -> None:
    """`chosen` is in the instance-type list `shape` of the API model the installed botocore
    carries (TrainingInstanceType, ProductionVariantInstanceType), so a type SageMaker never
    accepts for that use (ml.t2.medium trains nothing; a typo) is refused before anything is
    uploaded or made, naming types of the same family."""
    allowed = sagemaker.meta.service_model.shape_for(shape).enum
    if allowed and chosen not in allowed:
        family = chosen.rsplit(".", 1)[0] + "."
        near = [t for t in allowed if t.startswith(family)] or ["ml.m5.large"]
        raise ConfigError(
            f"{key} {chosen!r} is not an instance type SageMaker {does}; pick one such as "
            f"{', '.join(near[:4])} (params.yaml)"
        )
