"""Diff2Lip training samples: shapes, content, reference outside the window, determinism, sampler, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diff2lip.data.dataset import ClipStore
from diff2lip.data.train_dataset import Diff2LipTrainDataset, EpochBatchSampler
from diff2lip.errors import Diff2LipError
from diff2lip.train.config import AugmentConfig

SIZE = 32  # the crops of the tiny_data_dir fixture


def test_sample_shapes_and_content(tiny_data_dir):
    ds = Diff2LipTrainDataset(tiny_data_dir, "train", samples_per_clip=3, seed=5, image_size=SIZE)
    store = ClipStore(tiny_data_dir, "train")
    assert len(ds) == 3 * 3
    for i in range(len(ds)):
        s = ds[i]
        assert s["frames"].shape == (5, 3, SIZE, SIZE) and s["frames"].dtype == torch.float32
        assert s["ref"].shape == (3, SIZE, SIZE)
        assert s["mels"].shape == (5, 80, 16) and s["sync_mel"].shape == (1, 80, 16)
        c, f0, r = int(s["clip"]), int(s["start"]), int(s["ref_index"])
        assert c == i // 3
        faces, mel = store.faces(c), store.mel(c)
        want = torch.from_numpy(faces[f0 : f0 + 5].astype(np.float32) / 255 * 2 - 1).permute(0, 3, 1, 2)
        torch.testing.assert_close(s["frames"], want)
        torch.testing.assert_close(
            s["ref"], torch.from_numpy(faces[r].astype(np.float32) / 255 * 2 - 1).permute(2, 0, 1)
        )
        # official windows: frame k starts at int(80·max(k−1, 0)/25); the sync window at int(80·f0/25)
        for j, k in enumerate(range(f0, f0 + 5)):
            a = int(80 * max(k - 1, 0) / 25)
            np.testing.assert_array_equal(s["mels"][j].numpy(), mel[:, a : a + 16])
        a = int(80 * f0 / 25)
        np.testing.assert_array_equal(s["sync_mel"][0].numpy(), mel[:, a : a + 16])


def test_reference_is_outside_the_window_and_draws_cover_the_clip(tiny_data_dir):
    ds = Diff2LipTrainDataset(tiny_data_dir, "train", samples_per_clip=50, seed=0)
    refs, starts = set(), set()
    for i in range(50):  # clip 0 (12 frames)
        s = ds.sample(i, epoch=3)
        f0, r = int(s["start"]), int(s["ref_index"])
        assert not f0 <= r < f0 + 5 and 0 <= r < 12 and 0 <= f0 <= 4
        refs.add(r)
        starts.add(f0)
    # 39 mel steps: frame f0+4's window int(80·(f0+3)/25) + 16 <= 39 holds for f0 <= 4
    # frame 4 lies in every such window, so it is never the reference
    assert starts == set(range(5)) and refs == set(range(12)) - {4}


def test_same_key_same_sample_other_epoch_other_sample(tiny_data_dir):
    a = Diff2LipTrainDataset(tiny_data_dir, "train", seed=1)
    b = Diff2LipTrainDataset(tiny_data_dir, "train", seed=1)
    for key in [(0, 0), (2, 5), (7, 11)]:
        sa, sb = a[key], b[key]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    draws = {(int(a[(e, 4)]["start"]), int(a[(e, 4)]["ref_index"])) for e in range(8)}
    assert len(draws) > 1


def test_augmentation_off_by_default_on_is_seeded_and_in_range(tiny_data_dir):
    plain = Diff2LipTrainDataset(tiny_data_dir, "train", seed=1, augment=AugmentConfig())
    aug = AugmentConfig(enabled=True, brightness=0.3, contrast=0.3, saturation=0.3, max_shift=3)
    ds = Diff2LipTrainDataset(tiny_data_dir, "train", seed=1, augment=aug)
    p, s1, s2 = plain[3], ds[3], ds[3]
    assert torch.equal(s1["frames"], s2["frames"]) and torch.equal(s1["ref"], s2["ref"])
    assert not torch.equal(p["frames"], s1["frames"])
    assert int(p["start"]) == int(s1["start"]) and torch.equal(p["mels"], s1["mels"])
    assert s1["frames"].min() >= -1 and s1["frames"].max() <= 1


def test_too_short_clip_and_size_mismatch_are_clear_errors(tmp_path, tiny_data_dir, data_dir_factory):
    short = data_dir_factory(tmp_path / "short", frames=(12, 5))
    with pytest.raises(Diff2LipError, match="clip 'clip1' has 5 frames; a training sample needs at least 6"):
        Diff2LipTrainDataset(short, "train")
    with pytest.raises(Diff2LipError, match="32x32 face crops but the model expects 64x64"):
        Diff2LipTrainDataset(tiny_data_dir, "train", image_size=64)


def test_sampler_shards_ranks_and_resumes_at_any_batch():
    n, bs = 23, 3
    r0 = EpochBatchSampler(n, bs, seed=4, rank=0, world_size=2)
    r1 = EpochBatchSampler(n, bs, seed=4, rank=1, world_size=2)
    assert r0.batches_per_epoch == 3  # 11 per rank, 3 full batches
    e0 = [i for b in range(3) for _, i in r0.batch(b)] + [i for b in range(3) for _, i in r1.batch(b)]
    assert len(set(e0)) == 18  # disjoint across ranks
    it = iter(r0)
    stream = [next(it) for _ in range(8)]
    assert [b[0][0] for b in stream] == [0, 0, 0, 1, 1, 1, 2, 2]  # epochs advance
    assert stream[3] != stream[0]
    resumed = iter(EpochBatchSampler(n, bs, seed=4, rank=0, world_size=2, start_batch=5))
    assert [next(resumed) for _ in range(3)] == stream[5:8]
    with pytest.raises(Diff2LipError, match="too few"):
        EpochBatchSampler(5, 3, world_size=2)


def test_workers_give_the_same_batches(tiny_data_dir):
    ds = Diff2LipTrainDataset(tiny_data_dir, "train", seed=2)

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        sampler = EpochBatchSampler(len(ds), 2, seed=2)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers)
        it = iter(loader)
        return [next(it) for _ in range(3)]

    for a, b in zip(batches(0), batches(2)):
        assert all(torch.equal(a[k], b[k]) for k in a)
