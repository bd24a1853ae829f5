"""The options of one lip-sync job, defined once for ``generate`` and ``batch`` (and the server).

:func:`add_job_options` adds the flags; :func:`options_from_args` maps them onto
:class:`~diff2lip.inference.runner.GenerateOptions`. Wav2Lip's spellings (``--resize_factor``,
``--wav2lip_batch_size``, ``--face_det_batch_size``, ``--static``, ``--box -1 -1 -1 -1``) are accepted as
aliases, because that is what most users have typed before. Every help text states the real default.
"""

from __future__ import annotations

import argparse
from typing import Any

from diff2lip.video.face import SAME_PERSON


def _crf(value: str) -> float | None:
    """``--crf``: a number, or ``auto`` (None)."""
    if value == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got '{value}'") from None


FACE_CHOICES = ("largest", "central", "score", "track")


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` (alias ``--no-progress``): the one progress switch of every command."""
    p.add_argument(
        "-q", "--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bars"
    )


def add_model_options(p: argparse.ArgumentParser, *, checkpoint: bool = True) -> None:
    from diff2lip.models.named import names_help

    if checkpoint:
        p.add_argument(
            "--checkpoint",
            "--checkpoint_path",
            dest="checkpoint",
            default=None,
            metavar="MODEL",
            help=f"model directory (config.json + model.safetensors), the official .pt file, or {names_help()}. "
            "Required",
        )
    p.add_argument(
        "--device", default="auto", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"
    )
    p.add_argument(
        "--dtype",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="compute precision (default fp32; fp16/bf16 on a GPU; bf16 on a CPU only with avx512_bf16/AMX)",
    )


def add_job_options(p: argparse.ArgumentParser, *, batch: bool = False) -> None:
    """Every per-job flag (``batch``: leave out those tied to one input file: --face-track, --audio-for)."""
    p.add_argument(
        "--preset",
        choices=["default", "paper"],
        default="default",
        help="'paper' reproduces the official inference's frames: integer boxes with 5-frame mean, seed-7 "
        "shared noise, DDIM-25, 128px crops; crop and paste-back of the whole box with OpenCV's bilinear "
        "resize (no antialias) and uint8 truncation; audio resampled with resampy's kaiser_best; output cut "
        "to the frames with a complete 0.2 s mel window; no shot-cut handling (needs: pip install "
        "'diff2lip[paper]'). The default (default) resizes with antialiasing and feathers only the lower "
        "face, leaving the rest untouched",
    )
    g = p.add_argument_group("faces")
    g.add_argument("--detector", default=None, help="dlib (default), dlib-cnn or s3fd")
    g.add_argument(
        "--s3fd-weights",
        default=None,
        help="path to the published s3fd.pth (implies --detector s3fd; default none)",
    )
    g.add_argument(
        "--pads",
        nargs=4,
        type=int,
        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
        default=None,
        help="extra pixels around each detected face box (default 0 0 0 0; dlib boxes are already grown to "
        "S3FD-like framing)",
    )
    g.add_argument(
        "--box",
        nargs=4,
        type=float,
        metavar=("X1", "Y1", "X2", "Y2"),
        default=None,
        help="fixed face box in pixels, skipping detection (default: detect; Wav2Lip's -1 -1 -1 -1 also means detect)",
    )
    g.add_argument(
        "--nosmooth", action="store_true", help="do not average boxes over 5 frames (default: average)"
    )
    g.add_argument(
        "--face-select",
        choices=FACE_CHOICES,
        default=None,
        help="which person when several faces are found: the largest (default), the most central, or "
        "'track' (the first seen) is picked once and then followed — frames where that person is missed "
        "pass through, never another face; 'score' takes the highest-scoring face in every frame (the "
        "official code)",
    )
    g.add_argument(
        "--face-id",
        type=int,
        default=None,
        metavar="K",
        help="lip-sync only person K as `diff2lip faces VIDEO` numbers them (default: the automatic choice)",
    )
    if not batch:
        g.add_argument(
            "--audio-for",
            action="append",
            default=None,
            metavar="K=SPEECH",
            help="lip-sync person K to the speech file SPEECH (repeatable: several speakers in one pass). "
            "The positional AUDIO stays the output's sound track and drives only the --face-id person, if "
            "any (default: none)",
        )
    g.add_argument(
        "--same-person",
        type=float,
        default=SAME_PERSON,
        metavar="DIST",
        help="with --face-id: face-descriptor distance under which two tracklets (before and after a cut or "
        f"a long gap) are one person; 0 turns it off. Use the value given to `diff2lip faces` (default {SAME_PERSON})",
    )
    g.add_argument(
        "--no-shots",
        action="store_true",
        help="do not detect shot cuts (default: each shot is tracked on its own; nothing crosses a cut)",
    )
    g.add_argument(
        "--min-face",
        type=float,
        default=0.0,
        metavar="PX",
        help="ignore faces narrower than PX pixels: their frames pass through untouched (default 0: none)",
    )
    g.add_argument(
        "--max-yaw",
        type=float,
        default=None,
        metavar="DEG",
        help="ignore faces turned further than DEG degrees (estimated from the 68 landmarks): their frames "
        "pass through untouched and are counted (default: no limit)",
    )
    if not batch:
        g.add_argument(
            "--face-track",
            default=None,
            help="face-track JSON: loaded if it exists (skips detection), else written after detection "
            "(default: none)",
        )
    g.add_argument(
        "--resize-factor",
        "--resize_factor",
        dest="resize_factor",
        type=int,
        default=1,
        help="detect faces on frames shrunk by this integer factor (faster on HD video); the output keeps "
        "the source size (default 1)",
    )
    g.add_argument(
        "--face_det_batch_size",
        dest="chunk_size",
        type=int,
        default=argparse.SUPPRESS,
        help="Wav2Lip's spelling of --chunk-size (frames decoded and detected at a time; default: as --chunk-size)",
    )

    g = p.add_argument_group("video")
    g.add_argument(
        "--fps", type=float, default=25.0, help="frame rate for a still-image or --static input (default 25)"
    )
    g.add_argument(
        "--static",
        action="store_true",
        help="use only the first frame of the video, as a still image (Wav2Lip's --static; default: every frame)",
    )
    g.add_argument(
        "--length",
        choices=["audio", "video", "shortest", "paper"],
        default=None,
        help="output length: the audio's (video looped if shorter; the default), the video's, the shorter, "
        "or 'paper': the frames whose mel window is complete, at most the video's (--preset paper's)",
    )
    g.add_argument(
        "--crf",
        type=_crf,
        default=None,
        help="x264 quality, lower is better, or auto (default): from the source's bits per pixel, 4 for a "
        "near-lossless source up to 18 for a compressed one, so the pixels the model does not touch keep "
        ">= 45 dB at about the source's size (yuv420p, High profile: every player opens it). 0 is lossless "
        "H.264 in the High 4:4:4 Predictive profile, which browsers and many players cannot open: prefer "
        "--lossless",
    )
    g.add_argument("--x264-preset", default="medium", help="x264 speed preset (default medium)")
    g.add_argument("--x264-tune", default=None, help="x264 tune: film, grain, animation, ... (default none)")
    g.add_argument(
        "--lossless",
        action="store_true",
        help="write the frames exactly: FFV1 video (RGB) in a .mkv file, which FFmpeg-based players and "
        "editors open (VLC, mpv, Kdenlive, Shotcut) — browsers do not (default: H.264 at --crf)",
    )
    g.add_argument(
        "--audio-codec",
        choices=["auto", "copy", "aac", "alac", "flac", "opus", "pcm"],
        default="auto",
        help="auto (default): copy the audio stream bit for bit when the output container can hold it "
        "(AAC/MP3/ALAC/Opus into .mp4; PCM too into .mov/.mkv), else AAC at 160 kb/s per channel; copy: "
        "insist on a copy; or encode with the named codec",
    )
    g.add_argument(
        "--chunk-size",
        type=int,
        default=32,
        help="frames decoded and generated at a time, at most (default 32; fewer when --max-memory needs it)",
    )
    g.add_argument(
        "--max-memory",
        metavar="SIZE",
        default=None,
        help="memory budget of the whole job, e.g. 4G or 1500M: the chunk size and the encoder's lookahead "
        "are chosen to fit, and a frame size that cannot fit fails before any work (default: the memory in "
        "use after loading the model + min(3 GiB, half the available RAM))",
    )

    g = p.add_argument_group("generation")
    g.add_argument(
        "--reference",
        default=None,
        help="reference frame: self (each frame its own; default), first, frame:N or image:PATH",
    )
    g.add_argument(
        "--reconstruction",
        action="store_true",
        help="the paper's reconstruction benchmark: the first face frame is the input and reference of "
        "every frame (default: off)",
    )
    g.add_argument(
        "--sampler",
        choices=["ddim", "ddpm", "dpmpp"],
        default=None,
        help="default: the checkpoint's own (the paper's: ddim; the bundled demo and every `diff2lip "
        "distill` student: its distilled steps, which take no other sampler)",
    )
    g.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampler steps (default: the checkpoint's own — the paper's 25; the bundled demo's 2)",
    )
    g.add_argument(
        "--seed", type=int, default=None, help="seed of the noise shared by all frames (default 7)"
    )
    g.add_argument(
        "--batch-size",
        "--wav2lip_batch_size",
        dest="batch_size",
        default="auto",
        help="frames per network call, or 'auto' (default: as many as fit, backing off on out-of-memory)",
    )
    g.add_argument("--blend", choices=["feather", "hard"], default=None, help="paste-back (default feather)")
    g.add_argument(
        "--feather", type=float, default=0.1, help="feather width as a fraction of the box (default 0.1)"
    )


