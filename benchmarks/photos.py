"""Photos at camera size: each inpainting strategy's time, peak memory and quality.

    .venv/bin/python -m benchmarks.photos [--sizes 3,12,48] [--quality-run RUN] [--grid FILE]

Speed (a randomly initialised depth-7 256 px model of the paper's width, the layout of the
converted Places2 model, written as a run folder): photos of 3, 12 and 48 MP (the bundled
astronaut resized, JPEG) with holes covering 1.9 % in three places;
- a warm `Inpainter` (compiled, photo decoded) at 12 MP: `full` once after a warm-up, `auto`
  the median of three after one;
- the CLI end to end (start-up, decode, inpaint, encode) per size and strategy: wall seconds
  and the process's peak RSS (its own `ru_maxrss`, read by a wrapper process).
Quality (--quality-run, a run trained at T px such as `make demo`'s): three bundled photos
the demo does not train on (QUALITY_PHOTOS, 451 to 741 px wide) with 1-5 % holes in 1-5
places (six masks each, seeded), PSNR and SSIM of each strategy and of Telea on the
composite, hole-only l1, and each strategy's PSNR against full's on the same pairs; --grid
writes an example grid (JPEG) of one photo.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HOLE_FRACTION = 0.019
# Quality: bundled photos neither `make demo` nor `make cpu-hour` trains on, 3-8x their
# training sizes; mask seeds other than those the strategies' defaults were chosen on (0-5).
QUALITY_PHOTOS = ("chelsea", "coffee", "motorcycle_left")
QUALITY_SEEDS = tuple(range(100, 106))

_RSS_WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                "rc = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
                "print(rc, time.perf_counter() - t, "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def holes(shape: tuple[int, int], places: int, fraction: float,
          rng: np.random.Generator) -> np.ndarray:
    """(H,W) bool: `places` ellipses, turned at random, together about `fraction` of it."""
    import cv2

    h, w = shape
    hole = np.zeros(shape, np.uint8)
    area = fraction * h * w / places
    for k in range(places):
        ratio = rng.uniform(0.4, 1.0)  # minor / major axis
        major = np.sqrt(area / (np.pi * ratio))
        centre = (int(w * (k + 0.5) / places + rng.uniform(-0.1, 0.1) * w / places),
                  int(h * rng.uniform(0.25, 0.75)))
        cv2.ellipse(hole, centre, (int(major), int(major * ratio)), rng.uniform(0, 180), 0,
                    360, 1, -1)
    return hole.astype(bool)


def write_photo(folder: str, megapixels: int) -> tuple[str, str]:
    """(photo.jpg, mask.png) of about `megapixels` MP at 4:3, holes 1.9 % in three places."""
    import cv2
    import skimage.data

    w = int(round(np.sqrt(megapixels * 1e6 * 4 / 3)))
    h = w * 3 // 4
    photo = cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_CUBIC)
    image, mask = (os.path.join(folder, f"{megapixels}mp.{e}") for e in ("jpg", "png"))
    cv2.imwrite(image, photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    hole = holes((h, w), 3, HOLE_FRACTION, np.random.default_rng(megapixels))
    cv2.imwrite(mask, hole.astype(np.uint8) * 255)
    return image, mask


def random_run(folder: str) -> str:
    """A run folder holding a randomly initialised UNetConfig.paper_256() model."""
    from flax import nnx

    from pconv_jax.convert import write_run
    from pconv_jax.model import PConvUNet, UNetConfig

    workdir = os.path.join(folder, "run")
    write_run(workdir, PConvUNet(UNetConfig.paper_256(), rngs=nnx.Rngs(0)), step=0,
              provenance={"source": "random initialisation (benchmarks/photos.py)"})
    return workdir


def cli(workdir: str, image: str, mask: str, out: str, strategy: str) -> dict:
    """The inpaint CLI once: {strategy, rc, seconds, peak_rss_mb}."""
    command = [sys.executable, "-m", "pconv_jax.inpaint", "--workdir", workdir, "--image",
               image, "--mask", mask, "--out", out, "--strategy", strategy]
    line = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *command], capture_output=True,
                          text=True, check=True).stdout.split()
    return {"strategy": strategy, "rc": int(line[0]), "seconds": float(line[1]),
            "peak_rss_mb": int(line[2]) / 1024}


def warm(workdir: str, image_path: str, mask_path: str) -> dict:
    """Seconds of full and auto on a warm Inpainter (12 MP photo, decoded, compiled)."""
    from pconv_jax.inpaint import Inpainter, load_pair

    inpainter = Inpainter.from_workdir(workdir)
    image, valid = load_pair(image_path, mask_path)
    out = {}
    for strategy, repeats in (("auto", 3), ("full", 1)):
        inpainter.fill_photo(image, valid, strategy=strategy)  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _, the_plan = inpainter.fill_photo(image, valid, strategy=strategy)
            times.append(time.perf_counter() - start)
        out[strategy] = {"seconds": float(np.median(times)), "plan": the_plan.describe()}
    return out


def speed(sizes: list[int]) -> None:
    """Prints the warm and CLI tables."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = random_run(tmp)
        photos = {mp: write_photo(tmp, mp) for mp in sizes}
        if 12 in photos:
            result = warm(workdir, *photos[12])
            print("warm Inpainter, 12 MP:", json.dumps(result))
            print(f"full / auto: {result['full']['seconds'] / result['auto']['seconds']:.1f}x")
        print("\n| photo | strategy | CLI seconds | peak RSS (MB) | exit |")
        print("|---|---|---|---|---|")
        for mp, (image, mask) in photos.items():
            for strategy in ("full", "auto", "crop", "resize"):
                if strategy == "full" and mp > 16:
                    print(f"| {mp} MP | full | refused: over the network's 16.8 MP per image "
                          "| | |")
                    continue
                r = cli(workdir, image, mask, os.path.join(tmp, "out.png"), strategy)
                print(f"| {mp} MP | {strategy} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} "
                      f"| {r['rc']} |")


