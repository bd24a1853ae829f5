"""Crop, lower-half mask and paste-back (diff2lip.video.crop)."""

from __future__ import annotations

import numpy as np
import pytest

from diff2lip.video.crop import (
    crop_faces,
    lower_half_mask,
    paste_back,
    paste_back_batch,
    soft_lower_mask,
)

FACE_BOX = (150, 60, 300, 210)  # astronaut face region, 150x150


def test_lower_half_mask():
    m = lower_half_mask(128)
    assert m.dtype == np.float32 and m.shape == (128, 128)
    assert m[:64].sum() == 0 and np.all(m[64:] == 1)
    assert lower_half_mask(5)[:, 0].tolist() == [0, 0, 1, 1, 1]


def test_crop_faces_shapes_and_golden():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 144, 176, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 74, 69], [0, 0, 176, 144]])
    crops = crop_faces(frames, boxes, size=64)
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops[0], frames[0, 5:69, 10:74])  # same size: an exact copy
    flat = np.full((1, 100, 100, 3), 77, np.uint8)
    assert np.all(crop_faces(flat, np.array([[3, 7, 90, 61]]), size=128) == 77)
    # antialiased 4x shrink of a 1-px checkerboard averages it out
    board = ((np.indices((512, 512)).sum(axis=0) % 2) * 255).astype(np.uint8)
    small = crop_faces(np.repeat(board[None, ..., None], 3, axis=-1), np.array([[0, 0, 512, 512]]), 128)
    assert np.abs(small[0, 2:-2, 2:-2].astype(int) - 128).max() <= 1


def test_crop_faces_rejects_boxes_outside_frame():
    frames = np.zeros((1, 50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="not inside"):
        crop_faces(frames, np.array([[-1, 0, 20, 20]]))
    with pytest.raises(ValueError, match="empty"):
        crop_faces(frames, np.array([[10, 10, 10, 20]]))


def test_soft_mask_properties():
    m = soft_lower_mask(200, 160, crop_size=128, feather=0.1)
    assert m.shape == (200, 160)
    assert np.all(m[:100] == 0)  # the upper half is never touched
    assert np.all(m[125:175, 20:140] == 1)  # 1 past the 20-px / 16-px ramps
    assert m.min() >= 0 and m.max() <= 1
    assert np.all(np.diff(m[100:120, 80]) > 0) and np.all(np.diff(m[150, :16]) > 0)
    assert np.all(m[:, 0] < 0.01) and np.all(m[-1] < 0.01)  # falls to ~0 at the box border
    assert np.array_equal(soft_lower_mask(128, 128, 128, feather=0.0), lower_half_mask(128))


@pytest.mark.parametrize("mode", ["feather", "hard"])
def test_unmodified_crop_round_trip(astronaut, mode):
    box = np.array([FACE_BOX])
    crop = crop_faces(astronaut[None], box)[0]
    out = paste_back(astronaut, crop, FACE_BOX, mode=mode)
    diff = np.abs(out.astype(int) - astronaut.astype(int))
    x1, y1, x2, y2 = FACE_BOX
    # only resampling error (150 px -> 128 px -> 150 px) on a detailed face: PSNR over the box > 30 dB
    box_diff = diff[y1:y2, x1:x2]
    assert box_diff.mean() < 4.0, box_diff.mean()
    assert 10 * np.log10(255**2 / (box_diff**2).mean()) > 30
    assert diff.sum() - diff[y1:y2, x1:x2].sum() == 0


def test_feather_leaves_outside_of_mask_bit_identical(astronaut):
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    frame = astronaut.copy()
    out = paste_back(frame, crop, FACE_BOX, mode="feather", feather=0.15)
    assert np.array_equal(frame, astronaut)  # input untouched
    x1, y1, x2, y2 = FACE_BOX
    m = np.zeros(frame.shape[:2])
    m[y1:y2, x1:x2] = soft_lower_mask(y2 - y1, x2 - x1, 128, 0.15)
    assert np.array_equal(out[m == 0], frame[m == 0])
    assert np.array_equal(out[: y1 + 75], frame[: y1 + 75])  # the upper half of the box and above
    assert (out[m > 0.99] != frame[m > 0.99]).any(axis=-1).mean() > 0.9  # the interior really changed


def test_hard_replaces_exactly_the_box():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    box = (50, 40, 178, 168)  # 128x128: no resampling
    out = paste_back(frame, crop, box, mode="hard")
    assert np.array_equal(out[40:168, 50:178], crop)
    outside = np.ones(frame.shape[:2], bool)
    outside[40:168, 50:178] = False
    assert np.array_equal(out[outside], frame[outside])
    flat = paste_back(frame, np.full((128, 128, 3), 9, np.uint8), (10, 20, 111, 77), mode="hard")
    assert np.all(flat[20:77, 10:111] == 9) and np.array_equal(flat[77:], frame[77:])


def test_no_step_edge_on_flat_image():
    frame = np.full((260, 280, 3), 50, np.uint8)
    crop = np.full((128, 128, 3), 200, np.uint8)
    box = (40, 30, 240, 230)  # 200x200, ramp 20 px
    out = paste_back(frame, crop, box, feather=0.1)[..., 0].astype(int)
    assert out[180, 140] == 200  # the interior gets the crop's colour
    assert out[130, 140] == 50 and out[229, 140] < 60  # mask top border; bottom box row
    column = out[30:230, 140]  # down through the box centre
    assert np.all(np.diff(column[:170]) >= 0)  # monotone up to the interior
    row = out[180, 40:240]
    assert np.all(np.diff(row[:100]) >= 0) and np.all(np.diff(row[100:]) <= 0)
    # the 150-level change is spread over the ramp: no adjacent step anywhere comes close to it
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= 15, steps
    hard_edge = paste_back(frame, crop, box, feather=0.0)[..., 0].astype(int)
    assert np.abs(np.diff(hard_edge, axis=0)).max() == 150  # the feather is what removes the edge


def test_box_partly_outside_frame_is_clipped():
    frame = np.full((100, 100, 3), 10, np.uint8)
    crop = np.full((128, 128, 3), 240, np.uint8)
    box = (-20, -10, 100, 110)  # 120x120, sticks out at the left, top and bottom
    hard = paste_back(frame, crop, box, mode="hard")
    assert np.all(hard == 240)
    soft = paste_back(frame, crop, box, mode="feather", feather=0.1)
    assert np.array_equal(soft[:50], frame[:50])  # box rows -10..49 are its upper half
    assert soft[80, 50, 0] == 240 and soft[80, 99, 0] < 240  # right edge ramps down inside the box
    with pytest.raises(ValueError, match="does not overlap"):
        paste_back(frame, crop, (100, 0, 150, 50))


def test_paste_back_batch_matches_single():
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)
    crops = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 64, 64], [10, 20, 100, 90], [30, 5, 70, 45]])
    out = paste_back_batch(frames, crops, boxes, feather=0.2)
    for i in range(3):
        assert np.array_equal(out[i], paste_back(frames[i], crops[i], boxes[i], feather=0.2))
    with pytest.raises(ValueError, match="unknown paste mode"):
        paste_back(frames[0], crops[0], boxes[0], mode="poisson")
