"""Notifications: an SNS topic and/or a webhook hear when training ends, a deploy succeeds
or a rollback happens.

    notify("training_ended", "model 1a2b… trained in 14 s", params.notify, version="1a2b…")

Targets come from params.yaml `notify:` and, for CI secrets, from the environment
(`ITSACAT_NOTIFY_SNS_TOPIC_ARN`, `ITSACAT_NOTIFY_WEBHOOK_URL`; they win over params). A
malformed ARN or URL raises ConfigError before anything is sent; a delivery that fails
(network, permissions, a 500) only logs a warning: a notification never fails a training
run or a deploy.

The webhook gets a JSON POST `{"text", "event", "message", "details"}`; `text` makes it
work as a Slack or Teams incoming webhook as is.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from itsacat.config import NotifyParams

log = logging.getLogger(__name__)

EVENTS = ("training_ended", "tuning_ended", "deploy_succeeded", "rollback")
ENV_SNS = "ITSACAT_NOTIFY_SNS_TOPIC_ARN"
ENV_WEBHOOK = "ITSACAT_NOTIFY_WEBHOOK_URL"


def resolve(params: NotifyParams, environ: Mapping[str, str] | None = None) -> NotifyParams:
    """`params` with the environment's targets laid over it, validated (ConfigError)."""
    env = os.environ if environ is None else environ
    resolved = replace(
        params,
        sns_topic_arn=env.get(ENV_SNS, "").strip() or params.sns_topic_arn,
        webhook_url=env.get(ENV_WEBHOOK, "").strip() or params.webhook_url,
    )
    source = "params.yaml"
    if env.get(ENV_SNS, "").strip() or env.get(ENV_WEBHOOK, "").strip():
        source = f"params.yaml or the {ENV_SNS}/{ENV_WEBHOOK} environment variables"
    resolved.check(source)
    return resolved


def payload(event: str, message: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """The one message body both channels send."""
    return {
        "text": f"itsacat {event}: {message}",
        "event": event,
        "message": message,
        "details": {k: v for k, v in details.items()},
    }


def _send_sns(topic_arn: str, body: dict[str, Any], sns: Any) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    if sns is None:
        from itsacat.aws.clients import client

        sns = client("sns", topic_arn.split(":")[3])
    try:
        sns.publish(
            TopicArn=topic_arn,
            Subject=body["text"][:99],
            Message=json.dumps(body, default=str),
            MessageAttributes={"event": {"DataType": "String", "StringValue": body["event"]}},
        )
    except (BotoCoreError, ClientError) as exc:
        from itsacat.aws.clients import explain

        log.warning("notification not sent to %s: %s", topic_arn, explain(exc, "publishing"))
    else:
        log.info("notified %s (%s)", topic_arn, body["event"])


def _send_webhook(url: str, body: dict[str, Any], timeout_s: float) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "itsacat-notify"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        log.warning("notification not sent to webhook %s: %s", url, reason)
    else:
        log.info("notified webhook %s (%s)", url, body["event"])


def notify(
    event: str,
    message: str,
    params: NotifyParams,
    *,
    sns: Any = None,
    environ: Mapping[str, str] | None = None,
    **details: Any,
) -> None:
    """Tell the configured SNS topic and webhook that `event` happened.

    Raises ConfigError for a malformed target; never raises for a failed delivery.
    `sns` is an SNS client (made here, in the topic's region, when None).
    """
    target = resolve(params, environ)
    if not (target.sns_topic_arn or target.webhook_url):
        log.debug("no notification target configured; %s not sent", event)
        return
    body = payload(event, message, details)
    if target.sns_topic_arn:
        _send_sns(target.sns_topic_arn, body, sns)
    if target.webhook_url:
        _send_webhook(target.webhook_url, body, target.timeout_s)
