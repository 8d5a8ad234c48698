"""Image metrics of the paper's evaluation: l1 error (%), PSNR and SSIM, in JAX.

All take batches of [0, 1] images (N,H,W,C) and return one value per image (N,); all are
jit-able. SSIM is the standard one (Wang et al. 2004): an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, population covariances, averaged over the channels and the positions
where the whole window fits (as scikit-image's `structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array


def _check(pred: Array, target: Array) -> None:
    """Raises ValueError unless pred and target are equal-shaped (N,H,W,C) batches."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be "
                         "equal (N,H,W,C) batches")


def l1(pred: Array, target: Array) -> Array:
    """Mean absolute error per image in percent of the [0, 1] range: (N,)."""
    _check(pred, target)
    return 100.0 * jnp.mean(jnp.abs(pred - target), axis=(1, 2, 3))


def psnr(pred: Array, target: Array, data_range: float = 1.0) -> Array:
    """Peak signal-to-noise ratio per image in dB: (N,); inf for identical images."""
    _check(pred, target)
    mse = jnp.mean((pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(data_range**2 / mse)


def gaussian_window(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    """Normalised 1-D Gaussian of 2*radius+1 taps."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_valid(x: Array, window: np.ndarray) -> Array:
    """Separable filtering of (N,H,W,C) per channel, 'VALID' positions only."""
    c = x.shape[3]
    k = len(window)
    rows = jnp.tile(jnp.asarray(window).reshape(k, 1, 1, 1), (1, 1, 1, c))  # (k,1,1,C)
    cols = jnp.tile(jnp.asarray(window).reshape(1, k, 1, 1), (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = lax.conv_general_dilated(x, rows, (1, 1), "VALID", dimension_numbers=dn,
                                 feature_group_count=c, precision=lax.Precision.HIGHEST)
    return lax.conv_general_dilated(x, cols, (1, 1), "VALID", dimension_numbers=dn,
                                    feature_group_count=c, precision=lax.Precision.HIGHEST)


def ssim(pred: Array, target: Array, data_range: float = 1.0, sigma: float = 1.5) -> Array:
    """Structural similarity per image: (N,). Images must be at least 11x11."""
    _check(pred, target)
    if min(pred.shape[1:3]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {pred.shape[1:3]}")
    window = gaussian_window(sigma, radius=int(3.5 * sigma + 0.5))
    x, y = pred.astype(jnp.float32), target.astype(jnp.float32)
    mx, my = _filter_valid(x, window), _filter_valid(y, window)
    vx = _filter_valid(x * x, window) - mx * mx
    vy = _filter_valid(y * y, window) - my * my
    cxy = _filter_valid(x * y, window) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))
