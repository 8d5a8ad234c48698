"""The paper's optimizer: Adam on a two-phase schedule, encoder BatchNorm frozen in phase 2.

Phase 1 trains everything at `optim.lr` (constant, or on a cosine to 0); from
`train.finetune_step` on, phase 2 uses `optim.finetune_lr` and leaves the encoder's BatchNorm
unchanged (the model also switches those layers to their running statistics).

`optim.ema_decay` > 0 keeps an exponential moving average of the parameters beside them
(`nnx.EMA`), with the usual warm-up: at update t the decay is min(ema_decay, (1+t)/(10+t)), so
early averages are not held back by the initial weights. Evaluation and inference use it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from pconv_jax.model import is_encoder_batchnorm


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Phase 1 (until train.finetune_step, else all train.steps): optim.lr, constant or on a
    cosine down to 0 at the phase's end (optim.schedule); optim.finetune_lr after."""
    start = config.train.finetune_step
    two_phases = start is not None and start >= 0
    lr = config.optim.lr
    if config.optim.get("schedule", "constant") == "cosine":
        phase_one = optax.cosine_decay_schedule(
            lr, max(1, start if two_phases else config.train.steps))
    else:
        phase_one = optax.constant_schedule(lr)
    if not two_phases:
        return phase_one
    finetune_lr = config.optim.finetune_lr
    return lambda count: jnp.where(count >= start, finetune_lr, phase_one(count))  # updates done


def optimizer_transform(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam on the schedule; from the fine-tuning step on, encoder BatchNorm updates are zero.

    One optimizer structure whatever `train.finetune_step` is (-1 included), so a run resumes
    in either phase, and a phase-1 workdir resumes after finetune_step is set. Equal settings
    give the same transformation object, so the jitted steps of equal configs are shared.
    """
    optim, train = config.optim, config.train
    schedule = optim.get("schedule", "constant")
    return _transform(float(optim.lr), float(optim.finetune_lr), float(optim.b1),
                      float(optim.b2), schedule, train.finetune_step,
                      train.steps if schedule == "cosine" else None)


@functools.lru_cache(maxsize=64)
def _transform(lr: float, finetune_lr: float, b1: float, b2: float, schedule: str,
               finetune_step: int | None, steps: int | None) -> optax.GradientTransformation:
    """`optimizer_transform` of these settings (steps only matters to the cosine)."""
    config = ml_collections.ConfigDict({
        "optim": {"lr": lr, "finetune_lr": finetune_lr, "schedule": schedule},
        "train": {"finetune_step": finetune_step, "steps": steps}})
    adam = optax.adam(learning_rate(config), b1=b1, b2=b2)
    start = finetune_step
    if start is None or start < 0:
        start = jnp.iinfo(jnp.int32).max  # never
    stop = optax.scale_by_schedule(lambda count: jnp.where(count >= start, 0.0, 1.0))

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "encoder_bn" if is_encoder_batchnorm(path) else "rest", params)

    return optax.multi_transform({"rest": adam, "encoder_bn": optax.chain(adam, stop)}, labels)


def in_phase_two(config: ml_collections.ConfigDict, step: int) -> bool:
    """Whether `step` lies in the fine-tuning phase."""
    start = config.train.finetune_step
    return start is not None and start >= 0 and step >= start


def ema_decay(config: ml_collections.ConfigDict) -> float:
    """optim.ema_decay: 0 when the run keeps no average of its weights."""
    return float(config.optim.get("ema_decay", 0.0) or 0.0)


def create_average(model: nnx.Module, decay: float) -> nnx.EMA | None:
    """The moving average of `model`'s parameters (BatchNorm statistics are averages already),
    starting at their current values; None when decay is 0."""
    return nnx.EMA(model, decay, only=nnx.Param) if decay > 0 else None


def warmup_decay(decay: float, step: jax.Array) -> jax.Array:
    """The decay at update `step` (1-based): min(decay, (1+step)/(10+step))."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_average(average: nnx.EMA, model: nnx.Module, step: jax.Array) -> None:
    """average <- d * average + (1 - d) * parameters, d = warmup_decay(average.decay, step)."""
    decay = warmup_decay(average.decay, step)

    def blend(mean: nnx.Variable, value: nnx.Variable) -> None:
        mean[...] = (decay * mean[...] + (1.0 - decay) * value[...]).astype(mean.dtype)

    jax.tree.map(blend, average.params, nnx.state(model, nnx.Param),
                 is_leaf=lambda x: isinstance(x, nnx.Variable))
