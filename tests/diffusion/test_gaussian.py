"""GaussianDiffusion: forward process, x0 ↔ ε, posterior, learned variance, masked VB terms, respacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from diff2lip.diffusion.gaussian import (
    GaussianDiffusion,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    normal_kl,
)
from diff2lip.diffusion.schedule import DiffusionConfig, beta_schedule, space_timesteps


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion.from_config(DiffusionConfig())


def _lower_half_mask(b: int, h: int, w: int) -> torch.Tensor:
    m = torch.zeros(b, 1, h, w)
    m[:, :, h // 2 :] = 1.0  # DESIGN.md §3: M is 1 on the lower half
    return m


def test_arrays_are_float64_and_consistent(diffusion):
    assert diffusion.num_timesteps == 1000
    for name in ("alphas_cumprod", "alphas_cumprod_prev", "posterior_variance", "posterior_mean_coef1"):
        assert getattr(diffusion, name).dtype == np.float64
    assert diffusion.alphas_cumprod_prev[0] == 1.0
    np.testing.assert_array_equal(diffusion.alphas_cumprod_prev[1:], diffusion.alphas_cumprod[:-1])
    np.testing.assert_array_equal(diffusion.timestep_map, np.arange(1000))
    # t = 0's clipped log-variance is t = 1's (the true posterior variance at 0 is 0)
    assert diffusion.posterior_variance[0] == 0.0
    assert diffusion.posterior_log_variance_clipped[0] == math.log(diffusion.posterior_variance[1])


def test_respace_ddim25(diffusion):
    spaced = diffusion.respace(space_timesteps(1000, "ddim25"))
    assert spaced.num_timesteps == 25
    assert spaced.timestep_map.tolist() == list(range(0, 1000, 40))
    assert spaced.alphas_cumprod_prev[0] == 1.0
    np.testing.assert_allclose(spaced.alphas_cumprod, diffusion.alphas_cumprod[0:1000:40], rtol=1e-12)
    np.testing.assert_allclose(spaced.alphas_cumprod_prev[1:], diffusion.alphas_cumprod[0:960:40], rtol=1e-12)
    assert spaced.learn_sigma
    # respacing composes through the map: keeping indices 1 and 3 of the 25 gives t = 40 and 120
    twice = spaced.respace({1, 3})
    assert twice.timestep_map.tolist() == [40, 120]
    np.testing.assert_allclose(twice.alphas_cumprod, diffusion.alphas_cumprod[[40, 120]], rtol=1e-12)
    t = torch.tensor([0, 1])
    assert twice.model_timesteps(t).tolist() == [40, 120]


def test_q_sample_statistics(diffusion):
    g = torch.Generator().manual_seed(0)
    n = 20000
    t = torch.tensor([0, 100, 500, 999])
    x0 = torch.full((4, 1, 1, n), 0.5)
    x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    assert x_t.dtype == torch.float32
    ab = diffusion.alphas_cumprod[t.numpy()]
    mean = x_t.flatten(1).mean(1).double().numpy()
    std = x_t.flatten(1).std(1).double().numpy()
    assert (np.abs(mean - np.sqrt(ab) * 0.5) < 4 * np.sqrt(1 - ab) / np.sqrt(n) + 1e-6).all()
    np.testing.assert_allclose(std, np.sqrt(1 - ab), rtol=0.03)


def test_x0_eps_round_trip(diffusion):
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 480, 999])
    x0 = diffusion.predict_x0_from_eps(x_t, t, eps)
    torch.testing.assert_close(diffusion.predict_eps_from_x0(x_t, t, x0), eps, rtol=0, atol=1e-9)
    # and it inverts q_sample: x_t = √ᾱ x0 + √(1−ᾱ) ε
    torch.testing.assert_close(diffusion.q_sample(x0, t, eps), x_t, rtol=0, atol=1e-9)


def test_posterior_matches_gaussian_product(diffusion):
    """q(x_{t-1}|x_t,x_0) ∝ N(x_t; √α_t x_{t-1}, β_t) · N(x_{t-1}; √ᾱ_{t-1} x_0, 1−ᾱ_{t-1})."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    x_t = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 40, 999])
    mean, var, log_var = diffusion.q_posterior_mean_variance(x0, x_t, t)
    betas = torch.from_numpy(beta_schedule("linear", 1000))
    ab = torch.cumprod(1 - betas, 0)
    b, a, ab_prev = betas[t], 1 - betas[t], ab[t - 1]
    precision = a / b + 1 / (1 - ab_prev)
    expected_var = 1 / precision
    expected_mean = expected_var.view(-1, 1, 1, 1) * (
        (a.sqrt() / b).view(-1, 1, 1, 1) * x_t + (ab_prev.sqrt() / (1 - ab_prev)).view(-1, 1, 1, 1) * x0
    )
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(var.flatten(), expected_var, rtol=1e-9, atol=0)
    torch.testing.assert_close(log_var.flatten(), expected_var.log(), rtol=1e-9, atol=1e-12)


