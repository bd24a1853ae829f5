"""``diff2lip evaluate``: a filelist → generated videos → the paper's Table 2 (DESIGN.md §5, issue 6).

Protocol:

* **Filelist** (the paper's format): each line ``AUDIO_SRC VIDEO_SRC``, names relative to ``video_root``
  without ``.mp4``; the audio is taken from ``AUDIO_SRC.mp4`` (or ``AUDIO_SRC.wav`` when present). In
  ``reconstruction`` mode both are equal: the clip is re-generated from its first frame (input and
  reference) and its own audio; in ``cross`` mode each frame is its own reference and the audio comes
  from another clip.
* **Generation** (skipped with ``generated_dir``): ``generate_video`` with one loaded pipeline; outputs
  that already exist are reused, so an interrupted run resumes.
* **Crops**: every frame of the generated and the ground-truth video is cropped with the *same* face-track
  box to the ``crop_size`` square (uint8 RGB, see :mod:`diff2lip.evaluation.metrics`).
* **Metrics**: FID over all crops of all videos (generated vs ground truth); per frame SSIM, PSNR, LMD
  (reconstruction only: in cross mode there is no pixel ground truth); per video Sync_c/Sync_d/offset
  with syncnet_python's SyncNet (``syncnet_weights``) or else the project's expert (``syncnet_dir``).
* **Anchor row** "ground truth": the same metrics on the real videos (FID 0, SSIM 1, PSNR inf, LMD 0 by
  definition; Sync on the real video with its own audio).

Outputs in ``out_dir``: ``report.json``, ``per_video.csv``, ``table.md`` (numbers identical to the JSON).
Videos are decoded whole: evaluation clips are short (a few seconds).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diff2lip.errors import Diff2LipError
from diff2lip.evaluation import metrics as M
from diff2lip.fileio import is_inside

__all__ = ["ALL_METRICS", "EvalSettings", "evaluate", "read_pairs", "table_markdown"]

ALL_METRICS = ("fid", "ssim", "psnr", "lmd", "sync")
PIXEL_METRICS = ("ssim", "psnr", "lmd")
COLUMNS = [("fid", "FID↓"), ("ssim", "SSIM↑"), ("psnr", "PSNR↑"), ("lmd", "LMD↓"), ("sync_c", "Sync_c↑"),
           ("sync_d", "Sync_d↓")]  # fmt: skip
DIGITS = 4


@dataclass
class EvalSettings:
    """Everything that defines an evaluation run (saved in the report)."""

    mode: str = "reconstruction"
    metrics: tuple[str, ...] = ALL_METRICS
    crop_size: int = 128
    face_tracks: str | None = None  # template with {name}, e.g. "data/clips/{name}/track.json"
    detector: str = "dlib"
    fid_weights: str | None = None
    syncnet_weights: str | None = None
    syncnet_dir: str | None = None
    vshift: int = 15
    sampler: str | None = None
    steps: int | None = None
    device: str = "auto"
    checkpoint: str | None = None
    generated_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("reconstruction", "cross"):
            raise Diff2LipError(f"--mode must be reconstruction or cross, got {self.mode!r}")
        unknown = sorted(set(self.metrics) - set(ALL_METRICS))
        if unknown:
            raise Diff2LipError(f"unknown metrics {unknown}; choose from {', '.join(ALL_METRICS)}")
        self.metrics = tuple(m for m in ALL_METRICS if m in self.metrics)


def read_pairs(filelist: str | Path, mode: str) -> list[tuple[str, str]]:
    """``(audio_src, video_src)`` pairs of a paper-format filelist (a single name means ``NAME NAME``)."""
    path = Path(filelist)
    if not path.is_file():
        raise Diff2LipError("filelist not found", path)
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        if len(parts) > 2:
            raise Diff2LipError(f"line {n}: expected 'AUDIO_SRC VIDEO_SRC', got {line.strip()!r}", path)
        audio, video = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if mode == "reconstruction" and audio != video:
            raise Diff2LipError(f"line {n}: reconstruction needs AUDIO_SRC == VIDEO_SRC", path)
        pairs.append((audio.removesuffix(".mp4"), video.removesuffix(".mp4")))
    if not pairs:
        raise Diff2LipError("filelist is empty", path)
    return pairs


def output_name(audio: str, video: str) -> str:
    """File name of the generated video for a pair (``/`` → ``__``)."""
    return f"{video.replace('/', '__')}__{audio.replace('/', '__')}.mp4"


def _rounded(x: float | None) -> float | str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return round(float(x), DIGITS)


def _fmt(v: Any) -> str:
    return "–" if v is None else str(v)


def table_markdown(report: dict[str, Any]) -> str:
    """The paper's Table 2 layout: one row per method + the ground-truth anchor, then the settings."""
    s = report["settings"]
    cols = [(k, h) for k, h in COLUMNS if any(k in row for row in report["rows"].values())]
    lines = [f"### {s['mode'].capitalize()} ({report['num_videos']} videos)", ""]
    lines.append("| Method | " + " | ".join(h for _, h in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for name, row in report["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(k)) for k, _ in cols) + " |")
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in report["settings_summary"].items()), ""]
    return "\n".join(lines)


class _Evaluator:
    """Holds the evaluator networks (loaded once) and accumulates per-video results."""

    def __init__(self, settings: EvalSettings):
        from diff2lip.inference.pipeline import resolve_device

        self.s = settings
        self.device = resolve_device(settings.device)
        self.inception = None
        self.syncnet_py = None
        self.syncnet_own = None
        self.scorer = None
        self.landmarks = None
        if "fid" in settings.metrics:
            from diff2lip.evaluation.inception import load_fid_inception

            self.inception = load_fid_inception(settings.fid_weights, device=self.device)
        if "sync" in settings.metrics:
            if settings.syncnet_weights:
                from diff2lip.evaluation.syncnet_eval import load_syncnet_python

                self.syncnet_py = load_syncnet_python(settings.syncnet_weights, device=self.device)
                self.scorer = "syncnet_python"
            elif settings.syncnet_dir:
                from diff2lip.models.syncnet import load_syncnet

                self.syncnet_own = load_syncnet(settings.syncnet_dir, device=self.device)
                self.scorer = "diff2lip-syncnet"
            else:
                raise Diff2LipError(
                    "the sync metric needs --syncnet-weights (syncnet_python's syncnet_v2.model) or "
                    "--syncnet-dir (a SyncNet trained with diff2lip train-syncnet); or drop it from --metrics"
                )
        if settings.mode == "reconstruction" and "lmd" in settings.metrics:
            from diff2lip.video.face import DlibDetector

            self.landmarks = DlibDetector(landmarks=True, expand=(0.0, 0.0, 0.0, 0.0), downscale_to=None)
        self.gen_feats: list[np.ndarray] = []
        self.gt_feats: list[np.ndarray] = []

    def _mouth_marks(self, crops: np.ndarray) -> np.ndarray:
        out = np.full((len(crops), 68, 2), np.nan)
        assert self.landmarks is not None
        for i, faces in enumerate(self.landmarks.detect(crops)):
            if faces and faces[0].landmarks is not None:
                out[i] = faces[0].landmarks
        return out

    def _sync(self, frames: np.ndarray, boxes: np.ndarray, audio_path: Path) -> dict[str, Any]:
        from diff2lip.audio import load_audio, melspectrogram
        from diff2lip.evaluation.syncnet_eval import (
            score_with_project_syncnet,
            score_with_syncnet_python,
            syncnet_crops,
        )
        from diff2lip.video.crop import crop_faces

        wav = load_audio(audio_path, 16000)
        if self.syncnet_py is not None:
            crops = syncnet_crops(frames, boxes)
            score = score_with_syncnet_python(self.syncnet_py, crops, wav, vshift=self.s.vshift)
        else:
            crops = crop_faces(frames, boxes, self.syncnet_own.config.image_size)
            score = score_with_project_syncnet(
                self.syncnet_own, crops, melspectrogram(wav), vshift=self.s.vshift
            )
        return score.to_dict()

    def video(
        self, gen: Path, gt: Path, audio: Path, gt_audio: Path, track_path: Path | None
    ) -> dict[str, Any]:
        from diff2lip.video.crop import crop_faces
        from diff2lip.video.io import read_all
        from diff2lip.video.track import fill_missing_boxes

        gen_frames, gt_frames = read_all(gen).frames, read_all(gt).frames
        boxes = self._boxes(gt, track_path, len(gt_frames))
        n = min(len(gen_frames), len(gt_frames))
        has = boxes[:, 0] >= 0
        keep = np.flatnonzero(has[:n])
        if len(keep) == 0:
            raise Diff2LipError("no face in any frame", gt)
        if gen_frames.shape[1:] != gt_frames.shape[1:]:
            raise Diff2LipError(
                f"generated frames are {gen_frames.shape[1:3]}, ground truth {gt_frames.shape[1:3]}", gen
            )
        size = self.s.crop_size
        gen_crops = crop_faces(gen_frames[keep], boxes[keep], size)  # (F, S, S, 3)
        gt_crops = crop_faces(gt_frames[keep], boxes[keep], size)
        row: dict[str, Any] = {"frames": int(n), "frames_with_face": len(keep)}
        if self.inception is not None:
            from diff2lip.evaluation.inception import inception_features

            self.gen_feats.append(inception_features(self.inception, gen_crops))
            self.gt_feats.append(inception_features(self.inception, gt_crops))
        if self.s.mode == "reconstruction":
            if "psnr" in self.s.metrics:
                row["psnr"] = M.finite_mean(M.psnr(gen_crops, gt_crops))
            if "ssim" in self.s.metrics:
                row["ssim"] = M.finite_mean(M.ssim(gen_crops, gt_crops))
            if self.landmarks is not None:
                lmd = M.mouth_landmark_distance(self._mouth_marks(gen_crops), self._mouth_marks(gt_crops))
                row["lmd"] = M.finite_mean(lmd)
                row["lmd_frames"] = int(np.count_nonzero(~np.isnan(lmd)))
        if "sync" in self.s.metrics:
            filled = fill_missing_boxes(boxes)  # no-face frames: the nearest face's box
            g = self._sync(gen_frames[:n], filled[:n], audio)
            r = self._sync(gt_frames, filled, gt_audio)
            row.update(sync_c=g["sync_c"], sync_d=g["sync_d"], offset=g["offset"])
            row.update(gt_sync_c=r["sync_c"], gt_sync_d=r["sync_d"], gt_offset=r["offset"])
        return row

    def _boxes(self, video: Path, track_path: Path | None, num_frames: int) -> np.ndarray:
        from diff2lip.inference.runner import GenerateOptions, get_face_track
        from diff2lip.video.io import VideoReader

        opts = GenerateOptions(
            detector=self.s.detector, face_track=None if track_path is None else str(track_path)
        )
        track = get_face_track(video, VideoReader(video), opts, None)
        boxes = track.int_boxes()
        if len(boxes) != num_frames:
            raise Diff2LipError(f"face track has {len(boxes)} frames, the video {num_frames}", video)
        return boxes

    def fid(self) -> float | None:
        if self.inception is None:
            return None
        gen, gt = np.concatenate(self.gen_feats), np.concatenate(self.gt_feats)
        return M.frechet_distance(*M.feature_statistics(gen), *M.feature_statistics(gt))


def _source(root: Path, name: str) -> Path:
    for ext in (".mp4", ".wav"):
        p = root / f"{name}{ext}"
        if p.is_file():
            return p
    raise Diff2LipError(f"no {name}.mp4 under the video root", root)


def face_track_path(template: str | None, name: str) -> Path | None:
    """``template`` (with ``{name}``) filled with a filelist name; the result must stay inside the folder
    the template names before ``{name}`` (a name such as ``../../x`` cannot write elsewhere)."""
    if template is None:
        return None
    head = template[: template.index("{name}")] if "{name}" in template else template
    base = Path(head) if head.endswith(("/", "\\")) or head == "" else Path(head).parent
    path = Path(template.format(name=name))
    if not is_inside(path, base):
        raise Diff2LipError(f"--face-tracks: the name '{name}' leads outside {base or '.'}", path)
    return path


def evaluate(
    filelist: str | Path,
    video_root: str | Path,
    out_dir: str | Path,
    settings: EvalSettings,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the evaluation; writes ``report.json``, ``per_video.csv`` and ``table.md`` in ``out_dir``."""
    from tqdm import tqdm

    from diff2lip.fileio import write_text_atomic

    pairs = read_pairs(filelist, settings.mode)
    root, out = Path(video_root), Path(out_dir)
    if settings.generated_dir is None and settings.checkpoint is None:
        raise Diff2LipError("pass a checkpoint to generate with, or --generated DIR of finished videos")
    # every input is checked before anything is created: a one-line error leaves no empty output folder
    sources = [(_source(root, v), _source(root, a)) for a, v in pairs]
    tracks = [face_track_path(settings.face_tracks, v) for _, v in pairs]
    out.mkdir(parents=True, exist_ok=True)
    gen_dir = Path(settings.generated_dir) if settings.generated_dir else out / "generated"
    evaluator = _Evaluator(settings)
    pipeline = None
    per_video = []
    jobs = zip(pairs, sources, tracks, strict=True)
    for (audio_name, video_name), (video, audio), track in tqdm(
        jobs, total=len(pairs), desc="evaluate", unit="video", disable=not progress
    ):
        if track is None:
            (out / "tracks").mkdir(exist_ok=True)
            track = out / "tracks" / f"{video_name.replace('/', '__')}.json"
        gen = gen_dir / output_name(audio_name, video_name)
        if not gen.is_file():
            if settings.generated_dir is not None:
                raise Diff2LipError("generated video missing", gen)
            pipeline = pipeline or _load_pipeline(settings)
            _generate(pipeline, video, audio, gen, track, settings)
        row = evaluator.video(gen, video, audio, video, track)
        per_video.append({"audio": audio_name, "video": video_name, **row})
    report = _report(settings, per_video, evaluator, evaluator.fid())
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "per_video.csv", _csv(per_video))
    write_text_atomic(out / "table.md", table_markdown(report))
    return report


def _load_pipeline(settings: EvalSettings) -> Any:
    from diff2lip.inference.pipeline import Diff2LipPipeline

    return Diff2LipPipeline.from_pretrained(settings.checkpoint, device=settings.device)


def _generate(pipeline: Any, video: Path, audio: Path, out: Path, track: Path, s: EvalSettings) -> None:
    from diff2lip.inference.runner import GenerateOptions, generate_video

    out.parent.mkdir(parents=True, exist_ok=True)
    opts = GenerateOptions(
        detector=s.detector,
        face_track=str(track),
        reconstruction=s.mode == "reconstruction",
        reference="first" if s.mode == "reconstruction" else "self",
        sampler=s.sampler,
        steps=s.steps,
        length="video",
    )
    generate_video(video, audio, out, pipeline, opts)


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [
        r[key]
        for r in rows
        if r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key]))
    ]
    return float(np.mean(vals)) if vals else None


def _report(
    settings: EvalSettings, rows: list[dict[str, Any]], ev: _Evaluator, fid: float | None
) -> dict[str, Any]:
    method: dict[str, Any] = {}
    anchor: dict[str, Any] = {}
    if fid is not None:
        method["fid"], anchor["fid"] = _rounded(fid), 0.0
    if settings.mode == "reconstruction":
        for key, ideal in (("ssim", 1.0), ("psnr", math.inf), ("lmd", 0.0)):
            if key in settings.metrics:
                method[key], anchor[key] = _rounded(_mean(rows, key)), _rounded(ideal)
    if "sync" in settings.metrics:
        for key in ("sync_c", "sync_d"):
            method[key], anchor[key] = _rounded(_mean(rows, key)), _rounded(_mean(rows, f"gt_{key}"))
    name = Path(settings.checkpoint).name if settings.checkpoint else "generated"
    summary = {
        "mode": settings.mode,
        "sampler": settings.sampler or "model default",
        "steps": settings.steps or "model default",
        "crop": f"{settings.crop_size}px face crop, uint8",
        "scorer": ev.scorer or "none",
        "sync_search": f"±{settings.vshift} frames",
    }
    return {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "settings_summary": summary,
        "num_videos": len(rows),
        "rows": {f"Diff2Lip ({name})": method, "ground truth": anchor},
        "per_video": [{k: (_rounded(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }


def _csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()})
    return buf.getvalue()
