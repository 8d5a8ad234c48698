"""Loss-weight ablations: train a grid of `LossWeights` variants and compare them on one eval set.

    python -m pconv_jax.experiments --config experiments/configs/demo.py --workdir runs/ablation \
        --config.data.source=samples:astronaut,rocket,immunohistochemistry,hubble_deep_field \
        --eval-images samples:chelsea,coffee [--variants paper,no_style] [--hole-weights 3,12] \
        [--variant hole_20=hole:20] [--task-index I --num-tasks N] [--config.train.steps=200]
    python -m pconv_jax.experiments ...the same... --collect-only

`run_grid(base_config, variants, workdir, eval_images=...)` trains each variant in
WORKDIR/variants/NAME (an ordinary training run, so running again resumes or skips it),
evaluates its final checkpoint on one held-out set of image-mask pairs shared by every variant
(and by the classical baselines; images that are also training images are refused), and
writes the comparison to WORKDIR (`pconv_jax.experiment_report`: the set and the report):

    results.csv, results.json  the tidy table: one row per variant x hole-ratio bucket x border
                               class, plus a bucket 'all' row per variant; baselines included
    table.md                   summary over all pairs and PSNR per bucket
    loss_curves.png            every loss term (unweighted) over training, a line per variant
    comparison.png             every variant's output on the same inputs

Variants split over processes or devices with task_index / num_tasks: a task trains and
evaluates variants[task_index::num_tasks]; the report is written by whichever task finds every
variant evaluated (or by --collect-only once they all are). Between runs of one grid only the
budget (train.steps) and the logging/checkpoint cadence may change: a variant trained under
any other setting is refused rather than mixed into the table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np

from pconv_jax import config as config_lib
from pconv_jax import evaluate as eval_lib
from pconv_jax.experiment_report import (
    BASELINES,
    REPORT_FILES,
    EvalSet,
    ExperimentError,
    collect,
    open_eval_set,
    read_json,
    variant_dir,
    write_json,
    write_report,
)
from pconv_jax.experiment_report import per_bucket as per_bucket  # the notebook's name
from pconv_jax.losses import TERMS, LossWeights
from pconv_jax.paths import write_atomically

if TYPE_CHECKING:
    from absl import flags

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

VariantSpec = LossWeights | Mapping[str, float]


# ---------------------------------------------------------------------------------------------
# Variants and configs
# ---------------------------------------------------------------------------------------------


def variant_weights(spec: VariantSpec) -> LossWeights:
    """LossWeights from a LossWeights or from overrides of the paper's weights.

    Override keys are the six terms plus 'style' (both style terms), e.g. {'style': 0}.
    """
    if isinstance(spec, LossWeights):
        weights = spec
    elif isinstance(spec, Mapping):
        values = LossWeights().as_dict()
        for key, value in spec.items():
            targets = ("style_out", "style_comp") if key == "style" else (key,)
            if any(t not in values for t in targets):
                raise ExperimentError(f"unknown loss term {key!r}; known: "
                                      f"{', '.join((*TERMS, 'style'))}")
            for t in targets:
                values[t] = float(value)
        weights = LossWeights(**values)
    else:
        raise ExperimentError(f"a variant is LossWeights or a mapping of term weights, got "
                              f"{type(spec).__name__}")
    bad = {k: w for k, w in weights.as_dict().items() if not math.isfinite(w) or w < 0}
    if bad:
        raise ExperimentError(f"loss weights must be finite and >= 0, got {bad}")
    if not any(weights.as_dict().values()):
        raise ExperimentError("every loss weight is 0: nothing to train")
    return weights


def paper_variants(hole_weights: Sequence[float] = (3.0, 12.0)) -> dict[str, LossWeights]:
    """The standard grid: the paper; no perceptual / style / TV; l1 only; a hole-weight sweep."""
    grid = {
        "paper": {},
        "no_perceptual": {"perceptual": 0.0},
        "no_style": {"style": 0.0},
        "no_tv": {"tv": 0.0},
        "l1_only": {"perceptual": 0.0, "style": 0.0, "tv": 0.0},
    }
    for w in hole_weights:
        grid[f"hole_{float(w):g}"] = {"hole": float(w)}
    return {name: variant_weights(spec) for name, spec in grid.items()}


def load_config(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of an experiment config file (experiments/configs/NAME.py)."""
    try:
        return config_lib.load_file(path)
    except config_lib.ConfigError as err:
        raise ExperimentError(str(err)) from None


