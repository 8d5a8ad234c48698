"""Fine-tuning a trained or converted run on your own images: the paper's phase 2 from step 0.

    python -m pconv_jax.train --config experiments/configs/finetune.py:runs/naoto0804 \
        --workdir runs/faces --config.data.source=/path/to/faces \
        --config.vgg.weights=weights/vgg16.safetensors

The text after ':' is the run to start from, e.g. a folder `python -m pconv_jax.convert`
wrote from naoto0804's Places2 checkpoint: its config.json gives the model settings and the
image size, and `train.init_from` loads its newest checkpoint (a model of other settings is
refused). From the first step the encoder's BatchNorm is frozen and Adam runs at 5e-5, as in
the paper's fine-tuning and naoto0804's. 100k steps at batch 6 by default; expect hours on one
accelerator, and see the held-out PSNR with --config.data.eval_source=HELD_OUT_IMAGES
--config.train.eval_every=1000.
"""

import json
import os

from pconv_jax.config import default_config


def get_config(run: str = ""):
    if not run:
        raise ValueError("name the run to start from: --config "
                         "experiments/configs/finetune.py:RUN_FOLDER")
    path = os.path.join(run, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{run} is not a run folder (no config.json)")
    with open(path) as f:
        start = json.load(f)
    config = default_config()
    config.model.update(start["model"])
    config.data.image_size = start["data"]["image_size"]
    config.data.source = ""  # your images: --config.data.source=FOLDER (or tfds:NAME/SPLIT)
    config.train.init_from = run
    config.train.finetune_step = 0  # phase 2 throughout: encoder BatchNorm frozen, finetune_lr
    config.optim.finetune_lr = 5e-5
    config.train.batch_size = 6
    config.train.steps = 100_000
    # bfloat16 convolutions on GPUs and TPUs; on a CPU --config.train.compute_dtype=float32 is
    # faster (BENCHMARKS.md)
    config.train.compute_dtype = "bfloat16"
    config.checkpoint.every_steps = 5000
    return config
