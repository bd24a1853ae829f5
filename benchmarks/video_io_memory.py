"""Peak memory of streaming decode + encode is bounded by the chunk size, not the video length (issue 2).

Generates synthetic 720p clips (a moving pattern at 25 fps with a 48 kHz tone as audio; generation is
itself streaming), then, for each clip, runs a *fresh* Python process that decodes the clip in chunks with
:class:`diff2lip.video.io.VideoReader` and re-encodes it with :class:`diff2lip.video.io.VideoWriter`
(muxing the clip's own audio back), and reports that process's peak RSS (``ru_maxrss``). The ratio of the
longest to the shortest clip's peak should be <= 1.2 (DESIGN.md §6: streaming with bounded memory).

x264 runs with ``--preset ultrafast`` by default so the benchmark finishes in minutes on 2 CPU cores; the
preset changes the encoder's (constant) working set, not how memory scales with length.

    python benchmarks/video_io_memory.py                      # 10 s and 60 s clips in a temp dir
    python benchmarks/video_io_memory.py --seconds 5 20 --out-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from diff2lip.video.io import VideoReader, VideoWriter


def _write_tone_wav(path: Path, seconds: float, rate: int = 48000) -> None:
    """A 220 Hz tone with a slow tremolo as 16-bit stereo wav, written one second at a time."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="stereo")
        total = round(seconds * rate)
        for start in range(0, total, rate):
            n = min(rate, total - start)
            t = (start + np.arange(n)) / rate
            mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
            pcm = (np.stack([mono, mono]) * 32767).astype(np.int16).T.reshape(1, -1)  # (1, n * 2) packed
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def generate_clip(
    path: Path, seconds: float, *, width: int, height: int, fps: float, preset: str, chunk: int
) -> None:
    """Stream a synthetic clip to ``path``: a scrolling colour texture with a moving square, plus audio."""
    wav = path.with_suffix(".wav")
    _write_tone_wav(wav, seconds)
    yy, xx = np.mgrid[0:height, 0 : 2 * width]
    texture = np.stack(
        [
            (xx * 255 // (2 * width - 1)).astype(np.uint8),
            (yy * 255 // (height - 1)).astype(np.uint8),
            ((np.sin(xx / 40.0) * np.cos(yy / 30.0) + 1) * 127).astype(np.uint8),
        ],
        axis=-1,
    )  # (H, 2W, 3)
    n = round(seconds * fps)
    side = height // 6
    try:
        with VideoWriter(path, width=width, height=height, fps=fps, preset=preset, audio=wav) as writer:
            for start in range(0, n, chunk):
                idx = np.arange(start, min(start + chunk, n))
                frames = np.empty((len(idx), height, width, 3), np.uint8)  # (N, H, W, 3)
                for j, k in enumerate(idx):
                    offset = (4 * k) % width
                    frames[j] = texture[:, offset : offset + width]
                    y = int((height - side) * (0.5 + 0.5 * np.sin(k / 20.0)))
                    x = int((width - side) * (0.5 + 0.5 * np.cos(k / 31.0)))
                    frames[j, y : y + side, x : x + side] = 255
                writer.write(frames, idx / fps)
    finally:
        wav.unlink(missing_ok=True)


def _peak_rss_mib() -> float:
    """``ru_maxrss`` of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _vm_hwm_mib() -> float | None:
    """The kernel's high-water mark of this process image (``VmHWM``), a cross-check of ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def transcode(src: Path, dst: Path, *, chunk_size: int, preset: str) -> dict[str, float]:
    """Decode ``src`` in chunks and re-encode it (with its own audio) to ``dst``; return measurements."""
    baseline = _peak_rss_mib()
    t0 = time.perf_counter()
    reader = VideoReader(src, chunk_size=chunk_size)
    frames = 0
    with VideoWriter(
        dst, width=reader.width, height=reader.height, fps=reader.fps, preset=preset, audio=src
    ) as writer:
        for chunk in reader:
            writer.write(chunk.frames, chunk.times)
            frames += len(chunk)
    return {
        "frames": frames,
        "seconds": time.perf_counter() - t0,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": _peak_rss_mib(),
        "vm_hwm_mib": _vm_hwm_mib(),
    }


def _run_child(args: list[str]) -> dict[str, float]:
    """Run this script in a fresh interpreter and parse the JSON line it prints last.

    Linux carries ``ru_maxrss`` across ``exec``, so a child inherits its parent's peak: the parent
    therefore never touches frames itself (clip generation also runs in a child) and stays small.
    """
    result = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Peak RSS of streaming decode+encode (diff2lip.video.io) for clips of different "
        "lengths; the long/short ratio should stay <= 1.2.",
    )
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0], help="clip lengths")
    parser.add_argument("--out-dir", type=Path, default=None, help="where clips go (default: a temp dir)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--chunk-size", type=int, default=32, help="frames per decoded chunk")
    parser.add_argument("--preset", default="ultrafast", help="x264 preset (ultrafast keeps it quick)")
    parser.add_argument("--child-transcode", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    parser.add_argument("--child-generate", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common = ["--chunk-size", str(args.chunk_size), "--preset", args.preset]

    if args.child_transcode:
        src, dst = (Path(p) for p in args.child_transcode)
        print(json.dumps(transcode(src, dst, chunk_size=args.chunk_size, preset=args.preset)))
        return 0
    if args.child_generate:
        t0 = time.perf_counter()
        generate_clip(
            Path(args.child_generate),
            args.seconds[0],
            width=args.width,
            height=args.height,
            fps=args.fps,
            preset=args.preset,
            chunk=args.chunk_size,
        )
        print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mib": _peak_rss_mib()}))
        return 0

    with tempfile.TemporaryDirectory(prefix="diff2lip-bench-") as tmp:
        out_dir = args.out_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for seconds in args.seconds:
            src = out_dir / f"synthetic_{args.height}p_{seconds:g}s.mp4"
            size = ["--width", str(args.width), "--height", str(args.height), "--fps", str(args.fps)]
            gen = _run_child(["--child-generate", str(src), "--seconds", str(seconds), *size, *common])
            dst = out_dir / f"transcoded_{seconds:g}s.mp4"
            m = _run_child(["--child-transcode", str(src), str(dst), *common])
            rows.append((seconds, gen["seconds"], m))

        print(
            f"streaming decode+encode, {args.width}x{args.height} @ {args.fps:g} fps, "
            f"chunk_size={args.chunk_size}, x264 preset={args.preset}, audio: 48 kHz stereo AAC"
        )
        header = (
            f"{'clip':>7} {'frames':>7} {'gen s':>7} {'xcode s':>8} {'fps':>6} "
            f"{'start MiB':>9} {'peak MiB':>9} {'VmHWM MiB':>9}"
        )
        print(header)
        print("-" * len(header))
        for seconds, gen_s, m in rows:
            print(
                f"{seconds:>6g}s {m['frames']:>7d} {gen_s:>7.1f} {m['seconds']:>8.1f} "
                f"{m['frames'] / m['seconds']:>6.1f} {m['baseline_rss_mib']:>9.1f} {m['peak_rss_mib']:>9.1f} "
                f"{m['vm_hwm_mib'] or float('nan'):>9.1f}"
            )
        peaks = [m["peak_rss_mib"] for _, _, m in rows]
        ratio = max(peaks) / min(peaks)
        verdict = "PASS" if ratio <= 1.2 else "FAIL"
        print(f"peak RSS ratio (max/min) = {ratio:.3f}  (target <= 1.2: {verdict})")
    return 0 if ratio <= 1.2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
