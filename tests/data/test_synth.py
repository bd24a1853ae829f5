"""The synthetic talking-face corpus (issue 4): layout, determinism, audio-driven mouths, measurement."""

from __future__ import annotations

import json
import shutil
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from diff2lip.audio import load_audio
from diff2lip.cli import main
from diff2lip.data import layout
from diff2lip.data.synth import (
    HELDOUT_ACCENTS,
    HELDOUT_VARIANTS,
    TRAIN_ACCENTS,
    TRAIN_VARIANTS,
    SynthSettings,
    make_clip,
    mouth_openness,
    synthesize,
)
from diff2lip.data.synth_mouth import OPEN_GAMMA, REST_WIDTH, RMS_FLOOR, RMS_FULL, mouth_params
from diff2lip.errors import Diff2LipError
from diff2lip.video.track import FaceTrack

SETTINGS = SynthSettings(
    clips=3, seconds=2.0, seed=5, size=128, crop_size=64, val_fraction=0.34, test_fraction=0.34
)
EXACT_FILES = ("faces.npy", "mouth.npy", "mel.npy", "audio.wav", "track.json")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    report = synthesize(out, SETTINGS, workers=1)
    assert not report.failed, report.failed
    return out


def _clip(corpus: Path, clip_id: str) -> Path:
    return layout.clip_dir(corpus, clip_id)


