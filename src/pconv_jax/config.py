"""Run configuration: the default config, its checks, and what the trainer derives from it.

Experiment files (`experiments/configs/NAME.py`) import `default_config` from here and override
a few keys; the command line overrides any (`--config.KEY=VALUE`, parsed by
`parse_config_flags`). `check_config` names every value that cannot work before a run starts;
`unet_config` and `loss_weights` turn a config into the model's and the loss's settings.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from pconv_jax import losses
from pconv_jax.model import UNetConfig


class ConfigError(ValueError):
    """A config value that cannot work, with a message for the user (no traceback)."""


SCHEDULES = ("constant", "cosine")
MAX_IMAGE_SIZE = 4096  # training crops: the largest side the CLIs accept anywhere
MAX_READERS = 256  # data workers or threads: far beyond any host's cores


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
        smooth_fraction=0.0,  # share of examples replaced by a constant colour or gradient
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
        ema_decay=0.0,  # > 0: an exponential moving average of the weights, used to evaluate
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
        raise ConfigError(f"model configuration: {err}") from None


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
    """Raises ConfigError naming every count or interval of `config` that cannot work."""
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
    smooth = config.data.get("smooth_fraction", 0.0)
    if not isinstance(smooth, (int, float)) or isinstance(smooth, bool) or not 0 <= smooth < 1:
        problems.append(f"data.smooth_fraction must be a number in [0, 1) (0 = off), got "
                        f"{smooth!r}")
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
    ema = config.optim.get("ema_decay", 0.0)
    if not isinstance(ema, (int, float)) or isinstance(ema, bool) or not 0 <= ema < 1:
        problems.append(f"optim.ema_decay must be a number in [0, 1) (0 = no average), got "
                        f"{ema!r}")
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
        raise ConfigError("; ".join(problems))


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
    if workers != -1:
        return workers
    from pconv_jax.data import default_workers  # Grain only where a run reads data

    return default_workers()


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


def as_flag(value: Any) -> str:
    """A config value as it is typed after --config.KEY=."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(str(v) for v in value) + ")"
    return "''" if value == "" else str(value)


def flat_items(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """{"train.steps": 800000, ...}: every leaf of `config` under its dotted key."""
    items = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            items.update(flat_items(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def load_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of an experiment config file (experiments/configs/NAME.py); a missing
    file raises FileNotFoundError, a file without get_config() ConfigError."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_pconv_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config()")
    return module.get_config()


def keys_help() -> str:
    """Every key of `default_config()` as it is typed, with its default: one per line."""
    return "\n".join(f"  {flag}" for flag in as_flags(flat_items(default_config())))


def as_flags(overrides: Mapping[str, Any]) -> list[str]:
    """{"train.steps": 2} -> ["--config.train.steps=2"]: overrides as command-line flags."""
    return [f"--config.{key}={as_flag(value)}" for key, value in overrides.items()]


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted keys set, e.g. {'train.steps': 20}; unknown keys raise
    ConfigError."""
    config = config.copy_and_resolve_references()
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise ConfigError(f"unknown config key {dotted!r}")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"unknown config key {dotted!r}")
        if isinstance(node[leaf], tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(node[leaf], float) and isinstance(value, int):
            value = float(value)
        try:
            node[leaf] = value
        except TypeError as err:
            raise ConfigError(f"config key {dotted!r}: {err}") from None
    return config


def tiny_overrides(depth: int = 3, width: int = 4, image_size: int = 32,
                   batch_size: int = 2) -> dict[str, Any]:
    """Dotted overrides for a `UNetConfig.tiny` network at a small size: the one tiny run of
    the tests, the GPU check's CPU dry run and smoke runs."""
    model = UNetConfig.tiny(depth=depth, width=width, image_size=image_size)
    return {"data.image_size": image_size, "model.depth": depth,
            "model.encoder_widths": model.encoder_widths,
            "model.encoder_kernels": model.encoder_kernels, "train.batch_size": batch_size}
