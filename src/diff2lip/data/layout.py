"""The on-disk layout of a prepared data set (written by ``preprocess`` and ``synth``, read by training
and evaluation).

::

    DATA_DIR/
      manifest.jsonl              one ClipRecord per line (JSON), the clips that finished
      filelists/train.txt         clip ids, one per line (also val.txt, test.txt)
      clips/<id>/faces.npy        (N, S, S, 3) uint8 RGB face crops, 25 fps, S = crop size (128 for the paper)
      clips/<id>/audio.wav        16 kHz mono PCM-16 speech of the clip
      clips/<id>/mel.npy          (80, T) float32 mel features of audio.wav (DESIGN.md §3), 80 frames/s
      clips/<id>/meta.json        the ClipRecord plus per-frame boxes in the source frame (written last:
                                  its presence marks the clip as finished, so runs are resumable)
      clips/<id>/...              producers may add files (synth: mouth.npy ground truth, track.json)

Clip ids are file-system safe strings (letters, digits, ``-``, ``_``, ``.``); ``/`` in a source's relative
path becomes ``__``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diff2lip.errors import Diff2LipError
from diff2lip.fileio import write_text_atomic

MANIFEST = "manifest.jsonl"
CLIPS = "clips"
FILELISTS = "filelists"
FACES = "faces.npy"
AUDIO = "audio.wav"
MEL = "mel.npy"
META = "meta.json"
SPLITS = ("train", "val", "test")

_ID_BAD = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ClipRecord:
    """One prepared clip (a line of ``manifest.jsonl``; also the core of ``meta.json``)."""

    id: str
    num_frames: int
    fps: float = 25.0
    size: int = 128
    source: str = ""
    speaker: str = ""
    duration: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def clip_id_from_path(rel: str | Path) -> str:
    """A safe clip id from a path relative to the raw root (``spk1/vid 2.mp4`` → ``spk1__vid_2``)."""
    p = Path(rel)
    stem = "__".join([*p.parent.parts, p.stem]) if p.parent != Path(".") else p.stem
    return _ID_BAD.sub("_", stem)


def clip_dir(data_dir: str | Path, clip_id: str) -> Path:
    return Path(data_dir) / CLIPS / clip_id


def is_done(data_dir: str | Path, clip_id: str) -> bool:
    return (clip_dir(data_dir, clip_id) / META).is_file()


def write_meta(data_dir: str | Path, record: ClipRecord, **per_clip: Any) -> Path:
    """Write ``meta.json`` atomically (last step of producing a clip: marks it done)."""
    d = clip_dir(data_dir, record.id)
    d.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(d / META, json.dumps({**dataclasses.asdict(record), **per_clip}) + "\n")


def read_meta(data_dir: str | Path, clip_id: str) -> dict[str, Any]:
    p = clip_dir(data_dir, clip_id) / META
    if not p.is_file():
        raise Diff2LipError("clip metadata missing (clip not prepared?)", p)
    return json.loads(p.read_text())


def read_manifest(data_dir: str | Path) -> list[ClipRecord]:
    p = Path(data_dir) / MANIFEST
    if not p.is_file():
        raise Diff2LipError("no manifest.jsonl: not a prepared data directory", Path(data_dir))
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(ClipRecord.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise Diff2LipError(f"line {i}: invalid manifest record ({e})", p) from None
    return out


def write_manifest(data_dir: str | Path, records: Iterable[ClipRecord]) -> Path:
    """Rewrite the manifest from ``records`` (sorted by id) atomically."""
    p = Path(data_dir) / MANIFEST
    recs = sorted(records, key=lambda r: r.id)
    return write_text_atomic(p, "".join(r.to_json() + "\n" for r in recs))


def rebuild_manifest(data_dir: str | Path) -> list[ClipRecord]:
    """Collect every finished clip's ``meta.json`` into ``manifest.jsonl``."""
    root = Path(data_dir) / CLIPS
    recs = (
        [
            ClipRecord.from_dict(json.loads((d / META).read_text()))
            for d in sorted(root.iterdir())
            if (d / META).is_file()
        ]
        if root.is_dir()
        else []
    )
    write_manifest(data_dir, recs)
    return recs


def write_filelists(data_dir: str | Path, splits: dict[str, list[str]]) -> None:
    d = Path(data_dir) / FILELISTS
    d.mkdir(parents=True, exist_ok=True)
    for name, ids in splits.items():
        (d / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))


def read_filelist(data_dir: str | Path, split: str) -> list[str]:
    p = Path(data_dir) / FILELISTS / f"{split}.txt"
    if not p.is_file():
        raise Diff2LipError(f"no filelist for split '{split}'", p)
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]


def split_ids(ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic split by a seeded shuffle of the sorted ids (stable across resumed runs)."""
    import numpy as np

    order = sorted(ids)
    rng = np.random.default_rng(seed)
    perm = [order[i] for i in rng.permutation(len(order))]
    n_val = round(len(perm) * val_fraction)
    n_test = round(len(perm) * test_fraction)
    if len(perm) >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    return {
        "val": sorted(perm[:n_val]),
        "test": sorted(perm[n_val : n_val + n_test]),
        "train": sorted(perm[n_val + n_test :]),
    }
