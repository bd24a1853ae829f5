"""The typed architecture config of the Diff2Lip UNet and its audio encoder (DESIGN.md §3).

Every architectural number lives here; ``configs/paper.yaml`` holds the released model's values
(the official ``TFGModel`` built by ``tfg_create_model`` with the flags of ``scripts/inference.sh``)
and ``configs/tiny.yaml`` a model small enough for CPU tests. A YAML/JSON file keeps the config
under a top-level ``model:`` mapping, next to ``diffusion:`` and ``sampling:`` sections that other
parts of the package read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from diff2lip.config import config_path, from_dict, load_yaml
from diff2lip.errors import Diff2LipError

#: GroupNorm groups used by every normalisation layer (guided-diffusion's ``normalization``).
NORM_GROUPS = 32


@dataclass
class UNetConfig:
    """Architecture of :class:`~diff2lip.models.unet.Diff2LipUNet` (defaults = the paper's model).

    Attention resolutions are given in pixels (the official flag ``attention_resolutions=32,16,8``),
    channel counts as multipliers of ``model_channels`` per resolution level, as in guided-diffusion.
    """

    image_size: int = 128
    #: channels of one RGB image; the network input is ``in_channels * (2 + nrefer)`` channels.
    in_channels: int = 3
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 3, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_head_channels: int = 64
    dropout: float = 0.0
    resblock_updown: bool = True
    use_scale_shift_norm: bool = False
    #: GroupNorm groups of every normalisation layer (32 in the paper's model, as in guided-diffusion).
    #: A norm layer normalises each group of channels per sample, so a group of a single channel erases
    #: any per-channel constant — the additive time/audio embedding of a ResBlock with
    #: ``use_scale_shift_norm: false`` among them. Narrow models (32-channel levels) keep the paper's
    #: 4 channels per group with ``norm_groups: 8``. It has no weights: any value loads the same tensors.
    norm_groups: int = NORM_GROUPS
    #: predict the learned-range variance too: output ``2 * in_channels`` channels (ε and v).
    learn_sigma: bool = True
    #: number of reference frames concatenated to the input (the paper uses one).
    nrefer: int = 1
    # --- audio encoder (official ``TFGAudioEncoder``) ---
    audio_mel_bins: int = 80
    audio_window: int = 16
    #: height of the 2-D "mel image" after the Conv1d that maps the mel bins (80 → 64).
    audio_init_spatial: int = 64
    #: channels per audio encoder level (official model_channels 32 × channel_mult (1, 2, 3, 4)).
    audio_channels: tuple[int, ...] = (32, 64, 96, 128)
    audio_num_res_blocks: int = 2
    #: width of the constant learned "time" embedding feeding the audio ResBlocks.
    audio_time_embed_dim: int = 32
    #: True: the pooled audio code is added to the timestep embedding (the released model). False: the
    #: audio feature map (C_a, h, w) is concatenated to the features entering the middle block (the other
    #: mode of the official ``TFGModel``; resized to the middle block's size if they differ).
    audio_as_style: bool = True
    #: 0: the paper (the audio acts only through the style above). r > 0: in addition, the audio feature
    #: map is read out (GroupNorm, SiLU, flatten, linear) into r coefficients that weight r learned
    #: full-resolution feature maps added to the first block's output — a position-specific path (face
    #: crops are aligned, so the mouth sits at known pixels) that reaches the last decoder block through
    #: its skip connection. Not in the released model; ``configs/synthetic.yaml`` uses it (issue 5,
    #: benchmarks/RESULTS.md: the style path alone does not open within a 60-minute CPU budget).
    audio_spatial_rank: int = 0

    @property
    def out_channels(self) -> int:
        """Output channels: ε (and the variance interpolation v when ``learn_sigma``)."""
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def input_channels(self) -> int:
        """Channels of the composed network input ``[x, cond, ref...]``."""
        return self.in_channels * (2 + self.nrefer)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    def validate(self) -> UNetConfig:
        """Check that the numbers describe a buildable network; raise a one-line error if not."""

        def fail(msg: str) -> NoReturn:
            raise Diff2LipError(f"invalid model config: {msg}")

        levels = len(self.channel_mult)
        if levels < 1 or not self.audio_channels:
            fail("channel_mult and audio_channels must not be empty")
        if self.image_size % (2 ** (levels - 1)):
            fail(f"image_size {self.image_size} is not divisible by 2**{levels - 1} (channel_mult levels)")
        sizes = {self.image_size // 2**i for i in range(levels)}
        for r in self.attention_resolutions:
            if r not in sizes:
                fail(f"attention resolution {r} px is not a UNet level (levels: {sorted(sizes)})")
        g = self.norm_groups
        if g < 1:
            fail(f"norm_groups must be >= 1, got {g}")
        for m in self.channel_mult:
            if (m * self.model_channels) % g:
                fail(
                    f"level width {m * self.model_channels} is not a multiple of norm_groups {g} (GroupNorm)"
                )
        # attention runs at the listed levels and always in the middle block (the lowest level)
        attn_widths = {self.channel_mult[-1] * self.model_channels} | {
            m * self.model_channels
            for i, m in enumerate(self.channel_mult)
            if self.image_size // 2**i in self.attention_resolutions
        }
        for ch in sorted(attn_widths):
            if ch % self.num_head_channels:
                fail(f"attention width {ch} is not a multiple of num_head_channels {self.num_head_channels}")
        for ch in self.audio_channels:
            if ch % g:
                fail(f"audio channel width {ch} is not a multiple of norm_groups {g}")
        if self.audio_init_spatial % g:
            fail(f"audio_init_spatial {self.audio_init_spatial} is not a multiple of norm_groups {g}")
        if self.audio_time_embed_dim % 2:
            fail("audio_time_embed_dim must be even")
        if self.model_channels % 2:
            fail("model_channels must be even")
        if self.nrefer < 0:
            fail("nrefer must be >= 0")
        if self.num_res_blocks < 1 or self.audio_num_res_blocks < 1:
            fail("num_res_blocks and audio_num_res_blocks must be >= 1")
        if self.audio_spatial_rank < 0:
            fail(f"audio_spatial_rank must be >= 0, got {self.audio_spatial_rank}")
        if self.audio_spatial_rank and not self.audio_as_style:
            fail(
                "audio_spatial_rank > 0 needs audio_as_style: true (the code carries the style and the rank)"
            )
        return self


def load_model_config(path_or_name: str | Path) -> UNetConfig:
    """Read the ``model:`` section of a YAML/JSON file (or a packaged config name) strictly.

    ``path_or_name`` is a path to an existing file, or the name of a packaged config
    (``"paper"``, ``"tiny"``); our ``config.json`` files work too (they have a ``model`` section).
    """
    p = config_path(path_or_name, "model config")
    return model_config_from_mapping(load_yaml(p), p)


def model_config_from_mapping(data: dict[str, Any], path: str | Path | None = None) -> UNetConfig:
    """Build a :class:`UNetConfig` from the ``model`` section of a parsed config file."""
    section = data.get("model")
    if not isinstance(section, dict):
        raise Diff2LipError("config has no 'model:' mapping", path)
    try:
        return from_dict(UNetConfig, section, _prefix="model.").validate()
    except Diff2LipError as e:
        if path is not None and e.path is None:
            raise Diff2LipError(str(e), path) from None
        raise
