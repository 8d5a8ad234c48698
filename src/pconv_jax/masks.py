"""Hole masks (1 = valid, 0 = hole): generation, mask files, augmentation, hole-ratio buckets.

Masks are NumPy (H,W) float32 arrays holding only 0 and 1; nothing here knows the model.
Resizing is nearest-neighbour only, so masks stay binary.

    python -m pconv_jax.masks make-eval-set --out DIR --per-bucket N --size S --seed K
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np

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


def read_uint8(path: str, mode: str = "RGB", what: str = "image") -> np.ndarray:
    """An image file as uint8 (H,W,3) for mode 'RGB' or (H,W) for 'L', as it is displayed.

    The EXIF orientation is applied (phone photos), 16-bit images are scaled to 8 bits as
    round(v / 257) in every channel (Pillow alone keeps the high byte of 16-bit colour), and
    greyscale/RGBA/palette images are converted. Raises ValueError naming the file when it
    cannot be read or is too large for Pillow's safety limit.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if mode == "RGB" and deep_colour(path):
                rgb = np.round(_read_deep_colour(path)[..., :3] / 257).astype(np.uint8)
                return np.asarray(_oriented(Image.fromarray(rgb), im))
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float pixels
                values = np.asarray(im, np.float64)
                if im.mode == "F" or values.min() < 0 or values.max() > 65535:
                    raise ValueError(f"pixel values {values.min():g}..{values.max():g} in mode "
                                     f"{im.mode} are not 8- or 16-bit; save it as 8/16-bit PNG")
                grey = np.round(values / 257).astype(np.uint8)  # 65535 -> 255
                return grey if mode == "L" else np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert(mode))
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from None


def deep_colour(path: str) -> bool:
    """Whether `path` is a 16-bit colour PNG (RGB or RGBA), which Pillow reads as 8-bit by
    dropping the low byte."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)  # signature, IHDR length and type, width, height, depth, colour
    except OSError:
        return False
    return head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[24] == 16 \
        and head[25] in (2, 6)


def _read_deep_colour(path: str) -> np.ndarray:
    """A 16-bit colour PNG as (H,W,3|4) uint16 RGB(A), as stored (no EXIF turn)."""
    import cv2

    deep = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # BGR(A)
    if deep is None or deep.dtype != np.uint16 or deep.ndim != 3:
        raise ValueError("OpenCV could not read its 16-bit pixels")
    order = [2, 1, 0, 3][:deep.shape[2]]
    return deep[..., order]


def _oriented(image, source):
    """`image` (a PIL image of `source`'s stored pixels) turned as `source`'s EXIF says."""
    from PIL import Image

    turn = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}.get(source.getexif().get(0x0112, 1))
    return image.transpose(turn) if turn is not None else image


def read_alpha(path: str) -> np.ndarray | None:
    """An image file's alpha channel as (H,W) uint8 as displayed, or None when it has none or
    it is fully opaque; ValueError naming the file when it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if deep_colour(path):
                deep = _read_deep_colour(path)
                if deep.shape[2] < 4:
                    return None
                alpha = np.round(deep[..., 3] / 257).astype(np.uint8)
                alpha = np.asarray(_oriented(Image.fromarray(alpha), im))
            elif im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                alpha = np.asarray(ImageOps.exif_transpose(im).convert("RGBA"))[..., 3]
            else:
                return None
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return None if alpha.min() == 255 else alpha


# The first bytes of PNG and JPEG files, for choosing the OpenCV decoder.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def _within_pil_limit(width: int, height: int) -> bool:
    """Whether PIL decodes a width x height image without a decompression-bomb warning or
    error (Image.MAX_IMAGE_PIXELS), so that OpenCV may decode it in PIL's place."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS is None or width * height <= Image.MAX_IMAGE_PIXELS


def _png_decodes_like_pil(data: bytes) -> bool:
    """Whether OpenCV decodes this PNG to the pixels PIL's read_uint8 gives: a complete,
    still (not animated) file, 8 bits or fewer per sample, within PIL's size limit, and no
    EXIF/XMP chunk that could carry an orientation."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[24] > 8:
        return False
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not _within_pil_limit(width, height):
        return False
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IEND":
            return True
        if kind in (b"eXIf", b"acTL"):  # EXIF; animation control (APNG)
            return False
        if kind in (b"tEXt", b"zTXt", b"iTXt"):  # PIL reads EXIF and XMP from text chunks too
            keyword = data[pos + 8:pos + 8 + min(length, 80)].split(b"\0", 1)[0].lower()
            if b"exif" in keyword or b"xmp" in keyword:
                return False
        pos += 12 + length
    return False  # truncated: PIL decides what it makes of it


def _jpeg_decodes_like_pil(data: bytes) -> bool:
    """Whether OpenCV decodes this JPEG to the pixels PIL's read_uint8 gives: a complete file
    with 8-bit greyscale or YCbCr samples, within PIL's size limit, and no APP1 (EXIF/XMP
    orientation) or APP14 (Adobe) segment."""
    if not data.endswith(b"\xff\xd9"):
        return False
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the header is over
            return True
        if marker in (0xE1, 0xEE):  # APP1 (EXIF, XMP) or APP14 (Adobe colour transform)
            return False
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header
            if pos + 10 > len(data) or data[pos + 4] != 8 or data[pos + 9] not in (1, 3):
                return False
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            if not _within_pil_limit(int.from_bytes(data[pos + 7:pos + 9], "big"), height):
                return False
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _grey_uint8_cv2(path: str) -> np.ndarray | None:
    """The file's greyscale (H,W) uint8 pixels exactly as read_uint8(path, 'L') gives them,
    decoded by OpenCV, or None when this file needs PIL (or cannot be read)."""
    import cv2

    try:
        with open(path, "rb") as f:  # Python's open: any path, Unicode included
            data = f.read()
    except OSError:
        return None  # PIL raises the error read_uint8 reports
    if data.startswith(_PNG_SIGNATURE):
        usable = _png_decodes_like_pil(data)
    else:
        usable = data.startswith(_JPEG_SIGNATURE) and _jpeg_decodes_like_pil(data)
    if not usable:
        return None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        return None
    # PIL's RGB -> L: L = (19595 R + 38470 G + 7471 B + 2**15) >> 16 (ITU-R 601-2 luma, rounded).
    # Every product and sum stays below 2**24, so float32 holds them exactly. OpenCV is BGR(A).
    weights = np.array([[7471, 38470, 19595, 0][:pixels.shape[2]] + [32768]], np.float32)
    luma = cv2.transform(pixels.astype(np.float32), weights)  # (H,W) float32
    return np.floor(luma * np.float32(1 / 65536)).astype(np.uint8)


def _hole_levels(hole_is_white: bool, threshold: float) -> np.ndarray:
    """(256,) bool: which grey levels g are holes, by the rule grey / 255 > threshold."""
    levels = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    bright = levels > threshold
    return bright if hole_is_white else ~bright


def _read_grey(path: str) -> np.ndarray:
    """A mask file's (H,W) uint8 grey levels as read_uint8(path, 'L') gives them, decoded by
    OpenCV where that gives the same pixels (faster) and by PIL otherwise."""
    grey = _grey_uint8_cv2(path)
    return read_uint8(path, "L", what="mask image") if grey is None else grey


def load_mask_image(path: str, *, hole_is_white: bool = True, threshold: float = 0.5) -> np.ndarray:
    """Reads a mask image as (H,W) float32 with 1 = valid; bright pixels are holes by default.

    NVIDIA's irregular mask set draws holes in white, as most inpainting tools do; pass
    hole_is_white=False for files where white marks the valid region. PNG and JPEG files are
    decoded by OpenCV where that gives PIL's pixels exactly; others (16-bit, EXIF orientation,
    WebP, ...) by PIL. Raises ValueError naming the file when it cannot be read.
    """
    import cv2

    valid = (~_hole_levels(hole_is_white, threshold)).astype(np.float32)  # per grey level
    return cv2.LUT(_read_grey(path), valid)


def _load_holes(path: str, hole_is_white: bool) -> np.ndarray:
    """The holes of a mask file as (H,W) uint8, 1 = hole: load_mask_image(path) == 0."""
    import cv2

    return cv2.LUT(_read_grey(path), _hole_levels(hole_is_white, 0.5).astype(np.uint8))


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


def list_images(folder: str) -> list[str]:
    """Image files (png, jpg, jpeg, webp, bmp) below `folder`, recursively, sorted."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"not a folder: {folder}")
    suffixes = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(suffixes))
    return sorted(found)


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
            lambda path: _load_holes(path, self.hole_is_white),
            f"mask files below {self.folder}")
        return _augment_holes(hole, self.size, rng)


def first_decodable(files: Sequence[str], start: int, broken: set[str],
                    read: Callable[[str], np.ndarray], what: str) -> np.ndarray:
    """read(files[start]), or of the next file that decodes when it does not.

    Files that fail (their header read, their data did not) are added to `broken`, warned
    about once and skipped from then on; ValueError naming `what` when none decodes.
    """
    for offset in range(len(files)):
        path = files[(start + offset) % len(files)]
        if path in broken:
            continue
        try:
            return read(path)
        except (OSError, ValueError):
            broken.add(path)
            warnings.warn(f"could not decode {path} (broken after its header); using the "
                          "next file instead", stacklevel=3)
    raise ValueError(f"none of the {len(files)} {what} could be decoded")


def _header_reads(path: str) -> bool:
    """Whether PIL can read the image header of `path`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - reads the header
        return True
    except (OSError, ValueError):
        return False


def readable_images(folder: str, what: str = "image") -> list[str]:
    """Image files below `folder` whose header reads (sorted); the others are skipped with a
    warning that counts them. Headers are read by 16 threads (slow or network file systems)."""
    from concurrent.futures import ThreadPoolExecutor

    files = list_images(folder)
    with ThreadPoolExecutor(max_workers=16) as pool:
        ok = list(pool.map(_header_reads, files))
    good = [path for path, fine in zip(files, ok, strict=True) if fine]
    bad = [path for path, fine in zip(files, ok, strict=True) if not fine]
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable {what} file(s) in {folder}, e.g. {bad[0]}",
                      stacklevel=3)
    if not good:
        raise FileNotFoundError(f"no readable {what} files (png/jpg/webp/bmp) found below {folder}")
    return good


