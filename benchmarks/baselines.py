"""The classical baselines over an evaluation set: time per method, then the cached rerun.

    .venv/bin/python -m benchmarks.baselines [--size 256] [--per-bucket 20] [--protocol paper]

Draws the mask set (paper: --per-bucket masks per bucket and border class, 240 pairs at the
default 20; lama-*: --per-bucket masks in all), pairs it with the bundled photos as evaluate
does, and fills every pair with each baseline through `pconv_jax.baselines.BaselineRunner`
(worker processes, one per core, an empty cache), then once more on the same cache. Prints a
Markdown table: per method the first pass's seconds, the cached pass's seconds and their
ratio, and the PatchMatch target (<= 120 s for 240 pairs at 256 px on the 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from pconv_jax import baselines, data, evaluate, masks


def time_fills(method: str, pairs: list[tuple[np.ndarray, np.ndarray]], cache: str,
               batch: int = 8) -> tuple[float, int]:
    """Seconds to fill every pair with `method` (batches of `batch`, the next one submitted
    before the last is collected, as evaluate does) and the number computed (not cached)."""
    start = time.perf_counter()
    with baselines.BaselineRunner([method], cache_dir=cache) as runner:
        jobs = []
        for k in range(0, len(pairs), batch):
            chunk = pairs[k:k + batch]
            jobs.append(runner.submit(np.stack([g for g, _ in chunk]),
                                      np.stack([m for _, m in chunk])))
            if len(jobs) > 2:
                runner.collect(jobs.pop(0))
        for job in jobs:
            runner.collect(job)
        computed = runner.misses
    return time.perf_counter() - start, computed


def main() -> None:
    """Times each baseline over the set, first with an empty cache, then cached."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--per-bucket", type=int, default=20)
    parser.add_argument("--protocol", default="paper", choices=masks.PROTOCOLS)
    args = parser.parse_args()
    methods, left_out = baselines.available(baselines.METHODS)
    for line in left_out:
        print(line)
    with tempfile.TemporaryDirectory() as tmp:
        lama = args.protocol != "paper"
        masks.make_eval_set(os.path.join(tmp, "masks"), None if lama else args.per_bucket,
                            args.size, 0, protocol=args.protocol,
                            count=args.per_bucket if lama else None)
        entries = evaluate.load_mask_set(os.path.join(tmp, "masks")).entries
        images = data.open_source("samples")
        gts, mask_arr = evaluate.eval_pairs(images, entries, 0, len(entries))
        pairs = list(zip(gts, mask_arr, strict=True))
        holes = float(np.mean([np.mean(m == 0) for m in mask_arr]))
        print(f"{len(pairs)} pairs at {args.size} px ({args.protocol}), mean hole "
              f"{100 * holes:.1f} %, {os.cpu_count()} worker processes")
        print("\n| method | first pass (s) | cached pass (s) | ratio | computed then |")
        print("|---|---|---|---|---|")
        for method in methods:
            cache = os.path.join(tmp, "cache")
            first, computed = time_fills(method, pairs, cache)
            again, recomputed = time_fills(method, pairs, cache)
            assert recomputed == 0, f"{method}: {recomputed} fills computed again"
            print(f"| {method} | {first:.2f} | {again:.2f} | {first / again:.0f}x | "
                  f"{computed} |")


if __name__ == "__main__":
    main()
