"""The local endpoint's front proxy on its own: a real proxy process, small real backends.

The backends here are stdlib HTTP servers that frame their answers each a different way
(Content-Length, chunked, until-close), so every path of the proxy's HTTP/1.1 handling runs.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from itsacat.deploy.proxy import control


class Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    framing = "length"
    name = "a"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps({"backend": self.name, "echo": len(body), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.framing == "length":
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        elif self.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(answer) // 2
            for part in (answer[:half], answer[half:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:  # until close
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer)
            self.close_connection = True


def start_backend(name: str, framing: str) -> ThreadingHTTPServer:
    handler = type(f"Backend{name}", (Backend,), {"name": name, "framing": framing})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, sock = free_port(), tmp_path / "control.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "itsacat.deploy.proxy", "--port", str(port), "--control", str(sock)]
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the proxy did not start"
        time.sleep(0.05)
    yield port, sock
    proc.terminate()
    assert proc.wait(10) == 0


def post(port: int, body: bytes = b"x" * 10, path: str = "/invocations") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body, {"Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_no_backend_yet_is_a_503(proxy):
    port, _ = proxy
    status, body = post(port)
    assert status == 503 and "itsacat deploy" in body["error"]


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_forwards_every_answer_framing_and_switches(proxy, framing):
    port, sock = proxy
    a, b = start_backend("a", framing), start_backend("b", "length")
    control(sock, {"op": "switch", "port": a.server_port, "version": "A"})
    for _ in range(3):  # the same keep-alive path again and again
        assert post(port, b"abc", "/invocations?x=1") == (
            200,
            {"backend": "a", "echo": 3, "path": "/invocations?x=1"},
        )
    answer = control(sock, {"op": "switch", "port": b.server_port, "version": "B"})
    assert answer["ok"] and answer["drained"] and answer["previous"]["version"] == "A"
    assert post(port)[1]["backend"] == "b"
    status = control(sock, {"op": "status"})
    assert status["backend"]["version"] == "B" and status["served"] == 4
    a.shutdown()
    b.shutdown()


def test_chunked_upload_is_refused_with_411(proxy):
    port, sock = proxy
    a = start_backend("a", "length")
    control(sock, {"op": "switch", "port": a.server_port, "version": "A"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/invocations", iter([b"abc"]), {"Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 411
    a.shutdown()


def test_switching_to_no_backend_answers_as_before_the_first_deploy(proxy):
    port, sock = proxy
    before = post(port)
    a = start_backend("a", "length")
    control(sock, {"op": "switch", "port": a.server_port, "version": "A"})
    assert post(port)[1]["backend"] == "a"
    answer = control(sock, {"op": "switch", "port": None})
    assert answer["ok"] and answer["drained"] and answer["previous"]["version"] == "A"
    assert before[0] == 503 and post(port) == before
    assert control(sock, {"op": "status"})["backend"] is None
    a.shutdown()


def test_a_dead_backend_is_a_502_not_a_hang(proxy):
    port, sock = proxy
    control(sock, {"op": "switch", "port": free_port(), "version": "gone"})
    status, body = post(port)
    assert status == 502 and "did not answer" in body["error"]


def _read_answer(stream: Any) -> tuple[bytes, bytes]:
    """One HTTP answer from a socket's binary file: its first line and its body (by
    Content-Length; none for an interim 1xx answer)."""
    first = stream.readline().rstrip(b"\r\n")
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return first, stream.read(length)


def test_expect_100_continue_gets_the_go_ahead_and_one_final_answer(proxy):
    """curl sends `Expect: 100-continue` for bodies over 1 MB (the README's full-size photo):
    the proxy passed the backend's own 100 Continue back as THE answer, and curl hung for
    two minutes, then got an empty reply."""
    port, sock = proxy
    backend = start_backend("a", "length")
    control(sock, {"op": "switch", "port": backend.server_port, "version": "A"})
    body = b"x" * 1_500_000
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head)  # and wait for the go-ahead, as curl does (for a second)
        client.settimeout(0.5)
        assert client.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.settimeout(10)
        client.sendall(body)
        stream = client.makefile("rb")
        first, answer = _read_answer(stream)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert json.loads(answer) == {"backend": "a", "echo": len(body), "path": "/invocations"}
        client.sendall(head + body)  # the same again without waiting, on the same connection
        assert _read_answer(stream) == (b"HTTP/1.1 100 Continue", b"")  # the interim one
        first, answer = _read_answer(stream)
        assert first.startswith(b"HTTP/1.1 200 ") and json.loads(answer)["echo"] == len(body)
    backend.shutdown()


def test_a_body_over_the_limit_gets_413_not_the_go_ahead(proxy):
    port, sock = proxy
    backend = start_backend("a", "length")
    control(sock, {"op": "switch", "port": backend.server_port, "version": "A"})
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 999999999999\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head)
        first, answer = _read_answer(client.makefile("rb"))
    assert first.startswith(b"HTTP/1.1 413 ") and json.loads(answer)["status"] == 413
    backend.shutdown()
