"""Partial convolution (Liu et al., ECCV 2018) as pure functions on `lax.conv_general_dilated`.

For one window with features X, binary mask M (1 = valid, 0 = hole), filter W and bias b:

    x' = W^T (X * M) * sum(1) / sum(M) + b   if sum(M) > 0, else 0
    m' = 1                                   if sum(M) > 0, else 0

computed as the official NVIDIA layer does, `ratio = winsize / (conv(M, 1) + eps)`,
`update = clip(conv(M, 1), 0, 1)`, `y = (conv(X * M, W) * ratio * update + b) * update`.

`max_ratio` (default None: the paper's form) is an option that changes the method: the ratio
is capped, `min(ratio, max_ratio)`, so a window that barely touches valid pixels is scaled by
at most that much (`UNetConfig.ratio_cap`; experiments/README.md, "Smooth fills").

The mask path is one channel wide. A C-channel mask enters only through its per-pixel count of
valid channels (`conv(M, ones(kh,kw,C,1)) == conv(sum_c M, ones(kh,kw,1,1))`), and so does a
channel concatenation of features that carry different masks (`partial_conv_concat`): each
part's mask counts with the weight of its channel number. Mask sums and ratios are float32
whatever the feature dtype and carry no gradient.

ImageNet's input statistics live here too (`to_imagenet`, `from_imagenet`): the model and the
loss's VGG-16 both normalise with them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
IntOrPair = Union[int, Sequence[int]]
Padding = Union[str, int, Sequence[int], Sequence[Sequence[int]]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

# ImageNet's per-channel mean and standard deviation of [0, 1] RGB: the input space of
# ImageNet-trained networks (the loss's VGG-16; naoto0804's UNet, UNetConfig.normalization).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_imagenet(images: Array) -> Array:
    """(N,H,W,3) in [-1, 1] -> float32 (x01 - mean) / std, ImageNet-normalised."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return ((images.astype(jnp.float32) + 1) / 2 - mean) / std


