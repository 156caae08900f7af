"""AWS plumbing the deploy targets share: error translation, waiting, alarms, notifications.

Clients are passed in (see `cli.py`), never created here, so tests point them at moto.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from itsacat.config import Params
from itsacat.errors import AWSError, ItsacatError

log = logging.getLogger(__name__)

T = TypeVar("T")

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return code in {"404", "NoSuchKey", "NoSuchBucket", "ResourceNotFoundException"} or (
        code == "ValidationException"
        and any(t in error_message(exc).lower() for t in ("could not find", "does not exist"))
    )


def explain(exc: BaseException, what: str) -> AWSError:
    """Turn a botocore failure into one line that says what to fix."""
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AWSError(
            f"{what}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or in CI assume the deploy role "
            "through GitHub OIDC"
        )
    if isinstance(exc, NoRegionError):
        return AWSError(f"{what}: no AWS region; set aws.region in params.yaml")
    if isinstance(exc, EndpointConnectionError):
        return AWSError(f"{what}: cannot reach AWS ({exc}); check aws.region and the network")
    code, message = error_code(exc), error_message(exc)
    if code in {"UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch"}:
        return AWSError(f"{what}: the AWS credentials are not valid ({code}); refresh them")
    if code in {"AccessDenied", "AccessDeniedException", "403"}:
        return AWSError(
            f"{what}: access denied ({message}); grant the deploy role the permissions "
            "`itsacat aws bootstrap` prints"
        )
    if code == "ValidationException" and "role" in message.lower():
        return AWSError(
            f"{what}: the role was refused ({message}); set a role ARN SageMaker/Lambda "
            "may assume (deploy.*.role_arn or aws.role_arn)"
        )
    return AWSError(f"{what}: {code or type(exc).__name__}: {message}")


def call(what: str, fn: Callable[..., T], **kwargs: Any) -> T:
    """Run one AWS call; a failure becomes an `AWSError` naming `what` and the fix."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, what) from None


def find(what: str, fn: Callable[..., T], **kwargs: Any) -> T | None:
    """Like `call`, but a "not found" answer is None instead of an error."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise explain(exc, what) from None
    except BotoCoreError as exc:
        raise explain(exc, what) from None


def aws_setting(params: Params, name: str) -> str:
    """A field of the `aws:` section, "" when that section has no such field (yet)."""
    return str(getattr(params.aws, name, "") or "")


def require_bucket(params: Params, s3: Any) -> str:
    """aws.bucket, checked to exist and be reachable, or one line saying how to fix it."""
    bucket = aws_setting(params, "bucket")
    if not bucket:
        raise AWSError(
            "aws.bucket is empty; set it in params.yaml to your bucket "
            "(`itsacat aws bootstrap` creates one)"
        )
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
            raise AWSError(
                f"bucket {bucket!r} (aws.bucket) does not exist in this account; create it "
                "with `itsacat aws bootstrap` or fix aws.bucket in params.yaml"
            ) from None
        raise explain(exc, f"checking bucket {bucket!r}") from None
    except BotoCoreError as exc:
        raise explain(exc, f"checking bucket {bucket!r}") from None
    return bucket


def require_role(arn: str, key: str) -> str:
    if not arn:
        raise AWSError(f"{key} is empty; set it to an IAM role ARN (see README, AWS)")
    if not ROLE_ARN.match(arn):
        raise AWSError(
            f"{key} must be an IAM role ARN like arn:aws:iam::123456789012:role/NAME, got {arn!r}"
        )
    return arn


def require_alarms(cloudwatch: Any, names: tuple[str, ...], key: str) -> None:
    """Every alarm a rollback depends on must exist, or the guard would silently be off."""
    if not names:
        return
    found = call("describe CloudWatch alarms", cloudwatch.describe_alarms, AlarmNames=list(names))
    have = {a["AlarmName"] for a in found.get("MetricAlarms", [])}
    have |= {a["AlarmName"] for a in found.get("CompositeAlarms", [])}
    missing = [n for n in names if n not in have]
    if missing:
        raise AWSError(
            f"{key} names CloudWatch alarms that do not exist: {', '.join(missing)}; "
            "create them or remove them from params.yaml"
        )


def alarms_firing(cloudwatch: Any, names: list[str]) -> list[str]:
    if not names:
        return []
    found = call("read CloudWatch alarms", cloudwatch.describe_alarms, AlarmNames=names)
    alarms = found.get("MetricAlarms", []) + found.get("CompositeAlarms", [])
    return [a["AlarmName"] for a in alarms if a.get("StateValue") == "ALARM"]


def poll(
    what: str,
    read: Callable[[], T],
    done: Callable[[T], bool],
    describe: Callable[[T], str],
    poll_s: float,
    timeout_s: float,
) -> T:
    """Call `read` until `done`, logging each new state with the time waited so far."""
    start = time.monotonic()
    last = ""
    while True:
        state = read()
        text = describe(state)
        elapsed = time.monotonic() - start
        if text != last:
            log.info("%s: %s (%.0f s)", what, text, elapsed)
            last = text
        if done(state):
            return state
        if elapsed > timeout_s:
            raise AWSError(
                f"{what} is still {text} after {timeout_s:.0f} s; look at it in the AWS "
                "console (CloudWatch logs), or raise the timeout in params.yaml"
            )
        time.sleep(poll_s)


def notify(params: Params, event: str, message: str, **details: Any) -> None:
    """Tell the configured notifier; a notifier failure is logged, never fails the deploy."""
    try:
        from itsacat.aws.notify import notify as send
    except ImportError:
        log.info("notification (no notifier installed): %s", message)
        return
    try:
        send(event, message, params.notify, **details)
    except ItsacatError as exc:
        log.warning("notification %s not sent: %s", event, exc)
