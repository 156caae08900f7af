"""Notifications through moto's SNS (read back from a subscribed SQS queue) and a real
webhook server on 127.0.0.1; bad targets are refused, failed deliveries only warn."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from itsacat.aws.clients import client
from itsacat.aws.notify import ENV_SNS, ENV_WEBHOOK, notify
from itsacat.config import NotifyParams
from itsacat.errors import ConfigError


class _Hook:
    """A webhook receiver: records JSON bodies, answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[_Hook]:
    h = _Hook()
    yield h
    h.close()


@pytest.fixture
def failing_hook() -> Iterator[_Hook]:
    h = _Hook(status=500)
    yield h
    h.close()


def _topic_with_queue() -> tuple[str, Any, str]:
    sns, sqs = client("sns", "us-east-1"), client("sqs", "us-east-1")
    topic = sns.create_topic(Name="itsacat-events")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="itsacat-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, sqs, queue_url


def _received(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [json.loads(json.loads(m["Body"])["Message"]) for m in msgs.get("Messages", [])]


@pytest.mark.aws
def test_sns_message_reaches_a_subscribed_queue(aws_env: str) -> None:
    topic, sqs, queue_url = _topic_with_queue()
    notify(
        "deploy_succeeded",
        "endpoint itsacat serves 1a2b",
        NotifyParams(sns_topic_arn=topic),
        version="1a2b",
        target="sagemaker",
    )
    (body,) = _received(sqs, queue_url)
    assert body["event"] == "deploy_succeeded"
    assert body["message"] == "endpoint itsacat serves 1a2b"
    assert body["details"] == {"version": "1a2b", "target": "sagemaker"}


@pytest.mark.aws
def test_environment_names_the_topic_and_the_webhook(
    aws_env: str, hook: _Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, sqs, queue_url = _topic_with_queue()
    monkeypatch.setenv(ENV_SNS, topic)
    monkeypatch.setenv(ENV_WEBHOOK, hook.url)
    notify("rollback", "smoke test failed; back to v1", NotifyParams())
    assert [b["event"] for b in _received(sqs, queue_url)] == ["rollback"]
    assert [b["event"] for b in hook.bodies] == ["rollback"]
    assert hook.bodies[0]["text"] == "itsacat rollback: smoke test failed; back to v1"


def test_webhook_gets_the_json_body(hook: _Hook) -> None:
    notify("training_ended", "trained 1a2b", NotifyParams(webhook_url=hook.url), seconds=1.5)
    assert hook.bodies == [
        {
            "text": "itsacat training_ended: trained 1a2b",
            "event": "training_ended",
            "message": "trained 1a2b",
            "details": {"seconds": 1.5},
        }
    ]


@pytest.mark.aws
def test_failed_deliveries_only_warn(
    aws_env: str, failing_hook: _Hook, caplog: pytest.LogCaptureFixture
) -> None:
    missing_topic = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    with caplog.at_level(logging.WARNING):
        notify(
            "rollback", "x", NotifyParams(sns_topic_arn=missing_topic, webhook_url=failing_hook.url)
        )
        notify("rollback", "x", NotifyParams(webhook_url="http://127.0.0.1:9/closed", timeout_s=2))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "no-such-topic" in warnings[0]
    assert "500" in warnings[1]
    assert "127.0.0.1:9" in warnings[2]
    assert len(failing_hook.bodies) == 1  # it was tried


@pytest.mark.parametrize(
    ("params", "env", "needle"),
    [
        (NotifyParams(sns_topic_arn="arn:aws:sns:topic"), {}, "notify.sns_topic_arn"),
        (NotifyParams(webhook_url="hooks.example.com/x"), {}, "notify.webhook_url"),
        (NotifyParams(), {ENV_SNS: "my-topic"}, ENV_SNS),
        (NotifyParams(), {ENV_WEBHOOK: "ftp://x"}, "'ftp://x'"),
    ],
)
def test_malformed_targets_raise_config_error(
    params: NotifyParams, env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match="must be") as info:
        notify("rollback", "x", params, environ=env)
    assert needle in str(info.value)
