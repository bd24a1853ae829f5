"""LPIPS perceptual distance (Zhang et al., CVPR 2018) without torchvision: Diff2Lip's ``L_lpips`` (DESIGN.md §4).

LPIPS compares deep features of two images::

    d(x, y) = Σ_l  mean_hw  w_l · ( n(f_l(x)) − n(f_l(y)) )²

with ``f_l`` the ReLU outputs of five stages of an ImageNet classifier trunk (AlexNet or VGG16), ``n`` the
unit normalisation over channels (``f / (‖f‖₂ + 1e-10)``) and ``w_l`` a learned non-negative 1×1
convolution per stage (the "lin" heads). Inputs are images in [-1, 1], first shifted/scaled channel-wise
by the ``ScalingLayer`` constants of the reference implementation.

Weights come from two local files, never downloaded:

* the **trunk**: torchvision's published ImageNet weights (``alexnet-owt-7be5be79.pth`` or
  ``vgg16-397923af.pth``). Our trunk is an ``nn.Sequential`` named ``features`` with torchvision's layer
  indices, so the file's ``features.*`` tensors load with ``strict=True`` (its ``classifier.*`` tensors
  are not needed by LPIPS and are ignored). Default location: the torch hub cache
  (``$TORCH_HOME/hub/checkpoints/``, ``~/.cache/torch/hub/checkpoints/`` by default).
* the **heads**: the LPIPS v0.1 linear layers (``alex.pth`` / ``vgg.pth``, keys ``lin{0..4}.model.1.weight``),
  shipped inside the ``lpips`` pip package (``lpips/weights/v0.1/``); found there when that package is
  installed, else give the path.

A missing file is one :class:`~diff2lip.errors.Diff2LipError` naming it and where to get it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diff2lip.errors import Diff2LipError
from diff2lip.models.serialization import load_state_dict_strict, read_torch_state_dict

__all__ = [
    "BACKBONE_FILES",
    "BACKBONE_URLS",
    "HEADS_URL",
    "LPIPS",
    "alexnet_features",
    "build_lpips",
    "default_backbone_path",
    "default_heads_path",
    "lpips_distance",
    "normalize_channels",
    "vgg16_features",
]

#: torchvision's published ImageNet weight files (the names ``torch.hub`` caches them under).
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
BACKBONE_URLS = {name: f"https://download.pytorch.org/models/{f}" for name, f in BACKBONE_FILES.items()}
#: where the LPIPS v0.1 heads are published (also inside the ``lpips`` pip package).
HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1"

#: channel widths of the five compared stages.
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
#: ``features`` index ranges of the five stages (relu1..relu5 for AlexNet, relu{1_2,2_2,3_3,4_3,5_3} VGG).
STAGES = {
    "alex": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)),
    "vgg": ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)),
}
#: the reference implementation's ScalingLayer: ``(x − shift) / scale`` for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``AlexNet.features`` (same indices, so ``features.{0,3,6,8,10}.*`` keys match)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (configuration "D", no batch norm; same indices)."""
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU()]
            cin = int(v)
    return nn.Sequential(*layers)


def min_input_size(net: str) -> int:
    """Smallest image side the trunk accepts up to its last compared stage."""
    return 31 if net == "alex" else 16


class _Lin(nn.Module):
    """One LPIPS head; ``model.1`` is the 1×1 conv so the key is ``lin{l}.model.1.weight`` as in ``lpips``."""

    def __init__(self, channels: int):
        super().__init__()
        # index 0 is the reference's Dropout: identity at evaluation, kept for the key names
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise feature vectors over channels: ``x / (‖x‖₂ + eps)`` (LPIPS's ``normalize_tensor``)."""
    return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + eps)


def lpips_distance(
    feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], head_weights: list[torch.Tensor]
) -> torch.Tensor:
    """LPIPS from stage features and head weights (each ``(1, C_l, 1, 1)``) → ``(B,)``; pure function."""
    total = None
    for fx, fy, w in zip(feats_x, feats_y, head_weights):
        diff = (normalize_channels(fx) - normalize_channels(fy)) ** 2  # (B, C_l, h, w)
        term = F.conv2d(diff, w).mean(dim=(1, 2, 3))  # (B,)
        total = term if total is None else total + term
    assert total is not None
    return total