def from_imagenet(x: Array) -> Array:
    """The inverse of to_imagenet: ImageNet-normalised (N,H,W,3) -> float32 in [-1, 1] space."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (x.astype(jnp.float32) * std + mean) * 2 - 1


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """Returns `value` as an (h, w) pair of positive ints."""
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


def normalize_padding(padding: Padding) -> str | tuple[tuple[int, int], tuple[int, int]]:
    """Returns padding in `lax.conv_general_dilated` form: 'SAME', 'VALID' or ((lo,hi),(lo,hi)).

    Accepts "SAME", "VALID", "SAME_LOWER" (any case), an int p (p on every side), a pair of ints
    (ph, pw) (symmetric per axis) or a pair of (lo, hi) pairs.
    """
    if isinstance(padding, str):
        upper = padding.upper()
        if upper not in ("SAME", "VALID", "SAME_LOWER"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
        return upper
    if isinstance(padding, int) and padding >= 0:
        return ((padding, padding), (padding, padding))
    try:
        items = tuple(padding)  # type: ignore[arg-type]
    except TypeError:
        items = ()
    if len(items) == 2 and all(isinstance(p, int) and p >= 0 for p in items):
        return ((items[0], items[0]), (items[1], items[1]))
    if len(items) == 2 and all(
        not isinstance(p, (int, str)) and len(tuple(p)) == 2
        and all(isinstance(v, int) and v >= 0 for v in p)
        for p in items
    ):
        (lo_h, hi_h), (lo_w, hi_w) = items
        return ((lo_h, hi_h), (lo_w, hi_w))
    raise ValueError(
        "padding must be 'SAME', 'VALID', a non-negative int, a pair (ph, pw) or "
        f"((top, bottom), (left, right)), got {padding!r}"
    )


# At few output pixels (the deep levels: 512-1024 channels at <= 16x16) XLA's CPU convolution
# is slow; im2col and one matrix product compute the same sums ~2x faster.
_IM2COL_MAX_OUTPUT_ROWS = 256


def _concrete(*dims) -> bool:
    """Whether every dimension is a plain int (not a `jax.export` symbolic dimension)."""
    return all(isinstance(d, int) for d in dims)


def conv_method(x_shape, kernel_shape, strides, padding, dilation) -> str:
    """Which exact formulation `_conv` uses for these shapes: 'im2col' or 'xla'.

    Symbolic shapes (`jax.export` with shape polymorphism) take XLA's convolution: one graph
    then serves every size, and the sizes that run it are the large ones."""
    ho, wo = _output_size(x_shape, kernel_shape, strides, padding, dilation)
    if not _concrete(x_shape[0], ho, wo):
        return "xla"
    return "im2col" if x_shape[0] * ho * wo <= _IM2COL_MAX_OUTPUT_ROWS else "xla"


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv(x: Array, kernel: Array, strides, padding, dilation) -> Array:
    """Plain NHWC/HWIO convolution without bias (strides/dilation pairs, lax padding)."""
    kh, kw, cin, cout = kernel.shape
    if conv_method(x.shape, kernel.shape, strides, padding, dilation) == "im2col":
        windows = _windows(x, kernel.shape, strides, padding, dilation)
        cols = jnp.concatenate(windows, axis=3)  # (N,Ho,Wo,kh*kw*Cin), taps row-major
        return jnp.einsum("nhwk,ko->nhwo", cols, kernel.reshape(kh * kw * cin, cout))
    return lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=padding, rhs_dilation=dilation,
        dimension_numbers=_DIMENSION_NUMBERS,
    )


def _explicit_padding(x_shape, kernel_shape, strides, padding, dilation):
    """Padding as ((top, bottom), (left, right)), resolving 'SAME'/'VALID' as lax does."""
    if isinstance(padding, str):
        kh, kw = kernel_shape[:2]
        window = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
        return tuple(lax.padtype_to_pads(x_shape[1:3], window, strides, padding))
    return padding


def _output_size(x_shape, kernel_shape, strides, padding, dilation) -> tuple[int, int]:
    """(Ho, Wo) of the convolution."""
    (pt, pb), (pl, pr) = _explicit_padding(x_shape, kernel_shape, strides, padding, dilation)
    kh, kw = kernel_shape[:2]
    ho = (x_shape[1] + pt + pb - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    wo = (x_shape[2] + pl + pr - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    return ho, wo


def _windows(x, kernel_shape, strides, padding, dilation):
    """[x_ij: (N,Ho,Wo,Cin)] for the kernel taps (i, j) in row-major order: what each multiplies."""
    (pt, pb), (pl, pr) = _explicit_padding(x.shape, kernel_shape, strides, padding, dilation)
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho, wo = _output_size(x.shape, kernel_shape, strides, padding, dilation)
    n, cin = x.shape[0], x.shape[3]
    windows = []
    for i in range(kernel_shape[0]):
        for j in range(kernel_shape[1]):
            top, left = i * dilation[0], j * dilation[1]
            window = lax.slice(
                xp, (0, top, left, 0),
                (n, top + (ho - 1) * strides[0] + 1, left + (wo - 1) * strides[1] + 1, cin),
                (1, strides[0], strides[1], 1),
            )
            windows.append(window)
    return windows


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def window_sums(x: Array, kernel_hw, strides, padding, dilation) -> Array:
    """Sum of x: (N,H,W,C) over each (dilated) kh x kw window, per channel: conv with ones.

    Computed as two one-dimensional reduce_window sums (rows, then columns), which XLA runs
    ~25x faster than a ones-kernel convolution on the CPU; exact for the integer counts of
    mask sums.
    """
    (pt, pb), (pl, pr) = _explicit_padding(x.shape, (*kernel_hw, 1, 1), strides, padding,
                                           dilation)
    rows = lax.reduce_window(x, 0.0, lax.add, (1, kernel_hw[0], 1, 1), (1, strides[0], 1, 1),
                             ((0, 0), (pt, pb), (0, 0), (0, 0)),
                             window_dilation=(1, dilation[0], 1, 1))
    return lax.reduce_window(rows, 0.0, lax.add, (1, 1, kernel_hw[1], 1), (1, 1, strides[1], 1),
                             ((0, 0), (0, 0), (pl, pr), (0, 0)),
                             window_dilation=(1, 1, dilation[1], 1))


def window_ratio(
    valid_count: Array,
    window_size: float,
    kernel_hw: tuple[int, int],
    *,
    strides: IntOrPair = 1,
    padding: Padding = "SAME",
    dilation: IntOrPair = 1,
    eps: float = 1e-8,
    max_ratio: float | None = None,
) -> tuple[Array, Array]:
    """Returns (ratio, new_mask), both (N,H',W',1) float32 without gradient.

    valid_count: (N,H,W,1) number of valid input channels at each pixel (a binary mask for the
    single-channel case); window_size: sum(1) of the window, kh*kw*C for C counted channels.
    ratio = window_size / (window sum + eps) where the window touched a valid pixel, else 0;
    with max_ratio (not the paper's form) at most max_ratio.
    """
    strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
    valid_count = lax.stop_gradient(valid_count.astype(jnp.float32))
    window_sum = window_sums(valid_count, tuple(kernel_hw), strides, normalize_padding(padding),
                             dilation)
    new_mask = jnp.clip(window_sum, 0.0, 1.0)
    ratio = window_size / (window_sum + eps)
    if max_ratio is not None:
        ratio = jnp.minimum(ratio, jnp.float32(max_ratio))
    ratio = ratio * new_mask
    return lax.stop_gradient(ratio), lax.stop_gradient(new_mask)


def _check_kernel(x: Array, kernel: Array, bias: Array | None, cin: int) -> None:
    """Raises ValueError when kernel or bias do not fit features with `cin` channels."""
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be (kh,kw,Cin,Cout) (HWIO), got shape {tuple(kernel.shape)}")
    if kernel.shape[2] != cin:
        raise ValueError(
            f"kernel input channels {kernel.shape[2]} (kernel shape {tuple(kernel.shape)}) "
            f"differ from the {cin} channels of x"
        )
    if bias is not None and tuple(bias.shape) != (kernel.shape[3],):
        raise ValueError(f"bias must have shape ({kernel.shape[3]},), got {tuple(bias.shape)}")


def _check_mask(x: Array, mask: Array, allow_multichannel: bool) -> None:
    """Raises ValueError when `mask` does not fit features `x`."""
    if mask.ndim != 4:
        raise ValueError(f"mask must be (N,H,W,1) or (N,H,W,C), got shape {tuple(mask.shape)}")
    if mask.shape[1:3] != x.shape[1:3] or mask.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match x shape {tuple(x.shape)} "
            "in batch or spatial size"
        )
    allowed = (1, x.shape[3]) if allow_multichannel else (1,)
    if mask.shape[3] not in allowed:
        wanted = f"1 or {x.shape[3]} (x channels)" if allow_multichannel else "1"
        raise ValueError(
            f"mask has {mask.shape[3]} channels (shape {tuple(mask.shape)}); expected {wanted}"
        )


def _finish(
    raw: Array, ratio: Array, new_mask: Array, bias: Array | None, out_dtype: Any, batch: int
) -> tuple[Array, Array]:
    """y = (conv(X*M, W) * ratio + b) * update, from the raw convolution; mask to batch size.

    The ratio and bias apply in float32 (or wider) and y is rounded to out_dtype once: in
    bfloat16 the ratio itself is never rounded."""
    wide = jnp.promote_types(raw.dtype, jnp.float32)  # float32 (float64 stays float64)
    y = raw.astype(wide) * ratio.astype(wide)  # ratio holds the update mask as a factor
    if bias is not None:
        y = (y + bias.astype(wide)) * new_mask.astype(wide)
    new_mask = jnp.broadcast_to(new_mask, (batch, *new_mask.shape[1:]))
    return y.astype(out_dtype), new_mask


def _masked_conv_output(
    x_masked: Array,
    valid_count: Array,
    window_size: float,
    kernel: Array,
    bias: Array | None,
    strides: IntOrPair,
    padding: Padding,
    dilation: IntOrPair,
    eps: float,
    max_ratio: float | None = None,
) -> tuple[Array, Array]:
    """Shared tail of the partial convolutions: conv, renormalise, bias outside holes."""
    strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
    padding = normalize_padding(padding)
    ratio, new_mask = window_ratio(
        valid_count, window_size, kernel.shape[:2],
        strides=strides, padding=padding, dilation=dilation, eps=eps, max_ratio=max_ratio,
    )
    out_dtype = jnp.result_type(x_masked.dtype, kernel.dtype)
    raw = _conv(x_masked, kernel.astype(x_masked.dtype), strides, padding, dilation)
    return _finish(raw, ratio, new_mask, bias, out_dtype, x_masked.shape[0])


def partial_conv(
    x: Array,
    mask: Array | None,
    kernel: Array,
    bias: Array | None = None,
    *,
    strides: IntOrPair = 1,
    padding: Padding = "SAME",
    dilation: IntOrPair = 1,
    eps: float = 1e-8,
    max_ratio: float | None = None,
) -> tuple[Array, Array]:
    """Partial convolution of x: (N,H,W,Cin) with kernel (kh,kw,Cin,Cout) -> (y, new_mask).

    mask: (N,H,W,1), (N,H,W,Cin) or None (the image is valid and the zero padding is a hole:
    partial-convolution padding). Returns y: (N,H',W',Cout) and new_mask: (N,H',W',1) in {0,1}.
    max_ratio: cap on the renormalisation (None: the paper's form).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N,H,W,C) (NHWC), got shape {tuple(x.shape)}")
    cin = x.shape[3]
    _check_kernel(x, kernel, bias, cin)
    kh, kw = kernel.shape[:2]
    if mask is None:
        # Partial-convolution padding: all ones inside the image; one batch row suffices.
        valid_count = jnp.ones((1, *x.shape[1:3], 1), jnp.float32)
        window_size = kh * kw
        x_masked = x
    else:
        _check_mask(x, mask, allow_multichannel=True)
        x_masked = x * mask.astype(x.dtype)
        if mask.shape[3] == 1:
            valid_count, window_size = mask, kh * kw
        else:
            valid_count = jnp.sum(mask.astype(jnp.float32), axis=3, keepdims=True)
            window_size = kh * kw * cin
    return _masked_conv_output(
        x_masked, valid_count, window_size, kernel, bias, strides, padding, dilation, eps,
        max_ratio,
    )


def partial_conv_concat(
    parts: Sequence[tuple[Array, Array | None]],
    kernel: Array,
    bias: Array | None = None,
    *,
    strides: IntOrPair = 1,
    padding: Padding = "SAME",
    dilation: IntOrPair = 1,
    eps: float = 1e-8,
    max_ratio: float | None = None,
) -> tuple[Array, Array]:
    """Partial convolution of the channel concatenation of `parts`, each (x_i, mask_i).

    x_i: (N,H,W,C_i), mask_i: (N,H,W,1) or None (all valid). Exactly equal to `partial_conv` on
    the concatenated features with the per-channel mask that repeats mask_i over the C_i
    channels of part i, at the cost of a one-channel mask: the window sum counts part i's mask
    with weight C_i. Returns y: (N,H',W',Cout) and new_mask: (N,H',W',1).
    """
    if not parts:
        raise ValueError("partial_conv_concat needs at least one (x, mask) part")
    for i, (x, _) in enumerate(parts):
        if x.ndim != 4:
            raise ValueError(f"part {i}: x must be (N,H,W,C), got shape {tuple(x.shape)}")
        if x.shape[:3] != parts[0][0].shape[:3]:
            raise ValueError(
                f"part {i} has shape {tuple(x.shape)}, part 0 has {tuple(parts[0][0].shape)}: "
                "batch and spatial sizes must agree"
            )
    channels = [x.shape[3] for x, _ in parts]
    _check_kernel(parts[0][0], kernel, bias, sum(channels))
    masked, valid_count = [], None
    for x, mask in parts:
        if mask is None:
            mask = jnp.ones((1, *x.shape[1:3], 1), jnp.float32)
            masked.append(x)
        else:
            _check_mask(x, mask, allow_multichannel=False)
            masked.append(x * mask.astype(x.dtype))
        weighted = x.shape[3] * mask.astype(jnp.float32)
        valid_count = weighted if valid_count is None else valid_count + weighted
    x_masked = jnp.concatenate(masked, axis=3)  # (N,H,W,sum C_i)
    kh, kw = kernel.shape[:2]
    return _masked_conv_output(
        x_masked, valid_count, kh * kw * sum(channels), kernel, bias, strides, padding,
        dilation, eps, max_ratio,
    )


def upsample_nearest(x: Array) -> Array:
    """Nearest-neighbour x2 upsampling: (N,H,W,C) -> (N,2H,2W,C); keeps masks binary."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


def _phase_taps(k: int, phase: int) -> list[tuple[int, list[int]]]:
    """For one output phase of a k-tap conv over a x2 nearest upsampling: the low-resolution
    offsets it reads and, for each, the kernel taps that land on it."""
    r = (k - 1) // 2
    groups: dict[int, list[int]] = {}
    for tap in range(k):
        groups.setdefault((phase + tap - r) // 2, []).append(tap)
    return sorted(groups.items())


def phase_kernels(kernel: Any) -> list[tuple[Any, tuple[tuple[int, int], tuple[int, int]]]]:
    """conv(upsample_nearest(x), kernel) at low resolution: per output phase (py, px), in the
    order (0,0), (0,1), (1,0), (1,1), its kernel and its padding ((top, bottom), (left, right)).

    kernel: (k,k,C,O), k odd, a NumPy array (kept in its dtype: export folds in float64) or a
    JAX one. A phase's kernel (a,b,C,O) sums the taps that read the same low-resolution pixel.
    """
    xp = np if isinstance(kernel, np.ndarray) else jnp
    k = kernel.shape[0]
    phases = []
    for py in (0, 1):
        rows = _phase_taps(k, py)
        for px in (0, 1):
            cols = _phase_taps(k, px)
            taps = xp.stack([
                xp.stack([kernel[np.asarray(ti)][:, np.asarray(tj)].sum((0, 1))
                          for _, tj in cols])
                for _, ti in rows
            ])  # (len(rows), len(cols), C, O)
            phases.append((taps, ((-rows[0][0], rows[-1][0]), (-cols[0][0], cols[-1][0]))))
    return phases


def conv_upsampled(x: Array, kernel: Array) -> Array:
    """conv(upsample_nearest(x), kernel) with stride 1 and (k-1)//2 padding, at low resolution.

    x: (N,h,w,C), kernel: (k,k,C,O) with k odd. Each of the four output phases is a small
    convolution of x with kernel taps summed where they read the same low-resolution pixel
    (2x2 for k=3: 16 instead of 36 multiply-adds per pixel and channel pair).
    Returns (N,2h,2w,O).
    """
    k = kernel.shape[0]
    if kernel.shape[1] != k or k % 2 == 0:
        raise ValueError(f"conv_upsampled needs a square odd kernel, got {tuple(kernel.shape)}")
    n, h, w, _ = x.shape
    phases = [_conv(x, taps, (1, 1), pad, (1, 1))  # (N,h,w,O)
              for taps, pad in phase_kernels(kernel)]
    y = jnp.stack(phases, axis=0).reshape(2, 2, n, h, w, -1)  # (py, px, N, h, w, O)
    y = y.transpose(2, 3, 0, 4, 1, 5)  # (N, h, py, w, px, O)
    return y.reshape(n, 2 * h, 2 * w, -1)


def partial_conv_upsample_concat(
    low: tuple[Array, Array],
    skip: tuple[Array, Array],
    kernel: Array,
    bias: Array | None = None,
    *,
    eps: float = 1e-8,
    low_res_min_pixels: int = 256,
    max_ratio: float | None = None,
) -> tuple[Array, Array]:
    """The UNet decoder's partial conv: concat(upsample(low), skip), stride 1, (k-1)//2 padding.

    low: (x: (N,h,w,C_up), mask: (N,h,w,1)); skip: (x: (N,2h,2w,C_skip), mask: (N,2h,2w,1)).
    Equal to `partial_conv_concat([(upsample_nearest(x), upsample_nearest(m)), skip], ...)`,
    with the upsampled part's convolution computed at low resolution (`conv_upsampled`) when
    the low-resolution map has at least `low_res_min_pixels` pixels (below that XLA's CPU
    convolution runs the small phase convolutions slower than one convolution at full size).
    Returns y: (N,2h,2w,Cout) and new_mask: (N,2h,2w,1).
    """
    (x_low, m_low), (x_skip, m_skip) = low, skip
    for name, (x, m) in (("low", low), ("skip", skip)):
        if x.ndim != 4:
            raise ValueError(f"{name} features must be (N,H,W,C), got shape {tuple(x.shape)}")
        _check_mask(x, m, allow_multichannel=False)
    if x_skip.shape[1:3] != (2 * x_low.shape[1], 2 * x_low.shape[2]):
        raise ValueError(
            f"skip features {tuple(x_skip.shape)} must be twice the spatial size of "
            f"low features {tuple(x_low.shape)}"
        )
    c_up, c_skip = x_low.shape[3], x_skip.shape[3]
    _check_kernel(x_skip, kernel, bias, c_up + c_skip)
    k = kernel.shape[0]
    pad = (k - 1) // 2
    valid_count = (c_up * upsample_nearest(m_low.astype(jnp.float32))
                   + c_skip * m_skip.astype(jnp.float32))  # (N,2h,2w,1)
    ratio, new_mask = window_ratio(valid_count, k * k * (c_up + c_skip), (k, k), padding=pad,
                                   eps=eps, max_ratio=max_ratio)
    dtype = x_skip.dtype
    kernel_c = kernel.astype(dtype)
    padding = ((pad, pad), (pad, pad))
    low_masked = x_low.astype(dtype) * m_low.astype(dtype)  # (N,h,w,C_up)
    skip_masked = x_skip * m_skip.astype(dtype)  # (N,2h,2w,C_skip)
    low_pixels = x_low.shape[1] * x_low.shape[2]  # symbolic under shape polymorphism: large
    if not _concrete(low_pixels) or low_pixels >= low_res_min_pixels:
        raw = conv_upsampled(low_masked, kernel_c[:, :, :c_up])
        raw = raw + _conv(skip_masked, kernel_c[:, :, c_up:], (1, 1), padding, (1, 1))
    else:
        x_cat = jnp.concatenate([upsample_nearest(low_masked), skip_masked], axis=3)
        raw = _conv(x_cat, kernel_c, (1, 1), padding, (1, 1))
    out_dtype = jnp.result_type(dtype, kernel.dtype)
    return _finish(raw, ratio, new_mask, bias, out_dtype, x_skip.shape[0])
