"""``diff2lip faces VIDEO``: every person in a video, with ids for ``generate --face-id``."""

from __future__ import annotations

import argparse

from diff2lip.video.face import SAME_PERSON

ORDER = 12

EPILOG = """\
Every face is detected (as `generate` does) and linked frame to frame: a face continues a person seen
in the last 25 frames when its position and size are continuous with that person's last box (never
across a shot cut). Then pieces of one person are joined by appearance (dlib's face descriptor, distance
under --same-person) when they are never on screen together, so a person keeps one id after a cut or a
long absence. Ids are given in order of first appearance and are the ids `generate --face-id K` uses
(same --detector, --min-face and --same-person, same video).

Writes a contact sheet (one thumbnail per person: its largest face, with its id and frame range) and
prints one line per person; --json also writes every person's frames and boxes.

Examples:
  diff2lip faces interview.mp4 -o faces.png
  diff2lip generate interview.mp4 dub.wav -o synced.mp4 --checkpoint models/diff2lip-paper --face-id 1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from diff2lip.cli._generate_options import add_progress_option

    p = subparsers.add_parser(
        "faces",
        help="list every person in a video (contact sheet + ids for generate --face-id)",
        description="Detect and track every face of VIDEO; write a contact sheet of the people found.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", metavar="VIDEO", help="the video")
    p.add_argument("-o", "--out", default="faces.png", help="contact sheet image (default faces.png)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the people, frames and boxes")
    p.add_argument("--detector", default="dlib", help="face detector: dlib (default), dlib-cnn, s3fd")
    p.add_argument("--s3fd-weights", default=None, metavar="PATH", help="s3fd.pth for --detector s3fd")
    p.add_argument("--min-face", type=float, default=0.0, metavar="PX", help="ignore faces narrower than PX")
    p.add_argument(
        "--same-person",
        type=float,
        default=SAME_PERSON,
        metavar="DIST",
        help="face-descriptor distance under which two tracklets are one person (default "
        f"{SAME_PERSON}; dlib's own rule is 0.6); 0 links by continuity only",
    )
    p.add_argument("--no-shots", action="store_true", help="do not detect shot cuts")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from diff2lip.errors import Diff2LipError
    from diff2lip.fileio import check_output_path, write_atomic, write_text_atomic
    from diff2lip.video.face import create_detector
    from diff2lip.video.io import probe
    from diff2lip.video.people import contact_sheet, find_people

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise Diff2LipError("the contact sheet must be a .png or .jpg file", out)
    check_output_path(out)
    if args.json:
        check_output_path(args.json)
    probe(args.video)  # a missing or unreadable file: one line before any progress bar
    kw = {"weights_path": args.s3fd_weights} if args.detector == "s3fd" else {}
    detector = create_detector(args.detector, **kw)
    with tqdm(unit="frame", desc="faces", disable=args.quiet) as bar:
        people, shots, n, thumbs = find_people(
            args.video,
            detector,
            shots=not args.no_shots,
            min_face=args.min_face,
            same_person=args.same_person or None,
            progress=lambda k, total: (setattr(bar, "total", total), bar.update(k)),
        )
    if not people:
        raise Diff2LipError("no face found in any frame", args.video)
    sheet = contact_sheet(people, thumbs)
    write_atomic(out, lambda tmp: sheet.save(tmp, format="PNG" if out.suffix.lower() == ".png" else "JPEG"))
    for p in people:
        print(f"id {p.id}: frames {p.first}-{p.last} ({len(p.detections)} frames with this face)")
    print(f"{len(people)} people in {n} frames, {len(shots)} shot(s); contact sheet: {out}")
    if args.json:
        doc = {
            "video": str(args.video),
            "frames": n,
            "shots": [list(r) for r in shots],
            "people": [
                {
                    "id": p.id,
                    "first": p.first,
                    "last": p.last,
                    "frames": {str(i): [round(v, 2) for v in d.box] for i, d in sorted(p.detections.items())},
                }
                for p in people
            ],
        }
        write_text_atomic(args.json, json.dumps(doc, indent=1) + "\n")
    return 0