def test_learned_range_variance_endpoints(diffusion):
    x_t = torch.zeros(3, 3, 4, 4)
    eps = torch.zeros(3, 3, 4, 4)
    t = torch.tensor([0, 7, 960])
    lo = diffusion.posterior_log_variance_clipped[t.numpy()]
    hi = np.log(diffusion.betas[t.numpy()])
    for v, expected in ((-1.0, lo), (1.0, hi), (0.0, (lo + hi) / 2)):
        out = diffusion.p_mean_variance(torch.cat([eps, torch.full_like(eps, v)], 1), x_t, t)
        got = out["log_variance"][:, 0, 0, 0].double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        torch.testing.assert_close(out["variance"], out["log_variance"].exp())
        assert out["mean"].shape == out["pred_x0"].shape == out["eps"].shape == x_t.shape


def test_fixed_variance_without_learned_sigma():
    d = GaussianDiffusion(beta_schedule("linear", 1000), learn_sigma=False)
    x_t = torch.zeros(2, 3, 2, 2)
    out = d.p_mean_variance(torch.zeros(2, 3, 2, 2), x_t, torch.tensor([0, 5]))
    var = out["variance"][:, 0, 0, 0].double().numpy()
    np.testing.assert_allclose(var, [d.posterior_variance[1], d.betas[5]], rtol=1e-6)  # FIXED_LARGE
    with pytest.raises(ValueError, match="channels"):
        d.p_mean_variance(torch.zeros(2, 6, 2, 2), x_t, torch.tensor([0, 5]))


def test_p_mean_variance_clamps_pred_x0(diffusion):
    x_t = torch.full((1, 3, 2, 2), 3.0)
    out = diffusion.p_mean_variance(torch.zeros(1, 6, 2, 2), x_t, torch.tensor([10]))
    assert out["pred_x0"].max().item() == 1.0
    free = diffusion.p_mean_variance(torch.zeros(1, 6, 2, 2), x_t, torch.tensor([10]), clip_denoised=False)
    assert free["pred_x0"].min().item() > 3.0


def test_normal_kl_and_cdf_helpers():
    m1, lv1, m2, lv2 = (
        torch.tensor(v, dtype=torch.float64) for v in (0.3, math.log(0.5), -0.2, math.log(2.0))
    )
    closed = math.log(math.sqrt(2.0) / math.sqrt(0.5)) + (0.5 + 0.5**2) / (2 * 2.0) - 0.5
    assert normal_kl(m1, lv1, m2, lv2).item() == pytest.approx(closed, rel=1e-12)
    assert normal_kl(m1, lv1, m1, lv1).item() == 0.0
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)
    np.testing.assert_allclose(approx_standard_normal_cdf(x).numpy(), norm.cdf(x.numpy()), atol=2e-3)


