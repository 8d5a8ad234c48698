"""`python -m pconv_jax.evaluate`: the paper's Table 1 layout for a checkpoint and baselines.

    python -m pconv_jax.evaluate --workdir RUN [--step N] --images SOURCE [--masks DIR] --out DIR

SOURCE is an image folder, `tfds:NAME/SPLIT` or `samples`; masks come from a folder written by
`python -m pconv_jax.masks make-eval-set` (its index.json), or are generated with a fixed seed
(--per-bucket masks for each bucket x border class). Each mask k is paired with image
k mod (number of images), centre-cropped and resized to the mask size. Metrics (l1 %, PSNR,
SSIM) are computed on the composite (valid pixels from the ground truth) for the model and for
three classical baselines on the same pairs: OpenCV's Telea and Navier-Stokes inpainting, and
filling the holes with the mean colour of the valid pixels. Writes OUT/metrics.json,
OUT/table.md, OUT/table.csv and OUT/examples.png.

With --lpips-vgg and --lpips-heads every row also gets LPIPS (VGG, v0.1); with --inception
metrics.json gets FID per method over all pairs, and per bucket where a bucket has at least
500 pairs (pytorch-fid's numbers: see pconv_jax.fid and pconv_jax.lpips for the files).
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

from pconv_jax import masks as mask_lib
from pconv_jax import metrics
from pconv_jax.imagefile import load_mask_image

METHODS = ("model", "telea", "navier_stokes", "mean_fill")


def eval_masks(folder: str | None, size: int, per_bucket: int, seed: int) -> list[dict]:
    """[{mask: (S,S) float32 1 = valid, bucket: '(lo,hi]', border: bool}] from a folder or seed."""
    if folder:
        index_path = os.path.join(folder, "index.json")
        if not os.path.isfile(index_path):
            raise FileNotFoundError(f"{folder} has no index.json; write one with "
                                    "`python -m pconv_jax.masks make-eval-set --out DIR`")
        try:
            with open(index_path) as f:
                index = json.load(f)
            files = [entry["file"] for entry in index["masks"]]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{index_path} is not a make-eval-set index: it needs "
                             f"{{\"masks\": [{{\"file\": ...}}, ...]}} ({type(err).__name__}: "
                             f"{err})") from None
        entries, relabelled, outside = [], 0, 0
        for entry, name in zip(index["masks"], files, strict=True):
            mask = load_mask_image(os.path.join(folder, name),
                                   hole_is_white=index.get("hole_is_white", True))
            if entries and mask.shape != entries[0]["mask"].shape:
                raise ValueError(f"{os.path.join(folder, name)} is {mask.shape[1]}x"
                                 f"{mask.shape[0]} but the masks before it in {index_path} are "
                                 f"{entries[0]['mask'].shape[1]}x{entries[0]['mask'].shape[0]}: "
                                 "an evaluation set has one mask size")
            bucket = mask_lib.bucket_of(mask)  # from the pixels: labels are not trusted
            if bucket is None:
                outside += 1
                continue
            border = mask_lib.touches_border(mask)
            relabelled += (entry.get("bucket"), entry.get("border")) != (
                mask_lib.bucket_name(bucket), border)
            entries.append({"mask": mask, "bucket": mask_lib.bucket_name(bucket),
                            "border": border})
        if outside or relabelled:
            warnings.warn(f"{folder}: {outside} mask(s) with a hole ratio outside the paper's "
                          f"(0.01, 0.6] left out; {relabelled} mask(s) counted in the bucket or "
                          "border class their pixels give, not their index label", stacklevel=2)
        if not entries:
            raise ValueError(f"{folder} holds no mask with a hole ratio in (0.01, 0.6]")
        return entries
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        mask_lib.make_eval_set(tmp, per_bucket, size, seed)
        return eval_masks(tmp, size, per_bucket, seed)


def baseline(method: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A classical fill of the holes: image (H,W,3) uint8, mask (H,W) 1 = valid."""
    hole = (mask == 0).astype(np.uint8)
    if method == "mean_fill":
        mean = image[mask > 0].mean(axis=0) if np.any(mask > 0) else np.full(3, 127.5)
        out = image.copy()
        out[hole > 0] = np.round(mean).astype(np.uint8)
        return out
    import cv2

    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    return cv2.inpaint(np.ascontiguousarray(image), hole, 3, flag)


