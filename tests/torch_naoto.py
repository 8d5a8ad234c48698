"""Run in a torch-only interpreter by tests/test_convert.py: naoto0804's network as
benchmarks/torch_pconv.py builds it, its own output and its own checkpoint files.

    PYTHON_WITH_TORCH tests/torch_naoto.py OUT --layer-size 4 --base-width 4 --sizes 32x32,32x64

Writes to OUT: `legacy.pth` (torch's pre-1.6 format), `zip.pth` (whole checkpoints: n_iter,
model, optimizer), `bare.pth` (a state dict); `state_<name>.npz`, each the state dict as
pconv_jax.convert.read_naoto0804 read that file (checked here to equal the network's own
tensors); `outputs.npz` (per size: image, valid, and the network's composited, unnormalised
result `comp`, computed as its evaluation does); `report.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "src")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchmarks.torch_pconv import IMAGENET_MEAN, IMAGENET_STD, PConvUNetTorch  # noqa: E402

from pconv_jax.convert import read_naoto0804  # noqa: E402 - NumPy only: no jax here
from tests.naoto_util import naoto_inputs, naoto_state  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--layer-size", type=int, default=4)
    parser.add_argument("--base-width", type=int, default=4)
    parser.add_argument("--sizes", default="32x32,32x64")
    args = parser.parse_args()
    if "jax" in sys.modules:
        raise SystemExit("jax was imported: the reading code must not need it")
    torch.manual_seed(0)
    net = PConvUNetTorch(args.layer_size, base_width=args.base_width)
    # strict: the test's key layout is the network's own
    net.load_state_dict({k: torch.from_numpy(v) for k, v in
                         naoto_state(args.layer_size, args.base_width).items()}, strict=True)
    net.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    outputs = {}
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        image, valid = naoto_inputs(h, w)
        x = (torch.from_numpy(image).permute(0, 3, 1, 2) - mean) / std  # its Normalize
        m = torch.from_numpy(valid)[:, None].repeat(1, 3, 1, 1)  # (N,3,H,W), 1 = valid
        with torch.no_grad():
            out, _ = net(x * m, m)  # its data set hands the network gt * mask
            comp = (m * x + (1 - m) * out) * std + mean  # its evaluation: composite, unnormalise
        outputs[f"{size}/image"], outputs[f"{size}/valid"] = image, valid
        outputs[f"{size}/comp"] = comp.permute(0, 2, 3, 1).numpy()
    np.savez(os.path.join(args.out, "outputs.npz"), **outputs)

    own = {k: v.numpy() for k, v in net.state_dict().items()}
    checkpoint = {"n_iter": 1234, "model": net.state_dict(),
                  "optimizer": torch.optim.Adam(net.parameters(), lr=2e-4).state_dict()}
    files = {"legacy": (checkpoint, {"_use_new_zipfile_serialization": False}),
             "zip": (checkpoint, {}), "bare": (net.state_dict(), {})}
    report = {"torch": torch.__version__}
    for name, (obj, options) in files.items():
        path = os.path.join(args.out, f"{name}.pth")
        torch.save(obj, path, **options)
        state, info = read_naoto0804(path)
        if set(state) != set(own) or any(not np.array_equal(state[k], own[k]) for k in own):
            raise SystemExit(f"{path}: read_naoto0804 differs from the network's state dict")
        np.savez(os.path.join(args.out, f"state_{name}.npz"), **state)
        report[name] = {"zip": zipfile.is_zipfile(path), "info": info, "tensors": len(state)}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
