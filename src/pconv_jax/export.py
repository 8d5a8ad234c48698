"""Export a checkpoint for deployment: one ONNX or StableHLO file that runs without pconv-jax.

    python -m pconv_jax.export --workdir RUN [--step N] --out model.onnx
    python -m pconv_jax.export --workdir RUN [--step N] --out model.stablehlo [--dtype bfloat16]

Both files hold one function, `Inpainter`'s composite: image float32 (N,H,W,3) in [0,1] and
mask float32 (N,H,W,1), 1 = valid -> (N,H,W,3) in [0,1], the network's prediction in the holes
and every valid pixel bit-identical to the input. N, H and W are symbolic: one file serves every
batch size and every image whose sides are multiples of 2**depth (the network halves them depth
times). Other sizes: pad to the next multiple, mark the padding as hole (mask 0), run, crop
back, as `Inpainter` does.

- `.onnx`: the graph is written from the checkpoint's parameters with `onnx.helper` (Conv,
  Mul, Div, Clip, DepthToSpace, Resize, Concat, Relu, LeakyRelu; BatchNorm in its running-
  statistics form folded into the convolutions), checked with `onnx.checker` and loaded once in
  onnxruntime before the command reports success. Needs the `export` extra.
- `.stablehlo`: `jax.export`'s serialisation of the jitted eval forward (parameters inside),
  lowered for CPU, CUDA and TPU; `jax.export.deserialize(data).call(image, mask)` runs it where
  only jax and numpy are installed. `--dtype bfloat16` computes the convolutions in bfloat16
  (mask sums and ratios stay float32), for accelerators.

The output is written to a temporary file beside `--out` and moved into place only when it is
complete: a failed export leaves no partial file and an existing `--out` untouched.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pconv_jax.model import PConvUNet
from pconv_jax.ops import IMAGENET_MEAN, IMAGENET_STD, phase_kernels
from pconv_jax.paths import check_outputs, writable_folder, write_atomically

FORMATS = (".onnx", ".stablehlo")
DTYPES = ("float32", "bfloat16")
# Platforms the StableHLO artifact is lowered for (one file; the caller's backend picks).
PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 17  # DepthToSpace, Resize, Clip with tensor bounds; TensorRT 8.6+ and ORT take it


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why."""


def usage(multiple: int) -> str:
    """What sizes an exported file takes and how to feed it others (README, ONNX doc string)."""
    return (
        "inputs: image float32 (N,H,W,3) in [0,1], mask float32 (N,H,W,1), 1 = valid, "
        "0 = hole; output: (N,H,W,3) in [0,1], the prediction in the holes and the input "
        f"elsewhere. N any; H and W multiples of {multiple} (2**depth). Other sizes: pad the "
        f"image and mask at the bottom/right to the next multiple of {multiple}, with the "
        "padding marked as hole (mask 0), run, then crop the result back."
    )


# --- the model of a run --------------------------------------------------------------------

def load_model(workdir: str, step: int | None = None,
               dtype: str = "float32") -> tuple[PConvUNet, int, str]:
    """(eval-mode model of the run's newest or given checkpoint, its step, which weights:
    the moving average when the run kept one), computing in `dtype` (bfloat16 raises the
    mask eps to 1e-6 as training does)."""
    from pconv_jax.inpaint import load_inpainter

    inpainter = load_inpainter(workdir, step)
    model = inpainter.model
    if dtype != model.config.dtype:
        converted = PConvUNet(model.config.with_dtype(dtype), rngs=nnx.Rngs(0))
        nnx.update(converted, nnx.state(model))
        model = converted
    model.eval()
    return model, inpainter.step, inpainter.weights


