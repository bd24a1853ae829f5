"""Atomic, durable outputs: temporaries carry the writer's pid, stale ones are found and removed, publish
fsyncs, containment checks (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diff2lip import fileio
from diff2lip.fileio import (
    TEMP_NAME,
    atomic_path,
    is_inside,
    remove_stale_temps,
    remove_tree,
    stale_temps,
    temp_dir_sibling,
    temp_sibling,
    write_text_atomic,
)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(out.stdout)
    assert not fileio.writer_alive(pid)
    return pid


def test_temp_names_carry_the_pid_and_parse(tmp_path):
    t = temp_sibling(tmp_path / "out.mp4", "partial")
    m = TEMP_NAME.match(t.name)
    assert m and (m["name"], m["tag"], int(m["pid"])) == ("out.mp4", "partial", os.getpid())
    assert t.suffix == ".mp4" and t.name.startswith(".")
    d = temp_dir_sibling(tmp_path / "step_000000004")
    m = TEMP_NAME.match(d.name)
    assert d.is_dir() and m and (m["name"], int(m["pid"])) == ("step_000000004", os.getpid())
    # a live writer's temporaries (ours) are never stale
    assert stale_temps(tmp_path) == []


def test_remove_stale_temps_only_of_dead_writers_and_the_named_target(tmp_path, dead_pid):
    dead = tmp_path / f".out.mp4.partial-{dead_pid}-abc123.mp4"
    dead.write_bytes(b"x")
    other_target = tmp_path / f".other.mp4.partial-{dead_pid}-abc123.mp4"
    other_target.write_bytes(b"x")
    live = temp_sibling(tmp_path / "out.mp4", "partial")
    legacy = tmp_path / ".out.mp4.partial-k2j4h5g6.mp4"  # written before pids were in the names
    legacy.write_bytes(b"x")
    user_file = tmp_path / "out.mp4"
    user_file.write_bytes(b"keep")
    assert remove_stale_temps(tmp_path, "out.mp4", "partial") == [dead]
    assert not dead.exists() and other_target.exists() and live.exists() and legacy.exists()
    assert remove_stale_temps(tmp_path, "out.mp4", pidless_stale=True) == [legacy]
    staging = tmp_path / f".step_000000002.tmp-{dead_pid}-x1y2"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "f").write_bytes(b"1")
    assert remove_stale_temps(tmp_path) == [other_target, staging]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "out.mp4"])


def test_atomic_path_removes_stale_temporaries_of_its_target(tmp_path, dead_pid):
    stale = tmp_path / f".model.safetensors.tmp-{dead_pid}-q9w8e7r6.safetensors"
    stale.write_bytes(b"half")
    write_text_atomic(tmp_path / "model.safetensors", "done")
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_publish_fsyncs_the_file_and_the_directory_before_returning(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", spy)
    out = tmp_path / "a.txt"
    write_text_atomic(out, "hello")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(
        ".a.txt.tmp-"
    )  # before rename
    assert Path(synced[1]) == tmp_path  # the directory entry, after it
    assert out.read_text() == "hello"


def test_remove_tree_renames_a_directory_away_before_deleting(tmp_path, monkeypatch):
    d = tmp_path / "step_000000002"
    d.mkdir()
    (d / "meta.json").write_text("{}")
    seen = []
    real_rmtree = fileio.shutil.rmtree
    monkeypatch.setattr(fileio.shutil, "rmtree", lambda p, **kw: (seen.append(Path(p)), real_rmtree(p, **kw)))
    remove_tree(d)
    assert not d.exists() and list(tmp_path.iterdir()) == []
    assert len(seen) == 1 and seen[0].name.startswith(".step_000000002.trash-")  # never deleted in place


def test_is_inside(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert is_inside(root / "a" / "x.mp4", root)
    assert not is_inside(root / ".." / "x.mp4", root)
    assert not is_inside("/etc/passwd", root)
    (root / "link").symlink_to(tmp_path)
    assert not is_inside(root / "link" / "x.mp4", root)  # a symbolic link out does not count as inside
