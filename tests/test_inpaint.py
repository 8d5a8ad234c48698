"""pconv_jax.inpaint: any image size, valid pixels untouched, clear errors from the CLI."""

import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from pconv_jax import train
from pconv_jax.inpaint import Inpainter
from tests.train_util import tiny_config

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def test_odd_size_image_keeps_every_valid_pixel(inpainter):
    """A 37x45 uint8 image: same shape back, valid pixels bit-identical, holes filled."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    mask = np.ones((37, 45), np.float32)
    mask[10:25, 5:30] = 0
    out = inpainter(image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask > 0], image[mask > 0])
    assert np.any(out[mask == 0] != image[mask == 0])
    assert inpainter.step == 2


def test_float_batch_keeps_valid_pixels(inpainter):
    """A float [0,1] batch: valid pixels identical, output in [0,1]."""
    rng = np.random.default_rng(1)
    images = rng.random((2, 32, 40, 3)).astype(np.float32)
    masks = (rng.random((2, 32, 40, 1)) < 0.7).astype(np.float32)
    out = inpainter(images, masks)
    np.testing.assert_array_equal(out[masks[..., 0] > 0], images[masks[..., 0] > 0])
    assert 0 <= out.min() and out.max() <= 1


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pconv_jax.inpaint", *args], env=ENV,
                          capture_output=True, text=True, timeout=300)


def _main(capsys, *args):
    """inpaint.main in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from pconv_jax import inpaint

    code = inpaint.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _save(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_cli_single_image_and_errors(run_dir, tmp_path):
    """White = hole by default; size mismatch, all-hole and unreadable files are messages."""
    rng = np.random.default_rng(2)
    image = _save(tmp_path / "img.png", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    hole = np.zeros((30, 50), np.uint8)
    hole[5:15, 10:30] = 255
    mask = _save(tmp_path / "mask.png", hole)
    out = str(tmp_path / "out" / "result.png")
    run = _cli("--workdir", run_dir, "--image", image, "--mask", mask, "--out", out)
    assert run.returncode == 0, run.stderr
    result = np.asarray(Image.open(out))
    original = np.asarray(Image.open(image))
    np.testing.assert_array_equal(result[hole == 0], original[hole == 0])

    small = _save(tmp_path / "small.png", hole[:20, :40])
    run = _cli("--workdir", run_dir, "--image", image, "--mask", small, "--out", out)
    assert run.returncode == 1 and "40x20" in run.stderr and "50x30" in run.stderr
    run = _cli("--workdir", run_dir, "--image", image, "--mask", small, "--out", out,
               "--resize-mask")
    assert run.returncode == 0, run.stderr

    full = _save(tmp_path / "full.png", np.full((30, 50), 255, np.uint8))
    run = _cli("--workdir", run_dir, "--image", image, "--mask", full, "--out", out)
    assert run.returncode == 1 and "whole image as hole" in run.stderr
    run = _cli("--workdir", run_dir, "--image", image, "--mask", full, "--out", out,
               "--invert-mask")
    assert run.returncode == 0 and "unchanged" in run.stdout
    np.testing.assert_array_equal(np.asarray(Image.open(out)), original)

    (tmp_path / "broken.png").write_bytes(b"nope")
    run = _cli("--workdir", run_dir, "--image", str(tmp_path / "broken.png"), "--mask", mask,
               "--out", out)
    assert run.returncode == 1 and "broken.png" in run.stderr
    for r in (run,):
        assert "Traceback" not in r.stderr


def test_cli_folder_mode(run_dir, tmp_path):
    """--images/--masks pair files by name and write one PNG per image."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "msks").mkdir()
    rng = np.random.default_rng(3)
    for name, size in (("a", (20, 33)), ("b", (41, 17)), ("c", (20, 33))):
        _save(tmp_path / "imgs" / f"{name}.png", rng.integers(0, 256, (*size, 3), np.uint8))
        hole = np.zeros(size, np.uint8)
        hole[3:9, 4:12] = 255
        _save(tmp_path / "msks" / f"{name}.png", hole)
    run = _cli("--workdir", run_dir, "--images", str(tmp_path / "imgs"), "--masks",
               str(tmp_path / "msks"), "--out", str(tmp_path / "res"))
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(tmp_path / "res")) == ["a.png", "b.png", "c.png"]
    for name in "abc":  # batched or not, every valid pixel comes back unchanged
        original = np.asarray(Image.open(tmp_path / "imgs" / f"{name}.png"))
        hole = np.asarray(Image.open(tmp_path / "msks" / f"{name}.png")) > 0
        result = np.asarray(Image.open(tmp_path / "res" / f"{name}.png"))
        np.testing.assert_array_equal(result[~hole], original[~hole])


def test_missing_run_is_a_message(tmp_path):
    """A workdir without a run: exit 1 and a sentence, no traceback (the inputs are fine:
    missing inputs are reported first, see tests/test_paths.py)."""
    _save(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    _save(tmp_path / "y.png", np.full((8, 8), 255, np.uint8))
    run = _cli("--workdir", str(tmp_path / "run"), "--image", str(tmp_path / "x.png"), "--mask",
               str(tmp_path / "y.png"), "--out", str(tmp_path / "o.png"))
    assert run.returncode == 1 and "not a training run" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_evaluate_writes_the_table_for_model_and_baselines(run_dir, tmp_path):
    """evaluate: 12 rows (6 buckets x border) per method, counts summing to the pairs."""
    masks_dir = tmp_path / "masks"
    made = subprocess.run([sys.executable, "-m", "pconv_jax.masks", "make-eval-set", "--out",
                           str(masks_dir), "--per-bucket", "1", "--size", "32", "--seed", "0"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "eval"
    run = subprocess.run([sys.executable, "-m", "pconv_jax.evaluate", "--workdir", run_dir,
                          "--images", "samples", "--masks", str(masks_dir), "--out", str(out)],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    results = json.loads((out / "metrics.json").read_text())
    methods = {"model", "patchmatch", "telea", "navier_stokes", "mean_fill"}
    assert set(results) == methods | {"mask_set", "baseline_fills", "smooth_fills", "weights"}
    assert 0 <= results["smooth_fills"]["constant"]["worst"] <= 1
    assert "smooth fills (32 px" in run.stdout
    index = json.loads((masks_dir / "index.json").read_text())
    assert results["mask_set"]["verified"] and results["mask_set"]["protocol"] == "paper"
    assert results["mask_set"]["set_sha256"] == index["set_sha256"]
    assert results["baseline_fills"]["computed"] + results["baseline_fills"]["from_cache"] \
        == 12 * 4
    for method in methods:
        rows = results[method]
        assert len(rows) == 12, method
        assert sum(r["count"] for r in rows) == 12
        assert {(r["bucket"], r["border"]) for r in rows} == {
            (b, x) for b in ("(0.01,0.1]", "(0.1,0.2]", "(0.2,0.3]", "(0.3,0.4]", "(0.4,0.5]",
                             "(0.5,0.6]") for x in (False, True)}
        assert all(0 <= r["ssim"] <= 1 and r["psnr"] > 0 and r["l1"] >= 0 for r in rows)
    # Bigger holes are harder for every method: mean-fill l1 grows with the bucket.
    mean_fill = [r["l1"] for r in results["mean_fill"] if not r["border"]]
    assert mean_fill[-1] > mean_fill[0]
    assert (out / "table.md").exists() and (out / "table.csv").exists()
    assert (out / "examples.png").exists()


def test_evaluate_without_index_is_a_message(run_dir, tmp_path):
    """A masks folder without index.json: exit 1, a sentence saying how to make one."""
    (tmp_path / "m").mkdir()
    run = subprocess.run([sys.executable, "-m", "pconv_jax.evaluate", "--workdir", run_dir,
                          "--images", "samples", "--masks", str(tmp_path / "m"), "--out",
                          str(tmp_path / "o")], env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1 and "make-eval-set" in run.stderr
    assert "Traceback" not in run.stderr


def test_rgba_and_greyscale_images_keep_their_mode(run_dir, tmp_path, capsys):
    """A greyscale photo is written greyscale and an RGBA one RGBA with its alpha copied as
    it is, both through the crop strategy (200 px, over twice the 32 px training size) and
    whole (28 px); valid pixels keep their values bit for bit; a BMP output, which cannot
    hold the alpha, is refused naming the formats that can."""
    rng = np.random.default_rng(4)
    for size, strategy in (((24, 28), "full"), ((150, 200), "crop")):
        hole = np.zeros(size, np.uint8)
        hole[6:14, 8:20] = 255
        mask = _save(tmp_path / "mask.png", hole)
        rgba = _save(tmp_path / "rgba.png", rng.integers(0, 256, (*size, 4), dtype=np.uint8))
        grey = _save(tmp_path / "grey.png", rng.integers(0, 256, size, dtype=np.uint8))
        for path in (rgba, grey):
            out = str(tmp_path / f"out_{os.path.basename(path)}")
            code, stdout, stderr = _main(capsys, "--workdir", run_dir, "--image", path,
                                         "--mask", mask, "--out", out)
            assert code == 0, stderr
            assert f"(strategy {strategy}" in stdout, stdout
            result = np.asarray(Image.open(out))
            source = np.asarray(Image.open(path))
            assert result.shape == source.shape and Image.open(out).mode == \
                Image.open(path).mode
            np.testing.assert_array_equal(result[hole == 0], source[hole == 0])
            assert (result[hole > 0] != source[hole > 0]).any()
            if path == rgba:
                assert "alpha kept" in stdout
                np.testing.assert_array_equal(result[..., 3], source[..., 3])
            else:
                assert "greyscale" in stdout
    code, _, stderr = _main(capsys, "--workdir", run_dir, "--image", rgba, "--mask", mask,
                            "--out", str(tmp_path / "out.bmp"))
    assert code == 1 and "alpha channel" in stderr and ".png" in stderr


def test_16_bit_colour_is_scaled_in_every_channel(tmp_path):
    """A 16-bit RGB PNG reads as round(v / 257) in each channel, as 16-bit greyscale always
    did (Pillow alone keeps the high byte: 400 -> 1, not 2)."""
    import cv2

    from pconv_jax import imagefile

    deep = np.random.default_rng(5).integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    deep[0, 0] = (400, 65535, 0)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])  # OpenCV writes BGR
    expected = np.round(deep / 257).astype(np.uint8)
    got = imagefile.read_uint8(str(tmp_path / "deep.png"))
    np.testing.assert_array_equal(got, expected)
    assert tuple(got[0, 0]) == (2, 255, 0)
    assert imagefile.deep_colour(str(tmp_path / "deep.png"))
    assert not imagefile.deep_colour(str(tmp_path / "deep.png") + ".missing")


def test_unreadable_mask_is_named(run_dir, tmp_path):
    """A broken mask file: exit 1 and its name, no traceback."""
    image = _save(tmp_path / "img.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "bad_mask.png").write_bytes(b"nope")
    run = _cli("--workdir", run_dir, "--image", image, "--mask", str(tmp_path / "bad_mask.png"),
               "--out", str(tmp_path / "o.png"))
    assert run.returncode == 1 and "bad_mask.png" in run.stderr
    assert "Traceback" not in run.stderr


def test_images_over_the_pixel_limit_are_refused(inpainter, monkeypatch):
    """Above MAX_PIXELS the inpainter refuses, naming the limit, instead of running out of RAM."""
    from pconv_jax import inpaint

    monkeypatch.setattr(inpaint, "MAX_PIXELS", 30 * 30)
    with pytest.raises(inpaint.InpaintError, match="limit of 900 pixels"):
        inpainter(np.zeros((31, 31, 3), np.uint8), np.ones((31, 31), np.float32))


def test_evaluate_rejects_unknown_methods_and_a_missing_model():
    from pconv_jax.evaluate import evaluate

    with pytest.raises(ValueError, match="unknown evaluation methods \\['bogus'\\]"):
        evaluate(None, [], [], methods=("bogus",))
    with pytest.raises(ValueError, match="'model' needs an inpainter"):
        evaluate(None, [], [], methods=("model",))


def test_example_rows_are_one_pair_per_bucket_alternating_border_classes():
    """The grid shows every hole-ratio bucket once, the first pair of the class whose turn
    it is (inner, border, inner, ...), or of the only class a bucket has."""
    from pconv_jax.evaluate import evaluate

    rng = np.random.default_rng(0)
    entries = []
    for bucket, borders in (("a", (False, True)), ("b", (False, True)), ("c", (True,)),
                            ("d", (False, True))):
        for border in borders:
            for _ in range(3):
                entries.append({"mask": (rng.random((16, 16)) > 0.2).astype(np.float32),
                                "bucket": bucket, "border": border})
    images = [rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(5)]
    _, examples = evaluate(None, images, entries, batch_size=4, progress=False,
                           methods=("mean_fill",))
    first = {}  # (bucket, border) -> index of its first entry
    for i, e in enumerate(entries):
        first.setdefault((e["bucket"], e["border"]), i)
    wanted = [first[("a", False)], first[("b", True)], first[("c", True)],
              first[("d", True)]]
    assert len(examples) == 4
    for row, index in zip(examples, wanted, strict=True):
        np.testing.assert_array_equal(row[1], entries[index]["mask"])


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    """A 16-bit greyscale PNG reads as round(v / 257) on all three channels (65535 -> 255)."""
    from pconv_jax.inpaint import read_image

    values = np.random.default_rng(0).integers(0, 65536, (9, 11), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    image = read_image(str(tmp_path / "grey16.png"))
    expected = np.round(values / 257).astype(np.uint8)
    assert image.shape == (9, 11, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], expected)


def test_exif_orientation_is_applied(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 reads as displayed (rotated 90° cw)."""
    from pconv_jax.inpaint import read_image

    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:, :10] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    shown = read_image(str(tmp_path / "phone.jpg"))
    assert shown.shape == (30, 20, 3)
    expected = np.rot90(stored, k=-1)  # clockwise: the left band ends on top
    assert np.abs(shown.astype(int) - expected.astype(int)).max() < 40


def test_inpainter_refuses_values_it_would_misread(inpainter):
    """Float images outside [0,1], other integer dtypes, NaN and all-hole masks are errors;
    a (H,W,1) mask for one image is the model's own layout and is accepted."""
    from pconv_jax.inpaint import InpaintError

    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.ones((32, 32), np.float32)
    mask[8:20, 8:20] = 0
    cases = [(image.astype(np.float32), mask, r"\[0, 1\]"),
             (image.astype(np.int64), mask, "uint8"),
             (np.full((32, 32, 3), np.nan, np.float32), mask, "NaN"),
             (image, np.zeros_like(mask), "whole image as hole"),
             (image, np.ones((32, 32, 3)), "does not fit")]
    for img, m, message in cases:
        with pytest.raises(InpaintError, match=message):
            inpainter(img, m)
    out = inpainter(image, mask[..., None])
    np.testing.assert_array_equal(out[mask > 0], image[mask > 0])


def test_folder_jobs_pair_by_relative_path_and_protect_the_inputs(tmp_path):
    """Same file names in two subfolders get their own masks and outputs; two images sharing
    a name stem, and a mask folder that is (or is inside) the image folder, are refused (an
    output inside the inputs: tests/test_paths.py)."""
    from pconv_jax.inpaint import InpaintError, _folder_jobs

    for sub in ("a", "b"):
        for root in ("images", "masks"):
            (tmp_path / root / sub).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / root / sub / "x.png")
    jobs = _folder_jobs(str(tmp_path / "images"), str(tmp_path / "masks"), str(tmp_path / "o"))
    assert jobs == [(str(tmp_path / "images" / s / "x.png"), str(tmp_path / "masks" / s / "x.png"),
                     str(tmp_path / "o" / s / "x.png")) for s in ("a", "b")]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a" / "x.jpg")
    with pytest.raises(InpaintError, match="share one output"):
        _folder_jobs(str(tmp_path / "images"), str(tmp_path / "masks"), str(tmp_path / "o"))
    for masks in ("images", "images/a", "images/../images"):  # photos taken as their masks
        with pytest.raises(InpaintError, match="every photo would be taken as a mask"):
            _folder_jobs(str(tmp_path / "images"), str(tmp_path / masks), str(tmp_path / "o"))


