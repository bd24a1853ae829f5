"""Streaming video I/O with PyAV: probe, chunked decode, H.264 encode with the original audio muxed back
(copied as it is whenever the container can hold it).

DESIGN.md §2/§6: frames are decoded *streaming* (memory bounded by the chunk size, never by the video
length), at any input frame rate including variable frame rate (every frame carries its own presentation
timestamp), upright (container rotation applied), and a still image is a valid input. The writer keeps each
frame's timing, muxes the original audio at its own sample rate, and never leaves a partial output file
behind (DESIGN.md §8.6: it writes a hidden temporary file beside the target and renames it on success).

Conventions:

* Frames are ``uint8`` RGB arrays of shape ``(N, H, W, 3)``.
* Times are ``float64`` seconds relative to the first frame of the stream (the first frame is at 0.0).
* ``rotation`` is FFmpeg's display-matrix angle: the number of degrees (0, 90, 180 or 270) by which the
  stored picture must be turned *counter-clockwise* to be displayed upright. A phone's portrait clip
  (legacy ``rotate=90`` tag, i.e. 90° clockwise) therefore has ``rotation == 270``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from diff2lip.errors import Diff2LipError
from diff2lip.fileio import publish, remove_stale_temps, temp_sibling

__all__ = [
    "FrameChunk",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "iter_frames",
    "probe",
    "read_all",
    "rotate_frames",
]

# Container formats that FFmpeg uses for single still images (png_pipe, jpeg_pipe, webp_pipe, ...).
_IMAGE_DEMUXERS = ("image2",)
# Fine time base for written video timestamps (the MPEG 90 kHz clock): exact to 11 µs, so VFR survives.
_VIDEO_TIME_BASE = Fraction(1, 90000)
# Bit rate per channel of an audio track that has to be encoded lossily (AAC, Opus): high, so that
# re-encoding is transparent for speech and music.
_LOSSY_BITRATE_PER_CHANNEL = 160_000
# Audio codecs each output container takes as they are (stream copy). PCM goes into .mov/.mkv, not .mp4
# (FFmpeg can write it there, but players cannot read it).
_COPYABLE = {
    "mp4": {"aac", "mp3", "alac", "opus", "ac3", "eac3"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
            "pcm_f32le", "pcm_f32be"},
    "matroska": {"aac", "mp3", "alac", "opus", "vorbis", "flac", "ac3", "eac3", "pcm_s16le", "pcm_s24le",
                 "pcm_s32le", "pcm_f32le", "pcm_u8"},
}  # fmt: skip
# --audio-codec NAME → FFmpeg encoder, and the containers that can hold it.
AUDIO_ENCODERS = {
    "aac": ("aac", {"mp4", "mov", "matroska"}),
    "alac": ("alac", {"mp4", "mov", "matroska"}),
    "flac": ("flac", {"matroska"}),
    "opus": ("libopus", {"mp4", "matroska"}),
    "pcm": ("pcm_s16le", {"mov", "matroska"}),
}
AUDIO_CODECS = ("auto", "copy", *AUDIO_ENCODERS)
_SUFFIXES = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv"}  # (names for messages)
# Default channel layout per channel count for AAC output (FFmpeg's names).
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


# --------------------------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video (or still image) file.

    ``width``/``height`` are as displayed, i.e. after ``rotation`` is applied. ``fps`` is the stream's
    average rate (0.0 for a still image, which has no intrinsic rate); ``duration`` is in seconds
    (``None`` for a still image or when the container does not say); ``num_frames`` is the container's
    frame count or ``None`` when unknown (e.g. Matroska). ``rotation`` follows the module convention
    (counter-clockwise degrees, one of 0/90/180/270).
    """

    path: Path
    width: int
    height: int
    fps: float
    time_base: Fraction
    duration: float | None
    num_frames: int | None
    rotation: int
    has_audio: bool
    audio_sample_rate: int | None
    is_image: bool
    audio_channels: int | None = None
    audio_duration: float | None = None
    video_bit_rate: int | None = None  # bits/s of the video stream (the container's, less audio), if known


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise Diff2LipError("no such file", p)
    if p.is_dir():
        raise Diff2LipError("is a directory, expected a media file", p)
    return p


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as e:
        raise Diff2LipError(f"cannot read media file ({_one_line(e)})", path) from e


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _normalise_rotation(degrees: float) -> int:
    """Round an angle to the nearest multiple of 90 and map it into {0, 90, 180, 270}."""
    return round(degrees / 90.0) % 4 * 90


def _stream_rotation(stream: av.video.stream.VideoStream, first_frame: av.VideoFrame | None) -> int:
    """Counter-clockwise display rotation from the display matrix (frame side data) or a 'rotate' tag."""
    if first_frame is not None and first_frame.rotation:
        return _normalise_rotation(first_frame.rotation)
    tag = stream.metadata.get("rotate")
    if tag:
        try:
            # The legacy tag is clockwise; our convention is counter-clockwise.
            return _normalise_rotation(-float(tag))
        except ValueError:
            return 0
    return 0


