"""Samplers: pure functions over a model callable.

``model_fn(x_t, t) -> out`` takes x_t (B, C, H, W) and the ORIGINAL integer timesteps t (B,) int64 (the
samplers map respaced indices through ``diffusion.timestep_map``; no rescaling, as the official code) and
returns (B, 2C, H, W) (ε and the learned-range v) or (B, C, H, W) when sigma is not learned. Conditioning
(masked frame, reference, audio) is the caller's closure. ``torch.inference_mode`` is the caller's job.

- :func:`ddim_sample`: DDIM (Song et al. 2021, eq. 12), exactly guided-diffusion's ``ddim_sample_loop``;
  the paper's sampler (DESIGN.md §3: eta 0, 25 steps at t = 960, 920, …, 0, x̂_0 clamped to [-1, 1] and ε
  re-derived from it, ᾱ_prev = 1 after the last step).
- :func:`ddpm_sample`: ancestral sampling with the learned variance (guided-diffusion ``p_sample_loop``).
- :func:`dpmpp_2m_sample`: DPM-Solver++(2M) (Lu et al. 2022), data prediction, for 10–15 steps.
- ``distilled``: a ``diff2lip distill`` student — deterministic DDIM at the student's own timesteps
  (:class:`~diff2lip.diffusion.schedule.SamplingConfig` ``timesteps``).
- :func:`sample`: dispatch on a :class:`~diff2lip.diffusion.schedule.SamplingConfig`;
  :func:`sampler_timesteps`: where a config evaluates the model.

``callback(step_index, num_steps, x_t, pred_x0)`` is called after every step (step_index from 0) with the
new sample and that step's x̂_0, e.g. for previews.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from diff2lip.diffusion.gaussian import GaussianDiffusion
from diff2lip.diffusion.schedule import SamplingConfig, space_timesteps
from diff2lip.errors import Diff2LipError

ModelFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, int, Tensor, Tensor], None]


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` from ``generator`` (which must live on ``x``'s device)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _index(diffusion: GaussianDiffusion, i: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """Index ``i`` of ``diffusion`` for the whole batch, and the matching original timesteps for the model."""
    t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)  # (B,)
    return t, diffusion.model_timesteps(t)


def ddim_step(
    diffusion: GaussianDiffusion,
    model_output: Tensor,
    x_t: Tensor,
    t: Tensor,
    *,
    eta: float = 0.0,
    clip_denoised: bool = True,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM update x_t → x_{t-1} (Song et al. 2021, eq. 12) on ``diffusion``'s index ``t`` (B,).

    x̂_0 from ε (clamped to [-1, 1] if ``clip_denoised``), ε re-derived from x̂_0, then
    x_{t-1} = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε + σ z with σ = η √((1−ᾱ_prev)/(1−ᾱ)) √(1 − ᾱ/ᾱ_prev);
    ᾱ_prev = 1 at index 0 and no noise there. ``noise`` is needed only when ``eta > 0``.
    Returns (x_{t-1}, x̂_0).
    """
    out = diffusion.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
    pred_x0 = out["pred_x0"]
    eps = diffusion.predict_eps_from_x0(x_t, t, pred_x0)
    ab = diffusion.extract("alphas_cumprod", t, x_t)
    ab_prev = diffusion.extract("alphas_cumprod_prev", t, x_t)
    sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
    x_prev = pred_x0 * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma**2) * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        nonzero = (t != 0).to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))  # (B, 1, 1, 1)
        x_prev = x_prev + nonzero * sigma * noise
    return x_prev, pred_x0


