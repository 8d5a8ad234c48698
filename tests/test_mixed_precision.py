"""compute_dtype=bfloat16 through the whole step: the UNet's and VGG-16's convolutions in
bfloat16, float32 where precision matters, and a loss that trains like float32's."""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pconv_jax import config as config_lib
from pconv_jax import losses, train, vgg
from pconv_jax.model import PConvUNet
from tests.train_util import one_device_step, tiny_config

TENSOR = re.compile(r"tensor<([0-9x]*)x?(bf16|f32|f16|i\d+|i1)>")


def _step_and_inputs(compute_dtype: str, weights: losses.LossWeights | None = None):
    """(jitted train step, its arguments) of the tiny configuration, the paper's loss unless
    `weights` says otherwise."""
    config = tiny_config(steps=1)
    config.train.compute_dtype = compute_dtype
    if weights is not None:
        config.loss.weights.update(dataclasses.asdict(weights))
    step, built = one_device_step(config)
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.integers(0, 256, (2, 32, 32, 3), np.uint8))
    mask = jnp.asarray((rng.uniform(size=(2, 32, 32, 1)) > 0.3).astype(np.uint8))
    args = (built.arrays(), built.vgg_state, train.empty_record(built.record_keys), image, mask)
    return step, args


def _ops(text: str, name: str, batched: bool | None = None) -> list[list[str]]:
    """The element types of each `stablehlo.<name>` op's signature: [operands..., result];
    with `batched`, only the dots with (True) or without (False) batching dimensions."""
    types = []
    for line in text.splitlines():
        if f"stablehlo.{name}" in line and "->" in line:
            if batched is not None and ("batching_dims" in line) != batched:
                continue
            signature = line[line.rindex(": (") + 3:] if ": (" in line else line
            types.append([m.group(2) for m in TENSOR.finditer(signature)])
    return types


def test_bfloat16_step_has_every_convolution_in_bfloat16():
    """In the lowered bfloat16 step, every convolution (UNet and VGG-16, forward and
    backward, including the UNet's small convolutions that ops.py runs as window-times-kernel
    dots) has bfloat16 operands; the Gram matrices (the batched dots) take bfloat16 features
    and accumulate in float32: 12 of them (out, comp and two of gt, at pool1..3), and their
    gradients stay float32. The float32 step has no bfloat16 at all."""
    step, args = _step_and_inputs("bfloat16")
    text = step.lower(*args).as_text()
    convs = _ops(text, "convolution")
    # VGG-16's share: 7 convolutions on the ground truth, 7 on (out, comp) and 7 for their
    # input gradient; the l1-only step (no VGG) has the UNet's alone
    step_l1, args_l1 = _step_and_inputs("bfloat16", losses.LossWeights(
        perceptual=0, style_out=0, style_comp=0))
    unet_convs = _ops(step_l1.lower(*args_l1).as_text(), "convolution")
    assert len(unet_convs) > 0 and len(convs) == len(unet_convs) + 21, (len(convs),
                                                                      len(unet_convs))
    assert all(t[:2] == ["bf16", "bf16"] for t in convs), [t for t in convs if "f32" in t[:2]]
    window_dots = _ops(text, "dot_general", batched=False)
    assert all(t[:2] == ["bf16", "bf16"] for t in window_dots), window_dots
    grams = _ops(text, "dot_general", batched=True)
    forward = [t for t in grams if t[:2] == ["bf16", "bf16"]]
    assert len(forward) == 12 and all(t[2] == "f32" for t in forward), grams
    assert all(t == ["f32", "f32", "f32"] for t in grams if t not in forward), grams
    step32, args32 = _step_and_inputs("float32")
    assert "bf16" not in step32.lower(*args32).as_text()


def test_parameters_gradients_and_optimizer_state_stay_float32():
    """After a jitted bfloat16 step (XLA's default CPU backend) every logged term is finite,
    the parameters, the optimizer's moments and the logged terms are float32 (the updates
    were float32 gradients), and the VGG kernels are stored bfloat16, their biases float32."""
    step, args = _step_and_inputs("bfloat16")
    state, record = step(*args)
    assert int(record["bad_step"]) < 0, record
    sums = record["sums"]
    assert set(sums) == {"loss", *losses.TERMS}
    assert all(np.isfinite(float(v)) for v in sums.values()), sums
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert leaves and all(x.dtype == jnp.float32 for x in leaves)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(record)
               if jnp.issubdtype(x.dtype, jnp.floating))
    vgg_state = nnx.to_flat_state(args[1])
    assert {str(v.get_value().dtype) for k, v in vgg_state if "kernels" in map(str, k)} == {
        "bfloat16"}
    assert {str(v.get_value().dtype) for k, v in vgg_state if "biases" in map(str, k)} == {
        "float32"}


