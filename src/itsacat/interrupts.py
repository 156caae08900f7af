"""Cleanups that a second Ctrl-C must not cut short.

A cleanup after Ctrl-C (stopping a server no state file names yet, a DVC queue's
experiments) that a second KeyboardInterrupt stopped halfway would leave processes running
that nothing finds again. `finishing` holds SIGINT back meanwhile: it only logs until the
cleanup, which must be bounded, ends; the caller then re-raises the first interrupt.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def finishing(what: str, log: logging.Logger) -> Iterator[None]:
    """Run the block to its end if Ctrl-C comes again; SIGINT logs "still WHAT" meanwhile.
    Python runs signal handlers in the main thread only, so elsewhere there is nothing to
    hold back, nor when SIGINT's handler was not set from Python."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is None
    ):
        yield
        return

    def again(signum: int, frame: Any) -> None:
        log.warning("interrupted; still %s, one moment", what)

    previous = signal.signal(signal.SIGINT, again)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
