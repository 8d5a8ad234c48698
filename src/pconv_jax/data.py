"""Image sources. For now the photos bundled with scikit-image, which need no network."""

from __future__ import annotations

import numpy as np

# Colour photos shipped inside scikit-image (skimage.data): always available offline.
BUNDLED_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
)


def bundled_photo(name: str) -> np.ndarray:
    """One bundled photo as (H,W,3) float32 in [0, 1]."""
    from skimage import data as skdata

    if name not in BUNDLED_PHOTOS:
        raise ValueError(f"unknown bundled photo {name!r}; choose from {', '.join(BUNDLED_PHOTOS)}")
    image = np.asarray(getattr(skdata, name)())
    return (image[..., :3].astype(np.float32) / 255.0).clip(0.0, 1.0)


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Central square crop of (H,W,C) resized to (size, size, C) with antialiasing."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top: top + side, left: left + side]
    return resize(crop, (size, size), anti_aliasing=True, preserve_range=True).astype(np.float32)
