"""Other implementations' checkpoints as pconv-jax runs.

    python -m pconv_jax.convert naoto0804 CHECKPOINT --workdir DIR [--image-size N] [--step N]

`naoto0804`: the PyTorch reimplementation naoto0804/pytorch-inpainting-with-partial-conv (its
release v0.0.0 file `1000000.pth`: Places2 at 256 px, layer_size 7). CHECKPOINT is its `.pth`
(a whole training checkpoint with 'model', or a bare state dict; legacy and zip formats; needs
torch), or the same state dict as `.safetensors` or `.npz` (no torch needed). Depth and widths
come from the tensors' shapes. DIR becomes a run folder (config.json, an Orbax checkpoint,
converted.json) that `Inpainter.from_workdir`, inpaint, evaluate, app and
`--config.train.init_from` open like any trained run.

What that network computes and how it maps onto ours, exactly:
- Its partial convolution divides by sum(M) over the window and every input channel of a
  per-channel mask, without the sum(1) factor; ours multiplies by sum(1)/sum(M) (one-channel
  masks weighted by their channel counts give the same sum(M)). With sum(1) = kh*kw*C_in,
  our kernel is its kernel / (kh*kw*C_in), in every layer, whatever mask width ours uses.
- Only dec_1 has a bias (added after the division, kept out of holes as ours); enc_1 has none
  (`first_bias=False`). BatchNorm (eps 1e-5) after all but enc_1 and dec_1.
- It works on ImageNet-normalised images and outputs in that space
  (`normalization="imagenet"`: the model maps its [-1, 1] contract to and from that space).
- `mask_conv` kernels are frozen all-ones window sums: checked, not used.

Reading and checking (`read_naoto0804`, `naoto0804_layout`, `naoto0804_arrays`) needs NumPy
only; writing the run imports jax. A wrong or damaged file is one line naming the key, and
nothing is written: the run is built in a staging folder and moved into place at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping

import numpy as np

from pconv_jax.weightfile import WeightFileError, read_tensors

SOURCES = ("naoto0804",)
RELEASE = ("https://github.com/naoto0804/pytorch-inpainting-with-partial-conv/releases/tag/"
           "v0.0.0 (1000000.pth)")


class ConvertError(ValueError):
    """A checkpoint that cannot be converted, or a run folder that cannot be written."""


@dataclasses.dataclass(frozen=True)
class NaotoLayout:
    """The shape of a naoto0804 network, read from its tensors."""

    layer_size: int
    in_channels: int
    widths: tuple[int, ...]  # enc_1 .. enc_L output channels
    kernels: tuple[int, ...]  # enc_1 .. enc_L kernel sizes
    decoder_kernel: int

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of its state dict (num_batches_tracked aside) with its shape."""
        shapes: dict[str, tuple[int, ...]] = {}
        ins = (self.in_channels, *self.widths[:-1])
        for i in range(self.layer_size):
            kernel = (self.widths[i], ins[i], self.kernels[i], self.kernels[i])
            _layer_shapes(shapes, f"enc_{i + 1}", kernel, bn=i > 0, bias=False)
        k = self.decoder_kernel
        for i in range(self.layer_size, 0, -1):  # dec_i: up (level i) + skip (level i-1)
            up = self.widths[i - 1]
            out = self.widths[i - 2] if i > 1 else self.in_channels
            _layer_shapes(shapes, f"dec_{i}", (out, up + out, k, k), bn=i > 1, bias=i == 1)
        return shapes

    def model_settings(self) -> dict:
        """The `config.model` settings of pconv-jax's network computing this one."""
        return {
            "depth": self.layer_size, "in_channels": self.in_channels,
            "out_channels": self.in_channels, "encoder_widths": list(self.widths),
            "encoder_kernels": list(self.kernels), "decoder_kernel": self.decoder_kernel,
            "leaky_slope": 0.2, "bn_momentum": 0.9, "bn_epsilon": 1e-5, "mask_eps": 1e-8,
            "normalization": "imagenet", "first_bias": False,
        }


