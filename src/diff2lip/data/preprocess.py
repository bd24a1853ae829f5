"""Dataset preprocessing: a folder of talking-face videos → the prepared-data layout (:mod:`.layout`).

``diff2lip preprocess RAW_DIR DATA_DIR`` (DESIGN.md §2, issue 2). For every video under ``RAW_DIR``
(recursive, sorted; the first path component is the speaker when videos are nested):

1. the frames are resampled to 25 fps *streaming*: output frame ``k`` is the source frame shown at time
   ``k / 25`` (the last frame whose timestamp is ≤ ``k / 25``), so any input rate and variable frame rate
   map onto the model's fixed 25 fps (DESIGN.md §3) without holding the video in memory;
2. faces are found on those frames and tracked (:func:`~diff2lip.video.track.track_faces`: Wav2Lip's pads
   ``(0, 0, 0, 0)`` on top of the detector's S3FD-like framing, and the paper's mean-of-next-5 smoothing) — or the fixed VoxCeleb2 crop of the
   official ``generate.py`` (``my_voxceleb2_crop``) is used instead of a detector;
3. each box is cropped and resized to ``size × size`` (128 in the paper) into ``faces.npy``; the audio is
   decoded to 16 kHz mono (``audio.wav``, PCM-16) and its Wav2Lip mel features (DESIGN.md §3) are saved as
   ``mel.npy``; ``meta.json`` is written last and marks the clip finished;
4. after all clips: ``manifest.jsonl`` is rebuilt from every finished clip and train/val/test filelists
   are written, split by speaker when there are speakers (no speaker straddles two splits).

Per-clip problems (unreadable file, no audio stream, no face, too short) are logged to
``DATA_DIR/preprocess_errors.log`` and skipped; the run never aborts on one bad file. Runs are resumable:
finished clips are skipped, half-written ones are removed and redone. With ``workers > 1`` clips are
prepared in parallel processes (spawn), each building its own face detector once.

Memory is bounded by the chunk size, not the video length: pass 1 decodes and detects chunk by chunk and
keeps only the detections; pass 2 decodes again and writes the crops straight into a memory-mapped
``faces.npy``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import time
import wave
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from diff2lip.data import layout
from diff2lip.errors import Diff2LipError
from diff2lip.fileio import atomic_path

__all__ = [
    "CROP_MODES",
    "ERRORS_LOG",
    "VIDEO_EXTENSIONS",
    "ClipFailure",
    "PreprocessConfig",
    "PreprocessSummary",
    "find_videos",
    "iter_resampled",
    "preprocess_dataset",
    "split_by_speaker",
    "voxceleb2_box",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
CROP_MODES = ("detector", "voxceleb2")
ERRORS_LOG = "preprocess_errors.log"
AUDIO_RATE = 16000
# A source frame whose timestamp is within this many seconds after an output time still counts as shown at
# that time (absorbs float error of pts × time_base; far below any frame interval).
_TIME_TOLERANCE = 1e-4
# Per-clip errors that skip the clip instead of aborting the run (InvalidDataError is an FFmpegError).
_CLIP_ERRORS = (Diff2LipError, av.FFmpegError, ValueError)


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


@dataclass
class PreprocessConfig:
    """Settings of :func:`preprocess_dataset`.

    Attributes:
        size: side of the square face crops (128 in the paper).
        fps: output frame rate (25 in the paper; DESIGN.md §3 indexes mel windows at 25 fps).
        crop: ``"detector"`` (detect + track + pad + smooth) or ``"voxceleb2"`` (the official fixed crop:
            rows ``[0, H - int(H·2.36/8))``, columns ``[int(W·1.8/8), W - int(W·1.8/8))``).
        detector: face detector name for :func:`~diff2lip.video.face.create_detector` (``dlib``,
            ``dlib-cnn``, ``s3fd``).
        detector_weights: weights file for detectors that need one (``s3fd.pth``).
        pads: ``(top, bottom, left, right)`` pixels added around detected boxes (Wav2Lip: ``0 10 0 0``).
        smooth: ``"mean5"`` (the paper's mean of the next 5 boxes) or ``"none"``.
        min_face_fraction: a clip with a (tracked) face in fewer than this fraction of its frames is
            skipped as "no face"; the remaining no-face frames of an accepted clip take the nearest
            frame's box and are listed in ``meta.json`` as ``filled_frames``.
        min_frames: clips shorter than this many output frames are skipped as too short.
        workers: parallel processes (1 = in this process). Default ``min(2, cpu count)``.
        val_fraction, test_fraction: share of speakers (or clips, when there are no speakers) in the
            validation and test filelists.
        seed: seed of the deterministic split shuffle.
        extensions: file name endings treated as videos (case-insensitive).
        chunk_size: frames decoded / detected at a time (bounds memory).
    """

    size: int = 128
    fps: float = 25.0
    crop: str = "detector"
    detector: str = "dlib"
    detector_weights: str | None = None
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    smooth: str = "mean5"
    min_face_fraction: float = 0.9
    min_frames: int = 10
    workers: int = field(default_factory=_default_workers)
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    chunk_size: int = 32

    def __post_init__(self) -> None:
        self.pads = tuple(int(p) for p in self.pads)  # type: ignore[assignment]
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in self.extensions)
        problems = []
        if self.size < 8:
            problems.append(f"size must be >= 8, got {self.size}")
        if not self.fps > 0:
            problems.append(f"fps must be positive, got {self.fps}")
        if self.crop not in CROP_MODES:
            problems.append(f"unknown crop '{self.crop}' (choose {' or '.join(CROP_MODES)})")
        if len(self.pads) != 4:
            problems.append(f"pads needs 4 numbers (top, bottom, left, right), got {list(self.pads)}")
        if self.smooth not in ("mean5", "none"):
            problems.append(f"unknown smoothing '{self.smooth}' (choose mean5 or none)")
        if not 0.0 <= self.min_face_fraction <= 1.0:
            problems.append(f"min_face_fraction must be in [0, 1], got {self.min_face_fraction}")
        if self.min_frames < 1:
            problems.append(f"min_frames must be >= 1, got {self.min_frames}")
        if self.workers < 1:
            problems.append(f"workers must be >= 1, got {self.workers}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            problems.append("val_fraction and test_fraction must be in [0, 1)")
        elif self.val_fraction + self.test_fraction >= 1:
            problems.append("val_fraction + test_fraction must be < 1 (nothing left to train on)")
        if self.chunk_size < 1:
            problems.append(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not self.extensions:
            problems.append("extensions is empty")
        if problems:
            raise Diff2LipError("invalid preprocess settings: " + "; ".join(problems))


@dataclass(frozen=True)
class ClipFailure:
    """A video that could not be prepared: its path relative to ``RAW_DIR``, clip id and the reason."""

    source: str
    clip_id: str
    reason: str


@dataclass
class PreprocessSummary:
    """What one :func:`preprocess_dataset` run did.

    Attributes:
        data_dir: the prepared-data directory.
        prepared: ids of the clips prepared by this run.
        done: ids of the clips skipped because an earlier run had finished them.
        failed: the videos that failed (also in ``DATA_DIR/preprocess_errors.log``).
        num_clips: clips in the rebuilt manifest (all finished clips, from any run).
        splits: number of clips per filelist (``train``/``val``/``test``).
    """

    data_dir: Path
    prepared: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[ClipFailure] = field(default_factory=list)
    num_clips: int = 0
    splits: dict[str, int] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.data_dir / ERRORS_LOG

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        tail = f", {len(self.failed)} failed: see {self.log_path}" if self.failed else ", 0 failed"
        return f"prepared {len(self.prepared)} clips ({len(self.done)} skipped as done{tail})"


# --------------------------------------------------------------------------------------------- discovery


def find_videos(raw_dir: str | Path, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files under ``raw_dir`` (recursive), sorted by relative path; hidden files/folders are ignored."""
    root = Path(raw_dir)
    exts = {e.lower() for e in extensions}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in exts:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _speaker_of(rel: Path) -> str:
    """The first path component of a nested video (``spk1/a.mp4`` → ``spk1``), else ``""``."""
    return rel.parts[0] if len(rel.parts) > 1 else ""


# --------------------------------------------------------------------------------------------- frames


def _outputs_before(t: float, fps: float) -> int:
    """How many output frames ``k ≥ 0`` have ``k / fps`` strictly before ``t`` (up to the tolerance)."""
    return max(0, math.ceil((t - _TIME_TOLERANCE) * fps))


def iter_resampled(
    path: str | Path, fps: float = 25.0, chunk_size: int = 32
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream a video resampled to ``fps``: output frame ``k`` is the source frame shown at ``k / fps``.

    "Shown at" means the last source frame whose timestamp is ≤ ``k / fps`` (nearest previous frame), so a
    faster source drops frames and a slower one repeats them; timestamps come from the stream, so variable
    frame rate is handled. The video ends one nominal frame interval after its last frame's timestamp.

    Yields ``(frames, counts)``: ``frames`` ``(M, H, W, 3)`` uint8 are the *distinct* source frames that
    appear in the output, in order, and ``counts`` ``(M,)`` int64 (each ≥ 1) how many consecutive output
    frames show each of them (``np.repeat(frames, counts, axis=0)`` is the resampled video). Memory is
    bounded by ``chunk_size`` source frames.
    """
    from diff2lip.video.io import VideoReader

    reader = VideoReader(path, chunk_size=chunk_size)
    nominal_dt = 1.0 / reader.fps if reader.fps > 0 else None
    emitted = 0
    prev_frame: np.ndarray | None = None
    prev_t = 0.0
    last_dt = nominal_dt or 1.0 / fps
    frames: list[np.ndarray] = []
    counts: list[int] = []

    def take(frame: np.ndarray, until: float) -> None:
        nonlocal emitted
        n = _outputs_before(until, fps) - emitted
        if n > 0:
            frames.append(frame)
            counts.append(n)
            emitted += n

    for chunk in reader:
        for frame, t in zip(chunk.frames, chunk.times):
            t = float(t)
            if prev_frame is not None:
                take(prev_frame, t)
                if t > prev_t:
                    last_dt = t - prev_t
            prev_frame, prev_t = frame, t
            if len(frames) >= chunk_size:
                yield np.stack(frames), np.asarray(counts, dtype=np.int64)  # (M, H, W, 3), (M,)
                frames, counts = [], []
    if prev_frame is not None:
        take(prev_frame, prev_t + (nominal_dt or last_dt))
    if frames:
        yield np.stack(frames), np.asarray(counts, dtype=np.int64)  # (M, H, W, 3), (M,)


def voxceleb2_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The official fixed VoxCeleb2 face box ``(x1, y1, x2, y2)`` (``my_voxceleb2_crop`` in ``generate.py``).

    Rows ``[0, H - int(H·2.36/8))`` and columns ``[int(W·1.8/8), W - int(W·1.8/8))``: VoxCeleb2 videos are
    already face-centred, so the official evaluation crops this fixed region instead of detecting.
    """
    dx = int(width * 1.8 / 8)
    return dx, 0, width - dx, height - int(height * 2.36 / 8)


# --------------------------------------------------------------------------------------------- one clip


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _save_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """Write mono int16 samples as a PCM-16 wav (temp name, then rename)."""
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def _one_line(e: BaseException, src: Path) -> str:
    text = " ".join(str(e).split())
    prefix = f"{src}: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    if not isinstance(e, Diff2LipError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text


def _remove_unfinished(data_dir: Path, clip_id: str) -> None:
    d = layout.clip_dir(data_dir, clip_id)
    if d.exists() and not layout.is_done(data_dir, clip_id):
        shutil.rmtree(d)


def _build_detector(cfg: PreprocessConfig) -> Any:
    """The face detector for ``cfg`` (``None`` for the fixed VoxCeleb2 crop)."""
    if cfg.crop != "detector":
        return None
    from diff2lip.video.face import create_detector

    if cfg.detector in ("dlib", "dlib-cnn"):
        return create_detector(cfg.detector, landmarks=False)
    if cfg.detector_weights is not None:
        return create_detector(cfg.detector, weights_path=cfg.detector_weights)
    return create_detector(cfg.detector)


def _face_boxes(
    src: Path, cfg: PreprocessConfig, detector: Any, frame_size: tuple[int, int]
) -> tuple[int, np.ndarray, dict[str, Any]]:
    """Pass 1: the number of output frames, their int boxes ``(N, 4)`` and per-clip facts for meta.json."""
    height, width = frame_size
    if detector is None:  # fixed crop: only count the output frames
        n = sum(int(c.sum()) for _, c in iter_resampled(src, cfg.fps, cfg.chunk_size))
        _check_length(n, cfg, src)
        boxes = np.tile(np.array(voxceleb2_box(height, width), dtype=np.int64), (n, 1))  # (N, 4)
        return n, boxes, {"filled_frames": []}

    from diff2lip.video.track import fill_missing_boxes, track_faces

    detections: list[Any] = []
    for frames, counts in iter_resampled(src, cfg.fps, cfg.chunk_size):
        for faces, count in zip(detector.detect(frames), counts):
            detections.extend([faces] * int(count))
    n = len(detections)
    _check_length(n, cfg, src)
    track = track_faces(detections, frame_size, pads=cfg.pads, smooth=cfg.smooth)  # type: ignore[arg-type]
    has_face = track.has_face
    fraction = float(has_face.mean())
    if fraction < cfg.min_face_fraction:
        raise Diff2LipError(
            f"no face: a face in {int(has_face.sum())} of {n} frames ({fraction:.0%}, need "
            f"{cfg.min_face_fraction:.0%}); {track.summary()}",
            src,
        )
    boxes = fill_missing_boxes(track.int_boxes(), has_face)
    filled = [int(i) for i in np.flatnonzero(~has_face)]
    return n, boxes, {"filled_frames": filled, "face_track": track.summary()}


def _check_length(n: int, cfg: PreprocessConfig, src: Path) -> None:
    if n < cfg.min_frames:
        raise Diff2LipError(f"too short: {n} frames at {cfg.fps:g} fps (need at least {cfg.min_frames})", src)


def _write_faces(path: Path, src: Path, cfg: PreprocessConfig, boxes: np.ndarray) -> None:
    """Pass 2: decode again and write the crops straight into a memory-mapped ``faces.npy``."""
    from diff2lip.video.crop import crop_faces

    n = len(boxes)
    tmp = path.with_name(f".{path.name}.tmp")
    faces = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, cfg.size, cfg.size, 3))
    k = 0
    try:
        for frames, counts in iter_resampled(src, cfg.fps, cfg.chunk_size):
            idx = np.repeat(np.arange(len(frames)), counts)  # (m,) source frame of each output frame
            m = min(len(idx), n - k)
            faces[k : k + m] = crop_faces(frames[idx[:m]], boxes[k : k + m], cfg.size)  # (m, S, S, 3)
            k += len(idx)
        faces.flush()
    finally:
        del faces
    if k != n:
        tmp.unlink(missing_ok=True)
        raise Diff2LipError(f"decoded {k} frames on the second pass but {n} on the first", src)
    os.replace(tmp, path)


