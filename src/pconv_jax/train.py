"""Training: `python -m pconv_jax.train --config experiments/configs/NAME.py --workdir DIR`.

`train_and_evaluate(config, workdir)` is the whole job, in the order things happen: set-up,
model, restore, data, the loop. `create_train_state` and `train_step_fn` are the one place a
model, optimizer, VGG-16 and step are built (benchmarks, the GPU check and tests use them). The
jitted step, (state, vgg_state, record, image, mask) -> (state, record), runs over a mesh of all
devices: the batch sharded on 'data', the state replicated and donated; BatchNorm statistics
are over the global batch. Between log steps the loop never waits for the device: batches are
placed two steps ahead, and the metrics accumulate on the device until a log step or a save.
Phase 2 (encoder BatchNorm frozen, a lower learning rate) starts at `train.finetune_step`, or
from a phase-1 run with `train.init_from`. Config: `pconv_jax.config`; run infrastructure:
`pconv_jax.run_utils`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shlex
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from pconv_jax import checkpoint as ckpt
from pconv_jax import config as config_lib
from pconv_jax import data as data_lib
from pconv_jax import losses, optim, vgg
from pconv_jax.config import default_config, model_settings  # noqa: F401 - older config files
from pconv_jax.masks import MaskSource
from pconv_jax.model import PConvUNet, UNetConfig
from pconv_jax.paths import OverlapError, check_outputs, probe_writable
from pconv_jax.run_utils import (
    DevicePrefetch,
    DistributedError,
    HeldOut,
    MetricsLog,
    Progress,
    StopSignal,
    initialize_distributed,
    latest_grid,
    package_versions,
    write_grid,
)


class TrainingError(RuntimeError):
    """A run that cannot go on, with a message for the user (no traceback)."""


# ---------------------------------------------------------------------------------------------
# The train state and the step
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainState:
    """What a run trains and how: the model, its optimizer, the loss weights, the moving
    average of the weights (None without optim.ema_decay) and the VGG-16 feature network
    (graphdef and state; None when no loss term needs it)."""

    model: PConvUNet
    optimizer: nnx.Optimizer
    weights: losses.LossWeights
    vgg_graphdef: Any = None
    vgg_state: Any = None
    log_zero_terms: bool = False
    average: nnx.EMA | None = None

    @property
    def record_keys(self) -> tuple[str, ...]:
        """The metrics the step records: the loss and each term it computes."""
        return ("loss", *losses.logged_terms(self.weights, self.log_zero_terms))

    def objects(self) -> tuple:
        """(model, optimizer) or (model, optimizer, average): what the step updates."""
        extra = () if self.average is None else (self.average,)
        return (self.model, self.optimizer, *extra)

    def arrays(self) -> Any:
        """The state the step takes and returns (and a checkpoint holds): the variables of
        model, optimizer and, when kept, the average, as items 0, 1 and 2."""
        return nnx.state(self.objects())


def load_vgg(config: ml_collections.ConfigDict) -> vgg.VGG16Features:
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


def create_train_state(config: ml_collections.ConfigDict) -> TrainState:
    """The model (in training mode, seeded by `config.seed`), its optimizer and the VGG-16 of
    `config`; no VGG-16 at all when no loss term needs it."""
    try:
        model_cfg = config_lib.unet_config(config)
    except config_lib.ConfigError as err:
        raise TrainingError(str(err)) from None
    weights = config_lib.loss_weights(config)
    log_zero_terms = bool(config.loss.get("log_zero_terms", False))
    model = PConvUNet(model_cfg, rngs=nnx.Rngs(config.seed))
    model.train()
    optimizer = nnx.Optimizer(model, optim.optimizer_transform(config), wrt=nnx.Param)
    state = TrainState(model, optimizer, weights, log_zero_terms=log_zero_terms,
                       average=optim.create_average(model, optim.ema_decay(config)))
    if losses.needs_vgg(weights, log_zero_terms):
        state.vgg_graphdef, state.vgg_state = nnx.split(load_vgg(config))
    return state


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
        model, optimizer, *average = nnx.merge(graphdef, state)
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
        if average:
            optim.update_average(average[0], model, step)
        record = accumulate(record, {"loss": loss, **terms}, step)
        return nnx.state((model, optimizer, *average)), record

    return train_step


def jit_train_step(train_step, mesh: jax.sharding.Mesh):
    """`train_step` jitted as the loop runs it over `mesh`: image and mask sharded on 'data',
    everything else replicated, the state and the metrics record donated."""
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(train_step, in_shardings=(replicated, replicated, replicated, batch, batch),
                   out_shardings=(replicated, replicated), donate_argnums=(0, 2))


@functools.lru_cache(maxsize=32)
def _cached_step(graphdef, vgg_graphdef, weights, log_zero_terms, mesh):
    """One jitted step per (graph, VGG graph, weights, mesh): equal configurations share it,
    and with it jit's cache of compiled executables."""
    return jit_train_step(make_train_step(graphdef, vgg_graphdef, weights, log_zero_terms),
                          mesh)


