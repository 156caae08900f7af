"""The local endpoint, live: `itsacat serve` in a child process on 127.0.0.1, real HTTP."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from imaging import encode, npy
from itsacat.predict import Predictor
from itsacat.serve.process import ServerProcess

RNG = np.random.default_rng(3)
PIXELS = RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with ServerProcess.start(tiny_model_dir, workers=2, log_path=log) as proc:
        yield proc.url


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.load(tiny_model_dir)


def post(url: str, body: bytes, ctype: str | None, **kw: object) -> requests.Response:
    headers = {"Content-Type": ctype} if ctype else {}
    headers.update(kw.pop("headers", {}))  # type: ignore[arg-type]
    return requests.post(url + "/invocations", data=body, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def test_ping_answers_with_the_model_version(server: str, predictor: Predictor) -> None:
    r = requests.get(server + "/ping", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model_version": predictor.version}
    assert requests.head(server + "/ping", timeout=5).status_code == 200


def test_a_real_photo_gets_the_same_answer_as_the_predictor(
    server: str, predictor: Predictor, photos: list[Path]
) -> None:
    for photo in photos:
        data = photo.read_bytes()
        r = post(server, data, "image/jpeg")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == predictor.predict_bytes(data).to_json()


def test_every_content_type(server: str, predictor: Predictor) -> None:
    png = encode(Image.fromarray(PIXELS), "PNG")
    expected = predictor.predict_images(PIXELS[None])[0].to_json()
    b64 = base64.b64encode(png).decode()
    batch = np.stack([PIXELS, PIXELS[::-1]])
    expected_batch = {"predictions": [p.to_json() for p in predictor.predict_images(batch)]}
    for body, ctype, want in [
        (png, "image/png", expected),
        (png, "application/x-image", expected),
        (npy(PIXELS), "application/x-npy", expected),
        (json.dumps(PIXELS.tolist()).encode(), "application/json", expected),
        (json.dumps({"image": b64}).encode(), "application/json", expected),
        (npy(batch), "application/x-npy", expected_batch),
        (json.dumps(batch.tolist()).encode(), "application/json", expected_batch),
        (
            json.dumps(
                [b64, base64.b64encode(encode(Image.fromarray(batch[1]), "PNG")).decode()]
            ).encode(),
            "application/json",
            expected_batch,
        ),
    ]:
        r = post(server, body, ctype)
        assert r.status_code == 200, (ctype, r.text)
        assert r.json() == want, ctype


def test_trace_on_request(server: str, predictor: Predictor) -> None:
    body = npy(PIXELS)
    for kw in (
        {"params": {"trace": "1"}},
        {"headers": {"X-Amzn-SageMaker-Custom-Attributes": "trace=true"}},
    ):
        r = post(server, body, "application/x-npy", **kw)
        trace = r.json()["trace"]
        assert [len(t["outputs"]) for t in trace] == predictor.model.network.sizes[1:]
        assert trace[-1]["outputs"][0] == pytest.approx(r.json()["probability"], abs=1e-6)
    assert "trace" not in post(server, body, "application/x-npy").json()


@pytest.mark.parametrize(
    ("body", "ctype", "headers", "status", "words"),
    [
        (b"", "image/jpeg", {}, 400, "empty"),
        (b"text, not a picture", "image/png", {}, 400, "not a JPEG, PNG"),
        (encode(Image.new("RGB", (1, 1)), "PNG"), "image/png", {}, 400, "too small"),
        (encode(Image.new("1", (20_000, 20_000)), "PNG"), "image/png", {}, 400, "pixels"),
        (b"[[1, 2, 3]]", "application/json", {}, 400, "shape"),
        (b"[NaN]", "application/json", {}, 400, "NaN"),
        (b"<xml/>", "application/xml", {}, 415, "unsupported content type"),
        (npy(PIXELS), "application/x-npy", {"Accept": "text/csv"}, 406, "application/json"),
        (b'"http://169.254.169.254/latest/meta-data"', "application/json", {}, 400, "URL"),
    ],
)
def test_bad_input_is_a_4xx_json_error(
    server: str, body: bytes, ctype: str, headers: dict[str, str], status: int, words: str
) -> None:
    r = post(server, body, ctype, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]
    assert requests.get(server + "/ping", timeout=5).status_code == 200


def test_truncated_jpeg(server: str, photos: list[Path]) -> None:
    data = photos[0].read_bytes()
    r = post(server, data[: len(data) // 3], "image/jpeg")
    assert r.status_code == 400
    assert "not a readable image" in r.json()["error"]


def _raw_request(url: str, head: bytes, body_parts: Iterator[bytes]) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        try:
            for part in body_parts:
                s.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the rest, as it should
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def test_50_mb_body_is_refused_without_reading_it(server: str) -> None:
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 52428800\r\n\r\n"
    )
    # Only 64 KB of the promised 50 MB are ever sent: the answer must come anyway.
    reply = _raw_request(server, head, iter([b"\xff" * 65536]))
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"52,428,800 bytes" in reply


def test_chunked_body_over_the_limit_is_413(server: str) -> None:
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"100000\r\n" + b"\0" * 0x100000 + b"\r\n"  # 1 MiB chunks, 20 of them
    reply = _raw_request(server, head, iter([chunk] * 20))
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_unknown_paths_and_methods(server: str) -> None:
    assert (
        requests.get(server + "/image?image=http://example.com/x.jpg", timeout=5).status_code == 404
    )
    r = requests.get(server + "/invocations", timeout=5)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert requests.post(server + "/ping", timeout=5).status_code == 405


def test_page_is_served_with_a_strict_content_security_policy(server: str) -> None:
    r = requests.get(server + "/", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert 'type="file"' in r.text and "/invocations" in r.text
    # Nothing from the internet: no external scripts, styles, images or fetches.
    for pattern in ('src="http', "href=", "<link", "<script src", "https://", 'fetch("http'):
        assert pattern not in r.text, pattern


def test_many_clients_at_once(server: str, predictor: Predictor, photos: list[Path]) -> None:
    small = npy(PIXELS)
    big = photos[0].read_bytes()
    want_small = predictor.predict_images(PIXELS[None])[0].to_json()
    want_big = predictor.predict_bytes(big).to_json()

    def one(i: int) -> bool:
        with requests.Session() as s:
            for j in range(5):
                is_big = (i + j) % 4 == 0
                r = s.post(
                    server + "/invocations",
                    data=big if is_big else small,
                    headers={"Content-Type": "image/jpeg" if is_big else "application/x-npy"},
                    timeout=60,
                )
                if r.status_code != 200 or r.json() != (want_big if is_big else want_small):
                    return False
        return True

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(one, range(32)))


def test_ping_is_answered_while_photos_are_being_classified(
    server: str, photos: list[Path]
) -> None:
    big = max(photos, key=lambda p: p.stat().st_size).read_bytes()
    pending = 32
    lock = threading.Lock()
    pending_when_pinged: list[int] = []

    def classify() -> int:
        nonlocal pending
        r = post(server, big, "image/jpeg")
        with lock:
            pending -= 1
        return r.status_code

    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(classify) for _ in range(32)]
        time.sleep(0.05)  # let the photos reach the server
        for _ in range(3):
            assert requests.get(server + "/ping", timeout=30).status_code == 200
            with lock:
                pending_when_pinged.append(pending)
        assert all(f.result() == 200 for f in futures)
    # /ping came back while photos were still queued or being decoded.
    assert pending_when_pinged[0] > 0, pending_when_pinged


def _worker_rss_kb(server_pid: int) -> int:
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    total = 0
    for pid in [server_pid, *map(int, children)]:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def test_memory_stays_bounded_under_hostile_images(tiny_model_dir: Path) -> None:
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")
    large = encode(Image.new("RGB", (4000, 4000), (200, 100, 50)), "PNG")  # 16 MP, allowed
    with ServerProcess.start(tiny_model_dir, workers=1) as proc:
        post(proc.url, large, "image/png")  # the first big decode sizes the allocator
        before = _worker_rss_kb(proc.process.pid)
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda body: post(proc.url, body, "image/png").status_code,
                    [bomb, large] * 10,
                )
            )
        after = _worker_rss_kb(proc.process.pid)
    assert codes == [400, 200] * 10
    # 20 hostile/huge images later the server holds no more than a few decodes' worth.
    assert after - before < 400_000, (before, after)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_in_flight_requests(tiny_model_dir: Path, workers: int) -> None:
    body = npy(PIXELS)
    with ServerProcess.start(tiny_model_dir, workers=workers) as proc:
        host, port = proc.host, proc.port
        with socket.create_connection((host, port), timeout=20) as s:
            s.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:100]
            )
            time.sleep(0.3)  # the request is now in flight: headers read, body half-sent
            proc.process.send_signal(15)
            time.sleep(0.5)
            s.sendall(body[100:])
            reply = b""
            while b"}" not in reply:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        assert b'"probability"' in reply
        assert proc.process.wait(30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(proc.url + "/ping", timeout=2)


def test_serve_fails_fast_on_a_missing_model(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "itsacat.serve.server", "--model-dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "itsacat: error:" in r.stderr and "model.json" in r.stderr
    assert "Traceback" not in r.stderr


def test_only_bodies_of_bounded_cost_are_classified_on_the_event_loop() -> None:
    from itsacat.serve.app import INLINE_BYTES, _cheap

    jpeg = encode(Image.fromarray(PIXELS), "JPEG")
    flat_png = encode(Image.new("RGB", (4000, 4000)), "PNG")  # a few KB, 16 MP to inflate
    assert len(flat_png) < INLINE_BYTES
    assert _cheap(jpeg, "image/jpeg", INLINE_BYTES)
    assert _cheap(jpeg, "application/x-image", INLINE_BYTES)
    assert _cheap(npy(PIXELS), "application/x-npy", INLINE_BYTES)
    # JSON never: a few KB of it can hold a base64 PNG that inflates to 25 MP.
    palette = encode(Image.new("P", (5000, 5000)), "PNG")
    tiny_json = json.dumps({"image": base64.b64encode(palette).decode()}).encode()
    assert len(tiny_json) < INLINE_BYTES
    assert not _cheap(tiny_json, "application/json", INLINE_BYTES)
    assert not _cheap(b"[[1]]", "application/json; charset=utf-8", INLINE_BYTES)
    assert not _cheap(flat_png, "image/png", INLINE_BYTES)
    assert not _cheap(flat_png, "image/jpeg", INLINE_BYTES)  # the bytes decide, not the label
    assert not _cheap(jpeg + b"\0" * INLINE_BYTES, "image/jpeg", INLINE_BYTES)


def test_serve_fails_fast_on_a_taken_port(tiny_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "itsacat.serve.server",
                "--model-dir",
                str(tiny_model_dir),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
