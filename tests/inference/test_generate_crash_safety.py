"""``generate`` killed with SIGTERM/SIGKILL leaves nothing behind once run again (issue 18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diff2lip.cli import main
from diff2lip.video.io import probe


@pytest.fixture(scope="module")
def clip_track(tmp_path_factory, tiny_model_dir, talking_clip, speech_wav) -> Path:
    """A saved face track of the talking clip (so the killed runs spend their time generating)."""
    track = tmp_path_factory.mktemp("track") / "track.json"
    out = track.parent / "warm.mp4"
    args = [talking_clip, speech_wav, "-o", out, "--checkpoint", tiny_model_dir, "--face-track", track]
    assert main(["generate", *map(str, args), "-q", "--steps", "2"]) == 0
    return track


def _cmd(clip: Path, speech: Path, out: Path, model: Path, track: Path) -> list[str]:
    args = [clip, speech, "-o", out, "--checkpoint", model, "--face-track", track]
    return [
        sys.executable,
        "-m",
        "diff2lip",
        "generate",
        *map(str, args),
        "-q",
        "--steps",
        "2",
        "--chunk-size",
        "4",
    ]


def _partials(d: Path) -> list[Path]:
    return sorted(d.glob(".*"))


def _start_and_wait_for_partial(cmd: list[str], d: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.monotonic()
    while proc.poll() is None and not _partials(d) and time.monotonic() - t0 < 120:
        time.sleep(0.005)
    return proc


def test_sigterm_removes_the_partial_file_and_exits_143(
    tmp_path, tiny_model_dir, talking_clip, speech_wav, clip_track
):
    out = tmp_path / "out.mp4"
    proc = _start_and_wait_for_partial(
        _cmd(talking_clip, speech_wav, out, tiny_model_dir, clip_track), tmp_path
    )
    assert proc.poll() is None, "generate finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip() == "diff2lip generate: terminated (SIGTERM); no partial output left"
    assert list(tmp_path.iterdir()) == []


def test_sigkill_partials_are_removed_by_the_next_run(
    tmp_path, tiny_model_dir, talking_clip, speech_wav, clip_track
):
    out = tmp_path / "out.mp4"
    cmd = _cmd(talking_clip, speech_wav, out, tiny_model_dir, clip_track)
    rng = np.random.default_rng(18)
    killed = 0
    for _ in range(3):  # SIGKILL at random moments of the writing
        proc = _start_and_wait_for_partial(cmd, tmp_path)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
    assert killed >= 2 and not out.exists()
    left = _partials(tmp_path)  # each run removed the partial of the run killed before it
    assert len(left) == 1 and ".out.mp4.partial-" in left[0].name
    # a partial of another output, and one of a writer that is still alive (this process), are kept
    other = tmp_path / ".other.mp4.partial-1-abcdefgh.mp4"
    other.write_bytes(b"")
    live = tmp_path / f".out.mp4.partial-{os.getpid()}-abcdefgh.mp4"
    live.write_bytes(b"")
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-1500:]
    assert "removed 1 partial file(s) left by a killed earlier run" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, live.name, "out.mp4"])
    assert probe(out).num_frames > 0