def test_loss_terms_within_two_percent_of_float32_on_a_fixed_batch():
    """Same weights, same batch: each of the six terms computed with the UNet and VGG-16 in
    bfloat16, eagerly and under jit (XLA's default CPU backend), is within 2 % of the float32
    value."""
    config = tiny_config(steps=1)
    model32 = PConvUNet(config_lib.unet_config(config), rngs=nnx.Rngs(0))
    config.train.compute_dtype = "bfloat16"
    model16 = PConvUNet(config_lib.unet_config(config), rngs=nnx.Rngs(1))
    nnx.update(model16, nnx.state(model32))  # identical parameters and statistics
    rng = np.random.default_rng(1)
    target = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    mask = jnp.asarray((rng.uniform(size=(2, 32, 32, 1)) > 0.3).astype(np.float32))
    weights = vgg.random_weights(0)
    def terms_of(model, features):
        output, _ = model(target, mask)
        return losses.loss_terms(output, target, mask, features)

    terms = {}
    for dtype, model in (("float32", model32), ("bfloat16", model16)):
        features = vgg.VGG16Features(weights, dtype)
        terms[dtype] = terms_of(model, features)
        terms[dtype + " jit"] = nnx.jit(terms_of)(model, features)
    for name in losses.TERMS:
        a = float(terms["float32"][name])
        for dtype in ("bfloat16", "bfloat16 jit", "float32 jit"):
            b = float(terms[dtype][name])
            assert abs(b - a) <= 0.02 * abs(a), (name, dtype, a, b)


@pytest.mark.slow
def test_bfloat16_training_follows_float32(tmp_path):
    """The tiny configuration trained 150 steps by the CLI from the same seed in each dtype
    on XLA's default backend: both hole losses fall below their step-10 values and end within
    10 % of each other."""
    import os
    import subprocess
    import sys

    from tests.train_util import TINY_CLI_OVERRIDES

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    finals = {}
    for dtype in ("float32", "bfloat16"):
        run = subprocess.run(
            [sys.executable, "-m", "pconv_jax.train", "--config", "experiments/configs/demo.py",
             "--workdir", str(tmp_path / dtype), *TINY_CLI_OVERRIDES,
             "--config.train.steps=150", "--config.train.log_every=10",
             "--config.data.workers=0", "--config.vgg.fallback=random",
             f"--config.train.compute_dtype={dtype}"],
            env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        records = [json.loads(line) for line in (tmp_path / dtype / "metrics.jsonl").open()]
        hole = {r["step"]: r["hole"] for r in records}
        assert hole[150] < hole[10], (dtype, hole)
        finals[dtype] = hole[150]
    assert abs(finals["bfloat16"] - finals["float32"]) <= 0.1 * finals["float32"], finals


def test_bfloat16_vgg_under_jit_equals_eager():
    """The bfloat16 VGG-16 under jit on XLA's default CPU backend: finite, and equal to the
    eager features within bfloat16 rounding. (jax 0.12's YNNPACK fusion of a bfloat16
    convolution with its ReLU gives non-finite values; vgg.py applies bias and ReLU in float32,
    which this pins.)"""
    features = vgg.VGG16Features(vgg.random_weights(0), "bfloat16")
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    jitted, eager = nnx.jit(lambda f, x: f(x))(features, x), features(x)
    for a, e in zip(jitted, eager, strict=True):
        a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
        assert np.isfinite(a).all()
        assert np.abs(a - e).max() <= 0.02 * np.abs(e).max()


def test_float16_is_refused_naming_the_key():
    """float16 would need loss scaling, which the step does not do: refused by name."""
    config = tiny_config(steps=1)
    config.train.compute_dtype = "float16"
    with pytest.raises(config_lib.ConfigError, match=r"train\.compute_dtype.*float16"):
        config_lib.check_config(config, 1)


@pytest.mark.parametrize("name", ["paper_places2", "celeba_hq"])
def test_paper_configs_choose_bfloat16(name):
    """The accelerator configs run in bfloat16, and their model gets the authors' mixed
    precision mask eps (1e-6)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, f"experiments/configs/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    assert config.train.compute_dtype == "bfloat16"
    model = config_lib.unet_config(config)
    assert model.dtype == "bfloat16" and model.mask_eps == 1e-6
