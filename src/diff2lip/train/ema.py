"""Exponential moving average of model weights (the weights Diff2Lip exports and samples with).

guided-diffusion keeps ``θ_ema ← d·θ_ema + (1 − d)·θ`` after every optimizer step with a fixed rate
``d = 0.9999`` (DESIGN.md §4's default). For short runs a fixed 0.9999 barely moves away from the
initial weights, so an optional warm-up uses ``d_n = min(d, (1 + n) / (10 + n))`` after ``n`` updates
(the schedule of TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``).
Buffers (none in the UNet; kept for generality) are copied, not averaged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMA", "ema_decay_at"]


def ema_decay_at(decay: float, num_updates: int, warmup: bool) -> float:
    """The decay used for update number ``num_updates`` (0-based)."""
    if not warmup:
        return decay
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """A frozen fp32 shadow copy of ``model`` updated by :meth:`update` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """``θ_ema ← d·θ_ema + (1 − d)·θ``; returns the ``d`` used."""
        d = ema_decay_at(self.decay, self.num_updates, self.warmup)
        ema_params = dict(self.model.named_parameters())
        for name, p in model.named_parameters():
            e = ema_params[name]
            e.lerp_(p.detach().to(e.dtype), 1.0 - d)
        ema_buffers = dict(self.model.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
        self.num_updates += 1
        return d

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"], strict=True)
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
