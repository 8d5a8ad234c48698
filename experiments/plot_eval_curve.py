"""Held-out PSNR over training, from runs with train.eval_every, against OpenCV's Telea.

    python experiments/plot_eval_curve.py --out experiments/demo_eval_curve.png \
        "12 photos, scale 1-3=runs/curve_long" "4 photos=runs/curve_a"
    python experiments/plot_eval_curve.py --x minutes --gap --out curves.png \
        "width 16=runs/hour/a" "width 32=runs/hour/b"

Each argument is LABEL=WORKDIR. By default the dashed line is Telea on the same held-out pairs;
with --gap each curve is the model's PSNR minus Telea's on its own pairs (runs at different
image sizes score different crops), and 0 is Telea. --x minutes puts the records' `wall_s`
(seconds since the training loop began; the run must not have been resumed) on the x axis.
"""

import argparse
import json
import os
import sys

from matplotlib.figure import Figure

from pconv_jax.paths import OverlapError, check_outputs


def read_evals(workdir: str) -> list[dict]:
    """The held-out records (those with eval_psnr) of a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "eval_psnr" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=WORKDIR")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--x", choices=("step", "minutes"), default="step",
                        help="x axis: training step, or minutes of training (wall_s)")
    parser.add_argument("--gap", action="store_true",
                        help="plot PSNR minus Telea's PSNR on the same pairs")
    args = parser.parse_args()
    if not args.out.lower().endswith(".png"):
        sys.exit(f"error: --out {args.out} must be a .png file")
    try:  # never written into a run it reads (a run's own samples/*.png included)
        check_outputs({"--out": args.out},
                      {f"run {i + 1}": spec.rpartition("=")[2] for i, spec in enumerate(args.runs)})
    except OverlapError as err:
        sys.exit(f"error: {err}")
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    telea = None
    for spec in args.runs:
        label, _, workdir = spec.rpartition("=")
        try:
            records = read_evals(workdir)
        except OSError as err:
            sys.exit(f"error: {spec}: no readable metrics.jsonl ({err.strerror})")
        if not records:
            sys.exit(f"error: {workdir} has no held-out records (train.eval_every was 0)")
        if args.x == "minutes" and any("wall_s" not in r for r in records):
            sys.exit(f"error: {workdir}'s held-out records have no wall_s (an older run); "
                     "use --x step")
        if args.x == "minutes" and any(b["wall_s"] < a["wall_s"]
                                       for a, b in zip(records, records[1:], strict=False)):
            sys.exit(f"error: {workdir} was resumed (its wall_s starts again at 0 there); "
                     "use --x step")
        xs = [r["step"] if args.x == "step" else r["wall_s"] / 60 for r in records]
        ys = [r["eval_psnr"] - (r["eval_psnr_telea"] if args.gap else 0) for r in records]
        ax.plot(xs, ys, marker=".", label=label or workdir)
        telea = records[0]["eval_psnr_telea"]
    ax.axhline(0 if args.gap else telea, color="k", linestyle="--", label="OpenCV Telea")
    ax.set_xlabel("step" if args.x == "step" else "minutes of training")
    ax.set_ylabel("held-out PSNR " + ("minus Telea's (dB)" if args.gap else "(dB), composite"))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    try:
        fig.savefig(args.out, dpi=90)
    except OSError as err:
        sys.exit(f"error: cannot write --out {args.out}: {err.strerror or err}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
