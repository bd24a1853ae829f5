"""Face detection: the :class:`FaceDetector` protocol and the default offline detector.

The pipeline (DESIGN.md §2) detects faces on decoded frames, turns the per-frame detections into one box
per frame (:mod:`diff2lip.video.track`) and crops them (:mod:`diff2lip.video.crop`). Detectors only look at
pixels: they take a batch of RGB frames and return, per frame, every face they found.

Detectors available here (no run-time downloads anywhere):

- ``"dlib"`` (default): dlib's HOG frontal-face detector plus its 68-point shape predictor. The predictor
  (``shape_predictor_68_face_landmarks.dat``) ships inside the pip package ``face-recognition-models``; its
  68 landmarks are what LMD (DESIGN.md §5) and landmark-based mouth masks need.
- ``"dlib-cnn"``: dlib's MMOD CNN detector (``mmod_human_face_detector.dat``, same package); more robust to
  pose, much slower on a CPU.
- ``"s3fd"``: the S3FD network used by Wav2Lip and the official Diff2Lip preprocessing, loaded from the
  published ``s3fd.pth`` at a path the user gives (:mod:`diff2lip.video.s3fd`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from diff2lip.errors import Diff2LipError

LANDMARKS_68_FILE = "shape_predictor_68_face_landmarks.dat"
LANDMARKS_5_FILE = "shape_predictor_5_face_landmarks.dat"
MMOD_CNN_FILE = "mmod_human_face_detector.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SAME_PERSON = 0.5
"""Descriptor distance below which two faces are taken to be one person. dlib's own rule is 0.6 (99.4 %
on LFW); 0.5 is stricter because a false merge lip-syncs the wrong person, while a missed one only splits
a person into two ids. Measured on Megamind.avi: the same person across shots 0.28 and 0.47, different
people 0.60 and more."""

DETECTOR_NAMES = ("dlib", "dlib-cnn", "s3fd")


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One face found in one frame.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the full-resolution frame, half-open (``x2`` is one past the
            last column), floats; may reach outside the frame (tracking clips it).
        score: the detector's confidence (dlib HOG: SVM margin; dlib CNN: MMOD confidence; S3FD: softmax
            probability). Comparable only within one detector.
        landmarks: ``(68, 2)`` float ``(x, y)`` points in the iBUG 300-W order, or ``None``.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.box[0] + self.box[2]), 0.5 * (self.box[1] + self.box[3]))

    @property
    def yaw(self) -> float | None:
        """Rough head yaw in degrees from the 68 landmarks (0 = frontal; ±90 = profile), or ``None``.

        Where the nose tip (point 30) lies between the jaw's ends (points 0 and 16): at the middle for a
        frontal face, at an end for a profile; ``asin(2r − 1)`` maps that fraction ``r`` to an angle.
        """
        if self.landmarks is None or len(self.landmarks) != 68:
            return None
        left, right, nose = self.landmarks[0, 0], self.landmarks[16, 0], self.landmarks[30, 0]
        span = right - left
        if span <= 1e-6:
            return 90.0
        r = min(1.0, max(0.0, (nose - left) / span))
        return float(np.degrees(np.arcsin(2.0 * r - 1.0)))


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a batch of frames."""

    def detect(self, frames: np.ndarray) -> list[list[FaceDetection]]:
        """Detect faces in ``frames`` ``(N, H, W, 3)`` uint8 RGB: one (maybe empty) list per frame."""
        ...


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Validate a ``(N, H, W, 3)`` uint8 RGB batch (a single ``(H, W, 3)`` frame is promoted)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]  # (1, H, W, 3)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return frames


