"""Wav2Lip/Diff2Lip mel-spectrogram features (DESIGN.md §3), without librosa.

The official code (``audio/audio.py`` + ``audio/hparams.py`` of Diff2Lip, inherited from Wav2Lip) computes,
for 16 kHz mono audio ``wav``::

    y   = lfilter([1, -0.97], [1], wav)                              # pre-emphasis
    D   = |STFT(y)|                                                  # n_fft 800, win 800 (Hann), hop 200,
                                                                     # centred, zero ('constant') padding
    M   = mel_basis @ D                                              # 80 Slaney mel bands, 55-7600 Hz
    S   = 20 * log10(max(1e-5, M)) - 20                              # min_level_db -100 on the *mel*
    out = clip(8 * (S + 100) / 100 - 4, -4, 4)                       # symmetric normalisation to [-4, 4]

The STFT centring pads ``n_fft // 2`` zeros on both sides (the librosa >= 0.9 default ``pad_mode``, which
the official code got), so a signal of ``n`` samples has ``1 + n // 200`` frames: 80 mel frames per second
at 16 kHz. Digital silence maps to ``-4`` (the clip floor). All parameters live in :class:`MelParams`.

The filterbank is the Slaney-style one (``librosa.filters.mel(htk=False, norm="slaney")``): triangles
equally spaced on the Slaney mel scale (linear below 1 kHz, logarithmic above), each scaled to unit area
(``2 / (f_{i+2} - f_i)``). Tests check it and the whole recipe against librosa (max abs diff <= 1e-3).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.signal import get_window, lfilter

__all__ = ["MelParams", "mel_filterbank", "melspectrogram"]

# Frames per STFT call; bounds the temporary (chunk, n_fft) float64 arrays for long audio.
_CHUNK_FRAMES = 4096


@dataclass(frozen=True)
class MelParams:
    """Parameters of the Wav2Lip/Diff2Lip audio features (official ``audio/hparams.py``, DESIGN.md §3).

    Attributes:
        sample_rate: input sample rate in Hz.
        n_fft: FFT size (bins ``n_fft // 2 + 1``).
        win_size: Hann window length, centred inside ``n_fft``.
        hop_size: STFT hop in samples (200 at 16 kHz = 12.5 ms = 80 frames per second).
        num_mels: number of mel bands.
        fmin, fmax: mel filterbank edges in Hz.
        preemphasis: pre-emphasis coefficient ``k`` of ``y[n] = x[n] - k x[n-1]``.
        min_level_db: floor of the dB scale; ``min_level = 10 ** (min_level_db / 20) = 1e-5``.
        ref_level_db: subtracted after the dB conversion.
        max_abs_value: the normalised output lies in ``[-max_abs_value, max_abs_value]``.
    """

    sample_rate: int = 16000
    n_fft: int = 800
    win_size: int = 800
    hop_size: int = 200
    num_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0

    def __post_init__(self) -> None:
        if self.win_size > self.n_fft:
            raise ValueError(f"win_size {self.win_size} must be <= n_fft {self.n_fft}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.hop_size <= 0 or self.num_mels <= 0 or self.min_level_db >= 0:
            raise ValueError("hop_size and num_mels must be positive and min_level_db negative")

    @property
    def frames_per_second(self) -> float:
        """Mel frames per second of audio (80.0 for the defaults)."""
        return self.sample_rate / self.hop_size

    @property
    def silence_value(self) -> float:
        """The normalised value of digital silence (the clip floor, -4.0 for the defaults)."""
        return -self.max_abs_value


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (3 mels / 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    safe = np.maximum(f, min_log_hz)
    return np.where(f >= min_log_hz, min_log_mel + np.log(safe / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def _filterbank(params: MelParams) -> np.ndarray:
    n_bins = params.n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, params.sample_rate / 2, n_bins)  # (n_bins,)
    mel_edges = np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.num_mels + 2)
    hz_edges = _mel_to_hz(mel_edges)  # (num_mels + 2,)
    widths = np.diff(hz_edges)  # (num_mels + 1,)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (num_mels + 2, n_bins)
    rising = -ramps[:-2] / widths[:-1, None]  # (num_mels, n_bins)
    falling = ramps[2:] / widths[1:, None]  # (num_mels, n_bins)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]  # Slaney area normalisation
    weights.setflags(write=False)
    return weights


def mel_filterbank(params: MelParams = MelParams()) -> np.ndarray:
    """The Slaney mel filterbank, float64 of shape ``(num_mels, n_fft // 2 + 1)``.

    Equals ``librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)`` for the defaults.
    The returned array is a fresh, writable copy.
    """
    return _filterbank(params).copy()


def _window(params: MelParams) -> np.ndarray:
    """Periodic Hann window of ``win_size`` zero-padded (centred) to ``n_fft``, as ``librosa.stft``."""
    win = get_window("hann", params.win_size, fftbins=True)
    left = (params.n_fft - params.win_size) // 2
    return np.pad(win, (left, params.n_fft - params.win_size - left))  # (n_fft,)


def _stft_magnitude(y: np.ndarray, params: MelParams) -> np.ndarray:
    """|STFT| of ``y``, centred with zero padding; float64 of shape ``(n_fft // 2 + 1, 1 + len(y) // hop)``."""
    half = params.n_fft // 2
    padded = np.pad(y, (half, half), mode="constant")
    n_frames = 1 + len(y) // params.hop_size
    frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft)[:: params.hop_size]
    frames = frames[:n_frames]  # (T, n_fft), a strided view
    win = _window(params)
    mag = np.empty((params.n_fft // 2 + 1, n_frames), dtype=np.float64)
    for s in range(0, n_frames, _CHUNK_FRAMES):
        chunk = frames[s : s + _CHUNK_FRAMES] * win  # (t, n_fft)
        mag[:, s : s + _CHUNK_FRAMES] = np.abs(np.fft.rfft(chunk, axis=1)).T  # (n_bins, t)
    return mag


def melspectrogram(wav: np.ndarray, params: MelParams = MelParams()) -> np.ndarray:
    """Normalised log-mel spectrogram of a mono waveform, exactly the Wav2Lip/Diff2Lip recipe.

    Args:
        wav: 1-D mono signal at ``params.sample_rate`` (16 kHz), float in [-1, 1].
        params: feature parameters; the defaults are the official ones (DESIGN.md §3).

    Returns:
        float32 array of shape ``(num_mels, 1 + len(wav) // hop_size)`` = ``(80, T)`` with values in
        ``[-4, 4]``; 80 frames per second of audio. Digital silence gives ``-4``.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"wav must be 1-D mono, got shape {wav.shape}")
    y = wav.astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError("wav contains NaN or infinite samples")
    if params.preemphasis and len(y):  # lfilter rejects empty input
        y = lfilter([1.0, -params.preemphasis], [1.0], y)
    mel = _filterbank(params) @ _stft_magnitude(y, params)  # (num_mels, T)
    min_level = 10.0 ** (params.min_level_db / 20.0)
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - params.ref_level_db
    m = params.max_abs_value
    out = np.clip(2 * m * (db - params.min_level_db) / (-params.min_level_db) - m, -m, m)
    return out.astype(np.float32)
