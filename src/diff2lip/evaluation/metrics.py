"""The image metrics of the paper's Table 2 as pure functions (DESIGN.md §5).

Region and scale (one convention for every image metric, so the numbers are comparable):

* **Region**: the ``S × S`` face crop of each frame (the crop the model generates, ``S`` = the model's
  ``image_size``, 128 for the paper), cut from the generated and the ground-truth frame with the *same*
  box. FID, SSIM, PSNR and LMD all see exactly these crops.
* **Scale**: ``uint8`` RGB in ``[0, 255]``; PSNR's peak is 255 and SSIM's ``data_range`` is 255.

PSNR and SSIM are per-frame values (``(N,)`` arrays); a report averages them over all frames of all videos.
Identical frames give PSNR ``inf`` (reported as ``inf``, never clipped to a large number) and SSIM 1.

FID is the Fréchet distance between Gaussians fitted to Inception-v3 pool features
(:mod:`diff2lip.evaluation.inception`), computed in float64 with :func:`scipy.linalg.sqrtm`.

LMD (mouth landmark distance, Chen et al. 2018 as used by Wav2Lip-era papers) is the mean Euclidean
distance between the 20 mouth landmarks (iBUG 68-point points 49–68, indices 48..67) of generated and
ground-truth frames, **in pixels of the ``S × S`` face crop** (landmarks detected on the crops), so it
does not depend on the source video's resolution. A per-frame ``scale`` can divide it further (e.g. the
inter-ocular distance) when a caller wants a scale-free number; the default is crop pixels.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MOUTH",
    "feature_statistics",
    "finite_mean",
    "frechet_distance",
    "gaussian_window",
    "mouth_landmark_distance",
    "psnr",
    "ssim",
]

MOUTH = slice(48, 68)
"""Indices of the mouth landmarks (points 49–68 of the 68-point iBUG scheme, outer and inner lip)."""


def _pair(generated: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate two image stacks ``(N, H, W, C)`` (or one image ``(H, W, C)``); returns them 4-D."""
    a, b = np.asarray(generated), np.asarray(target)
    if a.shape != b.shape:
        raise ValueError(f"generated {a.shape} and target {b.shape} must have the same shape")
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) or (H, W, C), got {a.shape}")
    return a, b, single


def psnr(generated: np.ndarray, target: np.ndarray, *, data_range: float = 255.0) -> np.ndarray:
    """Peak signal-to-noise ratio per frame, ``10·log10(range² / MSE)`` in dB (float64).

    Args:
        generated, target: ``(N, H, W, C)`` (or ``(H, W, C)``) images on the scale given by ``data_range``
            (uint8 face crops in [0, 255] by default; see the module docstring).

    Returns:
        ``(N,)`` float64 (a 0-d array for a single image); ``inf`` where the frames are identical.
    """
    a, b, single = _pair(generated, target)
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = (diff**2).reshape(len(a), -1).mean(axis=1)  # (N,)
    with np.errstate(divide="ignore"):
        out = np.where(mse == 0, np.inf, 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-300)))
    return out[0] if single else out


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian ``(size,)`` of SSIM (Wang et al. 2004: 11 taps, σ 1.5), float64."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim(
    generated: np.ndarray,
    target: np.ndarray,
    *,
    data_range: float = 255.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Structural similarity per frame (Wang et al. 2004) with the Gaussian window, float64.

    Local means, variances and covariance use an 11×11 Gaussian (σ 1.5) over the *valid* region only
    (no padding; a border of ``win_size // 2`` pixels is excluded), population (not sample) covariances,
    ``C1 = (k1·L)²``, ``C2 = (k2·L)²``; the SSIM map is averaged over the valid pixels and the channels.
    This equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)``.

    Returns:
        ``(N,)`` float64 (0-d for a single image); 1 where the frames are identical.
    """
    a, b, single = _pair(generated, target)
    n, h, w, c = a.shape
    if min(h, w) < win_size:
        raise ValueError(f"images must be at least {win_size} px on each side for SSIM, got {h}x{w}")
    x = torch.from_numpy(a.astype(np.float64)).permute(0, 3, 1, 2).reshape(n * c, 1, h, w)  # (N·C, 1, H, W)
    y = torch.from_numpy(b.astype(np.float64)).permute(0, 3, 1, 2).reshape(n * c, 1, h, w)  # (N·C, 1, H, W)
    g = torch.from_numpy(gaussian_window(win_size, sigma))

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g.view(1, 1, win_size, 1))  # valid along H
        return F.conv2d(t, g.view(1, 1, 1, win_size))  # valid along W

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    out = smap.reshape(n, c, -1).mean(dim=(1, 2)).numpy()  # (N,)
    return out[0] if single else out


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, rows are samples) of ``(N, D)`` features, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (Heusel et al. 2017; FID).

    ``d² = |mu1 − mu2|² + tr(sigma1 + sigma2 − 2·sqrtm(sigma1·sigma2))``, in float64 with
    :func:`scipy.linalg.sqrtm`. As pytorch-fid: if the product is singular (non-finite root), ``eps·I`` is
    added to both covariances; a root whose imaginary part is more than numerical noise is an error. The
    result is clamped at 0 (rounding can make identical statistics give ``-1e-12``).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products (fewer samples than dimensions) are expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3 * max(1.0, float(np.abs(covmean).max())):
            raise ValueError(f"Fréchet distance: the matrix square root has an imaginary part {imag:.3g}")
        covmean = covmean.real
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def mouth_landmark_distance(
    generated: np.ndarray, target: np.ndarray, scale: np.ndarray | float | None = None
) -> np.ndarray:
    """Per-frame LMD: mean Euclidean distance of the 20 mouth landmarks (indices 48..67).

    Args:
        generated, target: ``(N, 68, 2)`` (or ``(68, 2)``) ``(x, y)`` landmarks, in pixels of the face crop
            (see the module docstring); rows of NaN mark frames without landmarks.
        scale: optional per-frame ``(N,)`` (or scalar) divisor, e.g. the inter-ocular distance; ``None``
            keeps crop pixels.

    Returns:
        ``(N,)`` float64 (0-d for a single frame); NaN for frames whose landmarks are missing.
    """
    a, b = np.asarray(generated, np.float64), np.asarray(target, np.float64)
    if a.shape != b.shape or a.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must both be (N, 68, 2), got {a.shape} and {b.shape}")
    single = a.ndim == 2
    if single:
        a, b = a[None], b[None]
    d = np.linalg.norm(a[:, MOUTH] - b[:, MOUTH], axis=-1).mean(axis=1)  # (N,)
    if scale is not None:
        d = d / np.asarray(scale, np.float64)
    return d[0] if single else d


def finite_mean(values: np.ndarray) -> float:
    """Mean of the non-NaN values (``inf`` propagates: the mean PSNR of identical videos is ``inf``)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan
