"""Video frame ↔ mel index: the per-frame audio windows of Diff2Lip (DESIGN.md §3).

Index rule
----------
The mel spectrogram has ``mel_fps = 80`` frames per second (hop 200 at 16 kHz). The official code works
on 25 fps video and gives frame ``k`` (0-based) the 16 mel frames starting at
``int(80 * max(k - 1, 0) / 25)``: a 0.2 s window that begins one video frame (0.04 s) before the frame.
We index by the frame's presentation *timestamp* ``t`` in seconds instead, so any frame rate and variable
frame rate (VFR) video work the same way::

    start(t) = floor(mel_fps * max(t - lead, 0))        lead = 0.04 s (one 25 fps frame)

For ``t = k / 25`` this is exactly the official integer formula for every ``k``: the floor is taken after
adding ``1e-6`` mel frames (12.5 ns of audio), which absorbs the float rounding of ``k / 25 - 0.04``
(e.g. for ``k = 6``, ``80 * (6/25 - 0.04)`` evaluates to ``15.999999999999998`` but must give 16; true fractions at
common frame rates and time bases are multiples of 1/30000 mel frame or coarser, far above the epsilon).

The sync-loss window of a 5-frame group starting at frame ``f0`` (25 fps) starts at ``int(80 * f0 / 25)``,
i.e. at ``floor(mel_fps * t0)`` with no lead (:func:`sync_windows`).

Padding policy
--------------
A window that runs past the end of the mel, or starts beyond it, is **padded, never dropped**: missing
columns are filled with ``pad_value`` (default ``-4.0``, the normalised value of digital silence, i.e. what
the features of zero audio are), so the output always has one window per requested frame. The official
code instead truncates the video to the frames whose window fits; :func:`complete_windows` tells the caller
which windows needed no padding if it wants that behaviour.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

__all__ = [
    "complete_windows",
    "frame_times",
    "mel_windows",
    "sync_windows",
    "window_starts",
]

MEL_FPS = 80.0
"""Mel frames per second of the default features (16000 Hz / hop 200)."""
WINDOW = 16
"""Mel frames per video-frame window (0.2 s), ``syncnet_mel_step_size`` in the official code."""
LEAD = 0.04
"""Seconds a frame's window starts before the frame: one frame at 25 fps (the official ``k - 1``)."""
SILENCE = -4.0
"""Normalised mel value of digital silence; the padding value."""

_EPS = 1e-6  # in mel frames; see the module docstring


def frame_times(num_frames: int, fps: float | Fraction) -> np.ndarray:
    """Timestamps ``k / fps`` (seconds, float64) of ``num_frames`` frames at a constant frame rate.

    Pass a :class:`~fractions.Fraction` (e.g. ``Fraction(30000, 1001)`` for 29.97 fps, or a PyAV
    ``average_rate``) to get correctly rounded ``k * den / num`` without the rounding of ``float(fps)``.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    k = np.arange(num_frames, dtype=np.float64)
    if isinstance(fps, Fraction):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return k * fps.denominator / fps.numerator  # exact integer product, one rounding
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return k / float(fps)


def _as_times(times: np.ndarray | list[float]) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"timestamps must be 1-D, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("timestamps contain NaN or infinite values")
    return t


def window_starts(
    frame_times: np.ndarray | list[float], *, mel_fps: float = MEL_FPS, lead: float = LEAD
) -> np.ndarray:
    """First mel index (int64) of each frame's window: ``floor(mel_fps * max(t - lead, 0))``.

    With the defaults and ``t = k / 25`` this equals the official ``int(80 * max(k - 1, 0) / 25)``.
    Negative timestamps (e.g. pre-roll) clamp to index 0.
    """
    t = _as_times(frame_times)
    x = mel_fps * np.maximum(t - lead, 0.0)
    return np.floor(x + _EPS).astype(np.int64)


def _gather(mel: np.ndarray, starts: np.ndarray, window: int, pad_value: float) -> np.ndarray:
    mel = np.asarray(mel)
    if mel.ndim != 2:
        raise ValueError(f"mel must have shape (num_mels, T), got {mel.shape}")
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    n_mels, n_steps = mel.shape
    # One padding column at index n_steps; every out-of-range index points at it.
    padded = np.concatenate([mel, np.full((n_mels, 1), pad_value, dtype=mel.dtype)], axis=1)  # (M, T+1)
    idx = starts[:, None] + np.arange(window)[None, :]  # (N, window)
    idx = np.minimum(idx, n_steps)
    out = padded[:, idx]  # (M, N, window)
    return np.ascontiguousarray(out.transpose(1, 0, 2), dtype=np.float32)  # (N, M, window)


def mel_windows(
    mel: np.ndarray,
    frame_times: np.ndarray | list[float],
    *,
    window: int = WINDOW,
    mel_fps: float = MEL_FPS,
    lead: float = LEAD,
    pad_value: float = SILENCE,
) -> np.ndarray:
    """Per-frame audio windows for frames at arbitrary timestamps (DESIGN.md §3).

    Args:
        mel: normalised mel spectrogram ``(num_mels, T)`` from :func:`~diff2lip.audio.melspectrogram`.
        frame_times: presentation timestamps in seconds, shape ``(N,)`` (any fps, VFR allowed).
        window: mel frames per window (16 = 0.2 s).
        mel_fps: mel frames per second (80).
        lead: seconds the window starts before the frame (0.04 = the official ``k - 1`` at 25 fps).
        pad_value: value of the columns past the end of ``mel`` (``-4`` = silence; see the module doc).

    Returns:
        float32 ``(N, num_mels, window)``; window ``i`` is ``mel[:, s_i : s_i + window]`` with
        ``s_i = window_starts(frame_times)[i]``, padded with ``pad_value`` past the end.
    """
    starts = window_starts(frame_times, mel_fps=mel_fps, lead=lead)
    return _gather(mel, starts, window, pad_value)


def sync_windows(
    mel: np.ndarray,
    group_start_times: np.ndarray | list[float],
    *,
    window: int = WINDOW,
    mel_fps: float = MEL_FPS,
    pad_value: float = SILENCE,
) -> np.ndarray:
    """Sync-loss audio windows for groups of 5 frames (SyncNet's input, DESIGN.md §3 / paper eq. 9).

    A group whose first frame is at ``t0`` seconds gets the ``window`` mel frames starting at
    ``floor(mel_fps * t0)`` (the official ``int(80 * f0 / 25)`` for ``t0 = f0 / 25``); no lead. Padding as
    in :func:`mel_windows`. Returns float32 ``(G, num_mels, window)``.
    """
    starts = window_starts(group_start_times, mel_fps=mel_fps, lead=0.0)
    return _gather(mel, starts, window, pad_value)


def complete_windows(
    num_mel_steps: int,
    frame_times: np.ndarray | list[float],
    *,
    window: int = WINDOW,
    mel_fps: float = MEL_FPS,
    lead: float = LEAD,
) -> np.ndarray:
    """Boolean ``(N,)``: True where the frame's window lies fully inside a mel of ``num_mel_steps`` frames.

    The official inference keeps only such frames (it stops at the first incomplete window); use this to
    reproduce that truncation or to report how many frames received padded audio.
    """
    starts = window_starts(frame_times, mel_fps=mel_fps, lead=lead)
    return starts + window <= num_mel_steps
