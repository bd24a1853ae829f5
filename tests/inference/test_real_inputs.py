"""Inputs as users bring them (issue 16): reordered / repeated timestamps, a real AVI, bad output paths,
one DDIM step, the official length rule."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from diff2lip.cli import main
from diff2lip.video.io import VideoReader, VideoWriter, probe, read_all

MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")


def _odd_mkv(path: Path, frames: np.ndarray) -> Path:
    """An MJPEG Matroska file whose frame timestamps go backwards (4 before 3) and repeat (5, 5; 10, 10),
    as edited files and broken muxers write them; the frames decode in file order."""
    pts = [0, 1, 2, 4, 3, 5, 5, 6, 8, 7, 9, 10, 10, 11, 12, 13, 14, 15, 16, 17]
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        s.time_base = Fraction(1, 25)
        k = 0
        for i, rgb in enumerate(frames[: len(pts)]):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in [*s.encode(f), *(s.encode(None) if i == len(pts) - 1 else [])]:
                p.pts, p.dts = pts[k] + 3, k  # pts >= dts, as the muxer requires
                k += 1
                c.mux(p)
    return path


@pytest.fixture(scope="module")
def odd_mkv(tmp_path_factory, carphone_mp4) -> Path:
    return _odd_mkv(tmp_path_factory.mktemp("odd") / "odd.mkv", read_all(carphone_mp4).frames[:20])


def test_reordered_and_repeated_timestamps_are_repaired_strictly_increasing(odd_mkv):
    reader = VideoReader(odd_mkv, chunk_size=7)
    times = np.concatenate([c.times for c in reader])
    assert len(times) == 20 and times[0] == 0.0 and np.all(np.diff(times) > 0)
    assert reader.reordered_times > 0 and reader.repaired_times > 0
    assert np.all(np.abs(np.diff(times) - 0.04) < 1e-9)  # sorted packet times, repeats pushed one frame on


def test_generate_survives_odd_timestamps_and_says_what_it_repaired(
    tmp_path, odd_mkv, tiny_model_dir, speech_wav, capsys
):
    out = tmp_path / "out.mp4"
    args = [odd_mkv, speech_wav, "-o", out, "--checkpoint", tiny_model_dir, "--box", "40", "20", "136", "116"]
    assert main(["generate", *map(str, args), "--length", "video", "-q", "--steps", "2"]) == 0
    assert "frame times repaired:" in capsys.readouterr().out
    got = VideoReader(out)
    times = np.concatenate([c.times for c in got])
    assert len(times) == 20 and np.all(np.diff(times) > 0)


def test_loop_after_a_repaired_tail_never_goes_back_in_time(tmp_path, odd_mkv, tiny_model_dir, speech_wav):
    out = tmp_path / "loop.mp4"  # the speech (~2.3 s) is longer than the 0.8 s video: it loops
    args = [odd_mkv, speech_wav, "-o", out, "--checkpoint", tiny_model_dir, "--box", "40", "20", "136", "116"]
    assert main(["generate", *map(str, args), "-q", "--steps", "2"]) == 0
    times = np.concatenate([c.times for c in VideoReader(out)])
    assert np.all(np.diff(times) > 0) and len(times) > 40


@pytest.fixture(scope="session")
def megamind() -> Path:
    """A real AVI (MPEG-4 part 2 with packed B-frames: its frames come out with reordered pts) with speech,
    from Debian's opencv-doc (README: Install)."""
    if not MEGAMIND.is_file():
        pytest.fail(f"test media {MEGAMIND} missing: apt-get install opencv-doc")
    return MEGAMIND


