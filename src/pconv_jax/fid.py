"""FID as pytorch-fid computes it, in JAX, with the Inception weights read from a local file.

The network is pytorch-fid's FID-Inception v3 (the TensorFlow FID graph ported to PyTorch):
torchvision's Inception v3 layout, except that the average pools of the Mixed_5*, Mixed_6*
and Mixed_7b blocks leave the padding out of their count and Mixed_7c pools by max. Images
(N,H,W,3) in [0, 1] are resized to 299x299 (bilinear, half-pixel centres, no antialiasing:
torch's `interpolate(..., align_corners=False)`), scaled to [-1, 1], and the 2048 pool3
features are the global average of Mixed_7c. The Frechet distance is pytorch-fid's formula;
the trace of the matrix square root comes from two symmetric eigendecompositions rather than
its `scipy.linalg.sqrtm` (the same value within 1e-7 relative, ~8x faster at 2048 dims).

Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (read with torch, weights_only)
or the `.safetensors` that `python -m pconv_jax.fid convert IN.pth OUT.safetensors` writes.
Nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pconv_jax.vgg import WeightFileError, converter_main, read_weights, save_needed

Array = jax.Array
SIZE = 299
BN_EPS = 1e-3  # pytorch-fid's BasicConv2d: BatchNorm2d(eps=0.001)


def _a(cin: int, pool: int) -> dict:
    """InceptionA's convolutions: {name: (cin, cout, kh, kw, stride, (pad_h, pad_w))}."""
    return {"branch1x1": (cin, 64, 1, 1, 1, (0, 0)),
            "branch5x5_1": (cin, 48, 1, 1, 1, (0, 0)), "branch5x5_2": (48, 64, 5, 5, 1, (2, 2)),
            "branch3x3dbl_1": (cin, 64, 1, 1, 1, (0, 0)),
            "branch3x3dbl_2": (64, 96, 3, 3, 1, (1, 1)),
            "branch3x3dbl_3": (96, 96, 3, 3, 1, (1, 1)),
            "branch_pool": (cin, pool, 1, 1, 1, (0, 0))}


def _b(cin: int) -> dict:
    """InceptionB (grid reduction 35 -> 17)."""
    return {"branch3x3": (cin, 384, 3, 3, 2, (0, 0)),
            "branch3x3dbl_1": (cin, 64, 1, 1, 1, (0, 0)),
            "branch3x3dbl_2": (64, 96, 3, 3, 1, (1, 1)),
            "branch3x3dbl_3": (96, 96, 3, 3, 2, (0, 0))}


def _c(c7: int) -> dict:
    """InceptionC (17x17, factorised 7x7)."""
    return {"branch1x1": (768, 192, 1, 1, 1, (0, 0)),
            "branch7x7_1": (768, c7, 1, 1, 1, (0, 0)),
            "branch7x7_2": (c7, c7, 1, 7, 1, (0, 3)),
            "branch7x7_3": (c7, 192, 7, 1, 1, (3, 0)),
            "branch7x7dbl_1": (768, c7, 1, 1, 1, (0, 0)),
            "branch7x7dbl_2": (c7, c7, 7, 1, 1, (3, 0)),
            "branch7x7dbl_3": (c7, c7, 1, 7, 1, (0, 3)),
            "branch7x7dbl_4": (c7, c7, 7, 1, 1, (3, 0)),
            "branch7x7dbl_5": (c7, 192, 1, 7, 1, (0, 3)),
            "branch_pool": (768, 192, 1, 1, 1, (0, 0))}


def _d() -> dict:
    """InceptionD (grid reduction 17 -> 8)."""
    return {"branch3x3_1": (768, 192, 1, 1, 1, (0, 0)),
            "branch3x3_2": (192, 320, 3, 3, 2, (0, 0)),
            "branch7x7x3_1": (768, 192, 1, 1, 1, (0, 0)),
            "branch7x7x3_2": (192, 192, 1, 7, 1, (0, 3)),
            "branch7x7x3_3": (192, 192, 7, 1, 1, (3, 0)),
            "branch7x7x3_4": (192, 192, 3, 3, 2, (0, 0))}


