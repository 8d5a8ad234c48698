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
                      dilation=(1, 1), max_ratio=None):
    """The paper's partial convolution, one output window at a time (with `max_ratio`, the
    scaling sum(1)/sum(M) capped at it: not the paper's form).

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
                    ratio = sum_one / sum_m
                    if max_ratio is not None:
                        ratio = min(ratio, max_ratio)
                    val = np.einsum("hwc,hwco->o", xw * mw, kernel) * ratio
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


# --- FID Inception v3 and LPIPS, NCHW float64, written from pytorch-fid's and lpips' modules ---


def conv_nchw(x, w, stride=1, pad=(0, 0)):
    """torch.nn.functional.conv2d without bias: x (N,C,H,W), w (O,C,kh,kw)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    o, c, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]  # (N,C,H',W',kh,kw)
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)


def basic_conv(x, weights, name, stride=1, pad=(0, 0)):
    """pytorch-fid's BasicConv2d: conv (no bias), BatchNorm2d(eps=0.001) in eval mode, ReLU."""
    y = conv_nchw(x, weights[f"{name}.conv.weight"].astype(np.float64), stride, pad)
    g, b, m, v = (weights[f"{name}.bn.{s}"].astype(np.float64)[None, :, None, None]
                  for s in ("weight", "bias", "running_mean", "running_var"))
    return np.maximum((y - m) / np.sqrt(v + 1e-3) * g + b, 0)


