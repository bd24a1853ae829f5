"""``diff2lip batch MANIFEST``: lip-sync many rows with one model load (issue 6)."""

from __future__ import annotations

import argparse

ORDER = 15

EPILOG = """\
Manifest: CSV with header video,audio,output[,reference] or JSONL objects with those keys; relative paths
are relative to the manifest's folder. `reference` is as generate's --reference (self, first, frame:N,
image:PATH). With --output-root DIR, relative outputs are relative to DIR and every output must resolve
inside it (a row writing elsewhere fails with a one-line reason).

Behaviour: rows whose output exists are skipped (resumable); a failing row is reported and the others go
on; failures are listed at the end and the exit status is then 1. Under torchrun every process takes the
rows RANK, RANK+WORLD_SIZE, ... (e.g. `torchrun --nproc_per_node 4 -m diff2lip batch rows.csv CKPT`).

Examples:
  diff2lip batch jobs.csv models/diff2lip --sampler ddim --steps 25
  torchrun --nproc_per_node 2 -m diff2lip batch jobs.jsonl e7.24.1.3_model260000_paper.pt
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="lip-sync many (video, audio, output) rows; resumable, sharded under torchrun",
        description="Run diff2lip generate over a manifest of rows with a single model load.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", metavar="MANIFEST", help="CSV or JSONL rows of video,audio,output[,reference]")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model directory or official .pt checkpoint")
    p.add_argument("--sampler", default=None, help="sampler (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--detector", default="dlib", help="face detector: dlib (default), dlib-cnn, s3fd")
    p.add_argument("--device", default="auto", help="auto|cuda|mps|cpu (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument(
        "--output-root",
        metavar="DIR",
        default=None,
        help="write outputs only inside DIR (relative outputs are relative to it; default: no restriction)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from diff2lip.inference.batch import pipeline_generator, read_manifest, run_batch, shard, shard_from_env
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import GenerateOptions

    rank, world = shard_from_env()
    rows = shard(read_manifest(args.manifest, args.output_root), rank, world)
    device = args.device
    if device == "auto" and world > 1 and "LOCAL_RANK" in os.environ:
        import torch

        from diff2lip.train.distributed import resolve_device

        if torch.cuda.is_available():  # one GPU per torchrun process, picked as the trainers pick theirs
            device = resolve_device("cuda", int(os.environ["LOCAL_RANK"]))
    todo = [r for r in rows if not r.output.is_file()]
    generate = None
    if todo:
        pipeline = Diff2LipPipeline.from_pretrained(args.checkpoint, device=device)
        generate = pipeline_generator(
            pipeline, GenerateOptions(detector=args.detector, sampler=args.sampler, steps=args.steps)
        )
    report = run_batch(
        rows,
        generate or (lambda row: None),
        progress=not args.no_progress,
        desc=f"batch[{rank}/{world}]",
        output_root=args.output_root,
    )
    sys.stdout.write(f"[rank {rank}/{world}] " + report.summary() + "\n")
    return 1 if report.failed else 0
