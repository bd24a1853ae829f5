"""Dataset preprocessing on real small media (diff2lip.data.preprocess, ``diff2lip preprocess``).

RAW_DIR holds two copies of a real talking-man clip with real speech muxed in (one under a speaker folder),
a corrupt file, a face-less clip with audio and a clip without audio: the good clips must be prepared in
the layout of :mod:`diff2lip.data.layout`, the others logged and skipped without aborting the run.
"""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from diff2lip.audio import load_audio, melspectrogram
from diff2lip.cli import main
from diff2lip.data import layout
from diff2lip.data.preprocess import (
    ERRORS_LOG,
    PreprocessConfig,
    find_videos,
    iter_resampled,
    preprocess_dataset,
    split_by_speaker,
    voxceleb2_box,
)
from diff2lip.errors import Diff2LipError
from diff2lip.video.crop import crop_faces
from diff2lip.video.io import VideoWriter, read_all

SRC_FPS = 30000 / 1001  # carphone's 29.97 fps
SRC_FRAMES = 60  # ~2 s of the clip keeps the tests fast
DURATION = SRC_FRAMES / SRC_FPS
GOOD = ["spk1__talk2", "talk"]
# Hand-noted from a run (dlib HOG, pads 0 10 0 0, mean5): the man's face in carphone's first frames.
CARPHONE_FACE = (60, 38, 113, 101)


def iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def write_talk(path: Path, carphone_mp4: Path, speech_wav: Path) -> None:
    """The first SRC_FRAMES frames of carphone with espeak-ng speech muxed in (carphone has no audio)."""
    clip = read_all(carphone_mp4, chunk_size=SRC_FRAMES)
    with VideoWriter(
        path,
        width=176,
        height=144,
        fps=SRC_FPS,
        audio=speech_wav,
        audio_duration=DURATION,
        preset="ultrafast",
    ) as w:
        w.write(clip.frames[:SRC_FRAMES], clip.times[:SRC_FRAMES])


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory, carphone_mp4, speech_wav) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    write_talk(raw / "talk.mp4", carphone_mp4, speech_wav)
    (raw / "spk1").mkdir()
    shutil.copy(raw / "talk.mp4", raw / "spk1" / "talk2.mp4")
    (raw / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    # 30 frames of a colour gradient (no face) with speech
    y, x = np.mgrid[0:48, 0:64]
    frames = np.stack(
        [np.stack([x * 4 + i, y * 5, np.full_like(x, 128)], axis=-1) for i in range(30)]
    ).astype(np.uint8)  # (30, 48, 64, 3)
    with VideoWriter(
        raw / "noface.mp4", width=64, height=48, fps=25, audio=speech_wav, preset="ultrafast"
    ) as w:
        w.write(frames)
    shutil.copy(carphone_mp4, raw / "silent.mp4")  # a real face, but no audio stream
    (raw / "notes.txt").write_text("not a video\n")
    return raw


@pytest.fixture(scope="module")
def prepared(raw_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    summary = preprocess_dataset(raw_dir, data, PreprocessConfig(workers=1), progress=False)
    return data, summary


def test_find_videos_recursive_sorted(raw_dir):
    rel = [p.relative_to(raw_dir).as_posix() for p in find_videos(raw_dir)]
    assert rel == ["broken.mp4", "noface.mp4", "silent.mp4", "spk1/talk2.mp4", "talk.mp4"]


def test_good_clips_are_prepared_with_layout_files_and_shapes(prepared, raw_dir):
    data, summary = prepared
    assert summary.prepared == GOOD and summary.done == []
    source = read_all(raw_dir / "talk.mp4")
    for clip_id in GOOD:
        d = layout.clip_dir(data, clip_id)
        meta = layout.read_meta(data, clip_id)
        faces = np.load(d / layout.FACES)
        n = meta["num_frames"]
        assert faces.shape == (n, 128, 128, 3) and faces.dtype == np.uint8
        assert abs(n - 25 * DURATION) <= 1
        assert meta["fps"] == 25.0 and meta["size"] == 128 and meta["crop"] == "detector"
        assert meta["speaker"] == ("spk1" if clip_id.startswith("spk1") else "")
        assert meta["frame_size"] == [144, 176]
        boxes = np.array(meta["boxes"])
        assert boxes.shape == (n, 4)
        assert iou(boxes[0], CARPHONE_FACE) > 0.7, boxes[0]
        assert len(meta["filled_frames"]) < 0.1 * n
        # 25 fps resampling picks the frame shown at k/25: output 25 (t = 1.0 s) is source frame 29
        # (t = 0.968 s; frame 30 is at 1.001 s), cropped with its box: bit-exact
        assert np.array_equal(faces[25], crop_faces(source.frames[29:30], boxes[25:26], 128)[0])
        assert np.array_equal(faces[0], crop_faces(source.frames[0:1], boxes[0:1], 128)[0])
        # 16 kHz mono PCM-16 audio of the clip's length, and its mel features
        with wave.open(str(d / layout.AUDIO)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            samples = w.getnframes()
        assert abs(samples / 16000 - DURATION) < 0.05
        mel = np.load(d / layout.MEL)
        assert mel.dtype == np.float32 and mel.shape == (80, 1 + samples // 200)
        assert abs(mel.shape[1] - 80 * DURATION) <= 5
        np.testing.assert_allclose(mel, melspectrogram(load_audio(d / layout.AUDIO)), atol=1e-5)
        assert mel.max() > 0  # real speech, not silence (-4)


def test_manifest_and_filelists_cover_exactly_the_good_clips(prepared):
    data, summary = prepared
    records = layout.read_manifest(data)
    assert [r.id for r in records] == GOOD
    assert {r.id: r.source for r in records} == {"spk1__talk2": "spk1/talk2.mp4", "talk": "talk.mp4"}
    lists = {s: layout.read_filelist(data, s) for s in layout.SPLITS}
    assert sorted(lists["train"] + lists["val"] + lists["test"]) == GOOD
    assert summary.num_clips == 2 and sum(summary.splits.values()) == 2


def test_bad_clips_are_logged_and_skipped(prepared):
    data, summary = prepared
    reasons = {f.source: f.reason for f in summary.failed}
    assert set(reasons) == {"broken.mp4", "noface.mp4", "silent.mp4"}
    assert "cannot read" in reasons["broken.mp4"]
    assert "no face" in reasons["noface.mp4"] and "0 of 30 frames" in reasons["noface.mp4"]
    assert "no audio" in reasons["silent.mp4"]
    log_lines = (data / ERRORS_LOG).read_text().splitlines()
    logged = dict(line.split("\t", 1) for line in log_lines if not line.startswith("#"))
    assert logged == reasons
    # no partial output of a failed clip is left behind
    assert sorted(p.name for p in (data / layout.CLIPS).iterdir()) == GOOD
    assert summary.line() == f"prepared 2 clips (0 skipped as done, 3 failed: see {data / ERRORS_LOG})"


def test_second_run_skips_finished_clips(prepared, raw_dir):
    data, _ = prepared
    mtimes = {c: (layout.clip_dir(data, c) / layout.FACES).stat().st_mtime_ns for c in GOOD}
    summary = preprocess_dataset(raw_dir, data, PreprocessConfig(workers=1), progress=False)
    assert summary.done == GOOD and summary.prepared == []
    assert len(summary.failed) == 3  # the bad files are retried and fail again
    assert {c: (layout.clip_dir(data, c) / layout.FACES).stat().st_mtime_ns for c in GOOD} == mtimes
    assert [r.id for r in layout.read_manifest(data)] == GOOD


def test_cli_voxceleb2_crop_and_resume_of_half_written_clip(raw_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(raw_dir / "talk.mp4", raw / "talk.mp4")
    data = tmp_path / "data"
    half = layout.clip_dir(data, "talk")
    half.mkdir(parents=True)
    (half / layout.FACES).write_bytes(b"interrupted run")  # no meta.json: not finished
    rc = main(["preprocess", str(raw), str(data), "--crop", "voxceleb2", "--workers", "1", "--quiet"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == "prepared 1 clips (0 skipped as done, 0 failed)"
    meta = layout.read_meta(data, "talk")
    # the official my_voxceleb2_crop on 176x144: cols [int(176*1.8/8), 176 - 39), rows [0, 144 - int(144*2.36/8))
    assert voxceleb2_box(144, 176) == (39, 0, 137, 102)
    assert meta["crop"] == "voxceleb2" and meta["boxes"] == [[39, 0, 137, 102]] * meta["num_frames"]
    faces = np.load(half / layout.FACES)
    assert faces.shape == (meta["num_frames"], 128, 128, 3)
    first = read_all(raw / "talk.mp4", chunk_size=4).frames[:1]
    expected = crop_faces(first, np.array([[39, 0, 137, 102]]), 128)
    assert np.array_equal(faces[0], expected[0])
    # a second CLI run reports the clip as done
    assert main(["preprocess", str(raw), str(data), "--crop", "voxceleb2", "--workers", "1", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == "prepared 0 clips (1 skipped as done, 0 failed)"


def test_cli_errors_missing_and_empty_raw_dir(tmp_path, capsys):
    assert main(["preprocess", str(tmp_path / "missing"), str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    assert main(["preprocess", str(tmp_path / "empty"), str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "contains no videos" in err


def test_cli_exits_1_when_any_clip_fails_and_keeps_the_good_ones(raw_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(raw_dir / "talk.mp4", raw / "talk.mp4")
    shutil.copy(raw_dir / "broken.mp4", raw / "broken.mp4")
    data = tmp_path / "data"
    assert main(["preprocess", str(raw), str(data), "--workers", "1", "--quiet"]) == 1  # as batch and synth
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"prepared 1 clips (0 skipped as done, 1 failed: see {data / ERRORS_LOG})"
    assert [r.id for r in layout.read_manifest(data)] == ["talk"]


def test_cli_exits_1_when_every_clip_fails(raw_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(raw_dir / "broken.mp4", raw / "broken.mp4")
    assert main(["preprocess", str(raw), str(tmp_path / "data"), "--workers", "1", "--quiet"]) == 1
    out = capsys.readouterr().out.strip()
    assert out == f"prepared 0 clips (0 skipped as done, 1 failed: see {tmp_path / 'data' / ERRORS_LOG})"
    assert layout.read_manifest(tmp_path / "data") == []


@pytest.mark.parametrize(("src_fps", "expected_counts"), [(10, [3, 2] * 10), (50, [1] * 10)])
def test_iter_resampled_picks_frame_shown_at_each_output_time(tmp_path, src_fps, expected_counts):
    # 20 flat frames; frame i has grey level 10*i so the picked source frame is readable after H.264
    frames = np.repeat((np.arange(20, dtype=np.uint8) * 10)[:, None, None, None], 32 * 32 * 3, axis=1)
    frames = frames.reshape(20, 32, 32, 3)  # (20, H, W, 3)
    path = tmp_path / f"flat{src_fps}.mp4"
    with VideoWriter(path, width=32, height=32, fps=src_fps, crf=0, preset="ultrafast") as w:
        w.write(frames)
    chunks = list(iter_resampled(path, fps=25.0, chunk_size=4))
    counts = np.concatenate([c for _, c in chunks])
    picked = np.concatenate([f for f, _ in chunks]).reshape(len(counts), -1).mean(axis=1) / 10
    assert counts.tolist() == expected_counts
    # 10 fps: every source frame is shown (3, 2, 3, 2 times); 50 fps: every second one (0, 2, 4, ...)
    step = 1 if src_fps == 10 else 2
    np.testing.assert_allclose(picked, np.arange(len(counts)) * step, atol=0.2)


def test_split_by_speaker_keeps_each_speaker_in_one_split():
    records = [
        layout.ClipRecord(id=f"s{s}__c{c}", num_frames=10, speaker=f"s{s}")
        for s in range(10)
        for c in range(3)
    ]
    records += [layout.ClipRecord(id=f"solo{c}", num_frames=10) for c in range(4)]
    splits = split_by_speaker(records, 0.2, 0.2, seed=3)
    assert sorted(i for ids in splits.values() for i in ids) == sorted(r.id for r in records)
    where = {i: name for name, ids in splits.items() for i in ids}
    for s in range(10):
        assert len({where[f"s{s}__c{c}"] for c in range(3)}) == 1
    assert len(splits["val"]) >= 3 and len(splits["test"]) >= 3  # 14 groups: round(2.8) = 3 each
    assert split_by_speaker(records, 0.2, 0.2, seed=3) == splits


def test_config_rejects_bad_settings():
    with pytest.raises(Diff2LipError, match="unknown crop"):
        PreprocessConfig(crop="center")
    with pytest.raises(Diff2LipError, match="pads"):
        PreprocessConfig(pads=(1, 2))
    with pytest.raises(Diff2LipError, match="nothing left to train"):
        PreprocessConfig(val_fraction=0.5, test_fraction=0.5)


@pytest.mark.slow
def test_parallel_workers_give_identical_output(prepared, raw_dir, tmp_path):
    data, _ = prepared
    summary = preprocess_dataset(raw_dir, tmp_path / "par", PreprocessConfig(workers=2), progress=False)
    assert summary.prepared == GOOD and len(summary.failed) == 3
    for clip_id in GOOD:
        for name in (layout.FACES, layout.MEL):
            a = np.load(layout.clip_dir(data, clip_id) / name)
            b = np.load(layout.clip_dir(tmp_path / "par", clip_id) / name)
            assert np.array_equal(a, b)
        assert (
            json.loads((layout.clip_dir(tmp_path / "par", clip_id) / layout.META).read_text())["boxes"]
            == (layout.read_meta(data, clip_id)["boxes"])
        )
