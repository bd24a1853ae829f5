"""The Diff2Lip trainer (paper eq. 9, DESIGN.md §4): one process or DDP, resumable bit for bit.

One optimizer step:

1. ``grad_accum`` micro-batches of ``data.batch_size`` 5-frame samples each. For a micro-batch, one
   timestep ``t ~ U{0..T−1}`` per sample (shared by its 5 frames; see ``train.high_t_fraction``), forward
   noise ε and, independently, the noise that fills the masked lower half of the conditioning frame
   (``cond = x0·(1−M) + n·M``; it must differ from ε or ``x_t − √(1−ᾱ_t)·cond`` would reveal x0);
   ``x_t = q_sample(x0, t, ε)``; the UNet predicts ε (and v) from ``(x_t, t, cond, M, ref, mel)``;
   :class:`~diff2lip.losses.Diff2LipLoss` adds the weighted terms and the generator loss is
   back-propagated. With λ_gan > 0 the critic then takes its loss on ground truth vs. the detached fakes
   (alternating GAN training; the critic's parameters do not receive the generator's gradients).
2. Gradients are clipped (global norm), AdamW steps (learning rate warmed up linearly), the EMA of the
   UNet is updated, the critic's optimizer steps.

Randomness: the model and critic are initialised from ``train.seed`` inside ``torch.random.fork_rng``
(the global RNG is restored afterwards); ``t`` and the noises of micro-batch ``k`` come from a
``torch.Generator`` seeded with ``(train.seed, rank, k)``; the data from
:class:`~diff2lip.data.train_dataset.EpochBatchSampler` keys, also a function of ``k``. So the
checkpoint's micro-batch count fixes all future randomness on every rank and ``--resume`` continues
exactly (bit for bit on a CPU). Dropout would draw from the global RNG; every shipped config has
``dropout: 0``.

Run directory (``RUN_DIR``)::

    config.yaml              the resolved config of the run
    checkpoints/step_N/      training checkpoints (:mod:`diff2lip.train.checkpoint`; newest ``keep_checkpoints``)
    model/                   the EMA weights: config.json + model.safetensors (``generate --checkpoint``)
    exports/step-N/          periodic EMA exports (``train.export_every``)
    tb/                      TensorBoard logs (rank 0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diff2lip import __version__
from diff2lip.config import save_yaml, to_dict
from diff2lip.data.train_dataset import Diff2LipTrainDataset, EpochBatchSampler
from diff2lip.diffusion import GaussianDiffusion
from diff2lip.errors import Diff2LipError
from diff2lip.losses import Diff2LipLoss, LossOutput, build_loss_networks, lower_half_mask
from diff2lip.models.discriminator import SequencePatchDiscriminator
from diff2lip.models.unet import Diff2LipUNet
from diff2lip.train.config import TrainConfig
from diff2lip.train.distributed import DistInfo
from diff2lip.train.ema import EMA

__all__ = ["StepResult", "TrainSummary", "Trainer", "image_grid"]

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
EXPORTS = "exports"
TB_DIR = "tb"
#: parameter-name prefix of the audio path (``audio_encoder.*``, ``audio_encoder_to_style.*``)
AUDIO_PREFIX = "audio_encoder"


def image_grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """Rows of images (each (N, 3, S, S) in [-1, 1]) → one (3, R·S, N·S) image in [0, 1] for TensorBoard."""
    lines = [torch.cat(list(r.detach().float().cpu()), dim=2) for r in rows]  # each (3, S, N·S)
    return torch.cat(lines, dim=1).add(1.0).div(2.0).clamp(0.0, 1.0)  # (3, R·S, N·S)


@dataclass
class StepResult:
    """What one optimizer step did (rank-local values)."""

    step: int
    terms: dict[str, float]
    total: float
    disc: float | None
    lr: float
    grad_norm: float
    seconds: float


@dataclass
class TrainSummary:
    """The end of :meth:`Trainer.fit`."""

    step: int
    last: StepResult | None
    model_dir: Path | None
    history: list[StepResult] = field(default_factory=list)


def _init_under_seed(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with the global RNG seeded to ``seed``, restoring the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class Trainer:
    """Trains a Diff2Lip UNet from a :class:`TrainConfig` into ``run_dir``.

    Args:
        cfg: the validated training config (paths resolved).
        run_dir: where checkpoints, exports and logs go.
        device: ``torch.device`` to train on in a single process (the caller resolves ``auto``).
        dist: the DDP position from :func:`~diff2lip.train.distributed.init_distributed` (overrides
            ``device``); ``world_size > 1`` wraps the UNet and the critic in DDP.
        log: where one-line messages go (rank 0 only).
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
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = dist if dist is not None else DistInfo(device=torch.device(device))
        self.device = self.dist.device
        self.rank = self.dist.rank
        self.world_size = self.dist.world_size
        self.is_main = self.dist.is_main
        self._log = log or (lambda msg: None)
        if cfg.data.data_dir is None:
            raise Diff2LipError("no training data: set data.data_dir in the config or pass --data-dir")

        # precision: autocast on GPUs only; CPU training is fp32
        self.amp_dtype = None
        if self.device.type == "cuda" and cfg.train.precision != "fp32":
            self.amp_dtype = torch.float16 if cfg.train.precision == "fp16" else torch.bfloat16
        use_scaler = self.amp_dtype == torch.float16

        # models
        seed = cfg.train.seed
        self.unet: Diff2LipUNet = _init_under_seed(seed, lambda: Diff2LipUNet(cfg.model)).to(self.device)
        self.ema = EMA(self.unet, cfg.train.ema_decay, warmup=cfg.train.ema_warmup)
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.disc: SequencePatchDiscriminator | None = None
        if cfg.losses.lambda_gan > 0:
            self.disc = _init_under_seed(seed + 1, lambda: SequencePatchDiscriminator(cfg.discriminator)).to(
                self.device
            )
        syncnet, lpips = build_loss_networks(cfg.losses, self.device)
        self.loss_fn = Diff2LipLoss(
            cfg.losses, self.diffusion, nframes=cfg.data.nframes, syncnet=syncnet, lpips=lpips
        )
        self.mask = lower_half_mask(cfg.model.image_size, self.device)

        # DDP wrappers (parameters are broadcast from rank 0 at construction)
        self.unet_ddp: nn.Module = self.unet
        self.disc_ddp: nn.Module | None = self.disc
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.unet_ddp = DDP(self.unet, device_ids=ids)
            if self.disc is not None:
                self.disc_ddp = DDP(self.disc, device_ids=ids)

        # optimizers
        o = cfg.optim
        audio = [p for n, p in self.unet.named_parameters() if n.startswith(AUDIO_PREFIX)]
        rest = [p for n, p in self.unet.named_parameters() if not n.startswith(AUDIO_PREFIX)]
        self.opt = torch.optim.AdamW(
            [
                {"params": rest, "lr": o.lr, "lr_mult": 1.0},
                {"params": audio, "lr": o.lr * o.audio_lr_mult, "lr_mult": o.audio_lr_mult},
            ],
            lr=o.lr,
            betas=o.betas,
            eps=o.eps,
            weight_decay=o.weight_decay,
        )
        self.disc_opt = None
        if self.disc is not None:
            self.disc_opt = torch.optim.AdamW(
                self.disc.parameters(), lr=o.disc_lr, betas=o.disc_betas, weight_decay=o.disc_weight_decay
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.disc_scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

        # data
        d = cfg.data
        self.dataset = Diff2LipTrainDataset(
            d.data_dir,
            d.split,
            nframes=d.nframes,
            samples_per_clip=d.samples_per_clip,
            seed=seed,
            augment=d.augment,
            image_size=cfg.model.image_size,
        )
        # fails early (one line) if an epoch cannot fill one batch per rank
        EpochBatchSampler(len(self.dataset), d.batch_size, world_size=self.world_size)
        self.generator = torch.Generator(device=self.device)

        self.step = 0
        self.batches_consumed = 0
        self._writer: Any = None
        self._first_step = 0
        self._batches: Iterator[dict[str, torch.Tensor]] | None = None
        self._last_images: tuple[dict[str, torch.Tensor], torch.Tensor | None] = ({}, None)

    # ------------------------------------------------------------------ data

    def _loader(self) -> Iterator[dict[str, torch.Tensor]]:
        d = self.cfg.data
        sampler = EpochBatchSampler(
            len(self.dataset),
            d.batch_size,
            seed=self.cfg.train.seed,
            rank=self.rank,
            world_size=self.world_size,
            start_batch=self.batches_consumed,
        )
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=d.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=d.num_workers > 0,
        )
        return iter(loader)

    def _next_batch(self) -> dict[str, torch.Tensor]:
        if self._batches is None:
            self._batches = self._loader()
        batch = next(self._batches)
        self.batches_consumed += 1
        return batch

    # ------------------------------------------------------------------ one step

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, constant, optional linear decay."""
        o = self.cfg.optim
        lr = o.lr
        if o.warmup_steps > 0:
            lr *= min(1.0, (step + 1) / o.warmup_steps)
        if o.lr_decay_end > 0 and step >= o.lr_decay_start:
            lr *= max(0.0, (o.lr_decay_end - step) / (o.lr_decay_end - o.lr_decay_start))
        return lr

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch of samples → the flattened UNet inputs and targets of one micro-batch."""
        dev = self.device
        frames = batch["frames"].to(dev, non_blocking=True)  # (B, F, 3, S, S)
        b, f, c, s, _ = frames.shape
        x0 = frames.reshape(b * f, c, s, s)  # (B·F, 3, S, S)
        ref = batch["ref"].to(dev)[:, None].expand(b, f, c, s, s).reshape(b * f, c, s, s)  # (B·F, 3, S, S)
        mels = batch["mels"].to(dev)
        mels = mels.reshape(b * f, *mels.shape[2:])  # (B·F, 80, 16)
        g = self.generator.manual_seed(self.noise_seed(self.batches_consumed))
        num_t = self.diffusion.num_timesteps
        t = torch.randint(0, num_t, (b,), generator=g, device=dev)  # (B,)
        run = self.cfg.train
        if run.high_t_fraction > 0:  # that fraction of the samples draws from the high-noise steps
            high = torch.rand((b,), generator=g, device=dev) < run.high_t_fraction
            t = torch.where(high, torch.randint(run.high_t_min, num_t, (b,), generator=g, device=dev), t)
        t = t.repeat_interleave(f)  # (B·F,) one t per sample, shared by its frames
        noise = torch.randn(x0.shape, generator=g, device=dev)
        cond_noise = torch.randn(x0.shape, generator=g, device=dev)
        x_t = self.diffusion.q_sample(x0, t, noise)
        cond = x0 * (1.0 - self.mask) + cond_noise * self.mask
        return {
            "frames": frames,
            "x0": x0,
            "ref": ref,
            "mels": mels,
            "t": t,
            "noise": noise,
            "x_t": x_t,
            "cond": cond,
            "sync_mel": batch["sync_mel"].to(dev),
        }

    def noise_seed(self, micro_batch: int) -> int:
        """Seed of the timesteps and noises of micro-batch ``micro_batch`` on this rank.

        A pure function of ``(train.seed, rank, micro_batch)``: every rank draws its own noise, and a
        resumed run (on any number of ranks' checkpoints) continues with exactly the same draws, with no
        generator state to save.
        """
        ss = np.random.SeedSequence((self.cfg.train.seed, self.rank, micro_batch))
        return int(ss.generate_state(1, dtype=np.uint64)[0] >> 1)

    def generator_loss(self, inp: dict[str, torch.Tensor]) -> LossOutput:
        """The UNet's forward pass on a prepared micro-batch and its weighted loss (paper eq. 9)."""
        with self._autocast():
            out = self.unet_ddp(inp["x_t"], inp["t"], inp["cond"], self.mask, inp["ref"], inp["mels"])
        return self.loss_fn(
            out.float(),
            x0=inp["x0"],
            x_t=inp["x_t"],
            t=inp["t"],
            noise=inp["noise"],
            mask=self.mask,
            sync_mel=inp["sync_mel"],
            discriminator=self.disc,
            step=self.step,
        )

    def _set_disc_grad(self, flag: bool) -> None:
        if self.disc is not None:
            self.disc.requires_grad_(flag)

    def train_step(self) -> StepResult:
        """One optimizer step over ``grad_accum`` micro-batches."""
        t0 = time.perf_counter()
        cfg = self.cfg
        accum = cfg.optim.grad_accum
        lr = self.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr * group["lr_mult"]
        sums: dict[str, float] = {}
        total_sum, disc_sum = 0.0, 0.0
        use_gan = self.disc is not None
        last_inputs: dict[str, torch.Tensor] = {}
        last_fake: torch.Tensor | None = None
        for micro in range(accum):
            final = micro == accum - 1
            inp = self.prepare(self._next_batch())
            sync_g = self.unet_ddp.no_sync() if (self.world_size > 1 and not final) else nullcontext()
            with sync_g:
                self._set_disc_grad(False)
                losses = self.generator_loss(inp)
                self.scaler.scale(losses.total / accum).backward()
            for k, v in losses.terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) / accum
            total_sum += float(losses.total.detach()) / accum
            if use_gan:
                assert self.disc_ddp is not None and losses.fake is not None
                self._set_disc_grad(True)
                sync_d = self.disc_ddp.no_sync() if (self.world_size > 1 and not final) else nullcontext()
                with sync_d:
                    with self._autocast():
                        d_loss = self.loss_fn.discriminator_step_loss(
                            self.disc_ddp, inp["frames"], losses.fake.detach()
                        )
                    self.disc_scaler.scale(d_loss / accum).backward()
                disc_sum += float(d_loss.detach()) / accum
            last_inputs, last_fake = inp, losses.fake.detach() if losses.fake is not None else None

        grad_norm = self._optimizer_step(self.opt, self.scaler, self.unet.parameters())
        self.ema.update(self.unet)
        if use_gan:
            assert self.disc_opt is not None and self.disc is not None
            self._optimizer_step(self.disc_opt, self.disc_scaler, self.disc.parameters())
        self.step += 1
        self._last_images = (last_inputs, last_fake)
        return StepResult(
            step=self.step,
            terms=sums,
            total=total_sum,
            disc=disc_sum if use_gan else None,
            lr=lr,
            grad_norm=grad_norm,
            seconds=time.perf_counter() - t0,
        )

    def _optimizer_step(self, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: Any) -> float:
        params = [p for p in params if p.grad is not None]
        scaler.unscale_(opt)
        clip = self.cfg.optim.grad_clip
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return float(norm)

    # ------------------------------------------------------------------ state

    def _weights(self) -> dict[str, dict[str, torch.Tensor]]:
        w = {"unet": self.unet.state_dict(), "ema": self.ema.model.state_dict()}
        if self.disc is not None:
            w["disc"] = self.disc.state_dict()
        return w

    def _extra(self) -> dict[str, Any]:
        return {
            "batches_consumed": self.batches_consumed,
            "world_size": self.world_size,
            "ema": {"decay": self.ema.decay, "warmup": self.ema.warmup, "num_updates": self.ema.num_updates},
            "scaler": self.scaler.state_dict(),
            "disc_scaler": self.disc_scaler.state_dict(),
            "version": __version__,
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_N/`` atomically (call on rank 0) and prune old ones.

        Weights ``unet``, ``ema``, ``disc``; optimizers ``unet``, ``disc``; extra: data position (micro-batches
        consumed, which also fixes the noise, see :meth:`noise_seed`), world size, EMA counters, grad
        scalers, package version.
        """
        from diff2lip.train.checkpoint import save_checkpoint

        optimizers = {"unet": self.opt.state_dict()}
        if self.disc_opt is not None:
            optimizers["disc"] = self.disc_opt.state_dict()
        keep = self.cfg.train.keep_checkpoints
        return save_checkpoint(
            self.run_dir / CHECKPOINTS,
            self.step,
            config=to_dict(self.cfg),
            weights=self._weights(),
            optimizers=optimizers,
            extra=self._extra(),
            keep=keep if keep > 0 else None,
        )

    def load_checkpoint(self, ckpt: Any) -> None:
        """Restore a loaded :class:`~diff2lip.train.checkpoint.Checkpoint` (same architectures, same world size)."""
        where = ckpt.path
        for section in ("model", "diffusion", "discriminator"):
            if ckpt.config.get(section) != to_dict(getattr(self.cfg, section)):
                raise Diff2LipError(
                    f"the checkpoint's '{section}' config differs from this run's; resume with the same config",
                    where,
                )
        extra = ckpt.extra
        if int(extra.get("world_size", 1)) != self.world_size:
            raise Diff2LipError(
                f"written by {extra.get('world_size')} process(es), this run has {self.world_size}; "
                "resume with the same number of processes (the data order depends on it)",
                where,
            )
        if ("disc" in ckpt.weights) != (self.disc is not None):
            raise Diff2LipError("losses.lambda_gan switched between 0 and > 0 since this checkpoint", where)
        self.unet.load_state_dict(ckpt.weights["unet"], strict=True)
        self.ema.model.load_state_dict(ckpt.weights["ema"], strict=True)
        self.ema.num_updates = int(extra["ema"]["num_updates"])
        self.opt.load_state_dict(ckpt.optimizers["unet"])
        if self.disc is not None:
            assert self.disc_opt is not None
            self.disc.load_state_dict(ckpt.weights["disc"], strict=True)
            self.disc_opt.load_state_dict(ckpt.optimizers["disc"])
        self.scaler.load_state_dict(extra["scaler"])
        self.disc_scaler.load_state_dict(extra["disc_scaler"])
        self.step = int(ckpt.step)
        self.batches_consumed = int(extra["batches_consumed"])
        self._batches = None

    def latest_checkpoint(self) -> Path | None:
        from diff2lip.train.checkpoint import latest_checkpoint

        return latest_checkpoint(self.run_dir / CHECKPOINTS)

    def resume(self, path: str | Path | None = None) -> Path:
        """Load ``path`` or the newest checkpoint of the run directory; returns the path used."""
        from diff2lip.train.checkpoint import load_checkpoint

        p = Path(path) if path is not None else self.latest_checkpoint()
        if p is None:
            raise Diff2LipError("--resume: no checkpoint in this run directory", self.run_dir / CHECKPOINTS)
        self.load_checkpoint(load_checkpoint(p))
        return p

    def clean_leftovers(self) -> list[Path]:
        """Remove what a killed run left in the run directory (rank 0, before training): checkpoint staging
        and half-pruned directories, and the exports' temporary files; says how many on the log."""
        from diff2lip.fileio import remove_stale_temps
        from diff2lip.train.checkpoint import clean_leftovers

        removed = clean_leftovers(self.run_dir / CHECKPOINTS)
        exports = sorted((self.run_dir / EXPORTS).glob("step-*")) if (self.run_dir / EXPORTS).is_dir() else []
        for d in [self.run_dir, self.run_dir / MODEL_DIR, self.run_dir / EXPORTS, *exports]:
            removed += remove_stale_temps(d, pidless_stale=True)
        if removed:
            self._log(f"removed {len(removed)} leftover temporary file(s)/dir(s) of an interrupted run")
        return removed

    def export_extra(self) -> dict[str, Any]:
        """Provenance written into the exported ``config.json``'s ``extra``."""
        return {"source": "diff2lip train", "step": self.step, "version": __version__}

    def export(self, out_dir: str | Path | None = None) -> Path:
        """Write the EMA weights as ``config.json`` + ``model.safetensors`` (loadable by ``generate``)."""
        from diff2lip.models.serialization import save_pretrained

        out = Path(out_dir) if out_dir is not None else self.run_dir / MODEL_DIR
        return save_pretrained(
            self.ema.model,
            out,
            diffusion=to_dict(self.cfg.diffusion),
            sampling=to_dict(self.cfg.sampling),
            extra=self.export_extra(),
            dtype=self.cfg.train.export_dtype,
        )

    # ------------------------------------------------------------------ logging

    def _tb(self) -> Any:
        if self._writer is None and self.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise Diff2LipError(
                    "TensorBoard logging needs the 'tensorboard' package (pip install 'diff2lip[train]')"
                ) from None
            # purge_step: after a resume from step N, the events the stopped run logged for steps > N are
            # dropped (steps N+1... are logged again by this run), so no step appears twice
            purge = self._first_step + 1 if self._first_step else None
            self._writer = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=purge)
        return self._writer

    def _log_step(self, r: StepResult) -> None:
        w = self._tb()
        for k, v in r.terms.items():
            w.add_scalar(f"loss/{k}", v, r.step)
        w.add_scalar("loss/total", r.total, r.step)
        if r.disc is not None:
            w.add_scalar("loss/disc", r.disc, r.step)
        w.add_scalar("train/lr", r.lr, r.step)
        w.add_scalar("train/grad_norm", r.grad_norm, r.step)
        w.add_scalar("train/step_seconds", r.seconds, r.step)

    def _log_images(self, step: int) -> None:
        inp, fake = self._last_images
        if not inp or fake is None:
            return
        f = self.cfg.data.nframes
        rows = [
            inp["cond"][:f],  # masked input
            inp["ref"][:f],  # reference
            fake[0],  # x̂0 pasted into the true upper half
            inp["x0"][:f],  # ground truth
        ]
        self._tb().add_image("samples/masked_ref_pred_gt", image_grid(rows), step)

    # ------------------------------------------------------------------ loop

    def fit(
        self, max_steps: int | None = None, *, progress: bool | None = None, keep_history: bool = False
    ) -> TrainSummary:
        """Train until ``max_steps`` (default ``train.max_steps``) optimizer steps; checkpoint and export.

        A final checkpoint and the EMA export (``RUN_DIR/model``) are written by rank 0 at the end.
        ``keep_history`` returns every :class:`StepResult` (for short runs and tests).
        """
        r = self.cfg.train
        total = r.max_steps if max_steps is None else max_steps
        show = (r.progress if progress is None else progress) and self.is_main
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.clean_leftovers()
            self._first_step = self.step  # TensorBoard events from here on are (re)written by this run
            save_yaml(self.cfg, self.run_dir / CONFIG_FILE)
        history: list[StepResult] = []
        last: StepResult | None = None
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total, initial=min(self.step, total), disable=not show, unit="step", dynamic_ncols=True
        )
        try:
            while self.step < total:
                last = self.train_step()
                if not math.isfinite(last.total):
                    raise Diff2LipError(f"training diverged at step {last.step}: loss is {last.total}")
                if keep_history:
                    history.append(last)
                if self.is_main:
                    if r.log_every and last.step % r.log_every == 0:
                        self._log_step(last)
                    if r.image_every and last.step % r.image_every == 0:
                        self._log_images(last.step)
                    if r.checkpoint_every and last.step % r.checkpoint_every == 0:
                        self.save_checkpoint()
                    if r.export_every and last.step % r.export_every == 0:
                        self.export(self.run_dir / EXPORTS / f"step-{last.step:08d}")
                bar.update(1)
                bar.set_postfix(loss=f"{last.total:.4f}", refresh=False)
        finally:
            bar.close()
        model_dir = None
        if self.is_main:
            if last is not None and not (r.checkpoint_every and self.step % r.checkpoint_every == 0):
                self.save_checkpoint()
            model_dir = self.export()
            if self._writer is not None:
                self._writer.flush()
            self._log(f"step {self.step}: EMA model written to {model_dir}")
        return TrainSummary(step=self.step, last=last, model_dir=model_dir, history=history)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._batches = None
