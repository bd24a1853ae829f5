"""`diff2lip evaluate` end to end on the synthetic corpus (tiny random model, the project's SyncNet)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from diff2lip.cli import main
from diff2lip.data.synth import SynthSettings, synthesize
from diff2lip.evaluation.runner import read_pairs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evalsynth") / "corpus"
    settings = SynthSettings(clips=2, seconds=2.0, seed=3, size=128, crop_size=64)
    report = synthesize(out, settings, workers=1)
    assert not report.failed
    (out / "recon.txt").write_text(
        "".join(f"{c} {c}\n" for c in sorted(p.stem for p in (out / "raw").glob("*.mp4")))
    )
    return out


def _args(corpus: Path, out: Path, syncnet_dir: Path, *extra: str) -> list[str]:
    return [
        "evaluate", str(corpus / "recon.txt"), "--video-root", str(corpus / "raw"), "-o", str(out),
        "--face-tracks", str(corpus / "clips" / "{name}" / "track.json"), "--syncnet-dir", str(syncnet_dir),
        "--vshift", "3", "--metrics", "ssim,psnr,lmd,sync", "--crop-size", "64", "--no-progress", *extra,
    ]  # fmt: skip


def test_identical_videos_give_ideal_scores_and_table_matches_json(
    corpus, tiny_syncnet_dir, tmp_path, capsys
):
    gen = tmp_path / "gen"
    gen.mkdir()
    for audio, video in read_pairs(corpus / "recon.txt", "reconstruction"):
        shutil.copy(corpus / "raw" / f"{video}.mp4", gen / f"{video}__{audio}.mp4")
    out = tmp_path / "eval"
    assert main(_args(corpus, out, tiny_syncnet_dir, "--generated", str(gen))) == 0
    report = json.loads((out / "report.json").read_text())
    method, anchor = report["rows"]["Diff2Lip (generated)"], report["rows"]["ground truth"]
    assert method["psnr"] == "inf" and anchor["psnr"] == "inf"
    assert method["ssim"] == 1.0 and anchor["ssim"] == 1.0
    assert method["lmd"] == 0.0 and anchor["lmd"] == 0.0  # dlib finds some synthetic 64 px faces
    assert method["sync_c"] == anchor["sync_c"] and method["sync_d"] == anchor["sync_d"]
    assert report["settings_summary"]["scorer"] == "diff2lip-syncnet" and report["num_videos"] == 2
    # the Markdown table carries exactly the JSON numbers
    table = (out / "table.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "Method" not in line}  # fmt: skip
    assert set(rows) == set(report["rows"])
    for name, cells in rows.items():
        expected = [str(report["rows"][name][k]) if report["rows"][name][k] is not None else "–"
                    for k in ("ssim", "psnr", "lmd", "sync_c", "sync_d")]  # fmt: skip
        assert cells == expected
    assert "scorer=diff2lip-syncnet" in table
    with (out / "per_video.csv").open() as f:
        per = list(csv.DictReader(f))
    assert len(per) == 2 and all(r["psnr"] == "inf" for r in per)
    assert all(math.isclose(float(r["sync_d"]), float(r["gt_sync_d"])) for r in per)


@pytest.mark.slow
def test_generates_resumably_with_a_tiny_model(corpus, tiny_syncnet_dir, tiny_model_dir, tmp_path):
    (corpus / "one.txt").write_text((corpus / "recon.txt").read_text().splitlines()[0] + "\n")
    out = tmp_path / "eval"
    args = _args(corpus, out, tiny_syncnet_dir, "--steps", "2")
    args[1] = str(corpus / "one.txt")
    args.insert(2, str(tiny_model_dir))
    assert main(args) == 0
    made = list((out / "generated").glob("*.mp4"))
    assert len(made) == 1
    report = json.loads((out / "report.json").read_text())
    row = report["rows"][f"Diff2Lip ({tiny_model_dir.name})"]
    assert isinstance(row["psnr"], float) and 5 < row["psnr"] < 60 and 0 < row["ssim"] < 1
    stamp = made[0].stat().st_mtime_ns
    assert main(args) == 0  # resumed: the finished video is reused
    assert made[0].stat().st_mtime_ns == stamp


def test_missing_fid_weights_and_bad_filelist_exit_2(corpus, tiny_syncnet_dir, tmp_path, capsys):
    args = _args(corpus, tmp_path / "e", tiny_syncnet_dir, "--generated", str(tmp_path))
    args[args.index("--metrics") + 1] = "fid"
    args += ["--fid-weights", str(tmp_path / "none.pth")]
    assert main(args) == 2
    assert "pytorch-fid" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("a b\n")
    args = _args(corpus, tmp_path / "e", tiny_syncnet_dir, "--generated", str(tmp_path))
    args[1] = str(bad)
    assert main(args) == 2
    assert "AUDIO_SRC == VIDEO_SRC" in capsys.readouterr().err


def test_sync_crops_of_faceless_frames_use_the_nearest_face_box(tiny_syncnet_dir, monkeypatch):
    from diff2lip.evaluation.runner import EvalSettings, _Evaluator

    settings = EvalSettings(mode="cross", metrics=("sync",), syncnet_dir=str(tiny_syncnet_dir), device="cpu")
    evaluator = _Evaluator(settings)
    frames = np.zeros((6, 16, 16, 3), np.uint8)
    boxes = np.array([[-1] * 4, [0, 0, 8, 8], [-1] * 4, [-1] * 4, [4, 4, 12, 12], [-1] * 4])
    monkeypatch.setattr("diff2lip.video.io.read_all", lambda path: SimpleNamespace(frames=frames))
    monkeypatch.setattr(evaluator, "_boxes", lambda video, track, n: boxes)
    seen = []

    def fake_sync(frames: np.ndarray, boxes: np.ndarray, audio: Path) -> dict[str, float]:
        seen.append(boxes.copy())
        return {"sync_c": 0.0, "sync_d": 0.0, "offset": 0}

    monkeypatch.setattr(evaluator, "_sync", fake_sync)
    evaluator.video(Path("gen.mp4"), Path("gt.mp4"), Path("a.wav"), Path("a.wav"), None)
    assert len(seen) == 2  # generated and ground truth, the same boxes
    for filled in seen:
        assert filled[:, 0].tolist() == [0, 0, 0, 4, 4, 4]  # frames 0, 2 take frame 1's box; 3, 5 frame 4's


def test_bad_input_leaves_no_output_folder(corpus, tiny_syncnet_dir, tmp_path, capsys):
    missing = tmp_path / "missing.txt"
    missing.write_text("nosuchclip nosuchclip\n")
    args = _args(corpus, tmp_path / "eval", tiny_syncnet_dir, "--generated", str(tmp_path))
    args[1] = str(missing)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nosuchclip" in err
    assert not (tmp_path / "eval").exists()


def test_face_track_template_cannot_write_outside_its_folder(tmp_path):
    from diff2lip.errors import Diff2LipError
    from diff2lip.evaluation.runner import face_track_path

    template = str(tmp_path / "tracks" / "{name}.json")
    assert face_track_path(template, "spk1/clip2") == tmp_path / "tracks" / "spk1" / "clip2.json"
    assert face_track_path(None, "x") is None
    for name in ("../../etc/x", "a/../../b"):
        with pytest.raises(Diff2LipError, match="leads outside"):
            face_track_path(template, name)
    assert face_track_path(str(tmp_path / "t_{name}.json"), "c") == tmp_path / "t_c.json"
