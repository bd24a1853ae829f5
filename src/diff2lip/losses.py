"""Diff2Lip's training objective (paper eq. 9, DESIGN.md §4): each term named, weighted by the config.

For a batch of ``B`` samples of 5 consecutive frames (flattened to ``B·5`` frames, frame-major per
sample), one diffusion step ``t`` per sample shared by its 5 frames, and the lower-half mask ``M``::

    L = λ_simple·L_simple + λ_vb·L_vb + λ_l2·L2 + λ_sync·L_sync + λ_lpips·L_lpips + λ_gan·L_GAN

* ``L_simple`` (``simple``): ε-MSE over the masked region; ``L_vb`` (``vb``): the masked VB term that
  trains the learned-range variance with the ε half detached (improved DDPM's hybrid objective);
  both from :meth:`~diff2lip.diffusion.GaussianDiffusion.training_losses`.
* ``L2`` (``l2``): MSE between x̂0 = (x_t − √(1−ᾱ_t)·ε_θ)/√ᾱ_t and x0 over the masked region
  (optionally unclamped with a capped SNR weight, ``l2_snr_cap``; see :class:`~diff2lip.train.config.LossConfig`).
* ``L_sync`` (``sync``): the frozen SyncNet expert scores the 5 predicted lower halves against the sync
  mel window of the sample; BCE(cos, 1) (Wav2Lip's expert loss).
* ``L_lpips`` (``lpips``): LPIPS between x̂0 and x0 on the lower half (or on full frames with the
  prediction pasted into the true upper half).
* ``L_GAN`` (``gan``): the generator's adversarial loss against the sequence PatchGAN
  (:mod:`diff2lip.models.discriminator`), whose fakes are ``x̂0·M + x0·(1−M)`` stacked over the 5 frames.

The image-space terms see x̂0 clamped to [-1, 1] (``clamp_x0``, see
:class:`~diff2lip.train.config.LossConfig`). Any λ = 0 term is not computed (and its network is not
built by :func:`build_loss_networks`).

GAN losses, with ``D`` the per-patch logits (averaged over patches and samples):

* ``non_saturating`` (Goodfellow et al. 2014): generator ``softplus(−D(fake))``;
  critic ``softplus(−D(real)) + softplus(D(fake))`` (binary cross-entropy with logits).
* ``hinge`` (Lim & Ye 2017; SAGAN): generator ``−D(fake)``; critic ``relu(1 − D(real)) + relu(1 + D(fake))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diff2lip.diffusion import GaussianDiffusion, masked_mean_flat
from diff2lip.errors import Diff2LipError
from diff2lip.inference.pipeline import lower_half_mask_tensor as lower_half_mask

__all__ = [
    "TERMS",
    "Diff2LipLoss",
    "LossOutput",
    "build_loss_networks",
    "discriminator_loss",
    "generator_gan_loss",
    "lower_half_mask",
]

#: names of the weighted terms, in logging order.
TERMS = ("simple", "vb", "l2", "sync", "lpips", "gan")


def generator_gan_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's adversarial loss (scalar) from the critic's logits on fakes."""
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss '{kind}'")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The critic's loss (scalar): real → 1 / fake → 0 (``non_saturating``) or the hinge margins."""
    if kind == "non_saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    raise ValueError(f"unknown GAN loss '{kind}'")


