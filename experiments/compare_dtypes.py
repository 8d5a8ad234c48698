"""float32 against bfloat16 on the demo configuration: trains both from the same seed and
plots the hole loss (the issue #15 evidence in experiments/README.md).

    .venv/bin/python experiments/compare_dtypes.py --steps 300 --out experiments/dtype_curve.png
    .venv/bin/python experiments/compare_dtypes.py --vgg random --runs runs/dtype_compare_vgg \
        --out experiments/dtype_curve_vgg.png      # the full loss, VGG-16 in bfloat16 too
"""

import argparse
import json
import os
import subprocess
import sys


def main() -> None:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", default="runs/dtype_compare")
    parser.add_argument("--out", default="experiments/dtype_curve.png")
    parser.add_argument("--vgg", default="",
                        help="VGG-16 file for the perceptual and style terms, or 'random' "
                             "(random VGG-16 weights: the full loss's arithmetic, bfloat16 "
                             "VGG included, without a weight file); default: the demo's, none")
    args = parser.parse_args()
    if args.steps < 20:
        parser.error(f"--steps must be >= 20 (the curve starts at step 10), got {args.steps}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for dtype in ("float32", "bfloat16"):
        workdir = os.path.join(args.runs, dtype)
        command = [sys.executable, "-m", "pconv_jax.train", "--config",
                   "experiments/configs/demo.py", "--workdir", workdir,
                   f"--config.train.steps={args.steps}", "--config.train.log_every=10",
                   "--config.train.eval_every=0", f"--config.train.compute_dtype={dtype}"]
        if args.vgg == "random":
            command.append("--config.vgg.fallback=random")
        elif args.vgg:
            command.append(f"--config.vgg.weights={args.vgg}")
        if subprocess.run(command).returncode:
            sys.exit(f"error: the {dtype} run failed (its message is above)")
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        curves[dtype] = ([r["step"] for r in records], [r["hole"] for r in records])
        print(f"{dtype}: hole loss at step 10 {curves[dtype][1][0]:.4f}, at step "
              f"{curves[dtype][0][-1]} {curves[dtype][1][-1]:.4f}")
    a, b = curves["float32"][1][-1], curves["bfloat16"][1][-1]
    print(f"final hole loss: bfloat16 / float32 = {b / a:.3f}")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for dtype, (steps, hole) in curves.items():
        ax.plot(steps, hole, label=dtype)
    ax.set_xlabel("step")
    ax.set_ylabel("hole loss (batch mean over 10 steps)")
    ax.set_title("demo configuration, same seed" +
                 (", full loss (random VGG-16)" if args.vgg == "random" else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