def max_pool_nchw(x, k, stride, pad=0):
    """torch max_pool2d (floor mode); padding with -inf."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    return win[:, :, ::stride, ::stride].max(axis=(4, 5))


def avg_pool_3x3_exclude_pad(x):
    """torch avg_pool2d(kernel 3, stride 1, padding 1, count_include_pad=False)."""
    n, c, h, w = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out[:, :, i, j] = x[:, :, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].mean(axis=(2, 3))
    return out


def torch_bilinear(x, size):
    """torch interpolate(mode='bilinear', align_corners=False), no antialias: for each output
    index, src = (dst + 0.5) * in/out - 0.5 clamped at 0, two neighbours, linear weights."""
    def axis_weights(n_in, n_out):
        m = np.zeros((n_out, n_in))
        for d in range(n_out):
            src = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(np.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            frac = src - i0
            m[d, i0] += 1 - frac
            m[d, i1] += frac
        return m
    mh, mw = axis_weights(x.shape[2], size), axis_weights(x.shape[3], size)
    return np.einsum("ph,nchw,qw->ncpq", mh, x, mw)


def fid_inception_pool3(images_nhwc, weights):
    """pytorch-fid InceptionV3(output_blocks=[3]) with FID blocks: (N,2048) float64."""
    W = weights
    x = torch_bilinear(np.asarray(images_nhwc, np.float64).transpose(0, 3, 1, 2), 299)
    x = 2 * x - 1
    x = basic_conv(x, W, "Conv2d_1a_3x3", stride=2)
    x = basic_conv(x, W, "Conv2d_2a_3x3")
    x = basic_conv(x, W, "Conv2d_2b_3x3", pad=(1, 1))
    x = max_pool_nchw(x, 3, 2)
    x = basic_conv(x, W, "Conv2d_3b_1x1")
    x = basic_conv(x, W, "Conv2d_4a_3x3")
    x = max_pool_nchw(x, 3, 2)

    def inception_a(x, p):
        b1 = basic_conv(x, W, f"{p}.branch1x1")
        b5 = basic_conv(basic_conv(x, W, f"{p}.branch5x5_1"), W, f"{p}.branch5x5_2", pad=(2, 2))
        b3 = basic_conv(x, W, f"{p}.branch3x3dbl_1")
        b3 = basic_conv(b3, W, f"{p}.branch3x3dbl_2", pad=(1, 1))
        b3 = basic_conv(b3, W, f"{p}.branch3x3dbl_3", pad=(1, 1))
        bp = basic_conv(avg_pool_3x3_exclude_pad(x), W, f"{p}.branch_pool")
        return np.concatenate([b1, b5, b3, bp], axis=1)

    def inception_b(x, p):
        b3 = basic_conv(x, W, f"{p}.branch3x3", stride=2)
        bd = basic_conv(x, W, f"{p}.branch3x3dbl_1")
        bd = basic_conv(bd, W, f"{p}.branch3x3dbl_2", pad=(1, 1))
        bd = basic_conv(bd, W, f"{p}.branch3x3dbl_3", stride=2)
        return np.concatenate([b3, bd, max_pool_nchw(x, 3, 2)], axis=1)

    def inception_c(x, p):
        b1 = basic_conv(x, W, f"{p}.branch1x1")
        b7 = basic_conv(x, W, f"{p}.branch7x7_1")
        b7 = basic_conv(b7, W, f"{p}.branch7x7_2", pad=(0, 3))
        b7 = basic_conv(b7, W, f"{p}.branch7x7_3", pad=(3, 0))
        bd = basic_conv(x, W, f"{p}.branch7x7dbl_1")
        bd = basic_conv(bd, W, f"{p}.branch7x7dbl_2", pad=(3, 0))
        bd = basic_conv(bd, W, f"{p}.branch7x7dbl_3", pad=(0, 3))
        bd = basic_conv(bd, W, f"{p}.branch7x7dbl_4", pad=(3, 0))
        bd = basic_conv(bd, W, f"{p}.branch7x7dbl_5", pad=(0, 3))
        bp = basic_conv(avg_pool_3x3_exclude_pad(x), W, f"{p}.branch_pool")
        return np.concatenate([b1, b7, bd, bp], axis=1)

    def inception_d(x, p):
        b3 = basic_conv(basic_conv(x, W, f"{p}.branch3x3_1"), W, f"{p}.branch3x3_2", stride=2)
        b7 = basic_conv(x, W, f"{p}.branch7x7x3_1")
        b7 = basic_conv(b7, W, f"{p}.branch7x7x3_2", pad=(0, 3))
        b7 = basic_conv(b7, W, f"{p}.branch7x7x3_3", pad=(3, 0))
        b7 = basic_conv(b7, W, f"{p}.branch7x7x3_4", stride=2)
        return np.concatenate([b3, b7, max_pool_nchw(x, 3, 2)], axis=1)

    def inception_e(x, p, pool):
        b1 = basic_conv(x, W, f"{p}.branch1x1")
        b3 = basic_conv(x, W, f"{p}.branch3x3_1")
        b3 = np.concatenate([basic_conv(b3, W, f"{p}.branch3x3_2a", pad=(0, 1)),
                             basic_conv(b3, W, f"{p}.branch3x3_2b", pad=(1, 0))], axis=1)
        bd = basic_conv(x, W, f"{p}.branch3x3dbl_1")
        bd = basic_conv(bd, W, f"{p}.branch3x3dbl_2", pad=(1, 1))
        bd = np.concatenate([basic_conv(bd, W, f"{p}.branch3x3dbl_3a", pad=(0, 1)),
                             basic_conv(bd, W, f"{p}.branch3x3dbl_3b", pad=(1, 0))], axis=1)
        pooled = avg_pool_3x3_exclude_pad(x) if pool == "avg" else max_pool_nchw(x, 3, 1, 1)
        bp = basic_conv(pooled, W, f"{p}.branch_pool")
        return np.concatenate([b1, b3, bd, bp], axis=1)

    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = inception_a(x, name)
    x = inception_b(x, "Mixed_6a")
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = inception_c(x, name)
    x = inception_d(x, "Mixed_7a")
    x = inception_e(x, "Mixed_7b", "avg")
    x = inception_e(x, "Mixed_7c", "max")
    return x.mean(axis=(2, 3))


def frechet_closed_form_1d(mu1, var1, mu2, var2):
    """Squared 2-Wasserstein distance of two 1-D Gaussians: (m1-m2)^2 + (s1-s2)^2."""
    return (mu1 - mu2) ** 2 + (np.sqrt(var1) - np.sqrt(var2)) ** 2


def lpips_vgg(x0_nhwc, x1_nhwc, vgg, heads):
    """lpips.LPIPS(net='vgg', version='0.1')(x0, x1, normalize=True) for [0,1] images: (N,)."""
    shift = np.array([-.030, -.088, -.188])[None, :, None, None]
    scale = np.array([.458, .448, .450])[None, :, None, None]

    def taps(x):
        x = ((2 * np.asarray(x, np.float64).transpose(0, 3, 1, 2) - 1) - shift) / scale
        outs = []
        # torchvision vgg16.features: conv indices per slice, max-pools at 4, 9, 16, 23
        for convs in ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)):
            if outs:
                x = max_pool_nchw(x, 2, 2)
            for i in convs:
                x = conv_nchw(x, vgg[f"features.{i}.weight"].astype(np.float64), 1, (1, 1))
                x = np.maximum(x + vgg[f"features.{i}.bias"].astype(np.float64)[None, :, None,
                                                                                 None], 0)
            outs.append(x)
        return outs

    total = 0.0
    for k, (f0, f1) in enumerate(zip(taps(x0_nhwc), taps(x1_nhwc), strict=True)):
        n0 = f0 / (np.sqrt((f0 ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        n1 = f1 / (np.sqrt((f1 ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        lin = heads[f"lin{k}.model.1.weight"].astype(np.float64)  # (1,C,1,1)
        total = total + ((n0 - n1) ** 2 * lin).sum(axis=1).mean(axis=(1, 2))
    return total


# --- naoto0804/pytorch-inpainting-with-partial-conv's network (issue #19), NCHW float64 -----
# Written from the facts of that network (not from its code, nor from ours): its partial conv
# divides by sum(M) without the sum(1) factor, with per-channel masks in full.


def naoto_partial_conv(x, mask, weight, bias, stride, pad):
    """y = W*(X.M) / sum(M) + b where sum(M) > 0 (sum over the window and every channel of the
    per-channel mask), else 0; new mask 1 where sum(M) > 0. x, mask: (N,C,H,W); weight
    (O,C,k,k); returns y and the new mask (N,O,H',W')."""
    raw = conv_nchw(x * mask, weight, stride, (pad, pad))
    mask_sum = conv_nchw(mask, np.ones_like(weight), stride, (pad, pad))
    valid = mask_sum > 0
    y = raw / np.where(valid, mask_sum, 1.0)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[None, :, None, None]
    return np.where(valid, y, 0.0), valid.astype(np.float64)


def naoto_unet(image, mask, weights):
    """That network in eval mode from its state dict `weights` ({key: array}, its key names):
    image (N,C,H,W) ImageNet-normalised, mask (N,C,H,W) with 1 = valid. Returns (output in
    the normalised space, output mask), both (N,C,H,W)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}

    def bn(h, name):
        scale, shift = w[f"{name}.bn.weight"], w[f"{name}.bn.bias"]
        mean, var = w[f"{name}.bn.running_mean"], w[f"{name}.bn.running_var"]
        per_channel = [a[None, :, None, None] for a in (mean, var, scale, shift)]
        return batchnorm_eval(h, *per_channel, 1e-5)

    layers = 0
    while f"enc_{layers + 1}.conv.input_conv.weight" in w:
        layers += 1
    h, m = np.asarray(image, np.float64), np.asarray(mask, np.float64)
    hs, ms = [h], [m]
    for i in range(1, layers + 1):
        kernel = w[f"enc_{i}.conv.input_conv.weight"]
        h, m = naoto_partial_conv(h, m, kernel, None, 2, (kernel.shape[2] - 1) // 2)
        if i > 1:
            h = bn(h, f"enc_{i}")
        h = np.maximum(h, 0.0)
        hs.append(h)
        ms.append(m)
    for i in range(layers, 0, -1):
        up = lambda a: np.repeat(np.repeat(a, 2, axis=2), 2, axis=3)  # noqa: E731 - nearest x2
        h = np.concatenate([up(h), hs[i - 1]], axis=1)
        m = np.concatenate([up(m), ms[i - 1]], axis=1)
        kernel = w[f"dec_{i}.conv.input_conv.weight"]
        h, m = naoto_partial_conv(h, m, kernel, w.get(f"dec_{i}.conv.input_conv.bias"), 1,
                                  (kernel.shape[2] - 1) // 2)
        if i > 1:
            h = bn(h, f"dec_{i}")
            h = np.where(h > 0, h, 0.2 * h)
    return h, m
