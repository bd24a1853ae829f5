"""Audio-visual offset estimation with a SyncNet expert (issue 4; syncnet_python's recipe, DESIGN.md §5).

Every 5-frame group of face crops (frames ``i .. i+4`` at 25 fps) is embedded by the expert's face
encoder and every audio group (the sync window starting at mel frame ``int(80·j/25)``, DESIGN.md §3) by
its audio encoder. For each offset ``k`` in ``[-K, K]`` the distance is averaged over the video groups
``i`` paired with audio groups ``i + k``; the same video groups are used for every ``k`` (those whose
partner exists for all offsets), so the averages are comparable. As in syncnet_python:

* distance = Euclidean distance between the (L2-normalised) embeddings, ``sqrt(2 − 2·cos)``;
* ``offset = argmin_k dist[k]``, ``min_dist = dist[offset]``, ``confidence = median_k dist[k] − min_dist``.

**Sign convention.** ``offset = k > 0`` means the audio *lags* the video by ``k`` frames (it is delayed:
the sound of video frame ``i`` is heard at frame ``i + k``); ``k < 0`` means the audio leads. To re-sync,
advance the audio by ``k`` frames (``k · 40`` ms at 25 fps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from diff2lip.audio.windows import MEL_FPS, WINDOW, complete_windows, frame_times, sync_windows
from diff2lip.data.dataset import lower_halves
from diff2lip.errors import Diff2LipError

__all__ = [
    "OffsetResult",
    "audio_embeddings",
    "crop_video_faces",
    "device_of",
    "estimate_offset",
    "offset_from_embeddings",
    "shift_audio",
    "sync_offset_file",
    "video_embeddings",
]

FPS = 25.0


class _Expert(Protocol):
    """What the estimator needs of a SyncNet: its config (``image_size``, ``nframes``) and two encoders."""

    config: Any

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor: ...

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor: ...


@dataclass
class OffsetResult:
    """The estimated AV offset of a clip (see the module docstring for the sign convention).

    Attributes:
        offset: frames the audio lags the video (``> 0``: audio delayed; ``< 0``: audio early).
        confidence: ``median(dists) − min_dist`` (syncnet_python's confidence; larger is surer).
        min_dist: the mean embedding distance at ``offset``.
        offsets: ``(2K+1,)`` the offsets tried, ``-K .. K``.
        dists: ``(2K+1,)`` mean distance per offset.
        num_groups: video groups averaged per offset.
        fps: frame rate the offset is counted in (25).
    """

    offset: int
    confidence: float
    min_dist: float
    offsets: np.ndarray
    dists: np.ndarray
    num_groups: int
    fps: float = FPS

    @property
    def offset_seconds(self) -> float:
        return self.offset / self.fps

    def summary(self) -> str:
        if self.offset > 0:
            meaning = f"audio lags the video by {self.offset} frame(s), {1000 * self.offset_seconds:.0f} ms"
        elif self.offset < 0:
            meaning = (
                f"audio leads the video by {-self.offset} frame(s), {-1000 * self.offset_seconds:.0f} ms"
            )
        else:
            meaning = "audio and video in sync"
        return (
            f"offset {self.offset:+d} ({meaning}); confidence {self.confidence:.3f}, "
            f"min distance {self.min_dist:.3f} over {self.num_groups} groups"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "offset_seconds": self.offset_seconds,
            "confidence": self.confidence,
            "min_dist": self.min_dist,
            "num_groups": self.num_groups,
            "offsets": [int(k) for k in self.offsets],
            "dists": [float(d) for d in self.dists],
        }


def device_of(model: Any) -> torch.device:
    """The device of a module's parameters (the CPU for a parameter-less module or a stand-in object)."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def video_embeddings(syncnet: _Expert, faces: np.ndarray, *, batch_size: int = 64) -> torch.Tensor:
    """Face embeddings ``(N − nframes + 1, D)`` of every group of consecutive crops ``(N, S, S, 3)`` uint8."""
    cfg = syncnet.config
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[3] != 3 or faces.dtype != np.uint8:
        raise ValueError(f"faces must be (N, S, S, 3) uint8, got {faces.shape} {faces.dtype}")
    if faces.shape[1:3] != (cfg.image_size, cfg.image_size):
        raise Diff2LipError(
            f"face crops are {faces.shape[2]}x{faces.shape[1]} but the SyncNet expects {cfg.image_size} px"
        )
    nf = cfg.nframes
    n_groups = len(faces) - nf + 1
    if n_groups < 1:
        raise Diff2LipError(f"need at least {nf} frames, got {len(faces)}")
    device = device_of(syncnet)
    out = []
    for first in range(0, n_groups, batch_size):
        last = min(first + batch_size, n_groups)
        halves = lower_halves(faces[first : last - 1 + nf])  # (3·(b+F−1), S/2, S), each frame once
        stacked = np.stack([halves[3 * i : 3 * (i + nf)] for i in range(last - first)])  # (b, 3F, S/2, S)
        x = torch.from_numpy(stacked).to(device)
        out.append(syncnet.embed_faces(x).float().cpu())
    return torch.cat(out)


def audio_group_count(num_mel_steps: int, fps: float = FPS) -> int:
    """Number of groups ``j`` whose sync window (start ``floor(80·j/fps)``, 16 frames) lies inside the mel."""
    if num_mel_steps < WINDOW:
        return 0
    candidates = int(np.ceil((num_mel_steps - WINDOW + 1) * fps / MEL_FPS)) + 2  # a few past the last
    return int(np.count_nonzero(complete_windows(num_mel_steps, frame_times(candidates, fps), lead=0.0)))


@torch.no_grad()
def audio_embeddings(
    syncnet: _Expert, mel: np.ndarray, *, fps: float = FPS, batch_size: int = 256
) -> torch.Tensor:
    """Audio embeddings ``(Ga, D)`` of the sync windows of groups ``j = 0 .. Ga-1`` (complete windows only)."""
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[0] != 80:
        raise ValueError(f"mel must be (80, T), got {mel.shape}")
    n = audio_group_count(mel.shape[1], fps)
    if n < 1:
        raise Diff2LipError(f"audio too short: {mel.shape[1]} mel frames, need at least {WINDOW}")
    windows = sync_windows(mel, np.arange(n) / fps)[:, None]  # (Ga, 1, 80, 16)
    device = device_of(syncnet)
    out = []
    for first in range(0, n, batch_size):
        x = torch.from_numpy(windows[first : first + batch_size]).to(device)
        out.append(syncnet.embed_audio(x).float().cpu())
    return torch.cat(out)


def offset_from_embeddings(
    video_emb: torch.Tensor, audio_emb: torch.Tensor, max_offset: int = 15, *, fps: float = FPS
) -> OffsetResult:
    """The offset search on precomputed embeddings (``(Gv, D)`` video, ``(Ga, D)`` audio; unit length).

    Uses video groups ``i`` in ``[K, min(Gv, Ga − K))`` so that audio group ``i + k`` exists for every
    ``k`` in ``[-K, K]``.
    """
    if max_offset < 0:
        raise Diff2LipError(f"--max-offset must be >= 0, got {max_offset}")
    k_max = int(max_offset)
    gv, ga = len(video_emb), len(audio_emb)
    first, stop = k_max, min(gv, ga - k_max)
    if stop <= first:
        raise Diff2LipError(
            f"clip too short to search ±{k_max} frames: {gv} video and {ga} audio groups "
            f"(need more than {2 * k_max} of each); lower --max-offset"
        )
    v = video_emb[first:stop].double()  # (G, D)
    offsets = np.arange(-k_max, k_max + 1)
    dists = np.empty(len(offsets))
    for n, k in enumerate(offsets):
        a = audio_emb[first + k : stop + k].double()  # (G, D)
        dists[n] = float(torch.linalg.vector_norm(v - a, dim=1).mean())
    best = int(np.argmin(dists))
    return OffsetResult(
        offset=int(offsets[best]),
        confidence=float(np.median(dists) - dists[best]),
        min_dist=float(dists[best]),
        offsets=offsets,
        dists=dists,
        num_groups=stop - first,
        fps=fps,
    )


def estimate_offset(
    faces: np.ndarray,
    mel: np.ndarray,
    syncnet: _Expert,
    max_offset: int = 15,
    *,
    batch_size: int = 64,
) -> OffsetResult:
    """AV offset of 25 fps face crops ``(N, S, S, 3)`` uint8 against their speech's mel ``(80, T)``.

    ``S`` must be the expert's ``image_size``. See the module docstring for the method and the sign of
    the result (``offset > 0``: the audio is delayed).
    """
    was_training = getattr(syncnet, "training", False)
    if isinstance(syncnet, torch.nn.Module):
        syncnet.eval()
    try:
        v = video_embeddings(syncnet, faces, batch_size=batch_size)
        a = audio_embeddings(syncnet, mel)
    finally:
        if isinstance(syncnet, torch.nn.Module):
            syncnet.train(was_training)
    return offset_from_embeddings(v, a, max_offset)


def shift_audio(wav: np.ndarray, frames: int, *, fps: float = FPS, sample_rate: int = 16000) -> np.ndarray:
    """Delay (``frames > 0``) or advance (``< 0``) a waveform by whole video frames, keeping its length.

    A delay prepends silence and drops the tail; an advance drops the head and appends silence. The
    result's :func:`estimate_offset` against the unshifted video is ``+frames`` (the sign convention).
    """
    wav = np.asarray(wav)
    n = round(abs(frames) * sample_rate / fps)
    if n == 0:
        return wav.copy()
    n = min(n, len(wav))
    pad = np.zeros(n, dtype=wav.dtype)
    if frames > 0:
        return np.concatenate([pad, wav[: len(wav) - n]])
    return np.concatenate([wav[n:], pad])


# ------------------------------------------------------------------------------------------- files


def _resample_indices(times: np.ndarray, fps: float, nominal_dt: float) -> np.ndarray:
    """Source frame shown at each output time ``k / fps`` (the last frame with ``t ≤ k / fps``)."""
    end = float(times[-1]) + nominal_dt
    n_out = max(1, int(np.ceil((end - 1e-6) * fps)))
    grid = np.arange(n_out) / fps
    return np.clip(np.searchsorted(times, grid + 1e-6, side="right") - 1, 0, len(times) - 1)


def crop_video_faces(
    video: str | Path,
    size: int,
    *,
    face_track: str | Path | None = None,
    detector: str = "dlib",
    fps: float = FPS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``video``, find its face per frame and return ``(N, size, size, 3)`` uint8 crops at ``fps``.

    Faces come from ``face_track`` (a saved :class:`~diff2lip.video.track.FaceTrack`, e.g. a synthetic
    clip's ``track.json``) or from detection + tracking as in ``diff2lip generate``. Frames without a face
    take the nearest face's box. Other frame rates (and variable frame rate) are resampled to ``fps`` by
    timestamp (the frame shown at ``k / fps``). Returns the crops and facts for the report.
    """
    from diff2lip.inference.runner import GenerateOptions, get_face_track
    from diff2lip.video.crop import crop_faces
    from diff2lip.video.io import VideoReader
    from diff2lip.video.track import fill_missing_boxes

    path = Path(video)
    reader = VideoReader(path)
    if reader.info.is_image:
        raise Diff2LipError("is a still image: an AV offset needs a video", path)
    opts = GenerateOptions(detector=detector, face_track=None if face_track is None else str(face_track))
    if face_track is not None and not Path(face_track).is_file():
        raise Diff2LipError("face track file not found", face_track)
    track = get_face_track(path, reader, opts, None)
    has = track.has_face
    if not has.any():
        raise Diff2LipError("no face found in any frame", path)
    boxes = fill_missing_boxes(track.int_boxes())
    crops, times = [], []
    k = 0
    for chunk in reader:
        m = len(chunk)
        if k + m > len(boxes):
            raise Diff2LipError(f"the face track has {len(boxes)} frames, the video has more", path)
        crops.append(crop_faces(chunk.frames, boxes[k : k + m], size))  # (m, S, S, 3)
        times.append(np.asarray(chunk.times, dtype=np.float64))
        k += m
    if k != len(boxes):
        raise Diff2LipError(f"the face track has {len(boxes)} frames, the video {k}", path)
    all_crops = np.concatenate(crops)  # (N_src, S, S, 3)
    t = np.concatenate(times)
    src_fps = reader.fps if reader.fps and reader.fps > 0 else fps
    regular = abs(src_fps - fps) < 1e-3 and np.allclose(np.diff(t), 1.0 / fps, atol=2e-3)
    if not regular:
        all_crops = all_crops[_resample_indices(t, fps, 1.0 / src_fps)]
    facts = {
        "frames": len(all_crops),
        "source_fps": float(src_fps),
        "resampled": not regular,
        "frames_without_face": int((~has).sum()),
        "faces": track.summary(),
    }
    return all_crops, facts


def sync_offset_file(
    video: str | Path,
    audio: str | Path | None,
    syncnet_dir: str | Path,
    *,
    face_track: str | Path | None = None,
    max_offset: int = 15,
    detector: str = "dlib",
    device: str = "auto",
) -> tuple[OffsetResult, dict[str, Any]]:
    """``diff2lip sync-offset``: the AV offset of a video against ``audio`` (default: its own track)."""
    from diff2lip.audio import load_audio, melspectrogram
    from diff2lip.models.syncnet import load_syncnet
    from diff2lip.train.distributed import resolve_device
    from diff2lip.video.io import probe

    syncnet = load_syncnet(syncnet_dir, device=resolve_device(device))
    source = Path(audio) if audio is not None else Path(video)
    if audio is None and not probe(source).has_audio:
        raise Diff2LipError("the video has no audio track: pass AUDIO", source)
    wav = load_audio(source, 16000)
    mel = melspectrogram(wav)  # (80, T)
    faces, facts = crop_video_faces(
        video, syncnet.config.image_size, face_track=face_track, detector=detector
    )
    result = estimate_offset(faces, mel, syncnet, max_offset)
    return result, facts
