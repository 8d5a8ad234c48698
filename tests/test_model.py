"""pconv_jax.model: the paper's layer table, a NumPy reference forward, holes, masks, BatchNorm."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from pconv_jax.model import PConvUNet, UNetConfig, trainable
from tests import reference

# DESIGN.md §1, written out: (kernel, stride, out channels, BatchNorm, activation).
PAPER_TABLE = (
    [(7, 2, 64, False, "relu"), (5, 2, 128, True, "relu"), (5, 2, 256, True, "relu")]
    + [(3, 2, 512, True, "relu")] * 5
    + [(3, 1, c, True, "leaky_relu") for c in (512, 512, 512, 512, 256, 128, 64)]
    + [(3, 1, 3, False, None)]
)


def _blocks(model):
    return list(model.encoder) + list(model.decoder)


def test_paper_preset_matches_the_layer_table():
    """PConv1-16: kernel shapes, strides, BatchNorm, bias and activation as in the paper."""
    model = PConvUNet(UNetConfig.paper(), rngs=nnx.Rngs(0))
    blocks = _blocks(model)
    assert len(blocks) == 16
    encoder_out = [3] + [row[2] for row in PAPER_TABLE[:8]]  # input, PConv1..8 widths
    for n, (block, (k, stride, cout, bn, act)) in enumerate(zip(blocks, PAPER_TABLE, strict=True)):
        if n < 8:
            cin = encoder_out[n]
        else:  # upsampled previous output + skip (PConv7 ... PConv1, then the image)
            cin = PAPER_TABLE[n - 1][2] + encoder_out[15 - n]
        assert block.kernel[...].shape == (k, k, cin, cout), f"PConv{n + 1}"
        assert block.stride == stride
        assert (block.bn is not None) == bn
        assert (block.bias is not None) == (not bn)  # a bias only where no BatchNorm follows
        assert block.activation == act
    assert sum(b.kernel[...].size for b in blocks) == 32_848_849


@pytest.mark.slow
def test_paper_preset_forward_at_512():
    """The full-size network maps a 512x512 image and mask to (1,512,512,3) and a full mask."""
    model = PConvUNet(UNetConfig.paper(), rngs=nnx.Rngs(0))
    model.eval()
    image = jax.random.uniform(jax.random.key(0), (1, 512, 512, 3), minval=-1, maxval=1)
    mask = jnp.ones((1, 512, 512, 1)).at[:, 100:300, 200:260].set(0)
    out, out_mask = nnx.jit(lambda m, x, k: m(x, k))(model, image, mask)
    assert out.shape == (1, 512, 512, 3) and out_mask.shape == (1, 512, 512, 1)
    assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(out_mask == 1))


def test_paper_256_preset_has_depth_7():
    """The 256-px preset drops one 512-wide level from encoder and decoder."""
    cfg = UNetConfig.paper_256()
    model = PConvUNet(cfg, rngs=nnx.Rngs(0))
    assert cfg.depth == 7 and len(model.encoder) == 7 and len(model.decoder) == 7
    assert cfg.decoder_widths == (512, 512, 512, 256, 128, 64, 3)


def _randomise_batchnorm(model, rng):
    for block in _blocks(model):
        if block.bn is not None:
            c = block.bn.mean[...].shape[0]
            block.bn.mean[...] = jnp.asarray(rng.normal(size=c) * 0.5, jnp.float32)
            block.bn.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=c), jnp.float32)
            block.bn.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, size=c), jnp.float32)
            block.bn.bias[...] = jnp.asarray(rng.normal(size=c) * 0.1, jnp.float32)
        if block.bias is not None:
            block.bias[...] = jnp.asarray(rng.normal(size=block.bias[...].shape), jnp.float32)


def test_forward_matches_numpy_reference_network():
    """Eval-mode forward equals a NumPy UNet written with full per-channel decoder masks."""
    cfg = UNetConfig.tiny(depth=3, width=4, image_size=16)
    model = PConvUNet(cfg, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    _randomise_batchnorm(model, rng)
    model.eval()
    image = rng.uniform(-1, 1, size=(3, 16, 16, 3)).astype(np.float32)
    mask = np.ones((3, 16, 16, 1), np.float32)
    mask[0, 3:11, 4:9] = 0
    mask[1] = (rng.random((16, 16, 1)) < 0.5).astype(np.float32)
    mask[2] = 0
    mask[2, 15, 15] = 1  # a lone valid pixel in the corner: the output mask keeps holes
    layers = []
    for n, block in enumerate(_blocks(model)):
        bn = None if block.bn is None else tuple(
            np.asarray(v[...]) for v in (block.bn.mean, block.bn.var, block.bn.scale,
                                         block.bn.bias))
        layers.append({
            "kernel": np.asarray(block.kernel[...]), "stride": 2 if n < cfg.depth else 1,
            "bias": None if block.bias is None else np.asarray(block.bias[...]), "bn": bn,
        })
    out, out_mask = model(jnp.asarray(image), jnp.asarray(mask))
    ref_out, ref_mask = reference.pconv_unet(image, mask, layers)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=1e-4,
                               atol=1e-4 * np.abs(ref_out).max())
    np.testing.assert_array_equal(np.asarray(out_mask), ref_mask)


def test_unet_hole_invariance():
    """Eval mode: x in the holes never matters; a valid pixel next to a hole does."""
    cfg = UNetConfig.tiny(depth=3, width=4, image_size=32)
    model = PConvUNet(cfg, rngs=nnx.Rngs(2))
    _randomise_batchnorm(model, np.random.default_rng(1))
    model.eval()
    rng = np.random.default_rng(2)
    image = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
    mask = np.ones((2, 32, 32, 1), np.float32)
    mask[:, 8:20, 10:24] = 0
    other = image + rng.normal(size=image.shape).astype(np.float32) * 5 * (1 - mask)
    out1, m1 = model(jnp.asarray(image), jnp.asarray(mask))
    out2, m2 = model(jnp.asarray(other), jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out2))
    np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
    nudged = image.copy()
    nudged[0, 14, 9] += 1.0  # valid pixel left of the hole's edge
    out3, _ = model(jnp.asarray(nudged), jnp.asarray(mask))
    assert np.abs(np.asarray(out3 - out1))[0, 14, 10].max() > 1e-5  # hole pixel next to it


@pytest.mark.parametrize("seed", range(4))
def test_output_mask_is_full_for_irregular_holes(seed):
    """Holes of up to 60% of the image (the paper's largest bucket) are filled completely."""
    cfg = UNetConfig.tiny(depth=4, width=4, image_size=32)
    model = PConvUNet(cfg, rngs=nnx.Rngs(0))
    model.eval()
    rng = np.random.default_rng(seed)
    mask = np.ones((1, 32, 32, 1), np.float32)
    while mask.mean() > 0.4:  # random rectangles until 60% is hole
        top, left = rng.integers(0, 28, size=2)
        height, width = rng.integers(2, 12, size=2)
        mask[0, top:top + height, left:left + width] = 0
    _, out_mask = model(jnp.zeros((1, 32, 32, 3)), jnp.asarray(mask))
    assert bool(jnp.all(out_mask == 1))


@pytest.mark.parametrize("position", [(0, 0), (16, 16), (8, 4)])
def test_output_mask_is_full_from_one_valid_pixel(position):
    """A lone valid pixel in the upper-left part or centre fills a 2x2 bottleneck and the output.

    Not every position does: a lone pixel at odd coordinates (the bottom-right corner, say)
    reaches only part of the bottleneck with the paper's (k-1)//2 padding, and the output mask
    keeps a hole in the first row or column; test_forward_matches_numpy_reference_network checks
    that case against the NumPy reference network.
    """
    cfg = UNetConfig.tiny(depth=4, width=4, image_size=32)
    model = PConvUNet(cfg, rngs=nnx.Rngs(0))
    model.eval()
    mask = jnp.zeros((1, 32, 32, 1)).at[0, position[0], position[1]].set(1)
    _, out_mask = model(jnp.zeros((1, 32, 32, 3)), mask)
    assert bool(jnp.all(out_mask == 1))


def test_all_hole_input_gives_empty_mask_and_zero_output():
    """Without any valid pixel nothing is known: output mask 0 and, with it, output 0."""
    cfg = UNetConfig.tiny(depth=3, width=4, image_size=16)
    model = PConvUNet(cfg, rngs=nnx.Rngs(0))
    model.eval()
    out, out_mask = model(jnp.ones((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 1)))
    assert bool(jnp.all(out_mask == 0)) and bool(jnp.all(out == 0))


@pytest.mark.parametrize(
    "shape,match",
    [((1, 500, 512, 3), "height 500 .* nearest valid sizes: 256 or 512"),
     ((1, 512, 200, 3), "width 200 .* nearest valid sizes: 256\n"),
     ((1, 512, 512, 4), r"image must be \(N,H,W,3\)")],
)
def test_bad_image_sizes_name_the_valid_ones(shape, match):
    """Sizes that are not multiples of 2**depth are refused with the nearest valid sizes."""
    model = PConvUNet(UNetConfig.paper(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda x, m: model(x, m), jax.ShapeDtypeStruct(shape, jnp.float32),
                       jax.ShapeDtypeStruct((*shape[:3], 1), jnp.float32))


def test_mask_shape_error():
    """A mask that is not (N,H,W,1) is refused, naming both shapes."""
    model = PConvUNet(UNetConfig.tiny(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"mask must be \(N,H,W,1\)"):
        model(jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3)))


def test_config_validation():
    """Inconsistent configs are refused at construction."""
    with pytest.raises(ValueError, match="encoder_widths has 2 entries"):
        UNetConfig(depth=3, encoder_widths=(4, 8), encoder_kernels=(7, 5, 5), image_size=64)
    with pytest.raises(ValueError, match="odd"):
        dataclasses.replace(UNetConfig.tiny(), decoder_kernel=4)
    for cap in (0.5, -1, float("inf"), True, "4"):  # 0 (no cap) or a number >= 1
        with pytest.raises(ValueError, match="ratio_cap must be 0"):
            dataclasses.replace(UNetConfig.tiny(), ratio_cap=cap)


def _loss(model, image, mask, target):
    out, _ = model(image, mask)
    return jnp.mean(jnp.abs(out - target))


def _batch(seed=0, size=32, n=2):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.uniform(-1, 1, size=(n, size, size, 3)), jnp.float32)
    mask = np.ones((n, size, size, 1), np.float32)
    mask[:, 5:20, 8:25] = 0
    target = jnp.asarray(rng.uniform(-1, 1, size=(n, size, size, 3)), jnp.float32)
    return image, jnp.asarray(mask), target


