"""pconv_jax.masks and pconv_jax.data: buckets, borders, binary resizing, sources, pipeline."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pconv_jax import data, imagefile, masks


def test_irregular_mask_is_binary_seeded_and_near_its_ratio():
    """Generated masks hold only 0/1, repeat for a seed, and reach the requested hole ratio."""
    a = masks.irregular_mask(64, np.random.default_rng(3), hole_ratio=0.3)
    b = masks.irregular_mask(64, np.random.default_rng(3), hole_ratio=0.3)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert 0.3 <= masks.hole_ratio(a) < 0.6


@pytest.mark.parametrize("holes,bucket", [(41, (0.01, 0.1)), (410, (0.1, 0.2)),
                                          (2048, (0.4, 0.5)), (2458, (0.6, 0.7))])
def test_bucket_of_counts_hole_pixels(holes, bucket):
    """A 64x64 mask with k hole pixels falls in the bucket (lo, hi] holding k/4096."""
    mask = np.ones(4096, np.float32)
    mask[:holes] = 0
    expected = bucket if bucket in masks.BUCKETS else None
    assert masks.bucket_of(mask.reshape(64, 64)) == expected


def test_bucket_edges_are_left_open_right_closed():
    """Exactly 10% holes belongs to (0.01,0.1], not (0.1,0.2]."""
    mask = np.ones((10, 10), np.float32)
    mask.flat[:10] = 0
    assert masks.bucket_of(mask) == (0.01, 0.1)
    assert masks.bucket_name((0.1, 0.2)) == "(0.1,0.2]"


def test_touches_border():
    """Border classification looks at the outermost rows and columns only."""
    mask = np.ones((8, 8), np.float32)
    mask[3:5, 3:5] = 0
    assert not masks.touches_border(mask)
    mask[0, 4] = 0
    assert masks.touches_border(mask)
    mask = np.ones((8, 8, 1), np.float32)
    mask[4, 7, 0] = 0
    assert masks.touches_border(mask)


def test_resize_nearest_keeps_masks_binary_and_blocks_intact():
    """Nearest resizing: only the input's values, and a 2x upscale repeats each pixel 2x2."""
    rng = np.random.default_rng(0)
    mask = (rng.random((5, 7)) < 0.5).astype(np.float32)
    up = masks.resize_nearest(mask, (10, 14))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(mask, 2, 0), 2, 1))
    odd = masks.resize_nearest(mask, (13, 3))
    assert set(np.unique(odd)) <= {0.0, 1.0}


def test_augment_stays_binary_and_sized():
    """Dilation, rotation and crop keep a binary mask of the requested size."""
    base = masks.irregular_mask(80, np.random.default_rng(1), hole_ratio=0.2)
    out = masks.augment(base, 48, np.random.default_rng(2))
    assert out.shape == (48, 48) and set(np.unique(out)) <= {0.0, 1.0}


def test_mask_files_are_thresholded_white_is_hole(tmp_path):
    """A grey-level mask file becomes binary; white marks holes unless told otherwise."""
    grey = np.zeros((6, 6), np.uint8)
    grey[:, 3:] = 200
    grey[0, 0] = 100  # below the threshold: valid
    Image.fromarray(grey).save(tmp_path / "m.png")
    mask = imagefile.load_mask_image(str(tmp_path / "m.png"))
    assert mask[:, 3:].sum() == 0 and mask[:, :3].min() == 1
    inverted = imagefile.load_mask_image(str(tmp_path / "m.png"), hole_is_white=False)
    np.testing.assert_array_equal(inverted, 1 - mask)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read mask image"):
        imagefile.load_mask_image(str(tmp_path / "bad.png"))


def test_mask_folder_skips_unreadable_and_undecodable_files(tmp_path):
    """A mask folder: unreadable files skipped with a count, files broken after the header
    replaced by a good one, and a folder without one decodable mask an error naming it."""
    hole = np.zeros((40, 40), np.uint8)
    hole[10:30, 10:30] = 255  # white = hole
    Image.fromarray(hole).save(tmp_path / "good.png")
    Image.fromarray(hole).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:60])
    (tmp_path / "garbage.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipped 1 unreadable mask"):
        source = masks.MaskSource(32, str(tmp_path))
    assert len(source.files) == 2
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="could not decode .*cut.png"):
        drawn = [source.sample(rng) for _ in range(8)]  # cut.png is drawn at some point
    for m in drawn:
        assert m.shape == (32, 32) and set(np.unique(m)) <= {0.0, 1.0} and (m == 0).any()
    (tmp_path / "good.png").unlink()
    with pytest.warns(UserWarning, match="skipped 1 unreadable mask"):
        source = masks.MaskSource(32, str(tmp_path))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 mask files"):
        source.sample(rng)


