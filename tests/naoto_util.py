"""Random naoto0804 networks and inputs for tests/test_convert.py; NumPy only (the torch-only
interpreter imports it too)."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def naoto_state(layer_size: int = 4, base_width: int = 4, seed: int = 0) -> dict:
    """Random weights in naoto0804's key layout (OIHW kernels) at widths base*(1, 2, 4, 8, 8,
    ...), written from that network's facts: kernels 7, 5, 5, 3, ... in the encoder, 3x3 in
    the decoder, BatchNorm on all but enc_1 and dec_1, a bias on dec_1 only. Kernels are scaled
    by sqrt(k*k*C_in) so that features stay of order 1 under its division by sum(M); BatchNorm
    affine parameters and running statistics are random too."""
    rng = np.random.default_rng(seed)
    widths = [base_width * min(2**i, 8) for i in range(layer_size)]
    kernels = [7, 5, 5] + [3] * (layer_size - 3)
    state: dict = {}

    def layer(name, cin, cout, k, bn, bias, gain=1.0):
        fan_in = k * k * cin
        weight = rng.normal(size=(cout, cin, k, k)) * np.sqrt(fan_in) * gain
        state[f"{name}.conv.input_conv.weight"] = weight.astype(np.float32)
        if bias:
            state[f"{name}.conv.input_conv.bias"] = rng.normal(0, 0.3, cout).astype(np.float32)
        state[f"{name}.conv.mask_conv.weight"] = np.ones((cout, cin, k, k), np.float32)
        if bn:
            state[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
            state[f"{name}.bn.bias"] = rng.normal(0, 0.3, cout).astype(np.float32)
            state[f"{name}.bn.running_mean"] = rng.normal(0, 0.5, cout).astype(np.float32)
            state[f"{name}.bn.running_var"] = rng.uniform(0.5, 2.0, cout).astype(np.float32)
            state[f"{name}.bn.num_batches_tracked"] = np.array(1000, np.int64)

    ins = [3, *widths[:-1]]
    for i in range(layer_size):
        layer(f"enc_{i + 1}", ins[i], widths[i], kernels[i], bn=i > 0, bias=False)
    for i in range(layer_size, 1, -1):  # dec_i: upsampled level i + skip of level i-1
        layer(f"dec_{i}", widths[i - 1] + widths[i - 2], widths[i - 2], 3, bn=True, bias=False)
    layer("dec_1", widths[0] + 3, 3, 3, bn=False, bias=True, gain=0.3)
    return state


def naoto_inputs(height: int, width: int, batch: int = 2, seed: int = 0):
    """(image (N,H,W,3) float32 in [0,1], valid (N,H,W) float32, 1 = valid): smooth random
    images; masks with a large hole (whole windows of hole at every level) and scattered
    small ones."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    images, valids = [], []
    for _ in range(batch):
        phase = rng.uniform(0, 2 * np.pi, 3)
        base = 0.5 + 0.3 * np.sin(6 * ys[..., None] + 4 * xs[..., None] + phase)
        images.append(np.clip(base + rng.normal(0, 0.05, (height, width, 3)), 0, 1))
        valid = (rng.uniform(size=(height, width)) > 0.1).astype(np.float32)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        valid[top:top + height // 2, left:left + width // 2] = 0
        valids.append(valid)
    return np.stack(images).astype(np.float32), np.stack(valids)
