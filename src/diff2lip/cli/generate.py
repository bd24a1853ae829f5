"""``diff2lip generate VIDEO_OR_IMAGE AUDIO -o OUT.mp4``: lip-sync one video."""

from __future__ import annotations

import argparse
import sys

from diff2lip.video.face import SAME_PERSON

ORDER = 10

EPILOG = """\
examples:
  diff2lip generate talk.mp4 speech.wav -o synced.mp4 --checkpoint d2l_paper/
  diff2lip generate face.png speech.mp3 -o synced.mp4 --checkpoint e7.24.1.3_model260000_paper.pt --fps 25
  diff2lip generate talk.mp4 speech.wav -o synced.mp4 --checkpoint d2l_paper/ --preset paper
  diff2lip generate talk.mp4 speech.wav -o synced.mp4 --checkpoint d2l_paper/ --sampler dpmpp --steps 12

The output keeps the source resolution and frame timing; everything outside the lower face is untouched
(--blend feather, the default) and the driving audio is muxed at its own sample rate. Frames without a
face are passed through and counted. --checkpoint takes a directory written by `diff2lip convert` or
`diff2lip train` (config.json + model.safetensors) or the official .pt file itself.
"""


def _box(values: list[str]) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="lip-sync a video (or a still image) to a speech track",
        description="Re-generate the mouth region of VIDEO so the lips match AUDIO (Diff2Lip, WACV 2024).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", help="input video (any format PyAV reads) or a still image (png/jpg)")
    p.add_argument("audio", help="driving speech: wav/mp3/m4a/flac or the audio track of a video")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (written atomically)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="model directory (config.json + model.safetensors) or the official .pt checkpoint",
    )
    p.add_argument(
        "--preset",
        choices=["default", "paper"],
        default="default",
        help="'paper' reproduces the official inference's frames: integer boxes with 5-frame mean, seed-7 "
        "shared noise, DDIM-25, 128px crops; crop and paste-back of the whole box with OpenCV's bilinear "
        "resize (no antialias) and uint8 truncation; audio resampled with resampy's kaiser_best; output cut "
        "to the frames with a complete 0.2 s mel window; no shot-cut handling (needs: pip install "
        "'diff2lip[paper]'). The default "
        "resizes with antialiasing and feathers only the lower face, leaving the rest bit-identical",
    )
    g = p.add_argument_group("faces")
    g.add_argument("--detector", default=None, help="dlib (default), dlib-cnn or s3fd")
    g.add_argument(
        "--s3fd-weights", default=None, help="path to the published s3fd.pth (with --detector s3fd)"
    )
    g.add_argument(
        "--pads",
        nargs=4,
        type=int,
        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
        default=None,
        help="extra pixels around each detected face box (default 0 0 0 0; dlib boxes are already grown to S3FD-like framing)",
    )
    g.add_argument(
        "--box",
        nargs=4,
        metavar=("X1", "Y1", "X2", "Y2"),
        default=None,
        help="fixed face box; skips detection",
    )
    g.add_argument("--nosmooth", action="store_true", help="do not average boxes over 5 frames")
    g.add_argument(
        "--face",
        choices=["largest", "central", "score", "track"],
        default=None,
        help="which person when several faces are found: the largest (default), the most central, or "
        "'track' (the first seen) is picked once and then followed — frames where that person is missed pass "
        "through, never another face; 'score' takes the highest-scoring face in every frame (the official code)",
    )
    g.add_argument(
        "--face-id",
        type=int,
        default=None,
        metavar="K",
        help="lip-sync only person K as `diff2lip faces VIDEO` numbers them (default: the automatic choice)",
    )
    g.add_argument(
        "--audio-for",
        action="append",
        default=None,
        metavar="K=SPEECH",
        help="lip-sync person K to the speech file SPEECH (repeatable: several speakers in one pass). The "
        "positional AUDIO stays the output's sound track and drives only the --face-id person, if any",
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
    g.add_argument(
        "--face-track",
        default=None,
        help="face-track JSON: loaded if it exists (skips detection), else written after detection",
    )
    g = p.add_argument_group("video")
    g.add_argument(
        "--resize-factor", type=int, default=1, help="shrink the video by this integer factor first"
    )
    g.add_argument("--fps", type=float, default=25.0, help="frame rate for a still-image input (default 25)")
    g.add_argument(
        "--length",
        choices=["audio", "video", "shortest", "paper"],
        default=None,
        help="output length: the audio's (video looped if shorter; the default), the video's, the shorter, "
        "or 'paper': the frames whose mel window is complete, at most the video's (--preset paper's)",
    )
    g.add_argument("--crf", type=float, default=18.0, help="x264 quality (lower is better; default 18)")
    g.add_argument("--x264-preset", default="medium", help="x264 speed preset (default medium)")
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
        help="the paper's reconstruction benchmark: the first face frame is the input and reference of every frame",
    )
    g.add_argument(
        "--sampler",
        choices=["ddim", "ddpm", "dpmpp"],
        default=None,
        help="default: the checkpoint's sampling section (the paper: ddim 25; a `diff2lip distill` student "
        "samples only with its own K steps)",
    )
    g.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    g.add_argument(
        "--seed", type=int, default=None, help="seed of the noise shared by all frames (default 7)"
    )
    g.add_argument(
        "--batch-size", default="auto", help="frames per network call, or 'auto' (backs off on OOM)"
    )
    g.add_argument("--blend", choices=["feather", "hard"], default=None, help="paste-back (default feather)")
    g.add_argument("--feather", type=float, default=0.1, help="feather width as a fraction of the box")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument(
        "--dtype",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="compute precision (fp16/bf16 on a GPU; bf16 on a CPU only with avx512_bf16/AMX)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):  # -> GenerateOptions
    """Map the parsed flags onto :class:`~diff2lip.inference.runner.GenerateOptions`."""
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
    if args.box is not None:
        overrides["box"] = _box(args.box)
    if args.nosmooth:
        overrides["smooth"] = "none"
    if args.no_shots:
        overrides["shots"] = False
    if args.face_id is not None:
        overrides["face_id"] = args.face_id
    if args.audio_for:
        overrides["voices"] = _voices(args.audio_for)
    if args.face is not None:
        overrides["choose"] = args.face
    for name in ("sampler", "steps", "seed", "blend", "reference", "length"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    batch = args.batch_size
    if batch != "auto":
        try:
            batch = int(batch)
        except ValueError:
            raise Diff2LipError(f"--batch-size must be an integer or 'auto', got '{batch}'") from None
    overrides.update(
        min_face=args.min_face,
        same_person=args.same_person or None,
        max_yaw=args.max_yaw,
        face_track=args.face_track,
        resize_factor=args.resize_factor,
        fps=args.fps,
        crf=args.crf,
        preset=args.x264_preset,
        chunk_size=args.chunk_size,
        max_memory=None if args.max_memory is None else parse_size(args.max_memory),
        reconstruction=args.reconstruction,
        batch_size=batch,
        feather=args.feather,
    )
    if args.chunk_size < 1:
        raise Diff2LipError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.steps is not None and args.steps < 1:
        raise Diff2LipError(f"--steps must be >= 1, got {args.steps}")
    if args.preset == "paper":
        return GenerateOptions.paper(**overrides)
    return GenerateOptions(**overrides)


def _voices(items: list[str]) -> dict[int, str]:
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from diff2lip.errors import Diff2LipError
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import generate_video

    opts = options_from_args(args)
    if args.checkpoint is None:
        raise Diff2LipError(
            "no --checkpoint given: pass a model directory (diff2lip convert / diff2lip train) or the "
            "official e7.24.1.3_model260000_paper.pt"
        )
    pipeline = Diff2LipPipeline.from_pretrained(args.checkpoint, device=args.device, dtype=args.dtype)
    if args.preset == "paper" and pipeline.image_size != 128:
        raise Diff2LipError(f"--preset paper needs a 128px model, this one is {pipeline.image_size}px")

    bars: dict[str, tqdm] = {}

    def progress(stage: str, n: int, total: int | None) -> None:
        if args.quiet:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="frame", file=sys.stderr, leave=False)
        bar.update(n)

    try:
        report = generate_video(args.video, args.audio, args.output, pipeline, opts, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(report.summary())
    if report.frames_without_face == report.frames:
        print("warning: no face was found in any frame; the output equals the input video", file=sys.stderr)
    return 0
