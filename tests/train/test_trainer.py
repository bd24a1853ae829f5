"""The trainer: exact resume, EMA maths, learning on a fixed batch, logs, export → pipeline, CLI, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diff2lip.cli import main
from diff2lip.errors import Diff2LipError
from diff2lip.train.checkpoint import list_checkpoints
from diff2lip.train.config import load_train_config
from diff2lip.train.ema import EMA, ema_decay_at
from diff2lip.train.trainer import Trainer, image_grid

FAST = ["train.log_every=0", "train.image_every=0", "data.batch_size=1"]


def make_trainer(run_dir: Path, overrides: list[str]) -> Trainer:
    return Trainer(load_train_config("train_tiny", overrides), run_dir)


def test_ema_update_math():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = EMA(lin, 0.9)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 0.0]]))
    assert ema.update(lin) == 0.9
    torch.testing.assert_close(ema.model.weight, torch.tensor([[1.2, 1.8]]))  # 0.9·θ_ema + 0.1·θ
    assert not ema.model.weight.requires_grad
    assert [ema_decay_at(0.999, n, True) for n in (0, 10, 10_000)] == [0.1, 11 / 20, 0.999]
    warm = EMA(lin, 0.999, warmup=True)
    warm.update(lin)  # d = 0.1 at the first update
    torch.testing.assert_close(warm.model.weight, torch.tensor([[3.0, 0.0]]))


def test_prepare_shares_t_per_sample_and_draws_independent_cond_noise(tmp_path, tiny_overrides):
    tr = make_trainer(tmp_path / "run", [*tiny_overrides, *FAST, "data.batch_size=2"])
    inp = tr.prepare(tr._next_batch())
    t = inp["t"].view(2, 5)
    assert (t == t[:, :1]).all()
    m = tr.mask
    torch.testing.assert_close(inp["cond"] * (1 - m), inp["x0"] * (1 - m))
    lower = inp["cond"][..., 16:, :]
    assert not torch.allclose(lower, inp["noise"][..., 16:, :])  # not the forward-process ε
    assert 0.8 < lower.std() < 1.2


def test_audio_lr_mult_scales_the_audio_path_step_only(tmp_path, tiny_overrides):
    over = [*tiny_overrides, *FAST, "losses.lambda_gan=0", "optim.warmup_steps=0", "optim.lr=1e-3"]
    over.append("optim.weight_decay=0")
    tr = make_trainer(tmp_path / "run", [*over, "optim.audio_lr_mult=10"])
    groups = {g["lr_mult"]: g for g in tr.opt.param_groups}
    audio = {id(p) for n, p in tr.unet.named_parameters() if n.startswith("audio_encoder")}
    assert {id(p) for p in groups[10.0]["params"]} == audio  # audio_encoder.* and audio_encoder_to_style.*
    assert len(groups[1.0]["params"]) + len(audio) == len(list(tr.unet.parameters()))
    before = {n: p.detach().clone() for n, p in tr.unet.named_parameters()}
    for p in tr.unet.parameters():
        p.grad = torch.ones_like(p)
    tr.opt.step()  # Adam's first step moves every weight by lr (for a non-zero gradient)
    step = {n: (p.detach() - before[n]).abs().max().item() for n, p in tr.unet.named_parameters()}
    assert step["audio_encoder.input_block.0.weight"] == pytest.approx(1e-2, rel=1e-4)
    assert step["audio_encoder_to_style.3.weight"] == pytest.approx(1e-2, rel=1e-4)
    assert step["time_embed.0.weight"] == pytest.approx(1e-3, rel=1e-4)
    tr.train_step()  # the warm-up-free schedule keeps the ratio
    assert groups[10.0]["lr"] == pytest.approx(1e-2) and groups[1.0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(Diff2LipError, match="audio_lr_mult"):
        load_train_config("train_tiny", [*over, "optim.audio_lr_mult=0"])


def test_lr_schedule_warmup_constant_then_linear_decay(tmp_path, tiny_overrides):
    over = [*tiny_overrides, *FAST, "optim.lr=1e-3", "optim.warmup_steps=4"]
    const = make_trainer(tmp_path / "c", over)
    assert [const.lr_at(s) for s in (0, 3, 100, 10**6)] == pytest.approx([2.5e-4, 1e-3, 1e-3, 1e-3])
    tr = make_trainer(tmp_path / "d", [*over, "optim.lr_decay_start=10", "optim.lr_decay_end=20"])
    lrs = [tr.lr_at(s) for s in (0, 9, 10, 15, 19, 20, 30)]
    assert lrs == pytest.approx([2.5e-4, 1e-3, 1e-3, 5e-4, 1e-4, 0.0, 0.0])
    tr.step = 15
    tr.train_step()  # the step's rate reaches the optimizer (the discriminator's is not decayed)
    assert tr.opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    with pytest.raises(Diff2LipError, match="lr_decay_end"):
        load_train_config("train_tiny", [*over, "optim.lr_decay_start=20", "optim.lr_decay_end=20"])


def test_high_t_fraction_oversamples_the_high_noise_steps(tmp_path, tiny_overrides):
    def draws(extra: list[str]) -> np.ndarray:
        tr = make_trainer(
            tmp_path / f"run{len(extra)}", [*tiny_overrides, *FAST, "data.batch_size=8", *extra]
        )
        ts = [tr.prepare(tr._next_batch())["t"].view(8, 5)[:, 0] for _ in range(25)]
        return torch.cat(ts).numpy()

    uniform = draws([])
    high = draws(["train.high_t_fraction=1.0", "train.high_t_min=900"])
    half = draws(["train.high_t_fraction=0.5", "train.high_t_min=900"])
    assert high.min() >= 900 and high.max() < 1000
    assert 0.05 < (uniform >= 900).mean() < 0.2  # ~0.1 of 200 draws
    assert 0.45 < (half >= 900).mean() < 0.65  # 0.5 + 0.5·0.1
    with pytest.raises(Diff2LipError, match="high_t_min"):
        load_train_config("train_tiny", [*tiny_overrides, "train.high_t_min=1000"]).validate()


def test_resume_is_exact(tmp_path, tiny_overrides):
    over = [*tiny_overrides, *FAST, "train.checkpoint_every=2"]
    a = make_trainer(tmp_path / "a", over)
    a.fit(4)
    b = make_trainer(tmp_path / "b", over)
    b.fit(2)
    assert [p.name for p in list_checkpoints(tmp_path / "b" / "checkpoints")] == ["step_000000002"]
    c = make_trainer(tmp_path / "b", over)
    c.resume()
    assert c.step == 2 and c.batches_consumed == 2
    c.fit(4)
    for name in ("unet", "ema", "disc"):
        sa, sc = a._weights()[name], c._weights()[name]
        assert all(torch.equal(sa[k], sc[k]) for k in sa), name
    oa, oc = a.opt.state_dict()["state"], c.opt.state_dict()["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], oc[i]["exp_avg_sq"]) for i in oa)
    assert c.batches_consumed == a.batches_consumed == 4


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path, tiny_overrides):
    tr = make_trainer(
        tmp_path / "run",
        [*tiny_overrides, *FAST, "losses.lambda_gan=0", "data.batch_size=2", "optim.lr=1e-3"],
    )
    batch = tr._next_batch()
    tr._next_batch = lambda: batch  # type: ignore[method-assign]

    def fixed_loss() -> float:
        consumed = tr.batches_consumed
        tr.batches_consumed = 0  # the same t and noises every time
        inp = tr.prepare(batch)
        tr.batches_consumed = consumed
        with torch.no_grad():
            out = tr.unet(inp["x_t"], inp["t"], inp["cond"], tr.mask, inp["ref"], inp["mels"])
            return float(
                tr.loss_fn(
                    out,
                    x0=inp["x0"],
                    x_t=inp["x_t"],
                    t=inp["t"],
                    noise=inp["noise"],
                    mask=tr.mask,
                    sync_mel=inp["sync_mel"],
                ).total
            )

    before = fixed_loss()
    for _ in range(20):  # the same batch, t and noises every step: the loss must fall (by ~25 %)
        tr.train_step()
    after = fixed_loss()
    assert after < 0.9 * before, (before, after)


def test_fit_logs_and_exports_a_model_the_pipeline_loads(tmp_path, tiny_overrides):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from diff2lip.inference.pipeline import Diff2LipPipeline

    run = tmp_path / "run"
    summary = make_trainer(run, [*tiny_overrides, "data.batch_size=1"]).fit(2)
    assert summary.step == 2 and summary.model_dir == run / "model"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "step_000000002" / "state.pt").is_file()
    acc = EventAccumulator(str(run / "tb")).Reload()
    tags = set(acc.Tags()["scalars"])
    want = {f"loss/{k}" for k in ("simple", "vb", "l2", "sync", "lpips", "gan", "total", "disc")}
    assert want | {"train/lr", "train/step_seconds", "train/grad_norm"} <= tags
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2]
    assert acc.Tags()["images"] == ["samples/masked_ref_pred_gt"]

    pipe = Diff2LipPipeline.from_pretrained(summary.model_dir, device="cpu")
    faces = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    out = pipe(faces, np.zeros((2, 80, 16), np.float32), steps=2)
    assert out.shape == (2, 32, 32, 3)
    assert np.array_equal(out[:, :16], faces[:, :16])  # the upper half is the input's


def test_v_prediction_trains_exports_and_samples(tmp_path, tiny_overrides):
    from diff2lip.inference.pipeline import Diff2LipPipeline

    run = tmp_path / "run"
    tr = make_trainer(run, [*tiny_overrides, *FAST, "losses.lambda_gan=0", "diffusion.prediction=v"])
    assert tr.diffusion.prediction == "v"
    summary = tr.fit(1)
    pipe = Diff2LipPipeline.from_pretrained(summary.model_dir, device="cpu")
    assert pipe.diffusion.prediction == "v"  # config.json carries it to inference
    faces = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    out = pipe(faces, np.zeros((2, 80, 16), np.float32), steps=2)
    assert out.shape == (2, 32, 32, 3) and np.array_equal(out[:, :16], faces[:, :16])


def test_image_grid_layout():
    rows = [torch.full((5, 3, 4, 4), v) for v in (-1.0, 0.0, 1.0)]
    grid = image_grid(rows)
    assert grid.shape == (3, 12, 20)
    assert grid[:, :4].max() == 0 and grid[:, 4:8].unique().tolist() == [0.5] and grid[:, 8:].min() == 1


def test_packaged_training_configs_load():
    from diff2lip.models.serialization import paper_config

    paper = load_train_config("paper_train")
    assert paper.model == paper_config()
    assert (
        paper.losses.lambda_l2,
        paper.losses.lambda_sync,
        paper.losses.lambda_lpips,
        paper.losses.lambda_gan,
    ) == (
        1.0,
        0.1,
        0.25,
        0.5,
    )
    synthetic = load_train_config("synthetic")
    assert synthetic.model.image_size == 64 and synthetic.losses.lambda_lpips == 0.0
    with pytest.raises(Diff2LipError, match=r"losses\.gan_loss must be one of"):
        load_train_config("synthetic", ["losses.gan_loss=wasserstein"])


def test_cli_bad_config_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'train.max_stepz'" in err and "bad.yaml" in err
    assert main(["train", "train_tiny", "--out", str(tmp_path / "run")]) == 2
    assert "no training data" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_refuses_to_overwrite_and_resumes(tmp_path, tiny_overrides, capsys):
    sets = [x for o in [*tiny_overrides, *FAST] for x in ("--set", o)]
    run = str(tmp_path / "run")
    assert main(["train", "train_tiny", *sets, "--out", run, "--max-steps", "1", "--quiet"]) == 0
    assert main(["train", "train_tiny", *sets, "--out", run, "--max-steps", "2"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "train_tiny", *sets, "--out", run, "--max-steps", "2", "--resume", "--quiet"]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(Path(run) / "checkpoints")] == [
        "step_000000001",
        "step_000000002",
    ]


@pytest.mark.slow
def test_torchrun_ddp_two_cpu_processes(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    sets = [x for o in [*tiny_overrides, *FAST] for x in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "diff2lip", "train", "train_tiny", *sets, "--out", str(run), "--max-steps", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpts = list_checkpoints(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step_000000002"]
    from diff2lip.train.checkpoint import load_checkpoint

    assert load_checkpoint(ckpts[0]).extra["world_size"] == 2
    assert (run / "model" / "model.safetensors").is_file()
