"""Tests for the pure metric functions (PSNR, SSIM, Fréchet distance, LMD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from diff2lip.evaluation.metrics import (
    MOUTH,
    feature_statistics,
    finite_mean,
    frechet_distance,
    gaussian_window,
    mouth_landmark_distance,
    psnr,
    ssim,
)


def _frames(seed: int, n: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_psnr_identical_is_inf_and_known_value():
    a = _frames(0)
    assert np.all(np.isinf(psnr(a, a)))
    assert finite_mean(psnr(a, a)) == math.inf
    b = a.astype(np.int16)
    b[..., 0] = np.where(b[..., 0] > 127, b[..., 0] - 3, b[..., 0] + 3)  # |diff| 3 on one channel of three
    # MSE = 9 / 3 = 3 → PSNR = 10 log10(255² / 3)
    np.testing.assert_allclose(psnr(a, b.astype(np.uint8)), 10 * np.log10(255**2 / 3.0), rtol=1e-12)
    assert psnr(a[0], b[0].astype(np.uint8)).shape == ()


def test_ssim_identical_is_one_and_matches_skimage():
    a, b = _frames(1, size=40), _frames(2, size=40)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-12)
    smooth = (0.7 * a + 0.3 * b).astype(np.uint8)  # correlated pair, SSIM well inside (0, 1)
    ours = ssim(a, smooth)
    for i in range(len(a)):
        ref = structural_similarity(
            a[i],
            smooth[i],
            data_range=255,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert abs(ours[i] - ref) < 1e-6
    assert 0.2 < ours.mean() < 0.99


def test_gaussian_window():
    g = gaussian_window(11, 1.5)
    assert g.shape == (11,) and abs(g.sum() - 1) < 1e-15 and g.argmax() == 5
    np.testing.assert_allclose(g[6] / g[5], math.exp(-1 / (2 * 1.5**2)))


def test_frechet_identical_is_zero_and_1d_closed_form():
    f = np.random.default_rng(3).standard_normal((50, 8))
    mu, sigma = feature_statistics(f)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # 1-D Gaussians: (m1 − m2)² + (s1 − s2)²
    d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert d == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_frechet_matches_independent_eigen_computation():
    rng = np.random.default_rng(4)
    mu1, mu2 = feature_statistics(rng.standard_normal((40, 6)))[0], rng.standard_normal(6)
    s1 = np.cov(rng.standard_normal((40, 6)), rowvar=False)
    s2 = np.cov(rng.standard_normal((40, 6)) * 2 + 1, rowvar=False)
    # tr sqrt(S1 S2) = tr sqrt(S1^½ S2 S1^½), the latter symmetric PSD → eigenvalues
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)


def test_feature_statistics_shapes_and_errors():
    mu, sigma = feature_statistics(np.ones((3, 5)))
    assert mu.shape == (5,) and sigma.shape == (5, 5) and mu.dtype == np.float64
    with pytest.raises(ValueError):
        feature_statistics(np.ones((1, 5)))


def test_lmd_identical_zero_and_known_shift():
    marks = np.random.default_rng(5).uniform(0, 128, (4, 68, 2))
    np.testing.assert_array_equal(mouth_landmark_distance(marks, marks), 0.0)
    moved = marks.copy()
    moved[:, MOUTH] += np.array([3.0, 4.0])  # every mouth point moves 5 px
    moved[:, :48] += 100.0  # non-mouth points are ignored
    np.testing.assert_allclose(mouth_landmark_distance(moved, marks), 5.0)
    np.testing.assert_allclose(mouth_landmark_distance(moved, marks, scale=np.full(4, 2.0)), 2.5)
    moved[1] = np.nan
    out = mouth_landmark_distance(moved, marks)
    assert np.isnan(out[1]) and finite_mean(out) == pytest.approx(5.0)
