"""Saving and loading Diff2Lip models (DESIGN.md §8.2), and the official checkpoint mapping (§3).

Our format is a directory with

* ``config.json``: ``{"format": "diff2lip", "format_version": 1, "model": {UNetConfig},
  "diffusion": {...}, "sampling": {...}, "extra": {...}}`` (the last three only when given);
* ``model.safetensors``: the ``state_dict`` (fp32, or fp16 to halve the download).

Loading rebuilds the model from the config and loads the weights with ``strict=True``.

The authors' released checkpoint (``e7.24.1.3_model260000_paper.pt``) is a plain fp32 ``state_dict``
pickled by ``torch.save``. It is read with ``torch.load(weights_only=True)`` — a pickle that carries
code is refused — and every key and shape is checked against the model built from
``configs/paper.yaml`` before anything is written.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diff2lip.config import load_yaml, packaged_config_path, to_dict
from diff2lip.errors import Diff2LipError
from diff2lip.fileio import publish, remove_stale_temps, temp_dir_sibling, write_atomic
from diff2lip.models.config import UNetConfig, model_config_from_mapping
from diff2lip.models.unet import Diff2LipUNet

FORMAT = "diff2lip"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: file name of the authors' released checkpoint (named in their README; we never download it).
OFFICIAL_CHECKPOINT_NAME = "e7.24.1.3_model260000_paper.pt"

#: what ``torch.load`` raises for a file that is not a readable plain-tensor checkpoint.
_TORCH_LOAD_ERRORS = (
    pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, zipfile.BadZipFile
)  # fmt: skip

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


@dataclass
class PretrainedModel:
    """A loaded model with the whole ``config.json`` it came from (model, diffusion, sampling...)."""

    model: Diff2LipUNet
    config_dict: dict[str, Any]
    path: Path


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp32" | "fp16" | "bf16"`` (or a ``torch.dtype``) → ``torch.dtype``; ``None`` stays ``None``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise Diff2LipError(f"unknown dtype '{dtype}' (use fp32, fp16 or bf16)") from None


def build_meta_model(cfg: UNetConfig) -> Diff2LipUNet:
    """The model with parameters on the meta device: shapes only, no memory, no init time."""
    with torch.device("meta"):
        return Diff2LipUNet(cfg)


def expected_shapes(cfg: UNetConfig) -> dict[str, tuple[int, ...]]:
    """Ordered ``key → shape`` of the ``state_dict`` of the model built from ``cfg``."""
    return {k: tuple(v.shape) for k, v in build_meta_model(cfg).state_dict().items()}


def check_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    path: str | Path | None,
    *,
    what: str = "Diff2Lip checkpoint",
    prefix: str = "",
) -> None:
    """Raise a one-line error naming the first missing, mismatching or unexpected key.

    Shared by every strict loader (UNet, SyncNet, LPIPS); ``prefix`` is prepended to key names in messages.
    """
    for key, shape in expected.items():
        if key not in state_dict:
            raise Diff2LipError(
                f"missing key '{prefix}{key}' (expected shape {shape}); not a {what} for this config", path
            )
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise Diff2LipError(f"key '{prefix}{key}' holds a {type(value).__name__}, not a tensor", path)
        if tuple(value.shape) != shape:
            raise Diff2LipError(
                f"shape mismatch for key '{prefix}{key}': expected {shape}, found {tuple(value.shape)}", path
            )
        if not value.is_floating_point():
            raise Diff2LipError(
                f"key '{prefix}{key}' has dtype {value.dtype}, expected a floating-point tensor", path
            )
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        found = state_dict[unexpected[0]]
        shape = tuple(found.shape) if isinstance(found, torch.Tensor) else type(found).__name__
        raise Diff2LipError(
            f"unexpected key '{prefix}{unexpected[0]}' (found {shape}; {len(unexpected)} unexpected in all)",
            path,
        )


def read_torch_state_dict(path: str | Path, what: str, hint: str) -> Mapping[str, Any]:
    """A plain ``state_dict`` saved by ``torch.save`` (third-party weights), read safely on the CPU.

    ``torch.load(weights_only=True)``: a pickle that would run code is refused. ``what`` names the file in
    the one-line errors (``"torchvision alex weights"``); ``hint`` says where to get it when it is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise Diff2LipError(f"{what} not found; {hint}", p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except _TORCH_LOAD_ERRORS as e:
        raise Diff2LipError(f"cannot read {what}: {_torch_load_reason(e)}", p) from None
    if not isinstance(obj, Mapping):
        raise Diff2LipError(f"not a state_dict (expected {what})", p)
    return obj


def load_state_dict_strict(
    module: torch.nn.Module,
    state: Mapping[str, Any],
    path: str | Path | None,
    *,
    what: str,
    prefix: str = "",
) -> None:
    """Check ``state`` with :func:`check_state_dict` against ``module``, then load it with ``strict=True``.

    BatchNorm's integer ``num_batches_tracked`` counters may be absent (files exported before PyTorch 0.4.1,
    such as pytorch-fid's and syncnet_python's, have none; loading then keeps the module's own).
    """
    own = module.state_dict()
    counters = {k for k in own if k.endswith("num_batches_tracked")}
    expected = {k: tuple(v.shape) for k, v in own.items() if k not in counters}
    check_state_dict(
        {k: v for k, v in state.items() if k not in counters}, expected, path, what=what, prefix=prefix
    )
    module.load_state_dict(dict(state), strict=True)


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    cfg: Any,
    directory: str | Path,
    *,
    fmt: str = FORMAT,
    version: int = FORMAT_VERSION,
    diffusion: Mapping[str, Any] | None = None,
    sampling: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write ``config.json`` (``{"format": fmt, "format_version": version, "model": cfg, ...}``) and
    ``model.safetensors`` into ``directory``, each atomically; the format of every saved model here.

    ``cfg`` is the model's config dataclass; the optional sections are added when given. ``dtype`` casts
    the floating-point tensors (stored as they are by default).
    """
    from safetensors.torch import save_file

    target = parse_dtype(dtype)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach()
        if target is not None and v.is_floating_point():
            v = v.to(target)
        tensors[k] = v.to("cpu").contiguous()
    doc: dict[str, Any] = {"format": fmt, "format_version": version, "model": to_dict(cfg)}
    if diffusion is not None:
        doc["diffusion"] = dict(diffusion)
    if sampling is not None:
        doc["sampling"] = dict(sampling)
    if extra is not None:
        doc["extra"] = dict(extra)
    text = json.dumps(doc, indent=2) + "\n"
    write_atomic(out / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    write_atomic(out / CONFIG_NAME, lambda p: Path(p).write_text(text))
    return out


def save_pretrained(
    model: Diff2LipUNet,
    directory: str | Path,
    *,
    diffusion: Mapping[str, Any] | None = None,
    sampling: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    dtype: str | torch.dtype | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created if needed).

    ``diffusion`` / ``sampling`` are the plain-dict sections the pipeline rebuilds its diffusion and
    sampler configs from; ``extra`` is free-form provenance. ``dtype`` (``"fp16"``...) casts the
    stored floating-point weights; by default they are stored as they are. Each file is written
    through a temporary file and renamed, so a crash never leaves a half-written file.
    """
    return save_state_dict(
        model.state_dict(),
        model.config,
        directory,
        diffusion=diffusion,
        sampling=sampling,
        extra=extra,
        dtype=dtype,
    )


#: the top-level keys of a saved model's config.json
CONFIG_SECTIONS = frozenset({"format", "format_version", "model", "diffusion", "sampling", "extra"})


def read_config_json(
    directory: Path, fmt: str = FORMAT, version: int = FORMAT_VERSION, what: str = "Diff2Lip model"
) -> dict[str, Any]:
    """The ``config.json`` of a saved model directory, checked for its ``format`` and version."""
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise Diff2LipError(f"no {CONFIG_NAME} in this directory; not a saved {what}", directory)
    try:
        doc = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise Diff2LipError(f"invalid JSON: {e}", cfg_path) from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise Diff2LipError(f'not a {what} config (expected "format": "{fmt}")', cfg_path)
    if doc.get("format_version") != version:
        raise Diff2LipError(
            f"unsupported format_version {doc.get('format_version')!r} (this version reads {version})",
            cfg_path,
        )
    unknown = sorted(set(doc) - CONFIG_SECTIONS)
    if unknown:  # unknown keys are errors everywhere else too (a typo must not be ignored silently)
        raise Diff2LipError(
            f"unknown top-level key(s) {', '.join(map(repr, unknown))} "
            f"(expected {', '.join(sorted(CONFIG_SECTIONS))})",
            cfg_path,
        )
    return doc


def read_weights(directory: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """``directory/model.safetensors`` and its tensors (on the CPU); a one-line error if missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise Diff2LipError(f"missing {WEIGHTS_NAME}", directory)
    try:
        return weights, load_file(weights, device="cpu")
    except (SafetensorError, OSError) as e:
        raise Diff2LipError(f"cannot read safetensors file: {e}", weights) from None


def _materialize(
    cfg: UNetConfig,
    state_dict: Mapping[str, torch.Tensor],
    path: Path,
    device: str | torch.device,
    dtype: torch.dtype | None,
) -> Diff2LipUNet:
    """Build the model on the meta device and adopt the (checked) tensors, strictly."""
    check_state_dict(state_dict, expected_shapes(cfg), path)
    model = build_meta_model(cfg)
    target = dtype or torch.float32
    tensors = {k: v.to(device=device, dtype=target).contiguous() for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def load_pretrained(
    directory: str | Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> PretrainedModel:
    """Rebuild a model written by :func:`save_pretrained`; every key and shape must match.

    ``dtype`` defaults to float32 whatever the stored precision (use ``torch.autocast`` for
    half-precision compute); the model is returned in eval mode.
    """
    d = Path(directory)
    doc = read_config_json(d)
    cfg = model_config_from_mapping(doc, d / CONFIG_NAME)
    weights, state_dict = read_weights(d)
    model = _materialize(cfg, state_dict, weights, device, parse_dtype(dtype))
    return PretrainedModel(model=model, config_dict=doc, path=d)


def _looks_like_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _torch_load_reason(e: BaseException) -> str:
    """The informative line of a ``torch.load`` error (its messages are long and multi-line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("Unsupported") or "invalid load key" in ln:
            return ln
        tail = ln.partition("WeightsUnpickler error:")[2].strip()
        if tail:
            return tail
    return lines[0] if lines else type(e).__name__


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the authors' checkpoint safely and check it against the paper model.

    Uses ``torch.load(map_location="cpu", weights_only=True)``: a pickle that would run code is
    refused. A ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and a DDP ``module.`` prefix are
    removed. Every key and shape must equal the model built from ``configs/paper.yaml``; the error
    names the first key that does not.
    """
    p = Path(path)
    if not p.is_file():
        raise Diff2LipError("checkpoint file not found", p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise Diff2LipError(
                f"refusing to load: it references {found.group(1)} (code or a class, not plain tensors); "
                "only plain state_dicts are accepted",
                p,
            ) from None
        raise Diff2LipError(f"not a readable PyTorch checkpoint ({_torch_load_reason(e)})", p) from None
    except KeyError:  # the legacy (non-zip) reader's symptom for foreign bytes
        raise Diff2LipError("not a readable PyTorch checkpoint (unrecognised file format)", p) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise Diff2LipError(f"not a readable PyTorch checkpoint ({_torch_load_reason(e)})", p) from None
    for _ in range(3):  # unwrap {"state_dict": {...}} / {"model": {...}} (possibly nested once)
        if isinstance(obj, Mapping) and not _looks_like_state_dict(obj):
            inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise Diff2LipError(f"expected a state_dict (a mapping of tensors), found {type(obj).__name__}", p)
    state = dict(obj)
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    check_state_dict(state, expected_shapes(paper_config()), p)
    return state


def paper_config() -> UNetConfig:
    """The released model's architecture (``configs/paper.yaml``)."""
    return model_config_from_mapping(_paper_doc(), packaged_config_path("paper"))


def _paper_doc() -> dict[str, Any]:
    return load_yaml(packaged_config_path("paper"))


def _paper_sections() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    doc = _paper_doc()
    return doc.get("diffusion"), doc.get("sampling")


def convert_official(
    pt_path: str | Path, out_dir: str | Path, *, dtype: str | torch.dtype | None = None
) -> Path:
    """Official ``.pt`` → our ``config.json`` + ``model.safetensors`` in ``out_dir``.

    The checkpoint is fully read and checked before anything is written; the files are written into
    a temporary directory beside ``out_dir`` and moved into place, so a failure leaves no partial
    output. The diffusion and sampling sections are those of ``configs/paper.yaml``.
    """
    src = Path(pt_path)
    out = Path(out_dir)
    state = load_official_state_dict(src)
    if out.exists() and not out.is_dir():
        raise Diff2LipError("output path exists and is not a directory", out)
    diffusion, sampling = _paper_sections()
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(parent, out.name)
    staging = temp_dir_sibling(out)
    try:
        save_state_dict(
            state,
            paper_config(),
            staging,
            diffusion=diffusion,
            sampling=sampling,
            extra={"converted_from": src.name, "source": "official Diff2Lip checkpoint"},
            dtype=dtype,
        )
        out.mkdir(exist_ok=True)
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            publish(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def checkpoint_model_config(path: str | Path) -> UNetConfig:
    """The architecture of a checkpoint of either form, read without loading its weights."""
    p = Path(path)
    if p.is_dir():
        return model_config_from_mapping(read_config_json(p), p / CONFIG_NAME)
    if not p.exists():
        raise Diff2LipError("checkpoint not found (expected a model directory or an official .pt file)", p)
    return paper_config()


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> PretrainedModel:
    """Load either form: a directory with ``config.json`` (ours) or an official ``.pt`` file; or a name of
    :mod:`diff2lip.models.named` (``demo``, ``paper``).

    An official checkpoint gets the config sections of ``configs/paper.yaml``.
    """
    from diff2lip.models.named import names_help, resolve_model

    p = resolve_model(path)
    if p.is_dir():
        return load_pretrained(p, device=device, dtype=dtype)
    if not p.exists():
        raise Diff2LipError(
            f"checkpoint not found (expected a model directory, an official .pt file, {names_help()})", p
        )
    state = load_official_state_dict(p)
    model = _materialize(paper_config(), state, p, device, parse_dtype(dtype))
    diffusion, sampling = _paper_sections()
    doc: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": to_dict(model.config)}
    if diffusion is not None:
        doc["diffusion"] = diffusion
    if sampling is not None:
        doc["sampling"] = sampling
    doc["extra"] = {"converted_from": p.name, "source": "official Diff2Lip checkpoint"}
    return PretrainedModel(model=model, config_dict=doc, path=p)
