"""Beta schedules, timestep respacing and the diffusion/sampling configs (DESIGN.md §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diff2lip.config import from_dict, to_dict
from diff2lip.diffusion.schedule import DiffusionConfig, SamplingConfig, beta_schedule, space_timesteps
from diff2lip.errors import Diff2LipError


def test_linear_schedule_golden_alphas_cumprod():
    betas = beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15) and betas[-1] == pytest.approx(0.02, abs=1e-15)
    ab = np.cumprod(1.0 - betas)
    # DESIGN.md §3 / issue 3 golden values, pinned to the digits given.
    assert round(ab[0], 4) == 0.9999
    assert round(ab[40], 5) == 0.97977
    assert round(ab[960] * 1e5, 3) == 8.741  # 8.7413e-05
    assert abs(ab[960] - 8.7413e-05) < 5e-10


def test_linear_schedule_scales_with_num_timesteps():
    betas = beta_schedule("linear", 250)
    assert betas.shape == (250,)
    assert betas[0] == pytest.approx(4e-4) and betas[-1] == pytest.approx(0.08)


def test_cosine_schedule_matches_alpha_bar():
    T = 1000
    betas = beta_schedule("cosine", T)
    assert betas.dtype == np.float64 and (betas > 0).all() and (betas <= 0.999).all()

    def f(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    ab = np.cumprod(1.0 - betas)
    for t in (0, 10, 500, 900):  # no clipping below t ≈ 990: ᾱ_t telescopes to f((t+1)/T) / f(0)
        assert ab[t] == pytest.approx(f((t + 1) / T) / f(0), rel=1e-9)
    assert betas[-1] == 0.999  # the last beta is clipped


def test_unknown_schedule_is_an_error():
    with pytest.raises(Diff2LipError, match="quadratic"):
        beta_schedule("quadratic", 10)


def test_space_timesteps_ddim25_is_the_paper_grid():
    assert space_timesteps(1000, "ddim25") == set(range(0, 1000, 40))
    assert sorted(space_timesteps(1000, "ddim25"))[-1] == 960
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim1") == {999}  # one step from pure noise (the stride rule gives {0})
    with pytest.raises(Diff2LipError, match="999"):
        space_timesteps(1000, "ddim999")


def test_space_timesteps_sections():
    s = space_timesteps(1000, "25")
    assert len(s) == 25 and min(s) == 0 and max(s) == 999
    # stride (1000 - 1) / 24 = 41.625, rounded half to even: 0, 42, 83, 125, 166, ...
    assert sorted(s)[:5] == [0, 42, 83, 125, 166]
    # 300 steps in three sections of 100: 10, 15 and 20 steps, each keeping both ends.
    s = space_timesteps(300, "10,15,20")
    assert len(s) == 45
    assert {0, 99, 100, 199, 200, 299} <= s
    assert sum(1 for x in s if x < 100) == 10 and sum(1 for x in s if 100 <= x < 200) == 15
    assert space_timesteps(300, [10, 15, 20]) == s
    # uneven split: 10 = 4 + 3 + 3
    assert space_timesteps(10, [4, 3, 3]) == set(range(10))
    with pytest.raises(Diff2LipError, match="cannot divide"):
        space_timesteps(100, "60,10")


def test_configs_defaults_and_strict_loading():
    assert to_dict(DiffusionConfig()) == {
        "num_timesteps": 1000,
        "schedule": "linear",
        "learn_sigma": True,
        "prediction": "epsilon",
    }
    with pytest.raises(Diff2LipError, match="unknown diffusion prediction 'x'"):
        from_dict(DiffusionConfig, {"prediction": "x"})
    assert to_dict(SamplingConfig()) == {
        "sampler": "ddim",
        "steps": 25,
        "eta": 0.0,
        "clip_denoised": True,
        "timesteps": None,  # only a distilled student has its own
    }
    cfg = from_dict(SamplingConfig, {"sampler": "dpmpp", "steps": 12})
    assert cfg.sampler == "dpmpp" and cfg.steps == 12
    with pytest.raises(Diff2LipError, match="unknown config key 'step'"):
        from_dict(SamplingConfig, {"step": 3})
    with pytest.raises(Diff2LipError, match="unknown sampler 'euler'"):
        from_dict(SamplingConfig, {"sampler": "euler"})
    with pytest.raises(Diff2LipError, match="unknown diffusion schedule"):
        from_dict(DiffusionConfig, {"schedule": "sqrt"})
