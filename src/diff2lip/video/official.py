"""The official inference's face crop and paste-back, reproduced exactly (``--preset paper``).

The official ``generate.py`` crops each face box with ``cv2.resize(frame[y1:y2, x1:x2], (S, S))`` and pastes
the generated crop back with ``cv2.resize(crop, (x2 - x1, y2 - y1))`` over the whole box — OpenCV's default
``INTER_LINEAR`` on uint8 images: bilinear without antialiasing, in OpenCV's fixed-point arithmetic. Our
default path (:mod:`diff2lip.video.crop`) resamples with antialiasing (cleaner when the box is much larger
than the crop) and feathers only the lower face; to give the same frames as the official code the paper
preset calls OpenCV itself here (a 2-tap fixed-point resize re-implemented by hand would differ by a level
on some pixels). OpenCV (``opencv-python-headless``) is a dependency of the package.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diff2lip.errors import Diff2LipError

__all__ = ["crop_faces_official", "paste_back_official"]


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise Diff2LipError(
            "--preset paper resizes faces with OpenCV as the official code does: pip install opencv-python-headless"
        ) from None
    return cv2


def _box(box: Any, height: int, width: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(v) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)  # the official clip
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty box {(x1, y1, x2, y2)} in a {width}x{height} frame")
    return x1, y1, x2, y2


def crop_faces_official(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 frames, ``(N, 4)`` integer ``(x1, y1, x2, y2)`` boxes → ``(N, S, S, 3)`` uint8,
    as ``cv2.resize(frame[y1:y2, x1:x2], (S, S))``."""
    cv2 = _cv2()
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        x1, y1, x2, y2 = _box(box, *frame.shape[:2])
        out[i] = cv2.resize(np.ascontiguousarray(frame[y1:y2, x1:x2]), (size, size))
    return out


def paste_back_official(
    frame: np.ndarray, crop: np.ndarray, box: Any, out: np.ndarray | None = None
) -> np.ndarray:
    """Paste a generated uint8 crop over the whole box, as ``v[y1:y2, x1:x2] = cv2.resize(g, (x2 - x1, y2 - y1))``.

    ``out`` may be ``frame`` itself (in place); default a copy.
    """
    cv2 = _cv2()
    if out is None:
        out = frame.copy()
    elif out is not frame:
        np.copyto(out, frame)
    x1, y1, x2, y2 = _box(box, *frame.shape[:2])
    out[y1:y2, x1:x2] = cv2.resize(np.ascontiguousarray(crop), (x2 - x1, y2 - y1))
    return out
