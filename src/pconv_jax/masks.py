"""Irregular hole masks: seeded random strokes, ellipses and circles (1 = valid, 0 = hole).

Masks are NumPy (H,W) float32 arrays holding only 0 and 1; nothing here knows the model.
"""

from __future__ import annotations

import numpy as np

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


def _stroke(hole: np.ndarray, rng: np.random.Generator) -> None:
    """Marks a random polyline of 2-6 segments with a random width as hole."""
    h, w = hole.shape
    scale = min(h, w)
    width = rng.uniform(0.02, 0.08) * scale
    point = rng.uniform((0, 0), (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(2, 7)):
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.08, 0.35) * scale
        end = np.clip(point + length * np.array([np.sin(angle), np.cos(angle)]), 0, (h - 1, w - 1))
        seg = end - point
        denom = max(float(seg @ seg), 1e-9)
        t = np.clip(((yy - point[0]) * seg[0] + (xx - point[1]) * seg[1]) / denom, 0, 1)
        dist2 = (yy - point[0] - t * seg[0]) ** 2 + (xx - point[1] - t * seg[1]) ** 2
        hole |= dist2 <= (width / 2) ** 2
        point = end


def _ellipse(hole: np.ndarray, rng: np.random.Generator, circle: bool) -> None:
    """Marks a random (rotated) ellipse or circle as hole."""
    h, w = hole.shape
    scale = min(h, w)
    cy, cx = rng.uniform((0, 0), (h, w))
    a = rng.uniform(0.03, 0.15) * scale
    b = a if circle else rng.uniform(0.03, 0.15) * scale
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    hole |= (u / a) ** 2 + (v / b) ** 2 <= 1


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
