"""pconv_jax.lama_masks: LaMa's thin/medium/thick masks against the published settings, NumPy
references for drawing (box slicing, point-to-segment distances) and the selection rule, and
SciPy's erosion for the boundary fraction."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from pconv_jax import lama_masks as lm

SEEDS = range(300)  # per (kind, size) for the range checks; draw_shapes draws, never renders

# LaMa's configs/data_gen/random_{kind}_{size}.yaml, typed in from the table in the brief:
# strokes (min_times, max_times, max_width, max_length), boxes (proba, margin, min, max,
# min_times, max_times) or None.
PUBLISHED = {
    ("thin", 512): ((4, 70, 20, 100), None),
    ("thin", 256): ((4, 50, 10, 40), None),
    ("medium", 512): ((4, 10, 100, 200), (0.3, 0, 30, 150, 1, 5)),
    ("medium", 256): ((4, 5, 50, 100), (0.3, 0, 10, 50, 1, 5)),
    ("thick", 512): ((1, 5, 250, 450), (0.3, 10, 30, 300, 1, 4)),
    ("thick", 256): ((1, 5, 100, 200), (0.3, 10, 30, 150, 1, 3)),
}

# Hand-scaled: 128 = 256 x 0.5 (half up: 5 -> 3), 1024 = 512 x 2. Strokes (min_times,
# max_times, max_width, max_length, min_width, min_length), boxes as above.
SCALED = {
    ("thin", 128): ((4, 50, 5, 20, 3, 5), None),
    ("medium", 128): ((4, 5, 25, 50, 3, 5), (0.3, 0, 5, 25, 1, 5)),
    ("thick", 128): ((1, 5, 50, 100, 3, 5), (0.3, 5, 15, 75, 1, 3)),
    ("thin", 1024): ((4, 70, 40, 200, 10, 20), None),
    ("medium", 1024): ((4, 10, 200, 400, 10, 20), (0.3, 0, 60, 300, 1, 5)),
    ("thick", 1024): ((1, 5, 500, 900, 10, 20), (0.3, 20, 60, 600, 1, 4)),
}


def _box_tuple(b):
    return None if b is None else (b.probability, b.margin, b.min_size, b.max_size,
                                   b.min_times, b.max_times)


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_settings_are_lamas_table(key):
    """lama_settings at 256 and 512 is LaMa's table verbatim (max_angle 4, widths from 5,
    lengths from 10, 5 variants, 50 % cap, not scaled)."""
    s = lm.lama_settings(*key)
    st = s.strokes
    assert (s.kind, s.size, s.scaled_from, s.variants, s.max_hole) == (*key, None, 5, 0.5)
    assert (st.min_times, st.max_times, st.max_width, st.max_length) == PUBLISHED[key][0]
    assert (st.max_angle, st.min_width, st.min_length) == (4, 5, 10)
    assert _box_tuple(s.boxes) == PUBLISHED[key][1]


@pytest.mark.parametrize("key", sorted(SCALED))
def test_settings_scale_from_the_nearer_size(key):
    """Other sizes scale every pixel quantity of the nearer LaMa size, rounded half up."""
    s = lm.lama_settings(*key)
    st = s.strokes
    assert s.scaled_from == (256 if key[1] == 128 else 512)
    assert (st.min_times, st.max_times, st.max_width, st.max_length, st.min_width,
            st.min_length, st.max_angle) == (*SCALED[key][0], 4)
    assert _box_tuple(s.boxes) == SCALED[key][1]


def test_settings_base_switches_at_384_and_every_size_is_valid():
    """383 scales 256's settings, 384 scales 512's; every size from 32 to 1100 gives settings
    whose boxes fit (LamaSettings validates) and whose box max_size exceeds min_size."""
    assert lm.lama_settings("thick", 383).scaled_from == 256
    assert lm.lama_settings("thick", 384).scaled_from == 512
    for size in range(32, 1101):
        for kind in lm.KINDS:
            s = lm.lama_settings(kind, size)
            assert min(s.strokes.max_width, s.strokes.min_width, s.strokes.min_length) >= 1
            if s.boxes is not None:
                assert s.boxes.max_size > s.boxes.min_size >= 1


@pytest.mark.parametrize("kind, size, match", [
    ("huge", 256, "thin, medium, thick"), ("", 512, "unknown"),
    ("thin", 31, ">= 32"), ("thin", 0, ">= 32"), ("thin", "256", "int"), ("thin", 256.0, "int"),
])
def test_settings_errors_name_the_problem_and_choices(kind, size, match):
    """Unknown kinds and sizes below 32 (or not ints) raise ValueError saying what is allowed."""
    with pytest.raises(ValueError, match=match):
        lm.lama_settings(kind, size)


def test_settings_reject_boxes_that_do_not_fit():
    """Boxes whose capped side range is empty are refused when the settings are made."""
    strokes = lm.StrokeSettings(1, 2, 3, 4)
    with pytest.raises(ValueError, match="do not fit"):
        lm.LamaSettings("thick", 64, strokes, lm.BoxSettings(0.3, 20, 30, 60, 1, 2))


def test_settings_dict_round_trips_through_json():
    """settings_dict is JSON-able and settings_from_dict inverts it, boxes or none."""
    for kind in lm.KINDS:
        for size in (100, 256, 512):
            s = lm.lama_settings(kind, size)
            d = json.loads(json.dumps(lm.settings_dict(s)))
            assert lm.settings_from_dict(d) == s
    assert lm.settings_dict(lm.lama_settings("thin", 256))["boxes"] is None


@pytest.mark.parametrize("kind", lm.KINDS)
@pytest.mark.parametrize("size", lm.LAMA_SIZES)
def test_draw_shapes_within_ranges(kind, size):
    """Counts, starts, segment counts, widths, lengths and angles lie in LaMa's ranges, end
    points are the truncated, clipped start + length (sin, cos), boxes keep their margins,
    and boxes come up with probability box_proba / (1 + box_proba) (within 4 SE)."""
    (min_t, max_t, max_w, max_l), box = PUBLISHED[kind, size]
    s = lm.lama_settings(kind, size)
    n_boxes = 0
    for seed in SEEDS:
        shapes = lm.draw_shapes(s, np.random.default_rng(seed))
        if isinstance(shapes[0], lm.Box):
            n_boxes += 1
            _, margin, lo, hi, bmin_t, bmax_t = box
            assert bmin_t <= len(shapes) <= bmax_t
            for b in shapes:
                assert lo <= b.w < min(hi, size - 2 * margin)
                assert lo <= b.h < min(hi, size - 2 * margin)
                assert margin <= b.x and b.x + b.w <= size - margin
                assert margin <= b.y and b.y + b.h <= size - margin
            continue
        assert min_t <= len(shapes) <= max_t
        for i, stroke in enumerate(shapes):
            assert 0 <= stroke.x0 < size and 0 <= stroke.y0 < size
            assert 1 <= len(stroke.segments) <= 5
            x, y = stroke.x0, stroke.y0
            for seg in stroke.segments:
                assert 5 <= seg.width < 5 + max_w
                assert 10 <= seg.length < 10 + max_l
                k = (2 * np.pi - seg.angle if i % 2 == 0 else seg.angle) - 0.01
                assert round(k) in range(4) and abs(k - round(k)) < 1e-9
                ex = np.clip(np.trunc(x + seg.length * np.sin(seg.angle)), 0, size)
                ey = np.clip(np.trunc(y + seg.length * np.cos(seg.angle)), 0, size)
                assert (seg.x1, seg.y1) == (ex, ey)
                x, y = seg.x1, seg.y1
    p = 0.0 if box is None else box[0] / (1 + box[0])
    assert abs(n_boxes / len(SEEDS) - p) <= 4 * math.sqrt(p * (1 - p) / len(SEEDS)) + 1e-12


def test_render_boxes_match_numpy():
    """Rendered boxes are exactly the union of the half-open rectangles, by coordinates."""
    yy, xx = np.mgrid[:256, :256]
    for seed in range(40):
        rng = np.random.default_rng(seed)
        boxes = lm._boxes(lm.lama_settings("medium", 256).boxes, 256, rng)
        ref = np.zeros((256, 256), bool)
        for b in boxes:
            ref |= (xx >= b.x) & (xx < b.x + b.w) & (yy >= b.y) & (yy < b.y + b.h)
        assert np.array_equal(lm.render(boxes, 256), ref)


def _excess(strokes, size):
    """Per pixel, min over segments of (distance from the pixel centre to the segment) - w/2."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out = np.full((size, size), np.inf)
    for st in strokes:
        ax, ay = st.x0, st.y0
        for seg in st.segments:
            dx, dy = seg.x1 - ax, seg.y1 - ay
            d2 = dx * dx + dy * dy
            t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / d2, 0, 1) if d2 else 0.0
            dist = np.hypot(xx - ax - t * dx, yy - ay - t * dy)
            out = np.minimum(out, dist - seg.width / 2)
            ax, ay = seg.x1, seg.y1
    return out