def _e(cin: int) -> dict:
    """InceptionE (8x8, expanded filter banks)."""
    return {"branch1x1": (cin, 320, 1, 1, 1, (0, 0)),
            "branch3x3_1": (cin, 384, 1, 1, 1, (0, 0)),
            "branch3x3_2a": (384, 384, 1, 3, 1, (0, 1)),
            "branch3x3_2b": (384, 384, 3, 1, 1, (1, 0)),
            "branch3x3dbl_1": (cin, 448, 1, 1, 1, (0, 0)),
            "branch3x3dbl_2": (448, 384, 3, 3, 1, (1, 1)),
            "branch3x3dbl_3a": (384, 384, 1, 3, 1, (0, 1)),
            "branch3x3dbl_3b": (384, 384, 3, 1, 1, (1, 0)),
            "branch_pool": (cin, 192, 1, 1, 1, (0, 0))}


STEM = {"Conv2d_1a_3x3": (3, 32, 3, 3, 2, (0, 0)), "Conv2d_2a_3x3": (32, 32, 3, 3, 1, (0, 0)),
        "Conv2d_2b_3x3": (32, 64, 3, 3, 1, (1, 1)), "Conv2d_3b_1x1": (64, 80, 1, 1, 1, (0, 0)),
        "Conv2d_4a_3x3": (80, 192, 3, 3, 1, (0, 0))}
# (block, kind, its convolutions); kinds A/C/E1 average-pool without the padding, E2 max-pools
BLOCKS = (("Mixed_5b", "A", _a(192, 32)), ("Mixed_5c", "A", _a(256, 64)),
          ("Mixed_5d", "A", _a(288, 64)), ("Mixed_6a", "B", _b(288)),
          ("Mixed_6b", "C", _c(128)), ("Mixed_6c", "C", _c(160)), ("Mixed_6d", "C", _c(160)),
          ("Mixed_6e", "C", _c(192)), ("Mixed_7a", "D", _d()), ("Mixed_7b", "E1", _e(1280)),
          ("Mixed_7c", "E2", _e(2048)))


def conv_specs() -> dict[str, tuple]:
    """Every BasicConv2d of the network: {prefix: (cin, cout, kh, kw, stride, pad)}."""
    specs = dict(STEM)
    for block, _, convs in BLOCKS:
        specs.update({f"{block}.{name}": spec for name, spec in convs.items()})
    return specs


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """The keys of pytorch-fid's state dict this module reads and their shapes (OIHW)."""
    shapes = {}
    for prefix, (cin, cout, kh, kw, _, _) in conv_specs().items():
        shapes[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{stat}"] = (cout,)
    return shapes


def check_weights(weights: Mapping[str, np.ndarray], source: str = "weights") -> None:
    """Raises WeightFileError naming the first missing, misshapen or non-finite tensor."""
    for key, shape in expected_shapes().items():
        if key not in weights:
            raise WeightFileError(f"{source}: missing key {key!r} (pytorch-fid's FID-Inception "
                                  "layout expected, e.g. 'Mixed_5b.branch1x1.conv.weight')")
        actual = tuple(np.shape(weights[key]))
        if actual != shape:
            raise WeightFileError(f"{source}: {key!r} has shape {actual}, expected {shape}")
        if not np.isfinite(np.asarray(weights[key], np.float64)).all():
            raise WeightFileError(f"{source}: {key!r} holds non-finite values")


def _folded(weights: Mapping[str, np.ndarray]) -> dict[str, tuple[Array, Array]]:
    """{prefix: (kernel HWIO, bias)}: each convolution with its inference BatchNorm folded in."""
    params = {}
    for prefix in conv_specs():
        w = np.asarray(weights[f"{prefix}.conv.weight"], np.float64)
        bn = {s: np.asarray(weights[f"{prefix}.bn.{s}"], np.float64)
              for s in ("weight", "bias", "running_mean", "running_var")}
        scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
        kernel = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0)
        params[prefix] = (jnp.asarray(kernel, jnp.float32),
                          jnp.asarray(bn["bias"] - bn["running_mean"] * scale, jnp.float32))
    return params


