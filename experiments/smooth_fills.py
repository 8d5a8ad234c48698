"""Why a run's fill of a constant-colour image is not constant: where the errors sit.

    python experiments/smooth_fills.py --workdir runs/demo [--masks 8] [--seed 0] [--raw-weights]

Prints `pconv_jax.smooth.smooth_fill_check` (27 colours over the RGB cube and linear
gradients, seeded ~25 % masks), then, for the worst colour, relates each hole pixel's error to
the encoder's mask windows. For every hole pixel and encoder layer l (stride 2, kernel k_l) the
window of its position at that layer holds some valid inputs; the first layer at which it
holds any is where the pixel gets its first value, scaled by the partial convolution's
renormalisation k_l^2 / (valid count): a window that barely touches valid pixels multiplies
them by up to k_l^2. The table bins hole pixels by that first window's valid fraction and
gives their mean and 99th-percentile error, and where the 1 % worst pixels fall. Last, layer
by layer through the encoder, how far the features of the holed image lie from those of the
same colour without holes, by the valid fraction of each output position's window: where the
renormalisation's error enters and whether later layers undo it.
"""

import argparse
import sys

import jax.numpy as jnp
import numpy as np

from pconv_jax import smooth
from pconv_jax.inpaint import Inpainter
from pconv_jax.ops import window_sums

BINS = (0.0, 0.05, 0.1, 0.2, 0.4, 1.01)


def first_window_fraction(mask: np.ndarray, kernels: tuple[int, ...]) -> np.ndarray:
    """(S,S): for each pixel, the valid fraction of the first encoder window (layer by layer,
    at the pixel's position there) that holds any valid input; 1 for valid pixels."""
    size = mask.shape[0]
    current = jnp.asarray(mask, jnp.float32)[None, ..., None]  # (1,S,S,1), 1 = valid
    out = np.where(mask > 0, 1.0, np.nan)
    for layer, k in enumerate(kernels):
        sums = np.asarray(window_sums(current, (k, k), (2, 2), "SAME", (1, 1)))[0, ..., 0]
        fraction = sums / (k * k)
        scale = 2 ** (layer + 1)
        up = np.repeat(np.repeat(fraction, scale, 0), scale, 1)[:size, :size]
        fresh = np.isnan(out) & (up > 0)
        out[fresh] = up[fresh]
        current = jnp.asarray(sums > 0, jnp.float32)[None, ..., None]
    return np.nan_to_num(out, nan=0.0)


def layer_deviations(model, colour: np.ndarray, masks: np.ndarray) -> list[dict]:
    """Per encoder layer: the features' distance from the hole-free image's, relative to their
    size (mean |f - f_full| / mean |f_full| over channels), binned by the valid fraction of the
    output position's window; positions the layer marks valid, windows touching a hole."""
    n, size = masks.shape[:2]
    x = jnp.broadcast_to(jnp.asarray(colour * 2 - 1, jnp.float32), (n, size, size, 3))
    full, full_mask = x, jnp.ones((n, size, size, 1), jnp.float32)
    mask = jnp.asarray(masks, jnp.float32)[..., None]
    rows = []
    for layer, block in enumerate(model.encoder):
        k, pad = block.kernel.shape[0], block.padding
        fraction = np.asarray(window_sums(mask, (k, k), (2, 2), ((pad, pad), (pad, pad)),
                                          (1, 1)))[..., 0] / (k * k)
        x, mask = block(x, mask)
        full, full_mask = block(full, full_mask)
        size_full = float(jnp.mean(jnp.abs(full))) + 1e-8
        deviation = np.asarray(jnp.mean(jnp.abs(x - full), axis=-1)) / size_full
        valid = np.asarray(mask[..., 0]) > 0
        row = {"layer": layer + 1, "kernel": k}
        for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
            sel = valid & (fraction > lo) & (fraction <= min(hi, 1.0)) & (fraction < 1)
            row[f"({lo:g}, {min(hi, 1):g})"] = float(deviation[sel].mean()) if sel.any() else None
        inside = valid & (fraction >= 1)
        row["full windows"] = float(deviation[inside].mean()) if inside.any() else None
        rows.append(row)
    return rows


def main() -> None:
    """Prints the check and the window table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--masks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-weights", action="store_true",
                        help="the trained weights, not their moving average (optim.ema_decay)")
    args = parser.parse_args()
    try:
        inpainter = Inpainter.from_workdir(args.workdir, average=not args.raw_weights)
    except (OSError, ValueError) as err:
        sys.exit(f"error: {err}")
    check = smooth.smooth_fill_check(inpainter, masks=args.masks, seed=args.seed)
    print(f"{args.workdir}, step {inpainter.step}, {inpainter.weights} weights")
    print(smooth.describe(check))
    size = check["size"]
    colour = np.asarray(check["constant"]["worst_colour"], np.float32)
    masks = smooth.check_masks(size, args.masks, args.seed)
    image = np.broadcast_to(colour, (args.masks, size, size, 3))
    filled = inpainter(image, masks, strategy="full")
    kernels = inpainter.model.config.encoder_kernels
    errors, fractions = [], []
    for m in range(args.masks):
        hole = masks[m] == 0
        errors.append(np.abs(filled[m] - colour).max(axis=-1)[hole])
        fractions.append(first_window_fraction(masks[m], kernels)[hole])
    errors, fractions = np.concatenate(errors), np.concatenate(fractions)
    worst = errors >= np.quantile(errors, 0.99)
    print(f"\nworst colour {tuple(colour.round(2))}: {errors.size} hole pixels; error by the "
          "valid fraction of the first encoder window that reaches them")
    print("\n| first window's valid fraction | pixels | mean error | p99 error | of the 1 % "
          "worst |\n|---|---|---|---|---|")
    for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
        sel = (fractions > lo) & (fractions <= hi) if lo > 0 else fractions <= hi
        if sel.any():
            share = 100 * worst[sel].sum() / worst.sum()
            print(f"| ({lo:g}, {min(hi, 1):g}] | {sel.sum()} | {errors[sel].mean():.3f} | "
                  f"{np.quantile(errors[sel], 0.99):.3f} | {share:.0f} % |")
    print(f"\ncorrelation of the error with (1 - that fraction): "
          f"{np.corrcoef(errors, 1 - fractions)[0, 1]:+.2f}")
    rows = layer_deviations(inpainter.model, colour, masks)
    keys = [k for k in rows[0] if k not in ("layer", "kernel")]
    print("\nencoder features against the hole-free image's (mean |difference| / mean |feature|)"
          ", by the window's valid fraction\n\n| layer (kernel) | " + " | ".join(keys) +
          " |\n|" + "---|" * (len(keys) + 1))
    for row in rows:
        cells = ["–" if row[k] is None else f"{row[k]:.3f}" for k in keys]
        print(f"| {row['layer']} ({row['kernel']}×{row['kernel']}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