def _prepare_clip(
    src: Path, rel: Path, clip_id: str, data_dir: Path, cfg: PreprocessConfig, detector: Any
) -> int:
    """Prepare one clip (raises on any per-clip problem); returns its number of frames."""
    from diff2lip.audio import load_audio, melspectrogram
    from diff2lip.video.io import probe

    info = probe(src)
    if info.is_image:
        raise Diff2LipError("is a still image, not a video", src)
    if not info.has_audio:
        raise Diff2LipError("has no audio stream", src)
    wav = load_audio(src, AUDIO_RATE)
    pcm = np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)
    # features of exactly what audio.wav holds (load_audio of a PCM-16 wav gives pcm / 32768)
    mel = melspectrogram(pcm.astype(np.float32) / 32768.0).astype(np.float32)  # (80, T)

    frame_size = (info.height, info.width)
    n, boxes, facts = _face_boxes(src, cfg, detector, frame_size)

    out = layout.clip_dir(data_dir, clip_id)
    out.mkdir(parents=True, exist_ok=True)
    _write_faces(out / layout.FACES, src, cfg, boxes)
    _save_wav(out / layout.AUDIO, pcm, AUDIO_RATE)
    _save_npy(out / layout.MEL, mel)
    record = layout.ClipRecord(
        id=clip_id,
        num_frames=n,
        fps=float(cfg.fps),
        size=cfg.size,
        source=rel.as_posix(),
        speaker=_speaker_of(rel),
        duration=n / cfg.fps,
    )
    layout.write_meta(
        data_dir,
        record,
        boxes=boxes.tolist(),
        frame_size=[info.height, info.width],
        crop=cfg.crop,
        detector=cfg.detector if cfg.crop == "detector" else None,
        pads=list(cfg.pads) if cfg.crop == "detector" else None,
        smooth=cfg.smooth if cfg.crop == "detector" else None,
        source_fps=info.fps,
        audio_duration=len(pcm) / AUDIO_RATE,
        mel_frames=int(mel.shape[1]),
        **facts,
    )
    return n


