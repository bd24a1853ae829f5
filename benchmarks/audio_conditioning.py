"""Does the audio steer a model, and can the UNet learn to be steered? Diagnostics for issue 5.

Three subcommands (numbers in benchmarks/RESULTS.md, "Session 4"):

``probe MODEL_DIR --corpus C``
    How much the audio moves a model's prediction, without sampling: on 8 test pairs × 40 frames (video of
    clip A, speech of clip B, fixed noise) it prints the std over windows of the audio code (the vector
    added to the timestep embedding, and the spatial path's coefficients if any) and its mean norm, then at
    t = 500 / 700 / 900 the mean change of the masked one-step x̂0 when the audio windows are shuffled, and
    the Pearson r of the openness read from that x̂0 with B's ground truth (compare with the printed copy
    baseline: the input mouth alone scores r ≈ 0.18 on these pairs, so only the change under shuffled audio
    shows that the audio is used).

``oracle-corpus SRC DST``
    A copy of a ``diff2lip synth`` corpus whose ``mel.npy`` is replaced by an *oracle* spectrogram: at each
    mel column (80 per second) a bar as high as the ground-truth openness at that time (faces are linked,
    not copied). Train on it to ask whether the audio path learns to follow a perfectly clean signal.

``oracle-style RUN --corpus ORACLE_CORPUS``
    Trains ``src/diff2lip/configs/synthetic.yaml`` (plus ``--set`` overrides; ``λ_sync = 0``, no spatial audio path) with
    the UNet's audio code replaced by ``scale · u · (openness − 0.35)`` (``u`` a fixed random unit vector, the
    openness read exactly from the oracle mel's bar at the frame's own column): a perfect, strong code that
    cannot collapse. How fast the UNet learns to use it bounds how fast any audio encoder can make it
    lip-sync. Prints, for the raw and EMA weights every ``--every`` steps, the one-step openness r with the truth,
    the same with the code shuffled (the control: copying the input mouth alone scores r ≈ 0.18 on these
    pairs) and the mean change of x̂0 between the two; exports the EMA weights to ``RUN/model`` at the end.

Examples::

    python benchmarks/audio_conditioning.py probe runs/synthetic/model --corpus data/synth
    python benchmarks/audio_conditioning.py oracle-corpus data/synth data/synth_oracle
    python benchmarks/audio_conditioning.py oracle-style runs/oracle --corpus data/synth_oracle --steps 2000 \\
        --set diffusion.prediction=v
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ORACLE_SCALE = 1.5  # openness of a full-height bar
FRAME_COLUMN = 3  # the mel column of frame k's own time in its window (window starts at frame k − 1)


def test_batch(corpus: Path, pairs: int = 8, frames: int = 40):
    """(faces (N, 3, S, S) in [-1, 1], mel windows (N, 80, 16), B's openness (N,)) for the cross setting."""
    from diff2lip.audio import frame_times, mel_windows
    from diff2lip.data import layout
    from diff2lip.evaluation.lipsync_check import load_clip

    ids = layout.read_filelist(corpus, "test")
    faces, mels, truth = [], [], []
    for i, cid in enumerate(ids[:pairs]):
        a, b = load_clip(corpus, cid), load_clip(corpus, ids[(i + 1) % len(ids)])
        faces.append(a.faces[:frames])
        mels.append(mel_windows(b.mel, frame_times(frames, 25)))
        truth.append(b.openness[:frames])
    x = torch.from_numpy(np.concatenate(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, S, S)
    return x, torch.from_numpy(np.concatenate(mels)).float(), np.concatenate(truth)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] → (N, S, S, 3) uint8 (what :func:`mouth_openness` reads)."""
    return images.permute(0, 2, 3, 1).add(1).mul(127.5).round().clamp(0, 255).byte().numpy()


def masked_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |a − b| over the lower half of two masked x̂0 batches (N, 3, S, S) (zero in the upper half)."""
    return float((a - b).abs().mean() * 2)  # the mask covers half of the pixels


def fmt_r(r: float | None) -> str:
    return "undefined" if r is None else f"{r:.3f}"


@torch.no_grad()
def one_step_openness(model, diffusion, faces, mels, t: int, generator, audio_style=None):
    """Openness of the one-step x̂0 (clamped, pasted under the true upper half) at timestep ``t``, and x̂0."""
    from diff2lip.data.synth_render import mouth_openness
    from diff2lip.inference.pipeline import lower_half_mask_tensor

    mask = lower_half_mask_tensor(faces.shape[-1], faces.device)
    eps = torch.randn(faces.shape, generator=generator)
    cond_noise = torch.randn(faces.shape, generator=generator)
    tt = torch.full((len(faces),), t)
    x_t = diffusion.q_sample(faces, tt, eps)
    cond = faces * (1 - mask) + cond_noise * mask
    kw = {"audio_style": audio_style} if audio_style is not None else {}
    out = model(x_t, tt, cond, mask, faces, None if audio_style is not None else mels, **kw)
    x0 = diffusion.eps_and_x0(out[:, :3], x_t, tt)[1].clamp(-1, 1)
    return mouth_openness(to_uint8(x0 * mask + faces * (1 - mask))), x0 * mask


def cmd_probe(args: argparse.Namespace) -> None:
    from diff2lip.data.synth_render import mouth_openness
    from diff2lip.evaluation.lipsync_check import pearson
    from diff2lip.inference.pipeline import Diff2LipPipeline

    pipe = Diff2LipPipeline.from_pretrained(args.model_dir, device="cpu")  # the full process of config.json
    model, diffusion = pipe.model, pipe.diffusion
    faces, mels, truth = test_batch(args.corpus)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        style = model.encode_audio(mels)  # (N, 4·mc [+ spatial coefficients])
    perm = torch.randperm(len(mels), generator=g)
    own = mouth_openness(to_uint8(faces))
    print(
        f"{args.model_dir}: audio code std over windows {style.std(0).norm():.4f}, "
        f"mean norm {style.mean(0).norm():.3f}; copy baseline (input mouth vs truth) r {pearson(own, truth):.3f}"
    )
    for t in (500, 700, 900):
        seed = int(torch.randint(0, 2**31, (1,), generator=g))
        opened, a = one_step_openness(
            model, diffusion, faces, mels, t, torch.Generator().manual_seed(seed), style
        )
        _, b = one_step_openness(
            model, diffusion, faces, mels, t, torch.Generator().manual_seed(seed), style[perm]
        )
        print(
            f"  t={t}: mean |Δx̂0| under shuffled audio {masked_change(a, b):.4f}, one-step openness r "
            f"{fmt_r(pearson(opened, truth))} (mean openness {opened.mean():.2f})"
        )


def cmd_oracle_corpus(args: argparse.Namespace) -> None:
    src, dst = args.src, args.dst
    if dst.exists():
        sys.exit(f"{dst}: already exists")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("faces.npy", "mel.npy", "raw"))
    for d in sorted((src / "clips").iterdir()):
        openness = np.load(d / "mouth.npy")[:, 0]
        mel = np.load(d / "mel.npy")  # (80, T)
        at = np.interp(np.arange(mel.shape[1]) / 80.0, np.arange(len(openness)) / 25.0, openness)
        height = np.clip(np.round(at / ORACLE_SCALE * 80), 0, 80)  # (T,)
        bars = np.where(np.arange(80)[:, None] < height[None, :], 4.0, -4.0).astype(np.float32)
        np.save(dst / "clips" / d.name / "mel.npy", bars)
        os.symlink((d / "faces.npy").resolve(), dst / "clips" / d.name / "faces.npy")
    print(f"oracle corpus → {dst}")


