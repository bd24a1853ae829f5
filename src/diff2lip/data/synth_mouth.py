"""Audio → mouth parameters for the synthetic corpus (DESIGN.md §7, issue 4).

Each video frame's mouth is a deterministic function of the speech *around that frame*, so that a model
can only draw the right mouth by listening. For frame ``k`` (time ``t = k / 25`` s) the model hears the
mel window of 16 mel frames starting at ``t − 40 ms`` (DESIGN.md §3), i.e. the audio ``[t − 40, t + 160]``
ms. We measure inside that window, on ``[t − 40, t + 40]`` ms: 13 short-time spectra (20 ms Hann
windows, 5 ms hop, centres ``t − 30 … t + 30`` ms) averaged with Hann weights. From their band powers:

- **openness** ← RMS amplitude of the speech band 300–3000 Hz (how loud the voiced sound is: the jaw
  opens on loud vowels, closes in silence and on plosive closures); fricatives (strong 4–8 kHz energy with
  little energy below 900 Hz: *s, sh, f*) give a small opening with the teeth visible.
- **width** ← spectral centroid of 200–4000 Hz: front vowels (*ee*, *eh*, high F2) spread the lips.
- **roundness** ← the opposite end of the same axis: back rounded vowels (*oo*, *oh*, low F1/F2) round them.

All normalisations use fixed constants (calibrated once on espeak-ng speech at its native level), never
per-clip statistics: neither the face identity nor the clip predicts the mouth, only the audio does.
Silence gives the rest pose ``(0, REST_WIDTH, 0)``: a closed mouth.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FPS",
    "REST_WIDTH",
    "SAMPLE_RATE",
    "band_levels",
    "mouth_params",
    "speech_band_rms",
]

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
_WIN = 320  # 20 ms analysis window
_HOP = 80  # 5 ms between the short-time spectra of one measurement
_HALF = 6  # spectra either side of the frame time: centres t ± 30 ms, support t ± 40 ms

# Bands in Hz: (name, low, high).
_BANDS = {
    "speech": (300.0, 3000.0),
    "low": (200.0, 900.0),
    "high": (4000.0, 8000.0),
    "shape": (200.0, 4000.0),
}

# Fixed normalisation constants (calibrated on espeak-ng speech, see the module docstring).
RMS_FLOOR = 0.0065  # speech-band RMS below this is silence (openness 0)
RMS_FULL = 0.18  # speech-band RMS of a fully open mouth
OPEN_GAMMA = 0.8  # mild compression of the RMS → openness curve
CENTROID_ROUND = 550.0  # Hz: centroid at/below which the lips are fully rounded
CENTROID_WIDE = 1150.0  # Hz: centroid at/above which the lips are fully spread
FRIC_DB = 6.0  # high-band over low-band level (dB) where a fricative starts
FRIC_RANGE_DB = 12.0  # ... and the dB range over which it becomes a full fricative
FRIC_MIN_RMS = 0.005  # high-band RMS below this is no fricative
FRIC_OPEN = 0.18  # openness of a full fricative (teeth visible through a narrow gap)
REST_WIDTH = 0.45  # lip width of the closed, relaxed mouth


def _frame_spectra(wav: np.ndarray, num_frames: int) -> np.ndarray:
    """Per-bin mean-square contributions around each video frame: ``(num_frames, 2*_HALF+1, _WIN//2+1)``.

    Scaled (one-sided, Hann-window corrected) so that summing a band's bins gives the mean square of
    the signal in that band: a sine of amplitude ``A`` sums to ``A² / 2``.
    """
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    pad = _HALF * _HOP + _WIN // 2
    x = np.pad(wav, (pad, pad + max(0, num_frames * SAMPLES_PER_FRAME - wav.size)))
    centres = (
        np.arange(num_frames)[:, None] * SAMPLES_PER_FRAME + np.arange(-_HALF, _HALF + 1)[None] * _HOP + pad
    )  # (N, 13) sample index of each spectrum's centre in the padded signal
    idx = centres[..., None] - _WIN // 2 + np.arange(_WIN)  # (N, 13, W)
    window = np.hanning(_WIN + 2)[1:-1]
    spec = np.fft.rfft(x[idx] * window, axis=-1)  # (N, 13, W/2+1)
    return (spec.real**2 + spec.imag**2) * (2.0 / (_WIN * np.sum(window**2)))


def band_levels(wav: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
    """Per-frame band measurements of 16 kHz mono ``wav`` on ``[t − 40, t + 40]`` ms.

    Returns a dict of ``(num_frames,)`` float64 arrays: ``<band>_rms`` (RMS amplitude in each band of
    ``_BANDS``) and ``centroid`` (Hz, spectral centroid of the 200–4000 Hz band).
    """
    power = _frame_spectra(wav, num_frames)  # (N, 13, F)
    w = np.hanning(2 * _HALF + 3)[1:-1]
    w = w / w.sum()
    p = np.einsum("nsf,s->nf", power, w)  # (N, F) Hann-weighted mean power
    freqs = np.fft.rfftfreq(_WIN, 1.0 / SAMPLE_RATE)
    out: dict[str, np.ndarray] = {}
    for name, (lo, hi) in _BANDS.items():
        sel = (freqs >= lo) & (freqs < hi)
        out[f"{name}_rms"] = np.sqrt(p[:, sel].sum(axis=1))
    lo, hi = _BANDS["shape"]
    sel = (freqs >= lo) & (freqs < hi)
    ps = p[:, sel]
    out["centroid"] = (ps * freqs[sel]).sum(axis=1) / np.maximum(ps.sum(axis=1), 1e-20)
    return out


def speech_band_rms(wav: np.ndarray, num_frames: int) -> np.ndarray:
    """``(num_frames,)`` RMS amplitude of the 300–3000 Hz band around each frame (drives openness)."""
    return band_levels(wav, num_frames)["speech_rms"]


def mouth_params(wav: np.ndarray, num_frames: int) -> np.ndarray:
    """Ground-truth mouth parameters of each 25 fps frame from 16 kHz mono speech.

    Args:
        wav: ``(n,)`` float audio at 16 kHz, samples in [-1, 1]; frame ``k`` is at ``k / 25`` s.
        num_frames: number of video frames (audio past the end counts as silence).

    Returns:
        ``(num_frames, 3)`` float32 ``[openness, width, roundness]``, each in [0, 1].
    """
    b = band_levels(wav, num_frames)
    rms = b["speech_rms"]
    loud = np.clip((rms - RMS_FLOOR) / (RMS_FULL - RMS_FLOOR), 0.0, 1.0) ** OPEN_GAMMA
    # Voicing gate in [0, 1]: how much the spectral shape is a vowel's (no shape in silence).
    gate = np.clip((rms - RMS_FLOOR) / (3 * RMS_FLOOR), 0.0, 1.0)
    eps = 1e-10
    hi_over_lo = 20 * np.log10((b["high_rms"] + eps) / (b["low_rms"] + eps))
    fric = np.clip((hi_over_lo - FRIC_DB) / FRIC_RANGE_DB, 0.0, 1.0)
    fric = fric * np.clip((b["high_rms"] - FRIC_MIN_RMS) / FRIC_MIN_RMS, 0.0, 1.0)
    openness = np.maximum(loud, FRIC_OPEN * fric)
    spread = np.clip((b["centroid"] - CENTROID_ROUND) / (CENTROID_WIDE - CENTROID_ROUND), 0.0, 1.0)
    width = REST_WIDTH + gate * (spread - REST_WIDTH)
    width = np.maximum(width, REST_WIDTH + (0.75 - REST_WIDTH) * fric)  # fricatives: lips drawn back
    roundness = gate * np.clip(1.0 - 2.0 * spread, 0.0, 1.0) * (1.0 - fric)
    out = np.stack([openness, width, roundness], axis=1)  # (N, 3)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
