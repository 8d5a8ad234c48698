"""`make bench`: partial convolution against plain convolution, the PConv UNet forward, the
training step, the input pipeline and the training loop.

    .venv/bin/python -m benchmarks.bench [--quick] [--out benchmarks/results/NAME.json]
    .venv/bin/python -m benchmarks.bench --only pipeline   # or loop, train, inpaint (512 px;
                                                           # 256 px: paper_256, naoto0804
                                                           # converted), blocks,
                                                           # metrics (FID, LPIPS, evaluate),
                                                           # dtype (float32 vs bfloat16 step),
                                                           # export (ONNX, StableHLO, JAX)

Times are medians of repeated jitted calls after warm-up; FLOPs come from XLA's cost analysis
of the compiled function (the analytic 2*MACs where XLA reports none). Results print as a
Markdown table and are written as JSON with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from pconv_jax import losses, vgg
from pconv_jax.model import PConvUNet, UNetConfig
from pconv_jax.ops import partial_conv


def median_seconds(fn: Callable, *args, repeats: int, warmup: int = 2) -> float:
    """Median wall time of `fn(*args)` (blocked until ready) after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_stats(fn: Callable, *args) -> dict:
    """FLOPs and memory of the compiled `fn` as XLA reports them."""
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    stats = {"flops": float(cost.get("flops", 0.0)) if cost else 0.0}
    try:
        mem = compiled.memory_analysis()
        stats["peak_bytes"] = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                  + mem.output_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports memory
        stats["peak_bytes"] = None
    return stats


# Layer shapes of the paper network at 512 px (batch 1): name, input (H, W, Cin), k, stride, Cout.
LAYERS = [
    ("PConv2 (enc)", (256, 256, 64), 5, 2, 128),
    ("PConv4 (enc)", (64, 64, 256), 3, 2, 512),
    ("PConv6 (enc)", (16, 16, 512), 3, 2, 512),
    ("PConv13 (dec)", (64, 64, 768), 3, 1, 256),
    ("PConv15 (dec)", (256, 256, 192), 3, 1, 64),
]
QUICK_LAYERS = [LAYERS[1], LAYERS[2], ("PConv14 (dec, 256px net)", (64, 64, 384), 3, 1, 128)]


