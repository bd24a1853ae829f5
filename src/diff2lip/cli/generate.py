"""``diff2lip generate VIDEO_OR_IMAGE AUDIO -o OUT.mp4``: lip-sync one video."""

from __future__ import annotations

import argparse
import sys

ORDER = 10

EPILOG = """\
examples:
  diff2lip generate talk.mp4 speech.wav -o synced.mp4 --checkpoint paper
  diff2lip generate --face talk.mp4 --audio speech.wav --outfile synced.mp4 --checkpoint paper   (Wav2Lip's flags)
  diff2lip generate face.png speech.mp3 -o synced.mp4 --checkpoint e7.24.1.3_model260000_paper.pt --fps 25
  diff2lip generate talk.mp4 speech.wav -o synced.mp4 --checkpoint paper --preset paper
  diff2lip generate talk.mp4 speech.wav -o synced.mp4 --checkpoint models/my-model --sampler dpmpp --steps 12
  diff2lip generate talk.mp4 speech.m4a -o synced.mkv --checkpoint paper --lossless

The output keeps the source size and frame timing. Pixels the model does not redraw (everything outside
the lower face with --blend feather, the default) are written from the decoded source as they are and only
the encoder touches them: at the default --crf they stay above 45 dB PSNR; --lossless keeps them exact.
The speech is copied into the output bit for bit when the container can hold it (else AAC at a high bit
rate; the summary says which). Frames without a face pass through and are counted.

--checkpoint takes a directory written by `diff2lip convert`, `train` or `distill` (config.json +
model.safetensors), the official .pt file itself, or a name: demo (the bundled synthetic-face model) or
paper (the converted official model in $DIFF2LIP_HOME/models/paper, default ~/.diff2lip/models/paper).
"""


def register(sub: argparse._SubParsersAction) -> None:
    from diff2lip.cli._generate_options import add_job_options, add_model_options, add_progress_option

    p = sub.add_parser(
        "generate",
        help="lip-sync a video (or a still image) to a speech track",
        description="Re-generate the mouth region of VIDEO so the lips match AUDIO (Diff2Lip, WACV 2024).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "video",
        nargs="?",
        default=None,
        help="input video (any format PyAV reads) or a still image (png/jpg)",
    )
    p.add_argument(
        "audio",
        nargs="?",
        default=None,
        help="driving speech: wav/mp3/m4a/flac or the audio track of a video",
    )
    p.add_argument(
        "--face",
        dest="face_video",
        default=None,
        metavar="VIDEO",
        help="the input video, as Wav2Lip spells it (default: the positional VIDEO)",
    )
    p.add_argument(
        "--audio",
        dest="audio_file",
        default=None,
        metavar="AUDIO",
        help="the speech, as Wav2Lip spells it (default: the positional AUDIO)",
    )
    p.add_argument(
        "-o",
        "--output",
        "--outfile",
        dest="output",
        default=None,
        help="output video: .mp4 (default container), .mov, .mkv; written atomically. Required",
    )
    add_model_options(p)
    add_job_options(p)
    add_progress_option(p)
    p.set_defaults(func=run)


def _inputs(args: argparse.Namespace) -> tuple[str, str, str]:
    """(video, audio, output) from the positional or the Wav2Lip-style flags; one-line errors."""
    from pathlib import Path

    from diff2lip.cli._generate_options import FACE_CHOICES
    from diff2lip.errors import Diff2LipError

    def one(positional: str | None, flag: str | None, what: str, name: str) -> str:
        if positional and flag and positional != flag:
            raise Diff2LipError(f"two {what}s given: '{positional}' and {name} '{flag}'")
        value = positional or flag
        if not value:
            raise Diff2LipError(f"no {what} given (positional, or {name})")
        return value

    if args.face_video in FACE_CHOICES and not Path(args.face_video).exists():
        raise Diff2LipError(
            f"--face now names the input video (as in Wav2Lip); to choose a face use --face-select {args.face_video}"
        )
    video = one(args.video, args.face_video, "input video", "--face")
    audio = one(args.audio, args.audio_file, "audio", "--audio")
    if not args.output:
        raise Diff2LipError("no output given: -o OUT.mp4 (or --outfile)")
    return video, audio, args.output


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from diff2lip.cli._generate_options import crf_warning, options_from_args
    from diff2lip.errors import Diff2LipError
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import generate_video
    from diff2lip.models.named import resolve_model

    video, audio, output = _inputs(args)
    opts = options_from_args(args)
    warning = crf_warning(args)
    if warning:
        print(warning, file=sys.stderr)
    checkpoint = resolve_model(args.checkpoint)
    pipeline = Diff2LipPipeline.from_pretrained(checkpoint, device=args.device, dtype=args.dtype)
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
        report = generate_video(video, audio, output, pipeline, opts, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(report.summary())
    if report.frames_without_face == report.frames:
        print("warning: no face was found in any frame; the output equals the input video", file=sys.stderr)
    return 0
