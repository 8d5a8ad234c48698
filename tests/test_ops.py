"""pconv_jax.ops against the paper's formula written as a NumPy loop (tests/reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from pconv_jax import ops
from tests import reference

RTOL = 1e-5


def _random_case(rng, n=2, h=10, w=9, cin=3, cout=4, k=(3, 3), mask_kind="single",
                 density=0.6):
    """Random features, kernel, bias and a mask of the requested kind."""
    x = rng.normal(size=(n, h, w, cin)).astype(np.float32)
    kernel = rng.normal(size=(*k, cin, cout)).astype(np.float32)
    bias = rng.normal(size=(cout,)).astype(np.float32)
    if mask_kind == "none":
        mask = None
    else:
        channels = 1 if mask_kind == "single" else cin
        mask = (rng.random((n, h, w, channels)) < density).astype(np.float32)
        mask[:, h // 2, w // 2, 0] = 1  # at least one valid pixel per image
    return x, mask, kernel, bias


def _assert_close(actual, expected, scale):
    """Relative closeness with the output's magnitude as scale (zeros compared absolutely)."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=RTOL,
                               atol=RTOL * scale)


CASES = [
    # (kernel, strides, dilation, padding, mask kind, density, bias)
    ((1, 1), 1, 1, "SAME", "single", 0.6, True),
    ((3, 3), 1, 1, "SAME", "single", 0.6, True),
    ((3, 3), 1, 1, "SAME", "multi", 0.6, False),
    ((5, 5), 2, 1, "SAME", "multi", 0.5, True),
    ((7, 7), 2, 1, 3, "single", 0.5, True),
    ((7, 7), 1, 1, "VALID", "multi", 0.5, False),
    ((3, 3), 2, 1, "VALID", "single", 0.6, False),
    ((3, 3), 1, 2, "SAME", "single", 0.6, True),
    ((3, 3), 1, 2, (1, 2), "multi", 0.6, True),
    ((5, 5), 2, 2, ((0, 2), (3, 1)), "single", 0.6, True),
    ((3, 5), (2, 1), (1, 2), ((1, 1), (2, 2)), "multi", 0.5, True),
    ((3, 3), 1, 1, 1, "none", 1.0, True),
    ((5, 5), 2, 1, "SAME", "none", 1.0, False),
    ((7, 7), 2, 1, 3, "none", 1.0, True),
    ((3, 3), 1, 1, "SAME", "single", 0.05, True),  # sparse: many empty windows
    ((3, 3), 2, 1, 1, "multi", 0.03, True),
    ((5, 5), 1, 2, "SAME", "single", 0.02, False),
]


# Shapes that send the feature convolution down each of ops' exact formulations:
# (batch, height, width, Cin, Cout) -> conv method.
SIZES = {
    "im2col": (1, 9, 8, 3, 4),
    "xla": (2, 26, 24, 5, 6),
}


@pytest.mark.parametrize("method", list(SIZES))
@pytest.mark.parametrize("kernel_hw,strides,dilation,padding,mask_kind,density,use_bias", CASES)
def test_partial_conv_matches_numpy_loop(kernel_hw, strides, dilation, padding, mask_kind,
                                         density, use_bias, method):
    """y and new_mask equal the paper's formula evaluated window by window."""
    rng = np.random.default_rng(hash((kernel_hw, strides, dilation, str(padding))) % 2**32)
    n, h, w, cin, cout = SIZES[method]
    x, mask, kernel, bias = _random_case(rng, n=n, h=h, w=w, cin=cin, cout=cout, k=kernel_hw,
                                         mask_kind=mask_kind, density=density)
    bias = bias if use_bias else None
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    if method != "xla" or strides == 1:  # strided cases shrink the output into im2col's range
        assert ops.conv_method(x.shape, kernel.shape, pair(strides),
                               ops.normalize_padding(padding), pair(dilation)) == method
    y, new_mask = ops.partial_conv(
        jnp.asarray(x), None if mask is None else jnp.asarray(mask), jnp.asarray(kernel),
        None if bias is None else jnp.asarray(bias),
        strides=strides, padding=padding, dilation=dilation,
    )
    y_ref, m_ref = reference.partial_conv_loop(x, mask, kernel, bias, pair(strides), padding,
                                               pair(dilation))
    assert y.shape == y_ref.shape and new_mask.shape == m_ref.shape
    _assert_close(y, y_ref, np.abs(y_ref).max())
    np.testing.assert_array_equal(np.asarray(new_mask), m_ref)
    if density < 0.1:  # the sparse cases really exercise empty windows
        assert 0 < m_ref.mean() < 1


