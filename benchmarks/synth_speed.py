"""Speed of ``diff2lip synth`` (issue 4: 200 clips × 4 s in ≤ 10 minutes on 2 cores).

Runs the real CLI into a temporary directory and prints clips, frames, wall seconds and frames/s::

    python benchmarks/synth_speed.py                      # 200 clips x 4 s, 256 px, 2 workers
    python benchmarks/synth_speed.py --clips 40           # a shorter run; extrapolated to 200 clips
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        out = Path(tmp) / "corpus"
        cmd = [
            sys.executable, "-m", "diff2lip", "synth", str(out),
            "--clips", str(args.clips), "--seconds", str(args.seconds), "--seed", str(args.seed),
            "--size", str(args.size), "--workers", str(args.workers), "--no-progress",
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        made = len(list((out / "clips").glob("*/meta.json")))
    frames = made * round(args.seconds * 25)
    print(f"clips {made}  frames {frames}  seconds {wall:.1f}  frames/s {frames / wall:.1f}")
    if args.clips != 200:
        est = wall / max(made, 1) * 200
        print(f"extrapolated to 200 clips x {args.seconds:g} s: {est:.0f} s ({est / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