def downscale_factor(height: int, width: int, downscale_to: int | None) -> float:
    """The factor (<= 1) that brings the longer side to at most ``downscale_to`` pixels."""
    if downscale_to is None:
        return 1.0
    if downscale_to <= 0:
        raise ValueError(f"downscale_to must be positive or None, got {downscale_to}")
    return min(1.0, downscale_to / max(height, width))


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``(N, H, W, 3)`` uint8 frames with antialiased bilinear filtering (rounded back to uint8).

    One frame at a time, so the float working copy is one frame's (an 8K frame is 0.4 GB in float32), not
    the chunk's.
    """
    import torch  # (imported here: the CLI reads this module's constants without loading torch)

    out = np.empty((len(frames), height, width, 3), np.uint8)  # (N, h, w, 3)
    for i, frame in enumerate(frames):
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        y = torch.nn.functional.interpolate(
            x, size=(height, width), mode="bilinear", align_corners=False, antialias=True
        )
        out[i] = y[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        del x, y
    return out


def face_models_dir() -> Path:
    """The ``models`` folder of the ``face-recognition-models`` package, located without importing it.

    The package's ``__init__`` imports ``pkg_resources`` (gone from setuptools >= 81), so only its spec is
    looked up.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise Diff2LipError(
            "the dlib face models are missing: pip install face-recognition-models "
            "(it ships shape_predictor_68_face_landmarks.dat and mmod_human_face_detector.dat)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _model_file(models_dir: Path, name: str) -> Path:
    path = models_dir / name
    if not path.is_file():
        raise Diff2LipError(
            f"dlib model file {name} not found (reinstall face-recognition-models or pass models_dir)",
            path=path,
        )
    return path


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as e:
        raise Diff2LipError(f"the dlib face detector is not installed: pip install dlib-bin ({e})") from e
    return dlib


DLIB_EXPAND = (0.05, 0.2, 0.05, 0.05)
"""Default growth of dlib boxes (top, bottom, left, right fractions) towards S3FD-like face framing."""


class DlibDetector:
    """dlib face detection (HOG or MMOD CNN) with optional 68-point landmarks; fully offline.

    Detection runs on a copy of each frame downscaled so that its longer side is at most ``downscale_to``
    pixels (for speed on HD video); boxes are mapped back to full-resolution pixels and landmarks are
    predicted on the full-resolution frame. dlib rectangles are inclusive, so ``x2 = right + 1``.

    Args:
        upsample: how many times dlib upsamples the (downscaled) image before detecting; 1 finds faces
            down to about 40 px.
        landmarks: also predict the 68 iBUG landmarks of every face.
        detector: ``"hog"`` (fast) or ``"cnn"`` (MMOD; robust, slow on a CPU).
        downscale_to: longer-side limit of the detection copy, or ``None`` to detect at full resolution.
        min_score: detections scoring below this are dropped. ``None`` means 0.2 for HOG (drops the weak
            false positives HOG produces at score 0 to 0.2 with upsampling) and 0.0 for the CNN.
        models_dir: folder holding the dlib ``.dat`` files; default: inside ``face-recognition-models``.
        expand: ``(top, bottom, left, right)`` fractions of the box height/width added to each dlib box.
            dlib's boxes run from the brows to about the lower lip; the default ``(0.05, 0.2, 0.05, 0.05)``
            frames forehead to below the chin like the S3FD boxes the paper's model was trained on, so the
            lower-half mask covers mouth and chin. ``(0, 0, 0, 0)`` gives dlib's raw boxes.
    """

    def __init__(
        self,
        upsample: int = 1,
        landmarks: bool = True,
        detector: Literal["hog", "cnn"] = "hog",
        downscale_to: int | None = 640,
        min_score: float | None = None,
        models_dir: str | Path | None = None,
        expand: tuple[float, float, float, float] = DLIB_EXPAND,
    ):
        if detector not in ("hog", "cnn"):
            raise Diff2LipError(f"unknown dlib detector '{detector}' (choose 'hog' or 'cnn')")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        downscale_factor(1, 1, downscale_to)  # validates downscale_to
        dlib = _import_dlib()
        self.upsample = int(upsample)
        self.detector_kind = detector
        self.downscale_to = downscale_to
        self.min_score = (0.2 if detector == "hog" else 0.0) if min_score is None else float(min_score)
        if len(expand) != 4 or min(expand) < 0:
            raise Diff2LipError(
                f"expand needs 4 non-negative fractions (top, bottom, left, right), got {expand}"
            )
        self.expand = tuple(float(v) for v in expand)
        needs_files = landmarks or detector == "cnn"
        folder = Path(models_dir) if models_dir is not None else (face_models_dir() if needs_files else None)
        if detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(str(_model_file(folder, MMOD_CNN_FILE)))
        self._predictor = (
            dlib.shape_predictor(str(_model_file(folder, LANDMARKS_68_FILE))) if landmarks else None
        )
        self._rectangle = dlib.rectangle

    def _detect_one(self, image: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Run dlib on one (downscaled) image: ``[((left, top, right, bottom), score), ...]``."""
        if self.detector_kind == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, self.min_score)
            found = list(zip(rects, scores))
        else:
            found = [(d.rect, d.confidence) for d in self._detector(image, self.upsample)]
        return [
            ((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in found if s >= self.min_score
        ]

    def detect(self, frames: np.ndarray) -> list[list[FaceDetection]]:
        """Detect faces in ``frames`` ``(N, H, W, 3)`` uint8 RGB; one list per frame, best score first."""
        frames = check_frames(frames)
        _, height, width, _ = frames.shape
        scale = downscale_factor(height, width, self.downscale_to)
        small = frames
        if scale < 1.0:
            small = resize_frames(frames, max(1, round(height * scale)), max(1, round(width * scale)))
        sy, sx = small.shape[1] / height, small.shape[2] / width
        results: list[list[FaceDetection]] = []
        for frame, image in zip(frames, small):
            faces = []
            for (left, top, right, bottom), score in self._detect_one(np.ascontiguousarray(image)):
                raw = (left / sx, top / sy, (right + 1) / sx, (bottom + 1) / sy)
                marks = self._landmarks(frame, raw)  # the shape predictor expects dlib's own box
                faces.append(FaceDetection(box=self._expanded(raw), score=score, landmarks=marks))
            faces.sort(key=lambda f: -f.score)
            results.append(faces)
        return results

    def _expanded(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = box
        h, w = y2 - y1, x2 - x1
        top, bottom, left, right = self.expand
        return (x1 - left * w, y1 - top * h, x2 + right * w, y2 + bottom * h)

    def _landmarks(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        if self._predictor is None:
            return None
        left, top = round(box[0]), round(box[1])
        right, bottom = max(left, round(box[2]) - 1), max(top, round(box[3]) - 1)  # inclusive corners
        rect = self._rectangle(left, top, right, bottom)
        shape = self._predictor(np.ascontiguousarray(frame), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)  # (68, 2)


class FaceDescriber:
    """dlib's face descriptor (a 128-d ResNet embedding, ``dlib_face_recognition_resnet_model_v1.dat`` from
    ``face-recognition-models``): faces of one person lie within :data:`SAME_PERSON` of each other.

    The face is aligned with dlib's 5-point shape predictor run on the detection's box, so descriptors of
    every detector (with or without landmarks) are comparable. About 0.09 s per face on one CPU core.
    """

    def __init__(self, models_dir: str | Path | None = None):
        dlib = _import_dlib()
        folder = Path(models_dir) if models_dir is not None else face_models_dir()
        self._net = dlib.face_recognition_model_v1(str(_model_file(folder, DESCRIPTOR_FILE)))
        self._aligner = dlib.shape_predictor(str(_model_file(folder, LANDMARKS_5_FILE)))
        self._rectangle = dlib.rectangle

    def describe(self, frame: np.ndarray, faces: list[FaceDetection]) -> list[np.ndarray]:
        """One ``(128,)`` float64 descriptor per face of ``frame`` ``(H, W, 3)`` uint8 RGB."""
        image = np.ascontiguousarray(frame)
        out = []
        for face in faces:
            x1, y1, x2, y2 = (round(v) for v in face.box)
            shape = self._aligner(image, self._rectangle(x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)))
            out.append(np.array(self._net.compute_face_descriptor(image, shape), dtype=np.float64))
        return out


def create_detector(name: str = "dlib", **kwargs: Any) -> FaceDetector:
    """Build a detector by name: ``"dlib"`` (default), ``"dlib-cnn"`` or ``"s3fd"``.

    Keyword arguments go to the detector (:class:`DlibDetector`, or
    :class:`~diff2lip.video.s3fd.S3FDDetector`, which needs ``weights_path``).
    """
    if name == "dlib":
        return DlibDetector(**kwargs)
    if name == "dlib-cnn":
        return DlibDetector(detector="cnn", **kwargs)
    if name == "s3fd":
        if kwargs.get("weights_path") is None:
            raise Diff2LipError(
                "the s3fd detector needs the published weights file: pass its path (s3fd.pth)"
            )
        from diff2lip.video.s3fd import S3FDDetector

        return S3FDDetector(**kwargs)
    raise Diff2LipError(f"unknown face detector '{name}' (choose one of {', '.join(DETECTOR_NAMES)})")
