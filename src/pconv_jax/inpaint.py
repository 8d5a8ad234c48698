"""Apply a trained checkpoint to any image: `Inpainter` (Python) and the `inpaint` CLI.

    python -m pconv_jax.inpaint --workdir RUN --image photo.jpg --mask mask.png --out out.png
    python -m pconv_jax.inpaint --workdir RUN --images DIR --masks DIR --out DIR [--batch-size 4]

Masks follow common inpainting tools: white (brighter than 50% grey) = hole; `--invert-mask`
for the paper's 1 = valid. In folder mode a mask sits at its image's relative path (any
extension). Any image size works: the image is padded to a multiple of 2**depth with the
padding marked as hole (the network never conditions on it), inpainted, cropped back and
composited, so every valid pixel comes back bit-identical (outputs are lossless formats).
Photos up to MAX_PHOTO_PIXELS (100 MP) are taken; `--strategy` (default auto) says how one
larger than the model's training size is filled: whole, in crops around its holes, or
downscaled (pconv_jax.strategies). A greyscale photo is written greyscale, an alpha channel
is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from pconv_jax import checkpoint as ckpt
from pconv_jax import strategies
from pconv_jax.imagefile import (
    ImageFileError,
    deep_colour,
    list_images,
    load_mask_image,
    read_alpha,
    read_header,
    read_uint8,
)
from pconv_jax.masks import resize_nearest
from pconv_jax.model import PConvUNet, UNetConfig
from pconv_jax.paths import check_outputs, nearest_folder, writable_folder

# The network's input per image and call (strategy 'full', or a resized photo): above it the
# activations would risk the host's memory. Photos themselves may be larger (MAX_PHOTO_PIXELS):
# the crop and resize strategies keep the network's input near the training size.
MAX_PIXELS = 4096 * 4096
# Photos above this many pixels are refused, from the file's header before decoding: the
# decoded photo and its result grow with the pixels (~3 bytes each).
MAX_PHOTO_PIXELS = 100_000_000


class InpaintError(ValueError):
    """Input the inpainter cannot use, with the reason."""


class Inpainter:
    """A restored PConv UNet in eval mode: `inpainter(image, mask) -> image` (NumPy)."""

    def __init__(self, model: PConvUNet, step: int | None = None, ema_decay: float = 0.0):
        self.model = model
        self.model.eval()
        self.step = step
        self.ema_decay = ema_decay  # > 0: the weights are the run's moving average
        self.multiple = 2**model.config.depth
        graphdef, state = nnx.split(model)
        state = jax.device_put(state)  # restored leaves may be host arrays: moved once, here
        nnx.update(self.model, state)
        self._forward = jax.jit(lambda state, x, m: nnx.merge(graphdef, state)(x, m)[0])
        self._state = state

    @classmethod
    def from_workdir(cls, path: str, step: int | None = None, *,
                     average: bool = True) -> Inpainter:
        """The model of a training run's newest checkpoint (or of `step`), with the moving
        average of its weights when the run kept one (optim.ema_decay) and `average` is on."""
        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{path} is not a training run: no config.json")
        try:
            with open(config_path) as f:
                config = json.load(f)
            model_config = UNetConfig.from_settings(
                config["model"], image_size=config["data"]["image_size"],
                compute_dtype=config["train"].get("compute_dtype", "float32"))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError) as err:
            raise InpaintError(f"{config_path} does not describe a usable model "
                               f"({type(err).__name__}: {err})") from None
        # the structure only (no initialisation: ~46 small compiles, 5.7 s at paper width);
        # the checkpoint fills every leaf
        model = nnx.eval_shape(lambda: PConvUNet(model_config, rngs=nnx.Rngs(0)))
        # config.json must agree with what the checkpoint recorded, setting by setting
        loaded = ckpt.load_model(path, model, step, check_meta=model_config.output_settings(),
                                 average=average)
        return cls(model, loaded, ckpt.average_decay(path, loaded) if average else 0.0)

    @property
    def weights(self) -> str:
        """Which weights fill: 'average (ema_decay D)' or 'raw'."""
        return f"average (ema_decay {self.ema_decay:g})" if self.ema_decay else "raw"

    @property
    def train_size(self) -> int:
        """The image size the model was trained at (the run's data.image_size)."""
        return self.model.config.image_size

    def __call__(self, image: np.ndarray, mask: np.ndarray, *, strategy: str = "auto",
                 **settings) -> np.ndarray:
        """image (H,W,3) or (N,H,W,3), [0,1] float or uint8; mask (H,W)/(N,H,W[,1]), 1 = valid.

        Returns the composite in the image's dtype and range; valid pixels are unchanged.
        `strategy` says how a photo larger than the training size is inpainted: 'auto'
        (default), 'full', 'crop' or 'resize', with `settings` margin, min_margin and
        resize_limit (pconv_jax.strategies has the rule); `auto` runs the whole image through
        the network while its longer side is at most twice the training size.
        """
        images, masks, single = self._checked(image, mask)
        if strategy == "full" or (strategy == "auto" and max(images.shape[1:3]) <=
                                  strategies.FULL_FACTOR * self.train_size):
            result = self._full(images, masks)
        else:
            result = np.stack([self.fill_photo(x, m, strategy=strategy, **settings)[0]
                               for x, m in zip(images, masks, strict=True)])
        return result[0] if single else result

    def fill_photo(self, image: np.ndarray, mask: np.ndarray, *, strategy: str = "auto",
                   **settings) -> tuple[np.ndarray, strategies.Plan]:
        """One image (H,W,3) with its mask (H,W), 1 = valid: (composite, the plan that ran).

        See __call__ and pconv_jax.strategies for `strategy` and `settings`.
        """
        images, masks, _ = self._checked(image, mask)
        if strategy not in strategies.STRATEGIES:
            raise InpaintError(f"unknown strategy {strategy!r}; choose from "
                               f"{', '.join(strategies.STRATEGIES)}")
        try:
            the_plan = strategies.plan(masks[0], self.train_size, strategy, **settings)
            result = strategies.inpaint(self._full, images[0], masks[0], the_plan,
                                        self.train_size)
        except ValueError as err:
            raise InpaintError(str(err)) from None
        return result, the_plan

    def _checked(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                     bool]:
        """(images (N,H,W,3), masks (N,H,W), single) checked for shapes and values."""
        image, masks = np.asarray(image), np.asarray(mask)
        single = image.ndim == 3
        images = image[None] if single else image
        if images.ndim != 4 or images.shape[3] != 3 or 0 in images.shape:
            raise InpaintError(f"image must be (H,W,3) or (N,H,W,3), got {image.shape}")
        masks = masks[None] if single and masks.ndim in (2, 3) else masks
        if masks.ndim == 4 and masks.shape[3] == 1:  # (N,H,W,1), the model's layout
            masks = masks[..., 0]
        if masks.shape != images.shape[:3]:
            raise InpaintError(f"mask shape {np.shape(mask)} does not fit image shape "
                               f"{image.shape}: expected (H,W), (H,W,1), (N,H,W) or (N,H,W,1)")
        h, w = images.shape[1:3]
        if h * w > MAX_PHOTO_PIXELS:
            raise InpaintError(f"image of {w}x{h} pixels exceeds the limit of "
                               f"{MAX_PHOTO_PIXELS} pixels (pconv_jax.inpaint.MAX_PHOTO_PIXELS)")
        _check_values(images, masks)
        return images, masks, single

    def _full(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """The network on whole images (N,H,W,3) with masks (N,H,W), 1 = valid: composites."""
        h, w = images.shape[1:3]
        if h * w > MAX_PIXELS:
            raise InpaintError(f"strategy 'full' would run the network on {w}x{h} pixels, over "
                               f"its limit of {MAX_PIXELS} pixels per image "
                               "(pconv_jax.inpaint.MAX_PIXELS): use 'auto', 'crop' or 'resize'")
        is_uint8 = images.dtype == np.uint8
        x = images.astype(np.float32) / 255.0 if is_uint8 else images.astype(np.float32)
        valid = (masks > 0).astype(np.float32)
        ph, pw = -h % self.multiple, -w % self.multiple
        x_pad = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
        m_pad = np.pad(valid, ((0, 0), (0, ph), (0, pw)))[..., None]  # padding is hole
        out = self._forward(self._state, jnp.asarray(x_pad * 2 - 1), jnp.asarray(m_pad))
        out = (np.asarray(out)[:, :h, :w] + 1) / 2
        out = np.clip(out, 0, 1)
        filled = np.round(out * 255).astype(np.uint8) if is_uint8 else out.astype(images.dtype)
        return np.where(valid[..., None] > 0, images, filled)


def _check_values(images: np.ndarray, masks: np.ndarray) -> None:
    """Raises InpaintError for pixel values the inpainter would silently misread."""
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise InpaintError(f"images must be uint8 (0..255) or float in [0, 1], got "
                               f"{images.dtype}")
        if not np.isfinite(images).all():
            raise InpaintError("images contain NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise InpaintError(f"float images must lie in [0, 1], got {images.min():g}.."
                               f"{images.max():g} (pass uint8 for 0..255)")
    if not np.isfinite(masks).all():
        raise InpaintError("masks contain NaN or infinite values")
    all_hole = np.flatnonzero(~(masks > 0).reshape(len(masks), -1).any(axis=1))
    if all_hole.size:
        raise InpaintError(f"mask {all_hole[0]} marks the whole image as hole: nothing to "
                           "condition on (1 = valid in the Python API)")


@contextlib.contextmanager
def _as_inpaint_error() -> Iterator[None]:
    """An ImageFileError raised in the block becomes an InpaintError with its message."""
    try:
        yield
    except ImageFileError as err:
        raise InpaintError(str(err)) from None


def read_image(path: str) -> np.ndarray:
    """An image file as (H,W,3) uint8 as displayed (greyscale, RGBA, 16-bit, EXIF handled)."""
    with _as_inpaint_error():
        return read_uint8(path, "RGB")


def read_mask(path: str, *, invert: bool, size: tuple[int, int] | None,
              resize: bool) -> np.ndarray:
    """A mask file as (H,W) float32 with 1 = valid: pixels brighter than 50% grey are holes
    (valid with invert), the threshold the rest of the package uses."""
    with _as_inpaint_error():
        valid = load_mask_image(path, hole_is_white=not invert) > 0
    if size is not None and valid.shape != size:
        if not resize:
            raise mask_size_error(path, valid.shape[::-1], size[::-1])
        valid = resize_nearest(valid, size)
    return valid.astype(np.float32)


def mask_size_error(mask_path: str, mask_size: tuple[int, int], image_size: tuple[int, int],
                    image_path: str | None = None) -> InpaintError:
    """The error for a mask of (width, height) `mask_size` on an image of `image_size`."""
    image = "the image" if image_path is None else f"the image {image_path}"
    return InpaintError(f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but {image} is "
                        f"{image_size[0]}x{image_size[1]}; pass --resize-mask to resize it "
                        "(nearest neighbour)")


def load_pair(image_path: str, mask_path: str, *, invert: bool = False,
              resize_mask: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image (H,W,3) uint8, valid (H,W) float32) with the mask checked against the image."""
    image = read_image(image_path)
    valid = read_mask(mask_path, invert=invert, size=image.shape[:2], resize=resize_mask)
    if valid.max() == 0:
        raise InpaintError(f"mask {mask_path} marks the whole image as hole: nothing to "
                           "condition on (use --invert-mask if white marks valid pixels)")
    return image, valid


# Output formats: PNG/BMP/TIFF are lossless; WebP is written lossless; JPEG is refused, since
# its compression would change the valid pixels the composite promises to keep.
OUTPUT_FORMATS = (".png", ".bmp", ".tif", ".tiff", ".webp")


def check_output_path(out_path: str) -> None:
    """Raises InpaintError unless `out_path` names a file in a lossless format."""
    ext = os.path.splitext(out_path)[1].lower()
    if out_path.endswith(os.sep) or os.path.isdir(out_path) or ext not in OUTPUT_FORMATS:
        raise InpaintError(f"output {out_path!r} must be a file ending in one of "
                           f"{', '.join(OUTPUT_FORMATS)} (lossless, so valid pixels stay exact)")


def write_image(out_path: str, image: np.ndarray) -> None:
    """Writes (H,W,3|4) uint8 losslessly in the format of out_path's extension."""
    check_output_path(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    # exact: WebP would otherwise change the colour under fully transparent pixels; PNG at
    # zlib level 3: a 12 MP photo in 0.9 s instead of 2.5 s at Pillow's 6, 14 % larger
    ext = os.path.splitext(out_path)[1].lower()
    options = {".webp": {"lossless": True, "exact": True},
               ".png": {"compress_level": 3}}.get(ext, {})
    Image.fromarray(image).save(out_path, **options)


def with_alpha(image: np.ndarray, alpha: np.ndarray | None, out_path: str) -> np.ndarray:
    """(H,W,3) uint8 with the input's alpha (H,W) appended, when it had one worth keeping."""
    if alpha is None:
        return image
    if out_path.lower().endswith(".bmp"):
        raise InpaintError(f"the input of {out_path} has an alpha channel, which BMP would "
                           "drop: write .png, .tif or .webp to keep it")
    return np.dstack([image, alpha])  # (H,W,4): RGB inpainted, alpha copied


def check_jobs(jobs: list[tuple[str, str, str]], *, resize_mask: bool = False,
               strategy: str = "auto") -> None:
    """Raises InpaintError for the first job whose image or mask header does not read, whose
    sizes do not fit, or whose output folder takes no files: checks that cost milliseconds,
    made before the model loads."""
    checked: set[str] = set()  # output folders: each is probed once
    for image_path, mask_path, out in jobs:
        with _as_inpaint_error():
            image = read_header(image_path, "image")
        if image.pixels > MAX_PHOTO_PIXELS:
            raise InpaintError(f"image {image_path} of {image.width}x{image.height} pixels "
                               f"exceeds the limit of {MAX_PHOTO_PIXELS} pixels; downscale it")
        if strategy == "full" and image.pixels > MAX_PIXELS:
            raise InpaintError(f"image {image_path} of {image.width}x{image.height} pixels is "
                               f"over the network's limit of {MAX_PIXELS} pixels per image for "
                               "--strategy full: use auto, crop or resize")
        with _as_inpaint_error():
            mask = read_header(mask_path, "mask")
        if not resize_mask and not mask.may_equal(image):
            raise mask_size_error(mask_path, (mask.width, mask.height),
                                  (image.width, image.height), image_path)
        folder = os.path.dirname(os.path.abspath(out))
        if folder in checked:
            continue
        try:
            writable_folder(out)
        except OSError as err:
            raise InpaintError(f"cannot write {out}: {err}") from None
        checked.add(folder)


def inpaint_files(inpainter: Inpainter, jobs: list[tuple[str, str, str]], *,
                  invert: bool = False, resize_mask: bool = False, batch_size: int = 4,
                  progress: bool = False, strategy: str = "auto",
                  **settings) -> list[str]:
    """Inpaints (image, mask, output) file triples, batching images of equal size that run
    whole through the network; larger photos one by one with `strategy` (see Inpainter).

    Returns one report line per output file; a mask without holes copies the image. All or
    nothing: the results are written to a staging folder and moved into place only when every
    job has succeeded, so a file that fails half-way leaves no partial set of outputs.
    """
    import shutil
    import tempfile

    first = nearest_folder(jobs[0][2]) if jobs else os.getcwd()  # the outputs' file system
    staging = tempfile.mkdtemp(prefix=".pconv-inpaint-", dir=first)
    staged: list[tuple[str, str]] = []  # (staged file, final output)

    def stage(out: str, image: np.ndarray) -> None:  # moved to `out` after the last job
        check_output_path(out)
        path = os.path.join(staging, f"{len(staged)}{os.path.splitext(out)[1]}")
        write_image(path, image)
        staged.append((path, out))

    try:
        reports = _inpaint_jobs(inpainter, jobs, stage, invert=invert,
                                resize_mask=resize_mask, batch_size=batch_size,
                                progress=progress, strategy=strategy, settings=settings)
        for path, out in staged:
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            shutil.move(path, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return reports


def _inpaint_jobs(inpainter: Inpainter, jobs: list[tuple[str, str, str]], save, *,
                  invert: bool, resize_mask: bool, batch_size: int, progress: bool,
                  strategy: str, settings: dict) -> list[str]:
    """The work of `inpaint_files`; `save(out, image)` takes each result."""
    from tqdm import tqdm

    reports: list[str] = []
    pending: list[tuple] = []  # whole images of one size, batched through the network

    def flush() -> None:
        if not pending:
            return
        images = np.stack([p[0] for p in pending])  # (B,H,W,3)
        valids = np.stack([p[1] for p in pending])  # (B,H,W)
        for (_, valid, out, extra, note), result in zip(
                pending, inpainter(images, valids, strategy="full"), strict=True):
            save(out, extra(result))
            reports.append(f"{out}: {100 * (1 - valid.mean()):.1f}% holes filled "
                           f"(strategy full){note}")
        pending.clear()

    for image_path, mask_path, out in tqdm(jobs, disable=not progress, unit="image"):
        image, valid = load_pair(image_path, mask_path, invert=invert, resize_mask=resize_mask)
        extra, note = _output_form(image_path, out)
        if valid.min() > 0:
            save(out, extra(image))
            reports.append(f"{out}: no hole in the mask: image returned unchanged{note}")
            continue
        whole = strategy == "full" or (strategy == "auto" and max(valid.shape) <=
                                       strategies.FULL_FACTOR * inpainter.train_size)
        if not whole:  # one photo at a time, the network at its own size
            with _as_inpaint_error():
                result, the_plan = inpainter.fill_photo(image, valid, strategy=strategy,
                                                        **settings)
            del image
            save(out, extra(result))
            reports.append(f"{out}: {100 * (1 - valid.mean()):.2f}% holes filled (strategy "
                           f"{the_plan.describe()}){note}")
            continue
        if pending and pending[0][0].shape != image.shape:
            flush()
        pending.append((image, valid, out, extra, note))
        if len(pending) == batch_size:
            flush()
    flush()
    return reports


def _output_form(image_path: str, out_path: str) -> tuple:
    """(extra, note): extra(result (H,W,3) uint8) is what is written for this input (its alpha
    appended, or one channel for a greyscale photo); note says so in the report."""
    alpha = read_alpha(image_path)  # (H,W) uint8 or None: copied to the output as it is
    with _as_inpaint_error():
        grey = read_header(image_path, "image").grey
    note = (" (16-bit input, written as 8-bit)" if deep_colour(image_path) else "") + \
        (" (alpha kept)" if alpha is not None else "") + (" (greyscale)" if grey else "")

    def extra(result: np.ndarray) -> np.ndarray:
        if grey:  # R = G = B on the valid pixels: the luma conversion gives them back exactly
            result = np.asarray(Image.fromarray(result).convert("L"))
            return result if alpha is None else np.dstack([result, alpha])  # (H,W[,2])
        return with_alpha(result, alpha, out_path)

    return extra, note


def load_inpainter(workdir: str, step: int | None = None, average: bool = True) -> Inpainter:
    """Inpainter.from_workdir for a command line: a fallback from an unreadable newest
    checkpoint is one stderr line naming the step used and why, not Orbax's warnings."""
    with warnings.catch_warnings(record=True) as fallbacks:
        warnings.simplefilter("always")
        inpainter = Inpainter.from_workdir(workdir, step, average=average)
    if fallbacks:
        reasons = "; ".join(str(w.message).replace("; trying an older one", "")
                            for w in fallbacks)
        print(f"warning: using the checkpoint of step {inpainter.step}: {reasons}",
              file=sys.stderr)
    return inpainter


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.inpaint",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training run folder")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest)")
    parser.add_argument("--image", help="one image file")
    parser.add_argument("--mask", help="its mask file (white = hole)")
    parser.add_argument("--images", help="folder mode: a folder of images")
    parser.add_argument("--masks", help="folder mode: masks at the images' relative paths")
    parser.add_argument("--out", required=True,
                        help="output file (png/bmp/tiff/webp), or folder in folder mode")
    parser.add_argument("--invert-mask", action="store_true", help="white = valid instead")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="folder mode: images of equal size inpainted together")
    parser.add_argument("--resize-mask", action="store_true",
                        help="resize masks of another size to the image (nearest)")
    parser.add_argument("--strategy", choices=strategies.STRATEGIES, default="auto",
                        help="photos larger than the training size: auto (full up to twice "
                             "the training size, else crops around the holes, else the photo "
                             "downscaled), full, crop or resize (pconv_jax.strategies)")
    parser.add_argument("--crop-margin", type=float, default=strategies.MARGIN,
                        help="crop: context on each side, as a fraction of the holes' size")
    parser.add_argument("--resize-limit", type=int, default=None,
                        help="resize: the longer side the photo is scaled to (default: twice "
                             "the training size)")
    args = parser.parse_args(argv)
    single = args.image is not None or args.mask is not None
    if single == (args.images is not None or args.masks is not None):
        parser.error("give either --image and --mask, or --images and --masks")
    if (single and not (args.image and args.mask)) or \
            (not single and not (args.images and args.masks)):
        parser.error("--image needs --mask and --images needs --masks")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.crop_margin <= 10:
        parser.error(f"--crop-margin must be between 0 and 10, got {args.crop_margin}")
    if args.resize_limit is not None and not 16 <= args.resize_limit <= 4096:
        parser.error(f"--resize-limit must be between 16 and 4096, got {args.resize_limit}")
    ckpt.quiet_orbax_failures()  # an unreadable checkpoint is one line, not Orbax's tracebacks
    try:
        # before anything is read or loaded: --out may overlap no input, however spelled
        check_outputs({"--out": args.out}, {
            "--image": args.image, "--mask": args.mask, "--images": args.images,
            "--masks": args.masks, "--workdir's checkpoints": ckpt.checkpoint_dir(args.workdir)})
        if single:
            check_output_path(args.out)
            jobs = [(args.image, args.mask, args.out)]
        else:
            jobs = _folder_jobs(args.images, args.masks, args.out)
        # a bad input costs milliseconds
        check_jobs(jobs, resize_mask=args.resize_mask, strategy=args.strategy)
        inpainter = load_inpainter(args.workdir, args.step)
        for line in inpaint_files(inpainter, jobs, invert=args.invert_mask,
                                  resize_mask=args.resize_mask, batch_size=args.batch_size,
                                  progress=len(jobs) > 1, strategy=args.strategy,
                                  margin=args.crop_margin, resize_limit=args.resize_limit):
            print(line)
    except (InpaintError, OSError, ValueError, ckpt.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _by_relative_stem(folder: str) -> dict[str, str]:
    """{relative path without extension: file} of the images below `folder`."""
    found: dict[str, str] = {}
    for path in list_images(folder):
        key = os.path.splitext(os.path.relpath(path, folder))[0]
        if key in found:
            raise InpaintError(f"{found[key]} and {path} would share one output and one mask; "
                               "rename one of them")
        found[key] = path
    return found


def _folder_jobs(images: str, masks: str, out: str) -> list[tuple[str, str, str]]:
    """(image, mask, output) triples: a mask at the same relative path (any extension) as its
    image; outputs mirror that path under `out` as PNG."""
    real_images, real_masks = os.path.realpath(images), os.path.realpath(masks)
    if os.path.commonpath([real_images, real_masks]) in (real_images, real_masks):
        raise InpaintError(f"--images {images} and --masks {masks} are the same folder or one "
                           "holds the other: every photo would be taken as a mask; keep the "
                           "masks in a folder of their own")
    mask_files = _by_relative_stem(masks)
    jobs = []
    for key, path in sorted(_by_relative_stem(images).items()):
        if key not in mask_files:
            raise InpaintError(f"no mask for {path}: expected {os.path.join(masks, key)}.* "
                               "(masks match images by relative path and name)")
        jobs.append((path, mask_files[key], os.path.join(out, key + ".png")))
    if not jobs:
        raise InpaintError(f"no images found below {images}")
    return jobs


if __name__ == "__main__":
    sys.exit(main())