def test_discretized_gaussian_log_likelihood():
    x = torch.tensor([-1.0, 0.0, 2 / 255 - 1, 1.0], dtype=torch.float64)
    # a very narrow Gaussian centred on the pixel puts all mass in its bin
    lp = discretized_gaussian_log_likelihood(x, means=x, log_scales=torch.full_like(x, -10.0))
    np.testing.assert_allclose(lp.numpy(), 0.0, atol=1e-9)
    # a wide one: bin mass ≈ density × bin width 2/255
    s = 0.5
    lp = discretized_gaussian_log_likelihood(
        torch.tensor([0.2], dtype=torch.float64),
        means=torch.tensor([0.0], dtype=torch.float64),
        log_scales=torch.tensor([math.log(s)], dtype=torch.float64),
    )
    assert lp.item() == pytest.approx(math.log(norm.pdf(0.2, scale=s) * 2 / 255), abs=2e-3)


def _posterior_output(d: GaussianDiffusion, x0, x_t, t):
    """A model output whose mean and variance equal the true posterior: ε from (x_t, x0), v = −1."""
    eps = d.predict_eps_from_x0(x_t, t, x0)
    return torch.cat([eps, -torch.ones_like(eps)], 1)


def test_vb_kl_is_zero_at_the_posterior(diffusion):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) * 1.8 - 0.9
    noise = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 40, 960])
    x_t = diffusion.q_sample(x0, t, noise)
    vb = diffusion.vb_terms_bpd(_posterior_output(diffusion, x0, x_t, t), x0, x_t, t)
    assert vb.shape == (3,)
    np.testing.assert_allclose(vb.numpy(), 0.0, atol=1e-8)
    # a wrong variance or mean costs bits
    wrong = _posterior_output(diffusion, x0, x_t, t)
    wrong[:, 3:] = 1.0
    assert (diffusion.vb_terms_bpd(wrong, x0, x_t, t) > 0).all()
    wrong = _posterior_output(diffusion, x0, x_t, t)
    wrong[:, :3] += 0.1
    assert (diffusion.vb_terms_bpd(wrong, x0, x_t, t) > 1e-5).all()


def test_vb_at_t0_is_decoder_nll(diffusion):
    g = torch.Generator().manual_seed(4)
    x0 = torch.randint(0, 256, (2, 3, 4, 4), generator=g).double() / 127.5 - 1
    noise = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.zeros(2, dtype=torch.long)
    x_t = diffusion.q_sample(x0, t, noise)
    out = _posterior_output(diffusion, x0, x_t, t)
    vb = diffusion.vb_terms_bpd(out, x0, x_t, t)
    pm = diffusion.p_mean_variance(out, x_t, t, clip_denoised=False)
    nll = -discretized_gaussian_log_likelihood(x0, means=pm["mean"], log_scales=0.5 * pm["log_variance"])
    torch.testing.assert_close(vb, nll.mean(dim=(1, 2, 3)) / math.log(2.0))
    assert (vb > 0).all()


