"""``diff2lip demo [-o OUT.mp4] [--text "..."]``: the offline demo with the bundled synthetic-face model."""

from __future__ import annotations

import argparse
import sys

ORDER = 5

EPILOG = """\
examples:
  diff2lip demo                                   (writes ./diff2lip_demo.mp4 and ./diff2lip_demo_side_by_side.mp4)
  diff2lip demo -o hello.mp4 --text "Good morning, how are you today?"
  diff2lip demo -o mine.mp4 --audio my_speech.wav --seed 3
  diff2lip demo --checkpoint runs/synthetic/model   (a model you trained on `diff2lip synth` data)

What it shows: a new synthetic face (drawn from --seed, with its mouth kept closed) is lip-synced to the
speech by the normal `diff2lip generate` path; the side-by-side video puts the input next to the result.
Everything runs offline; the text is spoken by espeak-ng.

About the bundled model: it was trained only on synthetic faces (`diff2lip synth`, benchmarks/RESULTS.md)
and knows nothing about real people. For real faces use the authors' released checkpoint
(e7.24.1.3_model260000_paper.pt; see `diff2lip convert --help` for where to get it) or a model trained
on your own videos with `diff2lip train`, with `diff2lip generate VIDEO AUDIO -o OUT.mp4 --checkpoint ...`.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from diff2lip.cli._generate_options import add_progress_option

    p = subparsers.add_parser(
        "demo",
        help="lip-sync a synthetic face to any sentence with the bundled model (offline)",
        description=(
            "Render a new synthetic face, speak TEXT with espeak-ng (or use --audio), lip-sync the face with "
            "the bundled demo model through the normal generate path, and write the result and a "
            "side-by-side comparison. The bundled model was trained only on synthetic faces: real faces "
            "need the official checkpoint (diff2lip convert) or a model trained with diff2lip train."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-o",
        "--output",
        default="diff2lip_demo.mp4",
        help="the lip-synced .mp4 (default ./diff2lip_demo.mp4); the comparison is OUT_side_by_side.mp4",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--text", default=None, help="what the face says (spoken by espeak-ng; default a greeting)"
    )
    src.add_argument("--audio", default=None, help="a speech file to use instead of text-to-speech")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="model directory or official .pt instead of the bundled synthetic-face model",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="picks the face, its head motion and the noise (default 0)"
    )
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's, 25)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from diff2lip.demo import run_demo

    bar: dict[str, tqdm] = {}

    def progress(stage: str, n: int, total: int | None) -> None:
        if stage != "generate":
            return
        if stage not in bar:
            bar[stage] = tqdm(total=total, desc=stage, unit="frame", file=sys.stderr)
        bar[stage].update(n)

    try:
        result = run_demo(
            args.output,
            text=args.text,
            audio=args.audio,
            checkpoint=args.checkpoint,
            seed=args.seed,
            steps=args.steps,
            device=args.device,
            progress=None if args.quiet else progress,
        )
    finally:
        for b in bar.values():
            b.close()
    print(result.summary())
    return 0
