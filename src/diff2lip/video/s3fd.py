"""S3FD, the face detector of Wav2Lip and of the official Diff2Lip preprocessing, for paper-exact crops.

S3FD (Zhang et al., "S³FD: Single Shot Scale-invariant Face Detector", ICCV 2017) is a VGG16 backbone
(conv1_1 … conv5_3, fc6/fc7 as convolutions) with two extra blocks (conv6, conv7) and six detection heads at
strides 4, 8, 16, 32, 64, 128, each with one square anchor of side 4·stride. The three shallowest heads see
L2-normalised features with learned per-channel scales (10, 8, 5). The stride-4 classifier predicts three
background logits and one face logit; their background max-out leaves two classes.

:class:`S3FD` reproduces the module and parameter names of the published ``s3fd.pth`` (as used by
``face_detection/detection/sfd`` in Wav2Lip and Diff2Lip), so that file loads with ``strict=True``.
:class:`S3FDDetector` reproduces the official post-processing: BGR input minus the mean (104, 117, 123),
softmax, candidates with face probability > 0.05, SSD box decoding with variances (0.1, 0.2), greedy NMS at
IoU 0.3 (with the official ``+1`` pixel area convention) and a final score > 0.5. No weights are bundled or
downloaded: the user passes the path to ``s3fd.pth``.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diff2lip.errors import Diff2LipError
from diff2lip.video.face import FaceDetection, check_frames, downscale_factor, resize_frames

BGR_MEAN = (104.0, 117.0, 123.0)
"""Per-channel mean subtracted from the BGR input (Caffe VGG convention)."""

VARIANCES = (0.1, 0.2)
"""SSD box-encoding variances for the centre offset and the log size."""

STRIDES = (4, 8, 16, 32, 64, 128)
"""Feature strides of the six detection heads; each head has one square anchor of side ``4 * stride``."""

CANDIDATE_THRESHOLD = 0.05
NMS_THRESHOLD = 0.3
KEEP_THRESHOLD = 0.5


class L2Norm(nn.Module):
    """Per-position L2 normalisation over channels with a learned per-channel scale (ParseNet)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding)


