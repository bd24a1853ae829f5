"""LPIPS without torchvision: key layout of the published files, the LPIPS formula, properties, errors.

The reference ``lpips`` package needs torchvision (not a dependency here), so our distance is checked
against an independent re-computation of the LPIPS formula on the same random weights instead.
"""

from __future__ import annotations

import pytest
import torch

from diff2lip.errors import Diff2LipError
from diff2lip.models.perceptual import LPIPS, build_lpips, normalize_channels

# torchvision's AlexNet.features / vgg16().features parameter names and shapes (the published files').
ALEX_KEYS = {
    "0.weight": (64, 3, 11, 11),
    "0.bias": (64,),
    "3.weight": (192, 64, 5, 5),
    "3.bias": (192,),
    "6.weight": (384, 192, 3, 3),
    "6.bias": (384,),
    "8.weight": (256, 384, 3, 3),
    "8.bias": (256,),
    "10.weight": (256, 256, 3, 3),
    "10.bias": (256,),
}
VGG_CONVS = {
    0: (64, 3),
    2: (64, 64),
    5: (128, 64),
    7: (128, 128),
    10: (256, 128),
    12: (256, 256),
    14: (256, 256),
}
VGG_CONVS |= {17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}


def random_lpips(net: str = "alex", seed: int = 0) -> LPIPS:
    g = torch.Generator().manual_seed(seed)
    m = LPIPS(net)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(
                torch.rand(p.shape, generator=g)
                if p.ndim == 4 and p.shape[0] == 1
                else torch.randn(p.shape, generator=g) * 0.05
            )
    return m


def reference_lpips(m: LPIPS, x: torch.Tensor, y: torch.Tensor, taps: list[int]) -> torch.Tensor:
    """LPIPS written out: scale, run the trunk, tap the ReLUs, normalise, squared diff, 1x1 lin, mean, sum."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img: torch.Tensor) -> list[torch.Tensor]:
        h, out = (img - shift) / scale, []
        for i, layer in enumerate(m.features):
            h = layer(h)
            if i in taps:
                out.append(h)
        return out

    total = torch.zeros(x.shape[0])
    for layer, (a, b) in enumerate(zip(feats(x), feats(y))):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = getattr(m, f"lin{layer}").model[1].weight.view(-1)  # (C,)
        total += torch.einsum("bchw,c->bhw", (na - nb) ** 2, w).mean(dim=(1, 2))
    return total


def test_alexnet_trunk_has_torchvision_key_layout():
    m = LPIPS("alex")
    assert {k: tuple(v.shape) for k, v in m.features.state_dict().items()} == ALEX_KEYS
    heads = {k: tuple(v.shape) for k, v in m.state_dict().items() if k.startswith("lin")}
    assert heads == {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}


def test_vgg_trunk_has_torchvision_key_layout():
    m = LPIPS("vgg")
    expected = {}
    for i, (co, ci) in VGG_CONVS.items():
        expected[f"{i}.weight"] = (co, ci, 3, 3)
        expected[f"{i}.bias"] = (co,)
    assert {k: tuple(v.shape) for k, v in m.features.state_dict().items()} == expected


@pytest.mark.parametrize(
    ("net", "taps", "size"), [("alex", [1, 4, 7, 9, 11], 64), ("vgg", [3, 8, 15, 22, 29], 32)]
)
def test_matches_the_lpips_formula(net, taps, size):
    m = random_lpips(net)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    y = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    got = m(x, y)
    assert got.shape == (2,)
    torch.testing.assert_close(got, reference_lpips(m, x, y, taps), rtol=1e-5, atol=1e-7)
    assert (got > 0).all()


def test_properties_zero_symmetric_gradients():
    m = random_lpips()
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(3, 3, 40, 48, generator=g) * 2 - 1).requires_grad_(True)
    y = torch.rand(3, 3, 40, 48, generator=g) * 2 - 1
    assert torch.equal(m(y, y), torch.zeros(3))
    torch.testing.assert_close(m(x, y), m(y, x))
    m(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in m.parameters())
    m.train()
    assert not m.training  # the loss network stays in eval mode


def test_normalize_channels_gives_unit_vectors():
    x = torch.randn(2, 7, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(normalize_channels(x).norm(dim=1), torch.ones(2, 3, 3))


def test_too_small_input_is_a_clear_error():
    with pytest.raises(Diff2LipError, match="at least 31x31"):
        LPIPS("alex")(torch.zeros(1, 3, 16, 32), torch.zeros(1, 3, 16, 32))


def test_build_from_published_files_strict(tmp_path):
    src = random_lpips(seed=3)
    backbone = {f"features.{k}": v for k, v in src.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # classifier tensors are ignored
    heads = {k: v for k, v in src.state_dict().items() if k.startswith("lin")}
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(heads, tmp_path / "alex.pth")
    m = build_lpips(
        "alex", backbone_path=tmp_path / "alexnet-owt-7be5be79.pth", heads_path=tmp_path / "alex.pth"
    )
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(m(x, -x), src(x, -x))

    del backbone["features.8.bias"]
    torch.save(backbone, tmp_path / "bad.pth")
    with pytest.raises(Diff2LipError, match=r"bad.pth: missing key 'features.8.bias'"):
        build_lpips("alex", backbone_path=tmp_path / "bad.pth", heads_path=tmp_path / "alex.pth")


def test_missing_weight_file_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(Diff2LipError) as e:
        build_lpips("alex", backbone_path=tmp_path / "nope.pth", heads_path=tmp_path / "alex.pth")
    msg = str(e.value)
    assert "nope.pth" in msg and "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    assert "\n" not in msg