class LPIPS(nn.Module):
    """LPIPS distance ``forward(x, y) -> (B,)`` for images ``(B, 3, H, W)`` in [-1, 1].

    Build with random weights (tests) or :func:`build_lpips` (published weights). Every parameter is
    frozen (``requires_grad=False``) and the module stays in eval mode; gradients flow to the inputs.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in CHANNELS:
            raise Diff2LipError(f"unknown LPIPS backbone '{net}' (use alex or vgg)")
        self.net = net
        self.features = alexnet_features() if net == "alex" else vgg16_features()
        for i, c in enumerate(CHANNELS[net]):
            self.add_module(f"lin{i}", _Lin(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """The loss network is always in eval mode."""
        return super().train(False)

    @property
    def heads(self) -> list[_Lin]:
        return [getattr(self, f"lin{i}") for i in range(len(CHANNELS[self.net]))]

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five compared ReLU outputs of the trunk for scaled input ``x``."""
        h, w = x.shape[-2:]
        need = min_input_size(self.net)
        if min(h, w) < need:
            raise Diff2LipError(
                f"LPIPS-{self.net} needs images of at least {need}x{need} pixels, got {h}x{w} "
                "(compare full masked frames instead of lower halves, or use the vgg backbone)"
            )
        feats = []
        for a, b in STAGES[self.net]:
            for i in range(a, b):
                x = self.features[i](x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dtype = self.shift.dtype
        fx = self.stage_features((x.to(dtype) - self.shift) / self.scale)
        fy = self.stage_features((y.to(dtype) - self.shift) / self.scale)
        return lpips_distance(fx, fy, [h.model[1].weight for h in self.heads])

    def load_backbone_state(self, state: Mapping[str, Any], path: str | Path | None = None) -> None:
        """Load torchvision's classifier ``state_dict``: ``features.*`` strictly, ``classifier.*`` ignored."""
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        other = [k for k in state if not k.startswith(("features.", "classifier."))]
        if other:
            raise Diff2LipError(f"unexpected key '{other[0]}': not torchvision {self.net} weights", path)
        load_state_dict_strict(self.features, feats, path, what="LPIPS weights file", prefix="features.")

    def load_heads_state(self, state: Mapping[str, Any], path: str | Path | None = None) -> None:
        """Load the LPIPS v0.1 heads (keys ``lin{l}.model.1.weight``) strictly."""
        heads = {k: v for k, v in state.items() if k.startswith("lin")}
        extra = [k for k in state if not k.startswith("lin")]
        if extra:
            raise Diff2LipError(f"unexpected key '{extra[0]}': not an LPIPS heads file", path)
        target = nn.ModuleDict({f"lin{i}": h for i, h in enumerate(self.heads)})
        load_state_dict_strict(target, heads, path, what="LPIPS weights file")


def default_backbone_path(net: str) -> Path:
    """Where ``torch.hub`` caches torchvision's weights for ``net`` (``$TORCH_HOME/hub/checkpoints/``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def default_heads_path(net: str) -> Path | None:
    """The heads file inside an installed ``lpips`` package, or ``None`` if that package is absent."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / f"{net}.pth"


def build_lpips(
    net: str = "alex",
    *,
    backbone_path: str | Path | None = None,
    heads_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """LPIPS with published weights from local files (never downloaded).

    Args:
        net: ``alex`` (LPIPS's default) or ``vgg``.
        backbone_path: torchvision's ImageNet weights; default :func:`default_backbone_path`.
        heads_path: LPIPS v0.1 heads; default the file inside the installed ``lpips`` package.
    """
    if net not in BACKBONE_FILES:
        raise Diff2LipError(f"unknown LPIPS backbone '{net}' (use alex or vgg)")
    model = LPIPS(net)
    bb = Path(backbone_path) if backbone_path is not None else default_backbone_path(net)
    model.load_backbone_state(
        read_torch_state_dict(
            bb,
            f"torchvision {net} weights",
            f"download {BACKBONE_URLS[net]} to this path or set losses.lpips.backbone_path",
        ),
        bb,
    )
    hp = Path(heads_path) if heads_path is not None else default_heads_path(net)
    if hp is None:
        raise Diff2LipError(
            f"LPIPS heads file {net}.pth not found: set losses.lpips.heads_path to a copy of "
            f"{HEADS_URL}/{net}.pth (it also ships inside the 'lpips' pip package)"
        )
    model.load_heads_state(
        read_torch_state_dict(
            hp, f"LPIPS heads {net}.pth", f"get it from {HEADS_URL}/{net}.pth (or pip install lpips)"
        ),
        hp,
    )
    return model.to(device)
