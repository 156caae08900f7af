"""The ASGI app driven through its callable: bodies that never arrive, and which bodies are
classified on the event loop. No sockets: the timing under test is the app's own."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imaging import npy
from itsacat.predict import Predictor
from itsacat.serve.app import ServeApp

PIXELS = np.random.default_rng(11).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.load(tiny_model_dir)


@pytest.fixture
def make_app(predictor: Predictor) -> Iterator[Any]:
    """`make_app(**kwargs)`: a `ServeApp` whose thread pool is shut down after the test."""
    apps: list[ServeApp] = []

    def make(**kwargs: Any) -> ServeApp:
        apps.append(ServeApp(predictor, **kwargs))
        return apps[-1]

    yield make
    for app in apps:
        if app._pool is not None:
            app._pool.shutdown(wait=True)


async def invoke(
    app: ServeApp, parts: list[bytes], ctype: str, *, stall: bool = False
) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    """POST /invocations as uvicorn would deliver it; `stall`: the rest of the body never comes."""
    pending = list(parts)

    async def receive() -> dict[str, Any]:
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending) or stall}
        await asyncio.Event().wait()  # a client that sent its headers and went quiet
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "query_string": b"",
        "headers": [(b"content-type", ctype.encode())],
    }
    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), json.loads(body["body"])


def test_stalled_uploads_get_408_and_free_their_slots(make_app: Any) -> None:
    app = make_app(max_inflight=2, body_timeout=0.2)

    async def scenario() -> tuple[list[Any], Any]:
        stalled = [
            asyncio.create_task(invoke(app, [b"\xff\xd8\xff"], "image/jpeg", stall=True))
            for _ in range(app.max_inflight)
        ]
        await asyncio.sleep(0.05)  # every slot is now held by a client that went quiet
        # Without a bound on the body's time this request would wait for a slot forever.
        ok = await asyncio.wait_for(invoke(app, [npy(PIXELS)], "application/x-npy"), 10)
        return await asyncio.gather(*stalled), ok

    stalled, (status, _, answer) = asyncio.run(scenario())
    assert status == 200 and "probability" in answer
    for status, headers, answer in stalled:
        assert status == 408
        assert headers[b"connection"] == b"close"
        assert answer["error"] == (
            "the body did not arrive within 0.2 s; send the whole body at once"
        )


def test_a_slow_but_steady_body_within_the_time_is_served(make_app: Any) -> None:
    app = make_app(body_timeout=5)
    body = npy(PIXELS)
    status, _, answer = asyncio.run(
        invoke(app, [body[i : i + 1000] for i in range(0, len(body), 1000)], "application/x-npy")
    )
    assert status == 200 and "probability" in answer


def test_json_is_classified_in_the_pool_and_small_npy_on_the_loop(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A few KB of JSON can hold a base64 PNG that inflates to millions of pixels.
    app = make_app()
    threads: list[str] = []
    real_handle = app.handle

    def spy(*args: Any) -> tuple[int, bytes]:
        threads.append(threading.current_thread().name)
        return real_handle(*args)

    monkeypatch.setattr(app, "handle", spy)
    for body, ctype in [
        (json.dumps(PIXELS.tolist()).encode(), "application/json"),
        (npy(PIXELS), "application/x-npy"),
    ]:
        status, _, _ = asyncio.run(invoke(app, [body], ctype))
        assert status == 200
    assert threads[0].startswith("predict"), threads
    assert threads[1] == threading.current_thread().name, threads
