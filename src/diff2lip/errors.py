"""User-facing errors.

A :class:`Diff2LipError` is raised at a boundary (a file, a flag, a config) when the input is wrong.
The CLI prints its message on one line and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


class Diff2LipError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (see :func:`raise_on_sigterm`).

    A ``BaseException`` like ``KeyboardInterrupt``, so every ``finally`` and ``except BaseException`` that
    removes temporary files runs, as it does for Ctrl-C.
    """


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """``with raise_on_sigterm(): ...`` — SIGTERM raises :class:`Terminated` inside the block (main thread
    only; elsewhere a no-op), and the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
