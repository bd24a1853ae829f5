"""``diff2lip distill``: the K-step student of a model (tiny random teacher, tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diff2lip.cli import main
from diff2lip.diffusion import GaussianDiffusion, SamplingConfig, ddim_step, sample, sampler_timesteps
from diff2lip.diffusion.schedule import DiffusionConfig
from diff2lip.errors import Diff2LipError
from diff2lip.inference.pipeline import Diff2LipPipeline
from diff2lip.models.serialization import load_checkpoint
from diff2lip.models.unet import Diff2LipUNet
from diff2lip.train.distill import Distiller, load_distill_config, student_segments


def make(run: Path, teacher: Path, data: Path, extra: list[str] | None = None) -> Distiller:
    cfg = load_distill_config("distill_tiny", teacher, [f"data.data_dir={data}", *(extra or [])])
    return Distiller(cfg, run)


def test_student_segments_and_timesteps():
    ts = np.array([999, 800, 600, 400, 200, 100, 50, 20, 10, 0])
    assert student_segments(ts, 1) == [0]
    assert student_segments(ts, 2) == [0, 5]
    assert student_segments(ts, 4) == [0, 2, 5, 8]
    for bad in (0, 10, 11):
        with pytest.raises(Diff2LipError, match="fewer steps than its teacher"):
            student_segments(ts, bad)


def test_distilled_sampling_config_validation_and_dispatch():
    cfg = SamplingConfig("distilled", 2, timesteps=[999, 200])
    base = GaussianDiffusion.from_config(DiffusionConfig())
    assert sampler_timesteps(base, cfg).tolist() == [999, 200]
    assert sampler_timesteps(base, SamplingConfig("ddim", 4)).tolist() == [750, 500, 250, 0]
    for kw in ({"timesteps": None}, {"timesteps": [200, 999]}, {"timesteps": [999]}):
        with pytest.raises(Diff2LipError, match="timesteps"):
            SamplingConfig("distilled", 2, **kw)
    with pytest.raises(Diff2LipError, match="only"):
        SamplingConfig("ddim", 2, timesteps=[999, 200])
    # the distilled sampler is DDIM at exactly those timesteps: the model sees t = 999, then 200
    seen = []

    def model_fn(x, t):
        seen.append(int(t[0]))
        return torch.zeros(x.shape[0], 6, *x.shape[2:])  # ε and the learned variance

    sample(model_fn, base, torch.randn(1, 3, 4, 4), cfg)
    assert seen == [999, 200]


def test_student_step_coefficients_match_the_inference_ddim_step(tmp_path, tiny_model_dir, tiny_data_dir):
    d = make(tmp_path / "run", tiny_model_dir, tiny_data_dir)
    spaced = d.diffusion.respace(d.student_timesteps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    x0 = torch.rand(2, 3, 8, 8, generator=g) * 1.8 - 0.9  # inside [-1, 1]: clamping changes nothing
    k = len(d.student_timesteps)
    for i in range(k):  # respaced index k-1-i is the student's step i
        t = torch.full((2,), k - 1 - i, dtype=torch.long)
        ab = float(spaced.alphas_cumprod[k - 1 - i])
        eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5
        v = ab**0.5 * eps - (1 - ab) ** 0.5 * x0  # the tiny teacher predicts ε; test both conversions
        out = eps if d.diffusion.prediction == "epsilon" else v
        x_next, _ = ddim_step(spaced, torch.cat([out, torch.zeros_like(out)], 1), x, t)
        torch.testing.assert_close(x_next, d._c0[i] * x0 + d._cx[i] * x, rtol=1e-4, atol=1e-4)


def test_teacher_states_follow_the_teachers_own_sampler(tmp_path, tiny_model_dir, tiny_data_dir):
    d = make(tmp_path / "run", tiny_model_dir, tiny_data_dir)
    assert d.teacher_timesteps.tolist() == [750, 500, 250, 0] and d.student_timesteps == [750, 250]
    inp = d.prepare(d._next_batch())
    states = inp["states"]  # (K+1, N, 3, S, S)
    assert states.shape[0] == 3
    # the shared noise: one per 5-frame sample, also in the masked half of cond
    n0 = states[0]
    assert torch.equal(n0[0], n0[4]) and not torch.equal(n0[0], n0[5])
    assert torch.equal(inp["cond"] * d.mask, n0 * d.mask)
    # distill.self_reference_fraction: 1 → every frame is its own reference (generate's default)
    own = make(tmp_path / "own", tiny_model_dir, tiny_data_dir, ["distill.self_reference_fraction=1"])
    own_inp = own.prepare(own._next_batch())
    assert torch.equal(own_inp["ref"], own_inp["x0"]) and not torch.equal(inp["ref"], inp["x0"])
    # the last state is what the teacher's pipeline produces from the same inputs
    teacher = load_checkpoint(tiny_model_dir).model
    style = teacher.encode_audio(inp["mels"])
    out = sample(
        lambda x, t: teacher(x, t, inp["cond"], d.mask, inp["ref"], audio_style=style),
        d.diffusion,
        n0,
        SamplingConfig("ddim", 4),
    )
    torch.testing.assert_close(states[-1], out, rtol=1e-5, atol=1e-5)


def test_a_few_steps_lower_the_student_teacher_gap_on_a_fixed_batch(tmp_path, tiny_model_dir, tiny_data_dir):
    d = make(tmp_path / "run", tiny_model_dir, tiny_data_dir)
    batch = d._next_batch()
    d._next_batch = lambda: batch  # type: ignore[method-assign]
    inp = d.prepare(batch)
    d.prepare = lambda _b: inp  # type: ignore[method-assign]  the same teacher targets every step

    def gap() -> float:
        with torch.no_grad():
            return float(d.generator_loss(inp).total)

    before = gap()
    assert before > 0
    for _ in range(15):
        d.train_step()
    after = gap()
    assert after < 0.7 * before, (before, after)


def test_resume_is_exact(tmp_path, tiny_model_dir, tiny_data_dir):
    a = make(tmp_path / "a", tiny_model_dir, tiny_data_dir)
    a.fit(4)
    b = make(tmp_path / "b", tiny_model_dir, tiny_data_dir)
    b.fit(2)
    c = make(tmp_path / "b", tiny_model_dir, tiny_data_dir)
    c.resume()
    assert c.step == 2
    c.fit(4)
    for name in ("unet", "ema"):
        sa, sc = a._weights()[name], c._weights()[name]
        assert all(torch.equal(sa[k], sc[k]) for k in sa), name
    # and it did train: the student is no longer the teacher
    teacher = Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu").model.state_dict()
    assert any(not torch.equal(teacher[k], sa[k]) for k in teacher)


def test_export_round_trip_and_the_student_refuses_other_steps(tmp_path, tiny_model_dir, tiny_data_dir):
    d = make(tmp_path / "run", tiny_model_dir, tiny_data_dir, ["train.max_steps=2"])
    model_dir = d.fit().model_dir
    doc = json.loads((model_dir / "config.json").read_text())
    assert doc["sampling"] == {
        "sampler": "distilled",
        "steps": 2,
        "eta": 0.0,
        "clip_denoised": True,
        "timesteps": [750, 250],
    }
    assert doc["extra"]["source"] == "diff2lip distill" and doc["extra"]["teacher_sampling"]["steps"] == 4
    pipe = Diff2LipPipeline.from_pretrained(model_dir, device="cpu")
    ema = d.ema.model.state_dict()
    assert all(torch.equal(pipe.model.state_dict()[k], ema[k]) for k in ema)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (3, 80, 16)).astype(np.float32)
    out = pipe(faces, mels)
    assert np.array_equal(out[:, :16], faces[:, :16]) and not np.array_equal(out, faces)
    assert np.array_equal(pipe(faces, mels, steps=2, sampler="distilled"), out)
    for kw in ({"steps": 25}, {"sampler": "ddim"}):
        with pytest.raises(Diff2LipError, match="2-step student"):
            pipe(faces, mels, **kw)


def test_cli_distill_then_generate_uses_k_passes(
    tmp_path, tiny_model_dir, tiny_data_dir, talking_clip, speech_wav, monkeypatch, capsys
):
    run = tmp_path / "run"
    args = ["distill", str(tiny_model_dir), "--config", "distill_tiny", "--data-dir", str(tiny_data_dir)]
    assert main([*args, "--out", str(run), "--steps", "1", "--max-steps", "2", "--quiet"]) == 0
    assert "1-step student at t = [750]" in capsys.readouterr().err
    assert main([*args, "--out", str(run), "--steps", "1", "--max-steps", "3"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    calls = []
    forward = Diff2LipUNet.forward

    def counting(self, x, *a, **kw):
        calls.append(x.shape[0])
        return forward(self, x, *a, **kw)

    monkeypatch.setattr(Diff2LipUNet, "forward", counting)
    out = tmp_path / "out.mp4"
    gen = ["generate", str(talking_clip), str(speech_wav), "-o", str(out), "--checkpoint", str(run / "model")]
    assert main([*gen, "-q", "--length", "video"]) == 0
    assert out.is_file()
    assert sum(calls) == 40  # 40 frames with a face, one UNet pass each
    assert main([*gen, "-q", "--steps", "4"]) == 2
    assert "1-step student" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("teacher", "extra", "message"),
    [
        ("missing", [], "teacher not found"),
        (None, ["--steps", "4"], "fewer steps than its teacher's 4"),
        (None, ["--set", "model.model_channels=64"], "teacher's architecture: model.model_channels is 64"),
        (None, ["--data-dir", "EMPTY"], "no filelist for split 'train'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    tmp_path, tiny_model_dir, tiny_data_dir, capsys, teacher, extra, message
):
    (tmp_path / "EMPTY").mkdir()
    extra = [str(tmp_path / e) if e == "EMPTY" else e for e in extra]
    teacher_dir = str(tmp_path / teacher) if teacher else str(tiny_model_dir)
    run = tmp_path / "run"
    args = ["distill", teacher_dir, "--config", "distill_tiny", "--out", str(run), "--quiet"]
    if "--data-dir" not in extra:
        args += ["--data-dir", str(tiny_data_dir)]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not (run / "model").exists()


def test_packaged_distill_configs_load(tiny_model_dir):
    from diff2lip.demo import bundled_teacher_dir

    synthetic = load_distill_config("distill_synthetic", "demo-teacher")
    assert synthetic.distill.teacher_dir == str(bundled_teacher_dir())
    assert (synthetic.distill.teacher_sampler, synthetic.distill.teacher_steps) == ("ddim", 10)
    assert synthetic.model.image_size == 64
    paper = load_distill_config("distill_paper", tiny_model_dir)  # the paper recipe, on the tiny model
    assert paper.model.image_size == 32 and paper.train.precision == "bf16"
    assert (paper.distill.teacher_sampler, paper.distill.teacher_steps) == ("ddim", 25)
    with pytest.raises(Diff2LipError, match="lambda_gan"):
        load_distill_config("distill_tiny", tiny_model_dir, ["losses.lambda_gan=0.5"])


def test_motion_weight_counts_the_pixels_that_move_more(tmp_path, tiny_model_dir, tiny_data_dir):
    d = make(tmp_path / "run", tiny_model_dir, tiny_data_dir, ["distill.motion_weight=4"])
    inp = d.prepare(d._next_batch())
    with torch.no_grad():
        weighted = float(d.generator_loss(inp).total)
        d.cfg.distill.motion_weight = 0.0
        plain = float(d.generator_loss(inp).total)
    assert weighted > plain > 0  # every weight is >= 1, the moving pixels' > 1
    with pytest.raises(Diff2LipError, match="motion_weight"):
        make(tmp_path / "bad", tiny_model_dir, tiny_data_dir, ["distill.motion_weight=-1"])
