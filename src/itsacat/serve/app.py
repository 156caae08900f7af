"""The HTTP app: a framework-free ASGI application around one `Predictor`.

    GET  /ping          200 {"status": "ok", ...} once the model is loaded (503 before)
    POST /invocations   a photo, an .npy array or JSON in (see `codec`), JSON out
    GET  /              the page for people (`page.PAGE_HTML`)

It follows SageMaker's inference-container contract, so the same app runs locally, in a
bring-your-own container, or anywhere that speaks HTTP. Run it with `itsacat serve`
(`server.py`), which puts it in uvicorn worker processes.

Why it never starves /ping: /ping and / are answered on the event loop; decoding and the
forward pass run in a small thread pool (Pillow and numpy release the GIL while they work),
and at most `max_inflight` requests per worker hold a body in memory at once: the rest
wait, unread, in the kernel's socket buffers. A request holds its slot for at most
`body_timeout` seconds while its body arrives, so clients that send headers and stall cannot
keep the slots (they get a 408 and the connection is closed). Only bodies that cannot cost
more than a millisecond or two (a JPEG or .npy under 64 KB, see `_cheap`) are classified on
the loop itself: for them the hop to a thread cost more CPU than the work (0.55 vs 0.9 ms of
server CPU per 64×64 JPEG in bench/serve_load.py). Memory per worker is therefore bounded by
`max_inflight × max_body` for the bodies, plus what `threads` decodes (and one inline) hold
at once: at most about 200 MB each, for an image decoded whole (a PNG, GIF… or a progressive
JPEG, all held under 25 MP by `data.decode_image`); a baseline JPEG streams at 1/8 scale.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from itsacat.errors import ItsacatError
from itsacat.predict import Predictor
from itsacat.serve.codec import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    NPY_TYPE,
    RequestError,
    decode_request,
    encode_response,
    error_body,
    media_type,
    negotiate,
    wants_trace,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# `itsacat serve` hands its settings to each uvicorn worker process through these.
ENV_MODEL_DIR = "ITSACAT_SERVE_MODEL_DIR"
ENV_THREADS = "ITSACAT_SERVE_THREADS"
ENV_MAX_BODY = "ITSACAT_SERVE_MAX_BODY"
ENV_INLINE = "ITSACAT_SERVE_INLINE_BYTES"
# Bodies this small that `_cheap` vouches for are classified on the event loop itself.
INLINE_BYTES = 64 * 1024
# Seconds a request may take to deliver its body once it holds a slot: 16 MB at ~0.5 MB/s.
BODY_TIMEOUT_S = 30.0
# Blocks up to this size are reused from the heap; free heap space over _TRIM_BYTES goes back.
_MMAP_BYTES = 8 * 1024 * 1024
_TRIM_BYTES = 32 * 1024 * 1024

_PAGE_CSP = (
    "default-src 'none'; img-src blob: data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


class ServeApp:
    """The ASGI app. `predictor` is loaded before the app is built (see `app_from_env`)."""

    def __init__(
        self,
        predictor: Predictor | None,
        *,
        threads: int = 2,
        max_body: int = MAX_BODY_BYTES,
        max_batch: int = MAX_BATCH,
        max_inflight: int | None = None,
        inline_bytes: int = INLINE_BYTES,
        body_timeout: float = BODY_TIMEOUT_S,
    ) -> None:
        self.predictor = predictor
        self.max_body = min(max_body, MAX_BODY_BYTES)
        self.max_batch = max_batch
        self.threads = threads
        self.max_inflight = max_inflight or 4 * threads
        self.inline_bytes = inline_bytes
        self.body_timeout = body_timeout
        self._pool: ThreadPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._page: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except Exception:  # the outermost layer: log it, answer 500, keep serving
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            await _respond(send, 500, error_body("internal server error; see the log", 500))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                await _method_not_allowed(send, "POST")
                return
            await self._invocations(scope, receive, send)
        elif path == "/ping":
            if method not in ("GET", "HEAD"):
                await _method_not_allowed(send, "GET")
                return
            if self.predictor is None:
                await _respond(send, 503, error_body("the model is still loading", 503))
                return
            body = b'{"status":"ok","model_version":"' + self.predictor.version.encode() + b'"}'
            await _respond(send, 200, body, head=method == "HEAD")
        elif path in ("/", "/index.html"):
            if method not in ("GET", "HEAD"):
                await _method_not_allowed(send, "GET")
                return
            if self._page is None:
                from itsacat.serve.page import PAGE_HTML

                self._page = PAGE_HTML.encode()
            await _respond(
                send,
                200,
                self._page,
                content_type=b"text/html; charset=utf-8",
                extra=[(b"content-security-policy", _PAGE_CSP.encode())],
                head=method == "HEAD",
            )
        else:
            await _respond(
                send,
                404,
                error_body(f"no such path {path!r}; use POST /invocations or GET /ping", 404),
            )

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        try:
            negotiate(headers.get("accept"))
            self._check_length(headers)
        except RequestError as exc:
            # Refused before reading the body: close, so the rest of it is never read.
            await _respond(send, exc.status, error_body(str(exc), exc.status), close=True)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_inflight)
        async with self._slots:
            try:
                body = await _within(self.body_timeout, self._read_body(receive))
            except asyncio.TimeoutError:  # a stalled upload gives its slot back
                message = (
                    f"the body did not arrive within {self.body_timeout:g} s; send the whole "
                    "body at once"
                )
                await _respond(send, 408, error_body(message, 408), close=True)
                return
            except RequestError as exc:
                await _respond(send, exc.status, error_body(str(exc), exc.status), close=True)
                return
            trace = wants_trace(
                scope.get("query_string", b"").decode("latin-1"),
                headers.get("x-amzn-sagemaker-custom-attributes"),
            )
            ctype = headers.get("content-type")
            if self.inline_bytes and _cheap(body, ctype, self.inline_bytes):
                status, out = self.handle(body, ctype, trace)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="predict")
                loop = asyncio.get_running_loop()
                status, out = await loop.run_in_executor(
                    self._pool, self.handle, body, ctype, trace
                )
        await _respond(send, status, out)

    def handle(self, body: bytes, content_type: str | None, trace: bool) -> tuple[int, bytes]:
        """Body → (status, JSON). Runs in the pool; every user mistake becomes a 4xx."""
        if self.predictor is None:
            return 503, error_body("the model is still loading; retry shortly", 503)
        try:
            request = decode_request(body, content_type, trace, self.max_batch)
            predictions = self.predictor.predict_images(request.images, trace=request.trace)
            return 200, encode_response(predictions, request.batch)
        except RequestError as exc:
            return exc.status, error_body(str(exc), exc.status)
        except ItsacatError as exc:
            return 400, error_body(str(exc), 400)
        except MemoryError:
            log.error("out of memory on a %d-byte %s body", len(body), content_type)
            return 503, error_body("the server is out of memory; retry later", 503)

    def _check_length(self, headers: dict[str, str]) -> None:
        raw = headers.get("content-length")
        if raw is None:
            return
        try:
            length = int(raw)
        except ValueError:
            raise RequestError(f"Content-Length {raw!r} is not a number") from None
        if length > self.max_body:
            raise RequestError(
                f"the body is {length:,} bytes, more than the {self.max_body:,} allowed; "
                "send one photo (a JPEG of a few MB) or a smaller batch",
                413,
            )

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError("the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise RequestError(
                    f"the body is more than the {self.max_body:,} bytes allowed; send one "
                    "photo or a smaller batch",
                    413,
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _within(seconds: float, work: Coroutine[Any, Any, bytes]) -> bytes:
    """`await work`, or `asyncio.TimeoutError` after `seconds`. On Python 3.11+ a timer on
    the running task: `wait_for` would run `work` as a task of its own, and that extra hop
    through the event loop per request cut small-JPEG throughput by a sixth or more (A/B,
    bench/serve_load.py)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await work
    return await asyncio.wait_for(work, seconds)  # pragma: no cover (Python 3.10)


