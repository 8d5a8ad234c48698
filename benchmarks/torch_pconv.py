"""naoto0804/pytorch-inpainting-with-partial-conv's PConv UNet, in PyTorch, from its facts.

Written from the description in issue #19 (what that network computes), not from its code; its
state dict uses that repository's key names (`enc_1.conv.input_conv.weight`,
`enc_1.conv.mask_conv.weight`, `enc_2.bn.running_mean`, ..., `dec_1.conv.input_conv.bias`), so
its released checkpoint (`1000000.pth`, Places2 at 256 px, layer_size 7) loads into
`PConvUNetTorch()` and this network's own `torch.save` files stand in for it in tests.

- Encoder `enc_1..enc_L`: widths 64, 128, 256, 512, 512, ...; kernels 7, 5, 5, 3, 3, ...;
  stride 2, padding (k-1)//2; ReLU; BatchNorm (eps 1e-5) on all but `enc_1`.
- Decoder `dec_L..dec_1`: nearest x2 upsampling of features and mask, concatenation with the
  encoder output one level up and its mask (finally the input image and input mask), 3x3
  stride 1 partial conv, BatchNorm and LeakyReLU(0.2); `dec_1` has neither.
- Partial conv: `y = W*(X.M) / sum(M) + b` where sum(M) > 0 (sum over every input channel of
  the per-channel mask, by a frozen all-ones `mask_conv`), 0 elsewhere; the new mask is 1
  where sum(M) > 0. No sum(1) factor. Only `dec_1` has a bias.
- Images in ImageNet-normalised space (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225),
  NCHW; the mask has the image's channels, 1 = valid.

Only torch is imported here: benchmarks import `PConvUNetTorch` into a torch-only interpreter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PartialConv(nn.Module):
    """Partial convolution dividing by sum(M) (no sum(1) factor); bias kept out of holes."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int, bias: bool = False):
        super().__init__()
        self.input_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                    bias=bias)
        self.mask_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                   bias=False)
        nn.init.kaiming_normal_(self.input_conv.weight, a=0, mode="fan_in")
        if bias:
            nn.init.zeros_(self.input_conv.bias)
        nn.init.ones_(self.mask_conv.weight)
        self.mask_conv.weight.requires_grad_(False)  # a window sum, never trained

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, mask: (N,Cin,H,W) -> y, new_mask: (N,Cout,H',W') (all mask channels equal)."""
        raw = self.input_conv(x * mask)
        bias = (self.input_conv.bias.view(1, -1, 1, 1) if self.input_conv.bias is not None
                else torch.zeros_like(raw))
        with torch.no_grad():
            mask_sum = self.mask_conv(mask)  # sum(M) over the window and every input channel
        holes = mask_sum == 0
        y = (raw - bias) / mask_sum.masked_fill(holes, 1.0) + bias
        y = y.masked_fill(holes, 0.0)
        new_mask = torch.ones_like(y).masked_fill(holes, 0.0)
        return y, new_mask


class PCBActiv(nn.Module):
    """Partial conv, optional BatchNorm (eps 1e-5), activation ('relu', 'leaky' or None)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 *, bn: bool = True, activ: str | None = "relu", conv_bias: bool = False):
        super().__init__()
        self.conv = PartialConv(in_channels, out_channels, kernel_size, stride,
                                (kernel_size - 1) // 2, bias=conv_bias)
        if bn:
            self.bn = nn.BatchNorm2d(out_channels, eps=1e-5)
        self.use_bn = bn
        self.activ = activ

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,Cin,H,W) features and mask -> (N,Cout,H',W') features and mask."""
        h, h_mask = self.conv(x, mask)
        if self.use_bn:
            h = self.bn(h)
        if self.activ == "relu":
            h = F.relu(h)
        elif self.activ == "leaky":
            h = F.leaky_relu(h, 0.2)
        return h, h_mask


class PConvUNetTorch(nn.Module):
    """The network with `layer_size` levels (7 at 256 px, 8 at 512 px) for NCHW images.

    `base_width` (keyword, default 64 as released) scales every width (base*(1, 2, 4, 8, 8,
    ...)) for narrow test variants; the key layout stays the same.
    """

    def __init__(self, layer_size: int = 7, input_channels: int = 3, *, base_width: int = 64):
        super().__init__()
        if layer_size < 4:
            raise ValueError(f"layer_size must be >= 4 (the network's fixed first four "
                             f"levels), got {layer_size}")
        self.layer_size = layer_size
        widths = [base_width * min(2**i, 8) for i in range(layer_size)]
        kernels = [7, 5, 5] + [3] * (layer_size - 3)
        ins = [input_channels, *widths[:-1]]
        for i in range(layer_size):
            setattr(self, f"enc_{i + 1}", PCBActiv(ins[i], widths[i], kernels[i], 2,
                                                   bn=i > 0, activ="relu"))
        for i in range(layer_size, 0, -1):  # dec_i joins level i's input (enc_{i-1} or image)
            up = widths[i - 1]
            skip = widths[i - 2] if i > 1 else input_channels
            if i > 1:
                setattr(self, f"dec_{i}", PCBActiv(up + skip, skip, 3, 1, activ="leaky"))
            else:
                self.dec_1 = PCBActiv(up + skip, input_channels, 3, 1, bn=False, activ=None,
                                      conv_bias=True)

    def forward(self, image: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (N,C,H,W) ImageNet-normalised; mask: (N,C,H,W), 1 = valid; H, W multiples of
        2**layer_size. Returns (output (N,C,H,W) in normalised space, output_mask (N,C,H,W))."""
        hs, ms = [image], [mask]  # level k: (N, C_k, H/2^k, W/2^k)
        h, h_mask = image, mask
        for i in range(1, self.layer_size + 1):
            h, h_mask = getattr(self, f"enc_{i}")(h, h_mask)
            hs.append(h)
            ms.append(h_mask)
        for i in range(self.layer_size, 0, -1):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h_mask = F.interpolate(h_mask, scale_factor=2, mode="nearest")
            h = torch.cat([h, hs[i - 1]], dim=1)  # (N, C_up + C_skip, 2h, 2w)
            h_mask = torch.cat([h_mask, ms[i - 1]], dim=1)
            h, h_mask = getattr(self, f"dec_{i}")(h, h_mask)
        return h, h_mask
