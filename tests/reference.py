"""Independent NumPy references written from the paper's formulas (DESIGN.md §1), for tests.

Nothing here imports pconv_jax: these are the yardsticks the package is measured against.
"""

from __future__ import annotations

import math

import numpy as np


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow/XLA 'SAME' padding (lo, hi) for one axis: out = ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, x_shape, kernel_hw, strides, dilation):
    """Padding spec -> ((top, bottom), (left, right)) as plain ints."""
    if padding == "VALID":
        return (0, 0), (0, 0)
    if padding == "SAME":
        return tuple(
            same_padding(x_shape[1 + a], kernel_hw[a], strides[a], dilation[a]) for a in (0, 1)
        )
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    if all(isinstance(p, int) for p in padding):
        return (padding[0], padding[0]), (padding[1], padding[1])
    return tuple(tuple(p) for p in padding)


def partial_conv_loop(x, mask, kernel, bias=None, strides=(1, 1), padding="SAME",
                      dilation=(1, 1)):
    """The paper's partial convolution, one output window at a time.

    x: (N,H,W,C); mask: (N,H,W,1), (N,H,W,C) or None (ones inside the image, holes in the
    padding); kernel (kh,kw,C,O). For a one-channel mask sum(1) = kh*kw and sum(M) runs over the
    window's pixels; for a C-channel mask both run over pixels and channels.
    Returns y (N,H',W',O) and m' (N,H',W',1) as float64.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    if mask is None:
        mask = np.ones((n, h, w, 1))
    mask = np.asarray(mask, np.float64)
    if mask.shape[0] == 1:
        mask = np.broadcast_to(mask, (n, *mask.shape[1:]))
    single = mask.shape[3] == 1
    (pt, pb), (pl, pr) = resolve_padding(padding, x.shape, (kh, kw), strides, dilation)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    mp = np.pad(mask, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    sh, sw = strides
    dh, dw = dilation
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, ho, wo, o))
    new_mask = np.zeros((n, ho, wo, 1))
    sum_one = kh * kw if single else kh * kw * c
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
                cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
                xw = xp[b, rows, cols, :]  # (kh, kw, C)
                mw = mp[b, rows, cols, :]  # (kh, kw, 1 or C)
                sum_m = mw.sum()
                if sum_m > 0:
                    val = np.einsum("hwc,hwco->o", xw * mw, kernel) * sum_one / sum_m
                    if bias is not None:
                        val = val + np.asarray(bias, np.float64)
                    y[b, i, j] = val
                    new_mask[b, i, j] = 1.0
    return y, new_mask


def plain_conv_valid(x, kernel, bias=None):
    """Plain stride-1 'VALID' cross-correlation (N,H,W,C) * (kh,kw,C,O) in float64."""
    x = np.asarray(x, np.float64)
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    y = np.einsum("nhwcij,ijco->nhwo", windows, np.asarray(kernel, np.float64))
    return y if bias is None else y + np.asarray(bias, np.float64)


def upsample_nearest(x):
    """Nearest x2 upsampling of (N,H,W,C)."""
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


def batchnorm_eval(y, mean, var, scale, bias, eps):
    """BatchNorm with running statistics."""
    return (y - mean) / np.sqrt(var + eps) * scale + bias


def pconv_unet(image, mask, layers, eps_bn=1e-5, slope=0.2):
    """The paper's UNet in eval mode from the layer list `layers` (encoder then decoder).

    Each layer is a dict with kernel (HWIO), stride, bias or None, bn (mean, var, scale, bias)
    or None. Decoder concatenations use a per-channel mask: [upsampled mask] * C_up followed by
    [skip mask] * C_skip, the paper's semantics written out in full.
    """
    depth = len(layers) // 2
    x, m = np.asarray(image, np.float64), np.asarray(mask, np.float64)
    skips = [(x, m)]
    for layer in layers[:depth]:
        k = layer["kernel"].shape[0]
        pad = (k - 1) // 2
        x, m = partial_conv_loop(x, m, layer["kernel"], layer["bias"], (2, 2), pad)
        if layer["bn"] is not None:
            x = batchnorm_eval(x, *layer["bn"], eps_bn)
        x = np.maximum(x, 0)
        skips.append((x, m))
    skips.pop()
    for j, layer in enumerate(layers[depth:]):
        sx, sm = skips.pop()
        ux, um = upsample_nearest(x), upsample_nearest(m)
        feats = np.concatenate([ux, sx], axis=3)
        per_channel = np.concatenate(
            [np.repeat(um, ux.shape[3], axis=3), np.repeat(sm, sx.shape[3], axis=3)], axis=3
        )
        x, m = partial_conv_loop(feats, per_channel, layer["kernel"], layer["bias"], (1, 1), 1)
        if layer["bn"] is not None:
            x = batchnorm_eval(x, *layer["bn"], eps_bn)
        if j < depth - 1:
            x = np.where(x > 0, x, slope * x)
    return x, m


# --- VGG-16 features and the loss (DESIGN.md §1) -------------------------------------------

def vgg16_pools(images, weights):
    """pool1..3 of VGG-16 from torchvision-layout weights (OIHW), images (N,H,W,3) in [-1, 1]."""
    x = (np.asarray(images, np.float64) + 1) / 2
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    pools = []
    for index, pool in ((0, False), (2, True), (5, False), (7, True), (10, False), (12, False),
                        (14, True)):
        w = np.asarray(weights[f"features.{index}.weight"], np.float64)  # (O, I, 3, 3)
        b = np.asarray(weights[f"features.{index}.bias"], np.float64)
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
        x = np.maximum(np.einsum("nhwcij,ocij->nhwo", windows, w) + b, 0)
        if pool:
            n, h, w_, c = x.shape
            x = x[:, : h // 2 * 2, : w_ // 2 * 2].reshape(n, h // 2, 2, w_ // 2, 2, c).max((2, 4))
            pools.append(x)
    return pools


def gram(f):
    """Per-image Gram matrices F^T F / (C H W) of (N,H,W,C) features, (N,C,C)."""
    n, h, w, c = f.shape
    out = np.zeros((n, c, c))
    for b in range(n):
        flat = f[b].reshape(h * w, c)
        out[b] = flat.T @ flat / (c * h * w)
    return out


def tv_pairs_loss(comp, mask):
    """TV over horizontal/vertical pairs with both pixels in the 3x3 dilation of the holes."""
    from scipy import ndimage

    comp = np.asarray(comp, np.float64)
    n, h, w, _ = comp.shape
    total = 0.0
    for b in range(n):
        region = ndimage.binary_dilation(mask[b, :, :, 0] == 0, structure=np.ones((3, 3)))
        for i in range(h):
            for j in range(w):
                if j + 1 < w and region[i, j] and region[i, j + 1]:
                    total += np.abs(comp[b, i, j] - comp[b, i, j + 1]).sum()
                if i + 1 < h and region[i, j] and region[i + 1, j]:
                    total += np.abs(comp[b, i, j] - comp[b, i + 1, j]).sum()
    return total / comp.size


def loss_terms(output, target, mask, features):
    """The six terms from their formulas; `features` maps images to a list of maps."""
    out, gt = np.asarray(output, np.float64), np.asarray(target, np.float64)
    m = np.asarray(mask, np.float64)
    comp = m * gt + (1 - m) * out
    f_out, f_comp, f_gt = features(out), features(comp), features(gt)
    return {
        "valid": np.mean(np.abs(m * (out - gt))),
        "hole": np.mean(np.abs((1 - m) * (out - gt))),
        "perceptual": sum(np.mean(np.abs(a - g)) + np.mean(np.abs(c - g))
                          for a, c, g in zip(f_out, f_comp, f_gt, strict=True)),
        "style_out": sum(np.mean(np.abs(gram(a) - gram(g))) for a, g in zip(f_out, f_gt,
                                                                            strict=True)),
        "style_comp": sum(np.mean(np.abs(gram(c) - gram(g))) for c, g in zip(f_comp, f_gt,
                                                                             strict=True)),
        "tv": tv_pairs_loss(comp, m),
    }


def augment_reference(mask, size, rng):
    """The paper's mask augmentation as pconv_jax first wrote it, with SciPy on the full file.

    Holes (mask == 0) grow by 1-3 binary dilations (3x3 cross) with probability 1/2, turn by
    U(0, 360) degrees about the centre (order 0, what leaves the frame is valid), then a square
    of side int(min(H,W) * U(0.6, 1)) at a uniform position is cut and resized (nearest,
    pixel centres) to (size, size). Returns (size,size) float32 with 1 = valid.
    """
    from scipy import ndimage

    hole = np.asarray(mask) == 0  # (H,W)
    if rng.random() < 0.5:
        hole = ndimage.binary_dilation(hole, iterations=int(rng.integers(1, 4)))
    angle = rng.uniform(0, 360)
    hole = ndimage.rotate(hole.astype(np.uint8), angle, reshape=False, order=0,
                          mode="constant", cval=0).astype(bool)
    h, w = hole.shape
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = hole[top:top + side, left:left + side]
    # Nearest neighbour by pixel centres: output i reads crop row floor((i + 0.5) * side / size).
    idx = np.minimum(((np.arange(size) + 0.5) * side / size).astype(int), side - 1)
    return (~crop[idx][:, idx]).astype(np.float32)
