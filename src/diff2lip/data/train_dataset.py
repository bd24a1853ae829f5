"""Diff2Lip training samples (DESIGN.md §4) read from the ``preprocess`` / ``synth`` layout.

A sample is 5 consecutive face crops of one clip with their audio, and a reference frame of the same
clip that is *not* one of those 5 (the paper's identity reference; Wav2Lip draws it the same way)::

    frames    (5, 3, S, S)  float32 in [-1, 1]    crops f0 .. f0+4
    mels      (5, 80, 16)   float32               per-frame windows (frame k at time k/fps, DESIGN.md §3)
    sync_mel  (1, 80, 16)   float32               the group's sync-loss window (starts at int(80·f0/25))
    ref       (3, S, S)     float32 in [-1, 1]    a frame outside [f0, f0+5)
    clip, start, ref_index  int64                 where it came from (logging, tests)

Only window starts whose 5 audio windows lie fully inside the clip's mel are drawn (the official code
likewise drops frames whose window would be padded); the reference may be any other frame.

Randomness (window start, reference, augmentation) is drawn from
``np.random.default_rng((seed, epoch, index))`` only, so a sample depends on nothing but its key: worker
processes, DDP ranks and resumed runs all see the same data. :class:`EpochBatchSampler` yields batches of
``(epoch, index)`` keys from a seeded permutation per epoch, sharded across ranks, starting at any batch
number (the resume position).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from diff2lip.audio.windows import complete_windows, frame_times, mel_windows, sync_windows
from diff2lip.data.dataset import ClipStore
from diff2lip.errors import Diff2LipError

__all__ = ["Diff2LipTrainDataset", "EpochBatchSampler", "augment_images"]


def augment_images(images: np.ndarray, rng: np.random.Generator, aug: Any) -> np.ndarray:
    """One colour jitter and one shift applied to every image of ``images`` (K, H, W, 3) float in [0, 1].

    ``aug`` is an :class:`~diff2lip.train.config.AugmentConfig`. Brightness scales, contrast blends with
    each image's mean grey level, saturation blends with each pixel's grey value (factors uniform in
    ``[1 − a, 1 + a]``, applied in that order); the shift moves content by up to ``max_shift`` pixels per axis
    with the border replicated.
    """
    x = images
    b = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
    c = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
    s = rng.uniform(1 - aug.saturation, 1 + aug.saturation)
    dy, dx = rng.integers(-aug.max_shift, aug.max_shift + 1, size=2)
    luma = np.array([0.299, 0.587, 0.114], dtype=x.dtype)
    x = np.clip(x * b, 0.0, 1.0)
    mean_grey = (x @ luma).mean(axis=(1, 2))[:, None, None, None]  # (K, 1, 1, 1)
    x = np.clip((x - mean_grey) * c + mean_grey, 0.0, 1.0)
    grey = (x @ luma)[..., None]  # (K, H, W, 1)
    x = np.clip(grey + (x - grey) * s, 0.0, 1.0)
    if dy or dx:
        m = aug.max_shift
        h, w = x.shape[1:3]
        padded = np.pad(x, ((0, 0), (m, m), (m, m), (0, 0)), mode="edge")  # (K, H+2m, W+2m, 3)
        x = padded[:, m - dy : m - dy + h, m - dx : m - dx + w]
    return np.ascontiguousarray(x, dtype=np.float32)


class Diff2LipTrainDataset(Dataset):
    """Random 5-frame training samples over the clips of one split of a prepared data directory.

    Args:
        data: a ``preprocess`` / ``synth`` output directory, or an open :class:`ClipStore`.
        split: filelist to use (``train``) when ``data`` is a directory.
        nframes: frames per sample (5).
        samples_per_clip: samples per clip per epoch; ``len(dataset) = clips × samples_per_clip`` and
            index ``i`` draws from clip ``i // samples_per_clip``.
        seed: the data seed.
        augment: an :class:`~diff2lip.train.config.AugmentConfig` (``None`` or ``enabled: false`` = off).
        image_size: expected crop side (the model's); a mismatch is a one-line error.
    """

    def __init__(
        self,
        data: str | Path | ClipStore,
        split: str = "train",
        *,
        nframes: int = 5,
        samples_per_clip: int = 4,
        seed: int = 0,
        augment: Any = None,
        image_size: int | None = None,
    ):
        self.store = data if isinstance(data, ClipStore) else ClipStore(data, split)
        self.data_dir = self.store.data_dir
        self.nframes = nframes
        self.samples_per_clip = samples_per_clip
        self.seed = seed
        self.augment = augment if augment is not None and augment.enabled else None
        if image_size is not None and self.store.size != image_size:
            raise Diff2LipError(
                f"the clips have {self.store.size}x{self.store.size} face crops but the model expects "
                f"{image_size}x{image_size} (model.image_size)",
                self.data_dir,
            )
        self.num_starts = [self._count_starts(i) for i in range(len(self.store))]

    def _count_starts(self, i: int) -> int:
        """Number of window starts ``f0`` of clip ``i`` whose 5 audio windows lie fully inside the mel."""
        n, f = self.store.num_frames(i), self.nframes
        where = self.store.clip_dir(i)
        if n < f + 1:
            raise Diff2LipError(
                f"clip '{self.store.ids[i]}' has {n} frames; a training sample needs at least {f + 1} "
                f"({f} consecutive frames and a reference outside them)",
                where,
            )
        last = frame_times(n, self.store.fps)[f - 1 :]  # time of frame f0+4 for f0 = 0 .. n−f
        ok = complete_windows(self.store.mel(i).shape[1], last)
        count = int(np.argmin(ok)) if not ok.all() else len(ok)  # starts only grow with f0
        if count == 0:
            raise Diff2LipError(
                f"clip '{self.store.ids[i]}' has no {f} consecutive frames with complete audio windows "
                f"(mel has {self.store.mel(i).shape[1]} steps for {n} frames)",
                where,
            )
        return count

    def __len__(self) -> int:
        return len(self.store) * self.samples_per_clip

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return self.sample(int(index), int(epoch))

    def sample(self, index: int, epoch: int = 0) -> dict[str, torch.Tensor]:
        """The sample for ``(epoch, index)``; the same key always gives the same sample."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range [0, {len(self)})")
        ci = index // self.samples_per_clip
        faces, mel, fps = self.store.faces(ci), self.store.mel(ci), float(self.store.fps)
        n, f = len(faces), self.nframes
        rng = np.random.default_rng((self.seed, epoch, index))
        start = int(rng.integers(0, self.num_starts[ci]))
        ref_i = int(rng.integers(0, n - f))  # n − f frames lie outside the window
        if ref_i >= start:
            ref_i += f
        idx = [*range(start, start + f), ref_i]
        images = np.asarray(faces[idx], dtype=np.float32) / 255.0  # (F+1, S, S, 3)
        if self.augment is not None:
            images = augment_images(images, rng, self.augment)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).mul(2.0).sub(1.0)  # (F+1, 3, S, S)
        times = frame_times(start + f, fps)[start:]
        mels = mel_windows(mel, times)  # (F, 80, 16)
        sync = sync_windows(mel, times[:1])  # (1, 80, 16)
        return {
            "frames": x[:f].contiguous(),
            "ref": x[f].contiguous(),
            "mels": torch.from_numpy(mels),
            "sync_mel": torch.from_numpy(sync),
            "clip": torch.tensor(ci),
            "start": torch.tensor(start),
            "ref_index": torch.tensor(ref_i),
        }


