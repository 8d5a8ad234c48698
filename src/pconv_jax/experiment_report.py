"""The evaluation set a loss-weight grid shares and the report it writes (pconv_jax.experiments).

The evaluation set: held-out image-mask pairs, the same for every variant and the classical
baselines. The report, in the grid's WORKDIR:

    results.csv, results.json  the tidy table: one row per variant x hole-ratio bucket x border
                               class, plus a bucket 'all' row per variant; baselines included
    table.md                   summary over all pairs and PSNR per bucket
    loss_curves.png            every loss term (unweighted) over training, a line per variant
    comparison.png             every variant's output on the same inputs

A variant lives in WORKDIR/variants/NAME (`variant_dir`): its training run, its cached
evaluation (eval.json) and example outputs (examples.npy). Files that tasks of a split grid
share are written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pconv_jax import evaluate as eval_lib
from pconv_jax.baselines import fill
from pconv_jax.losses import TERMS
from pconv_jax.paths import write_atomically

BASELINES = ("telea", "navier_stokes", "mean_fill")
METRICS = ("l1", "psnr", "ssim")
CURVE_KEYS = ("loss", *TERMS)
REPORT_FILES = ("results.csv", "results.json", "table.md", "loss_curves.png", "comparison.png")


class ExperimentError(ValueError):
    """A grid that cannot run as asked, with the reason."""


def variant_dir(workdir: str, name: str) -> str:
    """Where variant `name` of the grid in `workdir` lives: its run, evaluation and examples."""
    return os.path.join(workdir, "variants", name)


def write_json(path: str, value: Any) -> None:
    """`value` as JSON at `path`, written atomically: tasks of a split grid never see half a
    file."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1)

    write_atomically(path, write)


def read_json(path: str) -> Any:
    """The JSON at `path`, or None when it is missing or (being) rewritten."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
        record = read_json(os.path.join(variant_dir(workdir, name), "eval.json"))
        current = record is not None and "rows" in record and (
            eval_key is None or record.get("eval_key") == eval_key) and (
            expected is None or (record.get("config_key") == expected[name][0]
                                 and record.get("step", -1) >= expected[name][1]))
        if not current:
            pending.append(name)
            continue
        rows += _tidy(name, "variant", record["step"], record["weights"], record["rows"])
    for method, method_rows in (baselines or {}).items():
        if method in eval_lib.METHODS:  # not evaluate's bookkeeping (baseline_fills, mask_set)
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
        write_json(path, {"eval_key": eval_set.key, "results": results})
    examples = {method: [fill(method, gt, mask) for gt, mask
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
    write_json(os.path.join(workdir, "results.json"), records)

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
    path = os.path.join(variant_dir(workdir, name), "metrics.jsonl")
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
        path = os.path.join(variant_dir(workdir, name), "examples.npy")
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
