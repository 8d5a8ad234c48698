"""The easiest fills: constant-colour images and smooth gradients, where a fill can be exact.

A constant image with holes has one right answer, the colour; a linear gradient has its own
continuation. OpenCV's Telea is exact (or nearly) on both, so whatever a model gets wrong
here is noise it adds, not detail it lacks. `smooth_fill_check` measures it: per colour of a
3x3x3 grid over the RGB cube (levels 0.05, 0.5, 0.95) and per seeded irregular mask (~25 %
holes), the worst absolute error over hole pixels and channels, the spread of the fill inside
the hole (its standard deviation, mean over channels) and the mean colour shift; per seeded
linear gradient between two colours of the grid, the worst and the mean error in the hole,
beside Telea's. All values on [0, 1].
"""

from __future__ import annotations

import itertools

import numpy as np

LEVELS = (0.05, 0.5, 0.95)
COLOURS: tuple[tuple[float, float, float], ...] = tuple(itertools.product(LEVELS, repeat=3))


def check_masks(size: int, count: int, seed: int) -> np.ndarray:
    """count seeded irregular masks (count,size,size) float32, 1 = valid, ~25 % holes."""
    from pconv_jax.masks import irregular_mask

    rng = np.random.default_rng(seed)
    return np.stack([irregular_mask(size, rng, 0.25) for _ in range(count)])


def gradients(size: int, count: int, seed: int) -> np.ndarray:
    """count linear gradients (count,size,size,3) float32 between two grid colours each, in
    a seeded direction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for _ in range(count):
        a, b = (np.asarray(COLOURS[i], np.float32) for i in rng.choice(len(COLOURS), 2,
                                                                         replace=False))
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / (t.max() - t.min())
        out.append(a + (b - a) * t[..., None])
    return np.stack(out).astype(np.float32)


def _errors(filled: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> tuple[float, float]:
    """(worst, mean) absolute error over hole pixels and channels of (S,S,3) images."""
    err = np.abs(filled[hole].astype(np.float64) - truth[hole])
    return float(err.max()), float(err.mean())


def smooth_fill_check(inpainter, size: int | None = None, masks: int = 8,
                      seed: int = 0, batch_size: int = 8) -> dict:
    """The constant-colour and gradient figures of an Inpainter (see the module docstring).

    Returns {'constant': {worst, spread, shift, worst_colour, worst_mask, per_colour},
    'gradient': {model: {worst, mean}, telea: {worst, mean}}, 'size', 'masks', 'seed'}.
    """
    from pconv_jax.baselines import fill

    size = size or inpainter.train_size
    mask_set = check_masks(size, masks, seed)  # (M,S,S)
    holes = mask_set == 0
    per_colour, worst = [], (0.0, None, None)
    spreads, shifts = [], []
    for colour in COLOURS:
        image = np.broadcast_to(np.asarray(colour, np.float32), (masks, size, size, 3))
        filled = np.concatenate([inpainter(image[k:k + batch_size],
                                           mask_set[k:k + batch_size], strategy="full")
                                 for k in range(0, masks, batch_size)])  # (M,S,S,3)
        colour_worst = 0.0
        for m in range(masks):
            inside = filled[m][holes[m]].astype(np.float64)  # (P,3)
            err = float(np.abs(inside - colour).max())
            colour_worst = max(colour_worst, err)
            if err > worst[0]:
                worst = (err, colour, m)
            spreads.append(float(inside.std(axis=0).mean()))
            shifts.append(float(np.abs(inside.mean(axis=0) - colour).max()))
        per_colour.append({"colour": list(colour), "worst": colour_worst})
    ramps = gradients(size, masks, seed + 1)
    model = {"worst": [], "mean": []}
    telea = {"worst": [], "mean": []}
    for k in range(masks):
        hole = holes[k]
        out = inpainter(ramps[k], mask_set[k], strategy="full")
        w, m = _errors(out, ramps[k], hole)
        model["worst"].append(w)
        model["mean"].append(m)
        ramp_u8 = np.round(ramps[k] * 255).astype(np.uint8)
        w, m = _errors(fill("telea", ramp_u8, mask_set[k]) / 255, ramp_u8 / 255, hole)
        telea["worst"].append(w)
        telea["mean"].append(m)
    summary = lambda d: {"worst": max(d["worst"]), "mean": float(np.mean(d["mean"]))}  # noqa: E731
    return {"size": size, "masks": masks, "seed": seed,
            "constant": {"worst": worst[0], "spread": max(spreads), "shift": max(shifts),
                         "worst_colour": list(worst[1]), "worst_mask": worst[2],
                         "per_colour": per_colour},
            "gradient": {"model": summary(model), "telea": summary(telea)}}


def describe(check: dict) -> str:
    """Three lines for a report."""
    c, g = check["constant"], check["gradient"]
    return (f"smooth fills ({check['size']} px, {check['masks']} masks ~25 % holes, seed "
            f"{check['seed']}):\n"
            f"  constant colour (27 colours): worst error {c['worst']:.3f} (colour "
            f"{tuple(round(v, 2) for v in c['worst_colour'])}), spread {c['spread']:.3f}, "
            f"mean shift {c['shift']:.3f}\n"
            f"  linear gradients: worst {g['model']['worst']:.3f}, mean "
            f"{g['model']['mean']:.4f} (Telea {g['telea']['worst']:.3f}, "
            f"{g['telea']['mean']:.4f})")
