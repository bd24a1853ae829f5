"""Sync_c / Sync_d (LSE-C / LSE-D) with syncnet_python's SyncNet (DESIGN.md §5; Chung & Zisserman 2016).

The paper's sync metrics are those of Wav2Lip's evaluation: syncnet_python's ``SyncNetInstance.evaluate``
over the face track that its ``run_pipeline.py`` crops. This module reproduces that without OpenCV,
ffmpeg or python_speech_features:

* **network** :class:`SyncNetS` — syncnet_python's ``S`` model (``netcnnaud``, ``netfcaud``, ``netcnnlip``,
  ``netfclip``), state-dict keys identical to ``syncnet_v2.model`` so that file loads with ``strict=True``;
* **faces** :func:`syncnet_crops` — ``run_pipeline.crop_video``'s crop: half-size ``s = max(w, h)/2`` and
  centre of each track box, median-filtered over 13 frames, a window ``[cy − s, cy + 1.8·s) ×
  [cx − 1.4·s, cx + 1.4·s)`` (crop scale 0.4) on the frame padded with grey 110, resized to 224×224
  (bilinear); the network sees **BGR** (OpenCV order) values in ``[0, 255]`` as floats, 5 frames at a time;
* **audio** :func:`mfcc` — ``python_speech_features.mfcc`` with its defaults (25 ms rectangular frames
  every 10 ms, pre-emphasis 0.97, 512-point FFT power spectrum, 26 mel filters, DCT-II ortho, 13 cepstra,
  lifter 22, ``c0`` replaced by the log frame energy) on 16 kHz int16-scale samples; video group ``v`` uses
  MFCC frames ``4v .. 4v+19`` (100 Hz vs 25 fps);
* **score** :func:`sync_scores` — ``calc_pdist``: for each video group ``i`` the Euclidean distance to
  audio groups ``i − K .. i + K`` (zero features beyond the ends, as syncnet_python pads), averaged over
  ``i``; ``Sync_d`` = the minimum mean distance, ``Sync_c`` = median − minimum, with ``K = 15``.

**Offset sign.** :attr:`SyncScore.offset` follows :mod:`diff2lip.evaluation.sync`: ``k > 0`` means the
audio lags the video by ``k`` frames. syncnet_python prints the opposite sign ("AV offset" = ``−k``).

When ``syncnet_v2.model`` is not available, :func:`score_with_project_syncnet` scores with the project's
own expert (:mod:`diff2lip.models.syncnet` via :func:`diff2lip.evaluation.sync.estimate_offset`); those
numbers are on a different scale and reports name the scorer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diff2lip.errors import Diff2LipError
from diff2lip.evaluation.sync import device_of
from diff2lip.models.serialization import load_state_dict_strict, read_torch_state_dict

__all__ = [
    "SYNCNET_URL",
    "SyncNetS",
    "SyncScore",
    "audio_features",
    "lip_features",
    "load_syncnet_python",
    "mfcc",
    "score_with_project_syncnet",
    "score_with_syncnet_python",
    "sync_scores",
    "syncnet_crops",
    "to_int16_scale",
]

SYNCNET_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
CROP_SIZE = 224
CROP_SCALE = 0.4
PAD_VALUE = 110
MEDIAN_KERNEL = 13
NFRAMES = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
MFCC_WINDOW = 20
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps


# ------------------------------------------------------------------------------------------------ MFCC


def _hz2mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel2hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(nfilt: int = 26, nfft: int = 512, sample_rate: int = 16000) -> np.ndarray:
    """python_speech_features' triangular filters ``(nfilt, nfft//2 + 1)`` on FFT bins ``floor((nfft+1)·f/sr)``."""
    points = np.linspace(_hz2mel(0.0), _hz2mel(sample_rate / 2.0), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(points) / sample_rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    idx = np.arange(nfft // 2 + 1)
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        rising = (idx >= lo) & (idx < mid)
        falling = (idx >= mid) & (idx < hi)
        fb[j, rising] = (idx[rising] - lo) / (mid - lo)
        fb[j, falling] = (hi - idx[falling]) / (hi - mid)
    return fb


def _dct2_ortho(x: np.ndarray) -> np.ndarray:
    from scipy.fft import dct

    return dct(x, type=2, axis=1, norm="ortho")


def mfcc(
    signal: np.ndarray,
    sample_rate: int = 16000,
    *,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    ceplifter: int = 22,
    append_energy: bool = True,
) -> np.ndarray:
    """MFCCs ``(T, numcep)`` float64, numerically python_speech_features' ``mfcc(signal, sample_rate)``.

    ``signal`` is on python_speech_features' input scale (syncnet_python passes int16 samples; see
    :func:`to_int16_scale`). Frames: ``T = 1 + ceil((len − L)/step)`` (1 if shorter than a frame), the
    last zero-padded; no window function.
    """
    x = np.asarray(signal, np.float64).reshape(-1)
    if len(x) == 0:
        raise ValueError("empty signal")
    x = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])
    flen = int(np.floor(winlen * sample_rate + 0.5))  # round half up
    fstep = int(np.floor(winstep * sample_rate + 0.5))
    n = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / fstep))
    padded = np.concatenate([x, np.zeros((n - 1) * fstep + flen - len(x))])
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]  # (T, L)
    frames = padded[idx]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # (T, nfft/2+1)
    eps = np.finfo(float).eps
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ mel_filterbank(nfilt, nfft, sample_rate).T  # (T, nfilt)
    feat = np.where(feat == 0, eps, feat)
    cep = _dct2_ortho(np.log(feat))[:, :numcep]
    if ceplifter > 0:
        cep = cep * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    if append_energy:
        cep[:, 0] = np.log(energy)
    return cep