def options_from_args(args: argparse.Namespace, **extra: Any):  # -> GenerateOptions
    """Map the parsed flags (and ``extra`` overrides) onto
    :class:`~diff2lip.inference.runner.GenerateOptions`."""
    from diff2lip.errors import Diff2LipError
    from diff2lip.inference.memory import parse_size
    from diff2lip.inference.runner import GenerateOptions

    overrides: dict = {}
    if args.detector is not None:
        overrides["detector"] = args.detector
    if args.s3fd_weights is not None:
        overrides["detector_weights"] = args.s3fd_weights
        overrides.setdefault("detector", "s3fd")
    if args.pads is not None:
        overrides["pads"] = tuple(args.pads)
    if args.box is not None and list(args.box) != [-1, -1, -1, -1]:  # Wav2Lip's "no box"
        overrides["box"] = tuple(args.box)
    if args.nosmooth:
        overrides["smooth"] = "none"
    if args.no_shots:
        overrides["shots"] = False
    if args.face_id is not None:
        overrides["face_id"] = args.face_id
    if getattr(args, "audio_for", None):
        overrides["voices"] = parse_voices(args.audio_for)
    if args.face_select is not None:
        overrides["choose"] = args.face_select
    for name in ("sampler", "steps", "seed", "blend", "reference", "length"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    batch = args.batch_size
    if batch != "auto":
        try:
            batch = int(batch)
        except ValueError:
            raise Diff2LipError(f"--batch-size must be an integer or 'auto', got '{batch}'") from None
    if args.chunk_size < 1:
        raise Diff2LipError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.steps is not None and args.steps < 1:
        raise Diff2LipError(f"--steps must be >= 1, got {args.steps}")
    if args.resize_factor < 1:
        raise Diff2LipError(f"--resize-factor must be >= 1, got {args.resize_factor}")
    overrides.update(
        min_face=args.min_face,
        same_person=args.same_person or None,
        max_yaw=args.max_yaw,
        face_track=getattr(args, "face_track", None),
        resize_factor=args.resize_factor,
        fps=args.fps,
        static=args.static,
        crf=args.crf,
        preset=args.x264_preset,
        tune=args.x264_tune,
        lossless=args.lossless,
        audio_codec=args.audio_codec,
        chunk_size=args.chunk_size,
        max_memory=None if args.max_memory is None else parse_size(args.max_memory),
        reconstruction=args.reconstruction,
        batch_size=batch,
        feather=args.feather,
    )
    overrides.update(extra)
    if args.preset == "paper":
        return GenerateOptions.paper(**overrides)
    return GenerateOptions(**overrides)


def crf_warning(args: argparse.Namespace) -> str | None:
    """The warning for ``--crf 0`` (a file many players cannot open), or ``None``."""
    if args.crf == 0 and not args.lossless:
        return (
            "warning: --crf 0 writes lossless H.264 in the High 4:4:4 Predictive profile, which browsers and "
            "many players cannot open; --lossless writes FFV1 in .mkv, and the default (--crf auto) is "
            "visually lossless outside the face"
        )
    return None


def parse_voices(items: list[str]) -> dict[int, str]:
    """``--audio-for K=SPEECH`` flags → {K: SPEECH}."""
    from pathlib import Path

    from diff2lip.errors import Diff2LipError

    voices: dict[int, str] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key.strip().isdigit() or not path:
            raise Diff2LipError(f"--audio-for expects K=SPEECH (a person id and a file), got '{item}'")
        if int(key) in voices:
            raise Diff2LipError(f"--audio-for gives person {int(key)} two speech files")
        if not Path(path).is_file():
            raise Diff2LipError("speech file for --audio-for not found", path)
        voices[int(key)] = path
    return voices
