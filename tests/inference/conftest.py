"""Fixtures for the inference tests: a tiny random Diff2Lip model and a short real talking clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diff2lip.config import load_yaml, packaged_config_path
from diff2lip.models.config import load_model_config
from diff2lip.models.serialization import save_pretrained
from diff2lip.models.unet import Diff2LipUNet
from diff2lip.video.io import VideoWriter, read_all


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny model (with non-zero output layers) saved in our format."""
    torch.manual_seed(0)
    model = Diff2LipUNet(load_model_config("tiny"))
    with torch.no_grad():  # zero-initialised output convs would make every prediction 0
        for p in model.parameters():
            if p.abs().sum() == 0 and p.ndim > 1:
                p.normal_(0, 0.2)
    doc = load_yaml(packaged_config_path("tiny"))
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_pretrained(model, out, diffusion=doc["diffusion"], sampling=doc["sampling"])
    return out


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