def ddim_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    noise: Tensor,
    *,
    eta: float = 0.0,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM over every index of ``diffusion`` (respaced, e.g. ``respace(space_timesteps(1000, "ddim25"))``).

    Starts from ``noise`` as x_T; eta 0 is deterministic (``generator`` unused), eta > 0 draws fresh noise
    per step from ``generator``. Returns x_0 (B, C, H, W).
    """
    x = noise
    n = diffusion.num_timesteps
    for k, i in enumerate(range(n - 1, -1, -1)):
        t, model_t = _index(diffusion, i, x)
        step_noise = _randn_like(x, generator) if eta > 0 else None
        x, pred_x0 = ddim_step(
            diffusion, model_fn(x, model_t), x, t, eta=eta, clip_denoised=clip_denoised, noise=step_noise
        )
        if callback is not None:
            callback(k, n, x, pred_x0)
    return x


def ddpm_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    noise: Tensor,
    *,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling x_{t-1} ~ N(μ_θ, Σ_θ) over every index of ``diffusion`` (Ho et al. alg. 2).

    Σ_θ is the learned-range variance (improved DDPM) on the respaced betas, as guided-diffusion's
    ``p_sample_loop`` on a ``SpacedDiffusion``; noise comes from ``generator``; none is added at index 0.
    """
    x = noise
    n = diffusion.num_timesteps
    for k, i in enumerate(range(n - 1, -1, -1)):
        t, model_t = _index(diffusion, i, x)
        out = diffusion.p_mean_variance(model_fn(x, model_t), x, t, clip_denoised=clip_denoised)
        x = out["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * out["log_variance"]) * _randn_like(x, generator)
        if callback is not None:
            callback(k, n, x, out["pred_x0"])
    return x


def dpmpp_timesteps(diffusion: GaussianDiffusion, steps: int, spacing: str = "logsnr") -> np.ndarray:
    """The indices of ``diffusion`` where DPM-Solver++ evaluates the model, descending, int64.

    ``logsnr`` (default): uniform in λ_t = log(√ᾱ_t / √(1−ᾱ_t)) between t = T−1 and t = 0 (one of the DPM-Solver
    paper's spacings), each rounded to the nearest integer t since the model was
    trained on integer timesteps only. ``time_uniform``: ``round(linspace(T−1, 0, steps))``.
    Duplicates after rounding are dropped, so for large ``steps`` (≳ 40 with logsnr, where the grid crowds
    near t = 0) fewer than ``steps`` evaluations can result.

    Why logsnr: on a Gaussian toy problem with an exact ε-model (tests/diffusion/test_samplers.py) the
    2M update with time-uniform steps is erratic at 10–15 steps — the last interval, t ≈ 70 → 0, spans a
    λ range several times the previous one and the 2nd-order extrapolation overshoots — while on the logsnr
    grid it is about 7× more accurate than DDIM on the same grid.
    """
    n = diffusion.num_timesteps
    if not 1 <= steps <= n:
        raise Diff2LipError(f"DPM-Solver++ steps must be in [1, {n}], got {steps}")
    if spacing == "time_uniform":
        ts = np.round(np.linspace(n - 1, 0, steps))
    elif spacing == "logsnr":
        ab = diffusion.alphas_cumprod
        lam = 0.5 * (np.log(ab) - np.log1p(-ab))  # (T,) decreasing in t
        targets = np.linspace(lam[-1], lam[0], steps)
        # np.interp needs increasing x: λ reversed is increasing, with t reversed alongside.
        ts = np.round(np.interp(targets, lam[::-1], np.arange(n - 1, -1, -1, dtype=np.float64)))
    else:
        raise Diff2LipError(f"unknown DPM-Solver++ spacing '{spacing}' (expected time_uniform or logsnr)")
    return np.unique(ts.astype(np.int64))[::-1].copy()


def dpmpp_2m_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    noise: Tensor,
    *,
    steps: int,
    clip_denoised: bool = True,
    spacing: str = "logsnr",
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, alg. 2), data prediction, over a subset of ``diffusion``'s steps.

    ``diffusion`` is the original process (T = 1000); the model is evaluated ``steps`` times at
    :func:`dpmpp_timesteps` (default uniform in log-SNR, from T−1 down to 0). With α_t = √ᾱ_t, σ_t = √(1−ᾱ_t),
    λ_t = log(α_t/σ_t), h_i = λ_{t_i} − λ_{t_{i-1}} and D_i = x̂_0(x_{t_i}, t_i) (clamped to [-1, 1] if
    ``clip_denoised``):

        x_{t_i} = (σ_{t_i}/σ_{t_{i-1}}) x_{t_{i-1}} − α_{t_i} (e^{−h_i} − 1) D,
        D = (1 + 1/(2r)) D_{i-1} − 1/(2r) D_{i-2},  r = h_{i-1}/h_i   (first step: D = D_{i-1}).

    After the last evaluation (t = 0) the solver steps to σ = 0, which is first order and gives x̂_0 —
    the same end point as DDIM's ᾱ_prev = 1. Deterministic. Returns x_0 (B, C, H, W).
    """
    ts = dpmpp_timesteps(diffusion, steps, spacing)
    n = len(ts)
    ab = diffusion.alphas_cumprod[ts]  # (n,) float64
    alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
    lam = np.log(alpha) - np.log(sigma)
    x = noise
    d_prev: Tensor | None = None
    for k in range(n):
        t, model_t = _index(diffusion, int(ts[k]), x)
        pred, _ = diffusion.split_model_output(model_fn(x, model_t).to(x.dtype), x.shape[1])
        d = diffusion.eps_and_x0(pred, x, t)[1]
        if clip_denoised:
            d = d.clamp(-1, 1)
        if k == n - 1:
            x = d  # to σ = 0 (λ = ∞): the first-order update reduces to x̂_0
        else:
            h = float(lam[k + 1] - lam[k])
            coef_x = float(sigma[k + 1] / sigma[k])
            coef_d = -float(alpha[k + 1]) * math.expm1(-h)
            if d_prev is None:
                d_hat = d
            else:
                r = float(lam[k] - lam[k - 1]) / h
                d_hat = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev
            x = coef_x * x + coef_d * d_hat
        d_prev = d
        if callback is not None:
            callback(k, n, x, d)
    return x


def sampler_timesteps(base_diffusion: GaussianDiffusion, cfg: SamplingConfig) -> np.ndarray:
    """The original timesteps where ``cfg`` evaluates the model, in evaluation order (descending), int64."""
    t_total = base_diffusion.num_timesteps
    if cfg.sampler == "ddim":
        keep = space_timesteps(t_total, f"ddim{cfg.steps}")
    elif cfg.sampler == "ddpm":
        keep = space_timesteps(t_total, str(cfg.steps))
    elif cfg.sampler == "dpmpp":
        return dpmpp_timesteps(base_diffusion, cfg.steps)
    elif cfg.sampler == "distilled":
        keep = set(cfg.timesteps or [])
    else:
        raise Diff2LipError(f"unknown sampler '{cfg.sampler}' (expected ddim, ddpm, dpmpp or distilled)")
    return np.array(sorted(keep, reverse=True), dtype=np.int64)


def sample(
    model_fn: ModelFn,
    base_diffusion: GaussianDiffusion,
    noise: Tensor,
    cfg: SamplingConfig,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Sample with ``cfg.sampler`` from the full process ``base_diffusion`` starting at ``noise``.

    ``ddim``: DDIM on ``respace(space_timesteps(T, f"ddim{steps}"))`` (the paper: steps 25, eta 0).
    ``ddpm``: ancestral on ``respace(space_timesteps(T, str(steps)))`` with ``generator``.
    ``dpmpp``: DPM-Solver++(2M) with ``steps`` model evaluations, uniform in log-SNR.
    ``distilled``: DDIM (eta 0) on ``respace(cfg.timesteps)``: a student's K steps.
    """
    t_total = base_diffusion.num_timesteps
    if cfg.sampler == "ddim":
        spaced = base_diffusion.respace(space_timesteps(t_total, f"ddim{cfg.steps}"))
        return ddim_sample(
            model_fn,
            spaced,
            noise,
            eta=cfg.eta,
            clip_denoised=cfg.clip_denoised,
            generator=generator,
            callback=callback,
        )
    if cfg.sampler == "ddpm":
        spaced = base_diffusion.respace(space_timesteps(t_total, str(cfg.steps)))
        return ddpm_sample(
            model_fn, spaced, noise, clip_denoised=cfg.clip_denoised, generator=generator, callback=callback
        )
    if cfg.sampler == "dpmpp":
        return dpmpp_2m_sample(
            model_fn,
            base_diffusion,
            noise,
            steps=cfg.steps,
            clip_denoised=cfg.clip_denoised,
            callback=callback,
        )
    if cfg.sampler == "distilled":
        spaced = base_diffusion.respace(sampler_timesteps(base_diffusion, cfg))
        return ddim_sample(
            model_fn, spaced, noise, eta=0.0, clip_denoised=cfg.clip_denoised, callback=callback
        )
    raise Diff2LipError(f"unknown sampler '{cfg.sampler}' (expected ddim, ddpm, dpmpp or distilled)")
