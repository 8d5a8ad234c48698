"""pconv_jax.lama_masks against an independent LaMa-style generator, in distribution.

    .venv/bin/python -m benchmarks.lama_masks [--count 1000] [--seed 0]

For each kind (thin, medium, thick) and size (256, 512), `count` masks from
`lama_masks.draw_mask` and `count` from the reference below, which is written from the same
facts the way LaMa's `bin/gen_mask_dataset.py` draws: NumPy's legacy global RandomState
(`np.random.randint`, `np.random.choice` between strokes and boxes), `cv2.line` on a float32
canvas, five variants per image, those over 50 % hole dropped and an image without survivors
skipped. Its settings table is typed in here, not taken from `lama_settings`. Hole fraction and
boundary fraction (`lama_masks.boundary_fraction`, the same metric for both) are compared with
the two-sample KS statistic; a row passes at <= 0.08. Prints a Markdown table and exits 1 if a
row fails. About 1 min on 2 CPU cores at --count 1000.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
from scipy import stats

from pconv_jax import lama_masks

THRESHOLD = 0.08

# LaMa's configs/data_gen/random_{kind}_{size}.yaml in its own key names.
REFERENCE_CONFIGS = {
    ("thin", 256): dict(irregular=dict(min_times=4, max_times=50, max_width=10, max_len=40),
                        box_proba=0),
    ("thin", 512): dict(irregular=dict(min_times=4, max_times=70, max_width=20, max_len=100),
                        box_proba=0),
    ("medium", 256): dict(irregular=dict(min_times=4, max_times=5, max_width=50, max_len=100),
                          box_proba=0.3, box=dict(margin=0, bbox_min_size=10, bbox_max_size=50,
                                                  min_times=1, max_times=5)),
    ("medium", 512): dict(irregular=dict(min_times=4, max_times=10, max_width=100, max_len=200),
                          box_proba=0.3, box=dict(margin=0, bbox_min_size=30, bbox_max_size=150,
                                                  min_times=1, max_times=5)),
    ("thick", 256): dict(irregular=dict(min_times=1, max_times=5, max_width=100, max_len=200),
                         box_proba=0.3, box=dict(margin=10, bbox_min_size=30, bbox_max_size=150,
                                                 min_times=1, max_times=3)),
    ("thick", 512): dict(irregular=dict(min_times=1, max_times=5, max_width=250, max_len=450),
                         box_proba=0.3, box=dict(margin=10, bbox_min_size=30, bbox_max_size=300,
                                                 min_times=1, max_times=4)),
}


def reference_irregular(size, max_angle=4, max_len=60, max_width=20, min_times=0, max_times=10):
    """(size,size) float32 canvas, 1 = hole, of random strokes (global RandomState)."""
    height = width = size
    mask = np.zeros((height, width), np.float32)
    times = np.random.randint(min_times, max_times + 1)
    for i in range(times):
        start_x = np.random.randint(width)
        start_y = np.random.randint(height)
        for _ in range(1 + np.random.randint(5)):
            angle = 0.01 + np.random.randint(max_angle)
            if i % 2 == 0:
                angle = 2 * np.pi - angle
            length = 10 + np.random.randint(max_len)
            brush_w = 5 + np.random.randint(max_width)
            end_x = np.clip((start_x + length * np.sin(angle)).astype(np.int32), 0, width)
            end_y = np.clip((start_y + length * np.cos(angle)).astype(np.int32), 0, height)
            cv2.line(mask, (int(start_x), int(start_y)), (int(end_x), int(end_y)), 1.0, brush_w)
            start_x, start_y = end_x, end_y
    return mask


def reference_boxes(size, margin=10, bbox_min_size=30, bbox_max_size=100, min_times=0,
                    max_times=3):
    """(size,size) float32 canvas, 1 = hole, of random boxes (global RandomState)."""
    height = width = size
    mask = np.zeros((height, width), np.float32)
    bbox_max_size = min(bbox_max_size, height - margin * 2, width - margin * 2)
    for _ in range(np.random.randint(min_times, max_times + 1)):
        box_width = np.random.randint(bbox_min_size, bbox_max_size)
        box_height = np.random.randint(bbox_min_size, bbox_max_size)
        start_x = np.random.randint(margin, width - margin - box_width + 1)
        start_y = np.random.randint(margin, height - margin - box_height + 1)
        mask[start_y:start_y + box_height, start_x:start_x + box_width] = 1
    return mask


def reference_variant(config, size):
    """One variant: strokes or boxes, chosen with probabilities (1, box_proba) normalised."""
    if config["box_proba"] > 0:
        probas = np.array([1.0, config["box_proba"]])
        if np.random.choice(2, p=probas / probas.sum()) == 1:
            return reference_boxes(size, **config["box"])
    return reference_irregular(size, **config["irregular"])


def reference_masks(kind, size, count, seed):
    """`count` hole canvases by the five-variant selection; images with no survivor skipped."""
    np.random.seed(seed)
    config = REFERENCE_CONFIGS[kind, size]
    out = []
    while len(out) < count:
        variants = [reference_variant(config, size) for _ in range(5)]
        kept = [m for m in variants if m.mean() <= 0.5]
        if kept:
            out.append(kept[np.random.choice(len(kept))])
    return out


def compare(kind: str, size: int, count: int, seed: int) -> dict:
    """Hole and boundary fractions of ours and the reference, and their KS statistics."""
    settings = lama_masks.lama_settings(kind, size)
    rng = np.random.default_rng(seed)
    ours = [lama_masks.draw_mask(settings, rng) for _ in range(count)]  # 1 = valid
    ref = [1.0 - m for m in reference_masks(kind, size, count, seed)]  # to 1 = valid
    hole = [np.array([np.mean(m == 0) for m in ms]) for ms in (ours, ref)]
    edge = [np.array([lama_masks.boundary_fraction(m) for m in ms]) for ms in (ours, ref)]
    ks_hole = stats.ks_2samp(*hole).statistic
    ks_edge = stats.ks_2samp(*edge).statistic
    return {"kind": kind, "size": size, "hole_ours": hole[0].mean(), "hole_ref": hole[1].mean(),
            "ks_hole": ks_hole, "ks_boundary": ks_edge,
            "pass": max(ks_hole, ks_edge) <= THRESHOLD}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="masks per kind and size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [compare(kind, size, args.count, args.seed + 1000 * k)
            for k, (kind, size) in enumerate((k, s) for k in lama_masks.KINDS
                                             for s in lama_masks.LAMA_SIZES)]
    print(f"LaMa masks, {args.count} per row: ours vs reference (KS pass <= {THRESHOLD})\n")
    print("| kind | size | mean hole ours | mean hole ref | KS hole | KS boundary | pass |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['size']} | {r['hole_ours']:.3f} | {r['hole_ref']:.3f} | "
              f"{r['ks_hole']:.3f} | {r['ks_boundary']:.3f} | {'yes' if r['pass'] else 'NO'} |")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
