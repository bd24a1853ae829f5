"""The audio encoder of Diff2Lip (paper §3.2; DESIGN.md §3; official ``TFGAudioEncoder``).

One mel window ``(80, 16)`` per frame is mapped by a Conv1d (80 → 64 "height" channels), GroupNorm
and SiLU, viewed as a one-channel image ``(1, 64, 16)``, and encoded by a stack of 2-D ResBlocks
(32, 64, 96, 128 channels) that halve the height only — stride (2, 1) — while it exceeds the window
length, then both sides — stride (2, 2) — giving ``(128, 8, 8)`` for the paper's config. The
ResBlocks receive a constant learned "time" embedding: the official code feeds the sinusoidal
embedding of t = 0 through a small MLP, so the embedding is a function of the weights only.
"""

from __future__ import annotations

import torch
from torch import nn

from diff2lip.models.config import UNetConfig
from diff2lip.models.layers import EmbedSequential, ResBlock, normalization, timestep_embedding


class AudioEncoder(nn.Module):
    """Mel windows ``(B, n_mels, window)`` → audio features ``(B, C_last, h, w)``."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        d, g = cfg.audio_time_embed_dim, cfg.norm_groups
        self.embed_dim = d
        self.out_channels = cfg.audio_channels[-1]
        self.time_embed = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.input_block = nn.Sequential(
            nn.Conv1d(cfg.audio_mel_bins, cfg.audio_init_spatial, 3, padding=1),
            normalization(cfg.audio_init_spatial, g),
            nn.SiLU(),
        )
        ch = cfg.audio_channels[0]
        blocks = [EmbedSequential(nn.Conv2d(1, ch, 3, padding=1))]
        ds = 1
        height, width_ = cfg.audio_init_spatial, cfg.audio_window
        last = len(cfg.audio_channels) - 1
        for level, width in enumerate(cfg.audio_channels):
            for _ in range(cfg.audio_num_res_blocks):
                blocks.append(EmbedSequential(ResBlock(ch, d, width, dropout=cfg.dropout, norm_groups=g)))
                ch = width
            if level != last:
                # halve the height only while it is taller than the window is wide (official rule)
                stride = (2, 1) if cfg.audio_init_spatial // ds > cfg.audio_window else (2, 2)
                blocks.append(
                    EmbedSequential(
                        ResBlock(
                            ch, d, ch, dropout=cfg.dropout, resample="down", down_stride=stride, norm_groups=g
                        )
                    )
                )
                ds *= 2
                height, width_ = height // stride[0], width_ // stride[1]  # avg_pool2d floors
        #: spatial size (h, w) of the output feature map
        self.out_size = (height, width_)
        self.encoder_blocks = nn.ModuleList(blocks)
        self.middle_block = EmbedSequential(
            ResBlock(ch, d, self.out_channels, dropout=cfg.dropout, norm_groups=g)
        )

    def constant_embedding(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The learned embedding of "time" 0 that conditions every audio ResBlock, ``(1, d)``."""
        t0 = torch.zeros(1, device=device)
        return self.time_embed(timestep_embedding(t0, self.embed_dim).to(dtype))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel`` (B, n_mels, window) → (B, C_last, h, w); ``(128, 8, 8)`` per frame for the paper."""
        dtype = self.time_embed[0].weight.dtype
        emb = self.constant_embedding(dtype, mel.device)  # (1, d), broadcast over the batch
        h = self.input_block(mel.to(dtype))  # (B, init_spatial, window)
        h = h[:, None]  # (B, 1, init_spatial, window)
        for block in self.encoder_blocks:
            h = block(h, emb)
        return self.middle_block(h, emb)
