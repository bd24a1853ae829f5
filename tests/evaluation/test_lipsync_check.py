"""The cross-setting lip-sync check (issue 5): pairing, numbers, and proof that it detects lip-sync."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diff2lip.audio import frame_times, mel_windows
from diff2lip.cli import main
from diff2lip.data import layout
from diff2lip.data.synth_render import mouth_openness
from diff2lip.errors import Diff2LipError
from diff2lip.evaluation.lipsync_check import (
    cross_pairs,
    cross_setting_check,
    load_clip,
    pearson,
)
from diff2lip.inference.pipeline import Diff2LipPipeline

SIZE = 32


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """3 clips × 1 s at 128 px with 32 px crops; 2 of them in the test split (the cross setting needs 2)."""
    out = tmp_path_factory.mktemp("lipsync") / "synth"
    argv = ["synth", str(out), "--clips", "3", "--seconds", "1", "--seed", "3", "--size", "128"]
    argv += ["--crop-size", str(SIZE), "--workers", "1", "--val-fraction", "0", "--test-fraction", "0.67"]
    assert main([*argv, "--no-progress"]) == 0
    assert len(layout.read_filelist(out, "test")) == 2
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir) -> Diff2LipPipeline:
    """The tiny random model (configs/tiny.yaml, 32 px) as a pipeline."""
    return Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu")


class OraclePipeline:
    """Draws the mouth the ground truth gives for the mel window it is handed (a perfect lip-syncer).

    It knows every clip's (window → openness) pairs; for each frame it greys out the lower half and paints
    three dark-red columns whose mean height reads back (``mouth_openness``) as that openness.
    """

    def __init__(self, data_dir: Path):
        self.image_size = SIZE
        self.lookup: dict[bytes, float] = {}
        for clip in layout.read_filelist(data_dir, "test"):
            c = load_clip(data_dir, clip)
            windows = mel_windows(c.mel, frame_times(len(c.openness), 25))  # (N, 80, 16)
            for w, o in zip(windows, c.openness):
                self.lookup[w.tobytes()] = float(o)
        probe = np.full((1, SIZE, SIZE, 3), 128, np.uint8)
        probe[0, SIZE // 2, SIZE // 2 : SIZE // 2 + 3] = (52, 7, 12)
        self.unit = float(mouth_openness(probe)[0])  # openness of a one-pixel gap
        self.calls = 0

    def __call__(self, faces, mels, refs=None, *, steps=None, sampler=None, seed=0):
        self.calls += 1
        out = faces.copy()
        out[:, SIZE // 2 :] = 128
        for k, w in enumerate(mels):
            heights = round(3 * self.lookup[w.tobytes()] / self.unit)  # total pixels over 3 columns
            for j in range(3):
                h = heights // 3 + (1 if j < heights % 3 else 0)
                out[k, SIZE // 2 : SIZE // 2 + h, SIZE // 2 + j] = (52, 7, 12)
        return out


def test_pearson_golden_values_and_undefined_cases():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert pearson(x, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)
    assert pearson(x, np.zeros(4)) is None  # constant: undefined, not 0
    assert pearson(x[:1], x[:1]) is None
    with pytest.raises(ValueError):
        pearson(x, x[:3])


def test_cross_pairs_are_deterministic_rotations_without_self_pairs():
    assert cross_pairs(["c", "a", "b"]) == [("a", "b"), ("b", "c"), ("c", "a")]
    assert cross_pairs(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    six = cross_pairs(["a", "b", "c"], 6)
    assert len(set(six)) == 6 and all(a != b for a, b in six)
    with pytest.raises(Diff2LipError, match="at least 2 clips"):
        cross_pairs(["a"])
    with pytest.raises(Diff2LipError, match="between 1 and 6"):
        cross_pairs(["a", "b", "c"], 7)


def test_oracle_scores_near_one_and_near_zero_when_shuffled(corpus):
    oracle = OraclePipeline(corpus)
    res = cross_setting_check(oracle, corpus, "test", seed=0, shuffle_audio=True)
    assert oracle.calls == 4  # 2 pairs, each driven in order and shuffled
    assert res["frames"] == 50
    assert res["r"] > 0.95  # the check sees a perfect lip-syncer
    assert abs(res["r_shuffled"]) < 0.35  # ... and that the sync comes from the audio's timing
    assert abs(res["baseline_input_r"]) < 0.5
    assert res["anchor_r"] > 0.5  # the openness measurement reads the rendered 32 px mouths
    assert res["upper_half_identical"] and res["upper_half_psnr_db"] == np.inf


def test_a_model_that_copies_the_input_mouth_scores_the_baseline(corpus):
    def copy(faces, mels, refs=None, **_):
        return faces.copy()

    res = cross_setting_check(copy, corpus, "test", seed=0)
    assert res["r"] == pytest.approx(res["baseline_input_r"])
    assert res["r"] < 0.5
    assert res["copy_r"] == pytest.approx(1.0)
    assert res["r_shuffled"] is None  # control not requested


def test_tiny_model_returns_finite_deterministic_json(corpus, tiny_pipeline):
    kw = dict(pairs=None, steps=2, sampler="ddim", seed=1, shuffle_audio=True, max_frames=6)
    res = cross_setting_check(tiny_pipeline, corpus, "test", **kw)
    ids = sorted(layout.read_filelist(corpus, "test"))
    assert [(p["video"], p["audio"]) for p in res["pairs"]] == [(ids[0], ids[1]), (ids[1], ids[0])]
    assert res["frames"] == 12 and res["settings"]["image_size"] == SIZE
    assert res["upper_half_identical"] and res["upper_half_psnr_db"] == np.inf
    for key in ("r", "r_shuffled", "baseline_input_r", "anchor_r", "copy_r"):
        assert res[key] is None or -1.0 <= res[key] <= 1.0
    assert np.isfinite(res["generated_openness_mean"]) and np.isfinite(res["generated_openness_std"])
    again = cross_setting_check(tiny_pipeline, corpus, "test", **kw)
    res.pop("seconds"), again.pop("seconds")
    assert again == res
    assert json.loads(json.dumps(res)) == res


def test_crop_size_mismatch_and_missing_ground_truth_are_one_line_errors(corpus, tmp_path):
    class Big(OraclePipeline):
        pass

    big = Big(corpus)
    big.image_size = 64
    with pytest.raises(Diff2LipError, match="crop-size 64"):
        cross_setting_check(big, corpus, "test")
    d = tmp_path / "clips" / "x"
    d.mkdir(parents=True)
    np.save(d / layout.FACES, np.zeros((2, SIZE, SIZE, 3), np.uint8))
    np.save(d / layout.MEL, np.zeros((80, 10), np.float32))
    with pytest.raises(Diff2LipError, match=r"missing mouth\.npy"):
        load_clip(tmp_path, "x")
