"""pconv_jax.masks and .imagefile: the OpenCV mask augmentation and mask-file decoding against
their references.

augment is compared with reference.augment_reference (the SciPy version on the full file) draw
by draw and in distribution; load_mask_image's OpenCV decoding with PIL's read_uint8 path.
"""

import os
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

from pconv_jax import imagefile, masks
from tests.reference import augment_reference

DRAWS = 200  # per source mask for the distribution tests


def _blobs(seed: int, shape: tuple[int, int] = (512, 512), hole: float = 0.2) -> np.ndarray:
    """A real-looking (H,W) mask: smooth blobs with ragged edges, like occlusion masks."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 14)
    return (field > np.quantile(field, hole)).astype(np.float32)


def _centre(seed: int) -> np.ndarray:
    """A 512x512 mask whose holes stay in its middle 240x240, so crops touch the border
    only sometimes (about a quarter of the time)."""
    inner = masks.irregular_mask(240, np.random.default_rng(seed), 0.3)
    return np.pad(inner, 136, constant_values=1.0)


SOURCES = {
    "strokes": lambda: masks.irregular_mask(512, np.random.default_rng(0), 0.3),
    "centre": lambda: _centre(3),
    "blobs": lambda: _blobs(2),
    "wide": lambda: masks.irregular_mask((480, 640), np.random.default_rng(4), 0.2),
}


def _stats(fn, mask: np.ndarray, seeds: range, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Hole ratios and touches-border flags of fn(mask, size, rng) over one rng per seed."""
    outs = [fn(mask, size, np.random.default_rng(s)) for s in seeds]
    return (np.array([masks.hole_ratio(o) for o in outs]),
            np.array([masks.touches_border(o) for o in outs]))


