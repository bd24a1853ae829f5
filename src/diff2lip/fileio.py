"""Atomic, durable file output: write to a hidden temporary sibling, rename onto the target only on success.

Every producer of user-visible files (videos, face tracks, model weights, data-set clips, checkpoints) goes
through here, so a crash or an error never leaves a partial output behind, and finished files get the usual
permissions (``0666`` minus the umask) rather than ``mkstemp``'s private ``0600``.

* **Names carry the writer's pid**: ``.NAME.TAG-PID-RANDOM[SUFFIX]``. A temporary whose writer is gone
  (killed by SIGKILL, a power loss) is *stale*; :func:`remove_stale_temps` finds and removes those, and
  :func:`atomic_path` does so for its own target before it writes, so a later run cleans what a killed one
  left.
* **Durable**: :func:`publish` ``fsync``\\ s the file before the rename and the directory after it, so a power
  loss cannot leave a renamed but empty file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

#: ``.NAME.TAG-PID-RANDOM[SUFFIX]`` — the temporaries written here (``PID`` is absent in names written by
#: diff2lip before 0.2, which are stale only where no other writer can exist, see ``pidless_stale``).
TEMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<tag>[A-Za-z]+)-(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+(?:\.[A-Za-z0-9]+)?$"
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _prefix(name: str, tag: str) -> str:
    return f".{name}.{tag}-{os.getpid()}-"


def temp_sibling(path: str | Path, tag: str = "tmp") -> Path:
    """Create (empty) and return a unique hidden temporary file beside ``path`` with the same suffix."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(p.name, tag), suffix=p.suffix, dir=p.parent)
    os.close(fd)
    return Path(tmp)


def temp_dir_sibling(path: str | Path, tag: str = "tmp") -> Path:
    """Create and return a unique hidden temporary directory beside ``path`` (for staging a directory)."""
    p = Path(path)
    return Path(tempfile.mkdtemp(prefix=_prefix(p.name, tag), dir=p.parent))


def writer_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process counts; a pid we may not signal exists)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(
    directory: str | Path, name: str | None = None, tag: str | None = None, *, pidless_stale: bool = False
) -> list[Path]:
    """Temporaries in ``directory`` (of target ``name`` and ``tag`` when given) whose writer is gone.

    ``pidless_stale``: also count names without a pid (written by older versions) as stale — only where
    the caller knows no other process writes (e.g. a training run directory on resume).
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in sorted(d.iterdir()):
        m = TEMP_NAME.match(p.name)
        if m is None or (name is not None and m["name"] != name) or (tag is not None and m["tag"] != tag):
            continue
        pid = m["pid"]
        if (pid is None and pidless_stale) or (pid is not None and not writer_alive(int(pid))):
            found.append(p)
    return found


def remove_tree(path: str | Path) -> None:
    """Delete a file or directory; a directory is first renamed out of the way (atomic), then deleted, so
    a kill half-way never leaves a half-deleted directory under its real name."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        trash = p.with_name(f".{p.name}.trash-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(p, trash)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def remove_stale_temps(
    directory: str | Path, name: str | None = None, tag: str | None = None, *, pidless_stale: bool = False
) -> list[Path]:
    """Delete :func:`stale_temps` (files and directories) and return what was removed."""
    removed = []
    for p in stale_temps(directory, name, tag, pidless_stale=pidless_stale):
        with contextlib.suppress(FileNotFoundError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
            removed.append(p)
    return removed


def check_output_path(path: str | Path) -> None:
    """Fail early, in one line, when ``path`` cannot become an output file: it is a directory, its folder
    does not exist, or the folder is not writable (checked by creating and removing a temporary)."""
    from diff2lip.errors import Diff2LipError

    p = Path(path)
    if p.is_dir():
        raise Diff2LipError("is a directory; give a file name (e.g. out.mp4)", p)
    if not p.parent.is_dir():
        raise Diff2LipError("the output folder does not exist", p.parent)
    try:
        temp_sibling(p, "probe").unlink()
    except OSError as e:
        raise Diff2LipError(f"cannot write in the output folder ({e.strerror or e})", p.parent) from None


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` (``..`` and symbolic links resolved) lies inside the directory ``root``."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """``fsync`` every file in a directory, then the directory itself (before renaming it into place)."""
    p = Path(path)
    for f in p.rglob("*"):
        if f.is_file():
            fsync_path(f)
    fsync_path(p)


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Give ``tmp`` normal permissions, ``fsync`` it, rename it onto ``path`` (atomic on one file system)
    and ``fsync`` the directory, so the new name survives a power loss."""
    os.chmod(tmp, 0o666 & ~_umask())
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(Path(path).parent)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, tag: str = "tmp") -> Iterator[Path]:
    """``with atomic_path(out) as tmp: write(tmp)`` — ``out`` appears only if the block succeeds.

    Stale temporaries of the same target left by a killed writer are removed first.
    """
    p = Path(path)
    remove_stale_temps(p.parent, p.name, tag)
    tmp = temp_sibling(p, tag)
    try:
        yield tmp
        publish(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` and publish ``tmp`` as ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
