"""Training the SyncNet lip-sync expert (issue 4; Wav2Lip's expert recipe, DESIGN.md §4).

Balanced in-sync / off-sync pairs (:class:`~diff2lip.data.dataset.SyncPairDataset`), BCE on the cosine
score (:func:`~diff2lip.models.syncnet.sync_loss`), Adam. Every ``eval_every`` steps: loss and accuracy
(score ≥ 0.5 ⇔ "in sync") on a fixed set of held-out pairs from the ``val`` filelist; the best (lowest
validation loss) weights are kept in ``RUN_DIR/best``. Every ``checkpoint_every`` steps, and at the end,
an atomic checkpoint (:mod:`diff2lip.train.checkpoint`) with config, weights, optimizer, step and RNG
states; ``resume=True`` continues from the newest one exactly (the batches of step ``s`` depend only on
``(seed, s, rank)``). At the end the best model (or the last, without validation) is exported to
``RUN_DIR/model`` (``config.json`` + ``model.safetensors``, :func:`~diff2lip.models.syncnet.load_syncnet`).

Run layout::

    RUN_DIR/config.yaml            the effective training config
    RUN_DIR/checkpoints/step_*/    training checkpoints (the newest ``keep_checkpoints``)
    RUN_DIR/best/, RUN_DIR/model/  best-so-far and exported expert
    RUN_DIR/history.jsonl          one line per validation
    RUN_DIR/tb/                    TensorBoard scalars: train/loss, train/acc, val/loss, val/acc, lr

Distributed (``torchrun``): each rank draws its own batches — global batch ``step·W + rank`` is the
contiguous run of sample indices ``[(step·W + rank)·B, … + B)`` — gradients are averaged by DDP, and
rank 0 alone logs and writes files. The effective batch is ``W·batch_size``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from diff2lip.config import from_dict, save_yaml, to_dict
from diff2lip.data.dataset import ClipStore, SyncPairDataset
from diff2lip.errors import Diff2LipError
from diff2lip.models.syncnet import SyncNet, SyncNetConfig, save_syncnet, sync_loss
from diff2lip.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from diff2lip.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from diff2lip.train.ema import EMA

__all__ = ["StepBatchSampler", "SyncNetTrainConfig", "TrainResult", "evaluate", "train_syncnet"]

CHECKPOINTS = "checkpoints"
BEST = "best"
MODEL = "model"
HISTORY = "history.jsonl"
VAL_SEED_OFFSET = 1_000_003
"""Added to ``seed`` for the validation pairs, so they are never the training draws."""


@dataclass
class SyncNetTrainConfig:
    """Everything a SyncNet training run needs (YAML; unknown keys are errors).

    Attributes:
        data_dir: prepared data directory (``diff2lip preprocess`` / ``diff2lip synth``); ``--data``.
        out_dir: run directory; ``--out``.
        model: the expert's architecture (:class:`SyncNetConfig`); ``image_size`` must equal the crops'.
        batch_size: pairs per step per rank.
        lr: Adam learning rate (Wav2Lip: 1e-4).
        betas: Adam betas.
        weight_decay: Adam L2 weight decay.
        lr_schedule: ``constant`` or ``cosine`` (to 0 at ``max_steps``), after ``warmup_steps`` of linear warm-up.
        warmup_steps: linear warm-up steps.
        grad_clip: max global gradient norm (0 = off).
        ema_decay: exponential moving average of the weights (0 = off); when on, validation, ``best``
            and the exported expert use the averaged weights (decay warmed up as ``min(d, (1+s)/(10+s))``).
        max_steps: optimizer steps in all (``--max-steps``).
        eval_every, checkpoint_every, log_every: intervals in steps (the last step always does all three).
        keep_checkpoints: newest checkpoints kept (0 = all).
        val_batches: validation batches of ``batch_size`` fixed held-out pairs (0 = no validation).
        num_workers: DataLoader worker processes per rank.
        seed: seed of the weights and of every sample.
        samples_per_epoch: pairs per epoch (sets how often the per-epoch draws change).
        min_offset: smallest shift (frames) of a same-clip off-sync pair (Wav2Lip: 5 frames).
        positive_fraction: share of in-sync pairs.
        other_clip_fraction: share of off-sync pairs whose audio comes from another clip.
        train_split, val_split: filelists to train / validate on.
        tensorboard: write TensorBoard scalars under ``RUN_DIR/tb``.
    """

    data_dir: str = ""
    out_dir: str = ""
    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    max_steps: int = 10_000
    eval_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50
    keep_checkpoints: int = 2
    val_batches: int = 16
    num_workers: int = 0
    seed: int = 0
    samples_per_epoch: int = 20_000
    min_offset: int = 5
    positive_fraction: float = 0.5
    other_clip_fraction: float = 0.5
    train_split: str = "train"
    val_split: str = "val"
    tensorboard: bool = True

    def validate(self) -> None:
        problems = []
        if not self.data_dir:
            problems.append("data_dir is empty (set it in the config or pass --data)")
        if not self.out_dir:
            problems.append("out_dir is empty (set it in the config or pass --out)")
        for name in ("batch_size", "max_steps", "eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        for name in ("warmup_steps", "keep_checkpoints", "val_batches", "num_workers"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip < 0:
            problems.append(f"grad_clip must be >= 0, got {self.grad_clip}")
        if problems:
            raise Diff2LipError("invalid SyncNet training config: " + "; ".join(problems))


@dataclass
class TrainResult:
    """What a run ended with (rank 0's view)."""

    step: int
    model_dir: Path | None
    best_val_loss: float | None
    best_val_acc: float | None
    best_step: int | None
    history: list[dict[str, float]]
    seconds: float


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of sample indices for steps ``start_step .. max_steps-1`` of one rank.

    Step ``s`` on rank ``r`` of ``W`` gets ``[(s·W + r)·B, (s·W + r + 1)·B)``: disjoint across ranks and
    steps, contiguous (so :class:`SyncPairDataset`'s alternating labels make every even batch exactly
    balanced), and a pure function of the step — resuming at step ``s`` needs nothing but ``s``.
    """

    def __init__(self, start_step: int, max_steps: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start_step, self.max_steps = start_step, max_steps
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


def lr_at(cfg: SyncNetTrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): warm-up, then constant or cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


@torch.no_grad()
def evaluate(
    model: SyncNet, loader: torch.utils.data.DataLoader, device: torch.device, info: DistInfo | None = None
) -> dict[str, float]:
    """Mean BCE loss and accuracy (score ≥ 0.5 ⇔ in sync) over ``loader``, summed over ranks."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss·n, correct, n
    for batch in loader:
        faces, mel = batch["faces"].to(device), batch["mel"].to(device)
        label = batch["label"].to(device)
        audio_emb, face_emb = model(faces, mel)
        n = label.numel()
        totals[0] += float(sync_loss(audio_emb, face_emb, label)) * n
        totals[1] += ((SyncNet.score(audio_emb, face_emb) >= 0.5).float() == label).sum().double()
        totals[2] += n
    model.train(was_training)
    if info is not None:
        totals = all_reduce_sum(totals, info)
    n = max(float(totals[2]), 1.0)
    return {"loss": float(totals[0]) / n, "acc": float(totals[1]) / n}


def _check_resume_compatible(saved: dict[str, Any], cfg: SyncNetTrainConfig, path: Path) -> None:
    saved_model = saved.get("model")
    if saved_model != to_dict(cfg.model):
        raise Diff2LipError(
            "cannot resume: the checkpoint's model config differs from this config's 'model' section", path
        )
    for key in ("batch_size", "seed", "samples_per_epoch"):
        if saved.get(key) != getattr(cfg, key):
            raise Diff2LipError(
                f"cannot resume exactly: '{key}' was {saved.get(key)!r}, now {getattr(cfg, key)!r}", path
            )


def train_syncnet(
    cfg: SyncNetTrainConfig,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume) a SyncNet expert as described in the module docstring.

    Call it in every process of a ``torchrun`` job; with one process it trains alone. Returns rank 0's
    summary (other ranks get the same numbers without ``model_dir``).
    """
    cfg.validate()
    info = init_distributed(device)
    try:
        return _train(cfg, info, resume=resume, progress=progress, log=log)
    finally:
        cleanup_distributed()


def _loader(
    ds: SyncPairDataset, sampler: torch.utils.data.Sampler, workers: int
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers)


def _train(
    cfg: SyncNetTrainConfig, info: DistInfo, *, resume: bool, progress: bool, log: Callable[[str], None]
) -> TrainResult:
    from tqdm import tqdm

    t_start = time.perf_counter()
    run = Path(cfg.out_dir)
    ckpt_root = run / CHECKPOINTS
    if not resume and latest_checkpoint(ckpt_root) is not None:
        raise Diff2LipError(
            "run directory already has checkpoints: pass --resume, or choose another --out", run
        )

    train_store = ClipStore(cfg.data_dir, cfg.train_split)
    if train_store.size != cfg.model.image_size:
        raise Diff2LipError(
            f"model.image_size is {cfg.model.image_size} but the clips are {train_store.size} px crops",
            cfg.data_dir,
        )
    pair_args = {
        "nframes": cfg.model.nframes,
        "min_offset": cfg.min_offset,
        "positive_fraction": cfg.positive_fraction,
        "other_clip_fraction": cfg.other_clip_fraction,
    }
    train_ds = SyncPairDataset(
        train_store, samples_per_epoch=cfg.samples_per_epoch, seed=cfg.seed, **pair_args
    )
    val_loader = None
    if cfg.val_batches > 0:
        val_store = ClipStore(cfg.data_dir, cfg.val_split)
        n_val = cfg.val_batches * cfg.batch_size
        val_ds = SyncPairDataset(
            val_store, samples_per_epoch=n_val, seed=cfg.seed + VAL_SEED_OFFSET, **pair_args
        )
        # the fixed validation pairs 0 .. n_val-1, split into contiguous shards over the ranks
        shard = range(info.rank * n_val // info.world_size, (info.rank + 1) * n_val // info.world_size)
        val_batches = [list(shard[i : i + cfg.batch_size]) for i in range(0, len(shard), cfg.batch_size)]
        val_loader = torch.utils.data.DataLoader(
            val_ds, batch_sampler=val_batches, num_workers=cfg.num_workers
        )

    generator = torch.Generator().manual_seed(cfg.seed)
    model = SyncNet(cfg.model, generator=generator).to(info.device)
    # the averaged weights (DESIGN §8: explicit state, checkpointed with the rest); None when off
    ema = EMA(model, cfg.ema_decay, warmup=True) if cfg.ema_decay > 0 else None
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    step = 0
    best: dict[str, Any] = {"loss": None, "acc": None, "step": None}
    history: list[dict[str, float]] = []
    if resume:
        path = latest_checkpoint(ckpt_root)
        if path is None:
            if info.is_main:
                log(f"train-syncnet: no checkpoint in {ckpt_root}; starting from step 0")
        else:
            ckpt = load_checkpoint(path)
            _check_resume_compatible(ckpt.config, cfg, path)
            model.load_state_dict(ckpt.weights["model"], strict=True)
            optimizer.load_state_dict(ckpt.optimizers["adam"])
            generator.set_state(ckpt.rng["init_generator"])
            step = ckpt.step
            if ema is not None:
                ema.model.load_state_dict(ckpt.weights.get("ema", ckpt.weights["model"]), strict=True)
                ema.num_updates = step  # one update per step: the warm-up continues where it was
            best = dict(ckpt.extra.get("best", best))
            if info.is_main:
                log(f"train-syncnet: resumed from {path} at step {step}")
            if (run / HISTORY).is_file():
                history = [json.loads(ln) for ln in (run / HISTORY).read_text().splitlines() if ln.strip()]
                history = [h for h in history if h["step"] <= step]

    ddp_model: torch.nn.Module = model
    if info.distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )

    writer = None
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run / "config.yaml")
        if (run / HISTORY).exists() or history:
            (run / HISTORY).write_text("".join(json.dumps(h) + "\n" for h in history))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # drop what a stopped run logged after the checkpoint (steps > step are logged again); the
            # checkpoint's own step was logged before it was saved and is kept
            writer = SummaryWriter(str(run / "tb"), purge_step=step + 1 if step else None)

    def save_ckpt(at_step: int) -> None:
        if info.is_main:
            save_checkpoint(
                ckpt_root,
                at_step,
                config=to_dict(cfg),
                weights={
                    "model": model.state_dict(),
                    **({"ema": ema.model.state_dict()} if ema is not None else {}),
                },
                optimizers={"adam": optimizer.state_dict()},
                rng={"init_generator": generator.get_state()},
                extra={"best": best},
                keep=cfg.keep_checkpoints or None,
            )
        barrier(info)

    def run_eval(at_step: int) -> None:
        assert val_loader is not None
        scored = ema.model if ema is not None else model
        metrics = evaluate(scored, val_loader, info.device, info)
        row = {"step": at_step, "val_loss": metrics["loss"], "val_acc": metrics["acc"]}
        history.append(row)
        improved = best["loss"] is None or metrics["loss"] < best["loss"]
        if improved:
            best.update(loss=metrics["loss"], acc=metrics["acc"], step=at_step)
        if info.is_main:
            with (run / HISTORY).open("a") as f:
                f.write(json.dumps(row) + "\n")
            if writer is not None:
                writer.add_scalar("val/loss", metrics["loss"], at_step)
                writer.add_scalar("val/acc", metrics["acc"], at_step)
            if improved:
                save_syncnet(scored, run / BEST, extra={"step": at_step, **row})
            log(
                f"step {at_step}: val loss {metrics['loss']:.4f} acc {metrics['acc']:.2%}"
                f" (best {best['acc']:.2%} at step {best['step']})"
            )
        barrier(info)

    sampler = StepBatchSampler(step, cfg.max_steps, cfg.batch_size, info.rank, info.world_size)
    loader = _loader(train_ds, sampler, cfg.num_workers)
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        unit="step",
        desc="train-syncnet",
        disable=not (progress and info.is_main),
    )
    model.train()
    window = torch.zeros(3, dtype=torch.float64)  # loss·n, correct, n since the last log
    for batch in loader:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        faces = batch["faces"].to(info.device, non_blocking=True)
        mel = batch["mel"].to(info.device, non_blocking=True)
        label = batch["label"].to(info.device, non_blocking=True)
        audio_emb, face_emb = ddp_model(faces, mel)
        loss = sync_loss(audio_emb, face_emb, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        step += 1
        with torch.no_grad():
            correct = ((SyncNet.score(audio_emb, face_emb) >= 0.5).float() == label).sum()
        window += torch.tensor(
            [loss.item() * label.numel(), float(correct), label.numel()], dtype=torch.float64
        )
        bar.update(1)
        last = step == cfg.max_steps
        if step % cfg.log_every == 0 or last:
            totals = all_reduce_sum(window.to(info.device), info).cpu()
            mean_loss, acc = float(totals[0] / totals[2]), float(totals[1] / totals[2])
            window.zero_()
            bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{acc:.1%}")
            if writer is not None:
                writer.add_scalar("train/loss", mean_loss, step)
                writer.add_scalar("train/acc", acc, step)
                writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
        if val_loader is not None and (step % cfg.eval_every == 0 or last):
            run_eval(step)
        if step % cfg.checkpoint_every == 0 or last:
            save_ckpt(step)
    bar.close()

    model_dir = None
    if info.is_main:
        model_dir = run / MODEL
        if best["step"] is not None and (run / BEST).is_dir():
            from diff2lip.models.syncnet import load_syncnet

            exported = load_syncnet(run / BEST)
            extra = {
                "step": best["step"],
                "val_loss": best["loss"],
                "val_acc": best["acc"],
                "selected": "best",
            }
        else:
            exported = ema.model if ema is not None else model
            extra = {"step": step, "selected": "last"}
        save_syncnet(exported, model_dir, extra={**extra, "data_dir": str(cfg.data_dir)})
        if writer is not None:
            writer.close()
    barrier(info)
    return TrainResult(
        step=step,
        model_dir=model_dir,
        best_val_loss=best["loss"],
        best_val_acc=best["acc"],
        best_step=best["step"],
        history=history,
        seconds=time.perf_counter() - t_start,
    )


def config_from_dict(data: dict[str, Any]) -> SyncNetTrainConfig:
    """Strict :class:`SyncNetTrainConfig` from a mapping (unknown keys are errors)."""
    return from_dict(SyncNetTrainConfig, data)
