"""Fixtures for the inference tests: a short real talking clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diff2lip.video.io import VideoWriter, read_all


@pytest.fixture(scope="session")
def talking_clip(tmp_path_factory, carphone_mp4, speech_wav) -> Path:
    """40 frames of the real carphone clip then 15 face-less grey frames (29.97 fps), with speech."""
    src = read_all(carphone_mp4)
    frames = src.frames[:40]
    grey = np.full((15, *frames.shape[1:]), 128, np.uint8)
    allf = np.concatenate([frames, grey])  # (55, 144, 176, 3)
    times = np.arange(len(allf)) * 1001 / 30000
    out = tmp_path_factory.mktemp("clips") / "talk.mp4"
    with VideoWriter(out, width=176, height=144, fps=30000 / 1001, audio=speech_wav, crf=12) as w:
        w.write(allf, times)
    return out
