"""Training: `python -m pconv_jax.train --config experiments/configs/NAME.py --workdir DIR`.

`train_and_evaluate(config, workdir)` is the whole job: set-up (devices, mesh), data, model,
loss and optimizer, restore, the loop, the final save. The jitted step is a pure function of
(state, batch) -> (state, metrics) over a mesh of all devices: the batch sharded on 'data',
parameters and optimizer state replicated, the state buffers donated. BatchNorm statistics are
over the global batch. Phase 2 of the paper (encoder BatchNorm frozen, a lower learning rate)
starts at `train.finetune_step`, or from a phase-1 checkpoint with `train.init_from`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
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
        scale_range=(1.0, 1.0),  # shorter side resized to image_size * U(range) before cropping
        masks="",  # a folder of mask images (white = hole), or '' for generated irregular masks
        hole_range=(0.01, 0.6),
        threads=2,
    ))
    c.model = ml_collections.ConfigDict(model_settings(UNetConfig.paper()))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=6, steps=800_000, log_every=100, image_every=5000,
        finetune_step=-1,  # phase 2 (encoder BatchNorm frozen, finetune_lr) from here; -1: never
        init_from="",  # start from the model of another run's newest checkpoint (phase 2 runs)
        compute_dtype="float32",
    ))
    c.optim = ml_collections.ConfigDict(dict(lr=2e-4, finetune_lr=5e-5, b1=0.9, b2=0.999))
    c.loss = ml_collections.ConfigDict(dict(weights=dataclasses.asdict(losses.LossWeights())))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=5000, keep=3))
    c.vgg = ml_collections.ConfigDict(dict(weights="", random_seed=0))
    return c


def model_settings(model: UNetConfig) -> dict:
    """The `config.model` entries of a UNetConfig preset (size and dtype come from elsewhere)."""
    return {k: v for k, v in dataclasses.asdict(model).items() if k not in ("image_size", "dtype")}


def unet_config(config: ml_collections.ConfigDict) -> UNetConfig:
    """The model's UNetConfig from `config.model` and `config.train.compute_dtype`."""
    fields = {f.name for f in dataclasses.fields(UNetConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.items()
              if k in fields}
    unknown = set(config.model.keys()) - fields
    if unknown:
        raise TrainingError(f"unknown model settings {sorted(unknown)}; known: {sorted(fields)}")
    dtype = config.train.get("compute_dtype", "float32")
    values["dtype"] = dtype
    if dtype != "float32" and values.get("mask_eps", 1e-8) < 1e-6:
        values["mask_eps"] = 1e-6  # the authors' advice under mixed precision
    values["image_size"] = config.data.image_size
    try:
        return UNetConfig(**values)
    except ValueError as err:
        raise TrainingError(f"model configuration: {err}") from None


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
    """Raises TrainingError naming every count or interval of `config` that cannot work."""
    problems = []
    for key, least in (("train.steps", 0), ("train.batch_size", 1), ("train.log_every", 1),
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
    if not isinstance(threads, int) or threads < 0:
        problems.append(f"data.threads must be a whole number >= 0, got {threads!r}")
    scale = tuple(config.data.scale_range)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        problems.append(f"data.scale_range must be (lo, hi) with 0 < lo <= hi, got {scale}")
    if problems:
        raise TrainingError("; ".join(problems))


def loss_weights(config: ml_collections.ConfigDict) -> losses.LossWeights:
    """LossWeights from `config.loss.weights`."""
    return losses.LossWeights(**{k: float(v) for k, v in config.loss.weights.items()})


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
    """optim.lr until train.finetune_step, optim.finetune_lr after."""
    start = config.train.finetune_step
    if start is None or start < 0:
        return optax.constant_schedule(config.optim.lr)
    lr, finetune_lr = config.optim.lr, config.optim.finetune_lr
    return lambda count: jnp.where(count >= start, finetune_lr, lr)  # count: updates done


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


def make_train_step(graphdef, vgg_graphdef, weights: losses.LossWeights, schedule):
    """The pure step (state, vgg_state, image, mask) -> (state, metrics)."""

    def train_step(state, vgg_state, image, mask):
        model, optimizer = nnx.merge(graphdef, state)
        features = nnx.merge(vgg_graphdef, vgg_state)
        target = image * 2 - 1  # (N,H,W,3) in [-1,1]

        def loss_fn(model):
            output, _ = model(target, mask)
            terms = losses.loss_terms(output, target, mask, features)
            return losses.total_loss(terms, weights), terms

        (loss, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        lr = schedule(optimizer.step[...])
        optimizer.update(model, grads)
        metrics = {"loss": loss, **terms, "lr": lr}
        return nnx.state((model, optimizer)), metrics

    return train_step


def make_predict(graphdef):
    """Eval-mode forward for sample grids: (state, image [0,1], mask) -> output [0,1]."""

    def predict(state, image, mask):
        model, _ = nnx.merge(graphdef, state)
        model.eval()
        output, _ = model(image * 2 - 1, mask)
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


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def _load_vgg(config) -> vgg.VGG16Features:
    path = config.vgg.get("weights")
    if path:
        try:
            return vgg.load_vgg16(path)
        except (OSError, ValueError) as err:
            raise TrainingError(f"vgg.weights: {err}") from None
    return vgg.random_vgg16(config.vgg.get("random_seed", 0))


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
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"cannot create the workdir {workdir}: {err.strerror}") from None

    # --- Model, loss, optimizer ------------------------------------------------------------------
    model_cfg = unet_config(config)
    weights = loss_weights(config)
    model = PConvUNet(model_cfg, rngs=nnx.Rngs(config.seed))
    model.train()
    optimizer = nnx.Optimizer(model, optimizer_transform(config), wrt=nnx.Param)
    features = _load_vgg(config)
    vgg_graphdef, vgg_state = nnx.split(features)
    vgg_state = jax.device_put(vgg_state, replicated)

    # --- Restore -------------------------------------------------------------------------------
    checkpointer = ckpt.Checkpointer(workdir, keep=config.checkpoint.keep)
    state = jax.device_put(nnx.state((model, optimizer)), replicated)
    shape_keys = ("depth", "in_channels", "out_channels", "encoder_widths", "encoder_kernels",
                  "decoder_kernel")
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
        )
        sample = dataset[0]  # a fixed batch for the image grids; reads the data once
    except (OSError, ValueError) as err:
        raise TrainingError(f"data: {err}") from None
    batches = data_lib.batch_iterator(dataset, threads=config.data.get("threads", 2))
    if data_state is not None:
        batches.set_state(data_state)

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
                jax.jit(make_train_step(graphdef, vgg_graphdef, weights, schedule),
                        in_shardings=(replicated, replicated, batch_sharding, batch_sharding),
                        out_shardings=(replicated, replicated), donate_argnums=0),
                jax.jit(make_predict(graphdef)),
            )
        return step_fns[phase_two]

    log = MetricsLog(workdir, start_step, enabled=is_chief)
    progress = _Progress(config.train.steps, start_step, enabled=is_chief)
    state = nnx.state((model, optimizer))
    last_saved = start_step if restored is not None else None
    metrics: dict = {}
    step = start_step
    tick, images_since = time.perf_counter(), 0
    window: dict[str, float] = {}  # metric sums since the last log line
    window_steps = 0

    def save(at_step: int) -> None:
        nonlocal last_saved
        checkpointer.save(at_step, state, batches.get_state(),
                          {**model_meta, "step": at_step, "seed": config.seed,
                           "batch_size": global_batch})
        last_saved = at_step

    try:
        while step < config.train.steps:
            if stop.agreed(processes):
                break
            train_step, predict = compiled_step(in_phase_two(config, step))
            try:
                local = next(batches)
            except (OSError, ValueError) as err:  # e.g. no decodable image or mask file left
                raise TrainingError(f"data at step {step + 1}: {err}") from None
            image = jax.make_array_from_process_local_data(batch_sharding, local["image"])
            mask = jax.make_array_from_process_local_data(batch_sharding, local["mask"])
            new_state, step_metrics = train_step(state, vgg_state, image, mask)
            step_metrics = jax.device_get(step_metrics)
            bad = [k for k, v in step_metrics.items() if not math.isfinite(float(v))]
            if bad:
                raise TrainingError(
                    f"non-finite loss at step {step + 1}: {', '.join(bad)} "
                    f"({', '.join(f'{k}={float(step_metrics[k])}' for k in bad)}). "
                    + (f"The last good checkpoint is step {last_saved} in "
                       f"{checkpointer.directory}; it is left intact." if last_saved is not None
                       else "No checkpoint was saved before it.")
                )
            state = new_state
            step += 1
            images_since += global_batch
            for key, value in step_metrics.items():  # loss and terms: means over the interval
                window[key] = window.get(key, 0.0) + float(value)
            window_steps += 1
            if step % config.train.log_every == 0 or step == config.train.steps:
                now = time.perf_counter()
                metrics = {"step": step, **{k: v / window_steps for k, v in window.items()},
                           "lr": float(step_metrics["lr"]),
                           "images_per_s": images_since / (now - tick),
                           "phase": 2 if in_phase_two(config, step - 1) else 1}
                tick, images_since, window, window_steps = now, 0, {}, 0
                log.write(metrics)
            if is_chief and (step % config.train.image_every == 0 or step == config.train.steps):
                _write_grid(workdir, step, predict, state, sample)
            if step % config.checkpoint.every_steps == 0 or step == config.train.steps:
                save(step)
            progress.update(step, metrics)
        if stop.received and last_saved != step:
            save(step)
        if stop.received:
            print(f"\n{stop.received}: saved step {step} in {checkpointer.directory}; "
                  "run the same command to resume", flush=True)
    finally:
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
    image, mask = sample["image"][:4], sample["mask"][:4]
    output = np.asarray(predict(state, jnp.asarray(image), jnp.asarray(mask))).clip(0, 1)
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
        flag_values(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, AttributeError) and "get_config" in str(err):
            return f"config file {config_path} has no get_config() function"
        if isinstance(err, (AttributeError, KeyError)):
            overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
            return f"unknown config key {err} among the overrides {overrides}"
        return str(err)
    except Exception as err:  # noqa: BLE001 - the config file is user code: any error is theirs
        return f"cannot load config file {config_path}: {type(err).__name__}: {err}"
    return None


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
        print(f"{__doc__}\n{usage}\n\nflags:\n"
              + "\n".join(f"  --{name}: {flag_values[name].help}" for name in
                          ("config", "workdir", "coordinator_address", "num_processes",
                           "process_id"))
              + "\n  --config.KEY=VALUE: override any config key, e.g. "
                "--config.train.steps=20 --config.loss.weights.tv=0")
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
              f"  tensorboard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")


if __name__ == "__main__":
    main()
