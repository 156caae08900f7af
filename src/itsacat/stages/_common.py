"""What every stage does at its edge: logging, params, and turning errors into one line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

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


def os_error_message(exc: OSError) -> str:
    """'cannot write|read PATH: STRERROR' for an OS error no code path turned into its own.

    A file that is missing or exists unreadable was being read; anything else, written.
    A file that cannot be created is named by its folder (a temporary file's name means
    nothing to the user).
    """
    if not isinstance(exc.filename, str | bytes | os.PathLike) or exc.strerror is None:
        return str(exc)  # no path to name (or a file descriptor's number)
    path = Path(os.fsdecode(exc.filename2 if exc.filename2 is not None else exc.filename))
    exists = path.exists()
    reading = isinstance(exc, FileNotFoundError) or (exists and not os.access(path, os.R_OK))
    if isinstance(exc, PermissionError) and not exists:
        path = path.parent
    return f"cannot {'read' if reading else 'write'} {path}: {exc.strerror}"


def run_stage(body: Callable[[], object]) -> int:
    """Run a stage body; a user's mistake, or a file it cannot read or write, becomes one
    line and exit status 1."""
    setup_logging()
    try:
        body()
    except ItsacatError as exc:
        print(f"itsacat: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"itsacat: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("itsacat: interrupted; outputs already written are intact", file=sys.stderr)
        return 130
    return 0
