"""Before/after timings for "nothing else gets slower": the float32 ceiling, the paper
network's 512 px forward and the full-loss training step at 256 px, with whatever
`pconv_jax` and `benchmarks.bench` are importable, so that two commits can be compared on
one machine in one session (alternate the runs; compare medians):

    git worktree add /tmp/old OLD_COMMIT
    (cd /tmp/old && PYTHONPATH=src:. /path/to/.venv/bin/python /path/to/benchmarks/regress.py)
    .venv/bin/python -m benchmarks.regress

Prints one JSON line: ceiling GFLOP/s, fwd512_s, step256_s (medians of 5 calls).
"""

import json

from benchmarks import bench
from pconv_jax.model import UNetConfig

if __name__ == "__main__":
    roof = bench.ceiling(5)
    forward = bench.bench_unet(UNetConfig.paper(), batch=1, repeats=5)
    step = bench.bench_train_step(UNetConfig.paper_256(), batch=1, repeats=5)
    print(json.dumps({"ceiling": roof, "fwd512_s": forward["seconds_per_batch"],
                      "step256_s": step["seconds_per_step"]}))