def _is_image(container: av.container.InputContainer) -> bool:
    name = container.format.name
    return name in _IMAGE_DEMUXERS or name.endswith("_pipe")


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None or value <= 0:
        return None
    return float(value * time_base)


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a file's video metadata (size as displayed, fps, duration, rotation, audio).

    Decodes exactly one frame, which both proves the file is decodable and reads the per-frame display
    matrix (where FFmpeg ≥ 7 exposes the container rotation).

    Raises:
        Diff2LipError: the file is missing, unreadable, or has no (decodable) video stream.
    """
    p = _check_path(path)
    with _open_input(p) as container:
        if not container.streams.video:
            raise Diff2LipError("has no video stream", p)
        stream = container.streams.video[0]
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as e:
            raise Diff2LipError(f"cannot decode video ({_one_line(e)})", p) from e
        if first is None:
            raise Diff2LipError("video stream has no decodable frames", p)
        rotation = _stream_rotation(stream, first)
        width = stream.codec_context.width or first.width
        height = stream.codec_context.height or first.height
        if rotation in (90, 270):
            width, height = height, width
        is_image = _is_image(container)
        time_base = stream.time_base or Fraction(1, 90000)
        if is_image:
            fps, duration, num_frames = 0.0, None, 1
        else:
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            duration = _seconds(stream.duration, stream.time_base)
            if duration is None and container.duration:
                duration = container.duration / av.time_base
            num_frames = stream.frames or None
            if rate:
                fps = float(rate)
            elif num_frames and duration:
                fps = num_frames / duration
            else:
                fps = 0.0
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=p,
            width=int(width),
            height=int(height),
            fps=fps,
            time_base=time_base,
            duration=duration,
            num_frames=num_frames,
            rotation=rotation,
            has_audio=audio is not None,
            audio_sample_rate=None if audio is None else int(audio.codec_context.sample_rate),
            is_image=is_image,
            audio_channels=None if audio is None else int(audio.codec_context.channels),
            audio_duration=None if audio is None else _seconds(audio.duration, audio.time_base),
            video_bit_rate=None if is_image else _video_bit_rate(container, stream, audio),
        )


def _video_bit_rate(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    audio: av.audio.stream.AudioStream | None,
) -> int | None:
    """The video stream's bit rate: its own, else the whole file's less the audio's."""
    if stream.bit_rate:
        return int(stream.bit_rate)
    if not container.bit_rate:
        return None
    rest = container.bit_rate - ((audio.bit_rate or 0) if audio is not None else 0)
    return int(rest) if rest > 0 else None


def as_still(info: VideoInfo) -> VideoInfo:
    """``info`` of a video read as a still image of its first frame (Wav2Lip's ``--static``)."""
    return replace(info, is_image=True, fps=0.0, duration=None, num_frames=1)


# --------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive decoded frames.

    ``frames``: ``(N, H, W, 3)`` uint8 RGB, upright. ``times``: ``(N,)`` float64 presentation times in
    seconds relative to the first frame of the stream. ``start_index``: index of ``frames[0]`` in the
    whole stream.
    """

    frames: np.ndarray
    times: np.ndarray
    start_index: int
    yuv: np.ndarray | None = None
    """With ``VideoReader(keep_yuv=True)``: the frames as decoded, ``(N, H·3/2, W)`` uint8 I420 (Y rows,
    then the U and V planes), for :meth:`VideoWriter.write` to keep every pixel the model did not touch
    exactly; ``None`` when the stream is not plain 8-bit 4:2:0 of an even size (see :class:`ColorSpec`)."""

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class ColorSpec:
    """How YUV and RGB relate in a stream: the matrix and range libswscale converts with, and the colour
    tags written to the output so players interpret the output as they interpreted the input.

    ``BT709`` (the writer's default) is what outputs made from RGB alone are tagged with. A source's spec
    (:attr:`VideoReader.color`) keeps an unspecified source unspecified (decoded as BT.601, as FFmpeg
    does) and a BT.601 source BT.601, so the untouched pixels' YUV samples can be copied as they are.
    """

    matrix: str  # libswscale's name: ITU709, ITU601, SMPTE240M, FCC, BT2020
    full_range: bool
    tags: tuple[int, int, int, int]  # FFmpeg's colorspace, primaries, transfer, range

    @property
    def range_name(self) -> str:
        return "JPEG" if self.full_range else "MPEG"


BT709 = ColorSpec("ITU709", False, (1, 1, 1, 1))
# FFmpeg's AVColorSpace → libswscale matrix (2 = unspecified: FFmpeg decodes it as BT.601)
_MATRIX = {1: "ITU709", 2: "ITU601", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020"}


def color_spec(frame: av.VideoFrame) -> ColorSpec | None:
    """The :class:`ColorSpec` of a decoded frame whose YUV samples can pass through unchanged: 8-bit
    ``yuv420p`` of an even size with a known matrix; else ``None``."""
    if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
        return None
    matrix = _MATRIX.get(int(frame.colorspace))
    if matrix is None:
        return None
    full = int(frame.color_range) == 2
    tags = (int(frame.colorspace), int(frame.color_primaries), int(frame.color_trc), int(frame.color_range))
    return ColorSpec(matrix, full, tags)


def rotate_frames(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Turn frames counter-clockwise by ``rotation`` degrees (a multiple of 90) so they display upright.

    Accepts a single frame ``(H, W, C)`` or a batch ``(N, H, W, C)``; returns a C-contiguous array
    (the input itself when ``rotation`` is 0).
    """
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    k = (rotation // 90) % 4
    if k == 0:
        return frames
    axes = (0, 1) if frames.ndim == 3 else (1, 2)
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=axes))


_MIN_STEP = 2e-5  # s: frame times closer than this (< 2 ticks of the writer's 1/90000 s) count as repeated


