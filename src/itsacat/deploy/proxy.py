"""The local endpoint's front proxy: a stable port whose backend can change without a drop.

    python -m itsacat.deploy.proxy --port 8080 --control .itsacat/endpoint/control.sock

`itsacat deploy --target local` starts it once and leaves it running. Clients talk to the
stable port; every request is forwarded to the active backend (an `itsacat serve` on a
private port). The deploy command talks to the proxy over a Unix socket in the state
folder (owner-only, never on the network):

    {"op": "switch", "port": 40123, "version": "…", "drain_timeout": 30}
        → the next request goes to the new backend; the answer comes once every request
          already sent to the old backend has finished (or the timeout passed)
    {"op": "status"}   → the backend, requests in flight per backend, requests served
    {"op": "stop"}     → finish in-flight requests and exit (SIGTERM does the same)

Switching is one assignment under a lock, so each request goes wholly to the old or the
new backend. A request whose connection to the backend fails before any answer arrives
(a stale keep-alive connection, a backend that just closed its socket) is retried on a
fresh connection to the backend active at that moment; /invocations is a pure function
of the body, so a retry cannot do anything twice.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
MAX_BODY = 16 * 1024 * 1024 + 1  # the server's own limit answers 413 with its own message
RETRIES = 3
RETRYABLE = (OSError, http.client.HTTPException)  # refused, reset, stale keep-alive


@dataclass(frozen=True)
class Backend:
    port: int
    version: str


class Router:
    """Which backend is active, and how many requests each backend has in flight."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.backend: Backend | None = None
        self.inflight: dict[int, int] = {}
        self.served = 0

    def acquire(self) -> Backend | None:
        with self._lock:
            backend = self.backend
            if backend is not None:
                self.inflight[backend.port] = self.inflight.get(backend.port, 0) + 1
            return backend

    def release(self, backend: Backend) -> None:
        with self._lock:
            self.inflight[backend.port] -= 1
            self.served += 1
            if not self.inflight[backend.port]:
                del self.inflight[backend.port]
            self._lock.notify_all()

    def switch(self, new: Backend, drain_timeout: float) -> tuple[Backend | None, bool]:
        """Point new requests at `new`; wait for the old backend's requests to finish."""
        with self._lock:
            old, self.backend = self.backend, new
            if old is None or old.port == new.port:
                return old, True
            drained = self._lock.wait_for(
                lambda: not self.inflight.get(old.port), timeout=drain_timeout
            )
            return old, drained

    def status(self) -> dict[str, Any]:
        with self._lock:
            backend = self.backend
            return {
                "backend": None if backend is None else backend.__dict__,
                "inflight": {str(k): v for k, v in self.inflight.items()},
                "served": self.served,
            }


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive client connection is closed after this long
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._reply(411, "send a Content-Length body; chunked uploads are not supported")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._reply(400, "Content-Length is not a number")
            return
        if length > MAX_BODY:
            self.close_connection = True
            self._reply(413, f"the body is {length:,} bytes, more than the endpoint accepts")
            return
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in range(RETRIES):
            backend = self.server.router.acquire()
            if backend is None:
                self._reply(503, "no model is deployed here yet; run `itsacat deploy`")
                return
            try:
                status, reason, out_headers, data = self._send(backend, headers, body)
            except RETRYABLE as exc:
                self.server.drop_connection(backend.port)
                log.info("backend %s: %s (attempt %d)", backend.port, exc, attempt + 1)
                continue
            finally:
                self.server.router.release(backend)
            self.send_response(status, reason)
            for k, v in out_headers:
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self._reply(502, "the model server did not answer; see `itsacat endpoint status`")

    def _send(
        self, backend: Backend, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = self.server.connection(backend.port)
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            self.server.drop_connection(backend.port)
        return response.status, response.reason, response.getheaders(), data

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _forward


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up a stop
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        super().__init__(address, ProxyHandler)
        self.router = router
        self._local = threading.local()

    def connection(self, port: int) -> http.client.HTTPConnection:
        """This thread's keep-alive connection to the backend on `port`."""
        pool: dict[int, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        if port not in pool:
            pool[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        return pool[port]

    def drop_connection(self, port: int) -> None:
        pool = self._local.__dict__.get("pool", {})
        conn = pool.pop(port, None)
        if conn is not None:
            conn.close()


class ControlHandler(socketserver.StreamRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        try:
            request = json.loads(self.rfile.readline() or b"{}")
            answer = self.server.dispatch(request)
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"ok": False, "error": f"bad control request: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, router: Router, on_stop: Any) -> None:
        path.unlink(missing_ok=True)
        old = os.umask(0o077)  # owner-only socket
        try:
            super().__init__(str(path), ControlHandler)
        finally:
            os.umask(old)
        self.router = router
        self.on_stop = on_stop

    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "pid": os.getpid(), **self.router.status()}
        if op == "switch":
            new = Backend(int(request["port"]), str(request["version"]))
            old, drained = self.router.switch(new, float(request.get("drain_timeout", 30)))
            log.info("switched to %s (port %d); old drained: %s", new.version, new.port, drained)
            return {
                "ok": True,
                "previous": None if old is None else old.__dict__,
                "drained": drained,
            }
        if op == "stop":
            threading.Thread(target=self.on_stop, daemon=True).start()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}


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


def run(host: str, port: int, control_path: Path) -> int:
    """Serve until SIGTERM/SIGINT or a stop request; in-flight requests finish first."""
    router = Router()
    try:
        server = ProxyServer((host, port), router)
    except OSError as exc:
        print(
            f"itsacat: error: cannot listen on {host}:{port} ({exc.strerror}); another program "
            "uses it: stop it, or set deploy.local.port in params.yaml",
            file=sys.stderr,
        )
        return 1
    done = threading.Event()

    def stop(*_: Any) -> None:
        done.set()

    ctl = ControlServer(control_path, router, stop)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    ).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("proxy on http://%s:%d, control %s", host, port, control_path)
    while not done.wait(0.5):
        pass
    server.shutdown()  # stop accepting, then let the requests in flight finish
    server.server_close()
    deadline = time.monotonic() + 30
    while router.status()["inflight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    ctl.shutdown()
    ctl.server_close()
    control_path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m itsacat.deploy.proxy")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(args.host, args.port, args.control)


if __name__ == "__main__":
    raise SystemExit(main())
