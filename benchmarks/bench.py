"""`make bench`: partial convolution against plain convolution, and the PConv UNet forward.

    .venv/bin/python -m benchmarks.bench [--quick] [--out benchmarks/results/NAME.json]

Times are medians of repeated jitted calls after warm-up; FLOPs come from XLA's cost analysis
of the compiled function (the analytic 2*MACs where XLA reports none). Results print as a
Markdown table and are written as JSON with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
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


def bench_train_step(config: UNetConfig, batch: int, repeats: int,
                     compute_dtype: str = "float32") -> dict:
    """One jitted training step (UNet fwd+bwd, full loss with VGG16 features, Adam)."""
    from pconv_jax import train

    cfg = train.default_config()
    cfg.data.image_size = config.image_size
    cfg.train.compute_dtype = compute_dtype
    for key in ("depth", "encoder_widths", "encoder_kernels"):
        cfg.model[key] = getattr(config, key)
    model = PConvUNet(train.unet_config(cfg), rngs=nnx.Rngs(0))
    model.train()
    optimizer = nnx.Optimizer(model, train.optimizer_transform(cfg), wrt=nnx.Param)
    features = vgg.VGG16Features(vgg.random_weights(0))
    graphdef, state = nnx.split((model, optimizer))
    vgg_graphdef, vgg_state = nnx.split(features)
    step = train.make_train_step(graphdef, vgg_graphdef, losses.LossWeights(),
                                 train.learning_rate(cfg))
    size = config.image_size
    image = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
    mask = jnp.ones((batch, size, size, 1)).at[:, size // 4: size // 2, size // 3:].set(0)
    stats = compiled_stats(step, state, vgg_state, image, mask)
    jitted = jax.jit(step, donate_argnums=0)

    def run(state):
        return jitted(state, vgg_state, image, mask)[0]

    for _ in range(2):
        state = jax.block_until_ready(run(state))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(run(state))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "net": f"UNet depth {config.depth} @ {size}px + loss", "batch": batch,
        "compute_dtype": compute_dtype, "seconds_per_step": seconds,
        "images_per_s": batch / seconds, "flops": stats["flops"],
        "gflops_per_s": stats["flops"] / seconds / 1e9, "peak_bytes": stats["peak_bytes"],
    }


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


def machine() -> dict:
    """Where the numbers come from."""
    device = jax.devices()[0]
    return {
        "date": datetime.date.today().isoformat(), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "device_count": jax.device_count(), "jax": jax.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="pconv-jax benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/latest.json")
    parser.add_argument("--only", choices=["train", "inpaint", "blocks"], default=None,
                        help="run one section only (blocks: the 512 px forward block by block)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)

    roof, op_rows, net_rows, loss_rows, block_rows = {}, [], [], [], []
    if args.only in (None, "blocks"):
        roof = ceiling(repeats)
        print(f"ceiling: matmul 4096^3 {roof['matmul_gflops_per_s']:.0f} GFLOP/s, "
              f"conv 3x3 64x64x768->256 {roof['conv_gflops_per_s']:.0f} GFLOP/s, "
              f"NumPy's BLAS matmul {roof['numpy_matmul_gflops_per_s']:.0f} GFLOP/s")
    if args.only == "blocks":
        block_rows = bench_blocks(UNetConfig.tiny(4, 8, 64) if args.quick else UNetConfig.paper(),
                                  repeats=repeats, ceiling_gflops=roof["conv_gflops_per_s"])
    if args.only is None:
        layers = QUICK_LAYERS if args.quick else LAYERS
        op_rows = [row for spec in layers for row in bench_layer(*spec, repeats=repeats)]
        print("\n| layer | mode | partial_conv ms | plain conv ms | ratio | GFLOP | GFLOP/s |")
        print("|---|---|---|---|---|---|---|")
        for r in op_rows:
            print(f"| {r['layer']} | {r['mode']} | {r['partial_conv_s'] * 1e3:.1f} | "
                  f"{r['plain_conv_s'] * 1e3:.1f} | {r['ratio']:.3f} | {r['flops'] / 1e9:.2f} | "
                  f"{r['gflops_per_s']:.0f} |")

        configs = [UNetConfig.paper_256()] if args.quick else [UNetConfig.paper_256(),
                                                               UNetConfig.paper()]
        net_rows = [bench_unet(cfg, batch=1, repeats=repeats) for cfg in configs]
        print("\n| network (eval forward) | batch | s/batch | images/s | GFLOP | GFLOP/s | "
              "XLA peak MB |")
        print("|---|---|---|---|---|---|---|")
        for r in net_rows:
            peak = "" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
            print(f"| {r['net']} | {r['batch']} | {r['seconds_per_batch']:.3f} | "
                  f"{r['images_per_s']:.2f} | {r['flops'] / 1e9:.1f} | {r['gflops_per_s']:.0f} | "
                  f"{peak} |")

        loss_rows = [bench_loss(size, batch=1, repeats=repeats)
                     for size in ((256,) if args.quick else (256, 512))]
        print("\n| loss (VGG16 pool1-3, batch 1) | loss fwd ms | 3 VGG fwd ms | ratio | "
              "loss fwd+bwd ms | floor fwd+bwd ms | ratio | loss GFLOP fwd |")
        print("|---|---|---|---|---|---|---|---|")
        for r in loss_rows:
            print(f"| {r['size']}px | {r['loss_fwd_s'] * 1e3:.1f} | {r['vgg3_fwd_s'] * 1e3:.1f} | "
                  f"{r['fwd_ratio']:.3f} | {r['loss_fwd_bwd_s'] * 1e3:.1f} | "
                  f"{r['vgg3_fwd_bwd_s'] * 1e3:.1f} | {r['fwd_bwd_ratio']:.3f} | "
                  f"{r['loss_fwd_flops'] / 1e9:.1f} |")

    inpaint_rows = []
    if args.only in (None, "inpaint"):
        inpaint_rows = [bench_inpainter(UNetConfig.paper(), batch=4, repeats=3)]
        print("\n| inference | batch | s/batch | images/s | evaluation pairs/s (model + 3 "
              "baselines + metrics) |")
        print("|---|---|---|---|---|")
        for r in inpaint_rows:
            print(f"| {r['net']} | {r['batch']} | {r['seconds_per_batch']:.3f} | "
                  f"{r['images_per_s']:.2f} | {r['eval_pairs_per_s']:.2f} |")
    train_rows = []
    if args.only in (None, "train"):
        train_rows = [bench_train_step(UNetConfig.paper_256(), batch=1, repeats=repeats)]
        if not args.quick:
            train_rows.append(bench_train_step(UNetConfig.paper(), batch=1, repeats=3))
    if train_rows:
        print("\n| training step (paper net, full loss) | batch | s/step | images/s | "
              "GFLOP/step | GFLOP/s | XLA peak MB |")
        print("|---|---|---|---|---|---|---|")
    for r in train_rows:
        peak = "" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        print(f"| {r['net']} ({r['compute_dtype']}) | {r['batch']} | "
              f"{r['seconds_per_step']:.3f} | {r['images_per_s']:.3f} | {r['flops'] / 1e9:.1f} | "
              f"{r['gflops_per_s']:.0f} | {peak} |")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine(), "repeats": repeats, "ceiling": roof, "ops": op_rows,
                   "unet": net_rows, "loss": loss_rows, "train": train_rows,
                   "inpaint": inpaint_rows, "blocks": block_rows},
                  f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
