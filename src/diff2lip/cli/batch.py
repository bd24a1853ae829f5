"""``diff2lip batch MANIFEST``: lip-sync many rows with one model load (issue 6)."""

from __future__ import annotations

import argparse

ORDER = 15

EPILOG = """\
Manifest: CSV with header video,audio,output or JSONL objects with those keys; relative paths are
relative to the manifest's folder. Every generate option below applies to every row; these columns set
one for their row (empty: the flag's value): reference, length, crf, blend, face_id, steps, seed, sampler,
audio_codec, pads and box (four numbers separated by spaces). With --output-root DIR, relative outputs are
relative to DIR and every output must resolve inside it (a row writing elsewhere fails with a one-line
reason).

Behaviour: rows whose output exists are skipped (resumable); a failing row is reported and the others go
on; failures are listed at the end and the exit status is then 1. Under torchrun every process takes the
rows RANK, RANK+WORLD_SIZE, ... (e.g. `torchrun --nproc_per_node 4 -m diff2lip batch rows.csv CKPT`).

Examples:
  diff2lip batch jobs.csv paper --crf 10 --length video
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
    from diff2lip.cli._generate_options import add_job_options, add_model_options, add_progress_option
    from diff2lip.models.named import names_help

    p.add_argument("manifest", metavar="MANIFEST", help="CSV or JSONL rows of video,audio,output[,options]")
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help=f"model directory, the official .pt file, or {names_help()}",
    )
    p.add_argument(
        "--output-root",
        metavar="DIR",
        default=None,
        help="write outputs only inside DIR (relative outputs are relative to it; default: no restriction)",
    )
    add_model_options(p, checkpoint=False)
    add_job_options(p, batch=True)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from diff2lip.cli._generate_options import crf_warning, options_from_args
    from diff2lip.inference.batch import pipeline_generator, read_manifest, run_batch, shard, shard_from_env
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.models.named import resolve_model

    rank, world = shard_from_env()
    rows = shard(read_manifest(args.manifest, args.output_root), rank, world)
    device = args.device
    if device == "auto" and world > 1 and "LOCAL_RANK" in os.environ:
        import torch

        from diff2lip.train.distributed import resolve_device

        if torch.cuda.is_available():  # one GPU per torchrun process, picked as the trainers pick theirs
            device = resolve_device("cuda", int(os.environ["LOCAL_RANK"]))
    options = options_from_args(args)
    warning = crf_warning(args)
    if warning:
        print(warning, file=sys.stderr)
    todo = [r for r in rows if not r.output.is_file()]
    generate = None
    if todo:
        pipeline = Diff2LipPipeline.from_pretrained(
            resolve_model(args.checkpoint), device=device, dtype=args.dtype
        )
        generate = pipeline_generator(pipeline, options)
    report = run_batch(
        rows,
        generate or (lambda row: None),
        progress=not args.quiet,
        desc=f"batch[{rank}/{world}]",
        output_root=args.output_root,
    )
    sys.stdout.write(f"[rank {rank}/{world}] " + report.summary() + "\n")
    return 1 if report.failed else 0
