"""``diff2lip train-syncnet CONFIG``: train the SyncNet lip-sync expert (issue 4)."""

from __future__ import annotations

import argparse

ORDER = 50

EPILOG = """\
What it does:
  Trains the audio-visual sync expert that Diff2Lip's sync loss needs (Wav2Lip's expert recipe): pairs
  of 5 consecutive lower-face crops and one 0.2 s mel window, half in sync, half off sync (the same clip
  shifted by >= min_offset frames, or another clip), BCE on the cosine score. Reads a prepared data
  directory (`diff2lip preprocess` or `diff2lip synth`); validates on its val filelist.

Writes into RUN_DIR (out_dir):
  config.yaml, checkpoints/step_*/ (atomic: config, weights, optimizer, step, RNG states),
  best/ (lowest validation loss so far), model/ (the exported expert: config.json + model.safetensors,
  what `diff2lip sync-offset --syncnet` and Diff2Lip training load), history.jsonl, tb/ (TensorBoard).

Configs:
  Every model and optimizer number lives in the YAML (unknown keys are errors). CONFIG is a path or a
  packaged name: syncnet_synthetic (CPU-sized, for the synthetic corpus) or syncnet_tiny (tests); the
  files are in src/diff2lip/configs/.

Examples:
  diff2lip train-syncnet syncnet_synthetic --data data/synth --out runs/syncnet
  diff2lip train-syncnet syncnet_synthetic --data data/synth --out runs/syncnet --resume
  torchrun --nproc-per-node 2 -m diff2lip train-syncnet syncnet_synthetic --data data/synth --out runs/syncnet-ddp
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from diff2lip.cli._generate_options import add_progress_option

    p = subparsers.add_parser(
        "train-syncnet",
        help="train the SyncNet lip-sync expert (one process or torchrun DDP)",
        description=(
            "Train the SyncNet expert (face lower halves vs. mel windows, cosine score, BCE) on a "
            "prepared data directory, with validation, atomic checkpoints, --resume and TensorBoard."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config",
        metavar="CONFIG",
        help="training config YAML (a SyncNetTrainConfig) or a packaged name: syncnet_synthetic, syncnet_tiny",
    )
    p.add_argument("--data", default=None, help="prepared data directory (overrides data_dir)")
    p.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (overrides out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in RUN_DIR")
    p.add_argument("--max-steps", type=int, default=None, help="total optimizer steps (overrides max_steps)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="PyTorch CPU threads per process (default: PyTorch's choice; 1 is fastest on a busy machine, "
        "and under torchrun each process should get its share of the cores)",
    )
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from diff2lip.config import config_path, load_config
    from diff2lip.errors import Diff2LipError
    from diff2lip.train.syncnet_trainer import SyncNetTrainConfig, train_syncnet

    cfg = load_config(SyncNetTrainConfig, config_path(args.config, "training config"))
    if args.threads is not None:
        if args.threads < 1:
            raise Diff2LipError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.data is not None:
        cfg.data_dir = args.data
    if args.out is not None:
        cfg.out_dir = args.out
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    result = train_syncnet(cfg, resume=args.resume, device=args.device, progress=not args.quiet)
    if result.model_dir is not None:
        best = (
            f"best val acc {result.best_val_acc:.2%} (loss {result.best_val_loss:.4f}) at step {result.best_step}"
            if result.best_step is not None
            else "no validation"
        )
        print(
            f"train-syncnet: {result.step} steps in {result.seconds:.0f} s; {best}; model → {result.model_dir}"
        )
    return 0
