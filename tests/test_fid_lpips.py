"""pconv_jax.fid and pconv_jax.lpips against NumPy references written from pytorch-fid's and
the lpips package's definitions (tests/reference.py), with random weights in their layouts."""

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from pconv_jax import fid, lpips, vgg
from pconv_jax.vgg import WeightFileError
from tests import reference


@pytest.fixture(scope="module")
def inception_weights():
    return fid.random_weights(seed=3)


@pytest.mark.slow
def test_inception_features_equal_the_reference(inception_weights, tmp_path):
    """Odd-sized images (resized to 299 inside, as pytorch-fid does): pool3 features of the
    JAX network, loaded from a .safetensors file, equal the float64 reference within 1e-4
    relative to the features' scale."""
    path = tmp_path / "inception.safetensors"
    save_file(inception_weights, str(path))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 75, 110, 3)).astype(np.float32)
    ours = fid.load_inception(path, batch_size=2).features(images)
    ref = reference.fid_inception_pool3(images, inception_weights)
    assert ours.shape == (2, 2048)
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.std(ref) > 0  # the random network does not collapse to a constant


def test_bilinear_resize_is_torchs():
    """Up- and down-sizing as torch's interpolate(bilinear, align_corners=False), no
    antialias (the reference applies its formula pixel by pixel, in float64; sample
    positions computed in float32, as torch and XLA both do, move values by up to ~6e-5
    when shrinking by 2; a wrong formula, e.g. antialiasing or corner alignment, moves
    them by 1e-2 or more)."""
    rng = np.random.default_rng(1)
    for shape in ((1, 17, 23, 2), (1, 400, 310, 1)):
        x = rng.uniform(size=shape).astype(np.float32)
        ours = np.asarray(fid.resize_bilinear(x, 299))
        ref = reference.torch_bilinear(x.transpose(0, 3, 1, 2).astype(np.float64), 299)
        np.testing.assert_allclose(ours, ref.transpose(0, 2, 3, 1), atol=1e-4)


def test_frechet_distance_of_known_gaussians_is_the_closed_form():
    """Commuting (diagonal) covariances: ||mu1-mu2||^2 + sum (sqrt(v1) - sqrt(v2))^2."""
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = reference.frechet_closed_form_1d(mu1, v1, mu2, v2).sum()
    ours = fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert ours == pytest.approx(expected, rel=1e-9)


def _eigen_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID with Tr sqrt(S1^1/2 S2 S1^1/2) by eigendecomposition (the symmetric form)."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2)
            - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_fid_equals_the_eigen_decomposition_reference():
    """Full covariances: FID through sqrtm equals the symmetric form
    Tr sqrt(S1^1/2 S2 S1^1/2) computed by eigen-decomposition, within 1e-4 relative."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(size=(70, 12)) @ rng.normal(size=(12, 12)) + 0.5
    expected = _eigen_fid(a, b)
    assert fid.fid(a, b) == pytest.approx(expected, rel=1e-4)


def test_fid_equals_pytorch_fids_sqrtm_route():
    """pytorch-fid computes Tr sqrtm(S1 S2) with scipy.linalg.sqrtm of the product; our
    eigendecomposition route gives the same FID within 1e-7 relative (64 dims, 300 samples)."""
    from scipy import linalg

    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64))
    b = a + rng.normal(0, 0.5, a.shape) + 0.2
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2)
                - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real)
    assert fid.fid(a, b) == pytest.approx(expected, rel=1e-7)


def test_fid_of_fewer_samples_than_dimensions_equals_the_eigen_reference():
    """Fewer features than dimensions (30 and 25 in 64 dims: both covariances singular): the
    low-rank route (singular values of A B^T) equals Tr sqrt(S1^1/2 S2 S1^1/2) by
    eigendecomposition within 1e-6 relative."""
    rng = np.random.default_rng(6)
    a = rng.normal(size=(30, 64)) @ rng.normal(size=(64, 64))
    b = rng.normal(size=(25, 64)) @ rng.normal(size=(64, 64)) + 0.3
    expected = _eigen_fid(a, b)
    assert fid.fid(a, b) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_singular_sets_stay_finite():
    """FID(x, x) ~ 0; with fewer samples than dimensions (singular covariances) the value is
    finite and not negative beyond rounding."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 16))
    assert abs(fid.fid(x, x)) < 1e-6 * np.trace(np.cov(x, rowvar=False))
    small_a, small_b = rng.normal(size=(5, 16)), rng.normal(size=(6, 16)) + 1
    value = fid.fid(small_a, small_b)
    assert np.isfinite(value) and value > -1e-6
    with pytest.raises(ValueError, match="at least 2"):
        fid.fid(x[:1], x)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """A random 13-convolution VGG-16 and random heads, saved in the reference layouts."""
    folder = tmp_path_factory.mktemp("lpips")
    weights, heads = vgg.random_weights(5, all_convs=True), lpips.random_heads(6)
    save_file(weights, str(folder / "vgg_all.safetensors"))
    np.savez(folder / "heads.npz", **heads)
    return folder, weights, heads