@dataclass
class LossOutput:
    """The weighted total (differentiable), each unweighted term (detached, for logging) and the fakes."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    #: (B, F, 3, S, S) x̂0·M + x0·(1−M): the critic's fakes.
    fake: torch.Tensor | None = None


def build_loss_networks(
    losses_cfg, device: torch.device | str = "cpu"
) -> tuple[nn.Module | None, nn.Module | None]:
    """Load the frozen SyncNet expert and LPIPS for the terms whose λ > 0: ``(syncnet, lpips)``.

    ``losses_cfg`` is a :class:`~diff2lip.train.config.LossConfig`. A needed file that is missing is a
    one-line :class:`Diff2LipError` naming it.
    """
    syncnet = lpips = None
    if losses_cfg.lambda_sync > 0:
        from diff2lip.models.syncnet import load_syncnet

        if not losses_cfg.syncnet_dir:
            raise Diff2LipError(
                "losses.lambda_sync > 0 needs losses.syncnet_dir (a `diff2lip train-syncnet` output; "
                "pass --syncnet DIR) or set losses.lambda_sync: 0"
            )
        syncnet = load_syncnet(Path(losses_cfg.syncnet_dir), device=device).requires_grad_(False).eval()
    if losses_cfg.lambda_lpips > 0:
        from diff2lip.models.perceptual import build_lpips

        lp = losses_cfg.lpips
        lpips = build_lpips(lp.net, backbone_path=lp.backbone_path, heads_path=lp.heads_path, device=device)
    return syncnet, lpips


def motion_weight(frames: torch.Tensor, m: torch.Tensor, nframes: int, strength: float) -> torch.Tensor:
    """Per-pixel weights ``1 + strength·motion`` (B·F, 1, S, S) of ``frames`` (B·F, 3, S, S) in samples of ``nframes``.

    ``motion`` is each pixel's standard deviation over its sample's frames (mean over RGB) divided by its
    mean over the mask ``m`` (B·F, 1, S, S): the pixels that move within the sample (the speech-driven mouth
    and jaw) count more than the static lower face. Shared by the sample's frames.
    """
    bf, c, s, _ = frames.shape
    f = nframes
    motion = frames.view(bf // f, f, c, s, s).std(dim=1).mean(dim=1, keepdim=True)  # (B, 1, S, S)
    motion = motion / masked_mean_flat(motion, m[::f]).clamp(min=1e-6).view(-1, 1, 1, 1)
    weight = 1.0 + strength * motion  # (B, 1, S, S)
    return weight.repeat_interleave(f, dim=0)  # (B·F, 1, S, S)


class Diff2LipLoss:
    """Computes paper eq. 9 from one UNet forward pass.

    Args:
        cfg: :class:`~diff2lip.train.config.LossConfig` (λs, GAN kind, clamping, LPIPS region).
        diffusion: the training diffusion process.
        nframes: frames per sample (5).
        syncnet: frozen expert (needed when ``cfg.lambda_sync > 0``).
        lpips: an :class:`~diff2lip.models.perceptual.LPIPS` (needed when ``cfg.lambda_lpips > 0``).
    """

    def __init__(
        self,
        cfg,
        diffusion: GaussianDiffusion,
        *,
        nframes: int = 5,
        syncnet: nn.Module | None = None,
        lpips: nn.Module | None = None,
    ):
        self.cfg = cfg
        self.diffusion = diffusion
        self.nframes = nframes
        if cfg.lambda_sync > 0 and syncnet is None:
            raise ValueError("lambda_sync > 0 needs a SyncNet")
        if cfg.lambda_lpips > 0 and lpips is None:
            raise ValueError("lambda_lpips > 0 needs an LPIPS network")
        self.syncnet = syncnet
        self.lpips = lpips

    def weights(self, step: int | None = None) -> dict[str, float]:
        """λ per term; the generator's GAN weight is 0 before ``gan_start_step``."""
        c = self.cfg
        gan = c.lambda_gan if step is None or step >= c.gan_start_step else 0.0
        return {
            "simple": c.lambda_simple,
            "vb": c.lambda_vb,
            "l2": c.lambda_l2,
            "sync": c.lambda_sync,
            "lpips": c.lambda_lpips,
            "gan": gan,
        }

    def __call__(
        self,
        model_output: torch.Tensor,
        *,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        mask: torch.Tensor,
        sync_mel: torch.Tensor | None = None,
        discriminator: nn.Module | None = None,
        step: int | None = None,
    ) -> LossOutput:
        """All active terms for one batch.

        Args:
            model_output: UNet output (B·F, 6, S, S) (ε and the variance channels).
            x0, x_t, noise: (B·F, 3, S, S) ground truth, noised frames and the forward-process noise.
            t: (B·F,) integer timesteps (each sample's t repeated over its F frames).
            mask: (1, 1, S, S) lower-half mask.
            sync_mel: (B, 1, 80, 16) sync windows (for ``sync``).
            discriminator: the critic (for ``gan``); its parameters should not require grad here.
            step: the optimizer step (for ``gan_start_step``).
        """
        f = self.nframes
        bf, _, s, _ = x0.shape
        if bf % f:
            raise ValueError(f"batch of {bf} frames is not a multiple of {f}")
        b = bf // f
        w = self.weights(step)
        m = mask.expand(bf, 1, s, s)
        out = self.diffusion.training_losses(model_output, x0, x_t, t, noise, mask=m)
        terms: dict[str, torch.Tensor] = {"simple": out["mse"].mean(), "vb": out["vb"].mean()}
        x0_raw = out["x0_pred"].to(x0.dtype)
        x0_pred = x0_raw.clamp(-1.0, 1.0) if self.cfg.clamp_x0 else x0_raw
        fake = (x0_pred * mask + x0 * (1.0 - mask)).view(b, f, 3, s, s)  # (B, F, 3, S, S)
        if w["l2"] > 0:
            terms["l2"] = self._l2(x0_raw, x0_pred, x0, t, m)
        if w["sync"] > 0:
            from diff2lip.models.syncnet import sync_loss

            if sync_mel is None:
                raise ValueError("the sync term needs sync_mel")
            sn = self.syncnet
            audio_emb, face_emb = sn(sn.lower_half(fake.float()), sync_mel.float())
            terms["sync"] = sync_loss(audio_emb, face_emb, 1.0)
        if w["lpips"] > 0:
            if self.cfg.lpips.region == "lower_half":
                h = s // 2
                terms["lpips"] = self.lpips(x0_pred[..., h:, :].float(), x0[..., h:, :].float()).mean()
            else:
                terms["lpips"] = self.lpips(fake.view(bf, 3, s, s).float(), x0.float()).mean()
        if w["gan"] > 0:
            if discriminator is None:
                raise ValueError("the gan term needs the discriminator")
            terms["gan"] = generator_gan_loss(discriminator(fake).float(), self.cfg.gan_loss)
        total = sum(w[k] * v for k, v in terms.items() if w[k] > 0)
        assert isinstance(total, torch.Tensor)
        return LossOutput(
            total=total,
            terms={k: v.detach() for k, v in terms.items()},
            fake=fake,
        )

    def _l2(
        self,
        x0_raw: torch.Tensor,
        x0_clamped: torch.Tensor,
        x0: torch.Tensor,
        t: torch.Tensor,
        m: torch.Tensor,
    ) -> torch.Tensor:
        """L2 on x̂0 over the mask ``m`` (B·F, 1, S, S), with the optional SNR cap and motion weighting."""
        cfg = self.cfg
        err = (x0_clamped - x0) ** 2 if cfg.l2_snr_cap <= 0 else (x0_raw - x0) ** 2  # (B·F, 3, S, S)
        if cfg.l2_motion_weight > 0:
            err = err * motion_weight(x0, m, self.nframes, cfg.l2_motion_weight)
        per_frame = masked_mean_flat(err, m)  # (B·F,)
        if cfg.l2_snr_cap > 0:
            abar = self.diffusion.extract("alphas_cumprod", t, x0).flatten()  # (B·F,)
            per_frame = per_frame * (cfg.l2_snr_cap * abar / (1.0 - abar)).clamp(max=1.0)  # min(1, cap·SNR)
        return per_frame.mean()

    def discriminator_step_loss(
        self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        """The critic's loss on ground truth ``real`` and detached ``fake`` (both (B, F, 3, S, S)).

        One forward pass over both (the critic's GroupNorm is per sample, so this equals two passes).
        """
        b = real.shape[0]
        logits = discriminator(torch.cat([real, fake.detach()], dim=0)).float()  # (2B, 1, h, w)
        return discriminator_loss(logits[:b], logits[b:], self.cfg.gan_loss)
