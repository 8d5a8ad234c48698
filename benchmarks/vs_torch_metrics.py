"""FID-Inception and LPIPS-VGG speed: ours (JAX) against the reference packages (pytorch-fid
0.3, lpips 0.1 on torch), measured in one run on the same machine, same shapes and batches.

torch is not a dependency of the project; give an interpreter that has it:

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision pytorch-fid lpips
    .venv/bin/python -m benchmarks.vs_torch_metrics --torch-python /tmp/tv/bin/python

The two sides run alternately (ours, theirs, ours, theirs, ...) so that a slow phase of a
shared machine hits both; each round is the median of `--repeats` timed calls after a warm-up.
Both use random weights (speed does not depend on the values). Prints a Markdown table and
writes JSON with the machine, versions and date (`--out`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

INCEPTION = (299, 25)  # size, batch (the evaluate path resizes to 299 first)
LPIPS = (256, 8)


def _median(fn, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(repeats: int) -> dict:
    """Seconds per batch of pconv_jax.fid and pconv_jax.lpips."""
    import jax

    from pconv_jax import fid, lpips, vgg

    rng = np.random.default_rng(0)
    size, batch = INCEPTION
    net = fid.InceptionFID(fid.random_weights(0), batch_size=batch)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    size, batch = LPIPS
    metric = lpips.LPIPS(vgg.random_weights(0, all_convs=True), lpips.random_heads(0),
                         batch_size=batch)
    a, b = (rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32) for _ in range(2))
    return {"inception_s": _median(lambda: net.features(images), repeats),
            "lpips_s": _median(lambda: metric(a, b), repeats), "jax": jax.__version__}


def theirs(repeats: int) -> dict:
    """Seconds per batch of pytorch-fid's InceptionV3 (pool3) and lpips.LPIPS(net='vgg')."""
    import lpips
    import pytorch_fid.inception as pfi
    import torch

    torch.manual_seed(0)
    # pytorch-fid downloads its weights when it builds the network: build it with random ones
    pfi.load_state_dict_from_url = lambda *a, **k: None
    original = torch.nn.Module.load_state_dict
    torch.nn.Module.load_state_dict = lambda self, *a, **k: None
    try:
        net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        torch.nn.Module.load_state_dict = original
    size, batch = INCEPTION
    images = torch.rand(batch, 3, size, size)
    size, batch = LPIPS
    metric = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
    a, b = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    with torch.inference_mode():
        return {"inception_s": _median(lambda: net(images), repeats),
                "lpips_s": _median(lambda: metric(a, b, normalize=True), repeats),
                "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main() -> None:
    """Alternates both sides `--rounds` times and reports medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", help="an interpreter with torch, lpips, pytorch-fid")
    parser.add_argument("--side", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.side:  # one side, in a process of its own
        print(json.dumps((ours if args.side == "ours" else theirs)(args.repeats)))
        return
    if not args.torch_python:
        parser.error("--torch-python is needed (see this file's docstring)")
    if args.rounds < 1 or args.repeats < 1:
        parser.error(f"--rounds and --repeats must be >= 1, got {args.rounds}, {args.repeats}")
    try:
        subprocess.run([args.torch_python, "-c", "import torch, lpips, pytorch_fid"],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        parser.error(f"--torch-python {args.torch_python} is not a Python with torch, lpips "
                     "and pytorch-fid (see this file's docstring)")
    runs: dict[str, list[dict]] = {"ours": [], "theirs": []}
    for _ in range(args.rounds):
        for side, python in (("ours", sys.executable), ("theirs", args.torch_python)):
            done = subprocess.run([python, "-m", "benchmarks.vs_torch_metrics", "--side", side,
                                   "--repeats", str(args.repeats)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"error: the {side} side failed: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
            runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
    med = {side: {k: statistics.median(r[k] for r in rs) for k in ("inception_s", "lpips_s")}
           for side, rs in runs.items()}
    rows = [("FID Inception pool3, 299 px", INCEPTION[1], "images/s", "inception_s"),
            ("LPIPS-VGG, 256 px", LPIPS[1], "pairs/s", "lpips_s")]
    print("\n| measure | ours | reference package | ours / reference |\n|---|---|---|---|")
    result = {"runs": runs, "median_s": med}
    for name, batch, unit, key in rows:
        mine, ref = batch / med["ours"][key], batch / med["theirs"][key]
        result[key.replace("_s", "_ratio")] = mine / ref
        print(f"| {name}, batch {batch} | {mine:.1f} {unit} | {ref:.1f} {unit} | "
              f"{mine / ref:.2f}x |")
    if args.out:
        from benchmarks.bench import machine

        result["machine"] = machine()
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