@pytest.mark.parametrize("out", ["filled.jpg", "filled", "folder/"])
def test_lossy_or_unnamed_outputs_are_refused(out):
    """JPEG would change the valid pixels; no extension or a folder names no format."""
    from pconv_jax.inpaint import InpaintError, check_output_path

    with pytest.raises(InpaintError, match="lossless"):
        check_output_path(out)
    check_output_path("filled.png")
    check_output_path("filled.webp")


def test_eval_masks_bucket_by_pixels_not_by_label(tmp_path):
    """Index labels are checked against the mask's pixels: a mislabelled mask counts in the
    bucket its hole ratio gives, one outside (0.01, 0.6] is left out, both with a warning;
    an index without 'masks' is an error naming it."""
    from pconv_jax import masks
    from pconv_jax.evaluate import eval_masks

    hole = np.zeros((40, 40), np.uint8)
    hole[:, :8] = 255  # 20 % hole on the left border: bucket (0.1,0.2], border
    Image.fromarray(hole).save(tmp_path / "a.png")
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "full.png")  # 100 % hole
    index = {"hole_is_white": True, "masks": [
        {"file": "a.png", "bucket": "(0.5,0.6]", "border": False},
        {"file": "full.png", "bucket": "0.1-0.2", "border": True}]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="1 mask.* left out; 1 mask"):
        entries = eval_masks(str(tmp_path), 40, 1, 0)
    ratio = float(np.mean(hole > 0))
    expected = next(masks.bucket_name(b) for b in masks.BUCKETS if b[0] < ratio <= b[1])
    assert [(e["bucket"], e["border"]) for e in entries] == [(expected, True)]
    (tmp_path / "index.json").write_text(json.dumps({"files": []}))
    with pytest.raises(ValueError, match="not a make-eval-set index"):
        eval_masks(str(tmp_path), 40, 1, 0)


