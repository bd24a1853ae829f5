"""Learning curves of several training variants at once: does (and when does) each one lip-sync? (issue 5)

Every variant is one ``diff2lip train CONFIG`` process with its own ``--set`` overrides, all started
together on one device (a GPU runs many of these small models side by side); each exports its EMA weights
every ``--export-every`` steps, and this script evaluates every export as it appears with
:func:`diff2lip.evaluation.lipsync_check.cross_setting_check` (the proof's cross setting on the test split,
with the shuffled-audio control). At ``--minutes`` the trainers are stopped, the remaining exports are
evaluated, and a table of r (shuffled r) per variant and step is printed and written to
``OUT/sweep.json``. Steps, not minutes, are what carries over between devices: a variant that reaches the
target at step N on a GPU needs N steps (same batch, same seed) on the CPU too.

Example (a variant is ``NAME=KEY=VALUE,KEY=VALUE``; ``NAME=`` alone is the config unchanged)::

    python benchmarks/train_sweep.py --corpus data/synth --syncnet runs/syncnet/model --out runs/sweep \\
        --device cuda --minutes 6 --max-steps 12000 --export-every 1000 \\
        --variant base= --variant no_gan=losses.lambda_gan=0 --variant lr2e-3=optim.lr=2e-3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

TARGET_R = 0.85


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    if not name:
        raise SystemExit(f"variant '{text}': expected NAME=KEY=VALUE[,KEY=VALUE...] or NAME=")
    return name, [s for s in rest.split(",") if s]


def start_trainer(
    args: argparse.Namespace, name: str, overrides: list[str], log_dir: Path
) -> subprocess.Popen:
    run_dir = args.out / name
    cmd = [sys.executable, "-m", "diff2lip", "train", args.config, "--data-dir", str(args.corpus)]
    cmd += ["--out", str(run_dir), "--max-steps", str(args.max_steps), "--device", args.device, "--quiet"]
    if args.syncnet:
        cmd += ["--syncnet", str(args.syncnet)]
    base = [
        f"train.export_every={args.export_every}",
        f"train.checkpoint_every={args.max_steps}",
        "train.image_every=1000000",
        "data.num_workers=0",
    ]
    for o in base + overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    print("$", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def ready_exports(run_dir: Path) -> list[Path]:
    exports = run_dir / "exports"
    if not exports.is_dir():
        return []
    return sorted(
        p for p in exports.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file()
    )


def evaluate(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    from diff2lip.evaluation.lipsync_check import cross_setting_check
    from diff2lip.inference.pipeline import Diff2LipPipeline

    pipe = Diff2LipPipeline.from_pretrained(model_dir, device=args.device)
    res = cross_setting_check(
        pipe,
        args.corpus,
        "test",
        pairs=args.pairs,
        steps=args.steps,
        sampler=args.sampler,
        shuffle_audio=True,
        max_frames=args.frames,
    )
    res.pop("pairs", None)
    return res


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--syncnet", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", default="synthetic")
    p.add_argument("--variant", action="append", required=True, help="NAME=KEY=VALUE,KEY=VALUE (repeatable)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--minutes", type=float, default=6.0, help="stop the trainers after this long")
    p.add_argument("--max-steps", type=int, default=12000)
    p.add_argument("--export-every", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="OMP threads per trainer")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--sampler", default="dpmpp")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eval-workers", type=int, default=4, help="exports evaluated at once (threads)")
    p.add_argument("--final-eval-seconds", type=float, default=120.0, help="after the trainers stop")
    args = p.parse_args(argv)

    variants = dict(parse_variant(v) for v in args.variant)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    procs = {name: start_trainer(args, name, ov, logs) for name, ov in variants.items()}
    start = time.monotonic()
    results: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in variants}
    seen_at: dict[str, dict[int, float]] = {name: {} for name in variants}

    pool = ThreadPoolExecutor(max_workers=args.eval_workers)
    pending: dict[tuple[str, int], Future] = {}

    def submit_new() -> None:
        for name in variants:
            for export in ready_exports(args.out / name):
                step = int(export.name.split("-")[-1])
                if step in results[name] or (name, step) in pending:
                    continue
                seen_at[name].setdefault(step, time.monotonic() - start)
                pending[(name, step)] = pool.submit(evaluate, args, export)

    def collect() -> None:
        for (name, step), fut in list(pending.items()):
            if not fut.done():
                continue
            del pending[(name, step)]
            try:
                res = fut.result()
            except Exception as exc:  # a half-written export: evaluated again next round
                print(f"{name} step {step}: evaluation failed ({exc}); retrying", flush=True)
                continue
            res["found_after_s"] = seen_at[name][step]
            results[name][step] = res
            print(
                f"[{time.monotonic() - start:6.0f}s] {name:>14} step {step:>6}: r {fmt(res['r'])} "
                f"shuffled {fmt(res['r_shuffled'])} copy {fmt(res['copy_r'])} "
                f"open {res['generated_openness_mean']:.2f}±{res['generated_openness_std']:.2f} "
                f"(exported after {res['found_after_s']:.0f}s)",
                flush=True,
            )

    while time.monotonic() - start < args.minutes * 60 and any(pr.poll() is None for pr in procs.values()):
        submit_new()
        collect()
        time.sleep(2.0)
    for name, pr in procs.items():
        if pr.poll() is None:
            pr.terminate()
        rc = pr.wait()
        if rc not in (0, -15):
            print(f"{name}: trainer exited with {rc}; see {logs / (name + '.log')}", flush=True)
            print((logs / f"{name}.log").read_text()[-2000:], flush=True)
    submit_new()
    deadline = time.monotonic() + args.final_eval_seconds
    while pending and time.monotonic() < deadline:
        collect()
        time.sleep(1.0)
    collect()
    if pending:
        print(f"{len(pending)} export(s) not evaluated within --final-eval-seconds", flush=True)
    pool.shutdown(wait=False, cancel_futures=True)

    steps = sorted({s for r in results.values() for s in r})
    out = {
        "variants": variants,
        "results": {n: {str(s): r for s, r in rs.items()} for n, rs in results.items()},
        "settings": vars(args)
        | {"out": str(args.out), "corpus": str(args.corpus), "syncnet": str(args.syncnet)},
    }
    (args.out / "sweep.json").write_text(json.dumps(out, indent=2, default=str))
    print("\n| variant | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    for name in variants:
        cells = []
        for s in steps:
            r = results[name].get(s)
            cells.append("" if r is None else f"{fmt(r['r'])} ({fmt(r['r_shuffled'])})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nr (shuffled r) of the EMA exports on the test split; target r ≥ {TARGET_R}, shuffled ≤ 0.1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
