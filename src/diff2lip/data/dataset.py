"""Training data read from a prepared data directory (:mod:`diff2lip.data.layout`).

* :class:`ClipStore`: the clips of one split — ids from ``filelists/<split>.txt``, records from
  ``manifest.jsonl``, ``faces.npy`` / ``mel.npy`` memory-mapped lazily per clip (each DataLoader worker
  opens its own maps). Shared by every trainer (SyncNet here, Diff2Lip's dataset later).
* :class:`SyncPairDataset`: balanced in-sync / off-sync pairs for the SyncNet expert (issue 4;
  Wav2Lip's expert training): 5 consecutive lower halves and one 80×16 mel window.

Determinism: sample ``index`` of epoch ``epoch`` is drawn from ``np.random.default_rng((seed, epoch,
index))`` only, so it is the same whatever the worker count, the DDP rank that draws it, or a resume.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diff2lip.audio.windows import complete_windows, frame_times, sync_windows
from diff2lip.data import layout
from diff2lip.errors import Diff2LipError

__all__ = ["ClipStore", "SyncPairDataset"]


@dataclass(frozen=True)
class _Clip:
    record: layout.ClipRecord
    directory: Path


class ClipStore:
    """The prepared clips of one split, with lazily memory-mapped arrays.

    Args:
        data_dir: a prepared data directory (``manifest.jsonl``, ``filelists/``, ``clips/``).
        split: ``"train"``, ``"val"``, ``"test"`` (ids from ``filelists/<split>.txt``), or ``None`` for
            every clip of the manifest.

    Clips named in the filelist but missing from the manifest are skipped with a warning (an unfinished
    preprocess run); an empty result is an error. All clips must share one crop size and 25 fps.
    """

    def __init__(self, data_dir: str | Path, split: str | None = None):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise Diff2LipError("data directory not found", self.data_dir)
        records = {r.id: r for r in layout.read_manifest(self.data_dir)}
        if split is None:
            ids = sorted(records)
        else:
            ids = layout.read_filelist(self.data_dir, split)
            missing = [i for i in ids if i not in records]
            if missing:
                warnings.warn(
                    f"{self.data_dir}: {len(missing)} clip(s) of filelist '{split}' are not in the manifest "
                    f"(first: {missing[0]}); skipped",
                    stacklevel=2,
                )
                ids = [i for i in ids if i in records]
        if not ids:
            where = f"split '{split}'" if split else "the manifest"
            raise Diff2LipError(f"no clips in {where}", self.data_dir)
        self.split = split
        self._clips = [_Clip(records[i], layout.clip_dir(self.data_dir, i)) for i in ids]
        sizes = {c.record.size for c in self._clips}
        if len(sizes) != 1:
            raise Diff2LipError(f"clips have different crop sizes {sorted(sizes)}", self.data_dir)
        self.size = sizes.pop()
        rates = {float(c.record.fps) for c in self._clips}
        if rates != {25.0}:
            raise Diff2LipError(f"prepared clips must be 25 fps, found {sorted(rates)}", self.data_dir)
        self.fps = 25.0
        self._faces: dict[int, np.ndarray] = {}
        self._mels: dict[int, np.ndarray] = {}

    # memory maps are per process: DataLoader workers reopen them
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_faces"], state["_mels"] = {}, {}
        return state

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def ids(self) -> list[str]:
        return [c.record.id for c in self._clips]

    def record(self, i: int) -> layout.ClipRecord:
        return self._clips[i].record

    def clip_dir(self, i: int) -> Path:
        return self._clips[i].directory

    def num_frames(self, i: int) -> int:
        return int(self._clips[i].record.num_frames)

    def speaker(self, i: int) -> str:
        """The clip's speaker (``""`` when unknown; preprocess uses the source sub-directory)."""
        return self._clips[i].record.speaker

    def faces(self, i: int) -> np.ndarray:
        """``(N, S, S, 3)`` uint8, memory-mapped read-only."""
        if i not in self._faces:
            path = self._clips[i].directory / layout.FACES
            arr = _load(path)
            n, s = self.num_frames(i), self.size
            if arr.shape != (n, s, s, 3) or arr.dtype != np.uint8:
                raise Diff2LipError(
                    f"expected ({n}, {s}, {s}, 3) uint8 face crops, found {arr.shape} {arr.dtype}", path
                )
            self._faces[i] = arr
        return self._faces[i]

    def mel(self, i: int) -> np.ndarray:
        """``(80, T)`` float32 normalised mel, memory-mapped read-only."""
        if i not in self._mels:
            path = self._clips[i].directory / layout.MEL
            arr = _load(path)
            if arr.ndim != 2 or arr.shape[0] != 80 or arr.dtype != np.float32:
                raise Diff2LipError(f"expected (80, T) float32 mel, found {arr.shape} {arr.dtype}", path)
            self._mels[i] = arr
        return self._mels[i]


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise Diff2LipError("missing file (clip not prepared?)", path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise Diff2LipError(f"cannot read array: {e}", path) from None


def lower_halves(faces: np.ndarray) -> np.ndarray:
    """``(F, S, S, 3)`` uint8 crops → ``(3F, S/2, S)`` float32 in [0, 1], frame-major channels (SyncNet input)."""
    f, s = faces.shape[0], faces.shape[1]
    half = np.asarray(faces[:, s // 2 :], dtype=np.float32) / 255.0  # (F, S/2, S, 3)
    return np.ascontiguousarray(half.transpose(0, 3, 1, 2)).reshape(f * 3, s - s // 2, s)  # (3F, S/2, S)


class SyncPairDataset(torch.utils.data.Dataset):
    """In-sync / off-sync (faces, mel) pairs for the SyncNet expert (Wav2Lip's expert training).

    Sample ``index`` of the current epoch: a clip and a start frame ``f0`` are drawn; ``faces`` are the
    lower halves of frames ``f0 .. f0+nframes-1`` (``(3·nframes, S/2, S)`` float in [0, 1]); ``mel`` is the
    sync window starting at mel frame ``int(80·f0'/25)`` (DESIGN.md §3) where ``f0' = f0`` for a positive
    (``label 1``) and, for a negative (``label 0``), either another clip's random group start (with
    probability ``other_clip_fraction``) or the same clip's start shifted by at least ``min_offset``
    frames. Only windows that lie fully inside the mel are used. Each sample also names its sources:
    ``clip`` / ``frame`` (store index and first frame of the faces), ``audio_clip`` / ``audio_frame``.

    Labels are balanced by construction, not by chance: sample ``index`` is positive iff
    ``floor((index+1)·p) > floor(index·p)`` for ``p = positive_fraction``, so with ``p = 0.5`` labels
    alternate and any contiguous run of an even number of samples is exactly half positive.

    Indices at or past ``samples_per_epoch`` continue into later epochs (``index // samples_per_epoch``
    is added to the epoch), so a step-indexed sampler needs no :meth:`set_epoch`; ``len()`` is one epoch
    (``DistributedSampler``-compatible).

    Clips too short to sample (fewer than ``nframes + min_offset`` usable frames) are skipped with a
    warning; if none is usable it is an error.
    """

    def __init__(
        self,
        store: ClipStore,
        *,
        nframes: int = 5,
        min_offset: int = 5,
        positive_fraction: float = 0.5,
        other_clip_fraction: float = 0.5,
        samples_per_epoch: int = 10_000,
        seed: int = 0,
    ):
        if not 0.0 < positive_fraction < 1.0:
            raise Diff2LipError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
        if not 0.0 <= other_clip_fraction <= 1.0:
            raise Diff2LipError(f"other_clip_fraction must be in [0, 1], got {other_clip_fraction}")
        if nframes < 1 or min_offset < 1 or samples_per_epoch < 1:
            raise Diff2LipError("nframes, min_offset and samples_per_epoch must be >= 1")
        self.store = store
        self.nframes = nframes
        self.min_offset = min_offset
        self.positive_fraction = positive_fraction
        self.other_clip_fraction = other_clip_fraction
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.epoch = 0
        need = nframes + min_offset
        starts, usable, short = [], [], []
        for i in range(len(store)):
            n = self.group_count(i)
            if n + nframes - 1 < need or n < 1:
                short.append(store.ids[i])
                continue
            usable.append(i)
            starts.append(n)
        if not usable:
            raise Diff2LipError(
                f"no clip is long enough for SyncNet pairs (need {need} frames with complete audio windows; "
                f"{len(short)} clip(s) too short)",
                store.data_dir,
            )
        if short:
            warnings.warn(
                f"{store.data_dir}: skipping {len(short)} clip(s) shorter than {need} frames "
                f"(first: {short[0]})",
                stacklevel=2,
            )
        self.clips = np.asarray(usable, dtype=np.int64)
        if len(usable) < 2:  # no other clip to take off-sync audio from
            self.other_clip_fraction = 0.0
        self.num_groups = np.asarray(starts, dtype=np.int64)  # group starts 0 .. n-1 per usable clip

    def group_count(self, i: int) -> int:
        """Number of 5-frame group starts of clip ``i`` whose frames exist and whose sync window is complete."""
        n_frames = self.store.num_frames(i) - self.nframes + 1
        n_mel = self.store.mel(i).shape[1]
        # start f is valid while its sync window (floor(80 f / 25), no lead) ends inside the mel
        starts = frame_times(max(n_frames, 0), self.store.fps)
        return int(np.count_nonzero(complete_windows(n_mel, starts, lead=0.0)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def is_positive(self, index: int) -> bool:
        p = self.positive_fraction
        return int(np.floor((index + 1) * p)) > int(np.floor(index * p))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            raise IndexError(index)
        epoch = self.epoch + index // self.samples_per_epoch
        rng = np.random.default_rng((self.seed, epoch, index % self.samples_per_epoch))
        positive = self.is_positive(index)
        k = int(rng.integers(len(self.clips)))
        clip, n = int(self.clips[k]), int(self.num_groups[k])
        f0 = int(rng.integers(n))
        audio_clip, a0 = clip, f0
        if not positive:
            if rng.random() < self.other_clip_fraction:
                k2 = int(rng.integers(len(self.clips) - 1))
                k2 += k2 >= k  # any other clip
                audio_clip = int(self.clips[k2])
                a0 = int(rng.integers(int(self.num_groups[k2])))
            else:
                far = np.flatnonzero(np.abs(np.arange(n) - f0) >= self.min_offset)
                # a clip of barely min_offset + 1 starts may have none: then the farthest start
                farthest = 0 if f0 >= n - 1 - f0 else n - 1
                a0 = int(far[int(rng.integers(len(far)))]) if len(far) else farthest
        faces = lower_halves(self.store.faces(clip)[f0 : f0 + self.nframes])  # (3F, S/2, S)
        mel = sync_windows(self.store.mel(audio_clip), [a0 / self.store.fps])  # (1, 80, 16)
        return {
            "faces": torch.from_numpy(faces),
            "mel": torch.from_numpy(mel),  # (1, 80, 16)
            "label": torch.tensor(1.0 if positive else 0.0),
            "clip": torch.tensor(clip),  # store index of the video
            "frame": torch.tensor(f0),  # first video frame
            "audio_clip": torch.tensor(audio_clip),
            "audio_frame": torch.tensor(a0),  # group start the mel window belongs to
        }
