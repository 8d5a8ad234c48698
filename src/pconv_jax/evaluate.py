"""`python -m pconv_jax.evaluate`: the paper's Table 1 layout for a checkpoint and baselines.

    python -m pconv_jax.evaluate --workdir RUN [--step N] --images SOURCE [--masks DIR] --out DIR

SOURCE is an image folder, `tfds:NAME/SPLIT` or `samples`; masks come from a folder written by
`python -m pconv_jax.masks make-eval-set` (any protocol; every file is checked against the
sha256 in its index.json first), or are generated with a fixed seed (--per-bucket masks for
each bucket x border class). Mask k goes with image k mod (number of images), cropped and
resized to the mask size (eval_pairs). Metrics (l1 %, PSNR, SSIM) are computed on the
composite (valid pixels from the ground truth) for the model and for the classical baselines
on the same pairs (pconv_jax.baselines: PatchMatch where pypatchmatch installs, OpenCV's Telea
and Navier-Stokes, the mean colour of the valid pixels), which run in worker processes and are
cached. Paper sets give one row per bucket x border class; LaMa sets one row per 10 % hole-area
bin and an 'all' row. Writes OUT/metrics.json, OUT/table.md, OUT/table.csv and
OUT/examples.png.

With --lpips-vgg and --lpips-heads every row also gets LPIPS (VGG, v0.1); with --inception
metrics.json gets FID per method over all pairs, and per group where a group has at least
500 pairs (pytorch-fid's numbers: see pconv_jax.fid and pconv_jax.lpips for the files).
`python -m pconv_jax.compare` runs this on four mask sets and writes both papers' layouts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pconv_jax import baselines, metrics
from pconv_jax import masks as mask_lib
from pconv_jax.masks import MaskSet, generated_mask_set, load_mask_set  # noqa: F401 (API)

METHODS = ("model", *baselines.METHODS)  # the model, then PatchMatch, Telea, NS, mean fill


def eval_masks(folder: str | None, size: int, per_bucket: int, seed: int) -> list[dict]:
    """[{mask: (S,S) float32 1 = valid, bucket: '(lo,hi]', border: bool}] from a folder or seed."""
    if folder:
        return load_mask_set(folder).entries
    return generated_mask_set(size, per_bucket, seed).entries


def eval_pairs(images, mask_entries, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs start..stop-1: ground truths (B,S,S,3) uint8 and masks (B,S,S), 1 = valid.

    Mask k goes with image k mod len(images). Paper sets: the image's central square resized
    to the mask size. LaMa sets: the image resized (bicubic) so its short side is the mask
    size, then its central square (LaMa's square crop holding the whole mask).
    """
    from pconv_jax.data import center_crop_resize, resize_uint8, to_uint8

    chunk = mask_entries[start:stop]
    size = chunk[0]["mask"].shape[0]
    gts = []
    for i in range(len(chunk)):
        image = np.asarray(images[(start + i) % len(images)])
        if chunk[i].get("lama"):
            image = to_uint8(image)
            h, w = image.shape[:2]
            factor = size / min(h, w)
            image = resize_uint8(image, (max(size, round(h * factor)),
                                         max(size, round(w * factor))))
            top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
            gts.append(image[top:top + size, left:left + size])
        else:
            gts.append(np.round(center_crop_resize(np.asarray(image, np.float32) / 255, size)
                                * 255).astype(np.uint8))
    return np.stack(gts), np.stack([e["mask"] for e in chunk])


FID_MIN_PAIRS = 500  # FID of fewer pairs is dominated by its estimation noise
POOL_MIN_PAIRS = 32  # fewer pairs: the baselines run in this process unless workers is given


def default_methods(inpainter) -> tuple[tuple[str, ...], list[str]]:
    """(methods an evaluation runs by default, one line per classical method left out).

    'model' when there is an inpainter, then every classical baseline this machine can run.
    """
    runnable, left_out = baselines.available(baselines.METHODS)
    return (("model",) if inpainter is not None else ()) + tuple(runnable), left_out


