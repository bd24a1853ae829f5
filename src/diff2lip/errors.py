"""User-facing errors.

A :class:`Diff2LipError` is raised at a boundary (a file, a flag, a config) when the input is wrong.
The CLI prints its message on one line and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


class Diff2LipError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