@pytest.mark.parametrize("hole_range", [(0.0, 0.0), (0.5, 0.2), (0.1, 1.0)])
def test_mask_source_refuses_impossible_hole_ranges(hole_range):
    """Generated masks need 0 < lo <= hi < 1; anything else is named, not drawn forever."""
    with pytest.raises(ValueError, match="hole_range"):
        masks.MaskSource(32, hole_range=hole_range)


def test_make_eval_set_cli(tmp_path):
    """make-eval-set writes N masks per bucket x border class, each truly in its group."""
    out = tmp_path / "eval"
    run = subprocess.run([sys.executable, "-m", "pconv_jax.masks", "make-eval-set", "--out",
                          str(out), "--per-bucket", "2", "--size", "64", "--seed", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    index = json.loads((out / "index.json").read_text())
    assert len(index["masks"]) == 2 * 2 * len(masks.BUCKETS)
    groups = {}
    for entry in index["masks"]:
        mask = imagefile.load_mask_image(str(out / entry["file"]))
        assert mask.shape == (64, 64)
        assert masks.bucket_name(masks.bucket_of(mask)) == entry["bucket"]
        assert masks.touches_border(mask) == entry["border"]
        groups[(entry["bucket"], entry["border"])] = groups.get((entry["bucket"],
                                                                  entry["border"]), 0) + 1
    assert set(groups.values()) == {2} and len(groups) == 12
    bad = subprocess.run([sys.executable, "-m", "pconv_jax.masks", "make-eval-set", "--out",
                          str(out), "--per-bucket", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "per-bucket" in bad.stderr and "Traceback" not in bad.stderr


def test_image_folder_skips_unreadable_files(tmp_path):
    """Recursive folder source: readable images kept, broken ones skipped with a count."""
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((25, 25), 128, np.uint8)).save(tmp_path / "sub" / "b.jpg")
    Image.fromarray(np.zeros((10, 10, 4), np.uint8)).save(tmp_path / "sub" / "c.webp")
    (tmp_path / "broken.jpg").write_bytes(b"\x00" * 10)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        source = data.open_source(str(tmp_path))
    assert len(source) == 3
    assert all(source[i].ndim == 3 and source[i].shape[2] == 3 for i in range(3))


def test_image_folder_with_only_truncated_files_is_a_clear_error(tmp_path):
    """Files whose header reads but whose data is cut: the next good file stands in for a
    broken one, and a folder with no decodable file is an error naming the folder."""
    for name in ("a.png", "b.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
            tmp_path / name)
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:200])
    source = data.open_source(str(tmp_path))  # headers are intact: both listed
    assert len(source) == 2
    with pytest.warns(UserWarning, match="could not decode"), \
            pytest.raises(ValueError, match=f"none of the 2 image files below {tmp_path}"):
        source[0]
    good = np.full((8, 8, 3), 7, np.uint8)
    Image.fromarray(good).save(tmp_path / "c.png")
    source = data.open_source(str(tmp_path))
    with pytest.warns(UserWarning, match="could not decode"):
        np.testing.assert_array_equal(source[0], good)  # a.png, b.png broken -> c.png


def test_tfds_spec_keeps_builder_config_and_never_downloads(monkeypatch):
    """tfds:NAME/CONFIG/SPLIT: the split is after the last '/', and data_source is asked not to
    download (an unprepared dataset must be an error on a training host, not a download)."""
    import tensorflow_datasets as tfds

    calls = []

    def fake_data_source(name, **kwargs):
        calls.append((name, kwargs))
        return [{"image": np.zeros((4, 4, 3), np.uint8)}]

    monkeypatch.setattr(tfds, "data_source", fake_data_source)
    source = data.open_source("tfds:celeb_a_hq/256/train[:10%]")
    assert len(source) == 1
    (name, kwargs), = calls
    assert name == "celeb_a_hq/256" and kwargs["split"] == "train[:10%]"
    assert kwargs["download"] is False


def test_bad_sources_are_named(tmp_path):
    """A missing folder and a malformed TFDS spec are refused with their names."""
    with pytest.raises(FileNotFoundError, match="nope"):
        data.open_source(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="tfds:NAME/SPLIT"):
        data.open_source("tfds:places365_small")


def test_pipeline_is_deterministic_sharded_and_shaped():
    """Same seed, same batches; process shards are disjoint; shapes, ranges and flips."""
    source = [np.full((40, 50, 3), i * 20, np.uint8) for i in range(6)]
    mask_source = masks.MaskSource(16)
    kwargs = dict(image_size=16, local_batch=3, seed=5, masks=mask_source)
    ds1 = data.train_dataset(source, **kwargs)
    ds2 = data.train_dataset(source, **kwargs)
    b1, b2 = ds1[0], ds2[0]
    np.testing.assert_array_equal(b1["image"], b2["image"])
    np.testing.assert_array_equal(b1["mask"], b2["mask"])
    assert b1["image"].shape == (3, 16, 16, 3) and b1["mask"].shape == (3, 16, 16, 1)
    assert b1["image"].dtype == np.uint8 and b1["mask"].dtype == np.uint8  # uint8 to the device
    assert set(np.unique(b1["mask"])) <= {0, 1}
    epoch = {float(ds1[0]["image"][i, 0, 0, 0]) for i in range(3)} | \
        {float(ds1[1]["image"][i, 0, 0, 0]) for i in range(3)}
    assert len(epoch) == 6  # one epoch sees every image once
    def shard(i):
        ds = data.train_dataset(source, shard_index=i, shard_count=2, **kwargs)
        return {float(x) for b in range(3) for x in ds[b]["image"][:, 0, 0, 0]}

    shard0, shard1 = shard(0), shard(1)
    assert shard0.isdisjoint(shard1) and len(shard0 | shard1) == 6


def test_iterator_state_resumes_where_it_stopped():
    """get_state/set_state: a new iterator continues with the batch the old one would give."""
    source = [np.random.default_rng(i).integers(0, 255, (30, 30, 3), np.uint8) for i in range(5)]
    ds = data.train_dataset(source, image_size=16, local_batch=2, seed=0,
                            masks=masks.MaskSource(16))
    it = data.batch_iterator(ds, threads=1)
    next(it), next(it)
    state = it.get_state()
    expected = next(it)
    fresh = data.batch_iterator(ds, threads=1)
    fresh.set_state(state)
    got = next(fresh)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["mask"], expected["mask"])


