"""LPIPS (Zhang et al. 2018), the VGG variant of the `lpips` package v0.1, in JAX.

For images in [0, 1]: scaled to [-1, 1], then the package's scaling layer
(x - shift) / scale; the five VGG-16 stages relu1_2, relu2_2, relu3_3, relu4_3, relu5_3;
each stage's features normalised to unit length over channels (eps 1e-10); their squared
difference weighted per channel by the stage's linear head (a 1x1 convolution to one channel,
no bias), averaged over space; the five stage values summed. `load_lpips(vgg, heads)(a, b)`
gives one distance per image pair.

Weights, read from local files: the VGG-16 file the loss uses, converted with all 13
convolutions (`python -m pconv_jax.vgg convert --all vgg16-397923af.pth vgg16_all.safetensors`),
and the package's heads `lpips/weights/v0.1/vgg.pth`, converted with
`python -m pconv_jax.lpips convert vgg.pth lpips_vgg_heads.safetensors` (or read with torch).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pconv_jax.vgg import (
    DEEP_LAYERS,
    LAYERS,
    WeightFileError,
    converter_main,
    read_weights,
    save_needed,
)
from pconv_jax.vgg import check_weights as check_vgg

Array = jax.Array
SHIFT = (-0.030, -0.088, -0.188)  # the package's ScalingLayer, on [-1, 1] inputs
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 128, 256, 512, 512)  # relu1_2 .. relu5_3
# torchvision `features` indices of the 13 convolutions; a stage ends after 2, 2, 3, 3, 3
CONVS = tuple(i for i, *_ in LAYERS) + tuple(i for i, *_ in DEEP_LAYERS)
STAGE_SIZES = (2, 2, 3, 3, 3)
EPS = 1e-10


def head_shapes() -> dict[str, tuple[int, ...]]:
    """The keys of the package's vgg.pth and their shapes."""
    return {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(CHANNELS)}


def check_heads(heads: Mapping[str, np.ndarray], source: str = "heads") -> None:
    """Raises WeightFileError naming the first missing, misshapen or non-finite head."""
    for key, shape in head_shapes().items():
        if key not in heads:
            raise WeightFileError(f"{source}: missing key {key!r} (the lpips package's "
                                  "weights/v0.1/vgg.pth layout: lin0..lin4.model.1.weight)")
        actual = tuple(np.shape(heads[key]))
        if actual != shape:
            raise WeightFileError(f"{source}: {key!r} has shape {actual}, expected {shape}")
        if not np.isfinite(np.asarray(heads[key], np.float64)).all():
            raise WeightFileError(f"{source}: {key!r} holds non-finite values")


def _stages(params: dict, x: Array) -> list[Array]:
    """VGG-16's relu1_2 .. relu5_3 of x (N,H,W,3), already scaled."""
    outs, layer = [], 0
    for stage, size in enumerate(STAGE_SIZES):
        if stage:  # 2x2 max-pool, stride 2, between stages
            x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        for _ in range(size):
            kernel, bias = params["convs"][layer]
            x = lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = jax.nn.relu(x + bias)
            layer += 1
        outs.append(x)
    return outs


def distance(params: dict, a: Array, b: Array) -> Array:
    """LPIPS of image pairs a, b (N,H,W,3) in [0,1] -> (N,)."""
    shift, scale = jnp.asarray(SHIFT), jnp.asarray(SCALE)
    both = jnp.concatenate([a, b]).astype(jnp.float32) * 2 - 1
    feats = _stages(params, (both - shift) / scale)
    n, total = a.shape[0], 0.0
    for f, head in zip(feats, params["heads"], strict=True):
        f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)
        total = total + jnp.mean(jnp.sum((f[:n] - f[n:]) ** 2 * head, axis=-1), axis=(1, 2))
    return total


def distances_to(params: dict, target: Array, candidates: Array) -> Array:
    """LPIPS of each candidate batch against one target batch: target (N,H,W,3), candidates
    (K,N,H,W,3), all in [0,1] -> (K,N). The target's features are computed once."""
    k, n = candidates.shape[:2]
    shift, scale = jnp.asarray(SHIFT), jnp.asarray(SCALE)
    images = jnp.concatenate([target[None], candidates]).reshape(-1, *target.shape[1:])
    feats = _stages(params, (images.astype(jnp.float32) * 2 - 1 - shift) / scale)
    total = 0.0
    for f, head in zip(feats, params["heads"], strict=True):
        f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS)
        f = f.reshape(k + 1, n, *f.shape[1:])
        total = total + jnp.mean(jnp.sum((f[1:] - f[:1]) ** 2 * head, axis=-1), axis=(2, 3))
    return total


MIN_SIZE = 16  # relu5_3 is at 1/16 of the input: smaller images leave it empty


def _check_images(*batches: np.ndarray) -> None:
    """ValueError unless the batches are (...,H,W,3) of one dtype with H, W >= MIN_SIZE."""
    shape = np.shape(batches[0])
    if len(shape) < 3 or shape[-1] != 3 or min(shape[-3:-1]) < MIN_SIZE:
        raise ValueError(f"LPIPS needs (N,H,W,3) images of at least {MIN_SIZE}x{MIN_SIZE} "
                         f"pixels (its last VGG stage is at 1/16 size), got {shape}")
    dtypes = {np.asarray(b).dtype == np.uint8 for b in batches}
    if len(dtypes) > 1:
        raise ValueError("LPIPS inputs must all be uint8 or all be floats in [0, 1], not a mix")


