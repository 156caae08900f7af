"""What every stage does at its edge: logging, params, and turning errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from itsacat.errors import ItsacatError

log = logging.getLogger("itsacat")


def setup_logging(verbose: bool = False) -> None:
    """Plain `message` lines on stderr, as DVC and CI logs show them best."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(message)s",
            stream=sys.stderr,
        )
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(body: Callable[[], object]) -> int:
    """Run a stage body; a user's mistake becomes one line and exit status 1."""
    setup_logging()
    try:
        body()
    except ItsacatError as exc:
        print(f"itsacat: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("itsacat: interrupted; outputs already written are intact", file=sys.stderr)
        return 130
    return 0