def to_int16_scale(wav: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] → the int16 sample values syncnet_python reads with ``wavfile.read``."""
    return np.clip(np.round(np.asarray(wav, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------------------------- network


class SyncNetS(nn.Module):
    """syncnet_python's ``S`` network; ``forward_lip`` ``(B, 3, 5, 224, 224)`` BGR [0, 255] → ``(B, 1024)``,
    ``forward_aud`` ``(B, 1, 13, 20)`` MFCC → ``(B, 1024)`` (unnormalised embeddings)."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(1, 1),
            nn.Conv2d(64, 192, 3, padding=1),
            nn.BatchNorm2d(192),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=(1, 2)),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.BatchNorm2d(384),
            nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 512, (5, 4)),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)),
            nn.BatchNorm3d(96),
            nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6)),
            nn.BatchNorm3d(512),
            nn.ReLU(),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))  # (B, 512·1·1) → (B, D)

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))  # (B, 512·1·1·1) → (B, D)


class _LipAudioNet(Protocol):
    def forward_lip(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor: ...


def load_syncnet_python(path: str | Path, *, device: str | torch.device = "cpu") -> SyncNetS:
    """Load syncnet_python's ``syncnet_v2.model`` (a state dict; ``strict=True``, ``weights_only=True``)."""
    p = Path(os.path.expanduser(str(path)))
    state = read_torch_state_dict(p, "syncnet_python weights", f"download {SYNCNET_URL}")
    model = SyncNetS()
    load_state_dict_strict(model, state, p, what="syncnet_python S weights file")
    return model.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------- crops


def syncnet_crops(
    frames: np.ndarray, boxes: np.ndarray, *, crop_scale: float = CROP_SCALE, size: int = CROP_SIZE
) -> np.ndarray:
    """syncnet_python's face-track crops ``(N, size, size, 3)`` uint8 (RGB in, RGB out).

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB frames of one face track.
        boxes: ``(N, 4)`` face boxes ``(x1, y1, x2, y2)`` (detector boxes; S3FD in syncnet_python).
    """
    from scipy.signal import medfilt

    frames, boxes = np.asarray(frames), np.asarray(boxes, np.float64)
    if frames.ndim != 4 or boxes.shape != (len(frames), 4):
        raise ValueError(f"need (N, H, W, 3) frames and (N, 4) boxes, got {frames.shape} {boxes.shape}")
    half = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2.0
    cy, cx = (boxes[:, 1] + boxes[:, 3]) / 2.0, (boxes[:, 0] + boxes[:, 2]) / 2.0
    k = min(MEDIAN_KERNEL, len(frames) if len(frames) % 2 else len(frames) - 1)
    if k >= 3:
        half, cy, cx = medfilt(half, k), medfilt(cy, k), medfilt(cx, k)
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        bs = half[i]
        pad = int(bs * (1 + 2 * crop_scale))
        big = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
        my, mx = cy[i] + pad, cx[i] + pad
        patch = big[
            int(my - bs) : int(my + bs * (1 + 2 * crop_scale)),
            int(mx - bs * (1 + crop_scale)) : int(mx + bs * (1 + crop_scale)),
        ]
        t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float()  # (1, 3, h, w)
        r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        out[i] = r[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


# ------------------------------------------------------------------------------------------- features


@torch.no_grad()
def lip_features(
    model: _LipAudioNet, crops: np.ndarray, num_groups: int, *, batch_size: int = 20
) -> torch.Tensor:
    """Embeddings ``(num_groups, D)`` of 5-frame windows ``crops[v : v+5]`` (RGB uint8 → BGR float)."""
    device = device_of(model)
    video = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).float()  # (N, H, W, 3) BGR
    video = video.permute(3, 0, 1, 2)  # (3, N, H, W)
    out = []
    for first in range(0, num_groups, batch_size):
        batch = [video[:, v : v + NFRAMES] for v in range(first, min(num_groups, first + batch_size))]
        out.append(model.forward_lip(torch.stack(batch).to(device)).float().cpu())  # (b, 3, 5, H, W) in
    return torch.cat(out)


@torch.no_grad()
def audio_features(
    model: _LipAudioNet, cepstra: np.ndarray, num_groups: int, *, batch_size: int = 20
) -> torch.Tensor:
    """Embeddings ``(num_groups, D)`` of MFCC windows ``(1, 13, 20)`` starting at frame ``4v``."""
    device = device_of(model)
    cc = torch.from_numpy(np.asarray(cepstra, np.float64).T.copy()).float()  # (13, T)
    out = []
    for first in range(0, num_groups, batch_size):
        batch = [
            cc[:, MFCC_PER_FRAME * v : MFCC_PER_FRAME * v + MFCC_WINDOW]
            for v in range(first, min(num_groups, first + batch_size))
        ]
        x = torch.stack(batch)[:, None]  # (b, 1, 13, 20)
        out.append(model.forward_aud(x.to(device)).float().cpu())
    return torch.cat(out)


@dataclass
class SyncScore:
    """Sync metrics of one video.

    Attributes:
        sync_c: confidence, ``median − min`` of the per-offset mean distances (LSE-C; higher is better).
        sync_d: the minimum mean distance (LSE-D; lower is better).
        offset: frames the audio lags the video at the minimum (``> 0``: audio delayed).
        scorer: ``"syncnet_python"`` or ``"diff2lip-syncnet"`` (the fallback expert; another scale).
        dists: ``(2K+1,)`` mean distance per offset ``-K .. K``.
    """

    sync_c: float
    sync_d: float
    offset: int
    scorer: str
    dists: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"sync_c": self.sync_c, "sync_d": self.sync_d, "offset": self.offset, "scorer": self.scorer}


