"""S3FD: the published s3fd.pth layout, decoding, NMS and the detector, with random weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diff2lip.errors import Diff2LipError
from diff2lip.video.face import FaceDetector, create_detector
from diff2lip.video.s3fd import S3FD, S3FDDetector, anchor_priors, decode_boxes, load_s3fd, nms, postprocess

# The state_dict of the published s3fd.pth (face_detection/detection/sfd/net_s3fd.py), in order.
PUBLISHED_KEYS = [
    ("conv1_1.weight", (64, 3, 3, 3)),
    ("conv1_1.bias", (64,)),
    ("conv1_2.weight", (64, 64, 3, 3)),
    ("conv1_2.bias", (64,)),
    ("conv2_1.weight", (128, 64, 3, 3)),
    ("conv2_1.bias", (128,)),
    ("conv2_2.weight", (128, 128, 3, 3)),
    ("conv2_2.bias", (128,)),
    ("conv3_1.weight", (256, 128, 3, 3)),
    ("conv3_1.bias", (256,)),
    ("conv3_2.weight", (256, 256, 3, 3)),
    ("conv3_2.bias", (256,)),
    ("conv3_3.weight", (256, 256, 3, 3)),
    ("conv3_3.bias", (256,)),
    ("conv4_1.weight", (512, 256, 3, 3)),
    ("conv4_1.bias", (512,)),
    ("conv4_2.weight", (512, 512, 3, 3)),
    ("conv4_2.bias", (512,)),
    ("conv4_3.weight", (512, 512, 3, 3)),
    ("conv4_3.bias", (512,)),
    ("conv5_1.weight", (512, 512, 3, 3)),
    ("conv5_1.bias", (512,)),
    ("conv5_2.weight", (512, 512, 3, 3)),
    ("conv5_2.bias", (512,)),
    ("conv5_3.weight", (512, 512, 3, 3)),
    ("conv5_3.bias", (512,)),
    ("fc6.weight", (1024, 512, 3, 3)),
    ("fc6.bias", (1024,)),
    ("fc7.weight", (1024, 1024, 1, 1)),
    ("fc7.bias", (1024,)),
    ("conv6_1.weight", (256, 1024, 1, 1)),
    ("conv6_1.bias", (256,)),
    ("conv6_2.weight", (512, 256, 3, 3)),
    ("conv6_2.bias", (512,)),
    ("conv7_1.weight", (128, 512, 1, 1)),
    ("conv7_1.bias", (128,)),
    ("conv7_2.weight", (256, 128, 3, 3)),
    ("conv7_2.bias", (256,)),
    ("conv3_3_norm.weight", (256,)),
    ("conv4_3_norm.weight", (512,)),
    ("conv5_3_norm.weight", (512,)),
    ("conv3_3_norm_mbox_conf.weight", (4, 256, 3, 3)),
    ("conv3_3_norm_mbox_conf.bias", (4,)),
    ("conv3_3_norm_mbox_loc.weight", (4, 256, 3, 3)),
    ("conv3_3_norm_mbox_loc.bias", (4,)),
    ("conv4_3_norm_mbox_conf.weight", (2, 512, 3, 3)),
    ("conv4_3_norm_mbox_conf.bias", (2,)),
    ("conv4_3_norm_mbox_loc.weight", (4, 512, 3, 3)),
    ("conv4_3_norm_mbox_loc.bias", (4,)),
    ("conv5_3_norm_mbox_conf.weight", (2, 512, 3, 3)),
    ("conv5_3_norm_mbox_conf.bias", (2,)),
    ("conv5_3_norm_mbox_loc.weight", (4, 512, 3, 3)),
    ("conv5_3_norm_mbox_loc.bias", (4,)),
    ("fc7_mbox_conf.weight", (2, 1024, 3, 3)),
    ("fc7_mbox_conf.bias", (2,)),
    ("fc7_mbox_loc.weight", (4, 1024, 3, 3)),
    ("fc7_mbox_loc.bias", (4,)),
    ("conv6_2_mbox_conf.weight", (2, 512, 3, 3)),
    ("conv6_2_mbox_conf.bias", (2,)),
    ("conv6_2_mbox_loc.weight", (4, 512, 3, 3)),
    ("conv6_2_mbox_loc.bias", (4,)),
    ("conv7_2_mbox_conf.weight", (2, 256, 3, 3)),
    ("conv7_2_mbox_conf.bias", (2,)),
    ("conv7_2_mbox_loc.weight", (4, 256, 3, 3)),
    ("conv7_2_mbox_loc.bias", (4,)),
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight S3FD saved like the published file (a plain state_dict)."""
    model = S3FD()
    path = tmp_path_factory.mktemp("s3fd") / "s3fd.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_state_dict_matches_published_layout():
    state = S3FD().state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == PUBLISHED_KEYS
    assert sum(v.numel() for v in state.values()) == 22_459_110
    # L2Norm scales initialise to the published 10 / 8 / 5
    assert state["conv3_3_norm.weight"].eq(10).all() and state["conv5_3_norm.weight"].eq(5).all()


