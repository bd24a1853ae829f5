"""Few-step students (issue 14): the speed–quality table and the side-by-side speed check, as one script.

``table``: for every row — the teacher (default: the bundled demo model's teacher) with DDIM 25 / 10 / 5 and
DPM-Solver++ 25 / 10 / 5, and each student directory given with ``--student K=DIR`` — on the **test**
split of a ``diff2lip synth`` corpus (unseen faces and voices):

* the cross-setting lip-sync check of the bundled model's proof (:func:`cross_setting_check`: video of clip
  A, speech of clip B, each frame its own reference, ``--pairs`` × ``--frames``, seed 7): pooled mouth-openness
  r against B's truth, the same with B's audio shuffled in time, upper half bit-identical;
* the reconstruction setting (a clip's own audio; its first frame is the reference, as the paper's
  reconstruction benchmark): PSNR and SSIM of the generated lower half against the ground-truth frames,
  and PSNR of the lower half against the teacher's own sampler (``--teacher-sampler`` / ``--teacher-steps``,
  default DPM-Solver++ 10: what the students were distilled from);
* CPU seconds per output frame, every row timed in this process on the same frames (best of ``--repeats``,
  rows interleaved per repeat), with the ratio to DDIM-25.

``speed``: seconds per output frame of the teacher's DPM-Solver++ 10 vs the K-step students, interleaved
(A B C A B C …) in one process on the same frames, for the synthetic model and for the paper-size UNet
(random weights, ``src/diff2lip/configs/paper.yaml``; the cost is the UNet passes). Examples::

    python benchmarks/distill_proof.py table --corpus data/synth --student 2=runs/k2/model \\
        --student 1=runs/k1/model --student 4=runs/k4/model --json table.json
    python benchmarks/distill_proof.py speed --corpus data/synth --student 2=runs/k2/model --student 1=runs/k1/model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

QUALITY = ("r", "r_per_pair", "r_shuffled", "upper_identical", "psnr", "ssim", "psnr_vs_teacher")
UPPER = {True: "identical", False: "DIFFERS", None: "not recorded"}
TEACHER_ROWS = [("ddim", 25), ("ddim", 10), ("ddim", 5), ("dpmpp", 25), ("dpmpp", 10), ("dpmpp", 5)]


def parse_students(items: list[str]) -> list[tuple[int, Path]]:
    out = []
    for item in items:
        k, sep, d = item.partition("=")
        if not sep or not k.isdigit():
            sys.exit(f"distill_proof: --student expects K=DIR, got '{item}'")
        if not (Path(d) / "config.json").is_file():
            sys.exit(f"distill_proof: {d}: not a model directory (no config.json)")
        out.append((int(k), Path(d)))
    return sorted(out, reverse=True)


def recon_inputs(corpus: str, clips: int, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reconstruction setting on the first ``clips`` test clips: faces, own mel windows, first-frame refs."""
    from diff2lip.audio import frame_times, mel_windows
    from diff2lip.data import layout
    from diff2lip.evaluation.lipsync_check import FPS, load_clip

    faces, mels, refs = [], [], []
    for cid in layout.read_filelist(corpus, "test")[:clips]:
        c = load_clip(corpus, cid)
        n = min(frames, len(c.faces))
        faces.append(c.faces[:n])
        mels.append(mel_windows(c.mel, frame_times(n, FPS)))
        refs.append(np.repeat(c.faces[:1], n, axis=0))
    return np.concatenate(faces), np.concatenate(mels), np.concatenate(refs)