def _cheap(body: bytes, content_type: str | None, limit: int) -> bool:
    """Whether a body is certain to cost well under a millisecond or two to classify.

    Small JPEGs qualify (decoded at 1/8 scale, their cost follows their compressed size),
    as do small .npy bodies. Small PNGs, GIFs… do not: a few KB of PNG can inflate to
    millions of pixels. Nor does JSON, whatever its size: it may hold such a PNG in base64
    (3 KB of palette PNG decodes to 25 MP in 0.6 s).
    """
    if len(body) > limit:
        return False
    return media_type(content_type) == NPY_TYPE or body[:3] == b"\xff\xd8\xff"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
    close: bool = False,
    head: bool = False,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _method_not_allowed(send: Send, allowed: str) -> None:
    await _respond(
        send,
        405,
        error_body(f"method not allowed; use {allowed}", 405),
        extra=[(b"allow", allowed.encode())],
    )


def _keep_freed_bodies() -> None:
    """Let glibc keep freed photo-sized blocks for the next request instead of unmapping them.

    By default glibc returns a freed block over ~128 KB (or a heap top that grew past its
    trim threshold) to the kernel, so the next 1.4 MB body and its copies fault their pages
    back in, zeroed: 30–120 page faults, a few hundred µs of CPU per full-size photo in
    bench/serve_load.py. With these thresholds a worker reuses that memory. Memory stays
    bounded: bodies over `_MMAP_BYTES` still get their own mapping, returned when freed,
    and each heap gives back free space over `_TRIM_BYTES`. No-op off glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the libc this process runs on
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    if not (mallopt(m_mmap_threshold, _MMAP_BYTES) and mallopt(m_trim_threshold, _TRIM_BYTES)):
        log.warning("mallopt refused the thresholds; each large body will fault in its pages")


def app_from_env() -> ServeApp:
    """The uvicorn factory: load the model named by the environment, then build the app.

    Each worker process calls this before it accepts a connection, so a worker answers
    /ping only once its model is loaded.
    """
    model_dir = os.environ.get(ENV_MODEL_DIR)
    if not model_dir:
        raise ItsacatError(f"{ENV_MODEL_DIR} is not set; start the server with `itsacat serve`")
    predictor = Predictor.load(Path(model_dir))
    log.info("worker %d loaded model %s from %s", os.getpid(), predictor.version, model_dir)
    _keep_freed_bodies()
    return ServeApp(
        predictor,
        threads=int(os.environ.get(ENV_THREADS, "2")),
        max_body=int(os.environ.get(ENV_MAX_BODY, str(MAX_BODY_BYTES))),
        inline_bytes=int(os.environ.get(ENV_INLINE, str(INLINE_BYTES))),
    )
