"""``diff2lip distill TEACHER``: a few-step (K = 1, 2, 4) student of any Diff2Lip model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diff2lip.cli.train import add_run_arguments, fit_run, run_overrides

ORDER = 56

EPILOG = """\
examples:
  diff2lip distill demo-teacher --config distill_synthetic --data-dir data/synth --out runs/demo-k2 --steps 2
  diff2lip distill models/diff2lip-paper --config distill_paper --data-dir data/lrs2 --out runs/paper-k2 --steps 2
  diff2lip distill demo-teacher --config distill_synthetic --data-dir data/synth --out runs/demo-k2 --steps 2 --resume
  torchrun --nproc-per-node 8 -m diff2lip distill models/diff2lip-paper --config distill_paper ...
  diff2lip generate talk.mp4 speech.wav -o synced.mp4 --checkpoint runs/demo-k2/model   (K steps, no flags)

TEACHER is a model directory (config.json + model.safetensors: `diff2lip convert`, `diff2lip train`, or an
earlier student), `demo` (the bundled demo model, itself a 2-step student) or `demo-teacher` (its
teacher). The student has the teacher's architecture and starts from its weights; it learns to reach in K
DDIM steps what the teacher's sampler (its config.json's, or distill.teacher_sampler/teacher_steps)
produces from the same masked frame, reference,
audio and shared noise (multi-step progressive distillation, Salimans & Ho 2022; README "Few-step models").
RUN_DIR gets what `diff2lip train` writes: config.yaml, checkpoints/ (atomic; --resume continues exactly),
tb/ (TensorBoard) and model/ — the student, whose sampling section (sampler "distilled", K steps) makes
`generate --checkpoint RUN_DIR/model` use it with no extra flags.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distill any Diff2Lip model into a 1-4 step student (K times fewer UNet passes)",
        description=(
            "Train a K-step student of a Diff2Lip model on a prepared data directory (`diff2lip preprocess` "
            "or `diff2lip synth`): same trainer machinery as `diff2lip train` (EMA, exact resume, TensorBoard, "
            "torchrun DDP)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "teacher", metavar="TEACHER", help="teacher model directory, or 'demo' (the bundled model)"
    )
    p.add_argument(
        "--config",
        default="distill_paper",
        help="distillation YAML or packaged name: distill_paper (default), distill_synthetic, distill_tiny",
    )
    p.add_argument(
        "--steps", type=int, default=None, metavar="K", help="student steps (default: the config's, 2)"
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diff2lip.data import layout
    from diff2lip.errors import Diff2LipError
    from diff2lip.train.distill import Distiller, load_distill_config

    overrides = run_overrides(args)
    if args.steps is not None:
        overrides.append(f"distill.steps={args.steps}")
    cfg = load_distill_config(args.config, args.teacher, overrides)
    if cfg.data.data_dir is None:
        raise Diff2LipError(
            "no training data: pass --data-dir (a `diff2lip preprocess` or `diff2lip synth` output)"
        )
    if not layout.read_filelist(cfg.data.data_dir, cfg.data.split):
        raise Diff2LipError(f"no clips in the '{cfg.data.split}' split", Path(cfg.data.data_dir))
    run_dir = Path(args.out)

    def announce(d: Distiller) -> None:
        ts = d.student_timesteps
        print(
            f"distilling {cfg.distill.teacher_dir} ({d.teacher_sampling.sampler} {len(d.teacher_timesteps)} "
            f"evaluations) into a {len(ts)}-step student at t = {ts}",
            file=sys.stderr,
        )

    return fit_run(args, run_dir, lambda info, log: Distiller(cfg, run_dir, dist=info, log=log), announce)
