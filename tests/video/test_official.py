"""``--preset paper`` post-processing = the official ``generate.py`` formulas (issue 16, part 1)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from diff2lip.inference.pipeline import to_uint8
from diff2lip.inference.runner import GenerateOptions, lipsync_frames
from diff2lip.video.official import crop_faces_official, paste_back_official

S = 32


def _official_frames(frames, samples, boxes_yx):
    """What the official generate.py does with model samples (B, 3, S, S) in [-1, 1] for frames and boxes
    ``(y1, y2, x1, x2)``: face crops by cv2.resize, ``recon = sample*mask + (1-mask)*img``,
    ``(normalise(recon)*255).astype(uint8)``, ``cv2.resize`` back and paste over the box."""
    faces = np.asarray([cv2.resize(f[y1:y2, x1:x2], (S, S)) for f, (y1, y2, x1, x2) in zip(frames, boxes_yx)])
    face_frames = torch.FloatTensor(np.transpose(np.asarray(faces, dtype=np.float32) / 255.0, (0, 3, 1, 2)))
    img_batch = (face_frames * 2 - 1).clamp(-1, 1)  # normalise2
    mask = torch.zeros(1, 1, S, S)
    mask[:, :, S // 2 :] = 1.0
    recon = samples * mask + (1.0 - mask) * img_batch
    recon = (((recon + 1) * 0.5).clamp(0, 1) * 255).cpu().numpy().transpose(0, 2, 3, 1)  # normalise
    out = []
    for g, v, (y1, y2, x1, x2) in zip(recon, frames.copy(), boxes_yx):
        v[y1:y2, x1:x2] = cv2.resize(g.astype(np.uint8), (x2 - x1, y2 - y1))
        out.append(v)
    return faces, np.asarray(out)


def _case(seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (4, 90, 120, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 70, 65], [12, 8, 80, 60], [0, 0, 45, 90], [60, 20, 120, 77]])  # x1 y1 x2 y2
    samples = torch.from_numpy(rng.uniform(-1.1, 1.1, (4, 3, S, S)).astype(np.float32))  # past [-1, 1] too
    return frames, boxes, samples


def test_crop_composite_and_paste_equal_the_official_formulas():
    frames, boxes, samples = _case()
    yx = [(y1, y2, x1, x2) for x1, y1, x2, y2 in boxes]
    want_faces, want = _official_frames(frames, samples, yx)
    faces = crop_faces_official(frames, boxes, S)
    assert np.array_equal(faces, want_faces)
    # the composite as the pipeline forms it (upper half = the face in model range), truncated to uint8
    img = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(255.0).mul(2.0).sub(1.0).clamp(-1, 1)
    mask = torch.zeros(1, 1, S, S)
    mask[:, :, S // 2 :] = 1.0
    gen = to_uint8(samples * mask + img * (1 - mask), "truncate")
    got = frames.copy()
    for i in range(len(frames)):
        paste_back_official(got[i], gen[i], boxes[i], out=got[i])
    assert np.array_equal(got, want)
    # what the default mode would do differs: antialiased resampling and rounding
    assert not np.array_equal(to_uint8(samples * mask + img * (1 - mask)), gen)


class _FixedPipeline:
    """Stands in for the model: returns fixed samples, composited as Diff2LipPipeline does."""

    image_size = S

    def __init__(self, samples):
        self.samples = samples

    def __call__(self, crops, mels, refs, *, rounding="round", **kw):
        img = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0).mul(2.0).sub(1.0).clamp(-1, 1)
        mask = torch.zeros(1, 1, S, S)
        mask[:, :, S // 2 :] = 1.0
        return to_uint8(self.samples[: len(crops)] * mask + img * (1 - mask), rounding)


def test_paper_preset_frames_equal_the_official_ones_when_the_model_outputs_are_equal():
    frames, boxes, samples = _case(1)
    yx = [(y1, y2, x1, x2) for x1, y1, x2, y2 in boxes]
    _, want = _official_frames(frames, samples, yx)
    mel = np.zeros((80, 100), np.float32)
    times = np.arange(4) / 25.0
    got = lipsync_frames(
        _FixedPipeline(samples),
        frames,
        times,
        boxes,
        np.ones(4, bool),
        mel,
        None,
        None,
        GenerateOptions.paper(),
    )
    assert np.abs(got.astype(int) - want).max() <= 2  # the bar; in fact:
    assert np.array_equal(got, want)
    default = lipsync_frames(
        _FixedPipeline(samples), frames, times, boxes, np.ones(4, bool), mel, None, None, GenerateOptions()
    )
    assert not np.array_equal(default, want)  # feathered lower-face paste, antialiased, rounded
