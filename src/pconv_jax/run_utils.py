"""Run infrastructure around the training loop: the metrics log, the stop signal, device
prefetch, held-out scoring, sample grids and the progress bar.

Nothing here builds a model or a step (train.py does); each piece is a small object the loop in
`train.train_and_evaluate` drives.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from pconv_jax import data as data_lib
from pconv_jax.visualize import save_grid


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
        from pconv_jax.baselines import fill
        from pconv_jax.masks import irregular_mask

        rng = np.random.default_rng(seed)
        entries = [{"mask": irregular_mask(size, rng, float(r))}
                   for r in np.linspace(0.05, 0.55, count)]
        self.gts, masks = evaluate.eval_pairs(images, entries, 0, count)  # (P,S,S,3) uint8
        self.masks = masks.astype(np.uint8)[..., None]  # (P,S,S,1) 1 = valid
        telea = np.stack([fill("telea", g, m) for g, m in zip(self.gts, masks, strict=True)])
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


def write_grid(workdir: str, step: int, predict: Any, state: Any, sample: dict) -> None:
    """PNG grid: masked input, mask, output, composite, ground truth; one row per image."""
    output = np.asarray(predict(state, jnp.asarray(sample["image"][:4]),
                                jnp.asarray(sample["mask"][:4]))).clip(0, 1)
    image = sample["image"][:4].astype(np.float32) / 255.0  # (n,S,S,3) in [0,1]
    mask = sample["mask"][:4].astype(np.float32)
    comp = mask * image + (1 - mask) * output
    rows = [[image[i] * mask[i], mask[i], output[i], comp[i], image[i]] for i in range(len(image))]
    save_grid(os.path.join(workdir, "samples", f"step_{step:07d}.png"), rows)


class Progress:
    """tqdm progress bar (step, loss, images/s, ETA) on the chief process."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0)

    def update(self, step: int, metrics: dict) -> None:
        """Moves the bar to `step`, showing the last logged loss and images/s."""
        if self.bar is None:
            return
        self.bar.n = step
        if metrics:
            self.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                                 img_s=f"{metrics.get('images_per_s', 0):.2f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """Closes the bar (leaves the last line on the terminal)."""
        if self.bar is not None:
            self.bar.close()



class DistributedError(ValueError):
    """Multi-process settings that cannot start a run, with a message for the user."""


def initialize_distributed(address: str | None, count: int | None, index: int | None) -> None:
    """jax.distributed.initialize from the arguments, else JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID; nothing without a coordinator address."""
    address = address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return
    count = count or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    index = index if index is not None else os.environ.get("JAX_PROCESS_ID")
    if not count or index is None:
        raise DistributedError("multi-process training needs --num_processes and --process_id "
                               "(or JAX_NUM_PROCESSES and JAX_PROCESS_ID) with the coordinator "
                               "address")
    try:
        count, index = int(count), int(index)
    except ValueError:
        raise DistributedError(f"the number of processes ({count!r}) and the process id "
                               f"({index!r}) must be whole numbers") from None
    if not 0 <= index < count:
        raise DistributedError(f"process id {index} must lie in 0..{count - 1}")
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=index)


def latest_grid(workdir: str) -> str:
    """The newest sample grid of a run (or its samples folder when there is none)."""
    folder = os.path.join(workdir, "samples")
    grids = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return os.path.join(folder, grids[-1]) if grids else folder
