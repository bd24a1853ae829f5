"""The Diff2Lip denoising network: an audio-conditioned guided-diffusion UNet (DESIGN.md §3).

Paper §3 (eq. 4–6): the network predicts the noise ε (and the learned-range variance v) of the
masked lower half of a face, given the noisy frame x_t, the timestep t, the masked frame (upper half
of the ground truth, lower half Gaussian noise), a reference frame of the same identity and the
audio mel window of that frame. The input composition happens inside the model, exactly as in the
official ``TFGModel.forward``::

    x_in = cat([x_t·M + cond·(1−M), cond, ref])        # 9 channels for one reference

so the upper half of ``x_t`` never reaches the network: it is overwritten by ``cond`` on every call.
The audio code (audio encoder → ``audio_encoder_to_style``) is added to the timestep embedding.
Frames are independent: batch any number of frames along dimension 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from diff2lip.models.audio_encoder import AudioEncoder
from diff2lip.models.config import UNetConfig
from diff2lip.models.layers import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    ResBlock,
    Upsample,
    normalization,
    timestep_embedding,
    zero_module,
)


class Diff2LipUNet(nn.Module):
    """The official ``TFGModel`` architecture, built from a :class:`UNetConfig`.

    Parameter names and order equal the official checkpoint's (``time_embed``, ``input_blocks``,
    ``middle_block``, ``output_blocks``, ``out``, ``audio_encoder``, ``audio_encoder_to_style``).
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))

        def res(cin: int, cout: int | None = None, **kw: Any) -> ResBlock:
            return ResBlock(
                cin,
                ted,
                cout,
                dropout=cfg.dropout,
                use_scale_shift_norm=cfg.use_scale_shift_norm,
                norm_groups=cfg.norm_groups,
                **kw,
            )

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, cfg.num_head_channels, norm_groups=cfg.norm_groups)

        ch = cfg.channel_mult[0] * mc
        first_ch = ch
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(cfg.input_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        size = cfg.image_size
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if size in cfg.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chans.append(ch)
            if level != last:
                down = res(ch, ch, resample="down") if cfg.resblock_updown else Downsample(ch)
                self.input_blocks.append(EmbedSequential(down))
                skip_chans.append(ch)
                size //= 2

        # audio_as_style false: the audio feature map joins the features entering the middle block
        mid_in = ch if cfg.audio_as_style else ch + cfg.audio_channels[-1]
        self.middle_block = EmbedSequential(res(mid_in, ch), attn(ch), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), mult * mc)]
                ch = mult * mc
                if size in cfg.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, resample="up") if cfg.resblock_updown else Upsample(ch))
                    size *= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch, cfg.norm_groups),
            nn.SiLU(),
            zero_module(nn.Conv2d(first_ch, cfg.out_channels, 3, padding=1)),
        )

        self.audio_encoder = AudioEncoder(cfg)
        a_ch = self.audio_encoder.out_channels
        if cfg.audio_as_style:
            self.audio_encoder_to_style = nn.Sequential(
                normalization(a_ch, cfg.norm_groups),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(nn.Conv2d(a_ch, ted, 1)),
                nn.Flatten(),
            )
        if cfg.audio_spatial_rank:
            ah, aw = self.audio_encoder.out_size
            self.audio_to_spatial = nn.Sequential(
                normalization(a_ch, cfg.norm_groups),
                nn.SiLU(),
                nn.Flatten(),
                nn.Linear(a_ch * ah * aw, cfg.audio_spatial_rank),
            )
            # zero-initialised: the path starts silent and grows along the residual's correlation with the
            # coefficients (ControlNet-style), so it can only add what the audio explains
            self.audio_spatial_basis = nn.Parameter(
                torch.zeros(cfg.audio_spatial_rank, first_ch, cfg.image_size, cfg.image_size)
            )

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor,
        ref: torch.Tensor | None,
        mel: torch.Tensor | None = None,
        *,
        audio_style: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict ε (and v) for a batch of frames.

        Args:
            x_t: noisy frames (B, 3, H, W) in [-1, 1] scale.
            t: integer diffusion timesteps (B,) (a scalar is broadcast).
            cond: masked frames (B, 3, H, W): ``img·(1−M) + noise·M``.
            mask: M (1 or B, 1, H, W), 1 on the generated (lower) region.
            ref: reference frames (B, 3·nrefer, H, W); ``None`` only when ``nrefer == 0``.
            mel: mel windows (B, n_mels, window), e.g. (B, 80, 16).
            audio_style: alternatively the precomputed :meth:`encode_audio` of ``mel`` (the audio code:
                (B, 4·mc [+ audio_spatial_rank]), or (B, C_a, h, w) when ``audio_as_style`` is false): it
                does not depend on t, so samplers compute it once, not at every step.

        Returns:
            (B, out_channels, H, W) in ``x_t``'s dtype: ε, then the variance channels if
            ``learn_sigma``.
        """
        cfg = self.config
        dtype = self.time_embed[0].weight.dtype
        b = x_t.shape[0]
        if t.ndim == 0:
            t = t.expand(b)
        x = x_t * mask + cond * (1.0 - mask)  # the known upper half overwrites x_t's
        parts = [x, cond]
        if cfg.nrefer:
            if ref is None:
                raise ValueError("this model needs a reference frame (nrefer > 0)")
            parts.append(ref)
        h = torch.cat(parts, dim=1).to(dtype)  # (B, 3·(2+nrefer), H, W)

        emb = self.time_embed(timestep_embedding(t, cfg.model_channels).to(dtype))  # (B, 4·mc)
        if audio_style is None:
            if mel is None:
                raise ValueError("pass either mel or audio_style")
            audio_style = self.encode_audio(mel)
        spatial = None
        if cfg.audio_spatial_rank:
            ted = cfg.time_embed_dim
            audio_style, coef = audio_style[:, :ted], audio_style[:, ted:]  # (B, 4·mc), (B, r)
            # (B, C0, H, W): the coefficients weight the learned full-resolution maps
            spatial = torch.einsum("br,rchw->bchw", coef.to(dtype), self.audio_spatial_basis)
        if cfg.audio_as_style:
            emb = emb + audio_style.to(emb.dtype)  # audio style added to the time embedding (B, 4·mc)

        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            if spatial is not None:
                h, spatial = h + spatial, None  # after the input conv only
            skips.append(h)
        if not cfg.audio_as_style:
            a = audio_style.to(h.dtype)
            if a.shape[-2:] != h.shape[-2:]:
                a = F.interpolate(a, size=h.shape[-2:], mode="nearest")
            h = torch.cat([h, a], dim=1)  # (B, C + C_a, h, w)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).to(x_t.dtype)

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel windows (B, n_mels, window) → the audio code: the style vector (B, 4·mc) added to the time
        embedding (followed by the ``audio_spatial_rank`` coefficients of the spatial path, if any), or
        the feature map (B, C_a, h, w) for the middle block when ``audio_as_style`` is false."""
        feat = self.audio_encoder(mel)  # (B, C_a, h, w)
        if not self.config.audio_as_style:
            return feat
        style = self.audio_encoder_to_style(feat)  # (B, 4·mc)
        if self.config.audio_spatial_rank:
            return torch.cat([style, self.audio_to_spatial(feat)], dim=1)  # (B, 4·mc + r)
        return style

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path, **kwargs: Any) -> Path:
        """Write ``config.json`` + ``model.safetensors``; see :func:`~diff2lip.models.serialization.save_pretrained`."""
        from diff2lip.models.serialization import save_pretrained

        return save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> Diff2LipUNet:
        """Rebuild a model saved by :meth:`save_pretrained` (strict), or convert an official ``.pt``."""
        from diff2lip.models.serialization import load_checkpoint

        return load_checkpoint(directory, device=device, dtype=dtype).model