def test_lpips_equals_the_reference(lpips_files):
    """LPIPS of random pairs equals the float64 reference within 1e-5 relative."""
    folder, weights, heads = lpips_files
    metric = lpips.load_lpips(folder / "vgg_all.safetensors", folder / "heads.npz",
                              batch_size=2)
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 1, (3, 36, 44, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    ours = metric(a, b)
    ref = reference.lpips_vgg(a, b, weights, heads)
    assert ours.shape == (3,)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_lpips_is_zero_on_identical_images_and_symmetric(lpips_files):
    """d(a, a) = 0 exactly; d(a, b) = d(b, a); uint8 input reads as /255."""
    folder, _, _ = lpips_files
    metric = lpips.load_lpips(folder / "vgg_all.safetensors", folder / "heads.npz")
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (2, 32, 32, 3), np.uint8)
    b = rng.integers(0, 256, (2, 32, 32, 3), np.uint8)
    np.testing.assert_array_equal(metric(a, a), 0)
    np.testing.assert_allclose(metric(a, b), metric(b, a), rtol=1e-6)
    np.testing.assert_allclose(metric(a, b), metric(a / 255, b / 255), rtol=1e-6)


def test_bad_weight_files_name_the_problem(lpips_files, inception_weights, tmp_path):
    """A missing key or a wrong shape is an error naming the key, for each file; a loss-only
    (7-convolution) VGG file is refused for LPIPS with the conversion that fixes it."""
    folder, weights, heads = lpips_files
    broken = dict(inception_weights)
    del broken["Mixed_6c.branch7x7_2.bn.running_var"]
    save_file(broken, str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightFileError, match="Mixed_6c.branch7x7_2.bn.running_var"):
        fid.load_inception(tmp_path / "missing.safetensors")
    broken = dict(inception_weights)
    broken["Conv2d_4a_3x3.conv.weight"] = broken["Conv2d_4a_3x3.conv.weight"][:, :3]
    save_file(broken, str(tmp_path / "shape.safetensors"))
    with pytest.raises(WeightFileError, match=r"Conv2d_4a_3x3.conv.weight.*\(192, 80, 3, 3\)"):
        fid.load_inception(tmp_path / "shape.safetensors")
    np.savez(tmp_path / "heads_bad.npz", **{**heads, "lin3.model.1.weight": np.zeros((1, 3))})
    with pytest.raises(WeightFileError, match="lin3.model.1.weight"):
        lpips.load_lpips(folder / "vgg_all.safetensors", tmp_path / "heads_bad.npz")
    save_file(vgg.random_weights(0), str(tmp_path / "vgg7.safetensors"))
    with pytest.raises(WeightFileError, match=r"features.17.weight.*convert --all"):
        lpips.load_lpips(tmp_path / "vgg7.safetensors", folder / "heads.npz")
    with pytest.raises(FileNotFoundError, match="FID Inception weight file not found"):
        fid.load_inception(tmp_path / "nothing.pth")


