"""The local endpoint's front proxy: a stable port whose backend can change without a drop.

    python -m itsacat.deploy.proxy --port 8080 --control .itsacat/endpoint/control.sock

`itsacat deploy --target local` starts it once and leaves it running. Clients talk to the
stable port; every request is forwarded to the active backend (an `itsacat serve` on a
private port) over pooled keep-alive connections. The deploy command talks to the proxy
over a Unix socket in the state folder (owner-only, never on the network):

    {"op": "switch", "port": 40123, "version": "…", "drain_timeout": 30}
        → the next request goes to the new backend; the answer comes once every request
          already sent to the old backend has finished (or the timeout passed)
    {"op": "switch", "port": null}
        → no backend: new requests get the 503 they got before the first deploy (a first
          deploy undone after its switch leaves nothing serving, and must say so)
    {"op": "status"}   → the backend, requests in flight per backend, requests served
    {"op": "stop"}     → finish in-flight requests and exit (SIGTERM does the same)

One asyncio loop, one thread: switching is a plain assignment between two awaits, so each
request goes wholly to the old or the new backend. A request whose backend connection
fails before the answer's first byte (a stale keep-alive connection, a backend that just
closed its socket) is retried on a fresh connection to the backend active at that moment;
/invocations is a pure function of the body, so a retry cannot do anything twice.

The proxy speaks just enough HTTP/1.1 for the endpoint: Content-Length request bodies
(chunked uploads get 411), keep-alive, and Content-Length, chunked or until-close answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
}
MAX_BODY = 16 * 1024 * 1024 + 1  # the server's own limit answers 413 with its own message
MAX_HEAD = 64 * 1024
IDLE_S = 120.0  # an idle keep-alive client connection is closed after this long
BACKEND_S = 300.0  # the longest a backend may take to answer
RETRIES = 3
POOL = 64  # idle connections kept per backend
POOL_IDLE_S = 4.0  # under uvicorn's 5 s keep-alive, so a pooled connection is rarely stale

Headers = list[tuple[bytes, bytes]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Backend:
    port: int
    version: str


@dataclass
class Router:
    """Which backend is active, requests in flight per backend, idle connections to each."""

    backend: Backend | None = None
    inflight: dict[int, int] = field(default_factory=dict)
    served: int = 0
    idle: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]] = field(
        default_factory=dict
    )
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def acquire(self) -> Backend | None:
        backend = self.backend
        if backend is not None:
            self.inflight[backend.port] = self.inflight.get(backend.port, 0) + 1
        return backend

    async def release(self, backend: Backend) -> None:
        self.inflight[backend.port] -= 1
        self.served += 1
        if not self.inflight[backend.port]:
            del self.inflight[backend.port]
            async with self.changed:
                self.changed.notify_all()

    async def switch(
        self, new: Backend | None, drain_timeout: float
    ) -> tuple[Backend | None, bool]:
        """Point new requests at `new` (None: at nobody, a 503); wait for the old backend's
        requests to finish."""
        old, self.backend = self.backend, new
        if old is None or (new is not None and old.port == new.port):
            return old, True
        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: not self.inflight.get(old.port)),
                    drain_timeout,
                )
            except asyncio.TimeoutError:
                return old, False
        self.drop_idle(old.port)
        return old, True

    def drop_idle(self, port: int) -> None:
        for _, writer, _ in self.idle.pop(port, []):
            writer.close()

    def status(self) -> dict[str, Any]:
        return {
            "backend": None if self.backend is None else self.backend.__dict__,
            "inflight": {str(k): v for k, v in self.inflight.items()},
            "served": self.served,
        }


def parse_head(head: bytes) -> tuple[list[bytes], Headers]:
    """The first line's parts and the header fields of an HTTP/1.x message head."""
    lines = head.split(b"\r\n")
    first = lines[0].split(b" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise HTTPError(400, "malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    return first, headers


def header(headers: Headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def message(first_line: bytes, headers: Headers, body: bytes, keep_alive: bool) -> bytes:
    lines = [first_line]
    lines += [k + b": " + v for k, v in headers if k not in HOP_BY_HOP]
    lines.append(b"content-length: " + str(len(body)).encode())
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def error_response(status: int, text: str, keep_alive: bool) -> bytes:
    reasons = {
        400: b"Bad Request",
        411: b"Length Required",
        413: b"Payload Too Large",
        431: b"Request Header Fields Too Large",
        502: b"Bad Gateway",
        503: b"Service Unavailable",
    }
    body = json.dumps({"error": text, "status": status}).encode()
    first = b"HTTP/1.1 %d %s" % (status, reasons.get(status, b"Error"))
    return message(first, [(b"content-type", b"application/json")], body, keep_alive)


async def read_body(reader: asyncio.StreamReader, headers: Headers, limit: int) -> bytes:
    """A message body by Content-Length or chunked encoding (the caller handles until-close)."""
    if (header(headers, b"transfer-encoding") or b"").lower() == b"chunked":
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = body_length(headers, limit)
    return await reader.readexactly(length) if length else b""


def body_length(headers: Headers, limit: int) -> int:
    """Content-Length, refused (413) over `limit`."""
    text = header(headers, b"content-length") or b"0"
    if not text.isdigit():
        raise HTTPError(400, f"Content-Length must be a whole number, got {text.decode()!r}")
    length = int(text)
    if length > limit:
        raise HTTPError(413, f"the body is {length:,} bytes, more than the endpoint accepts")
    return length


class Proxy:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: requests in turn, while it keeps the connection alive."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keep_alive = True
            while keep_alive:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_S)
                except asyncio.TimeoutError:
                    break
                except asyncio.LimitOverrunError:
                    writer.write(error_response(431, "the request head is too large", False))
                    break
                try:
                    (method, target, version), headers = self._request_line(head)
                    conn = (header(headers, b"connection") or b"").lower()
                    keep_alive = conn != b"close" and (
                        version != b"HTTP/1.0" or conn == b"keep-alive"
                    )
                    if (header(headers, b"transfer-encoding") or b"").lower() == b"chunked":
                        raise HTTPError(
                            411, "send a Content-Length body; chunked uploads are not supported"
                        )
                    if (header(headers, b"expect") or b"").lower() == b"100-continue":
                        # curl asks so for bodies over 1 MB, and waits a second for it; the
                        # proxy reads the body itself, so the backend is not asked again
                        body_length(headers, MAX_BODY)  # a 413 rather than the go-ahead
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        headers = [(k, v) for k, v in headers if k != b"expect"]
                    body = await read_body(reader, headers, MAX_BODY)
                except HTTPError as exc:
                    writer.write(error_response(exc.status, str(exc), False))
                    break
                request = message(method + b" " + target + b" HTTP/1.1", headers, body, True)
                writer.write(await self._forward(request, method, keep_alive))
                await writer.drain()
        with contextlib.suppress(Exception):
            await writer.drain()
            writer.close()

    @staticmethod
    def _request_line(head: bytes) -> tuple[list[bytes], Headers]:
        first, headers = parse_head(head[:-4])
        if len(first) != 3 or not first[2].startswith(b"HTTP/1."):
            raise HTTPError(400, "not an HTTP/1.x request")
        return first, headers

    async def _forward(self, request: bytes, method: bytes, keep_alive: bool) -> bytes:
        for attempt in range(RETRIES):
            backend = self.router.acquire()
            if backend is None:
                return error_response(
                    503, "no model is deployed here yet; run `itsacat deploy`", keep_alive
                )
            try:
                first, headers, body = await asyncio.wait_for(
                    self._exchange(backend, request, method), BACKEND_S
                )
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.TimeoutError,
                ValueError,
                HTTPError,
            ) as exc:
                log.info("backend %d: %r (attempt %d)", backend.port, exc, attempt + 1)
                self.router.drop_idle(backend.port)  # its other pooled connections are suspect
                continue
            finally:
                await self.router.release(backend)
            return message(first, headers, body, keep_alive)
        return error_response(
            502, "the model server did not answer; see `itsacat endpoint status`", keep_alive
        )

    async def _exchange(
        self, backend: Backend, request: bytes, method: bytes
    ) -> tuple[bytes, Headers, bytes]:
        idle = self.router.idle.setdefault(backend.port, [])
        loop = asyncio.get_running_loop()
        while idle and (loop.time() - idle[-1][2] > POOL_IDLE_S or idle[-1][0].at_eof()):
            idle.pop()[1].close()
        if idle:
            reader, writer, _ = idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", backend.port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            writer.write(request)
            await writer.drain()
            while True:  # past interim 1xx answers (a 100 Continue) to the final one
                head = await reader.readuntil(b"\r\n\r\n")
                (_proto, status, *_), headers = parse_head(head[:-4])
                if not status.startswith(b"1"):
                    break
            closing = (header(headers, b"connection") or b"").lower() == b"close"
            if method == b"HEAD" or status in (b"204", b"304"):
                body = b""
            elif (
                header(headers, b"content-length") is None
                and header(headers, b"transfer-encoding") is None
            ):
                body, closing = await reader.read(), True
            else:
                body = await read_body(reader, headers, 1 << 30)
        except BaseException:
            writer.close()
            raise
        if (
            closing
            or self.router.backend is None
            or self.router.backend.port != backend.port
            or len(idle) >= POOL
        ):
            writer.close()
        else:
            idle.append((reader, writer, loop.time()))
        return head.split(b"\r\n", 1)[0], headers, body


