"""Fixtures for the training tests: a tiny prepared data directory and LPIPS weights (the SyncNet is shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diff2lip.data import layout
from diff2lip.models.perceptual import LPIPS

SIZE = 32


def make_data_dir(
    root: Path, *, frames: tuple[int, ...] = (12, 16, 20), size: int = SIZE, seed: int = 0
) -> Path:
    """Clips of random crops and mels in the prepared-data layout, all in the train split."""
    rng = np.random.default_rng(seed)
    ids = []
    for i, n in enumerate(frames):
        rec = layout.ClipRecord(id=f"clip{i}", num_frames=n, fps=25.0, size=size)
        d = layout.clip_dir(root, rec.id)
        d.mkdir(parents=True)
        # frame k is filled with a value that encodes k (so tests can tell frames apart) plus noise
        base = (np.arange(n) * 10 % 200).astype(np.uint8)[:, None, None, None]
        faces = (base + rng.integers(0, 50, (n, size, size, 3))).astype(np.uint8)
        np.save(d / layout.FACES, faces)
        mel = rng.uniform(-4, 4, (80, int(n / 25 * 80) + 1)).astype(np.float32)
        np.save(d / layout.MEL, mel)
        layout.write_meta(root, rec)
        ids.append(rec.id)
    layout.rebuild_manifest(root)
    layout.write_filelists(root, {"train": ids, "val": [], "test": []})
    return root


@pytest.fixture(scope="session")
def data_dir_factory():
    """``make_data_dir(root, frames=..., size=...)``: build a data directory in a test."""
    return make_data_dir


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def lpips_files(tmp_path_factory) -> tuple[Path, Path]:
    """Random AlexNet weights in torchvision's key layout (with a classifier) and random LPIPS heads."""
    d = tmp_path_factory.mktemp("lpips")
    g = torch.Generator().manual_seed(0)
    net = LPIPS("alex")
    backbone = {
        f"features.{k}": torch.randn(v.shape, generator=g) * 0.05
        for k, v in net.features.state_dict().items()
    }
    backbone["classifier.1.weight"] = torch.zeros(4, 4)
    heads = {
        f"lin{i}.model.1.weight": torch.rand(h.model[1].weight.shape, generator=g)
        for i, h in enumerate(net.heads)
    }
    torch.save(backbone, d / "alexnet-owt-7be5be79.pth")
    torch.save(heads, d / "alex.pth")
    return d / "alexnet-owt-7be5be79.pth", d / "alex.pth"


@pytest.fixture()
def tiny_overrides(tiny_data_dir, tiny_syncnet_dir, lpips_files) -> list[str]:
    return [
        f"data.data_dir={tiny_data_dir}",
        f"losses.syncnet_dir={tiny_syncnet_dir}",
        f"losses.lpips.backbone_path={lpips_files[0]}",
        f"losses.lpips.heads_path={lpips_files[1]}",
    ]