def test_converters_keep_exactly_the_needed_tensors(lpips_files, inception_weights, tmp_path):
    """The three converters write .safetensors holding the needed keys, bit for bit."""
    from safetensors.numpy import load_file

    folder, weights, heads = lpips_files
    extra = {**inception_weights, "fc.weight": np.zeros((4, 2048), np.float32)}
    np.savez(tmp_path / "inception.npz", **extra)
    assert fid.main(["convert", str(tmp_path / "inception.npz"),
                     str(tmp_path / "inception.safetensors")]) == 0
    out = load_file(str(tmp_path / "inception.safetensors"))
    assert set(out) == set(fid.expected_shapes())
    assert all(np.array_equal(out[k], inception_weights[k]) for k in out)
    assert lpips.main(["convert", str(folder / "heads.npz"),
                       str(tmp_path / "heads.safetensors")]) == 0
    out = load_file(str(tmp_path / "heads.safetensors"))
    assert set(out) == set(heads) and all(np.array_equal(out[k], heads[k]) for k in out)
    assert vgg.main(["convert", "--all", str(folder / "vgg_all.safetensors"),
                     str(tmp_path / "vgg13.safetensors")]) == 0
    assert len(load_file(str(tmp_path / "vgg13.safetensors"))) == 26


@pytest.mark.parametrize("batch_size", [8, 1])
def test_lpips_against_several_candidates_equals_pairwise(lpips_files, batch_size):
    """The evaluation's form (one target, K candidates, target features once) gives the same
    (K,N) values as K pairwise calls, also when N targets do not fill whole VGG-16 calls of
    at most max(batch_size, K+1) images (padded chunks)."""
    folder, weights, heads = lpips_files
    metric = lpips.load_lpips(folder / "vgg_all.safetensors", folder / "heads.npz",
                              batch_size=batch_size)
    rng = np.random.default_rng(9)
    target = rng.integers(0, 256, (3, 32, 40, 3), np.uint8)
    candidates = [rng.integers(0, 256, target.shape, np.uint8) for _ in range(2)]
    expected = np.stack([reference.lpips_vgg(c / 255, target / 255, weights, heads)
                         for c in candidates])
    np.testing.assert_allclose(metric.against(target, candidates), expected, rtol=1e-5)


@pytest.mark.parametrize("case", ["15 px", "mixed dtypes"])
def test_lpips_refuses_what_it_cannot_measure(lpips_files, case):
    """Below 16 px relu5_3 is empty (the mean would be NaN), and uint8 beside floats would be
    scaled two ways: both are errors naming the problem, in both call forms."""
    folder, _, _ = lpips_files
    metric = lpips.load_lpips(folder / "vgg_all.safetensors", folder / "heads.npz")
    size = 15 if case == "15 px" else 16
    a = np.zeros((1, size, 20, 3), np.uint8)
    b = a.astype(np.float32) if case == "mixed dtypes" else a
    match = "at least 16x16" if case == "15 px" else "all be uint8 or all be floats"
    with pytest.raises(ValueError, match=match):
        metric(a, b)
    with pytest.raises(ValueError, match=match):
        metric.against(a, [b])
    with pytest.raises(ValueError, match="candidates must have the target's shape"):
        metric.against(np.zeros((1, 16, 20, 3)), [np.zeros((1, 16, 24, 3))])


