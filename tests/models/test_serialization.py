"""save_pretrained / load_pretrained: config.json + model.safetensors, strict round trips."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from diff2lip.errors import Diff2LipError
from diff2lip.models import (
    Diff2LipUNet,
    load_checkpoint,
    load_model_config,
    load_pretrained,
    save_pretrained,
)

DIFFUSION = {"num_timesteps": 1000, "schedule": "linear", "learn_sigma": True}
SAMPLING = {"sampler": "ddim", "steps": 25, "eta": 0.0, "clip_denoised": True}


def random_tiny(seed: int) -> Diff2LipUNet:
    gen = torch.Generator().manual_seed(seed)
    model = Diff2LipUNet(load_model_config("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in) * (1 if p.ndim > 1 else 0.1))
    return model.eval()


def inputs(batch: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:, :] = 1
    cond = torch.randn(batch, 3, 32, 32, generator=gen)
    ref = torch.randn(batch, 3, 32, 32, generator=gen)
    mel = torch.randn(batch, 80, 16, generator=gen)
    return x, torch.tensor([5, 900][:batch]), cond, mask, ref, mel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = random_tiny(0)
    d = tmp_path_factory.mktemp("pretrained") / "tiny"
    save_pretrained(model, d, diffusion=DIFFUSION, sampling=SAMPLING, extra={"note": "test"})
    return model, d


def test_save_writes_config_json_and_safetensors(saved):
    model, d = saved
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((d / "config.json").read_text())
    assert doc["format"] == "diff2lip" and doc["format_version"] == 1
    assert doc["model"]["image_size"] == 32 and doc["model"]["channel_mult"] == [1, 2]
    assert doc["diffusion"] == DIFFUSION and doc["sampling"] == SAMPLING and doc["extra"] == {"note": "test"}
    tensors = load_file(d / "model.safetensors")
    assert set(tensors) == set(model.state_dict())
    assert all(t.dtype == torch.float32 for t in tensors.values())


def test_load_pretrained_reproduces_outputs_exactly(saved):
    model, d = saved
    loaded = load_pretrained(d)
    assert loaded.path == d and loaded.config_dict["sampling"] == SAMPLING
    assert loaded.model.config == model.config and not loaded.model.training
    with torch.no_grad():
        assert torch.equal(loaded.model(*inputs()), model(*inputs()))
    again = Diff2LipUNet.from_pretrained(d)  # the same through the class and through load_checkpoint
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert load_checkpoint(d).config_dict == loaded.config_dict


def test_fp16_storage_loads_as_fp32_close_to_original(tmp_path):
    model = random_tiny(1)
    model.save_pretrained(tmp_path / "half", dtype="fp16")
    stored = load_file(tmp_path / "half" / "model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    loaded = load_pretrained(tmp_path / "half").model
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    with torch.no_grad():
        a, b = loaded(*inputs()), model(*inputs())
    assert (a - b).abs().max() < 1e-2 * b.abs().max()


def _tamper(d, change) -> None:
    tensors = load_file(d / "model.safetensors")
    change(tensors)
    save_file(tensors, d / "model.safetensors")


def test_strict_load_rejects_extra_missing_and_misshaped_tensors(tmp_path):
    model = random_tiny(2)
    cases = {
        "extra": (lambda t: t.__setitem__("extra.weight", torch.zeros(3)), r"unexpected key 'extra\.weight'"),
        "missing": (lambda t: t.pop("out.2.bias"), r"missing key 'out\.2\.bias' \(expected shape \(6,\)\)"),
        "shape": (
            lambda t: t.__setitem__("out.2.weight", torch.zeros(6, 32, 1, 1)),
            r"shape mismatch for key 'out\.2\.weight': expected \(6, 32, 3, 3\), found \(6, 32, 1, 1\)",
        ),
    }
    for name, (change, pattern) in cases.items():
        d = tmp_path / name
        save_pretrained(model, d)
        _tamper(d, change)
        with pytest.raises(Diff2LipError, match=pattern) as err:
            load_pretrained(d)
        assert "model.safetensors" in str(err.value)


def test_config_json_is_validated(tmp_path):
    model = random_tiny(3)
    d = tmp_path / "m"
    save_pretrained(model, d)
    doc = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(dict(doc, format="other")))
    with pytest.raises(Diff2LipError, match="not a Diff2Lip model config"):
        load_pretrained(d)
    doc["model"]["num_heads"] = 4
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(Diff2LipError, match=r"unknown config key 'model\.num_heads'"):
        load_pretrained(d)
    del doc["model"]["num_heads"]
    (d / "config.json").write_text(json.dumps(dict(doc, samplng={"steps": 5})))  # a typo at the top level
    with pytest.raises(Diff2LipError, match=r"unknown top-level key\(s\) 'samplng'"):
        load_pretrained(d)
    with pytest.raises(Diff2LipError, match=r"no config\.json"):
        load_pretrained(tmp_path)
    with pytest.raises(Diff2LipError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_packaged_configs_carry_the_diffusion_and_sampling_sections(name):
    from diff2lip.config import load_yaml, packaged_config_path

    doc = load_yaml(packaged_config_path(name))
    assert {"model", "diffusion", "sampling"} <= set(doc)
    assert doc["diffusion"] == DIFFUSION and doc["sampling"] == SAMPLING
    assert doc["model"]["learn_sigma"] is doc["diffusion"]["learn_sigma"]


def test_checkpoint_model_config_reads_the_architecture_without_the_weights(tiny_model_dir, tmp_path):
    from diff2lip.models.serialization import checkpoint_model_config, load_pretrained, paper_config

    assert checkpoint_model_config(tiny_model_dir) == load_pretrained(tiny_model_dir).model.config
    official = tmp_path / "official.pt"
    official.write_bytes(b"not read")  # an official .pt has the paper's architecture by definition
    assert checkpoint_model_config(official) == paper_config()
    with pytest.raises(Diff2LipError, match="checkpoint not found"):
        checkpoint_model_config(tmp_path / "missing")


def test_third_party_state_dicts_are_read_safely_and_loaded_strictly(tmp_path):
    from diff2lip.models.serialization import load_state_dict_strict, read_torch_state_dict

    def net() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))

    src, dst = net(), net()
    old_export = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old_export, tmp_path / "w.pth")
    state = read_torch_state_dict(tmp_path / "w.pth", "test weights", "make them")
    load_state_dict_strict(dst, state, tmp_path / "w.pth", what="test weights file")
    assert torch.equal(dst[0].weight, src[0].weight) and torch.equal(dst[1].running_var, src[1].running_var)
    with pytest.raises(Diff2LipError, match=r"unexpected key '1\.extra'"):
        load_state_dict_strict(dst, {**old_export, "1.extra": torch.zeros(1)}, None, what="test weights file")

    with pytest.raises(Diff2LipError, match="test weights not found; make them"):
        read_torch_state_dict(tmp_path / "nope.pth", "test weights", "make them")
    torch.save(torch.nn.ReLU(), tmp_path / "code.pth")  # a pickled module: code, not plain tensors
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    for name in ("code.pth", "junk.pth"):
        with pytest.raises(Diff2LipError, match="cannot read test weights") as e:
            read_torch_state_dict(tmp_path / name, "test weights", "make them")
        assert "\n" not in str(e.value)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(Diff2LipError, match=r"not a state_dict \(expected test weights\)"):
        read_torch_state_dict(tmp_path / "list.pth", "test weights", "make them")