def make_eval_set(out: str, per_bucket: int, size: int, seed: int) -> dict:
    """Writes per_bucket masks for every bucket x {border, no border} and an index.json."""
    if per_bucket < 1 or size < 8:
        raise ValueError(f"evaluation masks need per_bucket >= 1 and size >= 8, got "
                         f"per_bucket={per_bucket}, size={size}")
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
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
                Image.fromarray(((1 - mask) * 255).astype(np.uint8)).save(os.path.join(out, name))
                entries.append({"file": name, "bucket": bucket_name(bucket), "border": border,
                                "hole_ratio": hole_ratio(mask)})
                made += 1
    index = {"size": size, "seed": seed, "per_bucket": per_bucket, "hole_is_white": True,
             "masks": entries}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    return index


MAX_MASK_SIZE = 4096  # evaluation masks: the largest side the CLIs accept anywhere


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
    ev = sub.add_parser("make-eval-set", help="a fixed evaluation mask set with index.json",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--per-bucket", type=int, default=100,
                    help="masks per hole-ratio bucket and border class")
    ev.add_argument("--size", type=int, default=512, help="mask side in pixels")
    ev.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    args = parser.parse_args(argv)
    for problem in range_problems({"--per-bucket": (args.per_bucket, 1, None),
                                   "--size": (args.size, 8, MAX_MASK_SIZE),
                                   "--seed": (args.seed, 0, None)}):
        parser.error(problem)
    try:
        index = make_eval_set(args.out, args.per_bucket, args.size, args.seed)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(index['masks'])} masks and index.json to {args.out} "
          "(white = hole, 12 groups: 6 buckets x border/inner)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
