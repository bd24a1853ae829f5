"""diff2lip.audio.mel: the Wav2Lip/Diff2Lip features against librosa's reference recipe, golden values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal

from diff2lip.audio import MelParams, load_audio, mel_filterbank, melspectrogram


def _librosa_reference(wav: np.ndarray) -> np.ndarray:
    """The official audio/audio.py melspectrogram, written out with librosa (dev-only dependency)."""
    import librosa

    y = signal.lfilter([1, -0.97], [1], wav)
    d = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800)  # centred, pad_mode="constant"
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    min_level = np.exp(-100 / 20 * np.log(10))
    s = 20 * np.log10(np.maximum(min_level, basis @ np.abs(d))) - 20
    return np.clip(8 * ((s + 100) / 100) - 4, -4, 4)


def test_filterbank_matches_librosa_slaney():
    import librosa

    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    ours = mel_filterbank()
    assert ours.shape == (80, 401)
    np.testing.assert_allclose(ours, ref, atol=1e-7, rtol=0)


def test_speech_matches_librosa_recipe(speech_wav):
    wav = load_audio(speech_wav)
    mel = melspectrogram(wav)
    ref = _librosa_reference(wav)
    assert mel.dtype == np.float32 and mel.shape == ref.shape == (80, 1 + len(wav) // 200)
    assert np.abs(mel - ref).max() <= 1e-3
    assert mel.max() > 0 and mel.min() >= -4  # real speech reaches the upper half of the range


def test_noise_matches_librosa_recipe():
    wav = (0.3 * np.random.default_rng(0).standard_normal(16000 * 2 + 77)).astype(np.float32)
    mel = melspectrogram(wav)
    assert np.abs(mel - _librosa_reference(wav)).max() <= 1e-3


def test_digital_silence_is_finite_floor():
    mel = melspectrogram(np.zeros(16000, np.float32))
    assert np.all(np.isfinite(mel))
    assert np.all(mel == -4.0)
    assert MelParams().silence_value == -4.0


@pytest.mark.parametrize("n", [0, 1, 199, 200, 201, 799, 800, 16000, 16199])
def test_frame_count_is_80_per_second(n):
    mel = melspectrogram(np.zeros(n, np.float32))
    assert mel.shape == (80, 1 + n // 200)
    assert MelParams().frames_per_second == 80.0


def test_golden_values_440hz_sine():
    """A 1 s 440 Hz sine (amplitude 0.5) at 16 kHz; values pinned from this implementation (== librosa)."""
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    mel = melspectrogram(x)
    assert mel.shape == (80, 81)
    # Interior frame: energy in the bands around 440 Hz only, everything else at the floor.
    np.testing.assert_allclose(mel[[9, 10, 11], 40], [1.654641, 1.989764, 0.490574], atol=1e-4)
    assert np.all(mel[[3, 8, 20, 40, 79], 40] == -4.0)
    # Edge frame 0 (zero padding makes an onset: broadband energy).
    np.testing.assert_allclose(
        mel[[3, 8, 10, 20, 40, 79], 0],
        [-0.488842, 0.82136, 1.697278, -0.357342, -1.065495, -1.867622],
        atol=1e-4,
    )
    np.testing.assert_allclose(mel[10, 80], 1.688363, atol=1e-4)
    assert np.abs(mel - _librosa_reference(x)).max() <= 1e-3


def test_gain_shifts_db_linearly():
    """x10 amplitude = +20 dB = +1.6 normalised units wherever neither value is clipped."""
    x = 0.01 * np.random.default_rng(1).standard_normal(8000)
    quiet, loud = melspectrogram(x), melspectrogram(10 * x)
    inside = (quiet > -4) & (loud < 4)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(loud[inside] - quiet[inside], 1.6, atol=1e-4)


def test_params_are_configurable_and_validated():
    p = dataclasses.replace(MelParams(), num_mels=40, hop_size=160)
    mel = melspectrogram(np.zeros(1600), p)
    assert mel.shape == (40, 11) and p.frames_per_second == 100.0
    with pytest.raises(ValueError):
        MelParams(fmax=9000.0)
    with pytest.raises(ValueError):
        melspectrogram(np.zeros((2, 100)))
    with pytest.raises(ValueError):
        melspectrogram(np.array([0.0, np.nan]))