def test_layout_files_and_shapes(corpus):
    records = layout.read_manifest(corpus)
    ids = [r.id for r in records]
    assert ids == ["synth00000", "synth00001", "synth00002"]
    splits = {s: layout.read_filelist(corpus, s) for s in layout.SPLITS}
    assert sorted(i for v in splits.values() for i in v) == ids
    assert all(len(v) == 1 for v in splits.values())  # 3 clips, 0.34/0.34 → one each
    for rec in records:
        d = _clip(corpus, rec.id)
        faces = np.load(d / "faces.npy")
        assert faces.shape == (50, 64, 64, 3) and faces.dtype == np.uint8
        mel = np.load(d / "mel.npy")
        assert mel.shape == (80, 161) and mel.dtype == np.float32
        mouth = np.load(d / "mouth.npy")
        assert mouth.shape == (50, 3) and mouth.dtype == np.float32
        assert mouth.min() >= 0.0 and mouth.max() <= 1.0 and mouth[:, 0].max() > 0.3
        with wave.open(str(d / "audio.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (
                16000,
                1,
                2,
                32000,
            )
        meta = layout.read_meta(corpus, rec.id)
        assert rec.num_frames == 50 and rec.size == 64 and rec.speaker == meta["extra"]["voice"]
        assert {"seed", "voice", "speed", "pitch", "text"} <= set(meta["extra"])
        track = FaceTrack.load(d / "track.json")
        assert track.frame_size == (128, 128) and track.num_frames == 50 and track.has_face.all()
        assert np.array_equal(track.int_boxes(), np.array(meta["boxes"]))
        assert (corpus / "raw" / f"{rec.id}.wav").read_bytes() == (d / "audio.wav").read_bytes()
        assert (corpus / "raw" / f"{rec.id}.mp4").stat().st_size > 1000


def test_raw_video_with_track_gives_the_same_crops(corpus):
    """The generate path (decode raw mp4, crop the track's boxes) sees the crops of faces.npy (up to H.264)."""
    from diff2lip.video.crop import crop_faces
    from diff2lip.video.io import probe, read_all

    clip_id = "synth00001"
    mp4 = corpus / "raw" / f"{clip_id}.mp4"
    info = probe(mp4)
    assert info.has_audio and info.audio_sample_rate == 16000 and abs(info.fps - 25.0) < 1e-6
    frames = read_all(mp4).frames
    assert frames.shape == (50, 128, 128, 3)
    track = FaceTrack.load(_clip(corpus, clip_id) / "track.json")
    crops = crop_faces(frames, track.int_boxes(), 64)
    faces = np.load(_clip(corpus, clip_id) / "faces.npy")
    assert np.abs(crops.astype(float) - faces).mean() < 4.0


def test_held_out_clips_use_unseen_voices(corpus):
    assert not set(TRAIN_ACCENTS) & set(HELDOUT_ACCENTS)
    assert not set(TRAIN_VARIANTS) & set(HELDOUT_VARIANTS)
    for rec in layout.read_manifest(corpus):
        accent, variant = rec.extra["voice"].split("+")
        held_out = rec.extra["split"] != "train"
        assert (accent in HELDOUT_ACCENTS) == held_out and (variant in HELDOUT_VARIANTS) == held_out
        assert rec.id in layout.read_filelist(corpus, rec.extra["split"])


def test_same_seed_is_byte_identical_other_seed_differs(corpus, tmp_path):
    """A clip made again alone (other process state, other order) matches byte for byte; mp4 is not compared."""
    split = layout.read_meta(corpus, "synth00001")["extra"]["split"]
    make_clip(tmp_path / "again", SETTINGS, 1, split)
    for name in EXACT_FILES:
        a = (_clip(corpus, "synth00001") / name).read_bytes()
        assert a == (_clip(tmp_path / "again", "synth00001") / name).read_bytes(), name
    make_clip(tmp_path / "other", replace(SETTINGS, seed=6), 1, split)
    other = _clip(tmp_path / "other", "synth00001")
    assert not np.array_equal(
        np.load(other / "faces.npy"), np.load(_clip(corpus, "synth00001") / "faces.npy")
    )
    assert not np.array_equal(
        np.load(other / "mouth.npy"), np.load(_clip(corpus, "synth00001") / "mouth.npy")
    )


def test_mouth_openness_recovers_ground_truth(corpus):
    faces = np.concatenate([np.load(_clip(corpus, f"synth0000{i}") / "faces.npy") for i in range(3)])
    truth = np.concatenate([np.load(_clip(corpus, f"synth0000{i}") / "mouth.npy")[:, 0] for i in range(3)])
    measured = mouth_openness(faces)
    assert measured.shape == (150,)
    assert truth.std() > 0.15  # real speech: the mouth really moves
    assert np.corrcoef(measured, truth)[0, 1] >= 0.95
    # roughly on the ground-truth scale (at crop 64 one pixel of gap is ~0.14 openness)
    assert np.abs(measured - truth).mean() < 0.2


def test_mouth_params_golden_tones():
    """Pure tones give known parameters: 1 kHz (voiced, centroid 1 kHz) and 6 kHz (a fricative)."""
    t = np.arange(16000) / 16000
    vowel = mouth_params(0.08 * np.sin(2 * np.pi * 1000 * t), 25)[5:20]
    expected_open = ((0.08 / np.sqrt(2) - RMS_FLOOR) / (RMS_FULL - RMS_FLOOR)) ** OPEN_GAMMA  # RMS = A/√2
    np.testing.assert_allclose(vowel[:, 0], expected_open, atol=0.01)
    np.testing.assert_allclose(vowel[:, 1], REST_WIDTH + (0.75 - REST_WIDTH), atol=0.01)  # spread 0.75
    np.testing.assert_allclose(vowel[:, 2], 0.0, atol=1e-6)
    fric = mouth_params(0.05 * np.sin(2 * np.pi * 6000 * t), 25)[5:20]
    np.testing.assert_allclose(fric, np.tile([0.18, 0.75, 0.0], (15, 1)), atol=0.01)
    silence = mouth_params(np.zeros(16000), 25)
    np.testing.assert_array_equal(silence, np.tile(np.float32([0.0, REST_WIDTH, 0.0]), (25, 1)))


def test_mouth_params_follow_speech_energy(speech_wav):
    wav = load_audio(speech_wav)
    wav = np.concatenate([np.zeros(8000, np.float32), wav])  # 0.5 s of silence first
    n = len(wav) // 640
    m = mouth_params(wav, n)
    assert np.all(m[:10, 0] == 0.0) and np.allclose(m[:10, 1], REST_WIDTH)  # silence: closed, at rest
    # an independent speech-band RMS: zero-phase 300-3000 Hz band-pass, RMS over frame time ± 40 ms
    band = sosfiltfilt(butter(6, [300, 3000], btype="band", fs=16000, output="sos"), wav)
    padded = np.pad(band, 640)
    rms = np.array([np.sqrt(np.mean(padded[k * 640 : k * 640 + 1280] ** 2)) for k in range(n)])
    assert np.corrcoef(m[:, 0], rms)[0, 1] > 0.9
    loud, quiet = rms > np.quantile(rms, 0.75), rms < np.quantile(rms, 0.25)
    assert m[loud, 0].mean() > m[quiet, 0].mean() + 0.4


def test_mouth_params_only_hear_their_window(speech_wav):
    """Frame k's parameters depend on the audio in [t_k - 40 ms, t_k + 40 ms] only."""
    wav = load_audio(speech_wav)
    n = len(wav) // 640
    k = n // 2
    changed = wav.copy()
    changed[: k * 640 - 640] = 0.0  # everything before t_k - 40 ms
    changed[k * 640 + 640 :] = 0.0  # everything after t_k + 40 ms
    np.testing.assert_allclose(mouth_params(changed, n)[k], mouth_params(wav, n)[k], atol=1e-5)
    assert not np.allclose(mouth_params(changed, n)[k - 2 : k + 3], mouth_params(wav, n)[k - 2 : k + 3])


def test_resume_skips_finished_clips(corpus):
    stamps = {p: p.stat().st_mtime_ns for p in corpus.glob("clips/*/faces.npy")}
    report = synthesize(corpus, SETTINGS, workers=1)
    assert report.made == [] and len(report.skipped) == 3 and report.failed == []
    assert {p: p.stat().st_mtime_ns for p in corpus.glob("clips/*/faces.npy")} == stamps
    # an unfinished clip (no meta.json) is made again, identically
    before = (_clip(corpus, "synth00002") / "faces.npy").read_bytes()
    (_clip(corpus, "synth00002") / "meta.json").unlink()
    report = synthesize(corpus, SETTINGS, workers=1)
    assert report.made == ["synth00002"] and len(report.skipped) == 2
    assert (_clip(corpus, "synth00002") / "faces.npy").read_bytes() == before
    assert len(layout.read_manifest(corpus)) == 3
    with pytest.raises(Diff2LipError, match="different settings"):
        synthesize(corpus, replace(SETTINGS, seconds=3.0), workers=1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--clips", "0", "--seconds", "1", "--seed", "0"], "--clips"),
        (["--clips", "1", "--seconds", "0", "--seed", "0"], "--seconds"),
        (
            [
                "--clips",
                "1",
                "--seconds",
                "1",
                "--seed",
                "0",
                "--val-fraction",
                "0.6",
                "--test-fraction",
                "0.5",
            ],
            "below 1",
        ),
    ],
)
def test_cli_bad_settings_exit_2(tmp_path, capsys, argv, message):
    assert main(["synth", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_cli_out_dir_is_a_file_exit_2(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["synth", str(target), "--clips", "1", "--seconds", "1", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a directory" in err


def test_cli_makes_a_corpus(tmp_path, capsys):
    out = tmp_path / "c"
    argv = [
        "synth",
        str(out),
        "--clips",
        "1",
        "--seconds",
        "1",
        "--seed",
        "3",
        "--size",
        "96",
        "--crop-size",
        "32",
    ]
    assert main([*argv, "--workers", "1", "--no-progress"]) == 0
    assert "1 made, 0 skipped, 0 failed" in capsys.readouterr().out
    assert np.load(out / "clips" / "synth00000" / "faces.npy").shape == (25, 32, 32, 3)
    assert json.loads((out / "synth.json").read_text())["seed"] == 3
    assert layout.read_filelist(out, "train") == ["synth00000"]


@pytest.mark.slow
def test_parallel_workers_match_serial(corpus, tmp_path):
    """Spawned workers produce the same bytes as the in-process run."""
    out = tmp_path / "par"
    report = synthesize(out, SETTINGS, workers=2)
    assert report.failed == [] and len(report.made) == 3
    for i in range(3):
        for name in EXACT_FILES:
            a = (_clip(corpus, f"synth0000{i}") / name).read_bytes()
            assert a == (_clip(out, f"synth0000{i}") / name).read_bytes()
    shutil.rmtree(out)
