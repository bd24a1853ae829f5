"""``diff2lip preprocess RAW_DIR DATA_DIR``: talking-face videos → face crops, audio, mel, manifest, filelists."""

from __future__ import annotations

import argparse

ORDER = 30

EPILOG = """\
Output layout (DATA_DIR):
  manifest.jsonl            one JSON record per prepared clip (id, num_frames, fps, size, source, speaker)
  filelists/{train,val,test}.txt
                            clip ids; split by speaker (the first folder under RAW_DIR) when videos are
                            nested, else by clip
  clips/<id>/faces.npy      (N, S, S, 3) uint8 RGB face crops at 25 fps (S = --size)
  clips/<id>/audio.wav      16 kHz mono PCM-16 audio
  clips/<id>/mel.npy        (80, T) float32 Wav2Lip mel features, 80 frames per second
  clips/<id>/meta.json      the record plus per-frame face boxes (written last: marks the clip finished)
  preprocess_errors.log     the videos that failed this run, with the reason (one per line)

Videos are resampled to 25 fps (each output frame is the source frame shown at that time), faces are
detected and tracked (S3FD-like boxes, optional pads, the paper's 5-frame smoothing), or cropped with the fixed VoxCeleb2
box of the official code (--crop voxceleb2). A clip whose frames have a face less than 90% of the time,
an unreadable file, a video without audio or one shorter than 10 frames is logged and skipped; the run
goes on. Re-running skips finished clips, so an interrupted run resumes where it stopped.

Exit status: 0 if every clip is prepared (or was already done), 1 if any clip failed (the count is in
the last line; the good clips are kept), 2 for a usage error (RAW_DIR missing or without videos).

Examples:
  diff2lip preprocess raw/lrs2 data/lrs2
  diff2lip preprocess raw/voxceleb2 data/vox --crop voxceleb2 --workers 8
  diff2lip preprocess raw/my_videos data/mine --pads 0 20 0 0 --val-fraction 0.1 --test-fraction 0.1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from diff2lip.cli._generate_options import add_progress_option

    p = subparsers.add_parser(
        "preprocess",
        help="prepare a folder of talking-face videos for training/evaluation (resumable)",
        description=(
            "Prepare every video under RAW_DIR (recursive: .mp4 .mov .mkv .avi .webm .m4v) for training and "
            "evaluation: 25 fps face crops, 16 kHz audio and its mel features, a manifest and "
            "train/val/test filelists in DATA_DIR."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("raw_dir", metavar="RAW_DIR", help="folder of videos (sub-folders = speakers)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="output folder (created if missing)")
    p.add_argument("--size", type=int, default=128, help="side of the square face crops (default 128)")
    p.add_argument(
        "--crop",
        choices=["detector", "voxceleb2"],
        default="detector",
        help="detect and track faces (default), or the official fixed VoxCeleb2 crop",
    )
    p.add_argument(
        "--detector",
        choices=["dlib", "dlib-cnn", "s3fd"],
        default="dlib",
        help="face detector (default dlib HOG; s3fd needs --s3fd-weights)",
    )
    p.add_argument("--s3fd-weights", metavar="PATH", help="the published s3fd.pth for --detector s3fd")
    p.add_argument(
        "--pads",
        nargs=4,
        type=int,
        metavar=("T", "B", "L", "R"),
        default=[0, 0, 0, 0],
        help="extra pixels added to each face box: top bottom left right (default 0 0 0 0)",
    )
    p.add_argument("--nosmooth", action="store_true", help="do not smooth face boxes over 5 frames")
    p.add_argument(
        "--min-face-fraction",
        type=float,
        default=0.9,
        metavar="F",
        help="skip a clip with a face in fewer than this fraction of frames (default 0.9)",
    )
    p.add_argument(
        "--workers", type=int, default=None, metavar="N", help="parallel processes (default: min(2, CPUs))"
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.05, metavar="F", help="validation share (default 0.05)"
    )
    p.add_argument("--test-fraction", type=float, default=0.05, metavar="F", help="test share (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diff2lip.data.preprocess import PreprocessConfig, preprocess_dataset

    options = {"workers": args.workers} if args.workers is not None else {}
    cfg = PreprocessConfig(
        size=args.size,
        crop=args.crop,
        detector=args.detector,
        detector_weights=args.s3fd_weights,
        pads=tuple(args.pads),
        smooth="none" if args.nosmooth else "mean5",
        min_face_fraction=args.min_face_fraction,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        **options,
    )
    summary = preprocess_dataset(args.raw_dir, args.data_dir, cfg, progress=not args.quiet)
    print(summary.line())
    return 1 if summary.failed else 0  # as batch and synth: non-zero when any item failed
