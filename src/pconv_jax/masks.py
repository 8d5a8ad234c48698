"""Hole masks (1 = valid, 0 = hole): generation, augmentation, mask sources, hole-ratio buckets.

Masks are NumPy (H,W) float32 arrays holding only 0 and 1; nothing here knows the model.
Resizing is nearest-neighbour only, so masks stay binary. Mask files are read by
`pconv_jax.imagefile` (`load_mask_image`: white = hole by default).

    python -m pconv_jax.masks make-eval-set --out DIR --per-bucket N --size S --seed K
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from pconv_jax.imagefile import first_decodable, load_holes, readable_images

# The paper's hole-to-image area-ratio buckets (DESIGN.md §1).
BUCKETS: tuple[tuple[float, float], ...] = (
    (0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6),
)


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int or a pair, checked positive."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"mask size must be positive, got {size!r}")
    return int(h), int(w)


def _window(hole: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """The part of `hole` inside the box [lo, hi] and that part's pixel coordinates."""
    h, w = hole.shape
    top, left = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
    bottom, right = min(int(np.ceil(hi[0])) + 1, h), min(int(np.ceil(hi[1])) + 1, w)
    yy, xx = np.mgrid[top:bottom, left:right]
    return hole[top:bottom, left:right], yy, xx


def _stroke(hole: np.ndarray, rng: np.random.Generator) -> None:
    """Marks a random polyline of 2-6 segments with a random width as hole."""
    h, w = hole.shape
    scale = min(h, w)
    radius = rng.uniform(0.01, 0.04) * scale + 0.5
    point = rng.uniform((0, 0), (h, w))
    for _ in range(rng.integers(2, 7)):
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.08, 0.35) * scale
        end = np.clip(point + length * np.array([np.sin(angle), np.cos(angle)]), 0, (h - 1, w - 1))
        view, yy, xx = _window(hole, np.minimum(point, end) - radius,
                               np.maximum(point, end) + radius)
        seg = end - point
        denom = max(float(seg @ seg), 1e-9)
        t = np.clip(((yy - point[0]) * seg[0] + (xx - point[1]) * seg[1]) / denom, 0, 1)
        dist2 = (yy - point[0] - t * seg[0]) ** 2 + (xx - point[1] - t * seg[1]) ** 2
        view |= dist2 <= radius**2
        point = end


def _ellipse(hole: np.ndarray, rng: np.random.Generator, circle: bool) -> None:
    """Marks a random (rotated) ellipse or circle as hole."""
    h, w = hole.shape
    scale = min(h, w)
    centre = rng.uniform((0, 0), (h, w))
    a = rng.uniform(0.03, 0.15) * scale
    b = a if circle else rng.uniform(0.03, 0.15) * scale
    theta = rng.uniform(0, np.pi)
    reach = max(a, b)
    view, yy, xx = _window(hole, centre - reach, centre + reach)
    u = (xx - centre[1]) * np.cos(theta) + (yy - centre[0]) * np.sin(theta)
    v = -(xx - centre[1]) * np.sin(theta) + (yy - centre[0]) * np.cos(theta)
    view |= (u / a) ** 2 + (v / b) ** 2 <= 1


def irregular_mask(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    hole_ratio: float | None = None,
) -> np.ndarray:
    """Random irregular mask (H,W) float32, 1 = valid, 0 = hole, with about `hole_ratio` holes.

    Shapes (strokes 60%, ellipses 20%, circles 20%) are added until the hole fraction reaches
    `hole_ratio` (default: uniform in (0.01, 0.6], the paper's range); the last shape may
    overshoot it.
    """
    h, w = _size_pair(size)
    if hole_ratio is None:
        hole_ratio = float(rng.uniform(0.01, 0.6))
    if not 0 < hole_ratio < 1:
        raise ValueError(f"hole_ratio must lie in (0, 1), got {hole_ratio}")
    hole = np.zeros((h, w), bool)
    while hole.mean() < hole_ratio:
        kind = rng.choice(3, p=(0.6, 0.2, 0.2))
        if kind == 0:
            _stroke(hole, rng)
        else:
            _ellipse(hole, rng, circle=kind == 2)
    return (~hole).astype(np.float32)


def hole_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels (mask == 0) of an (H,W) or (H,W,1) mask."""
    return float(np.mean(np.asarray(mask) == 0))


def bucket_of(mask: np.ndarray) -> tuple[float, float] | None:
    """The paper's hole-ratio bucket (lo, hi] holding this mask, or None outside (0.01, 0.6]."""
    ratio = hole_ratio(mask)
    for lo, hi in BUCKETS:
        if lo < ratio <= hi:
            return lo, hi
    return None


