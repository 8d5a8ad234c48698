"""Orbax checkpoints of a training run: save, keep the last K, resume, restore for evaluation.

A checkpoint at step S holds three items: `state` (model parameters, BatchNorm statistics,
optimizer state: any pytree of arrays), `data` (the input iterator's state, JSON) and `meta`
(JSON: step, model configuration, seed). Saving is asynchronous. Restoring tries the newest
step first and falls back to older ones with a warning when a checkpoint cannot be read.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

# Settings that checkpoints of older versions did not record, with the value those had.
UNRECORDED_DEFAULTS = {"model.normalization": "none", "model.first_bias": True,
                       "model.ratio_cap": 0.0, "optim.ema_decay": 0.0}


class CheckpointError(ValueError):
    """A workdir's checkpoints cannot be used as asked; the message says why and what to do."""


class ConfigMismatchError(CheckpointError):
    """The workdir holds checkpoints of another model configuration."""


class UnreadableCheckpointError(CheckpointError):
    """The workdir holds checkpoints, but none of them could be restored."""


def checkpoint_dir(workdir: str) -> str:
    """Where a run's checkpoints live: WORKDIR/checkpoints (absolute)."""
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
    """Save/restore of (state, data iterator state, metadata) under `workdir/checkpoints`."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "meta"))

    def steps(self) -> list[int]:
        """Saved steps, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data: dict, meta: dict) -> None:
        """Starts an asynchronous save of step `step`."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data),
            meta=ocp.args.JsonSave(meta),
        ), force=True)

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        self.manager.wait_until_finished()

    def read_meta(self, step: int) -> dict:
        """The JSON metadata of one step."""
        return self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, abstract_state: Any, step: int | None = None,
                check_meta: dict | None = None,
                delete_unreadable: bool = False) -> tuple[int, Any, dict, dict] | None:
        """(step, state, data, meta) of `step`, or of the newest readable step.

        None when there is no checkpoint; UnreadableCheckpointError when none can be restored.

        abstract_state: the state's structure as jax.ShapeDtypeStruct leaves (with shardings).
        check_meta: entries that must equal the checkpoint's metadata (the model
        configuration), else ConfigMismatchError. delete_unreadable: remove the newer
        checkpoints that could not be read once an older one is restored (a resuming run writes
        them anew).
        """
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                  data=ocp.args.JsonRestore())
        found = self._restore(args, step, check_meta, delete_unreadable)
        if found is None:
            return None
        candidate, restored, meta = found
        return candidate, restored["state"], restored["data"], meta

    def restore_model(self, abstract_model: Any, step: int | None = None,
                      check_meta: dict | None = None,
                      extra: dict[int, Any] | None = None) -> tuple[int, Any, dict] | None:
        """(step, model state, meta) without reading the optimizer state (evaluation,
        init_from).

        The training state is (model, optimizer[, average]); only item 0 (unless
        `abstract_model` is None) and the items of `extra` ({index: abstract state}, e.g.
        {2: the average}) are read. With `extra` the state returned is {index: state}.
        """
        item = {**({} if abstract_model is None else {0: abstract_model}), **(extra or {})}
        args = ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True))
        found = self._restore(args, step, check_meta, delete_unreadable=False)
        if found is None:
            return None
        state = found[1]["state"]
        return found[0], (state if extra else state[0]), found[2]

    def _restore(self, args, step, check_meta, delete_unreadable):
        """(step, restored items, meta) of the newest readable candidate, or None."""
        if step is not None and step not in self.steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                                    f"saved steps: {self.steps()}")
        candidates = [step] if step is not None else list(reversed(self.steps()))
        unreadable, errors = [], []
        for candidate in candidates:
            try:
                meta = self.read_meta(candidate)
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint
                unreadable.append(candidate)
                errors.append(_summary(err))
                warnings.warn(f"checkpoint {candidate} in {self.directory} is unreadable "
                              f"({errors[-1]}); trying an older one", stacklevel=3)
                continue
            for key, want in (check_meta or {}).items():
                # a key older checkpoints did not record compares as the value they had, or
                # not at all when there is none
                have = meta.get(key, UNRECORDED_DEFAULTS.get(key, want))
                if have != want:
                    raise ConfigMismatchError(
                        f"{self.directory} holds checkpoints of another configuration: "
                        f"{key} there is {have}, here {want}. Use another --workdir "
                        "or the configuration that wrote them."
                    )
            try:
                restored = self.manager.restore(candidate, args=args)
            except Exception as err:  # noqa: BLE001
                unreadable.append(candidate)
                errors.append(_summary(err))
                warnings.warn(f"checkpoint {candidate} in {self.directory} could not be "
                              f"restored ({errors[-1]}); trying an older one", stacklevel=3)
                continue
            for broken in unreadable if delete_unreadable else ():
                self.manager.delete(broken)
            return candidate, restored, meta
        if candidates:  # never start over silently on top of a run's checkpoints
            raise UnreadableCheckpointError(
                f"none of the checkpoints {sorted(candidates)} in {self.directory} could be "
                f"restored (step {candidates[0]}: {errors[0]}). They may be damaged or hold "
                "another training setup (e.g. other optimizer settings). Use another --workdir, "
                "or move that folder away to start over."
            )
        return None

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def quiet_orbax_failures() -> None:
    """For command lines only (each main() that restores checkpoints calls it first): Orbax's
    noise after a failed checkpoint read is dropped for the rest of the process.

    After a failed read, Orbax's abandoned coroutines and its threads' callbacks into a closed
    event loop report hundreds of lines through sys.unraisablehook, sys.excepthook and
    asyncio's "exception was never retrieved" log, during the run and at exit; the failure
    itself is reported in one line (Checkpointer's warning, the CLI's error). Those reports,
    and only those, are dropped; anything else goes to the previous hooks and the log as
    before. The hooks are process-wide and outlive the read (the reports come at exit too),
    so library calls never install them; a second call changes nothing.
    """
    import logging

    previous = sys.unraisablehook
    if getattr(previous, "_pconv_orbax_filter", False):
        return
    logging.getLogger("asyncio").addFilter(
        lambda record: "exception was never retrieved" not in record.getMessage())
    previous_excepthook = sys.excepthook  # TensorStore's callbacks print through it

    def excepthook(kind, value, tb) -> None:
        if not (kind is RuntimeError and "Event loop is closed" in str(value)):
            previous_excepthook(kind, value, tb)

    sys.excepthook = excepthook

    def hook(unraisable) -> None:
        frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback \
            else []
        noise = any(("orbax" in f.filename or "asyncio" in f.filename) for f in frames) or \
            "orbax" in repr(unraisable.object) or "Event loop is closed" in str(
                unraisable.exc_value)
        if not noise:
            previous(unraisable)

    hook._pconv_orbax_filter = True
    sys.unraisablehook = hook


def _summary(err: Exception, limit: int = 160) -> str:
    """'Type: first line of the message', at most `limit` characters of it (Orbax's and
    TensorStore's errors run to a hundred lines)."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first[:limit]}{' ...' if len(first) > limit else ''}"


def load_model(workdir: str, model: nnx.Module, step: int | None = None,
               check_meta: dict | None = None, average: bool = True) -> int:
    """Restores the model half of a run's newest (or given) checkpoint into `model`; the step.

    With `average` (the default) and a run that kept a moving average of its weights
    (optim.ema_decay), the parameters are the average's and the BatchNorm statistics the
    model's (`average_decay` says whether a step has one). No optimizer state is read.
    Raises FileNotFoundError when there is no checkpoint and UnreadableCheckpointError when
    none can be restored.
    """
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):  # reading must not create the folder
        raise FileNotFoundError(f"no checkpoint in {workdir}: {directory} does not exist")
    checkpointer = Checkpointer(workdir, keep=1000, async_save=False)
    try:
        restored = checkpointer.restore_model(abstract(nnx.state(model)), step, check_meta)
        if restored is None:
            raise FileNotFoundError(f"no readable checkpoint in {checkpointer.directory}")
        found, state, meta = restored
        nnx.update(model, state)
        kept = float(meta.get("optim.ema_decay", 0.0) or 0.0)
        if average and kept > 0:
            ema = nnx.EMA(model, kept, only=nnx.Param)  # the structure item 2 was saved with
            state = checkpointer.restore_model(None, found, extra={
                2: abstract(nnx.state(ema))})[1]
            nnx.update(ema, state[2])
            nnx.update(model, ema.params)
    finally:
        checkpointer.close()
    return found


def average_decay(workdir: str, step: int) -> float:
    """The optim.ema_decay of the run that saved `step` (0: it kept no moving average)."""
    checkpointer = Checkpointer(workdir, keep=1000, async_save=False)
    try:
        return float(checkpointer.read_meta(step).get("optim.ema_decay", 0.0) or 0.0)
    finally:
        checkpointer.close()


def abstract(tree: Any) -> Any:
    """The tree's leaves as ShapeDtypeStructs, keeping their shardings."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