def _check_strokes(strokes, size):
    hole = lm.render(strokes, size)
    excess = _excess(strokes, size)
    assert hole.dtype == bool and hole.shape == (size, size)
    assert hole[excess <= -1].all()  # within w/2 - 1 of a segment: hole
    assert (excess[hole] <= 1.5).all()  # every hole within w/2 + 1.5 of a segment


@pytest.mark.parametrize("kind, size, seeds", [
    ("thin", 256, 3), ("medium", 256, 4), ("thick", 256, 4), ("thick", 512, 2), ("thin", 96, 6),
])
def test_render_strokes_match_segment_distances(kind, size, seeds):
    """Stroke pixels within width/2 - 1 of a segment are hole; every hole pixel lies within
    width/2 + 1.5 of some segment (NumPy point-to-segment distance)."""
    s = lm.lama_settings(kind, size)
    for seed in range(seeds):
        _check_strokes(lm._strokes(s.strokes, size, np.random.default_rng(seed)), size)


def test_render_edge_cases():
    """A zero-length segment is a round dot; segments ending on the far edge (x = size) and
    width 1 lines obey the same distance bounds."""
    seg = lm.Segment
    strokes = [
        lm.Stroke(20, 20, (seg(20, 20, 9, 0.01, 10),)),
        lm.Stroke(40, 10, (seg(64, 64, 7, 0.0, 40), seg(64, 0, 12, 0.0, 40))),
        lm.Stroke(3, 60, (seg(30, 40, 1, 0.0, 30),)),
    ]
    _check_strokes(strokes, 64)
    dot = lm.render(strokes[:1], 64)
    assert dot[20, 16:25].all() and dot[16:25, 20].all() and not dot[20, 26] and not dot[14, 14]


