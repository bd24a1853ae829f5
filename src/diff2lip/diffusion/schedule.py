"""Noise schedules, timestep respacing and the diffusion/sampling configs.

DESIGN.md §3: T = 1000 linear betas 1e-4 → 0.02 in float64 (Ho et al. 2020, extended to any T as in
improved DDPM), or the cosine schedule of improved DDPM (Nichol & Dhariwal 2021, eq. 17). The paper samples
with DDIM over ``space_timesteps(1000, "ddim25")`` = {0, 40, ..., 960}. Semantics follow guided-diffusion's
``get_named_beta_schedule`` and ``respace.space_timesteps`` exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diff2lip.errors import Diff2LipError

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm", "dpmpp", "distilled")
#: what the model predicts: the noise (the paper) or the velocity v (Salimans & Ho 2022)
PREDICTIONS = ("epsilon", "v")


@dataclass
class DiffusionConfig:
    """The training-time diffusion process (the ``diffusion:`` section of model/train configs).

    ``learn_sigma``: the model outputs 2C channels, ε and the learned-range variance interpolation ``v``
    (improved DDPM §3.1); otherwise C channels with the fixed "large" variance (β_t).

    ``prediction``: what the model's first C channels predict. ``epsilon`` is the paper's (the released
    checkpoint). ``v`` is v-prediction (Salimans & Ho 2022, §4): ``v = √ᾱ_t·ε − √(1−ᾱ_t)·x0``, so that
    ``x̂0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v̂`` never amplifies the model's error, while with ε-prediction
    ``x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t`` multiplies it by up to 1/√ᾱ_t ≈ 156 at large t — exactly where the
    mouth must come from the audio (see ``benchmarks/RESULTS.md``, issue 5).
    """

    num_timesteps: int = 1000
    schedule: str = "linear"
    learn_sigma: bool = True
    prediction: str = "epsilon"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise Diff2LipError(
                f"unknown diffusion schedule '{self.schedule}' (expected one of {', '.join(SCHEDULES)})"
            )
        if self.num_timesteps < 1:
            raise Diff2LipError(f"diffusion num_timesteps must be >= 1, got {self.num_timesteps}")
        if self.prediction not in PREDICTIONS:
            raise Diff2LipError(
                f"unknown diffusion prediction '{self.prediction}' (expected one of {', '.join(PREDICTIONS)})"
            )


@dataclass
class SamplingConfig:
    """How to sample at inference time.

    ``sampler``: ``ddim`` (the paper's, DESIGN.md §3), ``ddpm`` (ancestral with the learned variance) or
    ``dpmpp`` (DPM-Solver++(2M), good at 10–15 steps) or ``distilled`` (a few-step student of
    ``diff2lip distill``: deterministic DDIM steps at exactly the original ``timesteps`` it was distilled on,
    descending, one per step). ``steps`` is the number of model evaluations; ``eta`` only affects DDIM
    (0 = deterministic); ``clip_denoised`` clamps the predicted x0 to [-1, 1].
    """

    sampler: str = "ddim"
    steps: int = 25
    eta: float = 0.0
    clip_denoised: bool = True
    #: ``distilled`` only: the original timesteps where the student is evaluated (descending, ``steps`` of them)
    timesteps: list[int] | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise Diff2LipError(f"unknown sampler '{self.sampler}' (expected one of {', '.join(SAMPLERS)})")
        if self.steps < 1:
            raise Diff2LipError(f"sampling steps must be >= 1, got {self.steps}")
        if self.eta < 0:
            raise Diff2LipError(f"sampling eta must be >= 0, got {self.eta}")
        if self.sampler == "distilled":
            ts = self.timesteps
            if ts is None:
                raise Diff2LipError(
                    "sampler 'distilled' needs the student's timesteps (only a `diff2lip distill` model has them)"
                )
            if (
                len(ts) != self.steps
                or any(int(a) <= int(b) for a, b in itertools.pairwise(ts))
                or min(ts) < 0
            ):
                raise Diff2LipError(
                    f"sampling.timesteps must be {self.steps} descending timesteps >= 0, got {list(ts)}"
                )
        elif self.timesteps is not None:
            raise Diff2LipError(
                f"sampling.timesteps is for the 'distilled' sampler only, not '{self.sampler}'"
            )


def betas_for_alpha_bar(num_timesteps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """Betas discretising a continuous ᾱ(s), s ∈ [0, 1]: β_i = min(1 − ᾱ((i+1)/T) / ᾱ(i/T), max_beta)."""
    s = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    ab = np.array([alpha_bar(float(v)) for v in s], dtype=np.float64)  # (T+1,)
    return np.minimum(1.0 - ab[1:] / ab[:-1], max_beta)


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """The named beta schedule as a float64 array of length ``num_timesteps``.

    ``linear``: ``linspace(s·1e-4, s·0.02, T)`` with ``s = 1000 / T`` (so T = 1000 gives DESIGN.md §3's
    schedule). ``cosine``: ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), betas clipped at 0.999.
    """
    if num_timesteps < 1:
        raise Diff2LipError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        return betas_for_alpha_bar(num_timesteps, lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise Diff2LipError(f"unknown beta schedule '{name}' (expected one of {', '.join(SCHEDULES)})")


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """Timesteps of the original process to keep, as guided-diffusion's ``space_timesteps``.

    - ``"ddimN"``: the smallest integer stride ``k`` with ``len(range(0, T, k)) == N`` (the DDIM paper's
      striding), e.g. ``"ddim25"`` with T = 1000 → {0, 40, ..., 960}; ``"ddim1"`` → {T − 1} (one step from
      pure noise: the model's x̂0 there).
    - ``"10,15,20"`` or ``[10, 15, 20]``: the process is cut into equal sections (the first ``T % n``
      one step longer) and section i keeps ``counts[i]`` steps at fractional stride ``(size-1)/(count-1)``,
      rounded (Python's round, half to even), so each section includes its first and last step.
    - ``"25"``: one section of 25 steps, i.e. {0, ..., 999} including both ends.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            try:
                desired = int(section_counts[len("ddim") :])
            except ValueError:
                raise Diff2LipError(f"invalid timestep respacing '{section_counts}'") from None
            if desired == 1:  # the stride rule would give {0}: a step at no noise, which cannot denoise
                return {num_timesteps - 1}
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise Diff2LipError(
                f"cannot take exactly {desired} DDIM steps of {num_timesteps} with an integer stride"
            )
        try:
            counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise Diff2LipError(f"invalid timestep respacing '{section_counts}'") from None
    else:
        counts = [int(x) for x in section_counts]
    if not counts:
        raise Diff2LipError("timestep respacing needs at least one section")
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    steps: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 0 or size < count:
            raise Diff2LipError(f"cannot divide a section of {size} timesteps into {count} steps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return set(steps)
