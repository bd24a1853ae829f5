"""Samplers over a model callable: DDIM (the paper's), DDPM, DPM-Solver++(2M), dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diff2lip.diffusion.gaussian import GaussianDiffusion
from diff2lip.diffusion.samplers import (
    ddim_sample,
    ddim_step,
    ddpm_sample,
    dpmpp_2m_sample,
    dpmpp_timesteps,
    sample,
)
from diff2lip.diffusion.schedule import DiffusionConfig, SamplingConfig, space_timesteps

# ᾱ of DESIGN.md §3's schedule, computed here independently of the library.
AB = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))


@pytest.fixture(scope="module")
def base() -> GaussianDiffusion:
    return GaussianDiffusion.from_config(DiffusionConfig())


def _oracle(x0: torch.Tensor, learn_sigma: bool = True, prediction: str = "epsilon"):
    """A model that knows x0: ε = (x_t − √ᾱ_t x0) / √(1 − ᾱ_t) at the original timestep t (or v = √ᾱ ε − √(1−ᾱ) x0)."""
    ab_table = torch.from_numpy(AB)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.int64 and t.shape == (x.shape[0],)
        ab = ab_table[t].to(x.dtype).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        if prediction == "v":
            eps = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        return torch.cat([eps, torch.zeros_like(eps)], 1) if learn_sigma else eps

    return model_fn


def _gaussian_data_model(mu: float, s: float):
    """The exact ε-model when every pixel of x0 is N(mu, s²): E[x0 | x_t] is affine in x_t."""
    ab_table = torch.from_numpy(AB)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = ab_table[t].to(x.dtype).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        x0 = mu + ab.sqrt() * s**2 / (ab * s**2 + 1 - ab) * (x - ab.sqrt() * mu)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1)

    def exact(noise: torch.Tensor, t_start: int) -> torch.Tensor:
        """The probability-flow ODE solution from x_{t_start} = noise to t = 0, then x̂_0 there."""
        ab, ab0 = AB[t_start], AB[0]
        z = (noise - np.sqrt(ab) * mu) / np.sqrt(ab * s**2 + 1 - ab)  # the ODE keeps the z-score
        x_at_0 = np.sqrt(ab0) * mu + np.sqrt(ab0 * s**2 + 1 - ab0) * z
        return mu + np.sqrt(ab0) * s**2 / (ab0 * s**2 + 1 - ab0) * (x_at_0 - np.sqrt(ab0) * mu)

    return model_fn, exact


def test_ddim_one_step_against_hand_computation(base):
    spaced = base.respace(space_timesteps(1000, "ddim25"))
    x_t = torch.tensor([[[[0.5, -0.3], [0.02, -0.01]]]], dtype=torch.float32)  # (1, 1, 2, 2)
    eps = torch.tensor([[[[0.4, -0.2], [0.0, 0.3]]]], dtype=torch.float32)
    out = torch.cat([eps, torch.full_like(eps, 0.7)], 1)  # the variance half is ignored by DDIM
    # index 24 of the respaced process is t = 960, its predecessor t = 920
    x_prev, pred_x0 = ddim_step(spaced, out, x_t, torch.tensor([24]))
    ab, ab_prev = AB[960], AB[920]
    xt, e = x_t.double().numpy(), eps.double().numpy()
    x0 = np.sqrt(1 / ab) * xt - np.sqrt(1 / ab - 1) * e  # (x_t − √(1−ᾱ) ε)/√ᾱ
    assert np.abs(x0).max() > 1  # the clamp matters here
    x0c = np.clip(x0, -1, 1)
    eps_re = (np.sqrt(1 / ab) * xt - x0c) / np.sqrt(1 / ab - 1)  # ε re-derived from the clamped x̂_0
    expected = np.sqrt(ab_prev) * x0c + np.sqrt(1 - ab_prev) * eps_re
    np.testing.assert_allclose(pred_x0.double().numpy(), x0c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x_prev.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    # the last step (t = 0) has ᾱ_prev = 1: the result is the clamped x̂_0
    x_last, pred_last = ddim_step(spaced, out, x_t, torch.tensor([0]))
    x0_last = np.clip(np.sqrt(1 / AB[0]) * xt - np.sqrt(1 / AB[0] - 1) * e, -1, 1)
    np.testing.assert_allclose(x_last.double().numpy(), x0_last, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_last, pred_last)


def test_ddim25_visits_the_paper_timesteps(base):
    seen: list[list[int]] = []

    def model_fn(x, t):
        seen.append(t.tolist())
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    calls: list[tuple[int, int]] = []
    spaced = base.respace(space_timesteps(1000, "ddim25"))
    out = ddim_sample(
        model_fn, spaced, torch.randn(3, 3, 4, 4), callback=lambda i, n, x, p: calls.append((i, n))
    )
    assert out.shape == (3, 3, 4, 4)
    assert seen == [[t] * 3 for t in range(960, -1, -40)]
    assert calls == [(i, 25) for i in range(25)]


def test_ddim_oracle_recovers_x0_along_the_exact_trajectory(base):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 1.8 - 0.9
    noise = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    spaced = base.respace(space_timesteps(1000, "ddim25"))
    # deterministic DDIM keeps ε fixed: x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε with ε from the start at t = 960
    eps = (noise - np.sqrt(AB[960]) * x0) / np.sqrt(1 - AB[960])
    errors = []

    def check(i, n, x, pred_x0):
        torch.testing.assert_close(pred_x0, x0, rtol=0, atol=1e-9)
        if i < n - 1:
            t_next = 960 - 40 * (i + 1)
            errors.append((x - (np.sqrt(AB[t_next]) * x0 + np.sqrt(1 - AB[t_next]) * eps)).abs().max().item())

    out = ddim_sample(_oracle(x0), spaced, noise, callback=check)
    assert len(errors) == 24 and max(errors) < 1e-9
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)
    # float32, as inference runs
    out32 = ddim_sample(_oracle(x0.float()), spaced, noise.float())
    torch.testing.assert_close(out32, x0.float(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("steps", [10, 15])
def test_dpmpp_oracle_recovers_x0_along_the_exact_trajectory(base, steps):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 1.8 - 0.9
    noise = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    ts = dpmpp_timesteps(base, steps)
    assert len(ts) == steps and ts[0] == 999 and ts[-1] == 0 and (np.diff(ts) < 0).all()
    eps = (noise - np.sqrt(AB[999]) * x0) / np.sqrt(1 - AB[999])
    calls = []

    def check(i, n, x, pred_x0):
        calls.append(i)
        torch.testing.assert_close(pred_x0, x0, rtol=0, atol=1e-9)
        if i < n - 1:
            t_next = int(ts[i + 1])
            expected = np.sqrt(AB[t_next]) * x0 + np.sqrt(1 - AB[t_next]) * eps
            torch.testing.assert_close(x, expected, rtol=0, atol=1e-9)

    out = dpmpp_2m_sample(_oracle(x0), base, noise, steps=steps, callback=check)
    assert calls == list(range(steps))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)


def test_dpmpp_is_second_order_on_gaussian_data(base):
    """Exact ε-model for Gaussian data: DPM-Solver++(2M) converges to the ODE solution much faster than
    DDIM (DPM-Solver-1) on the same timesteps."""
    model_fn, exact = _gaussian_data_model(mu=0.1, s=0.5)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = exact(noise, 999)
    err = {}
    for steps in (10, 15, 25):
        x = dpmpp_2m_sample(model_fn, base, noise, steps=steps, clip_denoised=False)
        err[steps] = (x - target).abs().max().item()
        ddim = ddim_sample(model_fn, base.respace(dpmpp_timesteps(base, steps)), noise, clip_denoised=False)
        assert err[steps] < (ddim - target).abs().max().item() / 4
    assert err[15] < 0.06
    assert err[25] < err[15] < err[10]


def test_ddpm_is_deterministic_with_a_generator(base):
    spaced = base.respace(space_timesteps(1000, "10"))
    x0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    last = {}

    def cb(i, n, x, pred_x0):
        last["i"], last["n"], last["pred"] = i, n, pred_x0

    model_fn = _oracle(x0)
    a = ddpm_sample(model_fn, spaced, noise, generator=torch.Generator().manual_seed(5), callback=cb)
    b = ddpm_sample(model_fn, spaced, noise, generator=torch.Generator().manual_seed(5))
    c = ddpm_sample(model_fn, spaced, noise, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (last["i"], last["n"]) == (9, 10)
    # no noise at t = 0: there the posterior mean is x̂_0 itself
    torch.testing.assert_close(a, last["pred"])


def test_ddpm_uses_the_learned_variance(base):
    """With ε = 0 the step is x_{t-1} = mean + exp(½ log Σ) z: v = ±1 scale the noise as the variance says."""
    spaced = base.respace({0, 500})
    noise = torch.zeros(1, 1, 64, 64)
    outs = {}
    for v in (-1.0, 1.0):

        def model_fn(x, t, v=v):
            return torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1)

        g = torch.Generator().manual_seed(7)
        got = []
        ddpm_sample(
            model_fn,
            spaced,
            noise,
            generator=g,
            clip_denoised=False,
            callback=lambda i, n, x, p, got=got: got.append(x),
        )
        outs[v] = got[0]  # x after the first step (index 1 → 0), mean 0 since x_t = 0 and x̂_0 = 0
    ratio = (outs[1.0].std() / outs[-1.0].std()).item()
    expected = np.sqrt(spaced.betas[1] / spaced.posterior_variance[1])
    assert ratio == pytest.approx(expected, rel=1e-4)


def test_sample_dispatch(base):
    seen: list[int] = []

    def model_fn(x, t):
        seen.append(int(t[0]))
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(8))
    steps_seen = []
    cb = lambda i, n, x, p: steps_seen.append(n)  # noqa: E731

    sample(model_fn, base, noise, SamplingConfig(), callback=cb)
    assert seen == list(range(960, -1, -40)) and steps_seen == [25] * 25

    seen.clear()
    out = sample(
        model_fn,
        base,
        noise,
        SamplingConfig(sampler="ddpm", steps=10),
        generator=torch.Generator().manual_seed(0),
    )
    assert seen == sorted(space_timesteps(1000, "10"), reverse=True) and out.shape == noise.shape

    seen.clear()
    sample(model_fn, base, noise, SamplingConfig(sampler="dpmpp", steps=12))
    assert seen == dpmpp_timesteps(base, 12).tolist() and len(seen) == 12

    # DDIM with eta > 0 is stochastic, reproducible through the generator
    cfg = SamplingConfig(eta=1.0, steps=5)
    a = sample(model_fn, base, noise, cfg, generator=torch.Generator().manual_seed(1))
    b = sample(model_fn, base, noise, cfg, generator=torch.Generator().manual_seed(1))
    c = sample(model_fn, base, noise, SamplingConfig(steps=5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_v_prediction_oracle_recovers_x0_with_every_sampler():
    vdiff = GaussianDiffusion.from_config(DiffusionConfig(prediction="v"))
    g = torch.Generator().manual_seed(8)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 1.8 - 0.9
    noise = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    oracle = _oracle(x0, prediction="v")
    seen = []
    out = ddim_sample(
        oracle, vdiff.respace(space_timesteps(1000, "ddim25")), noise, callback=lambda *a: seen.append(a[3])
    )
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)
    for pred_x0 in seen:  # every step's x̂0 is exact, so the v → x̂0 conversion is
        torch.testing.assert_close(pred_x0, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(dpmpp_2m_sample(oracle, vdiff, noise, steps=10), x0, rtol=0, atol=1e-9)
    spaced = vdiff.respace(space_timesteps(1000, "10"))
    out = ddpm_sample(oracle, spaced, noise, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)  # t = 0: the posterior mean is x̂0, no noise
    # the ε-oracle read as v gives a wrong first x̂0: the parameterisation is really used
    first = []
    ddim_sample(
        _oracle(x0),
        vdiff.respace(space_timesteps(1000, "ddim25")),
        noise,
        callback=lambda *a: first.append(a[3]),
    )
    assert (first[0] - x0).abs().max() > 0.1
