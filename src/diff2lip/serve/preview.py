"""The first-frame preview of the browser page: where the face box and the redrawn region will be,
before a long job (face detection on the first frame only; no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diff2lip.errors import Diff2LipError

__all__ = ["first_frame_preview"]


def first_frame_preview(video: str | Path, face_select: str = "largest") -> tuple[np.ndarray, str]:
    """``(image (H, W, 3) uint8, one-line note)``: the first frame with every face found outlined (thin,
    grey), the chosen one in green, and its lower half — the region the model redraws — tinted."""
    from diff2lip.video.face import create_detector
    from diff2lip.video.io import VideoReader
    from diff2lip.video.track import track_faces

    reader = VideoReader(video, chunk_size=1, image_duration=1.0)
    frame = next(iter(reader)).frames[0].copy()  # (H, W, 3)
    faces = create_detector("dlib").detect(frame[None])[0]
    if not faces:
        raise Diff2LipError("no face found in the first frame", video)
    track = track_faces([faces], frame.shape[:2], choose=face_select, smooth="none")
    x1, y1, x2, y2 = (int(v) for v in track.int_boxes()[0])
    for face in faces:
        _outline(frame, [round(v) for v in face.box], (160, 160, 160), 1)
    mid = (y1 + y2) // 2
    lower = frame[mid:y2, x1:x2].astype(np.int32)
    lower[..., 1] = np.minimum(255, lower[..., 1] + 60)  # tint: what the model redraws
    frame[mid:y2, x1:x2] = lower.astype(np.uint8)
    _outline(frame, [x1, y1, x2, y2], (0, 220, 0), 2)
    note = f"{len(faces)} face(s) in the first frame; the green box is lip-synced (lower half tinted)"
    return frame, note


def _outline(frame: np.ndarray, box: list[int], color: tuple[int, int, int], width: int) -> None:
    h, w = frame.shape[:2]
    x1, y1 = max(0, box[0]), max(0, box[1])
    x2, y2 = min(w, box[2]), min(h, box[3])
    if x2 <= x1 or y2 <= y1:
        return
    frame[y1 : y1 + width, x1:x2] = color
    frame[max(y1, y2 - width) : y2, x1:x2] = color
    frame[y1:y2, x1 : x1 + width] = color
    frame[y1:y2, max(x1, x2 - width) : x2] = color
