"""Hole masks (1 = valid, 0 = hole): generation, augmentation, mask sources, hole-ratio buckets.

Masks are NumPy (H,W) float32 arrays holding only 0 and 1; nothing here knows the model.
Resizing is nearest-neighbour only, so masks stay binary. Mask files are read by
`pconv_jax.imagefile` (`load_mask_image`: white = hole by default).

    python -m pconv_jax.masks make-eval-set --out DIR --per-bucket N --size S --seed K
    python -m pconv_jax.masks make-eval-set --protocol lama-thick --size 512 --count N --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Sequence

import numpy as np

from pconv_jax.imagefile import first_decodable, load_holes, load_mask_image, readable_images

# The paper's hole-to-image area-ratio buckets (DESIGN.md §1).
BUCKETS: tuple[tuple[float, float], ...] = (
    (0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6),
)


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from an int or a pair, checked positive."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"mask size must be positive, got {size!r}")
    return int(h), int(w)


def _window(hole: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """The part of `hole` inside the box [lo, hi] and that part's pixel coordinates."""
    h, w = hole.shape
    top, left = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
    bottom, right = min(int(np.ceil(hi[0])) + 1, h), min(int(np.ceil(hi[1])) + 1, w)
    yy, xx = np.mgrid[top:bottom, left:right]
    return hole[top:bottom, left:right], yy, xx


def _stroke(hole: np.ndarray, rng: np.random.Generator) -> None:
    """Marks a random polyline of 2-6 segments with a random width as hole."""
    h, w = hole.shape
    scale = min(h, w)
    radius = rng.uniform(0.01, 0.04) * scale + 0.5
    point = rng.uniform((0, 0), (h, w))
    for _ in range(rng.integers(2, 7)):
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.08, 0.35) * scale
        end = np.clip(point + length * np.array([np.sin(angle), np.cos(angle)]), 0, (h - 1, w - 1))
        view, yy, xx = _window(hole, np.minimum(point, end) - radius,
                               np.maximum(point, end) + radius)
        seg = end - point
        denom = max(float(seg @ seg), 1e-9)
        t = np.clip(((yy - point[0]) * seg[0] + (xx - point[1]) * seg[1]) / denom, 0, 1)
        dist2 = (yy - point[0] - t * seg[0]) ** 2 + (xx - point[1] - t * seg[1]) ** 2
        view |= dist2 <= radius**2
        point = end


def _ellipse(hole: np.ndarray, rng: np.random.Generator, circle: bool) -> None:
    """Marks a random (rotated) ellipse or circle as hole."""
    h, w = hole.shape
    scale = min(h, w)
    centre = rng.uniform((0, 0), (h, w))
    a = rng.uniform(0.03, 0.15) * scale
    b = a if circle else rng.uniform(0.03, 0.15) * scale
    theta = rng.uniform(0, np.pi)
    reach = max(a, b)
    view, yy, xx = _window(hole, centre - reach, centre + reach)
    u = (xx - centre[1]) * np.cos(theta) + (yy - centre[0]) * np.sin(theta)
    v = -(xx - centre[1]) * np.sin(theta) + (yy - centre[0]) * np.cos(theta)
    view |= (u / a) ** 2 + (v / b) ** 2 <= 1


def irregular_mask(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    hole_ratio: float | None = None,
) -> np.ndarray:
    """Random irregular mask (H,W) float32, 1 = valid, 0 = hole, with about `hole_ratio` holes.

    Shapes (strokes 60%, ellipses 20%, circles 20%) are added until the hole fraction reaches
    `hole_ratio` (default: uniform in (0.01, 0.6], the paper's range); the last shape may
    overshoot it.
    """
    h, w = _size_pair(size)
    if hole_ratio is None:
        hole_ratio = float(rng.uniform(0.01, 0.6))
    if not 0 < hole_ratio < 1:
        raise ValueError(f"hole_ratio must lie in (0, 1), got {hole_ratio}")
    hole = np.zeros((h, w), bool)
    while hole.mean() < hole_ratio:
        kind = rng.choice(3, p=(0.6, 0.2, 0.2))
        if kind == 0:
            _stroke(hole, rng)
        else:
            _ellipse(hole, rng, circle=kind == 2)
    return (~hole).astype(np.float32)


def hole_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels (mask == 0) of an (H,W) or (H,W,1) mask."""
    return float(np.mean(np.asarray(mask) == 0))


def bucket_of(mask: np.ndarray) -> tuple[float, float] | None:
    """The paper's hole-ratio bucket (lo, hi] holding this mask, or None outside (0.01, 0.6]."""
    ratio = hole_ratio(mask)
    for lo, hi in BUCKETS:
        if lo < ratio <= hi:
            return lo, hi
    return None


def bucket_name(bucket: tuple[float, float]) -> str:
    """'(0.1,0.2]' for (0.1, 0.2)."""
    return f"({bucket[0]:g},{bucket[1]:g}]"


def touches_border(mask: np.ndarray) -> bool:
    """True when a hole pixel lies on the image border."""
    m = np.asarray(mask)
    m = m[..., 0] if m.ndim == 3 else m
    edges = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
    return bool(np.any(edges == 0))


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H,W) mask to size (H', W'); values stay as they are."""
    h, w = mask.shape[:2]
    rows = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(int)
    return mask[rows][:, cols]


def _holes(mask: np.ndarray) -> np.ndarray:
    """(H,W) uint8, 1 where an (H,W) or (H,W,1) mask is 0 (a hole)."""
    mask = np.asarray(mask)
    return np.equal(mask[..., 0] if mask.ndim == 3 else mask, 0).view(np.uint8)


def augment(mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's mask augmentation: random dilation, rotation and crop, to (size, size).

    With probability 1/2 the holes grow by 1-3 steps of a 3x3 cross; the mask turns by an
    angle uniform in [0, 360) about its centre (what leaves the frame is valid); a square of
    side min(H,W) * U(0.6, 1) at a uniform position in the frame is cut out and resized
    (nearest) to (size, size). Returns (size,size) float32 with 1 = valid.
    """
    return _augment_holes(_holes(mask), size, rng)


def _augment_holes(hole: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """augment for a (H,W) uint8 hole image (1 = hole); the random draws in augment's order."""
    iterations = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
    angle = float(rng.uniform(0, 360))
    h, w = hole.shape
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return _warp_holes(hole, size, iterations, angle, side, top, left)


def _augment_with(mask: np.ndarray, size: int, dilate_iters: int, angle: float, side: int,
                  top: int, left: int) -> np.ndarray:
    """augment with its draws given: dilate the holes of the (H,W) mask dilate_iters times by
    a 3x3 cross, turn by `angle` degrees about the centre, cut the side x side square at
    (top, left) of the turned frame and resize it (nearest) to (size,size) float32, 1 = valid.
    """
    return _warp_holes(_holes(mask), size, dilate_iters, angle, side, top, left)


# Output value per warped hole value: 0 (no hole) -> 1.0 (valid), 1 (hole) -> 0.0.
_VALID_OF_HOLE = np.array([1.0] + [0.0] * 255, np.float32)


def _warp_holes(hole: np.ndarray, size: int, dilate_iters: int, angle: float, side: int,
                top: int, left: int) -> np.ndarray:
    """_augment_with for a (H,W) uint8 hole image (1 = hole); returns (size,size) float32.

    Turn, crop and resize are one OpenCV warp straight into the output, so the cost follows
    `size`, not the file. Output pixel (i, j) samples the turned frame at
    p = (top, left) + ((i, j) + 0.5) * side / size - 0.5, as resize_nearest of the crop does,
    and the turned frame at p holds the source at R (p - c) + c with c = ((H-1)/2, (W-1)/2),
    R = [[cos a, sin a], [-sin a, cos a]] in (row, column) order (scipy.ndimage.rotate's
    convention). Samples outside the source are valid.
    """
    import cv2

    if dilate_iters > 0:
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        hole = cv2.dilate(hole, cross, iterations=int(dilate_iters))  # outside counts as valid
    h, w = hole.shape
    cos, sin = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    scale = side / size
    # The frame position of output pixel (0, 0), relative to the centre c.
    r0 = top + 0.5 * scale - 0.5 - (h - 1) / 2
    c0 = left + 0.5 * scale - 0.5 - (w - 1) / 2
    # OpenCV rounds exact halves to even; a nudge well below any other sub-pixel offset (and
    # above its float32 error) makes them round up, as resize_nearest's floor(x + 0.5) does.
    nudge = 0.25 / size
    # WARP_INVERSE_MAP: source (x, y) = matrix @ (j, i, 1) for output column j and row i.
    matrix = np.array([
        [cos * scale, -sin * scale, -sin * r0 + cos * c0 + (w - 1) / 2 + nudge],
        [sin * scale, cos * scale, cos * r0 + sin * c0 + (h - 1) / 2 + nudge],
    ])
    out = cv2.warpAffine(hole, matrix, (size, size), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # (size,size), 1 = hole
    return cv2.LUT(out, _VALID_OF_HOLE)


class MaskSource:
    """Masks for training: irregular random masks, or files from a folder with augmentation."""

    def __init__(self, size: int, folder: str | None = None, *,
                 hole_range: tuple[float, float] = (0.01, 0.6), hole_is_white: bool = True):
        lo, hi = (float(v) for v in hole_range)
        if not 0 < lo <= hi < 1:
            raise ValueError(f"hole_range must be (lo, hi) with 0 < lo <= hi < 1, got {hole_range}")
        self.size = size
        self.hole_range = (lo, hi)
        self.hole_is_white = hole_is_white
        self.folder = folder
        self.files = readable_images(folder, "mask") if folder else []
        self.broken: set[str] = set()  # files whose header reads but whose data does not

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One (size, size) mask, 1 = valid."""
        if not self.files:
            return irregular_mask(self.size, rng, float(rng.uniform(*self.hole_range)))
        # augment(load_mask_image(path)) without the float32 mask in between
        hole = first_decodable(
            self.files, int(rng.integers(len(self.files))), self.broken,
            lambda path: load_holes(path, self.hole_is_white),
            f"mask files below {self.folder}")
        return _augment_holes(hole, self.size, rng)


PROTOCOLS: tuple[str, ...] = ("paper", "lama-thin", "lama-medium", "lama-thick")
# Ten hole-area bins of 10 %, (lo, hi] (the first also holds 0): LaMa's per-area tables.
AREA_BINS: tuple[tuple[float, float], ...] = tuple((k / 10, (k + 1) / 10) for k in range(10))
MANIFEST_VERSION = 2  # index.json with protocol, settings and sha256 per file


def area_bin_name(ratio: float) -> str:
    """'10-20%' for a hole ratio in (0.1, 0.2] ('0-10%' holds 0 as well)."""
    k = min(max(int(np.ceil(ratio * 10)) - 1, 0), 9)
    return f"{k * 10}-{(k + 1) * 10}%"


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pixels_sha256(mask: np.ndarray) -> str:
    """Hex sha256 of an (H,W) mask's holes (shape, then one byte per pixel, 1 = hole).

    The same for the same pixels on any machine, whatever PNG encoder wrote the file.
    """
    import hashlib

    hole = np.ascontiguousarray(_holes(mask))
    return hashlib.sha256(f"{hole.shape[0]}x{hole.shape[1]}:".encode() + hole.tobytes()).hexdigest()


def set_sha256(entries: Sequence[dict]) -> str:
    """The set's hash: sha256 over every mask's file name and pixel hash, in order.

    Two sets with this hash hold the same masks under the same names; a paper's table can
    print it beside the seed.
    """
    import hashlib

    text = "".join(f"{e['file']} {e['pixels_sha256']}\n" for e in entries)
    return hashlib.sha256(text.encode()).hexdigest()


def _save_mask(out: str, name: str, mask: np.ndarray) -> dict:
    """Writes (H,W) mask 1 = valid as a PNG (white = hole): {file, hole_ratio, sha256s}."""
    from PIL import Image

    path = os.path.join(out, name)
    Image.fromarray(((1 - mask) * 255).astype(np.uint8)).save(path)
    return {"file": name, "hole_ratio": hole_ratio(mask), "sha256": file_sha256(path),
            "pixels_sha256": pixels_sha256(mask)}


def make_eval_set(out: str, per_bucket: int | None = None, size: int = 512, seed: int = 0, *,
                  protocol: str = "paper", count: int | None = None,
                  progress: bool = False) -> dict:
    """Writes an evaluation mask set and its index.json manifest to `out`; returns the index.

    protocol 'paper': per_bucket masks for each of the paper's buckets x {border, no border}.
    protocol 'lama-thin|medium|thick': `count` masks from LaMa's generator
    (pconv_jax.lama_masks) with its settings for `size` (256 or 512; other sizes scaled, see
    lama_masks.lama_settings). The manifest records the protocol, its settings, the seed and
    each file's sha256 (of the file's bytes, checked by `verify_manifest`) and pixel hash;
    the same arguments give the same pixels on any machine.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    os.makedirs(out, exist_ok=True)
    if protocol == "paper":
        if per_bucket is None or per_bucket < 1 or size < 8:
            raise ValueError(f"evaluation masks need per_bucket >= 1 and size >= 8, got "
                             f"per_bucket={per_bucket}, size={size}")
        entries = _paper_masks(out, per_bucket, size, seed)
        index = {"protocol": "paper", "size": size, "seed": seed, "per_bucket": per_bucket,
                 "settings": {"buckets": [list(b) for b in BUCKETS], "border_classes": 2,
                              "generator": "pconv_jax.masks.irregular_mask"}}
    else:
        if count is None or count < 1:
            raise ValueError(f"protocol {protocol} needs count >= 1, got {count}")
        entries, settings = _lama_masks(out, protocol, count, size, seed, progress)
        index = {"protocol": protocol, "size": size, "seed": seed, "count": count,
                 "settings": settings}
    index |= {"version": MANIFEST_VERSION, "hole_is_white": True,
              "set_sha256": set_sha256(entries), "masks": entries}
    from pconv_jax.paths import write_atomically

    text = json.dumps(index, indent=1)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    write_atomically(os.path.join(out, "index.json"), write)
    return index


def _paper_masks(out: str, per_bucket: int, size: int, seed: int) -> list[dict]:
    """per_bucket masks for every bucket x {border, no border}, written to out."""
    rng = np.random.default_rng(seed)
    entries = []
    for bucket in BUCKETS:
        for border in (False, True):
            made, tries = 0, 0
            while made < per_bucket:
                tries += 1
                if tries > 2000 * per_bucket:
                    raise RuntimeError(f"could not draw masks for bucket {bucket_name(bucket)}")
                target = float(rng.uniform(*bucket))
                if border:
                    mask = irregular_mask(size, rng, target)
                else:  # draw on an inner canvas, then frame it with valid pixels
                    margin = max(1, size // 32)
                    inner = size - 2 * margin
                    inner_ratio = min(target * size**2 / inner**2, 0.95)
                    mask = np.pad(irregular_mask(inner, rng, inner_ratio), margin,
                                  constant_values=1.0)
                if bucket_of(mask) != bucket or touches_border(mask) != border:
                    continue
                kind = "border" if border else "inner"
                name = f"{bucket[0]:g}-{bucket[1]:g}_{kind}_{made:04d}.png"
                entries.append(_save_mask(out, name, mask) | {
                    "bucket": bucket_name(bucket), "border": border})
                made += 1
    return entries


def _lama_masks(out: str, protocol: str, count: int, size: int, seed: int,
                progress: bool) -> tuple[list[dict], dict]:
    """count masks of LaMa's kind `protocol` at `size`, written to out; (entries, settings)."""
    from tqdm import tqdm

    from pconv_jax import lama_masks

    kind = protocol.removeprefix("lama-")
    settings = lama_masks.lama_settings(kind, size)
    rng = np.random.default_rng(seed)
    entries = []
    for k in tqdm(range(count), unit="mask", disable=not progress):
        mask = lama_masks.draw_mask(settings, rng)
        ratio = hole_ratio(mask)
        entries.append(_save_mask(out, f"{kind}_{size}_{k:05d}.png", mask) | {
            "bin": area_bin_name(ratio)})
    return entries, lama_masks.settings_dict(settings)


class ManifestError(ValueError):
    """An evaluation set whose files do not match its index.json."""


def verify_manifest(folder: str, index: dict) -> None:
    """Raises ManifestError naming the first listed file that is missing or changed.

    Checks each file's sha256 against index.json (sets written before manifests had hashes
    are not checked: see `has_checksums`).
    """
    for entry in index["masks"]:
        path = os.path.join(folder, entry["file"])
        if not os.path.isfile(path):
            raise ManifestError(f"{path} is listed in {folder}/index.json but missing")
        if "sha256" in entry and file_sha256(path) != entry["sha256"]:
            raise ManifestError(f"{path} does not match its sha256 in {folder}/index.json "
                                "(changed since make-eval-set wrote it); write the set again")


def has_checksums(index: dict) -> bool:
    """Whether every file of a make-eval-set index carries a sha256."""
    return all("sha256" in e for e in index["masks"])


# --- reading a set back: its manifest checked -------------------------------------------

@dataclasses.dataclass(frozen=True)
class MaskSet:
    """An evaluation mask set: its protocol, manifest facts and the masks as entries."""

    protocol: str  # 'paper' or 'lama-thin|medium|thick'
    size: int
    seed: int | None
    set_sha256: str | None  # masks.set_sha256 of the manifest; None for sets without one
    verified: bool  # every file matched its sha256 in index.json
    settings: dict  # the generator's settings as index.json records them
    entries: list[dict]  # {mask: (S,S) float32 1 = valid, bucket, border} (see load_mask_set)

    def describe(self) -> dict:
        """The set's facts for metrics.json and the tables (no masks)."""
        return {"protocol": self.protocol, "size": self.size, "seed": self.seed,
                "count": len(self.entries), "set_sha256": self.set_sha256,
                "verified": self.verified, "settings": self.settings}


def _read_index(folder: str) -> dict:
    """index.json of a make-eval-set folder, checked for its masks list."""
    index_path = os.path.join(folder, "index.json")
    if not os.path.isfile(index_path):
        raise FileNotFoundError(f"{folder} has no index.json; write one with "
                                "`python -m pconv_jax.masks make-eval-set --out DIR`")
    try:
        with open(index_path) as f:
            index = json.load(f)
        [entry["file"] for entry in index["masks"]]  # noqa: B018 (the shape is the check)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{index_path} is not a make-eval-set index: it needs "
                         f"{{\"masks\": [{{\"file\": ...}}, ...]}} ({type(err).__name__}: "
                         f"{err})") from None
    protocol = index.get("protocol", "paper")
    if protocol not in PROTOCOLS:
        raise ValueError(f"{index_path} has protocol {protocol!r}; this version knows "
                         f"{', '.join(PROTOCOLS)}")
    return index


def load_mask_set(folder: str) -> MaskSet:
    """The masks of a make-eval-set folder, each file checked against its sha256 first.

    Paper sets: each mask is counted in the bucket and border class its pixels give (labels
    are not trusted); masks outside (0.01, 0.6] are left out with a warning. LaMa sets: every
    mask is kept, grouped by its 10 % hole-area bin ('bucket' holds the bin, 'border' None).
    A missing or changed file raises masks.ManifestError naming it; a set written before
    manifests had hashes is read with a warning that it could not be verified.
    """
    index = _read_index(folder)
    index_path = os.path.join(folder, "index.json")
    verify_manifest(folder, index)
    verified = has_checksums(index)
    if not verified:
        warnings.warn(f"{index_path} has no sha256 per file (written before manifests), so "
                      "its masks cannot be verified; write the set again to get them",
                      stacklevel=2)
    protocol = index.get("protocol", "paper")
    entries, relabelled, outside = [], 0, 0
    for entry in index["masks"]:
        path = os.path.join(folder, entry["file"])
        mask = load_mask_image(path, hole_is_white=index.get("hole_is_white", True))
        if entries and mask.shape != entries[0]["mask"].shape:
            raise ValueError(f"{path} is {mask.shape[1]}x{mask.shape[0]} but the masks before "
                             f"it in {index_path} are {entries[0]['mask'].shape[1]}x"
                             f"{entries[0]['mask'].shape[0]}: an evaluation set has one mask "
                             "size")
        if protocol != "paper":
            name = area_bin_name(hole_ratio(mask))
            entries.append({"mask": mask, "bucket": name, "border": None, "lama": True})
            continue
        bucket = bucket_of(mask)  # from the pixels: labels are not trusted
        if bucket is None:
            outside += 1
            continue
        border = touches_border(mask)
        relabelled += (entry.get("bucket"), entry.get("border")) != (
            bucket_name(bucket), border)
        entries.append({"mask": mask, "bucket": bucket_name(bucket), "border": border})
    if outside or relabelled:
        warnings.warn(f"{folder}: {outside} mask(s) with a hole ratio outside the paper's "
                      f"(0.01, 0.6] left out; {relabelled} mask(s) counted in the bucket or "
                      "border class their pixels give, not their index label", stacklevel=2)
    if not entries:
        raise ValueError(f"{folder} holds no mask with a hole ratio in (0.01, 0.6]"
                         if protocol == "paper" else f"{index_path} lists no masks")
    return MaskSet(protocol, entries[0]["mask"].shape[0], index.get("seed"),
                   index.get("set_sha256") if verified else None, verified,
                   index.get("settings", {}), entries)


def generated_mask_set(size: int, per_bucket: int, seed: int, protocol: str = "paper",
                       count: int | None = None) -> MaskSet:
    """A make-eval-set set drawn into a temporary folder and read back (nothing is kept)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        make_eval_set(tmp, per_bucket, size, seed, protocol=protocol, count=count)
        return load_mask_set(tmp)


MAX_MASK_SIZE = 4096  # evaluation masks: the largest side the CLIs accept anywhere
MAX_SET_MASKS = 1_000_000  # masks in one LaMa set (LaMa's largest, Places, uses 30,000)


def range_problems(values: dict[str, tuple[int, int, int | None]]) -> list[str]:
    """'--flag must be ...' for each {flag: (value, least, most)} outside [least, most]."""
    problems = []
    for flag, (value, least, most) in values.items():
        if value < least or (most is not None and value > most):
            bound = f"between {least} and {most}" if most is not None else f">= {least}"
            problems.append(f"{flag} must be {bound}, got {value}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m pconv_jax.masks make-eval-set ...`."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.masks",
                                     description="hole masks for pconv-jax")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser(
        "make-eval-set", help="a fixed evaluation mask set with its index.json manifest",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="paper: --per-bucket masks per hole-ratio bucket and border class; "
                    "lama-*: --count masks from LaMa's thin/medium/thick generator (its "
                    "settings at --size 256 or 512; other sizes scale the nearer one)")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--protocol", choices=PROTOCOLS, default="paper", help="mask protocol")
    ev.add_argument("--per-bucket", type=int, default=None,
                    help="paper: masks per hole-ratio bucket and border class (default 100)")
    ev.add_argument("--count", type=int, default=None,
                    help="lama-*: number of masks (default 1000)")
    ev.add_argument("--size", type=int, default=512, help="mask side in pixels")
    ev.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    args = parser.parse_args(argv)
    lama = args.protocol != "paper"
    if lama and args.per_bucket is not None:
        parser.error(f"--per-bucket is for --protocol paper; {args.protocol} takes --count")
    if not lama and args.count is not None:
        parser.error("--count is for the lama-* protocols; --protocol paper takes --per-bucket")
    per_bucket = None if lama else (100 if args.per_bucket is None else args.per_bucket)
    count = (1000 if args.count is None else args.count) if lama else None
    for problem in range_problems({"--per-bucket": (1 if lama else per_bucket, 1, None),
                                   "--count": (count if lama else 1, 1, MAX_SET_MASKS),
                                   "--size": (args.size, 32 if lama else 8, MAX_MASK_SIZE),
                                   "--seed": (args.seed, 0, None)}):
        parser.error(problem)
    try:
        index = make_eval_set(args.out, per_bucket, args.size, args.seed,
                              protocol=args.protocol, count=count, progress=lama)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if lama:
        scaled = index["settings"].get("scaled_from")
        print(f"wrote {len(index['masks'])} {args.protocol} masks at {args.size} px and "
              f"index.json to {args.out} (white = hole; set sha256 {index['set_sha256']})")
        if scaled:
            print(f"note: LaMa defines its masks at 256 and 512 px; these use its {scaled} px "
                  f"settings scaled by {args.size}/{scaled}, so they are not LaMa-comparable")
    else:
        print(f"wrote {len(index['masks'])} masks and index.json to {args.out} "
              f"(white = hole, 12 groups: 6 buckets x border/inner; set sha256 "
              f"{index['set_sha256']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
