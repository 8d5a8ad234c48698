"""VGG-16 features for the perceptual and style losses, with weights read from a local file.

`VGG16Features` holds the first seven 3x3 convolutions of VGG-16 (torchvision's
`features[:17]`) and returns the activations after pool1, pool2 and pool3. Its weights are
constants of the loss: they live in `VGGWeight` variables (not `nnx.Param`), so no optimizer
built with `wrt=nnx.Param` holds them, and the forward pass stops their gradient.

Weights come from a file the user supplies, in torchvision's key layout
(`features.{0,2,5,7,10,12,14}.{weight,bias}`, kernels OIHW): `.safetensors`, `.npz`, or
torchvision's `.pth` when torch is installed (read with `weights_only=True`). Nothing is
downloaded. Convert once with
`python -m pconv_jax.vgg convert vgg16-397923af.pth vgg16.safetensors`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from pconv_jax.ops import to_imagenet
from pconv_jax.weightfile import WeightFileError, read_tensors

Array = jax.Array

# (torchvision index in `features`, in channels, out channels); a 2x2 max-pool follows the
# layers marked True, and its output is one of the returned activations.
LAYERS: tuple[tuple[int, int, int, bool], ...] = (
    (0, 3, 64, False), (2, 64, 64, True),
    (5, 64, 128, False), (7, 128, 128, True),
    (10, 128, 256, False), (12, 256, 256, False), (14, 256, 256, True),
)
# The six convolutions after pool3 (conv4_1 .. conv5_3): LPIPS needs all 13 (`convert --all`).
DEEP_LAYERS: tuple[tuple[int, int, int], ...] = (
    (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
    (28, 512, 512),
)


class VGGWeight(nnx.Variable):
    """A frozen VGG weight: not an `nnx.Param`, so optimizers over Params never see it."""


def expected_shapes(all_convs: bool = False) -> dict[str, tuple[int, ...]]:
    """The torchvision keys the loss reads (all 13 convolutions with all_convs) and their
    shapes (kernels OIHW)."""
    layers = [(i, cin, cout) for i, cin, cout, _ in LAYERS] + \
        (list(DEEP_LAYERS) if all_convs else [])
    shapes = {}
    for index, cin, cout in layers:
        shapes[f"features.{index}.weight"] = (cout, cin, 3, 3)
        shapes[f"features.{index}.bias"] = (cout,)
    return shapes


class VGG16Features(nnx.Module):
    """VGG-16 up to pool3: `features(images) -> (pool1, pool2, pool3)`, images in [-1, 1].

    dtype: the compute dtype of the convolutions; their kernels are stored in it (cast once, at
    load), the input is normalised in float32 and then cast, each convolution's bias and ReLU
    are applied in float32 and rounded once, and the pools come out in `dtype`.
    """

    def __init__(self, weights: Mapping[str, np.ndarray], dtype: str = "float32"):
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"VGG compute dtype must be float32 or bfloat16, got {dtype!r}")
        self.dtype = dtype
        kernels, biases = [], []
        for index, _, _, _ in LAYERS:
            oihw = np.asarray(weights[f"features.{index}.weight"], np.float32)
            kernels.append(VGGWeight(jnp.asarray(oihw.transpose(2, 3, 1, 0), dtype)))  # HWIO
            biases.append(VGGWeight(jnp.asarray(weights[f"features.{index}.bias"], jnp.float32)))
        self.kernels = nnx.List(kernels)
        self.biases = nnx.List(biases)

    def __call__(self, images: Array) -> tuple[Array, Array, Array]:
        """images (N,H,W,3) in [-1,1] -> pool1 (N,H/2,W/2,64), pool2 (/4, 128), pool3 (/8, 256)."""
        x = to_imagenet(images).astype(self.dtype)
        pools = []
        for (_, _, _, pool), kernel, bias in zip(LAYERS, self.kernels, self.biases, strict=True):
            x = lax.conv_general_dilated(x, lax.stop_gradient(kernel[...]), (1, 1),
                                         ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
            # bias and ReLU in float32, rounded once: the same for float32; in bfloat16 it also
            # keeps XLA's CPU backend (jax 0.12, YNNPACK) from fusing a bfloat16 conv + ReLU,
            # which it computes wrong (non-finite values under jit)
            x = jax.nn.relu(x.astype(jnp.float32) + lax.stop_gradient(bias[...]))
            x = x.astype(self.dtype)
            if pool:  # 2x2 max-pool, stride 2, floor (torch's default)
                x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
                pools.append(x)
        return tuple(pools)


def read_weights(path: str | os.PathLike, what: str = "VGG-16") -> dict[str, np.ndarray]:
    """Reads a weight file (.safetensors, .npz, .pth/.pt) into a dict of NumPy arrays;
    `what` names the network in the errors."""
    hint = ("install torch, or convert the file on a machine that has it with `python -m "
            f"pconv_jax.{_MODULES.get(what, 'vgg')} convert IN.pth OUT.safetensors`")
    return read_tensors(path, what, torch_hint=hint)


_MODULES = {"FID Inception": "fid", "LPIPS heads": "lpips"}  # whose converter to name


def check_weights(weights: Mapping[str, np.ndarray], source: str = "weights",
                  all_convs: bool = False) -> None:
    """Raises WeightFileError naming the key when a needed tensor is missing or misshapen."""
    for key, shape in expected_shapes(all_convs).items():
        if key not in weights:
            indices = "0,2,5,7,10,12,14" + (",17,19,21,24,26,28" if all_convs else "")
            hint = (" (LPIPS needs all 13 convolutions: convert the torchvision file with "
                    "`python -m pconv_jax.vgg convert --all`)" if all_convs else "")
            raise WeightFileError(
                f"{source}: missing key {key!r} (torchvision VGG-16 layout expected, "
                f"keys features.{{{indices}}}.{{weight,bias}}){hint}"
            )
        actual = tuple(np.shape(weights[key]))
        if actual != shape:
            raise WeightFileError(
                f"{source}: {key!r} has shape {actual}, expected {shape} (OIHW kernels)"
            )
        values = np.asarray(weights[key])
        if not np.issubdtype(values.dtype, np.floating) or not np.isfinite(values).all():
            raise WeightFileError(f"{source}: {key!r} must hold finite floating-point values "
                                  f"(dtype {values.dtype})")


def load_vgg16(path: str | os.PathLike, dtype: str = "float32") -> VGG16Features:
    """VGG16Features with ImageNet weights from a local file in torchvision's key layout,
    computing in `dtype` (float32 or bfloat16)."""
    weights = read_weights(path)
    check_weights(weights, os.fspath(path))
    return VGG16Features(weights, dtype)


def random_weights(seed: int = 0, all_convs: bool = False) -> dict[str, np.ndarray]:
    """He-normal random weights in torchvision layout, for tests and smoke runs."""
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in expected_shapes(all_convs).items():
        if key.endswith("weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            weights[key] = (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        else:
            weights[key] = (rng.normal(size=shape) * 0.01).astype(np.float32)
    return weights


def random_vgg16(seed: int = 0, dtype: str = "float32") -> VGG16Features:
    """VGG16Features with random weights; warns that perceptual and style terms mean nothing."""
    warnings.warn(
        "VGG-16 with RANDOM weights: the perceptual and style loss terms are meaningless. "
        "Pass an ImageNet VGG-16 file (vgg.weights) for real training.",
        stacklevel=2,
    )
    return VGG16Features(random_weights(seed), dtype)


def convert(src: str, dst: str, all_convs: bool = False) -> list[str]:
    """Writes the tensors VGG16Features needs (all 13 convolutions with all_convs, for LPIPS)
    from `src` into the .safetensors file `dst`."""
    if not dst.endswith(".safetensors"):
        raise WeightFileError(f"the converted file must end in .safetensors, got {dst!r}")
    from safetensors.numpy import save_file

    weights = read_weights(src)
    check_weights(weights, src, all_convs)
    needed = {k: np.ascontiguousarray(weights[k], np.float32)
              for k in expected_shapes(all_convs)}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_file(needed, dst)
    return sorted(needed)


def save_needed(src: str, dst: str, what: str, keys, check) -> int:
    """Reads `src`, checks it with `check(weights, src)` and writes `keys` as float32 into the
    .safetensors file `dst` (the converters of pconv_jax.fid and pconv_jax.lpips)."""
    if not dst.endswith(".safetensors"):
        raise WeightFileError(f"the converted file must end in .safetensors, got {dst!r}")
    from safetensors.numpy import save_file

    weights = read_weights(src, what=what)
    check(weights, src)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_file({k: np.ascontiguousarray(weights[k], np.float32) for k in keys}, dst)
    return len(keys)


def converter_main(argv: list[str] | None, prog: str, description: str, src_help: str,
                   convert_fn) -> int:
    """`python -m PROG convert SRC DST.safetensors`: the converter CLI of fid and lpips."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="a .pth (needs torch), .npz or .safetensors -> "
                                          ".safetensors with the tensors needed")
    conv.add_argument("src", help=src_help)
    conv.add_argument("dst", help="output .safetensors")
    args = parser.parse_args(argv)
    try:
        count = convert_fn(args.src, args.dst)
    except (OSError, WeightFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {count} tensors to {args.dst}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pconv_jax.vgg convert IN OUT.safetensors` and `... random OUT`."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.vgg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="keep the VGG-16 tensors of a weight file")
    conv.add_argument("src", help=".pth/.pt (needs torch), .npz or .safetensors")
    conv.add_argument("dst", help="output .safetensors")
    conv.add_argument("--all", action="store_true",
                      help="keep all 13 convolutions (LPIPS needs them; the loss uses 7)")
    rand = sub.add_parser("random", help="write random weights (tests, smoke runs only)")
    rand.add_argument("dst", help="output .safetensors or .npz")
    rand.add_argument("--seed", type=int, default=0)
    rand.add_argument("--all", action="store_true", help="all 13 convolutions (LPIPS)")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            keys = convert(args.src, args.dst, all_convs=args.all)
            print(f"wrote {len(keys)} tensors to {args.dst}")
        else:
            weights = random_weights(args.seed, all_convs=args.all)
            if args.dst.endswith(".npz"):
                np.savez(args.dst, **weights)
            elif args.dst.endswith(".safetensors"):
                from safetensors.numpy import save_file

                save_file(weights, args.dst)
            else:
                raise WeightFileError(f"output must end in .npz or .safetensors: {args.dst!r}")
            print(f"wrote RANDOM VGG-16 weights to {args.dst} (not for real training)")
    except (OSError, WeightFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
