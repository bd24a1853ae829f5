"""``diff2lip synth OUT_DIR``: the synthetic talking-face corpus (DESIGN.md §7, issue 4)."""

from __future__ import annotations

import argparse
import os

ORDER = 40

EPILOG = """\
What it makes:
  N clips of rendered talking faces at 25 fps whose mouths are driven by espeak-ng speech (and only by
  it), in the layout `diff2lip preprocess` writes, so training reads it unchanged:
    OUT_DIR/manifest.jsonl, filelists/{train,val,test}.txt, synth.json (the settings)
    OUT_DIR/clips/<id>/{faces.npy, audio.wav, mel.npy, mouth.npy (ground truth), track.json, meta.json}
    OUT_DIR/raw/<id>.mp4 (video + speech) and raw/<id>.wav, for the normal generate path:
      diff2lip generate OUT_DIR/raw/<id>.mp4 OUT_DIR/raw/<id>.wav --face-track OUT_DIR/clips/<id>/track.json
  Val/test clips speak with voices that no training clip uses.

Behaviour:
  Deterministic for a seed (faces.npy, mouth.npy, mel.npy and audio.wav are byte-identical across runs and
  worker counts). Resumable: clips with a meta.json are skipped; a resumed run must use the same settings.
  A clip that fails is reported and the others go on; the exit status is then 1.

Examples:
  diff2lip synth data/synth --clips 200 --seconds 4 --seed 0
  diff2lip synth data/synth-small --clips 20 --seconds 2 --seed 1 --size 128 --crop-size 64 --workers 2
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from diff2lip.cli._generate_options import add_progress_option

    p = subparsers.add_parser(
        "synth",
        help="make the synthetic talking-face corpus (speech-driven mouths, ground truth saved)",
        description=(
            "Render a corpus of synthetic talking faces whose mouth shapes are a fixed function of "
            "espeak-ng speech, with per-frame ground truth, in the prepared-data layout."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="corpus directory (created if missing)")
    p.add_argument("--clips", type=int, required=True, help="number of clips")
    p.add_argument("--seconds", type=float, required=True, help="length of each clip in seconds")
    p.add_argument("--seed", type=int, required=True, help="corpus seed (clip i uses seed [K, i])")
    p.add_argument("--size", type=int, default=256, help="side of the square video frames (default 256)")
    p.add_argument("--crop-size", type=int, default=128, help="side of the face crops (default 128)")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: the number of CPU cores)"
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of validation clips (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of test clips (default 0.1)")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from diff2lip.data.synth import SynthSettings, synthesize
    from diff2lip.errors import Diff2LipError

    settings = SynthSettings(
        clips=args.clips,
        seconds=args.seconds,
        seed=args.seed,
        size=args.size,
        crop_size=args.crop_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
    )
    settings.validate()
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise Diff2LipError("output path exists and is not a directory", args.out_dir)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    with tqdm(total=settings.clips, unit="clip", desc="synth", disable=args.quiet) as bar:
        report = synthesize(args.out_dir, settings, workers=workers, progress=bar.update)
    for clip_id, reason in report.failed:
        print(f"diff2lip synth: clip {clip_id} failed: {reason}", file=sys.stderr)
    print(f"synth: {report.summary(args.out_dir)}")
    return 1 if report.failed else 0