def train_step_fn(state: TrainState, mesh: jax.sharding.Mesh):
    """The jitted step for `state`'s model as it is now (its BatchNorm frozen or not) over
    `mesh`: called as step(state.arrays(), state.vgg_state, record, image, mask)."""
    graphdef, _ = nnx.split(state.objects())
    return _cached_step(graphdef, state.vgg_graphdef, state.weights, state.log_zero_terms, mesh)


@functools.lru_cache(maxsize=32)
def _cached_predict(graphdef):
    """Eval-mode forward for sample grids and held-out scores, one jitted per model graph:
    (state, image uint8, mask uint8) -> output in [0,1], with the averaged weights if kept."""

    def predict(state, image, mask):
        model, _, *average = nnx.merge(graphdef, state)
        if average:
            model = average[0].apply_to(model)
        model.eval()
        output, _ = model(*to_float(image, mask))
        return (output + 1) / 2

    return jax.jit(predict)


def predict_fn(state: TrainState):
    """The jitted eval-mode forward of `state`'s model: predict(state.arrays(), image, mask)."""
    graphdef, _ = nnx.split(state.objects())
    return _cached_predict(graphdef)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------

# the settings that decide what the variables are and mean (init_from and resuming check them;
# older checkpoints lacking normalization or first_bias pass as the defaults)
SHAPE_KEYS = ("depth", "in_channels", "out_channels", "encoder_widths", "encoder_kernels",
              "decoder_kernel", "normalization", "first_bias")


@dataclasses.dataclass
class Run:
    """Where and how a run trains: its folder, mesh, batch split and this process's role."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: jax.sharding.Mesh
    global_batch: int
    process: int
    processes: int

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run's files."""
        return self.process == 0

    @property
    def replicated(self) -> NamedSharding:
        """Sharding of the state: a full copy on every device."""
        return NamedSharding(self.mesh, P())


