"""experiments/configs/cpu_hour.py: a valid run whose three photo sets never meet."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pconv_jax import config as config_lib
from pconv_jax import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "cpu_hour.py")


def _module():
    spec = importlib.util.spec_from_file_location("cpu_hour", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_is_a_valid_run_on_its_own_photos():
    """check_config accepts it; it trains on TRAIN_PHOTOS, scores its curve on HELD_OUT."""
    module = _module()
    config = module.get_config()
    config_lib.check_config(config, device_count=1)
    assert config.data.source == "samples:" + ",".join(module.TRAIN_PHOTOS)
    assert config.data.eval_source == "samples:" + ",".join(module.HELD_OUT)
    assert config.data.image_size == module.IMAGE_SIZE
    assert config.train.steps == module.STEPS and config.train.eval_every > 0
    assert config.vgg.fallback == "off" and not config.vgg.weights
    assert len(module.TRAIN_PHOTOS) < 20  # the constraint


def test_each_pilot_is_a_valid_run_and_the_hour_lengthens_the_last_one():
    """Every PILOTS entry is a valid config of its own net, size and steps; the hour's run is
    the last pilot (the chosen settings) with only its steps and eval interval changed."""
    module = _module()
    for name, (depth, width, size, steps, *_rest) in module.PILOTS.items():
        config = module.get_config(name)
        config_lib.check_config(config, device_count=1)
        assert config.model.depth == depth and config.data.image_size == size, name
        assert config.model.encoder_widths[0] == width and config.train.steps == steps, name
    chosen = module.get_config(list(module.PILOTS)[-1]).to_dict()
    hour = module.get_config().to_dict()
    for section in (chosen, hour):
        section["train"].pop("steps"), section["train"].pop("eval_every")
    assert chosen == hour
    with pytest.raises(ValueError, match="unknown pilot 'wide'.*demo_net_96"):
        module.get_config("wide")


def test_training_held_out_and_evaluation_photos_share_no_image():
    """No photo of one set is a photo of another under any name: the sets are disjoint by
    name and no two of their images have equal pixels."""
    module = _module()
    sets = [module.TRAIN_PHOTOS, module.HELD_OUT, module.EVALUATION_PHOTOS]
    names = [n for group in sets for n in group]
    assert len(names) == len(set(names))
    assert {"chelsea", "coffee"} <= set(module.HELD_OUT)
    images = {n: data.bundled_photo(n) for n in names}
    for i, group in enumerate(sets):
        for other in sets[i + 1:]:
            for a in group:
                for b in other:
                    same = images[a].shape == images[b].shape and \
                        np.array_equal(images[a], images[b])
                    assert not same, (a, b)


def test_make_cpu_hour_evaluates_on_the_evaluation_photos_at_the_run_size():
    """`make cpu-hour` trains this config, then evaluates on EVALUATION_PHOTOS with masks of
    the config's image size, 20 per bucket and border class."""
    module = _module()
    commands = subprocess.run(["make", "-n", "cpu-hour"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
    assert "--config experiments/configs/cpu_hour.py" in commands
    assert f"--size {module.IMAGE_SIZE} " in commands
    assert re.search(r"--per-bucket (\d+)", commands).group(1) == "20"
    assert "--images samples:" + ",".join(module.EVALUATION_PHOTOS) in commands


@pytest.mark.slow
def test_config_trains_and_scores_through_the_cli(tmp_path):
    """Two steps of the config's own model and data through `python -m pconv_jax.train`: a
    loss record and a held-out record with Telea beside it."""
    workdir = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "pconv_jax.train", "--config", CONFIG, "--workdir", str(workdir),
         "--config.train.steps=2", "--config.train.eval_every=2", "--config.data.eval_pairs=2",
         "--config.train.log_every=1", "--config.data.threads=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().split("\n")
               if line]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    (scored,) = [r for r in records if "eval_psnr" in r]
    assert np.isfinite(scored["eval_psnr"]) and scored["eval_psnr_telea"] > 10
