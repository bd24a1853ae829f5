"""``diff2lip sync-offset VIDEO [AUDIO] --syncnet MODEL_DIR``: estimate the audio-visual offset."""

from __future__ import annotations

import argparse

ORDER = 75

EPILOG = """\
How it works (syncnet_python's recipe with our SyncNet expert):
  The face is cropped in every frame (from --face-track, or detected and tracked as `generate` does),
  the video is taken at 25 fps (other rates are resampled by timestamp), and every 5-frame group is
  compared with the audio windows shifted by k = -MAX..MAX frames. The mean embedding distance per k is
  minimal at the offset; confidence = median distance - minimum distance.

Sign convention:
  offset k > 0: the audio LAGS the video by k frames (it is delayed, k x 40 ms); k < 0: the audio leads.
  To fix a positive offset, advance the audio by k frames.

Examples:
  diff2lip sync-offset talk.mp4 --syncnet runs/syncnet/model
  diff2lip sync-offset data/synth/raw/synth00003.mp4 shifted.wav --syncnet runs/syncnet/model \\
      --face-track data/synth/clips/synth00003/track.json --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sync-offset",
        help="estimate the audio-visual offset of a talking-face video with a SyncNet expert",
        description=(
            "Slide the audio +-MAX frames against the video and report the offset with the smallest "
            "SyncNet distance and a confidence (median - minimum distance)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", metavar="VIDEO", help="talking-face video")
    p.add_argument(
        "audio", metavar="AUDIO", nargs="?", default=None, help="speech (default: the video's own track)"
    )
    p.add_argument(
        "--syncnet",
        required=True,
        metavar="MODEL_DIR",
        help="a trained expert (train-syncnet's RUN_DIR/model)",
    )
    p.add_argument(
        "--face-track", default=None, metavar="FILE", help="face-track JSON to use instead of detection"
    )
    p.add_argument("--detector", default="dlib", help="face detector when there is no track (default dlib)")
    p.add_argument("--max-offset", type=int, default=15, help="largest shift tried, in frames (default 15)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    p.add_argument(
        "--json", action="store_true", help="print the result as JSON (with the distance per offset)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from diff2lip.evaluation.sync import sync_offset_file

    result, facts = sync_offset_file(
        args.video,
        args.audio,
        args.syncnet,
        face_track=args.face_track,
        max_offset=args.max_offset,
        detector=args.detector,
        device=args.device,
    )
    if args.json:
        print(json.dumps({**result.to_dict(), "video": facts}, indent=2))
    else:
        print(f"sync-offset: {result.summary()}")
        if facts["frames_without_face"]:
            print(f"sync-offset: {facts['faces']} (nearest face box used)")
    return 0
