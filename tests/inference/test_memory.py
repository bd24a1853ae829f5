"""Memory bounded by a budget (issue 18): the plan's choices, its one-line refusal, in-place pasting."""

from __future__ import annotations

import numpy as np
import pytest

from diff2lip.cli import main
from diff2lip.errors import Diff2LipError
from diff2lip.inference.memory import GiB, MiB, estimate_peak, parse_size, plan_memory
from diff2lip.inference.pipeline import Diff2LipPipeline, shared_noise
from diff2lip.inference.runner import GenerateOptions, lipsync_frames


def test_parse_size():
    assert (
        parse_size("4G") == 4 * GiB
        and parse_size("1500M") == 1500 * MiB
        and parse_size("2.5g") == int(2.5 * GiB)
    )
    assert parse_size("4GB") == parse_size("4GiB") == 4 * GiB and parse_size("1024") == 1024
    for bad in ("", "four", "-1G", "0", "4X"):
        with pytest.raises(Diff2LipError, match="--max-memory"):
            parse_size(bad)


def test_plan_keeps_the_defaults_when_they_fit():
    plan = plan_memory(1920, 1080, chunk_size=32, in_use=500 * MiB, available=16 * GiB)
    assert (plan.chunk_size, plan.lookahead, plan.reduced) == (32, None, False)
    assert plan.estimate <= plan.budget <= 500 * MiB + 3 * GiB  # default: in use + min(3 GiB, half free)


def test_plan_shrinks_chunk_then_lookahead_then_chunk_within_the_budget():
    frame = 7680 * 4320 * 3
    plan = plan_memory(7680, 4320, chunk_size=32, in_use=500 * MiB, available=16 * GiB)  # 8K, default budget
    assert plan.reduced and plan.chunk_size < 8 and plan.lookahead == 0
    assert plan.estimate <= plan.budget
    assert estimate_peak(frame, plan.chunk_size + 1, 0, 500 * MiB) > plan.budget  # the largest that fits
    mid = plan_memory(7680, 4320, chunk_size=32, max_memory=7 * GiB, in_use=500 * MiB, available=16 * GiB)
    assert mid.chunk_size == 8 and mid.lookahead == 20  # chunk first down to 8, then the lookahead
    roomy = plan_memory(7680, 4320, chunk_size=32, max_memory=64 * GiB, in_use=500 * MiB, available=12 * GiB)
    assert roomy.budget == 500 * MiB + 12 * GiB  # never more than is available
    small = plan_memory(64, 64, chunk_size=4, preset="ultrafast", in_use=0, available=4 * GiB)
    assert (small.chunk_size, small.lookahead) == (4, None)


def test_plan_refuses_in_one_line_when_one_frame_cannot_fit():
    with pytest.raises(Diff2LipError) as e:
        plan_memory(7680, 4320, chunk_size=32, max_memory=1 * GiB, in_use=500 * MiB, available=16 * GiB)
    msg = str(e.value)
    assert "\n" not in msg and "7680x4320" in msg and "--max-memory 1.1 GB" in msg and "available" in msg


def test_generate_with_a_budget_too_small_fails_before_work_and_writes_nothing(
    tmp_path, tiny_model_dir, talking_clip, speech_wav, capsys
):
    out = tmp_path / "out.mp4"
    args = [talking_clip, speech_wav, "-o", out, "--checkpoint", tiny_model_dir, "--max-memory", "10M"]
    assert main(["generate", *map(str, args), "-q", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "176x144 frames need about" in err and "--max-memory" in err
    assert list(tmp_path.iterdir()) == []


def test_inplace_lipsync_equals_the_copying_one(tiny_model_dir):
    pipe = Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 72, 88, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 50, 45], [12, 6, 52, 46], [0, 30, 30, 72]])  # the last touches two edges
    has_face = np.array([True, False, True])
    mel = rng.normal(size=(80, 200)).astype(np.float32)
    times = np.arange(3) / 25.0
    opts = GenerateOptions(steps=2)
    noise = shared_noise(pipe.image_size, 7, pipe.device)
    copied = lipsync_frames(pipe, frames, times, boxes, has_face, mel, None, noise, opts)
    mine = frames.copy()
    same = lipsync_frames(pipe, mine, times, boxes, has_face, mel, None, noise, opts, inplace=True)
    assert same is mine and np.array_equal(same, copied)
    assert not np.array_equal(copied, frames) and np.array_equal(copied[1], frames[1])


def test_default_budget_stretches_to_the_available_ram_before_refusing():
    tight = plan_memory(640, 480, chunk_size=32, in_use=100 * MiB, available=900 * MiB)
    assert tight.budget == 1000 * MiB and tight.estimate <= tight.budget  # half of 900 MiB was too little
    with pytest.raises(Diff2LipError, match="the default budget allows"):
        plan_memory(7680, 4320, chunk_size=32, in_use=100 * MiB, available=900 * MiB)
