"""`python -m pconv_jax.compare`: a run against the classical baselines in two papers' layouts.

    python -m pconv_jax.compare --workdir RUN --images SOURCE --out DIR \
        [--inception FILE] [--lpips-vgg FILE --lpips-heads FILE] [--count 200] [--seed 0]

Scores the run's checkpoint on four mask sets at the run's image size (or --size): the
paper's hole-ratio buckets (--per-bucket masks per bucket and border class) and LaMa's thin,
medium and thick masks (--count each), beside PatchMatch, Telea, Navier-Stokes and the mean
fill. The mask sets are written once under --masks-root (default DIR/masks) and reused, their
manifests checked, when the command runs again; the baselines' fills are cached (see
pconv_jax.baselines), so scoring a second checkpoint costs the model's fills only.

Writes DIR/table_lama.md (LaMa's Table 1 layout: one row per method, FID and LPIPS per mask
kind), DIR/table_paper.md (the paper's Table 1 layout: a block per metric, one column per
hole-ratio bucket and border class), DIR/comparison.json, and each set's own evaluate
outputs in DIR/<protocol>/ (metrics.json, table.md with the per-10 %-area-bin rows,
examples.png).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from pconv_jax import evaluate as eval_lib
from pconv_jax import masks as mask_lib

LAMA_PROTOCOLS = ("lama-thin", "lama-medium", "lama-thick")
# Table rows: the model, then the baselines in the papers' order.
NAMES = {"model": "PConv (this run)", "patchmatch": "PatchMatch", "telea": "Telea",
         "navier_stokes": "Navier–Stokes", "mean_fill": "Mean fill"}
LAMA_ROWS = ("model", "patchmatch", "telea", "navier_stokes")


def mask_set_folder(root: str, protocol: str, size: int, seed: int, amount: int) -> str:
    """The mask set of these arguments under `root`, written once (atomically) and reused."""
    unit = "b" if protocol == "paper" else "n"
    folder = os.path.join(root, f"{protocol}_{size}px_{unit}{amount}_seed{seed}")
    if not os.path.isfile(os.path.join(folder, "index.json")):
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=root, prefix=".making_")
        try:
            if protocol == "paper":
                mask_lib.make_eval_set(tmp, amount, size, seed)
            else:
                mask_lib.make_eval_set(tmp, None, size, seed, protocol=protocol, count=amount)
            if os.path.isdir(folder):  # a folder without its index.json: a broken earlier try
                shutil.rmtree(folder)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def compare(inpainter, images, sets: dict[str, eval_lib.MaskSet], out: str, *,
            batch_size: int = 4, progress: bool = True, **options) -> dict:
    """Evaluates every mask set (evaluate's outputs in out/<protocol>/); {protocol: results}.

    options: evaluate's methods, inception, lpips_metric, workers, cache_dir, seed.
    """
    from pconv_jax.visualize import save_grid

    results = {}
    for protocol, mask_set in sets.items():
        if progress:
            print(f"{protocol}: {len(mask_set.entries)} pairs at {mask_set.size} px",
                  file=sys.stderr)
        scores, examples = eval_lib.evaluate(inpainter, images, mask_set.entries, batch_size,
                                             progress, **options)
        scores["mask_set"] = mask_set.describe()
        eval_lib.write_tables(os.path.join(out, protocol), scores)
        save_grid(os.path.join(out, protocol, "examples.png"), examples)
        results[protocol] = scores
    return results


def _cell(value: float | None, digits: int) -> str:
    """A table cell: the value rounded, 'n/a' where it was not computed."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _overall(results: dict, method: str, metric: str) -> float | None:
    """A method's value of `metric` over a whole LaMa set (FID 'all', else the 'all' row)."""
    if method not in results:
        return None
    if metric == "fid":
        return (results.get("fid") or {}).get(method, {}).get("all")
    row = results[method][-1]  # the 'all' row
    return row.get(metric)


def lama_table(results: dict, title: str) -> str:
    """LaMa's Table 1 layout: rows the model and baselines, FID and LPIPS per mask kind; then
    PSNR and SSIM in the same layout."""
    kinds = [p for p in LAMA_PROTOCOLS if p in results]
    lines = [f"### {title}", ""]
    for metrics in ((("fid", "FID↓", 2), ("lpips", "LPIPS↓", 4)),
                    (("psnr", "PSNR↑", 2), ("ssim", "SSIM↑", 4))):
        header = ["Method"] + [f"{k.removeprefix('lama-')} {label}" for k in kinds
                               for _, label, _ in metrics]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in LAMA_ROWS:
            if all(method not in results[k] for k in kinds):
                continue
            cells = [_cell(_overall(results[k], method, key), digits)
                     for k in kinds for key, _, digits in metrics]
            lines.append("| " + " | ".join([NAMES[method], *cells]) + " |")
        lines.append("")
    for kind in kinds:
        lines.append("- " + eval_lib._set_line(results[kind]["mask_set"]))
    if any(results[k].get("fid") is None for k in kinds):
        lines.append("- FID needs --inception; LPIPS needs --lpips-vgg and --lpips-heads "
                     "('n/a' where they were not given).")
    counts = [results[k]["mask_set"]["count"] for k in kinds]
    if min(counts) < eval_lib.FID_MIN_PAIRS:
        lines.append(f"- FID over fewer than {eval_lib.FID_MIN_PAIRS} pairs per kind is mostly "
                     "estimation noise; LaMa's tables use 2,000 (CelebA-HQ) to 30,000 (Places).")
    return "\n".join(lines) + "\n"


def paper_table(results: dict, title: str) -> str:
    """The paper's Table 1 layout: a block per metric, one row per method, one column per
    hole-ratio bucket with N (no hole on the border) and B (holes on the border)."""
    methods = [m for m in eval_lib.METHODS if m in results]
    first = results[methods[0]]
    columns = [(r["bucket"], r["border"]) for r in first]
    header = ["Metric", "Method"] + [f"{b} {'B' if border else 'N'}" for b, border in columns]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    metrics = [("l1", "ℓ1 (%)↓", 2), ("psnr", "PSNR↑", 2), ("ssim", "SSIM↑", 4)]
    if "lpips" in first[0]:
        metrics.append(("lpips", "LPIPS↓", 4))
    for key, label, digits in metrics:
        for method in methods:
            cells = [_cell(r.get(key), digits) for r in results[method]]
            lines.append("| " + " | ".join([label, NAMES[method], *cells]) + " |")
    lines += ["", "- " + eval_lib._set_line(results["mask_set"]),
              "- N: no hole pixel on the image border, B: holes touch it (the paper's "
              "Table 1 columns); metrics on the composite image."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.compare",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    eval_lib.add_run_flags(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=int, default=None,
                        help="mask and image size (default: the run's image size)")
    parser.add_argument("--count", type=int, default=200, help="masks per LaMa kind")
    parser.add_argument("--per-bucket", type=int, default=10,
                        help="paper masks per hole-ratio bucket and border class")
    parser.add_argument("--seed", type=int, default=0, help="seed of every mask set")
    parser.add_argument("--masks-root", default=None,
                        help="where the mask sets are written and reused (default: OUT/masks)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="image-mask pairs inpainted together")
    eval_lib.add_baseline_flags(parser)
    eval_lib.add_metric_flags(parser)
    args = parser.parse_args(argv)
    for problem in mask_lib.range_problems({
            "--count": (args.count, 1, mask_lib.MAX_SET_MASKS),
            "--per-bucket": (args.per_bucket, 1, None),
            "--seed": (args.seed, 0, None), "--batch-size": (args.batch_size, 1, None),
            "--size": (32 if args.size is None else args.size, 32, mask_lib.MAX_MASK_SIZE)}):
        parser.error(problem)
    options = eval_lib.check_metric_flags(parser, args) | eval_lib.baseline_options(parser, args)
    from pconv_jax import data
    from pconv_jax.checkpoint import CheckpointError, checkpoint_dir, quiet_orbax_failures
    from pconv_jax.inpaint import Inpainter, InpaintError
    from pconv_jax.paths import check_outputs, probe_writable
    from pconv_jax.vgg import WeightFileError

    quiet_orbax_failures()
    masks_root = args.masks_root or os.path.join(args.out, "masks")
    try:
        check_outputs({"--out": args.out, "--masks-root": masks_root}, {
            "--images": args.images, "--workdir's checkpoints": checkpoint_dir(args.workdir),
            "--inception": args.inception, "--lpips-vgg": args.lpips_vgg,
            "--lpips-heads": args.lpips_heads})
        extra = eval_lib._metric_networks(args)
        images = data.open_source(args.images)
        if len(images) == 0:
            raise ValueError(f"--images {args.images} holds no image")
        images[0]  # the first image decodes
        probe_writable(args.out, "--out")
        inpainter = Inpainter.from_workdir(args.workdir, args.step,
                                           average=not args.raw_weights)
        size = args.size or inpainter.model.config.image_size
        if size < 32:
            raise ValueError(f"LaMa's masks need at least 32 px; the run's images are {size} "
                             "px (give --size)")
        sets = {}
        for protocol in ("paper", *LAMA_PROTOCOLS):
            amount = args.per_bucket if protocol == "paper" else args.count
            folder = mask_set_folder(masks_root, protocol, size, args.seed, amount)
            sets[protocol] = eval_lib.load_mask_set(folder)
        results = compare(inpainter, images, sets, args.out, batch_size=args.batch_size,
                          **extra, **options)
    except (OSError, ValueError, InpaintError, CheckpointError, WeightFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    run = (f"{os.path.basename(os.path.abspath(args.workdir))}, step {inpainter.step}, "
           f"{inpainter.weights} weights")
    lama = lama_table({k: results[k] for k in LAMA_PROTOCOLS},
                      f"LaMa's Table 1 layout: {run}, {size} px, images {args.images}")
    paper = paper_table(results["paper"],
                        f"The paper's Table 1 layout: {run}, {size} px, images {args.images}")
    with open(os.path.join(args.out, "table_lama.md"), "w") as f:
        f.write(lama)
    with open(os.path.join(args.out, "table_paper.md"), "w") as f:
        f.write(paper)
    with open(os.path.join(args.out, "comparison.json"), "w") as f:
        json.dump({"workdir": os.path.abspath(args.workdir), "step": inpainter.step,
                   "weights": inpainter.weights, "size": size, "images": args.images,
                   "results": results}, f, indent=1)
    print(lama + "\n" + paper)
    print(f"wrote {args.out}/table_lama.md, table_paper.md, comparison.json and one folder "
          "per mask set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
