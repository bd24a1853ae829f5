"""Training survives kills with nothing left behind (issue 18): leftovers of killed checkpoint writes,
exports and prunes are cleaned on resume; SIGKILL at random points still resumes exactly; TensorBoard
does not log replayed steps twice; SIGTERM exits 143 with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diff2lip.cli import main
from diff2lip.train.checkpoint import clean_leftovers, latest_checkpoint, list_checkpoints, load_checkpoint
from diff2lip.train.config import load_train_config
from diff2lip.train.trainer import Trainer

FAST = ["train.log_every=0", "train.image_every=0", "data.batch_size=1"]


def _dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def _hidden(run: Path) -> list[Path]:
    """Every temporary (hidden) file or directory anywhere in the run directory, and half-pruned steps."""
    left = [p for p in run.rglob(".*")]
    left += [p for p in (run / "checkpoints").glob("step_*") if not (p / "meta.json").is_file()]
    return left


def _plant_leftovers(run: Path) -> None:
    """What killed writers leave: staging of this and an older version, a half-deleted prune, a trash dir,
    half-written exports."""
    pid = _dead_pid()
    ck = run / "checkpoints"
    for name in (
        f".step_000000007.tmp-{pid}-ab12cd",
        ".step_000000006.k3j4l5m6.tmp",
        f".step_000000001.trash-{pid}-9f",
    ):
        (ck / name).mkdir(parents=True)
        (ck / name / "unet.safetensors").write_bytes(b"\0" * 1000)
    (ck / "step_000000000").mkdir()  # pruned half-way by an older version: no meta.json
    (ck / "step_000000000" / "state.pt").write_bytes(b"\0")
    (run / "model").mkdir(exist_ok=True)
    (run / "model" / ".model.safetensors.tmp-x1y2z3w4.safetensors").write_bytes(b"\0")  # older version
    (run / "model" / f".config.json.tmp-{pid}-q1w2e3r4.json").write_bytes(b"\0")


def test_clean_leftovers_keeps_finished_checkpoints_and_live_writers(tmp_path):
    ck = tmp_path / "checkpoints"
    done = ck / "step_000000003"
    done.mkdir(parents=True)
    (done / "meta.json").write_text("{}")
    live = ck / f".step_000000004.tmp-{os.getpid()}-live"
    live.mkdir()
    _plant_leftovers(tmp_path)
    removed = clean_leftovers(ck)
    assert len(removed) == 4
    assert sorted(p.name for p in ck.iterdir()) == sorted([done.name, live.name])
    assert list_checkpoints(ck) == [done]


def test_leftovers_of_killed_writers_are_removed_when_training_resumes(tmp_path, tiny_overrides, capsys):
    sets = [x for o in [*tiny_overrides, *FAST] for x in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "train_tiny", *sets, "--out", str(run), "--max-steps", "1", "--quiet"]) == 0
    _plant_leftovers(run)
    assert len(_hidden(run)) == 6
    capsys.readouterr()
    assert (
        main(["train", "train_tiny", *sets, "--out", str(run), "--max-steps", "2", "--resume", "--quiet"])
        == 0
    )
    assert "removed 6 leftover" in capsys.readouterr().err
    assert _hidden(run) == []
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_000000001", "step_000000002"]


def test_tensorboard_does_not_log_replayed_steps_twice(tmp_path, tiny_overrides):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    over = [
        *tiny_overrides,
        "data.batch_size=1",
        "train.image_every=0",
        "train.log_every=1",
        "train.checkpoint_every=2",
    ]
    run = tmp_path / "run"
    a = Trainer(load_train_config("train_tiny", over), run)
    a.fit(4)
    a.close()
    import shutil

    shutil.rmtree(
        run / "checkpoints" / "step_000000004"
    )  # killed after logging steps 3 and 4, before saving 4
    b = Trainer(load_train_config("train_tiny", over), run)
    b.resume()
    b.fit(4)
    b.close()
    # replay the event files in order with TensorBoard's purge rule (a session START at step P drops the
    # events of steps >= P written before it): every step of loss/total must remain exactly once
    steps: list[int] = []
    for f in sorted((run / "tb").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        for ev in EventFileLoader(str(f)).Load():
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                steps = [s for s in steps if s < ev.step]
            for v in ev.summary.value:
                if v.tag == "loss/total":
                    steps.append(ev.step)
    assert steps == [1, 2, 3, 4]


def _train_cmd(run: Path, overrides: list[str], steps: int, resume: bool) -> list[str]:
    sets = [x for o in overrides for x in ("--set", o)]
    cmd = [sys.executable, "-m", "diff2lip", "train", "train_tiny", *sets, "--out", str(run)]
    return cmd + ["--max-steps", str(steps), "--quiet"] + (["--resume"] if resume else [])


def test_sigkill_at_random_points_resumes_exactly_and_leaves_nothing(tmp_path, tiny_overrides):
    """SIGKILL a training process several times at random moments (checkpoint, prune and export every
    step, so kills land inside writes); each restart resumes; the end result equals an uninterrupted run."""
    over = [
        *tiny_overrides,
        *FAST,
        "train.checkpoint_every=1",
        "train.keep_checkpoints=2",
        "train.export_every=1",
    ]
    steps = 10
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref, over, steps, False), env=env, check=True, capture_output=True)

    run = tmp_path / "run"
    rng = np.random.default_rng(18)
    kills = 0
    for _ in range(12):
        resume = latest_checkpoint(run / "checkpoints") is not None
        proc = subprocess.Popen(_train_cmd(run, over, steps, resume), env=env, stderr=subprocess.PIPE)
        # wait for this process's first checkpoint write, then kill it at a random moment
        first = latest_checkpoint(run / "checkpoints")
        t0 = time.monotonic()
        while (
            proc.poll() is None
            and latest_checkpoint(run / "checkpoints") == first
            and time.monotonic() - t0 < 120
        ):
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        proc.stderr.close()
        if kills >= 4:
            break
    assert kills >= 3
    res = subprocess.run(_train_cmd(run, over, steps, True), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-1500:]
    assert _hidden(run) == []
    a = load_checkpoint(latest_checkpoint(ref / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert a.step == b.step == steps
    for name in ("unet", "ema"):
        assert all(torch.equal(a.weights[name][k], b.weights[name][k]) for k in a.weights[name]), name
    from safetensors.torch import load_file

    ea, eb = load_file(ref / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_training_with_one_line_and_no_temporaries(tmp_path, tiny_overrides, sig):
    over = [*tiny_overrides, *FAST, "train.checkpoint_every=1"]
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_cmd(run, over, 500, False), env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while (
        proc.poll() is None and latest_checkpoint(run / "checkpoints") is None and time.monotonic() - t0 < 120
    ):
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("diff2lip train: ") and (
        "terminated" in lines[-1] or "interrupted" in lines[-1]
    )
    assert "Traceback" not in err
    assert not [p for p in run.rglob(".*")]
