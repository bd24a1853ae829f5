"""The typed training config of ``diff2lip train`` (DESIGN.md §4: every number in the YAML, nothing hard-coded).

A training YAML has the model file's sections (``model``, ``diffusion``, ``sampling``; the exported model
keeps them) plus ``discriminator``, ``data``, ``losses``, ``optim`` and ``train``. Unknown keys anywhere
are errors naming the key. Packaged files: ``train_tiny`` (tests), ``synthetic`` (the CPU proof run on the
``diff2lip synth`` corpus) and ``paper_train`` (the paper's model, guided-diffusion's optimiser defaults).

Paths (``data.data_dir``, ``losses.syncnet_dir``, ``losses.lpips.*_path``) may be left ``null`` in a file
and given on the command line (``--data-dir``, ``--syncnet``, ``--set key=value``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diff2lip.config import config_path, from_dict, load_yaml
from diff2lip.diffusion import DiffusionConfig, SamplingConfig
from diff2lip.errors import Diff2LipError
from diff2lip.models.config import UNetConfig
from diff2lip.models.discriminator import DiscriminatorConfig

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DistillConfig",
    "LPIPSConfig",
    "LossConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "load_train_config",
    "train_config_from_mapping",
]

GAN_LOSSES = ("non_saturating", "hinge")
PRECISIONS = ("fp32", "fp16", "bf16")
LPIPS_REGIONS = ("lower_half", "masked")


@dataclass
class AugmentConfig:
    """Light augmentation of a training sample, off by default.

    One colour jitter and one shift are drawn per sample and applied to its 5 frames and its reference
    alike (so the sequence stays consistent). Factors are drawn uniformly from ``[1 − a, 1 + a]``.
    """

    enabled: bool = False
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    #: largest shift in pixels (each axis, edge-replicated border).
    max_shift: int = 2


@dataclass
class DataConfig:
    """Where samples come from and how they are batched.

    ``batch_size`` counts 5-frame samples per process per micro-batch (so the UNet sees
    ``5 · batch_size`` frames); the effective batch is ``batch_size · grad_accum · world_size``.
    An epoch draws ``samples_per_clip`` samples (a random 5-frame window each) from every clip.
    """

    data_dir: str | None = None
    split: str = "train"
    nframes: int = 5
    samples_per_clip: int = 4
    batch_size: int = 4
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class LPIPSConfig:
    """LPIPS backbone and weight files (:mod:`diff2lip.models.perceptual`).

    ``region``: ``lower_half`` compares the generated rows only; ``masked`` compares full frames with the
    predicted lower half pasted into the true upper half (needed for crops below 62 px with AlexNet).
    """

    net: str = "alex"
    backbone_path: str | None = None
    heads_path: str | None = None
    region: str = "lower_half"


@dataclass
class LossConfig:
    """Weights of paper eq. 9's terms (λ = 0 switches a term off and skips building its network).

    ``lambda_simple`` weighs the masked ε-MSE, ``lambda_vb`` the masked VB term of the learned variance
    (their sum is improved DDPM's hybrid ``L_simple``). Defaults are the released model's (DESIGN.md §4).
    ``clamp_x0`` clamps x̂0 to [-1, 1] before the image-space terms (L2, sync, LPIPS, GAN): at large t,
    x̂0 = (x_t − √(1−ᾱ_t)·ε_θ)/√ᾱ_t amplifies ε errors by up to √(1/ᾱ_t − 1) ≈ 156, which would otherwise
    dominate those terms. The generator's GAN term starts at ``gan_start_step`` (the critic trains from 0).

    ``l2_snr_cap`` > 0 replaces the clamped L2 by the unclamped x̂0 error weighted per sample by
    ``min(1, l2_snr_cap·SNR_t)`` (SNR_t = ᾱ_t/(1−ᾱ_t)): an ε-MSE weight of ``min(1/SNR_t, l2_snr_cap)``.
    Clamping zeroes L2's gradient wherever x̂0 leaves [-1, 1] (most of the lower half at t ≥ 500 early in
    training, so the model can escape the term by saturating x̂0), which starves the only strong
    audio→mouth signal at the large t where the mouth is hidden in x_t; the cap keeps that signal with a
    bounded weight. 0 (default) is the paper's L2 (on the clamped x̂0 when ``clamp_x0``).

    ``l2_motion_weight`` > 0 weights each masked pixel of L2 by ``1 + l2_motion_weight·m``, with ``m`` the
    pixel's standard deviation over the sample's ground-truth frames divided by its mean over the masked
    region: the pixels that move within the 5 frames (the speech-driven mouth and jaw) count more than the
    static lower face, whose errors otherwise dominate the gradient that reaches the audio path. 0 (default)
    is the paper's unweighted L2.
    """

    lambda_simple: float = 1.0
    lambda_vb: float = 1.0
    lambda_l2: float = 1.0
    lambda_sync: float = 0.1
    lambda_lpips: float = 0.25
    lambda_gan: float = 0.5
    gan_loss: str = "non_saturating"
    gan_start_step: int = 0
    clamp_x0: bool = True
    l2_snr_cap: float = 0.0
    l2_motion_weight: float = 0.0
    #: directory of the frozen SyncNet expert (``diff2lip train-syncnet`` output); needed if λ_sync > 0.
    syncnet_dir: str | None = None
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)


@dataclass
class OptimConfig:
    """AdamW for the UNet and the discriminator; constant learning rate after a linear warm-up.

    With ``lr_decay_end`` > 0 the UNet's learning rate then falls linearly from ``lr`` at step
    ``lr_decay_start`` to 0 at step ``lr_decay_end`` (and stays 0 after it): a final annealing phase whose
    schedule does not depend on ``train.max_steps``, so a run resumed from a checkpoint taken before
    ``lr_decay_start`` with the decay added continues exactly as one trained with it from the start.
    0 (default) keeps the paper's constant rate. The discriminator's rate is never decayed.

    ``grad_clip`` is the max global gradient norm (0 = no clipping); ``grad_accum`` micro-batches make one
    optimizer step.

    ``audio_lr_mult`` scales the learning rate of the audio path (``audio_encoder`` and
    ``audio_encoder_to_style``); 1 (the default) is one learning rate for the whole UNet. The pooled audio
    code that is added to the timestep embedding varies little between windows at initialisation (per
    dimension ~6 % of its constant part on the synthetic corpus), so the zero-initialised projection must grow
    large along that small variation before the UNet can use it. A larger step makes the code vary sooner;
    measured on the synthetic corpus, training then suppresses that variation again before the UNet uses it
    (benchmarks/RESULTS.md, session 4), so it is no fix on its own.
    """

    lr: float = 1e-4
    audio_lr_mult: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_decay_start: int = 0
    lr_decay_end: int = 0
    grad_clip: float = 1.0
    grad_accum: int = 1
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.5, 0.999)
    disc_weight_decay: float = 0.0


@dataclass
class RunConfig:
    """Length, precision, EMA, logging and checkpointing of a run (all counts in optimizer steps).

    ``precision`` applies on GPUs (autocast; fp16 adds a GradScaler); CPU training always runs in fp32.
    ``image_every`` / ``checkpoint_every`` / ``export_every`` of 0 disable that output (a final checkpoint
    and export are always written).

    Timesteps are drawn uniformly from ``{0..T−1}`` (the paper's training). With ``high_t_fraction`` > 0,
    that fraction of the samples instead draws t uniformly from ``{high_t_min..T−1}``: the high-noise steps
    are where the mouth is still undecided by x_t, i.e. where the model must take it from the audio, and
    where sampling fixes its shape; oversampling them speeds up learning to listen in short runs.
    """

    max_steps: int = 1000
    seed: int = 0
    precision: str = "fp32"
    ema_decay: float = 0.9999
    ema_warmup: bool = False
    log_every: int = 10
    image_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    export_every: int = 0
    export_dtype: str = "fp32"
    progress: bool = True
    high_t_fraction: float = 0.0
    high_t_min: int = 700


@dataclass
class DistillConfig:
    """``diff2lip distill`` (:mod:`diff2lip.train.distill`): the teacher and the student's step count.

    ``teacher_dir`` is a model directory (its ``config.json`` fixes the student's ``model`` and
    ``diffusion``); the teacher samples with ``teacher_sampler`` / ``teacher_steps`` (default: its own
    ``sampling`` section; it must be deterministic: ``ddim`` with eta 0 or ``dpmpp``). The student takes
    ``steps`` (K) DDIM steps at K of the teacher's evaluation timesteps. ``cross_audio_fraction`` of the
    samples are driven by another sample's speech (the teacher needs no ground truth, and the cross setting
    is how users dub). ``motion_weight`` > 0 weights each lower-half pixel of the loss by
    ``1 + motion_weight·m`` with ``m`` the pixel's motion across the sample's 5 frames in the teacher's output
    (as ``losses.l2_motion_weight`` does with the ground truth): the mouth counts more than the static skin.
    ``self_reference_fraction`` of the samples use each frame as its own reference (``generate``'s default,
    ``--reference self``, and the paper's cross setting) instead of another frame of the clip.
    ``diff2lip train`` ignores this section.
    """

    teacher_dir: str | None = None
    steps: int = 2
    teacher_sampler: str | None = None
    teacher_steps: int | None = None
    cross_audio_fraction: float = 0.5
    motion_weight: float = 0.0
    self_reference_fraction: float = 0.0


@dataclass
class TrainConfig:
    """Everything ``diff2lip train`` reads (see the module docstring)."""

    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> TrainConfig:
        """Cross-section checks; one-line :class:`Diff2LipError` naming the key."""
        self.model.validate()
        errs = []
        if self.diffusion.learn_sigma != self.model.learn_sigma:
            errs.append("diffusion.learn_sigma must equal model.learn_sigma")
        if self.model.nrefer != 1:
            errs.append("training supports model.nrefer = 1 (one reference frame)")
        d, lo, o, r = self.data, self.losses, self.optim, self.train
        if d.nframes != 5 or self.discriminator.nframes != d.nframes:
            errs.append("data.nframes and discriminator.nframes must be 5 (the paper's sequence length)")
        for name in ("samples_per_clip", "batch_size"):
            if getattr(d, name) < 1:
                errs.append(f"data.{name} must be >= 1")
        if d.num_workers < 0:
            errs.append("data.num_workers must be >= 0")
        a = d.augment
        if min(a.brightness, a.contrast, a.saturation) < 0 or a.max_shift < 0:
            errs.append("data.augment amounts must be >= 0")
        for name in ("lambda_simple", "lambda_vb", "lambda_l2", "lambda_sync", "lambda_lpips", "lambda_gan"):
            if getattr(lo, name) < 0:
                errs.append(f"losses.{name} must be >= 0")
        if lo.gan_loss not in GAN_LOSSES:
            errs.append(f"losses.gan_loss must be one of {list(GAN_LOSSES)}, got '{lo.gan_loss}'")
        if lo.lpips.net not in ("alex", "vgg"):
            errs.append(f"losses.lpips.net must be alex or vgg, got '{lo.lpips.net}'")
        if lo.lpips.region not in LPIPS_REGIONS:
            errs.append(f"losses.lpips.region must be one of {list(LPIPS_REGIONS)}")
        if o.lr <= 0 or o.disc_lr <= 0 or o.audio_lr_mult <= 0:
            errs.append("optim.lr, optim.disc_lr and optim.audio_lr_mult must be > 0")
        if o.grad_accum < 1 or o.warmup_steps < 0 or o.grad_clip < 0:
            errs.append("optim.grad_accum must be >= 1, warmup_steps and grad_clip >= 0")
        if o.lr_decay_end and not 0 <= o.lr_decay_start < o.lr_decay_end:
            errs.append("optim.lr_decay_end must be 0 (no decay) or > lr_decay_start >= 0")
        if r.max_steps < 0:
            errs.append("train.max_steps must be >= 0")
        if r.precision not in PRECISIONS:
            errs.append(f"train.precision must be one of {list(PRECISIONS)}, got '{r.precision}'")
        if r.export_dtype not in ("fp32", "fp16"):
            errs.append("train.export_dtype must be fp32 or fp16")
        if not 0.0 <= r.ema_decay <= 1.0:
            errs.append("train.ema_decay must lie in [0, 1]")
        if not 0.0 <= r.high_t_fraction <= 1.0:
            errs.append("train.high_t_fraction must lie in [0, 1]")
        if not 0 <= r.high_t_min < self.diffusion.num_timesteps:
            errs.append("train.high_t_min must lie in [0, diffusion.num_timesteps)")
        if self.distill.steps < 1:
            errs.append(f"distill.steps must be >= 1, got {self.distill.steps}")
        for name in ("cross_audio_fraction", "self_reference_fraction"):
            if not 0.0 <= getattr(self.distill, name) <= 1.0:
                errs.append(f"distill.{name} must lie in [0, 1]")
        if self.distill.motion_weight < 0:
            errs.append("distill.motion_weight must be >= 0")
        for name in ("log_every", "image_every", "checkpoint_every", "export_every", "keep_checkpoints"):
            if getattr(r, name) < 0:
                errs.append(f"train.{name} must be >= 0")
        if errs:
            raise Diff2LipError(f"invalid training config: {errs[0]}")
        return self


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise Diff2LipError(f"--set expects KEY=VALUE (e.g. losses.lambda_gan=0), got '{item}'")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string; a user means the number
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["losses.lambda_gan=0", "train.max_steps=200"]`` → a copy of ``data`` with those keys set.

    Values are parsed as YAML (numbers, booleans, lists, ``null``), and ``3e-4`` is a number. Unknown keys
    are caught by the strict config build that follows.
    """
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        path, value = _parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise Diff2LipError(f"--set {item}: '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def train_config_from_mapping(data: dict[str, Any], path: str | Path | None = None) -> TrainConfig:
    """Strictly build and validate a :class:`TrainConfig` from a parsed YAML mapping."""
    try:
        return from_dict(TrainConfig, data).validate()
    except Diff2LipError as e:
        if path is not None and e.path is None:
            raise Diff2LipError(str(e), path) from None
        raise


def load_train_config(path_or_name: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a training YAML (a path, or a packaged name: ``train_tiny``, ``synthetic``, ``paper_train``)."""
    p = config_path(path_or_name, "training config")
    return train_config_from_mapping(apply_overrides(load_yaml(p), overrides or []), p)