def test_eval_masks_of_mixed_sizes_name_the_file(tmp_path):
    """An evaluation mask folder with one mask of another size: a ValueError naming that file
    and both sizes (it was NumPy's 'all input arrays must have the same shape')."""
    from pconv_jax import evaluate, masks

    masks.make_eval_set(str(tmp_path), per_bucket=1, size=32, seed=0)
    odd = sorted(p for p in os.listdir(tmp_path) if p.endswith(".png"))[3]
    hole = np.zeros((40, 40), np.uint8)
    hole[5:20, 5:20] = 255
    Image.fromarray(hole).save(tmp_path / odd)
    index = json.loads((tmp_path / "index.json").read_text())  # the manifest agrees with it
    for entry in index["masks"]:
        if entry["file"] == odd:
            entry["sha256"] = hashlib.sha256((tmp_path / odd).read_bytes()).hexdigest()
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"{odd} is 40x40 but the masks before it .* are 32x32"):
        evaluate.eval_masks(str(tmp_path), 32, 1, 0)


@pytest.mark.parametrize("key,value", [("leaky_slope", 0.3), ("encoder_widths", [4, 8, 32])])
def test_config_json_disagreeing_with_the_checkpoint_is_one_line(run_dir, tmp_path, key, value):
    """A run whose config.json says another model setting than its checkpoint recorded: the
    CLI ends in one line naming the setting (before, leaky_slope was used silently and a
    width gave ~200 lines of Orbax errors)."""
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["model"][key] = value
    (copy / "config.json").write_text(json.dumps(config))
    _save(tmp_path / "img.png", np.zeros((32, 32, 3), np.uint8))
    hole = np.zeros((32, 32), np.uint8)
    hole[4:12, 4:12] = 255
    _save(tmp_path / "mask.png", hole)
    run = subprocess.run([sys.executable, "-m", "pconv_jax.inpaint", "--workdir", str(copy),
                          "--image", str(tmp_path / "img.png"), "--mask",
                          str(tmp_path / "mask.png"), "--out", str(tmp_path / "out.png")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and f"model.{key} there is" in run.stderr, run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr[-2000:]
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_fallback_to_an_older_checkpoint_is_one_line_naming_the_step(run_dir, tmp_path):
    """With the newest checkpoint's arrays damaged, inpaint uses the one before and says so
    in one line naming both steps (it never said which step it used, and its own warning ran
    to ~130 lines of TensorStore detail, followed by up to ~2,000 lines of Orbax's asyncio
    tracebacks from the failed read, and in one run of ten a TensorStore thread's 'Event loop
    is closed' traceback printed while the read was failing). Our line is all there is."""
    import shutil

    workdir = shutil.copytree(run_dir, tmp_path / "run")  # checkpoints of steps 1 and 2
    for chunk in (workdir / "checkpoints" / "2" / "state").rglob("d/*"):
        chunk.write_bytes(chunk.read_bytes()[:20])  # cut every array chunk short
    _save(tmp_path / "img.png", np.zeros((32, 32, 3), np.uint8))
    hole = np.zeros((32, 32), np.uint8)
    hole[4:12, 4:12] = 255
    _save(tmp_path / "mask.png", hole)
    run = _cli("--workdir", str(workdir), "--image", str(tmp_path / "img.png"), "--mask",
               str(tmp_path / "mask.png"), "--out", str(tmp_path / "out.png"))
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    ours = [line for line in lines if line.startswith("warning: ")]
    assert len(ours) == 1 and lines == ours, run.stderr[-3000:]
    assert ours[0].startswith("warning: using the checkpoint of step 1: checkpoint 2 in ")
    assert len(ours[0]) < 400  # the first line of Orbax's error, cut, not its hundred lines
    assert (tmp_path / "out.png").exists()


def test_folder_mode_writes_nothing_when_a_file_fails_midway(run_dir, tmp_path):
    """Three images, the second broken after its header: inpaint stops naming it, and the
    output folder holds nothing (it held the first result before), no staging folder left."""
    rng = np.random.default_rng(6)
    for folder in ("imgs", "masks"):
        (tmp_path / folder).mkdir()
    hole = np.zeros((32, 32), np.uint8)
    hole[8:16, 8:16] = 255
    for name in ("a", "b", "c"):
        _save(tmp_path / "imgs" / f"{name}.png", rng.integers(0, 256, (32, 32, 3), np.uint8))
        _save(tmp_path / "masks" / f"{name}.png", hole)
    raw = (tmp_path / "imgs" / "b.png").read_bytes()
    (tmp_path / "imgs" / "b.png").write_bytes(raw[:len(raw) // 2])  # header intact, data cut
    run = _cli("--workdir", run_dir, "--images", str(tmp_path / "imgs"), "--masks",
               str(tmp_path / "masks"), "--out", str(tmp_path / "out"))
    assert run.returncode == 1 and "b.png" in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".pconv-inpaint-")]


def test_evaluate_reads_every_input_before_the_model(tmp_path, monkeypatch, capsys):
    """A bad --masks, --images or --out is reported before the model loads (it loaded first,
    ~9 s, and then failed): exit 1, one line naming the input, the loader never called,
    well under a second each."""
    import time

    from pconv_jax import evaluate, inpaint

    def loader_reached(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(inpaint.Inpainter, "from_workdir", loader_reached)
    (tmp_path / "no_index").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "a.png").write_bytes(b"")
    cases = {
        "make-eval-set": ["--images", "samples", "--masks", str(tmp_path / "no_index")],
        "no readable image": ["--images", str(tmp_path / "empty")],
        str(tmp_path / "zero"): ["--images", str(tmp_path / "zero")],
        "cannot create --out": ["--images", "samples", "--out", "/proc/pconv_out"],
    }
    for expected, args in cases.items():
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "o")]
        start = time.perf_counter()
        code = evaluate.main(["--workdir", str(tmp_path / "run"), *args])
        took = time.perf_counter() - start
        err = capsys.readouterr().err.strip()
        assert code == 1, (args, err)
        assert expected in err and "Traceback" not in err, (args, err)
        assert took < 1.0, (args, took)


