"""Sequence PatchGAN discriminator: Diff2Lip's ``L_GAN`` critic (paper eq. 9, DESIGN.md §4).

The paper trains with an adversarial term from "a sequence discriminator" over the 5 frames of a sample.
Here it is a PatchGAN (Isola et al., pix2pix, CVPR 2017: stride-2 4×4 convs, LeakyReLU 0.2, a 1-channel
map of per-patch real/fake logits) whose input is the 5 frames **stacked on channels**,
``(3·F, H, W)`` with channel ``3·f + c`` = colour ``c`` of frame ``f``, so each patch judges the
appearance *and* the temporal consistency of the sequence. ``region`` picks what it sees:

* ``full`` (default): whole frames; fakes are ``x̂0·M + x0·(1−M)`` (generated mouth pasted into the
  true upper face), so it judges how the mouth fits the face;
* ``lower_half``: only the rows ``H/2..H-1`` that are generated.

GroupNorm (not BatchNorm) keeps the critic independent of the per-rank batch size under DDP, and lets
real and fake batches share one forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from diff2lip.errors import Diff2LipError

__all__ = ["DiscriminatorConfig", "SequencePatchDiscriminator"]

REGIONS = ("full", "lower_half")


@dataclass
class DiscriminatorConfig:
    """Architecture of :class:`SequencePatchDiscriminator`.

    Attributes:
        nframes: frames stacked on channels (5).
        base_channels: width of the first conv (``ndf``); doubled per strided layer up to 8× (pix2pix).
        num_layers: stride-2 layers after the first (3 → 70×70 receptive field in pix2pix).
        norm_groups: GroupNorm groups (divides every width via gcd).
        region: ``full`` or ``lower_half`` (see the module docstring).
    """

    nframes: int = 5
    base_channels: int = 64
    num_layers: int = 3
    norm_groups: int = 32
    region: str = "full"

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise Diff2LipError(f"discriminator region must be one of {list(REGIONS)}, got '{self.region}'")
        if self.nframes < 1 or self.base_channels < 1 or self.num_layers < 0 or self.norm_groups < 1:
            raise Diff2LipError(
                "discriminator nframes, base_channels and norm_groups must be >= 1, num_layers >= 0"
            )


def _gn(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class SequencePatchDiscriminator(nn.Module):
    """``forward(frames (B, F, 3, H, W)) -> logits (B, 1, h, w)``: one real/fake logit per patch."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = c = config
        ch = c.base_channels
        layers: list[nn.Module] = [
            nn.Conv2d(3 * c.nframes, ch, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        mult = 1
        for n in range(1, c.num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < c.num_layers else 1  # pix2pix: the last of these keeps the resolution
            layers += [
                nn.Conv2d(ch * prev, ch * mult, 4, stride=stride, padding=1, bias=False),
                _gn(ch * mult, c.norm_groups),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(ch * mult, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def stack(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, F, 3, H, W)`` → the critic's input ``(B, 3F, H', W)`` (``H' = H/2`` for ``lower_half``)."""
        c = self.config
        if frames.ndim != 5 or frames.shape[1] != c.nframes or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, {c.nframes}, 3, H, W), got {tuple(frames.shape)}")
        if c.region == "lower_half":
            frames = frames[..., frames.shape[-2] // 2 :, :]  # (B, F, 3, H/2, W)
        b, f, _, h, w = frames.shape
        return frames.reshape(b, f * 3, h, w)  # (B, 3F, H', W)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.stack(frames)
        return self.net(x.to(self.net[0].weight.dtype))
