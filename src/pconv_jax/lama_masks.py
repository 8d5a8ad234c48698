"""LaMa's random training masks (Suvorov et al., WACV 2022): thin, medium and thick.

Our own code, written from the settings in LaMa's `configs/data_gen/random_*.yaml` and the
selection in its `bin/gen_mask_dataset.py`. One mask variant is, with probability
1 / (1 + box probability), a set of irregular strokes (polylines drawn with `cv2.line`, round
caps), else a set of axis-aligned boxes. `draw_mask` draws `variants` (5) of them, drops those
with more than `max_hole` (50 %) hole and keeps one of the rest uniformly at random.

Masks are square (size, size); `render` gives bool holes (True = hole), `draw_mask` float32
with 1 = valid, 0 = hole, like `pconv_jax.masks`. Only NumPy and OpenCV; draws come from a
`np.random.Generator` in a fixed order, so a seed gives the same bytes on any machine.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KINDS: tuple[str, ...] = ("thin", "medium", "thick")
LAMA_SIZES = (256, 512)
MIN_SIZE = 32  # smallest size lama_settings scales to

# Safety valve for draw_mask's redraw rule: settings that (almost) never give a mask with at
# most max_hole hole would otherwise loop forever.
_MAX_ROUNDS = 1000


@dataclass(frozen=True)
class StrokeSettings:
    """Irregular strokes: times, and per segment width = min_width + randint(max_width) etc."""

    min_times: int
    max_times: int
    max_width: int
    max_length: int
    max_angle: int = 4
    min_width: int = 5
    min_length: int = 10


@dataclass(frozen=True)
class BoxSettings:
    """Boxes: probability (LaMa's box_proba), margin, side range [min_size, max_size), count."""

    probability: float
    margin: int
    min_size: int
    max_size: int
    min_times: int
    max_times: int


@dataclass(frozen=True)
class LamaSettings:
    """One LaMa mask kind at one square size; boxes None means strokes only (box_proba 0)."""

    kind: str
    size: int
    strokes: StrokeSettings
    boxes: BoxSettings | None
    variants: int = 5
    max_hole: float = 0.5
    scaled_from: int | None = None

    def __post_init__(self):
        s, b = self.strokes, self.boxes
        problems = []
        if self.size < 1:
            problems.append(f"size {self.size} < 1")
        if not 1 <= s.min_times <= s.max_times:
            problems.append(f"stroke times {s.min_times}-{s.max_times}")
        if min(s.max_width, s.max_length, s.max_angle) < 1 or min(s.min_width, s.min_length) < 0:
            problems.append("stroke widths, lengths and angles must be positive")
        if b is not None:
            if not 1 <= b.min_times <= b.max_times:
                problems.append(f"box times {b.min_times}-{b.max_times}")
            if not 0 <= b.probability:
                problems.append(f"box probability {b.probability} < 0")
            if min(b.max_size, self.size - 2 * b.margin) <= b.min_size or b.min_size < 0:
                problems.append(f"box sides [{b.min_size}, {b.max_size}) with margin {b.margin}"
                                f" do not fit {self.size} px")
        if self.variants < 1 or not 0 < self.max_hole <= 1:
            problems.append(f"variants {self.variants}, max_hole {self.max_hole}")
        if problems:
            raise ValueError("bad LaMa mask settings: " + "; ".join(problems))


# LaMa's configs/data_gen/random_{kind}_{size}.yaml: strokes (min_times, max_times, max_width,
# max_length; max_angle 4) and boxes (box_proba, margin, min_size, max_size, min_times,
# max_times) or None.
_TABLE: dict[tuple[str, int], tuple[tuple[int, ...], tuple | None]] = {
    ("thin", 512): ((4, 70, 20, 100), None),
    ("thin", 256): ((4, 50, 10, 40), None),
    ("medium", 512): ((4, 10, 100, 200), (0.3, 0, 30, 150, 1, 5)),
    ("medium", 256): ((4, 5, 50, 100), (0.3, 0, 10, 50, 1, 5)),
    ("thick", 512): ((1, 5, 250, 450), (0.3, 10, 30, 300, 1, 4)),
    ("thick", 256): ((1, 5, 100, 200), (0.3, 10, 30, 150, 1, 3)),
}


def _scaled(value: int, factor: float) -> int:
    """value * factor rounded half up, at least 1 unless value is 0."""
    return 0 if value == 0 else max(1, math.floor(value * factor + 0.5))


def lama_settings(kind: str, size: int) -> LamaSettings:
    """LaMa's settings for `kind` at `size` px; other sizes scale the nearer of 256 and 512.

    Sizes below 384 scale 256's settings, others 512's: every pixel quantity (stroke widths
    and lengths, min_width and min_length included; box margin and sides) is multiplied by
    size / base and rounded half up, at least 1 (a zero margin stays 0), and a box max_size
    that would not exceed min_size becomes min_size + 1. Counts and angles stay as they are;
    `scaled_from` records the base.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown LaMa mask kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"LaMa mask size must be an int >= {MIN_SIZE}, got {size!r}; LaMa's "
                         f"own sizes are {LAMA_SIZES}, others scale the nearer one")
    size = int(size)
    base = size if size in LAMA_SIZES else (256 if size < 384 else 512)
    (min_t, max_t, max_w, max_l), box = _TABLE[kind, base]
    f = size / base
    strokes = StrokeSettings(min_t, max_t, _scaled(max_w, f), _scaled(max_l, f),
                             min_width=_scaled(5, f), min_length=_scaled(10, f))
    boxes = None
    if box is not None:
        proba, margin, lo, hi, bmin_t, bmax_t = box
        lo, hi = _scaled(lo, f), _scaled(hi, f)
        boxes = BoxSettings(proba, _scaled(margin, f), lo, max(hi, lo + 1), bmin_t, bmax_t)
    return LamaSettings(kind, size, strokes, boxes, scaled_from=None if base == size else base)


def settings_dict(settings: LamaSettings) -> dict:
    """The settings as a JSON-able dict (nested dicts; boxes None when strokes only)."""
    return dataclasses.asdict(settings)


def settings_from_dict(d: dict) -> LamaSettings:
    """Inverse of settings_dict."""
    d = dict(d)
    strokes = StrokeSettings(**d.pop("strokes"))
    boxes = d.pop("boxes")
    return LamaSettings(strokes=strokes, boxes=None if boxes is None else BoxSettings(**boxes),
                        **d)


@dataclass(frozen=True)
class Segment:
    """One drawn line segment: end point (x1, y1), thickness, angle (radians), length."""

    x1: int
    y1: int
    width: int
    angle: float
    length: int


@dataclass(frozen=True)
class Stroke:
    """A polyline from (x0, y0) through its segments' end points."""

    x0: int
    y0: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: columns [x, x + w), rows [y, y + h)."""

    x: int
    y: int
    w: int
    h: int


def _strokes(s: StrokeSettings, size: int, rng: np.random.Generator) -> list[Stroke]:
    """Irregular strokes in LaMa's draw order (times; per stroke x, y, segment count; per
    segment angle, length, width)."""
    strokes = []
    for i in range(int(rng.integers(s.min_times, s.max_times + 1))):
        x, y = int(rng.integers(size)), int(rng.integers(size))
        x0, y0, segments = x, y, []
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + int(rng.integers(s.max_angle))
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            length = s.min_length + int(rng.integers(s.max_length))
            width = s.min_width + int(rng.integers(s.max_width))
            # int() truncates toward zero like LaMa's astype(np.int32); math.sin, not
            # np.sin, so no SIMD path can change the last bit (tests check the margin).
            x = min(max(int(x + length * math.sin(angle)), 0), size)
            y = min(max(int(y + length * math.cos(angle)), 0), size)
            segments.append(Segment(x, y, width, angle, length))
        strokes.append(Stroke(x0, y0, tuple(segments)))
    return strokes


def _boxes(b: BoxSettings, size: int, rng: np.random.Generator) -> list[Box]:
    """Boxes in LaMa's draw order (times; per box w, h, x, y)."""
    max_size = min(b.max_size, size - 2 * b.margin)
    boxes = []
    for _ in range(int(rng.integers(b.min_times, b.max_times + 1))):
        w, h = int(rng.integers(b.min_size, max_size)), int(rng.integers(b.min_size, max_size))
        x = int(rng.integers(b.margin, size - b.margin - w + 1))
        y = int(rng.integers(b.margin, size - b.margin - h + 1))
        boxes.append(Box(x, y, w, h))
    return boxes


