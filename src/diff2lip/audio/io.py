"""Audio decoding with PyAV: any container/codec FFmpeg reads, to float32 arrays.

The model's audio features (DESIGN.md §3) are computed from 16 kHz mono audio. The official code loads
audio with ``librosa.load(path, sr=16000)``: channels averaged to mono, then resampled. We do the same
with PyAV so that wav, mp3, m4a/aac, flac, opus and the audio track of a video all work without an
``ffmpeg`` binary: each decoded frame is converted to float (``fltp``), its channels are averaged (as
librosa does), and the mono signal is streamed through FFmpeg's resampler (``libswresample``). Decoding
is streamed frame by frame, so memory is bounded by the output array, not by the decoded native-rate
signal.

Every problem with the input file (missing, not a file, unreadable or corrupt, no audio stream) raises a
one-line :class:`~diff2lip.errors.Diff2LipError` that names the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from diff2lip.errors import Diff2LipError

__all__ = ["audio_duration", "load_audio", "read_audio"]


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise Diff2LipError("audio file does not exist", p)
    if not p.is_file():
        raise Diff2LipError("is not a file (expected an audio or video file)", p)
    return p


def _open(p: Path) -> av.container.InputContainer:
    try:
        return av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise Diff2LipError(f"cannot read audio: {_one_line(e)}", p) from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _audio_stream(container: av.container.InputContainer, p: Path) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise Diff2LipError("has no audio stream", p)
    return container.streams.audio[0]


def decode_frames(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, p: Path
) -> Iterator[av.AudioFrame]:
    """The decoded frames of ``stream``, packet by packet; a packet the decoder rejects (a damaged one, e.g.
    the first AC-3 packet of opencv's Megamind.avi) is skipped as FFmpeg's command line does. Raises a
    one-line :class:`Diff2LipError` only when the stream cannot be read or no packet decodes at all."""
    decoded = 0
    error: av.FFmpegError | None = None
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                error = e
                continue
            for frame in frames:
                decoded += 1
                yield frame
    except av.FFmpegError as e:  # the container itself (truncated file): keep what was decoded
        error = e
    if decoded == 0 and error is not None:
        raise Diff2LipError(f"cannot decode audio: {_one_line(error)}", p) from error


def _native_chunks(p: Path) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(samples (channels, n) float32, sample_rate)`` for each decoded frame of the first audio stream."""
    with _open(p) as container:
        stream = _audio_stream(container, p)
        to_float = av.AudioResampler(format="fltp")  # format change only: same layout and rate
        try:
            for frame in decode_frames(container, stream, p):
                for out in to_float.resample(frame):
                    yield out.to_ndarray(), out.sample_rate  # (channels, n)
            for out in to_float.resample(None):
                yield out.to_ndarray(), out.sample_rate
        except av.FFmpegError as e:
            raise Diff2LipError(f"cannot decode audio: {_one_line(e)}", p) from e


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``path`` at its own sample rate.

    Returns ``(samples, sample_rate)`` with ``samples`` float32 of shape ``(channels, n)`` in [-1, 1]
    (integer formats are scaled by FFmpeg's float conversion). Use it where the original audio quality
    matters (muxing the output video's audio); the model's features use :func:`load_audio`.
    """
    p = _check_file(path)
    chunks: list[np.ndarray] = []
    rate = 0
    for samples, sr in _native_chunks(p):
        if rate and sr != rate:
            raise Diff2LipError(f"sample rate changes inside the stream ({rate} -> {sr} Hz)", p)
        rate = sr
        chunks.append(samples)
    if not chunks:
        raise Diff2LipError("audio stream has no decodable samples", p)
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate  # (channels, n)


def load_audio(path: str | Path, sample_rate: int = 16000, resampler: str = "swr") -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate`` Hz (16 kHz for the model, DESIGN.md §3).

    Channels are averaged (as ``librosa.load(..., mono=True)`` in the official code), then resampled
    with FFmpeg's resampler (``resampler="swr"``, streamed). The output has
    ``round(n * sample_rate / native_rate)`` samples for ``n`` native samples, with no added delay.

    ``resampler="kaiser_best"`` resamples as the official environment does (``librosa.load(sr=16000)`` with
    librosa 0.9.2 = resampy's ``kaiser_best`` filter, via the ``resampy`` package; ``--preset paper``):
    the whole native-rate signal is decoded first, and the mel features then match the official ones to
    ~1e-4 on 22.05 / 44.1 / 48 kHz input (libswresample differs by up to 0.46 in the top mel bands).

    Raises:
        Diff2LipError: the file is missing, unreadable/corrupt, or has no audio stream.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if resampler == "kaiser_best":
        return _load_audio_resampy(path, sample_rate)
    if resampler != "swr":
        raise ValueError(f"resampler must be 'swr' or 'kaiser_best', got {resampler!r}")
    p = _check_file(path)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
    out: list[np.ndarray] = []
    got_input = False
    for samples, sr in _native_chunks(p):
        if samples.shape[1] == 0:
            continue
        got_input = True
        mono = samples.mean(axis=0, dtype=np.float32)[None]  # (1, n)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono), format="fltp", layout="mono")
        frame.sample_rate = sr
        out.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
    if not got_input:
        raise Diff2LipError("audio stream has no decodable samples", p)
    out.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    return np.concatenate(out).astype(np.float32, copy=False)


def _load_audio_resampy(path: str | Path, sample_rate: int) -> np.ndarray:
    try:
        import resampy
    except ImportError:
        raise Diff2LipError(
            "--preset paper resamples audio with resampy as the official environment does: "
            "pip install 'diff2lip[paper]'"
        ) from None
    samples, rate = read_audio(path)  # (channels, n) float32
    mono = samples.mean(axis=0, dtype=np.float32)  # (n,) as librosa's to_mono
    if rate == sample_rate:
        return mono
    out = resampy.resample(mono, rate, sample_rate, filter="kaiser_best").astype(np.float32, copy=False)
    n = int(np.ceil(len(mono) * sample_rate / rate))  # librosa.resample's length: zero-padded to ceil
    return np.pad(out[:n], (0, max(0, n - len(out))))


def audio_duration(path: str | Path) -> float:
    """Duration in seconds of the first audio stream of ``path``.

    Taken from the stream's metadata when present (no decoding); otherwise the samples are counted.

    Raises:
        Diff2LipError: the file is missing, unreadable/corrupt, or has no audio stream.
    """
    p = _check_file(path)
    with _open(p) as container:
        stream = _audio_stream(container, p)
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
    n, rate = 0, 0
    for samples, sr in _native_chunks(p):
        n, rate = n + samples.shape[1], sr
    if not rate:
        raise Diff2LipError("audio stream has no decodable samples", p)
    return n / rate