def bench_layer(name, in_shape, k, stride, cout, repeats) -> list[dict]:
    """partial_conv (one-channel mask) vs conv + bias of the same shape, fwd and fwd+bwd."""
    h, w, cin = in_shape
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (1, h, w, cin))
    mask = (jax.random.uniform(keys[1], (1, h, w, 1)) > 0.3).astype(jnp.float32)
    kernel = jax.random.normal(keys[2], (k, k, cin, cout)) * 0.05
    bias = jnp.zeros((cout,))
    pad = (k - 1) // 2

    def pconv(x, kernel):
        return partial_conv(x, mask, kernel, bias, strides=stride, padding=pad)[0]

    def plain(x, kernel):
        y = lax.conv_general_dilated(x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias

    def fwd_bwd(f):
        def loss(x, kernel):
            return jnp.sum(f(x, kernel) ** 2)
        return jax.grad(loss, argnums=(0, 1))

    rows = []
    for mode, make in (("fwd", lambda f: f), ("fwd+bwd", fwd_bwd)):
        result = {}
        for impl, f in (("partial_conv", pconv), ("plain_conv", plain)):
            fn = make(f)
            stats = compiled_stats(fn, x, kernel)
            seconds = median_seconds(jax.jit(fn), x, kernel, repeats=repeats)
            result[impl] = {"seconds": seconds, **stats}
        rows.append({
            "layer": name, "mode": mode, "shape": [1, h, w, cin], "kernel": [k, k, cin, cout],
            "stride": stride, **{f"{i}_s": r["seconds"] for i, r in result.items()},
            "flops": result["plain_conv"]["flops"],
            "gflops_per_s": result["partial_conv"]["flops"] / result["partial_conv"]["seconds"]
            / 1e9,
            "ratio": result["partial_conv"]["seconds"] / result["plain_conv"]["seconds"],
        })
    return rows


def bench_unet(config: UNetConfig, batch: int, repeats: int) -> dict:
    """Eval-mode forward of the UNet at its nominal size."""
    model = PConvUNet(config, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    size = config.image_size
    image = jax.random.uniform(jax.random.key(1), (batch, size, size, 3), minval=-1, maxval=1)
    mask = jnp.ones((batch, size, size, 1)).at[:, size // 4: size // 2, size // 3:].set(0)

    def forward(state, image, mask):
        return nnx.merge(graphdef, state)(image, mask)[0]

    stats = compiled_stats(forward, state, image, mask)
    seconds = median_seconds(jax.jit(forward), state, image, mask, repeats=repeats)
    return {
        "net": f"UNet depth {config.depth} @ {size}px", "batch": batch,
        "seconds_per_batch": seconds, "images_per_s": batch / seconds, "flops": stats["flops"],
        "gflops_per_s": stats["flops"] / seconds / 1e9, "peak_bytes": stats["peak_bytes"],
    }


def bench_blocks(config: UNetConfig, repeats: int, ceiling_gflops: float) -> list[dict]:
    """Eval-mode forward block by block (each jitted alone): time, FLOPs, and the time the
    block would take at the measured convolution ceiling."""
    model = PConvUNet(config, rngs=nnx.Rngs(0))
    model.eval()
    size = config.image_size
    x = jax.random.uniform(jax.random.key(1), (1, size, size, 3), minval=-1, maxval=1)
    m = jnp.ones((1, size, size, 1)).at[:, size // 4: size // 2, size // 3:].set(0)
    skips, rows = [(x, m)], []

    def run(name, block, *inputs):
        graphdef, state = nnx.split(block)

        def f(state, *args):
            return nnx.merge(graphdef, state)(*args)

        stats = compiled_stats(f, state, *inputs)
        seconds = median_seconds(jax.jit(f), state, *inputs, repeats=repeats)
        out = jax.jit(f)(state, *inputs)
        rows.append({"block": name, "out_shape": list(out[0].shape), "seconds": seconds,
                     "flops": stats["flops"], "gflops_per_s": stats["flops"] / seconds / 1e9,
                     "seconds_at_ceiling": stats["flops"] / (ceiling_gflops * 1e9)})
        print(f"| {name} | {tuple(out[0].shape)} | {seconds * 1e3:.1f} | "
              f"{stats['flops'] / 1e9:.2f} | {stats['flops'] / seconds / 1e9:.0f} | "
              f"{rows[-1]['seconds_at_ceiling'] * 1e3:.1f} |")
        return out

    print(f"\n| block ({size} px, batch 1) | output | ms | GFLOP | GFLOP/s | ms at ceiling |")
    print("|---|---|---|---|---|---|")
    for i, block in enumerate(model.encoder):
        x, m = run(f"encoder {i + 1}", block, x, m)
        skips.append((x, m))
    skips.pop()
    for j, block in enumerate(model.decoder):
        x, m = run(f"decoder {j + 1}", block, x, m, skips.pop())
    total = sum(r["seconds"] for r in rows)
    ideal = sum(r["seconds_at_ceiling"] for r in rows)
    print(f"| sum | | {total * 1e3:.1f} | {sum(r['flops'] for r in rows) / 1e9:.1f} | | "
          f"{ideal * 1e3:.1f} |")
    return rows


def bench_loss(size: int, batch: int, repeats: int) -> dict:
    """loss_terms with VGG16Features against three plain VGG forwards (its forward floor).

    fwd+bwd: the gradient of the weighted total w.r.t. the output, against three VGG
    forwards plus one input-gradient pass through VGG for the 2N images [I_out; I_comp].
    """
    features = vgg.VGG16Features(vgg.random_weights(0))
    graphdef, state = nnx.split(features)
    keys = jax.random.split(jax.random.key(0), 2)
    output = jax.random.uniform(keys[0], (batch, size, size, 3), minval=-1, maxval=1)
    target = jax.random.uniform(keys[1], (batch, size, size, 3), minval=-1, maxval=1)
    mask = jnp.ones((batch, size, size, 1)).at[:, size // 4: size // 2, size // 3:].set(0)

    def loss(state, output):
        terms = losses.loss_terms(output, target, mask, nnx.merge(graphdef, state))
        return losses.total_loss(terms)

    def three_vgg(state, output):
        f = nnx.merge(graphdef, state)
        return [f(output), f(target), f(jnp.flip(output, 1))]

    def vgg_floor_bwd(state, output):
        f = nnx.merge(graphdef, state)
        pair = jnp.concatenate([output, jnp.flip(output, 1)], axis=0)
        grad = jax.grad(lambda x: sum(jnp.sum(p) for p in f(x)))(pair)
        return grad, f(target)

    result = {"size": size, "batch": batch}
    for name, fn in (("loss_fwd", loss), ("vgg3_fwd", three_vgg),
                     ("loss_fwd_bwd", jax.grad(loss, argnums=1)), ("vgg3_fwd_bwd", vgg_floor_bwd)):
        result[f"{name}_s"] = median_seconds(jax.jit(fn), state, output, repeats=repeats)
        result[f"{name}_flops"] = compiled_stats(fn, state, output)["flops"]
    result["fwd_ratio"] = result["loss_fwd_s"] / result["vgg3_fwd_s"]
    result["fwd_bwd_ratio"] = result["loss_fwd_bwd_s"] / result["vgg3_fwd_bwd_s"]
    return result


def train_config(net: UNetConfig, batch: int, compute_dtype: str = "float32",
                 weights: losses.LossWeights | None = None):
    """The default run config with `net`'s model settings and size, `batch`, `compute_dtype`
    and the loss `weights` (the paper's by default); no VGG file: random VGG-16 weights."""
    from pconv_jax import config as config_lib

    overrides = {"data.image_size": net.image_size, "train.batch_size": batch,
                 "train.compute_dtype": compute_dtype,
                 **{f"model.{k}": v for k, v in config_lib.model_settings(net).items()},
                 **{f"loss.weights.{k}": v for k, v in
                    dataclasses.asdict(weights or losses.LossWeights()).items()}}
    return config_lib.apply_overrides(config_lib.default_config(), overrides)


def _train_state(config):
    """train.create_train_state(config), without the random-VGG warning (intended here)."""
    from pconv_jax import train

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="VGG-16 with RANDOM weights")
        return train.create_train_state(config)


def _one_device_mesh() -> jax.sharding.Mesh:
    """The training step's mesh on the first device alone."""
    return jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))


def _uint8_batch(batch: int, size: int):
    """A fixed uint8 batch: random image (N,S,S,3) and a mask (N,S,S,1) with one hole."""
    image = jax.random.randint(jax.random.key(1), (batch, size, size, 3), 0, 256, jnp.int32)
    mask = jnp.ones((batch, size, size, 1), jnp.uint8).at[:, size // 4: size // 2,
                                                           size // 3:].set(0)
    return image.astype(jnp.uint8), mask


def _time_steps(step, carry: tuple, repeats: int) -> float:
    """Median seconds of `carry = step(*carry)` after two warm-up calls: each call takes the
    last one's outputs, since the step donates its buffers."""
    for _ in range(2):
        carry = jax.block_until_ready(step(*carry))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        carry = jax.block_until_ready(step(*carry))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_train_step(config: UNetConfig, batch: int, repeats: int,
                     compute_dtype: str = "float32",
                     weights: losses.LossWeights | None = None) -> dict:
    """One jitted training step (UNet fwd+bwd, the loss for `weights` (the paper's), Adam):
    train.train_step_fn on a one-device mesh, as the training loop runs it."""
    from pconv_jax import train

    weights = weights or losses.LossWeights()
    state = _train_state(train_config(config, batch, compute_dtype, weights))
    step = train.train_step_fn(state, _one_device_mesh())
    arrays, record = state.arrays(), train.empty_record(state.record_keys)
    image, mask = _uint8_batch(batch, config.image_size)
    args = (arrays, state.vgg_state, record, image, mask)
    stats = compiled_stats(step, *args)
    by_dtype = flops_by_dtype(step.lower(*args).as_text())
    seconds = _time_steps(lambda a, r: step(a, state.vgg_state, r, image, mask),
                          (arrays, record), repeats)  # both donated: threaded through
    loss = "full loss" if weights == losses.LossWeights() else "l1 terms only"
    return {
        "net": f"UNet depth {config.depth} @ {config.image_size}px + {loss}", "batch": batch,
        "compute_dtype": compute_dtype, "seconds_per_step": seconds,
        "images_per_s": batch / seconds, "flops": stats["flops"],
        "gflops_per_s": stats["flops"] / seconds / 1e9, "peak_bytes": stats["peak_bytes"],
        "conv_dot_flops_by_dtype": by_dtype,
    }


# Dense peak FLOP/s by device and dtype (vendor data sheets, SXM parts, no sparsity): MFU.
PEAKS = {"H100": {"bfloat16": 989e12, "float32": 67e12},
         "H200": {"bfloat16": 989e12, "float32": 67e12}}


def _percent(value: float | None) -> str:
    """'12.3 %', or '-' where there is no value."""
    return "-" if value is None else f"{100 * value:.1f} %"


def mfu(flops_per_s: float, dtype: str) -> float | None:
    """Model FLOPs utilisation against the device's data-sheet peak, None where unknown."""
    kind = getattr(jax.devices()[0], "device_kind", "")
    peak = next((p[dtype] for name, p in PEAKS.items() if name in kind), None)
    return None if peak is None else flops_per_s / peak


_TENSOR = re.compile(r"tensor<([0-9x]+)x(bf16|f32|f16)>")


def flops_by_dtype(stablehlo: str) -> dict[str, float]:
    """FLOPs of every convolution and dot_general of a lowered program, by operand dtype:
    2 x output elements x (kernel elements per output channel, or contracted size)."""
    totals: dict[str, float] = {}
    for line in stablehlo.splitlines():
        if "stablehlo.convolution" not in line and "stablehlo.dot_general" not in line:
            continue
        shapes = [([int(d) for d in m.group(1).split("x")], m.group(2))
                  for m in _TENSOR.finditer(line[line.rindex(": ("):])]
        if len(shapes) < 3:
            continue
        (lhs, dtype), (rhs, _), (out, _) = shapes[:3]
        if "stablehlo.convolution" in line:
            kernel_dims = re.search(r"x\[([^\]]*)\]->", line).group(1).replace(" ", "")
            per_output = math.prod(rhs) // rhs[kernel_dims.split(",").index("o")]
        else:
            contracting = re.search(r"contracting_dims = \[([0-9, ]*)\]", line).group(1)
            per_output = math.prod(lhs[int(d)] for d in contracting.split(",") if d.strip())
        totals[dtype] = totals.get(dtype, 0.0) + 2.0 * math.prod(out) * per_output
    return totals


L1_ONLY = losses.LossWeights(perceptual=0, style_out=0, style_comp=0)


def bench_l1_step(config: UNetConfig, batch: int, repeats: int) -> dict:
    """The l1-only step (no VGG) against the UNet's own forward+backward (+ Adam): the cost
    of everything that is not the network."""
    state = _train_state(train_config(config, batch, weights=L1_ONLY))
    graphdef, arrays = nnx.split((state.model, state.optimizer))
    image, mask = _uint8_batch(batch, config.image_size)
    target, fmask = image.astype(jnp.float32) / 127.5 - 1, mask.astype(jnp.float32)

    def bare(arrays, target, mask):  # forward, backward and Adam on a plain l1 loss
        model, optimizer = nnx.merge(graphdef, arrays)
        grads = nnx.grad(lambda m: jnp.mean(jnp.abs(m(target, mask)[0] - target)))(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer))

    bare_stats = compiled_stats(bare, arrays, target, fmask)
    jitted = jax.jit(bare, donate_argnums=0)
    bare_seconds = _time_steps(lambda a: (jitted(a, target, fmask),), (arrays,), repeats)
    row = bench_train_step(config, batch, repeats, weights=L1_ONLY)
    row.update(bare_seconds=bare_seconds, bare_flops=bare_stats["flops"])
    row["time_ratio"] = row["seconds_per_step"] / row["bare_seconds"]
    row["flops_ratio"] = row["flops"] / row["bare_flops"]
    return row


# ---------------------------------------------------------------------------------------------
# The input pipeline and the training loop
# ---------------------------------------------------------------------------------------------


def photo_folders(root: str, count: int = 48, mask_count: int = 48) -> tuple[str, str]:
    """`count` 680x512 JPEGs cut from the bundled photos (random scale, crop, flip, colour)
    and `mask_count` 512 px mask PNGs (white = hole) under `root`; reused when present."""
    from PIL import Image

    from pconv_jax.data import BUNDLED_PHOTOS, bundled_photo
    from pconv_jax.masks import irregular_mask

    images, masks = os.path.join(root, "images"), os.path.join(root, "masks")
    if os.path.isdir(images) and len(os.listdir(images)) == count:
        return images, masks
    os.makedirs(images, exist_ok=True)
    os.makedirs(masks, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = [np.round(bundled_photo(n) * 255).astype(np.uint8) for n in BUNDLED_PHOTOS]
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)])
        scale = rng.uniform(1.4, 2.0) * 512 / min(photo.size)
        photo = photo.resize((round(photo.size[0] * scale), round(photo.size[1] * scale)))
        left = rng.integers(0, photo.size[0] - 680 + 1)
        top = rng.integers(0, photo.size[1] - 512 + 1)
        pixels = np.asarray(photo.crop((left, top, left + 680, top + 512)), np.float32)
        pixels = np.clip(pixels * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(images, f"{i:04d}.jpg"), quality=90)
    for i in range(mask_count):
        hole = irregular_mask(512, rng, float(rng.uniform(0.05, 0.5))) == 0
        Image.fromarray(hole.astype(np.uint8) * 255).save(os.path.join(masks, f"{i:04d}.png"))
    return images, masks


