"""Proof run of the SyncNet expert on the synthetic corpus (issue 4).

1. makes the corpus with ``diff2lip synth`` (400 clips × 4 s: 360 for training, 20 + 20 held out, whose
   val/test clips speak with voices no training clip uses and have their own seeds and faces), unless
   ``--corpus`` names an existing one;
2. trains ``src/diff2lip/configs/syncnet_synthetic.yaml`` with ``diff2lip train-syncnet`` — by default under
   ``torchrun --nproc-per-node 2`` with one thread per process, i.e. on 2 CPU cores — and times it
   (target ≤ 20 minutes);
3. measures held-out accuracy (score ≥ 0.5 ⇔ in sync) of the exported expert on fixed balanced pairs of
   the **test** split (never used in training or model selection), next to the val accuracy of training;
4. shifts the speech of every held-out clip by k ∈ {−6, −3, 0, 3, 6} frames and checks that the offset
   estimate is exactly k (target ≥ 90 %), both through ``estimate_offset`` on the prepared crops and
   through the file path of ``diff2lip sync-offset`` (the raw H.264 mp4, its ``track.json`` and the
   shifted wav).

Prints the numbers and writes them to ``WORK/results.json``::

    python benchmarks/syncnet_synthetic.py --work /tmp/syncnet-proof
    python benchmarks/syncnet_synthetic.py --work /tmp/syncnet-proof --corpus /tmp/syncnet-proof/synth --skip-train
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def heldout_accuracy(model_dir: Path, corpus: Path, split: str, pairs: int, seed: int) -> dict[str, float]:
    import torch

    from diff2lip.data.dataset import ClipStore, SyncPairDataset
    from diff2lip.models.syncnet import load_syncnet
    from diff2lip.train.syncnet_trainer import evaluate

    model = load_syncnet(model_dir)
    ds = SyncPairDataset(ClipStore(corpus, split), samples_per_epoch=pairs, seed=seed)
    batches = [list(range(i, min(i + 128, pairs))) for i in range(0, pairs, 128)]
    with torch.inference_mode():
        return evaluate(model, torch.utils.data.DataLoader(ds, batch_sampler=batches), torch.device("cpu"))


def offsets(model_dir: Path, corpus: Path, splits: list[str], shifts: list[int], max_offset: int) -> dict:
    import wave

    from diff2lip.audio import load_audio, melspectrogram
    from diff2lip.data import layout
    from diff2lip.evaluation.sync import estimate_offset, shift_audio, sync_offset_file
    from diff2lip.models.syncnet import load_syncnet

    model = load_syncnet(model_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="syncnet-shift-") as tmp:
        for split in splits:
            for clip in layout.read_filelist(corpus, split):
                d = layout.clip_dir(corpus, clip)
                faces = np.load(d / layout.FACES)
                wav = load_audio(d / layout.AUDIO, 16000)
                for k in shifts:
                    shifted = shift_audio(wav, k)
                    crops = estimate_offset(faces, melspectrogram(shifted), model, max_offset)
                    path = Path(tmp) / f"{clip}_{k}.wav"
                    pcm = np.clip(np.round(shifted * 32768), -32768, 32767).astype("<i2")
                    with wave.open(str(path), "wb") as w:
                        w.setnchannels(1)
                        w.setsampwidth(2)
                        w.setframerate(16000)
                        w.writeframes(pcm.tobytes())
                    video, _ = sync_offset_file(
                        corpus / "raw" / f"{clip}.mp4",
                        path,
                        model_dir,
                        face_track=d / "track.json",
                        max_offset=max_offset,
                        device="cpu",
                    )
                    rows.append(
                        {
                            "clip": clip,
                            "split": split,
                            "k": k,
                            "crops": crops.offset,
                            "crops_conf": crops.confidence,
                            "video": video.offset,
                            "video_conf": video.confidence,
                        }
                    )
    n = len(rows)
    per_k = {
        str(k): {
            "crops": float(np.mean([r["crops"] == k for r in rows if r["k"] == k])),
            "video": float(np.mean([r["video"] == k for r in rows if r["k"] == k])),
        }
        for k in shifts
    }
    return {
        "cases": n,
        "crops_exact": float(np.mean([r["crops"] == r["k"] for r in rows])),
        "video_exact": float(np.mean([r["video"] == r["k"] for r in rows])),
        "crops_within_1": float(np.mean([abs(r["crops"] - r["k"]) <= 1 for r in rows])),
        "video_within_1": float(np.mean([abs(r["video"] - r["k"]) <= 1 for r in rows])),
        "median_confidence": float(np.median([r["video_conf"] for r in rows])),
        "per_k": per_k,
        "misses": [r for r in rows if r["crops"] != r["k"] or r["video"] != r["k"]],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="directory for the corpus, the run and results.json")
    p.add_argument("--corpus", default=None, help="use this existing corpus instead of making one")
    p.add_argument("--clips", type=int, default=400)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--config", default=None, help="training config (default: packaged syncnet_synthetic)")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes (1 = a single process)")
    p.add_argument("--skip-train", action="store_true", help="reuse WORK/run/model")
    p.add_argument("--pairs", type=int, default=4096, help="held-out test pairs for the accuracy")
    p.add_argument("--max-offset", type=int, default=15)
    args = p.parse_args()

    from diff2lip.config import packaged_config_path

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    corpus = Path(args.corpus) if args.corpus else work / "synth"
    if args.corpus is None and not (corpus / "manifest.jsonl").is_file():
        cmd = [sys.executable, "-m", "diff2lip", "synth", str(corpus), "--clips", str(args.clips)]
        cmd += [
            "--seconds",
            str(args.seconds),
            "--seed",
            str(args.seed),
            "--size",
            "128",
            "--crop-size",
            "64",
            "--val-fraction",
            "0.05",
            "--test-fraction",
            "0.05",
        ]
        results["synth_seconds"] = run([*cmd, "--workers", "2", "--no-progress"])
    config = args.config or str(packaged_config_path("syncnet_synthetic"))
    run_dir = work / "run"
    if not args.skip_train:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        train = ["-m", "diff2lip", "train-syncnet", config, "--data", str(corpus), "--out", str(run_dir)]
        train += ["--device", "cpu", "--threads", "1", "--no-progress"]
        if args.nproc > 1:
            torchrun = shutil.which("torchrun") or "torchrun"
            cmd = [torchrun, "--standalone", "--nproc-per-node", str(args.nproc), *train]
        else:
            cmd = [sys.executable, *train]
        results["train_seconds"] = run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(f"training wall time: {results['train_seconds']:.0f} s", flush=True)
    history = [json.loads(ln) for ln in (run_dir / "history.jsonl").read_text().splitlines() if ln.strip()]
    results["val_history"] = history
    exported = json.loads((run_dir / "model" / "config.json").read_text())["extra"]
    results["exported"] = exported
    test = heldout_accuracy(run_dir / "model", corpus, "test", args.pairs, seed=777)
    results["test_accuracy"], results["test_loss"] = test["acc"], test["loss"]
    print(
        f"val accuracy (model selection): {exported.get('val_acc', float('nan')):.2%} at step {exported['step']}"
    )
    print(
        f"test accuracy ({args.pairs} balanced pairs, unseen voices and faces): {test['acc']:.2%}", flush=True
    )
    start = time.perf_counter()
    off = offsets(run_dir / "model", corpus, ["test", "val"], [-6, -3, 0, 3, 6], args.max_offset)
    off["seconds"] = time.perf_counter() - start
    results["offsets"] = off
    print(
        f"offset exact: {off['video_exact']:.1%} via sync-offset on mp4+wav, {off['crops_exact']:.1%} on the "
        f"prepared crops ({off['cases']} cases); within ±1: {off['video_within_1']:.1%}; "
        f"median confidence {off['median_confidence']:.3f}"
    )
    for k, v in off["per_k"].items():
        print(f"  k={int(k):+d}: mp4 {v['video']:.1%}  crops {v['crops']:.1%}")
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