class S3FD(nn.Module):
    """The S3FD network with the parameter names of the published ``s3fd.pth``.

    ``forward`` takes ``(B, 3, H, W)`` float BGR minus :data:`BGR_MEAN` and returns the 12 head outputs
    ``[cls1, reg1, …, cls6, reg6]``: ``cls_i`` ``(B, 2, H/s_i, W/s_i)`` logits (background, face) and
    ``reg_i`` ``(B, 4, H/s_i, W/s_i)`` box offsets, for the strides :data:`STRIDES`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1_1, self.conv1_2 = _conv(3, 64), _conv(64, 64)
        self.conv2_1, self.conv2_2 = _conv(64, 128), _conv(128, 128)
        self.conv3_1, self.conv3_2, self.conv3_3 = _conv(128, 256), _conv(256, 256), _conv(256, 256)
        self.conv4_1, self.conv4_2, self.conv4_3 = _conv(256, 512), _conv(512, 512), _conv(512, 512)
        self.conv5_1, self.conv5_2, self.conv5_3 = _conv(512, 512), _conv(512, 512), _conv(512, 512)
        self.fc6 = _conv(512, 1024, padding=3)
        self.fc7 = _conv(1024, 1024, kernel=1, padding=0)
        self.conv6_1 = _conv(1024, 256, kernel=1, padding=0)
        self.conv6_2 = _conv(256, 512, stride=2)
        self.conv7_1 = _conv(512, 128, kernel=1, padding=0)
        self.conv7_2 = _conv(128, 256, stride=2)

        self.conv3_3_norm = L2Norm(256, scale=10)
        self.conv4_3_norm = L2Norm(512, scale=8)
        self.conv5_3_norm = L2Norm(512, scale=5)

        self.conv3_3_norm_mbox_conf = _conv(256, 4)  # 3 background logits (max-out) + 1 face logit
        self.conv3_3_norm_mbox_loc = _conv(256, 4)
        self.conv4_3_norm_mbox_conf = _conv(512, 2)
        self.conv4_3_norm_mbox_loc = _conv(512, 4)
        self.conv5_3_norm_mbox_conf = _conv(512, 2)
        self.conv5_3_norm_mbox_loc = _conv(512, 4)
        self.fc7_mbox_conf = _conv(1024, 2)
        self.fc7_mbox_loc = _conv(1024, 4)
        self.conv6_2_mbox_conf = _conv(512, 2)
        self.conv6_2_mbox_loc = _conv(512, 4)
        self.conv7_2_mbox_conf = _conv(256, 2)
        self.conv7_2_mbox_loc = _conv(256, 4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = F.relu(self.conv1_2(F.relu(self.conv1_1(x))))
        h = F.max_pool2d(h, 2, 2)
        h = F.relu(self.conv2_2(F.relu(self.conv2_1(h))))
        h = F.max_pool2d(h, 2, 2)
        f3_3 = F.relu(self.conv3_3(F.relu(self.conv3_2(F.relu(self.conv3_1(h))))))
        h = F.max_pool2d(f3_3, 2, 2)
        f4_3 = F.relu(self.conv4_3(F.relu(self.conv4_2(F.relu(self.conv4_1(h))))))
        h = F.max_pool2d(f4_3, 2, 2)
        f5_3 = F.relu(self.conv5_3(F.relu(self.conv5_2(F.relu(self.conv5_1(h))))))
        h = F.max_pool2d(f5_3, 2, 2)
        f_fc7 = F.relu(self.fc7(F.relu(self.fc6(h))))
        f6_2 = F.relu(self.conv6_2(F.relu(self.conv6_1(f_fc7))))
        f7_2 = F.relu(self.conv7_2(F.relu(self.conv7_1(f6_2))))

        f3_3 = self.conv3_3_norm(f3_3)
        f4_3 = self.conv4_3_norm(f4_3)
        f5_3 = self.conv5_3_norm(f5_3)

        cls1 = self.conv3_3_norm_mbox_conf(f3_3)
        bg = cls1[:, 0:3].amax(dim=1, keepdim=True)  # max-out of the 3 background logits
        cls1 = torch.cat([bg, cls1[:, 3:4]], dim=1)  # (B, 2, H/4, W/4)
        return [
            cls1,
            self.conv3_3_norm_mbox_loc(f3_3),
            self.conv4_3_norm_mbox_conf(f4_3),
            self.conv4_3_norm_mbox_loc(f4_3),
            self.conv5_3_norm_mbox_conf(f5_3),
            self.conv5_3_norm_mbox_loc(f5_3),
            self.fc7_mbox_conf(f_fc7),
            self.fc7_mbox_loc(f_fc7),
            self.conv6_2_mbox_conf(f6_2),
            self.conv6_2_mbox_loc(f6_2),
            self.conv7_2_mbox_conf(f7_2),
            self.conv7_2_mbox_loc(f7_2),
        ]


def decode_boxes(
    loc: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float] = VARIANCES
) -> torch.Tensor:
    """SSD decoding: offsets ``loc`` ``(..., 4)`` against ``priors`` ``(..., 4)`` as (cx, cy, w, h).

    Returns ``(..., 4)`` corner boxes ``(x1, y1, x2, y2)``: centre ``c = c_p + loc_xy·v0·wh_p``,
    size ``wh = wh_p·exp(loc_wh·v1)``.
    """
    center = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([center - size / 2, center + size / 2], dim=-1)


def anchor_priors(height: int, width: int, stride: int) -> torch.Tensor:
    """Priors ``(height, width, 4)`` as (cx, cy, w, h) for a feature map of the given stride."""
    ys = stride / 2 + stride * torch.arange(height, dtype=torch.float32)
    xs = stride / 2 + stride * torch.arange(width, dtype=torch.float32)
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # (height, width) each
    side = torch.full_like(cx, 4.0 * stride)
    return torch.stack([cx, cy, side, side], dim=-1)  # (height, width, 4)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_THRESHOLD) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first.

    Same convention as the official S3FD code: areas and overlaps count ``+1`` pixel per side, and a box
    is dropped when its IoU with a kept box is above ``iou_threshold``.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    outputs: list[torch.Tensor],
    candidate_threshold: float = CANDIDATE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    keep_threshold: float = KEEP_THRESHOLD,
) -> list[np.ndarray]:
    """Turn the 12 head outputs of :class:`S3FD` into per-image detections ``(K, 5)`` (x1, y1, x2, y2, score).

    The official code collects candidates above ``candidate_threshold``, runs NMS and keeps scores above
    ``keep_threshold``. Greedy NMS visits boxes in decreasing score order, so a box at or below
    ``keep_threshold`` can never suppress one above it; filtering at ``max(candidate, keep)`` before NMS
    therefore gives the same result with far fewer boxes.
    """
    threshold = max(candidate_threshold, keep_threshold)
    batch = outputs[0].shape[0]
    per_image: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for level, stride in enumerate(STRIDES):
        cls, reg = outputs[2 * level].float(), outputs[2 * level + 1].float()
        prob = F.softmax(cls, dim=1)[:, 1]  # (B, h, w)
        priors = anchor_priors(prob.shape[1], prob.shape[2], stride).to(prob.device)
        boxes = decode_boxes(reg.permute(0, 2, 3, 1), priors)  # (B, h, w, 4)
        for b in range(batch):
            hit = prob[b] > threshold
            per_image[b].append(torch.cat([boxes[b][hit], prob[b][hit][:, None]], dim=1))  # (k, 5)
    results = []
    for dets in per_image:
        d = torch.cat(dets).cpu().double().numpy()  # (K, 5)
        d = d[nms(d[:, :4], d[:, 4], nms_threshold)]
        results.append(d[d[:, 4] > keep_threshold])
    return results


def load_s3fd(weights_path: str | Path, device: str | torch.device = "cpu") -> S3FD:
    """Load the published ``s3fd.pth`` (a plain ``state_dict``) into :class:`S3FD` with ``strict=True``."""
    path = Path(weights_path)
    if not path.is_file():
        raise Diff2LipError("S3FD weights file not found (pass the published s3fd.pth)", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise Diff2LipError(f"cannot read S3FD weights: {type(e).__name__}: {e}".splitlines()[0], path) from e
    if not isinstance(state, Mapping):
        raise Diff2LipError(f"S3FD weights must be a state_dict, got {type(state).__name__}", path=path)
    model = S3FD()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise Diff2LipError(
            f"not an S3FD state_dict: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})",
            path=path,
        )
    bad = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape
    ]
    if bad:
        raise Diff2LipError(f"S3FD weights have wrong shapes: {'; '.join(bad[:3])}", path=path)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


class S3FDDetector:
    """The official S3FD face detector as a :class:`~diff2lip.video.face.FaceDetector`.

    Args:
        weights_path: the published ``s3fd.pth``.
        device: torch device to run on (the caller picks it; nothing is hard-coded).
        batch_size: frames per forward pass.
        downscale_to: optionally detect on a copy whose longer side is at most this (boxes are mapped
            back); ``None`` (default) runs at full resolution as the official code does.
    """

    def __init__(
        self,
        weights_path: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        downscale_to: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        downscale_factor(1, 1, downscale_to)  # validates downscale_to
        self.device = torch.device(device)
        self.model = load_s3fd(weights_path, self.device)
        self.batch_size = batch_size
        self.downscale_to = downscale_to

    @torch.inference_mode()
    def detect(self, frames: np.ndarray) -> list[list[FaceDetection]]:
        """Detect faces in ``frames`` ``(N, H, W, 3)`` uint8 RGB; one list per frame, best score first."""
        frames = check_frames(frames)
        _, height, width, _ = frames.shape
        scale = downscale_factor(height, width, self.downscale_to)
        if scale < 1.0:
            frames = resize_frames(frames, max(1, round(height * scale)), max(1, round(width * scale)))
        sy, sx = frames.shape[1] / height, frames.shape[2] / width
        mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        results: list[list[FaceDetection]] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.batch_size]))
            x = chunk.to(self.device).permute(0, 3, 1, 2).flip(1).float() - mean  # (B, 3, H, W) BGR
            for dets in postprocess(self.model(x)):
                results.append(
                    [
                        FaceDetection(
                            box=(float(d[0] / sx), float(d[1] / sy), float(d[2] / sx), float(d[3] / sy)),
                            score=float(d[4]),
                        )
                        for d in dets
                    ]
                )
        return results