def composite_fn(model: PConvUNet) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exported function: (image (N,H,W,3) in [0,1], mask (N,H,W,1), 1 = valid) ->
    composite (N,H,W,3) in [0,1], computed as `Inpainter` does on sizes it needs not pad."""
    graphdef, state = nnx.split(model)

    def composite(image: jax.Array, mask: jax.Array) -> jax.Array:
        valid = (mask > 0).astype(jnp.float32)  # (N,H,W,1)
        output, _ = nnx.merge(graphdef, state)(image * 2 - 1, valid)
        filled = jnp.clip((output + 1) / 2, 0, 1)
        return jnp.where(valid > 0, image, filled)

    return composite


def symbolic_specs(depth: int) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """Input specs with symbolic N, H = 2**depth*h, W = 2**depth*w (float32)."""
    multiple = 2**depth
    n, h, w = jax.export.symbolic_shape(f"N, {multiple}*h, {multiple}*w")
    return (jax.ShapeDtypeStruct((n, h, w, 3), jnp.float32),
            jax.ShapeDtypeStruct((n, h, w, 1), jnp.float32))


def export_stablehlo(model: PConvUNet, platforms: tuple[str, ...] = PLATFORMS) -> bytes:
    """`jax.export` serialisation of `composite_fn(model)` with symbolic N, H and W."""
    exported = jax.export.export(jax.jit(composite_fn(model)), platforms=platforms)(
        *symbolic_specs(model.config.depth))
    return bytes(exported.serialize())


# --- the ONNX graph, written from the parameters -------------------------------------------

class _Graph:
    """Nodes and initializers of an ONNX graph under construction, with unique names."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value, stem: str = "c") -> str:
        """An initializer holding `value` (float32 unless it is an int64 array)."""
        from onnx import numpy_helper

        array = np.asarray(value)
        array = array if array.dtype == np.int64 else array.astype(np.float32)
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        """Appends one node; returns its (single) output's name."""
        from onnx import helper

        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _folded(block) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(kernel HWIO, additive term, whether it is a bias to keep out of holes) of a block:
    BatchNorm's running-statistics form y*s + t folded as kernel*s and t."""
    kernel = np.asarray(block.kernel[...], np.float64)
    if block.bn is None:
        bias = None if block.bias is None else np.asarray(block.bias[...], np.float64)
        return kernel, bias, True
    bn = block.bn
    var = np.asarray(bn.var[...], np.float64)
    scale = np.asarray(bn.scale[...], np.float64) if bn.scale is not None else 1.0
    shift = np.asarray(bn.bias[...], np.float64) if bn.bias is not None else 0.0
    s = scale / np.sqrt(var + bn.epsilon)
    return kernel * s, shift - np.asarray(bn.mean[...], np.float64) * s, False


def _oihw(kernel_hwio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel_hwio.transpose(3, 2, 0, 1))