class LPIPS:
    """`lpips(a, b) -> (N,)` for image pairs (N,H,W,3) in [0, 1] (or uint8)."""

    def __init__(self, vgg: Mapping[str, np.ndarray], heads: Mapping[str, np.ndarray],
                 batch_size: int = 8):
        convs = []
        for index in CONVS:
            oihw = np.asarray(vgg[f"features.{index}.weight"], np.float32)
            convs.append((jnp.asarray(oihw.transpose(2, 3, 1, 0)),
                          jnp.asarray(vgg[f"features.{index}.bias"], jnp.float32)))
        self.params = {"convs": convs, "heads": [
            jnp.asarray(np.asarray(heads[k], np.float32).reshape(-1)) for k in head_shapes()]}
        self.batch_size = batch_size
        self._distance = jax.jit(distance)
        self._distances_to = jax.jit(distances_to)

    def against(self, target: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        """(K,N) distances of K candidate batches (N,H,W,3) to one target batch, uint8 or
        [0,1]; the target's features are computed once (evaluation: several methods). At
        most max(batch_size, K+1) images go through VGG-16 at once, in one padded shape."""
        _check_images(target, *candidates)
        shapes = {np.shape(c) for c in candidates} - {np.shape(target)}
        if shapes:
            raise ValueError(f"LPIPS candidates must have the target's shape "
                             f"{np.shape(target)}, got {sorted(shapes)}")
        scale = 255.0 if np.asarray(target).dtype == np.uint8 else 1.0
        target = np.asarray(target, np.float32) / scale
        stack = np.stack([np.asarray(c, np.float32) for c in candidates]) / scale  # (K,N,...)
        k, n = stack.shape[:2]
        per_call = max(1, self.batch_size // (k + 1))  # targets per call
        out = []
        for start in range(0, n, per_call):
            t, c = target[start:start + per_call], stack[:, start:start + per_call]
            pad = per_call - len(t)
            t = np.concatenate([t, np.zeros((pad, *t.shape[1:]), t.dtype)])
            c = np.concatenate([c, np.zeros((k, pad, *c.shape[2:]), c.dtype)], axis=1)
            d = self._distances_to(self.params, jnp.asarray(t), jnp.asarray(c))
            out.append(np.asarray(d)[:, :per_call - pad])
        return np.concatenate(out, axis=1) if out else np.zeros((k, 0), np.float32)

    def __call__(self, a: np.ndarray | Array, b: np.ndarray | Array) -> np.ndarray:
        """(N,) distances, in jitted batches (the last one padded: one shape compiles)."""
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.ndim != 4 or a.shape[3] != 3:
            raise ValueError(f"LPIPS needs two (N,H,W,3) batches of one shape, got {a.shape} "
                             f"and {b.shape}")
        _check_images(a, b)
        if a.dtype == np.uint8:
            a, b = a.astype(np.float32) / 255, b.astype(np.float32) / 255
        out = []
        for start in range(0, len(a), self.batch_size):
            pa, pb = (x[start:start + self.batch_size] for x in (a, b))
            pad = self.batch_size - len(pa)
            pa, pb = (np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
                      for x in (pa, pb))
            out.append(np.asarray(self._distance(self.params, jnp.asarray(pa),
                                                 jnp.asarray(pb)))[:self.batch_size - pad])
        return np.concatenate(out) if out else np.zeros((0,), np.float32)


def load_lpips(vgg_path: str | os.PathLike, heads_path: str | os.PathLike,
               batch_size: int = 8) -> LPIPS:
    """LPIPS-VGG from a 13-convolution VGG-16 file and the package's v0.1 head file."""
    vgg = read_weights(vgg_path)
    check_vgg(vgg, os.fspath(vgg_path), all_convs=True)
    heads = read_weights(heads_path, what="LPIPS heads")
    check_heads(heads, os.fspath(heads_path))
    return LPIPS(vgg, heads, batch_size)


def random_heads(seed: int = 0) -> dict[str, np.ndarray]:
    """Non-negative random heads in the package's layout (tests), as its trained ones are."""
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(0, 0.2, shape).astype(np.float32) for k, shape in head_shapes().items()}


def convert(src: str, dst: str) -> int:
    """Writes the five heads of the package's vgg.pth (`src`) into the .safetensors `dst`."""
    return save_needed(src, dst, "LPIPS heads", list(head_shapes()), check_heads)


def main(argv: list[str] | None = None) -> int:
    """`python -m pconv_jax.lpips convert IN.pth OUT.safetensors`."""
    return converter_main(argv, "python -m pconv_jax.lpips",
                          __doc__.splitlines()[0],
                          "lpips/weights/v0.1/vgg.pth (or .npz/.safetensors)", convert)


if __name__ == "__main__":
    sys.exit(main())
