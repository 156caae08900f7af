"""Load test of the local endpoint against the reference stack; prints requests/s and latency.

    .venv/bin/python bench/serve_load.py [--model-dir model] [--duration 60] [--connections 16]
    .venv/bin/python bench/serve_load.py --stacks itsacat --payloads full --duration 15 \
        --slices 1 --out /tmp/serve_load.json     # one cell, a quick look

For each stack (itsacat's `itsacat serve`: uvicorn + raw ASGI; the reference: gunicorn
gthread + Flask around the same `Predictor`, see bench/reference_app.py) and each payload
(a 64×64 JPEG; ../shared/images/cat-grumpy.jpeg, 3000×2049, 1.4 MB) it starts the server on
127.0.0.1, warms it up, then runs `wrk` (Debian's; a second process) for `--duration`
seconds. Meanwhile this process GETs /ping every 50 ms to show CPU-bound requests never
starve it. Needs `wrk` (apt-get install wrk) and gunicorn + Flask (pip). Writes
bench/results/serve_load.json as well. Every run is bounded in time and talks only to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ITSACAT_SHARED", REPO.parent / "shared"))
VENV_BIN = Path(sys.executable).parent

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/jpeg"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p90_us\\": %d, " ..
    "\\"p99_us\\": %d, \\"max_us\\": %d, \\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, " ..
    "\\"status\\": %d, \\"timeout\\": %d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def decode_floor_ms(body: bytes, runs: int = 30) -> float:
    """Median CPU milliseconds of `decode_image` on `body`: what no server can go under."""
    from itsacat.data import decode_image

    decode_image(body)
    times = []
    for _ in range(runs):
        start = time.process_time()
        decode_image(body)
        times.append((time.process_time() - start) * 1000)
    return float(np.median(times))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_jpeg() -> bytes:
    """A real 64×64 test photo from the data set, as a JPEG."""
    from PIL import Image

    from itsacat.data import load_h5

    test = load_h5(SHARED / "datasets/catvnoncat/test_catvnoncat.h5", "test")
    buf = io.BytesIO()
    Image.fromarray(test.images[1]).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not answer /ping in time")


def start(
    stack: str, model_dir: Path, port: int, workers: int, threads: int
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ITSACAT_SERVE_MODEL_DIR": str(model_dir.resolve())}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    if stack == "itsacat":
        cmd = [str(VENV_BIN / "itsacat"), "serve", "--model-dir", str(model_dir)]
        cmd += ["--port", str(port), "--workers", str(workers), "--threads", str(threads)]
    else:
        cmd = [str(VENV_BIN / "gunicorn"), "-k", "gthread", "-w", str(workers)]
        cmd += ["--threads", "4", "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
        cmd += ["bench.reference_app:app"]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            stack += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def ping_probe(port: int, stop_event: threading.Event, out: list[float]) -> None:
    """GET /ping every 50 ms on a fresh connection; record latencies in ms."""
    while not stop_event.wait(0.05):
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as r:
                r.read()
            out.append((time.perf_counter() - t) * 1e3)
        except OSError:
            out.append(float("inf"))


def run_wrk(
    port: int, body: Path, duration: int, connections: int, script: Path
) -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY": str(body)}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    cmd += ["-s", str(script), f"http://127.0.0.1:{port}/invocations"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("RESULT ") :])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "max_ms": r["max_us"] / 1e3,
        "requests": r["requests"],
        "seconds": r["duration_us"] / 1e6,
        "errors": errors,
    }


class Slices:
    """One stack's measurements over several wrk slices of the same payload."""

    def __init__(self) -> None:
        self.runs: list[dict[str, float]] = []
        self.pings: list[float] = []
        self.server_cpu = 0.0
        self.wrk_cpu = 0.0

    def measure(
        self,
        port: int,
        proc: subprocess.Popen[bytes],
        body: Path,
        seconds: int,
        args: argparse.Namespace,
        script: Path,
    ) -> None:
        done = threading.Event()
        probe = threading.Thread(target=ping_probe, args=(port, done, self.pings))
        probe.start()
        cpu0 = tree_cpu_seconds(proc.pid)
        wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.runs.append(run_wrk(port, body, seconds, args.connections, script))
        wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.server_cpu += tree_cpu_seconds(proc.pid) - cpu0
        self.wrk_cpu += (wrk1.ru_utime - wrk0.ru_utime) + (wrk1.ru_stime - wrk0.ru_stime)
        done.set()
        probe.join()

    def summary(self) -> dict[str, float]:
        n = sum(r["requests"] for r in self.runs)
        seconds = sum(r["seconds"] for r in self.runs)
        ping = np.array(self.pings) if self.pings else np.array([np.nan])
        r = {
            "rps": n / seconds,
            "requests": n,
            "seconds": seconds,
            # p50: request-weighted mean over slices; p99 and max: the worst slice's.
            "p50_ms": sum(r["p50_ms"] * r["requests"] for r in self.runs) / max(1, n),
            "p99_ms": max(r["p99_ms"] for r in self.runs),
            "max_ms": max(r["max_ms"] for r in self.runs),
            "errors": sum(r["errors"] for r in self.runs),
            "server_cpu_ms": self.server_cpu / max(1, n) * 1e3,
            "wrk_cpu_ms": self.wrk_cpu / max(1, n) * 1e3,
            "ping_p99_ms": float(np.percentile(ping, 99)),
            "ping_max_ms": float(ping.max()),
        }
        # What 2 otherwise idle cores would sustain at this CPU cost per request.
        r["idle_2core_rps"] = 2000.0 / (r["server_cpu_ms"] + r["wrk_cpu_ms"])
        return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=REPO / "model")
    ap.add_argument("--duration", type=int, default=60, help="seconds of load per run")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="itsacat serve --threads")
    ap.add_argument("--slices", type=int, default=4, help="alternate stacks this many times")
    ap.add_argument("--stacks", default="itsacat,reference")
    ap.add_argument("--payloads", default="small,full", help="small, full or both")
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench/results/serve_load.json",
        help="where the JSON goes (short or partial runs: somewhere else, e.g. /tmp)",
    )
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    bodies = {"small": tmp / "small.jpg", "full": tmp / "full.jpg"}
    bodies["small"].write_bytes(small_jpeg())
    bodies["full"].write_bytes((SHARED / "images/cat-grumpy.jpeg").read_bytes())
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    print(
        f"load: wrk -t1 -c{args.connections}, {args.duration} s per stack and payload in "
        f"{args.slices} alternating slices, "
        f"{args.workers} server workers, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} before"
    )
    if "full" in args.payloads:
        floor_ms = decode_floor_ms(bodies["full"].read_bytes())
        cores = os.cpu_count() or 1
        print(
            f"decode floor: data.decode_image alone takes {floor_ms:.1f} ms of CPU per "
            f"full-size photo in this process → at most {cores * 1000 / floor_ms:.0f} "
            f"full-size photos/s on {cores} cores doing nothing else (no HTTP, no load client)"
        )
    stacks = args.stacks.split(",")
    slice_s = max(1, args.duration // args.slices)
    results: dict[str, dict[str, dict[str, float]]] = {}
    procs: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        for stack in stacks:
            port = free_port()
            procs[stack] = (port, start(stack, args.model_dir, port, args.workers, args.threads))
            wait_ready(*procs[stack])
        for payload in args.payloads.split(","):
            for port, _ in procs.values():
                run_wrk(port, bodies[payload], 3, args.connections, script)  # warm-up
            acc = {stack: Slices() for stack in stacks}
            for i in range(args.slices):
                # A B B A A B …: slow drifts in the box's other load hit both stacks alike.
                for stack in stacks if i % 2 == 0 else stacks[::-1]:
                    port, proc = procs[stack]
                    acc[stack].measure(port, proc, bodies[payload], slice_s, args, script)
            for stack in stacks:
                r = acc[stack].summary()
                results.setdefault(stack, {})[payload] = r
                print(
                    f"{stack:9s} {payload:5s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms"
                    f"  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}  "
                    f"({r['requests']} requests in {r['seconds']:.0f} s; /ping under load p99 "
                    f"{r['ping_p99_ms']:.1f} ms, max {r['ping_max_ms']:.1f} ms)\n"
                    f"{'':15s} CPU per request: server {r['server_cpu_ms']:.2f} ms + wrk "
                    f"{r['wrk_cpu_ms']:.2f} ms → {r['idle_2core_rps']:.0f} req/s on 2 idle cores",
                    flush=True,
                )
    finally:
        for _, proc in procs.values():
            stop(proc)
    if "itsacat" in results and "reference" in results:
        for payload in results["itsacat"]:
            a, b = results["itsacat"][payload], results["reference"][payload]
            print(
                f"ratio {payload:5s} itsacat/reference: {a['rps'] / b['rps']:.2f}× req/s, "
                f"p99 {a['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms, server CPU per request "
                f"{a['server_cpu_ms']:.2f} vs {b['server_cpu_ms']:.2f} ms "
                f"({b['server_cpu_ms'] / a['server_cpu_ms']:.2f}× less)"
            )
    print(
        f"load average after: {os.getloadavg()[0]:.2f} (other work on the box skews req/s; "
        "CPU per request does not depend on it)"
    )
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