def test_inference_never_loads_the_trainer():
    """Importing inpaint (and what it imports) leaves pconv_jax.train and Grain unloaded:
    inference does not depend on the trainer (it imported it for unet_config)."""
    code = ("import sys, pconv_jax.inpaint; "
            "print(sorted(m for m in ('pconv_jax.train', 'grain') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]", run.stdout


@pytest.mark.parametrize("strategy", ["full", "crop", "resize", "auto"])
def test_every_strategy_keeps_valid_pixels_through_the_network(inpainter, strategy):
    """The tiny run's network (trained at 32 px) on an odd-sized 301 x 403 photo with holes at
    a corner, an edge and inside: each strategy returns the photo's shape and dtype with
    every valid pixel bit-identical; fill_photo names the strategy that ran (auto: crop)."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (301, 403, 3), dtype=np.uint8)
    valid = np.ones((301, 403), np.float32)
    valid[0:6, 0:9] = valid[150:160, 200:204] = valid[294:301, 100:115] = 0
    out = inpainter(image, valid, strategy=strategy)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[valid > 0], image[valid > 0])
    _, the_plan = inpainter.fill_photo(image, valid, strategy=strategy)
    assert the_plan.strategy == ("crop" if strategy == "auto" else strategy)


def test_photo_limits_are_read_from_the_header(tmp_path, capsys):
    """A photo over 100 megapixels is refused from its header, naming the limit; `--strategy
    full` on a photo over the network's per-image limit is refused naming the strategies
    that take it; neither decodes a pixel nor loads a model (the run folder is not a run)."""
    from tests.app_util import black_png

    black_png(tmp_path / "big.png", 10100, 10000, "RGB")  # 101 MP of black, ~0.3 MB
    black_png(tmp_path / "mask.png", 10100, 10000, "L")
    code, _, stderr = _main(capsys, "--workdir", str(tmp_path), "--image",
                            str(tmp_path / "big.png"), "--mask", str(tmp_path / "mask.png"),
                            "--out", str(tmp_path / "o.png"))
    assert code == 1 and "exceeds the limit of 100000000 pixels" in stderr
    black_png(tmp_path / "wide.png", 5000, 4000, "RGB")
    black_png(tmp_path / "wide_mask.png", 5000, 4000, "L")
    code, _, stderr = _main(capsys, "--workdir", str(tmp_path), "--image",
                            str(tmp_path / "wide.png"), "--mask", str(tmp_path / "wide_mask.png"),
                            "--out", str(tmp_path / "o.png"), "--strategy", "full")
    assert code == 1 and "--strategy full: use auto, crop or resize" in stderr


def test_inpainter_weights_equal_a_restore_into_an_initialised_model(run_dir, inpainter):
    """from_workdir builds only the model's structure (nnx.eval_shape) before restoring:
    every weight equals the checkpoint restored into a fully initialised model, and every
    leaf is a device array (not a host copy sent again on each call)."""
    import jax
    from flax import nnx

    from pconv_jax import checkpoint as ckpt
    from pconv_jax.model import PConvUNet

    eager = PConvUNet(inpainter.model.config, rngs=nnx.Rngs(1))
    ckpt.load_model(run_dir, eager)
    ours, theirs = nnx.state(inpainter.model), nnx.state(eager)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert isinstance(a, jax.Array)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _params(model):
    """{path: array} of a model's parameters only."""
    import jax
    from flax import nnx

    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def test_moving_average_follows_its_formula_and_is_what_inference_loads(run_dir, tmp_path):
    """run_dir keeps optim.ema_decay=0.9 and saves steps 1 and 2: the weights inference loads
    are d2 (d1 p0 + (1 - d1) p1) + (1 - d2) p2 with d_t = min(0.9, (1+t)/(10+t)) over the raw
    weights p_t of steps 0 (initial), 1 and 2 (read back raw); BatchNorm statistics are the
    raw ones. Resuming the run without the average is refused by name."""
    import shutil

    from pconv_jax import checkpoint as ckpt
    from tests.train_util import model_arrays, tiny_run_config

    p0 = _params(train.create_train_state(tiny_run_config()).model)  # same seed: the start
    p1, p2 = (_params(Inpainter.from_workdir(run_dir, s, average=False).model) for s in (1, 2))
    averaged = Inpainter.from_workdir(run_dir, 2)
    raw = Inpainter.from_workdir(run_dir, 2, average=False)
    assert averaged.weights == "average (ema_decay 0.9)" and raw.weights == "raw"
    d1, d2 = min(0.9, 2 / 11), min(0.9, 3 / 12)
    got = _params(averaged.model)
    changed = 0
    for key, start in p0.items():
        want = d2 * (d1 * start + (1 - d1) * p1[key]) + (1 - d2) * p2[key]
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-7, err_msg=key)
        changed += not np.allclose(want, p2[key])
    assert changed > len(p0) // 2  # the average differs from the raw weights
    stats = {k: v for k, v in model_arrays(averaged.model).items() if k not in got}
    raw_stats = model_arrays(raw.model)
    assert stats and all(np.array_equal(v, raw_stats[k]) for k, v in stats.items())
    copy = shutil.copytree(run_dir, tmp_path / "run")  # resumed without the average: refused
    with pytest.raises(ckpt.ConfigMismatchError, match="optim.ema_decay there is 0.9, here 0"):
        train.train_and_evaluate(tiny_config(steps=3), str(copy))


def test_resume_is_bitwise_with_the_moving_average(run_dir, tmp_path):
    """run_dir's step 2 deleted and the run resumed from step 1: the step-2 parameters,
    statistics and moving average equal the uninterrupted run's, bitwise."""
    import shutil

    from tests.train_util import model_arrays, tiny_run_config

    copy = shutil.copytree(run_dir, tmp_path / "run")
    shutil.rmtree(copy / "checkpoints" / "2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_and_evaluate(tiny_run_config(), str(copy))
    for average in (False, True):
        want = model_arrays(Inpainter.from_workdir(run_dir, 2, average=average).model)
        got = model_arrays(Inpainter.from_workdir(str(copy), 2, average=average).model)
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
