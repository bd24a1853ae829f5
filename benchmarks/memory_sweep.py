"""Peak memory of ``diff2lip generate`` by frame size: 720p, 1080p, 4K, 8K (issue 18).

For each size, makes a short input — a real face photo (scikit-image's astronaut, scaled to 60 % of the
frame height) on a grey canvas, as a ``--frames``-frame H.264 video and as a still PNG — plus a tone of the
same length as the driving audio, then runs ``diff2lip generate`` on it at **default settings** (the bundled
demo model, its own sampler, default ``--chunk-size`` and ``--max-memory``) in a fresh process, and reports
that process's peak RSS (``ru_maxrss`` from ``os.wait4``) and wall time. Targets: 8K ≤ 4 GB, 1080p ≤ 1.5 GB.

    python benchmarks/memory_sweep.py                          # all sizes, video and still, 16 frames
    python benchmarks/memory_sweep.py --sizes 1080p 8k --kinds still -- --max-memory 2G
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160), "8k": (7680, 4320)}
FPS = 25.0


def face_canvas(width: int, height: int) -> np.ndarray:
    """A grey ``(height, width, 3)`` frame with the astronaut photo (a real face) scaled into the middle."""
    import torch
    import torch.nn.functional as F
    from skimage import data

    side = int(height * 0.6) // 2 * 2
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float()  # (1, 3, 512, 512)
    big = F.interpolate(photo, size=(side, side), mode="bilinear", align_corners=False)
    canvas = np.full((height, width, 3), 128, np.uint8)
    y, x = (height - side) // 2, (width - side) // 2
    canvas[y : y + side, x : x + side] = big[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    return canvas


def write_tone(path: Path, seconds: float, rate: int = 16000) -> None:
    t = np.arange(round(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def make_inputs(d: Path, name: str, frames: int, kinds: list[str]) -> dict[str, Path]:
    from PIL import Image

    from diff2lip.video.io import VideoWriter

    width, height = SIZES[name]
    image = face_canvas(width, height)
    out = {}
    if "still" in kinds:
        out["still"] = d / f"{name}.png"
        Image.fromarray(image).save(out["still"])
    if "video" in kinds:
        out["video"] = d / f"{name}.mp4"
        with VideoWriter(out["video"], width=width, height=height, fps=FPS, preset="ultrafast") as w:
            for k in range(frames):
                w.write(image[None], np.array([k / FPS]))
    return out


def peak_rss(cmd: list[str]) -> tuple[int, float, float, str]:
    """Run ``cmd``; return (exit status, peak RSS in GB, seconds, last line of stdout+stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = [ln for ln in out.splitlines() if ln.strip()]
    line = last[-1] if last else ""
    if "; memory: " in line:  # the plan, when the budget reduced the chunk or the lookahead
        line = line[line.index("; memory: ") + 2 :].split(";")[0]
    elif line.startswith("wrote "):
        line = "chunk and lookahead as asked"
    return proc.returncode, usage.ru_maxrss * 1024 / 1e9, seconds, line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--kinds", nargs="+", default=["video", "still"], choices=["video", "still"])
    p.add_argument("--frames", type=int, default=16, help="output frames per case (default 16)")
    p.add_argument("--out-dir", type=Path, default=None, help="where inputs/outputs go (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("generate_args", nargs="*", help="extra flags for diff2lip generate (after --)")
    args = p.parse_args(argv)
    from diff2lip.demo import bundled_model_dir

    d = args.out_dir or Path(tempfile.mkdtemp(prefix="memsweep-"))
    d.mkdir(parents=True, exist_ok=True)
    wav = d / "tone.wav"
    write_tone(wav, args.frames / FPS)
    rows = []
    print("| input | kind | peak RSS (GB) | seconds | exit | memory plan (or error) |")
    print("|---|---|---:|---:|---:|---|")
    for name in args.sizes:
        for kind, src in make_inputs(d, name, args.frames, args.kinds).items():
            out = d / f"out_{name}_{kind}.mp4"
            cmd = [sys.executable, "-m", "diff2lip", "generate", str(src), str(wav), "-o", str(out), "-q"]
            cmd += ["--checkpoint", str(bundled_model_dir())]
            rc, gb, secs, last = peak_rss(cmd + list(args.generate_args))
            rows.append(
                {"input": name, "kind": kind, "peak_rss_gb": gb, "seconds": secs, "exit": rc, "last": last}
            )
            print(
                f"| {name} {SIZES[name][0]}x{SIZES[name][1]} | {kind} | {gb:.2f} | {secs:.1f} | {rc} | {last[:150]} |",
                flush=True,
            )
            out.unlink(missing_ok=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