class VideoReader:
    """Decode a video (or still image) in chunks of upright RGB frames with their timestamps.

    Iterating yields :class:`FrameChunk` objects of at most ``chunk_size`` frames; each iteration
    re-opens the file, so a reader can be iterated more than once. Memory is bounded by ``chunk_size``,
    not by the video length. Frame times come from each frame's ``pts × time_base`` (never from an
    assumed constant rate), so variable-frame-rate input keeps its timing.

    A still image (png, jpg, ...) yields the same frame repeated at ``image_fps`` for ``image_duration``
    seconds (``round(image_fps × image_duration)`` frames); ``image_duration`` is then required (callers
    pass the audio length).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = 32,
        image_fps: float = 25.0,
        image_duration: float | None = None,
        keep_yuv: bool = False,
        still: bool = False,
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        source = probe(path)
        self.info = as_still(source) if still else source
        self.path = self.info.path
        self.chunk_size = int(chunk_size)
        # frames of the last full iteration whose own pts were reordered (taken from the sorted packet
        # times), repeated or going backwards (pushed forward), or missing
        self.reordered_times = 0
        self.repaired_times = 0
        self.missing_times = 0
        self._times_table: tuple[int | None, np.ndarray] | None = None
        if self.info.is_image:
            if image_duration is None:
                raise Diff2LipError(
                    "is a still image: a duration is needed (pass the audio length)", self.path
                )
            if not image_fps > 0 or not image_duration > 0:
                raise Diff2LipError(
                    f"still image needs fps > 0 and duration > 0 (got {image_fps}, {image_duration})",
                    self.path,
                )
        self.image_fps = float(image_fps)
        self.image_duration = image_duration
        self.keep_yuv = bool(keep_yuv) and not source.is_image and self.info.rotation == 0
        self.color: ColorSpec | None = None
        """The stream's :class:`ColorSpec` when its frames can pass through as YUV (known after the first
        frame is decoded); ``None`` otherwise."""
        if self.keep_yuv:
            self.color = self._first_color()
            self.keep_yuv = self.color is not None

    @property
    def fps(self) -> float:
        """Nominal frame rate: the stream's average rate, or ``image_fps`` for a still image."""
        return self.image_fps if self.info.is_image else self.info.fps

    @property
    def num_frames(self) -> int | None:
        """Number of frames that iteration yields, when known in advance."""
        if self.info.is_image:
            return max(1, round(self.image_fps * float(self.image_duration or 0.0)))
        return self.info.num_frames

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def __iter__(self) -> Iterator[FrameChunk]:
        if self.info.is_image:
            yield from self._iter_image()
        else:
            yield from self._iter_video()

    def _iter_image(self) -> Iterator[FrameChunk]:
        with _open_input(self.path) as container:
            stream = container.streams.video[0]
            frame = next(iter(container.decode(stream)))
            image = rotate_frames(frame.to_ndarray(format="rgb24"), self.info.rotation)  # (H, W, 3)
            yuv = None  # (H·3/2, W): a video's first frame (--static) as decoded
            if self.keep_yuv and color_spec(frame) == self.color:
                yuv = frame.to_ndarray(format="yuv420p")
        n = self.num_frames or 1
        for start in range(0, n, self.chunk_size):
            count = min(self.chunk_size, n - start)
            frames = np.repeat(image[None], count, axis=0)  # (count, H, W, 3)
            times = (start + np.arange(count, dtype=np.float64)) / self.image_fps
            yuvs = None if yuv is None else np.repeat(yuv[None], count, axis=0)  # (count, H·3/2, W)
            yield FrameChunk(frames=frames, times=times, start_index=start, yuv=yuvs)

    @property
    def end_time(self) -> float | None:
        """Seconds from the first frame to the end of the last one (its time + one nominal frame), from
        the packet timestamps: the true length of a VFR video or one with dropped frames, where
        ``num_frames / fps`` is not. ``None`` for a still image or a stream without timestamps."""
        if self.info.is_image:
            return None
        _, table = self._packet_times()
        return float(table[-1]) + 1.0 / (self.info.fps or 25.0) if len(table) else None

    def _packet_times(self) -> tuple[int | None, np.ndarray]:
        """``(first stamp, sorted times in s)`` of the video stream's packets (pts, else dts; empty and
        discarded packets skipped), relative to the earliest; read once by demuxing without decoding."""
        if self._times_table is None:
            stamps = []
            with _open_input(self.path) as container:
                stream = container.streams.video[0]
                tb = stream.time_base
                try:
                    for packet in container.demux(stream):
                        stamp = packet.pts if packet.pts is not None else packet.dts
                        if packet.size and stamp is not None and not packet.is_discard:
                            stamps.append(stamp)
                except av.FFmpegError:
                    pass  # a truncated or damaged file: the times read so far, the rest from the frames
            if not stamps or tb is None:
                self._times_table = (None, np.zeros(0))
            else:
                first = min(stamps)
                self._times_table = (first, np.array([float((x - first) * tb) for x in sorted(stamps)]))
        return self._times_table

    def _first_color(self) -> ColorSpec | None:
        try:
            with _open_input(self.path) as container:
                frame = next(container.decode(video=0), None)
        except av.FFmpegError:
            return None
        if frame is None or (frame.width, frame.height) != (self.info.width, self.info.height):
            return None
        return color_spec(frame)

    def _iter_video(self) -> Iterator[FrameChunk]:
        rotation = self.info.rotation
        # Decoded (stored) size; frames are rotated to the displayed size after conversion.
        sh, sw = (
            (self.info.width, self.info.height)
            if rotation in (90, 270)
            else (self.info.height, self.info.width)
        )
        oh, ow = self.info.height, self.info.width
        with _open_input(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            time_base = stream.time_base
            fallback_dt = 1.0 / (self.info.fps or 25.0)
            buf = np.empty((self.chunk_size, oh, ow, 3), np.uint8)  # (chunk, H, W, 3)
            times = np.empty(self.chunk_size, np.float64)
            yuv_shape = (self.chunk_size, oh * 3 // 2, ow)
            yuv = np.empty(yuv_shape, np.uint8) if self.keep_yuv else None  # (chunk, H·3/2, W) I420
            n_in_buf = 0
            index = 0
            first_stamp, table = self._packet_times()
            last_time = -fallback_dt
            repaired = missing = reordered = 0
            decoder = container.decode(stream)
            while True:
                try:
                    frame = next(decoder, None)
                except av.FFmpegError as e:
                    raise Diff2LipError(
                        f"decoding failed at frame {index} ({_one_line(e)})", self.path
                    ) from e
                if frame is None:
                    break
                # presentation time: the k-th smallest packet timestamp (decoders hand frames out in
                # presentation order even when a container's per-frame pts are reordered, as in AVIs with
                # packed B-frames); else the frame's own pts/dts; else the previous time + 1/rate. Times
                # that still repeat or go backwards are pushed forward, and everything repaired is counted
                own = frame.pts if frame.pts is not None else frame.dts
                t = None
                if index < len(table):
                    t = table[index]
                    if own is not None and time_base is not None and first_stamp is not None:
                        reordered += abs(float((own - first_stamp) * time_base) - t) > _MIN_STEP
                elif own is not None and time_base is not None and first_stamp is not None:
                    t = float((own - first_stamp) * time_base)
                if t is None:
                    missing += 1
                    t = last_time + fallback_dt if index else 0.0
                elif t < last_time + _MIN_STEP:  # repeated or going backwards
                    repaired += 1
                    t = last_time + fallback_dt
                last_time = t
                rgb = frame.to_ndarray(format="rgb24", width=sw, height=sh)  # (sh, sw, 3)
                buf[n_in_buf] = rotate_frames(rgb, rotation)
                times[n_in_buf] = t
                if yuv is not None:
                    if color_spec(frame) == self.color and (frame.width, frame.height) == (ow, oh):
                        yuv[n_in_buf] = frame.to_ndarray(format="yuv420p")  # (H·3/2, W)
                    else:  # the stream changed format or size midway: no YUV for the rest of this pass
                        yuv = None
                n_in_buf += 1
                index += 1
                if n_in_buf == self.chunk_size:
                    yield FrameChunk(frames=buf, times=times, start_index=index - n_in_buf, yuv=yuv)
                    buf = np.empty((self.chunk_size, oh, ow, 3), np.uint8)
                    times = np.empty(self.chunk_size, np.float64)
                    yuv = np.empty(yuv_shape, np.uint8) if yuv is not None else None
                    n_in_buf = 0
            # before the last chunk is handed out
            self.repaired_times, self.missing_times, self.reordered_times = repaired, missing, reordered
            if n_in_buf:
                yield FrameChunk(
                    frames=buf[:n_in_buf],
                    times=times[:n_in_buf],
                    start_index=index - n_in_buf,
                    yuv=None if yuv is None else yuv[:n_in_buf],
                )
            if index == 0:
                raise Diff2LipError("video stream has no decodable frames", self.path)


def iter_frames(path: str | os.PathLike[str], **reader_kwargs: object) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(frame (H, W, 3) uint8, time in seconds)`` one at a time; see :class:`VideoReader`."""
    for chunk in VideoReader(path, **reader_kwargs):  # type: ignore[arg-type]
        for frame, t in zip(chunk.frames, chunk.times):
            yield frame, float(t)


def read_all(path: str | os.PathLike[str], **reader_kwargs: object) -> FrameChunk:
    """Decode a whole (short) video into one :class:`FrameChunk`. For tests and tiny clips only."""
    chunks = list(VideoReader(path, **reader_kwargs))  # type: ignore[arg-type]
    if not chunks:
        raise Diff2LipError("video stream has no decodable frames", path)
    return FrameChunk(
        frames=np.concatenate([c.frames for c in chunks]),  # (N, H, W, 3)
        times=np.concatenate([c.times for c in chunks]),
        start_index=0,
    )


# --------------------------------------------------------------------------------------------- audio


AudioInput = str | os.PathLike | tuple[np.ndarray, int]


class _AudioSource:
    """Planar float32 audio, decoded (or sliced) lazily and trimmed to ``[start, start + duration)``.

    Keeps the source's own sample rate and channel count; only a rate the encoder cannot take is
    resampled (to 48 kHz). ``chunks()`` yields ``(channels, n)`` float32 arrays.
    """

    def __init__(self, audio: AudioInput, start: float, duration: float | None, encoder: str = "aac"):
        if start < 0:
            raise ValueError(f"audio_start must be >= 0, got {start}")
        if duration is not None and duration < 0:
            raise ValueError(f"audio_duration must be >= 0, got {duration}")
        self._path: Path | None = None
        self._array: np.ndarray | None = None
        if isinstance(audio, tuple):
            samples, rate = audio
            arr = np.asarray(samples)
            if not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(f"audio array must be floating point in [-1, 1], got dtype {arr.dtype}")
            arr = arr.astype(np.float32, copy=False)
            if arr.ndim == 1:
                arr = arr[None]  # (1, samples)
            if arr.ndim != 2 or arr.shape[0] not in _DEFAULT_LAYOUTS:
                raise ValueError(f"audio array must be (samples,) or (channels<=8, samples), got {arr.shape}")
            if int(rate) <= 0:
                raise ValueError(f"audio sample rate must be positive, got {rate}")
            self._array = arr
            self.label: Path | None = None
            in_rate, channels = int(rate), arr.shape[0]
        else:
            self._path = self.label = _check_path(audio)
            with _open_input(self._path) as c:
                if not c.streams.audio:
                    raise Diff2LipError("has no audio stream", self._path)
                ctx = c.streams.audio[0].codec_context
                in_rate, channels = int(ctx.sample_rate), int(ctx.channels)
            if channels not in _DEFAULT_LAYOUTS:
                raise Diff2LipError(f"audio has {channels} channels; at most 8 are supported", self._path)
        self._in_rate = in_rate
        supported = av.Codec(encoder, "w").audio_rates or ()
        self.rate = in_rate if not supported or in_rate in supported else 48000
        self.layout = _DEFAULT_LAYOUTS[channels]
        self.channels = channels
        self._skip = round(start * self.rate)
        self._limit = None if duration is None else round(duration * self.rate)

    def _raw_frames(self) -> Iterator[av.AudioFrame]:
        if self._array is not None:
            step = 1 << 15
            for s in range(0, self._array.shape[1], step):
                part = np.ascontiguousarray(self._array[:, s : s + step])  # (C, step)
                frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=self.layout)
                frame.sample_rate = self._in_rate
                yield frame
            return
        assert self._path is not None
        from diff2lip.audio.io import decode_frames

        with _open_input(self._path) as c:
            stream = c.streams.audio[0]
            for frame in decode_frames(c, stream, self._path):  # damaged packets skipped
                frame.pts = None  # samples are concatenated in decode order
                yield frame

    def _resampled(self) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        raw = self._raw_frames()
        try:
            for frame in raw:
                for out in resampler.resample(frame):
                    yield out.to_ndarray()  # (C, n)
        finally:
            raw.close()
        for out in resampler.resample(None):
            yield out.to_ndarray()  # (C, n)

    def chunks(self) -> Iterator[np.ndarray]:
        """Yield ``(channels, n)`` float32 chunks at ``self.rate`` within the requested window."""
        end = math.inf if self._limit is None else self._skip + self._limit
        pos = 0  # samples (at self.rate) of the source consumed so far
        source = self._resampled()
        try:
            for arr in source:
                lo = max(self._skip - pos, 0)
                hi = int(min(arr.shape[1], end - pos))
                if hi > lo:
                    yield np.ascontiguousarray(arr[:, lo:hi], dtype=np.float32)  # (C, hi - lo)
                pos += arr.shape[1]
                if pos >= end:
                    return
        finally:
            source.close()


class _PacketCopy:
    """The audio packets of a file as they are (stream copy, no decoding), up to ``duration`` seconds:
    every packet that starts before the end."""

    def __init__(self, path: Path, duration: float | None):
        self._container = _open_input(path)
        self.stream = self._container.streams.audio[0]
        self.label = path
        self._end = math.inf if duration is None else duration

    def packets(self) -> Iterator[tuple[float, av.Packet]]:
        """``(start seconds, packet)`` in file order."""
        tb = self.stream.time_base
        for packet in self._container.demux(self.stream):
            if packet.dts is None or packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            start = float((packet.pts if packet.pts is not None else packet.dts) * tb)
            if start >= self._end:
                return
            yield start, packet

    def close(self) -> None:
        self._container.close()


def audio_codec_name(path: str | os.PathLike[str]) -> str:
    """FFmpeg's name of the codec of a file's first audio stream (``pcm_s16le``, ``aac``, …)."""
    with _open_input(_check_path(path)) as c:
        if not c.streams.audio:
            raise Diff2LipError("has no audio stream", path)
        return str(c.streams.audio[0].codec_context.codec.canonical_name)


def plan_audio(
    audio: AudioInput, output: Path, codec: str = "auto", audio_start: float = 0.0
) -> tuple[str | None, str]:
    """How the writer will store ``audio`` in ``output``: ``(encoder or None for a stream copy, note)``.

    ``codec``: ``auto`` copies the stream when the container can hold it as it is and it starts at 0, else
    encodes AAC at a high bit rate; ``copy`` insists on a copy (a one-line error when it cannot be);
    ``aac``/``alac``/``flac``/``opus``/``pcm`` always encode. The note says what happens and why.
    """
    if codec not in AUDIO_CODECS:
        raise Diff2LipError(f"unknown audio codec '{codec}' (choose one of {', '.join(AUDIO_CODECS)})")
    muxer = _muxer_for(output) or "mp4"
    suffix = output.suffix.lower() or ".mp4"
    if codec in ("auto", "copy"):
        source = None if isinstance(audio, tuple) else audio_codec_name(audio)
        why = None
        if source is None:
            why = "the audio is samples in memory"
        elif audio_start > 0:
            why = f"the audio starts {audio_start:g} s into the file"
        elif source not in _COPYABLE[muxer]:
            why = f"{source} cannot go into a {suffix} file"
        if why is None:
            return None, f"audio copied ({source})"
        if codec == "copy":
            raise Diff2LipError(
                f"--audio-codec copy: {why}; choose --audio-codec aac (or alac, flac, opus, pcm as the "
                "container allows)",
                None if isinstance(audio, tuple) else audio,
            )
        return "aac", f"audio encoded as AAC ({why})"
    encoder, containers = AUDIO_ENCODERS[codec]
    if muxer not in containers:
        allowed = ", ".join(sorted(_SUFFIXES[m] for m in containers))
        raise Diff2LipError(f"--audio-codec {codec} needs a {allowed} output", output)
    return encoder, f"audio encoded as {codec.upper() if codec in ('aac', 'pcm') else codec.capitalize()}"


# --------------------------------------------------------------------------------------------- writing


class VideoWriter:
    """Encode RGB frames to H.264 (libx264) with their own timestamps, optionally muxing an audio track.

    Use as a context manager::

        with VideoWriter(out, width=w, height=h, fps=fps, audio="speech.wav") as writer:
            for chunk in VideoReader(src):
                writer.write(chunk.frames, chunk.times)

    * Timing: each frame's pts is ``round(time × 90000)`` on a 1/90000 time base, so variable frame rate
      survives; with ``times=None`` frames are spaced ``1/fps`` after the previous one. Times must be
      strictly increasing and non-negative. ``fps`` is the nominal rate given to the encoder's rate
      control and used for the last frame's duration when there is only one frame.
    * Odd sizes: ``yuv420p`` needs even width and height, so odd dimensions are padded by one pixel by
      replicating the last row/column (never rescaled); :attr:`width`/:attr:`height` give the encoded
      size.
    * Colour: encoded with the BT.709 matrix, limited range, and tagged as such.
    * Memory: x264 holds about ``9 + threads + lookahead`` frames (1.5 threads per core; the rate-control
      lookahead is 40 at the ``medium`` preset); ``lookahead`` and ``threads`` lower it for very large
      frames (``generate``'s memory plan does).
    * Audio: ``audio`` is a path to any file with an audio stream or a tuple ``(float array (channels,
      samples) or (samples,), sample_rate)``, trimmed to ``audio_duration`` seconds when given. With
      ``audio_codec="auto"`` a file's audio stream is **copied bit for bit** when the container can hold
      it (AAC, MP3, ALAC, Opus into .mp4; PCM too into .mov/.mkv; see :func:`plan_audio`) — cut at the
      first packet that starts after the end — else encoded as AAC at 160 kb/s per channel at its own
      sample rate and channel count (decoded by PyAV and streamed, skipping ``audio_start`` seconds);
      ``audio_codec`` ``copy``/``aac``/``alac``/``flac``/``opus``/``pcm`` forces one way.
      :attr:`audio_note` says which happened. Audio is interleaved with the video as frames are written.
    * Atomicity: everything is written to a hidden temporary file in the target's directory, which is
      renamed onto ``path`` only when the ``with`` block exits cleanly (or :meth:`close` is called); on
      an exception (or :meth:`abort`) the temporary file is deleted and ``path`` is left untouched. The
      temporary's name carries this process's pid; :meth:`open` removes the partial files of the same
      output whose writer is gone (killed), listed in :attr:`stale_removed`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: float,
        crf: float = 18,
        preset: str = "medium",
        audio: AudioInput | None = None,
        audio_start: float = 0.0,
        audio_duration: float | None = None,
        pix_fmt: str = "yuv420p",
        lookahead: int | None = None,
        threads: int | None = None,
        audio_codec: str = "auto",
        lossless: bool = False,
        tune: str | None = None,
        color: ColorSpec | None = None,
    ):
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise Diff2LipError("output directory does not exist", self.path.parent)
        self.input_width, self.input_height = int(width), int(height)
        self.lossless = bool(lossless)
        if self.lossless:
            if _muxer_for(self.path) != "matroska":
                raise Diff2LipError("lossless output is FFV1 video: name the output file .mkv", self.path)
            pix_fmt = "bgr0"  # the RGB frames exactly
        self.tune = tune
        self.color = color or BT709
        fmt = av.VideoFormat(pix_fmt, self.input_width, self.input_height)
        chroma = [c for c in fmt.components if c.is_chroma]
        sub_w = bool(chroma) and chroma[0].width != fmt.width
        sub_h = bool(chroma) and chroma[0].height != fmt.height
        self.width = self.input_width + (self.input_width % 2 if sub_w else 0)
        self.height = self.input_height + (self.input_height % 2 if sub_h else 0)
        self.fps = float(fps)
        self.crf = crf
        self.preset = preset
        self.pix_fmt = pix_fmt
        self.lookahead = lookahead
        self.threads = threads
        self.frames_written = 0
        self._audio_spec = audio
        self._audio_start = float(audio_start)
        self._audio_duration = audio_duration
        self._container: av.container.OutputContainer | None = None
        self._tmp: Path | None = None
        self._vstream: av.video.stream.VideoStream | None = None
        self._astream: av.audio.stream.AudioStream | None = None
        self._audio_iter: Iterator[np.ndarray] | None = None
        self._audio_rate = 0
        self._audio_layout = ""
        self._audio_sent = 0
        self._audio_label: Path | None = None
        self.audio_codec = audio_codec
        self.audio_note = ""  # what happened to the audio: copied, or encoded and why
        self._copy: _PacketCopy | None = None
        self._copy_iter: Iterator[tuple[float, av.Packet]] | None = None
        self._copy_pending: tuple[float, av.Packet] | None = None
        self._held: av.Packet | None = None  # last video packet, muxed at close with its true duration
        self._first_dts: int | None = None
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._last_dur = round(1.0 / self.fps / _VIDEO_TIME_BASE)
        self.stale_removed: list[
            Path
        ] = []  # partial files of killed writers of this output, removed by open()

    # -- lifecycle

    def open(self) -> VideoWriter:
        """Create the temporary output and its streams (called by ``__enter__``)."""
        if self._container is not None:
            return self
        source = None
        if self._audio_spec is not None:
            encoder, self.audio_note = plan_audio(
                self._audio_spec, self.path, self.audio_codec, self._audio_start
            )
            if encoder is None:
                self._copy = _PacketCopy(_check_path(self._audio_spec), self._audio_duration)  # type: ignore[arg-type]
            else:
                source = _AudioSource(self._audio_spec, self._audio_start, self._audio_duration, encoder)
        target = self.path.with_suffix(self.path.suffix or ".mp4")
        self.stale_removed = remove_stale_temps(target.parent, target.name, "partial")
        self._tmp = temp_sibling(target, "partial")
        try:
            self._container = av.open(str(self._tmp), "w", format=_muxer_for(self.path))
            rate = Fraction(self.fps).limit_denominator(100000)
            vs = self._container.add_stream("ffv1" if self.lossless else "libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, self.pix_fmt
            vs.time_base = _VIDEO_TIME_BASE
            vs.codec_context.time_base = _VIDEO_TIME_BASE
            if self.lossless:
                vs.options = {"level": "3", "slicecrc": "1"}
            else:
                vs.options = {"crf": str(self.crf), "preset": self.preset}
                if self.tune:
                    vs.options["tune"] = self.tune
                if self.lookahead is not None:  # x264 keeps ~lookahead frames in flight: memory ∝ size
                    vs.options["x264-params"] = f"rc-lookahead={int(self.lookahead)}"
            if self.threads is not None:
                vs.options["threads"] = str(int(self.threads))
            cc = vs.codec_context
            if not self.lossless:  # the source's tags (BT.709, limited range, for RGB-only input)
                cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = self.color.tags
            self._vstream = vs
            if self._copy is not None:
                self._astream = self._container.add_stream_from_template(self._copy.stream)
                self._audio_label = self._copy.label
                self._copy_iter = self._copy.packets()
            elif source is not None:
                astream = self._container.add_stream(encoder, rate=source.rate, layout=source.layout)
                if encoder in ("aac", "libopus"):
                    astream.bit_rate = min(_LOSSY_BITRATE_PER_CHANNEL * source.channels, 510_000)
                astream.time_base = Fraction(1, source.rate)
                self._astream = astream
                self._audio_rate, self._audio_layout = source.rate, source.layout
                self._audio_label = source.label
                self._audio_iter = source.chunks()
        except BaseException:
            self.abort()
            raise
        return self

    def __enter__(self) -> VideoWriter:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Stop writing and delete the temporary file; the target path is not touched."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(av.FFmpegError, OSError, ValueError):
                container.close()
        if self._audio_iter is not None:
            with contextlib.suppress(av.FFmpegError, Diff2LipError):
                self._audio_iter.close()  # type: ignore[attr-defined]
            self._audio_iter = None
        self._close_copy()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def close(self) -> None:
        """Flush the encoders, finish the file and rename it onto the target path."""
        if self._container is None:
            raise RuntimeError("VideoWriter is not open")
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path}")
            self._mux_video(self._vstream.encode(None))  # type: ignore[union-attr]
            self._mux_last_video_packet()
            if self._astream is not None:
                self._pump_audio(math.inf)
                if self._audio_sent == 0:
                    raise Diff2LipError(
                        f"no audio left to mux after skipping {self._audio_start:g} s", self._audio_label
                    )
                if self._copy is None:
                    self._mux(self._astream.encode(None))
            self._close_copy()
            self._container.close()
            self._container = None
            publish(self._tmp, self.path)  # type: ignore[arg-type]
            self._tmp = None
        except BaseException:
            self.abort()
            raise

    # -- writing

    def write(
        self,
        frames: np.ndarray,
        times: np.ndarray | None = None,
        *,
        source_yuv: np.ndarray | None = None,
        changed: np.ndarray | None = None,
    ) -> None:
        """Encode ``frames`` ``(N, H, W, 3)`` uint8 RGB shown at ``times`` ``(N,)`` seconds (or at 1/fps).

        ``source_yuv`` ``(N, H·3/2, W)``: the frames as decoded (:attr:`FrameChunk.yuv`, in this writer's
        ``color`` spec) and ``changed`` ``(N, K, 4)`` (or ``(N, 4)``) int: the boxes ``x1 y1 x2 y2`` of each
        frame that differ from its source (rows of -1: none). Then only the changed boxes (grown to even
        pixels) are converted from RGB; every other sample is the source's own, so the untouched region
        loses nothing before the encoder.
        """
        if self._container is None:
            raise RuntimeError("VideoWriter is not open (use it as a context manager)")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]  # (1, H, W, 3)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        if frames.shape[1:3] != (self.input_height, self.input_width):
            raise ValueError(
                f"frame size {frames.shape[2]}x{frames.shape[1]} != writer size "
                f"{self.input_width}x{self.input_height}"
            )
        n = len(frames)
        if times is None:
            start = 0.0 if self._last_pts is None else float(self._last_pts * _VIDEO_TIME_BASE) + 1 / self.fps
            times = start + np.arange(n, dtype=np.float64) / self.fps
        times = np.asarray(times, dtype=np.float64)
        if times.shape != (n,):
            raise ValueError(f"times must have shape ({n},), got {times.shape}")
        passthrough = source_yuv is not None and not self.lossless and self.pix_fmt == "yuv420p"
        if passthrough and source_yuv.shape != (n, self.height * 3 // 2, self.width):  # type: ignore[union-attr]
            raise ValueError(f"source_yuv must be ({n}, {self.height * 3 // 2}, {self.width})")
        pad_h, pad_w = self.height - self.input_height, self.width - self.input_width
        for i, (frame_rgb, t) in enumerate(zip(frames, times)):
            pts = round(float(t) / _VIDEO_TIME_BASE)
            if t < 0 or (self._last_pts is not None and pts <= self._last_pts):
                raise ValueError(f"frame times must be non-negative and strictly increasing (got {t:.6f} s)")
            if passthrough:
                boxes = (
                    np.zeros((0, 4), np.int64) if changed is None else np.asarray(changed[i]).reshape(-1, 4)
                )
                vf = self._from_source(frame_rgb, source_yuv[i], boxes)  # type: ignore[index]
            else:
                if pad_h or pad_w:
                    frame_rgb = np.pad(frame_rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                vf = self._to_yuv(frame_rgb)
            vf.pts = pts
            vf.time_base = _VIDEO_TIME_BASE
            if self._last_pts is not None:
                self._last_dur = pts - self._last_pts
            else:
                self._first_pts = pts
            self._mux_video(self._vstream.encode(vf))  # type: ignore[union-attr]
            self._last_pts = pts
            self.frames_written += 1
        if self._astream is not None and self._last_pts is not None:
            self._pump_audio(float(self._last_pts * _VIDEO_TIME_BASE))

    def _to_yuv(self, rgb: np.ndarray) -> av.VideoFrame:
        """An RGB image ``(h, w, 3)`` as a frame in the output's pixel format and colour spec."""
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.lossless:
            return vf.reformat(format=self.pix_fmt)
        return vf.reformat(
            format=self.pix_fmt, dst_colorspace=self.color.matrix, dst_color_range=self.color.range_name
        )

    def _from_source(self, rgb: np.ndarray, source: np.ndarray, boxes: np.ndarray) -> av.VideoFrame:
        """The source's I420 samples ``(H·3/2, W)`` with the changed ``boxes`` ``(K, 4)`` of ``rgb``
        converted in."""
        h, w = self.height, self.width
        boxes = boxes[boxes[:, 0] >= 0]
        if not len(boxes):
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(source), format="yuv420p")
        out = source.copy()
        y_plane = out[:h]  # (H, W)
        uv = out[h:].reshape(2, h // 2, w // 2)  # U and V planes (views)
        for box in boxes:
            x1, y1 = int(box[0]) // 2 * 2, int(box[1]) // 2 * 2  # even corners: whole chroma samples
            x2, y2 = min(w, -(-int(box[2]) // 2) * 2), min(h, -(-int(box[3]) // 2) * 2)
            sub = self._to_yuv(rgb[y1:y2, x1:x2]).to_ndarray()  # (bh·3/2, bw) I420
            bh, bw = y2 - y1, x2 - x1
            y_plane[y1:y2, x1:x2] = sub[:bh]
            uv[:, y1 // 2 : y2 // 2, x1 // 2 : x2 // 2] = sub[bh:].reshape(2, bh // 2, bw // 2)
        return av.VideoFrame.from_ndarray(out, format="yuv420p")

    def _mux_video(self, packets: list[av.Packet]) -> None:
        """Mux video packets, holding the latest one back so :meth:`close` can fix its duration."""
        for packet in packets:
            if self._first_dts is None:
                self._first_dts = packet.dts
            if self._held is not None:
                self._mux([self._held])
            self._held = packet

    def _mux_last_video_packet(self) -> None:
        """Mux the final packet lasting until the last frame's end (its gap to the previous frame).

        MP4 track durations are sums of decode-timestamp steps (starting at the first, possibly negative,
        dts when there are B-frames); with variable frame rate the last dts lags the last pts by more
        than one frame, so the last packet gets the duration that makes the track as long as
        ``last frame time + its duration - first frame time``.
        """
        packet, self._held = self._held, None
        if packet is None or self._last_pts is None or self._first_pts is None:
            return
        if packet.dts is not None and self._first_dts is not None:
            duration = (self._last_pts + self._last_dur - self._first_pts) - (packet.dts - self._first_dts)
            if duration > 0:
                packet.duration = duration
        self._mux([packet])

    def _close_copy(self) -> None:
        self._copy_iter = self._copy_pending = None
        if self._copy is not None:
            with contextlib.suppress(av.FFmpegError, OSError):
                self._copy.close()

    def _pump_audio(self, until_seconds: float) -> None:
        """Encode (or copy) audio up to ``until_seconds`` so audio and video packets interleave."""
        assert self._astream is not None
        while self._copy_iter is not None:
            if self._copy_pending is None:
                self._copy_pending = next(self._copy_iter, None)
                if self._copy_pending is None:
                    self._copy_iter = None
                    return
            start, packet = self._copy_pending
            if start >= until_seconds:
                return
            packet.stream = self._astream
            self._mux([packet])
            self._audio_sent += 1
            self._copy_pending = None
        if self._audio_iter is None:
            return
        limit = until_seconds * self._audio_rate
        while self._audio_sent < limit:
            chunk = next(self._audio_iter, None)
            if chunk is None:
                self._audio_iter = None
                return
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._audio_layout)
            frame.sample_rate = self._audio_rate
            frame.pts = self._audio_sent
            frame.time_base = Fraction(1, self._audio_rate)
            self._audio_sent += chunk.shape[1]
            self._mux(self._astream.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        assert self._container is not None
        for packet in packets:
            self._container.mux(packet)


def _muxer_for(path: Path) -> str | None:
    """FFmpeg muxer for the target's extension (the temp file's name may not carry it reliably)."""
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}.get(path.suffix.lower())