def test_bundled_photos_load_offline():
    """The scikit-image photos are RGB uint8 sources without any download."""
    source = data.open_source("samples")
    assert len(source) == len(data.BUNDLED_PHOTOS)
    assert all(source[i].dtype == np.uint8 and source[i].shape[2] == 3 for i in range(len(source)))


def test_samples_subset_selects_the_named_photos():
    """'samples:chelsea,coffee' holds exactly those scikit-image photos, in that order."""
    from skimage import data as skdata

    source = data.open_source("samples:chelsea, coffee")
    assert len(source) == 2
    np.testing.assert_array_equal(source[0], skdata.chelsea())
    np.testing.assert_array_equal(source[1], skdata.coffee())
    with pytest.raises(ValueError, match="unknown bundled photo 'kitten'.*astronaut"):
        data.open_source("samples:kitten")
    with pytest.raises(ValueError, match="no bundled photo named"):
        data.open_source("samples:")


@pytest.mark.parametrize("photo", ["coffee", "camera"])
def test_colour_jitter_is_one_colour_map_per_crop_geometry_and_mask_untouched(photo):
    """With data.colour_jitter > 0 a training example is the unjittered example (same crop,
    flip and mask: the colour draws come last) passed through one 3x3 colour matrix, rounded
    and saturated; a grey photo comes out tinted (its channels differ)."""
    source = data.BundledPhotos([photo])
    mask_source = masks.MaskSource(32, None)
    plain = data.TrainExample(source, 32, mask_source, (1.0, 2.0))
    jittered = data.TrainExample(source, 32, mask_source, (1.0, 2.0), colour_jitter=0.4)
    tinted = 0
    for seed in range(8):
        a = plain(0, np.random.default_rng(seed))
        b = jittered(0, np.random.default_rng(seed))
        np.testing.assert_array_equal(a["mask"], b["mask"])
        x = a["image"].reshape(-1, 3).astype(np.float64)
        y = b["image"].reshape(-1, 3).astype(np.float64)
        inside = ((y > 0) & (y < 255)).all(axis=1)  # pixels no channel of which saturated
        if photo == "coffee":  # a colour photo determines the matrix: solve for it
            assert inside.sum() > 50
            matrix, *_ = np.linalg.lstsq(x[inside], y[inside], rcond=None)
            # the true matrix leaves rounding (<= 0.5); a least-squares fit of it a little more
            assert np.abs(x[inside] @ matrix - y[inside]).max() <= 1.0
        tinted += np.ptp(y[inside], axis=1).mean() > 2
    assert tinted >= 6


def test_colour_jitter_off_draws_nothing_extra():
    """colour_jitter = 0 (the default) leaves every example bit-identical to before: no
    colour draws consume the example's random stream."""
    source = data.BundledPhotos(["coffee"])
    mask_source = masks.MaskSource(32, None)
    a = data.TrainExample(source, 32, mask_source)(0, np.random.default_rng(1))
    rng = np.random.default_rng(1)
    short = data.draw_short_side(32, rng, (1.0, 1.0))
    crop = data.crop_flip(source[0], 32, short, rng)
    np.testing.assert_array_equal(a["image"], crop)
    np.testing.assert_array_equal(a["mask"][..., 0], (mask_source.sample(rng) > 0.5))
