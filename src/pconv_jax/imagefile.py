"""Image and mask files: one set of rules for every reader in the package; nothing here knows
the model.

Images come back as they are displayed: the EXIF orientation applied (phone photos), 16-bit
images scaled to 8 bits as round(v / 257), greyscale/RGBA/palette images converted. A mask
file is binarised by one rule, grey / 255 > threshold is a hole (white = hole by default).
Headers are read without decoding a pixel, so a command refuses a bomb, an animation or an
unreadable pixel mode in milliseconds. Every error is an ImageFileError (a ValueError) that
names the file.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageOps


class ImageFileError(ValueError):
    """An image or mask file that cannot be read, or is refused; the message names it."""


# What Pillow raises for a file it cannot open or decode: over its pixel limit, truncated,
# not an image, or in a format it only half knows.
_PIL_ERRORS = (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError)

# Pixel modes the readers turn into 8-bit RGB or grey; others are refused from the header,
# before their pixels are decoded.
READABLE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX",
                            "CMYK", "YCbCr", "I", "I;16", "I;16B", "I;16L", "I;16N"})

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})

# The first bytes of PNG and JPEG files, for choosing the OpenCV decoder.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


@contextlib.contextmanager
def _pil_image(path: str | BinaryIO, what: str) -> Iterator[Image.Image]:
    """The file opened by Pillow (its header read, no pixel decoded yet); whatever Pillow
    raises, opening or decoding it in the block, becomes one ImageFileError naming the file."""
    try:
        with Image.open(path) as im:
            yield im
    except ImageFileError:
        raise
    except _PIL_ERRORS as err:
        raise ImageFileError(f"cannot read {what} {path}: {err}") from None


# --- headers -------------------------------------------------------------------------------

class Header(NamedTuple):
    """An image file's size as its header tells it, without decoding a pixel."""

    width: int
    height: int
    oriented: bool  # the size as displayed (EXIF turn known); False: as stored, turn unknown
    grey: bool = False  # greyscale pixels (with or without alpha), 1 to 16 bits

    @property
    def pixels(self) -> int:
        """width * height, whichever way the image is turned."""
        return self.width * self.height

    def may_equal(self, other: Header) -> bool:
        """Whether the two images can be displayed at one size: certain when both sizes are
        oriented, up to a quarter turn otherwise (the decoded pixels then decide)."""
        if self.oriented and other.oriented:
            return (self.width, self.height) == (other.width, other.height)
        return sorted((self.width, self.height)) == sorted((other.width, other.height))


def read_header(path: str | BinaryIO, what: str) -> Header:
    """The size of an image file (a path or a binary file object) from its header alone.

    Raises ImageFileError naming the file when it does not open as an image, holds more than
    one frame (an animation: which one to fill?) or pixels the readers do not take (mode F,
    LAB, HSV). Pillow's pixel limit is the caller's to check. A PNG's EXIF turn is read only
    when it precedes the pixels: Pillow would decode the whole image to look for one after
    them, so such a PNG's size is the stored one.
    """
    with warnings.catch_warnings():  # the pixel limit is checked by the caller
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _pil_image(path, what) as im:
            w, h = im.size
            mode, animated = im.mode, getattr(im, "is_animated", False)
            oriented = im.format != "PNG" or "exif" in im.info
            turned = oriented and im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    if animated:
        raise ImageFileError(f"{what} {path} holds more than one frame (an animation): save "
                             "the frame to fill as a still PNG")
    if mode not in READABLE_MODES:
        raise ImageFileError(f"{what} {path} has pixels of mode {mode}, which are not read: "
                             "save it as an 8- or 16-bit RGB or greyscale PNG")
    grey = mode in GREY_MODES
    return Header(h, w, True, grey) if turned else Header(w, h, oriented, grey)


def _header_reads(path: str) -> bool:
    """Whether Pillow reads the header of `path` (within its pixel limit) and its pixel mode
    is one the readers take. Warnings are left alone: this runs in many threads at once."""
    try:
        with Image.open(path) as im:
            return im.mode in READABLE_MODES
    except _PIL_ERRORS:
        return False


# --- folders -------------------------------------------------------------------------------