def set_up(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Checks `config`, builds the mesh and checks the run folder before anything is written."""
    try:
        config_lib.check_config(config, len(jax.devices()))
    except config_lib.ConfigError as err:
        raise TrainingError(str(err)) from None
    num_devices = config.get("num_devices", -1)
    devices = jax.devices() if num_devices in (None, -1) else jax.devices()[:num_devices]
    global_batch = config.train.batch_size
    if global_batch % len(devices):
        raise TrainingError(f"train.batch_size {global_batch} is not divisible by the "
                            f"{len(devices)} devices of the mesh")
    try:  # the run folder may overlap no input, however spelled
        check_outputs({"--workdir": workdir}, {
            f"data.{key}": config.data.get(key) for key in
            ("source", "masks", "eval_source", "tfds_data_dir")} | {
            "vgg.weights": config.vgg.get("weights"),
            "train.init_from": config.train.get("init_from")})
        probe_writable(workdir, "--workdir")
    except (OverlapError, OSError) as err:
        raise TrainingError(str(err)) from None
    return Run(config, workdir, jax.sharding.Mesh(np.array(devices), ("data",)),
               global_batch, jax.process_index(), jax.process_count())


def model_meta(model_cfg: UNetConfig) -> dict:
    """{"model.NAME": value} of the settings a checkpoint's variables must match."""
    return {f"model.{k}": json.loads(json.dumps(getattr(model_cfg, k))) for k in SHAPE_KEYS}


def init_from(other_workdir: str, model: PConvUNet, meta: dict) -> None:
    """Loads the model variables of another (phase-1) run's newest checkpoint into `model`:
    its trained weights, not their moving average if it kept one."""
    try:
        step = ckpt.load_model(other_workdir, model, check_meta=meta, average=False)
    except FileNotFoundError as err:
        raise TrainingError(f"train.init_from: {err}") from None
    print(f"initialised the model from {other_workdir} (step {step})", flush=True)


def restore(run: Run, state: TrainState, checkpointer: ckpt.Checkpointer) -> tuple[int, Any]:
    """Resumes from the newest readable checkpoint of the run (or starts from train.init_from):
    (the step to start at, the data iterator's state or None). Places the state on the mesh."""
    meta = model_meta(state.model.config)
    arrays = jax.device_put(state.arrays(), run.replicated)
    # an average kept or not changes what the checkpoint holds: resuming needs the same one
    restored = checkpointer.restore(ckpt.abstract(arrays), check_meta={
        **meta, "optim.ema_decay": optim.ema_decay(run.config)}, delete_unreadable=True)
    start_step, data_state = 0, None
    if restored is not None:
        start_step, arrays, data_state, _ = restored
        print(f"resuming from step {start_step} in {checkpointer.directory}", flush=True)
    elif run.config.train.get("init_from"):
        init_from(run.config.train.init_from, state.model, meta)
        if state.average is not None:  # the average starts at the weights it starts from
            state.average = optim.create_average(state.model, optim.ema_decay(run.config))
        arrays = jax.device_put(state.arrays(), run.replicated)
    nnx.update(state.objects(), arrays)
    return start_step, data_state


@dataclasses.dataclass
class Data:
    """The run's input: placed batches, a fixed sample batch for grids, held-out pairs."""

    prefetch: DevicePrefetch
    sample: dict
    held_out: HeldOut | None


def open_data(run: Run, data_state: dict | None) -> Data:
    """The training batches of this process (resumed at `data_state`), placed two ahead."""
    config = run.config
    try:
        source = data_lib.open_source(config.data.source, config.data.get("tfds_data_dir"))
        masks = MaskSource(config.data.image_size, config.data.get("masks") or None,
                           hole_range=tuple(config.data.hole_range))
        dataset = data_lib.train_dataset(
            source, image_size=config.data.image_size,
            local_batch=run.global_batch // run.processes, seed=config.seed, masks=masks,
            shard_index=run.process, shard_count=run.processes,
            scale_range=tuple(config.data.scale_range),
            colour_jitter=config.data.get("colour_jitter", 0.0),
            smooth_fraction=config.data.get("smooth_fraction", 0.0))
        sample = dataset[0]  # a fixed batch for the image grids; reads the data once
        held_out = None
        if config.train.get("eval_every", 0) and run.is_chief:
            held_out = HeldOut(data_lib.open_source(config.data.eval_source,
                                                    config.data.get("tfds_data_dir")),
                               config.data.image_size, config.data.eval_pairs, config.seed)
    except (OSError, ValueError) as err:
        raise TrainingError(f"data: {err}") from None
    batches = data_lib.batch_iterator(dataset, workers=config_lib.data_workers(config),
                                      threads=config.data.get("threads", 2))
    if data_state is not None:
        try:
            batches.set_state(data_state)
        except ValueError as err:
            raise TrainingError(f"checkpoint data state: {err}") from None
    return Data(DevicePrefetch(batches, NamedSharding(run.mesh, P("data")), depth=2),
                sample, held_out)


def write_run_files(run: Run) -> None:
    """WORKDIR/config.json (the run's full config) and versions.json (its packages)."""
    if run.is_chief:
        with open(os.path.join(run.workdir, "config.json"), "w") as f:
            f.write(run.config.to_json_best_effort(indent=1))
        with open(os.path.join(run.workdir, "versions.json"), "w") as f:
            json.dump(package_versions(), f, indent=1)


def build_state(run: Run) -> TrainState:
    """`create_train_state` of the run's config, its VGG-16 placed on the mesh."""
    config = run.config
    state = create_train_state(config)
    if state.vgg_state is not None:
        state.vgg_state = jax.device_put(state.vgg_state, run.replicated)
    elif run.is_chief and not config.vgg.get("weights") and any(
            config.loss.weights[t] for t in losses.VGG_TERMS):
        print("no vgg.weights file (vgg.fallback='off'): the perceptual and style terms are "
              "off; pass --config.vgg.weights=FILE to train with them", flush=True)
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains per `config` in `workdir` (resuming what is there); returns the last metrics."""
    stop = StopSignal()  # from the start: a signal during set-up also ends in a clean save
    try:
        # --- Set-up: devices, mesh, run folder ----------------------------------------------
        run = set_up(config, workdir)
        # --- Model, loss, optimizer -----------------------------------------------------------
        state = build_state(run)
        # --- Restore --------------------------------------------------------------------------
        checkpointer = ckpt.Checkpointer(workdir, keep=config.checkpoint.keep)
        start_step, data_state = restore(run, state, checkpointer)
        # --- Data -----------------------------------------------------------------------------
        data = open_data(run, data_state)
        write_run_files(run)
        # --- The loop and the final save ------------------------------------------------------
        loop = Loop(run, state, data, checkpointer, stop, start_step)
        try:
            loop.train()
        finally:
            loop.close()
    finally:
        stop.restore()
    nnx.update(state.objects(), loop.arrays)
    return {"step": loop.step, "metrics": loop.metrics, "model": state.model,
            "average": state.average, "checkpoints": checkpointer.directory}


class Loop:
    """The training loop of one process: steps, log records, grids, held-out scores, saves.

    Between log steps nothing waits for the device: the step is dispatched, the next batch read
    and placed while it runs, and the metrics stay in `record` on the device.
    """

    def __init__(self, run: Run, state: TrainState, data: Data, checkpointer: ckpt.Checkpointer,
                 stop: StopSignal, start_step: int):
        self.run, self.state, self.data = run, state, data
        self.checkpointer, self.stop = checkpointer, stop
        self.config = run.config
        self.step = start_step
        self.last_saved = start_step if start_step else None
        self.metrics: dict = {}
        self.schedule = optim.learning_rate(self.config)
        self.log = MetricsLog(run.workdir, start_step, enabled=run.is_chief)
        self.progress = Progress(self.config.train.steps, start_step, enabled=run.is_chief)
        self.arrays = state.arrays()
        self.record = self._fresh_record()  # on the device: interval sums, first bad step
        self.tick = self.start = time.perf_counter()  # wall_s: since this process's loop began
        self.images_since = 0
        self.compiled: dict[bool, tuple] = {}

    def _fresh_record(self) -> dict:
        return jax.device_put(empty_record(self.state.record_keys), self.run.replicated)

    def _compiled(self):
        """(step, predict) for the current phase: encoder BatchNorm frozen in phase 2."""
        phase_two = optim.in_phase_two(self.config, self.step)
        if phase_two not in self.compiled:
            self.state.model.freeze_encoder_batchnorm(phase_two)
            self.compiled[phase_two] = (train_step_fn(self.state, self.run.mesh),
                                        predict_fn(self.state))
        return self.compiled[phase_two]

    def train(self) -> None:
        """Steps until train.steps or a stop signal; saves at the end and on a signal."""
        train, every = self.config.train, self.config.checkpoint.every_steps
        while self.step < train.steps:
            # several processes agree on stopping at log steps only (a collective each time)
            if (self.run.processes == 1 or self.step % train.log_every == 0) and \
                    self.stop.agreed(self.run.processes):
                break
            train_step, predict = self._compiled()
            try:
                image, mask = next(self.data.prefetch)
            except (OSError, ValueError) as err:  # e.g. no decodable image or mask file left
                raise TrainingError(f"data at step {self.step + 1}: {err}") from None
            self.arrays, self.record = train_step(self.arrays, self.state.vgg_state,
                                                  self.record, image, mask)
            self.step += 1
            self.images_since += self.run.global_batch
            last = self.step == train.steps
            if self.step % train.log_every == 0 or last:
                self._log()
            if self.run.is_chief and (self.step % train.image_every == 0 or last):
                write_grid(self.run.workdir, self.step, predict, self.arrays, self.data.sample)
            if self.data.held_out is not None and (self.step % train.eval_every == 0 or last):
                at = round(time.perf_counter() - self.start, 3)  # the scoring not included
                self.log.write({"step": self.step, "wall_s": at,
                                **self.data.held_out.score(predict, self.arrays)})
            if self.step % every == 0 or last:
                self._save()
            self.progress.update(self.step, self.metrics)
        if self.stop.received and self.last_saved != self.step:
            self._save()
        if self.stop.received:
            print(f"\n{self.stop.received}: saved step {self.step} in "
                  f"{self.checkpointer.directory}; run the same command to resume", flush=True)

    def _log(self) -> None:
        """Fetches the interval's sums and writes their means as one record."""
        fetched = fetch(self.record)
        self._check_finite(fetched)
        now = time.perf_counter()
        steps_in = int(fetched["steps"])
        self.metrics = {"step": self.step,
                        **{k: float(v) / steps_in for k, v in fetched["sums"].items()},
                        "lr": float(self.schedule(self.step - 1)),
                        "images_per_s": self.images_since / (now - self.tick),
                        "wall_s": round(now - self.start, 3),
                        "phase": 2 if optim.in_phase_two(self.config, self.step - 1) else 1}
        self.tick, self.images_since, self.record = now, 0, self._fresh_record()
        self.log.write(self.metrics)

    def _check_finite(self, fetched: dict) -> None:
        """TrainingError naming the first non-finite step and terms, if there was one."""
        bad_step = int(fetched["bad_step"])
        if bad_step < 0:
            return
        bad = {k: float(v) for k, v in fetched["bad"].items() if not math.isfinite(float(v))}
        raise TrainingError(
            f"non-finite loss at step {bad_step}: {', '.join(bad)} "
            f"({', '.join(f'{k}={v}' for k, v in bad.items())}). "
            + (f"The last good checkpoint is step {self.last_saved} in "
               f"{self.checkpointer.directory}; it is left intact."
               if self.last_saved is not None else "No checkpoint was saved before it."))

    def _save(self) -> None:
        """Checkpoints the state, the data position and the run's settings at this step."""
        self._check_finite(fetch({k: self.record[k] for k in ("bad_step", "bad")}))
        model_cfg = self.state.model.config
        meta = {**model_cfg.output_settings(), **model_meta(model_cfg), "step": self.step,
                "seed": self.config.seed, "batch_size": self.run.global_batch,
                "optim.ema_decay": optim.ema_decay(self.config)}
        self.checkpointer.save(self.step, self.arrays, self.data.prefetch.state(), meta)
        self.last_saved = self.step

    def close(self) -> None:
        """Stops the readers, closes the bar, waits for the last save and flushes the log."""
        self.data.prefetch.close()
        self.progress.close()
        self.checkpointer.close()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def help_text(flag_values, usage: str) -> str:
    """--help: what the command does, its flags, and every config key with its default."""
    flags_help = "\n".join(f"  --{name}: {flag_values[name].help}" for name in
                           ("config", "workdir", "coordinator_address", "num_processes",
                            "process_id"))
    return (f"Trains the partial-convolution UNet (Liu et al. 2018) from an experiment config; "
            f"the same command resumes a stopped run.\n\n{usage}\n\nflags:\n{flags_help}\n\n"
            "config keys (defaults below: the paper's settings; a config file overrides some, "
            "--config.KEY=VALUE any; docs/training.md explains them):\n" + config_lib.keys_help())


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
    error = config_lib.parse_config_flags(flag_values, argv)
    if error:
        print(f"error: {error}\n{usage}", file=sys.stderr)
        sys.exit(2)
    config = flag_values.config
    if config is None or not flag_values.workdir:
        print("error: --config and --workdir are required, e.g. python -m pconv_jax.train "
              "--config experiments/configs/demo.py --workdir runs/demo", file=sys.stderr)
        sys.exit(2)
    ckpt.quiet_orbax_failures()  # an unreadable checkpoint is one line, not Orbax's tracebacks
    try:
        initialize_distributed(flag_values.coordinator_address, flag_values.num_processes,
                               flag_values.process_id)
        result = train_and_evaluate(config, flag_values.workdir)
    except (TrainingError, ckpt.CheckpointError, DistributedError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if jax.process_index() == 0:
        workdir = os.path.abspath(flag_values.workdir)
        print(f"done at step {result['step']}\n  checkpoints: {result['checkpoints']}\n"
              f"  metrics:     {os.path.join(workdir, 'metrics.jsonl')}\n"
              f"  samples:     {latest_grid(workdir)}\n"
              f"  tensorboard: tensorboard --logdir "
              f"{shlex.quote(os.path.join(workdir, 'tensorboard'))}")


if __name__ == "__main__":
    main()
