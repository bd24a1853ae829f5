"""SyncNet expert: shapes, unit embeddings, score range, lower-half input, loss, save/load round trip."""

from __future__ import annotations

import json

import pytest
import torch

from diff2lip.config import from_dict, load_yaml, packaged_config_path
from diff2lip.errors import Diff2LipError
from diff2lip.models.syncnet import (
    SyncNet,
    SyncNetConfig,
    load_syncnet,
    save_syncnet,
    sync_loss,
)

TINY = SyncNetConfig(
    image_size=32,
    face_channels=(8, 16, 16),
    audio_channels=(8, 16, 16),
    stem_stride=2,
    res_blocks=1,
    embed_dim=16,
    norm_groups=4,
)


def _model(cfg: SyncNetConfig = TINY, seed: int = 0) -> SyncNet:
    return SyncNet(cfg, generator=torch.Generator().manual_seed(seed))


def _batch(cfg: SyncNetConfig, b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    faces = torch.rand(b, *cfg.face_input_shape, generator=g)
    mel = torch.rand(b, 1, 80, 16, generator=g) * 8 - 4
    return faces, mel


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        SyncNetConfig(image_size=64, face_channels=(8, 16, 16, 16), audio_channels=(8, 16), embed_dim=8),
    ],
)
def test_shapes_unit_norm_and_score_range(cfg):
    model = _model(cfg).eval()
    faces, mel = _batch(cfg, 3)
    audio_emb, face_emb = model(faces, mel)
    assert audio_emb.shape == face_emb.shape == (3, cfg.embed_dim)
    torch.testing.assert_close(audio_emb.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(face_emb.norm(dim=1), torch.ones(3))
    assert (audio_emb >= 0).all() and (face_emb >= 0).all()  # ReLU'd, as Wav2Lip: cos in [0, 1]
    score = SyncNet.score(audio_emb, face_emb)
    assert score.shape == (3,)
    assert ((score >= 0) & (score <= 1 + 1e-6)).all()


def test_packaged_configs_build_with_their_crop_sizes():
    for name, size in (("syncnet_tiny", 32), ("syncnet_synthetic", 64)):
        doc = load_yaml(packaged_config_path(name))
        cfg = from_dict(SyncNetConfig, doc["model"])
        assert cfg.image_size == size
        faces, mel = _batch(cfg, 2)
        a, f = _model(cfg)(faces, mel)
        assert a.shape == f.shape == (2, cfg.embed_dim)


def test_paper_size_default_config_shapes():
    cfg = SyncNetConfig()  # 128 px crops, 512-d, as Wav2Lip's expert
    assert cfg.face_input_shape == (15, 64, 128)
    with torch.device("meta"):
        model = SyncNet(cfg)
    assert model.face_encoder.out_hw == (4, 8)
    assert model.face_encoder.proj.out_features == 512


def test_wrong_input_shapes_are_rejected():
    model = _model()
    faces, mel = _batch(TINY, 2)
    with pytest.raises(ValueError, match="faces must be"):
        model(faces[:, :12], mel)
    with pytest.raises(ValueError, match="mel must be"):
        model(faces, mel[..., :15])


def test_bad_config_is_one_line_error():
    with pytest.raises(Diff2LipError, match="divisible"):
        SyncNetConfig(image_size=36, face_channels=(8, 16, 16))
    with pytest.raises(Diff2LipError, match="stem_stride"):
        SyncNetConfig(stem_stride=3)


def test_init_is_reproducible_from_the_generator():
    a, b, c = _model(seed=3), _model(seed=3), _model(seed=4)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.face_encoder.proj.weight, c.face_encoder.proj.weight)


def test_lower_half_stacks_frames_on_channels_and_rescales():
    model = _model()
    crops = torch.rand(2, 5, 3, 32, 32) * 2 - 1  # [-1, 1] like Diff2Lip's images
    x = model.lower_half(crops)
    assert x.shape == (2, 15, 16, 32)
    # channel 3·f + c is colour c of frame f, rows 16..31, mapped to [0, 1]
    torch.testing.assert_close(x[1, 3 * 4 + 2], (crops[1, 4, 2, 16:] + 1) / 2)
    torch.testing.assert_close(model.lower_half(crops * 127.5 + 127.5, value_range=(0, 255)), x)
    # other crop sizes are resized to the expert's (a flat colour per frame survives any resize)
    flat = torch.rand(2, 5, 3, 1, 1) * 2 - 1
    y = model.lower_half(flat.expand(2, 5, 3, 48, 48))
    assert y.shape == x.shape
    torch.testing.assert_close(y, ((flat + 1) / 2).expand(2, 5, 3, 16, 32).reshape(2, 15, 16, 32))


def test_sync_probability_matches_forward_and_is_differentiable():
    model = _model().eval()
    crops = (torch.rand(2, 5, 3, 32, 32) * 2 - 1).requires_grad_()
    _, mel = _batch(TINY, 2)
    p = model.sync_probability(crops, mel)
    a, f = model(model.lower_half(crops), mel)
    torch.testing.assert_close(p, SyncNet.score(a, f))
    sync_loss(a, f, 1.0).backward()
    assert crops.grad is not None
    assert crops.grad[:, :, :, :16].abs().sum() == 0  # the upper half plays no part
    assert crops.grad[:, :, :, 16:].abs().sum() > 0


def test_sync_loss_is_bce_of_the_cosine():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=1)
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), dim=1)
    cos = torch.tensor([2**-0.5, 1.0])
    # targets 1, 0: −(log cos₀ + log(1 − clamp(cos₁, max=1 − 1e-7))) / 2, in float32 like the loss
    expected = -(torch.log(cos[0]) + torch.log(1 - cos[1].clamp(max=1 - 1e-7))) / 2
    torch.testing.assert_close(sync_loss(a, f, torch.tensor([1.0, 0.0])), expected)
    assert 8.0 < float(expected) < 8.3  # log(1 − (1 − 1e-7)) dominates: a confident wrong "in sync" costs
    assert torch.isfinite(sync_loss(a, f, 0.0))


def test_a_few_adam_steps_lower_the_loss_on_a_fixed_batch():
    model = _model()
    faces, mel = _batch(TINY, 16)
    target = torch.tensor([1.0, 0.0] * 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = sync_loss(*model(faces, mel), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_save_load_round_trip_is_exact(tmp_path):
    model = _model().eval()
    out = save_syncnet(model, tmp_path / "sn", extra={"step": 7})
    doc = json.loads((out / "config.json").read_text())
    assert doc["format"] == "diff2lip-syncnet" and doc["format_version"] == 1
    assert doc["model"]["face_channels"] == [8, 16, 16] and doc["extra"] == {"step": 7}
    loaded = load_syncnet(out)
    assert loaded.config == model.config and not loaded.training
    faces, mel = _batch(TINY, 2)
    for x, y in zip(model(faces, mel), loaded(faces, mel)):
        assert torch.equal(x, y)


def test_load_is_strict(tmp_path):
    from safetensors.torch import load_file, save_file

    out = save_syncnet(_model(), tmp_path / "sn")
    state = load_file(out / "model.safetensors")
    state.pop("face_encoder.proj.bias")
    save_file(state, out / "model.safetensors")
    with pytest.raises(Diff2LipError, match=r"missing key 'face_encoder\.proj\.bias'"):
        load_syncnet(out)
    with pytest.raises(Diff2LipError, match=r"no config\.json"):
        load_syncnet(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "diff2lip", "format_version": 1}')
    with pytest.raises(Diff2LipError, match="not a SyncNet config"):
        load_syncnet(tmp_path / "bad")