def evaluate(inpainter, images, mask_entries, batch_size: int = 4, progress: bool = True,
             methods: Sequence[str] | None = None, inception=None, lpips_metric=None, *,
             workers: int | None = None, cache_dir: str | None = None,
             seed: int = 0) -> tuple[dict, list]:
    """Metrics of each method per group of masks: ({method: rows}, example grid rows).

    images: a random-access source of (H,W,3) uint8 images; mask_entries from load_mask_set
    (or eval_masks); methods: 'model' (needs `inpainter`) and any of the classical baselines
    (default: see default_methods). The classical fills run in `workers` processes
    (pconv_jax.baselines.BaselineRunner; default one per core from POOL_MIN_PAIRS pairs, else
    here; 0 = here), cached in
    `cache_dir` (None: not cached) with PatchMatch seeded by `seed`; the next batch's fills
    run while the model fills this one. With `lpips_metric` (pconv_jax.lpips.LPIPS) rows gain
    'lpips'; with `inception` (pconv_jax.fid.InceptionFID) the result gains 'fid': {method:
    {'all': FID over all pairs, group: FID or None below FID_MIN_PAIRS pairs}}. Rows: one per
    bucket x border class for paper sets; one per 10 % area bin and an 'all' row for LaMa
    sets. The example rows are one pair per group (its first; for paper sets the border
    class alternates from bucket to bucket where the set has both): masked input, mask, each
    method, ground truth.
    """
    from tqdm import tqdm

    if methods is None:
        methods, left_out = default_methods(inpainter)
        for line in left_out:
            warnings.warn(line, stacklevel=2)
    _check_request(inpainter, mask_entries, batch_size, methods, inception, lpips_metric)
    scores = {m: defaultdict(list) for m in methods}
    features = {m: [] for m in ("real", *methods)}  # pool3 features, pair order
    if inception is not None:  # one jitted shape: ground truths and every method together,
        # in calls of at most ~64 images (a divisor of the pair batch: no padding)
        per_pair = 1 + len(methods)
        inception.batch_size = per_pair * max(
            d for d in range(1, batch_size + 1) if batch_size % d == 0 and
            (d == 1 or per_pair * d <= 64))
    groups = {(e["bucket"], e["border"]) for e in mask_entries}
    examples, shown = [], []  # the grid's rows; the buckets they show
    classical = [m for m in methods if m != "model"]
    if workers is None and len(mask_entries) < POOL_MIN_PAIRS:
        workers = 0  # starting the processes (~1.5 s) costs more than they save
    starts = list(range(0, len(mask_entries), batch_size))
    bar = tqdm(total=len(mask_entries), unit="pair", disable=not progress)
    with baselines.BaselineRunner(classical, cache_dir=cache_dir, workers=workers,
                                  seed=seed) as runner:
        pending = _submit(runner, images, mask_entries, starts[:1], batch_size)
        for n, start in enumerate(starts):
            chunk = mask_entries[start:start + batch_size]
            gts, masks_b, job = pending.pop(0)
            pending += _submit(runner, images, mask_entries, starts[n + 1:n + 2], batch_size)
            outputs = {"model": inpainter(gts, masks_b)} if "model" in methods else {}
            outputs |= runner.collect(job) if classical else {}
            outputs = {m: outputs[m] for m in methods}  # (B,S,S,3) uint8 each, in order
            if inception is not None:
                feats = inception.features(np.concatenate([gts, *outputs.values()]))
                for k, name in enumerate(("real", *methods)):
                    features[name].append(feats[k * len(gts):(k + 1) * len(gts)])
            for method, values in _scores(gts, outputs, lpips_metric).items():
                for i, entry in enumerate(chunk):
                    key = (entry["bucket"], entry["border"])
                    scores[method][key].append({k: float(v[i]) for k, v in values.items()})
            for i, entry in enumerate(chunk):
                if _shows(entry, shown, groups):
                    shown.append(entry["bucket"])
                    examples.append([gts[i] / 255 * masks_b[i][..., None], masks_b[i],
                                     *[outputs[m][i] / 255 for m in methods], gts[i] / 255])
            bar.update(len(chunk))
        fills = {"computed": runner.misses, "from_cache": runner.hits, "cache": cache_dir}
    bar.close()
    lama = bool(mask_entries) and bool(mask_entries[0].get("lama"))
    results = {m: (_bin_rows if lama else _rows)(scores[m]) for m in methods}
    if classical:
        results["baseline_fills"] = fills  # pair-method fills: computed, read from the cache
    if inception is not None:
        results["fid"] = _fids({k: np.concatenate(v) for k, v in features.items()},
                               [e["bucket"] for e in mask_entries], methods)
    return results, examples


