"""Shot cuts: where the picture changes abruptly (an edit), found with PySceneDetect's content detector.

A face track must not carry a person, smooth boxes or bridge a gap across a cut (the face after a cut is
often someone else at a similar place). :class:`ShotDetector` is fed the decoded frames chunk by chunk
during the tracking pass (on a small copy: the detector compares colour histograms and needs no detail)
and returns the frame indices where new shots start.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ShotDetector", "shot_ranges"]

SMALL_SIDE = 192  # longer side of the copy the detector looks at


class ShotDetector:
    """Feed frames in order with :meth:`feed`; :attr:`cuts` lists the first frame of every new shot.

    ``threshold`` and ``min_shot`` (frames) are PySceneDetect's ``ContentDetector`` parameters (its
    defaults: 27, 15 frames).
    """

    def __init__(self, threshold: float = 27.0, min_shot: int = 15):
        from scenedetect.detectors import ContentDetector

        self._detector = ContentDetector(threshold=threshold, min_scene_len=min_shot)
        self._index = 0
        self.cuts: list[int] = []

    def feed(self, frames: np.ndarray) -> None:
        """``(N, H, W, 3)`` uint8 RGB frames, the next ones of the video."""
        from diff2lip.video.face import resize_frames

        if len(frames) == 0:
            return
        _, h, w, _ = frames.shape
        scale = min(1.0, SMALL_SIDE / max(h, w))
        small = (
            resize_frames(frames, max(1, round(h * scale)), max(1, round(w * scale))) if scale < 1 else frames
        )
        for frame in small:
            bgr = np.ascontiguousarray(frame[..., ::-1])  # OpenCV's channel order
            self.cuts.extend(int(c) for c in self._detector.process_frame(self._index, bgr))
            self._index += 1


def shot_ranges(cuts: list[int], num_frames: int) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` frame ranges of the shots of a ``num_frames`` video cut at ``cuts``."""
    starts = [0, *sorted(c for c in set(cuts) if 0 < c < num_frames)]
    return [(a, b - 1) for a, b in zip(starts, [*starts[1:], num_frames])]
