"""pconv_jax.losses and pconv_jax.vgg against NumPy implementations of the formulas."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from pconv_jax import losses, vgg
from tests import reference


def _images(rng, n=2, size=16):
    output = rng.uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)
    target = rng.uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)
    mask = np.ones((n, size, size, 1), np.float32)
    mask[0, 0:5, 3:9] = 0  # touches the top border
    mask[1, 9:16, 12:16] = 0  # touches the bottom-right corner
    mask[1, 4, 4] = 0  # an isolated one-pixel hole
    return output, target, mask


def _toy_features_jax(x):
    """A small nonlinear feature map standing in for VGG in term tests."""
    n, h, w, c = x.shape
    pooled = x.reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))
    return [jnp.tanh(x * 1.5), pooled**2 + pooled]


def _toy_features_np(x):
    n, h, w, c = x.shape
    pooled = x.reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))
    return [np.tanh(x * 1.5), pooled**2 + pooled]


def test_each_term_matches_its_formula():
    """All six terms equal NumPy implementations of DESIGN.md's formulas (batch 2, border holes)."""
    output, target, mask = _images(np.random.default_rng(0))
    terms = losses.loss_terms(jnp.asarray(output), jnp.asarray(target), jnp.asarray(mask),
                              _toy_features_jax)
    expected = reference.loss_terms(output, target, mask, _toy_features_np)
    assert set(terms) == set(losses.TERMS)
    for name in losses.TERMS:
        np.testing.assert_allclose(float(terms[name]), expected[name], rtol=2e-5, err_msg=name)


def test_tv_of_a_one_pixel_hole_counted_by_hand():
    """One hole pixel in a 5x5 image: P is its 3x3 block, 6 horizontal + 6 vertical pairs."""
    grid = np.add.outer(np.arange(5.0), np.arange(5.0))  # I(i, j) = i + j: every pair differs by 1
    image = np.repeat(grid[None, :, :, None], 3, axis=3).astype(np.float32)
    mask = np.ones((1, 5, 5, 1), np.float32)
    mask[0, 2, 2] = 0
    tv = losses.tv_loss(jnp.asarray(image), jnp.asarray(mask))
    assert float(tv) == pytest.approx(12 * 3 / (5 * 5 * 3))


def test_gram_normalisation():
    """G = F^T F / (C H W): for constant features a, every entry is a^2 / C."""
    feats = jnp.full((2, 4, 6, 5), 3.0)
    np.testing.assert_allclose(np.asarray(losses.gram_matrix(feats)), np.full((2, 5, 5), 9 / 5),
                               rtol=1e-6)
    rng = np.random.default_rng(1)
    f = rng.normal(size=(3, 4, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(losses.gram_matrix(jnp.asarray(f))), reference.gram(f),
                               rtol=1e-5, atol=1e-6)


def test_total_loss_uses_paper_weights_and_drops_zero_weights():
    """Paper weights 1, 6, 0.05, 120, 120, 0.1; a zero weight removes its term, even a NaN one."""
    assert losses.LossWeights().as_dict() == {"valid": 1.0, "hole": 6.0, "perceptual": 0.05,
                                              "style_out": 120.0, "style_comp": 120.0, "tv": 0.1}
    terms = {name: jnp.float32(i + 1) for i, name in enumerate(losses.TERMS)}
    assert float(losses.total_loss(terms)) == pytest.approx(
        1 * 1 + 6 * 2 + 0.05 * 3 + 120 * 4 + 120 * 5 + 0.1 * 6, rel=1e-6)
    terms["tv"] = jnp.float32(jnp.nan)
    no_tv = losses.LossWeights(tv=0.0)
    assert float(losses.total_loss(terms, no_tv)) == pytest.approx(1 + 12 + 0.15 + 480 + 600)


def _write_weights(tmp_path, fmt, weights):
    path = tmp_path / f"vgg16.{fmt}"
    if fmt == "npz":
        np.savez(path, **weights)
    else:
        save_file(weights, str(path))
    return path


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_vgg_features_match_numpy_forward(tmp_path, fmt):
    """load_vgg16 + VGG16Features equal an OIHW NumPy forward with the same random weights."""
    weights = vgg.random_weights(seed=3)
    weights["classifier.0.weight"] = np.zeros((4, 4), np.float32)  # extra keys are ignored
    model = vgg.load_vgg16(_write_weights(tmp_path, fmt, weights))
    images = np.random.default_rng(2).uniform(-1, 1, size=(2, 24, 24, 3)).astype(np.float32)
    pools = model(jnp.asarray(images))
    expected = reference.vgg16_pools(images, weights)
    assert [p.shape for p in pools] == [(2, 12, 12, 64), (2, 6, 6, 128), (2, 3, 3, 256)]
    for got, want in zip(pools, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_loss_terms_with_vgg_match_reference():
    """perceptual and style through VGG16Features equal the formulas on NumPy VGG features."""
    weights = vgg.random_weights(seed=4)
    model = vgg.VGG16Features(weights)
    output, target, mask = _images(np.random.default_rng(5))
    terms = losses.loss_terms(jnp.asarray(output), jnp.asarray(target), jnp.asarray(mask), model)
    expected = reference.loss_terms(output, target, mask,
                                    lambda x: reference.vgg16_pools(x, weights))
    for name in ("perceptual", "style_out", "style_comp"):
        np.testing.assert_allclose(float(terms[name]), expected[name], rtol=1e-4, err_msg=name)


def test_gradients_reach_output_not_vgg():
    """d total / d output is non-zero (and zero nowhere it should not be); VGG weights get none."""
    model = vgg.VGG16Features(vgg.random_weights(seed=6))
    output, target, mask = _images(np.random.default_rng(7))
    assert not jax.tree.leaves(nnx.state(model, nnx.Param))  # nothing for an optimizer to hold

    def loss(out, vgg_state):
        features = nnx.merge(graphdef, vgg_state)
        terms = losses.loss_terms(out, jnp.asarray(target), jnp.asarray(mask), features)
        return losses.total_loss(terms)

    graphdef, state = nnx.split(model)
    g_out, g_vgg = jax.grad(loss, argnums=(0, 1))(jnp.asarray(output), state)
    g_out = np.asarray(g_out)
    assert np.all(np.isfinite(g_out)) and np.any(g_out != 0)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(g_vgg))


def test_loss_shape_errors():
    """Mismatched output/target or mask shapes are refused with both shapes named."""
    with pytest.raises(ValueError, match="must be equal"):
        losses.loss_terms(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 4, 3)),
                          jnp.ones((1, 8, 8, 1)), _toy_features_jax)
    with pytest.raises(ValueError, match=r"mask must be \(1, 8, 8, 1\)"):
        losses.loss_terms(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)),
                          jnp.ones((1, 8, 8, 3)), _toy_features_jax)


