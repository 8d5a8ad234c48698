"""Training: `python -m pconv_jax.train --config experiments/configs/NAME.py --workdir DIR`.

`train_and_evaluate(config, workdir)` is the whole job: set-up (devices, mesh), data, model,
loss and optimizer, restore, the loop, the final save. The jitted step is a pure function of
(state, batch) -> (state, metrics) over a mesh of all devices: the batch sharded on 'data',
parameters and optimizer state replicated, the state buffers donated. BatchNorm statistics are
over the global batch. The loop never waits for the device between log steps: batches arrive
as uint8 and are placed on the devices two steps ahead, and the metrics (interval sums and
the first non-finite step) accumulate on the device until a log step or a save fetches them.
Phase 2 of the paper (encoder BatchNorm frozen, a lower learning rate)
starts at `train.finetune_step`, or from a phase-1 checkpoint with `train.init_from`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import shlex
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pconv_jax import checkpoint as ckpt
from pconv_jax import data as data_lib
from pconv_jax import losses, vgg
from pconv_jax.masks import MaskSource
from pconv_jax.model import PConvUNet, UNetConfig
from pconv_jax.paths import OverlapError, check_outputs, probe_writable
from pconv_jax.visualize import save_grid


class TrainingError(RuntimeError):
    """A run that cannot go on, with a message for the user (no traceback)."""


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
    """Every key a run reads, with the paper's settings; experiment files override a few."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = -1  # -1: every device of every process
    c.data = ml_collections.ConfigDict(dict(
        source="samples",  # 'samples', 'tfds:NAME/SPLIT' or an image folder
        tfds_data_dir="",
        image_size=512,
        scale_range=(1.0, 1.0),  # shorter side resized to image_size * U(range) (>= 1), then crop
        colour_jitter=0.0,  # s: channels permuted, saturation and gains x U(1-s,1+s); 0: off
        masks="",  # a folder of mask images (white = hole), or '' for generated irregular masks
        hole_range=(0.01, 0.6),
        eval_source="",  # held-out images scored every train.eval_every steps ('' = none)
        eval_pairs=24,  # held-out (image, mask) pairs: fixed masks, hole ratios 0.05..0.55
        workers=-1,  # Grain worker processes; -1: the cores left after this one, at most 16
        threads=2,  # reading threads (in this process when workers=0, else in each worker)
    ))
    c.model = ml_collections.ConfigDict(model_settings(UNetConfig.paper()))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=6, steps=800_000, log_every=100, image_every=5000,
        eval_every=0,  # held-out PSNR (model and Telea) into metrics.jsonl; 0: never
        finetune_step=-1,  # phase 2 (encoder BatchNorm frozen, finetune_lr) from here; -1: never
        init_from="",  # start from the model of another run's newest checkpoint (phase 2 runs)
        compute_dtype="float32",
    ))
    c.optim = ml_collections.ConfigDict(dict(
        lr=2e-4, finetune_lr=5e-5, b1=0.9, b2=0.999,
        schedule="constant",  # phase 1: 'constant' optim.lr, or 'cosine' from lr down to 0
    ))
    c.loss = ml_collections.ConfigDict(dict(
        weights=dataclasses.asdict(losses.LossWeights()),
        log_zero_terms=False,  # compute 0-weighted VGG terms forward-only, for their curves
    ))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=5000, keep=3))
    # Without a weights file: 'random' VGG weights (smoke tests; warns) or 'off' (the
    # perceptual and style terms are switched off, since random features mean nothing).
    c.vgg = ml_collections.ConfigDict(dict(weights="", random_seed=0, fallback="random"))
    return c


def model_settings(model: UNetConfig) -> dict:
    """The `config.model` entries of a UNetConfig preset (size and dtype come from elsewhere)."""
    return {k: v for k, v in dataclasses.asdict(model).items() if k not in ("image_size", "dtype")}


def unet_config(config: ml_collections.ConfigDict) -> UNetConfig:
    """The model's UNetConfig from `config.model` and `config.train.compute_dtype`."""
    try:
        return UNetConfig.from_settings(
            config.model.to_dict(), image_size=config.data.image_size,
            compute_dtype=config.train.get("compute_dtype", "float32"))
    except (TypeError, ValueError) as err:
        raise TrainingError(f"model configuration: {err}") from None


