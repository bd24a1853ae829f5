"""The FID Inception-v3: pytorch-fid's key names and shapes, strict loading, 2048-d features, FID ≈ 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diff2lip.errors import Diff2LipError
from diff2lip.evaluation.inception import (
    FID_WEIGHTS_NAME,
    FIDInceptionV3,
    find_fid_weights,
    inception_features,
    load_fid_inception,
)
from diff2lip.evaluation.metrics import feature_statistics, frechet_distance

# Pinned from torchvision's Inception3 (num_classes=1008, aux_logits=False) as pytorch-fid patches it:
# torchvision's 27,161,264 parameters − the 3,326,696 of AuxLogits + 8·2049 for the 1008-way fc.
NUM_PARAMS = 23_850_960
TOP_LEVEL = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "fc",
]  # fmt: skip
SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def model() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_state_dict_keys_match_pytorch_fid(model):
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS
    assert list(dict.fromkeys(k.split(".")[0] for k in sd)) == TOP_LEVEL
    assert len(sd) == 566 and sum(k.endswith("num_batches_tracked") for k in sd) == 94
    for key, shape in SHAPES.items():
        assert tuple(sd[key].shape) == shape, key


def test_strict_load_from_file_without_bn_counters(model, tmp_path):
    # pytorch-fid's file is a plain state_dict; older exports have no num_batches_tracked entries
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / FID_WEIGHTS_NAME
    torch.save(state, path)
    loaded = load_fid_inception(tmp_path)  # a directory holding the file works too
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, model.Mixed_7c.branch_pool.conv.weight)
    bad = dict(state)
    bad.pop("fc.bias")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(Diff2LipError, match=r"bad.pth: missing key 'fc.bias'.*not a pytorch-fid Inception"):
        load_fid_inception(tmp_path / "bad.pth")


def test_missing_weights_is_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(Diff2LipError, match="pytorch-fid/releases") as e:
        find_fid_weights(tmp_path / "nope.pth")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache: never a download
    with pytest.raises(Diff2LipError, match="--fid-weights"):
        find_fid_weights(None)


def test_features_2048_and_fid_of_identical_sets_is_zero(model):
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    feats = inception_features(model, images, batch_size=2)
    assert feats.shape == (2, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert (feats >= 0).all()  # after ReLU and average pooling
    mu, sigma = feature_statistics(feats[:, :64])  # a 64-d slice keeps scipy's sqrtm fast
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    # the same image in another batch gives the same features (eval-mode BatchNorm)
    again = inception_features(model, images[1:2])
    np.testing.assert_allclose(again[0], feats[1], rtol=1e-4, atol=1e-5)