def _layer_shapes(shapes: dict, name: str, kernel: tuple[int, ...], *, bn: bool,
                  bias: bool) -> None:
    """Adds one PCBActiv layer's keys and shapes (OIHW kernels) to `shapes`."""
    shapes[f"{name}.conv.input_conv.weight"] = kernel
    if bias:
        shapes[f"{name}.conv.input_conv.bias"] = (kernel[0],)
    shapes[f"{name}.conv.mask_conv.weight"] = kernel
    if bn:
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{stat}"] = (kernel[0],)


def read_naoto0804(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(state dict as NumPy arrays, the checkpoint's scalars such as n_iter) of a `.pth`,
    `.safetensors` or `.npz` file; ConvertError for a file that does not read."""
    info: dict = {}
    hint = ("install torch (`pip install torch`), or save its state dict as .safetensors or "
            ".npz on a machine that has it (pconv_jax.convert.save_npz does)")
    try:
        state = read_tensors(path, "naoto0804", torch_hint=hint,
                             containers=("model", "state_dict"), info=info)
    except WeightFileError as err:
        raise ConvertError(str(err)) from None
    return state, info


def save_npz(src: str, dst: str) -> int:
    """Writes the state dict of checkpoint `src` (a .pth, say) to the .npz file `dst`, for a
    machine without torch; the number of tensors. Needs NumPy only (and torch for a .pth)."""
    state, _ = read_naoto0804(src)
    naoto0804_layout(state, src)
    np.savez(dst, **state)
    return len(state)


def naoto0804_layout(state: Mapping[str, np.ndarray], source: str) -> NaotoLayout:
    """The layout of a naoto0804 state dict; ConvertError naming the first key that is
    missing, unexpected, misshapen or holds values that network cannot have."""
    first = "enc_1.conv.input_conv.weight"
    if first not in state:
        found = sorted(state)[:3]
        raise ConvertError(f"{source}: missing key {first!r}: not a naoto0804 PConvUNet state "
                           f"dict (it holds {len(state)} tensors{', e.g. ' if found else ''}"
                           f"{', '.join(found)})")
    layer_size = 0
    while f"enc_{layer_size + 1}.conv.input_conv.weight" in state:
        layer_size += 1
    encoder = [np.shape(state[f"enc_{i}.conv.input_conv.weight"])
               for i in range(1, layer_size + 1)]
    for i, shape in enumerate(encoder, 1):
        if len(shape) != 4 or shape[2] % 2 == 0:
            raise ConvertError(f"{source}: 'enc_{i}.conv.input_conv.weight' has shape {shape}; "
                               "expected (out, in, k, k) with an odd k")
    if encoder[0][1] != 3:
        raise ConvertError(f"{source}: {first!r} has shape {encoder[0]}: {encoder[0][1]} input "
                           "channels, but pconv-jax inpaints RGB images (3)")
    last = f"dec_{layer_size}.conv.input_conv.weight"
    if last not in state:
        raise ConvertError(f"{source}: missing key {last!r} (enc_1..enc_{layer_size} found)")
    decoder_shape = np.shape(state[last])
    if len(decoder_shape) != 4 or decoder_shape[2] % 2 == 0:
        raise ConvertError(f"{source}: {last!r} has shape {decoder_shape}; expected "
                           "(out, in, k, k) with an odd k")
    layout = NaotoLayout(layer_size, encoder[0][1], tuple(s[0] for s in encoder),
                         tuple(s[2] for s in encoder), decoder_shape[2])
    _check_tensors(state, layout.expected_shapes(), source)
    return layout


def _check_tensors(state: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]],
                   source: str) -> None:
    """ConvertError naming the first missing, unexpected, misshapen or invalid tensor."""
    for key, shape in shapes.items():
        if key not in state:
            raise ConvertError(f"{source}: missing key {key!r}")
        value = np.asarray(state[key])
        if value.shape != shape:
            raise ConvertError(f"{source}: {key!r} has shape {value.shape}, expected {shape}")
        if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all():
            raise ConvertError(f"{source}: {key!r} must hold finite floating-point values "
                               f"(dtype {value.dtype})")
        if key.endswith("mask_conv.weight") and not (value == 1).all():
            raise ConvertError(f"{source}: {key!r} must be all ones (the frozen window sum of "
                               "the mask), but holds other values")
        if key.endswith("running_var") and (value < 0).any():
            raise ConvertError(f"{source}: {key!r} holds negative variances")
    for key in sorted(state):
        if key in shapes:
            continue
        layer = key.rsplit(".", 1)[0]
        if key.endswith(".bn.num_batches_tracked") and f"{layer}.weight" in shapes:
            if np.shape(state[key]) != ():
                raise ConvertError(f"{source}: {key!r} has shape {np.shape(state[key])}, "
                                   "expected ()")
            continue  # a training counter; eval mode does not read it
        raise ConvertError(f"{source}: unexpected key {key!r} (not part of a naoto0804 "
                           "PConvUNet of this depth)")


def naoto0804_arrays(state: Mapping[str, np.ndarray], layout: NaotoLayout
                     ) -> dict[tuple, np.ndarray]:
    """{path in PConvUNet: float32 array}: kernels HWIO / (kh*kw*C_in), dec_1's bias, the
    BatchNorm affine parameters and running statistics."""
    arrays: dict[tuple, np.ndarray] = {}
    names = [("encoder", i, f"enc_{i + 1}") for i in range(layout.layer_size)] + \
        [("decoder", j, f"dec_{layout.layer_size - j}") for j in range(layout.layer_size)]
    for part, index, name in names:
        weight = np.asarray(state[f"{name}.conv.input_conv.weight"], np.float64)  # OIHW
        _, cin, kh, kw = weight.shape
        kernel = weight.transpose(2, 3, 1, 0) / (kh * kw * cin)  # HWIO: absorbs 1/sum(1)
        arrays[(part, index, "kernel")] = kernel.astype(np.float32)
        if f"{name}.conv.input_conv.bias" in state:
            arrays[(part, index, "bias")] = np.asarray(state[f"{name}.conv.input_conv.bias"],
                                                       np.float32)
        if f"{name}.bn.weight" in state:
            for ours, theirs in (("scale", "weight"), ("bias", "bias"),
                                 ("mean", "running_mean"), ("var", "running_var")):
                arrays[(part, index, "bn", ours)] = np.asarray(state[f"{name}.bn.{theirs}"],
                                                               np.float32)
    return arrays


# --- Writing the run (jax from here on) ------------------------------------------------------


def build_model(settings: Mapping, arrays: Mapping[tuple, np.ndarray], image_size: int):
    """A PConvUNet of `settings` holding `arrays`, which must set every variable it has."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from pconv_jax.model import PConvUNet, UNetConfig

    config = UNetConfig.from_settings(settings, image_size=image_size)
    # shapes only: no random initialisation to compile and throw away
    graphdef, state = nnx.split(nnx.eval_shape(lambda: PConvUNet(config, rngs=nnx.Rngs(0))))
    pure = nnx.to_pure_dict(state)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(pure)
    paths = [tuple(k.key for k in path) for path, _ in leaves]
    if set(paths) != set(arrays):
        raise AssertionError(f"conversion sets {sorted(set(arrays) ^ set(paths))} wrongly")
    for path, (_, leaf) in zip(paths, leaves, strict=True):
        if tuple(leaf.shape) != arrays[path].shape:
            raise AssertionError(f"{path}: {arrays[path].shape} for {leaf.shape}")
    values = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[p]) for p in paths])
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def _new_folder(workdir: str) -> None:
    """ConvertError unless `workdir` is absent or an empty folder."""
    if os.path.lexists(workdir) and not (os.path.isdir(workdir) and not os.listdir(workdir)):
        raise ConvertError(f"--workdir {workdir} exists and is not an empty folder: the "
                           "converted run needs a new one")