MAX_IMAGE_SIZE = 4096  # training crops: the largest side the CLIs accept anywhere
MAX_READERS = 256  # data workers or threads: far beyond any host's cores


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
    """Raises TrainingError naming every count or interval of `config` that cannot work."""
    problems = []
    for key, least in (("train.steps", 0), ("train.batch_size", 1), ("train.log_every", 1),
                       ("train.eval_every", 0), ("data.eval_pairs", 1),
                       ("train.image_every", 1), ("checkpoint.every_steps", 1),
                       ("checkpoint.keep", 1), ("data.image_size", 1)):
        section, name = key.split(".")
        value = config[section][name]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            problems.append(f"{key} must be a whole number >= {least}, got {value!r}")
    num_devices = config.get("num_devices", -1)
    if num_devices not in (None, -1) and not 1 <= num_devices <= device_count:
        problems.append(f"num_devices must be -1 (all) or 1..{device_count} (the devices "
                        f"there are), got {num_devices}")
    threads = config.data.get("threads", 2)
    if not isinstance(threads, int) or not 0 <= threads <= MAX_READERS:
        problems.append(f"data.threads must be a whole number in 0..{MAX_READERS}, got "
                        f"{threads!r}")
    workers = config.data.get("workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or \
            not -1 <= workers <= MAX_READERS:
        problems.append(f"data.workers must be -1 (automatic) or a whole number in "
                        f"0..{MAX_READERS}, got {workers!r}")
    if config.data.get("eval_pairs", 24) > 10_000:
        problems.append(f"data.eval_pairs must be at most 10000 (scored at every eval step), "
                        f"got {config.data.eval_pairs}")
    if config.train.get("compute_dtype", "float32") not in ("float32", "bfloat16"):
        problems.append(f"train.compute_dtype must be 'float32' or 'bfloat16', got "
                        f"{config.train.get('compute_dtype')!r} (float16 is not supported: "
                        "it would need loss scaling)")
    if config.vgg.get("fallback", "random") not in ("random", "off"):
        problems.append(f"vgg.fallback must be 'random' or 'off', got "
                        f"{config.vgg.get('fallback')!r}")
    scale = tuple(config.data.scale_range)
    if len(scale) != 2 or not 1 <= scale[0] <= scale[1]:
        problems.append(f"data.scale_range must be (lo, hi) with 1 <= lo <= hi (the shorter side "
                        f"is resized to image_size * U(lo, hi), never below image_size, so "
                        f"factors under 1 would do nothing), got {scale}")
    jitter = config.data.get("colour_jitter", 0.0)
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter <= 1:
        problems.append(f"data.colour_jitter must be a number in [0, 1] (0 = off), got "
                        f"{jitter!r}")
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(f"seed must be a whole number >= 0, got {seed!r}")
    if config.data.image_size > MAX_IMAGE_SIZE:
        problems.append(f"data.image_size must be at most {MAX_IMAGE_SIZE}, got "
                        f"{config.data.image_size}")
    for key in ("lr", "finetune_lr"):
        value = config.optim[key]
        if not isinstance(value, (int, float)) or not 0 < value < math.inf:
            problems.append(f"optim.{key} must be a number > 0, got {value!r}")
    schedule = config.optim.get("schedule", "constant")
    if schedule not in SCHEDULES:
        problems.append(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got "
                        f"{schedule!r}")
    for key in ("b1", "b2"):
        value = config.optim[key]
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            problems.append(f"optim.{key} must lie in [0, 1), got {value!r}")
    for term, value in config.loss.weights.items():
        if not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            problems.append(f"loss.weights.{term} must be a number >= 0, got {value!r}")
    if config.train.get("eval_every", 0) and not config.data.get("eval_source"):
        problems.append("train.eval_every needs data.eval_source (held-out images, e.g. "
                        "'samples:chelsea,coffee' or a folder)")
    if problems:
        raise TrainingError("; ".join(problems))


def loss_weights(config: ml_collections.ConfigDict) -> losses.LossWeights:
    """LossWeights from `config.loss.weights`; with no VGG file and vgg.fallback='off', the
    perceptual and style weights are 0."""
    weights = losses.LossWeights(**{k: float(v) for k, v in config.loss.weights.items()})
    if not config.vgg.get("weights") and config.vgg.get("fallback", "random") == "off":
        weights = dataclasses.replace(weights, **{t: 0.0 for t in losses.VGG_TERMS})
    return weights


def data_workers(config: ml_collections.ConfigDict) -> int:
    """`data.workers`, with -1 resolved to `data.default_workers()`."""
    workers = config.data.get("workers", -1)
    return data_lib.default_workers() if workers == -1 else workers


SCHEDULES = ("constant", "cosine")


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


def _is_encoder_bn(path: tuple) -> bool:
    keys = [getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path]
    return len(keys) >= 3 and keys[0] == "encoder" and "bn" in keys


def optimizer_transform(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam on the schedule; from the fine-tuning step on, encoder BatchNorm updates are zero.

    One optimizer structure whatever `train.finetune_step` is (-1 included), so a run resumes
    in either phase, and a phase-1 workdir resumes after finetune_step is set.
    """
    schedule = learning_rate(config)
    adam = optax.adam(schedule, b1=config.optim.b1, b2=config.optim.b2)
    start = config.train.finetune_step
    if start is None or start < 0:
        start = jnp.iinfo(jnp.int32).max  # never
    stop = optax.scale_by_schedule(lambda count: jnp.where(count >= start, 0.0, 1.0))

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "encoder_bn" if _is_encoder_bn(path) else "rest", params)

    return optax.multi_transform({"rest": adam, "encoder_bn": optax.chain(adam, stop)}, labels)


def in_phase_two(config: ml_collections.ConfigDict, step: int) -> bool:
    """Whether `step` lies in the fine-tuning phase."""
    start = config.train.finetune_step
    return start is not None and start >= 0 and step >= start


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def to_float(image: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """uint8 batch -> (image (N,H,W,3) in [-1,1], mask (N,H,W,1) float32 0/1), on the device."""
    return image.astype(jnp.float32) / 255.0 * 2 - 1, mask.astype(jnp.float32)


def empty_record(keys: tuple[str, ...]) -> dict:
    """The device-side metrics record: sums over the log interval, the step count, and the
    first non-finite step (-1: none yet) with its values."""
    def zeros() -> dict:  # new buffers for each part: the record is donated to the step
        return {k: np.zeros((), np.float32) for k in keys}

    return {"sums": zeros(), "steps": np.zeros((), np.int32),
            "bad_step": np.full((), -1, np.int32), "bad": zeros()}


def accumulate(record: dict, metrics: dict, step: jax.Array) -> dict:
    """Adds one step's metrics to the record; keeps the first step with a non-finite one."""
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    first_bad = jnp.logical_and(~finite, record["bad_step"] < 0)
    return {
        "sums": {k: record["sums"][k] + metrics[k].astype(jnp.float32) for k in record["sums"]},
        "steps": record["steps"] + 1,
        "bad_step": jnp.where(first_bad, step, record["bad_step"]),
        "bad": {k: jnp.where(first_bad, metrics[k], record["bad"][k]) for k in record["bad"]},
    }


def fetch(tree: Any) -> Any:
    """Device -> host copy of the metrics record: the loop's only waits for the device."""
    return jax.device_get(tree)


def make_train_step(graphdef, vgg_graphdef, weights: losses.LossWeights,
                    log_zero_terms: bool = False):
    """The pure step (state, vgg_state, record, image, mask) -> (state, record); image and
    mask uint8, vgg_state None when no VGG term is wanted."""

    def train_step(state, vgg_state, record, image, mask):
        model, optimizer = nnx.merge(graphdef, state)
        features = None if vgg_graphdef is None else nnx.merge(vgg_graphdef, vgg_state)
        target, mask = to_float(image, mask)  # (N,H,W,3) in [-1,1], (N,H,W,1)

        def loss_fn(model):
            output, _ = model(target, mask)
            terms = losses.loss_terms(output, target, mask, features, weights,
                                      log_zero_terms=log_zero_terms)
            return losses.total_loss(terms, weights), terms

        (loss, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        step = optimizer.step[...] + 1  # this step's number
        optimizer.update(model, grads)
        record = accumulate(record, {"loss": loss, **terms}, step)
        return nnx.state((model, optimizer)), record

    return train_step


def jit_train_step(train_step, mesh: jax.sharding.Mesh):
    """`train_step` jitted as the loop runs it over `mesh`: image and mask sharded on 'data',
    everything else replicated, the state and the metrics record donated."""
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(train_step, in_shardings=(replicated, replicated, replicated, batch, batch),
                   out_shardings=(replicated, replicated), donate_argnums=(0, 2))


def make_predict(graphdef):
    """Eval-mode forward for sample grids: (state, image uint8, mask uint8) -> output [0,1]."""

    def predict(state, image, mask):
        model, _ = nnx.merge(graphdef, state)
        model.eval()
        output, _ = model(*to_float(image, mask))
        return (output + 1) / 2

    return predict


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------


class MetricsLog:
    """workdir/metrics.jsonl (one object per logged step) and TensorBoard scalars."""

    def __init__(self, workdir: str, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.writer = None
        if not enabled:
            return
        if os.path.exists(self.path):  # drop lines past the restored step: none is repeated
            kept = []
            with open(self.path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # e.g. the half line of a killed process
                        continue
                    if record.get("step", 0) <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
            with open(self.path, "w") as f:
                f.writelines(kept)
        try:
            from tensorboardX import SummaryWriter

            # purge_step: TensorBoard hides the events a resumed run writes anew
            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                        purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # pragma: no cover - a dependency, but logging must not fail
            self.writer = None

    def write(self, record: dict) -> None:
        """Appends one record and mirrors its numbers to TensorBoard."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        """Flushes TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def package_versions() -> dict:
    """Versions of the packages a run depends on."""
    from importlib import metadata

    names = ["pconv-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
             "numpy", "tensorflow-datasets", "ml-collections"]
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks, so it can save and exit cleanly."""

    def __init__(self):
        self.received: str | None = None
        self.previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread (e.g. a notebook worker): no handler
                pass

    def _handle(self, signum, _frame) -> None:
        self.received = signal.Signals(signum).name

    def agreed(self, processes: int) -> bool:
        """Whether any process got a signal; every process gets the same answer at a step,
        so all of them stop (and save) together instead of one waiting in a collective."""
        if processes == 1:
            return self.received is not None
        from jax.experimental import multihost_utils

        anyone = bool(np.any(multihost_utils.process_allgather(
            np.int32(self.received is not None))))
        if anyone and self.received is None:
            self.received = "stop signal on another process"
        return anyone

    def restore(self) -> None:
        """Puts the previous handlers back."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class DevicePrefetch:
    """Batches placed on the devices `depth` steps ahead of the one the step is running.

    `state()` is the data iterator's state for the next batch a step takes, so a checkpoint
    does not skip the batches waiting here.
    """

    def __init__(self, batches: data_lib.BatchIterator, sharding: NamedSharding, depth: int = 2):
        self.batches, self.sharding, self.depth = batches, sharding, depth
        self.queue: collections.deque = collections.deque()

    def __next__(self) -> tuple[jax.Array, jax.Array]:
        while len(self.queue) <= self.depth:
            local = next(self.batches)  # {"image": (B,S,S,3) uint8, "mask": (B,S,S,1) uint8}
            self.queue.append(tuple(
                jax.make_array_from_process_local_data(self.sharding, local[key])
                for key in ("image", "mask")))
        return self.queue.popleft()

    def state(self) -> dict:
        """{"next_index": k} of the next batch `__next__` returns."""
        return {"next_index": self.batches.get_state()["next_index"] - len(self.queue)}

    def close(self) -> None:
        """Drops the placed batches (on a CPU they may share the workers' shared memory) and
        stops the reading workers."""
        self.queue.clear()
        self.batches.close()


class HeldOut:
    """Fixed held-out pairs scored during training: the PSNR and l1 of the model's composite,
    and the PSNR of OpenCV's Telea fill on the same pairs, for comparison."""

    def __init__(self, images: Any, size: int, count: int, seed: int):
        from pconv_jax import evaluate, metrics
        from pconv_jax.masks import irregular_mask

        rng = np.random.default_rng(seed)
        entries = [{"mask": irregular_mask(size, rng, float(r))}
                   for r in np.linspace(0.05, 0.55, count)]
        self.gts, masks = evaluate.eval_pairs(images, entries, 0, count)  # (P,S,S,3) uint8
        self.masks = masks.astype(np.uint8)[..., None]  # (P,S,S,1) 1 = valid
        telea = np.stack([evaluate.baseline("telea", g, m) for g, m in zip(self.gts, masks,
                                                                            strict=True)])
        self.metrics = metrics
        self.telea_psnr = self._mean_psnr(telea.astype(np.float32) / 255)

    def _mean_psnr(self, filled: np.ndarray) -> float:
        """Mean PSNR over the pairs of a fill (P,S,S,3) in [0,1], composited (100 dB at most)."""
        gt, mask = self.gts.astype(np.float32) / 255, self.masks.astype(np.float32)
        comp = mask * gt + (1 - mask) * filled
        return float(np.mean(np.minimum(np.asarray(self.metrics.psnr(comp, gt)), 100.0)))

    def score(self, predict, state, batch: int = 8) -> dict:
        """{"eval_psnr", "eval_l1" (% of the range), "eval_psnr_telea"} of the model now."""
        out = np.concatenate([
            np.asarray(predict(state, jnp.asarray(self.gts[i:i + batch]),
                               jnp.asarray(self.masks[i:i + batch]))).clip(0, 1)
            for i in range(0, len(self.gts), batch)])  # (P,S,S,3) in [0,1]
        gt, mask = self.gts.astype(np.float32) / 255, self.masks.astype(np.float32)
        comp = mask * gt + (1 - mask) * out
        return {"eval_psnr": self._mean_psnr(out),
                "eval_l1": float(np.mean(np.asarray(self.metrics.l1(comp, gt)))),
                "eval_psnr_telea": self.telea_psnr}


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def _load_vgg(config) -> vgg.VGG16Features:
    """The VGG-16 of vgg.weights, or random weights (with a warning) when there is none,
    computing in train.compute_dtype (its weights stored in it: cast once, not per step)."""
    dtype = config.train.get("compute_dtype", "float32")
    path = config.vgg.get("weights")
    if path:
        try:
            return vgg.load_vgg16(path, dtype)
        except (OSError, ValueError) as err:
            raise TrainingError(f"vgg.weights: {err}") from None
    return vgg.random_vgg16(config.vgg.get("random_seed", 0), dtype)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains per `config` in `workdir` (resuming what is there); returns the last metrics."""
    stop = StopSignal()  # from the start: a signal during set-up also ends in a clean save
    try:
        return _train(config, workdir, stop)
    finally:
        stop.restore()


def _train(config: ml_collections.ConfigDict, workdir: str, stop: StopSignal) -> dict:
    """The body of `train_and_evaluate`; `stop` tells it to save and return early."""
    # --- Set-up: devices, mesh, workdir ------------------------------------------------------
    check_config(config, len(jax.devices()))
    num_devices = config.get("num_devices", -1)
    devices = jax.devices() if num_devices in (None, -1) else jax.devices()[:num_devices]
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    global_batch = config.train.batch_size
    if global_batch % len(devices):
        raise TrainingError(f"train.batch_size {global_batch} is not divisible by the "
                            f"{len(devices)} devices of the mesh")
    process, processes = jax.process_index(), jax.process_count()
    local_batch = global_batch // processes
    is_chief = process == 0
    try:  # before anything is written: the run folder may overlap no input, however spelled
        check_outputs({"--workdir": workdir}, {
            f"data.{key}": config.data.get(key) for key in
            ("source", "masks", "eval_source", "tfds_data_dir")} | {
            "vgg.weights": config.vgg.get("weights"),
            "train.init_from": config.train.get("init_from")})
    except OverlapError as err:
        raise TrainingError(str(err)) from None
    try:
        probe_writable(workdir, "--workdir")
    except OSError as err:
        raise TrainingError(str(err)) from None

    # --- Model, loss, optimizer ------------------------------------------------------------------
    model_cfg = unet_config(config)
    weights = loss_weights(config)
    log_zero_terms = bool(config.loss.get("log_zero_terms", False))
    model = PConvUNet(model_cfg, rngs=nnx.Rngs(config.seed))
    model.train()
    optimizer = nnx.Optimizer(model, optimizer_transform(config), wrt=nnx.Param)
    vgg_graphdef = vgg_state = None  # no VGG-16 at all when no term needs it
    if losses.needs_vgg(weights, log_zero_terms):
        vgg_graphdef, vgg_state = nnx.split(_load_vgg(config))
        vgg_state = jax.device_put(vgg_state, replicated)
    elif is_chief and not config.vgg.get("weights") and any(
            config.loss.weights[t] for t in losses.VGG_TERMS):
        print("no vgg.weights file (vgg.fallback='off'): the perceptual and style terms are "
              "off; pass --config.vgg.weights=FILE to train with them", flush=True)
    record_keys = ("loss", *losses.logged_terms(weights, log_zero_terms))

    # --- Restore -------------------------------------------------------------------------------
    checkpointer = ckpt.Checkpointer(workdir, keep=config.checkpoint.keep)
    state = jax.device_put(nnx.state((model, optimizer)), replicated)
    # the settings that decide what the variables are and mean (init_from and resuming check
    # them; older checkpoints lacking normalization or first_bias pass as the defaults)
    shape_keys = ("depth", "in_channels", "out_channels", "encoder_widths", "encoder_kernels",
                  "decoder_kernel", "normalization", "first_bias")
    model_meta = {f"model.{k}": json.loads(json.dumps(getattr(model_cfg, k))) for k in shape_keys}
    restored = checkpointer.restore(ckpt.abstract(state), check_meta=model_meta,
                                    delete_unreadable=True)
    data_state = None
    start_step = 0
    if restored is not None:
        start_step, state, data_state, _ = restored
        print(f"resuming from step {start_step} in {checkpointer.directory}", flush=True)
    elif config.train.get("init_from"):
        _init_from(config.train.init_from, model, model_meta)
        state = jax.device_put(nnx.state((model, optimizer)), replicated)
    nnx.update((model, optimizer), state)

    # --- Data ----------------------------------------------------------------------------------
    try:
        source = data_lib.open_source(config.data.source, config.data.get("tfds_data_dir"))
        masks = MaskSource(config.data.image_size, config.data.get("masks") or None,
                           hole_range=tuple(config.data.hole_range))
        dataset = data_lib.train_dataset(
            source, image_size=config.data.image_size, local_batch=local_batch, seed=config.seed,
            masks=masks, shard_index=process, shard_count=processes,
            scale_range=tuple(config.data.scale_range),
            colour_jitter=config.data.get("colour_jitter", 0.0),
        )
        sample = dataset[0]  # a fixed batch for the image grids; reads the data once
        held_out = None
        if config.train.get("eval_every", 0) and is_chief:
            held_out = HeldOut(data_lib.open_source(config.data.eval_source,
                                                    config.data.get("tfds_data_dir")),
                               config.data.image_size, config.data.eval_pairs, config.seed)
    except (OSError, ValueError) as err:
        raise TrainingError(f"data: {err}") from None
    batches = data_lib.batch_iterator(dataset, workers=data_workers(config),
                                      threads=config.data.get("threads", 2))
    if data_state is not None:
        try:
            batches.set_state(data_state)
        except ValueError as err:
            raise TrainingError(f"checkpoint data state: {err}") from None
    prefetch = DevicePrefetch(batches, batch_sharding, depth=2)

    if is_chief:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))
        with open(os.path.join(workdir, "versions.json"), "w") as f:
            json.dump(package_versions(), f, indent=1)

    # --- The loop ------------------------------------------------------------------------------
    schedule = learning_rate(config)
    step_fns: dict[bool, Any] = {}

    def compiled_step(phase_two: bool):
        if phase_two not in step_fns:
            model.freeze_encoder_batchnorm(phase_two)
            graphdef, _ = nnx.split((model, optimizer))
            step_fns[phase_two] = (
                jit_train_step(make_train_step(graphdef, vgg_graphdef, weights, log_zero_terms),
                               mesh),
                jax.jit(make_predict(graphdef)),
            )
        return step_fns[phase_two]

    def fresh_record():
        return jax.device_put(empty_record(record_keys), replicated)

    log = MetricsLog(workdir, start_step, enabled=is_chief)
    progress = _Progress(config.train.steps, start_step, enabled=is_chief)
    state = nnx.state((model, optimizer))
    last_saved = start_step if restored is not None else None
    metrics: dict = {}
    step = start_step
    tick, images_since = time.perf_counter(), 0
    loop_start = tick  # wall_s in the records: seconds since this process entered the loop
    record = fresh_record()  # on the device: interval sums, first non-finite step

    def check_finite(fetched: dict) -> None:
        """TrainingError naming the first non-finite step and terms, if there was one."""
        bad_step = int(fetched["bad_step"])
        if bad_step < 0:
            return
        bad = {k: float(v) for k, v in fetched["bad"].items() if not math.isfinite(float(v))}
        raise TrainingError(
            f"non-finite loss at step {bad_step}: {', '.join(bad)} "
            f"({', '.join(f'{k}={v}' for k, v in bad.items())}). "
            + (f"The last good checkpoint is step {last_saved} in {checkpointer.directory}; "
               "it is left intact." if last_saved is not None
               else "No checkpoint was saved before it.")
        )

    def save(at_step: int) -> None:
        nonlocal last_saved
        check_finite(fetch({k: record[k] for k in ("bad_step", "bad")}))
        checkpointer.save(at_step, state, prefetch.state(),
                          {**model_cfg.output_settings(), **model_meta, "step": at_step,
                           "seed": config.seed,
                           "batch_size": global_batch})
        last_saved = at_step

    # Between log steps nothing waits for the device: the step is dispatched, the next batch
    # read and placed while it runs, and the metrics stay in `record` on the device.
    try:
        while step < config.train.steps:
            # several processes agree on stopping at log steps only (a collective each time)
            if (processes == 1 or step % config.train.log_every == 0) and \
                    stop.agreed(processes):
                break
            train_step, predict = compiled_step(in_phase_two(config, step))
            try:
                image, mask = next(prefetch)
            except (OSError, ValueError) as err:  # e.g. no decodable image or mask file left
                raise TrainingError(f"data at step {step + 1}: {err}") from None
            state, record = train_step(state, vgg_state, record, image, mask)
            step += 1
            images_since += global_batch
            if step % config.train.log_every == 0 or step == config.train.steps:
                fetched = fetch(record)
                check_finite(fetched)
                now = time.perf_counter()
                steps_in = int(fetched["steps"])
                metrics = {"step": step,
                           **{k: float(v) / steps_in for k, v in fetched["sums"].items()},
                           "lr": float(schedule(step - 1)),
                           "images_per_s": images_since / (now - tick),
                           "wall_s": round(now - loop_start, 3),
                           "phase": 2 if in_phase_two(config, step - 1) else 1}
                tick, images_since, record = now, 0, fresh_record()
                log.write(metrics)
            if is_chief and (step % config.train.image_every == 0 or step == config.train.steps):
                _write_grid(workdir, step, predict, state, sample)
            if held_out is not None and (step % config.train.eval_every == 0
                                         or step == config.train.steps):
                at = round(time.perf_counter() - loop_start, 3)  # the scoring not included
                log.write({"step": step, "wall_s": at, **held_out.score(predict, state)})
            if step % config.checkpoint.every_steps == 0 or step == config.train.steps:
                save(step)
            progress.update(step, metrics)
        if stop.received and last_saved != step:
            save(step)
        if stop.received:
            print(f"\n{stop.received}: saved step {step} in {checkpointer.directory}; "
                  "run the same command to resume", flush=True)
    finally:
        prefetch.close()
        progress.close()
        checkpointer.close()
        log.close()
    nnx.update((model, optimizer), state)
    return {"step": step, "metrics": metrics, "model": model,
            "checkpoints": checkpointer.directory}


def _init_from(other_workdir: str, model: PConvUNet, model_meta: dict) -> None:
    """Loads the model variables of another (phase-1) run's newest checkpoint into `model`."""
    try:
        step = ckpt.load_model(other_workdir, model, check_meta=model_meta)
    except FileNotFoundError as err:
        raise TrainingError(f"train.init_from: {err}") from None
    print(f"initialised the model from {other_workdir} (step {step})", flush=True)


def _write_grid(workdir, step, predict, state, sample) -> None:
    """PNG grid: masked input, mask, output, composite, ground truth; one row per image."""
    output = np.asarray(predict(state, jnp.asarray(sample["image"][:4]),
                                jnp.asarray(sample["mask"][:4]))).clip(0, 1)
    image = sample["image"][:4].astype(np.float32) / 255.0  # (n,S,S,3) in [0,1]
    mask = sample["mask"][:4].astype(np.float32)
    comp = mask * image + (1 - mask) * output
    rows = [[image[i] * mask[i], mask[i], output[i], comp[i], image[i]] for i in range(len(image))]
    save_grid(os.path.join(workdir, "samples", f"step_{step:07d}.png"), rows)


class _Progress:
    """tqdm progress bar (step, loss, images/s, ETA) on the chief process."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0)

    def update(self, step: int, metrics: dict) -> None:
        if self.bar is None:
            return
        self.bar.n = step
        if metrics:
            self.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                                 img_s=f"{metrics.get('images_per_s', 0):.2f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _distributed_from_flags(flags) -> None:
    """jax.distributed.initialize from flags or JAX_COORDINATOR_ADDRESS/.../JAX_PROCESS_ID."""
    address = flags.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return
    count = flags.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    index = flags.process_id if flags.process_id is not None else os.environ.get("JAX_PROCESS_ID")
    if not count or index is None:
        raise TrainingError("multi-process training needs --num_processes and --process_id (or "
                            "JAX_NUM_PROCESSES and JAX_PROCESS_ID) with the coordinator address")
    try:
        count, index = int(count), int(index)
    except ValueError:
        raise TrainingError(f"the number of processes ({count!r}) and the process id "
                            f"({index!r}) must be whole numbers") from None
    if not 0 <= index < count:
        raise TrainingError(f"process id {index} must lie in 0..{count - 1}")
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=index)


def _latest_grid(workdir: str) -> str:
    """The newest sample grid of a run (or its samples folder when there is none)."""
    folder = os.path.join(workdir, "samples")
    grids = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return os.path.join(folder, grids[-1]) if grids else folder


def _config_path(argv: list[str]) -> str | None:
    """The file given with --config FILE[:ARGS] or --config=FILE[:ARGS]."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":")[0]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1].split(":")[0]
    return None


def parse_config_flags(flag_values, argv: list[str]) -> str | None:
    """Parses absl flags with a --config file; returns an error message instead of raising."""
    from absl import flags

    config_path = _config_path(argv)
    if config_path and not os.path.isfile(config_path):
        return f"config file not found: {config_path}"
    try:
        rest = flag_values(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, AttributeError) and "get_config" in str(err):
            return f"config file {config_path} has no get_config() function"
        if isinstance(err, (AttributeError, KeyError)):
            overrides = " ".join(a.split("=")[0] for a in argv if a.startswith("--config."))
            # ml_collections' text may hold escaped quotes and a newline: one plain line
            text = str(err.args[0] if err.args else err)
            for junk, plain in (("\\n", "; "), ("\n", "; "), ("\\'", ""), ("'", "")):
                text = text.replace(junk, plain)
            return f"unknown config key {text} (overrides given: {overrides})"
        if "Traceback" in str(err):  # an error raised by the config file: its last line
            last = str(err).strip().splitlines()[-1]
            return f"config file {config_path}: {last}"
        return str(err)
    except Exception as err:  # noqa: BLE001 - the config file is user code: any error is theirs
        return f"cannot load config file {config_path}: {type(err).__name__}: {err}"
    if len(rest) > 1:  # rest[0] is the program
        return (f"unexpected argument(s) {' '.join(rest[1:])}: settings are given as "
                "--config.KEY=VALUE")
    return None


def _as_flag(value: Any) -> str:
    """A config value as it is typed after --config.KEY=."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(str(v) for v in value) + ")"
    return "''" if value == "" else str(value)


def help_text(flag_values, usage: str) -> str:
    """--help: what the command does, its flags, and every config key with its default."""
    flat = []

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, f"{prefix}{key}.")
            else:
                flat.append(f"  --config.{prefix}{key}={_as_flag(value)}")

    walk(default_config(), "")
    flags_help = "\n".join(f"  --{name}: {flag_values[name].help}" for name in
                           ("config", "workdir", "coordinator_address", "num_processes",
                            "process_id"))
    return (f"Trains the partial-convolution UNet (Liu et al. 2018) from an experiment config; "
            f"the same command resumes a stopped run.\n\n{usage}\n\nflags:\n{flags_help}\n\n"
            "config keys (defaults below: the paper's settings; a config file overrides some, "
            "--config.KEY=VALUE any; README.md 'Training' explains them):\n" + "\n".join(flat))


def main(argv: list[str] | None = None) -> None:
    """`python -m pconv_jax.train --config CONFIG.py --workdir DIR [--config.KEY=VALUE ...]`."""
    from absl import flags
    from ml_collections import config_flags

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config file (get_config())",
                                    flag_values=flag_values, lock_config=True)
    flags.DEFINE_string("workdir", None, "run folder: checkpoints, metrics, samples",
                        flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "multi-process: host:port of process 0",
                        flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "multi-process: number of processes",
                         flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "multi-process: this process's index",
                         flag_values=flag_values)
    argv = list(sys.argv if argv is None else argv)
    usage = ("usage: python -m pconv_jax.train --config experiments/configs/demo.py "
             "--workdir runs/demo [--config.KEY=VALUE ...]")
    if any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in argv[1:]):
        print(help_text(flag_values, usage))
        sys.exit(0)
    error = parse_config_flags(flag_values, argv)
    if error:
        print(f"error: {error}\n{usage}", file=sys.stderr)
        sys.exit(2)
    config = flag_values.config
    if config is None or not flag_values.workdir:
        print("error: --config and --workdir are required, e.g. python -m pconv_jax.train "
              "--config experiments/configs/demo.py --workdir runs/demo", file=sys.stderr)
        sys.exit(2)
    try:
        _distributed_from_flags(flag_values)
        result = train_and_evaluate(config, flag_values.workdir)
    except (TrainingError, ckpt.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if jax.process_index() == 0:
        workdir = os.path.abspath(flag_values.workdir)
        print(f"done at step {result['step']}\n  checkpoints: {result['checkpoints']}\n"
              f"  metrics:     {os.path.join(workdir, 'metrics.jsonl')}\n"
              f"  samples:     {_latest_grid(workdir)}\n"
              f"  tensorboard: tensorboard --logdir "
              f"{shlex.quote(os.path.join(workdir, 'tensorboard'))}")


if __name__ == "__main__":
    main()
