"""``diff2lip batch``: many (video, audio, output[, options]) rows with one model load (issue 6).

* Manifest: CSV with a header ``video,audio,output[,...]`` or JSONL objects with those keys; relative
  paths are relative to the manifest's folder. Further columns (:data:`ROW_OPTIONS`: reference, length,
  crf, blend, face_id, steps, seed, sampler, audio_codec, pads, box) set that option for their row.
* Contained (``output_root``): every output must resolve inside that folder (relative outputs are relative
  to it); a row whose output would land elsewhere (``..``, an absolute path, a symbolic link out) fails
  with a one-line reason. For the server and any shared job runner.
* Resumable: rows whose output exists are skipped (outputs are written atomically by ``generate_video``,
  so an existing file is a finished one).
* Robust: a failing row is recorded and the batch goes on; failures are listed at the end.
* Sharded: under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) process ``r`` takes rows
  ``r, r + W, r + 2W, ...`` — no communication needed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diff2lip.errors import Diff2LipError

__all__ = ["BatchReport", "BatchRow", "read_manifest", "run_batch", "shard", "shard_from_env"]

FIELDS = ("video", "audio", "output")
ROW_OPTIONS: dict[str, Callable[[str], Any]] = {
    "reference": str,
    "length": str,
    "crf": float,
    "blend": str,
    "face_id": int,
    "steps": int,
    "seed": int,
    "sampler": str,
    "audio_codec": str,
    "pads": lambda v: tuple(int(x) for x in v.split()),
    "box": lambda v: tuple(float(x) for x in v.split()),
}
"""Manifest columns that set a :class:`~diff2lip.inference.runner.GenerateOptions` field for one row
(``pads``/``box``: four numbers separated by spaces); an empty cell keeps the batch's option."""


@dataclass(frozen=True)
class BatchRow:
    """One job of a batch (absolute paths)."""

    index: int
    video: Path
    audio: Path
    output: Path
    options: dict[str, Any] = field(default_factory=dict)  # this row's ROW_OPTIONS

    @property
    def reference(self) -> str | None:
        return self.options.get("reference")


@dataclass
class BatchReport:
    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.done)} generated, {len(self.skipped)} already done, {len(self.failed)} failed"]
        lines += [f"  row {i}: {msg}" for i, msg in self.failed]
        return "\n".join(lines)


def _row(index: int, raw: Mapping[str, Any], base: Path, out_base: Path, path: Path) -> BatchRow:
    missing = [k for k in FIELDS if not raw.get(k)]
    if missing:
        raise Diff2LipError(f"row {index}: missing {', '.join(missing)}", path)

    def resolve(v: Any, against: Path = base) -> Path:
        p = Path(str(v)).expanduser()
        return p if p.is_absolute() else against / p

    unknown = sorted(set(raw) - set(FIELDS) - set(ROW_OPTIONS))
    if unknown:
        raise Diff2LipError(
            f"row {index}: unknown column(s) {', '.join(unknown)} (known: {', '.join(FIELDS + tuple(ROW_OPTIONS))})",
            path,
        )
    options = {}
    for key, parse in ROW_OPTIONS.items():
        value = raw.get(key)
        if value is None or str(value).strip() == "":
            continue
        if isinstance(value, list):  # JSONL: "pads": [0, 10, 0, 0]
            value = " ".join(str(v) for v in value)
        try:
            options[key] = parse(str(value).strip())
        except ValueError:
            raise Diff2LipError(f"row {index}: bad {key} '{value}'", path) from None
        if key in ("pads", "box") and len(options[key]) != 4:
            raise Diff2LipError(f"row {index}: {key} needs 4 numbers, got '{value}'", path)
    return BatchRow(
        index, resolve(raw["video"]), resolve(raw["audio"]), resolve(raw["output"], out_base), options
    )


def read_manifest(path: str | Path, output_root: str | Path | None = None) -> list[BatchRow]:
    """Rows of a CSV (header ``video,audio,output[,option columns]``) or JSONL (``.jsonl``/``.json``) manifest.

    Relative outputs are relative to ``output_root`` when given, else to the manifest's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise Diff2LipError("manifest not found", p)
    base = p.parent
    out_base = base if output_root is None else Path(output_root)
    rows: list[BatchRow] = []
    if p.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise Diff2LipError(f"line {n}: invalid JSON ({e.msg})", p) from None
            if not isinstance(obj, dict):
                raise Diff2LipError(f"line {n}: expected an object with video, audio, output", p)
            rows.append(_row(len(rows), obj, base, out_base, p))
    else:
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(FIELDS) <= {h.strip() for h in reader.fieldnames}:
                raise Diff2LipError("CSV needs a header with video,audio,output[,option columns]", p)
            for raw in reader:
                row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
                rows.append(_row(len(rows), row, base, out_base, p))
    if not rows:
        raise Diff2LipError("manifest has no rows", p)
    outs = [r.output.resolve() for r in rows]
    if len(set(outs)) != len(outs):
        raise Diff2LipError("two rows write the same output", p)
    return rows


def shard(rows: list[BatchRow], rank: int, world_size: int) -> list[BatchRow]:
    """Rows of process ``rank`` out of ``world_size`` (round robin)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise Diff2LipError(f"invalid RANK {rank} / WORLD_SIZE {world_size}")
    return rows[rank::world_size]


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment (torchrun), ``(0, 1)`` when absent."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise Diff2LipError("RANK and WORLD_SIZE must be integers") from None


def run_batch(
    rows: list[BatchRow],
    generate: Callable[[BatchRow], object],
    *,
    progress: bool = True,
    desc: str = "batch",
    output_root: str | Path | None = None,
) -> BatchReport:
    """Run ``generate(row)`` for every row whose output is missing; errors are collected, not raised.

    ``generate`` is usually a closure over one loaded pipeline (see :func:`pipeline_generator`). With
    ``output_root``, a row whose output does not resolve inside it fails without running.
    """
    from tqdm import tqdm

    from diff2lip.fileio import is_inside

    report = BatchReport()
    for row in tqdm(rows, desc=desc, unit="row", disable=not progress):
        if output_root is not None and not is_inside(row.output, output_root):
            report.failed.append((row.index, f"{row.output}: output is outside --output-root {output_root}"))
            continue
        if row.output.is_file():
            report.skipped.append(row.index)
            continue
        try:
            row.output.parent.mkdir(parents=True, exist_ok=True)
            generate(row)
        except (Diff2LipError, OSError, ValueError, RuntimeError) as e:  # a bad row must not stop the batch
            report.failed.append((row.index, str(e).splitlines()[0] if str(e) else type(e).__name__))
        else:
            report.done.append(row.index)
    return report


def pipeline_generator(pipeline: Any, base_options: Any) -> Callable[[BatchRow], object]:
    """``generate(row)`` with one loaded :class:`~diff2lip.inference.pipeline.Diff2LipPipeline`."""
    from dataclasses import replace

    from diff2lip.inference.runner import generate_video

    def generate(row: BatchRow) -> object:
        opts = replace(base_options, **row.options) if row.options else base_options
        return generate_video(row.video, row.audio, row.output, pipeline, opts)

    return generate
