"""Apply a trained checkpoint to any image: `Inpainter` (Python) and the `inpaint` CLI.

    python -m pconv_jax.inpaint --workdir RUN --image photo.jpg --mask mask.png --out out.png
    python -m pconv_jax.inpaint --workdir RUN --images DIR --masks DIR --out DIR [--batch-size 4]

Masks follow common inpainting tools: non-zero (white) = hole; `--invert-mask` for the paper's
1 = valid. Any image size works: the image is padded to a multiple of 2**depth with the padding
marked as hole (the network never conditions on it), inpainted, cropped back and composited,
so every valid pixel comes back bit-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from pconv_jax import checkpoint as ckpt
from pconv_jax.model import PConvUNet

# Images above this many pixels are refused rather than risking the host's memory.
MAX_PIXELS = 4096 * 4096


class InpaintError(ValueError):
    """Input the inpainter cannot use, with the reason."""


class Inpainter:
    """A restored PConv UNet in eval mode: `inpainter(image, mask) -> image` (NumPy)."""

    def __init__(self, model: PConvUNet, step: int | None = None):
        self.model = model
        self.model.eval()
        self.step = step
        self.multiple = 2**model.config.depth
        graphdef, state = nnx.split(model)
        self._forward = jax.jit(lambda state, x, m: nnx.merge(graphdef, state)(x, m)[0])
        self._state = state

    @classmethod
    def from_workdir(cls, path: str, step: int | None = None) -> Inpainter:
        """The model of a training run's newest checkpoint (or of `step`)."""
        from pconv_jax import train

        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{path} is not a training run: no config.json")
        with open(config_path) as f:
            config = ml_collections.ConfigDict(json.load(f))
        model = PConvUNet(train.unet_config(config), rngs=nnx.Rngs(0))
        return cls(model, ckpt.load_model(path, model, step))

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """image (H,W,3) or (N,H,W,3), [0,1] float or uint8; mask (H,W)/(N,H,W[,1]), 1 = valid.

        Returns the composite in the image's dtype and range; valid pixels are unchanged.
        """
        single = image.ndim == 3
        images = image[None] if single else image
        masks = np.asarray(mask)
        if masks.ndim == images.ndim:  # (..., 1)
            masks = masks[..., 0]
        masks = masks[None] if single else masks
        if images.ndim != 4 or images.shape[3] != 3:
            raise InpaintError(f"image must be (H,W,3) or (N,H,W,3), got {image.shape}")
        if masks.shape != images.shape[:3]:
            raise InpaintError(f"mask size {masks.shape[1:]} differs from image size "
                               f"{images.shape[1:3]}")
        h, w = images.shape[1:3]
        if h * w > MAX_PIXELS:
            raise InpaintError(f"image of {h}x{w} pixels exceeds the limit of {MAX_PIXELS} "
                               "pixels (pconv_jax.inpaint.MAX_PIXELS); downscale or tile it")
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
        result = np.where(valid[..., None] > 0, images, filled)
        return result[0] if single else result


def read_image(path: str) -> np.ndarray:
    """An image file as (H,W,3) uint8; greyscale and RGBA are converted."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as err:
        raise InpaintError(f"cannot read image {path}: {err}") from None


def read_mask(path: str, *, invert: bool, size: tuple[int, int] | None,
              resize: bool) -> np.ndarray:
    """A mask file as (H,W) float32 with 1 = valid (non-zero pixels are holes unless invert)."""
    from pconv_jax.masks import resize_nearest

    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except (OSError, ValueError) as err:
        raise InpaintError(f"cannot read mask {path}: {err}") from None
    valid = (grey > 0) if invert else (grey == 0)
    if size is not None and valid.shape != size:
        if not resize:
            raise InpaintError(f"mask {path} is {valid.shape[1]}x{valid.shape[0]} but the image "
                               f"is {size[1]}x{size[0]}; pass --resize-mask to resize it "
                               "(nearest neighbour)")
        valid = resize_nearest(valid, size)
    return valid.astype(np.float32)


def load_pair(image_path: str, mask_path: str, *, invert: bool = False,
              resize_mask: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image (H,W,3) uint8, valid (H,W) float32) with the mask checked against the image."""
    image = read_image(image_path)
    valid = read_mask(mask_path, invert=invert, size=image.shape[:2], resize=resize_mask)
    if valid.max() == 0:
        raise InpaintError(f"mask {mask_path} marks the whole image as hole: nothing to "
                           "condition on (use --invert-mask if white marks valid pixels)")
    return image, valid