def _submit(runner, images, mask_entries, starts: Sequence[int], batch_size: int) -> list:
    """[(gts, masks, job)] for the batches at `starts`, their classical fills under way."""
    out = []
    for start in starts:
        gts, masks_b = eval_pairs(images, mask_entries, start, start + batch_size)
        out.append((gts, masks_b, runner.submit(gts, masks_b) if runner.methods else None))
    return out


def _check_request(inpainter, mask_entries: list[dict], batch_size: int,
                   methods: Sequence[str], inception, lpips_metric) -> None:
    """Raises ValueError for an evaluation that cannot run as asked, before any work."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown evaluation methods {unknown}; choose from {METHODS}")
    if "model" in methods and inpainter is None:
        raise ValueError("method 'model' needs an inpainter")
    for method in methods:
        reason = None if method == "model" else baselines.missing(method)
        if reason:
            raise ValueError(f"cannot evaluate {method}: {reason}")
    if inception is not None and len(mask_entries) < 2:  # said now, not after the work
        raise ValueError(f"FID needs at least 2 image-mask pairs, got {len(mask_entries)}")
    if lpips_metric is not None and mask_entries:
        from pconv_jax.lpips import MIN_SIZE

        size = min(mask_entries[0]["mask"].shape)
        if size < MIN_SIZE:
            raise ValueError(f"LPIPS needs images of at least {MIN_SIZE} px; the masks are "
                             f"{size} px (choose a larger --size or mask set)")


def _scores(gts: np.ndarray, outputs: dict, lpips_metric) -> dict:
    """{method: {metric: (B,) values}} of each method's outputs against the ground truths:
    l1, psnr, ssim, and lpips with an lpips_metric."""
    import jax.numpy as jnp

    target = jnp.asarray(gts, jnp.float32) / 255
    perceptual = {} if lpips_metric is None else dict(zip(
        outputs, lpips_metric.against(gts, list(outputs.values())), strict=True))
    scores = {}
    for method, out in outputs.items():
        pred = jnp.asarray(out, jnp.float32) / 255
        scores[method] = {"l1": metrics.l1(pred, target), "psnr": metrics.psnr(pred, target),
                          "ssim": metrics.ssim(pred, target)}
        if method in perceptual:
            scores[method]["lpips"] = perceptual[method]
    return scores


def _shows(entry: dict, shown: list[str], groups: set[tuple[str, bool]]) -> bool:
    """Whether the pair of mask `entry` is its bucket's example: the first of the bucket, in
    the border class that alternates from bucket to bucket (inner, border, inner, ...) where
    the set (its (bucket, border) `groups`) has both; `shown`: the buckets shown so far."""
    border = len(shown) % 2 == 1
    return entry["bucket"] not in shown and (
        entry["border"] == border or (entry["bucket"], border) not in groups)


def _fids(features: dict, buckets: list[str], methods: Sequence[str]) -> dict:
    """{method: {'all': FID, group: FID or None}} against the ground truths' features."""
    from pconv_jax.fid import fids_against

    buckets = np.asarray(buckets)
    names = list(dict.fromkeys(buckets.tolist()))  # the groups, in order of appearance
    out = {m: {} for m in methods}
    for name, chosen in [("all", slice(None))] + [(n, buckets == n) for n in names]:
        if name != "all" and chosen.sum() < FID_MIN_PAIRS:
            for method in methods:
                out[method][name] = None  # too few pairs: not reported
            continue
        values = fids_against(features["real"][chosen],
                              [features[m][chosen] for m in methods])
        for method, value in zip(methods, values, strict=True):
            out[method][name] = value
    return out


