"""Partial convolution (Liu et al., ECCV 2018) as pure functions on `lax.conv_general_dilated`.

For one window with features X, binary mask M (1 = valid, 0 = hole), filter W and bias b:

    x' = W^T (X * M) * sum(1) / sum(M) + b   if sum(M) > 0, else 0
    m' = 1                                   if sum(M) > 0, else 0

computed as the official NVIDIA layer does, `ratio = winsize / (conv(M, 1) + eps)`,
`update = clip(conv(M, 1), 0, 1)`, `y = (conv(X * M, W) * ratio * update + b) * update`.

The mask path is one channel wide. A C-channel mask enters only through its per-pixel count of
valid channels (`conv(M, ones(kh,kw,C,1)) == conv(sum_c M, ones(kh,kw,1,1))`), and so does a
channel concatenation of features that carry different masks (`partial_conv_concat`): each
part's mask counts with the weight of its channel number. Mask sums and ratios are float32
whatever the feature dtype and carry no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
IntOrPair = Union[int, Sequence[int]]
Padding = Union[str, int, Sequence[int], Sequence[Sequence[int]]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


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


def _conv(x: Array, kernel: Array, strides, padding, dilation) -> Array:
    """Plain NHWC/HWIO convolution without bias."""
    return lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=padding, rhs_dilation=dilation,
        dimension_numbers=_DIMENSION_NUMBERS,
    )


def window_ratio(
    valid_count: Array,
    window_size: float,
    kernel_hw: tuple[int, int],
    *,
    strides: IntOrPair = 1,
    padding: Padding = "SAME",
    dilation: IntOrPair = 1,
    eps: float = 1e-8,
) -> tuple[Array, Array]:
    """Returns (ratio, new_mask), both (N,H',W',1) float32 without gradient.

    valid_count: (N,H,W,1) number of valid input channels at each pixel (a binary mask for the
    single-channel case); window_size: sum(1) of the window, kh*kw*C for C counted channels.
    ratio = window_size / (window sum + eps) where the window touched a valid pixel, else 0.
    """
    strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
    ones = jnp.ones((*kernel_hw, 1, 1), jnp.float32)
    valid_count = lax.stop_gradient(valid_count.astype(jnp.float32))
    window_sum = _conv(valid_count, ones, strides, normalize_padding(padding), dilation)
    new_mask = jnp.clip(window_sum, 0.0, 1.0)
    ratio = window_size / (window_sum + eps) * new_mask
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
) -> tuple[Array, Array]:
    """Shared tail of the partial convolutions: conv, renormalise, bias outside holes."""
    strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
    padding = normalize_padding(padding)
    ratio, new_mask = window_ratio(
        valid_count, window_size, kernel.shape[:2],
        strides=strides, padding=padding, dilation=dilation, eps=eps,
    )
    out_dtype = jnp.result_type(x_masked.dtype, kernel.dtype)
    y = _conv(x_masked, kernel.astype(x_masked.dtype), strides, padding, dilation)
    y = y * ratio.astype(y.dtype)  # ratio already holds the update mask as a factor
    if bias is not None:
        y = (y + bias.astype(y.dtype)) * new_mask.astype(y.dtype)
    batch = x_masked.shape[0]
    new_mask = jnp.broadcast_to(new_mask, (batch, *new_mask.shape[1:]))
    return y.astype(out_dtype), new_mask


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
) -> tuple[Array, Array]:
    """Partial convolution of x: (N,H,W,Cin) with kernel (kh,kw,Cin,Cout) -> (y, new_mask).

    mask: (N,H,W,1), (N,H,W,Cin) or None (the image is valid and the zero padding is a hole:
    partial-convolution padding). Returns y: (N,H',W',Cout) and new_mask: (N,H',W',1) in {0,1}.
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
        x_masked, valid_count, window_size, kernel, bias, strides, padding, dilation, eps
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
        dilation, eps,
    )