def draw_shapes(settings: LamaSettings, rng: np.random.Generator) -> list[Stroke] | list[Box]:
    """One mask variant's shapes: strokes with probability 1 / (1 + box probability), else boxes.

    The choice always takes one `rng.random()` (also when boxes is None), then the shapes'
    draws follow in LaMa's order.
    """
    proba = 0.0 if settings.boxes is None else settings.boxes.probability
    if rng.random() < 1 / (1 + proba):
        return _strokes(settings.strokes, settings.size, rng)
    return _boxes(settings.boxes, settings.size, rng)


def render(shapes: Sequence[Stroke | Box], size: int) -> np.ndarray:
    """(size,size) bool holes (True = hole) of strokes (cv2.line, 8-connected, round caps) and
    boxes."""
    import cv2

    hole = np.zeros((size, size), np.uint8)
    for shape in shapes:
        if isinstance(shape, Box):
            hole[shape.y:shape.y + shape.h, shape.x:shape.x + shape.w] = 1
            continue
        start = (shape.x0, shape.y0)
        for seg in shape.segments:
            cv2.line(hole, start, (seg.x1, seg.y1), 1, seg.width)  # points are (x, y)
            start = (seg.x1, seg.y1)
    return hole.astype(bool)


def draw_mask(settings: LamaSettings, rng: np.random.Generator) -> np.ndarray:
    """A (size,size) float32 mask, 1 = valid, 0 = hole, by LaMa's selection.

    `variants` (5) variants are drawn; those with more than `max_hole` (50 %) hole are dropped
    and one of the rest is kept uniformly (`rng.integers`). LaMa skips an image when none is
    left; we draw all variants again (our rule), so a seeded set always has its full count.
    Raises RuntimeError after 1000 such rounds (settings that never fit).
    """
    limit = settings.max_hole * settings.size**2
    for _ in range(_MAX_ROUNDS):
        holes = [render(draw_shapes(settings, rng), settings.size)
                 for _ in range(settings.variants)]
        kept = [h for h in holes if np.count_nonzero(h) <= limit]
        if kept:
            return (~kept[int(rng.integers(len(kept)))]).astype(np.float32)
    raise RuntimeError(f"no {settings.kind} mask with at most {settings.max_hole:.0%} hole in "
                       f"{_MAX_ROUNDS} rounds of {settings.variants} variants")


def boundary_fraction(mask: np.ndarray) -> float:
    """Fraction of hole pixels (mask == 0) with a 4-neighbour that is not hole; 0.0 without holes.

    The image edge is not a boundary: pixels outside the image count as hole. Takes (H,W) or
    (H,W,1).
    """
    m = np.asarray(mask)
    hole = np.equal(m[..., 0] if m.ndim == 3 else m, 0)
    count = np.count_nonzero(hole)
    if count == 0:
        return 0.0
    p = np.pad(hole, 1, constant_values=True)  # (H+2, W+2)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return float(np.count_nonzero(hole & ~interior) / count)
