"""The GPU check's PyTorch step: the PyTorch reimplementation's network (issue #19's
`benchmarks/torch_pconv.py`, `PConvUNetTorch`, layer_size 8 at 512 px) trained as its users run
it, on the same device, for the images/s comparison with our step:

    python -m benchmarks.gpu_check.torch_step --out DIR [--tiny] [--net MODULE_OR_FILE:CLASS]

One training step = forward of the network (NCHW, 3-channel mask, AMP bfloat16 autocast,
channels_last, cudnn.benchmark), the paper's six loss terms with the paper's weights on a
random-weight VGG-16 (pool1..3; run once on [I_out; I_comp] with gradients and once on I_gt
without), backward, and Adam (lr 2e-4; fused on CUDA): the work of our step, the loss's
formulas as in pconv_jax.losses. Each batch (6, and our bf16 step's largest batch from
DIR/step.json) runs eager, then each under torch.compile where it compiles in the time left.
Writes DIR/torch.json. Imports only torch and the standard library, so any interpreter with
torch runs it (PCONV_TORCH_PYTHON).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style_out": 120.0,
           "style_comp": 120.0, "tv": 0.1}  # the paper's (pconv_jax.losses.LossWeights)
VGG_POOLS = ((64, 64), (128, 128), (256, 256, 256))  # VGG-16's convolutions up to pool3


class VGG16Pools(nn.Module):
    """VGG-16's features up to pool3 (random weights: the cost, not the meaning)."""

    def __init__(self):
        super().__init__()
        blocks, cin = [], 3
        for widths in VGG_POOLS:
            layers = []
            for width in widths:
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N,3,H,W) -> [pool1 (N,64,H/2,W/2), pool2, pool3]."""
        pools = []
        for block in self.blocks:
            x = block(x)
            pools.append(x)
        return pools


def gram(f: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,C) Gram matrix / (C H W), in float32."""
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w).float()
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def loss_terms(output: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
               vgg: nn.Module) -> dict[str, torch.Tensor]:
    """The paper's six terms (NCHW, mask 1 = valid, same channels as the image)."""
    output = output.float()
    comp = mask * gt + (1 - mask) * output
    terms = {"valid": torch.mean(torch.abs(mask * (output - gt))),
             "hole": torch.mean(torch.abs((1 - mask) * (output - gt)))}
    n = output.shape[0]
    pools = vgg(torch.cat([output, comp]))  # one pass on [I_out; I_comp]
    with torch.no_grad():
        pools_gt = vgg(gt)
    terms["perceptual"] = sum(torch.mean(torch.abs(p[:n].float() - g.float())) +
                              torch.mean(torch.abs(p[n:].float() - g.float()))
                              for p, g in zip(pools, pools_gt, strict=True))
    grams_gt = [gram(g) for g in pools_gt]
    terms["style_out"] = sum(torch.mean(torch.abs(gram(p[:n]) - g))
                             for p, g in zip(pools, grams_gt, strict=True))
    terms["style_comp"] = sum(torch.mean(torch.abs(gram(p[n:]) - g))
                              for p, g in zip(pools, grams_gt, strict=True))
    hole = 1 - mask[:, :1]
    region = F.max_pool2d(hole, 3, stride=1, padding=1)  # holes dilated by one pixel
    across = region[:, :, :, 1:] * region[:, :, :, :-1]
    down = region[:, :, 1:, :] * region[:, :, :-1, :]
    terms["tv"] = (torch.sum(across * torch.abs(comp[:, :, :, 1:] - comp[:, :, :, :-1])) +
                   torch.sum(down * torch.abs(comp[:, :, 1:, :] - comp[:, :, :-1, :]))
                   ) / comp.numel()
    return terms


