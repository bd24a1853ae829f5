"""``Diff2LipPipeline``: face crops + mel windows → lip-synced face crops. No file I/O in here.

The pipeline is the paper's sampling procedure (Mukhopadhyay et al., WACV 2024, §3.3 and the official
``generate.py``) as a library call:

* every frame is an independent sample of the UNet; frames are batched (``batch_size``; ``"auto"``
  halves the batch on out-of-memory and retries);
* one noise tensor ``(1, 3, S, S)`` is shared by every frame — it is the initial ``x_T`` *and* the noise
  that fills the masked lower half of the conditioning frame (``cond = img·(1−M) + noise·M``), the
  paper's temporal-consistency trick; because it is shared, chunking a video creates no seams;
* the final crop is ``sample·M + img·(1−M)``, so the upper half is the input's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diff2lip.config import from_dict
from diff2lip.diffusion import DiffusionConfig, GaussianDiffusion, SamplingConfig
from diff2lip.diffusion import sample as run_sampler
from diff2lip.errors import Diff2LipError
from diff2lip.models.perf import cpu_supports_fast_bf16
from diff2lip.models.serialization import load_checkpoint, parse_dtype
from diff2lip.models.unet import Diff2LipUNet

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]

PAPER_SEED = 7
CL = torch.channels_last


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA if available, else MPS if available, else CPU; other names are checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Diff2LipError(f"device '{device}' requested but CUDA is not available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise Diff2LipError("device 'mps' requested but MPS is not available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise Diff2LipError(f"unknown device '{device}' (use auto, cpu, cuda, cuda:N or mps)") from None


def shared_noise(size: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The one noise tensor (1, 3, S, S) shared by all frames.

    Drawn on the CPU from ``torch.Generator().manual_seed(seed)``, so it equals the official
    ``torch.manual_seed(seed); torch.randn(1, 3, S, S)`` and is the same on every device.
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, 3, size, size), generator=g).to(device)


def to_model_range(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, S, S, 3) → float32 (N, 3, S, S) in [-1, 1] (as the official ``normalise2(x/255)``)."""
    t = torch.as_tensor(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div(255.0).mul(2.0).sub(1.0).clamp(-1.0, 1.0)  # (N, 3, S, S)


def to_uint8(images: torch.Tensor, rounding: str = "round") -> np.ndarray:
    """float (N, 3, S, S) in [-1, 1] → uint8 (N, S, S, 3), rounded to the nearest level; ``"truncate"``:
    the official ``(normalise(x) * 255).astype(np.uint8)`` (``normalise = ((x + 1) * 0.5).clamp(0, 1)``)."""
    if rounding == "truncate":
        x = (
            ((images.float() + 1.0) * 0.5).clamp(0.0, 1.0).mul(255.0).to(torch.uint8)
        )  # float → uint8 truncates
    elif rounding == "round":
        x = ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    else:
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    return x.permute(0, 2, 3, 1).cpu().numpy()  # (N, S, S, 3)


def lower_half_mask_tensor(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """M (1, 1, S, S): 1 on rows S//2..S-1 (DESIGN.md §3)."""
    m = torch.zeros((1, 1, size, size), device=device)
    m[:, :, size // 2 :, :] = 1.0
    return m


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


@dataclass
class Diff2LipPipeline:
    """The model, its diffusion process and sampling settings, on one device and precision.

    Args:
        model: the UNet (any :class:`~diff2lip.models.unet.Diff2LipUNet`).
        diffusion: the *base* (1000-step) Gaussian diffusion of the model.
        sampling: default sampler settings (``ddim``/25 for the paper).
        device: where to run.
        dtype: compute precision; ``fp16``/``bf16`` run under autocast with GroupNorm and softmax in fp32.
    """

    model: Diff2LipUNet
    diffusion: GaussianDiffusion
    sampling: SamplingConfig
    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.device.type == "cpu" and self.dtype == torch.bfloat16 and not cpu_supports_fast_bf16():
            raise Diff2LipError(
                "bf16 on this CPU is 50-200x slower than fp32 (it lacks avx512_bf16/AMX); use fp32, or "
                "bf16/fp16 on a GPU"
            )
        if self.device.type == "cpu" and self.dtype == torch.float16:
            raise Diff2LipError("fp16 is not supported on the CPU; use fp32")
        if self.channels_last:
            self.model = self.model.to(memory_format=CL)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "fp32",
    ) -> Diff2LipPipeline:
        """Load our ``config.json`` + ``model.safetensors`` directory or an official ``.pt`` checkpoint."""
        dev = resolve_device(device)
        compute = parse_dtype(dtype) or torch.float32
        loaded = load_checkpoint(path, device=dev)
        model = loaded.model.eval().requires_grad_(False)
        doc = loaded.config_dict
        diffusion_cfg = from_dict(DiffusionConfig, doc.get("diffusion", {}))
        sampling_cfg = from_dict(SamplingConfig, doc.get("sampling", {}))
        return cls(
            model=model,
            diffusion=GaussianDiffusion.from_config(diffusion_cfg),
            sampling=sampling_cfg,
            device=dev,
            dtype=compute,
            channels_last=dev.type == "cpu",  # ~10% faster convolutions on CPU (benchmarks/RESULTS.md)
        )

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    def _autocast(self) -> Any:
        enabled = self.dtype != torch.float32
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=enabled)

    def _sample_batch(
        self,
        img: torch.Tensor,
        ref: torch.Tensor,
        mel: torch.Tensor,
        noise: torch.Tensor,
        sampling: SamplingConfig,
        generator: torch.Generator | None,
        callback: StepCallback | None,
    ) -> torch.Tensor:
        """One batch: (B, 3, S, S) frames/refs in [-1, 1], (B, 80, 16) mels → composited (B, 3, S, S)."""
        b = img.shape[0]
        mask = lower_half_mask_tensor(self.image_size, self.device)  # (1, 1, S, S)
        x_t = noise.expand(b, -1, -1, -1).contiguous()  # (B, 3, S, S) shared x_T
        cond = img * (1.0 - mask) + x_t * mask  # lower half filled with the same noise

        with self._autocast():
            style = self.model.encode_audio(mel)  # the audio code, independent of t: computed once
        if self.channels_last:
            cond, ref = cond.contiguous(memory_format=CL), ref.contiguous(memory_format=CL)

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if self.channels_last:
                x = x.contiguous(memory_format=CL)
            with self._autocast():
                return self.model(x, t, cond, mask, ref, audio_style=style).float().contiguous()

        out = run_sampler(model_fn, self.diffusion, x_t, sampling, generator=generator, callback=callback)
        return out * mask + img * (1.0 - mask)

    @torch.inference_mode()
    def __call__(
        self,
        faces: np.ndarray,
        mels: np.ndarray,
        refs: np.ndarray | None = None,
        *,
        noise: torch.Tensor | None = None,
        seed: int = PAPER_SEED,
        sampler: str | None = None,
        steps: int | None = None,
        batch_size: int | str = "auto",
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        rounding: str = "round",
    ) -> np.ndarray:
        """Generate the lower halves of ``faces`` driven by ``mels``.

        Args:
            faces: (N, S, S, 3) uint8 RGB face crops (the upper half is kept).
            mels: (N, 80, 16) mel windows, one per frame (DESIGN.md §3).
            refs: (N, S, S, 3) uint8 reference crops; ``None`` → each frame is its own reference.
            noise: the shared (1, 3, S, S) noise; default :func:`shared_noise` of ``seed``.
            sampler, steps: override the pipeline's sampling settings (a distilled student refuses any
                other than its own).
            batch_size: frames per UNet call, or ``"auto"`` (16 on GPU, 4 on CPU — where larger batches
                are no cheaper per frame — halved on OOM).
            generator: randomness for stochastic samplers (DDPM, DDIM with eta > 0).
            callback: ``callback(step, num_steps, x_t, pred_x0)`` after every sampler step.
            rounding: ``"round"`` to the nearest uint8 level, or ``"truncate"`` as the official code
                (``--preset paper``), see :func:`to_uint8`.

        Returns:
            (N, S, S, 3) uint8 generated crops.
        """
        s = self.image_size
        n = len(faces)
        if faces.shape[1:] != (s, s, 3):
            raise Diff2LipError(f"face crops must be (N, {s}, {s}, 3), got {tuple(faces.shape)}")
        if len(mels) != n or (refs is not None and len(refs) != n):
            raise Diff2LipError(
                f"got {n} faces, {len(mels)} mel windows, {len(refs) if refs is not None else n} refs"
            )
        if n == 0:
            return np.zeros((0, s, s, 3), np.uint8)
        cfg = self.sampling
        if cfg.sampler == "distilled" and (
            sampler not in (None, "distilled") or steps not in (None, cfg.steps)
        ):
            raise Diff2LipError(
                f"this model is a {cfg.steps}-step student (diff2lip distill): it samples only with its own "
                f"{cfg.steps} steps, not --sampler {sampler or cfg.sampler} --steps {steps or cfg.steps} "
                "(drop those flags, or use its teacher for other samplers)"
            )
        if sampler is not None or steps is not None:
            cfg = replace(cfg, sampler=sampler or cfg.sampler, steps=steps or cfg.steps)
            cfg = from_dict(SamplingConfig, {k: getattr(cfg, k) for k in cfg.__dataclass_fields__})
        if noise is None:
            noise = shared_noise(s, seed, self.device)
        noise = noise.to(self.device, torch.float32)
        if batch_size == "auto":
            bs = 16 if self.device.type != "cpu" else 4
            backoff = True
        else:
            bs, backoff = int(batch_size), False
            if bs < 1:
                raise Diff2LipError(f"batch size must be >= 1, got {bs}")

        out = np.empty((n, s, s, 3), np.uint8)
        i = 0
        while i < n:
            j = min(n, i + bs)
            img = to_model_range(faces[i:j], self.device)
            ref = img if refs is None else to_model_range(refs[i:j], self.device)
            mel = torch.as_tensor(np.ascontiguousarray(mels[i:j]), dtype=torch.float32, device=self.device)
            try:
                res = self._sample_batch(img, ref, mel, noise, cfg, generator, callback)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                if not (backoff and _is_oom(e) and bs > 1):
                    raise
                bs //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            out[i:j] = to_uint8(res, rounding)
            i = j
        return out
