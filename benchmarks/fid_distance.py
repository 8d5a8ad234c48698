"""The Fréchet distance of 2048-dim features: pytorch-fid's sqrtm route against ours.

    .venv/bin/python -m benchmarks.fid_distance [--samples 600] [--repeats 3]

pytorch-fid takes Tr sqrtm(S1 S2) with `scipy.linalg.sqrtm` of the product; pconv_jax.fid
takes it from two symmetric eigendecompositions (`fid.trace_sqrt_product`), and
`fid.fids_against` computes the reference set's square root once for several methods. Prints
the median seconds of each and the relative difference of the FIDs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import linalg

from pconv_jax import fid


def sqrtm_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID as pytorch-fid computes it (its calculate_frechet_distance without the fallbacks)."""
    mu1, s1 = fid.statistics(a)
    mu2, s2 = fid.statistics(b)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls of fn() and its last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def main() -> None:
    """Times one FID both ways and five FIDs against one reference set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    real = rng.normal(size=(args.samples, 2048))
    fakes = [real + rng.normal(0, 0.3 + 0.1 * k, real.shape) for k in range(5)]
    t_sqrtm, v_sqrtm = median_seconds(lambda: sqrtm_fid(real, fakes[0]), args.repeats)
    t_ours, v_ours = median_seconds(lambda: fid.fid(real, fakes[0]), args.repeats)
    t_five, _ = median_seconds(lambda: fid.fids_against(real, fakes), args.repeats)
    print(f"| route | seconds (median of {args.repeats}) |\n|---|---|")
    print(f"| scipy.linalg.sqrtm (pytorch-fid), one FID | {t_sqrtm:.2f} |")
    print(f"| fid.fid (eigendecompositions), one FID | {t_ours:.2f} |")
    print(f"| fid.fids_against, five FIDs against one set | {t_five:.2f} |")
    print(f"\nFID {v_ours:.6f} against {v_sqrtm:.6f}: relative difference "
          f"{abs(v_ours - v_sqrtm) / abs(v_sqrtm):.1e}; sqrtm / ours {t_sqrtm / t_ours:.1f}x")


if __name__ == "__main__":
    main()
