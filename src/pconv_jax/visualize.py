"""Image grids as PNG files: rows of [0, 1] images side by side, with a thin separator."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H,W), (H,W,1) or (H,W,3) in [0, 1] -> (H,W,3) float32 clipped to [0, 1]."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H,W), (H,W,1) or (H,W,3) image, got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.clip(image, 0.0, 1.0)


def image_grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tiles rows of equally sized images into one (H', W', 3) uint8 array."""
    rows = [[to_rgb(im) for im in row] for row in rows]
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    grid = np.ones((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), np.float32)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            if im.shape[:2] != (h, w):
                raise ValueError(f"grid images must share one size: {im.shape[:2]} vs {(h, w)}")
            grid[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = im
    return np.round(grid * 255).astype(np.uint8)


def save_grid(path: str | os.PathLike, rows: Sequence[Sequence[np.ndarray]]) -> str:
    """Writes `image_grid(rows)` as a PNG at `path` (folders created) and returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image_grid(rows)).save(path)
    return path
