"""Paper eq. 9's terms: finite, masked, switchable, GAN maths, and gradients reaching the UNet."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diff2lip.diffusion import GaussianDiffusion
from diff2lip.losses import (
    Diff2LipLoss,
    build_loss_networks,
    discriminator_loss,
    generator_gan_loss,
    lower_half_mask,
)
from diff2lip.models.discriminator import SequencePatchDiscriminator
from diff2lip.models.unet import Diff2LipUNet
from diff2lip.train.config import load_train_config

S = 32
#: every λ but L2's off
ONLY_L2 = {"lambda_simple": 0.0, "lambda_vb": 0.0, "lambda_sync": 0.0, "lambda_lpips": 0.0, "lambda_gan": 0.0}


@pytest.fixture(scope="module")
def setup(tiny_data_dir, tiny_syncnet_dir, lpips_files):
    cfg = load_train_config(
        "train_tiny",
        [
            f"losses.syncnet_dir={tiny_syncnet_dir}",
            f"losses.lpips.backbone_path={lpips_files[0]}",
            f"losses.lpips.heads_path={lpips_files[1]}",
        ],
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = Diff2LipUNet(cfg.model)
        disc = SequencePatchDiscriminator(cfg.discriminator).requires_grad_(False)
    with torch.no_grad():  # zero-initialised convs (outputs, ResBlock exits) would block every gradient
        gen = torch.Generator().manual_seed(1)
        for p in unet.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.05, generator=gen)
    syncnet, lpips = build_loss_networks(cfg.losses)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    g = torch.Generator().manual_seed(3)
    b = 1
    x0 = torch.rand(b * 5, 3, S, S, generator=g) * 2 - 1
    t = torch.randint(0, 1000, (b,), generator=g).repeat_interleave(5)
    noise = torch.randn(x0.shape, generator=g)
    mask = lower_half_mask(S)
    inputs = {
        "x0": x0,
        "x_t": diffusion.q_sample(x0, t, noise),
        "t": t,
        "noise": noise,
        "mask": mask,
        "cond": x0 * (1 - mask) + torch.randn(x0.shape, generator=g) * mask,
        "ref": torch.rand(b * 5, 3, S, S, generator=g) * 2 - 1,
        "mel": torch.randn(b * 5, 80, 16, generator=g),
        "sync_mel": torch.randn(b, 1, 80, 16, generator=g),
    }
    with torch.no_grad():
        inputs["output"] = unet(inputs["x_t"], t, inputs["cond"], mask, inputs["ref"], inputs["mel"])
    return cfg, unet, disc, syncnet, lpips, diffusion, inputs


def run(setup, losses_cfg=None, model_output=None, step=None):
    cfg, _, disc, syncnet, lpips, diffusion, x = setup
    lc = losses_cfg or cfg.losses
    fn = Diff2LipLoss(lc, diffusion, syncnet=syncnet, lpips=lpips)
    if model_output is None:
        model_output = x["output"]
    out = fn(
        model_output,
        x0=x["x0"],
        x_t=x["x_t"],
        t=x["t"],
        noise=x["noise"],
        mask=x["mask"],
        sync_mel=x["sync_mel"],
        discriminator=disc,
        step=step,
    )
    return fn, out


def test_every_term_finite_and_weighted(setup):
    fn, out = run(setup)
    assert set(out.terms) == {"simple", "vb", "l2", "sync", "lpips", "gan"}
    assert all(torch.isfinite(v) and v >= 0 for v in out.terms.values())
    w = fn.weights()
    assert w == {"simple": 1.0, "vb": 1.0, "l2": 1.0, "sync": 0.1, "lpips": 0.25, "gan": 0.5}
    torch.testing.assert_close(out.total.detach(), sum(w[k] * out.terms[k] for k in out.terms))
    assert out.fake.shape == (1, 5, 3, S, S)


def test_zero_weight_terms_are_off_and_their_networks_not_built(setup):
    cfg = setup[0]
    off = dataclasses.replace(cfg.losses, lambda_sync=0.0, lambda_lpips=0.0, lambda_gan=0.0, syncnet_dir=None)
    off = dataclasses.replace(off, lpips=dataclasses.replace(off.lpips, backbone_path="/nonexistent.pth"))
    assert build_loss_networks(off) == (None, None)  # nothing loaded, so no missing-file error
    _, out = run(setup, off)
    assert set(out.terms) == {"simple", "vb", "l2"}
    gan_later = dataclasses.replace(cfg.losses, gan_start_step=10)
    early, late = run(setup, gan_later, step=9)[1], run(setup, gan_later, step=10)[1]
    assert "gan" not in early.terms and "gan" in late.terms  # the generator's GAN term starts at step 10
    torch.testing.assert_close(early.total + 0.5 * late.terms["gan"], late.total)


def test_terms_only_see_the_masked_lower_half(setup):
    out = setup[-1]["output"]
    changed = out.clone()
    changed[:, :, : S // 2] += 5.0  # ε and v in the upper half
    a, b = run(setup, model_output=out)[1], run(setup, model_output=changed)[1]
    for k in a.terms:
        torch.testing.assert_close(a.terms[k], b.terms[k], msg=k)


def test_gradients_reach_the_unet_from_every_term(setup):
    cfg, unet, *_ = setup
    x = setup[-1]
    output = unet(x["x_t"], x["t"], x["cond"], x["mask"], x["ref"], x["mel"])  # one forward, 4 backwards
    probes = [
        unet.audio_encoder_to_style[-2].weight,
        unet.input_blocks[0][0].weight,
    ]  # audio path, image path
    for term in ("l2", "sync", "lpips", "gan"):
        weights = {
            f"lambda_{k}": (getattr(cfg.losses, f"lambda_{k}") if k == term else 0.0)
            for k in ("l2", "sync", "lpips", "gan")
        }
        only = dataclasses.replace(cfg.losses, lambda_simple=0.0, lambda_vb=0.0, **weights)
        _, out = run(setup, only, model_output=output)
        grads = torch.autograd.grad(out.total, probes, retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads), term


def test_gan_losses_golden_values():
    fake = torch.tensor([[-1.0, 0.0], [2.0, 0.5]])
    real = torch.tensor([[1.0, 3.0]])
    torch.testing.assert_close(generator_gan_loss(fake, "non_saturating"), F.softplus(-fake).mean())
    torch.testing.assert_close(generator_gan_loss(fake, "hinge"), torch.tensor(-0.375))
    torch.testing.assert_close(
        discriminator_loss(real, fake, "non_saturating"),
        F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)),
    )
    # hinge: relu(1 − [1, 3]) = [0, 0]; relu(1 + [−1, 0, 2, .5]) = [0, 1, 3, 1.5] → 1.375
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"), torch.tensor(1.375))


def test_discriminator_step_loss_trains_the_critic(setup):
    cfg = setup[0]
    fn = Diff2LipLoss(dataclasses.replace(cfg.losses, lambda_sync=0.0, lambda_lpips=0.0), setup[5])
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 5, 3, S, S, generator=g)
    fake = -torch.rand(2, 5, 3, S, S, generator=g)
    d = SequencePatchDiscriminator(cfg.discriminator)
    opt = torch.optim.Adam(d.parameters(), lr=1e-3)
    first = None
    for _ in range(5):
        loss = fn.discriminator_step_loss(d, real, fake)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(fn.discriminator_step_loss(d, real, fake).detach()) < first


def test_l2_snr_cap_weights_the_unclamped_x0_error(setup):
    cfg, *_, diffusion, x = setup
    out = x["output"].clone().requires_grad_(True)
    capped = dataclasses.replace(cfg.losses, l2_snr_cap=5.0)
    _, got = run(setup, capped, model_output=out)
    x0_raw = diffusion.predict_x0_from_eps(x["x_t"], x["t"], out[:, :3])
    abar = torch.as_tensor(diffusion.alphas_cumprod, dtype=torch.float32)[x["t"]]
    weight = torch.minimum(torch.ones_like(abar), 5.0 * abar / (1 - abar))  # (5,)
    h = S // 2
    expected = (weight * ((x0_raw - x["x0"])[..., h:, :] ** 2).mean(dim=(1, 2, 3))).mean()
    torch.testing.assert_close(got.terms["l2"], expected.detach())
    # where x̂0 leaves [-1, 1] the paper's clamped L2 has no gradient; the capped one still has
    saturated = out.detach().clone()
    saturated[:, :3] = x["x_t"] / diffusion.extract("sqrt_one_minus_alphas_cumprod", x["t"], x["x_t"]) - 50.0
    saturated.requires_grad_(True)
    for losses_cfg, has_grad in (
        (dataclasses.replace(cfg.losses, **ONLY_L2), False),
        (dataclasses.replace(capped, **ONLY_L2), True),
    ):
        (grad,) = torch.autograd.grad(run(setup, losses_cfg, model_output=saturated)[1].total, saturated)
        assert bool(grad.abs().sum() > 0) == has_grad


def test_l2_motion_weight_counts_moving_pixels_more(setup):
    cfg, *_, diffusion, x = setup
    h = S // 2
    x0 = torch.zeros(5, 3, S, S)
    x0[:, :, h + 4 : h + 8, 10:20] = torch.linspace(-0.5, 0.5, 5).view(5, 1, 1, 1)  # a "mouth" that moves
    t = torch.full((5,), 10)
    noise = torch.zeros_like(x0)
    x_t = diffusion.q_sample(x0, t, noise)
    base = dataclasses.replace(cfg.losses, **ONLY_L2)
    weighted = dataclasses.replace(base, l2_motion_weight=3.0)
    sqrt_1m = diffusion.extract("sqrt_one_minus_alphas_cumprod", t, x0)
    sqrt_a = diffusion.extract("sqrt_alphas_cumprod", t, x0)

    def l2(losses_cfg, where):
        x0_err = torch.zeros_like(x0)
        x0_err[:, :, where[0], where[1]] = 0.1  # the same x̂0 error, on moving or on static pixels
        eps = noise - x0_err * sqrt_a / sqrt_1m  # so that x̂0 = x0 + x0_err
        out = torch.cat([eps, torch.zeros_like(eps)], dim=1)
        fn = Diff2LipLoss(losses_cfg, diffusion)
        return fn(out, x0=x0, x_t=x_t, t=t, noise=noise, mask=x["mask"]).terms["l2"]

    moving, static = (slice(h + 4, h + 8), slice(10, 20)), (slice(h + 10, h + 14), slice(10, 20))
    torch.testing.assert_close(l2(base, moving), l2(base, static))  # unweighted: equal
    assert l2(weighted, static) == pytest.approx(float(l2(base, static)), rel=1e-4)  # static pixels: weight 1
    motion_mean = 40 / (
        h * S
    )  # the moving pixels' share of the lower half; their normalised motion is 1/that
    expected = float(l2(base, moving)) * (1 + 3.0 / motion_mean)
    assert l2(weighted, moving) == pytest.approx(expected, rel=1e-3)
