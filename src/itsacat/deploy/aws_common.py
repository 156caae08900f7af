"""AWS plumbing the deploy targets share: calls with clear errors, waiting, alarms, notices.

Clients are passed in (`cli.py` makes them with `itsacat.aws.clients.client`), never made
here, so tests point them at moto. Failures are explained by `itsacat.aws.clients.explain`,
the one place that turns botocore errors into a line saying what to fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from itsacat.aws.clients import error_code, explain
from itsacat.config import Params
from itsacat.errors import AWSError, ItsacatError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)


def is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return code in {"404", "NoSuchKey", "NotFound", "ResourceNotFoundException"} or (
        code == "ValidationException"
        and any(t in _message(exc).lower() for t in ("could not find", "does not exist"))
    )


def call(action: str, fn: Callable[..., T], region: str | None = None, **kwargs: Any) -> T:
    """Run one AWS call; a failure becomes one `AWSError` naming `action` and the fix."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise explain(exc, action, region) from None


def find(action: str, fn: Callable[..., T], region: str | None = None, **kwargs: Any) -> T | None:
    """Like `call`, but "not found" is None instead of an error."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise explain(exc, action, region) from None
    except BotoCoreError as exc:
        raise explain(exc, action, region) from None


def require_bucket(params: Params, s3: Any, root: Path = Path(".")) -> str:
    """The bucket (aws.bucket or DVC remote `s3`), checked to exist, or one line to fix it."""
    from botocore.exceptions import BotoCoreError, ClientError

    from itsacat.aws.bootstrap import resolve_bucket

    bucket = resolve_bucket(params.aws, root)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
            raise AWSError(
                f"bucket {bucket!r} does not exist; create it with `itsacat aws bootstrap`, "
                "or fix aws.bucket in params.yaml (or the s3 remote in .dvc/config)"
            ) from None
        raise explain(exc, f"checking bucket {bucket}", params.aws.region) from None
    except BotoCoreError as exc:
        raise explain(exc, f"checking bucket {bucket}", params.aws.region) from None
    return bucket


def require_role(arn: str, key: str) -> str:
    """A role ARN the config must supply for this target (its format is checked at load)."""
    if not arn:
        raise AWSError(
            f"{key} is empty; set it in params.yaml to the IAM role ARN the service assumes "
            "(README: AWS)"
        )
    return arn


def require_alarms(cloudwatch: Any, names: tuple[str, ...], key: str) -> None:
    """Every alarm a rollback depends on must exist, or the guard would silently be off."""
    if not names:
        return
    found = call("reading CloudWatch alarms", cloudwatch.describe_alarms, AlarmNames=list(names))
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
    found = call("reading CloudWatch alarms", cloudwatch.describe_alarms, AlarmNames=names)
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
    """Call `read` until `done`, logging each new state and the time waited so far."""
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
                "console (and its CloudWatch logs), or raise the timeout in params.yaml"
            )
        time.sleep(poll_s)


def notify(params: Params, event: str, message: str, **details: Any) -> None:
    """Tell the configured notifier; a bad notifier setting is logged, never fails a deploy."""
    from itsacat.aws.notify import notify as send

    try:
        send(event, message, params.notify, **details)
    except ItsacatError as exc:
        log.warning("notification %s not sent: %s", event, exc)
