"""Face tracking: per-frame detections → one face box per frame (or "no face"), and face-track files.

The official Diff2Lip / Wav2Lip inference (``face_detect`` in ``generate.py``) takes the first S3FD box of
each frame, pads it by ``(top, bottom, left, right)`` pixels clipped to the frame, and smooths the boxes
with ``get_smoothened_boxes(boxes, T=5)`` (the paper's "mean of boxes over the next 5 frames"); it raises on
any frame without a face. :func:`track_faces` does the same and more (DESIGN.md §6): frames without a face
stay "no face" (a NaN row) instead of failing, short gaps are bridged by interpolation, smoothing never
averages across a gap, and the face can be chosen by size, centrality, score or continuity.

Tracking needs only the detections (small data), never the frames, so a streaming pipeline can detect
chunk by chunk, collect the lists and call :func:`track_faces` once. A :class:`FaceTrack` saves to JSON and
loads back, so a later run can skip detection (``--face-track``), and :meth:`FaceTrack.from_box` makes a
track from a fixed user box (``--box``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from diff2lip.errors import Diff2LipError
from diff2lip.fileio import write_text_atomic
from diff2lip.video.face import FaceDetection

TRACK_FORMAT = "diff2lip-face-track"
TRACK_VERSION = 1
SMOOTH_WINDOW = 5
"""The paper's smoothing window: each box is the mean of itself and the next 4 boxes."""


