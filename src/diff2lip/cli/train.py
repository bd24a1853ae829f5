"""``diff2lip train CONFIG``: train Diff2Lip with every loss of the paper (one process or ``torchrun``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORDER = 55

EPILOG = """\
examples:
  diff2lip train synthetic --data-dir data/synth --syncnet SYNCNET_DIR --out runs/synthetic
  diff2lip train synthetic --data-dir data/synth --syncnet SYNCNET_DIR --out runs/synthetic --resume
  diff2lip train synthetic ... --set losses.lambda_gan=0 --set train.max_steps=500   (ablation)
  torchrun --nproc-per-node 2 -m diff2lip train paper_train --data-dir data/lrs2 --syncnet sync/ --out runs/p

CONFIG is a YAML file or a packaged name: train_tiny (tests), synthetic (the CPU run on `diff2lip synth`
data), paper_train (the paper's model). Unknown keys are errors. The run directory gets config.yaml,
checkpoints/ (every train.checkpoint_every steps, atomic), tb/ (TensorBoard: `tensorboard --logdir RUN_DIR`)
and model/ (the EMA weights: config.json + model.safetensors, for `diff2lip generate --checkpoint`).
--resume continues from the newest checkpoint exactly (same data order, noise, optimizer state).
LPIPS needs torchvision's alexnet-owt-7be5be79.pth (looked up in the torch hub cache) and the LPIPS heads
alex.pth (inside the `lpips` pip package); set losses.lpips.*_path or losses.lambda_lpips=0.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a Diff2Lip model (paper eq. 9: L_simple, L2, sync, LPIPS, GAN); DDP via torchrun",
        description=(
            "Train the Diff2Lip UNet on a prepared data directory (`diff2lip preprocess` or `diff2lip synth`) "
            "with the paper's losses, EMA, checkpoints and TensorBoard logs; resumable and distributed."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", metavar="CONFIG", help="training YAML, or a packaged name (synthetic, paper_train)"
    )
    p.add_argument(
        "--out", default=None, metavar="RUN_DIR", help="run directory (default runs/<config name>)"
    )
    p.add_argument("--syncnet", default=None, metavar="DIR", help="override losses.syncnet_dir")
    add_run_arguments(p)
    p.set_defaults(func=run)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The flags ``train`` and ``distill`` share (one definition)."""
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in RUN_DIR")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="override train.max_steps")
    p.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        default=None,
        help="override data.data_dir (a prepared data directory)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set losses.lambda_gan=0 (repeatable; values parsed as YAML)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default auto)")
    from diff2lip.cli._generate_options import add_progress_option

    add_progress_option(p)


def run_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` plus the shortcut flags of :func:`add_run_arguments` as config overrides."""
    from diff2lip.errors import Diff2LipError

    overrides = list(args.set)
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.max_steps is not None:
        if args.max_steps < 0:
            raise Diff2LipError(f"--max-steps must be >= 0, got {args.max_steps}")
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.quiet:
        overrides.append("train.progress=false")
    return overrides


def fit_run(args: argparse.Namespace, run_dir: Path, build, announce=None) -> int:
    """Build the trainer (``build(dist_info, log)``) on every rank, resume if asked, fit, print the model dir."""
    from diff2lip.errors import Diff2LipError
    from diff2lip.train.checkpoint import latest_checkpoint
    from diff2lip.train.distributed import cleanup_distributed, init_distributed

    info = init_distributed(args.device)
    try:
        if latest_checkpoint(run_dir / "checkpoints") is not None and not args.resume:
            raise Diff2LipError(
                "the run directory already holds checkpoints; pass --resume to continue or choose another --out",
                run_dir,
            )
        log = (lambda msg: print(msg, file=sys.stderr)) if info.is_main else None
        trainer = build(info, log)
        if announce is not None and info.is_main:
            announce(trainer)
        if args.resume:
            used = trainer.resume()
            if info.is_main:
                print(f"resuming from {used} (step {trainer.step})", file=sys.stderr)
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
        if info.is_main and summary.model_dir is not None:
            print(summary.model_dir)
    finally:
        cleanup_distributed()
    return 0


def run(args: argparse.Namespace) -> int:
    from diff2lip.train.config import load_train_config
    from diff2lip.train.trainer import Trainer

    overrides = run_overrides(args)
    if args.syncnet is not None:
        overrides.append(f"losses.syncnet_dir={args.syncnet}")
    cfg = load_train_config(args.config, overrides)
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    return fit_run(args, run_dir, lambda info, log: Trainer(cfg, run_dir, dist=info, log=log))