def write_run(workdir: str, model, *, step: int, provenance: dict) -> None:
    """Writes `model` as a run folder at `workdir` (staged beside it, then moved there)."""
    from flax import nnx

    from pconv_jax import checkpoint as ckpt
    from pconv_jax import config as config_lib
    from pconv_jax.run_utils import package_versions

    _new_folder(workdir)
    target = os.path.abspath(workdir)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".pconv-convert-", dir=os.path.dirname(target))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # a folder as mkdir makes it, not mkdtemp's 0700
    try:
        config = config_lib.default_config()
        config.model.update(config_lib.model_settings(model.config))
        config.data.image_size = model.config.image_size
        config.train.compute_dtype = "float32"
        meta = {**model.config.output_settings(), "step": step, "seed": 0,
                "converted_from": provenance["source"]}
        checkpointer = ckpt.Checkpointer(staging, keep=1, async_save=False)
        try:  # the model half of a training state (model, optimizer): all readers need
            checkpointer.save(step, nnx.state((model,)), {}, meta)
        finally:
            checkpointer.close()
        with open(os.path.join(staging, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))
        with open(os.path.join(staging, "versions.json"), "w") as f:
            json.dump(package_versions(), f, indent=1)
        with open(os.path.join(staging, "converted.json"), "w") as f:
            json.dump(provenance, f, indent=1)
        _new_folder(workdir)  # nothing appeared there meanwhile
        if os.path.isdir(target):
            os.rmdir(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def convert_naoto0804(checkpoint: str, workdir: str, *, image_size: int | None = None,
                      step: int | None = None) -> dict:
    """Converts a naoto0804 checkpoint into the run folder `workdir`; its provenance record.

    image_size: the nominal size recorded (default 2**(layer_size+1): 256 px for the release);
    step: the checkpoint step (default: the file's n_iter, else 0).
    """
    from pconv_jax.paths import check_outputs

    check_outputs({"--workdir": workdir}, {"CHECKPOINT": checkpoint})
    _new_folder(workdir)
    state, info = read_naoto0804(checkpoint)
    layout = naoto0804_layout(state, checkpoint)
    size = 2 ** (layout.layer_size + 1) if image_size is None else image_size
    if size < 1 or size % 2**layout.layer_size:
        raise ConvertError(f"--image-size {size} is not a positive multiple of 2**layer_size = "
                           f"{2**layout.layer_size}")
    n_iter = info.get("n_iter")
    step = (n_iter if isinstance(n_iter, int) and n_iter >= 0 else 0) if step is None else step
    if step < 0:
        raise ConvertError(f"--step must be >= 0, got {step}")
    model = build_model(layout.model_settings(), naoto0804_arrays(state, layout), size)
    provenance = {"source": "naoto0804", "checkpoint": os.path.abspath(checkpoint),
                  "release": RELEASE, "layer_size": layout.layer_size,
                  "widths": list(layout.widths), "step": step,
                  **({"n_iter": n_iter} if n_iter is not None else {})}
    write_run(workdir, model, step=step, provenance=provenance)
    return provenance


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.convert",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    naoto = sub.add_parser("naoto0804", help="naoto0804/pytorch-inpainting-with-partial-conv")
    naoto.add_argument("checkpoint", metavar="CHECKPOINT",
                       help=".pth (needs torch), or its state dict as .safetensors or .npz")
    naoto.add_argument("--workdir", required=True, help="the new run folder")
    naoto.add_argument("--image-size", type=int, default=None,
                       help="nominal image size recorded (default 2**(layer_size+1): 256)")
    naoto.add_argument("--step", type=int, default=None,
                       help="checkpoint step (default: the file's n_iter, else 0)")
    args = parser.parse_args(argv)
    try:
        record = convert_naoto0804(args.checkpoint, args.workdir, image_size=args.image_size,
                                   step=args.step)
    except (ConvertError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.workdir}: naoto0804 PConvUNet, layer_size {record['layer_size']}, "
          f"widths {record['widths']}, step {record['step']}\n"
          f"  inpaint:   python -m pconv_jax.app --workdir {args.workdir}\n"
          f"  fine-tune: python -m pconv_jax.train --config "
          f"experiments/configs/finetune.py:{args.workdir} --workdir NEW_RUN "
          "--config.data.source=IMAGES --config.vgg.weights=VGG16_FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
