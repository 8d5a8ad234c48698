"""The input pipeline at speed: worker processes, reduced-size JPEG decoding, uint8 batches."""

import numpy as np
import pytest
from PIL import Image

from pconv_jax import data, imagefile, masks


def _photo_folder(folder, count=6, size=(120, 90)):
    """`count` JPEG photos (crops of a bundled photo, so they have texture) and mask PNGs."""
    from skimage import data as skdata

    photo = skdata.astronaut()  # (512,512,3)
    (folder / "img").mkdir()
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        top, left = rng.integers(0, 512 - size[1]), rng.integers(0, 512 - size[0])
        crop = photo[top:top + size[1], left:left + size[0]]
        Image.fromarray(crop).save(folder / "img" / f"{i}.jpg", quality=92)
        hole = masks.irregular_mask(64, rng, 0.3) == 0
        Image.fromarray(hole.astype(np.uint8) * 255).save(folder / "masks" / f"{i}.png")
    return str(folder / "img"), str(folder / "masks")


def _dataset(images, mask_dir, size=32):
    return data.train_dataset(data.open_source(images), image_size=size, local_batch=3, seed=7,
                              masks=masks.MaskSource(size, mask_dir), scale_range=(1.0, 1.5))


def _take(iterator, n):
    with iterator:
        return [next(iterator) for _ in range(n)]


@pytest.mark.slow
def test_same_batches_for_any_worker_count(tmp_path):
    """0, 1 and 2 worker processes give bitwise the same batches in the same order: each
    example's randomness comes from its index and the seed alone."""
    ds = _dataset(*_photo_folder(tmp_path))
    reference = [ds[i] for i in range(5)]  # random access: no iterator involved
    for workers in (0, 1, 2):
        got = _take(data.batch_iterator(ds, workers=workers, threads=1), 5)
        for want, batch in zip(reference, got, strict=True):
            for key in ("image", "mask"):
                np.testing.assert_array_equal(batch[key], want[key], err_msg=f"{workers} {key}")
    assert reference[0]["image"].dtype == np.uint8 and reference[0]["mask"].dtype == np.uint8
    assert set(np.unique([b["mask"] for b in reference])) <= {0, 1}


@pytest.mark.slow
def test_state_resumes_across_a_worker_count_change(tmp_path):
    """The state after 3 batches read by 2 workers continues, under 0 or 1 worker, with the
    batch the uninterrupted iterator gives next."""
    ds = _dataset(*_photo_folder(tmp_path))
    with data.batch_iterator(ds, workers=2, threads=1) as it:
        for _ in range(3):
            next(it)
        state = it.get_state()
        expected = next(it)
    assert state == {"next_index": 3}
    for workers in (0, 1):
        resumed = data.batch_iterator(ds, workers=workers, threads=1)
        resumed.set_state(state)
        got = _take(resumed, 1)[0]
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["mask"], expected["mask"])
    with pytest.raises(ValueError, match="not a data iterator state"):
        data.batch_iterator(ds).set_state({"position": 3})


def test_reduced_jpeg_decoding_keeps_the_picture(tmp_path):
    """A JPEG read for a 100 px crop is decoded at 1/2 (its 240 px side allows no more) and
    equals the full decode shrunk by area averaging within JPEG noise; PNGs are read whole."""
    from skimage import data as skdata

    photo = skdata.astronaut()[:240, :320]  # (240,320,3)
    Image.fromarray(photo).save(tmp_path / "p.jpg", quality=95)
    Image.fromarray(photo).save(tmp_path / "p.png")
    full = imagefile.read_uint8(str(tmp_path / "p.jpg"))
    half = imagefile.read_rgb_at_least(str(tmp_path / "p.jpg"), 100)
    assert half.shape == (120, 160, 3) and half.dtype == np.uint8
    shrunk = full.reshape(120, 2, 160, 2, 3).mean(axis=(1, 3))  # 2x2 box average in NumPy
    assert np.abs(half - shrunk).mean() < 3.0
    assert imagefile.read_rgb_at_least(str(tmp_path / "p.jpg"), 200).shape == (240, 320, 3)
    np.testing.assert_array_equal(imagefile.read_rgb_at_least(str(tmp_path / "p.png"), 50), photo)


def test_reduced_decoding_applies_exif_orientation(tmp_path):
    """A phone photo stored sideways (EXIF orientation 6) comes out upright, as read_rgb
    reads it, at full and at reduced size."""
    image = np.zeros((64, 128, 3), np.uint8)
    image[:16, :32] = 255  # a white block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(image).save(tmp_path / "r.jpg", exif=exif, quality=95)
    upright = imagefile.read_uint8(str(tmp_path / "r.jpg"))
    assert upright.shape == (128, 64, 3)
    np.testing.assert_array_equal(imagefile.read_rgb_at_least(str(tmp_path / "r.jpg"), 64), upright)
    small = imagefile.read_rgb_at_least(str(tmp_path / "r.jpg"), 32)
    assert small.shape == (64, 32, 3)
    shrunk = upright.reshape(64, 2, 32, 2, 3).mean(axis=(1, 3))  # 2x2 box average
    assert np.abs(small - shrunk).mean() < 3.0
    assert small[:12, 26:].mean() > 200 and small[20:, :20].max() < 50  # block top-right


def test_broken_jpeg_is_skipped_for_the_next_file(tmp_path):
    """A JPEG whose header reads but whose data is cut off is replaced by the next good file
    with a warning, at reduced size too."""
    images, _ = _photo_folder(tmp_path, count=2)
    first = sorted(__import__("os").listdir(images))[0]
    raw = (tmp_path / "img" / first).read_bytes()
    (tmp_path / "img" / first).write_bytes(raw[:len(raw) // 2])  # the header survives
    folder = data.open_source(images)
    with pytest.warns(UserWarning, match="could not decode"):
        got = folder.read_at_least(0, 16)
    assert got.ndim == 3 and got.shape[2] == 3


def test_bad_worker_counts_are_refused():
    """Negative worker or thread counts are a ValueError naming both values."""
    ds = data.train_dataset([np.zeros((8, 8, 3), np.uint8)], image_size=8, local_batch=1,
                            seed=0, masks=masks.MaskSource(8))
    with pytest.raises(ValueError, match="workers and threads must be >= 0, got -2 and 1"):
        data.batch_iterator(ds, workers=-2, threads=1)


def test_default_workers_leave_a_core_for_the_trainer(monkeypatch):
    """The default worker count is the cores left after the trainer's, between 0 and 16."""
    for cores, expected in ((1, 0), (2, 1), (8, 7), (64, 16)):
        monkeypatch.setattr(data.os, "sched_getaffinity", lambda _pid, c=cores: set(range(c)))
        assert data.default_workers() == expected


def test_crop_flip_equals_numpy_slicing():
    """crop_flip without a resize is the NumPy crop at the drawn offsets, mirrored when the
    drawn coin says so (OpenCV's flip is exact), and always a contiguous copy."""
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    flips = 0
    for seed in range(20):
        got = data.crop_flip(image, 24, 40, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        top, left = rng.integers(0, 40 - 24 + 1), rng.integers(0, 60 - 24 + 1)
        want = image[top:top + 24, left:left + 24]
        if rng.random() < 0.5:
            want, flips = want[:, ::-1], flips + 1
        np.testing.assert_array_equal(got, want)
        assert got.flags["C_CONTIGUOUS"] and not np.shares_memory(got, image)
    assert 0 < flips < 20