def test_forward_shapes_256(weights):
    _, model = weights
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)))
    shapes = [tuple(o.shape) for o in out]
    # strides 4, 8, 16 then fc7 (fc6 pads by 3: 8 + 4 = 12), conv6_2, conv7_2; cls has 2 classes after max-out
    assert shapes == [
        (1, 2, 64, 64), (1, 4, 64, 64),
        (1, 2, 32, 32), (1, 4, 32, 32),
        (1, 2, 16, 16), (1, 4, 16, 16),
        (1, 2, 12, 12), (1, 4, 12, 12),
        (1, 2, 6, 6), (1, 4, 6, 6),
        (1, 2, 3, 3), (1, 4, 3, 3),
    ]  # fmt: skip


def test_save_load_round_trip(weights):
    path, model = weights
    loaded = load_s3fd(path)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not loaded.training


def test_detector_returns_list_per_frame_and_feeds_bgr_minus_mean(weights):
    path, _ = weights
    det = S3FDDetector(path, batch_size=2)
    assert isinstance(det, FaceDetector)
    assert isinstance(create_detector("s3fd", weights_path=path), S3FDDetector)
    seen = []
    net = det.model
    det.model = lambda x: seen.append(x.clone()) or net(x)
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 200, 100, 50  # R, G, B
    result = det.detect(frames)
    assert len(result) == 3 and all(isinstance(r, list) for r in result)
    assert [x.shape[0] for x in seen] == [2, 1]
    assert torch.equal(seen[0][0, :, 5, 5], torch.tensor([50 - 104.0, 100 - 117.0, 200 - 123.0]))
    for faces in result:
        assert all(f.score > 0.5 and f.landmarks is None for f in faces)
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_decode_golden():
    priors = torch.tensor([[10.0, 20.0, 16.0, 16.0]])
    assert torch.allclose(decode_boxes(torch.zeros(1, 4), priors), torch.tensor([[2.0, 12.0, 18.0, 28.0]]))
    loc = torch.tensor([[1.0, -1.0, 0.0, math.log(2) / 0.2]])
    # centre (10 + 0.1*16, 20 - 0.1*16) = (11.6, 18.4); size (16, 32)
    assert torch.allclose(decode_boxes(loc, priors), torch.tensor([[3.6, 2.4, 19.6, 34.4]]))
    p = anchor_priors(2, 3, 8)
    assert p.shape == (2, 3, 4)
    assert p[1, 2].tolist() == [20.0, 12.0, 32.0, 32.0]


def test_nms_official_convention():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 9, 4]], dtype=float)
    scores = np.array([0.9, 0.95, 0.8, 0.7])
    # IoU(0,1) = 81/119 > 0.3; IoU(1,3) = 36/(100+50-36) ~ 0.32 > 0.3 (with +1 pixel areas)
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 0, 2, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_postprocess_golden():
    # a 64x64 image: one confident face at stride-8 cell (row 2, col 5) with zero offsets, one weak one
    outputs = []
    for stride in (4, 8, 16, 32, 64, 128):
        n = max(1, 64 // stride)
        cls = torch.zeros(1, 2, n, n)
        cls[:, 0] = 5.0  # background everywhere
        outputs += [cls, torch.zeros(1, 4, n, n)]
    outputs[2][0, :, 2, 5] = torch.tensor([0.0, 3.0])  # p(face) = 0.95
    outputs[4][0, :, 1, 1] = torch.tensor([0.0, -1.0])  # p(face) = 0.27 < 0.5
    (dets,) = postprocess(outputs)
    assert dets.shape == (1, 5)
    cx, cy = 4 + 5 * 8, 4 + 2 * 8
    assert np.allclose(dets[0, :4], [cx - 16, cy - 16, cx + 16, cy + 16])
    assert np.isclose(dets[0, 4], 1 / (1 + np.exp(-3.0)))


def test_bad_weight_files(tmp_path, weights):
    _, model = weights
    with pytest.raises(Diff2LipError, match="not found"):
        S3FDDetector(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(Diff2LipError, match="cannot read"):
        load_s3fd(garbage)
    state = model.state_dict()
    extra = tmp_path / "extra.pth"
    torch.save({**state, "head.weight": torch.zeros(1)}, extra)
    with pytest.raises(Diff2LipError, match="1 unexpected"):
        load_s3fd(extra)
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "fc7.bias"}, missing)
    with pytest.raises(Diff2LipError, match="1 missing"):
        load_s3fd(missing)
    shapes = tmp_path / "shapes.pth"
    torch.save({**state, "fc7.bias": torch.zeros(3)}, shapes)
    with pytest.raises(Diff2LipError, match="wrong shapes"):
        load_s3fd(shapes)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(Diff2LipError, match="state_dict"):
        load_s3fd(tensor)