def test_all_ones_mask_is_plain_convolution_away_from_borders():
    """With every pixel valid, interior windows get ratio 1: y = conv(x, W) + b."""
    rng = np.random.default_rng(0)
    x, _, kernel, bias = _random_case(rng, h=12, w=11, k=(5, 5), mask_kind="none")
    mask = np.ones((*x.shape[:3], 1), np.float32)
    y, new_mask = ops.partial_conv(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(kernel),
                                   jnp.asarray(bias), padding="SAME")
    interior = np.asarray(y)[:, 2:-2, 2:-2, :]
    expected = reference.plain_conv_valid(x, kernel, bias)
    _assert_close(interior, expected, np.abs(expected).max())
    assert np.all(np.asarray(new_mask) == 1)


def test_no_mask_rescales_border_windows_as_padding_holes():
    """mask=None: a border window is scaled by kh*kw / (its pixels inside the image)."""
    rng = np.random.default_rng(1)
    x, _, kernel, bias = _random_case(rng, n=1, h=7, w=8, k=(3, 3), mask_kind="none")
    y, new_mask = ops.partial_conv(jnp.asarray(x), None, jnp.asarray(kernel), jnp.asarray(bias),
                                   padding=1)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    zero_padded = reference.plain_conv_valid(xp, kernel)  # (1, 7, 8, O)
    inside = np.ones((7, 8))
    inside_count = ndimage.correlate(inside, np.ones((3, 3)), mode="constant")  # 4, 6 or 9
    expected = zero_padded * (9.0 / inside_count)[None, :, :, None] + bias
    assert inside_count.min() == 4  # corners really are rescaled
    _assert_close(y, expected, np.abs(expected).max())
    assert np.all(np.asarray(new_mask) == 1)


@pytest.mark.parametrize("mask_kind", ["single", "multi"])
def test_hole_invariance(mask_kind):
    """Changing x in the holes changes neither y nor new_mask; a valid neighbour does change y."""
    rng = np.random.default_rng(2)
    x, mask, kernel, bias = _random_case(rng, h=12, w=12, mask_kind=mask_kind, density=0.5)
    noise = rng.normal(size=x.shape).astype(np.float32) * 10
    x_other = x + noise * (1 - mask)
    run = lambda xx: ops.partial_conv(jnp.asarray(xx), jnp.asarray(mask),  # noqa: E731
                                      jnp.asarray(kernel), jnp.asarray(bias))
    y1, m1 = run(x)
    y2, m2 = run(x_other)
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
    # A hole pixel (every channel a hole) whose left neighbour is valid: perturb the neighbour.
    hole = mask.max(axis=3) == 0  # (N,H,W)
    valid = mask.max(axis=3) > 0
    left_valid = np.zeros_like(valid)
    left_valid[:, :, 1:] = valid[:, :, :-1]
    b, i, j = (int(v[0]) for v in np.nonzero(hole & left_valid))
    x_neigh = x.copy()
    x_neigh[b, i, j - 1] += 5.0
    y3, _ = run(x_neigh)
    assert np.abs(np.asarray(y3)[b, i, j] - np.asarray(y1)[b, i, j]).max() > 1e-3


@pytest.mark.parametrize("strides,dilation", [(1, 1), (1, 2)])
def test_new_mask_is_window_touching_a_valid_pixel(strides, dilation):
    """new_mask == binary dilation of the valid region by the (dilated) kernel footprint."""
    rng = np.random.default_rng(3)
    x, mask, kernel, _ = _random_case(rng, n=1, h=16, w=16, k=(3, 3), density=0.04)
    _, new_mask = ops.partial_conv(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(kernel),
                                   strides=strides, dilation=dilation, padding="SAME")
    footprint = np.zeros((2 * dilation + 1,) * 2, bool)
    footprint[::dilation, ::dilation] = True
    expected = ndimage.binary_dilation(mask[0, :, :, 0] > 0, structure=footprint)
    np.testing.assert_array_equal(np.asarray(new_mask)[0, :, :, 0], expected.astype(np.float32))


