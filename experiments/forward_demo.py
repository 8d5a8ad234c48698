"""Forward demo: the untrained paper UNet on a bundled photo with an irregular hole.

    make demo          # or: .venv/bin/python experiments/forward_demo.py --out demo_out

Writes demo_out/forward_demo.png: masked input | mask | raw output | composite | ground truth.
An untrained network outputs noise in the hole; the point is that the whole path runs
(partial convolutions, 512x512, depth 8, 32.8M kernel weights). About 10 s on 2 CPU cores.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pconv_jax.data import bundled_photo, center_crop_resize
from pconv_jax.masks import hole_ratio, irregular_mask
from pconv_jax.model import PConvUNet, UNetConfig
from pconv_jax.visualize import save_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--photo", default="astronaut", help="bundled photo name")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = UNetConfig.paper()
    image = center_crop_resize(bundled_photo(args.photo), config.image_size)  # (H,W,3) in [0,1]
    mask = irregular_mask(config.image_size, np.random.default_rng(args.seed), hole_ratio=0.25)
    model = PConvUNet(config, rngs=nnx.Rngs(args.seed))
    model.eval()
    forward = nnx.jit(lambda m, x, k: m(x, k))
    x = jnp.asarray(image[None] * 2 - 1)  # (1,H,W,3) in [-1,1]
    k = jnp.asarray(mask[None, :, :, None])  # (1,H,W,1)
    start = time.perf_counter()
    output, out_mask = jax.block_until_ready(forward(model, x, k))
    seconds = time.perf_counter() - start
    output = np.asarray((output[0] + 1) / 2).clip(0, 1)
    comp = mask[..., None] * image + (1 - mask[..., None]) * output
    path = save_grid(f"{args.out}/forward_demo.png",
                     [[image * mask[..., None], mask, output, comp, image]])
    print(f"paper UNet (depth {config.depth}, {config.image_size}px) on '{args.photo}' with "
          f"{hole_ratio(mask):.0%} holes: first call {seconds:.1f}s incl. compilation; output "
          f"mask full: {bool(jnp.all(out_mask == 1))}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