def cmd_oracle_style(args: argparse.Namespace) -> None:
    from diff2lip.evaluation.lipsync_check import pearson
    from diff2lip.models.unet import Diff2LipUNet
    from diff2lip.train.config import load_train_config
    from diff2lip.train.trainer import Trainer

    # the code replaces the paper's style only: no spatial path (its coefficients would be missing)
    overrides = [f"data.data_dir={args.corpus}", "losses.lambda_sync=0", "data.num_workers=0"]
    overrides += ["model.audio_spatial_rank=0", "train.checkpoint_every=1000000", "train.export_every=0"]
    cfg = load_train_config(args.config, [*overrides, *args.set])
    u = torch.randn(cfg.model.time_embed_dim, generator=torch.Generator().manual_seed(0))
    u = u / u.norm()
    scale = args.scale

    def oracle_code(self, mel: torch.Tensor) -> torch.Tensor:
        openness = (mel[:, :, FRAME_COLUMN] > 0).float().sum(1) / 80 * ORACLE_SCALE  # (B,)
        return scale * (openness - 0.35)[:, None] * u.to(mel.device)[None]  # (B, 4·mc)

    Diff2LipUNet.encode_audio = oracle_code  # this process only: the experiment's whole point
    trainer = Trainer(cfg, args.run)
    faces, mels, truth = test_batch(args.corpus)

    perm = torch.randperm(len(mels), generator=torch.Generator().manual_seed(2))

    def probe(model) -> str:
        """r with the truth, r with the code shuffled (the control), and mean |Δx̂0| between the two."""
        model.eval()
        parts = []
        for t in (700, 900):
            opened, a = one_step_openness(
                model, trainer.diffusion, faces, mels, t, torch.Generator().manual_seed(t)
            )
            shuf, b = one_step_openness(
                model, trainer.diffusion, faces, mels[perm], t, torch.Generator().manual_seed(t)
            )
            parts.append(
                f"t{t} r {fmt_r(pearson(opened, truth))} shuffled {fmt_r(pearson(shuf, truth))} "
                f"|Δx̂0| {masked_change(a, b):.4f}"
            )
        model.train()
        return ", ".join(parts)

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        trainer.train_step()
        if step % args.every == 0:
            print(
                f"step {step} ({time.perf_counter() - start:.0f} s): raw {probe(trainer.unet)} | "
                f"EMA {probe(trainer.ema.model)}",
                flush=True,
            )
    trainer.export()  # RUN/model: sample it with the same patched code (this module) to check fully


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("probe", help="how much the audio moves a model's one-step prediction")
    a.add_argument("model_dir", type=Path)
    a.add_argument("--corpus", type=Path, required=True)
    b = sub.add_parser("oracle-corpus", help="a corpus copy with the openness as its 'spectrogram'")
    b.add_argument("src", type=Path)
    b.add_argument("dst", type=Path)
    c = sub.add_parser(
        "oracle-style", help="train with a perfect audio code; print the UNet's learning curve"
    )
    c.add_argument("run", type=Path)
    c.add_argument("--corpus", type=Path, required=True, help="an oracle corpus (oracle-corpus)")
    c.add_argument("--config", default="synthetic")
    c.add_argument("--steps", type=int, default=2000)
    c.add_argument("--every", type=int, default=250)
    c.add_argument("--scale", type=float, default=3.0, help="code size (the time embedding's norm is 3–5)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    from diff2lip.errors import Diff2LipError

    try:
        {"probe": cmd_probe, "oracle-corpus": cmd_oracle_corpus, "oracle-style": cmd_oracle_style}[args.cmd](
            args
        )
    except (Diff2LipError, FileNotFoundError) as exc:
        sys.exit(f"audio_conditioning {args.cmd}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