def list_images(folder: str) -> list[str]:
    """Image files (png, jpg, jpeg, webp, bmp) below `folder`, recursively, sorted."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"not a folder: {folder}")
    suffixes = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.join(root, f) for f in files if f.lower().endswith(suffixes))
    return sorted(found)


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


# --- images --------------------------------------------------------------------------------

def read_uint8(path: str, mode: str = "RGB", what: str = "image") -> np.ndarray:
    """An image file as uint8 (H,W,3) for mode 'RGB', (H,W,4) for 'RGBA' or (H,W) for 'L', as
    it is displayed.

    The EXIF orientation is applied (phone photos), 16-bit images are scaled to 8 bits as
    round(v / 257) in every channel (Pillow alone keeps the high byte of 16-bit colour), and
    greyscale/RGBA/palette images are converted. Raises ImageFileError naming the file when it
    cannot be read or is too large for Pillow's safety limit.
    """
    if mode not in ("RGB", "RGBA", "L"):
        raise ValueError(f"mode must be 'RGB', 'RGBA' or 'L', got {mode!r}")
    with warnings.catch_warnings():  # callers check their pixel limit from the header first
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _read_uint8(path, mode, what)


def _read_uint8(path: str, mode: str, what: str) -> np.ndarray:
    """read_uint8 without its checks."""
    with _pil_image(path, what) as im:
        if mode != "L" and deep_colour(path):
            deep = np.round(_read_deep_colour(path) / 257).astype(np.uint8)  # (H,W,3|4)
            return np.asarray(_oriented(Image.fromarray(_channels(deep, mode)), im))
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float pixels
            values = np.asarray(im, np.float64)
            if im.mode == "F" or values.min() < 0 or values.max() > 65535:
                raise ValueError(f"pixel values {values.min():g}..{values.max():g} in mode "
                                 f"{im.mode} are not 8- or 16-bit; save it as 8/16-bit PNG")
            grey = np.round(values / 257).astype(np.uint8)  # 65535 -> 255
            return grey if mode == "L" else _channels(np.repeat(grey[..., None], 3, 2), mode)
        return np.asarray(im.convert(mode))


def _channels(pixels: np.ndarray, mode: str) -> np.ndarray:
    """(H,W,3|4) uint8 as (H,W,3) for 'RGB' or (H,W,4) for 'RGBA' (opaque where it had no
    alpha)."""
    if mode == "RGB":
        return pixels[..., :3]
    if pixels.shape[2] == 4:
        return pixels
    return np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])


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


def _oriented(image: Image.Image, source: Image.Image) -> Image.Image:
    """`image` (a PIL image of `source`'s stored pixels) turned as `source`'s EXIF says."""
    turn = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}.get(source.getexif().get(0x0112, 1))
    return image.transpose(turn) if turn is not None else image


def read_alpha(path: str, what: str = "image") -> np.ndarray | None:
    """An image file's alpha channel as (H,W) uint8 as displayed, or None when it has none or
    it is fully opaque; ImageFileError naming the file when it cannot be read."""
    with warnings.catch_warnings():  # callers check their pixel limit from the header first
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _read_alpha(path, what)


def _read_alpha(path: str, what: str) -> np.ndarray | None:
    """read_alpha without its warning filter."""
    with _pil_image(path, what) as im:
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
    return None if alpha.min() == 255 else alpha


_REDUCED = ((8, "IMREAD_REDUCED_COLOR_8"), (4, "IMREAD_REDUCED_COLOR_4"),
            (2, "IMREAD_REDUCED_COLOR_2"), (1, "IMREAD_COLOR"))


def read_rgb_at_least(path: str, min_side: int) -> np.ndarray:
    """read_uint8(path), but a JPEG is decoded at the smallest of 1, 1/2, 1/4, 1/8 scale whose
    shorter side is still >= min_side (OpenCV's DCT scaling; EXIF orientation applied)."""
    import cv2

    with _pil_image(path, "image") as im:
        fmt, (w, h) = im.format, im.size
    if fmt != "JPEG":
        return read_uint8(path)
    flag = next(flag for f, flag in _REDUCED if f == 1 or min(w, h) // f >= min_side)
    encoded = np.fromfile(path, np.uint8)
    # OpenCV decodes a truncated JPEG as grey without an error; one that lacks its end marker
    # goes to Pillow, which refuses it, as does an unusual JPEG that OpenCV cannot decode.
    if b"\xff\xd9" not in encoded[-64:].tobytes():
        return read_uint8(path)
    image = cv2.imdecode(encoded, getattr(cv2, flag))  # (H/f,W/f,3) BGR
    if image is None:
        return read_uint8(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # 40x faster than a reversed-axis copy


# --- masks ---------------------------------------------------------------------------------

def load_mask_image(path: str, *, hole_is_white: bool = True, threshold: float = 0.5) -> np.ndarray:
    """Reads a mask image as (H,W) float32 with 1 = valid; bright pixels are holes by default.

    NVIDIA's irregular mask set draws holes in white, as most inpainting tools do; pass
    hole_is_white=False for files where white marks the valid region. PNG and JPEG files are
    decoded by OpenCV where that gives PIL's pixels exactly; others (16-bit, EXIF orientation,
    WebP, ...) by PIL. Raises ImageFileError naming the file when it cannot be read.
    """
    import cv2

    valid = (~_hole_levels(hole_is_white, threshold)).astype(np.float32)  # per grey level
    return cv2.LUT(_read_grey(path), valid)


def load_holes(path: str, hole_is_white: bool = True) -> np.ndarray:
    """The holes of a mask file as (H,W) uint8, 1 = hole: load_mask_image(path) == 0."""
    import cv2

    return cv2.LUT(_read_grey(path), _hole_levels(hole_is_white, 0.5).astype(np.uint8))


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


def _within_pil_limit(width: int, height: int) -> bool:
    """Whether PIL decodes a width x height image without a decompression-bomb warning or
    error (Image.MAX_IMAGE_PIXELS), so that OpenCV may decode it in PIL's place."""
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
