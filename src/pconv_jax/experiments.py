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
writes the comparison to WORKDIR:

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

import csv
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from pconv_jax import evaluate as eval_lib
from pconv_jax.losses import TERMS, LossWeights
from pconv_jax.paths import write_atomically

BASELINES = ("telea", "navier_stokes", "mean_fill")
METRICS = ("l1", "psnr", "ssim")
CURVE_KEYS = ("loss", *TERMS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

VariantSpec = LossWeights | Mapping[str, float]


class ExperimentError(ValueError):
    """A grid that cannot run as asked, with the reason."""


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
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_pconv_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ExperimentError(f"{path} defines no get_config()")
    return module.get_config()


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
    """A copy of `config` with dotted keys set, e.g. {'train.steps': 20}; unknown keys raise."""
    config = config.copy_and_resolve_references()
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise ExperimentError(f"unknown config key {dotted!r}")
            node = node[part]
        if leaf not in node:
            raise ExperimentError(f"unknown config key {dotted!r}")
        if isinstance(node[leaf], tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(node[leaf], float) and isinstance(value, int):
            value = float(value)
        try:
            node[leaf] = value
        except TypeError as err:
            raise ExperimentError(f"config key {dotted!r}: {err}") from None
    return config


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


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Held-out image-mask pairs shared by every variant."""

    images: Any  # random-access source of (H,W,3) uint8 images
    masks: list[dict]  # eval_lib.eval_masks entries: {'mask': (S,S), 'bucket', 'border'}
    key: str  # identifies the set, so a changed set is re-evaluated
    examples: tuple[int, ...]  # pair indices shown in comparison.png
    example_gts: np.ndarray  # (K,S,S,3) uint8: those pairs' ground truths
    example_masks: np.ndarray  # (K,S,S), 1 = valid


def open_eval_set(workdir: str, images: str, size: int, *, masks: str | None = None,
                  per_bucket: int = 2, seed: int = 1234, num_examples: int = 4,
                  tfds_data_dir: str | None = None) -> EvalSet:
    """The pairs: images from `images` (a data source spec), masks from `masks` or generated.

    Generated masks are written once to WORKDIR/eval_masks_S_bP_seedK (make-eval-set format).
    """
    from pconv_jax import data
    from pconv_jax import masks as mask_lib

    if per_bucket < 1 or num_examples < 0:
        raise ExperimentError("per_bucket must be >= 1 and num_examples >= 0")
    if masks is None:
        masks = os.path.join(workdir, f"eval_masks_{size}_b{per_bucket}_seed{seed}")
        if not os.path.isfile(os.path.join(masks, "index.json")):
            os.makedirs(workdir, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=workdir, prefix=".eval_masks_")
            mask_lib.make_eval_set(tmp, per_bucket, size, seed)
            try:
                os.rename(tmp, masks)
            except OSError:  # another task wrote it first: theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
    entries = eval_lib.eval_masks(masks, size, per_bucket, seed)
    if not entries:
        raise ExperimentError(f"the eval mask index in {masks} lists no masks")
    if entries[0]["mask"].shape != (size, size):
        raise ExperimentError(f"eval masks in {masks} are {entries[0]['mask'].shape}, "
                              f"not {size}x{size}")
    source = data.open_source(images, tfds_data_dir)
    if len(source) == 0:
        raise ExperimentError(f"no evaluation images in {images!r}")
    count = min(num_examples, len(entries))
    examples = tuple(int(i) for i in np.linspace(0, len(entries) - 1, count).round())
    digest = hashlib.sha1()  # the masks' content, not their folder's path
    for entry in entries:
        digest.update(f"{entry['bucket']}|{entry['border']}|".encode())
        digest.update(np.packbits(entry["mask"] > 0).tobytes())
    key = f"{images}|{size}|masks {digest.hexdigest()[:16]}|examples {list(examples)}"
    pairs = [eval_lib.eval_pairs(source, entries, i, i + 1) for i in examples]
    gts = np.concatenate([g for g, _ in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
    masks_k = np.concatenate([m for _, m in pairs]) if pairs else np.zeros((0, size, size))
    return EvalSet(source, entries, key, examples, gts, masks_k)


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
REPORT_FILES = ("results.csv", "results.json", "table.md", "loss_curves.png", "comparison.png")


def _variant_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, "variants", name)


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
    path = os.path.join(_variant_dir(workdir, name), "config.json")
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


def _write_json(path: str, value: Any) -> None:
    """`value` as JSON at `path`, written atomically: tasks of a split grid never see half a
    file."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1)

    write_atomically(path, write)


def _read_json(path: str) -> Any:
    """The JSON at `path`, or None when it is missing or (being) rewritten."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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

    vdir = _variant_dir(workdir, name)
    steps = _checkpoint_steps(vdir)
    if not steps:
        raise ExperimentError(f"variant {name!r} has no checkpoint in {vdir}; train it first")
    if steps[-1] < config.train.steps:
        raise ExperimentError(f"variant {name!r} is at step {steps[-1]} of {config.train.steps} "
                              f"in {vdir}; finish its training first")
    record = {"step": steps[-1], "eval_key": eval_set.key, "config_key": _config_key(config),
              "weights": {k: float(v) for k, v in config.loss.weights.items()}}
    cached = _read_json(os.path.join(vdir, "eval.json"))
    if cached and all(cached.get(k) == v for k, v in record.items()):
        return cached
    inpainter = Inpainter.from_workdir(vdir, steps[-1])
    results, _ = eval_lib.evaluate(inpainter, eval_set.images, eval_set.masks, batch_size,
                                   progress=False, methods=("model",))
    if eval_set.examples:
        examples = inpainter(eval_set.example_gts, eval_set.example_masks)  # (K,S,S,3) uint8
        write_atomically(os.path.join(vdir, "examples.npy"), lambda tmp: np.save(tmp, examples))
    record["rows"] = results["model"]
    _write_json(os.path.join(vdir, "eval.json"), record)
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
    _write_json(os.path.join(workdir, "grid.json"), {
        "variants": {n: c.loss.weights.to_dict() for n, c in configs.items()},
        "eval": {"images": eval_images, "masks": eval_masks, "size": size,
                 "per_bucket": per_bucket, "seed": eval_seed, "num_examples": num_examples},
    })
    for i, name in enumerate(mine):
        config, vdir = configs[name], _variant_dir(workdir, name)
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
# The report
# ---------------------------------------------------------------------------------------------


def _summary_row(rows: list[dict]) -> dict:
    """The bucket 'all' row: means over every pair (bucket means weighted by their counts)."""
    count = sum(r["count"] for r in rows)
    out = {"bucket": "all", "border": "any", "count": count}
    for k in METRICS:
        out[k] = float(sum(r[k] * r["count"] for r in rows) / count)
    return out


def _tidy(variant: str, kind: str, step, weights: dict | None, rows: list[dict]) -> list[dict]:
    weight_cols = {f"w_{t}": (weights[t] if weights else float("nan")) for t in TERMS}
    tidy = []
    for r in [*rows, _summary_row(rows)]:
        border = r["border"] if isinstance(r["border"], str) else ("yes" if r["border"] else "no")
        tidy.append({"variant": variant, "kind": kind, "step": step, "bucket": r["bucket"],
                     "border": border, "count": r["count"],
                     **{k: r[k] for k in METRICS}, **weight_cols})
    return tidy


def collect(workdir: str, names: Sequence[str] | None = None, baselines: dict | None = None,
            *, eval_key: str | None = None, expected: Mapping[str, tuple] | None = None):
    """The tidy table (pandas DataFrame) of the evaluated variants and the given baselines.

    With eval_key / expected ({name: (config key, final step)}) only evaluations of that eval
    set, configuration and budget count; table.attrs['pending'] names the variants left out.
    """
    import pandas as pd

    if names is None:
        folder = os.path.join(workdir, "variants")
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    rows, pending = [], []
    for name in names:
        record = _read_json(os.path.join(_variant_dir(workdir, name), "eval.json"))
        current = record is not None and "rows" in record and (
            eval_key is None or record.get("eval_key") == eval_key) and (
            expected is None or (record.get("config_key") == expected[name][0]
                                 and record.get("step", -1) >= expected[name][1]))
        if not current:
            pending.append(name)
            continue
        rows += _tidy(name, "variant", record["step"], record["weights"], record["rows"])
    for method, method_rows in (baselines or {}).items():
        rows += _tidy(method, "baseline", None, None, method_rows)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["step"] = table["step"].astype("Int64")  # baselines have none
    table.attrs["pending"] = pending
    table.attrs["complete"] = not pending
    return table


def _baselines(workdir: str, eval_set: EvalSet) -> tuple[dict, dict]:
    """Baseline metrics (cached in WORKDIR/baselines.json) and their example outputs."""
    path = os.path.join(workdir, "baselines.json")
    results = None
    if os.path.isfile(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("eval_key") == eval_set.key:
            results = cached["results"]
    if results is None:
        results, _ = eval_lib.evaluate(None, eval_set.images, eval_set.masks, progress=False,
                                       methods=BASELINES)
        _write_json(path, {"eval_key": eval_set.key, "results": results})
    examples = {method: [eval_lib.baseline(method, gt, mask) for gt, mask
                         in zip(eval_set.example_gts, eval_set.example_masks, strict=True)]
                for method in BASELINES}
    return results, examples


def write_report(workdir: str, names: Sequence[str], eval_set: EvalSet,
                 expected: Mapping[str, tuple] | None = None):
    """results.csv/.json, table.md, loss_curves.png and comparison.png; returns the table."""
    baseline_results, baseline_examples = _baselines(workdir, eval_set)
    table = collect(workdir, names, baseline_results, eval_key=eval_set.key, expected=expected)
    records = table.to_dict(orient="records")
    records = [{k: (None if _missing(v) else v) for k, v in r.items()} for r in records]
    _write_json(os.path.join(workdir, "results.json"), records)

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table.columns))
            writer.writeheader()
            writer.writerows(records)

    def write_text(text: str) -> Callable[[str], None]:
        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.write(text)
        return write

    write_atomically(os.path.join(workdir, "results.csv"), write_csv)
    write_atomically(os.path.join(workdir, "table.md"), write_text(markdown_table(table)))
    curves = plot_loss_curves(workdir, names)
    write_atomically(os.path.join(workdir, "loss_curves.png"),
            lambda tmp: curves.savefig(tmp, dpi=100, format="png"))
    comparison = plot_comparison(workdir, names, eval_set, baseline_examples)
    path = os.path.join(workdir, "comparison.png")
    if comparison is not None:
        write_atomically(path, lambda tmp: comparison.savefig(tmp, dpi=100, format="png"))
    elif os.path.exists(path):  # num_examples = 0: no grid, and no stale one either
        os.remove(path)
    return table


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (np.isscalar(value) and bool(pd.isna(value)))


def per_bucket(table, metric: str = "psnr"):
    """variant x hole-ratio bucket means of `metric` over both border classes (pair-weighted)."""
    rows = table[table["bucket"] != "all"]
    weighted = rows.assign(total=rows[metric] * rows["count"])
    sums = weighted.groupby(["variant", "bucket"], sort=False)[["total", "count"]].sum()
    result = (sums["total"] / sums["count"]).unstack("bucket")
    order = list(dict.fromkeys(rows["variant"]))
    return result.loc[order, list(dict.fromkeys(rows["bucket"]))]


def markdown_table(table) -> str:
    """The summary over all pairs per variant, then PSNR per hole-ratio bucket."""
    overall = table[table["bucket"] == "all"]
    lines = ["| variant | step | weights (valid, hole, perc., style out/comp, tv) | pairs | "
             "l1 % | PSNR dB | SSIM |", "|---|---|---|---|---|---|---|"]
    for r in overall.to_dict(orient="records"):
        weights = ("—" if r["kind"] == "baseline" else
                   ", ".join(f"{r[f'w_{t}']:g}" for t in TERMS))
        step = "—" if r["kind"] == "baseline" else str(int(r["step"]))
        lines.append(f"| {r['variant']} | {step} | {weights} | {r['count']} | {r['l1']:.2f} "
                     f"| {r['psnr']:.2f} | {r['ssim']:.3f} |")
    psnr = per_bucket(table, "psnr")
    buckets, variants = list(psnr.columns), list(psnr.index)
    lines += ["", "PSNR (dB) per hole-ratio bucket, both border classes:", "",
              "| variant | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(f"{psnr.loc[v, b]:.2f}" for b in buckets) + " |")
    lines += ["", "l1 in % of the [0,1] range; PSNR in dB; metrics on the composite image "
              "(valid pixels from the ground truth)."]
    return "\n".join(lines) + "\n"


def read_curves(workdir: str, name: str) -> dict[str, np.ndarray]:
    """A variant's logged steps and loss terms: {'step': (T,), 'loss': (T,), 'hole': ...}."""
    path = os.path.join(_variant_dir(workdir, name), "metrics.jsonl")
    records = []
    if os.path.isfile(path):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    return {k: np.array([r.get(k, np.nan) for r in records], np.float64)
            for k in ("step", *CURVE_KEYS)}


def plot_loss_curves(workdir: str, names: Sequence[str]):
    """A matplotlib Figure: one panel per loss term, one line per variant."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 7), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    for name in names:
        curves = read_curves(workdir, name)
        for ax, key in zip(axes, CURVE_KEYS, strict=False):
            ax.plot(curves["step"], curves[key], label=name, linewidth=1.2)
    for ax, key in zip(axes, CURVE_KEYS, strict=False):
        ax.set_title("weighted total (own weights)" if key == "loss" else f"{key} (unweighted)")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[-1].axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, loc="center", title="variant")
    return fig


def plot_comparison(workdir: str, names: Sequence[str], eval_set: EvalSet,
                    baseline_examples: Mapping[str, list] | None = None):
    """A matplotlib Figure: a row per example pair; input, each variant, baselines, truth."""
    from matplotlib.figure import Figure

    if not eval_set.examples:
        return None
    columns = []
    for name in names:
        path = os.path.join(_variant_dir(workdir, name), "examples.npy")
        if os.path.isfile(path):
            columns.append((name, np.load(path)))
    for method, images in (baseline_examples or {}).items():
        columns.append((method, np.stack(images)))
    gts, masks = eval_set.example_gts, eval_set.example_masks
    titles = [f"{e['bucket']}{' border' if e['border'] else ''}"
              for e in (eval_set.masks[i] for i in eval_set.examples)]
    n_rows, n_cols = len(gts), len(columns) + 2
    fig = Figure(figsize=(1.6 * n_cols, 1.7 * n_rows), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    for r in range(n_rows):
        masked = (gts[r] * masks[r][..., None]).astype(np.uint8)
        panels = [("input", masked), *[(n, imgs[r]) for n, imgs in columns], ("truth", gts[r])]
        for c, (title, image) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(titles[r], fontsize=7)
    return fig


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

    from pconv_jax.checkpoint import quiet_orbax_failures
    from pconv_jax.train import TrainingError, parse_config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "base experiment config file",
                                    flag_values=fv, lock_config=True)
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


if __name__ == "__main__":
    sys.exit(main())
