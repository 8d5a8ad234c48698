"""Where a run's hole error comes from, bucket by bucket, beside OpenCV's Telea fill.

    python experiments/hole_errors.py --workdir runs/demo \
        --images samples:motorcycle_left,motorcycle_right,retina,colorwheel --size 96

Per hole-ratio bucket (masks of `evaluate`'s seeded generator, border and not pooled), for the
model's composite and for Telea's: PSNR; the hole's squared error split into its luminance part
(the channel mean) and its chroma part (what is left); the fill's chroma against the ground
truth's (mean |x - channel mean| over hole pixels: a ratio under 1 is a desaturated fill); and
the model's PSNR with BatchNorm in training mode (batch statistics of the one image), which
tells whether the running statistics are what costs it.
"""

import argparse
import sys
from collections import defaultdict

import jax.numpy as jnp
import numpy as np

from pconv_jax import evaluate as ev
from pconv_jax.baselines import fill
from pconv_jax.data import open_source
from pconv_jax.inpaint import Inpainter


def split_error(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> dict:
    """Squared hole error as luminance + chroma parts, and the fill's chroma over the truth's."""
    err = (result - truth)[hole]  # (P, 3)
    lum = err.mean(axis=1, keepdims=True)
    chroma = lambda x: np.abs(x - x.mean(axis=1, keepdims=True)).mean()  # noqa: E731
    return {"lum_mse": float((lum**2).sum(axis=1).mean() * 3),
            "chroma_mse": float(((err - lum) ** 2).sum(axis=1).mean()),
            "chroma_ratio": float(chroma(result[hole]) / max(chroma(truth[hole]), 1e-6))}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two [0,1] images."""
    return float(10 * np.log10(1 / max(np.mean((a - b) ** 2), 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--images", required=True, help="a folder or samples:NAME,...")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--per-bucket", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 8 <= args.size <= 1024 or args.per_bucket < 1 or args.seed < 0:
        parser.error(f"--size must be in 8..1024, --per-bucket >= 1 and --seed >= 0, got "
                     f"{args.size}, {args.per_bucket}, {args.seed}")
    try:
        inpainter = Inpainter.from_workdir(args.workdir)
        images = open_source(args.images)
        entries = ev.eval_masks(None, args.size, args.per_bucket, args.seed)
    except (OSError, ValueError) as err:  # InpaintError and the checkpoint's errors included
        sys.exit(f"error: {err}")
    rows = defaultdict(lambda: defaultdict(list))
    for k, entry in enumerate(entries):
        truth_u8, mask = (a[0] for a in ev.eval_pairs(images, entries, k, k + 1))
        truth, hole = truth_u8 / 255.0, mask == 0
        model = inpainter(truth_u8, mask) / 255.0
        telea = fill("telea", truth_u8, mask) / 255.0
        net = inpainter.model
        net.train()  # BatchNorm on this image's own statistics
        raw = net(jnp.asarray(truth[None] * 2 - 1, jnp.float32), jnp.asarray(mask[None, ..., None]))
        net.eval()
        bn_train = np.where(hole[..., None], np.clip((np.asarray(raw[0][0]) + 1) / 2, 0, 1), truth)
        row = rows[entry["bucket"]]
        for name, result in (("model", model), ("telea", telea)):
            row[f"{name}_psnr"].append(psnr(result, truth))
            for key, value in split_error(result, truth, hole).items():
                row[f"{name}_{key}"].append(value)
        row["model_bn_train_psnr"].append(psnr(bn_train, truth))
    keys = ("model_psnr", "telea_psnr", "model_bn_train_psnr", "model_lum_mse", "telea_lum_mse",
            "model_chroma_mse", "telea_chroma_mse", "model_chroma_ratio", "telea_chroma_ratio")
    print("| bucket | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for bucket in sorted(rows):
        means = [np.mean(rows[bucket][key]) for key in keys]
        print(f"| {bucket} | " + " | ".join(f"{m:.4g}" for m in means) + " |")


if __name__ == "__main__":
    main()
