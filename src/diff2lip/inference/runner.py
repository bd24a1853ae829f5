"""Lip-sync one video (or still image) file: the streaming decode → track → sample → paste → encode job.

Two passes over the input keep memory bounded by the chunk size, not the video length:

1. *track*: decode in chunks and detect faces (or load a saved face track / use a fixed box), then
   :func:`~diff2lip.video.track.track_faces` turns the detections (small data) into one box per frame;
2. *generate*: decode again in chunks; for frames with a face, crop, look up each frame's mel window by its
   timestamp, sample the new lower halves with :class:`~diff2lip.inference.pipeline.Diff2LipPipeline`,
   paste them back (feathered by default) and encode, muxing the driving audio at its own sample rate.

Frames without a face pass through untouched and are reported. When the audio is longer than the video
and ``length="audio"``, the video is looped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from diff2lip.audio import complete_windows, frame_times, load_audio, mel_windows, melspectrogram
from diff2lip.errors import Diff2LipError
from diff2lip.fileio import check_output_path
from diff2lip.inference.memory import MemoryPlan, plan_memory
from diff2lip.inference.pipeline import PAPER_SEED, Diff2LipPipeline, shared_noise
from diff2lip.video.crop import crop_faces, paste_back
from diff2lip.video.face import SAME_PERSON, FaceDetection, FaceDetector, create_detector
from diff2lip.video.io import FrameChunk, VideoReader, VideoWriter, as_still, probe
from diff2lip.video.official import crop_faces_official, paste_back_official
from diff2lip.video.people import Person, detections_of, identify_people
from diff2lip.video.quality import auto_crf
from diff2lip.video.shots import ShotDetector
from diff2lip.video.track import FaceTrack, track_faces

Progress = Callable[[str, int, int | None], None]
"""``progress(stage, frames_done_in_this_call, total_or_None)`` — called as work advances."""


@dataclass
class GenerateOptions:
    """Every knob of :func:`generate_video` (the CLI flags map onto these one to one)."""

    # faces
    detector: str = "dlib"
    detector_weights: str | None = None
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    smooth: Literal["mean5", "none"] = "mean5"
    choose: Literal["largest", "central", "score", "track"] = "largest"
    integer_boxes: bool = False
    box: tuple[float, float, float, float] | None = None
    face_track: str | None = None
    max_gap: int = 5
    min_face: float = 0.0  # faces narrower than this (pixels) are ignored: such frames pass through
    max_yaw: float | None = None  # faces turned further than this (degrees, from the landmarks) are ignored
    shots: bool = True  # detect shot cuts and track each shot on its own (the official code does not)
    face_id: int | None = (
        None  # lip-sync this person of `diff2lip faces` only (default: the automatic choice)
    )
    same_person: float | None = SAME_PERSON  # --face-id: descriptor distance joining tracklets; None: off
    voices: dict[int, str] = field(default_factory=dict)  # --audio-for K=FILE: person K speaks FILE
    # video
    resize_factor: int = 1
    fps: float = 25.0  # still-image (and static) input only
    static: bool = False  # use only the first frame of the video, as a still image (Wav2Lip's --static)
    length: Literal["audio", "video", "shortest", "paper"] = "audio"
    chunk_size: int = 32  # at most; fewer when the memory budget needs it (see inference/memory.py)
    max_memory: int | None = (
        None  # bytes of resident memory for the job; None: in use + min(3 GiB, half free)
    )
    crf: float | None = None  # None: from the source's bits per pixel (video/quality.py)
    preset: str = "medium"
    tune: str | None = None  # x264 --tune (film, grain, ...)
    lossless: bool = False  # FFV1 video in .mkv: the frames exactly
    audio_codec: str = "auto"  # auto (copy when the container can hold it, else AAC) | copy | aac | ...
    # generation
    reference: str = "self"  # self | first | frame:N | image:PATH
    reconstruction: bool = False
    sampler: str | None = None
    steps: int | None = None
    seed: int = PAPER_SEED
    batch_size: int | str = "auto"
    blend: Literal["feather", "hard"] = "feather"
    feather: float = 0.1
    # exactness: "paper" = the official crop/paste resizing (OpenCV) and uint8 truncation; the audio
    # resampler "kaiser_best" = the official environment's (resampy), "swr" = FFmpeg's (streamed)
    postprocess: Literal["default", "paper"] = "default"
    resampler: Literal["swr", "kaiser_best"] = "swr"

    @classmethod
    def paper(cls, **overrides: object) -> GenerateOptions:
        """The official inference semantics (``--preset paper``): integer boxes with pads 0, the mean of
        5 boxes, the highest-scoring face, seed-7 shared noise, DDIM-25; the crop resized to the model's
        size and the generated crop back over the whole box with OpenCV's bilinear resize (no antialias),
        uint8 by truncation; audio resampled with resampy's kaiser_best; the output cut to the frames
        whose 0.2 s mel window is complete (and the audio to those frames)."""
        base = dict(
            pads=(0, 0, 0, 0),
            smooth="mean5",
            choose="score",
            integer_boxes=True,
            max_gap=0,
            shots=False,
            blend="hard",
            seed=PAPER_SEED,
            sampler="ddim",
            steps=25,
            reference="self",
            postprocess="paper",
            resampler="kaiser_best",
            length="paper",
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


@dataclass
class GenerateReport:
    """What :func:`generate_video` did (also printed as the CLI's one-line summary)."""

    output: Path
    frames: int
    width: int
    height: int
    fps: float
    duration: float
    frames_without_face: int
    no_face_summary: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stale_removed: list[Path] = field(default_factory=list)  # partial outputs of killed runs, removed
    memory: MemoryPlan | None = None
    # frames whose time was reordered / repeated or backwards / missing
    timestamps: dict[str, int] = field(default_factory=dict)
    shots: list[list[int]] = field(default_factory=list)  # inclusive [first, last] frames of each shot
    speakers: list[str] = field(default_factory=list)  # with --audio-for: who was lip-synced to what
    audio_note: str = ""  # audio copied, or encoded and why
    video_note: str = ""  # how the video was encoded
    variable_rate: bool = False  # frames written at uneven intervals (VFR input kept as it is)

    def rate_text(self) -> str:
        """The frame rate as it is (``29.97 fps``, ``23.976 fps``, never rounded to a different rate), and
        ``VFR`` when frames are not evenly spaced."""
        text = f"{self.fps:.6g} fps"
        return f"VFR, average {text}" if self.variable_rate else text

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
        faces = (
            "face in every frame"
            if self.frames_without_face == 0
            else f"{self.frames_without_face} frames without a face passed through ({self.no_face_summary})"
        )
        stale = (
            f"; removed {len(self.stale_removed)} partial file(s) left by a killed earlier run"
            if self.stale_removed
            else ""
        )
        notes = f"; memory: {self.memory.describe()}" if self.memory and self.memory.reduced else ""
        if len(self.shots) > 1:
            notes += (
                f"; {len(self.shots)} shots (cuts at frames {', '.join(str(a) for a, _ in self.shots[1:])})"
            )
        if self.video_note:
            notes += f"; video {self.video_note}"
        if self.audio_note:
            notes += f"; {self.audio_note}"
        if self.speakers:
            notes += f"; lip-synced {', '.join(self.speakers)}"
        fixed = ", ".join(f"{n} {what}" for what, n in self.timestamps.items() if n)
        notes += f"; frame times repaired: {fixed}" if fixed else ""
        return (
            f"wrote {self.output} ({self.frames} frames, {self.width}x{self.height}, {self.rate_text()}, "
            f"{self.duration:.2f}s); {faces}; {stages}{notes}{stale}"
        )


def _downscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Wav2Lip's ``--resize_factor``: shrink the frames the detector sees by an integer factor."""
    if factor == 1:
        return frames
    import torch
    import torch.nn.functional as F

    _, h, w, _ = frames.shape
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    y = F.interpolate(x, size=(h // factor, w // factor), mode="area")
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _chunks(reader: VideoReader, factor: int) -> Iterator[FrameChunk]:
    """The reader's chunks with the frames shrunk by ``factor`` (what the detector sees)."""
    if factor == 1:
        yield from reader
        return
    for chunk in reader:
        out = FrameChunk(_downscale(chunk.frames, factor), chunk.times, chunk.start_index)
        del chunk  # hold no reference while the reader decodes the next chunk (memory: one chunk, not two)
        yield out
        del out


def _detect(detector: FaceDetector, frames: np.ndarray, factor: int) -> list[list[FaceDetection]]:
    """Detect on frames shrunk by ``factor``; boxes and landmarks in full-size pixels."""
    found = detector.detect(frames)
    if factor == 1:
        return found
    return [
        [
            replace(
                f,
                box=tuple(v * factor for v in f.box),
                landmarks=None if f.landmarks is None else f.landmarks * factor,
            )
            for f in faces
        ]
        for faces in found
    ]


def detect_faces(
    path: Path,
    reader: VideoReader,
    detector: FaceDetector,
    opts: GenerateOptions,
    progress: Progress | None = None,
    max_frames: int | None = None,
) -> tuple[list, list[int]]:
    """Pass 1: detect faces chunk by chunk (a still image is detected once) and find the shot cuts; with
    ``max_frames``, only the first frames (those the output will use). Returns ``(detections per frame,
    cuts)``."""
    detections: list = []
    shots = ShotDetector() if opts.shots and not reader.info.is_image else None
    if reader.info.is_image:
        first = next(iter(_chunks(reader, opts.resize_factor)))
        found = _detect(detector, first.frames[:1], opts.resize_factor)[0]
        detections = [found] * (reader.num_frames or 1)
        if progress:
            progress("detect", len(detections), len(detections))
    else:
        total = reader.num_frames if max_frames is None else min(reader.num_frames or max_frames, max_frames)
        for chunk in _chunks(reader, opts.resize_factor):
            frames = chunk.frames if max_frames is None else chunk.frames[: max_frames - len(detections)]
            detections.extend(_detect(detector, frames, opts.resize_factor))
            if shots is not None:
                shots.feed(frames)  # (shrunk frames: cuts do not need full size)
            if progress:
                progress("detect", len(frames), total)
            if max_frames is not None and len(detections) >= max_frames:
                break
    if not detections:
        raise Diff2LipError("video has no frames", path)
    return detections, list(shots.cuts) if shots is not None else []


def find_people_in(
    detections: list, cuts: list[int], reader: VideoReader, opts: GenerateOptions
) -> list[Person]:
    """Every person of the detected frames, numbered as ``diff2lip faces`` numbers them."""
    return identify_people(
        detections, reader, cuts=cuts, min_face=opts.min_face, same_person=opts.same_person
    )


def _person(people: list[Person], k: int, path: Path, flag: str) -> Person:
    if not 0 <= k < len(people):
        raise Diff2LipError(
            f"{flag}: {len(people)} people found in the frames used (ids 0–{len(people) - 1}); "
            "`diff2lip faces VIDEO` shows them",
            path,
        )
    return people[k]


def track_detections(
    detections: list, cuts: list[int], reader: VideoReader, opts: GenerateOptions, *, one_person: bool
) -> FaceTrack:
    """Per-frame detections → the face track (``one_person``: they are already one person's)."""
    return track_faces(
        detections,
        (reader.info.height, reader.info.width),
        pads=opts.pads,
        smooth=opts.smooth,
        choose="score" if one_person else opts.choose,
        max_gap=opts.max_gap,
        integer=opts.integer_boxes,
        min_face=opts.min_face,
        max_yaw=opts.max_yaw,
        cuts=cuts,
        metadata={"detector": opts.detector, "pads": list(opts.pads), "smooth": opts.smooth},
    )


def detect_track(
    path: Path,
    reader: VideoReader,
    detector: FaceDetector,
    opts: GenerateOptions,
    progress: Progress | None = None,
    max_frames: int | None = None,
) -> FaceTrack:
    """Detect and track: the automatic choice of face, or person ``opts.face_id``."""
    detections, cuts = detect_faces(path, reader, detector, opts, progress, max_frames)
    if opts.face_id is not None:  # one person of `diff2lip faces` (ids in order of first appearance)
        person = _person(
            find_people_in(detections, cuts, reader, opts), opts.face_id, path, f"--face-id {opts.face_id}"
        )
        detections = detections_of(person, len(detections))
    return track_detections(detections, cuts, reader, opts, one_person=opts.face_id is not None)


def voice_tracks(
    path: Path,
    reader: VideoReader,
    detector: FaceDetector,
    opts: GenerateOptions,
    progress: Progress | None = None,
    max_frames: int | None = None,
) -> tuple[FaceTrack, dict[int, FaceTrack]]:
    """``--audio-for``: the track of ``--face-id`` (or an empty one: the main audio then drives nobody) and
    one track per person with their own speech, from one detection pass."""
    detections, cuts = detect_faces(path, reader, detector, opts, progress, max_frames)
    people = find_people_in(detections, cuts, reader, opts)
    n = len(detections)

    def person_track(k: int, flag: str) -> FaceTrack:
        person = _person(people, k, path, flag)
        return track_detections(detections_of(person, n), cuts, reader, opts, one_person=True)

    if opts.face_id is not None:
        main_track = person_track(opts.face_id, f"--face-id {opts.face_id}")
    else:
        nobody = [[] for _ in range(n)]
        main_track = track_detections(nobody, cuts, reader, opts, one_person=True)
    return main_track, {k: person_track(k, f"--audio-for {k}") for k in sorted(opts.voices)}


def _count_frames(reader: VideoReader) -> int:
    if reader.num_frames is not None:
        return reader.num_frames
    return sum(len(c) for c in reader)


def _detector(opts: GenerateOptions, detector: FaceDetector | None) -> FaceDetector:
    if detector is not None:
        return detector
    kw = {"weights_path": opts.detector_weights} if opts.detector == "s3fd" else {}
    return create_detector(opts.detector, **kw)


def get_face_track(
    path: Path,
    reader: VideoReader,
    opts: GenerateOptions,
    detector: FaceDetector | None,
    progress: Progress | None = None,
    max_frames: int | None = None,
) -> FaceTrack:
    """The face track: a saved file (``face_track`` that exists), a fixed ``box``, or detection (saved to
    ``face_track`` when that path does not exist yet; then always of the whole video, else of the first
    ``max_frames`` frames when given)."""
    frame_size = (reader.info.height, reader.info.width)
    if opts.face_track and Path(opts.face_track).is_file():
        track = FaceTrack.load(opts.face_track)
        track.check_compatible(reader.num_frames, frame_size, opts.face_track)
        return track
    if opts.box is not None:
        return FaceTrack.from_box(opts.box, _count_frames(reader), frame_size)
    track = detect_track(
        path, reader, _detector(opts, detector), opts, progress, None if opts.face_track else max_frames
    )
    if opts.face_track:
        track.save(opts.face_track)
    return track


def _frame_at(reader: VideoReader, index: int) -> np.ndarray:
    for chunk in reader:
        if chunk.start_index <= index < chunk.start_index + len(chunk):
            return chunk.frames[index - chunk.start_index]
    raise Diff2LipError(f"frame {index} is beyond the end of the video", reader.path)


def _shot_references(
    opts: GenerateOptions, reader: VideoReader, track: FaceTrack, size: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """``--reference first`` or ``frame:N`` on a video with cuts: a reference is never taken across a cut.
    Each shot's reference is its first face (``first``), or frame N in N's shot and the first face in the
    other shots (``frame:N``). Returns ``(crops (K, S, S, 3), shot index per frame (N,))``, or ``None``
    when there is one shot (or no face)."""
    shots = track.metadata.get("shots") or []
    wants = opts.reference == "first" or opts.reference.startswith("frame:")
    if not wants or opts.reconstruction or len(shots) < 2:
        return None
    has, boxes = track.has_face, track.int_boxes()
    firsts = []
    chosen = _reference_index(opts.reference, track) if opts.reference.startswith("frame:") else None
    for a, b in shots:
        faces = np.flatnonzero(has[a : b + 1])
        if chosen is not None and a <= chosen <= b:
            firsts.append(chosen)
        else:
            firsts.append(a + int(faces[0]) if len(faces) else None)
    known = [i for i in firsts if i is not None]
    if not known:
        return None
    wanted = set(known)
    crops: dict[int, np.ndarray] = {}
    for chunk in reader:  # one pass for all of them
        for j in range(len(chunk)):
            i = chunk.start_index + j
            if i in wanted:
                crops[i] = crop_faces(chunk.frames[j : j + 1], boxes[i : i + 1], size)[0]
        if len(crops) == len(wanted):
            break
    # a shot without a face (nothing to lip-sync there) borrows the nearest known reference
    per_shot = [
        crops[i if i is not None else min(known, key=lambda k, a=a: abs(k - a))]
        for i, (a, _) in zip(firsts, shots)
    ]
    shot_of = np.zeros(track.num_frames, np.int64)
    for k, (a, b) in enumerate(shots):
        shot_of[a : b + 1] = k
    return np.stack(per_shot), shot_of


def _reference_index(mode: str, track: FaceTrack) -> int:
    """The frame of ``--reference frame:N``, checked (it exists and has a face)."""
    try:
        index = int(mode.split(":", 1)[1])
    except ValueError:
        raise Diff2LipError(f"--reference {mode}: expected frame:N with an integer N") from None
    if not 0 <= index < track.num_frames or not track.has_face[index]:
        raise Diff2LipError(f"--reference {mode}: that frame does not exist or has no face")
    return index


def _reference_crop(
    opts: GenerateOptions,
    reader: VideoReader,
    track: FaceTrack,
    size: int,
    detector: FaceDetector | None,
) -> np.ndarray | None:
    """The fixed reference crop (S, S, 3) for ``first``/``frame:N``/``image:PATH``; ``None`` for ``self``."""
    mode = opts.reference
    if mode == "self" and not opts.reconstruction:
        return None
    boxes = track.int_boxes()
    if mode in ("self", "first"):
        faces = np.flatnonzero(track.has_face)
        if len(faces) == 0:
            return None
        index = int(faces[0])
    elif mode.startswith("frame:"):
        index = _reference_index(mode, track)
    elif mode.startswith("image:"):
        image_path = Path(mode.split(":", 1)[1])
        image = next(iter(VideoReader(image_path, image_duration=1.0, image_fps=1.0))).frames[:1]
        if detector is None:
            detector = create_detector("dlib", landmarks=False)
        found = detector.detect(image)[0]
        if not found:
            raise Diff2LipError("no face found in the reference image", image_path)
        ref_track = track_faces([found], image.shape[1:3], pads=opts.pads, smooth="none")
        return crop_faces(image, ref_track.int_boxes(), size)[0]
    else:
        raise Diff2LipError(f"unknown --reference '{mode}' (self, first, frame:N or image:PATH)")
    frame = _frame_at(reader, index)
    return crop_faces(frame[None], boxes[index : index + 1], size)[0]


References = tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]
"""A track's references: a fixed (S, S, 3) crop or None (each frame its own), and the per-shot ones."""


def _references(
    opts: GenerateOptions, reader: VideoReader, track: FaceTrack, size: int, detector: FaceDetector | None
) -> References:
    """Per-shot references where a reference must not cross a cut, else the fixed one (one decode)."""
    per_shot = _shot_references(opts, reader, track, size)
    if per_shot is not None:
        return None, per_shot
    return _reference_crop(opts, reader, track, size, detector), None


def _refs(references: References, idx: np.ndarray) -> np.ndarray | None:
    """The references of frames ``idx``: a fixed (S, S, 3) crop, one per frame (n, S, S, 3), or None."""
    ref_crop, per_shot = references
    return ref_crop if per_shot is None else per_shot[0][per_shot[1][idx]]


def _who_summary(track: FaceTrack, others: dict[int, FaceTrack], opts: GenerateOptions) -> str:
    """Where each lip-synced person was missing (one track: that track's own summary)."""
    if not others:
        return track.summary()
    parts = [f"person {opts.face_id} (main audio): {track.summary()}"] if opts.face_id is not None else []
    parts += [f"person {k} ({Path(opts.voices[k]).name}): {t.summary()}" for k, t in others.items()]
    return "; ".join(parts)


def _voice_mels(opts: GenerateOptions) -> dict[int, np.ndarray]:
    """``--audio-for``: each person's speech as a mel (checked before any work)."""
    if not opts.voices:
        return {}
    if opts.box is not None or opts.face_track:
        raise Diff2LipError(
            "--audio-for finds each person by detection: it cannot be used with --box or --face-track"
        )
    if opts.reconstruction:
        raise Diff2LipError("--audio-for cannot be used with reconstruction mode")
    if opts.face_id is not None and opts.face_id in opts.voices:
        raise Diff2LipError(f"person {opts.face_id} is given both --face-id (the main audio) and --audio-for")
    mels = {}
    for k, path in sorted(opts.voices.items()):
        wav = load_audio(path, 16000, opts.resampler)  # (samples,) float32
        if len(wav) == 0:
            raise Diff2LipError("audio is empty", path)
        mels[k] = melspectrogram(wav)  # (80, T_k)
    return mels


def output_duration(length: str, video_seconds: float, audio_seconds: float) -> float:
    """Seconds of output for ``--length`` (``audio``: the video loops when shorter)."""
    if length == "audio":
        return audio_seconds
    if length == "video":
        return video_seconds
    if length == "shortest":
        return min(audio_seconds, video_seconds)
    raise Diff2LipError(f"unknown --length '{length}' (audio, video or shortest)")


def lipsync_frames(
    pipeline: Diff2LipPipeline,
    frames: np.ndarray,
    times: np.ndarray,
    boxes: np.ndarray,
    has_face: np.ndarray,
    mel: np.ndarray,
    ref_crop: np.ndarray | None,
    noise: torch.Tensor,
    opts: GenerateOptions,
    *,
    inplace: bool = False,
    step_callback: Callable[..., None] | None = None,
) -> np.ndarray:
    """Lip-sync a chunk of full frames in memory (no I/O).

    Args:
        frames: (N, H, W, 3) uint8 frames; times: (N,) their output timestamps (index the mel).
        boxes: (N, 4) integer face boxes; has_face: (N,) bool (frames without a face are returned as is).
        mel: (80, T) mel of the driving audio; ref_crop: a fixed (S, S, 3) reference, one per frame
            (N, S, S, 3), or ``None`` (each frame its own).
        noise: the shared (1, 3, S, S) noise.

        inplace: paste into ``frames`` itself (no full-frame copies; the caller owns the chunk).
        step_callback: ``step_callback(step, num_steps, x_t, pred_x0)`` after every sampler step (a
            live preview: ``pred_x0`` is the batch's current estimate of the clean crops, in [-1, 1]).

    Returns:
        (N, H, W, 3) uint8: a copy with the lower faces replaced (``frames`` itself if no face or
        ``inplace``).
    """
    if not has_face.any():
        return frames
    size = pipeline.image_size
    paper = opts.postprocess == "paper"
    if paper:
        crops = crop_faces_official(frames[has_face], boxes[has_face], size)  # (F, S, S, 3)
    else:
        crops = crop_faces(frames[has_face], boxes[has_face], size)  # (F, S, S, 3)
    mels = mel_windows(mel, times[has_face])  # (F, 80, 16)
    if ref_crop is None:
        refs = None
    elif ref_crop.ndim == 4:  # one per frame (a reference per shot)
        refs = ref_crop[has_face]  # (F, S, S, 3)
    else:
        refs = np.repeat(ref_crop[None], len(crops), axis=0)  # (F, S, S, 3)
    gen = pipeline(
        crops,
        mels,
        refs,
        noise=noise,
        sampler=opts.sampler,
        steps=opts.steps,
        batch_size=opts.batch_size,
        rounding="truncate" if paper else "round",
        callback=step_callback,
    )
    out = frames if inplace else frames.copy()
    for i, j in enumerate(np.flatnonzero(has_face)):  # one frame at a time: only its box region is touched
        if paper:
            paste_back_official(out[j], gen[i], boxes[j], out=out[j])
        else:
            paste_back(out[j], gen[i], boxes[j], mode=opts.blend, feather=opts.feather, out=out[j])
    return out


def generate_video(
    video: str | Path,
    audio: str | Path,
    output: str | Path,
    pipeline: Diff2LipPipeline,
    opts: GenerateOptions | None = None,
    *,
    detector: FaceDetector | None = None,
    progress: Progress | None = None,
    step_callback: Callable[..., None] | None = None,
) -> GenerateReport:
    """Lip-sync ``video`` (or a still image) to ``audio`` and write ``output`` (mp4, H.264 + AAC).

    The output keeps the source resolution (``resize_factor`` shrinks only what the detector sees) and
    each frame's timing; the
    driving audio is muxed at its own sample rate. Nothing is written unless the whole job succeeds.
    """
    opts = opts or GenerateOptions()
    video, audio, output = Path(video), Path(audio), Path(output)
    if opts.resize_factor < 1:
        raise Diff2LipError(f"--resize-factor must be >= 1, got {opts.resize_factor}")
    if output.suffix.lower() not in (".mp4", ".mov", ".mkv", ".m4v"):
        raise Diff2LipError("output must be a video file name ending in .mp4 (or .mov/.mkv)", output)
    if output.resolve() in (video.resolve(), audio.resolve()):
        raise Diff2LipError("output would overwrite an input", output)
    check_output_path(output)  # a directory, a missing or read-only folder: one line, before any work
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    wav = load_audio(audio, 16000, opts.resampler)  # (samples,) float32
    audio_seconds = len(wav) / 16000.0
    if audio_seconds <= 0:
        raise Diff2LipError("audio is empty", audio)
    mel = melspectrogram(wav)  # (80, T)
    voice_mels = _voice_mels(opts)  # {person: (80, T_k)}
    info = probe(video)
    if opts.static:
        info = as_still(info)
    del wav
    # chunk size and encoder lookahead from the memory budget; fails here, before any work, if one frame
    # cannot fit
    memory = plan_memory(
        info.width, info.height, chunk_size=opts.chunk_size, preset=opts.preset, max_memory=opts.max_memory
    )
    reader = VideoReader(
        video,
        chunk_size=memory.chunk_size,
        image_fps=opts.fps,
        image_duration=audio_seconds,
        still=opts.static,
    )
    times["audio"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    # detect only the frames the output will use when the audio ends before the video (a loop needs all)
    needed = None
    if opts.length in ("audio", "shortest", "paper") and not info.is_image and reader.num_frames:
        needed = math.ceil(audio_seconds * reader.fps) + 2
        needed = needed if needed < reader.num_frames else None
    if voice_mels:
        detector = _detector(opts, detector)
        track, others = voice_tracks(video, reader, detector, opts, progress, needed)
    else:
        track, others = get_face_track(video, reader, opts, detector, progress, needed), {}
    n_src = track.num_frames
    size = pipeline.image_size
    # (boxes, has face, mel, references) of each person lip-synced: the main audio's, then each --audio-for
    mouths = [
        (t.int_boxes(), t.has_face, m, _references(opts, reader, t, size, detector))
        for t, m in [(track, mel), *((t, voice_mels[k]) for k, t in others.items())]
    ]
    times["track"] = time.perf_counter() - t1

    video_seconds = n_src / reader.fps  # also the loop period
    if needed is None and reader.end_time is not None:  # VFR / dropped frames: the timestamps' length
        video_seconds = max(video_seconds, reader.end_time)
    if opts.length == "paper":  # the official rule: stop at the first frame whose mel window is incomplete
        complete = complete_windows(mel.shape[1], frame_times(n_src, reader.fps))
        n_out = len(complete) if complete.all() else int(np.argmin(complete))
        if n_out == 0:
            raise Diff2LipError("the audio is shorter than one 0.2 s mel window", audio)
        out_seconds = n_out / reader.fps
    else:
        out_seconds = output_duration(opts.length, video_seconds, audio_seconds)
    period = video_seconds
    passes = max(1, math.ceil(out_seconds / period - 1e-9)) if period > 0 else 1
    noise = shared_noise(size, opts.seed, pipeline.device)

    recon_frame = recon_box = None
    if opts.reconstruction:
        faces_idx = np.flatnonzero(track.has_face)
        if len(faces_idx) == 0:
            raise Diff2LipError("reconstruction mode needs a face in the video, none was found", video)
        first = int(faces_idx[0])
        recon_frame = _frame_at(reader, first)
        recon_box = track.int_boxes()[first]

    t2 = time.perf_counter()
    height, width = info.height, info.width
    crf = auto_crf(info) if opts.crf is None else opts.crf
    # the frames again, each with its samples as decoded: pixels the model did not redraw are written as
    # they were (no RGB round trip), in the source's colour spec
    frames_in = VideoReader(
        video,
        chunk_size=memory.chunk_size,
        image_fps=opts.fps,
        image_duration=audio_seconds,
        keep_yuv=not opts.lossless and not opts.reconstruction,
        still=opts.static,
    )
    written = 0
    no_face = 0
    total = max(1, round(out_seconds * reader.fps))
    with VideoWriter(
        output,
        width=width,
        height=height,
        fps=reader.fps,
        crf=crf,
        preset=opts.preset,
        audio=audio,
        audio_duration=out_seconds,
        lookahead=memory.lookahead,
        threads=memory.threads,
        audio_codec=opts.audio_codec,
        lossless=opts.lossless,
        tune=opts.tune,
        color=frames_in.color,
    ) as writer:
        last_time = -math.inf
        uneven = False
        for k in range(passes):
            done = False
            # a loop starts one period later, and never before the last frame written (the last frame of
            # a VFR or repaired-timestamp video may lie beyond n / average rate)
            offset = max(k * period, last_time + 1.0 / reader.fps) if k else 0.0
            for chunk in frames_in:
                out_times = chunk.times + offset
                keep = out_times < out_seconds - 1e-9
                if not keep.any():
                    done = True
                    break
                idx = chunk.start_index + np.arange(len(chunk))[keep]
                idx = np.minimum(idx, n_src - 1)
                frames = chunk.frames if keep.all() else chunk.frames[keep]  # no copy in the common case
                source_yuv = None
                if chunk.yuv is not None and recon_frame is None:
                    source_yuv = chunk.yuv if keep.all() else chunk.yuv[keep]
                ftimes = out_times[keep]
                if recon_frame is not None:
                    frames = np.repeat(recon_frame[None], len(frames), axis=0)
                out = frames
                synced = np.zeros(len(frames), bool)
                changed = []  # (n, 4) per person: the boxes redrawn (-1: none)
                for person_boxes, person_face, person_mel, person_refs in mouths:  # in place, one by one
                    face, fboxes = person_face[idx], person_boxes[idx]
                    if recon_frame is not None:  # the first face frame is every frame's input
                        face = np.ones(len(frames), bool)
                        fboxes = np.repeat(recon_box[None], len(frames), axis=0)
                    out = lipsync_frames(
                        pipeline,
                        out,
                        ftimes,
                        fboxes,
                        face,
                        person_mel,
                        _refs(person_refs, idx),
                        noise,
                        opts,
                        inplace=True,
                        step_callback=step_callback,
                    )
                    synced |= face
                    changed.append(np.where(face[:, None], fboxes, -1))
                no_face += int((~synced).sum())
                writer.write(out, ftimes, source_yuv=source_yuv, changed=np.stack(changed, axis=1))
                steps = np.diff(np.concatenate([[last_time], ftimes]) if written else ftimes)
                uneven |= bool(np.any(np.abs(steps * reader.fps - 1) > 0.1))
                last_time = float(ftimes[-1])
                written += len(out)
                if progress:
                    progress("generate", len(out), total)
                del chunk, frames, out  # free this chunk before the reader decodes the next one
            if done:
                break
        if written == 0:
            raise Diff2LipError("no frames to write (empty video or zero-length output)", video)
    times["generate"] = time.perf_counter() - t2
    times["total"] = time.perf_counter() - t0
    return GenerateReport(
        output=output,
        frames=written,
        width=width,
        height=height,
        fps=reader.fps,
        duration=out_seconds,
        frames_without_face=no_face,
        no_face_summary=_who_summary(track, others, opts)
        + (
            f"; {track.metadata['other_faces_passed_over']} of them showed only other faces (not used)"
            if track.metadata.get("other_faces_passed_over")
            else ""
        )
        + (
            f"; {track.metadata['turned_away']} had only faces turned beyond --max-yaw"
            if track.metadata.get("turned_away")
            else ""
        ),
        stage_seconds=times,
        stale_removed=writer.stale_removed,
        memory=memory,
        audio_note=writer.audio_note,
        video_note="lossless FFV1"
        if opts.lossless
        else f"x264 crf {crf:g}" + (" (auto)" if opts.crf is None else ""),
        variable_rate=uneven,
        shots=[list(r) for r in track.metadata.get("shots", [])],
        speakers=([f"person {opts.face_id} (main audio)"] if opts.face_id is not None and others else [])
        + [f"person {k} ({Path(opts.voices[k]).name})" for k in others],
        timestamps={
            "reordered": max(reader.reordered_times, frames_in.reordered_times),
            "repeated or backwards": max(reader.repaired_times, frames_in.repaired_times),
            "missing": max(reader.missing_times, frames_in.missing_times),
        },
    )