def bench_pipeline(images: str, masks_dir: str, size: int, workers: int,
                   batch: int = 16, batches: int = 40) -> dict:
    """images/s of data.train_dataset + batch_iterator (one thread per worker, trainer idle)
    and this process's own CPU time per image while it receives them."""
    from pconv_jax import data
    from pconv_jax.masks import MaskSource

    ds = data.train_dataset(data.open_source(images), image_size=size, local_batch=batch,
                            seed=0, masks=MaskSource(size, masks_dir))
    with data.batch_iterator(ds, workers=workers, threads=1) as it:
        for _ in range(4):  # workers started, buffers full
            next(it)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(it)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"size": size, "workers": workers, "threads": 1, "batch": batch,
            "images_per_s": batches * batch / wall,
            "receiver_cpu_ms_per_image": cpu / (batches * batch) * 1e3}


def bench_loop(images: str, masks_dir: str, workdir: str, steps: int = 120,
               repeats: int = 7) -> dict:
    """The training CLI's logged images/s (tiny UNet, 64 px, batch 32, VGG terms off, a JPEG
    folder and a mask folder) against its bare jitted step on one fixed batch."""
    import shutil
    import subprocess
    import sys

    config = UNetConfig.tiny(depth=4, width=16, image_size=64)
    shutil.rmtree(workdir, ignore_errors=True)
    overrides = [
        f"--config.data.source={images}", f"--config.data.masks={masks_dir}",
        "--config.data.image_size=64", "--config.data.scale_range=(0.15,0.3)",
        "--config.model.depth=4", "--config.model.encoder_widths=(16,32,64,128)",
        "--config.model.encoder_kernels=(7,5,5,3)", "--config.train.batch_size=32",
        f"--config.train.steps={steps}", "--config.train.log_every=20",
        "--config.train.image_every=100000", "--config.checkpoint.every_steps=100000",
        "--config.loss.weights.perceptual=0", "--config.loss.weights.style_out=0",
        "--config.loss.weights.style_comp=0", "--config.train.eval_every=0",
    ]
    subprocess.run([sys.executable, "-m", "pconv_jax.train", "--config",
                    "experiments/configs/demo.py", "--workdir", workdir, *overrides],
                   check=True, capture_output=True, text=True)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    logged = [r["images_per_s"] for r in records if "images_per_s" in r][1:]  # 1st: compiling
    bare = bench_train_step(config, batch=32, repeats=repeats, weights=L1_ONLY)
    cli = statistics.median(logged)
    return {"net": "tiny UNet depth 4 width 16 @ 64px, batch 32, l1 terms",
            "cli_images_per_s": cli, "cli_logged": logged,
            "bare_step_images_per_s": bare["images_per_s"], "ratio": cli / bare["images_per_s"]}


