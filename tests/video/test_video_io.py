"""Streaming video I/O (diff2lip.video.io): round trips on real media, VFR, still images, audio, atomicity."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from diff2lip.errors import Diff2LipError
from diff2lip.video.io import (
    FrameChunk,
    VideoReader,
    VideoWriter,
    iter_frames,
    probe,
    read_all,
    rotate_frames,
)


def _pattern(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth moving test frames (N, H, W, 3) uint8: colour gradients plus a bright moving square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        frames[k, ..., 0] = (xx * 255 // max(width - 1, 1) + 7 * k) % 256
        frames[k, ..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
        frames[k, ..., 2] = 128
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        frames[k, y0 : y0 + height // 4, x0 : x0 + width // 4] = 240
    return frames


def _wav_duration(path: Path) -> tuple[float, int]:
    """(duration in seconds from the decoded sample count, sample rate) of a PCM wav."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(stream))
        return samples / stream.rate, stream.rate


def test_probe_carphone(carphone_mp4):
    info = probe(carphone_mp4)
    assert (info.width, info.height) == (176, 144)
    assert info.fps == pytest.approx(30000 / 1001)
    assert info.num_frames == 120
    assert info.duration == pytest.approx(4.004, abs=1e-3)
    assert info.rotation == 0
    assert not info.has_audio and info.audio_sample_rate is None
    assert not info.is_image


def test_round_trip_real_clip_with_speech(carphone_mp4, speech_wav, tmp_path):
    """decode → encode (+ speech) → decode keeps frame count, timestamps, size, audio rate and length."""
    reader = VideoReader(carphone_mp4, chunk_size=16)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=reader.width, height=reader.height, fps=reader.fps, audio=speech_wav) as w:
        for chunk in reader:
            w.write(chunk.frames, chunk.times)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]

    src, dst = read_all(carphone_mp4), read_all(out)
    assert dst.frames.shape == src.frames.shape == (120, 144, 176, 3)
    assert np.abs(dst.times - src.times).max() < 1001 / 30000
    assert dst.times[0] == 0.0 and dst.times[1] == pytest.approx(1001 / 30000, abs=1e-4)
    # CRF 18 keeps the picture: mean error of a couple of grey levels.
    assert np.abs(dst.frames.astype(np.int16) - src.frames).mean() < 4.0

    info = probe(out)
    wav_seconds, wav_rate = _wav_duration(speech_wav)
    assert wav_rate == 22050  # espeak-ng's rate, which must survive (not 16 kHz, not 48 kHz)
    assert info.has_audio and info.audio_sample_rate == 22050 and info.audio_channels == 1
    assert info.audio_duration == pytest.approx(wav_seconds, abs=0.010)
    assert (info.width, info.height, info.num_frames) == (176, 144, 120)


def test_chunks_are_bounded_contiguous_and_match_iter_frames(carphone_mp4):
    chunks = list(VideoReader(carphone_mp4, chunk_size=7))
    assert [len(c) for c in chunks] == [7] * 17 + [1]
    assert [c.start_index for c in chunks] == list(range(0, 120, 7))
    times = np.concatenate([c.times for c in chunks])
    assert np.all(np.diff(times) > 0)
    assert all(c.frames.dtype == np.uint8 and c.frames.flags.c_contiguous for c in chunks)
    singles = list(iter_frames(carphone_mp4, chunk_size=50))
    assert len(singles) == 120
    assert np.array_equal(singles[8][0], chunks[1].frames[1]) and singles[8][1] == chunks[1].times[1]


def test_variable_frame_rate_survives(tmp_path):
    rng = np.random.default_rng(3)
    times = np.cumsum(np.concatenate([[0.0], rng.uniform(0.015, 0.09, size=39)]))  # irregular gaps
    frames = _pattern(40, 48, 64)
    out = tmp_path / "vfr.mp4"
    with VideoWriter(out, width=64, height=48, fps=25) as w:  # default preset: B-frames, reordered dts
        w.write(frames[:13], times[:13])  # chunk boundaries must not disturb the timing
        w.write(frames[13:], times[13:])
    back = read_all(out)
    assert len(back) == 40
    assert np.abs(back.times - times).max() < 1e-3
    # The last frame lasts as long as the gap before it, so the track ends where the clip does.
    assert probe(out).duration == pytest.approx(2 * times[-1] - times[-2], abs=1e-3)


