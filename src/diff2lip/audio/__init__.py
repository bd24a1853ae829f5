"""Audio: decoding (:mod:`.io`), Wav2Lip-exact mel features (:mod:`.mel`), frame ↔ mel windows (:mod:`.windows`).

See DESIGN.md §3: 16 kHz mono, 80-band normalised log-mel at 80 frames per second, and per-video-frame
windows of 16 mel frames.
"""

from diff2lip.audio.io import audio_duration, load_audio, read_audio
from diff2lip.audio.mel import MelParams, mel_filterbank, melspectrogram
from diff2lip.audio.windows import (
    complete_windows,
    frame_times,
    mel_windows,
    sync_windows,
    window_starts,
)

__all__ = [
    "MelParams",
    "audio_duration",
    "complete_windows",
    "frame_times",
    "load_audio",
    "mel_filterbank",
    "mel_windows",
    "melspectrogram",
    "read_audio",
    "sync_windows",
    "window_starts",
]