def lower(x: np.ndarray) -> np.ndarray:
    return x[:, x.shape[1] // 2 :]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def table(args: argparse.Namespace) -> int:
    from diff2lip.evaluation.lipsync_check import cross_setting_check
    from diff2lip.evaluation.metrics import psnr, ssim
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.train.distill import resolve_teacher

    teacher = Diff2LipPipeline.from_pretrained(resolve_teacher(args.teacher), device="cpu")
    rows: list[dict[str, Any]] = [
        {
            "name": f"{'DDIM' if s == 'ddim' else 'DPM-Solver++'} {n}",
            "pipe": teacher,
            "sampler": s,
            "steps": n,
        }
        for s, n in TEACHER_ROWS
    ]
    for k, d in parse_students(args.student):
        rows.append(
            {
                "name": f"student K = {k}",
                "pipe": Diff2LipPipeline.from_pretrained(d, device="cpu"),
                "sampler": None,
                "steps": None,
                "model": str(d),
            }
        )
        if args.untrained:  # the teacher's weights on the student's grid: what the distillation itself adds
            student = rows[-1]["pipe"]
            rows.append(
                {
                    "name": f"teacher on the K = {k} grid (untrained)",
                    "pipe": dataclasses.replace(teacher, sampling=student.sampling),
                    "sampler": None,
                    "steps": None,
                }
            )
    if args.only:
        rows = [r for r in rows if r["name"] in args.only]
    faces, mels, refs = recon_inputs(args.corpus, args.recon_clips, args.recon_frames)
    reference = teacher(faces, mels, refs, sampler=args.teacher_sampler, steps=args.teacher_steps)
    timing_faces, timing_mels = faces[: args.timing_frames], mels[: args.timing_frames]

    # speed: every row on the same frames, rows interleaved within each repeat
    for r in rows:
        r["seconds"] = []
        r["passes"] = r["steps"] or r["pipe"].sampling.steps
    for _ in range(0 if args.no_timing else args.repeats):
        for r in rows:
            _, sec = timed(r["pipe"], timing_faces, timing_mels, sampler=r["sampler"], steps=r["steps"])
            r["seconds"].append(sec / len(timing_faces))
    for r in rows:
        r["sec_per_frame"] = min(r["seconds"]) if r["seconds"] else None
        if r["seconds"]:
            print(f"{r['name']}: {r['sec_per_frame']:.4f} s/frame", file=sys.stderr, flush=True)

    reused = {}
    if args.reuse:
        reused = {row["name"]: row for row in json.loads(Path(args.reuse).read_text())["rows"]}
    for r in rows:
        if r["name"] in reused:  # quality numbers measured earlier by this script (same settings)
            old = reused[r["name"]]
            r.update({k: old[k] for k in QUALITY})
            continue
        res = cross_setting_check(
            r["pipe"],
            args.corpus,
            "test",
            pairs=args.pairs,
            max_frames=args.frames,
            shuffle_audio=True,
            seed=args.seed,
            sampler=r["sampler"],
            steps=r["steps"],
        )
        gen = r["pipe"](faces, mels, refs, sampler=r["sampler"], steps=r["steps"])
        r.update(
            r=res["r"],
            r_per_pair=res["r_per_pair_mean"],
            r_shuffled=res["r_shuffled"],
            upper_identical=res["upper_half_identical"],
            psnr=float(np.mean(psnr(lower(gen), lower(faces)))),
            ssim=float(np.mean(ssim(lower(gen), lower(faces)))),
            psnr_vs_teacher=float(
                np.mean(np.minimum(psnr(lower(gen), lower(reference)), 99.0))
            ),  # 99: identical
        )
        if args.json:  # after every row, so a stopped run keeps what it measured
            write_json(args, rows)
        print(
            f"{r['name']}: r {r['r']:.3f} shuffled {r['r_shuffled']:.3f} PSNR {r['psnr']:.2f} "
            f"SSIM {r['ssim']:.4f} vs teacher {r['psnr_vs_teacher']:.2f}",
            file=sys.stderr,
            flush=True,
        )

    base = next((r["sec_per_frame"] for r in rows if r["name"] == "DDIM 25"), None)

    def num(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    print(
        "| sampler | UNet passes / frame | CPU s / frame | × vs DDIM-25 | pooled r (≥ 0.85) | shuffled r "
        "(≤ 0.1) | upper half | recon PSNR (dB) | recon SSIM | PSNR vs teacher (dB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        sec = r["sec_per_frame"]
        speed = f"{base / sec:.1f}×" if base and sec else "–"
        vs_teacher = "(the reference)" if r["psnr_vs_teacher"] >= 99 else f"{r['psnr_vs_teacher']:.2f}"
        print(
            f"| {r['name']} | {r['passes']} | {num(sec, '.3f')} | {speed} | {r['r']:.3f} | "
            f"{r['r_shuffled']:.3f} | {UPPER[r['upper_identical']]} | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {vs_teacher} |"
        )
    if args.json:
        write_json(args, rows)
    return 0


def write_json(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Every measured row (quality, and timing when measured) and the settings, as JSON."""
    keep = [{k: v for k, v in r.items() if k != "pipe"} for r in rows if "r" in r]
    Path(args.json).write_text(json.dumps({"settings": vars(args) | {"func": None}, "rows": keep}, indent=2))


def paper_pipelines(ks: list[int]) -> list[tuple[str, Any, str | None, int | None]]:
    """The paper-size UNet with random weights: the teacher's samplers and K-step students (same weights)."""
    import torch

    from diff2lip.diffusion import DiffusionConfig, GaussianDiffusion, SamplingConfig, dpmpp_timesteps
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.models.serialization import paper_config
    from diff2lip.models.unet import Diff2LipUNet
    from diff2lip.train.distill import student_segments

    torch.manual_seed(0)
    model = Diff2LipUNet(paper_config()).eval().requires_grad_(False)
    diffusion = GaussianDiffusion.from_config(DiffusionConfig())
    teacher = Diff2LipPipeline(
        model, diffusion, SamplingConfig("dpmpp", 10), torch.device("cpu"), channels_last=True
    )
    out = [("paper UNet DPM-Solver++ 10", teacher, "dpmpp", 10)]
    ts = dpmpp_timesteps(diffusion, 10)
    for k in ks:
        sampling = SamplingConfig("distilled", k, timesteps=[int(ts[j]) for j in student_segments(ts, k)])
        out.append(
            (
                f"paper UNet student K = {k}",
                Diff2LipPipeline(model, diffusion, sampling, torch.device("cpu"), channels_last=True),
                None,
                None,
            )
        )
    return out


def speed(args: argparse.Namespace) -> int:
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.train.distill import resolve_teacher

    students = parse_students(args.student)
    teacher = Diff2LipPipeline.from_pretrained(resolve_teacher(args.teacher), device="cpu")
    groups = {
        "synthetic": [("teacher DPM-Solver++ 10", teacher, "dpmpp", 10)]
        + [
            (f"student K = {k}", Diff2LipPipeline.from_pretrained(d, device="cpu"), None, None)
            for k, d in students
        ],
    }
    if not args.skip_paper:
        groups["paper"] = paper_pipelines([k for k, _ in students])
    for name, rows in groups.items():
        size = rows[0][1].image_size
        faces, mels, _ = recon_inputs(args.corpus, 1, 100) if name == "synthetic" else (None, None, None)
        n = args.frames if name == "synthetic" else args.paper_frames
        if faces is None or faces.shape[1] != size:
            rng = np.random.default_rng(0)
            faces = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            mels = rng.uniform(-4, 4, (n, 80, 16)).astype(np.float32)
        faces, mels = faces[:n], mels[:n]
        times: dict[str, list[float]] = {r[0]: [] for r in rows}
        for _ in range(args.repeats):
            for label, pipe, sampler, steps in rows:
                _, sec = timed(pipe, faces, mels, sampler=sampler, steps=steps)
                times[label].append(sec / n)
        base = min(times[rows[0][0]])
        print(f"\n{name} model, {n} frames, best of {args.repeats} interleaved repeats")
        print("| sampler | UNet passes / frame | s / frame | speed-up vs teacher DPM-Solver++ 10 |")
        print("|---|---:|---:|---:|")
        for label, pipe, _sampler, steps in rows:
            best = min(times[label])
            print(f"| {label} | {steps or pipe.sampling.steps} | {best:.4f} | {base / best:.2f}× |")
    return 0


def ship(args: argparse.Namespace) -> int:
    """Re-save a student as fp16 into ``--out`` (the package's ``assets/demo_model`` when shipping), with its record.

    With ``--keep-teacher`` the bundled model it was distilled from is first copied to
    ``assets/demo_teacher`` (once), so the teacher rows of ``table`` and ``diff2lip distill demo-teacher``
    still work from a clean checkout.
    """
    import shutil

    from diff2lip.demo import bundled_model_dir, bundled_teacher_dir
    from diff2lip.models.serialization import load_pretrained, save_pretrained

    (k, src), *_ = parse_students(args.student)
    row = next(r for r in json.loads(Path(args.table).read_text())["rows"] if r["name"] == f"student K = {k}")
    if args.keep_teacher and not (bundled_teacher_dir() / "config.json").is_file():
        shutil.copytree(bundled_model_dir(), bundled_teacher_dir())
    pm = load_pretrained(src)
    extra = {
        **pm.config_dict.get("extra", {}),
        "teacher": "demo-teacher (assets/demo_teacher: the bundled model before distillation)",
        "distilled_with": args.trained_with,
        "distill_minutes": args.minutes,
        "meets_targets": bool(row["r"] >= 0.85 and row["r_shuffled"] <= 0.1 and row["upper_identical"]),
        "heldout_r": round(row["r"], 4),
        "heldout_r_shuffled": round(row["r_shuffled"], 4),
        "recon_psnr_db": round(row["psnr"], 2),
        "psnr_vs_teacher_db": round(row["psnr_vs_teacher"], 2),
    }
    out = Path(args.out) if args.out else bundled_model_dir()
    save_pretrained(
        pm.model,
        out,
        diffusion=pm.config_dict["diffusion"],
        sampling=pm.config_dict["sampling"],
        extra=extra,
        dtype="fp16",
    )
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"shipped {src} as fp16 → {out} ({size / 2**20:.1f} MiB); meets_targets {extra['meets_targets']}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ship", help="re-save a student as fp16 (the bundled demo model by default)")
    p.add_argument("--student", action="append", required=True, metavar="K=DIR")
    p.add_argument("--table", required=True, help="the table's --json output with the student's row")
    p.add_argument("--trained-with", required=True, help="the distill command line")
    p.add_argument("--minutes", type=float, required=True, help="its wall-clock minutes")
    p.add_argument(
        "--keep-teacher", action="store_true", help="copy the current bundled model to demo_teacher"
    )
    p.add_argument("--out", default=None, help="default: the package's assets/demo_model")
    p.set_defaults(func=ship, corpus=None)
    for name, fn in (("table", table), ("speed", speed)):
        p = sub.add_parser(name)
        p.add_argument("--corpus", required=True, help="a diff2lip synth corpus (its test split)")
        p.add_argument(
            "--teacher",
            default="demo-teacher",
            help="teacher model directory (default: the bundled demo model's teacher, assets/demo_teacher)",
        )
        p.add_argument("--student", action="append", default=[], metavar="K=DIR", help="a K-step student")
        p.add_argument("--repeats", type=int, default=2)
        p.set_defaults(func=fn)
        if name == "table":
            p.add_argument("--pairs", type=int, default=6)
            p.add_argument("--frames", type=int, default=50)
            p.add_argument("--seed", type=int, default=7)
            p.add_argument("--recon-clips", type=int, default=6)
            p.add_argument("--recon-frames", type=int, default=20)
            p.add_argument("--timing-frames", type=int, default=20)
            p.add_argument("--teacher-sampler", default="dpmpp")
            p.add_argument("--teacher-steps", type=int, default=10)
            p.add_argument("--only", action="append", default=[], help="only this row name (repeatable)")
            p.add_argument("--json", default=None, help="also write every number here")
            p.add_argument("--no-timing", action="store_true", help="quality columns only")
            p.add_argument(
                "--untrained", action="store_true", help="also the teacher's weights on each student's grid"
            )
            p.add_argument(
                "--reuse",
                default=None,
                help="take the quality columns of rows of this --json output (same name)",
            )
        else:
            p.add_argument("--frames", type=int, default=40, help="frames of the synthetic model")
            p.add_argument("--paper-frames", type=int, default=1, help="frames of the paper-size UNet")
            p.add_argument("--skip-paper", action="store_true")
    args = ap.parse_args()
    if args.corpus is not None and not (Path(args.corpus) / "filelists" / "test.txt").is_file():
        sys.exit(f"distill_proof: {args.corpus}: not a diff2lip synth corpus (no filelists/test.txt)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
