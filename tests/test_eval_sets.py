"""Evaluation mask sets with manifests (paper and LaMa protocols) and evaluate on them."""

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from pconv_jax import evaluate, masks


def _bin_of(ratio: float) -> str:
    """The 10 % area bin of a hole ratio, (k/10, (k+1)/10], the first also holding 0."""
    k = max(int(np.ceil(ratio * 10 - 1e-9)) - 1, 0)
    return f"{10 * k}-{10 * k + 10}%"


def test_lama_set_manifest_records_hashes_bins_and_settings(tmp_path):
    """A lama-medium set: every file's sha256 is the hash of its bytes, its pixel hash the hash
    of its hole bitmap, the set hash the hash of the (file, pixel hash) lines; each mask's bin
    is the bin of its own hole ratio; the settings say they were scaled from 256 px (64 px
    asked); the same arguments write the same bytes again and another seed another set."""
    index = masks.make_eval_set(str(tmp_path / "a"), None, 64, 3, protocol="lama-medium",
                                count=4)
    on_disk = json.loads((tmp_path / "a" / "index.json").read_text())
    assert on_disk == index and index["protocol"] == "lama-medium" and index["seed"] == 3
    assert index["settings"]["scaled_from"] == 256 and index["settings"]["kind"] == "medium"
    lines = ""
    for entry in index["masks"]:
        raw = (tmp_path / "a" / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
        hole = (np.asarray(Image.open(tmp_path / "a" / entry["file"])) > 127).astype(np.uint8)
        assert hole.shape == (64, 64)
        assert entry["pixels_sha256"] == hashlib.sha256(b"64x64:" + hole.tobytes()).hexdigest()
        assert entry["bin"] == _bin_of(hole.mean()) and 0 < hole.mean() <= 0.5
        lines += f"{entry['file']} {entry['pixels_sha256']}\n"
    assert index["set_sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    again = masks.make_eval_set(str(tmp_path / "b"), None, 64, 3, protocol="lama-medium",
                                count=4)
    for entry in again["masks"]:
        assert (tmp_path / "b" / entry["file"]).read_bytes() == \
            (tmp_path / "a" / entry["file"]).read_bytes()
    other = masks.make_eval_set(str(tmp_path / "c"), None, 64, 4, protocol="lama-medium",
                                count=4)
    assert other["set_sha256"] != index["set_sha256"]


@pytest.mark.parametrize("argv,message", [
    (["--count", "5"], "--count is for the lama-* protocols"),
    (["--protocol", "lama-thin", "--per-bucket", "2"], "--per-bucket is for --protocol paper"),
    (["--protocol", "lama-thin", "--size", "16"], "--size must be between 32 and 4096, got 16"),
    (["--protocol", "lama-thick", "--count", "0"], "--count must be between 1 and 1000000, got 0"),
    (["--protocol", "lama-wide"], "invalid choice: 'lama-wide'"),
])
def test_make_eval_set_refuses_flags_of_the_other_protocol(tmp_path, capsys, argv, message):
    """Flags that do not belong to the protocol, or out of range: exit 2 naming them, nothing
    written."""
    with pytest.raises(SystemExit) as exited:
        masks.main(["make-eval-set", "--out", str(tmp_path / "m"), *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_make_eval_set_says_when_lama_settings_are_scaled(tmp_path, capsys):
    """At a size LaMa does not define, the CLI writes the set and says it is not
    LaMa-comparable; at 256 it says nothing of the kind."""
    assert masks.main(["make-eval-set", "--protocol", "lama-thin", "--size", "48", "--count",
                       "2", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "2 lama-thin masks at 48 px" in out and "not LaMa-comparable" in out
    assert len(json.loads((tmp_path / "s" / "index.json").read_text())["masks"]) == 2
    assert masks.main(["make-eval-set", "--protocol", "lama-thin", "--size", "256", "--count",
                       "1", "--out", str(tmp_path / "t")]) == 0
    assert "not LaMa-comparable" not in capsys.readouterr().out


@pytest.mark.parametrize("damage,message", [
    ("change", "does not match its sha256"), ("remove", "is listed in"),
])
def test_a_changed_or_missing_mask_file_is_one_line_before_the_model(tmp_path, capsys, damage,
                                                                      message):
    """evaluate on a set whose file was changed (one pixel) or removed: exit 1, one line naming
    the file, before any model is loaded (the workdir does not exist)."""
    folder = tmp_path / "set"
    index = masks.make_eval_set(str(folder), 1, 32, 0)
    name = index["masks"][5]["file"]
    if damage == "change":
        hole = np.asarray(Image.open(folder / name)).copy()
        hole[0, 0] = 255 - hole[0, 0]
        Image.fromarray(hole).save(folder / name)
    else:
        os.remove(folder / name)
    code = evaluate.main(["--workdir", str(tmp_path / "no_run"), "--images", "samples",
                          "--masks", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and name in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_lama_pairs_resize_the_short_side_then_take_the_centre():
    """A LaMa pair's ground truth is the image resized (PIL bicubic) to a short side of the
    mask size, then its central square; a paper pair keeps the crop-then-resize rule."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    entry = {"mask": np.ones((40, 40), np.float32), "bucket": "0-10%", "border": None,
             "lama": True}
    gts, _ = evaluate.eval_pairs([image], [entry], 0, 1)
    resized = np.asarray(Image.fromarray(image).resize((67, 40), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(gts[0], resized[:, 13:53])
    paper, _ = evaluate.eval_pairs([image], [entry | {"lama": False}], 0, 1)
    crop = np.asarray(Image.fromarray(image[:, 30:120]).resize((40, 40),
                                                               Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(paper[0], crop)


def test_evaluate_on_a_lama_set_bins_pairs_and_reuses_cached_fills(tmp_path):
    """evaluate on a LaMa set: one row per area bin holding pairs, counts from the pixels, then
    'all' whose means are the count-weighted bin means; a second evaluation on the same cache
    computes no fill and gives identical rows."""
    masks.make_eval_set(str(tmp_path / "set"), None, 32, 1, protocol="lama-thick", count=6)
    mask_set = evaluate.load_mask_set(str(tmp_path / "set"))
    assert mask_set.verified and mask_set.protocol == "lama-thick"
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    kwargs = {"methods": ("patchmatch", "mean_fill"), "workers": 0, "progress": False,
              "cache_dir": str(tmp_path / "cache")}
    first, examples = evaluate.evaluate(None, images, mask_set.entries, 4, **kwargs)
    want = {}
    for entry in mask_set.entries:
        name = _bin_of(float(np.mean(entry["mask"] == 0)))
        want[name] = want.get(name, 0) + 1
    rows = first["mean_fill"]
    assert {r["bin"]: r["count"] for r in rows[:-1]} == want and len(examples) == len(want)
    assert rows[-1]["bin"] == "all" and rows[-1]["count"] == 6
    for key in ("l1", "psnr", "ssim"):
        assert rows[-1][key] == pytest.approx(
            sum(r[key] * r["count"] for r in rows[:-1]) / 6, rel=1e-6)
    assert first["baseline_fills"]["computed"] == 12
    second, _ = evaluate.evaluate(None, images, mask_set.entries, 4, **kwargs)
    assert second["baseline_fills"]["computed"] == 0
    assert second["baseline_fills"]["from_cache"] == 12
    assert second["patchmatch"] == first["patchmatch"]
