"""Held-out PSNR over training, from runs with train.eval_every, against OpenCV's Telea.

    python experiments/plot_eval_curve.py --out experiments/demo_eval_curve.png \
        "12 photos, scale 1-3=runs/curve_long" "4 photos=runs/curve_a"

Each argument is LABEL=WORKDIR; the dashed line is Telea on the same held-out pairs.
"""

import argparse
import json
import os

from matplotlib.figure import Figure


def read_evals(workdir: str) -> list[dict]:
    """The held-out records (those with eval_psnr) of a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "eval_psnr" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=WORKDIR")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args()
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    telea = None
    for spec in args.runs:
        label, _, workdir = spec.rpartition("=")
        records = read_evals(workdir)
        ax.plot([r["step"] for r in records], [r["eval_psnr"] for r in records], marker=".",
                label=label or workdir)
        telea = records[0]["eval_psnr_telea"]
    ax.axhline(telea, color="k", linestyle="--", label="OpenCV Telea")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out PSNR (dB), composite")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