@dataclass(frozen=True)
class _Job:
    src: Path
    rel: Path
    clip_id: str


@dataclass(frozen=True)
class _Result:
    job: _Job
    num_frames: int = 0
    reason: str | None = None


def _run_job(job: _Job, data_dir: Path, cfg: PreprocessConfig, detector: Any) -> _Result:
    """Prepare one clip; a per-clip failure is returned (never raised) and its partial output removed."""
    _remove_unfinished(data_dir, job.clip_id)
    try:
        n = _prepare_clip(job.src, job.rel, job.clip_id, data_dir, cfg, detector)
    except _CLIP_ERRORS as e:
        _remove_unfinished(data_dir, job.clip_id)
        return _Result(job, reason=_one_line(e, job.src))
    except BaseException:
        _remove_unfinished(data_dir, job.clip_id)
        raise
    return _Result(job, num_frames=n)


# Per-process state of a pool worker (set once by the initializer in each spawned process).
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: PreprocessConfig, data_dir: Path) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; crops are small
    _WORKER.update(cfg=cfg, data_dir=data_dir, detector=_build_detector(cfg))


def _worker_job(job: _Job) -> _Result:
    return _run_job(job, _WORKER["data_dir"], _WORKER["cfg"], _WORKER["detector"])


# --------------------------------------------------------------------------------------------- the run