def bucket_name(bucket: tuple[float, float]) -> str:
    """'(0.1,0.2]' for (0.1, 0.2)."""
    return f"({bucket[0]:g},{bucket[1]:g}]"


def touches_border(mask: np.ndarray) -> bool:
    """True when a hole pixel lies on the image border."""
    m = np.asarray(mask)
    m = m[..., 0] if m.ndim == 3 else m
    edges = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
    return bool(np.any(edges == 0))


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H,W) mask to size (H', W'); values stay as they are."""
    h, w = mask.shape[:2]
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(int)
    return mask[rows][:, cols]


def _holes(mask: np.ndarray) -> np.ndarray:
    """(H,W) uint8, 1 where an (H,W) or (H,W,1) mask is 0 (a hole)."""
    mask = np.asarray(mask)
    return np.equal(mask[..., 0] if mask.ndim == 3 else mask, 0).view(np.uint8)


def augment(mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's mask augmentation: random dilation, rotation and crop, to (size, size).

    With probability 1/2 the holes grow by 1-3 steps of a 3x3 cross; the mask turns by an
    angle uniform in [0, 360) about its centre (what leaves the frame is valid); a square of
    side min(H,W) * U(0.6, 1) at a uniform position in the frame is cut out and resized
    (nearest) to (size, size). Returns (size,size) float32 with 1 = valid.
    """
    return _augment_holes(_holes(mask), size, rng)


