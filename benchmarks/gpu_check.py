"""The GPU check (issue 14): one script, a few minutes on one GPU; tests never depend on it.

(a) precision: fp16 and bf16 autocast vs fp32 of the paper-size UNet (random weights, non-zero output
    layers) on a batch, and of a whole DDIM-25 trajectory through the pipeline (max |Δ| in [-1, 1] units
    and in uint8 levels of the generated crops);
(b) end-to-end ``generate_video`` of an ``--seconds`` s 25-fps clip (a face photo with a fixed box, so the
    GPU work is what is timed; speech-like noise as audio) with the paper-size model at DDIM-25,
    DPM-Solver++ 10 and a distilled K = 2 student of it (same random weights: the cost is the UNet passes):
    wall time, output frames per second, peak GPU memory, for fp32 and the fastest half precision;
(c) one ``diff2lip train`` step (paper_train, L_sync/LPIPS off) and one ``diff2lip distill`` step
    (distill_paper, K = 2, teacher DDIM-25) under AMP on a small random data directory: seconds per step.

The paper reports 4.67 s per 8-second video on 8 GPUs; one third-party table gives Diff2Lip 19.8 fps on
one H100. ``--quick`` runs everything with the tiny model on any device (a smoke test of this script). ::

    python benchmarks/gpu_check.py                      # on a CUDA machine, ~5 min
    python benchmarks/gpu_check.py --quick --device cpu # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def random_model(config: str, seed: int = 0) -> Any:
    """A paper-family UNet with random weights, including the zero-initialised output layers."""
    from diff2lip.models.config import load_model_config
    from diff2lip.models.unet import Diff2LipUNet

    torch.manual_seed(seed)
    model = Diff2LipUNet(load_model_config(config))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_check(model: Any, pipe_factory: Any, device: torch.device, size: int, report: dict) -> None:
    from diff2lip.inference.pipeline import lower_half_mask_tensor

    g = torch.Generator().manual_seed(0)
    b = 4
    x = torch.randn(b, 3, size, size, generator=g).to(device)
    cond = torch.randn(b, 3, size, size, generator=g).to(device)
    ref = torch.rand(b, 3, size, size, generator=g).to(device) * 2 - 1
    mel = (torch.rand(b, 80, 16, generator=g) * 8 - 4).to(device)
    t = torch.tensor([999, 600, 250, 10], device=device)
    mask = lower_half_mask_tensor(size, device)
    with torch.inference_mode():
        ref32 = model(x, t, cond, mask, ref, mel).float()
        for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            with torch.autocast(device.type, dtype=dt):
                out = model(x, t, cond, mask, ref, mel).float()
            report[f"unet_{name}_max_abs_diff"] = float((out - ref32).abs().max())
            report[f"unet_{name}_mean_abs_diff"] = float((out - ref32).abs().mean())
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (2, 80, 16)).astype(np.float32)
    base = pipe_factory("fp32", ("ddim", 25))(faces, mels).astype(int)
    for name in ("fp16", "bf16"):
        out = pipe_factory(name, ("ddim", 25))(faces, mels).astype(int)
        report[f"ddim25_{name}_max_uint8_diff"] = int(np.abs(out - base).max())
        report[f"ddim25_{name}_mean_uint8_diff"] = float(np.abs(out - base).mean())
    print("(a) precision:", json.dumps({k: v for k, v in report.items()}, indent=1), flush=True)


def make_clip(tmp: Path, seconds: float, size: int) -> tuple[Path, Path, tuple[int, int, int, int]]:
    """An ``seconds``-long 25 fps video of the astronaut photo (slight drift) and a noise-burst 'speech' WAV."""
    import av
    from skimage import data, transform

    from diff2lip.video.io import VideoWriter

    img = (transform.resize(data.astronaut(), (size, size)) * 255).astype(np.uint8)
    n = round(seconds * 25)
    rate = 16000
    rng = np.random.default_rng(0)
    env = (np.sin(np.arange(int(seconds * rate)) / rate * 2 * np.pi * 3) > 0).astype(np.float32)
    wav = (rng.standard_normal(len(env)) * 0.2 * env).astype(np.float32)
    audio = tmp / "speech.wav"
    with av.open(str(audio), "w") as out:
        st = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((wav[None] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in st.encode(frame):
            out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
    video = tmp / "face.mp4"
    with VideoWriter(video, width=size, height=size, fps=25.0) as w:
        for start in range(0, n, 25):
            k = min(25, n - start)
            frames = np.stack([np.roll(img, (i + start) % 3, axis=1) for i in range(k)])
            w.write(frames, (np.arange(start, start + k)) / 25.0)
    s = size / 512  # the astronaut's face in the 512-px photo is about x 150-300, y 40-230
    box = (int(150 * s), int(40 * s), int(300 * s), int(230 * s))
    return video, audio, box


def e2e(pipe_factory: Any, device: torch.device, args: argparse.Namespace, report: dict) -> None:
    from diff2lip.inference.runner import GenerateOptions, generate_video

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        video, audio, box = make_clip(tmp, args.seconds, args.frame_size)
        rows = []
        for dtype in args.dtypes:
            for label, sampling in (
                ("DDIM 25", ("ddim", 25)),
                ("DPM-Solver++ 10", ("dpmpp", 10)),
                ("student K = 2", None),
            ):
                pipe = pipe_factory(dtype, sampling)
                opts = GenerateOptions(box=box, batch_size=args.batch_size, length="video")
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                start = time.perf_counter()
                rep = generate_video(video, audio, tmp / "out.mp4", pipe, opts)
                sync(device)
                wall = time.perf_counter() - start
                peak = (
                    torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
                )
                rows.append(
                    {
                        "sampler": label,
                        "dtype": dtype,
                        "frames": rep.frames,
                        "wall_s": wall,
                        "fps": rep.frames / wall,
                        "peak_gpu_gib": peak,
                        "stages": rep.stage_seconds,
                    }
                )
                print(
                    f"(b) {label} {dtype}: {rep.frames} frames in {wall:.2f} s = {rep.frames / wall:.1f} fps, "
                    f"peak {peak:.2f} GiB, stages {rep.stage_seconds}",
                    flush=True,
                )
        report["e2e"] = rows


def make_data(root: Path, size: int, clips: int = 3, frames: int = 30) -> Path:
    from diff2lip.data import layout

    rng = np.random.default_rng(0)
    ids = []
    for i in range(clips):
        rec = layout.ClipRecord(id=f"clip{i}", num_frames=frames, fps=25.0, size=size)
        dd = layout.clip_dir(root, rec.id)
        dd.mkdir(parents=True)
        np.save(dd / layout.FACES, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))
        np.save(dd / layout.MEL, rng.uniform(-4, 4, (80, int(frames / 25 * 80) + 1)).astype(np.float32))
        layout.write_meta(root, rec)
        ids.append(rec.id)
    layout.rebuild_manifest(root)
    layout.write_filelists(root, {"train": ids, "val": [], "test": []})
    return root


def training_steps(
    model: Any, config: str, device: torch.device, args: argparse.Namespace, report: dict
) -> None:
    from diff2lip.config import load_yaml, packaged_config_path
    from diff2lip.models.serialization import save_pretrained
    from diff2lip.train.config import load_train_config
    from diff2lip.train.distill import Distiller, load_distill_config
    from diff2lip.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        size = model.config.image_size
        data = make_data(tmp / "data", size)
        doc = load_yaml(packaged_config_path(config))
        teacher = save_pretrained(
            model, tmp / "teacher", diffusion=doc["diffusion"], sampling=doc["sampling"]
        )
        precision = "bf16" if device.type == "cuda" else "fp32"
        common = [
            f"data.data_dir={data}",
            "data.batch_size=2",
            "data.num_workers=0",
            f"train.precision={precision}",
            "train.progress=false",
            "train.checkpoint_every=0",
            "train.image_every=0",
            "train.log_every=0",
        ]
        train_cfg = "train_tiny" if args.quick else "paper_train"
        cfg = load_train_config(train_cfg, [*common, "losses.lambda_sync=0", "losses.lambda_lpips=0"])
        dcfg = load_distill_config("distill_tiny" if args.quick else "distill_paper", teacher, common)
        for name, build in (
            ("train", lambda: Trainer(cfg, tmp / "run", device=device)),
            ("distill K = 2", lambda: Distiller(dcfg, tmp / "drun", device=device)),
        ):
            tr = build()
            times = []
            for _ in range(3):
                sync(device)
                start = time.perf_counter()
                r = tr.train_step()
                sync(device)
                times.append(time.perf_counter() - start)
            report[f"step_seconds_{name}"] = times
            print(
                f"(c) one {name} step ({precision}, batch 2 samples = 10 frames): "
                f"{', '.join(f'{t:.3f}' for t in times)} s; loss {r.total:.4f}",
                flush=True,
            )
            tr.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny model, short clip: a smoke test on any device")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--frame-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", default=None, help="also write every number here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (use --device cpu --quick for a smoke test)")
    config = "tiny" if args.quick else "paper"
    if args.quick:
        args.seconds, args.frame_size, args.batch_size = min(args.seconds, 0.4), 128, 8
    args.dtypes = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]

    from diff2lip.diffusion import DiffusionConfig, GaussianDiffusion, SamplingConfig, dpmpp_timesteps
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.train.distill import student_segments

    model = random_model(config).to(device)
    diffusion = GaussianDiffusion.from_config(DiffusionConfig())
    ts = dpmpp_timesteps(diffusion, 10)
    student = SamplingConfig("distilled", 2, timesteps=[int(ts[j]) for j in student_segments(ts, 2)])

    def pipe_factory(dtype: str, sampling: tuple[str, int] | None) -> Diff2LipPipeline:
        cfg = student if sampling is None else SamplingConfig(*sampling)
        dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        return Diff2LipPipeline(model, diffusion, cfg, device, dtype=dt, channels_last=device.type == "cpu")

    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "config": config,
    }
    t0 = time.perf_counter()
    if device.type == "cuda":
        precision_check(model, pipe_factory, device, model.config.image_size, report)
    else:
        print("(a) skipped: fp16/bf16 autocast is a GPU check", flush=True)
    e2e(pipe_factory, device, args, report)
    training_steps(model, config, device, args, report)
    report["total_seconds"] = time.perf_counter() - t0
    print(f"total {report['total_seconds']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
