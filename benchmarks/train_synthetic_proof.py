"""Proof that ``diff2lip train`` learns lip-sync on a CPU (issue 5), with the ablations, as one script.

1. makes the synthetic corpus with ``diff2lip synth`` (crops at the config's ``model.image_size``) unless
   ``--corpus`` already holds one; its val/test clips have unseen seeds, faces and voices;
2. trains ``src/diff2lip/configs/synthetic.yaml`` with ``diff2lip train synthetic --data-dir CORPUS --syncnet SYNCNET``
   into ``RUN/main`` and times it. The budget is ``--max-steps N``, or ``--minutes M``: the run goes to
   ``losses.gan_start_step`` (from there on the GAN term costs a discriminator pass through the UNet's
   output), the next ``--calibration-steps`` are timed (start-up included, so the estimate is
   conservative) and the run is resumed (exactly: same data order, noise and optimizer state) up to the
   number of steps that fits in ``M`` minutes. The config's learning-rate annealing is set in steps
   (``src/diff2lip/configs/synthetic.yaml``: 8000 → 9200), so ``--max-steps 9200`` is the bundled model's run; a
   ``--minutes`` budget that ends earlier stops before the annealing has finished;
3. ``--ablation paper_losses`` trains ``RUN/paper_losses`` with ``L_sync`` and the GAN at the released
   model's weights (λ 0.1 / 0.5; ``src/diff2lip/configs/synthetic.yaml`` has both off, RESULTS.md session 5),
   ``--ablation with_sync`` / ``with_gan`` only one of them;
   ``--ablation no_sync`` / ``no_gan`` set one of them to 0 (for a config or ``--set`` that has them on);
   every ablation runs for the **same number of steps** as the main run;
4. evaluates every run's exported EMA model (``RUN/<name>/model``) with
   :func:`diff2lip.evaluation.lipsync_check.cross_setting_check` on the **test** split in the cross setting
   (video of clip A, speech of clip B): Pearson r of the generated mouth openness vs B's ground truth
   (target ≥ 0.85), the same with B's audio windows shuffled in time (target ≤ 0.1), the input-mouth
   baseline, the anchor (the measurement on the rendered frames themselves) and the upper-half PSNR
   (``inf``: bit-identical);
5. prints Markdown rows for benchmarks/RESULTS.md and writes everything to ``RUN/results.json``;
6. with ``--ship``, and only if the main run met every target (``--ship-below-target``: in any case, recorded
   as ``meets_targets: false``), re-saves its EMA model as fp16 into the
   package (``src/diff2lip/assets/demo_model``: the bundled model of ``diff2lip demo``) with the run's
   provenance and numbers in ``config.json``'s ``extra`` and the evaluation's sampler as its default.

The SyncNet expert is trained first and separately (``benchmarks/syncnet_synthetic.py``). Examples::

    python benchmarks/train_synthetic_proof.py --corpus data/synth --syncnet runs/syncnet/model \\
        --run runs/proof --minutes 55 --ablation paper_losses
    python benchmarks/train_synthetic_proof.py --corpus data/synth --run runs/proof --max-steps 1500
    python benchmarks/train_synthetic_proof.py --corpus data/synth --eval-only runs/proof/main
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# relative to the config: src/diff2lip/configs/synthetic.yaml has L_sync and the GAN off (benchmarks/RESULTS.md, session 5),
# so "paper_losses" adds both at the released model's weights and with_sync / with_gan one of them;
# no_sync / no_gan matter for a config (or --set) that has them on
ABLATIONS = {
    "paper_losses": ["losses.lambda_sync=0.1", "losses.lambda_gan=0.5"],
    "with_sync": ["losses.lambda_sync=0.1"],
    "with_gan": ["losses.lambda_gan=0.5"],
    "no_sync": ["losses.lambda_sync=0"],
    "no_gan": ["losses.lambda_gan=0"],
}
TARGET_R = 0.85
TARGET_SHUFFLED = 0.1


def sh(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` (raising on failure) and return its wall-clock seconds."""
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def config_image_size(config: str) -> int:
    from diff2lip.config import load_yaml, packaged_config_path

    path = Path(config) if Path(config).is_file() else packaged_config_path(config)
    return int(load_yaml(path)["model"]["image_size"])