def load_net(spec: str):
    """The class named by 'package.module:Class' or '/path/file.py:Class'."""
    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location("torch_pconv_net", where)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def batch_of(batch: int, size: int, device: torch.device):
    """Random images in ImageNet-normalised space and 3-channel masks with one hole each."""
    g = torch.Generator().manual_seed(batch)
    image = torch.randn(batch, 3, size, size, generator=g)
    mask = torch.ones(batch, 3, size, size)
    for i in range(batch):
        top, left = (torch.randint(0, size // 2, (2,), generator=g)).tolist()
        mask[i, :, top:top + size // 3, left:left + size // 3] = 0
    cl = torch.channels_last
    return (image.to(device).contiguous(memory_format=cl),
            mask.to(device).contiguous(memory_format=cl))


def measure(net_cls, layer_size: int, size: int, batch: int, device: torch.device,
            compile_it: bool, seconds: float) -> dict:
    """Images/s of the training step, its first-call time (compiling) and peak memory."""
    torch.manual_seed(0)
    model = net_cls(layer_size=layer_size, input_channels=3).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    vgg = VGG16Pools().to(device).to(memory_format=torch.channels_last).eval()
    for p in vgg.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.999),
                                 fused=device.type == "cuda")
    forward, losses = model, loss_terms
    if compile_it:
        forward, losses = torch.compile(model), torch.compile(loss_terms)
    image, mask = batch_of(batch, size, device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            output, _ = forward(image, mask)
            terms = losses(output, image, mask, vgg)
            loss = sum(WEIGHTS[k] * v for k, v in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = step()
    sync()
    first = time.perf_counter() - start
    for _ in range(2):
        step()
    sync()
    start = time.perf_counter()
    step()
    sync()
    one = time.perf_counter() - start
    k = max(1, min(200, int(seconds / 5 / max(one, 1e-6))))
    per_step = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(k):
            loss = step()
        sync()
        per_step.append((time.perf_counter() - start) / k)
    seconds_per_step = statistics.median(per_step)
    return {"batch": batch, "mode": "compiled" if compile_it else "eager",
            "first_step_s": first, "seconds_per_step": seconds_per_step,
            "images_per_s": batch / seconds_per_step,
            "spread": (max(per_step) - min(per_step)) / seconds_per_step,
            "loss_finite": bool(torch.isfinite(loss).item()),
            "peak_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None}


def write(out: str, record: dict) -> None:
    """DIR/torch.json, replaced whole."""
    path = os.path.join(out, "torch.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)


def our_largest_batch(out: str) -> int | None:
    """The largest batch of our bf16 step in DIR/step.json, if it has one."""
    try:
        with open(os.path.join(out, "step.json")) as f:
            rows = json.load(f).get("rows", [])
    except (OSError, json.JSONDecodeError):
        return None
    return next((r["batch"] for r in rows if r["dtype"] == "bfloat16" and r.get("largest")),
                None)


def run(args, record: dict) -> None:
    """Fills `record` step by step (written after each row)."""
    end = time.monotonic() + args.budget
    try:
        net_cls = load_net(args.net)
    except (ImportError, AttributeError, OSError) as err:
        record.update(status="skipped", line=f"skipped: the PyTorch network {args.net} is not "
                      f"here ({type(err).__name__}: {err}; issue #19's benchmarks/torch_pconv.py)")
        return
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    record.update(device=(torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"),
                  torch=torch.__version__, python=sys.version.split()[0], net=args.net,
                  rows=[], errors=[])
    layer_size, size = (4, 32) if args.tiny else (8, 512)
    batches = [2] if args.tiny else [6]
    largest = None if args.tiny else our_largest_batch(args.out)
    if largest and largest not in batches:
        batches.append(largest)
    use_compile = args.compile == "on" or (args.compile == "auto" and not args.tiny)
    modes = [False, True] if use_compile else [False]  # eager, then torch.compile
    if not use_compile:
        record["errors"].append("torch.compile not tried (the tiny dry run: minutes on a CPU)"
                                if args.tiny else "torch.compile not tried (--compile off)")
    seconds = 0.3 if args.tiny else 2.0
    for compile_it in modes:  # every eager row first: compiling may not finish in time
        for batch in batches:
            if compile_it and any(e.startswith("compile failed") for e in record["errors"]):
                continue
            left = end - time.monotonic()
            if left < (40 if compile_it else 15):
                record["errors"].append(f"batch {batch} {'compiled' if compile_it else 'eager'}"
                                        f": no time left ({left:.0f} s)")
                continue
            try:
                row = measure(net_cls, layer_size, size, batch, device, compile_it, seconds)
            except Exception as err:  # noqa: BLE001 - recorded; the other rows still run
                traceback.print_exc()
                kind = "compile failed" if compile_it else "failed"
                record["errors"].append(f"{kind} at batch {batch}: {type(err).__name__}: "
                                        f"{str(err).splitlines()[0][:200] if str(err) else ''}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            record["rows"].append(row)
            write(args.out, record)
    best = {}
    for row in record["rows"]:
        if row["batch"] not in best or row["images_per_s"] > best[row["batch"]]["images_per_s"]:
            best[row["batch"]] = row
    record["best"] = list(best.values())
    ok = bool(record["rows"]) and all(r["loss_finite"] for r in record["rows"])
    record["status"] = "ok" if ok else "failed"
    record["line"] = "; ".join(f"b{r['batch']} {r['mode']} {r['images_per_s']:.1f} img/s"
                               for r in record["rows"]) or "no row measured"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=75.0)
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: 32 px, layer_size 4")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile rows (auto: not in --tiny)")
    parser.add_argument("--net", default=os.environ.get(
        "GPU_CHECK_TORCH_NET", "benchmarks.torch_pconv:PConvUNetTorch"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    record: dict = {}
    try:
        run(args, record)
    except Exception as err:  # noqa: BLE001 - the step's failure is its result
        traceback.print_exc()
        record.update(status="failed", line=f"{type(err).__name__}: {str(err)[:300]}")
    write(args.out, record)
    print(record.get("line", ""), flush=True)
    return 0 if record.get("status") in ("ok", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