def test_concat_form_equals_multichannel_partial_conv():
    """Concatenated parts with one-channel masks equal the per-channel-mask partial conv."""
    rng = np.random.default_rng(4)
    n, h, w = 2, 8, 8
    xa, xb, xc = (rng.normal(size=(n, h, w, c)).astype(np.float32) for c in (5, 2, 3))
    ma, mb = ((rng.random((n, h, w, 1)) < d).astype(np.float32) for d in (0.2, 0.7))
    kernel = rng.normal(size=(3, 3, 10, 6)).astype(np.float32)
    bias = rng.normal(size=(6,)).astype(np.float32)
    y, m = ops.partial_conv_concat(
        [(jnp.asarray(xa), jnp.asarray(ma)), (jnp.asarray(xb), jnp.asarray(mb)),
         (jnp.asarray(xc), None)],
        jnp.asarray(kernel), jnp.asarray(bias), padding=1,
    )
    per_channel = np.concatenate(
        [np.repeat(ma, 5, 3), np.repeat(mb, 2, 3), np.ones((n, h, w, 3), np.float32)], axis=3
    )
    x_cat = np.concatenate([xa, xb, xc], axis=3)
    y_mc, m_mc = ops.partial_conv(jnp.asarray(x_cat), jnp.asarray(per_channel),
                                  jnp.asarray(kernel), jnp.asarray(bias), padding=1)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_mc), rtol=RTOL, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(m), np.asarray(m_mc))
    y_ref, _ = reference.partial_conv_loop(x_cat, per_channel, kernel, bias, (1, 1), 1)
    _assert_close(y, y_ref, np.abs(y_ref).max())


def test_gradients_do_not_reach_hole_features():
    """d(sum y)/dx is zero in the holes and the mask path carries no NaNs."""
    rng = np.random.default_rng(5)
    x, mask, kernel, bias = _random_case(rng, density=0.3)
    grad = jax.grad(lambda xx: ops.partial_conv(xx, jnp.asarray(mask), jnp.asarray(kernel),
                                                jnp.asarray(bias))[0].sum())(jnp.asarray(x))
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[np.broadcast_to(mask == 0, grad.shape)] == 0)
    assert np.any(grad != 0)


def test_bfloat16_features_keep_float32_mask_path():
    """bfloat16 features give a bfloat16 y close to float32, and the same binary mask."""
    rng = np.random.default_rng(6)
    x, mask, kernel, bias = _random_case(rng, density=0.4)
    y32, m32 = ops.partial_conv(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(kernel),
                                jnp.asarray(bias))
    y16, m16 = ops.partial_conv(jnp.asarray(x, jnp.bfloat16), jnp.asarray(mask),
                                jnp.asarray(kernel, jnp.bfloat16), jnp.asarray(bias), eps=1e-6)
    assert y16.dtype == jnp.bfloat16 and m16.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(m16), np.asarray(m32))
    scale = np.abs(np.asarray(y32)).max()
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), atol=0.05 * scale)


@pytest.mark.parametrize(
    "x_shape,mask_shape,kernel_shape,match",
    [
        ((1, 8, 8, 3), (1, 8, 7, 1), (3, 3, 3, 4), "does not match x shape"),
        ((1, 8, 8, 3), (1, 8, 8, 2), (3, 3, 3, 4), "mask has 2 channels"),
        ((1, 8, 8, 3), (1, 8, 8, 1), (3, 3, 5, 4), "kernel input channels 5"),
        ((8, 8, 3), None, (3, 3, 3, 4), "x must be"),
        ((1, 8, 8, 3), (1, 8, 8, 1), (3, 3, 4), "kernel must be"),
    ],
)
def test_shape_errors_name_the_shapes(x_shape, mask_shape, kernel_shape, match):
    """Mismatched shapes raise a ValueError that names them."""
    x = jnp.zeros(x_shape)
    mask = None if mask_shape is None else jnp.ones(mask_shape)
    with pytest.raises(ValueError, match=match):
        ops.partial_conv(x, mask, jnp.zeros(kernel_shape))


@pytest.mark.parametrize("padding", ["FULL", -1, (1, 2, 3), ((1, 2), (3,))])
def test_bad_padding_is_rejected(padding):
    """Padding outside the documented forms raises a ValueError quoting it."""
    with pytest.raises(ValueError, match="padding"):
        ops.partial_conv(jnp.zeros((1, 8, 8, 1)), None, jnp.zeros((3, 3, 1, 1)), padding=padding)


