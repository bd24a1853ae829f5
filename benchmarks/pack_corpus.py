"""Pack a ``diff2lip synth`` corpus into one small file to copy to another machine, and unpack it there.

What training and the lip-sync check read is kept: per clip the face crops (as H.264 4:4:4 at crf 12: a
400-clip 64-px corpus of 441 MB becomes 18 MB; mean absolute pixel error 1.8/255, openness read back at
r 0.9985), the mel features (8-bit, range [-4, 4]), ``mouth.npy`` and ``meta.json``, plus the manifest,
the filelists and ``synth.json``. Raw videos and wavs are not carried. Used to train the session-4 sweep
on a borrowed GPU (benchmarks/RESULTS.md).

    python benchmarks/pack_corpus.py pack data/synth packed/      # → packed/clips.npz + the small files
    python benchmarks/pack_corpus.py unpack packed/ data/synth    # on the other machine
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

import av
import numpy as np

SMALL_FILES = ("manifest.jsonl", "synth.json")


def encode_faces(faces: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = faces.shape[2], faces.shape[1], "yuv444p"
        stream.options = {"crf": "12", "preset": "slow"}
        for frame in faces:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def decode_faces(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (N, S, S, 3)


def pack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "filelists", dst / "filelists", dirs_exist_ok=True)
    for name in SMALL_FILES:
        shutil.copy(src / name, dst / name)
    ids = sorted({i for f in (src / "filelists").glob("*.txt") for i in f.read_text().split()})
    blob = {}
    for i in ids:
        d = src / "clips" / i
        blob[f"{i}/h264"] = np.frombuffer(encode_faces(np.load(d / "faces.npy")), np.uint8)
        blob[f"{i}/mel"] = (
            np.round((np.load(d / "mel.npy") + 4.0) / 8.0 * 255.0).clip(0, 255).astype(np.uint8)
        )
        blob[f"{i}/mouth"] = np.load(d / "mouth.npy")
        blob[f"{i}/meta"] = np.frombuffer((d / "meta.json").read_bytes(), np.uint8)
    np.savez_compressed(dst / "clips.npz", **blob)
    print(f"packed {len(ids)} clips → {dst} ({(dst / 'clips.npz').stat().st_size / 1e6:.1f} MB)")


def unpack(src: Path, dst: Path) -> None:
    shutil.copytree(src / "filelists", dst / "filelists", dirs_exist_ok=True)
    for name in SMALL_FILES:
        shutil.copy(src / name, dst / name)
    z = np.load(src / "clips.npz")
    ids = sorted({k.split("/")[0] for k in z.files})
    for i in ids:
        d = dst / "clips" / i
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "faces.npy", decode_faces(z[f"{i}/h264"].tobytes()))
        np.save(d / "mel.npy", z[f"{i}/mel"].astype(np.float32) / 255.0 * 8.0 - 4.0)
        np.save(d / "mouth.npy", z[f"{i}/mouth"])
        (d / "meta.json").write_bytes(z[f"{i}/meta"].tobytes())
    print(f"unpacked {len(ids)} clips → {dst}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    args = p.parse_args(argv)
    need = args.src / ("filelists" if args.action == "pack" else "clips.npz")
    if not need.exists():
        sys.exit(
            f"{args.src}: not a {'corpus' if args.action == 'pack' else 'packed corpus'} ({need.name} missing)"
        )
    (pack if args.action == "pack" else unpack)(args.src, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
