"""The Diff2Lip UNet: official key spec, input composition, numerics of its blocks, precision."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diff2lip.errors import Diff2LipError
from diff2lip.models.audio_encoder import AudioEncoder
from diff2lip.models.config import UNetConfig, load_model_config
from diff2lip.models.layers import (
    AttentionBlock,
    GroupNorm32,
    ResBlock,
    qkv_attention_legacy,
    timestep_embedding,
)
from diff2lip.models.unet import Diff2LipUNet

SPEC = Path(__file__).parents[1] / "data" / "official_checkpoint_keys.txt"


def randomize_(module: torch.nn.Module, gen: torch.Generator, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter non-trivial values (the zero-initialised convs would hide bugs)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:  # norm affine and biases: near their defaults
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(scale * torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
    return module


def tiny_inputs(cfg: UNetConfig, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    s = cfg.image_size
    img = torch.rand(batch, 3, s, s, generator=gen) * 2 - 1
    mask = torch.zeros(1, 1, s, s)
    mask[..., s // 2 :, :] = 1.0
    noise = torch.randn(batch, 3, s, s, generator=gen)
    return {
        "x_t": torch.randn(batch, 3, s, s, generator=gen),
        "t": torch.randint(0, 1000, (batch,), generator=gen),
        "cond": img * (1 - mask) + noise * mask,
        "mask": mask,
        "ref": torch.rand(batch, 3, s, s, generator=gen) * 2 - 1,
        "mel": torch.randn(batch, 80, 16, generator=gen),
    }


@pytest.fixture(scope="module")
def tiny() -> tuple[Diff2LipUNet, UNetConfig]:
    cfg = load_model_config("tiny")
    model = randomize_(Diff2LipUNet(cfg), torch.Generator().manual_seed(1)).eval()
    return model, cfg


def read_spec() -> list[tuple[str, str]]:
    lines = [ln for ln in SPEC.read_text().splitlines() if ln and not ln.startswith("#")]
    return [tuple(ln.split("\t")) for ln in lines]  # type: ignore[misc]


def test_paper_state_dict_equals_official_key_spec_line_by_line():
    with torch.device("meta"):
        model = Diff2LipUNet(load_model_config("paper"))
    ours = [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()]
    spec = read_spec()
    assert len(spec) == 632
    for i, (a, b) in enumerate(zip(spec, ours)):
        assert a == b, f"line {i}: spec {a} != ours {b}"
    assert len(ours) == len(spec)
    assert model.num_parameters() == 101_670_630


def test_paper_yaml_equals_dataclass_defaults_and_describes_the_paper():
    cfg = load_model_config("paper")
    assert cfg == UNetConfig()
    assert (cfg.input_channels, cfg.out_channels, cfg.time_embed_dim) == (9, 6, 512)
    assert cfg.channel_mult == (1, 1, 2, 3, 4) and cfg.attention_resolutions == (32, 16, 8)


def test_model_config_is_strict(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  image_size: 128\n  num_heads: 4\n")
    with pytest.raises(Diff2LipError, match=r"unknown config key 'model\.num_heads'"):
        load_model_config(bad)
    bad.write_text("model:\n  attention_resolutions: [24]\n")
    with pytest.raises(Diff2LipError, match="attention resolution 24 px"):
        load_model_config(bad)
    bad.write_text("diffusion: {}\n")
    with pytest.raises(Diff2LipError, match="no 'model:' mapping"):
        load_model_config(bad)


def test_fresh_model_predicts_zero_like_guided_diffusion_init():
    cfg = load_model_config("tiny")
    model = Diff2LipUNet(cfg).eval()
    x = tiny_inputs(cfg, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(**x)
    assert out.shape == (2, 6, 32, 32)
    assert torch.count_nonzero(out) == 0  # the last conv starts at zero


def test_tiny_forward_shape_determinism_and_finiteness(tiny):
    model, cfg = tiny
    with torch.no_grad():
        a = model(**tiny_inputs(cfg, 3, torch.Generator().manual_seed(5)))
        b = model(**tiny_inputs(cfg, 3, torch.Generator().manual_seed(5)))
        c = model(**tiny_inputs(cfg, 3, torch.Generator().manual_seed(6)))
    assert a.shape == (3, cfg.out_channels, 32, 32) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.std() > 1e-2


def test_learn_sigma_false_gives_three_channels():
    cfg = load_model_config("tiny")
    cfg.learn_sigma = False
    model = randomize_(Diff2LipUNet(cfg), torch.Generator().manual_seed(2)).eval()
    with torch.no_grad():
        out = model(**tiny_inputs(cfg, 2, torch.Generator().manual_seed(0)))
    assert out.shape == (2, 3, 32, 32)


def test_upper_half_of_x_t_is_overwritten_by_cond(tiny):
    """Official forward: x = x_t·M + cond·(1−M); only the masked (lower) half of x_t is seen."""
    model, cfg = tiny
    x = tiny_inputs(cfg, 2, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    upper = dict(x, x_t=x["x_t"].clone())
    upper["x_t"][..., :16, :] = torch.randn(2, 3, 16, 32, generator=gen)
    lower = dict(x, x_t=x["x_t"].clone())
    lower["x_t"][..., 16:, :] = torch.randn(2, 3, 16, 32, generator=gen)
    with torch.no_grad():
        base, up, low = model(**x), model(**upper), model(**lower)
    assert torch.equal(base, up)
    assert (base - low).abs().max() > 1e-3


def test_reference_audio_and_timestep_all_condition_the_output(tiny):
    model, cfg = tiny
    x = tiny_inputs(cfg, 2, torch.Generator().manual_seed(7))
    with torch.no_grad():
        base = model(**x)
        for key in ("ref", "mel"):
            other = dict(x, **{key: -x[key]})
            assert (model(**other) - base).abs().max() > 1e-3, key
        assert (model(**dict(x, t=x["t"] // 2 + 1)) - base).abs().max() > 1e-3


def test_frames_are_independent_and_mask_broadcasts(tiny):
    model, cfg = tiny
    x = tiny_inputs(cfg, 4, torch.Generator().manual_seed(8))
    with torch.no_grad():
        batched = model(**x)
        single = model(**{k: v[2:3] if k != "mask" else v for k, v in x.items()})
        full_mask = model(**dict(x, mask=x["mask"].expand(4, 1, 32, 32)))
    torch.testing.assert_close(batched[2:3], single, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched, full_mask, rtol=0, atol=0)


def test_audio_encoder_paper_layout_gives_128x8x8():
    enc = AudioEncoder(UNetConfig())
    with torch.no_grad():
        out = enc(torch.randn(2, 80, 16, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 128, 8, 8)
    strides = [b[0].down_stride for b in enc.encoder_blocks if getattr(b[0], "resample", None) == "down"]
    assert strides == [(2, 1), (2, 1), (2, 2)]


def test_timestep_embedding_golden_values():
    emb = timestep_embedding(torch.tensor([0, 1]), 4)
    f = 10000**-0.5  # frequencies 1 and 10000^(-1/2)
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [math.cos(1), math.cos(f), math.sin(1), math.sin(f)]])
    torch.testing.assert_close(emb, expected)
    assert timestep_embedding(torch.tensor([3]), 5).shape == (1, 5)


def test_attention_equals_manual_softmax_with_legacy_head_split():
    gen = torch.Generator().manual_seed(0)
    b, heads, ch, t = 2, 3, 16, 50
    qkv = torch.randn(b, heads * 3 * ch, t, generator=gen)
    # reference: heads first, then [q, k, v] inside each head; softmax(qᵀk / sqrt(ch)) v
    per_head = qkv.reshape(b * heads, 3 * ch, t)
    q, k, v = per_head[:, :ch], per_head[:, ch : 2 * ch], per_head[:, 2 * ch :]
    w = torch.softmax((q.transpose(1, 2) @ k) / math.sqrt(ch), dim=-1)  # (BH, T, S)
    expected = (v @ w.transpose(1, 2)).reshape(b, heads * ch, t)
    got = qkv_attention_legacy(qkv, heads)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the other ("new") order — q, k, v blocks first, then heads — is a different function
    q2, k2, v2 = (z.reshape(b * heads, ch, t) for z in qkv.chunk(3, dim=1))
    w2 = torch.softmax((q2.transpose(1, 2) @ k2) / math.sqrt(ch), dim=-1)
    other = (v2 @ w2.transpose(1, 2)).reshape(b, heads * ch, t)
    assert (got - other).abs().max() > 1e-2


def test_attention_block_equals_reference():
    gen = torch.Generator().manual_seed(1)
    blk = randomize_(AttentionBlock(64, 32), gen)
    x = torch.randn(2, 64, 4, 4, generator=gen)
    xf = x.reshape(2, 64, 16)
    qkv = F.conv1d(F.group_norm(xf, 32, blk.norm.weight, blk.norm.bias), blk.qkv.weight, blk.qkv.bias)
    heads = qkv.reshape(4, 96, 16)  # (B·H, 3·C, T)
    q, k, v = heads.split(32, dim=1)
    s = 32**-0.25
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(2, 64, 16)
    expected = (xf + F.conv1d(a, blk.proj_out.weight, blk.proj_out.bias)).reshape(2, 64, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("cin", "cout", "resample", "stride"),
    [(32, 64, None, (2, 2)), (32, 32, "down", (2, 1)), (64, 64, "down", (2, 2)), (32, 32, "up", (2, 2))],
)
def test_resblock_equals_reference(cin, cout, resample, stride):
    gen = torch.Generator().manual_seed(2)
    blk = randomize_(ResBlock(cin, 16, cout, resample=resample, down_stride=stride), gen)
    x = torch.randn(2, cin, 8, 8, generator=gen)
    emb = torch.randn(2, 16, generator=gen)

    def rs(z: torch.Tensor) -> torch.Tensor:
        if resample == "down":
            return F.avg_pool2d(z, stride, stride)
        return F.interpolate(z, scale_factor=2, mode="nearest") if resample == "up" else z

    n0, c0, n1, c1 = blk.in_layers[0], blk.in_layers[2], blk.out_layers[0], blk.out_layers[3]
    h = F.silu(F.group_norm(x, 32, n0.weight, n0.bias))
    h = F.conv2d(rs(h), c0.weight, c0.bias, padding=1)
    h = h + F.linear(F.silu(emb), blk.emb_layers[1].weight, blk.emb_layers[1].bias)[:, :, None, None]
    h = F.conv2d(F.silu(F.group_norm(h, 32, n1.weight, n1.bias)), c1.weight, c1.bias, padding=1)
    skip = rs(x) if cin == cout else F.conv2d(x, blk.skip_connection.weight, blk.skip_connection.bias)
    with torch.no_grad():
        torch.testing.assert_close(blk(x, emb), skip + h, rtol=1e-5, atol=1e-5)


def test_norm_groups_decides_whether_an_additive_embedding_survives_the_norm():
    """One channel per group erases the per-channel constant that an additive embedding adds; the
    paper's 4 channels per group (``norm_groups: 8`` at 32 channels) keep its relative part."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 8, 8, generator=gen)
    e1, e2 = torch.randn(2, 16, generator=gen), torch.randn(2, 16, generator=gen)
    erased = randomize_(ResBlock(32, 16, 32, norm_groups=32), gen)
    kept = randomize_(ResBlock(32, 16, 32, norm_groups=8), gen)
    assert kept.in_layers[0].num_groups == kept.out_layers[0].num_groups == 8
    with torch.no_grad():
        torch.testing.assert_close(erased(x, e1), erased(x, e2), rtol=1e-4, atol=1e-4)
        assert (kept(x, e1) - kept(x, e2)).abs().mean() > 1e-2