def test_evaluate_says_what_fid_and_lpips_cannot_do_before_working(lpips_files):
    """FID of one pair and LPIPS of 8 px masks are refused before any pair is inpainted."""
    from pconv_jax import evaluate

    folder, _, _ = lpips_files
    metric = lpips.load_lpips(folder / "vgg_all.safetensors", folder / "heads.npz")

    class Unused:
        def __call__(self, *args):
            raise AssertionError("work started")

        features = __call__

    def entries(count, size):
        return [{"mask": np.ones((size, size), np.float32), "bucket": "(0.01,0.1]",
                 "border": False}] * count

    photos = [np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(ValueError, match="FID needs at least 2 image-mask pairs, got 1"):
        evaluate.evaluate(Unused(), photos, entries(1, 32), inception=Unused(), progress=False)
    with pytest.raises(ValueError, match="LPIPS needs images of at least 16 px"):
        evaluate.evaluate(Unused(), photos, entries(4, 8), lpips_metric=metric,
                          progress=False)


def test_fid_per_bucket_only_from_500_pairs():
    """A bucket of 500 pairs gets the FID of its own pairs, one of 20 gets None (not noise
    reported as a number), and 'all' is over every pair."""
    from pconv_jax.evaluate import _fids

    rng = np.random.default_rng(10)
    real = rng.normal(size=(520, 6))
    method = real + rng.normal(0, 0.3, real.shape)
    buckets = ["(0.01,0.1]"] * 500 + ["(0.5,0.6]"] * 20
    out = _fids({"real": real, "model": method}, buckets, ["model"])["model"]
    assert out["all"] == pytest.approx(fid.fid(real, method))
    assert out["(0.01,0.1]"] == pytest.approx(fid.fid(real[:500], method[:500]))
    assert out["(0.5,0.6]"] is None and "(0.1,0.2]" not in out


def _markdown_rows(text: str) -> list[list[str]]:
    """The cells of every table row in Markdown `text` (header and separator rows included)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


@pytest.mark.slow
def test_compare_writes_both_tables_with_fid_lpips_and_patchmatch(run_dir, lpips_files,
                                                                    inception_weights, tmp_path):
    """`python -m pconv_jax.compare` end to end on a tiny run (random Inception and LPIPS
    weights): LaMa's layout has a row for the model, PatchMatch, Telea and Navier-Stokes with
    a finite FID and a positive LPIPS per mask kind, each the value of that kind's own
    metrics.json; the paper's layout has, per metric, one row per method and one column per
    bucket x border class, each cell that group's value in the paper set's metrics.json. The
    per-set evaluate outputs carry LPIPS on every row and FID per method; the LaMa sets' rows
    are 10 % area bins (each pair in the bin its pixels give) and 'all'. evaluate without
    the flags writes no LPIPS or FID column."""
    import json
    import subprocess
    import sys

    from pconv_jax import evaluate, masks

    folder, _, _ = lpips_files
    save_file(inception_weights, str(tmp_path / "inception.safetensors"))
    out = tmp_path / "cmp"
    run = subprocess.run([sys.executable, "-m", "pconv_jax.compare", "--workdir", run_dir,
                          "--images", "samples", "--count", "2", "--per-bucket", "1",
                          "--out", str(out), "--inception",
                          str(tmp_path / "inception.safetensors"), "--lpips-vgg",
                          str(folder / "vgg_all.safetensors"), "--lpips-heads",
                          str(folder / "heads.npz")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    per_set = {p: json.loads((out / p / "metrics.json").read_text())
               for p in ("paper", "lama-thin", "lama-medium", "lama-thick")}
    methods = ("model", "patchmatch", "telea", "navier_stokes", "mean_fill")
    for protocol, results in per_set.items():
        for method in methods:
            assert all(row["lpips"] > 0 for row in results[method]), (protocol, method)
            assert np.isfinite(results["fid"][method]["all"])
        assert results["mask_set"]["verified"] and results["mask_set"]["protocol"] == protocol
    for protocol in ("lama-thin", "lama-medium", "lama-thick"):
        index = json.loads((out / "masks" / f"{protocol}_32px_n2_seed0" / "index.json")
                           .read_text())
        ratios = [float(np.mean(np.asarray(Image.open(out / "masks" / f"{protocol}_32px_n2_"
                                                      "seed0" / e["file"])) > 127))
                  for e in index["masks"]]
        want = {}
        for r in ratios:  # bin k holds (k/10, (k+1)/10], the first also 0
            k = max(int(np.ceil(r * 10 - 1e-9)) - 1, 0)
            want[f"{10 * k}-{10 * k + 10}%"] = want.get(f"{10 * k}-{10 * k + 10}%", 0) + 1
        rows = per_set[protocol]["model"]
        assert {r["bin"]: r["count"] for r in rows[:-1]} == want
        assert rows[-1]["bin"] == "all" and rows[-1]["count"] == 2
    lama = _markdown_rows((out / "table_lama.md").read_text())
    assert lama[0] == ["Method"] + [f"{k} {m}" for k in ("thin", "medium", "thick")
                                    for m in ("FID↓", "LPIPS↓")]
    by_name = {row[0]: row[1:] for row in lama[2:6]}
    assert set(by_name) == {"PConv (this run)", "PatchMatch", "Telea", "Navier–Stokes"}
    for name, method in (("PConv (this run)", "model"), ("PatchMatch", "patchmatch"),
                         ("Telea", "telea"), ("Navier–Stokes", "navier_stokes")):
        for k, protocol in enumerate(("lama-thin", "lama-medium", "lama-thick")):
            fid_cell, lpips_cell = by_name[name][2 * k:2 * k + 2]
            assert float(fid_cell) == pytest.approx(
                per_set[protocol]["fid"][method]["all"], abs=0.006)
            assert float(lpips_cell) == pytest.approx(
                per_set[protocol][method][-1]["lpips"], abs=6e-5)
    paper = _markdown_rows((out / "table_paper.md").read_text())
    groups = [(masks.bucket_name(b), border) for b in masks.BUCKETS for border in (False, True)]
    assert paper[0][2:] == [f"{b} {'B' if border else 'N'}" for b, border in groups]
    cells = {(row[0], row[1]): row[2:] for row in paper[2:]}
    names = {"model": "PConv (this run)", "patchmatch": "PatchMatch", "telea": "Telea",
             "navier_stokes": "Navier–Stokes", "mean_fill": "Mean fill"}
    for label, key, tol in (("PSNR↑", "psnr", 0.006), ("SSIM↑", "ssim", 6e-5),
                            ("LPIPS↓", "lpips", 6e-5)):
        for method in methods:
            rows = {(r["bucket"], r["border"]): r[key] for r in per_set["paper"][method]}
            assert [float(c) for c in cells[(label, names[method])]] == pytest.approx(
                [rows[g] for g in groups], abs=tol)
    table = (out / "paper" / "table.md").read_text()
    assert "model lpips" in table and "patchmatch fid" in table and "at least 500" in table
    assert f"set sha256 {per_set['paper']['mask_set']['set_sha256']}" in table
    assert evaluate.main(["--workdir", run_dir, "--images", "samples", "--masks",
                          str(out / "masks" / "lama-thick_32px_n2_seed0"), "--out",
                          str(tmp_path / "without"), "--methods", "model,telea"]) == 0
    plain = json.loads((tmp_path / "without" / "metrics.json").read_text())
    assert "fid" not in plain and all("lpips" not in r for r in plain["model"])
    assert set(plain) == {"model", "telea", "mask_set", "baseline_fills", "smooth_fills",
                          "weights"}
    assert plain["weights"] == "average (ema_decay 0.9)"  # run_dir keeps a moving average
    assert "lpips" not in (tmp_path / "without" / "table.csv").read_text()


def test_evaluate_refuses_half_of_lpips_and_bad_files_before_the_model(tmp_path, capsys):
    """--lpips-vgg without --lpips-heads is a usage error; a damaged Inception file is one
    line naming the key, before any model is loaded (the workdir does not even exist)."""
    from pconv_jax import evaluate

    with pytest.raises(SystemExit):
        evaluate.main(["--workdir", str(tmp_path), "--images", "samples", "--out",
                       str(tmp_path / "o"), "--lpips-vgg", "x.safetensors"])
    assert "needs both --lpips-vgg and --lpips-heads" in capsys.readouterr().err
    save_file({"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.float32)},
              str(tmp_path / "bad.safetensors"))
    code = evaluate.main(["--workdir", str(tmp_path / "no_run"), "--images", "samples",
                          "--out", str(tmp_path / "o"), "--inception",
                          str(tmp_path / "bad.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and "missing key 'Conv2d_1a_3x3.bn.weight'" in err, err