def test_gradients_finite_and_nonzero_for_every_parameter():
    """Train mode on a batch with holes: every parameter array receives a finite, non-zero grad."""
    model = PConvUNet(UNetConfig.tiny(depth=3, width=4, image_size=32), rngs=nnx.Rngs(0))
    model.train()
    grads = nnx.grad(_loss)(model, *_batch())
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(grads, nnx.Param))
    assert len(leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    for path, g in leaves:
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert bool(jnp.any(g != 0)), path


def test_train_mode_updates_statistics_and_eval_mode_does_not():
    """BatchNorm: train mode moves the running statistics, eval mode leaves them."""
    model = PConvUNet(UNetConfig.tiny(depth=3, width=4, image_size=32), rngs=nnx.Rngs(0))
    image, mask, _ = _batch()
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    model.eval()
    model(image, mask)
    after_eval = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    jax.tree.map(np.testing.assert_array_equal, before, after_eval)
    model.train()
    model(image, mask)
    after_train = nnx.state(model, nnx.BatchStat)
    changed = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))), before, after_train)
    assert all(jax.tree.leaves(changed))


def test_frozen_encoder_batchnorm_stays_fixed_while_decoder_learns():
    """Fine-tuning: encoder BN statistics and affine fixed through a step; the decoder's move."""
    model = PConvUNet(UNetConfig.tiny(depth=3, width=4, image_size=32), rngs=nnx.Rngs(0))
    model.train()
    # A phase-1 step first, so Adam's moments for the encoder BN are non-zero.
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    optimizer.update(model, nnx.grad(_loss)(model, *_batch(0)))
    model.freeze_encoder_batchnorm()
    wrt = trainable(model)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=wrt)
    snapshot = {
        name: [np.asarray(getattr(b.bn, v)[...]) for b in blocks if b.bn is not None
               for v in ("mean", "var", "scale", "bias")]
        for name, blocks in (("encoder", model.encoder), ("decoder", model.decoder))
    }
    kernels_before = [np.asarray(b.kernel[...]) for b in model.encoder]
    grads = nnx.grad(_loss, argnums=nnx.DiffState(0, wrt))(model, *_batch(1))
    optimizer.update(model, grads)
    enc_after = [np.asarray(getattr(b.bn, v)[...]) for b in model.encoder if b.bn is not None
                 for v in ("mean", "var", "scale", "bias")]
    dec_after = [np.asarray(getattr(b.bn, v)[...]) for b in model.decoder if b.bn is not None
                 for v in ("mean", "var", "scale", "bias")]
    for before, after in zip(snapshot["encoder"], enc_after, strict=True):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(snapshot["decoder"], dec_after, strict=True):
        assert np.any(before != after)
    for before, block in zip(kernels_before, model.encoder, strict=True):
        assert np.any(before != np.asarray(block.kernel[...]))  # encoder convolutions still learn