def test_bad_weight_files(tmp_path):
    """Missing file, missing key, wrong shape, unknown extension: errors that name the problem."""
    with pytest.raises(FileNotFoundError, match="not found"):
        vgg.load_vgg16(tmp_path / "nope.safetensors")
    weights = vgg.random_weights()
    del weights["features.12.bias"]
    with pytest.raises(vgg.WeightFileError, match="missing key 'features.12.bias'"):
        vgg.load_vgg16(_write_weights(tmp_path, "npz", weights))
    weights = vgg.random_weights()
    weights["features.5.weight"] = np.zeros((128, 64, 5, 5), np.float32)
    with pytest.raises(vgg.WeightFileError,
                       match=r"'features.5.weight' has shape \(128, 64, 5, 5\), expected "
                             r"\(128, 64, 3, 3\)"):
        vgg.load_vgg16(_write_weights(tmp_path, "safetensors", weights))
    (tmp_path / "vgg.h5").write_bytes(b"x")
    with pytest.raises(vgg.WeightFileError, match="unsupported"):
        vgg.load_vgg16(tmp_path / "vgg.h5")


def test_damaged_and_odd_weight_files(tmp_path):
    """Bytes that are not a safetensors/npz file and non-finite values are named errors; an
    .npz with an extra non-tensor entry loads (extra keys are ignored, as in torchvision)."""
    for name in ("garbage.safetensors", "garbage.npz"):
        (tmp_path / name).write_bytes(b"garbage")
        with pytest.raises(vgg.WeightFileError, match=f"cannot read .*{name}"):
            vgg.load_vgg16(tmp_path / name)
    weights = vgg.random_weights()
    np.savez(tmp_path / "extra.npz", **weights, notes=np.array({"a": 1}, dtype=object))
    vgg.load_vgg16(tmp_path / "extra.npz")
    weights["features.7.bias"] = np.full_like(weights["features.7.bias"], np.nan)
    with pytest.raises(vgg.WeightFileError, match="'features.7.bias' must hold finite"):
        vgg.load_vgg16(_write_weights(tmp_path, "npz", weights))