def test_mask_restricts_losses(diffusion):
    g = torch.Generator().manual_seed(5)
    b, c, h, w = 2, 3, 8, 8
    x0 = torch.rand(b, c, h, w, generator=g) * 2 - 1
    noise = torch.randn(b, c, h, w, generator=g)
    t = torch.tensor([0, 300])
    x_t = diffusion.q_sample(x0, t, noise)
    out = torch.randn(b, 2 * c, h, w, generator=g).clamp(-1, 1)
    mask = _lower_half_mask(b, h, w)
    base = diffusion.training_losses(out, x0, x_t, t, noise, mask=mask)
    # mse is the mean over the masked elements only
    expected_mse = ((noise - out[:, :c]) ** 2)[:, :, h // 2 :].mean(dim=(1, 2, 3))
    torch.testing.assert_close(base["mse"], expected_mse)
    # changing everything outside the mask leaves mse and vb unchanged
    up = 1 - mask
    x0b, x_tb, noiseb = x0 + up * 0.3, x_t + up * 0.7, noise + up * 1.1
    outb = out + torch.cat([up, up, up, up, up, up], 1) * 0.4
    other = diffusion.training_losses(outb, x0b, x_tb, t, noiseb, mask=mask)
    torch.testing.assert_close(other["mse"], base["mse"])
    torch.testing.assert_close(other["vb"], base["vb"])
    # ... while a change inside it does not
    changed = diffusion.training_losses(out + mask * 0.4, x0, x_t, t, noise, mask=mask)
    assert (changed["mse"] != base["mse"]).all() and (changed["vb"] != base["vb"]).all()
    # without a mask the whole image counts
    full = diffusion.training_losses(out, x0, x_t, t, noise)
    torch.testing.assert_close(full["mse"], ((noise - out[:, :c]) ** 2).mean(dim=(1, 2, 3)))


def test_training_losses_gradients_and_x0_pred(diffusion):
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([5, 700])
    x_t = diffusion.q_sample(x0, t, noise)
    out = torch.randn(2, 6, 4, 4, generator=g).clamp(-1, 1).requires_grad_(True)
    terms = diffusion.training_losses(out, x0, x_t, t, noise)
    assert set(terms) == {"mse", "vb", "loss", "x0_pred"}
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    torch.testing.assert_close(terms["x0_pred"], diffusion.predict_x0_from_eps(x_t, t, out[:, :3]))
    # the VB term trains the variance only (stop-gradient on ε, improved DDPM's L_hybrid)
    (grad_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    assert grad_vb[:, :3].abs().max() == 0 and grad_vb[:, 3:].abs().max() > 0
    # the MSE term trains ε only; x0_pred is differentiable through ε
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), out, retain_graph=True)
    assert grad_mse[:, 3:].abs().max() == 0 and grad_mse[:, :3].abs().max() > 0
    (grad_x0,) = torch.autograd.grad(terms["x0_pred"].sum(), out)
    assert grad_x0[:, :3].abs().min() > 0


def test_vb_is_rescaled_by_num_timesteps():
    d = GaussianDiffusion(beta_schedule("linear", 500))
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([3, 400])
    x_t = d.q_sample(x0, t, noise)
    out = torch.randn(2, 6, 4, 4, generator=g).clamp(-1, 1)
    terms = d.training_losses(out, x0, x_t, t, noise)
    torch.testing.assert_close(terms["vb"], d.vb_terms_bpd(out, x0, x_t, t) * 0.5)
    fixed = GaussianDiffusion(beta_schedule("linear", 500), learn_sigma=False)
    assert fixed.training_losses(out[:, :3], x0, x_t, t, noise)["vb"].abs().max() == 0


def test_v_prediction_targets_and_conversions():
    vd = GaussianDiffusion.from_config(DiffusionConfig(prediction="v"))
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    x_t = vd.q_sample(x0, t, noise)
    v = vd.target(x0, t, noise)
    ab = torch.from_numpy(vd.alphas_cumprod)[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, ab.sqrt() * noise - (1 - ab).sqrt() * x0)  # Salimans & Ho, eq. in §4
    eps, x0_hat = vd.eps_and_x0(v, x_t, t)
    torch.testing.assert_close(eps, noise, rtol=0, atol=1e-9)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-9)
    # an error δ in v̂ moves x̂0 by at most δ (ε-prediction: by δ·√(1/ᾱ − 1), ~156 at t = 999)
    delta = 1e-3 * torch.ones_like(v)
    assert (vd.eps_and_x0(v + delta, x_t, t)[1] - x0).abs().max() <= 1e-3 + 1e-12
    eps_d = GaussianDiffusion.from_config(DiffusionConfig())
    assert (eps_d.eps_and_x0(noise + delta, x_t, t)[1] - x0).abs().max() > 0.1
    # the training MSE is on v; a perfect v gives zero loss and the exact x̂0, also through respacing
    out = vd.training_losses(torch.cat([v, torch.zeros_like(v)], 1), x0, x_t, t, noise)
    assert out["mse"].abs().max() < 1e-18
    torch.testing.assert_close(out["x0_pred"], x0, rtol=0, atol=1e-9)
    assert vd.respace([0, 500, 999]).prediction == "v"
    with pytest.raises(ValueError, match="prediction"):
        GaussianDiffusion(vd.betas, prediction="x0")
