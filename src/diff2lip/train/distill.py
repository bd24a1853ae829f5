"""Few-step students of a Diff2Lip model (``diff2lip distill``): K DDIM steps that land where the teacher's sampler lands.

Method: multi-step trajectory distillation, the target of progressive distillation (Salimans & Ho 2022,
"Progressive Distillation for Fast Sampling of Diffusion Models", alg. 2) taken across several teacher
steps at once — for K = 1 it is Luhman & Luhman's (2021) one-step knowledge distillation.

The teacher (any model with a deterministic sampler: DDIM with eta 0 or DPM-Solver++) is run from the
inference setting itself: one noise per 5-frame sample, shared by its frames, that is both x_T and the
noise of the masked lower half of the conditioning frame (``cond = img·(1−M) + x_T·M``), the reference
frame and the audio windows. Its evaluation timesteps ``τ_0 > … > τ_{n−1}`` (e.g. DPM-Solver++ 10) are
split into K segments at ``j_k = round(k·n/K)``; the student evaluates at ``s_k = τ_{j_k}`` and takes one
DDIM step per segment. The teacher's states are recorded at the segment starts (``z_k``: its sample just
before evaluating at ``s_k``; ``z_0 = x_T``) and ``z_K`` = its output. One DDIM step from ``(z_k, s_k)``
with a prediction x̂0 gives ``c_0·x̂0 + c_x·z_k`` with ``c_x = σ_{k+1}/σ_k``, ``c_0 = α_{k+1} − c_x·α_k``
(α = √ᾱ, σ = √(1−ᾱ); after the last step α = 1, σ = 0), so the x̂0 that reaches the teacher exactly is

    x̃0_k = (z_{k+1} − c_x·z_k) / c_0                     (Salimans & Ho 2022, eq. 8 / alg. 2)

and the student, initialised from the teacher, is trained with the masked MSE between its x̂0 at
``(z_k, s_k)`` and x̃0_k, for all K segments of every sample (optionally weighted towards the pixels that
move across the sample's frames in the teacher's output, ``distill.motion_weight``). Only the lower half (M) is compared: the
pipeline keeps the input's upper half bit for bit. The exported student samples with
``SamplingConfig(sampler="distilled", steps=K, timesteps=[s_0, …, s_{K−1}])``: plain DDIM on those steps.

Everything else is :class:`~diff2lip.train.trainer.Trainer`: data, per-micro-batch seeded noise (so
``--resume`` is exact), EMA, atomic checkpoints, TensorBoard, DDP, progress, export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diff2lip.config import config_path, from_dict, load_yaml, to_dict
from diff2lip.diffusion import DiffusionConfig, SamplingConfig, sample, sampler_timesteps
from diff2lip.errors import Diff2LipError
from diff2lip.losses import LossOutput, motion_weight
from diff2lip.models.config import UNetConfig
from diff2lip.models.serialization import load_checkpoint, read_config_json
from diff2lip.models.unet import Diff2LipUNet
from diff2lip.train.config import TrainConfig, apply_overrides, train_config_from_mapping
from diff2lip.train.distributed import DistInfo
from diff2lip.train.ema import EMA
from diff2lip.train.trainer import Trainer

__all__ = ["Distiller", "load_distill_config", "resolve_teacher", "student_segments"]

DETERMINISTIC = ("ddim", "dpmpp", "distilled")
UNUSED_LOSSES = ("lambda_sync", "lambda_lpips", "lambda_gan")


def resolve_teacher(teacher: str | Path) -> Path:
    """``demo`` → the bundled demo model, ``demo-teacher`` → the model it was distilled from; else a model
    directory with ``config.json`` (a one-line error if not)."""
    from diff2lip.demo import bundled_model_dir, bundled_teacher_dir

    named = {"demo": bundled_model_dir(), "demo-teacher": bundled_teacher_dir()}
    if str(teacher) in named:
        if not (named[str(teacher)] / "config.json").is_file():
            raise Diff2LipError(
                f"the bundled '{teacher}' model is not installed in this build", named[str(teacher)]
            )
        return named[str(teacher)]
    p = Path(teacher)
    if not p.is_dir():
        raise Diff2LipError("teacher not found (expected a model directory with config.json, or 'demo')", p)
    if not (p / "config.json").is_file():
        raise Diff2LipError(
            "teacher has no config.json (convert an official .pt first with `diff2lip convert`)", p
        )
    return p


def student_segments(teacher_timesteps: np.ndarray, k: int) -> list[int]:
    """Indices ``j_0 = 0 < j_1 < … < j_{K−1}`` into the teacher's evaluations where the student's steps start."""
    n = len(teacher_timesteps)
    if not 1 <= k < n:
        raise Diff2LipError(
            f"a student must take fewer steps than its teacher's {n} evaluations and at least 1: got --steps {k}"
        )
    return [round(i * n / k) for i in range(k)]


def _first_difference(a: Any, b: Any, prefix: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            d = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}")
            if d:
                return d
        return None
    return None if a == b else f"{prefix} is {a!r} in the config, {b!r} in the teacher"


def load_distill_config(
    path_or_name: str | Path, teacher_dir: str | Path, overrides: list[str] | None = None
) -> TrainConfig:
    """A distillation YAML (a path or packaged name: ``distill_tiny``, ``distill_synthetic``, ``distill_paper``).

    The student's ``model`` and ``diffusion`` sections are the teacher's ``config.json``'s; a ``model`` or
    ``diffusion`` section in the YAML must agree with them (a student has its teacher's architecture).
    ``distill.teacher_dir`` is set to ``teacher_dir``; the teacher's sampler defaults to its own.
    """
    p = config_path(path_or_name, "distillation config")
    teacher = resolve_teacher(teacher_dir)
    doc = read_config_json(teacher)
    data = apply_overrides(load_yaml(p), overrides or [])
    for section, cls in (("model", UNetConfig), ("diffusion", DiffusionConfig)):
        if section not in data:
            continue
        theirs = to_dict(from_dict(cls, doc.get(section, {})))
        mine = to_dict(from_dict(cls, {**theirs, **data[section]}))  # only the keys the YAML sets can differ
        diff = _first_difference(mine, theirs, section)
        if diff:
            raise Diff2LipError(f"the student must have the teacher's architecture: {diff}", p)
    data["model"] = doc["model"]
    data["diffusion"] = doc.get("diffusion", {})
    teacher_sampling = from_dict(SamplingConfig, doc.get("sampling", {}))
    data.setdefault("distill", {})
    data["distill"]["teacher_dir"] = str(teacher)
    if data["distill"].get("teacher_sampler") is None:
        data["distill"]["teacher_sampler"] = teacher_sampling.sampler
        data["distill"].setdefault("teacher_steps", None)
        if data["distill"]["teacher_steps"] is None:
            data["distill"]["teacher_steps"] = teacher_sampling.steps
    elif data["distill"].get("teacher_steps") is None:
        raise Diff2LipError("distill.teacher_sampler is set: set distill.teacher_steps too", p)
    data["sampling"] = to_dict(teacher_sampling)  # replaced by the student's at construction
    cfg = train_config_from_mapping(data, p)
    for name in UNUSED_LOSSES:
        if getattr(cfg.losses, name) != 0:
            raise Diff2LipError(
                f"diff2lip distill trains on the teacher's samples only: set losses.{name}: 0", p
            )
    if cfg.distill.teacher_sampler not in DETERMINISTIC:
        raise Diff2LipError(
            f"the teacher's sampler must be deterministic (ddim, dpmpp or distilled), got "
            f"'{cfg.distill.teacher_sampler}'",
            p,
        )
    return cfg


class Distiller(Trainer):
    """Trains a K-step student of ``cfg.distill.teacher_dir`` (see the module docstring) into ``run_dir``.

    Args are :class:`~diff2lip.train.trainer.Trainer`'s; ``cfg`` comes from :func:`load_distill_config`.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        device: torch.device | str = "cpu",
        dist: DistInfo | None = None,
        log: Callable[[str], None] | None = None,
    ):
        d = cfg.distill
        if d.teacher_dir is None:
            raise Diff2LipError("no teacher: set distill.teacher_dir (diff2lip distill TEACHER_DIR)")
        super().__init__(cfg, run_dir, device=device, dist=dist, log=log)
        loaded = load_checkpoint(d.teacher_dir, device=self.device)
        own = from_dict(SamplingConfig, loaded.config_dict.get("sampling", {}))
        same = (own.sampler, own.steps) == (d.teacher_sampler, d.teacher_steps)  # keeps a student's timesteps
        teacher_sampling = own if same else SamplingConfig(sampler=d.teacher_sampler, steps=d.teacher_steps)
        if to_dict(loaded.model.config) != to_dict(cfg.model):
            raise Diff2LipError("the teacher's architecture differs from the config's model", d.teacher_dir)
        self.teacher: Diff2LipUNet = loaded.model.eval().requires_grad_(False)
        self.teacher_sampling = teacher_sampling
        # the student starts as the teacher (and so does its EMA)
        self.unet.load_state_dict(self.teacher.state_dict(), strict=True)
        self.ema = EMA(self.unet, cfg.train.ema_decay, warmup=cfg.train.ema_warmup)

        self.teacher_timesteps = sampler_timesteps(self.diffusion, teacher_sampling)  # (n,) descending
        self.segments = student_segments(self.teacher_timesteps, d.steps)
        self.student_timesteps = [int(self.teacher_timesteps[j]) for j in self.segments]
        cfg.sampling = SamplingConfig(
            sampler="distilled",
            steps=d.steps,
            clip_denoised=teacher_sampling.clip_denoised,
            timesteps=self.student_timesteps,
        )
        # DDIM coefficients of each student step: x_next = c0·x̂0 + cx·x
        ab = self.diffusion.alphas_cumprod
        a_now = np.array([ab[t] for t in self.student_timesteps])
        a_next = np.append(a_now[1:], 1.0)
        cx = np.sqrt(1.0 - a_next) / np.sqrt(1.0 - a_now)
        c0 = np.sqrt(a_next) - cx * np.sqrt(a_now)
        self._cx = torch.tensor(cx, dtype=torch.float32, device=self.device)  # (K,)
        self._c0 = torch.tensor(c0, dtype=torch.float32, device=self.device)  # (K,)

    # ------------------------------------------------------------------ teacher

    @torch.no_grad()
    def teacher_states(
        self, noise: torch.Tensor, cond: torch.Tensor, ref: torch.Tensor, mels: torch.Tensor
    ) -> list[torch.Tensor]:
        """The teacher's sample at each student step's start and its output: K + 1 tensors (N, 3, S, S)."""
        style = self.teacher.encode_audio(mels)
        mask = self.mask

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.teacher(x, t, cond, mask, ref, audio_style=style).float()

        wanted = {j - 1: k for k, j in enumerate(self.segments) if j > 0}  # after step j−1 = before eval j
        states: list[torch.Tensor | None] = [noise] + [None] * (len(self.segments) - 1)

        def record(step: int, _n: int, x: torch.Tensor, _x0: torch.Tensor) -> None:
            if step in wanted:
                states[wanted[step]] = x.clone()

        out = sample(model_fn, self.diffusion, noise, self.teacher_sampling, callback=record)
        assert all(s is not None for s in states)
        return [*states, out]  # type: ignore[list-item]

    # ------------------------------------------------------------------ one micro-batch

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch → the inference-style inputs (shared noise, optional cross audio) and the teacher's states."""
        dev = self.device
        frames = batch["frames"].to(dev, non_blocking=True)  # (B, F, 3, S, S)
        b, f, c, s, _ = frames.shape
        x0 = frames.reshape(b * f, c, s, s)  # (B·F, 3, S, S)
        ref = batch["ref"].to(dev)[:, None].expand(b, f, c, s, s).reshape(b * f, c, s, s)  # (B·F, 3, S, S)
        mels = batch["mels"].to(dev)  # (B, F, 80, 16)
        g = self.generator.manual_seed(self.noise_seed(self.batches_consumed))
        noise = torch.randn((b, 1, c, s, s), generator=g, device=dev)  # one per sample
        noise = noise.expand(b, f, c, s, s).reshape(b * f, c, s, s)  # (B·F, 3, S, S) shared by its frames
        cross = torch.rand((b,), generator=g, device=dev) < self.cfg.distill.cross_audio_fraction  # (B,)
        if b > 1:  # cross samples take the next sample's speech
            mels = torch.where(cross[:, None, None, None], mels.roll(1, dims=0), mels)
        mels = mels.reshape(b * f, *mels.shape[2:])  # (B·F, 80, 16)
        own = torch.rand((b,), generator=g, device=dev) < self.cfg.distill.self_reference_fraction  # (B,)
        ref = torch.where(
            own.repeat_interleave(f)[:, None, None, None], x0, ref
        )  # each frame its own reference
        cond = x0 * (1.0 - self.mask) + noise * self.mask
        states = self.teacher_states(noise, cond, ref, mels)
        return {
            "frames": frames,
            "x0": x0,
            "ref": ref,
            "mels": mels,
            "cond": cond,
            "states": torch.stack(states),  # (K+1, B·F, 3, S, S)
        }

    def generator_loss(self, inp: dict[str, torch.Tensor]) -> LossOutput:
        """Masked MSE between the student's x̂0 and the x̂0 that reaches the teacher, every segment at once."""
        states = inp["states"]  # (K+1, N, 3, S, S)
        k, n = states.shape[0] - 1, states.shape[1]
        z, z_next = states[:k], states[1:]  # (K, N, 3, S, S)
        target = (z_next - self._cx.view(k, 1, 1, 1, 1) * z) / self._c0.view(k, 1, 1, 1, 1)  # (K, N, 3, S, S)
        t = torch.tensor(self.student_timesteps, device=self.device).repeat_interleave(n)  # (K·N,)
        x = z.reshape(k * n, *z.shape[2:])  # (K·N, 3, S, S)

        def rep(v: torch.Tensor) -> torch.Tensor:
            return v.repeat(k, *([1] * (v.ndim - 1)))  # (K·N, ...)

        with self._autocast():
            out = self.unet_ddp(x, t, rep(inp["cond"]), self.mask, rep(inp["ref"]), rep(inp["mels"]))
        pred, _ = self.diffusion.split_model_output(out.float(), x.shape[1])
        x0_hat = self.diffusion.eps_and_x0(pred, x, t)[1].view(k, n, *x.shape[1:])  # (K, N, 3, S, S)
        err = (x0_hat - target).pow(2) * self.mask  # (K, N, 3, S, S) lower half only
        mw = self.cfg.distill.motion_weight
        if mw > 0:  # the pixels that move across the sample's frames in the teacher's output: the mouth
            err = err * motion_weight(states[-1], self.mask, inp["frames"].shape[1], mw)
        per_step = err.sum(dim=(1, 2, 3, 4)) / (self.mask.sum() * n * x.shape[1])  # (K,)
        total = per_step.mean()
        terms = {f"distill_step{i}": per_step[i].detach() for i in range(k)}
        terms["distill"] = total.detach()
        f = inp["frames"].shape[1]
        last = x0_hat[-1].detach().clamp(-1, 1) * self.mask + inp["x0"] * (1.0 - self.mask)
        fake = last.view(-1, f, *x.shape[1:])  # (B, F, 3, S, S) the student's output, for the image log
        return LossOutput(total=total, terms=terms, fake=fake)

    # ------------------------------------------------------------------ export

    def export_extra(self) -> dict[str, Any]:
        extra = super().export_extra()
        d = self.cfg.distill
        extra.update(
            source="diff2lip distill",
            teacher=str(d.teacher_dir),
            teacher_sampling=to_dict(self.teacher_sampling),
        )
        return extra