def quality(run: str, grid: str | None) -> None:
    """Prints PSNR/SSIM/hole l1 per strategy and Telea on held-out photos; writes the grid."""
    import jax.numpy as jnp

    from pconv_jax import baselines, data, metrics
    from pconv_jax.inpaint import Inpainter, InpaintError

    inpainter = Inpainter.from_workdir(run)
    methods = ("full", "crop", "resize", "auto", "telea")
    scores = {m: [] for m in methods}  # (psnr, ssim, hole l1) or None where refused
    shown = None
    for name in QUALITY_PHOTOS:
        truth = data.to_uint8(data.bundled_photo(name))
        for seed in QUALITY_SEEDS:
            rng = np.random.default_rng(seed)
            hole = holes(truth.shape[:2], int(rng.integers(1, 6)), rng.uniform(0.01, 0.05), rng)
            valid = (~hole).astype(np.float32)
            outs = {}
            for m in methods[:4]:
                try:
                    outs[m] = inpainter(truth, valid, strategy=m)
                except InpaintError:  # crop: the holes' crops do not fit this photo
                    outs[m] = None
            outs["telea"] = baselines.fill("telea", truth, valid)
            gt = jnp.asarray(truth[None], jnp.float32) / 255
            for m, out in outs.items():
                if out is None:
                    scores[m].append(None)
                    continue
                pred = jnp.asarray(out[None], jnp.float32) / 255
                scores[m].append((float(metrics.psnr(pred, gt)[0]),
                                  float(metrics.ssim(pred, gt)[0]),
                                  float(np.abs(out[hole].astype(int) - truth[hole]).mean())))
            if shown is None and all(o is not None for o in outs.values()):
                shown = (truth, valid, outs)
    print(f"\nquality: {run} (trained at {inpainter.train_size} px); {', '.join(QUALITY_PHOTOS)}"
          f", {len(QUALITY_SEEDS)} masks each (seeds {QUALITY_SEEDS[0]}-{QUALITY_SEEDS[-1]}), "
          "holes 1-5 % in 1-5 places")
    print("\n| method | pairs | PSNR (dB) | SSIM | hole l1 (0-255) | PSNR - full, same pairs |")
    print("|---|---|---|---|---|---|")
    for m in methods:
        done = [(s, f) for s, f in zip(scores[m], scores["full"], strict=True) if s is not None]
        psnr, ssim, l1 = np.mean([s for s, _ in done], axis=0)
        delta = np.mean([s[0] - f[0] for s, f in done])
        print(f"| {m} | {len(done)} of {len(scores[m])} | {psnr:.2f} | {ssim:.4f} | {l1:.2f} "
              f"| {delta:+.2f} |")
    if grid and shown:
        import cv2

        truth, valid, outs = shown
        row = [truth * valid[..., None].astype(np.uint8)] + [outs[m] for m in methods] + [truth]
        cv2.imwrite(grid, np.concatenate(row, axis=1)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"grid: {grid} (masked input, {', '.join(methods)}, truth)")


def main() -> None:
    """Speed tables, then quality when a run is given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,12,48", help="megapixels, comma-separated")
    parser.add_argument("--quality-run", default=None, help="a trained run for quality")
    parser.add_argument("--grid", default=None, help="quality: example grid (JPEG)")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    if not args.skip_speed:
        speed([int(s) for s in args.sizes.split(",") if s])
    if args.quality_run:
        quality(args.quality_run, args.grid)


if __name__ == "__main__":
    main()