def _summary(values: list[dict], **labels) -> dict:
    """Means of the pair scores `values` (PSNR of identical pairs capped at 100 dB)."""
    psnr = [v["psnr"] for v in values]
    return labels | {
        "l1": float(np.mean([v["l1"] for v in values])),
        "psnr": float(np.mean(np.minimum(psnr, 100.0))),
        "ssim": float(np.mean([v["ssim"] for v in values])),
        "count": len(values),
    } | ({"lpips": float(np.mean([v["lpips"] for v in values]))} if "lpips" in values[0] else {})


def _rows(scores: dict) -> list[dict]:
    """Paper sets: one row per bucket x border, in the paper's order."""
    rows = []
    for bucket in mask_lib.BUCKETS:
        for border in (False, True):
            values = scores.get((mask_lib.bucket_name(bucket), border), [])
            if values:
                rows.append(_summary(values, bucket=mask_lib.bucket_name(bucket),
                                     border=border))
    return rows


def _bin_rows(scores: dict) -> list[dict]:
    """LaMa sets: one row per 10 % hole-area bin, then the row 'all' over every pair."""
    rows, everything = [], []
    for lo, _ in mask_lib.AREA_BINS:
        values = scores.get((mask_lib.area_bin_name(lo + 0.05), None), [])
        if values:
            rows.append(_summary(values, bin=mask_lib.area_bin_name(lo + 0.05)))
            everything += values
    return rows + [_summary(everything, bin="all")] if everything else rows