def sync_scores(video_feat: torch.Tensor, audio_feat: torch.Tensor, vshift: int = 15) -> SyncScore:
    """syncnet_python's ``calc_pdist`` + min/median over offsets ``-vshift .. vshift``.

    ``dists[i, j]`` is the distance between video group ``i`` and audio group ``i + j − vshift`` (a zero
    vector outside the audio); the mean over ``i`` per ``j`` gives Sync_d (min) and Sync_c (median − min).
    """
    v = video_feat.double()
    a = audio_feat.double()
    if len(v) < 1 or len(a) < len(v):
        raise ValueError(f"need >= 1 video group and as many audio groups, got {len(v)} and {len(a)}")
    win = 2 * vshift + 1
    a_pad = F.pad(a, (0, 0, vshift, vshift))  # (Ga + 2K, D)
    idx = torch.arange(len(v))[:, None] + torch.arange(win)[None, :]  # (G, 2K+1)
    dists = F.pairwise_distance(v[:, None, :].expand(-1, win, -1), a_pad[idx])  # (G, 2K+1)
    mdist = dists.mean(dim=0)  # (2K+1,)
    j = int(torch.argmin(mdist))
    minval = float(mdist[j])
    # torch.median returns the lower middle value (syncnet_python uses it on an odd-length vector)
    return SyncScore(
        sync_c=float(torch.median(mdist)) - minval,
        sync_d=minval,
        offset=j - vshift,
        scorer="syncnet_python",
        dists=mdist.numpy(),
    )


def score_with_syncnet_python(
    model: _LipAudioNet, crops: np.ndarray, wav16k: np.ndarray, *, vshift: int = 15, batch_size: int = 20
) -> SyncScore:
    """``SyncNetInstance.evaluate`` on 25 fps crops ``(N, 224, 224, 3)`` RGB and float 16 kHz speech.

    As syncnet_python: ``min_length = min(N, floor(len(audio)/640))`` and the groups ``v = 0 ..
    min_length − 6`` (its ``range(0, min_length − 5)``).
    """
    if isinstance(model, nn.Module):
        model.eval()
    audio = to_int16_scale(wav16k)
    min_length = min(len(crops), len(audio) // SAMPLES_PER_FRAME)
    groups = min_length - NFRAMES
    if groups < 1:
        raise Diff2LipError(f"too short for SyncNet: {len(crops)} frames, {len(audio) / 16000:.2f}s of audio")
    cep = mfcc(audio, 16000)
    v = lip_features(model, crops, groups, batch_size=batch_size)
    a = audio_features(model, cep, groups, batch_size=batch_size)
    return sync_scores(v, a, vshift)


def score_with_project_syncnet(
    syncnet: Any, faces: np.ndarray, mel: np.ndarray, *, vshift: int = 15
) -> SyncScore:
    """Fallback scorer: the project's SyncNet expert via :func:`diff2lip.evaluation.sync.estimate_offset`.

    ``faces`` are 25 fps crops at the expert's ``image_size``; ``mel`` the Wav2Lip mel ``(80, T)``.
    Sync_d = its minimum mean distance, Sync_c = its confidence (median − minimum), as above.
    """
    from diff2lip.evaluation.sync import estimate_offset

    result = estimate_offset(faces, mel, syncnet, vshift)
    return SyncScore(
        sync_c=float(result.confidence),
        sync_d=float(result.min_dist),
        offset=int(result.offset),
        scorer="diff2lip-syncnet",
        dists=np.asarray(result.dists),
    )
