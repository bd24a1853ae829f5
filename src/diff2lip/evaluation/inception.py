"""The FID Inception-v3 (pytorch-fid's network) without torchvision (DESIGN.md §5).

FID is defined with TensorFlow's 2015-12-05 Inception graph; pytorch-fid ported it to PyTorch as
torchvision's ``Inception3`` (1008 classes, no auxiliary head) with four patched block types:
``FIDInceptionA``/``FIDInceptionC``/``FIDInceptionE_1`` average-pool without counting the zero padding
(TensorFlow's ``count_include_pad=False``) and ``FIDInceptionE_2`` (``Mixed_7c``) max-pools. This module
builds the same network so that pytorch-fid's weights file ``pt_inception-2015-12-05-6726825d.pth`` loads
with ``strict=True`` (identical state-dict keys), without importing torchvision (whose wheel pairing
would pull a second multi-GB torch).

Features are the 2048-d output of the final average pool ("pool3"). Input: RGB in [0, 1] (or uint8
[0, 255]), resized to 299×299 bilinearly (``align_corners=False``) and scaled to [-1, 1], as pytorch-fid.

No downloads: the weights come from a path the user gives, or from the torch hub cache where pytorch-fid
itself stores them (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diff2lip.errors import Diff2LipError
from diff2lip.models.serialization import load_state_dict_strict, read_torch_state_dict

__all__ = [
    "FID_WEIGHTS_NAME",
    "FID_WEIGHTS_URL",
    "FIDInceptionV3",
    "find_fid_weights",
    "inception_features",
    "load_fid_inception",
]

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm (eps 1e-3) → ReLU; keys ``conv.*`` and ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **kw: object):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **kw)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3×3 stride-1 average pool that ignores the zero padding (TensorFlow's behaviour)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35×35 block: 1×1, 5×5, double 3×3 and pooled branches (``Mixed_5b/c/d``)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 → 17 (``Mixed_6a``; unpatched)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (``Mixed_6b..6e``)."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 → 8 (``Mixed_7a``; unpatched)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """8×8 block with expanded 1×3 / 3×1 branches; ``pool="avg"`` is ``FIDInceptionE_1`` (``Mixed_7b``,
    padding-excluding average pool), ``pool="max"`` is ``FIDInceptionE_2`` (``Mixed_7c``, max pool)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3 (``fid_inception_v3()``); ``forward`` returns ``(B, 2048)`` pool3.

    The module names are torchvision's ``Inception3`` names, so the state dict is that of pytorch-fid's
    weights file (including the unused 1008-way ``fc`` classifier, kept so ``strict=True`` loading works).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features ``(B, 2048)`` of RGB ``images`` ``(B, 3, H, W)`` float in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0  # [0, 1] → [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a):
            x = block(x)  # ends (B, 768, 17, 17)
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a):
            x = block(x)  # ends (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # (B, 2048): adaptive average pool to 1×1, flattened


def torch_hub_checkpoints() -> Path:
    """Where torch hub (and so pytorch-fid) caches weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_fid_weights(path: str | Path | None = None) -> Path:
    """The pytorch-fid weights file: ``path`` if given, else the torch hub cache; never downloads.

    Raises:
        Diff2LipError: the file is missing (the message says where to get it).
    """
    if path is not None:
        p = Path(os.path.expanduser(str(path)))
        if p.is_dir():
            p = p / FID_WEIGHTS_NAME
        if not p.is_file():
            raise Diff2LipError(f"FID Inception weights not found; download {FID_WEIGHTS_URL}", p)
        return p
    cached = torch_hub_checkpoints() / FID_WEIGHTS_NAME
    if not cached.is_file():
        raise Diff2LipError(
            f"FID Inception weights not found (pass --fid-weights, or put {FID_WEIGHTS_NAME} from "
            f"{FID_WEIGHTS_URL} there)",
            cached,
        )
    return cached


def load_fid_inception(
    path: str | Path | None = None, *, device: str | torch.device = "cpu"
) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load pytorch-fid's weights (``strict=True``, ``weights_only``)."""
    weights = find_fid_weights(path)
    state = read_torch_state_dict(weights, "the FID Inception weights", f"download {FID_WEIGHTS_URL}")
    model = FIDInceptionV3()
    load_state_dict_strict(model, state, weights, what="pytorch-fid Inception weights file")
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def inception_features(model: FIDInceptionV3, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Pool3 features ``(N, 2048)`` float64 of uint8 RGB images ``(N, H, W, 3)`` (the face crops)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    device = next(model.parameters()).device
    out = []
    for first in range(0, len(images), batch_size):
        x = torch.from_numpy(images[first : first + batch_size]).to(device)
        x = x.permute(0, 3, 1, 2).float() / 255.0  # (b, 3, H, W) in [0, 1]
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))
