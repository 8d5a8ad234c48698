"""Image sources and the Grain training pipeline; nothing here knows the model.

Sources are random-access sequences of (H,W,3) uint8 images:
- `samples`: photos bundled with scikit-image (offline); `samples:NAME,NAME` a subset of them
  (e.g. to hold some out for evaluation);
- `tfds:NAME/SPLIT`: a prepared TFDS dataset through `tfds.data_source` (ArrayRecord; no
  TensorFlow needed), e.g. `tfds:places365_small/train` or, with a builder config,
  `tfds:celeb_a_hq/256/train` (the split follows the last '/'); never downloads;
- any other string: an image folder, searched recursively for jpg/png/webp/bmp.

`train_dataset` turns a source into a deterministic Grain `MapDataset` of batches
{"image": (B,S,S,3) float32 in [0,1], "mask": (B,S,S,1) float32, 1 = valid}: per-process
shard, shuffle from the seed (a new order every epoch), random resize/crop and horizontal
flip, a mask per example. Its iterator state is a small dict that checkpoints with the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import grain
import numpy as np
from PIL import Image

from pconv_jax.masks import MaskSource, first_decodable, read_uint8, readable_images

# Colour photos shipped inside scikit-image (skimage.data): always available offline.
BUNDLED_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
)


def bundled_photo(name: str) -> np.ndarray:
    """One bundled photo as (H,W,3) float32 in [0, 1]."""
    from skimage import data as skdata

    if name not in BUNDLED_PHOTOS:
        raise ValueError(f"unknown bundled photo {name!r}; choose from {', '.join(BUNDLED_PHOTOS)}")
    image = np.asarray(getattr(skdata, name)())
    return (image[..., :3].astype(np.float32) / 255.0).clip(0.0, 1.0)


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Central square crop of (H,W,C) in [0,1] resized to (size, size, C)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = to_uint8(image[top: top + side, left: left + side])
    return resize_uint8(crop, (size, size)).astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0,1] float or uint8 image -> uint8."""
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased resize of an (H,W,3) uint8 image to (h, w)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BICUBIC))


class BundledPhotos(Sequence):
    """The scikit-image sample photos (all, or those named) as a source of uint8 images."""

    def __init__(self, names: Sequence[str] | None = None):
        self.names = tuple(BUNDLED_PHOTOS if names is None else names)
        if not self.names:
            raise ValueError(f"no bundled photo named; choose from {', '.join(BUNDLED_PHOTOS)}")
        self.images = [to_uint8(bundled_photo(name)) for name in self.names]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.images[index]


def read_rgb(path: str) -> np.ndarray:
    """An image file as (H,W,3) uint8 as displayed (EXIF orientation, 16-bit scaled);
    ValueError naming the file when it cannot be read."""
    return read_uint8(path, "RGB")


class ImageFolder(Sequence):
    """Images below a folder (recursive); unreadable files are skipped with a warning."""

    def __init__(self, folder: str):
        self.folder = folder
        self.files = readable_images(folder, "image")
        self.broken: set[str] = set()  # files that passed the header check but do not decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        """Image `index`; a file broken after its header is replaced by the next good one."""
        return first_decodable(self.files, index, self.broken, read_rgb,
                               f"image files below {self.folder}")


class TfdsImages(Sequence):
    """The 'image' feature of a prepared TFDS dataset, read through `tfds.data_source`."""

    def __init__(self, name: str, split: str, data_dir: str | None = None):
        import tensorflow_datasets as tfds

        try:
            # download=False: never start a download or a preparation on a training host
            self.source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as err:  # noqa: BLE001 - TFDS raises many kinds; all mean "not usable"
            raise ValueError(
                f"TFDS dataset '{name}' split '{split}' cannot be opened ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). It must be prepared in "
                f"ArrayRecord format first, on a machine with the data: `tfds build {name} "
                "--file_format=array_record`; datasets with a manual download (celeb_a_hq, "
                "imagenet2012) need their files in <data_dir>/downloads/manual first. Pass "
                "--config.data.tfds_data_dir if it lives outside ~/tensorflow_datasets."
            ) from None
        self.key = "image"

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> np.ndarray:
        image = np.asarray(self.source[index][self.key])
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return to_uint8(image[..., :3])


def open_source(spec: str, tfds_data_dir: str | None = None) -> Sequence:
    """'samples[:NAME,...]', 'tfds:NAME/SPLIT' or a folder -> a random-access image source."""
    if spec == "samples":
        return BundledPhotos()
    if spec.startswith("samples:"):
        return BundledPhotos([n.strip() for n in spec[len("samples:"):].split(",") if n.strip()])
    if spec.startswith("tfds:"):
        # the split is after the last '/': NAME may hold a builder config (celeb_a_hq/256)
        name, _, split = spec[len("tfds:"):].rpartition("/")
        if not name or not split:
            raise ValueError(f"TFDS source must read tfds:NAME/SPLIT, got {spec!r}")
        return TfdsImages(name, split, tfds_data_dir)
    if not os.path.isdir(spec):
        raise FileNotFoundError(
            f"image source {spec!r} is neither 'samples', 'tfds:NAME/SPLIT' nor a folder"
        )
    return ImageFolder(spec)


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                scale_range: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Resize so the shorter side is size * U(scale_range) (at least size), random-crop, flip."""
    h, w = image.shape[:2]
    short = max(size, int(round(size * rng.uniform(*scale_range))))
    if min(h, w) != short:
        factor = short / min(h, w)
        image = resize_uint8(image, (max(short, round(h * factor)), max(short, round(w * factor))))
        h, w = image.shape[:2]
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    crop = image[top:top + size, left:left + size]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def example_fn(
    size: int, masks: MaskSource, scale_range: tuple[float, float]
) -> Callable[[np.ndarray, np.random.Generator], dict]:
    """The per-example transform: crop/flip the image, draw a mask."""

    def prepare(image: np.ndarray, rng: np.random.Generator) -> dict:
        crop = random_crop(image, size, rng, scale_range)
        return {"image": crop.astype(np.float32) / 255.0,  # (S,S,3)
                "mask": masks.sample(rng)[..., None]}  # (S,S,1)

    return prepare


def train_dataset(
    source: Sequence,
    *,
    image_size: int,
    local_batch: int,
    seed: int,
    masks: MaskSource,
    shard_index: int = 0,
    shard_count: int = 1,
    scale_range: tuple[float, float] = (1.0, 1.0),
) -> grain.MapDataset:
    """An endless, deterministic MapDataset of training batches for one process."""
    if len(source) < shard_count:
        raise ValueError(f"{len(source)} images cannot be shared among {shard_count} processes")
    ds = grain.MapDataset.source(source)[shard_index::shard_count]
    ds = ds.seed(seed).shuffle().repeat()
    ds = ds.random_map(example_fn(image_size, masks, scale_range))
    return ds.batch(local_batch, drop_remainder=True)


def batch_iterator(ds: grain.MapDataset, threads: int = 2):
    """A checkpointable iterator (get_state/set_state) with background reading threads."""
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    return iter(ds.to_iter_dataset(options))