def project_root() -> str:
    """The checkout holding experiments/configs: the working folder, a parent of it, or the
    checkout pconv_jax is installed from (editable install), in that order."""
    here = os.path.abspath(os.getcwd())
    candidates = [here]
    while os.path.dirname(candidates[-1]) != candidates[-1]:
        candidates.append(os.path.dirname(candidates[-1]))
    candidates.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    for path in candidates:
        if os.path.isdir(os.path.join(path, "experiments", "configs")):
            return path
    raise FileNotFoundError(f"no experiments/configs folder in {here}, its parents or the "
                            "pconv_jax checkout; run from a clone of the repository")


def resolve_path(spec: str, root: str) -> str:
    """A relative path that exists under `root`, made absolute there; any other spec unchanged
    (absolute paths, 'samples:...', 'tfds:...', paths relative to the working folder)."""
    if not spec or os.path.isabs(spec) or spec.startswith(("samples", "tfds:")):
        return spec
    candidate = os.path.join(root, spec)
    return candidate if os.path.exists(candidate) else spec


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted keys set, e.g. {'train.steps': 20}; unknown keys raise
    ExperimentError."""
    try:
        return config_lib.apply_overrides(config, overrides)
    except config_lib.ConfigError as err:
        raise ExperimentError(str(err)) from None


def variant_config(base_config: ml_collections.ConfigDict,
                   weights: LossWeights) -> ml_collections.ConfigDict:
    """The base config with `loss.weights` replaced by `weights`; a 0-weighted term is still
    computed (forward only, no VGG backward) so every variant's curves show every term, and
    the VGG terms stay on without a VGG file (random features) so that the grid compares
    what it says it compares."""
    return apply_overrides(base_config, {**{f"loss.weights.{k}": v
                                            for k, v in weights.as_dict().items()},
                                         "loss.log_zero_terms": True, "vgg.fallback": "random"})


# ---------------------------------------------------------------------------------------------
# The evaluation set
# ---------------------------------------------------------------------------------------------


def check_held_out(train_source: str, eval_images: str) -> None:
    """Raises ExperimentError when the evaluation images are (partly) the training images."""
    from pconv_jax.data import BUNDLED_PHOTOS

    def photos(spec: str) -> set[str] | None:
        if spec == "samples":
            return set(BUNDLED_PHOTOS)
        if spec.startswith("samples:"):
            return {n.strip() for n in spec[len("samples:"):].split(",") if n.strip()}
        return None

    train_photos, eval_photos = photos(train_source), photos(eval_images)
    if train_photos is not None and eval_photos is not None:
        overlap = sorted(train_photos & eval_photos)
        if overlap:
            raise ExperimentError(
                f"evaluation images {overlap} are also training images (data.source = "
                f"{train_source!r}); hold them out, e.g. data.source = 'samples:"
                f"{','.join(sorted(train_photos - eval_photos))}'")
        return
    if train_photos is not None or eval_photos is not None:
        return  # bundled photos on one side, a folder or TFDS dataset on the other
    if train_source.startswith("tfds:") or eval_images.startswith("tfds:"):
        same = train_source == eval_images
    else:
        a, b = os.path.abspath(train_source), os.path.abspath(eval_images)
        same = os.path.commonpath([a, b]) in (a, b)
    if same:
        raise ExperimentError(f"evaluation images {eval_images!r} overlap the training source "
                              f"{train_source!r}; evaluate on held-out images")


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------

# Keys that may change between runs of one grid: the budget and the bookkeeping cadence.
RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.image_every",
                  "checkpoint.every_steps", "checkpoint.keep", "data.threads")


def _flat(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_fingerprint(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Every config value that shapes the trained model (all but RESUMABLE_KEYS), flattened."""
    flat = _flat(json.loads(config.to_json_best_effort()))
    return {k: v for k, v in sorted(flat.items()) if k not in RESUMABLE_KEYS}