def bench_inpainter(config: UNetConfig, batch: int, repeats: int) -> dict:
    """Inpainter on uint8 images (NumPy in/out, padding, compositing) and evaluation pairs/s."""

    from pconv_jax import evaluate
    from pconv_jax.inpaint import Inpainter
    from pconv_jax.masks import irregular_mask

    inpainter = Inpainter(PConvUNet(config, rngs=nnx.Rngs(0)))
    size = config.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    masks = np.stack([irregular_mask(size, rng, 0.3) for _ in range(batch)])
    seconds = median_seconds(inpainter, images, masks, repeats=repeats)
    entries = [{"mask": m, "bucket": "(0.2,0.3]", "border": True} for m in masks] * 2
    photos = [images[i] for i in range(batch)]
    start = time.perf_counter()
    evaluate.evaluate(inpainter, photos, entries, batch_size=batch, progress=False)
    eval_seconds = time.perf_counter() - start
    return {"net": f"Inpainter depth {config.depth} @ {size}px", "batch": batch,
            "seconds_per_batch": seconds, "images_per_s": batch / seconds,
            "eval_pairs_per_s": len(entries) / eval_seconds}


def bench_inpainters_alternating(models: dict[str, UNetConfig], batch: int, repeats: int,
                                 rounds: int = 3) -> list[dict]:
    """Inpainter s/batch (uint8 in/out) of several models at their nominal size, measured in
    turn round after round, so that a slow phase of a shared machine hits all of them; each
    model's figure is the median over rounds of its per-round median."""
    from pconv_jax.inpaint import Inpainter
    from pconv_jax.masks import irregular_mask

    rng = np.random.default_rng(0)
    cases = {}
    for name, config in models.items():
        size = config.image_size
        images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        masks = np.stack([irregular_mask(size, rng, 0.3) for _ in range(batch)])
        cases[name] = (Inpainter(PConvUNet(config, rngs=nnx.Rngs(0))), images, masks)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, (inpainter, images, masks) in cases.items():
            times[name].append(median_seconds(inpainter, images, masks, repeats=repeats))
    return [{"net": f"Inpainter, {name}, depth {models[name].depth} @ "
                    f"{models[name].image_size}px", "batch": batch,
             "seconds_per_batch": statistics.median(t), "images_per_s": batch /
             statistics.median(t), "rounds": t} for name, t in times.items()]


