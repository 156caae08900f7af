"""The Docker image's entry point, the way SageMaker runs bring-your-own containers.

    docker run IMAGE serve    →  itsacat serve on 0.0.0.0:8080, model from /opt/ml/model
    docker run IMAGE train    →  the SageMaker training entry point (itsacat.aws.sm_entry)

SageMaker starts the container with the single argument `serve` or `train`. The model
directory is SM_MODEL_DIR (default /opt/ml/model, where SageMaker unpacks model.tar.gz),
the port SAGEMAKER_BIND_TO_PORT (default 8080), the worker count
SAGEMAKER_MODEL_SERVER_WORKERS (default one per CPU).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = "usage: container (serve | train) [args…]  (SageMaker passes `serve` or `train`)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("serve", "train"):
        print(f"itsacat: error: got {args[:1] or 'no command'}; {USAGE}", file=sys.stderr)
        return 2
    if args[0] == "train":
        from itsacat.aws.sm_entry import main as train_main

        return int(train_main(args[1:]))
    from itsacat.errors import ItsacatError
    from itsacat.serve.server import serve
    from itsacat.stages._common import setup_logging

    setup_logging()
    try:
        return serve(
            Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")),
            host="0.0.0.0",
            port=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")),
            workers=int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", "0")),
        )
    except ItsacatError as exc:
        print(f"itsacat: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
