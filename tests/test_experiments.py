"""pconv_jax.experiments and the ablation notebook: variants really train with their weights,
every variant is scored on the same pairs, the grid resumes and splits, the notebook runs."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pconv_jax import experiments
from pconv_jax.data import center_crop_resize, open_source
from pconv_jax.evaluate import eval_masks
from pconv_jax.inpaint import Inpainter
from pconv_jax.losses import TERMS, LossWeights
from tests.train_util import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "notebooks", "loss_weight_ablation.ipynb")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
PAPER = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style_out": 120.0, "style_comp": 120.0,
         "tv": 0.1}  # DESIGN.md §1
EVAL_IMAGES = "samples:chelsea,coffee"
VARIANTS = {"paper": {}, "l1_only": {"perceptual": 0, "style": 0, "tv": 0}}


def grid_config(steps=3):
    config = tiny_config(steps=steps)
    config.data.source = "samples:astronaut,rocket"
    return config


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    """The two-variant grid run as two tasks: task 1 first (no report yet), then task 0."""
    workdir = str(tmp_path_factory.mktemp("grid"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial = experiments.run_grid(grid_config(), VARIANTS, workdir, eval_images=EVAL_IMAGES,
                                       per_bucket=1, num_examples=2, task_index=1, num_tasks=2)
        assert set(partial["variant"]) == {"l1_only"}  # task 1 did only variants[1::2]
        assert partial.attrs == {"pending": ["paper"], "complete": False}
        assert not os.path.isdir(os.path.join(workdir, "variants", "paper"))
        assert not os.path.exists(os.path.join(workdir, "results.csv"))
        experiments.run_grid(grid_config(), VARIANTS, workdir, eval_images=EVAL_IMAGES,
                             per_bucket=1, num_examples=2, task_index=0, num_tasks=2)
    return workdir


def test_variant_weights_override_the_paper_weights():
    """Overrides change only the named terms; 'style' sets both style terms."""
    assert experiments.variant_weights({}).as_dict() == PAPER
    no_style = experiments.variant_weights({"style": 0}).as_dict()
    assert no_style == {**PAPER, "style_out": 0.0, "style_comp": 0.0}
    assert experiments.variant_weights({"hole": 12}).as_dict() == {**PAPER, "hole": 12.0}
    weights = LossWeights(valid=2.0)
    assert experiments.variant_weights(weights) is weights


@pytest.mark.parametrize("spec, message", [
    ({"styl": 0}, "unknown loss term 'styl'"),
    ({"hole": -1}, "finite and >= 0"),
    ({"hole": float("nan")}, "finite and >= 0"),
    ({t: 0 for t in TERMS}, "every loss weight is 0"),
    ([("hole", 1.0)], "LossWeights or a mapping"),
])
def test_bad_variants_are_named(spec, message):
    with pytest.raises(experiments.ExperimentError, match=message):
        experiments.variant_weights(spec)


def test_the_standard_grid_switches_off_one_thing_at_a_time():
    """Each ablation differs from the paper in exactly the terms it names."""
    grid = {n: w.as_dict() for n, w in experiments.paper_variants((3, 12)).items()}
    changed = {n: {t for t in TERMS if w[t] != PAPER[t]} for n, w in grid.items()}
    assert changed == {
        "paper": set(), "no_perceptual": {"perceptual"}, "no_style": {"style_out", "style_comp"},
        "no_tv": {"tv"}, "l1_only": {"perceptual", "style_out", "style_comp", "tv"},
        "hole_3": {"hole"}, "hole_12": {"hole"},
    }
    assert grid["l1_only"]["valid"] == 1 and grid["l1_only"]["hole"] == 6
    assert all(grid[n][t] == 0 for n, ts in changed.items() if n != "paper" and "hole" not in ts
               for t in ts)


def test_apply_overrides_sets_keys_and_rejects_unknown_ones():
    config = experiments.apply_overrides(tiny_config(), {"train.steps": 7,
                                                         "model.encoder_widths": [2, 4, 8]})
    assert config.train.steps == 7 and config.model.encoder_widths == (2, 4, 8)
    assert tiny_config().train.steps == 2  # the base is not modified
    with pytest.raises(experiments.ExperimentError, match="unknown config key 'train.stepz'"):
        experiments.apply_overrides(tiny_config(), {"train.stepz": 1})


@pytest.mark.slow
def test_each_variant_trains_with_its_own_weights(grid_dir):
    """Every logged total equals sum_k w_k * term_k with that variant's weights (paper formula),
    so the grid's weights reached the loss; the runs differ only in them."""
    for name, spec in VARIANTS.items():
        weights = experiments.variant_weights(spec).as_dict()
        with open(os.path.join(grid_dir, "variants", name, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        assert [r["step"] for r in records] == [1, 2, 3]
        for r in records:
            expected = sum(weights[t] * r[t] for t in TERMS)
            assert r["loss"] == pytest.approx(expected, rel=1e-5)
    first = {}
    for name in VARIANTS:
        with open(os.path.join(grid_dir, "variants", name, "metrics.jsonl")) as f:
            first[name] = json.loads(f.readline())
    # Same seed, data and initial model: step 1 sees identical terms in both variants.
    for t in TERMS:
        assert first["paper"][t] == pytest.approx(first["l1_only"][t], rel=1e-5)


@pytest.mark.slow
def test_table_matches_an_independent_evaluation_of_each_checkpoint(grid_dir):
    """The 'all' row of each variant = its final checkpoint scored here with scikit-image on the
    same held-out pairs (mask k with image k mod n, centre crop), composite in valid pixels."""
    import pandas as pd

    table = pd.read_csv(os.path.join(grid_dir, "results.csv"))
    assert set(table["variant"]) == {"paper", "l1_only", "telea", "navier_stokes", "mean_fill"}
    grid = json.load(open(os.path.join(grid_dir, "grid.json")))
    size = grid["eval"]["size"]
    masks_dir = os.path.join(grid_dir, f"eval_masks_{size}_b1_seed1234")
    entries = eval_masks(masks_dir, size, 1, 1234)
    assert len(entries) == 12  # 6 buckets x border / no border
    images = open_source(EVAL_IMAGES)
    gts = np.stack([np.round(center_crop_resize(images[k % len(images)] / 255.0, size) * 255)
                    .astype(np.uint8) for k in range(len(entries))])
    masks = np.stack([e["mask"] for e in entries])
    for name in VARIANTS:
        inpainter = Inpainter.from_workdir(os.path.join(grid_dir, "variants", name))
        assert inpainter.step == 3
        out = inpainter(gts, masks)
        l1, psnr, ssim = [], [], []
        for o, g in zip(out.astype(np.float64) / 255, gts.astype(np.float64) / 255, strict=True):
            l1.append(np.mean(np.abs(o - g)) * 100)
            psnr.append(min(peak_signal_noise_ratio(g, o, data_range=1.0), 100.0))
            ssim.append(structural_similarity(g, o, data_range=1.0, channel_axis=2,
                                              gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False))
        row = table[(table["variant"] == name) & (table["bucket"] == "all")].iloc[0]
        assert row["count"] == 12 and row["step"] == 3
        assert row["l1"] == pytest.approx(np.mean(l1), abs=1e-3)
        assert row["psnr"] == pytest.approx(np.mean(psnr), abs=1e-2)
        assert row["ssim"] == pytest.approx(np.mean(ssim), abs=1e-3)
    # The per-bucket rows partition the pairs.
    per = table[(table["variant"] == "paper") & (table["bucket"] != "all")]
    assert per["count"].sum() == 12 and len(per) == 12


@pytest.mark.slow
def test_report_files_are_written(grid_dir):
    for name in ("results.csv", "results.json", "table.md", "loss_curves.png", "comparison.png"):
        assert os.path.getsize(os.path.join(grid_dir, name)) > 0, name
    with Image.open(os.path.join(grid_dir, "comparison.png")) as im:
        assert im.size[0] > im.size[1]  # input, 2 variants, 3 baselines, truth side by side
    records = json.load(open(os.path.join(grid_dir, "results.json")))
    assert {r["variant"] for r in records} >= set(VARIANTS)
    table_md = open(os.path.join(grid_dir, "table.md")).read()
    assert "| paper | 3 |" in table_md and "| l1_only | 3 | 1, 6, 0, 0, 0, 0 |" in table_md


@pytest.mark.slow
def test_rerun_resumes_without_retraining_and_refuses_changed_weights(grid_dir):
    """A second run_grid trains nothing (checkpoints and logs unchanged) and gives the same
    table; reusing a variant name with other weights is an error."""
    log = os.path.join(grid_dir, "variants", "paper", "metrics.jsonl")
    ckpts = os.path.join(grid_dir, "variants", "paper", "checkpoints")
    before = open(log).read(), sorted(os.listdir(ckpts))
    csv_before = open(os.path.join(grid_dir, "results.csv")).read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiments.run_grid(grid_config(), VARIANTS, grid_dir, eval_images=EVAL_IMAGES,
                             per_bucket=1, num_examples=2)
    assert (open(log).read(), sorted(os.listdir(ckpts))) == before
    assert open(os.path.join(grid_dir, "results.csv")).read() == csv_before
    with pytest.raises(experiments.ExperimentError,
                       match=r"another configuration \(loss.weights.tv: 0.1 -> 1.0\)"):
        experiments.run_grid(grid_config(), {"paper": {"tv": 1.0}}, grid_dir,
                             eval_images=EVAL_IMAGES, per_bucket=1)
    reseeded = grid_config()
    reseeded.seed = 5
    with pytest.raises(experiments.ExperimentError, match=r"\(seed: 0 -> 5\)"):
        experiments.run_grid(reseeded, VARIANTS, grid_dir, eval_images=EVAL_IMAGES,
                             per_bucket=1)


@pytest.mark.slow
def test_a_changed_eval_set_is_evaluated_afresh(grid_dir, tmp_path):
    """More masks per bucket: every variant and baseline is scored again on the 24 new pairs
    (no cached result of the 12-pair set survives), training is not repeated."""
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(grid_dir, workdir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = experiments.run_grid(grid_config(), VARIANTS, str(workdir),
                                     eval_images=EVAL_IMAGES, per_bucket=2, num_examples=2)
    assert table.attrs["complete"]
    overall = table[table["bucket"] == "all"].set_index("variant")
    assert (overall["count"] == 24).all() and len(overall) == 5
    assert (overall.loc[list(VARIANTS), "step"] == 3).all()
    saved = json.load(open(workdir / "results.json"))
    assert {r["count"] for r in saved if r["bucket"] == "all"} == {24}


def test_evaluation_images_must_be_held_out():
    for train_source, eval_images in [("samples", "samples:chelsea"),
                                      ("samples:astronaut,chelsea", "samples:chelsea,coffee"),
                                      ("/data/photos", "/data/photos/val"),
                                      ("tfds:places365_small/train", "tfds:places365_small/train")]:
        with pytest.raises(experiments.ExperimentError, match="training"):
            experiments.check_held_out(train_source, eval_images)
    experiments.check_held_out("samples:astronaut", "samples:chelsea")
    experiments.check_held_out("/data/train", "/data/val")
    experiments.check_held_out("tfds:places365_small/train", "tfds:places365_small/validation")
    experiments.check_held_out("samples", ".")  # bundled photos vs a folder: no shared files
    experiments.check_held_out(".", "samples:chelsea")


def test_variant_names_must_be_folder_names_and_not_baselines(tmp_path):
    for name in ("telea", "a/b", ""):
        with pytest.raises(experiments.ExperimentError, match="variant name"):
            experiments.run_grid(grid_config(), {name: {}}, str(tmp_path),
                                 eval_images=EVAL_IMAGES)


@pytest.mark.slow
def test_cli_collects_and_reports_errors(grid_dir, tmp_path):
    config = os.path.join(ROOT, "experiments", "configs", "demo.py")
    base = [sys.executable, "-m", "pconv_jax.experiments", f"--config={config}"]
    run = subprocess.run(base + ["--workdir", str(tmp_path)], capture_output=True, text=True,
                         env=ENV)
    assert run.returncode == 2 and "--eval-images are required" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run(base + ["--workdir", str(tmp_path), "--eval-images", EVAL_IMAGES,
                                 "--variants", "paper,no_sytle"],
                         capture_output=True, text=True, env=ENV)
    assert run.returncode == 2 and "unknown variants ['no_sytle']" in run.stderr
    run = subprocess.run(base + ["--workdir", str(tmp_path), "--eval-images", EVAL_IMAGES,
                                 "--variant", "bad=hole"], capture_output=True, text=True,
                         env=ENV)
    assert run.returncode == 2 and "is not term:weight" in run.stderr
    for flag, message in (("--hole-weights=3,abc", "--hole-weights must be numbers"),
                          ("--eval-size=0", "--eval-size must be >= 1")):
        run = subprocess.run(base + ["--workdir", str(tmp_path), "--eval-images", EVAL_IMAGES,
                                     flag], capture_output=True, text=True, env=ENV)
        assert run.returncode == 2 and message in run.stderr, run.stderr[-1000:]
        assert "Traceback" not in run.stderr
    # Collect the trained grid: same base settings as the fixture, no training.
    demo = experiments.config_fingerprint(experiments.load_config(config))
    wanted = experiments.config_fingerprint(grid_config())
    overrides = ["--config.train.steps=3"] + [
        f"--config.{k}=" + (f"({','.join(map(str, v))})" if isinstance(v, list) else str(v))
        for k, v in wanted.items() if demo.get(k) != v and not k.startswith("loss.")]
    run = subprocess.run(base + overrides + [
        "--workdir", grid_dir, "--eval-images", EVAL_IMAGES, "--per-bucket", "1",
        "--variants", "paper", "--variant", "l1_only=perceptual:0,style:0,tv:0",
        "--collect-only"], capture_output=True, text=True, env=ENV)
    assert run.returncode == 0, run.stderr
    assert "| l1_only | 3 |" in run.stdout and "wrote" in run.stdout


@pytest.mark.slow
def test_loss_weight_ablation_notebook_runs_headless(tmp_path):
    """The notebook, with tiny parameters injected by papermill, runs top to bottom and leaves
    its table and figures in the output folder and in the executed notebook."""
    import papermill

    out_dir = tmp_path / "ablation"
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        NOTEBOOK, str(executed), cwd=str(tmp_path), progress_bar=False, kernel_name="python3",
        parameters=dict(
            image_size=32, batch_size=2, steps=3, per_bucket=1, output_dir=str(out_dir),
            variants={"paper": {}, "no_tv": {"tv": 0.0}},
            config_overrides={"model.depth": 3, "model.encoder_widths": [4, 8, 16],
                              "model.encoder_kernels": [7, 5, 5], "train.log_every": 1,
                              "data.threads": 1},
        ),
    )
    for name in ("results.csv", "results.json", "table.md", "loss_curves.png", "comparison.png"):
        assert (out_dir / name).stat().st_size > 0, name
    import pandas as pd

    table = pd.read_csv(out_dir / "results.csv")
    assert set(table["variant"]) >= {"paper", "no_tv"}
    assert (table[table["variant"] == "no_tv"]["w_tv"] == 0).all()
    nb = json.loads(executed.read_text())
    outputs = [o for cell in nb["cells"] if cell["cell_type"] == "code"
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    html = ["".join(o["data"]["text/html"]) for o in outputs if "text/html" in o.get("data", {})]
    tables = [h for h in html if "<table" in h]
    assert len(pngs) == 2  # loss curves and the comparison grid
    assert len(tables) >= 5  # the grid, the run's head, the summary, 3 per-bucket tables


@pytest.mark.slow
def test_an_unfinished_grid_reports_pending_and_leaves_no_stale_report(grid_dir, tmp_path):
    """A variant without a trained model keeps the table incomplete: attrs name it, and the
    report files of the earlier, complete grid are removed rather than left looking current."""
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(grid_dir, workdir)
    assert (workdir / "results.csv").exists()
    table = experiments.run_grid(grid_config(), {**VARIANTS, "no_tv": {"tv": 0}}, str(workdir),
                                 eval_images=EVAL_IMAGES, per_bucket=1, num_examples=2,
                                 train=False)
    assert table.attrs == {"pending": ["no_tv"], "complete": False}
    assert set(table["variant"]) == set(VARIANTS)
    assert not any((workdir / name).exists() for name in experiments.REPORT_FILES)