def _disagreements(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> list:
    """The tests two independent samples of (hole ratio, border flag) fail; [] when they agree.

    Means of the hole ratio within 4 standard errors, two-sample KS p-value above 1e-3, and the
    border fractions within 4 standard errors of a two-proportion z-test.
    """
    (ra, ba), (rb, bb) = a, b
    failed = []
    se = np.hypot(ra.std(ddof=1) / np.sqrt(len(ra)), rb.std(ddof=1) / np.sqrt(len(rb)))
    if abs(ra.mean() - rb.mean()) > 4 * se:
        failed.append(f"mean hole ratio {ra.mean():.4f} vs {rb.mean():.4f} (se {se:.4f})")
    ks = stats.ks_2samp(ra, rb)
    if ks.pvalue < 1e-3:
        failed.append(f"KS D={ks.statistic:.3f} p={ks.pvalue:.2g}")
    pooled = (ba.sum() + bb.sum()) / (len(ba) + len(bb))
    se_b = np.sqrt(pooled * (1 - pooled) * (1 / len(ba) + 1 / len(bb)))
    if abs(ba.mean() - bb.mean()) > 4 * max(se_b, 1e-9):
        failed.append(f"border fraction {ba.mean():.3f} vs {bb.mean():.3f} (se {se_b:.3f})")
    return failed


@pytest.fixture(scope="module")
def reference_stats():
    """Statistics of the SciPy reference per source, on seeds apart from those of the tests."""
    return {name: _stats(augment_reference, make(), range(10**6, 10**6 + DRAWS))
            for name, make in SOURCES.items()}


def _variant(angle_zero: bool = False, no_dilation: bool = False):
    """augment with its draws as usual but the rotation or the dilation left out."""
    def fn(mask, size, rng):
        iterations = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
        angle = float(rng.uniform(0, 360))
        h, w = mask.shape
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        return masks._augment_with(mask, size, 0 if no_dilation else iterations,
                                   0.0 if angle_zero else angle, side, top, left)
    return fn


@pytest.mark.parametrize("name", list(SOURCES))
def test_augment_matches_reference_in_distribution(name, reference_stats):
    """Hole ratio (mean, KS) and border-touching fraction agree with the SciPy reference."""
    ours = _stats(masks.augment, SOURCES[name](), range(DRAWS))
    assert _disagreements(ours, reference_stats[name]) == []


def test_distribution_check_rejects_a_wrong_augmentation(reference_stats):
    """The same check fails for an augmentation that skips the rotation (on the stroke masks,
    whose holes reach the corners that a turn moves out of the frame) or the dilation (on the
    blobs, whose long edges grow most), so the test above can fail."""
    for name in ("strokes", "wide"):
        no_turn = _stats(_variant(angle_zero=True), SOURCES[name](), range(DRAWS))
        assert _disagreements(no_turn, reference_stats[name]), name
    no_dilation = _stats(_variant(no_dilation=True), SOURCES["blobs"](), range(DRAWS))
    assert _disagreements(no_dilation, reference_stats["blobs"])


@pytest.mark.parametrize("name", ["strokes", "wide"])
def test_augment_matches_reference_draw_by_draw(name):
    """With the same seed both draw the same dilation, angle and crop: the masks differ only
    where rounding does (the reference rounds twice, rotating then resizing, and counts the
    outer half of the source's edge pixels as outside)."""
    mask = SOURCES[name]()
    for seed in range(40):
        ours = masks.augment(mask, 256, np.random.default_rng(seed))
        ref = augment_reference(mask, 256, np.random.default_rng(seed))
        assert np.mean(ours != ref) < 0.015, seed
        assert abs(masks.hole_ratio(ours) - masks.hole_ratio(ref)) < 0.01, seed


def test_augment_is_seeded_binary_float32_and_sized():
    """Same seed, same mask; (size,size) float32 holding only 0/1, for square and wide sources
    and (H,W,1) input; a different seed gives a different mask."""
    for make in SOURCES.values():
        mask = make()
        for size in (1, 37, 256, 512, 700):
            a = masks.augment(mask, size, np.random.default_rng(7))
            b = masks.augment(mask, size, np.random.default_rng(7))
            np.testing.assert_array_equal(a, b)
            assert a.shape == (size, size) and a.dtype == np.float32
            assert set(np.unique(a)) <= {0.0, 1.0}
        c = masks.augment(mask[..., None], 256, np.random.default_rng(7))
        np.testing.assert_array_equal(c, masks.augment(mask, 256, np.random.default_rng(7)))
        assert not np.array_equal(c, masks.augment(mask, 256, np.random.default_rng(8)))


def test_augment_draws_in_the_reference_order():
    """augment consumes the generator exactly as the reference does: the next draw agrees."""
    mask = SOURCES["wide"]()
    for seed in range(20):
        ours, ref = np.random.default_rng(seed), np.random.default_rng(seed)
        masks.augment(mask, 64, ours)
        augment_reference(mask, 64, ref)
        assert ours.random() == ref.random()


def test_no_rotation_no_dilation_is_a_nearest_crop():
    """angle 0, no dilation: output pixel (i, j) is crop pixel floor((i + 0.5) * side / size),
    exactly (also the full-frame crop equals masks.resize_nearest of the source)."""
    src = SOURCES["wide"]()  # (480, 640)
    h, w = src.shape
    rng = np.random.default_rng(11)
    for size in (17, 64, 100, 256, 480, 512, 777):
        for _ in range(12):
            side = int(min(h, w) * rng.uniform(0.6, 1.0))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            idx = np.minimum(np.floor((np.arange(size) + 0.5) * side / size).astype(int), side - 1)
            expected = src[top + idx][:, left + idx]
            got = masks._augment_with(src, size, 0, 0.0, side, top, left)
            np.testing.assert_array_equal(got, expected, err_msg=f"{size} {side} {top} {left}")
        full = masks._augment_with(src, size, 0, 0.0, h, 0, 0)
        np.testing.assert_array_equal(full, masks.resize_nearest(src[:, :h], (size, size)))


@pytest.mark.parametrize("quarter", [1, 2, 3])
def test_quarter_turns_are_exact_and_turn_like_scipy(quarter):
    """90/180/270 degrees with the full square frame: np.rot90 (counter-clockwise), as
    scipy.ndimage.rotate turns, with nothing lost or gained."""
    src = SOURCES["strokes"]()
    got = masks._augment_with(src, 512, 0, 90.0 * quarter, 512, 0, 0)
    np.testing.assert_array_equal(got, np.rot90(src, quarter))
    scipy_turn = ndimage.rotate(src, 90.0 * quarter, reshape=False, order=0)
    np.testing.assert_array_equal(got, scipy_turn)


def _cross_dilation(hole: np.ndarray, k: int) -> np.ndarray:
    """k steps of 3x3 cross dilation of a (H,W) bool array; outside the array is no hole."""
    for _ in range(k):
        grown = hole.copy()
        grown[1:] |= hole[:-1]
        grown[:-1] |= hole[1:]
        grown[:, 1:] |= hole[:, :-1]
        grown[:, :-1] |= hole[:, 1:]
        hole = grown
    return hole


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dilation_is_k_steps_of_a_cross(k):
    """Dilating by k (no turn) equals k steps of a 3x3 cross dilation in NumPy of the whole
    file, cropped afterwards: holes on the border and just outside the crop count."""
    rng = np.random.default_rng(k)
    src = (rng.random((64, 80)) > 0.02).astype(np.float32)  # (H,W)
    src[0, 5] = src[63, 79] = src[30, 0] = src[20, 64] = 0  # edges, a corner, beside the crop
    full = (~_cross_dilation(src == 0, k)).astype(np.float32)
    for left in (0, 16):
        got = masks._augment_with(src, 64, k, 0.0, 64, 0, left)
        np.testing.assert_array_equal(got, full[:, left:left + 64])
    assert masks._augment_with(src, 64, k, 0.0, 64, 0, 0)[20, 63] == 0  # grown in from column 64


def _pil_mask(path: str, hole_is_white: bool = True, threshold: float = 0.5) -> np.ndarray:
    """load_mask_image as it was: PIL's read_uint8 grey, scaled, thresholded."""
    grey = imagefile.read_uint8(path, "L", what="mask image").astype(np.float32) / 255.0
    bright = grey > threshold
    return (~bright if hole_is_white else bright).astype(np.float32)


def _exif_orientation(orientation: int) -> Image.Exif:
    """An EXIF block holding only an orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _mask_files(folder: os.PathLike) -> dict[str, bool]:
    """Mask files of every kind the fast path meets, and whether OpenCV should decode them."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    grey[:, :8] = [120, 126, 127, 128, 129, 76, 77, 178]  # levels around the thresholds
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (48, 64, 1), dtype=np.uint8)], 2)
    smooth = ndimage.gaussian_filter(rng.random((48, 64, 3)) * 255, (3, 3, 0)).astype(np.uint8)
    files = {}

    def save(name, image, fast, **kw):
        image.save(os.path.join(folder, name), **kw)
        files[name] = fast

    save("grey.png", Image.fromarray(grey), True)
    save("rgb.png", Image.fromarray(rgb), True)
    save("rgba.png", Image.fromarray(rgba), True)
    save("la.png", Image.fromarray(rgba[..., ::3].copy(), "LA"), True)
    save("bits1.png", Image.fromarray(grey > 128), True)
    save("palette.png", Image.fromarray(rgb).quantize(64), True)
    save("palette_tRNS.png", Image.fromarray(rgb).quantize(64), True, transparency=3)
    save("grey_tRNS.png", Image.fromarray(grey), True, transparency=7)
    save("grey.jpg", Image.fromarray(grey), True, quality=90)
    save("rgb420.jpg", Image.fromarray(smooth), True, quality=80, subsampling=2)
    save("rgb444.jpg", Image.fromarray(smooth), True, quality=95, subsampling=0)
    cv2.imwrite(os.path.join(folder, "progressive.jpg"), smooth[..., ::-1].copy(),
                [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 85])
    files["progressive.jpg"] = True
    # PIL only: 16-bit, EXIF orientation (PNG eXIf chunk and JPEG APP1), WebP.
    save("grey16.png", Image.fromarray(grey.astype(np.uint16) * 257 + 3), False)
    save("exif.png", Image.fromarray(rgb), False, exif=_exif_orientation(6))
    save("exif.jpg", Image.fromarray(smooth), False, exif=_exif_orientation(8))
    save("mask.webp", Image.fromarray(rgb), False, lossless=True)
    return files