def split_by_speaker(
    records: Sequence[layout.ClipRecord], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Train/val/test clip ids: whole speakers go to one split (clips without a speaker count alone).

    Uses :func:`~diff2lip.data.layout.split_ids` on the speaker groups, so the split is deterministic for a
    given seed and stable when a resumed run adds clips of known speakers.
    """
    groups: dict[str, list[str]] = {}
    for r in records:
        key = f"speaker:{r.speaker}" if r.speaker else f"clip:{r.id}"
        groups.setdefault(key, []).append(r.id)
    by_group = layout.split_ids(list(groups), val_fraction, test_fraction, seed)
    return {name: sorted(i for g in keys for i in groups[g]) for name, keys in by_group.items()}


def _append_log(log: Path, failure: ClipFailure) -> None:
    if not log.exists():
        log.write_text(f"# diff2lip preprocess {time.strftime('%Y-%m-%d %H:%M:%S')}: clips that failed\n")
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"{failure.source}\t{failure.reason}\n")


def preprocess_dataset(
    raw_dir: str | Path,
    data_dir: str | Path,
    cfg: PreprocessConfig | None = None,
    *,
    progress: bool = True,
) -> PreprocessSummary:
    """Prepare every video under ``raw_dir`` into ``data_dir`` (the :mod:`~diff2lip.data.layout` layout).

    Finished clips (``meta.json`` present) are skipped; a clip that fails is logged to
    ``data_dir/preprocess_errors.log`` (one ``SOURCE<TAB>REASON`` line each; rewritten every run) and
    skipped. Then ``manifest.jsonl`` and the filelists are rebuilt from all finished clips.

    Raises:
        Diff2LipError: ``raw_dir`` is missing or holds no videos, ``data_dir`` is not a directory, or the
            face detector cannot be built.
    """
    cfg = cfg or PreprocessConfig()
    raw = Path(raw_dir)
    data = Path(data_dir)
    if not raw.is_dir():
        raise Diff2LipError(
            "raw video directory does not exist" if not raw.exists() else "not a directory", raw
        )
    sources = find_videos(raw, cfg.extensions)
    if not sources:
        raise Diff2LipError(f"contains no videos ({' '.join(cfg.extensions)})", raw)
    if data.exists() and not data.is_dir():
        raise Diff2LipError("is not a directory", data)
    data.mkdir(parents=True, exist_ok=True)
    log = data / ERRORS_LOG
    log.unlink(missing_ok=True)

    summary = PreprocessSummary(data_dir=data)
    pending: list[_Job] = []
    owner: dict[str, Path] = {}

    def fail(failure: ClipFailure) -> None:
        summary.failed.append(failure)
        _append_log(log, failure)
        logger.warning("skipped %s: %s", failure.source, failure.reason)

    for src in sources:
        rel = src.relative_to(raw)
        clip_id = layout.clip_id_from_path(rel)
        if clip_id in owner:
            fail(
                ClipFailure(rel.as_posix(), clip_id, f"clip id '{clip_id}' already used by {owner[clip_id]}")
            )
            continue
        owner[clip_id] = rel
        if layout.is_done(data, clip_id):
            summary.done.append(clip_id)
        else:
            pending.append(_Job(src, rel, clip_id))

    if pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="preprocess", unit="clip", disable=not progress)
        try:
            for result in _execute(pending, data, cfg):
                bar.update(1)
                if result.reason is None:
                    summary.prepared.append(result.job.clip_id)
                else:
                    fail(ClipFailure(result.job.rel.as_posix(), result.job.clip_id, result.reason))
        finally:
            bar.close()

    records = layout.rebuild_manifest(data)
    splits = split_by_speaker(records, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    layout.write_filelists(data, splits)
    summary.prepared.sort()
    summary.done.sort()
    summary.failed.sort(key=lambda f: f.source)
    summary.num_clips = len(records)
    summary.splits = {k: len(v) for k, v in splits.items()}
    return summary


def _execute(jobs: list[_Job], data: Path, cfg: PreprocessConfig) -> Iterator[_Result]:
    """Run the jobs in this process or in a spawn process pool; yields results as clips finish."""
    detector = _build_detector(cfg)  # also validates the detector settings before any worker starts
    workers = min(cfg.workers, len(jobs))
    if workers <= 1:
        for job in jobs:
            yield _run_job(job, data, cfg, detector)
        return
    del detector
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, data)) as pool:
        futures = [pool.submit(_worker_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