def _save(out_path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    Image.fromarray(image).save(out_path)


def inpaint_files(inpainter: Inpainter, jobs: list[tuple[str, str, str]], *,
                  invert: bool = False, resize_mask: bool = False, batch_size: int = 4,
                  progress: bool = False) -> list[str]:
    """Inpaints (image, mask, output) file triples, batching images of equal size.

    Returns one report line per output file; a mask without holes copies the image.
    """
    from tqdm import tqdm

    reports: list[str] = []
    pending: list[tuple[np.ndarray, np.ndarray, str]] = []

    def flush() -> None:
        if not pending:
            return
        images = np.stack([p[0] for p in pending])  # (B,H,W,3)
        valids = np.stack([p[1] for p in pending])  # (B,H,W)
        for (_, valid, out), result in zip(pending, inpainter(images, valids), strict=True):
            _save(out, result)
            reports.append(f"{out}: {100 * (1 - valid.mean()):.1f}% holes filled")
        pending.clear()

    for image_path, mask_path, out in tqdm(jobs, disable=not progress, unit="image"):
        image, valid = load_pair(image_path, mask_path, invert=invert, resize_mask=resize_mask)
        if valid.min() > 0:
            _save(out, image)
            reports.append(f"{out}: no hole in the mask: image returned unchanged")
            continue
        if pending and pending[0][0].shape != image.shape:
            flush()
        pending.append((image, valid, out))
        if len(pending) == batch_size:
            flush()
    flush()
    return reports


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m pconv_jax.inpaint",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="training run folder")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest)")
    parser.add_argument("--image", help="one image file")
    parser.add_argument("--mask", help="its mask file (white = hole)")
    parser.add_argument("--images", help="folder mode: a folder of images")
    parser.add_argument("--masks", help="folder mode: masks with the same file stems")
    parser.add_argument("--out", required=True, help="output file, or folder in folder mode")
    parser.add_argument("--invert-mask", action="store_true", help="white = valid instead")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="folder mode: images of equal size inpainted together")
    parser.add_argument("--resize-mask", action="store_true",
                        help="resize masks of another size to the image (nearest)")
    args = parser.parse_args(argv)
    single = args.image is not None or args.mask is not None
    if single == (args.images is not None or args.masks is not None):
        parser.error("give either --image and --mask, or --images and --masks")
    if (single and not (args.image and args.mask)) or \
            (not single and not (args.images and args.masks)):
        parser.error("--image needs --mask and --images needs --masks")
    try:
        inpainter = Inpainter.from_workdir(args.workdir, args.step)
        if single:
            jobs = [(args.image, args.mask, args.out)]
        else:
            jobs = _folder_jobs(args.images, args.masks, args.out)
        for line in inpaint_files(inpainter, jobs, invert=args.invert_mask,
                                  resize_mask=args.resize_mask, batch_size=args.batch_size,
                                  progress=len(jobs) > 1):
            print(line)
    except (InpaintError, OSError, ckpt.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _folder_jobs(images: str, masks: str, out: str) -> list[tuple[str, str, str]]:
    """(image, mask, output) triples matched by file stem."""
    from pconv_jax.masks import list_images

    by_stem = {os.path.splitext(os.path.basename(p))[0]: p for p in list_images(masks)}
    jobs = []
    for path in list_images(images):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem not in by_stem:
            raise InpaintError(f"no mask for {path} in {masks} (masks match images by name)")
        jobs.append((path, by_stem[stem], os.path.join(out, f"{stem}.png")))
    if not jobs:
        raise InpaintError(f"no images found below {images}")
    return jobs


if __name__ == "__main__":
    sys.exit(main())
