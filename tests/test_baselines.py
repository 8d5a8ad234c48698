"""pconv_jax.baselines: the classical fills, their worker pool and their cache, on 48 px pairs."""

import multiprocessing
import os
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from pconv_jax import baselines

SIZE = 48


def _masks() -> np.ndarray:
    """Three hand-drawn (3,S,S) uint8 masks, 1 = valid: a box, a thick stroke, a border bite."""
    masks = np.ones((3, SIZE, SIZE), np.uint8)
    masks[0, 14:30, 18:34] = 0
    cv2.line(masks[1], (5, 40), (40, 8), 0, thickness=5)
    masks[2, 30:, :12] = 0
    return masks


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    """Ground truths (3,S,S,3) uint8 (the astronaut, shifted crops) and masks (3,S,S)."""
    astronaut = cv2.resize(data.astronaut(), (2 * SIZE, 2 * SIZE), interpolation=cv2.INTER_AREA)
    gts = np.stack([astronaut[k * 12:k * 12 + SIZE, k * 20:k * 20 + SIZE] for k in range(3)])
    return np.ascontiguousarray(gts), _masks()


@pytest.mark.parametrize("method", baselines.METHODS)
def test_fill_keeps_valid_pixels_and_fills_holes(method, pairs):
    """Valid pixels come back bit-identical, holes zeroed in the input are filled with
    something other than zeros, shape and dtype are the input's; a float mask acts as uint8."""
    for gt, mask in zip(*pairs, strict=True):
        image = gt * mask[..., None]  # holes set to the sentinel 0
        out = baselines.fill(method, image, mask)
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[mask == 1], image[mask == 1])
        assert out[mask == 0].any()
        np.testing.assert_array_equal(baselines.fill(method, image, mask.astype(np.float32)),
                                      out)


def test_fill_without_holes_calls_nothing(pairs, monkeypatch):
    """A mask without holes gives a copy of the image without calling OpenCV or PatchMatch."""
    from patchmatch import patch_match

    def fail(*args, **kwargs):
        raise AssertionError("called for a mask without holes")

    monkeypatch.setattr(cv2, "inpaint", fail)
    monkeypatch.setattr(patch_match, "inpaint", fail)
    image = pairs[0][0]
    for method in baselines.METHODS:
        out = baselines.fill(method, image, np.ones((SIZE, SIZE), np.uint8))
        assert out is not image
        np.testing.assert_array_equal(out, image)


def test_patchmatch_depends_only_on_its_inputs(pairs):
    """PatchMatch with seed 0 gives the same fill twice, also after a call with another seed."""
    gt, mask = pairs[0][1], pairs[1][1]
    first = baselines.fill("patchmatch", gt, mask, seed=0)
    baselines.fill("patchmatch", gt, mask, seed=1)
    np.testing.assert_array_equal(baselines.fill("patchmatch", gt, mask, seed=0), first)


