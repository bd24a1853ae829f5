"""``diff2lip evaluate``: the paper's Table 2 metrics over a filelist (DESIGN.md §5, issue 6)."""

from __future__ import annotations

import argparse

ORDER = 60

EPILOG = """\
Inputs:
  FILELIST lines are `AUDIO_SRC VIDEO_SRC` (the paper's format; names relative to --video-root, no .mp4;
  equal names for reconstruction). CHECKPOINT is a model directory or an official .pt; with --generated DIR
  the videos there (named VIDEO__AUDIO.mp4) are scored instead and nothing is generated.

Metrics (--metrics, default all): fid (pytorch-fid Inception, --fid-weights or the torch hub cache),
  ssim, psnr, lmd (reconstruction only; on the face crop, uint8), sync (Sync_c/Sync_d/offset with
  syncnet_python's syncnet_v2.model via --syncnet-weights, else the project's expert via --syncnet-dir).
  Nothing is downloaded; missing weights are an error that says where to get them.

Outputs in OUT_DIR: report.json, per_video.csv, table.md (Table 2 layout with a "ground truth" anchor row
  and the settings used); generated/ holds generated videos (existing ones are reused: resumable).

Examples:
  diff2lip evaluate test.txt models/tiny --video-root data/synth/raw -o eval/ --metrics ssim,psnr,sync \\
      --syncnet-dir models/syncnet --face-tracks 'data/synth/clips/{name}/track.json'
  diff2lip evaluate lrs2_cross.txt e7.pt --video-root LRS2/main --mode cross -o eval/ \\
      --fid-weights pt_inception-2015-12-05-6726825d.pth --syncnet-weights syncnet_v2.model
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from diff2lip.cli._generate_options import add_progress_option

    p = subparsers.add_parser(
        "evaluate",
        help="FID, SSIM, PSNR, LMD, Sync_c/Sync_d over a filelist (the paper's Table 2)",
        description="Generate (resumably) and score lip-synced videos with the paper's metrics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "filelist", metavar="FILELIST", help="paper-format filelist (AUDIO_SRC VIDEO_SRC per line)"
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", help="model directory or official .pt")
    p.add_argument("--video-root", required=True, help="folder holding NAME.mp4 for every filelist name")
    p.add_argument("-o", "--out", required=True, help="output folder for the report and generated videos")
    p.add_argument("--generated", default=None, help="score the finished videos in this folder instead")
    p.add_argument(
        "--mode",
        choices=("reconstruction", "cross"),
        default="reconstruction",
        help="the paper's two settings: reconstruction (each video driven by its own audio, the first frame "
        "as input and reference; default) or cross (driven by another video's audio)",
    )
    p.add_argument("--metrics", default=",".join(("fid", "ssim", "psnr", "lmd", "sync")),
                   help="comma-separated subset of fid,ssim,psnr,lmd,sync (default all)")  # fmt: skip
    p.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="face crop side for the image metrics (default: the model's, else 128)",
    )
    p.add_argument(
        "--face-tracks", default=None, help="face-track file template with {name} (default: detect and cache)"
    )
    p.add_argument("--detector", default="dlib", help="face detector when tracks are detected (default dlib)")
    p.add_argument("--fid-weights", default=None, help="pytorch-fid pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--syncnet-weights", default=None, help="syncnet_python's syncnet_v2.model")
    p.add_argument("--syncnet-dir", default=None, help="fallback scorer: a diff2lip SyncNet directory")
    p.add_argument("--vshift", type=int, default=15, help="sync offset search range in frames (default 15)")
    p.add_argument("--sampler", default=None, help="sampler for generation (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--device", default="auto", help="auto|cuda|mps|cpu")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from diff2lip.evaluation.runner import EvalSettings, evaluate

    crop = args.crop_size
    if crop is None and args.checkpoint and not args.generated:
        from diff2lip.models.serialization import checkpoint_model_config

        crop = int(checkpoint_model_config(args.checkpoint).image_size)
    settings = EvalSettings(
        mode=args.mode,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        crop_size=crop or 128,
        face_tracks=args.face_tracks,
        detector=args.detector,
        fid_weights=args.fid_weights,
        syncnet_weights=args.syncnet_weights,
        syncnet_dir=args.syncnet_dir,
        vshift=args.vshift,
        sampler=args.sampler,
        steps=args.steps,
        device=args.device,
        checkpoint=args.checkpoint,
        generated_dir=args.generated,
    )
    report = evaluate(args.filelist, args.video_root, args.out, settings, progress=not args.quiet)
    from diff2lip.evaluation.runner import table_markdown

    sys.stdout.write(table_markdown(report))
    return 0
