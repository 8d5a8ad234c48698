"""Small training configurations shared by the training tests."""

import jax
import numpy as np
from flax import nnx

from pconv_jax.train import default_config

TINY_CLI_OVERRIDES = [
    "--config.data.image_size=32", "--config.model.depth=3",
    "--config.model.encoder_widths=(4,8,16)", "--config.model.encoder_kernels=(7,5,5)",
    "--config.train.batch_size=2", "--config.train.log_every=1",
    "--config.train.image_every=1000", "--config.data.threads=1",
    "--config.train.eval_every=0",
]


def tiny_config(steps=2, **train):
    """A 32-px, depth-3, width-4 run on the bundled photos with random VGG weights."""
    c = default_config()
    c.data.image_size = 32
    c.data.scale_range = (1.0, 1.5)
    c.data.threads = 1
    c.model.depth = 3
    c.model.encoder_widths = (4, 8, 16)
    c.model.encoder_kernels = (7, 5, 5)
    c.train.batch_size = 2
    c.train.steps = steps
    c.train.log_every = 1
    c.train.image_every = 1000
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep = 3
    c.optim.lr = 1e-3
    for key, value in train.items():
        c.train[key] = value
    return c


def model_arrays(model):
    """{path: array} of a model's parameters and BatchNorm statistics."""
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def tiny_run(folder) -> str:
    """Trains the tiny configuration for 2 steps in `folder` (warnings hidden); its path."""
    import warnings

    from pconv_jax import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_and_evaluate(tiny_config(steps=2), str(folder))
    return str(folder)