async def control_client(
    router: Router, stop: asyncio.Event, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        request = json.loads(await reader.readline() or b"{}")
        op = request.get("op")
        if op == "status":
            answer = {"ok": True, "pid": os.getpid(), **router.status()}
        elif op == "switch":
            port = request["port"]
            new = None if port is None else Backend(int(port), str(request["version"]))
            old, drained = await router.switch(new, float(request.get("drain_timeout", 30)))
            log.info("switched to %s; old drained: %s", new or "no backend", drained)
            answer = {
                "ok": True,
                "previous": None if old is None else old.__dict__,
                "drained": drained,
            }
        elif op == "stop":
            stop.set()
            answer = {"ok": True}
        else:
            answer = {"ok": False, "error": f"unknown op {op!r}"}
    except (ValueError, KeyError, TypeError) as exc:
        answer = {"ok": False, "error": f"bad control request: {exc}"}
    writer.write(json.dumps(answer).encode() + b"\n")
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def control(path: Path, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one control request to the proxy listening on `path`; its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


async def serve(host: str, port: int, control_path: Path) -> int:
    """Serve until SIGTERM/SIGINT or a stop request; in-flight requests finish first."""
    router = Router()
    stop = asyncio.Event()
    try:
        server = await asyncio.start_server(
            Proxy(router).client, host, port, reuse_address=True, limit=MAX_HEAD, backlog=1024
        )
    except OSError as exc:
        print(
            f"itsacat: error: cannot listen on {host}:{port} ({exc.strerror}); another program "
            "uses it: stop it, or set deploy.local.port in params.yaml",
            file=sys.stderr,
        )
        return 1
    control_path.unlink(missing_ok=True)
    old_umask = os.umask(0o077)  # owner-only socket
    try:
        ctl = await asyncio.start_unix_server(
            lambda r, w: control_client(router, stop, r, w), str(control_path)
        )
    finally:
        os.umask(old_umask)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("proxy on http://%s:%d, control %s", host, port, control_path)
    await stop.wait()
    server.close()  # stop accepting; requests in flight finish below
    for _ in range(600):
        if not router.inflight:
            break
        await asyncio.sleep(0.05)
    ctl.close()
    control_path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m itsacat.deploy.proxy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(serve(args.host, args.port, args.control))


if __name__ == "__main__":
    raise SystemExit(main())