def _augment_holes(hole: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """augment for a (H,W) uint8 hole image (1 = hole); the random draws in augment's order."""
    iterations = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
    angle = float(rng.uniform(0, 360))
    h, w = hole.shape
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return _warp_holes(hole, size, iterations, angle, side, top, left)


def _augment_with(mask: np.ndarray, size: int, dilate_iters: int, angle: float, side: int,
                  top: int, left: int) -> np.ndarray:
    """augment with its draws given: dilate the holes of the (H,W) mask dilate_iters times by
    a 3x3 cross, turn by `angle` degrees about the centre, cut the side x side square at
    (top, left) of the turned frame and resize it (nearest) to (size,size) float32, 1 = valid.
    """
    return _warp_holes(_holes(mask), size, dilate_iters, angle, side, top, left)


# Output value per warped hole value: 0 (no hole) -> 1.0 (valid), 1 (hole) -> 0.0.
_VALID_OF_HOLE = np.array([1.0] + [0.0] * 255, np.float32)


def _warp_holes(hole: np.ndarray, size: int, dilate_iters: int, angle: float, side: int,
                top: int, left: int) -> np.ndarray:
    """_augment_with for a (H,W) uint8 hole image (1 = hole); returns (size,size) float32.

    Turn, crop and resize are one OpenCV warp straight into the output, so the cost follows
    `size`, not the file. Output pixel (i, j) samples the turned frame at
    p = (top, left) + ((i, j) + 0.5) * side / size - 0.5, as resize_nearest of the crop does,
    and the turned frame at p holds the source at R (p - c) + c with c = ((H-1)/2, (W-1)/2),
    R = [[cos a, sin a], [-sin a, cos a]] in (row, column) order (scipy.ndimage.rotate's
    convention). Samples outside the source are valid.
    """
    import cv2

    if dilate_iters > 0:
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        hole = cv2.dilate(hole, cross, iterations=int(dilate_iters))  # outside counts as valid
    h, w = hole.shape
    cos, sin = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    scale = side / size
    # The frame position of output pixel (0, 0), relative to the centre c.
    r0 = top + 0.5 * scale - 0.5 - (h - 1) / 2
    c0 = left + 0.5 * scale - 0.5 - (w - 1) / 2
    # OpenCV rounds exact halves to even; a nudge well below any other sub-pixel offset (and
    # above its float32 error) makes them round up, as resize_nearest's floor(x + 0.5) does.
    nudge = 0.25 / size
    # WARP_INVERSE_MAP: source (x, y) = matrix @ (j, i, 1) for output column j and row i.
    matrix = np.array([
        [cos * scale, -sin * scale, -sin * r0 + cos * c0 + (w - 1) / 2 + nudge],
        [sin * scale, cos * scale, cos * r0 + sin * c0 + (h - 1) / 2 + nudge],
    ])
    out = cv2.warpAffine(hole, matrix, (size, size), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # (size,size), 1 = hole
    return cv2.LUT(out, _VALID_OF_HOLE)


class MaskSource:
    """Masks for training: irregular random masks, or files from a folder with augmentation."""

    def __init__(self, size: int, folder: str | None = None, *,
                 hole_range: tuple[float, float] = (0.01, 0.6), hole_is_white: bool = True):
        lo, hi = (float(v) for v in hole_range)
        if not 0 < lo <= hi < 1:
            raise ValueError(f"hole_range must be (lo, hi) with 0 < lo <= hi < 1, got {hole_range}")
        self.size = size
        self.hole_range = (lo, hi)
        self.hole_is_white = hole_is_white
        self.folder = folder
        self.files = readable_images(folder, "mask") if folder else []
        self.broken: set[str] = set()  # files whose header reads but whose data does not

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One (size, size) mask, 1 = valid."""
        if not self.files:
            return irregular_mask(self.size, rng, float(rng.uniform(*self.hole_range)))
        # augment(load_mask_image(path)) without the float32 mask in between
        hole = first_decodable(
            self.files, int(rng.integers(len(self.files))), self.broken,
            lambda path: load_holes(path, self.hole_is_white),
            f"mask files below {self.folder}")
        return _augment_holes(hole, self.size, rng)


def make_eval_set(out: str, per_bucket: int, size: int, seed: int) -> dict:
    """Writes per_bucket masks for every bucket x {border, no border} and an index.json."""
    if per_bucket < 1 or size < 8:
        raise ValueError(f"evaluation masks need per_bucket >= 1 and size >= 8, got "
                         f"per_bucket={per_bucket}, size={size}")
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    entries = []
    for bucket in BUCKETS:
        for border in (False, True):
            made, tries = 0, 0
            while made < per_bucket:
                tries += 1
                if tries > 2000 * per_bucket:
                    raise RuntimeError(f"could not draw masks for bucket {bucket_name(bucket)}")
                target = float(rng.uniform(*bucket))
                if border:
                    mask = irregular_mask(size, rng, target)
                else:  # draw on an inner canvas, then frame it with valid pixels
                    margin = max(1, size // 32)
                    inner = size - 2 * margin
                    inner_ratio = min(target * size**2 / inner**2, 0.95)
                    mask = np.pad(irregular_mask(inner, rng, inner_ratio), margin,
                                  constant_values=1.0)
                if bucket_of(mask) != bucket or touches_border(mask) != border:
                    continue
                kind = "border" if border else "inner"
                name = f"{bucket[0]:g}-{bucket[1]:g}_{kind}_{made:04d}.png"
                Image.fromarray(((1 - mask) * 255).astype(np.uint8)).save(os.path.join(out, name))
                entries.append({"file": name, "bucket": bucket_name(bucket), "border": border,
                                "hole_ratio": hole_ratio(mask)})
                made += 1
    index = {"size": size, "seed": seed, "per_bucket": per_bucket, "hole_is_white": True,
             "masks": entries}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    return index


MAX_MASK_SIZE = 4096  # evaluation masks: the largest side the CLIs accept anywhere


def range_problems(values: dict[str, tuple[int, int, int | None]]) -> list[str]:
    """'--flag must be ...' for each {flag: (value, least, most)} outside [least, most]."""
    problems = []
    for flag, (value, least, most) in values.items():
        if value < least or (most is not None and value > most):
            bound = f"between {least} and {most}" if most is not None else f">= {least}"
            problems.append(f"{flag} must be {bound}, got {value}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m pconv_jax.masks make-eval-set ...`."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.masks",
                                     description="hole masks for pconv-jax")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("make-eval-set", help="a fixed evaluation mask set with index.json",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--per-bucket", type=int, default=100,
                    help="masks per hole-ratio bucket and border class")
    ev.add_argument("--size", type=int, default=512, help="mask side in pixels")
    ev.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    args = parser.parse_args(argv)
    for problem in range_problems({"--per-bucket": (args.per_bucket, 1, None),
                                   "--size": (args.size, 8, MAX_MASK_SIZE),
                                   "--seed": (args.seed, 0, None)}):
        parser.error(problem)
    try:
        index = make_eval_set(args.out, args.per_bucket, args.size, args.seed)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(index['masks'])} masks and index.json to {args.out} "
          "(white = hole, 12 groups: 6 buckets x border/inner)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