def ensure_corpus(args: argparse.Namespace, crop: int) -> None:
    """Make the corpus unless it exists; an existing one must have ``crop``-pixel crops."""
    settings = args.corpus / "synth.json"
    if settings.is_file():
        have = json.loads(settings.read_text())
        if int(have["crop_size"]) != crop:
            sys.exit(f"{args.corpus}: crops are {have['crop_size']} px, the config's model needs {crop} px")
        if (args.corpus / "filelists" / "test.txt").is_file():
            print(f"corpus: {args.corpus} (existing, {have['clips']} clips × {have['seconds']} s)")
            return
    cmd = ["diff2lip", "synth", str(args.corpus), "--clips", str(args.clips), "--seconds", str(args.seconds)]
    cmd += ["--seed", str(args.corpus_seed), "--size", str(2 * crop), "--crop-size", str(crop)]
    cmd += ["--workers", str(args.workers), "--no-progress"]
    secs = sh(cmd)
    print(f"corpus: {args.corpus} made in {secs / 60:.1f} min")


def train_command(
    args: argparse.Namespace, run_dir: Path, steps: int, overrides: list[str], resume: bool
) -> list[str]:
    if args.nproc > 1:
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc)]
        head += ["-m", "diff2lip"]
    else:
        head = ["diff2lip"]
    cmd = [*head, "train", args.config, "--data-dir", str(args.corpus), "--syncnet", str(args.syncnet)]
    cmd += ["--out", str(run_dir), "--max-steps", str(steps), "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    if resume:
        cmd.append("--resume")
    return cmd


def gan_warmup_steps(config: str, overrides: list[str]) -> int:
    """Steps before the GAN term reaches the UNet (0 without a GAN term)."""
    from diff2lip.train.config import load_train_config

    cfg = load_train_config(config, overrides)
    return int(cfg.losses.gan_start_step) if cfg.losses.lambda_gan > 0 else 0


def train(args: argparse.Namespace, name: str, overrides: list[str], steps: int | None) -> dict[str, Any]:
    """Train ``RUN/name`` for ``steps`` (or, with ``None``, for the ``--minutes`` budget); returns timings."""
    run_dir = args.run / name
    if (run_dir / "checkpoints").is_dir():
        sys.exit(f"{run_dir}: already holds a run; choose another --run or use --eval-only")
    env = dict(os.environ, OMP_NUM_THREADS="1") if args.nproc > 1 else None
    if steps is None:  # time a few steps, then resume up to what fits in the budget
        # the GAN term reaches the UNet only from losses.gan_start_step on (and costs a discriminator pass
        # through the generator then): run up to there first, and time steps that already pay for it
        warm = gan_warmup_steps(args.config, overrides)
        calib = args.calibration_steps
        first = sh(train_command(args, run_dir, warm, overrides, resume=False), env) if warm else 0.0
        timed = sh(train_command(args, run_dir, warm + calib, overrides, resume=bool(warm)), env)
        per_step = timed / calib  # start-up included: conservative
        steps = warm + calib + max(0, math.floor((args.minutes * 60.0 - first - timed) / per_step))
        print(
            f"{name}: {per_step:.2f} s/step over steps {warm}–{warm + calib} → {steps} steps in "
            f"{args.minutes} min"
        )
        rest = 0.0
        if steps > warm + calib:
            rest = sh(train_command(args, run_dir, steps, overrides, resume=True), env)
        seconds = first + timed + rest
    else:
        seconds = sh(train_command(args, run_dir, steps, overrides, resume=False), env)
    return {"run": str(run_dir), "steps": steps, "train_minutes": seconds / 60.0, "overrides": overrides}


def exported_model(run_dir: Path) -> Path:
    """A run's exported EMA model (``RUN/model``), or ``run_dir`` itself when it is a model directory."""
    return run_dir / "model" if (run_dir / "model" / "config.json").is_file() else run_dir


def evaluate(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """The cross-setting check of ``run_dir``'s exported model on the test split."""
    from diff2lip.evaluation.lipsync_check import cross_setting_check
    from diff2lip.inference.pipeline import Diff2LipPipeline

    model_dir = exported_model(run_dir)
    pipe = Diff2LipPipeline.from_pretrained(model_dir, device=args.device)

    def progress(done: int, total: int) -> None:
        print(f"\r  eval {model_dir}: {done}/{total} frames", end="", file=sys.stderr, flush=True)

    res = cross_setting_check(
        pipe,
        args.corpus,
        args.split,
        pairs=args.pairs,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        shuffle_audio=True,
        max_frames=args.frames,
        progress=progress,
    )
    print(file=sys.stderr)
    res["model"] = str(model_dir)
    return res


def command_line(argv: list[str]) -> str:
    """This script's command line as recorded with a shipped model."""
    return "benchmarks/train_synthetic_proof.py " + " ".join(argv[1:])


def training_record(run_dir: Path) -> dict[str, Any]:
    """How ``run_dir`` was trained, from its proof run's ``results.json`` (``{}`` if not made by this script)."""
    results, config = run_dir.parent / "results.json", exported_model(run_dir) / "config.json"
    if not (results.is_file() and config.is_file()):
        return {}
    data = json.loads(results.read_text())
    exported = json.loads(config.read_text()).get("extra", {})
    for row in data["rows"]:
        # a run resumed by hand after the script (e.g. to more steps) is no longer what the record says
        if Path(row["run"]).resolve() == run_dir.resolve() and row["steps"] == exported.get("step"):
            cmd = command_line(data["argv"])
            return {"steps": row["steps"], "train_minutes": row["train_minutes"], "train_command": cmd}
    return {}


def ship(row: dict[str, Any], argv: list[str]) -> Path:
    """Re-save ``row``'s exported EMA model as fp16 into the package's ``assets/demo_model``."""
    from diff2lip.demo import bundled_model_dir
    from diff2lip.models.serialization import load_pretrained, save_pretrained

    src = exported_model(Path(row["run"]))
    pm = load_pretrained(src)
    e = row["eval"]
    minutes = row.get("train_minutes")
    extra = {
        **pm.config_dict.get("extra", {}),
        "trained_with": row.get("train_command", command_line(argv)),
        "train_minutes": None if minutes is None else round(minutes, 1),
        "meets_targets": all(checks(e)),
        "heldout_r": round(e["r"], 4),
        "heldout_r_shuffled": round(e["r_shuffled"], 4),
        "eval": {k: e["settings"][k] for k in ("split", "pairs", "max_frames", "sampler", "steps", "seed")},
    }
    sampling = dict(pm.config_dict["sampling"])  # the demo samples as the proof measured
    for key in ("sampler", "steps"):
        if e["settings"][key] is not None:
            sampling[key] = e["settings"][key]
    out = bundled_model_dir()
    save_pretrained(
        pm.model,
        out,
        diffusion=pm.config_dict["diffusion"],
        sampling=sampling,
        extra=extra,
        dtype="fp16",
    )
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"shipped {src} as fp16 → {out} ({size / 2**20:.1f} MiB)")
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "undefined"
    if math.isinf(value):
        return "∞ (identical)" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| run | train minutes | steps | r (target ≥ 0.85) | r shuffled (target ≤ 0.1) | r per pair (mean) "
        "| input-mouth baseline r | anchor r | upper-half PSNR dB | eval pairs × frames | eval minutes |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    )
    lines = [head]
    for row in rows:
        e = row["eval"]
        s = e["settings"]
        minutes = row.get("train_minutes")
        lines.append(
            f"| {row['name']} | {fmt(minutes, 1) if minutes is not None else '—'} | {row.get('steps', '—')} "
            f"| {fmt(e['r'])} | {fmt(e['r_shuffled'])} | {fmt(e['r_per_pair_mean'])} "
            f"| {fmt(e['baseline_input_r'])} | {fmt(e['anchor_r'])} | {fmt(e['upper_half_psnr_db'], 1)} "
            f"| {s['pairs']} × ≤{s['max_frames'] or 'all'} ({e['frames']} frames) | {e['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)


def checks(e: dict[str, Any]) -> tuple[bool, bool, bool]:
    """The three targets of an evaluation: r, the shuffled control, the untouched upper half."""
    r, rs = e["r"], e["r_shuffled"]
    return (
        r is not None and r >= TARGET_R,
        rs is not None and abs(rs) <= TARGET_SHUFFLED,
        bool(e["upper_half_identical"]),
    )


def verdict(e: dict[str, Any]) -> str:
    ok_r, ok_s, ok_u = checks(e)
    return (
        f"r {'pass' if ok_r else 'FAIL'}, shuffled {'pass' if ok_s else 'FAIL'}, "
        f"upper half {'identical' if ok_u else 'CHANGED'}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="synthetic corpus (made here if missing)")
    p.add_argument("--clips", type=int, default=200, help="corpus clips when making it (default 200)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per clip when making it (default 4)")
    p.add_argument("--corpus-seed", type=int, default=0, help="corpus seed when making it (default 0)")
    p.add_argument("--workers", type=int, default=2, help="synth worker processes (default 2)")
    p.add_argument("--syncnet", type=Path, default=None, help="the trained SyncNet expert directory")
    p.add_argument("--run", type=Path, default=None, help="parent of the run directories (RUN/main, ...)")
    p.add_argument("--config", default="synthetic", help="training config (default: packaged synthetic)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="training time budget of the main run")
    budget.add_argument("--max-steps", type=int, default=None, help="training steps of every run")
    p.add_argument(
        "--calibration-steps", type=int, default=30, help="steps timed for --minutes, after the GAN warm-up"
    )
    p.add_argument("--nproc", type=int, default=1, help="train with torchrun on N CPU processes (default 1)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run"
    )
    p.add_argument("--ablation", action="append", default=[], choices=sorted(ABLATIONS), help="repeatable")
    p.add_argument("--eval-only", type=Path, default=None, metavar="RUN_DIR", help="only evaluate this run")
    p.add_argument(
        "--ship",
        action="store_true",
        help="if the main run (or --eval-only's) meets every target, bundle its model as fp16 into "
        "src/diff2lip/assets/demo_model",
    )
    p.add_argument(
        "--ship-below-target",
        action="store_true",
        help="bundle it even if it missed a target (recorded in its config.json as meets_targets: false)",
    )
    g = p.add_argument_group("evaluation")
    g.add_argument("--split", default="test", help="held-out split to evaluate on (default test)")
    g.add_argument("--pairs", type=int, default=10, help="(video, audio) pairs (default 10)")
    g.add_argument("--frames", type=int, default=75, help="frames per pair at most (default 75 = 3 s)")
    g.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's, 25)")
    g.add_argument("--sampler", default=None, help="sampler (default: the model's, ddim)")
    g.add_argument("--seed", type=int, default=7, help="shared noise / shuffle seed (default 7)")
    g.add_argument("--device", default="cpu", help="device for the evaluation (default cpu)")
    args = p.parse_args()

    if args.eval_only is not None:
        e = evaluate(args, args.eval_only)
        print(json.dumps({k: v for k, v in e.items() if k != "pairs"}, indent=1))
        print(verdict(e))
        row = {
            "name": str(args.eval_only),
            "run": str(args.eval_only),
            **training_record(args.eval_only),
            "eval": e,
        }
        print(markdown([row]))
        maybe_ship(args, row)
        return 0
    if args.syncnet is None or args.run is None:
        p.error("--syncnet and --run are required unless --eval-only")
    if args.minutes is None and args.max_steps is None:
        p.error("give a training budget: --minutes or --max-steps")

    ensure_corpus(args, config_image_size(args.config))
    rows: list[dict[str, Any]] = []
    main_run = train(args, "main", list(args.set), args.max_steps)
    rows.append({"name": f"main ({args.config})", **main_run})
    for name in args.ablation:
        rows.append({"name": name, **train(args, name, [*args.set, *ABLATIONS[name]], main_run["steps"])})
    for row in rows:
        row["eval"] = evaluate(args, Path(row["run"]))
        print(f"{row['name']}: {verdict(row['eval'])}")
    out = args.run / "results.json"
    out.write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1) + "\n")
    print(f"\nwrote {out}\n")
    print(markdown(rows))
    maybe_ship(args, rows[0])
    return 0


def maybe_ship(args: argparse.Namespace, row: dict[str, Any]) -> None:
    """``--ship``: bundle ``row``'s model if it met every target; ``--ship-below-target``: bundle it anyway
    (its ``config.json`` then says ``"meets_targets": false``, with the measured numbers beside it)."""
    if not (args.ship or args.ship_below_target):
        return
    if all(checks(row["eval"])) or args.ship_below_target:
        ship(row, sys.argv)
    else:
        print("not shipped: the main run missed a target (--ship-below-target bundles it anyway)")


if __name__ == "__main__":
    from diff2lip.errors import Diff2LipError

    try:
        sys.exit(main())
    except (Diff2LipError, FileNotFoundError) as exc:
        sys.exit(f"train_synthetic_proof: {exc}")