def test_bad_strides_are_rejected():
    """Zero or three-element strides raise a ValueError."""
    for strides in (0, (1, 2, 3)):
        with pytest.raises(ValueError, match="strides"):
            ops.partial_conv(jnp.zeros((1, 8, 8, 1)), None, jnp.zeros((3, 3, 1, 1)),
                             strides=strides)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv_upsampled_equals_conv_of_upsampled_input(k):
    """The phase-decomposed low-resolution form equals convolving the nearest-upsampled input."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 3, 4)).astype(np.float32)
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    pad = (k - 1) // 2
    expected = reference.plain_conv_valid(np.pad(up, ((0, 0), (pad, pad), (pad, pad), (0, 0))),
                                          kernel)
    y = ops.conv_upsampled(jnp.asarray(x), jnp.asarray(kernel))
    _assert_close(y, expected, np.abs(expected).max())


@pytest.mark.parametrize("k,min_pixels", [(3, 0), (5, 0), (3, 10**6)])
def test_upsample_concat_form_equals_paper_decoder_layer(k, min_pixels):
    """Decoder layer: upsample features and mask, concat the skip, per-channel-mask pconv.

    min_pixels=0 takes the low-resolution phase form, 10**6 the full-size concatenation.
    """
    rng = np.random.default_rng(8)
    xl = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    ml = (rng.random((2, 4, 5, 1)) < 0.1).astype(np.float32)
    xs = rng.normal(size=(2, 8, 10, 3)).astype(np.float32)
    ms = (rng.random((2, 8, 10, 1)) < 0.05).astype(np.float32)
    kernel = rng.normal(size=(k, k, 9, 5)).astype(np.float32)
    bias = rng.normal(size=(5,)).astype(np.float32)
    y, m = ops.partial_conv_upsample_concat((jnp.asarray(xl), jnp.asarray(ml)),
                                            (jnp.asarray(xs), jnp.asarray(ms)),
                                            jnp.asarray(kernel), jnp.asarray(bias),
                                            low_res_min_pixels=min_pixels)
    up = lambda a: np.repeat(np.repeat(a, 2, axis=1), 2, axis=2)  # noqa: E731
    feats = np.concatenate([up(xl), xs], axis=3)
    per_channel = np.concatenate([np.repeat(up(ml), 6, 3), np.repeat(ms, 3, 3)], axis=3)
    y_ref, m_ref = reference.partial_conv_loop(feats, per_channel, kernel, bias, (1, 1),
                                               (k - 1) // 2)
    _assert_close(y, y_ref, np.abs(y_ref).max())
    np.testing.assert_array_equal(np.asarray(m), m_ref)
    assert 0 < m_ref.mean() < 1  # holes survive somewhere: the empty-window path is exercised


def test_upsample_concat_rejects_mismatched_sizes():
    """A skip that is not twice the low-resolution size is refused, naming both shapes."""
    with pytest.raises(ValueError, match="twice the spatial size"):
        ops.partial_conv_upsample_concat((jnp.zeros((1, 4, 4, 2)), jnp.ones((1, 4, 4, 1))),
                                         (jnp.zeros((1, 6, 8, 1)), jnp.ones((1, 6, 8, 1))),
                                         jnp.zeros((3, 3, 3, 2)))


@pytest.mark.parametrize("mask_channels", [1, 3])
def test_ratio_cap_matches_numpy_loop(mask_channels):
    """max_ratio (UNetConfig.ratio_cap, not the paper's form): each window's scaling is
    min(sum(1)/sum(M), cap), window by window, in the plain and the decoder's concat form;
    on sparse masks the cap changes the output (some windows' ratio exceeds it)."""
    rng = np.random.default_rng(30)
    x = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    mask = (rng.random((2, 12, 10, mask_channels)) < 0.15).astype(np.float32)
    kernel = rng.normal(size=(5, 5, 3, 4)).astype(np.float32)
    bias = rng.normal(size=(4,)).astype(np.float32)
    y, m = ops.partial_conv(jnp.asarray(x), jnp.asarray(mask), jnp.asarray(kernel),
                            jnp.asarray(bias), strides=2, padding=2, max_ratio=4.0)
    y_ref, m_ref = reference.partial_conv_loop(x, mask, kernel, bias, (2, 2), 2, max_ratio=4.0)
    _assert_close(y, y_ref, np.abs(y_ref).max())
    np.testing.assert_array_equal(np.asarray(m), m_ref)
    paper, _ = reference.partial_conv_loop(x, mask, kernel, bias, (2, 2), 2)
    assert np.abs(paper - y_ref).max() > 0.1  # the cap bites on these windows
    # the decoder layer: upsampled low-resolution part and skip, capped the same way
    xl, ml = x[:, ::2, ::2], (rng.random((2, 6, 5, 1)) < 0.2).astype(np.float32)
    ms = mask[..., :1]
    k3 = rng.normal(size=(3, 3, 6, 4)).astype(np.float32)
    y, _ = ops.partial_conv_upsample_concat((jnp.asarray(xl), jnp.asarray(ml)),
                                            (jnp.asarray(x), jnp.asarray(ms)),
                                            jnp.asarray(k3), jnp.asarray(bias), max_ratio=4.0)
    up = lambda a: np.repeat(np.repeat(a, 2, axis=1), 2, axis=2)  # noqa: E731
    per_channel = np.concatenate([np.repeat(up(ml), 3, 3), np.repeat(ms, 3, 3)], axis=3)
    y_ref, _ = reference.partial_conv_loop(np.concatenate([up(xl), x], 3), per_channel, k3,
                                           bias, (1, 1), 1, max_ratio=4.0)
    _assert_close(y, y_ref, np.abs(y_ref).max())
