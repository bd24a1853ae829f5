"""Output that keeps the source's quality (issue 17): untouched pixels, audio copy, lossless, sizes, rates."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from diff2lip.cli import main
from diff2lip.video.io import VideoWriter, probe, read_all

BOX = ("40", "20", "136", "116")  # a fixed face box on carphone (skips detection: fast)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, carphone_mp4) -> Path:
    """30 carphone frames as they came (the pristine source is 176x144 4:2:0, untagged BT.601)."""
    from diff2lip.video.io import VideoReader

    out = tmp_path_factory.mktemp("quality") / "clip.mp4"
    reader = VideoReader(carphone_mp4, chunk_size=30, keep_yuv=True)
    chunk = next(iter(reader))
    with VideoWriter(out, width=176, height=144, fps=reader.fps, crf=0, color=reader.color) as w:
        w.write(chunk.frames, chunk.times, source_yuv=chunk.yuv)
    return out


@pytest.fixture(scope="module")
def speech_m4a(tmp_path_factory, speech_wav) -> Path:
    from diff2lip.audio import read_audio

    samples, rate = read_audio(speech_wav)  # (1, n)
    out = tmp_path_factory.mktemp("m4a") / "speech.m4a"
    with av.open(str(out), "w") as c:
        s = c.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[:1].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    return out


def _generate(tmp_path, clip, audio, model, *extra, name="out.mp4") -> tuple[int, Path]:
    out = tmp_path / name
    args = [clip, audio, "-o", out, "--checkpoint", model, "--box", *BOX, "--length", "video", "-q", "--steps", "1"]
    return main(["generate", *map(str, args), *map(str, extra)]), out


def _outside(frames: np.ndarray) -> np.ndarray:
    keep = np.ones(frames.shape[1:3], bool)
    keep[18:118, 38:138] = False  # the box grown to whole chroma samples, and a margin
    return frames[:, keep]


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def test_pixels_the_model_does_not_touch_are_the_decoded_source(tmp_path, clip, speech_wav, tiny_model_dir):
    rc, out = _generate(tmp_path, clip, speech_wav, tiny_model_dir, "--crf", "0")
    assert rc == 0
    src, got = read_all(clip).frames, read_all(out).frames
    assert np.array_equal(_outside(got), _outside(src))  # no RGB round trip: the source's own samples
    assert np.abs(got[:, 80:110, 60:116].astype(int) - src[:, 80:110, 60:116]).mean() > 5  # mouth redrawn


def test_default_quality_is_visually_lossless_outside_the_face(
    tmp_path, clip, speech_wav, tiny_model_dir, capsys
):
    rc, out = _generate(tmp_path, clip, speech_wav, tiny_model_dir)
    assert rc == 0
    assert "video x264 crf 4 (auto)" in capsys.readouterr().out  # a near-lossless source: the finest crf
    info = probe(out)
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.pix_fmt, cc.profile) == ("yuv420p", "High")  # every player opens it
    src, got = read_all(clip).frames.astype(np.float64), read_all(out).frames
    mse = ((_outside(src) - _outside(got)) ** 2).mean()
    assert 10 * math.log10(255**2 / mse) >= 45
    assert (info.width, info.height) == (176, 144)


def test_lossless_writes_ffv1_mkv_with_the_exact_frames(tmp_path, clip, speech_wav, tiny_model_dir, capsys):
    rc, out = _generate(tmp_path, clip, speech_wav, tiny_model_dir, "--lossless", name="out.mkv")
    assert rc == 0 and "video lossless FFV1" in capsys.readouterr().out
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "ffv1"
    src, got = read_all(clip).frames, read_all(out).frames
    assert np.array_equal(_outside(got), _outside(src))
    rc, _ = _generate(tmp_path, clip, speech_wav, tiny_model_dir, "--lossless", name="x.mp4")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "name the output file .mkv" in err


def test_crf_0_warns_that_many_players_cannot_open_it(tmp_path, clip, speech_wav, tiny_model_dir, capsys):
    rc, _ = _generate(tmp_path, clip, speech_wav, tiny_model_dir, "--crf", "0")
    assert rc == 0 and "High 4:4:4 Predictive" in capsys.readouterr().err


def test_audio_is_copied_bit_for_bit_when_the_container_can_hold_it(
    tmp_path, clip, speech_wav, speech_m4a, tiny_model_dir, capsys
):
    rc, out = _generate(tmp_path, clip, speech_m4a, tiny_model_dir, name="aac.mp4")
    assert rc == 0 and "audio copied (aac)" in capsys.readouterr().out
    got = _audio_packets(out)
    assert got and got == _audio_packets(speech_m4a)[: len(got)]

    rc, out = _generate(tmp_path, clip, speech_wav, tiny_model_dir, name="pcm.mov")  # PCM goes into .mov
    assert rc == 0 and "audio copied (pcm_s16le)" in capsys.readouterr().out
    got = _audio_packets(out)
    assert got and b"".join(got) == b"".join(_audio_packets(speech_wav))[: len(b"".join(got))]

    rc, out = _generate(tmp_path, clip, speech_wav, tiny_model_dir, name="wav.mp4")  # not into .mp4
    assert rc == 0 and "audio encoded as AAC (pcm_s16le cannot go into a .mp4 file)" in capsys.readouterr().out
    assert probe(out).audio_sample_rate == 22050

    rc, out = _generate(tmp_path, clip, speech_wav, tiny_model_dir, "--audio-codec", "alac", name="alac.mp4")
    assert rc == 0
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "alac"  # lossless, on request

    rc, _ = _generate(tmp_path, clip, speech_wav, tiny_model_dir, "--audio-codec", "copy", name="no.mp4")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "--audio-codec copy: pcm_s16le cannot go into a .mp4 file" in err
    assert not (tmp_path / "no.mp4").exists()


def test_resize_factor_keeps_the_source_size(tmp_path, carphone_mp4, speech_wav, tiny_model_dir):
    out = tmp_path / "o.mp4"
    args = [carphone_mp4, speech_wav, "-o", out, "--checkpoint", tiny_model_dir, "--resize_factor", "2"]
    assert main(["generate", *map(str, args), "-q", "--steps", "1", "--length", "shortest"]) == 0
    assert (probe(out).width, probe(out).height) == (176, 144)


def test_summary_gives_the_exact_frame_rate(tmp_path, clip, speech_wav, tiny_model_dir, capsys):
    rc, _ = _generate(tmp_path, clip, speech_wav, tiny_model_dir)
    out = capsys.readouterr().out
    assert rc == 0 and "29.97 fps" in out and "30 fps" not in out


def test_static_uses_the_first_frame_only(tmp_path, clip, speech_wav, tiny_model_dir):
    rc, out = _generate(tmp_path, clip, speech_wav, tiny_model_dir, "--static", "--crf", "0")
    assert rc == 0
    got = read_all(out).frames
    first = read_all(clip).frames[0]
    assert probe(out).fps == pytest.approx(25)  # a still image at --fps
    assert all(np.array_equal(_outside(g[None]), _outside(first[None])) for g in got)
