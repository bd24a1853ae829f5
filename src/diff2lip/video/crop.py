"""Crop faces to the model's square input, the lower-half mask, and paste generated faces back.

The paper crops each tracked face box, resizes it to 128×128 (``S``; configurable), regenerates the
masked lower half (DESIGN.md §3: the mask ``M`` is 1 on rows ``S//2 .. S-1``) and, in the official
``generate.py``, resizes the whole crop back to the box and overwrites the box (``mode="hard"``). That
leaves a visible seam around the box and touches the upper face too. The default ``mode="feather"``
(DESIGN.md §6) changes only the generated lower face: the crop is resized back to the box and blended in
through a soft mask that is 1 inside the lower-half region and ramps smoothly to 0 at its border (the ramp
lies inside the region and inside the box), so every pixel outside the region is bit-identical to the
input frame.

Resampling uses ``torch.nn.functional.interpolate`` (bilinear, half-pixel centres, antialiased when
shrinking); results are rounded to the nearest integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

MASK_KINDS = ("lower",)


def _resize(image: torch.Tensor, height: int, width: int, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` float to ``(B, C, height, width)`` (antialias only shrinks)."""
    if image.shape[-2:] == (height, width):
        return image
    return F.interpolate(
        image, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias
    )


def _to_uint8(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.numpy()
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _check_box(box: Sequence[int], height: int, width: int, *, inside: bool) -> tuple[int, int, int, int]:
    if len(box) != 4:
        raise ValueError(f"a box is (x1, y1, x2, y2), got {box}")
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty box {(x1, y1, x2, y2)}")
    if inside and (x1 < 0 or y1 < 0 or x2 > width or y2 > height):
        raise ValueError(f"box {(x1, y1, x2, y2)} is not inside the {width}x{height} frame")
    if not inside and (x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height):
        raise ValueError(f"box {(x1, y1, x2, y2)} does not overlap the {width}x{height} frame")
    return x1, y1, x2, y2


def crop_faces(frames: np.ndarray, boxes: np.ndarray, size: int = 128, antialias: bool = True) -> np.ndarray:
    """Crop each frame's integer box ``(x1, y1, x2, y2)`` and resize it to ``size × size``.

    Args:
        frames: ``(N, H, W, 3)`` uint8.
        boxes: ``(N, 4)`` int pixel boxes, half-open, inside the frame (e.g. ``FaceTrack.int_boxes()``
            rows with a face).
        size: side ``S`` of the square output (128 in the paper).
        antialias: antialiased bilinear when shrinking (default); ``False`` is plain bilinear like the
            official ``cv2.resize``.

    Returns:
        ``(N, size, size, 3)`` uint8 crops.
    """
    frames = np.asarray(frames)
    boxes = np.asarray(boxes)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, C) uint8, got {frames.shape} {frames.dtype}")
    if boxes.shape != (len(frames), 4):
        raise ValueError(f"boxes must be ({len(frames)}, 4), got {boxes.shape}")
    _, height, width, channels = frames.shape
    out = np.empty((len(frames), size, size, channels), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        x1, y1, x2, y2 = _check_box(box, height, width, inside=True)
        patch = torch.from_numpy(np.ascontiguousarray(frame[y1:y2, x1:x2])).permute(2, 0, 1)  # (C, h, w)
        resized = _resize(patch[None].float(), size, size, antialias)[0]  # (C, size, size)
        out[i] = _to_uint8(resized.permute(1, 2, 0))
    return out


def lower_half_mask(size: int) -> np.ndarray:
    """The paper's mask ``M`` (DESIGN.md §3): ``(size, size)`` float32, 1 on rows ``size//2 .. size-1``."""
    mask = np.zeros((size, size), dtype=np.float32)
    mask[size // 2 :] = 1.0
    return mask


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _edge_ramp(dist: np.ndarray, width: float) -> np.ndarray:
    """0 outside (``dist <= 0``), smoothstep up to 1 over ``width`` pixels inside; a hard step if 0."""
    if width <= 0:
        return (dist > 0).astype(np.float64)
    return _smoothstep(dist / width)


def soft_lower_mask(height: int, width: int, crop_size: int = 128, feather: float = 0.1) -> np.ndarray:
    """The feathered paste-back mask on a ``height × width`` box, ``(height, width)`` float64 in [0, 1].

    The region is the crop's lower-half mask mapped to the box: rows from ``height · (S//2) / S`` to the
    bottom, all columns. The mask is 1 deep inside the region and falls to 0 at its four borders along a
    smoothstep ramp ``3t² − 2t³`` of ``feather · height`` pixels (top/bottom edges) and ``feather · width``
    pixels (side edges), measured from pixel centres; it is exactly 0 outside the region.
    """
    if not 0.0 <= feather <= 0.5:
        raise ValueError(f"feather must be in [0, 0.5] (a fraction of the box size), got {feather}")
    top = height * (crop_size // 2) / crop_size
    ys = np.arange(height, dtype=np.float64) + 0.5  # pixel centres
    xs = np.arange(width, dtype=np.float64) + 0.5
    ry, rx = feather * height, feather * width
    col = _edge_ramp(ys - top, ry) * _edge_ramp(height - ys, ry)  # (height,)
    row = _edge_ramp(xs, rx) * _edge_ramp(width - xs, rx)  # (width,)
    return col[:, None] * row[None, :]  # (height, width)


def paste_back(
    frame: np.ndarray,
    crop: np.ndarray,
    box: Sequence[int],
    *,
    mode: Literal["hard", "feather"] = "feather",
    feather: float = 0.1,
    mask: str = "lower",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Paste a (generated) ``S × S`` crop back into a copy of ``frame`` at the integer ``box``.

    ``hard`` is the paper's paste: the crop is resized to the box (and rounded to uint8, like the official
    ``cv2.resize`` of a uint8 image) and replaces the whole box. ``feather`` (default) blends only the lower
    face through :func:`soft_lower_mask`: ``out = frame + m · (resized − frame)``, rounded; pixels where
    ``m = 0`` (everything outside the lower-half region) are copied untouched. A box reaching outside the
    frame is clipped: the crop is resized to the full box and only its visible part is used.

    Args:
        frame: ``(H, W, C)`` uint8 full-resolution frame (not modified).
        crop: ``(S, S, C)`` uint8 crop in the geometry of :func:`crop_faces`.
        box: ``(x1, y1, x2, y2)`` integer box the crop was taken from.
        mode: ``"feather"`` or ``"hard"``.
        feather: ramp width as a fraction of the box size (``feather`` mode only); 0 gives a hard-edged
            lower-half paste.
        mask: the pasted region; ``"lower"`` (the paper's lower-half mask) is the only one so far.
        out: where to write the result (same shape as ``frame``; may be ``frame`` itself, to paste in place
            without a full-frame copy); default a new copy of ``frame``.
    """
    if mode not in ("hard", "feather"):
        raise ValueError(f"unknown paste mode '{mode}' (choose 'hard' or 'feather')")
    if mask not in MASK_KINDS:
        raise ValueError(f"unknown paste mask '{mask}' (choose one of {', '.join(MASK_KINDS)})")
    frame = np.asarray(frame)
    crop = np.asarray(crop)
    if frame.ndim != 3 or frame.dtype != np.uint8 or crop.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, C) uint8 and crop uint8, got {frame.dtype} {crop.dtype}")
    if crop.ndim != 3 or crop.shape[0] != crop.shape[1] or crop.shape[2] != frame.shape[2]:
        raise ValueError(f"crop must be (S, S, {frame.shape[2]}), got {crop.shape}")
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = _check_box(box, height, width, inside=False)
    bh, bw = y2 - y1, x2 - x1
    # visible part of the box, in frame and in box coordinates
    fx1, fy1, fx2, fy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    bx1, by1, bx2, by2 = fx1 - x1, fy1 - y1, fx2 - x1, fy2 - y1

    patch = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()  # (1, C, S, S)
    resized = _resize(patch, bh, bw)[0].permute(1, 2, 0).numpy()  # (bh, bw, C)
    if out is None:
        out = frame.copy()
    elif out is not frame:
        np.copyto(out, frame)
    if mode == "hard":
        out[fy1:fy2, fx1:fx2] = _to_uint8(resized[by1:by2, bx1:bx2])
        return out

    weight = soft_lower_mask(bh, bw, crop.shape[0], feather)[by1:by2, bx1:bx2]  # (h, w)
    rows = np.flatnonzero(weight.any(axis=1))
    cols = np.flatnonzero(weight.any(axis=0))
    if len(rows) == 0:
        return out
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = weight[r0:r1, c0:c1, None]  # (h, w, 1)
    src = frame[fy1 + r0 : fy1 + r1, fx1 + c0 : fx1 + c1].astype(np.float64)
    gen = resized[by1 + r0 : by1 + r1, bx1 + c0 : bx1 + c1].astype(np.float64)
    blended = _to_uint8(src + m * (gen - src))
    region = out[fy1 + r0 : fy1 + r1, fx1 + c0 : fx1 + c1]
    np.copyto(region, blended, where=m > 0)  # m == 0 stays bit-identical
    return out


def paste_back_batch(
    frames: np.ndarray,
    crops: np.ndarray,
    boxes: np.ndarray,
    *,
    mode: Literal["hard", "feather"] = "feather",
    feather: float = 0.1,
    mask: str = "lower",
) -> np.ndarray:
    """:func:`paste_back` for ``(N, H, W, C)`` frames, ``(N, S, S, C)`` crops and ``(N, 4)`` boxes."""
    frames = np.asarray(frames)
    if len(crops) != len(frames) or len(boxes) != len(frames):
        raise ValueError(f"got {len(frames)} frames, {len(crops)} crops and {len(boxes)} boxes")
    out = np.empty_like(frames)
    for i in range(len(frames)):
        paste_back(frames[i], crops[i], boxes[i], mode=mode, feather=feather, mask=mask, out=out[i])
    return out
