"""Gaussian diffusion: forward process, x0 ↔ ε, posterior, learned-range variance, masked VB terms.

The maths of DDPM (Ho et al. 2020) with the learned-range variance and hybrid objective of improved DDPM
(Nichol & Dhariwal 2021), matching guided-diffusion's ``GaussianDiffusion`` / ``SpacedDiffusion`` as the
official Diff2Lip code uses them (DESIGN.md §3): ε-prediction, learned-range variance, integer timesteps.
Schedule arrays are float64 numpy; per-sample coefficients are gathered by ``t`` and cast to float32
(float64 when the input is float64), like guided-diffusion's ``_extract_into_tensor``.

Unlike guided-diffusion, methods take the *model output* rather than the model, so the same object serves
training (one forward, several losses) and the samplers in :mod:`diff2lip.diffusion.samplers`.
Diff2Lip's training (paper eq. 9, DESIGN.md §4) restricts ``L_simple`` and the VB term to the mouth
region: pass ``mask`` (B, 1, H, W), 1 where the loss counts.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from diff2lip.diffusion.schedule import PREDICTIONS, DiffusionConfig, beta_schedule

_LOG2 = math.log(2.0)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) element-wise, in nats (broadcasting)."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Tanh approximation of the standard normal CDF (as in Ho et al. / guided-diffusion)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor) -> Tensor:
    """Log-probability (nats) of 8-bit images ``x`` in [-1, 1] under a Gaussian discretised to 256 bins.

    Each pixel integrates the Gaussian over its bin (width 2/255); the edge bins extend to ±∞. The decoder
    term L_0 of the DDPM variational bound (Ho et al. 2020, eq. 13).
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def masked_mean_flat(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean of ``x`` (B, C, H, W) → (B,), over the elements where ``mask`` (B, 1, H, W) is set.

    Without a mask it is guided-diffusion's ``mean_flat``. With one it is Σ(x·m) / (C·Σm), so the result
    does not depend on the size of the masked region (an empty mask gives 0).
    """
    dims = tuple(range(1, x.ndim))
    if mask is None:
        return x.mean(dim=dims)
    mask = mask.to(x.dtype)
    count = mask.expand_as(x).sum(dim=dims)  # (B,) masked elements, channels included
    return (x * mask).sum(dim=dims) / count.clamp(min=1e-8)


class GaussianDiffusion:
    """A discrete Gaussian diffusion process over ``len(betas)`` steps.

    Args:
        betas: float64 betas, one per step (``beta_schedule`` or a respaced set).
        learn_sigma: model outputs 2C channels (ε, v) with the learned-range variance; otherwise C channels
            and the fixed "large" variance (β_t, with the t = 0 entry set to the posterior variance at 1,
            guided-diffusion's ``FIXED_LARGE``, its default when sigma is not learned).
        timestep_map: the original timestep fed to the model for each index of this process (respacing);
            ``arange(len(betas))`` when ``None``.
        prediction: what the first C output channels predict, ``"epsilon"`` (the paper) or ``"v"``
            (:class:`~diff2lip.diffusion.schedule.DiffusionConfig`); :meth:`eps_and_x0` converts either.

    All arrays are float64 numpy of length ``num_timesteps``.
    """

    def __init__(
        self,
        betas: np.ndarray,
        *,
        learn_sigma: bool = True,
        timestep_map: np.ndarray | None = None,
        prediction: str = "epsilon",
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got '{prediction}'")
        self.prediction = prediction
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.learn_sigma = learn_sigma
        self.num_timesteps = int(betas.shape[0])
        if timestep_map is None:
            timestep_map = np.arange(self.num_timesteps, dtype=np.int64)
        self.timestep_map = np.asarray(timestep_map, dtype=np.int64)
        if self.timestep_map.shape != (self.num_timesteps,):
            raise ValueError(
                f"timestep_map must have {self.num_timesteps} entries, got {self.timestep_map.shape}"
            )

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # Posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6–7).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0: its log is clipped to the value at t = 1.
        pv1 = self.posterior_variance[1] if self.num_timesteps > 1 else self.betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(pv1, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )
        self.log_betas = np.log(betas)
        fixed_large = np.append(pv1, betas[1:])
        self.fixed_variance = fixed_large
        self.fixed_log_variance = np.log(fixed_large)
        self._tensors: dict[tuple[str, str, torch.dtype], Tensor] = {}

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> GaussianDiffusion:
        """The full (un-respaced) process of a :class:`DiffusionConfig`."""
        return cls(
            beta_schedule(cfg.schedule, cfg.num_timesteps),
            learn_sigma=cfg.learn_sigma,
            prediction=cfg.prediction,
        )

    # ------------------------------------------------------------------ helpers

    def extract(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """``getattr(self, name)[t]`` as a (B, 1, ..., 1) tensor on ``like``'s device.

        float32 (float64 if ``like`` is float64), gathered per sample, cached per device.
        """
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        key = (name, str(like.device), dtype)
        table = self._tensors.get(key)
        if table is None:
            table = torch.from_numpy(getattr(self, name)).to(dtype).to(like.device)
            self._tensors[key] = table
        return table[t].view(-1, *([1] * (like.ndim - 1)))  # (B, 1, ..., 1)

    def model_timesteps(self, t: Tensor) -> Tensor:
        """Original-process timesteps (int64) for indices ``t`` of this (possibly respaced) process."""
        return self._map_table(t.device)[t]

    def _map_table(self, device: torch.device) -> Tensor:
        key = ("timestep_map", str(device), torch.int64)
        table = self._tensors.get(key)
        if table is None:
            table = torch.from_numpy(self.timestep_map).to(device)
            self._tensors[key] = table
        return table

    def split_model_output(self, model_output: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
        """(B, 2C or C, H, W) → (ε (B, C, H, W), v (B, C, H, W) or None), checking the channel count."""
        expected = 2 * channels if self.learn_sigma else channels
        if model_output.shape[1] != expected:
            raise ValueError(
                f"model output has {model_output.shape[1]} channels, expected {expected} "
                f"(learn_sigma={self.learn_sigma}, image channels {channels})"
            )
        if self.learn_sigma:
            eps, v = torch.split(model_output, channels, dim=1)
            return eps, v
        return model_output, None

    def eps_and_x0(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The model's first C channels → (ε̂, x̂0), both (B, C, H, W) and unclamped.

        ``epsilon``: ε̂ is the output, x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t. ``v``: x̂0 = √ᾱ_t x_t − √(1−ᾱ_t) v̂ and
        ε̂ = √(1−ᾱ_t) x_t + √ᾱ_t v̂ (Salimans & Ho 2022, with α_t² + σ_t² = 1).
        """
        if self.prediction == "epsilon":
            return prediction, self.predict_x0_from_eps(x_t, t, prediction)
        a = self.extract("sqrt_alphas_cumprod", t, x_t)
        s = self.extract("sqrt_one_minus_alphas_cumprod", t, x_t)
        return s * x_t + a * prediction, a * x_t - s * prediction

    def target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the first C channels should output for ``x_t = q_sample(x0, t, noise)``: ε, or v = √ᾱ ε − √(1−ᾱ) x0."""
        if self.prediction == "epsilon":
            return noise
        a = self.extract("sqrt_alphas_cumprod", t, x0)
        s = self.extract("sqrt_one_minus_alphas_cumprod", t, x0)
        return a * noise - s * x0

    # ------------------------------------------------------------------ forward process

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) with the given ``noise`` (Ho et al. eq. 4)."""
        return (
            self.extract("sqrt_alphas_cumprod", t, x0) * x0
            + self.extract("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t (paper eq. 5 / DESIGN.md §4 L2)."""
        return (
            self.extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self.extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t / √ᾱ_t − x_0) / √(1/ᾱ_t − 1), the inverse of :meth:`predict_x0_from_eps`."""
        return (self.extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0) / self.extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6–7).

        The variance terms are (B, 1, ..., 1) and broadcast against the mean.
        """
        mean = (
            self.extract("posterior_mean_coef1", t, x_t) * x0
            + self.extract("posterior_mean_coef2", t, x_t) * x_t
        )
        return (
            mean,
            self.extract("posterior_variance", t, x_t),
            self.extract("posterior_log_variance_clipped", t, x_t),
        )

    # ------------------------------------------------------------------ reverse process

    def p_mean_variance(
        self, model_output: Tensor, x_t: Tensor, t: Tensor, *, clip_denoised: bool = True
    ) -> dict[str, Tensor]:
        """p(x_{t-1} | x_t) from a model output: mean, variance, log_variance, pred_x0 and eps.

        With ``learn_sigma`` the output's second half v ∈ [-1, 1] interpolates the log-variance between
        the clipped posterior variance (v = −1) and β_t (v = +1) (improved DDPM eq. 15). The mean is the
        posterior mean at x̂_0 = pred_x0, clamped to [-1, 1] when ``clip_denoised``. ``eps`` is the model's
        ε (for v-prediction derived from v̂; not re-derived from the clamped x̂_0). All returned tensors have
        ``x_t``'s shape.
        """
        model_output = model_output.to(x_t.dtype)
        eps, v = self.split_model_output(model_output, x_t.shape[1])
        if v is not None:
            min_log = self.extract("posterior_log_variance_clipped", t, x_t)
            max_log = self.extract("log_betas", t, x_t)
            frac = (v + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            variance = self.extract("fixed_variance", t, x_t).expand_as(x_t)
            log_variance = self.extract("fixed_log_variance", t, x_t).expand_as(x_t)
        eps, pred_x0 = self.eps_and_x0(eps, x_t, t)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_x0": pred_x0,
            "eps": eps,
        }

    # ------------------------------------------------------------------ training terms

    def vb_terms_bpd(
        self,
        model_output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor,
        *,
        mask: Tensor | None = None,
        stop_grad_mean: bool = True,
        clip_denoised: bool = False,
    ) -> Tensor:
        """One term of the variational bound per sample, in bits per (masked) dimension, shape (B,).

        KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t)) for t > 0 and the discretised-Gaussian decoder NLL
        −log p(x_0 | x_1) at t = 0 (Ho et al. eq. 5; improved DDPM L_vlb). With ``stop_grad_mean`` the ε half
        of ``model_output`` is detached so the term only trains the variance (improved DDPM's L_hybrid,
        guided-diffusion's ``frozen_out``). ``mask`` (B, 1, H, W) restricts the mean to the masked pixels
        (Diff2Lip trains on the mouth region only). ``clip_denoised`` is off, as in guided-diffusion training.
        """
        if stop_grad_mean and self.learn_sigma:
            eps, v = self.split_model_output(model_output, x_t.shape[1])
            model_output = torch.cat([eps.detach(), v], dim=1)  # (B, 2C, H, W)
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])
        kl = masked_mean_flat(kl, mask) / _LOG2
        nll = -discretized_gaussian_log_likelihood(
            x0, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        nll = masked_mean_flat(nll, mask) / _LOG2
        return torch.where(t == 0, nll, kl)

    def training_losses(
        self,
        model_output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor,
        noise: Tensor,
        *,
        mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The hybrid objective's terms for one step t (paper eq. 9's L_simple, DESIGN.md §4).

        Returns per-sample (B,) ``mse`` (MSE of the prediction — ε, or v for v-prediction — over the masked
        elements), ``vb`` (the VB term with the mean half detached, scaled by T/1000 as guided-diffusion's
        RESCALED_MSE hybrid loss; zeros when sigma is not learned), ``loss`` = mse + vb, and ``x0_pred``
        (B, C, H, W): x̂0 (for ε-prediction (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t), unclamped and differentiable, for the
        L2 / sync / LPIPS / GAN terms.
        """
        model_output = model_output.to(x_t.dtype)
        pred, _ = self.split_model_output(model_output, x_t.shape[1])
        mse = masked_mean_flat((self.target(x0, t, noise) - pred) ** 2, mask)
        if self.learn_sigma:
            vb = self.vb_terms_bpd(model_output, x0, x_t, t, mask=mask) * (self.num_timesteps / 1000.0)
        else:
            vb = torch.zeros_like(mse)
        return {"mse": mse, "vb": vb, "loss": mse + vb, "x0_pred": self.eps_and_x0(pred, x_t, t)[1]}

    # ------------------------------------------------------------------ respacing

    def respace(self, use_timesteps: set[int] | list[int] | np.ndarray) -> GaussianDiffusion:
        """A process that visits only ``use_timesteps`` (guided-diffusion's ``SpacedDiffusion``).

        New betas β'_k = 1 − ᾱ_{s_k} / ᾱ_{s_{k-1}} over the kept steps s_0 < s_1 < ... (ᾱ_{s_{-1}} = 1), so
        ᾱ' equals ᾱ at the kept steps; ``timestep_map`` holds their original timesteps (composed through
        this process's own map, so respacing a respaced process stays consistent).
        """
        keep = sorted({int(s) for s in use_timesteps})
        if not keep or keep[0] < 0 or keep[-1] >= self.num_timesteps:
            raise ValueError(f"timesteps to keep must lie in [0, {self.num_timesteps}), got {keep[:3]}...")
        ab = self.alphas_cumprod[keep]
        ab_prev = np.append(1.0, ab[:-1])
        return GaussianDiffusion(
            1.0 - ab / ab_prev,
            learn_sigma=self.learn_sigma,
            timestep_map=self.timestep_map[keep],
            prediction=self.prediction,
        )