@dataclass
class FaceTrack:
    """One face box per frame of a video.

    Attributes:
        boxes: ``(N, 4)`` float64 ``(x1, y1, x2, y2)`` in full-resolution pixels (half-open); a row of NaN
            means "no face in this frame" (the pipeline passes such frames through unchanged).
        frame_size: ``(H, W)`` of the frames the boxes refer to.
        metadata: free-form JSON-serialisable facts (detector, pads, smoothing, …).
    """

    boxes: np.ndarray
    frame_size: tuple[int, int]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        boxes = np.array(self.boxes, dtype=np.float64)  # a copy: NaN rows are normalised below
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4), got {boxes.shape}")
        self.boxes = boxes
        height, width = (int(v) for v in self.frame_size)
        if height <= 0 or width <= 0:
            raise ValueError(f"frame_size must be positive (H, W), got {self.frame_size}")
        self.frame_size = (height, width)
        # a partly-NaN row is meaningless: make it a whole "no face" row
        self.boxes[np.isnan(self.boxes).any(axis=1)] = np.nan

    @property
    def num_frames(self) -> int:
        return len(self.boxes)

    @property
    def has_face(self) -> np.ndarray:
        """``(N,)`` bool: whether each frame has a face box."""
        return ~np.isnan(self.boxes).any(axis=1)

    def missing_ranges(self) -> list[tuple[int, int]]:
        """Runs of frames without a face as inclusive ``(first, last)`` frame indices."""
        return _runs(~self.has_face)

    def summary(self) -> str:
        """One line naming the frame ranges without a face, e.g. ``no face in frames 10–24, 80–81 (17 of 120)``."""
        ranges = self.missing_ranges()
        if not ranges:
            return f"face found in all {self.num_frames} frames"
        text = ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in ranges)
        missing = sum(b - a + 1 for a, b in ranges)
        return f"no face in frames {text} ({missing} of {self.num_frames})"

    def int_boxes(self) -> np.ndarray:
        """Integer pixel boxes ``(N, 4)`` int64 for cropping; rows without a face are ``-1``.

        Each coordinate is rounded to the nearest integer (halves up: ``floor(v + 0.5)``), clipped to the
        frame, and every box keeps at least one pixel per side. The official code truncated with ``int()``;
        tracks made with ``track_faces(..., integer=True)`` already hold integers, for which this is exact.
        """
        height, width = self.frame_size
        out = np.full(self.boxes.shape, -1, dtype=np.int64)
        ok = self.has_face
        r = np.floor(self.boxes[ok] + 0.5)
        x1 = np.clip(r[:, 0], 0, width - 1)
        y1 = np.clip(r[:, 1], 0, height - 1)
        x2 = np.clip(np.maximum(r[:, 2], x1 + 1), 1, width)
        y2 = np.clip(np.maximum(r[:, 3], y1 + 1), 1, height)
        out[ok] = np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)
        return out

    @classmethod
    def from_box(
        cls,
        box: Sequence[float],
        num_frames: int,
        frame_size: tuple[int, int],
        metadata: dict[str, Any] | None = None,
    ) -> FaceTrack:
        """The same user box (``--box x1 y1 x2 y2``) on every frame, clipped to the frame."""
        if len(box) != 4:
            raise Diff2LipError(f"a face box needs 4 numbers x1 y1 x2 y2, got {list(box)}")
        height, width = frame_size
        x1, y1, x2, y2 = (float(v) for v in box)
        cx1, cy1 = max(0.0, x1), max(0.0, y1)
        cx2, cy2 = min(float(width), x2), min(float(height), y2)
        if not (cx2 > cx1 and cy2 > cy1):
            raise Diff2LipError(
                f"face box {x1:g} {y1:g} {x2:g} {y2:g} is empty or outside the {width}x{height} frame"
            )
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        boxes = np.tile(np.array([[cx1, cy1, cx2, cy2]]), (num_frames, 1))  # (N, 4)
        return cls(boxes, (height, width), {"source": "box", **(metadata or {})})

    def check_compatible(
        self, num_frames: int | None, frame_size: tuple[int, int], path: str | Path | None = None
    ) -> None:
        """Raise :class:`Diff2LipError` unless this track fits a video of this size (and frame count)."""
        if tuple(frame_size) != self.frame_size:
            raise Diff2LipError(
                f"face track is for {self.frame_size[1]}x{self.frame_size[0]} frames, "
                f"the video is {frame_size[1]}x{frame_size[0]}",
                path=path,
            )
        if num_frames is not None and num_frames != self.num_frames:
            raise Diff2LipError(
                f"face track has {self.num_frames} frames, the video has {num_frames}", path=path
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TRACK_FORMAT,
            "version": TRACK_VERSION,
            "frame_size": list(self.frame_size),
            "num_frames": self.num_frames,
            "boxes": [None if np.isnan(b).any() else [float(v) for v in b] for b in self.boxes],
            "metadata": self.metadata,
        }

    def save(self, path: str | Path) -> Path:
        """Write the track as JSON (atomically: a temp file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        return write_text_atomic(path, text + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FaceTrack:
        """Read a track written by :meth:`save`; a one-line :class:`Diff2LipError` for a bad file."""
        path = Path(path)
        if not path.is_file():
            raise Diff2LipError("face track file not found", path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Diff2LipError(f"face track file is not valid JSON ({e})", path=path) from e
        if not isinstance(data, dict) or data.get("format") != TRACK_FORMAT:
            raise Diff2LipError(f"not a face track file (expected format '{TRACK_FORMAT}')", path=path)
        version = data.get("version")
        if version != TRACK_VERSION:
            raise Diff2LipError(
                f"unsupported face track version {version!r} (this diff2lip reads version {TRACK_VERSION})",
                path=path,
            )
        try:
            height, width = (int(v) for v in data["frame_size"])
            rows = [[math.nan] * 4 if b is None else [float(v) for v in b] for b in data["boxes"]]
            boxes = np.array(rows, dtype=np.float64).reshape(len(rows), 4)  # (N, 4)
            metadata = data.get("metadata", {})
            if not isinstance(metadata, dict):
                raise TypeError("metadata must be an object")
            track = cls(boxes, (height, width), metadata)
        except (KeyError, TypeError, ValueError) as e:
            raise Diff2LipError(f"malformed face track file: {type(e).__name__}: {e}", path=path) from e
        if data.get("num_frames", track.num_frames) != track.num_frames:
            raise Diff2LipError(
                f"malformed face track file: num_frames {data['num_frames']} but {track.num_frames} boxes",
                path=path,
            )
        return track


def fill_missing_boxes(boxes: np.ndarray, has_face: np.ndarray | None = None) -> np.ndarray:
    """Give every no-face row the box of the nearest frame with a face (the earlier one on a tie).

    ``boxes`` is ``(N, 4)``, e.g. :meth:`FaceTrack.int_boxes` (no-face rows ``-1``) or
    :attr:`FaceTrack.boxes` (NaN rows); ``has_face`` defaults to ``boxes[:, 0] >= 0``, which is False on
    both kinds of row. Returns a copy; without any face frame it is unchanged.
    """
    has = boxes[:, 0] >= 0 if has_face is None else np.asarray(has_face, dtype=bool)
    face_idx = np.flatnonzero(has)
    missing = np.flatnonzero(~has)
    out = boxes.copy()
    if len(missing) and len(face_idx):
        pos = np.searchsorted(face_idx, missing)  # first face frame after each missing frame
        before = face_idx[np.clip(pos - 1, 0, len(face_idx) - 1)]
        after = face_idx[np.clip(pos, 0, len(face_idx) - 1)]
        use_after = np.abs(after - missing) < np.abs(missing - before)
        out[missing] = boxes[np.where(use_after, after, before)]
    return out


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` index runs where ``flags`` is True."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # starts and one-past-ends, alternating
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def _choose(
    faces: list[FaceDetection],
    choose: str,
    frame_size: tuple[int, int],
    previous: tuple[float, float, float, float] | None,
) -> FaceDetection:
    """Pick one face of a frame (``faces`` is non-empty)."""

    def dist2(face: FaceDetection, point: tuple[float, float]) -> float:
        cx, cy = face.center
        return (cx - point[0]) ** 2 + (cy - point[1]) ** 2

    if choose == "score":
        return max(faces, key=lambda f: f.score)
    if choose == "central":
        mid = (frame_size[1] / 2, frame_size[0] / 2)
        return min(faces, key=lambda f: (dist2(f, mid), -f.area))
    if choose == "track" and previous is not None:
        prev = (0.5 * (previous[0] + previous[2]), 0.5 * (previous[1] + previous[3]))
        return min(faces, key=lambda f: (dist2(f, prev), -f.area))
    return max(faces, key=lambda f: (f.area, f.score))  # "largest", and "track" before its first face


def continuation_distance(
    box: tuple[float, float, float, float], previous: tuple[float, float, float, float], frames: int
) -> float | None:
    """How far (pixels, centre to centre) ``box`` lies from ``previous`` seen ``frames`` frames earlier, if
    it can be the same person — centre within ``(0.5 + 0.25 · frames)`` of the previous box's size, size
    within a factor 1.6 — else ``None``."""
    pw, ph = previous[2] - previous[0], previous[3] - previous[1]
    w, h = box[2] - box[0], box[3] - box[1]
    size, prev_size = math.sqrt(max(w * h, 1e-9)), math.sqrt(max(pw * ph, 1e-9))
    if not 1 / 1.6 <= size / prev_size <= 1.6:
        return None
    dx = 0.5 * (box[0] + box[2] - previous[0] - previous[2])
    dy = 0.5 * (box[1] + box[3] - previous[1] - previous[3])
    d = math.hypot(dx, dy)
    return d if d <= (0.5 + 0.25 * frames) * prev_size else None


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTH_WINDOW, integer: bool = False) -> np.ndarray:
    """The official ``get_smoothened_boxes``: box ``i`` becomes the mean of ``boxes[i : i + window]``.

    Exactly as the official code (which updates the array in place): for the last frames, where
    ``i + window > n``, the window is the last ``window`` boxes, some of which are already smoothed.
    With ``integer=True`` every mean is truncated to an integer as the official int array did. A run
    shorter than ``window`` uses the whole run (the official negative slice start there is a quirk for
    videos under 5 frames). ``boxes`` is ``(n, 4)`` without NaN; returns a new array.
    """
    out = np.array(boxes, dtype=np.float64)  # (n, 4)
    n = len(out)
    if n == 0 or window <= 1:
        return out
    if n > window:
        # frames 0 .. n-window see only not-yet-smoothed boxes: a plain moving average
        windows = np.lib.stride_tricks.sliding_window_view(out, window, axis=0)  # (n-window+1, 4, window)
        head = windows.mean(axis=-1)
        out[: n - window + 1] = np.trunc(head) if integer else head
    tail_start = max(0, n - window)
    for i in range(n - window + 1 if n > window else 0, n):
        mean = out[tail_start:].mean(axis=0)  # in place, as the official loop
        out[i] = np.trunc(mean) if integer else mean
    return out


def _track_shot(
    detections: Sequence[Sequence[FaceDetection]],
    frame_size: tuple[int, int],
    *,
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    smooth: Literal["mean5", "none"] = "mean5",
    choose: Literal["largest", "central", "score", "track"] = "largest",
    max_gap: int = 5,
    integer: bool = False,
    metadata: dict[str, Any] | None = None,
    min_face: float = 0.0,
    max_yaw: float | None = None,
    reacquire_after: int = 50,
) -> FaceTrack:
    """One box per frame from per-frame detections (frames without a face stay "no face").

    Steps, per frame then over the video:

    0. detections narrower than ``min_face`` pixels are ignored (too small to lip-sync), and, with
       ``max_yaw``, faces turned further than that many degrees (:attr:`FaceDetection.yaw`; faces without
       landmarks are kept);
    1. choose one face. ``score`` picks the highest score in every frame independently (the official
       code's first S3FD box). The other modes pick a person once — ``largest`` (area), ``central``
       (centre closest to the frame centre) or ``track`` (largest) — and then **follow that person**: in
       each later frame only a face continuous with the last one chosen (centre within
       ``0.5 + 0.25 · frames-since`` of its size, size within a factor 1.6) can be chosen; when that
       person is not found the frame has no face — it is never handed to another face. After
       ``reacquire_after`` frames without the person (a cut, the person left), the mode picks again;
    2. pad as the official ``face_detect``: ``y1 = max(0, top - pad_top)``, ``y2 = min(H, bottom +
       pad_bottom)``, ``x1 = max(0, left - pad_left)``, ``x2 = min(W, right + pad_right)``; a box left
       empty (detection outside the frame) counts as no face;
    3. bridge each run of at most ``max_gap`` no-face frames that lies between two face frames by linear
       interpolation of the two boxes; longer runs, and runs at the start or end, stay no face;
    4. ``smooth="mean5"``: the paper's smoothing (:func:`smooth_boxes`, window 5) applied separately to each
       contiguous run of face frames, never across a gap.

    ``integer=True`` reproduces the official integer arithmetic exactly: detection boxes are clipped at 0
    and truncated with ``int()`` before padding, and smoothed means are truncated (interpolated boxes are
    floored). ``frame_size`` is ``(H, W)``; ``pads`` is ``(top, bottom, left, right)`` pixels.
    """
    if smooth not in ("mean5", "none"):
        raise Diff2LipError(f"unknown smoothing '{smooth}' (choose 'mean5' or 'none')")
    if choose not in ("largest", "central", "score", "track"):
        raise Diff2LipError(f"unknown face choice '{choose}' (choose largest, central, score or track)")
    if len(pads) != 4:
        raise Diff2LipError(f"pads needs 4 numbers (top, bottom, left, right), got {list(pads)}")
    if max_gap < 0:
        raise Diff2LipError(f"max_gap must be >= 0, got {max_gap}")
    height, width = (int(v) for v in frame_size)
    pad_top, pad_bottom, pad_left, pad_right = (float(p) for p in pads)

    boxes = np.full((len(detections), 4), np.nan)  # (N, 4)
    previous = None
    last_seen = -1
    passed_over = 0  # frames with faces, none of them the followed person
    turned = 0  # frames whose only faces were turned away too far
    for i, faces in enumerate(detections):
        faces = [f for f in faces if f.width >= min_face]
        if max_yaw is not None and faces:
            frontal = [f for f in faces if f.yaw is None or abs(f.yaw) <= max_yaw]
            turned += not frontal
            faces = frontal
        if not faces:
            continue
        if choose == "score" or previous is None or i - last_seen > reacquire_after:
            face = _choose(faces, choose, (height, width), None)
        else:
            same = [f for f in faces if continuation_distance(f.box, previous, i - last_seen) is not None]
            if not same:
                passed_over += 1
                continue
            face = _choose(same, "track", (height, width), previous)
        x1, y1, x2, y2 = face.box
        if integer:
            x1, y1, x2, y2 = (float(int(max(0.0, v))) for v in face.box)
        y1, y2 = max(0.0, y1 - pad_top), min(float(height), y2 + pad_bottom)
        x1, x2 = max(0.0, x1 - pad_left), min(float(width), x2 + pad_right)
        if x2 > x1 and y2 > y1:  # (a detection outside the frame is no face, and not followed)
            boxes[i] = (x1, y1, x2, y2)
            previous, last_seen = face.box, i

    has = ~np.isnan(boxes).any(axis=1)
    for first, last in _runs(~has):
        length = last - first + 1
        if first == 0 or last == len(boxes) - 1 or length > max_gap:
            continue
        a, b = boxes[first - 1], boxes[last + 1]
        frac = np.arange(1, length + 1)[:, None] / (length + 1)  # (length, 1)
        fill = a + (b - a) * frac  # (length, 4)
        boxes[first : last + 1] = np.floor(fill) if integer else fill

    if smooth == "mean5":
        for first, last in _runs(~np.isnan(boxes).any(axis=1)):
            boxes[first : last + 1] = smooth_boxes(boxes[first : last + 1], SMOOTH_WINDOW, integer)

    info = {
        "pads": [float(p) for p in pads],
        "smooth": smooth,
        "choose": choose,
        "other_faces_passed_over": passed_over,
        "turned_away": turned,
        "max_gap": int(max_gap),
        "integer": bool(integer),
        **(metadata or {}),
    }
    return FaceTrack(boxes, (height, width), info)


def track_faces(
    detections: Sequence[Sequence[FaceDetection]],
    frame_size: tuple[int, int],
    *,
    cuts: Sequence[int] = (),
    **options: Any,
) -> FaceTrack:
    """One box per frame from per-frame detections; see :func:`_track_shot` for the options.

    ``cuts``: the first frames of new shots (:class:`~diff2lip.video.shots.ShotDetector`). Each shot is
    tracked on its own — the person is chosen again after a cut, and no box is smoothed, interpolated or
    carried across a cut; the track's metadata lists the shots.
    """
    from diff2lip.video.shots import shot_ranges

    shots = shot_ranges(list(cuts), len(detections)) if len(detections) else []
    if len(shots) <= 1:
        track = _track_shot(detections, frame_size, **options)
        track.metadata["shots"] = [list(r) for r in shots]
        return track
    parts = [_track_shot(detections[a : b + 1], frame_size, **options) for a, b in shots]
    track = FaceTrack(np.concatenate([p.boxes for p in parts]), parts[0].frame_size, dict(parts[0].metadata))
    for key in ("other_faces_passed_over", "turned_away"):
        track.metadata[key] = sum(p.metadata[key] for p in parts)
    track.metadata["shots"] = [list(r) for r in shots]
    return track
