"""Building blocks of the guided-diffusion UNet used by Diff2Lip (DESIGN.md §3).

The modules keep the official parameter names (``in_layers``, ``emb_layers``, ``out_layers``,
``skip_connection``, ``norm``, ``qkv``, ``proj_out``) so that the authors' checkpoint loads
unchanged. Numerics follow guided-diffusion: GroupNorm(32) is computed in float32 whatever the
input dtype, attention uses the legacy per-head ``[q, k, v]`` channel order with softmax
accumulated in float32, the timestep embedding is ``[cos, sin]`` with max period 10000, and the
last convolution of every residual branch starts at zero.

All modules are dtype-agnostic: they run in float32, under ``torch.autocast`` (fp16/bf16), or with
weights cast to a low precision; only the norms promote to float32 internally.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from diff2lip.models.config import NORM_GROUPS


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype (guided-diffusion)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight is None or self.weight.dtype == torch.float32 else self.weight.float()
        b = self.bias if self.bias is None or self.bias.dtype == torch.float32 else self.bias.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.group_norm(x.float(), self.num_groups, w, b, self.eps)
        return y.to(x.dtype)


def normalization(channels: int, groups: int = NORM_GROUPS) -> GroupNorm32:
    """The UNet's normalisation layer: GroupNorm (32 groups in the paper's model), computed in float32."""
    return GroupNorm32(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it (guided-diffusion's init)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t·f), sin(t·f)]`` with ``f_i = max_period^(-i/(dim/2))``.

    ``t`` holds one (possibly fractional) timestep per sample, shape ``(B,)``; returns
    ``(B, dim)`` float32 (a zero column is appended when ``dim`` is odd).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.reshape(-1, 1).float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2·half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def qkv_attention_legacy(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head self-attention over the legacy guided-diffusion ``qkv`` layout.

    ``qkv`` is ``(B, H·3·C, T)``: heads first, then ``[q, k, v]`` within each head (the order of
    ``QKVAttentionLegacy``). Computes ``softmax(qᵀk / sqrt(C)) v`` per head — the same value as the
    official ``(q·C^-¼)ᵀ(k·C^-¼)`` — with :func:`torch.nn.functional.scaled_dot_product_attention`,
    which accumulates the softmax in float32 for half-precision inputs. Returns ``(B, H·C, T)``.
    """
    b, width, length = qkv.shape
    ch = width // (3 * num_heads)
    # one copy into (B, H, 3, T, C): SDPA takes its fused (flash) path only for unit-stride features
    qkv = qkv.reshape(b, num_heads, 3, ch, length).transpose(-1, -2).contiguous()  # (B, H, 3, T, C)
    q, k, v = qkv.unbind(2)  # each (B, H, T, C)
    a = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, C)
    return a.transpose(-1, -2).reshape(b, num_heads * ch, length)  # (B, H·C, T)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (guided-diffusion ``AttentionBlock``)."""

    def __init__(self, channels: int, num_head_channels: int, *, norm_groups: int = NORM_GROUPS):
        super().__init__()
        if channels % num_head_channels:
            raise ValueError(f"attention channels {channels} not divisible by {num_head_channels}")
        self.num_heads = channels // num_head_channels
        self.norm = normalization(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        xf = x.reshape(b, c, -1)  # (B, C, H·W)
        h = qkv_attention_legacy(self.qkv(self.norm(xf)), self.num_heads)
        h = self.proj_out(h)
        return (xf + h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Strided 3×3 convolution (only used when ``resblock_updown`` is false)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2 upsampling followed by a 3×3 convolution (only when ``resblock_updown`` is false)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """Residual block conditioned on an embedding, optionally resampling (guided-diffusion ``ResBlock``).

    ``h = conv(SiLU(GN(x)))`` (with parameter-free average-pool / nearest resampling between the
    activation and the conv when ``resample`` is set), then the embedding is added after the first
    conv (or applied as a FiLM scale/shift on the second norm when ``use_scale_shift_norm``), then
    ``conv(dropout(SiLU(GN(h))))`` with a zero-initialised conv, plus the (1×1-projected) skip.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        *,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = False,
        resample: Literal["up", "down"] | None = None,
        down_stride: tuple[int, int] = (2, 2),
        norm_groups: int = NORM_GROUPS,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = resample
        self.down_stride = tuple(down_stride)
        self.in_layers = nn.Sequential(
            normalization(channels, norm_groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            normalization(out_channels, norm_groups),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=self.down_stride, stride=self.down_stride)
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W), ``emb`` (B or 1, E) → (B, C_out, H', W')."""
        if self.resample is None:
            h = self.in_layers(x)
        else:
            norm, act, conv = self.in_layers
            h = conv(self._resample(act(norm(x))))
            x = self._resample(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # (B, C_out[·2], 1, 1)
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = e.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that passes the embedding to the :class:`ResBlock` children."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x