def test_times_none_spaces_frames_at_fps(tmp_path):
    out = tmp_path / "cfr.mp4"
    with VideoWriter(out, width=32, height=32, fps=30, preset="ultrafast") as w:
        w.write(_pattern(5, 32, 32))
        w.write(_pattern(5, 32, 32, seed=1))
    back = read_all(out)
    np.testing.assert_allclose(back.times, np.arange(10) / 30, atol=1e-3)
    assert probe(out).fps == pytest.approx(30.0, rel=1e-3)


def test_array_audio_keeps_rate_channels_and_is_trimmed(tmp_path):
    rate = 44100
    t = np.arange(2 * rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tone[: rate // 4] = 0.0  # the first 0.25 s are silent and must be cut by audio_start
    stereo = np.stack([tone, 0.5 * tone])  # (2, samples)
    out = tmp_path / "tone.mp4"
    with VideoWriter(
        out,
        width=32,
        height=32,
        fps=25,
        preset="ultrafast",
        audio=(stereo, rate),
        audio_start=0.25,
        audio_duration=1.0,
    ) as w:
        w.write(_pattern(25, 32, 32))
    info = probe(out)
    assert (info.audio_sample_rate, info.audio_channels) == (rate, 2)
    assert info.audio_duration == pytest.approx(1.0, abs=0.010)
    with av.open(str(out)) as c:
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(c.streams.audio[0])], axis=1)  # (2, n)
    head = decoded[:, 2048 : 2048 + rate // 10]  # skip the encoder's ramp-in, then 0.1 s of tone
    rms = np.sqrt((head**2).mean(axis=1))
    np.testing.assert_allclose(rms, [0.5 / np.sqrt(2), 0.25 / np.sqrt(2)], rtol=0.1)


def test_audio_file_is_trimmed_to_requested_length(carphone_mp4, speech_wav, tmp_path):
    out = tmp_path / "short.mp4"
    with VideoWriter(
        out, width=176, height=144, fps=25, preset="ultrafast", audio=speech_wav, audio_duration=1.0
    ) as w:
        w.write(read_all(carphone_mp4).frames[:25])
    info = probe(out)
    assert info.audio_sample_rate == 22050
    assert info.audio_duration == pytest.approx(1.0, abs=0.010)


def test_still_image_is_repeated_at_fps_for_duration(astronaut, tmp_path):
    png = tmp_path / "face.png"
    av.VideoFrame.from_ndarray(np.ascontiguousarray(astronaut[:200, 100:300]), format="rgb24").save(png)
    info = probe(png)
    assert info.is_image and (info.width, info.height) == (200, 200) and info.num_frames == 1
    reader = VideoReader(png, chunk_size=8, image_fps=25.0, image_duration=1.2)
    assert reader.num_frames == 30 and reader.fps == 25.0
    chunks = list(reader)
    frames = np.concatenate([c.frames for c in chunks])
    times = np.concatenate([c.times for c in chunks])
    assert frames.shape == (30, 200, 200, 3)
    assert np.array_equal(frames[0], astronaut[:200, 100:300]) and np.array_equal(frames[29], frames[0])
    np.testing.assert_allclose(times, np.arange(30) / 25.0)
    with pytest.raises(Diff2LipError, match="still image"):
        VideoReader(png)


def test_failed_write_leaves_no_file_and_keeps_existing_target(tmp_path):
    out = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(out, width=32, height=32, fps=25) as w:
        w.write(_pattern(5, 32, 32))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    out.write_bytes(b"previous result")
    with (
        pytest.raises(ValueError, match="strictly increasing"),
        VideoWriter(out, width=32, height=32, fps=25) as w,
    ):
        w.write(_pattern(3, 32, 32), np.array([0.0, 0.1, 0.1]))
    assert [p.name for p in tmp_path.iterdir()] == ["fail.mp4"]
    assert out.read_bytes() == b"previous result"


def test_bad_inputs_raise_one_line_errors_naming_the_file(carphone_mp4, speech_wav, tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(Diff2LipError, match="no such file") as e:
        probe(missing)
    assert str(missing) in str(e.value)

    with pytest.raises(Diff2LipError, match="no video stream") as e:
        VideoReader(speech_wav)
    assert str(speech_wav) in str(e.value) and "\n" not in str(e.value)

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(Diff2LipError) as e:
        probe(garbage)
    assert str(garbage) in str(e.value) and "\n" not in str(e.value)

    with pytest.raises(Diff2LipError, match="no audio stream") as e:
        VideoWriter(tmp_path / "o.mp4", width=32, height=32, fps=25, audio=carphone_mp4).open()
    assert str(carphone_mp4) in str(e.value)

    # audio_start past the end of the speech: nothing to mux is an error, and no output is left.
    late = VideoWriter(tmp_path / "o.mp4", width=32, height=32, fps=25, audio=speech_wav, audio_start=60)
    with pytest.raises(Diff2LipError, match="no audio left") as e, late as w:
        w.write(_pattern(2, 32, 32))
    assert str(speech_wav) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.mp4"]


def test_rotated_file_comes_back_upright(tmp_path):
    """A display matrix (phone clips) is applied: a 64x32 stored picture rotated 90° CCW is 32x64."""
    stored = np.zeros((32, 64, 3), np.uint8)  # (H, W, 3)
    stored[:, :, 1] = 60
    stored[:8, :8] = 255  # white marker at the stored top-left corner
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)
        for i in range(3):
            f = av.VideoFrame.from_ndarray(stored, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe(path)
    assert info.rotation == 90 and (info.width, info.height) == (32, 64)
    frames = read_all(path).frames
    assert frames.shape == (3, 64, 32, 3)
    # Turning counter-clockwise moves the stored top-left corner to the bottom-left.
    assert frames[0, -8:, :8].mean() > 230 and frames[0, :8, :8].mean() < 120


def test_rotate_frames_matches_rot90():
    batch = np.arange(2 * 3 * 5 * 3, dtype=np.uint8).reshape(2, 3, 5, 3)  # (N, H, W, C)
    for k in range(4):
        out = rotate_frames(batch, 90 * k)
        assert np.array_equal(out, np.rot90(batch, k, axes=(1, 2))) and out.flags.c_contiguous
        assert np.array_equal(rotate_frames(batch[0], 90 * k), np.rot90(batch[0], k))
    assert rotate_frames(batch, 90).shape == (2, 5, 3, 3)
    assert np.array_equal(rotate_frames(batch, 450), rotate_frames(batch, 90))
    with pytest.raises(ValueError):
        rotate_frames(batch, 45)


def test_odd_size_is_padded_by_replication_not_rescaled(tmp_path):
    frames = _pattern(4, 21, 33)
    odd, even = tmp_path / "odd.mp4", tmp_path / "even.mp4"
    with VideoWriter(odd, width=33, height=21, fps=25, crf=0, preset="ultrafast") as w:
        assert (w.width, w.height) == (34, 22)
        w.write(frames)
    padded = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")  # (4, 22, 34, 3)
    with VideoWriter(even, width=34, height=22, fps=25, crf=0, preset="ultrafast") as w:
        w.write(padded)
    back = read_all(odd).frames
    assert back.shape == (4, 22, 34, 3)
    # Lossless x264: the odd-size file is exactly the edge-replicated picture, not a rescaled one.
    assert np.array_equal(back, read_all(even).frames)
    assert np.abs(back[:, :21, :33].astype(np.int16) - frames).mean() < 6.0  # only yuv420p chroma loss


def test_reader_output_is_framechunk_dataclass(carphone_mp4):
    chunk = next(iter(VideoReader(carphone_mp4, chunk_size=4)))
    assert isinstance(chunk, FrameChunk)
    assert chunk.frames.shape == (4, 144, 176, 3) and chunk.times.dtype == np.float64
    assert chunk.start_index == 0 and chunk.times[0] == 0.0