def write_tables(out: str, results: dict) -> None:
    """metrics.json, table.md and table.csv (with LPIPS and FID columns when computed)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(results, f, indent=1)
    methods = [m for m in METHODS if m in results]
    first = results[methods[0]]
    lama = "bin" in first[0]
    has_lpips = "lpips" in first[0]
    fids = results.get("fid")
    keys = ("l1", "psnr", "ssim") + (("lpips",) if has_lpips else ())
    label = ["area bin"] if lama else ["bucket", "border"]
    header = label + ["count"] + [f"{m} {k}" for m in methods for k in keys] + \
        ([f"{m} fid" for m in methods] if fids else [])
    digits = {"l1": 2, "psnr": 2, "ssim": 3, "lpips": 4}
    lines = []
    for i, row in enumerate(first):
        group = row["bin"] if lama else row["bucket"]
        line = [row["bin"]] if lama else [row["bucket"], "yes" if row["border"] else "no"]
        line.append(str(row["count"]))
        for method in methods:
            r = results[method][i]
            line += [f"{r[k]:.{digits[k]}f}" for k in keys]
        if fids:  # FID per group (both border classes) where it is large enough, and 'all'
            line += [_fid_text(fids[m].get(group)) for m in methods]
        lines.append(line)
    total = sum(r["count"] for r in first if r.get("bin") != "all")
    if fids and not lama:
        lines.append(["all", "", str(total)] + [""] * (len(methods) * len(keys)) +
                     [_fid_text(fids[m]["all"]) for m in methods])
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(lines)
    with open(os.path.join(out, "table.md"), "w") as f:
        mask_set = results.get("mask_set")
        if mask_set:
            f.write(_set_line(mask_set) + "\n\n")
        f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        f.writelines("| " + " | ".join(line) + " |\n" for line in lines)
        f.write("\nl1 in % of the [0,1] range; PSNR in dB; metrics on the composite image.")
        if has_lpips:
            f.write(" LPIPS: VGG variant v0.1, lower is closer.")
        if fids:
            f.write(f" FID (pytorch-fid's Inception, lower is closer) per "
                    f"{'area bin' if lama else 'hole-ratio bucket'} only where it has at least "
                    f"{FID_MIN_PAIRS} pairs ('-': fewer, where FID is mostly estimation noise); "
                    "the 'all' row is over every pair")
            f.write(f" ({total} here: below {FID_MIN_PAIRS}, so read it as noise too)."
                    if total < FID_MIN_PAIRS else ".")
        f.write("\n")


def _fills_text(fills: dict | None) -> str:
    """'; baselines: 40 fills computed, 120 from the cache' (empty without baselines)."""
    if not fills:
        return ""
    return (f"; baselines: {fills['computed']} fills computed, {fills['from_cache']} from "
            f"{fills['cache'] or 'no cache'}")


def _set_line(mask_set: dict) -> str:
    """'Masks: protocol lama-thick, 512 px, 1000 masks, seed 0, set sha256 ...' for a table."""
    digest = mask_set.get("set_sha256")
    return (f"Masks: protocol {mask_set['protocol']}, {mask_set['size']} px, "
            f"{mask_set['count']} masks, seed {mask_set.get('seed')}, "
            + (f"set sha256 {digest}" if digest else "not verified (no manifest hashes)")
            + (f"; LaMa's settings scaled from {mask_set['settings']['scaled_from']} px, not "
               "LaMa-comparable" if (mask_set.get("settings") or {}).get("scaled_from") else "")
            + ".")


def _fid_text(value) -> str:
    """A FID cell: two decimals, '-' where not computed."""
    return "-" if value is None else f"{value:.2f}"


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """--workdir, --step and --images: the checkpoint and the images it is scored on."""
    parser.add_argument("--workdir", required=True, help="training run folder")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest)")
    parser.add_argument("--raw-weights", action="store_true",
                        help="the trained weights, not their moving average (for runs with "
                             "optim.ema_decay; without one the weights are the same)")
    parser.add_argument("--images", required=True,
                        help="image folder, tfds:NAME/SPLIT or samples")


def add_baseline_flags(parser: argparse.ArgumentParser) -> None:
    """--methods, --workers and --cache: which methods run and how the baselines run."""
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods out of " + ",".join(METHODS) +
                             " (default: the model and every baseline this machine can run)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for the classical baselines (default: one per core; "
                             "0: in this process)")
    parser.add_argument("--cache", default=None,
                        help="folder caching the baselines' fills per image, mask, method and "
                             "settings (default: pconv_jax.baselines.default_cache_dir(), "
                             "$PCONV_JAX_CACHE/baselines if set); 'none' turns it off")


def baseline_options(parser: argparse.ArgumentParser, args) -> dict:
    """evaluate()'s methods, workers and cache_dir from add_baseline_flags' flags."""
    methods = None
    if args.methods:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            parser.error(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
        for method in methods:
            reason = None if method == "model" else baselines.missing(method)
            if reason:
                parser.error(f"--methods: {method} cannot run here: {reason}")
    if args.workers is not None and not 0 <= args.workers <= 256:
        parser.error(f"--workers must be between 0 and 256, got {args.workers}")
    cache = None if args.cache == "none" else (args.cache or baselines.default_cache_dir())
    return {"methods": methods, "workers": args.workers, "cache_dir": cache}


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.evaluate",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    add_run_flags(parser)
    parser.add_argument("--masks", default=None,
                        help="folder from make-eval-set (any protocol; its manifest is checked)")
    parser.add_argument("--size", type=int, default=None,
                        help="mask size when generating (default: the run's image size)")
    parser.add_argument("--per-bucket", type=int, default=10,
                        help="generated masks per bucket and border class")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated masks")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="image-mask pairs inpainted together")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-smooth-check", action="store_true",
                        help="skip the constant-colour and gradient check (pconv_jax.smooth) "
                             "that metrics.json's smooth_fills and the last lines report")
    add_baseline_flags(parser)
    add_metric_flags(parser)
    args = parser.parse_args(argv)
    for problem in mask_lib.range_problems({
            "--per-bucket": (args.per_bucket, 1, None), "--seed": (args.seed, 0, None),
            "--batch-size": (args.batch_size, 1, None),
            "--size": (8 if args.size is None else args.size, 8, mask_lib.MAX_MASK_SIZE)}):
        parser.error(problem)
    options = check_metric_flags(parser, args) | baseline_options(parser, args)
    from pconv_jax import data
    from pconv_jax.checkpoint import CheckpointError, checkpoint_dir, quiet_orbax_failures
    from pconv_jax.inpaint import Inpainter, InpaintError
    from pconv_jax.paths import check_outputs, probe_writable
    from pconv_jax.vgg import WeightFileError
    from pconv_jax.visualize import save_grid

    quiet_orbax_failures()  # an unreadable checkpoint is one line, not Orbax's tracebacks
    try:
        # before anything is read or loaded: --out may overlap no input, however spelled
        check_outputs({"--out": args.out}, {
            "--images": args.images, "--masks": args.masks,
            "--workdir's checkpoints": checkpoint_dir(args.workdir),
            "--inception": args.inception, "--lpips-vgg": args.lpips_vgg,
            "--lpips-heads": args.lpips_heads})
        extra = _metric_networks(args)  # weight files are inputs: read before the model
        # every input is read before the model loads (~seconds): a bad one costs well under one
        mask_set = load_mask_set(args.masks) if args.masks else None
        images = data.open_source(args.images)  # headers checked now, pixels read pair by pair
        if len(images) == 0:
            raise ValueError(f"--images {args.images} holds no image")
        images[0]  # the first image decodes
        probe_writable(args.out, "--out")
        inpainter = Inpainter.from_workdir(args.workdir, args.step,
                                           average=not args.raw_weights)
        if mask_set is None:  # generated at the run's image size unless --size says otherwise
            size = args.size or inpainter.model.config.image_size
            mask_set = generated_mask_set(size, args.per_bucket, args.seed)
        results, examples = evaluate(inpainter, images, mask_set.entries, args.batch_size,
                                     **extra, **options)
        results["mask_set"] = mask_set.describe()
        results["weights"] = inpainter.weights
        if not args.no_smooth_check:  # the easiest fills: pconv_jax.smooth
            from pconv_jax import smooth

            results["smooth_fills"] = smooth.smooth_fill_check(inpainter)
        write_tables(args.out, results)
        save_grid(os.path.join(args.out, "examples.png"), examples)
    except (OSError, ValueError, InpaintError, CheckpointError, WeightFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with open(os.path.join(args.out, "table.md")) as f:
        print(f.read())
    if "smooth_fills" in results:
        from pconv_jax import smooth

        print(smooth.describe(results["smooth_fills"]))
    print(f"wrote {args.out}/metrics.json, table.md, table.csv, examples.png "
          f"(step {inpainter.step}, {inpainter.weights} weights, {len(mask_set.entries)} "
          "image-mask pairs"
          f"{_fills_text(results.get('baseline_fills'))})")
    return 0


def add_metric_flags(parser: argparse.ArgumentParser) -> None:
    """--inception, --lpips-vgg and --lpips-heads: the perceptual metrics' weight files."""
    parser.add_argument("--inception", default=None,
                        help="pytorch-fid Inception weights (.pth or converted .safetensors): "
                             "adds FID per method")
    parser.add_argument("--lpips-vgg", default=None,
                        help="VGG-16 with all 13 convolutions (.pth, or `python -m "
                             "pconv_jax.vgg convert --all`): with --lpips-heads adds LPIPS")
    parser.add_argument("--lpips-heads", default=None,
                        help="the lpips package's weights/v0.1/vgg.pth (or converted)")


def check_metric_flags(parser: argparse.ArgumentParser, args) -> dict:
    """Usage errors of add_metric_flags' flags; returns {} (the networks load later)."""
    if (args.lpips_vgg is None) != (args.lpips_heads is None):
        parser.error("LPIPS needs both --lpips-vgg and --lpips-heads")
    return {}


def _metric_networks(args) -> dict:
    """{'inception': ..., 'lpips_metric': ...} for the weight files given on the command line."""
    extra = {}
    if args.inception:
        from pconv_jax.fid import load_inception

        extra["inception"] = load_inception(args.inception)
    if args.lpips_vgg:
        from pconv_jax.lpips import load_lpips

        extra["lpips_metric"] = load_lpips(args.lpips_vgg, args.lpips_heads)
    return extra


if __name__ == "__main__":
    sys.exit(main())