def _config_key(config: ml_collections.ConfigDict) -> str:
    text = json.dumps(config_fingerprint(config), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _check_existing(workdir: str, name: str, config: ml_collections.ConfigDict) -> None:
    """A variant folder trained under another configuration is an error, not a silent mix."""
    path = os.path.join(variant_dir(workdir, name), "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        saved = {k: v for k, v in _flat(json.load(f)).items() if k not in RESUMABLE_KEYS}
    now = config_fingerprint(config)
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ExperimentError(
            f"variant {name!r} in {workdir} was trained under another configuration ({details}"
            f"{' ...' if len(changed) > 6 else ''}); only {', '.join(RESUMABLE_KEYS)} may "
            "change between runs of a grid: use a new workdir (output_dir) or variant name")


def _checkpoint_steps(vdir: str) -> list[int]:
    from pconv_jax.checkpoint import Checkpointer

    if not os.path.isdir(os.path.join(vdir, "checkpoints")):
        return []
    checkpointer = Checkpointer(vdir, keep=1)
    try:
        return checkpointer.steps()
    finally:
        checkpointer.close()


def evaluate_variant(workdir: str, name: str, eval_set: EvalSet,
                     config: ml_collections.ConfigDict, batch_size: int = 4) -> dict:
    """Scores a variant's final checkpoint on `eval_set`; cached in variants/NAME/eval.json.

    `config` is the variant's: its training must have reached config.train.steps.
    """
    from pconv_jax.inpaint import Inpainter

    vdir = variant_dir(workdir, name)
    steps = _checkpoint_steps(vdir)
    if not steps:
        raise ExperimentError(f"variant {name!r} has no checkpoint in {vdir}; train it first")
    if steps[-1] < config.train.steps:
        raise ExperimentError(f"variant {name!r} is at step {steps[-1]} of {config.train.steps} "
                              f"in {vdir}; finish its training first")
    record = {"step": steps[-1], "eval_key": eval_set.key, "config_key": _config_key(config),
              "weights": {k: float(v) for k, v in config.loss.weights.items()}}
    cached = read_json(os.path.join(vdir, "eval.json"))
    if cached and all(cached.get(k) == v for k, v in record.items()):
        return cached
    inpainter = Inpainter.from_workdir(vdir, steps[-1])
    results, _ = eval_lib.evaluate(inpainter, eval_set.images, eval_set.masks, batch_size,
                                   progress=False, methods=("model",))
    if eval_set.examples:
        examples = inpainter(eval_set.example_gts, eval_set.example_masks)  # (K,S,S,3) uint8
        write_atomically(os.path.join(vdir, "examples.npy"), lambda tmp: np.save(tmp, examples))
    record["rows"] = results["model"]
    write_json(os.path.join(vdir, "eval.json"), record)
    return record


def run_grid(
    base_config: ml_collections.ConfigDict,
    variants: Mapping[str, VariantSpec],
    workdir: str,
    *,
    eval_images: str,
    eval_masks: str | None = None,
    eval_size: int | None = None,
    per_bucket: int = 2,
    eval_seed: int = 1234,
    num_examples: int = 4,
    task_index: int = 0,
    num_tasks: int = 1,
    train: bool = True,
):
    """Trains and evaluates each variant; returns the tidy table (pandas DataFrame).

    variants: {name: LossWeights or overrides of the paper's weights}. Each variant is trained
    from the same seed, data order and initial model, in WORKDIR/variants/NAME; eval_images
    must be held out from base_config.data.source. With num_tasks > 1 this call handles
    variants[task_index::num_tasks] only. `table.attrs['complete']` says whether every variant
    is in the table (then the report files are written); `table.attrs['pending']` lists the
    others. train=False only evaluates and reports what is trained.
    """
    from pconv_jax import train as train_lib

    if not variants:
        raise ExperimentError("no variants given")
    if not 0 <= task_index < num_tasks:
        raise ExperimentError(f"task_index {task_index} must lie in [0, num_tasks={num_tasks})")
    check_held_out(base_config.data.source, eval_images)
    configs = {}
    for name, spec in variants.items():
        if not _NAME.match(str(name)) or name in BASELINES:
            raise ExperimentError(f"variant name {name!r} must be letters, digits, '_', '-' or "
                                  f"'.' (it names a folder), and not a baseline {BASELINES}")
        configs[name] = variant_config(base_config, variant_weights(spec))
    names = list(configs)
    mine = names[task_index::num_tasks]
    for name in mine:
        _check_existing(workdir, name, configs[name])
    size = eval_size or base_config.data.image_size
    eval_set = open_eval_set(workdir, eval_images, size, masks=eval_masks,
                             per_bucket=per_bucket, seed=eval_seed, num_examples=num_examples,
                             tfds_data_dir=base_config.data.get("tfds_data_dir") or None)
    expected = {n: (_config_key(c), c.train.steps) for n, c in configs.items()}
    write_json(os.path.join(workdir, "grid.json"), {
        "variants": {n: c.loss.weights.to_dict() for n, c in configs.items()},
        "eval": {"images": eval_images, "masks": eval_masks, "size": size,
                 "per_bucket": per_bucket, "seed": eval_seed, "num_examples": num_examples},
    })
    for i, name in enumerate(mine):
        config, vdir = configs[name], variant_dir(workdir, name)
        steps = _checkpoint_steps(vdir)
        if train and (not steps or steps[-1] < config.train.steps):
            weights = config.loss.weights.to_dict()
            print(f"[{i + 1}/{len(mine)}] variant {name}: {weights} -> {vdir}", flush=True)
            result = train_lib.train_and_evaluate(config, vdir)
            if result["step"] < config.train.steps:  # stopped by SIGTERM/SIGINT: saved
                print(f"variant {name} stopped at step {result['step']}; run the grid again "
                      "to resume", flush=True)
                return _incomplete(workdir, names, eval_set.key, expected, num_tasks == 1)
        elif train:
            print(f"[{i + 1}/{len(mine)}] variant {name}: trained (step {steps[-1]})", flush=True)
        if train or steps:
            evaluate_variant(workdir, name, eval_set, config)
    table = collect(workdir, names, eval_key=eval_set.key, expected=expected)
    if table.attrs["pending"]:
        return _incomplete(workdir, names, eval_set.key, expected, num_tasks == 1)
    return write_report(workdir, names, eval_set, expected)


def _incomplete(workdir: str, names: Sequence[str], eval_key: str, expected: dict,
                clear: bool):
    """The partial table. With `clear` (a single task) report files of an earlier grid are
    removed rather than left looking current; a split grid's other tasks may be writing them."""
    table = collect(workdir, names, eval_key=eval_key, expected=expected)
    for name in REPORT_FILES if clear else ():
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            os.remove(path)
    print(f"report not written: variants {table.attrs['pending']} are not trained and evaluated "
          "under this grid's settings yet (other tasks, or run again / --collect-only)",
          flush=True)
    return table


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parse_variant(text: str) -> tuple[str, dict[str, float]]:
    """'NAME=term:w,term:w' -> (NAME, {term: w})."""
    name, sep, body = text.partition("=")
    if not sep or not name:
        raise ExperimentError(f"--variant must read NAME=term:weight[,term:weight], got {text!r}")
    weights = {}
    for item in filter(None, body.split(",")):
        term, sep, value = item.partition(":")
        try:
            weights[term.strip()] = float(value)
        except ValueError:
            raise ExperimentError(f"--variant {text!r}: {item!r} is not term:weight") from None
    return name.strip(), weights


def _underscore_flag(arg: str) -> str:
    """--eval-images=X -> --eval_images=X; config overrides and values are left alone."""
    if not arg.startswith("--") or arg.startswith("--config"):
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("-", "_").replace("__", "--", 1) + sep + value


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    from absl import flags
    from ml_collections import config_flags

    from pconv_jax.config import parse_config_flags
    from pconv_jax.train import TrainingError

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "base experiment config file",
                                    flag_values=fv, lock_config=True)
    _define_grid_flags(fv)
    argv = [_underscore_flag(a) for a in (sys.argv if argv is None else argv)]
    if any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in argv[1:]):
        print(__doc__ + "\nflags (dashes or underscores):\n" + "\n".join(
            f"  --{name}: {fv[name].help}" for name in
            ("config", "workdir", "eval_images", "eval_masks", "eval_size", "per_bucket",
             "eval_seed", "num_examples", "variants", "hole_weights", "variant", "task_index",
             "num_tasks", "collect_only"))
              + "\n  --config.KEY=VALUE: override a key of the base config")
        return 0
    error = parse_config_flags(fv, argv)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from pconv_jax.checkpoint import quiet_orbax_failures

    quiet_orbax_failures()  # an unreadable checkpoint is one line, not Orbax's tracebacks
    try:
        if fv.config is None or not fv.workdir or not fv.eval_images:
            raise ExperimentError("--config, --workdir and --eval-images are required")
        try:
            hole_weights = [float(w) for w in fv.hole_weights]
        except ValueError:
            raise ExperimentError(f"--hole-weights must be numbers, e.g. 3,12; got "
                                  f"{','.join(fv.hole_weights)}") from None
        if fv.eval_size is not None and fv.eval_size < 1:
            raise ExperimentError(f"--eval-size must be >= 1, got {fv.eval_size}")
        standard = paper_variants(hole_weights)
        chosen = fv.variants or list(standard)
        unknown = [n for n in chosen if n not in standard]
        if unknown:
            raise ExperimentError(f"unknown variants {unknown}; the standard grid has "
                                  f"{list(standard)} (add others with --variant)")
        variants: dict[str, VariantSpec] = {n: standard[n] for n in chosen}
        variants.update(_parse_variant(v) for v in fv.variant)
        table = run_grid(fv.config, variants, fv.workdir, eval_images=fv.eval_images,
                         eval_masks=fv.eval_masks, eval_size=fv.eval_size,
                         per_bucket=fv.per_bucket, eval_seed=fv.eval_seed,
                         num_examples=fv.num_examples,
                         task_index=fv.task_index, num_tasks=fv.num_tasks,
                         train=not fv.collect_only)
    except (flags.Error, ExperimentError, TrainingError, OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if table.attrs["complete"]:
        with open(os.path.join(fv.workdir, "table.md")) as f:
            print(f.read())
        written = [n for n in REPORT_FILES if os.path.exists(os.path.join(fv.workdir, n))]
        print(f"wrote {', '.join(written)} in {fv.workdir}")
    return 0


def _define_grid_flags(fv: flags.FlagValues) -> None:
    """Defines the command line's flags beside --config in `fv`: the grid's and its eval set's."""
    from absl import flags

    flags.DEFINE_string("workdir", None, "grid folder", flag_values=fv)
    flags.DEFINE_string("eval_images", None, "held-out images: folder, tfds:NAME/SPLIT or "
                        "samples:NAME,...", flag_values=fv)
    flags.DEFINE_string("eval_masks", None, "mask folder from make-eval-set (default: generated)",
                        flag_values=fv)
    flags.DEFINE_integer("eval_size", None, "evaluation size (default data.image_size)",
                         flag_values=fv)
    flags.DEFINE_integer("per_bucket", 2, "generated masks per bucket and border class",
                         flag_values=fv)
    flags.DEFINE_integer("eval_seed", 1234, "seed of the generated eval masks", flag_values=fv)
    flags.DEFINE_integer("num_examples", 4, "pairs shown in comparison.png", flag_values=fv)
    flags.DEFINE_list("variants", None, "names from the standard grid (default: all of it)",
                      flag_values=fv)
    flags.DEFINE_list("hole_weights", ["3", "12"], "hole weights of the standard sweep",
                      flag_values=fv)
    flags.DEFINE_multi_string("variant", [], "extra variant NAME=term:weight[,term:weight] "
                              "(overrides of the paper's weights; 'style' sets both)",
                              flag_values=fv)
    flags.DEFINE_integer("task_index", 0, "this task's index when the grid is split",
                         flag_values=fv)
    flags.DEFINE_integer("num_tasks", 1, "number of tasks the grid is split over",
                         flag_values=fv)
    flags.DEFINE_bool("collect_only", False, "only evaluate and write the report",
                      flag_values=fv)


if __name__ == "__main__":
    sys.exit(main())