def test_real_avi_with_reordered_timestamps(tmp_path, megamind, tiny_model_dir, speech_wav, capsys):
    out = tmp_path / "mm.mp4"
    args = [
        megamind,
        speech_wav,
        "-o",
        out,
        "--checkpoint",
        tiny_model_dir,
        "--box",
        "280",
        "60",
        "440",
        "260",
    ]
    assert main(["generate", *map(str, args), "-q", "--steps", "2", "--length", "shortest"]) == 0
    summary = capsys.readouterr().out
    assert "reordered" in summary
    info = probe(out)
    assert info.fps == pytest.approx(2997 / 125, rel=1e-3) and info.has_audio
    times = np.concatenate([c.times for c in VideoReader(out)])
    assert np.allclose(np.diff(times), 125 / 2997, atol=2e-5)  # constant rate, as the AVI is


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("dir.mp4", "is a directory"),
        ("missing/out.mp4", "the output folder does not exist"),
        ("/sys/out.mp4", "cannot write"),
    ],
)
def test_bad_output_paths_fail_in_one_line_before_any_work(
    tmp_path, talking_clip, speech_wav, tiny_model_dir, capsys, target, message
):
    (tmp_path / "dir.mp4").mkdir()  # a folder named like a video
    out = target if target.startswith("/") else str(tmp_path / target)
    rc = main(
        ["generate", str(talking_clip), str(speech_wav), "-o", out, "--checkpoint", str(tiny_model_dir), "-q"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.mp4"] and not list(
        (tmp_path / "dir.mp4").iterdir()
    )


def test_one_ddim_step_works(tmp_path, talking_clip, speech_wav, tiny_model_dir):
    out = tmp_path / "one.mp4"
    args = [
        talking_clip,
        speech_wav,
        "-o",
        out,
        "--checkpoint",
        tiny_model_dir,
        "--box",
        "40",
        "20",
        "136",
        "116",
    ]
    assert (
        main(["generate", *map(str, args), "-q", "--sampler", "ddim", "--steps", "1", "--length", "video"])
        == 0
    )
    assert probe(out).num_frames == 55


def test_paper_length_rule_cuts_to_complete_mel_windows(tmp_path, carphone_mp4, speech_wav, tiny_model_dir):
    """The official rule: output = min(video frames, frames whose 0.2 s mel window is complete), audio cut
    to match — here 1.0 s of speech on a 40-frame 25 fps clip."""
    import soundfile

    from diff2lip.audio import load_audio, melspectrogram

    clip = tmp_path / "clip25.mp4"
    with VideoWriter(clip, width=176, height=144, fps=25, crf=12) as w:
        w.write(read_all(carphone_mp4).frames[:40])
    speech = tmp_path / "one_second.wav"
    soundfile.write(speech, load_audio(speech_wav, 16000)[:16000], 16000, subtype="PCM_16")
    mel = melspectrogram(load_audio(speech, 16000)).T  # (T, 80) as the official code holds it
    count, i = 0, 1  # the official load_all_indiv_mels loop
    while int(80.0 * (max(i - 2, 0) / 25.0)) + 16 <= len(mel):
        count, i = count + 1, i + 1
    expected = min(40, count)
    out = tmp_path / "paper_len.mp4"
    args = [clip, speech, "-o", out, "--checkpoint", tiny_model_dir, "--box", "40", "20", "136", "116"]
    assert main(["generate", *map(str, args), "-q", "--steps", "2", "--length", "paper"]) == 0
    info = probe(out)
    assert expected == 22 and info.num_frames == expected
    assert info.audio_duration == pytest.approx(expected / 25, abs=0.03)


def test_only_the_frames_the_output_uses_are_tracked(tmp_path, carphone_mp4, tiny_model_dir):
    """A 0.5 s speech over a 4 s clip: detection stops after the frames the output needs."""
    import soundfile

    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import GenerateOptions, generate_video

    class Counting:
        def __init__(self):
            from diff2lip.video.face import create_detector

            self.inner, self.frames = create_detector("dlib", landmarks=False), 0

        def detect(self, frames):
            self.frames += len(frames)
            return self.inner.detect(frames)

    speech = tmp_path / "half_second.wav"
    t = np.arange(8000) / 16000
    soundfile.write(speech, 0.3 * np.sin(2 * np.pi * 220 * t), 16000, subtype="PCM_16")
    detector = Counting()
    pipe = Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu")
    report = generate_video(
        carphone_mp4,
        speech,
        tmp_path / "o.mp4",
        pipe,
        GenerateOptions(steps=2, chunk_size=8),
        detector=detector,
    )
    needed = int(np.ceil(0.5 * 30000 / 1001)) + 2
    assert report.frames == 15 and detector.frames == needed < probe(carphone_mp4).num_frames


def test_generate_reports_the_shots(tmp_path, carphone_mp4, astronaut, tiny_model_dir, speech_wav, capsys):
    from diff2lip.video.face import resize_frames

    a = read_all(carphone_mp4).frames[:20]
    b = np.repeat(resize_frames(astronaut[None], 144, 176), 20, axis=0)
    clip = tmp_path / "two_shots.mp4"
    with VideoWriter(clip, width=176, height=144, fps=25, crf=12) as w:
        w.write(np.concatenate([a, b]))
    args = [clip, speech_wav, "-o", tmp_path / "o.mp4", "--checkpoint", tiny_model_dir, "--length", "video"]
    assert main(["generate", *map(str, args), "-q", "--steps", "2"]) == 0
    assert "2 shots (cuts at frames 20)" in capsys.readouterr().out
    assert main(["generate", *map(str, args), "-q", "--steps", "2", "--no-shots"]) == 0
    assert "shots" not in capsys.readouterr().out


def test_vfr_with_dropped_frames_keeps_every_frame_and_its_time(
    tmp_path, carphone_mp4, tiny_model_dir, speech_wav
):
    """--length video on a clip whose frames have gaps: the length is the timestamps', not n / rate."""
    fps = 30000 / 1001
    keep = [k for k in range(40) if k % 5 != 3]  # 32 frames spread over 40 frame times
    clip = tmp_path / "vfr.mkv"
    with VideoWriter(clip, width=176, height=144, fps=fps, crf=12) as w:
        w.write(read_all(carphone_mp4).frames[keep], np.array(keep) / fps)
    out = tmp_path / "o.mp4"
    args = [clip, speech_wav, "-o", out, "--checkpoint", tiny_model_dir, "--box", "40", "20", "136", "116"]
    assert main(["generate", *map(str, args), "--length", "video", "-q", "--steps", "2"]) == 0
    times = np.concatenate([c.times for c in VideoReader(out)])
    source = np.concatenate([c.times for c in VideoReader(clip)])  # Matroska keeps milliseconds
    assert len(times) == len(keep) and np.allclose(times, source, atol=2e-5)
    assert np.allclose(source, np.array(keep) / fps, atol=1e-3)


@pytest.mark.parametrize("reference", ["first", "frame:30"])
def test_references_are_taken_per_shot_never_across_a_cut(
    tmp_path, carphone_mp4, astronaut, tiny_model_dir, speech_wav, reference
):
    """``first``: each shot's first face; ``frame:30``: frame 30 in its shot, the first face elsewhere."""
    from diff2lip.inference.pipeline import Diff2LipPipeline
    from diff2lip.inference.runner import GenerateOptions, generate_video
    from diff2lip.video.crop import crop_faces
    from diff2lip.video.face import resize_frames
    from diff2lip.video.track import FaceTrack

    a = read_all(carphone_mp4).frames[:20]
    b = np.repeat(resize_frames(astronaut[None, 30:310, 100:420], 144, 176), 20, axis=0)  # her face, large
    clip = tmp_path / "two_shots.mp4"
    with VideoWriter(clip, width=176, height=144, fps=25, crf=12) as w:
        w.write(np.concatenate([a, b]))
    pipe = Diff2LipPipeline.from_pretrained(tiny_model_dir, device="cpu")
    seen = []

    class Recording:
        image_size, device = pipe.image_size, pipe.device

        def __call__(self, crops, mels, refs, **kw):
            seen.append(refs.copy())
            return pipe(crops, mels, refs, **kw)

    track_file = tmp_path / "track.json"
    opts = GenerateOptions(
        steps=2, reference=reference, length="video", face_track=str(track_file), chunk_size=8
    )
    report = generate_video(clip, speech_wav, tmp_path / "o.mp4", Recording(), opts)
    assert len(report.shots) == 2
    track = FaceTrack.load(track_file)
    frames = read_all(clip).frames
    boxes, has = track.int_boxes(), track.has_face
    refs = np.concatenate(seen)  # (faces, S, S, 3) in frame order
    first_a, first_b = int(np.flatnonzero(has[:20])[0]), 20 + int(np.flatnonzero(has[20:])[0])
    if reference == "frame:30":
        assert has[30] and first_b != 30
        first_b = 30
    want_a = crop_faces(frames[first_a : first_a + 1], boxes[first_a : first_a + 1], pipe.image_size)[0]
    want_b = crop_faces(frames[first_b : first_b + 1], boxes[first_b : first_b + 1], pipe.image_size)[0]
    n_a = int(has[:20].sum())
    assert all(np.array_equal(r, want_a) for r in refs[:n_a])
    assert all(np.array_equal(r, want_b) for r in refs[n_a:])  # the second shot's own first face