def test_norm_groups_reach_every_norm_layer_and_are_checked():
    cfg = UNetConfig(
        image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
        num_head_channels=32, audio_init_spatial=32, audio_channels=(32, 32), audio_num_res_blocks=1,
        norm_groups=8,
    )  # fmt: skip
    norms = [m for m in Diff2LipUNet(cfg).modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and {m.num_groups for m in norms} == {8}
    with pytest.raises(Diff2LipError, match="norm_groups"):
        dataclasses.replace(cfg, norm_groups=24).validate()


def test_groupnorm32_computes_in_fp32_under_bf16():
    gen = torch.Generator().manual_seed(3)
    gn = GroupNorm32(32, 64)
    with torch.no_grad():
        gn.weight.copy_(1 + 0.1 * torch.randn(64, generator=gen))
    x = (3 + 5 * torch.randn(2, 64, 8, 8, generator=gen)).bfloat16()
    expected = F.group_norm(x.float(), 32, gn.weight, gn.bias, gn.eps).bfloat16()
    with torch.no_grad():
        plain = gn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = gn(x)
        gn_bf16 = GroupNorm32(32, 64).to(torch.bfloat16)
        gn_bf16.load_state_dict(gn.state_dict())
        cast_weights = gn_bf16(x)
    assert plain.dtype == auto.dtype == torch.bfloat16
    assert torch.equal(plain, expected) and torch.equal(auto, expected)
    # bf16 affine parameters are promoted; only their own rounding differs
    torch.testing.assert_close(cast_weights, expected, rtol=1e-2, atol=1e-2)


def test_bf16_autocast_and_bf16_weights_match_fp32(tiny):
    model, cfg = tiny
    x = tiny_inputs(cfg, 1, torch.Generator().manual_seed(9))  # bf16 convs are slow on AVX2-only CPUs
    with torch.no_grad():
        ref = model(**x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(**x)
        low = Diff2LipUNet(cfg).to(torch.bfloat16).eval()
        low.load_state_dict(model.state_dict())
        cast = low(**x)
    assert auto.dtype == cast.dtype == torch.float32  # returned in x_t's dtype
    scale = ref.abs().max()
    assert (auto - ref).abs().max() < 0.05 * scale
    assert (cast - ref).abs().max() < 0.05 * scale


def test_audio_in_the_middle_block_instead_of_the_style():
    """``audio_as_style: false``: the audio feature map is concatenated to the middle block's input."""
    cfg = dataclasses.replace(load_model_config("tiny"), audio_as_style=False)
    model = randomize_(Diff2LipUNet(cfg), torch.Generator().manual_seed(2)).eval()
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("audio_encoder_to_style") for n in names)
    mid_in = model.middle_block[0].in_layers[0].num_channels
    assert mid_in == cfg.channel_mult[-1] * cfg.model_channels + cfg.audio_channels[-1]
    x = tiny_inputs(cfg, 2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        code = model.encode_audio(x["mel"])
        assert code.ndim == 4 and code.shape[:2] == (2, cfg.audio_channels[-1])  # (B, C_a, h, w)
        out = model(**x)
        assert out.shape == (2, cfg.out_channels, cfg.image_size, cfg.image_size)
        torch.testing.assert_close(model(**{**x, "mel": None}, audio_style=code), out)
        other = model(**{**x, "mel": torch.randn(2, 80, 16, generator=torch.Generator().manual_seed(4))})
        assert (other - out).abs().max() > 1e-3  # the audio reaches the output


def test_audio_in_the_middle_block_saves_and_loads_strictly(tmp_path):
    from diff2lip.models.serialization import load_pretrained

    cfg = dataclasses.replace(load_model_config("tiny"), audio_as_style=False)
    model = randomize_(Diff2LipUNet(cfg), torch.Generator().manual_seed(5))
    model.save_pretrained(tmp_path / "m")
    back = load_pretrained(tmp_path / "m").model
    assert back.config.audio_as_style is False
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_spatial_audio_path():
    """``audio_spatial_rank: r``: r audio coefficients weight learned full-resolution maps; zero-initialised."""
    cfg = dataclasses.replace(load_model_config("tiny"), audio_spatial_rank=3)
    fresh = Diff2LipUNet(cfg)
    assert fresh.audio_spatial_basis.shape == (3, cfg.model_channels * cfg.channel_mult[0], 32, 32)
    assert not fresh.audio_spatial_basis.any()  # silent at initialisation
    model = randomize_(fresh, torch.Generator().manual_seed(2)).eval()
    x = tiny_inputs(cfg, 2, torch.Generator().manual_seed(3))
    ted = cfg.time_embed_dim
    with torch.no_grad():
        code = model.encode_audio(x["mel"])
        assert code.shape == (2, ted + 3)  # the style, then the coefficients
        out = model(**x)
        torch.testing.assert_close(model(**{**x, "mel": None}, audio_style=code), out)
        # the coefficients alone move the output (style kept, coefficients changed)
        moved = model(**{**x, "mel": None}, audio_style=torch.cat([code[:, :ted], -code[:, ted:]], 1))
        assert (moved - out).abs().max() > 1e-3
        # r = 0 in the same weights: dropping the spatial term changes nothing else
        plain = model(**{**x, "mel": None}, audio_style=torch.cat([code[:, :ted], 0 * code[:, ted:]], 1))
        base = Diff2LipUNet(dataclasses.replace(cfg, audio_spatial_rank=0)).eval()
        state = {k: v for k, v in model.state_dict().items() if "spatial" not in k}
        base.load_state_dict(state, strict=True)
        torch.testing.assert_close(base(**{**x, "mel": None}, audio_style=code[:, :ted]), plain)


def test_spatial_audio_path_saves_and_loads_strictly(tmp_path):
    from diff2lip.models.serialization import load_pretrained

    cfg = dataclasses.replace(load_model_config("tiny"), audio_spatial_rank=2)
    model = randomize_(Diff2LipUNet(cfg), torch.Generator().manual_seed(5))
    model.save_pretrained(tmp_path / "m")
    back = load_pretrained(tmp_path / "m").model
    assert back.config.audio_spatial_rank == 2
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_spatial_audio_path_needs_the_style():
    cfg = dataclasses.replace(load_model_config("tiny"), audio_spatial_rank=2, audio_as_style=False)
    with pytest.raises(Diff2LipError, match="audio_spatial_rank"):
        Diff2LipUNet(cfg)