def _renormalise(g: _Graph, raw: str, count: str, window_size: int, k: int, stride: int,
                 pad: int, eps: float, bias: np.ndarray | None, is_bias: bool,
                 max_ratio: float | None = None) -> tuple[str, str]:
    """(y, new_mask) from the raw convolution and the per-pixel valid count (N,1,H,W):
    ratio = min(winsize / (window sum + eps), max_ratio) * update; y = raw * ratio (+ b)
    (* update)."""
    window_sum = g.op("Conv", count, g.const(np.ones((1, 1, k, k)), "ones"),
                      kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    update = g.op("Clip", window_sum, g.const(0.0), g.const(1.0))
    ratio = g.op("Div", g.const(float(window_size)), g.op("Add", window_sum, g.const(eps)))
    if max_ratio is not None:
        ratio = g.op("Min", ratio, g.const(float(max_ratio)))
    ratio = g.op("Mul", ratio, update)
    y = g.op("Mul", raw, ratio)
    if bias is not None:
        y = g.op("Add", y, g.const(bias.reshape(1, -1, 1, 1), "bias"))
        if is_bias:  # a convolution bias stays out of holes; BatchNorm's shift does not
            y = g.op("Mul", y, update)
    return y, update


def _activate(g: _Graph, y: str, activation: str | None, slope: float) -> str:
    if activation is None:
        return y
    if activation == "relu":
        return g.op("Relu", y)
    if activation == "leaky_relu":
        return g.op("LeakyRelu", y, alpha=float(slope))
    raise ExportError(f"no ONNX form for activation {activation!r}")


def _encoder_layer(g: _Graph, block, x: str, mask: str) -> tuple[str, str]:
    """Strided partial convolution of x (N,C,H,W) with mask (N,1,H,W)."""
    kernel, bias, is_bias = _folded(block)
    k = kernel.shape[0]
    raw = g.op("Conv", g.op("Mul", x, mask), g.const(_oihw(kernel), "kernel"),
               kernel_shape=[k, k], strides=[block.stride] * 2, pads=[block.padding] * 4)
    # one mask for all channels: sum(1)/sum(M) = k*k / (window sum of the one-channel mask)
    y, mask = _renormalise(g, raw, mask, k * k, k, block.stride, block.padding,
                           block.eps, bias, is_bias, block.max_ratio)
    return _activate(g, y, block.activation, block.slope), mask


def _decoder_layer(g: _Graph, block, low: tuple[str, str], skip: tuple[str, str],
                   c_up: int) -> tuple[str, str]:
    """Partial convolution of concat(upsample x2 (low), skip), the upsampled part's
    convolution taken at low resolution (four phase convolutions and DepthToSpace)."""
    (x_low, m_low), (x_skip, m_skip) = low, skip
    kernel, bias, is_bias = _folded(block)
    k, cin = kernel.shape[0], kernel.shape[2]
    pad = block.padding
    low_masked = g.op("Mul", x_low, m_low)  # (N,C_up,h,w)
    # the phases in (py, px) row-major order: DepthToSpace's; ONNX pads [top, left, bottom, right]
    phases = [g.op("Conv", low_masked, g.const(_oihw(taps), "phase"),
                   kernel_shape=list(taps.shape[:2]), pads=[top, left, bottom, right])
              for taps, ((top, bottom), (left, right)) in phase_kernels(kernel[:, :, :c_up])]
    up = g.op("DepthToSpace", g.op("Concat", *phases, axis=1), blocksize=2, mode="DCR")
    skip_raw = g.op("Conv", g.op("Mul", x_skip, m_skip),
                    g.const(_oihw(kernel[:, :, c_up:]), "kernel"), kernel_shape=[k, k],
                    pads=[pad] * 4)
    raw = g.op("Add", up, skip_raw)  # (N,O,2h,2w)
    m_up = g.op("Resize", m_low, "", g.const([1.0, 1.0, 2.0, 2.0]), mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    count = g.op("Add", g.op("Mul", m_up, g.const(float(c_up))),
                 g.op("Mul", m_skip, g.const(float(cin - c_up))))  # (N,1,2h,2w)
    y, mask = _renormalise(g, raw, count, k * k * cin, k, 1, pad, block.eps, bias, is_bias,
                           block.max_ratio)
    return _activate(g, y, block.activation, block.slope), mask


def _normalization(g: _Graph, config) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """(into, out_of) the network's own input space: UNetConfig.normalization "imagenet" maps
    the [-1,1] input to ImageNet-normalised space and the raw output back; "none" is identity."""
    kind = getattr(config, "normalization", "none")
    if kind == "none":
        return (lambda x: x), (lambda y: y)
    if kind != "imagenet":
        raise ExportError(f"no ONNX form for model normalization {kind!r}")
    mean = g.const(np.reshape(IMAGENET_MEAN, (1, 3, 1, 1)), "mean")
    std = g.const(np.reshape(IMAGENET_STD, (1, 3, 1, 1)), "std")
    one, two = g.const(1.0), g.const(2.0)

    def into(x: str) -> str:  # ((x + 1) / 2 - mean) / std
        return g.op("Div", g.op("Sub", g.op("Div", g.op("Add", x, one), two), mean), std)

    def out_of(y: str) -> str:  # (y * std + mean) * 2 - 1
        return g.op("Sub", g.op("Mul", g.op("Add", g.op("Mul", y, std), mean), two), one)

    return into, out_of


def onnx_model(model: PConvUNet, *, doc: str = "", metadata: dict | None = None):
    """The ONNX model (onnx.ModelProto) of `composite_fn(model)` in float32, NCHW inside,
    with symbolic N, H, W."""
    from onnx import TensorProto, helper

    config = model.config
    if config.dtype != "float32":
        raise ExportError("the ONNX export computes in float32 (onnxruntime's CPU provider "
                          "has no bfloat16 convolution); use .stablehlo for bfloat16")
    g = _Graph()
    into, out_of = _normalization(g, config)
    image = g.op("Transpose", "image", perm=[0, 3, 1, 2])  # (N,3,H,W)
    valid_hw = g.op("Greater", "mask", g.const(0.0))  # (N,H,W,1) bool
    valid = g.op("Transpose", g.op("Cast", valid_hw, to=TensorProto.FLOAT), perm=[0, 3, 1, 2])
    x = into(g.op("Sub", g.op("Mul", image, g.const(2.0)), g.const(1.0)))
    skips, m = [(x, valid)], valid
    channels = [config.in_channels]
    for block in model.encoder:
        x, m = _encoder_layer(g, block, x, m)  # (N,C_i,h/2,w/2)
        skips.append((x, m))
        channels.append(int(block.kernel.shape[3]))
    skips.pop()  # the bottleneck is not a skip
    c_up = channels.pop()
    for block in model.decoder:
        channels.pop()
        x, m = _decoder_layer(g, block, (x, m), skips.pop(), c_up)
        c_up = int(block.kernel.shape[3])
    output = g.op("Transpose", out_of(x), perm=[0, 2, 3, 1])  # (N,H,W,3)
    filled = g.op("Clip", g.op("Div", g.op("Add", output, g.const(1.0)), g.const(2.0)),
                  g.const(0.0), g.const(1.0))
    g.nodes.append(helper.make_node("Where", [valid_hw, "image", filled], ["composite"]))

    def io(name: str, channels: int):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", "H", "W", channels])

    graph = helper.make_graph(g.nodes, "pconv_composite", [io("image", 3), io("mask", 1)],
                              [io("composite", 3)], initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="pconv-jax", doc_string=doc)
    proto.ir_version = 8  # readable by onnxruntime >= 1.10 and TensorRT 8.6
    helper.set_model_props(proto, {k: str(v) for k, v in (metadata or {}).items()})
    return proto


def check_onnx(data: bytes) -> None:
    """onnx.checker on the serialised model, then one onnxruntime session made from it."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])


# --- the command line -----------------------------------------------------------------------

def check_request(workdir: str, step: int | None, out: str) -> str:
    """The format of `out` (its suffix); ExportError/OSError for a request that cannot succeed,
    from what costs milliseconds: run, step, suffix, overlap, a writable folder."""
    from pconv_jax.checkpoint import checkpoint_dir

    suffix = os.path.splitext(out)[1].lower()
    if suffix not in FORMATS or out.endswith(os.sep) or os.path.isdir(out):
        raise ExportError(f"--out {out!r} must be a file ending in {' or '.join(FORMATS)}")
    check_outputs({"--out": out}, {"--workdir": workdir})
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise ExportError(f"--workdir {workdir} is not a training run: no config.json")
    directory = checkpoint_dir(workdir)
    steps = sorted(int(s) for s in (os.listdir(directory) if os.path.isdir(directory) else ())
                   if s.isdigit())
    if not steps:
        raise ExportError(f"--workdir {workdir} holds no checkpoint ({directory})")
    if step is not None and step not in steps:
        raise ExportError(f"no checkpoint for --step {step} in {directory}; saved steps: {steps}")
    try:
        writable_folder(out)
    except OSError as err:
        raise ExportError(f"cannot write --out {out}: {err}") from None
    return suffix


def export_run(workdir: str, out: str, step: int | None = None,
               dtype: str = "float32") -> str:
    """Exports a run's checkpoint to `out` (.onnx or .stablehlo); one report line."""
    suffix = check_request(workdir, step, out)
    if suffix == ".onnx" and dtype != "float32":
        raise ExportError("--dtype bfloat16 is for .stablehlo: the ONNX graph computes in "
                          "float32 (onnxruntime's CPU provider has no bfloat16 convolution)")
    if suffix == ".onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise ExportError(f"the ONNX export needs onnx and onnxruntime ({err.name} is "
                              "missing): pip install 'pconv-jax[export]'") from None
    model, loaded_step, weights = load_model(workdir, step, dtype)
    multiple = 2**model.config.depth
    if suffix == ".onnx":
        metadata = {"pconv_jax.step": loaded_step, "pconv_jax.weights": weights,
                    "pconv_jax.size_multiple": multiple,
                    **model.config.output_settings()}
        data = onnx_model(model, doc=usage(multiple), metadata=metadata).SerializeToString()
        check_onnx(data)
    else:
        data = export_stablehlo(model)
    write_atomically(out, lambda tmp: pathlib.Path(tmp).write_bytes(data))
    return (f"wrote {out} ({len(data) / 2**20:.1f} MiB, step {loaded_step}, {weights} weights, "
            f"{dtype}): "
            f"batch any, height and width multiples of {multiple}")


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.export",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training run folder")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest)")
    parser.add_argument("--out", required=True, help="output file: .onnx or .stablehlo")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="compute dtype (bfloat16: .stablehlo, for accelerators)")
    args = parser.parse_args(argv)
    from pconv_jax.checkpoint import quiet_orbax_failures

    quiet_orbax_failures()  # an unreadable checkpoint is one line, not Orbax's tracebacks
    try:
        print(export_run(args.workdir, args.out, args.step, args.dtype))
    except (OSError, ValueError) as err:  # ExportError, CheckpointError, a bad config.json
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
