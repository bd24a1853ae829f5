"""diff2lip.audio.windows: frame timestamp -> mel window index (DESIGN.md §3), padding policy."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from diff2lip.audio import complete_windows, frame_times, mel_windows, sync_windows, window_starts


def _exact_starts(times: list[Fraction]) -> np.ndarray:
    """floor(80 * max(t - 1/25, 0)) in exact rational arithmetic."""
    return np.array([int(80 * max(t - Fraction(1, 25), Fraction(0))) for t in times], dtype=np.int64)


def _ramp_mel(steps: int, n_mels: int = 80) -> np.ndarray:
    """A mel whose value encodes (band, step), so any window can be checked element by element."""
    return (np.arange(n_mels)[:, None] * 1000 + np.arange(steps)[None, :]).astype(np.float32)  # (M, T)


def test_25fps_reproduces_official_integer_formula_exactly():
    k = np.arange(100001)
    official = np.array([int(80 * max(i - 1, 0) / 25) for i in range(100001)], dtype=np.int64)
    np.testing.assert_array_equal(window_starts(frame_times(len(k), 25)), official)
    # Same with timestamps as a demuxer gives them: pts * time_base (1/12800, 512 ticks per frame).
    np.testing.assert_array_equal(window_starts(k * 512 * (1 / 12800)), official)
    np.testing.assert_array_equal(window_starts(frame_times(len(k), Fraction(25))), official)
    assert list(official[:8]) == [0, 0, 3, 6, 9, 12, 16, 19]


def test_30fps_by_timestamp():
    n = 20000
    exact = _exact_starts([Fraction(i, 30) for i in range(n)])
    np.testing.assert_array_equal(window_starts(frame_times(n, 30)), exact)
    assert list(exact[:6]) == [0, 0, 2, 4, 7, 10]


def test_2997fps_by_timestamp():
    n = 20000
    fps = Fraction(30000, 1001)
    exact = _exact_starts([i / fps for i in range(n)])
    np.testing.assert_array_equal(window_starts(frame_times(n, fps)), exact)
    np.testing.assert_array_equal(window_starts(frame_times(n, 30000 / 1001)), exact)


def test_variable_frame_rate_timestamps():
    times = [
        Fraction(0),
        Fraction(1, 30),
        Fraction(1, 10),
        Fraction(11, 100),
        Fraction(1, 2),
        Fraction(9, 10),
    ]
    got = window_starts([float(t) for t in times])
    np.testing.assert_array_equal(got, _exact_starts(times))
    assert list(got) == [0, 0, 4, 5, 36, 68]
    mel = _ramp_mel(200)
    win = mel_windows(mel, [float(t) for t in times])
    assert win.shape == (6, 80, 16) and win.dtype == np.float32
    for i, s in enumerate(got):
        np.testing.assert_array_equal(win[i], mel[:, s : s + 16])


def test_window_content_equals_mel_slice_at_25fps():
    mel = np.random.default_rng(0).uniform(-4, 4, size=(80, 400)).astype(np.float32)
    win = mel_windows(mel, frame_times(100, 25))
    assert win.shape == (100, 80, 16)
    for k in (0, 1, 2, 7, 50, 99):
        s = int(80 * max(k - 1, 0) / 25)
        np.testing.assert_array_equal(win[k], mel[:, s : s + 16])


def test_padding_past_the_end_keeps_shape_and_uses_silence():
    mel = _ramp_mel(100)  # 1.25 s of audio
    times = frame_times(40, 25)  # 1.6 s of video: last frames run past the audio
    win = mel_windows(mel, times)
    assert win.shape == (40, 80, 16)  # never dropped
    starts = window_starts(times)
    for i, s in enumerate(starts):
        inside = max(0, min(16, 100 - s))
        np.testing.assert_array_equal(win[i, :, :inside], mel[:, s : s + inside])
        assert np.all(win[i, :, inside:] == -4.0)
    assert np.all(win[-1] == -4.0)  # starts beyond the end: fully padded
    complete = complete_windows(100, times)
    np.testing.assert_array_equal(complete, starts + 16 <= 100)
    assert complete[:28].all() and not complete[28:].any()  # official inference keeps 28 frames here
    assert np.all(mel_windows(mel, times, pad_value=0.0)[-1] == 0.0)


def test_sync_windows_start_at_group_start():
    mel = _ramp_mel(300)
    f0 = np.array([0, 1, 5, 17, 60])
    win = sync_windows(mel, f0 / 25)
    assert win.shape == (5, 80, 16)
    for g, f in enumerate(f0):
        s = int(80.0 * (f / 25.0))  # official crop_audio_window
        np.testing.assert_array_equal(win[g], mel[:, s : s + 16])


def test_frame_times_and_validation():
    np.testing.assert_array_equal(frame_times(4, 25), [0.0, 0.04, 0.08, 0.12])
    assert frame_times(0, 25).shape == (0,)
    assert mel_windows(_ramp_mel(10), frame_times(0, 25)).shape == (0, 80, 16)
    assert window_starts([-0.5])[0] == 0  # pre-roll clamps to the start
    with pytest.raises(ValueError):
        frame_times(3, 0)
    with pytest.raises(ValueError):
        window_starts([0.0, np.nan])
    with pytest.raises(ValueError):
        mel_windows(np.zeros(80), [0.0])
