"""Atomic file output: write to a hidden temporary sibling, rename onto the target only on success.

Every producer of user-visible files (videos, face tracks, model weights, data-set clips) goes through
here, so a crash or an error never leaves a partial output behind, and finished files get the usual
permissions (``0666`` minus the umask) rather than ``mkstemp``'s private ``0600``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_sibling(path: str | Path, tag: str = "tmp") -> Path:
    """Create (empty) and return a unique hidden temporary file beside ``path`` with the same suffix."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{tag}-", suffix=p.suffix, dir=p.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Give ``tmp`` normal permissions and rename it onto ``path`` (atomic on one file system)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, tag: str = "tmp") -> Iterator[Path]:
    """``with atomic_path(out) as tmp: write(tmp)`` — ``out`` appears only if the block succeeds."""
    tmp = temp_sibling(path, tag)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` and publish ``tmp`` as ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
