"""`itsacat serve`: the local endpoint, uvicorn worker processes around `app.ServeApp`.

    itsacat serve --model-dir model --port 8080 [--host 127.0.0.1] [--workers N] [--threads T]

Why uvicorn (httptools + uvloop) with a framework-free ASGI app: measured by
`bench/serve_load.py` on this 2-core box against gunicorn + Flask around the same
`Predictor`, it serves more requests per second at a lower p99, and its event loop answers
/ping while the thread pool decodes photos. Each worker process loads the model before it
accepts connections; SIGTERM stops accepting, lets in-flight requests finish (up to
`--graceful-timeout` seconds), then exits 0, which is what blue/green switching and
SageMaker rely on.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

from itsacat.errors import ItsacatError

log = logging.getLogger(__name__)


def default_workers() -> int:
    """One worker process per CPU the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def serve(
    model_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 0,
    threads: int = 2,
    max_body: int | None = None,
    graceful_timeout: float = 30.0,
) -> int:
    """Run the server until SIGTERM or SIGINT. Fails fast when the model cannot load."""
    try:
        import uvicorn
    except ImportError:
        raise ItsacatError("`itsacat serve` needs uvicorn; pip install 'itsacat[serve]'") from None
    from itsacat.predict import Predictor
    from itsacat.serve.app import ENV_MAX_BODY, ENV_MODEL_DIR, ENV_THREADS, app_from_env
    from itsacat.serve.codec import MAX_BODY_BYTES

    if not 0 <= port <= 65535:
        raise ItsacatError(f"--port must be 0…65535, got {port}")
    if threads < 1:
        raise ItsacatError(f"--threads must be >= 1, got {threads}")
    model_dir = Path(model_dir).resolve()
    version = Predictor.load(model_dir).version  # a broken model fails here, in one line
    _check_port(host, port)
    workers = workers or default_workers()
    os.environ[ENV_MODEL_DIR] = str(model_dir)
    os.environ[ENV_THREADS] = str(threads)
    os.environ[ENV_MAX_BODY] = str(max_body or MAX_BODY_BYTES)
    log.info(
        "serving model %s from %s on http://%s:%d with %d worker(s) × %d thread(s)",
        version,
        model_dir,
        host,
        port,
        workers,
        threads,
    )
    # uvicorn re-raises the SIGTERM it caught once the graceful shutdown is done; with this
    # handler in place that re-raise is a no-op, so a SIGTERM'd server exits 0, not -15.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        "itsacat.serve.app:app_from_env" if workers > 1 else app_from_env,
        factory=True,
        host=host,
        port=port,
        workers=workers if workers > 1 else None,
        loop=_best("uvloop", "asyncio"),
        http=_best("httptools", "h11"),
        lifespan="on",
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=round(graceful_timeout),
        limit_concurrency=1000,
        backlog=2048,
        log_level="info",
    )
    return 0


def _check_port(host: str, port: int) -> None:
    """Fail in one line when the address is taken (uvicorn would log and exit 3)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ItsacatError(
                f"cannot listen on {host}:{port} ({exc.strerror}); stop the server that holds "
                "it or pick another --port"
            ) from None


def _best(preferred: str, fallback: str) -> str:
    """uvloop/httptools when installed (they are in itsacat[serve]), else pure Python."""
    import importlib.util

    return preferred if importlib.util.find_spec(preferred) else fallback


def _cmd_serve(args: argparse.Namespace) -> int:
    return serve(
        Path(args.model_dir),
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        max_body=args.max_body_mb * 1024 * 1024 if args.max_body_mb else None,
        graceful_timeout=args.graceful_timeout,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="run the local endpoint (SageMaker contract: /ping, /invocations, page at /)"
    )
    p.add_argument("--model-dir", default="model")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    p.add_argument("--threads", type=int, default=2, help="predict threads per worker")
    p.add_argument("--max-body-mb", type=int, default=0, help="body limit (default/max 16)")
    p.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to finish in-flight work"
    )
    p.set_defaults(func=_cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """`python -m itsacat.serve.server …`: the same as `itsacat serve …`, standalone."""
    import sys

    from itsacat.stages._common import setup_logging

    parser = argparse.ArgumentParser(prog="itsacat")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    setup_logging()
    try:
        return int(args.func(args))
    except ItsacatError as exc:
        print(f"itsacat: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