def test_pth_without_torch_says_what_to_do(tmp_path):
    """A .pth file on a machine without torch: the error says install torch or convert."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed here; the .pth path is exercised by the converter")
    (tmp_path / "vgg16.pth").write_bytes(b"not read")
    with pytest.raises(vgg.WeightFileError, match="install torch.*convert"):
        vgg.load_vgg16(tmp_path / "vgg16.pth")


def test_random_weights_warn():
    """Random VGG weights are only had with a warning about the meaningless terms."""
    with pytest.warns(UserWarning, match="meaningless"):
        vgg.random_vgg16()


def test_convert_cli_roundtrip(tmp_path):
    """`python -m pconv_jax.vgg convert` keeps the 14 tensors, bit for bit, and errors cleanly."""
    weights = vgg.random_weights(seed=8)
    weights["classifier.6.bias"] = np.zeros((1000,), np.float32)
    src = _write_weights(tmp_path, "npz", weights)
    dst = tmp_path / "out" / "vgg16.safetensors"
    run = subprocess.run([sys.executable, "-m", "pconv_jax.vgg", "convert", str(src), str(dst)],
                         capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stderr
    converted = vgg.read_weights(dst)
    assert set(converted) == set(vgg.expected_shapes())
    for key, value in converted.items():
        np.testing.assert_array_equal(value, weights[key])
    bad = subprocess.run([sys.executable, "-m", "pconv_jax.vgg", "convert",
                          str(tmp_path / "missing.npz"), str(dst)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


L1_ONLY = losses.LossWeights(perceptual=0, style_out=0, style_comp=0)


def _conv_count(weights, log_zero_terms, model, output, target, mask):
    """Convolutions in the lowered value-and-gradient of the total loss w.r.t. the output."""
    def total(out):  # the terms come out too, as in the train step: nothing is dead code
        terms = losses.loss_terms(out, target, mask, model, weights,
                                  log_zero_terms=log_zero_terms)
        return losses.total_loss(terms, weights), terms

    text = jax.jit(jax.value_and_grad(total, has_aux=True)).lower(output).as_text()
    return text.count("stablehlo.convolution")


def test_zero_weighted_vgg_terms_cost_no_vgg_backward():
    """VGG-16 up to pool3 has 7 convolutions. With the three VGG weights at 0 the loss and its
    gradient contain none; logging them adds exactly one forward pass (7, no backward); the
    paper's weights need forwards and backwards (many more)."""
    model = vgg.VGG16Features(vgg.random_weights(seed=1))
    output, target, mask = (jnp.asarray(a) for a in _images(np.random.default_rng(8)))
    assert _conv_count(L1_ONLY, False, model, output, target, mask) == 0
    assert _conv_count(L1_ONLY, True, model, output, target, mask) == 7
    assert _conv_count(losses.LossWeights(), False, model, output, target, mask) > 14
    # style_out alone: [I_out] with a gradient, I_gt without; I_comp is not passed at all
    style_out = losses.LossWeights(perceptual=0, style_comp=0)
    assert _conv_count(style_out, False, model, output, target, mask) == 7 + 7 + 7


def test_zero_weighted_terms_are_absent_or_logged_forward_only():
    """Without log_zero_terms a 0-weighted VGG term is absent (never a 0); with it, each term
    has the value of the formula, and the total's gradient is that of the weighted terms."""
    weights = vgg.random_weights(seed=2)
    model = vgg.VGG16Features(weights)
    output, target, mask = _images(np.random.default_rng(9))
    args = (jnp.asarray(output), jnp.asarray(target), jnp.asarray(mask), model)
    skipped = losses.loss_terms(*args, L1_ONLY)
    assert set(skipped) == {"valid", "hole", "tv"} == set(losses.logged_terms(L1_ONLY))
    logged = losses.loss_terms(*args, L1_ONLY, log_zero_terms=True)
    expected = reference.loss_terms(output, target, mask,
                                    lambda x: reference.vgg16_pools(x, weights))
    for name in losses.TERMS:
        np.testing.assert_allclose(float(logged[name]), expected[name], rtol=1e-4, err_msg=name)

    def total(out, log):
        terms = losses.loss_terms(out, *args[1:], L1_ONLY, log_zero_terms=log)
        return losses.total_loss(terms, L1_ONLY)

    def l1_formula(out):  # valid + 6 hole + 0.1 tv from the formulas, no VGG anywhere
        comp = losses.composite(out, args[1], args[2])
        return (losses.valid_loss(out, args[1], args[2]) + 6 * losses.hole_loss(out, *args[1:3])
                + 0.1 * losses.tv_loss(comp, args[2]))

    want = jax.grad(l1_formula)(args[0])
    for log in (False, True):
        np.testing.assert_allclose(jax.grad(total)(args[0], log), want, rtol=1e-6, atol=1e-9)
    with pytest.raises(KeyError, match="perceptual"):
        losses.total_loss(skipped, losses.LossWeights())
    with pytest.raises(ValueError, match="need VGG features"):
        losses.loss_terms(*args[:3], None, losses.LossWeights())
