"""The PConv UNet of Liu et al. (2018) in Flax NNX: `UNetConfig`, `PConvBlock`, `PConvUNet`.

Encoder: `depth` partial convolutions of stride 2 (ReLU, BatchNorm from the second on).
Decoder: `depth` steps of nearest x2 upsampling of features *and* mask, concatenation with the
matching encoder output and its mask (finally the input image and input mask), a 3x3 partial
convolution, BatchNorm and LeakyReLU(0.2); the last layer has a bias and no activation.
Masks stay (N,H,W,1): the concatenation of parts with different masks is exact through
`ops.partial_conv_upsample_concat`, which also convolves the upsampled part at low resolution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from pconv_jax.ops import from_imagenet, partial_conv, partial_conv_upsample_concat, to_imagenet

Array = jax.Array

NORMALIZATIONS = ("none", "imagenet")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Settings of the PConv UNet; `UNetConfig.paper()` is the paper's table at 512 px."""

    depth: int = 8
    image_size: int = 512  # nominal training size; any multiple of 2**depth runs
    in_channels: int = 3
    out_channels: int = 3
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512, 512)
    encoder_kernels: tuple[int, ...] = (7, 5, 5, 3, 3, 3, 3, 3)
    decoder_kernel: int = 3
    leaky_slope: float = 0.2
    bn_momentum: float = 0.9  # PyTorch's momentum 0.1, as in the reference implementation
    bn_epsilon: float = 1e-5
    mask_eps: float = 1e-8  # the authors advise 1e-6 under mixed precision
    dtype: str = "float32"  # compute dtype of the convolutions; parameters stay float32
    # "imagenet": the layers work on ImageNet-normalised images ((x01 - mean) / std) and the
    # last one outputs in that space (naoto0804's PyTorch model, pconv_jax.convert); the
    # model's image and output stay in [-1, 1] either way.
    normalization: str = "none"
    first_bias: bool = True  # PConv1 has a bias (the paper); False: bias-free (naoto0804)
    # Not the paper's method: a cap on every layer's renormalisation sum(1)/sum(M) (0: none,
    # the paper's form). experiments/README.md, "Smooth fills", measures it.
    ratio_cap: float = 0.0

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        for name in ("encoder_widths", "encoder_kernels"):
            value = getattr(self, name)
            if len(value) != self.depth:
                raise ValueError(f"{name} has {len(value)} entries {value}; depth is {self.depth}")
            if not all(isinstance(v, int) and v >= 1 for v in value):
                raise ValueError(f"{name} must hold positive ints, got {value}")
        kernels = (*self.encoder_kernels, self.decoder_kernel)
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel sizes must be odd (centred windows), got {kernels}")
        if self.image_size % 2**self.depth:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of 2**depth = {2**self.depth}"
            )
        if self.dtype not in ("float32", "bfloat16"):  # float16 would need loss scaling
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r} (float16 "
                             "is not supported: it needs loss scaling; bfloat16 does not)")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got "
                             f"{self.normalization!r}")
        cap = self.ratio_cap
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not (
                cap == 0 or 1 <= cap < float("inf")):
            raise ValueError(f"ratio_cap must be 0 (no cap: the paper's partial convolution) "
                             f"or a number >= 1, got {cap!r}")
        if self.normalization == "imagenet" and (self.in_channels, self.out_channels) != (3, 3):
            raise ValueError("normalization 'imagenet' needs RGB in and out (in_channels = "
                             f"out_channels = 3), got {self.in_channels} and {self.out_channels}")

    def output_settings(self) -> dict:
        """{"model.NAME": value} of every setting that changes what a trained model outputs
        (not the nominal image size, the compute dtype or the BatchNorm momentum), as JSON
        values: checkpoints record them, and readers compare them with their config."""
        names = ("depth", "in_channels", "out_channels", "encoder_widths", "encoder_kernels",
                 "decoder_kernel", "leaky_slope", "bn_epsilon", "mask_eps", "normalization",
                 "first_bias", "ratio_cap")
        return {f"model.{name}": (list(value) if isinstance(value, tuple) else value)
                for name in names for value in (getattr(self, name),)}

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        """Output widths of the decoder layers: each matches its skip's width, the last is RGB."""
        return (*reversed(self.encoder_widths[:-1]), self.out_channels)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, image_size: int,
                      compute_dtype: str = "float32") -> UNetConfig:
        """The UNetConfig of a run's `model` settings (as in config.json), its image size and
        compute dtype; ValueError naming unknown or invalid settings."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(settings) - fields
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}; known: {sorted(fields)}")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items()}
        values["dtype"] = compute_dtype
        values["image_size"] = image_size
        return cls(**values).with_dtype(compute_dtype)

    def with_dtype(self, dtype: str) -> UNetConfig:
        """This config computing in `dtype`; below float32 the mask eps is at least 1e-6 (the
        authors' advice under mixed precision), in float32 it stays as it is."""
        eps = self.mask_eps if dtype == "float32" else max(self.mask_eps, 1e-6)
        return dataclasses.replace(self, dtype=dtype, mask_eps=eps)

    @classmethod
    def paper(cls) -> UNetConfig:
        """The paper's network: 512x512 input, depth 8 (PConv1-16)."""
        return cls()

    @classmethod
    def paper_256(cls) -> UNetConfig:
        """The paper's network for 256x256 input: depth 7, one 512-wide level fewer."""
        return cls(
            depth=7, image_size=256, encoder_widths=(64, 128, 256, 512, 512, 512, 512),
            encoder_kernels=(7, 5, 5, 3, 3, 3, 3),
        )

    @classmethod
    def tiny(cls, depth: int = 4, width: int = 8, image_size: int = 64) -> UNetConfig:
        """A narrow variant for tests and CPU demos: widths width*(1, 2, 4, 8, 8, ...)."""
        widths = tuple(width * min(2**i, 8) for i in range(depth))
        kernels = tuple((7, 5, 5)[i] if i < 3 else 3 for i in range(depth))
        return cls(depth=depth, image_size=image_size, encoder_widths=widths,
                   encoder_kernels=kernels)


def _activation(name: str | None, slope: float) -> Callable[[Array], Array]:
    """Returns the activation function called `name` (relu, leaky_relu or None)."""
    if name is None:
        return lambda x: x
    if name == "relu":
        return jax.nn.relu
    if name == "leaky_relu":
        return lambda x: jax.nn.leaky_relu(x, slope)
    raise ValueError(f"unknown activation {name!r}")


class PConvBlock(nnx.Module):
    """Partial convolution (bias: by default only without BatchNorm), optional BatchNorm,
    activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int,
        batch_norm: bool,
        activation: str | None,
        config: UNetConfig,
        rngs: nnx.Rngs,
        bias: bool | None = None,
    ):
        init = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # Kaiming normal
        shape = (kernel_size, kernel_size, in_channels, out_channels)  # HWIO
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        bias = not batch_norm if bias is None else bias  # default: a bias only without BN
        self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32)) if bias else None
        self.bn = (
            nnx.BatchNorm(out_channels, momentum=config.bn_momentum, epsilon=config.bn_epsilon,
                          dtype=jnp.dtype(config.dtype), rngs=rngs)
            if batch_norm else None
        )
        self.stride = stride
        self.padding = (kernel_size - 1) // 2  # symmetric, as the reference implementation
        self.activation = activation
        self.slope = config.leaky_slope
        self.eps = config.mask_eps
        self.max_ratio = float(config.ratio_cap) or None  # None: the paper's form
        self.dtype = jnp.dtype(config.dtype)
        self.frozen_bn = False  # fine-tuning: BatchNorm uses and keeps its running statistics

    def __call__(
        self, x: Array, mask: Array, skip: tuple[Array, Array] | None = None
    ) -> tuple[Array, Array]:
        """Encoder: block(x, mask). Decoder: block(x, mask, (skip_x, skip_mask)).

        The decoder form upsamples x: (N,h,w,C) and mask x2 (nearest), concatenates the skip
        (N,2h,2w,C_skip) and its mask, and convolves; masks are (.., 1) throughout.
        """
        kernel = self.kernel[...].astype(self.dtype)
        bias = None if self.bias is None else self.bias[...]
        x = x.astype(self.dtype)
        if skip is None:
            y, mask = partial_conv(x, mask, kernel, bias, strides=self.stride,
                                   padding=self.padding, eps=self.eps, max_ratio=self.max_ratio)
        else:
            skip = (skip[0].astype(self.dtype), skip[1])
            y, mask = partial_conv_upsample_concat((x, mask), skip, kernel, bias, eps=self.eps,
                                                   max_ratio=self.max_ratio)
        if self.bn is not None:
            y = self.bn(y, use_running_average=True if self.frozen_bn else None)
        return _activation(self.activation, self.slope)(y), mask


def _nearest_valid_sizes(size: int, multiple: int) -> str:
    """Names the multiples of `multiple` nearest to `size`."""
    lower = (size // multiple) * multiple
    options = [s for s in (lower, lower + multiple) if s > 0]
    return " or ".join(str(s) for s in options)


class PConvUNet(nnx.Module):
    """The paper's UNet: `model(image, mask) -> (output, output_mask)`, NHWC, mask 1 = valid."""

    def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs):
        self.config = config
        depth, widths = config.depth, config.encoder_widths
        self.encoder = nnx.List([
            PConvBlock(
                config.in_channels if i == 0 else widths[i - 1], widths[i],
                config.encoder_kernels[i], stride=2, batch_norm=i > 0, activation="relu",
                config=config, rngs=rngs, bias=None if i > 0 else config.first_bias,
            )
            for i in range(depth)
        ])
        decoder = []
        for j, width in enumerate(config.decoder_widths):
            up = widths[-1] if j == 0 else config.decoder_widths[j - 1]
            skip = widths[depth - 2 - j] if j < depth - 1 else config.in_channels
            last = j == depth - 1
            decoder.append(PConvBlock(
                up + skip, width, config.decoder_kernel, stride=1, batch_norm=not last,
                activation=None if last else "leaky_relu", config=config, rngs=rngs,
            ))
        self.decoder = nnx.List(decoder)

    def check_inputs(self, image: Array, mask: Array) -> None:
        """Raises ValueError naming the problem when image or mask cannot enter the network."""
        cfg = self.config
        if image.ndim != 4 or image.shape[3] != cfg.in_channels:
            raise ValueError(
                f"image must be (N,H,W,{cfg.in_channels}), got shape {tuple(image.shape)}"
            )
        if mask.ndim != 4 or mask.shape[3] != 1 or mask.shape[:3] != image.shape[:3]:
            raise ValueError(
                f"mask must be (N,H,W,1) = {(*image.shape[:3], 1)} for image shape "
                f"{tuple(image.shape)}, got {tuple(mask.shape)}"
            )
        multiple = 2**cfg.depth
        for axis, size in (("height", image.shape[1]), ("width", image.shape[2])):
            remainder = size % multiple  # 0, an int or, for a symbolic size, an expression
            if not isinstance(remainder, int):  # jax.export: a size not declared a multiple
                raise ValueError(
                    f"symbolic image {axis} {size} is not declared a multiple of 2**depth = "
                    f"{multiple}: write it as {multiple}*{size} in jax.export.symbolic_shape"
                )
            if remainder:
                raise ValueError(
                    f"image {axis} {size} is not a multiple of 2**depth = {multiple} "
                    f"(depth {cfg.depth}); nearest valid sizes: "
                    f"{_nearest_valid_sizes(size, multiple)}"
                )

    def __call__(self, image: Array, mask: Array) -> tuple[Array, Array]:
        """image: (N,H,W,C) in [-1,1]; mask: (N,H,W,1), 1 = valid. Returns (N,H,W,3), (N,H,W,1)."""
        self.check_inputs(image, mask)
        mask = mask.astype(jnp.float32)
        imagenet = self.config.normalization == "imagenet"
        if imagenet:  # [-1,1] -> (x01 - mean) / std, the space the layers were trained in
            image = to_imagenet(image)
        skips = [(image, mask)]  # level k holds (N, H/2^k, W/2^k, C_k)
        x, m = image, mask
        for block in self.encoder:
            x, m = block(x, m)  # (N, h/2, w/2, C_i)
            skips.append((x, m))
        skips.pop()  # the bottleneck is not a skip
        for block in self.decoder:
            x, m = block(x, m, skips.pop())  # upsample, concat skip -> (N, 2h, 2w, C_out)
        x = x.astype(jnp.float32)
        if imagenet:  # back from the normalised space to [-1, 1]
            x = from_imagenet(x)
        return x, m

    def freeze_encoder_batchnorm(self, frozen: bool = True) -> None:
        """Fine-tuning switch: encoder BatchNorm uses running statistics and stops learning.

        Build the optimizer with `wrt=trainable(model)` after calling this, so the encoder's
        BatchNorm scale and bias are not updated either.
        """
        for block in self.encoder:
            block.frozen_bn = frozen


def is_encoder_batchnorm(path: tuple) -> bool:
    """Whether a variable's path (("encoder", i, "bn", ...), as NNX or jax.tree_util gives
    it) lies in an encoder block's BatchNorm: the variables phase 2 of the paper freezes."""
    keys = [getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path]
    return len(keys) >= 3 and keys[0] == "encoder" and keys[2] == "bn"


def trainable(model: PConvUNet) -> Any:
    """An NNX filter of the parameters to optimise: all but those of frozen BatchNorms."""

    def is_frozen(path: tuple, _value: Any) -> bool:
        return is_encoder_batchnorm(path) and model.encoder[path[1]].frozen_bn

    return nnx.All(nnx.Param, nnx.Not(is_frozen))
