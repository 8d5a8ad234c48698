"""How a photo larger than the model's training size is inpainted: full, crop, resize or auto.

A model trained on T x T crops (T = the run's image size) fills holes at the scale it learnt.
In a 12-megapixel photo that scale is a few centimetres of wall around each hole, and running
the whole photo through the network costs time and memory that grow with its pixels. So:

- `full`: the whole photo through the network at its own resolution.
- `crop`: each group of nearby holes (closer than `min_margin`) is filled in a square crop
  around it: the holes' bounding box grown by `margin` (a fraction of the box's longer side,
  at least `min_margin` pixels) on every side, at least `crop_size` (default T) on a side, at
  most the photo's shorter side, moved inside the photo; crops that overlap are merged (their
  holes' union gets one crop, with the larger of the two contexts) until none do. Each crop
  is resized to crop_size x crop_size (area averaging down; a crop of that side is used as it
  is), the crops go through the network in batches of up to 8, and each crop's fill is
  resized back (bicubic) and written into the photo's hole pixels only.
- `resize`: the whole photo scaled so its longer side is at most `resize_limit` (default 3 T),
  inpainted, and the fill scaled back (bicubic) into the photo's hole pixels.
- `auto` (default): `full` when the photo's longer side is at most FULL_FACTOR x T (2 T);
  else `crop`, unless the crops would cover more than CROP_AREA_LIMIT (half) of the photo or
  a group of holes needs a crop larger than the photo's shorter side: then `resize`.

Downscaling marks a low-resolution pixel as hole when any of the pixels it covers is one, so
the network never conditions on pixels the holes contaminated. In every strategy the valid
pixels of the result are the input's, bit for bit. Nothing here knows JAX: `fill` is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

STRATEGIES: tuple[str, ...] = ("auto", "full", "crop", "resize")
FULL_FACTOR = 2  # auto: full while the longer side is at most this many training sizes
RESIZE_FACTOR = 3  # resize: the longer side is scaled to at most this many training sizes
CROP_AREA_LIMIT = 0.5  # auto: resize when the crops would cover more than this of the photo
MARGIN = 0.5  # crop: context on each side, as a fraction of the holes' box's longer side
MIN_MARGIN = 32  # crop: ... and at least this many pixels

# fill(images (B,h,w,3) uint8, valid (B,h,w) float32 1 = valid) -> (B,h,w,3) uint8 composites
Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Crop:
    """A square window of the photo: rows top..top+side, columns left..left+side."""

    top: int
    left: int
    side: int

    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) of the window."""
        return slice(self.top, self.top + self.side), slice(self.left, self.left + self.side)

    def overlaps(self, other: Crop) -> bool:
        """Whether the two windows share a pixel."""
        return (self.top < other.top + other.side and other.top < self.top + self.side and
                self.left < other.left + other.side and other.left < self.left + self.side)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `inpaint` will do with a photo: the strategy that runs and, for crop, its crops."""

    strategy: str  # 'full', 'crop', 'resize' or 'none' (no hole: the photo is returned)
    crops: tuple[Crop, ...] = ()
    scale: float = 1.0  # resize: the factor the photo is scaled by
    crop_size: int = 0  # crop: the side crops are resized to (larger ones) for the network

    def describe(self) -> str:
        """One line for a report: 'crop (3 crops)', 'resize (x0.128)', 'full', 'none'."""
        if self.strategy == "crop":
            return f"crop ({len(self.crops)} crop{'s' if len(self.crops) != 1 else ''})"
        if self.strategy == "resize":
            return f"resize (x{self.scale:.3g})"
        return self.strategy


def _box_crop(box: tuple[int, int, int, int], pad: int, train_size: int,
              shape: tuple[int, int]) -> Crop | None:
    """The square crop around a hole box (top, left, bottom, right) with `pad` pixels of
    context on each side, at least train_size, inside the photo; None when the box leaves no
    context inside the photo's shorter side."""
    top, left, bottom, right = box
    longer = max(bottom - top, right - left)
    side = max(longer + 2 * pad, train_size)
    h, w = shape
    if side > min(h, w):  # as much context as the photo has, if it leaves some
        if longer + 2 > min(h, w):
            return None
        side = min(h, w)
    centre_y, centre_x = (top + bottom) // 2, (left + right) // 2
    y = min(max(centre_y - side // 2, 0), h - side)
    x = min(max(centre_x - side // 2, 0), w - side)
    return Crop(int(y), int(x), int(side))


MAX_GROUPS = 256  # crop: more separate groups of holes than this are left to resize


def plan_crops(hole: np.ndarray, train_size: int, *, margin: float = MARGIN,
               min_margin: int = MIN_MARGIN) -> tuple[Crop, ...] | None:
    """Square crops covering every hole pixel of hole (H,W) bool, no two overlapping; None when
    a group of holes needs a crop larger than the photo's shorter side, or there are more
    than MAX_GROUPS groups. Holes closer than `min_margin` pixels start in one group."""
    import cv2

    reach = 2 * min_margin + 1  # a rectangle, which OpenCV dilates separably: cheap at 48 MP
    grouped = cv2.dilate(hole.view(np.uint8), np.ones((reach, reach), np.uint8))
    count, labels = cv2.connectedComponents(grouped, connectivity=8)
    if count - 1 > MAX_GROUPS:
        return None
    ys, xs = np.nonzero(hole)  # the hole pixels, and the group each belongs to
    group = labels[ys, xs]
    order = np.argsort(group, kind="stable")
    group, ys, xs = group[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    boxes = list(zip(np.minimum.reduceat(ys, starts).tolist(),
                     np.minimum.reduceat(xs, starts).tolist(),
                     (np.maximum.reduceat(ys, starts) + 1).tolist(),
                     (np.maximum.reduceat(xs, starts) + 1).tolist(), strict=True))
    # each group: its holes' box and its context, margin x the box's longer side (at least
    # min_margin); merged groups keep the larger context, not one grown from the merged box
    pads = [max(int(np.ceil(margin * max(b[2] - b[0], b[3] - b[1]))), min_margin)
            for b in boxes]
    while True:  # merge the groups of overlapping crops until no two crops overlap
        crops = [_box_crop(b, p, train_size, hole.shape) for b, p in zip(boxes, pads,
                                                                          strict=True)]
        if any(c is None for c in crops):
            return None
        pair = next(((i, j) for i in range(len(crops)) for j in range(i + 1, len(crops))
                     if crops[i].overlaps(crops[j])), None)
        if pair is None:
            return tuple(crops)
        i, j = pair
        a, b = boxes[i], boxes[j]
        merged = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
        pad = max(pads[i], pads[j])
        boxes = [box for k, box in enumerate(boxes) if k not in pair] + [merged]
        pads = [p for k, p in enumerate(pads) if k not in pair] + [pad]


def plan(valid: np.ndarray, train_size: int, strategy: str = "auto", *,
         margin: float = MARGIN, min_margin: int = MIN_MARGIN,
         resize_limit: int | None = None, crop_size: int | None = None) -> Plan:
    """The plan for a photo with mask valid (H,W) (1 = valid) and a model of `train_size`;
    crop_size (default train_size): the least crop side, and the side larger crops are
    resized to for the network."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    hole = np.asarray(valid) <= 0
    if not hole.any():
        return Plan("none")
    h, w = hole.shape
    limit = resize_limit or RESIZE_FACTOR * train_size
    if strategy == "auto" and max(h, w) <= FULL_FACTOR * train_size:
        strategy = "full"
    if strategy == "full":
        return Plan("full")
    if strategy in ("crop", "auto"):
        crop_size = crop_size or train_size
        crops = plan_crops(hole, crop_size, margin=margin, min_margin=min_margin)
        covered = 0 if crops is None else sum(c.side**2 for c in crops)
        if crops is not None and (strategy == "crop" or covered <= CROP_AREA_LIMIT * h * w):
            return Plan("crop", crops, crop_size=crop_size)
        if strategy == "crop":
            raise ValueError("the holes need a crop larger than the photo's shorter side "
                             f"({min(h, w)} px): use strategy 'resize' or 'auto'")
    return Plan("resize", scale=min(1.0, limit / max(h, w)))


def _shrink(image: np.ndarray, hole: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """(image (h,w,3) uint8, valid (h,w) float32) at size (h, w): area averaging, and a
    low-resolution pixel is hole when any pixel it covers is."""
    import cv2

    if size == hole.shape:
        return image, (~hole).astype(np.float32)
    small = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
    touched = cv2.resize(hole.astype(np.float32), size[::-1], interpolation=cv2.INTER_AREA)
    return small, (touched <= 1e-6).astype(np.float32)


def _paste(result: np.ndarray, hole: np.ndarray, filled: np.ndarray) -> None:
    """Writes filled (h,w,3) uint8, resized (bicubic) to result's size, into its hole pixels."""
    import cv2

    if filled.shape[:2] != hole.shape:
        filled = cv2.resize(filled, hole.shape[::-1], interpolation=cv2.INTER_CUBIC)
    result[hole] = filled[hole]


def inpaint(fill: Fill, image: np.ndarray, valid: np.ndarray, the_plan: Plan,
            train_size: int, batch_size: int = 8) -> np.ndarray:
    """Carries out `the_plan` on image (H,W,3) uint8 with valid (H,W) (1 = valid): the result
    (H,W,3) uint8, its valid pixels the input's."""
    hole = np.asarray(valid) <= 0
    if the_plan.strategy == "none":
        return image.copy()
    if the_plan.strategy == "full":
        return fill(image[None], (~hole).astype(np.float32)[None])[0]
    result = image.copy()
    if the_plan.strategy == "resize":
        h, w = hole.shape
        size = (max(1, round(h * the_plan.scale)), max(1, round(w * the_plan.scale)))
        small, small_valid = _shrink(image, hole, size)
        if small_valid.max() == 0:
            raise ValueError(f"at {size[1]}x{size[0]} px the holes cover the whole photo")
        _paste(result, hole, fill(small[None], small_valid[None])[0])
        return result
    for start in range(0, len(the_plan.crops), batch_size):
        crops = the_plan.crops[start:start + batch_size]
        side = the_plan.crop_size or train_size
        pairs = [_shrink(image[c.slices()], hole[c.slices()], (side, side)) for c in crops]
        filled = fill(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
        for crop, out in zip(crops, filled, strict=True):
            rows, cols = crop.slices()
            _paste(result[rows, cols], hole[rows, cols], out)
    return result