def eval_pairs(images, mask_entries, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs start..stop-1: ground truths (B,S,S,3) uint8 and masks (B,S,S), 1 = valid.

    Mask k goes with image k mod len(images), centre-cropped and resized to the mask size.
    """
    from pconv_jax.data import center_crop_resize

    chunk = mask_entries[start:stop]
    size = chunk[0]["mask"].shape[0]
    gts = np.stack([
        np.round(center_crop_resize(np.asarray(images[(start + i) % len(images)],
                                               np.float32) / 255, size) * 255)
        .astype(np.uint8) for i in range(len(chunk))])
    return gts, np.stack([e["mask"] for e in chunk])


FID_MIN_PAIRS = 500  # FID of fewer pairs is dominated by its estimation noise


def evaluate(inpainter, images, mask_entries, batch_size: int = 4, progress: bool = True,
             methods: Sequence[str] = METHODS, inception=None,
             lpips_metric=None) -> tuple[dict, list]:
    """Metrics of each method per bucket x border: ({method: rows}, example grid rows).

    images: a random-access source of (H,W,3) uint8 images; mask_entries from eval_masks;
    methods: 'model' (needs `inpainter`) and any of the classical baselines. With
    `lpips_metric` (pconv_jax.lpips.LPIPS) rows gain 'lpips'; with `inception`
    (pconv_jax.fid.InceptionFID) the result gains 'fid': {method: {'all': FID over all
    pairs, bucket: FID or None below FID_MIN_PAIRS pairs}}. The example rows are one pair per
    hole-ratio bucket (its first; the border class alternates from bucket to bucket where
    the set has both): masked input, mask, each method, ground truth.
    """
    from tqdm import tqdm

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
    bar = tqdm(total=len(mask_entries), unit="pair", disable=not progress)
    for start in range(0, len(mask_entries), batch_size):
        chunk = mask_entries[start:start + batch_size]
        gts, masks_b = eval_pairs(images, mask_entries, start, start + batch_size)
        outputs = {m: _fill(m, inpainter, gts, masks_b) for m in methods}  # (B,S,S,3) uint8
        if inception is not None:
            feats = inception.features(np.concatenate([gts, *[outputs[m] for m in methods]]))
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
    bar.close()
    results = {m: _rows(scores[m]) for m in methods}
    if inception is not None:
        results["fid"] = _fids({k: np.concatenate(v) for k, v in features.items()},
                               [e["bucket"] for e in mask_entries], methods)
    return results, examples


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
    if inception is not None and len(mask_entries) < 2:  # said now, not after the work
        raise ValueError(f"FID needs at least 2 image-mask pairs, got {len(mask_entries)}")
    if lpips_metric is not None and mask_entries:
        from pconv_jax.lpips import MIN_SIZE

        size = min(mask_entries[0]["mask"].shape)
        if size < MIN_SIZE:
            raise ValueError(f"LPIPS needs images of at least {MIN_SIZE} px; the masks are "
                             f"{size} px (choose a larger --size or mask set)")


def _fill(method: str, inpainter, gts: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """One method's composites (B,S,S,3) uint8 of ground truths (B,S,S,3) under masks (B,S,S)."""
    if method == "model":
        return inpainter(gts, masks)
    return np.stack([baseline(method, g, m) for g, m in zip(gts, masks, strict=True)])


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
    """{method: {'all': FID, bucket: FID or None}} against the ground truths' features."""
    from pconv_jax.fid import fid

    buckets = np.asarray(buckets)
    out = {}
    for method in methods:
        out[method] = {"all": fid(features["real"], features[method])}
        for bucket in mask_lib.BUCKETS:
            name = mask_lib.bucket_name(bucket)
            chosen = buckets == name
            if chosen.sum() >= FID_MIN_PAIRS:
                out[method][name] = fid(features["real"][chosen], features[method][chosen])
            elif chosen.any():
                out[method][name] = None  # too few pairs: not reported
    return out


def _rows(scores: dict) -> list[dict]:
    """One row per bucket x border, in the paper's order."""
    rows = []
    for bucket in mask_lib.BUCKETS:
        for border in (False, True):
            values = scores.get((mask_lib.bucket_name(bucket), border), [])
            if not values:
                continue
            psnr = [v["psnr"] for v in values]
            rows.append({
                "bucket": mask_lib.bucket_name(bucket), "border": border,
                "l1": float(np.mean([v["l1"] for v in values])),
                "psnr": float(np.mean(np.minimum(psnr, 100.0))),  # identical pairs -> 100 dB
                "ssim": float(np.mean([v["ssim"] for v in values])),
                "count": len(values),
            } | ({"lpips": float(np.mean([v["lpips"] for v in values]))}
                 if "lpips" in values[0] else {}))
    return rows


def write_tables(out: str, results: dict) -> None:
    """metrics.json, table.md and table.csv (with LPIPS and FID columns when computed)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(results, f, indent=1)
    has_lpips = "lpips" in results["model"][0]
    fids = results.get("fid")
    keys = ("l1", "psnr", "ssim") + (("lpips",) if has_lpips else ())
    header = ["bucket", "border", "count"] + [f"{m} {k}" for m in METHODS for k in keys] + \
        ([f"{m} fid" for m in METHODS] if fids else [])
    digits = {"l1": 2, "psnr": 2, "ssim": 3, "lpips": 4}
    lines = []
    for i, row in enumerate(results["model"]):
        line = [row["bucket"], "yes" if row["border"] else "no", str(row["count"])]
        for method in METHODS:
            r = results[method][i]
            line += [f"{r[k]:.{digits[k]}f}" for k in keys]
        if fids:  # FID is per bucket (both border classes), where the bucket is large enough
            line += [_fid_text(fids[m].get(row["bucket"])) for m in METHODS]
        lines.append(line)
    if fids:
        total = sum(r["count"] for r in results["model"])
        lines.append(["all", "", str(total)] + [""] * (len(METHODS) * len(keys)) +
                     [_fid_text(fids[m]["all"]) for m in METHODS])
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(lines)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        f.writelines("| " + " | ".join(line) + " |\n" for line in lines)
        f.write("\nl1 in % of the [0,1] range; PSNR in dB; metrics on the composite image.")
        if has_lpips:
            f.write(" LPIPS: VGG variant v0.1, lower is closer.")
        if fids:
            f.write(f" FID (pytorch-fid's Inception, lower is closer) per hole-ratio bucket "
                    f"only where the bucket has at least {FID_MIN_PAIRS} pairs ('-': fewer, "
                    "where FID is mostly estimation noise); the 'all' row is over every pair")
            f.write(f" ({total} here: below {FID_MIN_PAIRS}, so read it as noise too)."
                    if total < FID_MIN_PAIRS else ".")
        f.write("\n")


def _fid_text(value) -> str:
    """A FID cell: two decimals, '-' where not computed."""
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.evaluate",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training run folder")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest)")
    parser.add_argument("--images", required=True,
                        help="image folder, tfds:NAME/SPLIT or samples")
    parser.add_argument("--masks", default=None, help="folder from make-eval-set")
    parser.add_argument("--size", type=int, default=None,
                        help="mask size when generating (default: the run's image size)")
    parser.add_argument("--per-bucket", type=int, default=10,
                        help="generated masks per bucket and border class")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated masks")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="image-mask pairs inpainted together")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--inception", default=None,
                        help="pytorch-fid Inception weights (.pth or converted .safetensors): "
                             "adds FID per method")
    parser.add_argument("--lpips-vgg", default=None,
                        help="VGG-16 with all 13 convolutions (.pth, or `python -m "
                             "pconv_jax.vgg convert --all`): with --lpips-heads adds LPIPS")
    parser.add_argument("--lpips-heads", default=None,
                        help="the lpips package's weights/v0.1/vgg.pth (or converted)")
    args = parser.parse_args(argv)
    if (args.lpips_vgg is None) != (args.lpips_heads is None):
        parser.error("LPIPS needs both --lpips-vgg and --lpips-heads")
    for problem in mask_lib.range_problems({
            "--per-bucket": (args.per_bucket, 1, None), "--seed": (args.seed, 0, None),
            "--batch-size": (args.batch_size, 1, None),
            "--size": (8 if args.size is None else args.size, 8, mask_lib.MAX_MASK_SIZE)}):
        parser.error(problem)
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
        entries = eval_masks(args.masks, 0, 0, 0) if args.masks else None
        images = data.open_source(args.images)  # headers checked now, pixels read pair by pair
        if len(images) == 0:
            raise ValueError(f"--images {args.images} holds no image")
        images[0]  # the first image decodes
        probe_writable(args.out, "--out")
        inpainter = Inpainter.from_workdir(args.workdir, args.step)
        if entries is None:  # generated at the run's image size unless --size says otherwise
            size = args.size or inpainter.model.config.image_size
            entries = eval_masks(None, size, args.per_bucket, args.seed)
        results, examples = evaluate(inpainter, images, entries, args.batch_size, **extra)
        write_tables(args.out, results)
        save_grid(os.path.join(args.out, "examples.png"), examples)
    except (OSError, ValueError, InpaintError, CheckpointError, WeightFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with open(os.path.join(args.out, "table.md")) as f:
        print(f.read())
    print(f"wrote {args.out}/metrics.json, table.md, table.csv, examples.png "
          f"(step {inpainter.step}, {len(entries)} image-mask pairs)")
    return 0


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
