"""Photos larger than the training size: the full, crop, resize and auto strategies."""

import numpy as np
import pytest

from pconv_jax import strategies


def _holes(shape, boxes) -> np.ndarray:
    """(H,W) bool with the given (top, left, bottom, right) boxes as hole."""
    hole = np.zeros(shape, bool)
    for top, left, bottom, right in boxes:
        hole[top:bottom, left:right] = True
    return hole


def _check_cover(crops, hole, train_size):
    """Every crop square, at least train_size, inside the photo; no two overlap; every hole
    pixel inside one (NumPy: a coverage count per pixel)."""
    h, w = hole.shape
    count = np.zeros(hole.shape, int)
    for c in crops:
        assert c.side >= train_size and 0 <= c.top <= h - c.side and 0 <= c.left <= w - c.side
        count[c.top:c.top + c.side, c.left:c.left + c.side] += 1
    assert count.max() <= 1, "two crops overlap"
    assert (count[hole] == 1).all(), "a hole pixel is in no crop"


@pytest.mark.parametrize("box", [
    (0, 0, 5, 7),            # top-left corner
    (290, 380, 300, 400),    # bottom-right corner
    (0, 150, 3, 200),        # top border
    (140, 395, 160, 400),    # right border
])
def test_crops_at_borders_and_corners_stay_inside_and_cover_the_hole(box):
    """A hole touching the photo's border or corner: its crop is moved inside the photo, still
    holds the whole hole with a margin of context where the photo allows it."""
    hole = _holes((300, 400), [box])
    crops = strategies.plan_crops(hole, 64, margin=0.5, min_margin=8)
    assert crops is not None and len(crops) == 1
    _check_cover(crops, hole, 64)
    c = crops[0]
    top, left, bottom, right = box
    assert c.top <= max(top - 8, 0) and c.left <= max(left - 8, 0)
    assert c.top + c.side >= min(bottom + 8, 300) and c.left + c.side >= min(right + 8, 400)


def test_holes_whose_crops_would_overlap_share_one_crop():
    """Two holes 30 px apart with 64 px crops: one merged crop over both; two holes far apart:
    two crops; a chain of merges (three holes) ends with no overlapping crops."""
    near = _holes((400, 600), [(100, 100, 110, 110), (100, 140, 110, 150)])
    crops = strategies.plan_crops(near, 64, margin=0.5, min_margin=8)
    assert len(crops) == 1
    _check_cover(crops, near, 64)
    far = _holes((400, 600), [(20, 20, 30, 30), (350, 500, 360, 510)])
    assert len(strategies.plan_crops(far, 64, margin=0.5, min_margin=8)) == 2
    chain = _holes((400, 600), [(100, 100, 110, 110), (100, 140, 110, 150),
                                (100, 180, 110, 190), (300, 500, 310, 510)])
    crops = strategies.plan_crops(chain, 64, margin=0.5, min_margin=8)
    _check_cover(crops, chain, 64)
    assert len(crops) == 2


def test_auto_picks_full_crop_or_resize_by_the_rule():
    """auto: full up to twice the training size; crop for small holes in a large photo;
    resize (to 3 training sizes) when a hole spans the photo (its crop cannot fit) or the
    crops would cover more than half of it; an explicit crop that cannot fit is an error
    naming resize."""
    small = np.ones((60, 64), np.float32)
    small[10:20, 10:20] = 0
    assert strategies.plan(small, 32).strategy == "full"
    large = np.ones((300, 400), np.float32)
    large[100:110, 100:110] = 0
    assert strategies.plan(large, 32).strategy == "crop"
    spanning = np.ones((300, 400), np.float32)
    spanning[140:160, :] = 0  # one hole across the whole width
    the_plan = strategies.plan(spanning, 32)
    assert the_plan.strategy == "resize" and the_plan.scale == pytest.approx(3 * 32 / 400)
    with pytest.raises(ValueError, match="use strategy 'resize'"):
        strategies.plan(spanning, 32, "crop")
    speckled = np.ones((300, 400), np.float32)
    speckled[::40, ::40] = 0  # 80 specks, each crop 32 px: 80 * 32^2 > half of the photo
    assert strategies.plan(speckled, 32, min_margin=4).strategy == "resize"
    with pytest.raises(ValueError, match="unknown strategy 'tiles'"):
        strategies.plan(large, 32, "tiles")


def _blur_fill(images: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A stand-in for the network: holes filled with the mean of the valid pixels."""
    out = images.copy()
    for k in range(len(images)):
        hole = valid[k] <= 0
        out[k][hole] = images[k][~hole].mean(axis=0).astype(images.dtype)
    return out


@pytest.mark.parametrize("strategy", ["full", "crop", "resize", "auto"])
def test_every_strategy_keeps_valid_pixels_and_fills_holes(strategy):
    """On an odd-sized photo (301 x 457) every strategy returns the input's shape and dtype,
    the valid pixels bit-identical, and the hole pixels changed from the input's (which are
    set to a colour no fill gives here)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (301, 457, 3), dtype=np.uint8)
    valid = np.ones((301, 457), np.float32)
    valid[0:9, 0:13] = valid[150:171, 220:229] = valid[290:301, 440:457] = 0
    image[valid == 0] = 255
    the_plan = strategies.plan(valid, 48, strategy)
    out = strategies.inpaint(_blur_fill, image, valid, the_plan, 48)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[valid > 0], image[valid > 0])
    assert (out[valid == 0] != 255).all()


def test_a_hole_free_mask_returns_the_photo_unchanged():
    """No hole: plan 'none', the fill never called, the result equal to the input."""
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)

    def never(*args):
        raise AssertionError("the network ran")

    the_plan = strategies.plan(np.ones((50, 70)), 16)
    assert the_plan.strategy == "none"
    np.testing.assert_array_equal(strategies.inpaint(never, image, np.ones((50, 70)),
                                                     the_plan, 16), image)


def test_crops_reach_the_network_at_the_training_size_with_conservative_holes():
    """Crop: every network input is train_size square; a low-resolution pixel is hole when
    any of the pixels it covers is (a 1-px hole line survives a 4x downscale)."""
    seen = []

    def record(images, valid):
        seen.append((images.shape, valid.copy()))
        return _blur_fill(images, valid)

    image = np.zeros((800, 800, 3), np.uint8)
    valid = np.ones((800, 800), np.float32)
    valid[400, 300:500] = 0  # a 1-px line, 200 px long: crop side 400 -> 4x down to 100
    the_plan = strategies.plan(valid, 100, "crop", margin=0.5, min_margin=8)
    strategies.inpaint(record, image, valid, the_plan, 100)
    (shape, small_valid), = seen
    assert shape == (1, 100, 100, 3)
    assert (small_valid[0] == 0).sum(axis=1).max() >= 50  # the line is still a line