def naoto0804_config() -> UNetConfig:
    """The network `python -m pconv_jax.convert naoto0804` makes of the released 1000000.pth
    (layer_size 7 at 256 px: ImageNet normalisation inside, a bias-free PConv1)."""
    from pconv_jax.convert import NaotoLayout

    layout = NaotoLayout(7, 3, (64, 128, 256, 512, 512, 512, 512), (7, 5, 5, 3, 3, 3, 3), 3)
    return UNetConfig.from_settings(layout.model_settings(), image_size=256)


def bench_export(repeats: int, shapes=((1, 512), (8, 256))) -> list[dict]:
    """Images/s of the paper network's composite (random weights) through the JAX Inpainter,
    the exported StableHLO artifact and onnxruntime's CPU provider (default threads), one
    file of each serving every shape; float32 images and masks in, float32 out. The three
    are timed in turn, call by call, so that other load on the machine hits them alike."""
    import onnxruntime as ort

    from pconv_jax import export
    from pconv_jax.inpaint import Inpainter
    from pconv_jax.masks import irregular_mask

    model = PConvUNet(UNetConfig.paper(), rngs=nnx.Rngs(0))
    model.eval()
    inpainter = Inpainter(model)
    artifact = jax.export.deserialize(bytearray(export.export_stablehlo(model)))
    session = ort.InferenceSession(export.onnx_model(model).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    rows = []
    for batch, size in shapes:
        image = rng.random((batch, size, size, 3)).astype(np.float32)
        mask = np.stack([irregular_mask(size, rng, 0.3) for _ in range(batch)])[..., None]
        mask = mask.astype(np.float32)
        runs = {"jax_inpainter": inpainter, "stablehlo": artifact.call,
                "onnxruntime": lambda i, m: session.run(None, {"image": i, "mask": m})}
        for fn in runs.values():  # warm-up (compilation, ORT's first-run allocations)
            for _ in range(2):
                jax.block_until_ready(fn(image, mask))
        times = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved: a load change on a shared machine hits all
            for name, fn in runs.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(image, mask))
                times[name].append(time.perf_counter() - start)
        seconds = {name: statistics.median(t) for name, t in times.items()}
        rows.append({"net": "paper UNet depth 8", "batch": batch, "size": size,
                     **{f"{k}_images_per_s": batch / v for k, v in seconds.items()},
                     "onnxruntime_vs_stablehlo": seconds["stablehlo"] / seconds["onnxruntime"],
                     "onnxruntime_vs_inpainter":
                         seconds["jax_inpainter"] / seconds["onnxruntime"]})
    return rows