def test_patchmatch_continues_a_texture():
    """A hole in a periodic texture is filled by PatchMatch with under half the mean fill's
    error (about 17 against 76 grey levels here)."""
    y, x = np.mgrid[:SIZE, :SIZE]
    texture = np.stack([(x // 4) % 2 * 200 + 20, (y // 4) % 2 * 150 + 50,
                        (x + y) // 3 % 3 * 80], axis=-1).astype(np.uint8)  # (S,S,3)
    mask = np.ones((SIZE, SIZE), np.uint8)
    mask[18:30, 16:32] = 0
    hole = mask == 0
    errors = {m: np.abs(baselines.fill(m, texture, mask).astype(float) - texture)[hole].mean()
              for m in ("patchmatch", "mean_fill")}
    assert errors["patchmatch"] < 0.5 * errors["mean_fill"], errors


def test_runner_matches_fill_and_leaves_no_processes(pairs):
    """Two workers, two batches in flight: every method's results equal fill() called here
    pair by pair; an exception before collecting leaves no worker process behind."""
    gts, masks = pairs
    before = set(multiprocessing.active_children())
    with pytest.raises(KeyboardInterrupt):
        with baselines.BaselineRunner(baselines.METHODS, workers=2, seed=5) as runner:
            first = runner.submit(gts[:2], masks[:2])
            second = runner.submit(gts[2:], masks[2:])
            results = runner.collect(first)
            for method, filled in runner.collect(second).items():
                results[method] = np.concatenate([results[method], filled])
            assert set(multiprocessing.active_children()) - before  # a pool did the work
            runner.submit(gts, masks)
            raise KeyboardInterrupt
    assert not set(multiprocessing.active_children()) - before
    assert runner.misses == 2 * len(gts) * len(baselines.METHODS) and runner.hits == 0
    for method in baselines.METHODS:
        expected = np.stack([baselines.fill(method, g, m, seed=5)
                             for g, m in zip(gts, masks, strict=True)])
        assert results[method].shape == gts.shape and results[method].dtype == np.uint8
        np.testing.assert_array_equal(results[method], expected, err_msg=method)


def test_cache_hits_start_no_pool(pairs, tmp_path, monkeypatch):
    """A second runner on the same cache folder returns the first's arrays, all from the
    cache (hits = pairs x methods, no misses), without starting a pool or filling anything."""
    gts, masks = pairs
    with baselines.BaselineRunner(baselines.METHODS, cache_dir=str(tmp_path), workers=0) as r:
        first = r.collect(r.submit(gts, masks))
    assert (r.hits, r.misses) == (0, len(gts) * len(baselines.METHODS))
    assert len(list(tmp_path.glob("*/*.png"))) == len(gts) * len(baselines.METHODS)

    def fail(*args, **kwargs):
        raise AssertionError("computed although cached")

    monkeypatch.setattr(multiprocessing, "get_context", fail)
    monkeypatch.setattr(baselines, "fill", fail)
    with baselines.BaselineRunner(baselines.METHODS, cache_dir=str(tmp_path), workers=2) as r:
        second = r.collect(r.submit(gts, masks))
    assert (r.hits, r.misses) == (len(gts) * len(baselines.METHODS), 0)
    for method in baselines.METHODS:
        np.testing.assert_array_equal(second[method], first[method], err_msg=method)


def test_bad_cache_files_are_recomputed(pairs, tmp_path):
    """A cache file of garbage bytes and one PNG of the wrong shape are recomputed and
    overwritten, not returned."""
    gts, masks = pairs
    with baselines.BaselineRunner(["telea"], cache_dir=str(tmp_path), workers=0) as r:
        first = r.collect(r.submit(gts[:2], masks[:2]))["telea"]
    files = [r._path("telea", g, m == 0) for g, m in zip(gts[:2], masks[:2], strict=True)]
    with open(files[0], "wb") as f:
        f.write(b"\x89PNG not really" * 10)
    cv2.imwrite(files[1], np.zeros((SIZE, SIZE // 2, 3), np.uint8))
    with baselines.BaselineRunner(["telea"], cache_dir=str(tmp_path), workers=0) as r:
        again = r.collect(r.submit(gts[:2], masks[:2]))["telea"]
    assert (r.hits, r.misses) == (0, 2)
    np.testing.assert_array_equal(again, first)
    for path, filled in zip(files, first, strict=True):
        np.testing.assert_array_equal(cv2.imread(path)[..., ::-1], filled)


def test_missing_patchmatch_is_left_out(pairs, monkeypatch):
    """Without an importable patchmatch, missing() names pypatchmatch, available() leaves
    PatchMatch out with that line, fill and the runner refuse it; the others still run."""
    monkeypatch.setitem(sys.modules, "patchmatch", None)
    reason = baselines.missing("patchmatch")
    assert reason is not None and "pypatchmatch" in reason
    runnable, left_out = baselines.available(baselines.METHODS)
    assert runnable == ["telea", "navier_stokes", "mean_fill"]
    assert len(left_out) == 1 and "patchmatch" in left_out[0] and "pypatchmatch" in left_out[0]
    with pytest.raises(RuntimeError, match="pypatchmatch"):
        baselines.fill("patchmatch", *(a[0] for a in pairs))
    with pytest.raises(RuntimeError, match="pypatchmatch"):
        baselines.BaselineRunner(["patchmatch"], workers=0)


def test_unknown_method_names_the_choices(pairs):
    """An unknown method is a ValueError naming the known ones, wherever it is given."""
    for call in (lambda: baselines.missing("sobel"), lambda: baselines.available(["sobel"]),
                 lambda: baselines.fill("sobel", *(a[0] for a in pairs)),
                 lambda: baselines.BaselineRunner(["telea", "sobel"], workers=0)):
        with pytest.raises(ValueError, match="patchmatch, telea, navier_stokes, mean_fill"):
            call()


def test_default_cache_dir(monkeypatch):
    """$PCONV_JAX_CACHE/baselines when set, else under $XDG_CACHE_HOME, else ~/.cache."""
    monkeypatch.setenv("PCONV_JAX_CACHE", "/c")
    assert baselines.default_cache_dir() == "/c/baselines"
    monkeypatch.delenv("PCONV_JAX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/x")
    assert baselines.default_cache_dir() == "/x/pconv-jax/baselines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/h")
    assert baselines.default_cache_dir() == os.path.join("/h", ".cache", "pconv-jax",
                                                         "baselines")