def test_angles_truncate_the_same_on_any_machine():
    """length * sin/cos of every possible angle is at least 1e-6 from an integer for every
    length up to 1000, so a last-bit difference in a libm cannot change a truncated end point
    (and with integer draws, a seed gives the same strokes everywhere)."""
    worst = 1.0
    for k in range(4):
        for angle in (0.01 + k, 2 * math.pi - (0.01 + k)):
            for length in range(1, 1001):
                for v in (length * math.sin(angle), length * math.cos(angle)):
                    worst = min(worst, abs(v - round(v)))
    assert worst > 1e-6


def _replay(s, seed):
    """Reference for draw_mask's selection from draw_shapes + render: (mask, rounds)."""
    rng = np.random.default_rng(seed)
    for rounds in range(1, 1001):
        holes = [lm.render(lm.draw_shapes(s, rng), s.size) for _ in range(s.variants)]
        kept = [h for h in holes if h.mean() <= s.max_hole]
        if kept:
            return np.where(kept[rng.integers(len(kept))], 0.0, 1.0), rounds
    raise AssertionError("no mask")


@pytest.mark.parametrize("kind, size, seeds", [
    ("thin", 256, 15), ("medium", 256, 15), ("thick", 256, 25), ("thick", 512, 5),
    ("medium", 128, 25),
])
def test_draw_mask_keeps_one_variant_at_most_half_hole(kind, size, seeds):
    """draw_mask is binary float32 (size,size), never over 50 % hole, and is the variant a
    replay of the five draws picks uniformly among those at most half hole."""
    s = lm.lama_settings(kind, size)
    for seed in range(seeds):
        mask = lm.draw_mask(s, np.random.default_rng(seed))
        assert mask.dtype == np.float32 and mask.shape == (size, size)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert np.mean(mask == 0) <= 0.5
        assert np.array_equal(mask, _replay(s, seed)[0])


def test_draw_mask_redraws_when_all_variants_are_over_half():
    """With boxes that are usually over half the image, some seeds need a second round of
    five, and every kept mask is still at most half hole."""
    s = lm.LamaSettings("thick", 64, lm.StrokeSettings(1, 1, 1, 1),
                        lm.BoxSettings(1e9, 0, 44, 64, 1, 2))
    rounds = []
    for seed in range(20):
        mask = lm.draw_mask(s, np.random.default_rng(seed))
        ref, r = _replay(s, seed)
        assert np.array_equal(mask, ref) and np.mean(mask == 0) <= 0.5
        rounds.append(r)
    assert max(rounds) > 1


def test_draw_mask_is_seeded():
    """The same seed gives identical bytes; different seeds give different masks."""
    for kind in lm.KINDS:
        s = lm.lama_settings(kind, 256)
        a = lm.draw_mask(s, np.random.default_rng(7)).tobytes()
        assert a == lm.draw_mask(s, np.random.default_rng(7)).tobytes()
        others = {lm.draw_mask(s, np.random.default_rng(k)).tobytes() for k in range(8, 12)}
        assert a not in others and len(others) == 4


def _boundary_ref(mask):
    """Boundary fraction by SciPy: hole minus its 4-connected erosion, outside counted hole."""
    hole = np.asarray(mask) == 0
    if not hole.any():
        return 0.0
    inner = ndimage.binary_erosion(hole, ndimage.generate_binary_structure(2, 1), border_value=1)
    return (hole & ~inner).sum() / hole.sum()


def test_boundary_fraction():
    """boundary_fraction matches SciPy's erosion on LaMa masks and hand-counted cases; the
    image edge is not a boundary."""
    for kind in lm.KINDS:
        for seed in range(3):
            mask = lm.draw_mask(lm.lama_settings(kind, 128), np.random.default_rng(seed))
            assert lm.boundary_fraction(mask) == pytest.approx(_boundary_ref(mask), abs=1e-12)
            assert lm.boundary_fraction(mask[..., None]) == lm.boundary_fraction(mask)
    ones = np.ones((5, 5), np.float32)
    assert lm.boundary_fraction(ones) == 0.0
    assert lm.boundary_fraction(np.zeros((5, 5))) == 0.0  # all hole: edges are not boundary
    one = ones.copy()
    one[2, 2] = 0
    assert lm.boundary_fraction(one) == 1.0
    block = ones.copy()
    block[1:4, 1:4] = 0
    assert lm.boundary_fraction(block) == pytest.approx(8 / 9)
    left = np.ones((4, 4))
    left[:, :2] = 0  # column 0 touches only the edge and column 1: interior
    assert lm.boundary_fraction(left) == 0.5