class EpochBatchSampler(Sampler):
    """Endless batches of ``(epoch, index)`` keys: a seeded permutation per epoch, sharded over ranks.

    Batch number ``k`` (0-based, per rank) belongs to epoch ``k // batches_per_epoch``; its keys are
    a deterministic function of ``(seed, epoch, rank, k)``, so starting at ``start_batch`` resumes exactly
    where a run stopped however many batches the loader had prefetched. Each epoch every rank gets
    ``len(dataset) // world_size`` indices (the remainder is dropped) and incomplete batches are dropped.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.per_rank = num_samples // world_size
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise Diff2LipError(
                f"{num_samples} samples per epoch are too few for batch_size {batch_size} × {world_size} "
                "process(es): add clips, raise data.samples_per_clip or lower data.batch_size"
            )

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This rank's indices of ``epoch`` in order."""
        perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_samples)
        return perm[self.rank :: self.world_size][: self.per_rank]

    def batch(self, k: int) -> list[tuple[int, int]]:
        epoch, pos = divmod(k, self.batches_per_epoch)
        idx = self.epoch_indices(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]
        return [(epoch, int(i)) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.start_batch
        cached_epoch, cached = -1, np.empty(0, np.int64)
        while True:
            epoch, pos = divmod(k, self.batches_per_epoch)
            if epoch != cached_epoch:
                cached_epoch, cached = epoch, self.epoch_indices(epoch)
            yield [(epoch, int(i)) for i in cached[pos * self.batch_size : (pos + 1) * self.batch_size]]
            k += 1

    def __len__(self) -> int:  # per epoch; the iterator itself never ends
        return self.batches_per_epoch