def test_load_mask_image_equals_the_pil_path(tmp_path):
    """Every kind of mask file reads exactly as through PIL, for several thresholds and both
    polarities; PNG/JPEG files take the OpenCV path, 16-bit/EXIF/WebP files PIL's."""
    for name, fast in _mask_files(tmp_path).items():
        path = str(tmp_path / name)
        assert (imagefile._grey_uint8_cv2(path) is not None) == fast, name
        if fast:
            np.testing.assert_array_equal(imagefile._grey_uint8_cv2(path),
                                          imagefile.read_uint8(path, "L"), err_msg=name)
        for hole_is_white in (True, False):
            for threshold in (0.5, 0.3, 0.7):
                got = imagefile.load_mask_image(path, hole_is_white=hole_is_white,
                                            threshold=threshold)
                want = _pil_mask(path, hole_is_white, threshold)
                assert got.dtype == np.float32 and got.shape == want.shape, name
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {threshold}")
    # EXIF orientation 6 turns the image: the fast path must not have ignored it.
    assert imagefile.load_mask_image(str(tmp_path / "exif.png")).shape == (64, 48)


def test_rgb_to_grey_matches_pil_on_random_colours(tmp_path):
    """The luma of 2**18 random colours (and all greys) equals PIL's 'L' conversion."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    rgb[0, :256] = np.arange(256)[:, None]
    Image.fromarray(rgb).save(tmp_path / "colours.png")
    got = imagefile._grey_uint8_cv2(str(tmp_path / "colours.png"))
    np.testing.assert_array_equal(got, np.asarray(Image.fromarray(rgb).convert("L")))


def test_load_mask_image_reads_unicode_paths(tmp_path):
    """A file whose path holds non-ASCII characters decodes on the fast path."""
    folder = tmp_path / "masken_ä_日本"
    folder.mkdir()
    path = str(folder / "maske_é.png")
    grey = np.zeros((8, 8), np.uint8)
    grey[2:5] = 255
    Image.fromarray(grey).save(path)
    assert imagefile._grey_uint8_cv2(path) is not None
    np.testing.assert_array_equal(imagefile.load_mask_image(path), (grey == 0).astype(np.float32))


def test_broken_mask_files_raise_value_error_naming_them(tmp_path):
    """Undecodable, truncated and missing files raise ValueError naming the file, as before."""
    grey = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "whole.png")
    Image.fromarray(grey).save(tmp_path / "whole.jpg")
    (tmp_path / "noise.png").write_bytes(b"not a png")
    for name in ("whole.png", "whole.jpg"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[:len(data) // 2])
    for name in ("noise.png", "cut_whole.png", "cut_whole.jpg", "missing.png"):
        path = str(tmp_path / name)
        assert imagefile._grey_uint8_cv2(path) is None, name  # left to PIL, which decides
        with pytest.raises(ValueError, match=f"cannot read mask image {path}"):
            imagefile.load_mask_image(path)


def test_pil_size_limit_still_applies(tmp_path, monkeypatch):
    """Files beyond PIL's decompression-bomb limit go to PIL, which refuses them as before."""
    grey = np.zeros((48, 64), np.uint8)
    Image.fromarray(grey).save(tmp_path / "m.png")
    Image.fromarray(grey).save(tmp_path / "m.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 48 * 64 > 2 * 1000: an error
    for name in ("m.png", "m.jpg"):
        assert imagefile._grey_uint8_cv2(str(tmp_path / name)) is None
        with pytest.raises(ValueError, match="cannot read mask image"):
            imagefile.load_mask_image(str(tmp_path / name))


def test_animated_png_goes_to_pil(tmp_path):
    """An APNG reads as PIL reads it (its first frame), through PIL."""
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (255, 0)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    path = str(tmp_path / "a.png")
    assert imagefile._grey_uint8_cv2(path) is None
    np.testing.assert_array_equal(imagefile.load_mask_image(path), _pil_mask(path))


def test_mask_source_samples_augment_of_load_mask_image(tmp_path):
    """MaskSource.sample (which skips the float32 mask) gives augment(load_mask_image(file))."""
    rgb = (_blobs(1, (96, 128))[..., None] * [255, 200, 10]).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "one.png")
    for hole_is_white in (True, False):
        source = masks.MaskSource(64, str(tmp_path), hole_is_white=hole_is_white)
        for seed in range(10):
            rng = np.random.default_rng(seed)
            got = source.sample(rng)
            rng = np.random.default_rng(seed)
            rng.integers(1)  # the file choice
            mask = imagefile.load_mask_image(str(tmp_path / "one.png"), hole_is_white=hole_is_white)
            np.testing.assert_array_equal(got, masks.augment(mask, 64, rng))


@pytest.mark.slow
def test_augment_cost_per_mask():
    """Prints load + augment per 512x512 PNG mask, old (PIL + SciPy) vs new; loose bound only."""
    import tempfile

    mask = SOURCES["strokes"]()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.png")
        Image.fromarray(((1 - mask) * 255).astype(np.uint8)).save(path)

        def median_ms(fn, n=100):
            times = []
            for seed in range(n):
                start = time.perf_counter()
                fn(np.random.default_rng(seed))
                times.append(time.perf_counter() - start)
            return 1e3 * float(np.median(times))

        for size in (256, 512):
            old = median_ms(lambda rng, s=size: augment_reference(_pil_mask(path), s, rng))
            new = median_ms(lambda rng, s=size: masks.augment(imagefile.load_mask_image(path), s,
                                                              rng))
            print(f"512 px PNG mask -> {size}: old {old:.2f} ms, new {new:.2f} ms")
        assert median_ms(lambda rng: masks.augment(mask, 256, rng)) < 2.0