def bench_metrics(repeats: int, pairs: int = 1000, size: int = 256) -> dict:
    """FID-Inception features/s at 299 px, LPIPS pairs/s at 256 px (random weights in the
    reference layouts: speed does not depend on the values), and a whole `evaluate` with both
    metrics on `pairs` pairs of a trained-size-free tiny model (the metrics dominate)."""
    from pconv_jax import evaluate, fid, lpips, vgg
    from pconv_jax.inpaint import Inpainter
    from pconv_jax.masks import irregular_mask

    rng = np.random.default_rng(0)
    net = fid.InceptionFID(fid.random_weights(0), batch_size=25)
    images = rng.uniform(0, 1, (25, 299, 299, 3)).astype(np.float32)
    inception_s = median_seconds(net.features, images, repeats=repeats, warmup=1)
    metric = lpips.LPIPS(vgg.random_weights(0, all_convs=True), lpips.random_heads(0),
                         batch_size=8)
    a = rng.uniform(0, 1, (8, size, size, 3)).astype(np.float32)
    b = rng.uniform(0, 1, (8, size, size, 3)).astype(np.float32)
    lpips_s = median_seconds(metric, a, b, repeats=repeats, warmup=1)
    against_s = median_seconds(metric.against, a, [b] * 4, repeats=repeats, warmup=1)
    inpainter = Inpainter(PConvUNet(UNetConfig.tiny(depth=5, width=16, image_size=96),
                                    rngs=nnx.Rngs(0)))
    photos = [rng.integers(0, 256, (size, size, 3), np.uint8) for _ in range(16)]
    entries = [{"mask": irregular_mask(size, rng, 0.3), "bucket": "(0.2,0.3]", "border": True}
               for _ in range(pairs)]
    start = time.perf_counter()
    evaluate.evaluate(inpainter, photos, entries, batch_size=8, progress=False,
                      inception=net, lpips_metric=metric)
    return {"inception_images_per_s": 25 / inception_s, "lpips_pairs_per_s": 8 / lpips_s,
            "lpips_eval_pairs_per_s": 8 * 4 / against_s, "evaluate_pairs": pairs,
            "evaluate_size": size, "evaluate_seconds": time.perf_counter() - start}


