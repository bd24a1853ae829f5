"""SyncNet training: pair dataset, exact resume, checkpoints, TensorBoard, DDP on gloo, CLI errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diff2lip.audio.windows import sync_windows
from diff2lip.config import load_yaml, packaged_config_path, save_yaml
from diff2lip.data import layout
from diff2lip.data.dataset import ClipStore, SyncPairDataset
from diff2lip.errors import Diff2LipError
from diff2lip.train.checkpoint import latest_checkpoint, load_checkpoint
from diff2lip.train.syncnet_trainer import (
    StepBatchSampler,
    SyncNetTrainConfig,
    config_from_dict,
    train_syncnet,
)

CLIPS, SECONDS = 4, 2


def tiny_config(data: Path, out: Path, **overrides) -> SyncNetTrainConfig:
    doc = load_yaml(packaged_config_path("syncnet_tiny"))
    doc.update(data_dir=str(data), out_dir=str(out), tensorboard=False, **overrides)
    return config_from_dict(doc)


# ------------------------------------------------------------------------------------------- dataset


def test_clip_store_reads_split_lazily(synth_corpus):
    store = ClipStore(synth_corpus, "train")
    assert store.ids == layout.read_filelist(synth_corpus, "train") and len(store) == 2
    assert store.size == 32 and store.num_frames(0) == 25 * SECONDS
    assert store.speaker(0)  # synth records the voice as the speaker
    assert store._faces == {}  # nothing opened yet
    faces = store.faces(1)
    assert isinstance(faces, np.memmap) and faces.shape == (50, 32, 32, 3)
    assert store.mel(1).shape[0] == 80
    assert len(ClipStore(synth_corpus)) == CLIPS  # split None: the whole manifest


def test_pairs_are_deterministic_and_balanced(synth_corpus):
    store = ClipStore(synth_corpus, "train")
    ds = SyncPairDataset(store, samples_per_epoch=64, seed=5)
    again = SyncPairDataset(ClipStore(synth_corpus, "train"), samples_per_epoch=64, seed=5)
    for i in (0, 7, 63, 64 + 3):  # 67 is in the next epoch
        a, b = ds[i], again[i]
        for k in a:
            assert torch.equal(a[k], b[k]), (i, k)
    assert not torch.equal(ds[3]["faces"], SyncPairDataset(store, samples_per_epoch=64, seed=6)[3]["faces"])
    assert not torch.equal(ds[3]["faces"], ds[64 + 3]["faces"])  # another epoch, another draw
    ds.set_epoch(1)
    assert torch.equal(ds[3]["faces"], again[64 + 3]["faces"])  # set_epoch ≡ indexing past an epoch
    ds.set_epoch(0)

    samples = [ds[i] for i in range(16)]
    labels = [float(s["label"]) for s in samples]
    assert labels == [0.0, 1.0] * 8  # every even contiguous run is exactly balanced
    for s in samples:
        assert s["faces"].shape == (15, 16, 32) and s["mel"].shape == (1, 80, 16)
        assert float(s["faces"].min()) >= 0.0 and float(s["faces"].max()) <= 1.0
        clip, f0 = int(s["clip"]), int(s["frame"])
        aclip, a0 = int(s["audio_clip"]), int(s["audio_frame"])
        expected = sync_windows(store.mel(aclip), [a0 / 25])  # window at int(80·a0/25)
        assert torch.equal(s["mel"], torch.from_numpy(expected))
        lower = store.faces(clip)[f0 + 4, 16:].astype(np.float32) / 255  # frame f0+4 → channels 12..14
        np.testing.assert_allclose(s["faces"][12:15].numpy(), lower.transpose(2, 0, 1), atol=1e-6)
        if s["label"] == 1:
            assert (aclip, a0) == (clip, f0)
        else:
            assert aclip != clip or abs(a0 - f0) >= 5


def test_workers_give_the_same_batches(synth_corpus):
    ds = SyncPairDataset(ClipStore(synth_corpus, "train"), samples_per_epoch=32, seed=1)
    sampler = StepBatchSampler(0, 2, 8)
    single = list(torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=0))
    multi = list(torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=2))
    for a, b in zip(single, multi):
        assert torch.equal(a["faces"], b["faces"]) and torch.equal(a["mel"], b["mel"])


def test_step_batch_sampler_shards_contiguously():
    r0 = list(StepBatchSampler(1, 3, 4, rank=0, world_size=2))
    r1 = list(StepBatchSampler(1, 3, 4, rank=1, world_size=2))
    assert r0 == [[8, 9, 10, 11], [16, 17, 18, 19]]
    assert r1 == [[12, 13, 14, 15], [20, 21, 22, 23]]
    assert list(StepBatchSampler(0, 1, 8)) == [list(range(8))]


def _write_clip(root: Path, clip_id: str, frames: int) -> None:
    rec = layout.ClipRecord(id=clip_id, num_frames=frames, fps=25.0, size=32)
    d = layout.clip_dir(root, clip_id)
    d.mkdir(parents=True)
    np.save(d / layout.FACES, np.zeros((frames, 32, 32, 3), np.uint8))
    np.save(d / layout.MEL, np.zeros((80, int(frames * 3.2) + 1), np.float32))
    layout.write_meta(root, rec)


def test_short_clips_are_skipped_or_an_error(tmp_path):
    _write_clip(tmp_path, "short", 8)  # < nframes + min_offset = 10 frames
    _write_clip(tmp_path, "long", 30)
    layout.rebuild_manifest(tmp_path)
    with pytest.warns(UserWarning, match="skipping 1 clip"):
        ds = SyncPairDataset(ClipStore(tmp_path), samples_per_epoch=4)
    assert {int(ds[i]["clip"]) for i in range(4)} == {ClipStore(tmp_path).ids.index("long")}
    only_short = tmp_path / "only_short"
    _write_clip(only_short, "short", 8)
    layout.rebuild_manifest(only_short)
    with pytest.raises(Diff2LipError, match="no clip is long enough"):
        SyncPairDataset(ClipStore(only_short), samples_per_epoch=4)


# ------------------------------------------------------------------------------------------- trainer


def test_resume_two_plus_two_equals_four_bitwise(synth_corpus, tmp_path):
    full = train_syncnet(
        tiny_config(synth_corpus, tmp_path / "full", max_steps=4), device="cpu", progress=False
    )
    assert full.step == 4
    half = tiny_config(synth_corpus, tmp_path / "split", max_steps=2)
    train_syncnet(half, device="cpu", progress=False)
    assert latest_checkpoint(tmp_path / "split" / "checkpoints").name == "step_000000002"
    half.max_steps = 4
    resumed = train_syncnet(half, resume=True, device="cpu", progress=False)
    assert resumed.step == 4

    a = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "split" / "checkpoints"))
    assert a.step == b.step == 4
    for k, v in a.weights["model"].items():
        assert torch.equal(v, b.weights["model"][k]), k
    sa, sb = a.optimizers["adam"]["state"], b.optimizers["adam"]["state"]
    for pid in sa:
        assert torch.equal(sa[pid]["exp_avg_sq"], sb[pid]["exp_avg_sq"])
    # validation after step 4 sees the same weights, so the same numbers
    assert full.history[-1] == resumed.history[-1]
    # the exported model is a loadable expert
    exported = load_file(tmp_path / "full" / "model" / "model.safetensors")
    assert set(exported) == set(a.weights["model"])


def test_run_directory_layout_and_tensorboard(synth_corpus, tmp_path):
    cfg = tiny_config(synth_corpus, tmp_path / "run", max_steps=4, eval_every=2, checkpoint_every=2)
    cfg.tensorboard = True
    cfg.keep_checkpoints = 1
    result = train_syncnet(cfg, device="cpu", progress=False)
    run = tmp_path / "run"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000000004"]  # keep 1
    assert (run / "config.yaml").is_file() and (run / "best" / "config.json").is_file()
    assert len((run / "history.jsonl").read_text().splitlines()) == 2 == len(result.history)
    assert 0.0 <= result.best_val_acc <= 1.0 and result.best_step in (2, 4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr"} <= tags
    assert [e.step for e in events.Scalars("val/acc")] == [2, 4]
    ckpt = load_checkpoint(run / "checkpoints" / "step_000000004")
    assert ckpt.config["model"]["image_size"] == 32 and "init_generator" in ckpt.rng


def test_restart_without_resume_and_changed_model_are_errors(synth_corpus, tmp_path):
    cfg = tiny_config(synth_corpus, tmp_path / "run", max_steps=1)
    train_syncnet(cfg, device="cpu", progress=False)
    with pytest.raises(Diff2LipError, match="already has checkpoints"):
        train_syncnet(cfg, device="cpu", progress=False)
    cfg.model.embed_dim = 8
    with pytest.raises(Diff2LipError, match="model config differs"):
        train_syncnet(cfg, resume=True, device="cpu", progress=False)


def test_crop_size_mismatch_is_an_error(synth_corpus, tmp_path):
    doc = load_yaml(packaged_config_path("syncnet_synthetic"))
    doc.update(data_dir=str(synth_corpus), out_dir=str(tmp_path / "r"))
    with pytest.raises(Diff2LipError, match="image_size is 64 but the clips are 32 px"):
        train_syncnet(config_from_dict(doc), device="cpu", progress=False)


def test_ddp_two_gloo_processes_match_one_process_with_the_double_batch(synth_corpus, tmp_path):
    torchrun = shutil.which("torchrun")
    assert torchrun is not None, "torchrun is installed with torch"
    cfg_path = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(synth_corpus, tmp_path / "ddp", max_steps=3, val_batches=1), cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "diff2lip", "train-syncnet"]
    proc = subprocess.run(
        [*cmd, str(cfg_path), "--device", "cpu", "--no-progress"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("train-syncnet: 3 steps") == 1  # rank 0 alone reports
    # both ranks together drew the single-process batch of 2·B pairs; DDP averaged their gradients
    single = tiny_config(synth_corpus, tmp_path / "single", max_steps=3, val_batches=1, batch_size=16)
    train_syncnet(single, device="cpu", progress=False)
    a = load_file(tmp_path / "ddp" / "checkpoints" / "step_000000003" / "model.safetensors")
    b = load_file(tmp_path / "single" / "checkpoints" / "step_000000003" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- CLI


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from diff2lip.cli import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    rc, _, err = _cli(capsys, "train-syncnet", str(tmp_path / "nope.yaml"))
    assert rc == 2 and err.strip().count("\n") == 0 and "config file not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 4\nlearning_rate: 0.1\n")
    rc, _, err = _cli(capsys, "train-syncnet", str(bad))
    assert rc == 2 and err.strip().count("\n") == 0 and "unknown config key 'learning_rate'" in err
    rc, _, err = _cli(
        capsys, "train-syncnet", str(packaged_config_path("syncnet_tiny")), "--out", str(tmp_path)
    )
    assert rc == 2 and "data_dir is empty" in err


def test_cli_trains_and_exports(tmp_path, synth_corpus, capsys):
    config = str(packaged_config_path("syncnet_tiny"))
    run = str(tmp_path / "run")
    rc, out, _ = _cli(
        capsys,
        "train-syncnet",
        config,
        "--data",
        str(synth_corpus),
        "--out",
        run,
        "--max-steps",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert rc == 0 and "train-syncnet: 2 steps" in out
    from diff2lip.models.syncnet import load_syncnet

    assert load_syncnet(tmp_path / "run" / "model").config.image_size == 32
    rc, out, _ = _cli(
        capsys,
        "train-syncnet",
        config,
        "--data",
        str(synth_corpus),
        "--out",
        run,
        "--max-steps",
        "3",
        "--resume",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert rc == 0 and "resumed from" in out and "train-syncnet: 3 steps" in out
