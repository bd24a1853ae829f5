r"""Atomic training checkpoints, shared by the trainers (resume continues exactly).

A checkpoint is a directory ``ROOT/step_<step:09d>/`` holding

* ``config.json``: the training config (plain dict) the run was started with;
* ``<name>.safetensors``: one file per weight set (``model``, later ``ema``...), fp32 as trained;
* ``state.pt``: ``{"step", "optimizers": {name: state_dict}, "rng": {name: state}, "extra": {...}}``,
  written with ``torch.save`` and read back with ``torch.load(weights_only=True)`` (tensors and plain
  Python values only, so no code can ride along);
* ``meta.json``: format, version, step and ``extra`` in readable form.

Everything is written into a hidden temporary directory beside the target (its name carries the writer's
pid, see :mod:`diff2lip.fileio`), ``fsync``\ ed and renamed into place in one ``os.replace``, so neither a
crash nor a power loss leaves a checkpoint that looks complete but is not; readers ignore the temporaries.
After a successful write, older checkpoints beyond ``keep`` are removed — each first renamed out of the way
(atomic), then deleted. :func:`clean_leftovers` removes what a killed writer left (staging and half-deleted
directories), and runs before every save.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diff2lip.errors import Diff2LipError
from diff2lip.fileio import fsync_path, fsync_tree, remove_stale_temps, remove_tree, temp_dir_sibling

__all__ = [
    "Checkpoint",
    "clean_leftovers",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "diff2lip-train-checkpoint"
FORMAT_VERSION = 1
STATE_NAME = "state.pt"
META_NAME = "meta.json"
CONFIG_NAME = "config.json"
_STEP_DIR = re.compile(r"^step_(\d{9})$")
_LEGACY_STAGING = re.compile(r"^\.step_\d{9}\.[A-Za-z0-9_]+\.tmp$")  # before pids were in the names


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    step: int
    config: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _cpu(obj: Any) -> Any:
    """Detach tensors and move them to the CPU, recursively (so a checkpoint loads on any device)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, Mapping):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def list_checkpoints(root: str | Path) -> list[Path]:
    """Finished checkpoints under ``root``, oldest first."""
    r = Path(root)
    if not r.is_dir():
        return []
    return sorted(
        p for p in r.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / META_NAME).is_file()
    )


def clean_leftovers(root: str | Path) -> list[Path]:
    """Remove what killed writers left under ``root`` and return it: staging directories whose writer is
    gone (and those of older versions, which carry no pid), directories being pruned, and ``step_N/``
    directories without ``meta.json`` (half-deleted by an older version's pruning)."""
    r = Path(root)
    if not r.is_dir():
        return []
    removed = remove_stale_temps(r)
    for p in sorted(r.iterdir()):
        half_deleted = _STEP_DIR.match(p.name) and p.is_dir() and not (p / META_NAME).is_file()
        if half_deleted or (_LEGACY_STAGING.match(p.name) and p.is_dir()):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest finished checkpoint under ``root`` (``None`` when there is none)."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    optimizers: Mapping[str, Mapping[str, Any]] | None = None,
    rng: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write ``ROOT/step_<step>/`` atomically and return its path; keep only the newest ``keep``.

    Args:
        root: checkpoint directory (created if missing).
        step: optimizer steps completed.
        config: the training config as a plain dict (saved as JSON).
        weights: ``{name: state_dict}``; each becomes ``<name>.safetensors``.
        optimizers: ``{name: optimizer.state_dict()}``.
        rng: ``{name: generator state}`` (``torch.Generator.get_state()`` tensors, numpy
            ``bit_generator.state`` dicts, ...).
        extra: small JSON-serialisable facts (best metric so far, ...).
        keep: number of checkpoints to keep (``None`` keeps all).
    """
    from safetensors.torch import save_file

    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    r = Path(root)
    r.mkdir(parents=True, exist_ok=True)
    clean_leftovers(r)
    target = r / f"step_{step:09d}"
    staging = temp_dir_sibling(target)
    try:
        (staging / CONFIG_NAME).write_text(json.dumps(dict(config), indent=2) + "\n")
        for name, sd in weights.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"weight set name {name!r} is not a plain file name")
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
            save_file(tensors, str(staging / f"{name}.safetensors"), metadata={"format": "pt"})
        state = {
            "step": int(step),
            "optimizers": _cpu(dict(optimizers or {})),
            "rng": _cpu(dict(rng or {})),
            "extra": dict(extra or {}),
        }
        torch.save(state, staging / STATE_NAME)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "extra": state["extra"],
        }
        (staging / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        fsync_tree(staging)
        if target.exists():  # re-saving the same step (e.g. a resumed run that ends where it began)
            remove_tree(target)
        staging.rename(target)
        fsync_path(r)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if keep is not None and keep > 0:
        for old in list_checkpoints(r)[:-keep]:
            remove_tree(old)
    return target


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint` (tensors on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    meta_path = p / META_NAME
    if not meta_path.is_file():
        raise Diff2LipError(f"no {META_NAME}: not a training checkpoint", p)
    try:
        meta = json.loads(meta_path.read_text())
        config = json.loads((p / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise Diff2LipError(f"unreadable checkpoint metadata: {e}", p) from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise Diff2LipError(
            f"not a version-{FORMAT_VERSION} {FORMAT} (found {meta.get('format')!r} "
            f"version {meta.get('format_version')!r})",
            meta_path,
        )
    weights = {}
    for f in sorted(p.glob("*.safetensors")):
        try:
            weights[f.stem] = load_file(f, device="cpu")
        except (SafetensorError, OSError) as e:
            raise Diff2LipError(f"cannot read safetensors file: {e}", f) from None
    try:
        state = torch.load(p / STATE_NAME, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise Diff2LipError(f"cannot read training state: {str(e).splitlines()[0]}", p / STATE_NAME) from None
    return Checkpoint(
        path=p,
        step=int(state["step"]),
        config=config,
        weights=weights,
        optimizers=dict(state.get("optimizers", {})),
        rng=dict(state.get("rng", {})),
        extra=dict(state.get("extra", {})),
    )
