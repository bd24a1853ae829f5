"""diff2lip.audio.io: decoding any container/codec to 16 kHz mono, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from diff2lip.audio import audio_duration, load_audio, read_audio
from diff2lip.errors import Diff2LipError


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _write(path: Path, samples: np.ndarray, rate: int, codec: str, video: bool = False) -> Path:
    """Encode ``samples`` (channels, n) float32 with PyAV; optionally add a short video stream too."""
    channels = samples.shape[0]
    with av.open(str(path), mode="w") as out:
        if video:
            vs = out.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        stream = out.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        supported = [f.name for f in stream.codec_context.codec.audio_formats]
        fmt = "fltp" if "fltp" in supported else "s16"
        stream.format = fmt
        step = stream.codec_context.frame_size or 1024
        for i, s in enumerate(range(0, samples.shape[1], step)):
            chunk = samples[:, s : s + step]
            if fmt == "s16":  # packed int16: (1, n * channels)
                arr = np.round(np.clip(chunk, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
            else:  # planar float: (channels, n)
                arr = np.ascontiguousarray(chunk)
            frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=stream.layout.name)
            frame.sample_rate, frame.pts = rate, s
            out.mux(stream.encode(frame))
            if video and i % 10 == 0:
                img = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24")
                out.mux(vs.encode(img))
        out.mux(stream.encode(None))
        if video:
            out.mux(vs.encode(None))
    return path


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def test_wav_resampled_to_16k_matches_analytic_sine(tmp_path):
    path = _write(tmp_path / "a.wav", _sine(440, 44100, 1.0)[None], 44100, "pcm_s16le")
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == 16000  # round(44100 * 16000 / 44100), no resampler delay added
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(wav - expected)[200:-200].max() < 2e-3


def test_other_sample_rate_and_native_read(tmp_path):
    x = _sine(300, 22050, 0.5)[None]
    path = _write(tmp_path / "b.wav", x, 22050, "pcm_s16le")
    samples, rate = read_audio(path)
    assert rate == 22050 and samples.shape == (1, 11025) and samples.dtype == np.float32
    np.testing.assert_allclose(samples, x, atol=1 / 32767)
    assert audio_duration(path) == pytest.approx(0.5, abs=1e-6)
    assert len(load_audio(path, sample_rate=8000)) == 4000


def test_stereo_is_averaged_to_mono(tmp_path):
    left = _sine(440, 16000, 0.5)
    path = _write(tmp_path / "st.wav", np.stack([left, np.zeros_like(left)]), 16000, "pcm_s16le")
    samples, _ = read_audio(path)
    assert samples.shape == (2, 8000)
    wav = load_audio(path)  # same rate: only the channel mean
    np.testing.assert_allclose(wav, 0.5 * left, atol=2 / 32767)


@pytest.mark.parametrize(
    ("name", "codec", "video"),
    [
        ("c.flac", "flac", False),
        ("c.mp3", "libmp3lame", False),
        ("c.m4a", "aac", False),
        ("c.mp4", "aac", True),
    ],
)
def test_compressed_containers_decode(tmp_path, name, codec, video):
    path = _write(tmp_path / name, _sine(440, 44100, 1.0, amp=0.4)[None], 44100, codec, video=video)
    wav = load_audio(path)
    assert abs(len(wav) - 16000) <= 0.06 * 16000  # codec priming/padding at most a few frames
    assert _dominant_hz(wav, 16000) == pytest.approx(440, abs=2)
    rms = float(np.sqrt(np.mean(wav[2000:-2000] ** 2)))
    assert rms == pytest.approx(0.4 / np.sqrt(2), rel=0.05)
    assert audio_duration(path) == pytest.approx(1.0, abs=0.06)


def test_speech_matches_librosa_load(speech_wav):
    import librosa

    wav = load_audio(speech_wav)
    ref, _ = librosa.load(speech_wav, sr=16000)  # the official loader (soxr resampling)
    assert len(wav) == len(ref)
    assert np.corrcoef(wav, ref)[0, 1] > 0.999
    assert audio_duration(speech_wav) == pytest.approx(len(ref) / 16000, abs=1e-3)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_kaiser_best_resampling_matches_the_official_loader(speech_wav, tmp_path, rate):
    """--preset paper: the official environment's librosa.load(sr=16000) = resampy kaiser_best; the mel
    features match to <= 1e-3 (FFmpeg's resampler differs by ~0.45 in the top bands)."""
    import librosa
    import soundfile

    from diff2lip.audio import melspectrogram

    y, _ = librosa.load(speech_wav, sr=rate, res_type="soxr_hq")  # the speech at another native rate
    src = tmp_path / f"speech_{rate}.wav"
    soundfile.write(src, np.stack([y, 0.5 * y], axis=1), rate, subtype="PCM_16")  # stereo, as files are
    ref, _ = librosa.load(src, sr=16000, res_type="kaiser_best")  # the official loader
    ours = load_audio(src, 16000, resampler="kaiser_best")
    assert len(ours) == len(ref)
    assert np.abs(melspectrogram(ours) - melspectrogram(ref)).max() <= 1e-3
    assert np.abs(melspectrogram(load_audio(src, 16000)) - melspectrogram(ref)).max() > 1e-2  # swr differs


def _one_line_error(fn, path) -> str:
    with pytest.raises(Diff2LipError) as info:
        fn(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize("fn", [load_audio, read_audio, audio_duration])
def test_errors_name_the_file(tmp_path, carphone_mp4, fn):
    assert "does not exist" in _one_line_error(fn, tmp_path / "missing.wav")
    assert "not a file" in _one_line_error(fn, tmp_path)
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    assert "cannot" in _one_line_error(fn, corrupt)
    assert "no audio stream" in _one_line_error(fn, carphone_mp4)