def _conv(params: dict, prefix: str, x: Array) -> Array:
    """BasicConv2d: convolution, (folded) BatchNorm, ReLU. x: (N,H,W,C)."""
    _, _, _, _, stride, (ph, pw) = conv_specs()[prefix]
    kernel, bias = params[prefix]
    y = lax.conv_general_dilated(x, kernel, (stride, stride), ((ph, ph), (pw, pw)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + bias)


def _max_pool(x: Array, stride: int, pad: int = 0) -> Array:
    """3x3 max pool (padding never wins: -inf)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                             ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_valid_count(x: Array) -> Array:
    """3x3 average pool, stride 1, padding 1, dividing by the number of real pixels
    (torch's count_include_pad=False, as in pytorch-fid's blocks)."""
    window, pads = (1, 3, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, window, (1, 1, 1, 1), pads)
    count = lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype), 0.0, lax.add, (3, 3), (1, 1),
                              ((1, 1), (1, 1)))
    return total / count[None, :, :, None]


def _block(params: dict, block: str, kind: str, x: Array) -> Array:
    """One Mixed_* block: its branches concatenated along channels, torchvision's order."""
    def c(name: str, inp: Array) -> Array:
        return _conv(params, f"{block}.{name}", inp)

    if kind == "A":
        return jnp.concatenate([
            c("branch1x1", x), c("branch5x5_2", c("branch5x5_1", x)),
            c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
            c("branch_pool", _avg_pool_valid_count(x))], axis=-1)
    if kind == "B":
        return jnp.concatenate([
            c("branch3x3", x),
            c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
            _max_pool(x, 2)], axis=-1)
    if kind == "C":
        b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x)))
        d7 = c("branch7x7dbl_1", x)
        for i in range(2, 6):
            d7 = c(f"branch7x7dbl_{i}", d7)
        return jnp.concatenate([c("branch1x1", x), b7, d7,
                                c("branch_pool", _avg_pool_valid_count(x))], axis=-1)
    if kind == "D":
        b7 = c("branch7x7x3_1", x)
        for i in range(2, 5):
            b7 = c(f"branch7x7x3_{i}", b7)
        return jnp.concatenate([c("branch3x3_2", c("branch3x3_1", x)), b7, _max_pool(x, 2)],
                               axis=-1)
    b3 = c("branch3x3_1", x)
    d3 = c("branch3x3dbl_2", c("branch3x3dbl_1", x))
    pooled = _avg_pool_valid_count(x) if kind == "E1" else _max_pool(x, 1, pad=1)
    return jnp.concatenate([
        c("branch1x1", x), c("branch3x3_2a", b3), c("branch3x3_2b", b3),
        c("branch3x3dbl_3a", d3), c("branch3x3dbl_3b", d3), c("branch_pool", pooled)], axis=-1)


def resize_bilinear(images: Array, size: int) -> Array:
    """(N,H,W,C) -> (N,size,size,C) as torch's bilinear interpolate(align_corners=False,
    antialias=False): half-pixel centres, two taps per axis, also when shrinking."""
    n, _, _, ch = images.shape
    return jax.image.resize(images, (n, size, size, ch), "bilinear", antialias=False)


def inception_pool3(params: dict, images: Array) -> Array:
    """images (N,H,W,3) in [0,1] -> pool3 features (N, 2048), as pytorch-fid's block 3."""
    x = resize_bilinear(images.astype(jnp.float32), SIZE) * 2 - 1
    for prefix in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = _conv(params, prefix, x)
    x = _max_pool(x, 2)
    x = _max_pool(_conv(params, "Conv2d_4a_3x3", _conv(params, "Conv2d_3b_1x1", x)), 2)
    for block, kind, _ in BLOCKS:
        x = _block(params, block, kind, x)
    return x.mean(axis=(1, 2))


class InceptionFID:
    """pytorch-fid's Inception v3: `features(images) -> (N, 2048)` (also by calling it)."""

    def __init__(self, weights: Mapping[str, np.ndarray], batch_size: int = 32):
        self.params = _folded(weights)
        self.batch_size = batch_size
        self._pool3 = jax.jit(inception_pool3)

    def features(self, images: np.ndarray | Array) -> np.ndarray:
        """images (N,H,W,3) in [0,1] (float) or uint8 -> pool3 features (N, 2048) float32,
        computed in jitted batches (the last one padded, so one shape compiles)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"images must be (N,H,W,3), got {images.shape}")
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            padded = np.concatenate([batch, np.zeros((self.batch_size - len(batch),
                                                      *batch.shape[1:]), batch.dtype)])
            out.append(np.asarray(self._pool3(self.params, jnp.asarray(padded)))[:len(batch)])
        return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)

    __call__ = features


def load_inception(path: str | os.PathLike, batch_size: int = 32) -> InceptionFID:
    """The FID Inception from pytorch-fid's .pth (needs torch) or a converted .safetensors."""
    weights = read_weights(path, what="FID Inception")
    check_weights(weights, os.fspath(path))
    return InceptionFID(weights, batch_size)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D,D)) of features (N,D), in float64, as pytorch-fid (np.cov)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID needs at least 2 feature vectors (N,D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), pytorch-fid's formula."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or \
            sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: mu {mu1.shape}/{mu2.shape}, sigma "
                         f"{sigma1.shape}/{sigma2.shape}")
    return _frechet(mu1, sigma1, _sqrt_psd(sigma1), mu2, sigma2)


