"""Small training configurations shared by the training tests."""

import jax
import numpy as np
from flax import nnx

from pconv_jax.config import apply_overrides, as_flags, default_config, tiny_overrides

# the tiny network and cadence as command-line flags (CLI tests)
TINY_CLI_OVERRIDES = [
    *as_flags(tiny_overrides()), "--config.train.log_every=1",
    "--config.train.image_every=1000", "--config.data.threads=1",
    "--config.train.eval_every=0",
]


def tiny_config(steps=2, **train):
    """A 32-px, depth-3, width-4 run on the bundled photos with random VGG weights, read in
    this process (data.workers=0: the worker processes have tests of their own)."""
    c = apply_overrides(default_config(), {
        **tiny_overrides(), "data.scale_range": (1.0, 1.5), "data.threads": 1,
        "data.workers": 0,
        "train.steps": steps, "train.log_every": 1, "train.image_every": 1000,
        "checkpoint.every_steps": 1000, "checkpoint.keep": 3, "optim.lr": 1e-3,
        **{f"train.{key}": value for key, value in train.items()}})
    return c


def one_device_step(config):
    """(jitted train step, TrainState) of `config`, built as the trainer builds them
    (train.create_train_state, train.train_step_fn) on a one-device mesh."""
    from pconv_jax import train

    state = train.create_train_state(config)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    return train.train_step_fn(state, mesh), state


def model_arrays(model):
    """{path: array} of a model's parameters and BatchNorm statistics."""
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def tiny_run_config():
    """The config of `tiny_run`: 2 steps saved at each, keeping a moving average of the weights
    (optim.ema_decay 0.9), so every test that reads the run reads the average."""
    config = tiny_config(steps=2)
    config.optim.ema_decay = 0.9
    config.checkpoint.every_steps = 1
    return config


def tiny_run(folder) -> str:
    """Trains `tiny_run_config()` in `folder` (warnings hidden); its path."""
    import warnings

    from pconv_jax import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.train_and_evaluate(tiny_run_config(), str(folder))
    return str(folder)