def ceiling(repeats: int) -> dict:
    """The device's measured float32 ceiling: a large matrix product and a large convolution."""
    a = jax.random.normal(jax.random.key(0), (4096, 4096))
    matmul_s = median_seconds(jax.jit(jnp.matmul), a, a, repeats=repeats)
    x = jax.random.normal(jax.random.key(1), (1, 64, 64, 768))
    w = jax.random.normal(jax.random.key(2), (3, 3, 768, 256))
    conv = jax.jit(lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
    conv_s = median_seconds(conv, x, w, repeats=repeats)
    a_np = np.asarray(a)  # the same product through NumPy's BLAS: is the limit XLA's?
    numpy_s = median_seconds(lambda: a_np @ a_np, repeats=repeats)
    return {"matmul_gflops_per_s": 2 * 4096**3 / matmul_s / 1e9,
            "conv_gflops_per_s": 2 * 64 * 64 * 9 * 768 * 256 / conv_s / 1e9,
            "numpy_matmul_gflops_per_s": 2 * 4096**3 / numpy_s / 1e9}


def cpu_model() -> str:
    """The processor's name from /proc/cpuinfo (AMD EPYC, Intel Xeon, ...), else the arch."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


def machine() -> dict:
    """Where the numbers come from."""
    device = jax.devices()[0]
    return {
        "date": datetime.date.today().isoformat(), "platform": platform.platform(),
        "processor": cpu_model(), "cpus": os.cpu_count(),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "device_count": jax.device_count(), "jax": jax.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------
# The sections: each runs its benchmarks, prints its table and stores its rows in `results`
# ---------------------------------------------------------------------------------------------


def run_ceiling(args, results: dict) -> None:
    """The measured float32 matmul and convolution rates (the blocks' ceiling)."""
    roof = results["ceiling"] = ceiling(args.repeats)
    print(f"ceiling: matmul 4096^3 {roof['matmul_gflops_per_s']:.0f} GFLOP/s, "
          f"conv 3x3 64x64x768->256 {roof['conv_gflops_per_s']:.0f} GFLOP/s, "
          f"NumPy's BLAS matmul {roof['numpy_matmul_gflops_per_s']:.0f} GFLOP/s")


def run_blocks(args, results: dict) -> None:
    """The 512 px forward block by block (64 px tiny net with --quick), against the ceiling."""
    results["blocks"] = bench_blocks(
        UNetConfig.tiny(4, 8, 64) if args.quick else UNetConfig.paper(), repeats=args.repeats,
        ceiling_gflops=results["ceiling"]["conv_gflops_per_s"])


def run_layers(args, results: dict) -> None:
    """partial_conv against plain convolution, layer by layer."""
    rows = results["ops"] = [row for spec in (QUICK_LAYERS if args.quick else LAYERS)
                             for row in bench_layer(*spec, repeats=args.repeats)]
    print("\n| layer | mode | partial_conv ms | plain conv ms | ratio | GFLOP | GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['mode']} | {r['partial_conv_s'] * 1e3:.1f} | "
              f"{r['plain_conv_s'] * 1e3:.1f} | {r['ratio']:.3f} | {r['flops'] / 1e9:.2f} | "
              f"{r['gflops_per_s']:.0f} |")


def _peak_mb(row: dict) -> str:
    """A row's XLA peak in MB for a table cell ('' where the backend reports none)."""
    return "" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:.0f}"


def run_nets(args, results: dict) -> None:
    """The UNet's eval-mode forward at 256 px (and 512 px without --quick)."""
    configs = [UNetConfig.paper_256()] if args.quick else [UNetConfig.paper_256(),
                                                           UNetConfig.paper()]
    rows = results["unet"] = [bench_unet(cfg, batch=1, repeats=args.repeats) for cfg in configs]
    print("\n| network (eval forward) | batch | s/batch | images/s | GFLOP | GFLOP/s | "
          "XLA peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['batch']} | {r['seconds_per_batch']:.3f} | "
              f"{r['images_per_s']:.2f} | {r['flops'] / 1e9:.1f} | {r['gflops_per_s']:.0f} | "
              f"{_peak_mb(r)} |")


def run_losses(args, results: dict) -> None:
    """The loss against its VGG forward floor at 256 px (and 512 px without --quick)."""
    rows = results["loss"] = [bench_loss(size, batch=1, repeats=args.repeats)
                              for size in ((256,) if args.quick else (256, 512))]
    print("\n| loss (VGG16 pool1-3, batch 1) | loss fwd ms | 3 VGG fwd ms | ratio | "
          "loss fwd+bwd ms | floor fwd+bwd ms | ratio | loss GFLOP fwd |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}px | {r['loss_fwd_s'] * 1e3:.1f} | {r['vgg3_fwd_s'] * 1e3:.1f} | "
              f"{r['fwd_ratio']:.3f} | {r['loss_fwd_bwd_s'] * 1e3:.1f} | "
              f"{r['vgg3_fwd_bwd_s'] * 1e3:.1f} | {r['fwd_bwd_ratio']:.3f} | "
              f"{r['loss_fwd_flops'] / 1e9:.1f} |")


def run_ops(args, results: dict) -> None:
    """Layers, networks and losses (only when no --only is given)."""
    run_layers(args, results)
    run_nets(args, results)
    run_losses(args, results)


def run_inpaint(args, results: dict) -> None:
    """The Inpainter at 512 px, then paper_256 and the converted naoto0804 net in turn."""
    rows = [bench_inpainter(UNetConfig.paper(), batch=4, repeats=3)]
    # the converted Places2 model beside the paper's net at 256 px, in alternation
    rows += bench_inpainters_alternating(
        {"paper_256": UNetConfig.paper_256(), "naoto0804 converted": naoto0804_config()},
        batch=4, repeats=args.repeats)
    results["inpaint"] = rows
    print("\n| inference | batch | s/batch | images/s | evaluation pairs/s (model + 3 "
          "baselines + metrics) |")
    print("|---|---|---|---|---|")
    for r in rows:
        evaluation = f"{r['eval_pairs_per_s']:.2f}" if "eval_pairs_per_s" in r else ""
        print(f"| {r['net']} | {r['batch']} | {r['seconds_per_batch']:.3f} | "
              f"{r['images_per_s']:.2f} | {evaluation} |")


def run_train(args, results: dict) -> None:
    """The full-loss training step (256 px, and 512 px without --quick) and the l1-only step
    against the bare UNet fwd+bwd+Adam."""
    rows = [bench_train_step(UNetConfig.paper_256(), batch=1, repeats=args.repeats)]
    if not args.quick:
        rows.append(bench_train_step(UNetConfig.paper(), batch=1, repeats=3))
    results["train"] = rows
    results["l1_step"] = [bench_l1_step(UNetConfig.paper_256(), batch=1, repeats=args.repeats)]
    print("\n| training step (paper net, full loss) | batch | s/step | images/s | "
          "GFLOP/step | GFLOP/s | XLA peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} ({r['compute_dtype']}) | {r['batch']} | "
              f"{r['seconds_per_step']:.3f} | {r['images_per_s']:.3f} | {r['flops'] / 1e9:.1f} | "
              f"{r['gflops_per_s']:.0f} | {_peak_mb(r)} |")
    for r in results["l1_step"]:
        print(f"\n| l1-only step | s/step | UNet fwd+bwd+Adam s | time ratio | FLOP ratio |\n"
              f"|---|---|---|---|---|\n| {r['net']} | {r['seconds_per_step']:.3f} | "
              f"{r['bare_seconds']:.3f} | {r['time_ratio']:.3f} | {r['flops_ratio']:.3f} |")


def run_pipeline(args, results: dict) -> None:
    """The input pipeline's images/s by size and worker count, on generated JPEG folders."""
    images, masks_dir = photo_folders(args.data)
    sizes = (64, 256) if args.quick else (64, 256, 512)
    rows = results["pipeline"] = [bench_pipeline(images, masks_dir, size, workers)
                                  for size in sizes for workers in (1, 2)]
    print("\n| pipeline (680x512 JPEGs + 512 px mask PNGs) | workers x threads | images/s | "
          "receiver CPU ms/image |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} px, batch {r['batch']} | {r['workers']} x {r['threads']} | "
              f"{r['images_per_s']:.0f} | {r['receiver_cpu_ms_per_image']:.3f} |")


def run_loop(args, results: dict) -> None:
    """The training CLI's logged images/s against its bare step (the same generated folders
    as the pipeline section: made once, reused)."""
    images, masks_dir = photo_folders(args.data)
    rows = results["loop"] = [bench_loop(images, masks_dir, os.path.join(args.data, "loop_run"),
                                         repeats=args.repeats)]
    for r in rows:
        print(f"\n| training loop | CLI logged images/s | bare step images/s | ratio |\n"
              f"|---|---|---|---|\n| {r['net']} | {r['cli_images_per_s']:.0f} | "
              f"{r['bare_step_images_per_s']:.0f} | {r['ratio']:.2f} |")


def run_dtype(args, results: dict) -> None:
    """The full-loss step in float32 and in bfloat16, with MFU where the device is known."""
    on_gpu = jax.default_backend() == "gpu"  # the target shape: 512 px, batch 6
    rows = results["dtype"] = [
        bench_train_step(UNetConfig.paper() if on_gpu else UNetConfig.paper_256(),
                         batch=6 if on_gpu else 1, repeats=args.repeats, compute_dtype=dtype)
        for dtype in ("float32", "bfloat16")]
    for r in rows:
        r["mfu"] = mfu(r["flops"] / r["seconds_per_step"], r["compute_dtype"])
    print(f"\n| step, {rows[0]['net']}, batch {rows[0]['batch']} | s/step | "
          "conv+dot GFLOP bf16 | f32 | bf16 share | MFU |\n|---|---|---|---|---|---|")
    for r in rows:
        f = r["conv_dot_flops_by_dtype"]
        share = f.get("bf16", 0) / sum(f.values())
        print(f"| {r['compute_dtype']} | {r['seconds_per_step']:.3f} | "
              f"{f.get('bf16', 0) / 1e9:.1f} | {f.get('f32', 0) / 1e9:.1f} | "
              f"{100 * share:.1f} % | "
              f"{_percent(r['mfu'])} |")


def run_metrics(args, results: dict) -> None:
    """FID Inception, LPIPS and a whole evaluation with both."""
    rows = results["metrics"] = [bench_metrics(args.repeats, pairs=200 if args.quick else 1000)]
    for r in rows:
        print(f"\n| FID Inception 299 px images/s | LPIPS 256 px pairs/s | LPIPS, 4 "
              f"methods per target, pairs/s | evaluate {r['evaluate_pairs']} pairs at "
              f"{r['evaluate_size']} px with both, s |\n|---|---|---|---|\n"
              f"| {r['inception_images_per_s']:.1f} | {r['lpips_pairs_per_s']:.1f} | "
              f"{r['lpips_eval_pairs_per_s']:.1f} | {r['evaluate_seconds']:.0f} |")


def run_export(args, results: dict) -> None:
    """Deployment files (StableHLO, ONNX) against the JAX Inpainter."""
    rows = results["export"] = bench_export(args.repeats)
    print("\n| export: paper net, float32 | batch x size | JAX Inpainter images/s | "
          "StableHLO images/s | onnxruntime CPU images/s | ORT speed-up vs StableHLO | "
          "vs Inpainter |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['batch']} x {r['size']} px | "
              f"{r['jax_inpainter_images_per_s']:.2f} | {r['stablehlo_images_per_s']:.2f} | "
              f"{r['onnxruntime_images_per_s']:.2f} | {r['onnxruntime_vs_stablehlo']:.2f} | "
              f"{r['onnxruntime_vs_inpainter']:.2f} |")


# (the --only values that run a section (None: no --only), the section), in running order
SECTIONS = (
    ((None, "blocks"), run_ceiling),
    (("blocks",), run_blocks),
    ((None,), run_ops),
    ((None, "inpaint"), run_inpaint),
    ((None, "train"), run_train),
    ((None, "pipeline"), run_pipeline),
    ((None, "loop"), run_loop),
    ((None, "dtype"), run_dtype),
    ((None, "metrics"), run_metrics),
    ((None, "export"), run_export),
)
# the JSON file's keys after "machine" and "repeats", each empty unless its section ran
RESULT_KEYS = {"ceiling": dict, "ops": list, "unet": list, "loss": list, "train": list,
               "inpaint": list, "blocks": list, "l1_step": list, "pipeline": list,
               "loop": list, "metrics": list, "dtype": list, "export": list}


def main() -> None:
    """Runs the sections `--only` selects (all without it) and writes their rows as JSON."""
    parser = argparse.ArgumentParser(description="pconv-jax benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/latest.json")
    parser.add_argument("--only", choices=["train", "inpaint", "blocks", "pipeline", "loop",
                                           "metrics", "dtype", "export"],
                        default=None,
                        help="run one section only (blocks: the 512 px forward block by block)")
    parser.add_argument("--data", default="/tmp/pconv_bench_data",
                        help="folder for the generated JPEG and mask folders (pipeline, loop)")
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 7)

    results = {key: empty() for key, empty in RESULT_KEYS.items()}
    for only, section in SECTIONS:
        if args.only in only:
            section(args, results)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine(), "repeats": args.repeats, **results}, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
