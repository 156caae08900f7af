"""Lambda handler cold start and warm latency, each run in a fresh process.

    .venv/bin/python bench/lambda_cold.py [--model-dir model] [--runs 5] [--warm 300]

Builds the deployment zip (`itsacat package --kind lambda`), unpacks it like /var/task and
runs the handler with `python -I -S -B`: only the zip is importable and no bytecode is
written, as on Lambda's read-only task root. Cold = importing the handler module and
loading the model (what Lambda's init phase pays); first = the first request (Pillow's
lazy import included); warm = later requests with a 64×64 JPEG (API Gateway v2 event,
base64 body). Prints medians over `--runs` fresh processes.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ITSACAT_SHARED", REPO.parent / "shared"))

PROBE = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
sys.path.insert(0, sys.argv[1])
from itsacat.serve.lambda_handler import get_predictor, handler
get_predictor()
t1, c1 = time.perf_counter(), time.process_time()
event = json.load(open(sys.argv[2]))
r = handler(event, None)
t2 = time.perf_counter()
assert r["statusCode"] == 200, r
warm = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    handler(event, None)
    warm.append(time.perf_counter() - t)
warm.sort()
print(json.dumps({"cold_ms": (t1 - t0) * 1e3, "cold_cpu_ms": (c1 - c0) * 1e3,
                  "first_ms": (t2 - t1) * 1e3,
                  "warm_p50_ms": warm[len(warm) // 2] * 1e3,
                  "warm_p99_ms": warm[int(len(warm) * 0.99)] * 1e3}))
"""


def small_jpeg_event() -> dict[str, object]:
    from PIL import Image

    from itsacat.data import load_h5

    test = load_h5(SHARED / "datasets/catvnoncat/test_catvnoncat.h5", "test")
    buf = io.BytesIO()
    Image.fromarray(test.images[1]).save(buf, "JPEG", quality=90)
    return {
        "version": "2.0",
        "rawPath": "/invocations",
        "rawQueryString": "",
        "headers": {"content-type": "image/jpeg"},
        "requestContext": {"http": {"method": "POST", "path": "/invocations"}},
        "body": base64.b64encode(buf.getvalue()).decode(),
        "isBase64Encoded": True,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=REPO / "model")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warm", type=int, default=300)
    args = ap.parse_args()
    from itsacat.serve.package import build_lambda_zip

    with tempfile.TemporaryDirectory(prefix="lambda-cold-") as tmp:
        zpath = build_lambda_zip(args.model_dir, Path(tmp) / "lambda.zip")
        task = Path(tmp) / "task"
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(task)
        event = Path(tmp) / "event.json"
        event.write_text(json.dumps(small_jpeg_event()))
        runs = []
        for _ in range(args.runs):
            out = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-B",
                    "-c",
                    PROBE,
                    str(task),
                    str(event),
                    str(args.warm),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp,
                check=True,
            )
            runs.append(json.loads(out.stdout))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"lambda handler ({args.runs} fresh processes from the unpacked zip, nothing written; "
        f"load average {os.getloadavg()[0]:.2f}):\n"
        f"  cold start (import + model load): {med['cold_ms']:.0f} ms (median; runs: "
        + ", ".join(f"{r['cold_ms']:.0f}" for r in runs)
        + f"; CPU time {med['cold_cpu_ms']:.0f} ms)\n"
        f"  first request:                    {med['first_ms']:.1f} ms\n"
        f"  warm 64×64 JPEG:                  p50 {med['warm_p50_ms']:.2f} ms, "
        f"p99 {med['warm_p99_ms']:.2f} ms ({args.warm} requests per process)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
