"""Gaussian diffusion for Diff2Lip (DESIGN.md §3): schedules, the forward/reverse process, samplers."""

from diff2lip.diffusion.gaussian import (
    GaussianDiffusion,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    masked_mean_flat,
    normal_kl,
)
from diff2lip.diffusion.samplers import (
    ddim_sample,
    ddim_step,
    ddpm_sample,
    dpmpp_2m_sample,
    dpmpp_timesteps,
    sample,
    sampler_timesteps,
)
from diff2lip.diffusion.schedule import (
    DiffusionConfig,
    SamplingConfig,
    beta_schedule,
    betas_for_alpha_bar,
    space_timesteps,
)

__all__ = [
    "DiffusionConfig",
    "GaussianDiffusion",
    "SamplingConfig",
    "approx_standard_normal_cdf",
    "beta_schedule",
    "betas_for_alpha_bar",
    "ddim_sample",
    "ddim_step",
    "ddpm_sample",
    "discretized_gaussian_log_likelihood",
    "dpmpp_2m_sample",
    "dpmpp_timesteps",
    "masked_mean_flat",
    "normal_kl",
    "sample",
    "sampler_timesteps",
    "space_timesteps",
]
