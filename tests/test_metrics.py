"""pconv_jax.metrics against scikit-image's reference implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pconv_jax import metrics


def _pairs(seed=0):
    """Natural photos (bundled) and distorted copies: noise, blur-like shift, a flat patch."""
    rng = np.random.default_rng(seed)
    target = np.stack([skdata.astronaut()[100:164, 150:214], skdata.coffee()[50:114, 200:264],
                       skdata.chelsea()[60:124, 120:184]]).astype(np.float64) / 255
    pred = target.copy()
    pred[0] = np.clip(pred[0] + rng.normal(0, 0.05, pred[0].shape), 0, 1)
    pred[1] = np.roll(pred[1], 1, axis=1)
    pred[2, 10:40, 20:50] = 0.5
    return pred, target


def test_psnr_matches_skimage():
    """PSNR per image equals skimage.metrics.peak_signal_noise_ratio (data_range 1)."""
    pred, target = _pairs()
    got = np.asarray(metrics.psnr(jnp.asarray(pred, jnp.float32),
                                  jnp.asarray(target, jnp.float32)))
    want = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(pred, target,
                                                                         strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ssim_matches_skimage():
    """SSIM per image equals skimage's Gaussian-window SSIM (sigma 1.5, population cov.)."""
    pred, target = _pairs(1)
    got = np.asarray(jax.jit(metrics.ssim)(jnp.asarray(pred, jnp.float32),
                                           jnp.asarray(target, jnp.float32)))
    want = [structural_similarity(t, p, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                  sigma=1.5, use_sample_covariance=False)
            for p, t in zip(pred, target, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.ptp(want) > 0.05  # the three distortions give clearly different scores


def test_l1_is_mean_absolute_error_in_percent():
    """l1 = 100 * mean|pred - target| per image."""
    pred, target = _pairs(2)
    got = np.asarray(metrics.l1(jnp.asarray(pred), jnp.asarray(target)))
    np.testing.assert_allclose(got, 100 * np.abs(pred - target).mean(axis=(1, 2, 3)), rtol=1e-5)


def test_identical_images():
    """Identical images: l1 0, PSNR inf, SSIM 1."""
    _, target = _pairs()
    t = jnp.asarray(target, jnp.float32)
    assert np.all(np.asarray(metrics.l1(t, t)) == 0)
    assert np.all(np.isinf(np.asarray(metrics.psnr(t, t))))
    np.testing.assert_allclose(np.asarray(metrics.ssim(t, t)), 1.0, atol=1e-6)


def test_metric_shape_errors():
    """Mismatched or too small inputs are refused."""
    with pytest.raises(ValueError, match="must be equal"):
        metrics.psnr(jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 15, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))