def _frechet(mu1: np.ndarray, sigma1: np.ndarray, root1: np.ndarray, mu2: np.ndarray,
             sigma2: np.ndarray) -> float:
    """frechet_distance given root1 = sigma1^(1/2) (see trace_sqrt_product)."""
    diff = mu1 - mu2
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)  # symmetrised against rounding
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr (sigma1 sigma2)^(1/2) of two symmetric positive semi-definite (D,D) matrices.

    sigma1 sigma2 has the eigenvalues of the symmetric S sigma2 S with S = sigma1^(1/2), all
    >= 0, so the trace of its square root is the sum of their square roots: two symmetric
    eigendecompositions instead of pytorch-fid's general `scipy.linalg.sqrtm` (at D = 2048 on
    2 cores ~1.7 s instead of ~13 s; equal within 1e-7 relative, tests/test_fid_lpips.py).
    Singular covariances (fewer samples than dimensions) need no regularisation here.
    """
    root = _sqrt_psd(sigma1)
    inner = root @ sigma2 @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)  # symmetrised against rounding
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of pool3 features (N,2048) and (M,2048)."""
    return fids_against(features_a, [features_b])[0]


def fids_against(reference: np.ndarray, others: list[np.ndarray]) -> list[float]:
    """fid(reference, x) for each x of `others` (the reference's square root computed once).

    With fewer features than dimensions (an evaluation of under 2,048 pairs) the covariances
    have low rank and Tr (S1 S2)^(1/2) is exactly the sum of the singular values of
    A B^T / sqrt((N-1)(M-1)), A and B the centred features (N,D) and (M,D): the eigenvalues
    of S1 S2 = A^T A B^T B / c are those of (A B^T)(A B^T)^T / c. That is an (N,M) matrix
    instead of two (D,D) eigendecompositions: milliseconds instead of ~2 s at D = 2048.
    """
    mu1, sigma1 = statistics(reference)
    a = np.asarray(reference, np.float64) - mu1
    root1 = None
    out = []
    for features in others:
        mu2, sigma2 = statistics(features)
        if max(len(a), len(features)) < a.shape[1]:  # both covariances of low rank
            b = np.asarray(features, np.float64) - mu2
            singular = np.linalg.svd(a @ b.T, compute_uv=False)
            trace_sqrt = singular.sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
            diff = mu1 - mu2
            out.append(float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                             - 2 * trace_sqrt))
            continue
        root1 = _sqrt_psd(sigma1) if root1 is None else root1
        out.append(_frechet(mu1, sigma1, root1, mu2, sigma2))
    return out


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in pytorch-fid's layout (tests): He-normal kernels, BatchNorm
    statistics near identity, so activations keep a sane scale through the 94 layers."""
    rng = np.random.default_rng(seed)
    weights = {}
    for prefix, (cin, cout, kh, kw, _, _) in conv_specs().items():
        fan_in = cin * kh * kw
        weights[f"{prefix}.conv.weight"] = (rng.normal(size=(cout, cin, kh, kw)) *
                                            np.sqrt(2 / fan_in)).astype(np.float32)
        weights[f"{prefix}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        weights[f"{prefix}.bn.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
        weights[f"{prefix}.bn.running_mean"] = rng.normal(0, 0.1, cout).astype(np.float32)
        weights[f"{prefix}.bn.running_var"] = rng.uniform(0.5, 2.0, cout).astype(np.float32)
    return weights


def convert(src: str, dst: str) -> int:
    """Writes the tensors the FID Inception needs from `src` into the .safetensors `dst`."""
    return save_needed(src, dst, "FID Inception", list(expected_shapes()), check_weights)


def main(argv: list[str] | None = None) -> int:
    """`python -m pconv_jax.fid convert IN.pth OUT.safetensors`."""
    return converter_main(argv, "python -m pconv_jax.fid",
                          __doc__.splitlines()[0],
                          "pt_inception-2015-12-05-6726825d.pth (or .npz/.safetensors)", convert)


if __name__ == "__main__":
    sys.exit(main())
