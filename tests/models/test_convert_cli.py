"""``diff2lip convert`` and the official-checkpoint loader: strict keys/shapes, safe unpickling."""

from __future__ import annotations

import ast
import os
import shlex
from pathlib import Path

import pytest
import torch

from diff2lip.cli import main
from diff2lip.errors import Diff2LipError
from diff2lip.models import load_checkpoint, load_official_state_dict, load_pretrained

SPEC = Path(__file__).parents[1] / "data" / "official_checkpoint_keys.txt"


def official_like_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Every key and shape of the released checkpoint, in its order, one random value per tensor.

    The tensors are stride-0 expansions of a scalar, so the pickle stays a few hundred KB.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for line in SPEC.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            out[key] = torch.randn((), generator=gen).expand(ast.literal_eval(shape))
    return out


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = official_like_state_dict(0)
    path = tmp_path_factory.mktemp("official") / "e7.24.1.3_model260000_paper.pt"
    torch.save(sd, path)
    return path, sd


class Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class Custom:
    """A harmless custom class: still not a plain state_dict, so it is refused too."""

    def __init__(self):
        self.value = 3


def test_help_says_where_the_checkpoint_comes_from(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "e7.24.1.3_model260000_paper.pt" in text
    assert "drive.google.com" in text and "never downloads" in text


def test_convert_writes_a_model_that_loads_strictly(official, tmp_path, capsys):
    path, sd = official
    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.safetensors" in printed and "632 tensors" in printed and "101,670,630" in printed
    loaded = load_pretrained(out)
    assert loaded.config_dict["model"]["image_size"] == 128
    assert loaded.config_dict["diffusion"] == {
        "num_timesteps": 1000,
        "schedule": "linear",
        "learn_sigma": True,
    }
    assert loaded.config_dict["sampling"]["steps"] == 25
    assert loaded.config_dict["extra"]["converted_from"] == path.name
    state = loaded.model.state_dict()
    assert list(state) == list(sd)
    assert all(torch.equal(state[k], sd[k]) for k in sd)
    del loaded, state
    direct = load_checkpoint(path)  # generate --checkpoint accepts the .pt as well
    assert direct.config_dict["sampling"]["sampler"] == "ddim"
    first = next(iter(sd))
    assert torch.equal(direct.model.state_dict()[first], sd[first])
    # a second run without --overwrite refuses to clobber the model
    assert main(["convert", str(path), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module."])
def test_wrapped_checkpoints_are_unwrapped(official, tmp_path, wrap):
    _, sd = official
    obj = {f"module.{k}": v for k, v in sd.items()} if wrap == "module." else {wrap: sd, "step": 260000}
    p = tmp_path / "wrapped.pt"
    torch.save(obj, p)
    got = load_official_state_dict(p)
    assert list(got) == list(sd)


def test_wrong_shape_is_refused_naming_key_and_both_shapes(official, tmp_path, capsys):
    _, sd = official
    bad = dict(sd)
    bad["input_blocks.0.0.weight"] = torch.zeros(128, 6, 3, 3)  # a 6-channel (no reference) model
    p = tmp_path / "bad.pt"
    torch.save(bad, p)
    out = tmp_path / "out"
    assert main(["convert", str(p), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "input_blocks.0.0.weight" in err and "expected (128, 9, 3, 3), found (128, 6, 3, 3)" in err
    assert not out.exists()


def test_missing_and_unexpected_keys_are_named(official, tmp_path):
    _, sd = official
    missing = {k: v for k, v in sd.items() if k != "middle_block.1.qkv.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(Diff2LipError, match=r"missing key 'middle_block\.1\.qkv\.weight'.*\(1536, 512, 1\)"):
        load_official_state_dict(tmp_path / "missing.pt")
    extra = dict(sd, **{"label_emb.weight": torch.zeros(1000, 512)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(Diff2LipError, match=r"unexpected key 'label_emb\.weight' \(found \(1000, 512\)"):
        load_official_state_dict(tmp_path / "extra.pt")


def test_code_carrying_pickle_is_refused_and_never_executed(official, tmp_path, capsys):
    _, sd = official
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": sd, "hook": Payload(marker)}, p)
    out = tmp_path / "out"
    assert main(["convert", str(p), str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "evil.pt" in err
    assert not marker.exists()
    assert not out.exists()
    assert [q.name for q in tmp_path.iterdir() if q.name.startswith(".")] == []  # no staging left


def test_custom_class_and_garbage_files_are_refused(tmp_path):
    p = tmp_path / "custom.pt"
    torch.save({"weights": Custom()}, p)
    with pytest.raises(Diff2LipError, match="refusing to load"):
        load_official_state_dict(p)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(Diff2LipError, match="not a readable PyTorch checkpoint"):
        load_official_state_dict(junk)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(Diff2LipError, match="expected a state_dict"):
        load_official_state_dict(tmp_path / "list.pt")
