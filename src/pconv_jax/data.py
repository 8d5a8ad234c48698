"""Image sources and the Grain training pipeline; nothing here knows the model.

Sources are random-access sequences of (H,W,3) uint8 images:
- `samples`: the colour photos bundled with scikit-image (offline); `samples:NAME,NAME` a
  subset of them (e.g. to hold some out for evaluation), which may also name its greyscale
  photos (`BUNDLED_GREY`, as three equal channels) for more varied training images;
- `tfds:NAME/SPLIT`: a prepared TFDS dataset through `tfds.data_source` (ArrayRecord; no
  TensorFlow needed), e.g. `tfds:places365_small/train` or, with a builder config,
  `tfds:celeb_a_hq/256/train` (the split follows the last '/'); never downloads;
- any other string: an image folder, searched recursively for jpg/png/webp/bmp.

`train_dataset` turns a source into a deterministic Grain `MapDataset` of batches
{"image": (B,S,S,3) uint8, "mask": (B,S,S,1) uint8 holding 0/1, 1 = valid}: per-process
shard, shuffle from the seed (a new order every epoch), random resize/crop and horizontal
flip, a mask per example. Batches stay uint8 (a quarter of float32's bytes) until the jitted
step turns them into floats on the device. Each example's randomness comes from its index and
the seed alone, so `batch_iterator` gives the same batches with any number of worker
processes, and its state is {"next_index": k}: it checkpoints with the model and resumes
with another worker count. JPEG files are decoded at 1/2, 1/4 or 1/8 scale when the crop
needs no more, with OpenCV, which decodes and resizes several times faster than Pillow. Files
are read by `pconv_jax.imagefile`, with the rules of every other reader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence

import grain
import numpy as np
from PIL import Image

from pconv_jax.imagefile import first_decodable, read_rgb_at_least, read_uint8, readable_images
from pconv_jax.masks import MaskSource

# Colour photos shipped inside scikit-image (skimage.data): always available offline.
BUNDLED_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
)
# Its greyscale photos (also offline): textures and scenes that vary a small training set.
BUNDLED_GREY: tuple[str, ...] = (
    "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell",
)
# More colour images it ships, in no default set: photos no config trains on, for evaluation
# (`samples:motorcycle_left,motorcycle_right`), and two of saturated colour.
BUNDLED_EXTRA: tuple[str, ...] = ("motorcycle_left", "motorcycle_right", "retina", "colorwheel")


def bundled_photo(name: str) -> np.ndarray:
    """One bundled photo as (H,W,3) float32 in [0, 1] (a grey one as three equal channels)."""
    from skimage import data as skdata

    known = BUNDLED_PHOTOS + BUNDLED_GREY + BUNDLED_EXTRA
    if name not in known:
        raise ValueError(f"unknown bundled photo {name!r}; choose from {', '.join(known)}")
    if name.startswith("motorcycle_"):  # the two views of skimage's stereo pair
        image = np.asarray(skdata.stereo_motorcycle()[0 if name.endswith("left") else 1])
    else:
        image = np.asarray(getattr(skdata, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
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


def resize_fast(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV resize of (H,W,3) uint8 to (h, w): area averaging down, bicubic up."""
    import cv2

    if image.shape[:2] == tuple(size):
        return image
    shrink = size[0] < image.shape[0]
    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


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
        return first_decodable(self.files, index, self.broken, read_uint8,
                               f"image files below {self.folder}")

    def read_at_least(self, index: int, min_side: int) -> np.ndarray:
        """Image `index` with its shorter side >= min_side (or whole), as cheaply as it reads."""
        return first_decodable(self.files, index, self.broken,
                               lambda path: read_rgb_at_least(path, min_side),
                               f"image files below {self.folder}")


class TfdsImages(Sequence):
    """The 'image' feature of a prepared TFDS dataset, read through `tfds.data_source`."""

    def __init__(self, name: str, split: str, data_dir: str | None = None):
        try:  # only tfds: sources need it (hosts without it run every other source)
            import tensorflow_datasets as tfds
        except ImportError:
            raise ValueError(f"the source tfds:{name}/{split} needs tensorflow-datasets, which "
                             "is not installed here (pip install tensorflow-datasets); use an "
                             "image folder instead") from None

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


def read_image(source: Sequence, index: int, min_side: int) -> np.ndarray:
    """source[index] as (H,W,3) uint8; sources with `read_at_least` may return it smaller,
    down to a shorter side of min_side (reduced-size JPEG decoding)."""
    read_at_least = getattr(source, "read_at_least", None)
    return read_at_least(index, min_side) if read_at_least else source[index]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                scale_range: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Resize so the shorter side is size * U(scale_range) (at least size), random-crop, flip."""
    return crop_flip(image, size, draw_short_side(size, rng, scale_range), rng)


def draw_short_side(size: int, rng: np.random.Generator,
                    scale_range: tuple[float, float]) -> int:
    """The shorter side (>= size) an image is resized to before cropping: size * U(range)."""
    return max(size, int(round(size * rng.uniform(*scale_range))))


def crop_flip(image: np.ndarray, size: int, short: int, rng: np.random.Generator) -> np.ndarray:
    """(H,W,3) uint8 resized to a shorter side of `short`, a random (size,size) crop, a random
    horizontal flip; a new contiguous array."""
    import cv2

    h, w = image.shape[:2]
    if min(h, w) != short:
        factor = short / min(h, w)
        image = resize_fast(image, (max(short, round(h * factor)), max(short, round(w * factor))))
        h, w = image.shape[:2]
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    crop = image[top:top + size, left:left + size]
    return cv2.flip(crop, 1) if rng.random() < 0.5 else np.ascontiguousarray(crop)


def colour_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """(H,W,3) uint8 through one random linear colour map (rounded, saturated to 0..255): its
    channels permuted, its saturation and then each channel scaled by U(1-s, 1+s); a new array.

    Tints a grey photo (the channel gains) and moves a colour photo's hues and saturation, so
    that a training set of few, mostly grey photos still shows the network hole borders of
    every colour.
    """
    import cv2

    grey = np.full((3, 3), 1 / 3)  # x -> its channel mean
    saturation = rng.uniform(1 - strength, 1 + strength)
    gains = rng.uniform(1 - strength, 1 + strength, 3)
    permute = np.eye(3)[rng.permutation(3)]
    matrix = np.diag(gains) @ (grey + saturation * (np.eye(3) - grey)) @ permute
    return cv2.transform(image, matrix.astype(np.float32))  # out(p) = matrix @ in(p)


def smooth_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size,size,3) uint8 image of one random colour, or (half the time) a linear gradient
    between two random colours in a random direction: the fills where a hole's answer is
    plain, which few photos show in saturated colours."""
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if rng.random() < 0.5:
        return np.broadcast_to(np.round(a).astype(np.uint8), (size, size, 3)).copy()
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    return np.round(a + (b - a) * t[..., None]).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class TrainExample:
    """The per-example transform (index, rng) -> {"image": (S,S,3) uint8, "mask": (S,S,1)
    uint8 0/1}: read at the needed size, resize, crop, flip (and colour-jitter); draw and
    augment a mask."""

    source: Sequence
    size: int
    masks: MaskSource
    scale_range: tuple[float, float] = (1.0, 1.0)
    colour_jitter: float = 0.0  # s of `colour_jitter`; 0: off, and no random draws
    smooth_fraction: float = 0.0  # share of examples replaced by smooth_image; 0: no draws

    def __call__(self, index: int, rng: np.random.Generator) -> dict:
        """Example `index` of the source, its randomness all from `rng`."""
        short = draw_short_side(self.size, rng, self.scale_range)
        image = read_image(self.source, int(index), short)
        crop = crop_flip(image, self.size, short, rng)  # (S,S,3)
        mask = self.masks.sample(rng)  # (S,S) 1 = valid
        if self.colour_jitter > 0:
            crop = colour_jitter(crop, self.colour_jitter, rng)
        if self.smooth_fraction > 0 and rng.random() < self.smooth_fraction:
            crop = smooth_image(self.size, rng)
        return {"image": crop,
                "mask": (mask > 0.5).astype(np.uint8)[..., None]}  # (S,S,1)


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
    colour_jitter: float = 0.0,
    smooth_fraction: float = 0.0,
) -> grain.MapDataset:
    """An endless, deterministic MapDataset of uint8 training batches for one process."""
    if len(source) < shard_count:
        raise ValueError(f"{len(source)} images cannot be shared among {shard_count} processes")
    ds = grain.MapDataset.range(len(source))[shard_index::shard_count]  # image indices
    ds = ds.seed(seed).shuffle().repeat()
    ds = ds.random_map(TrainExample(source, image_size, masks, tuple(scale_range),
                                    float(colour_jitter), float(smooth_fraction)))
    return ds.batch(local_batch, drop_remainder=True)


def default_workers() -> int:
    """Worker processes when `data.workers` is -1: the cores left after the trainer's own
    process, at most 16 (0 on a single core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(16, cores - 1))


def _worker_init(worker_index: int, worker_count: int) -> None:
    """Runs first in each worker process: one OpenCV thread (the workers are the parallelism),
    and a watchdog that ends the worker when the training process is gone (kill -9 would
    otherwise leave it behind, holding memory)."""
    import threading
    import time

    import cv2

    del worker_index, worker_count
    cv2.setNumThreads(1)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


# Batches the workers made but nobody took when they stop stay in shared memory until Python's
# resource tracker removes them at exit, warning "leaked shared_memory objects" each time.
_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


@contextlib.contextmanager
def _starting_workers() -> Iterator[None]:
    """While Grain starts its worker processes, two settings it needs; both are restored.

    Grain reads one of its absl flags then, which raises while absl has parsed none (in a
    library call, and under CLIs that parse their own FlagValues): the flags are marked
    parsed, so they read as their defaults. The resource tracker, started with the first
    worker, takes its -W options from sys.warnoptions: it gets the one that keeps it quiet
    about the batches left in shared memory.
    """
    from absl import flags

    parsed = flags.FLAGS.is_parsed()
    added = _QUIET_TRACKER not in sys.warnoptions
    if added:
        sys.warnoptions.append(_QUIET_TRACKER)
    if not parsed:
        flags.FLAGS.mark_as_parsed()
    try:
        yield
    finally:
        if not parsed:  # mark_as_parsed undone (unparse_flags would reset every value too)
            flags.FLAGS.__dict__["__flags_parsed"] = False
        if added:
            sys.warnoptions.remove(_QUIET_TRACKER)


class BatchIterator(Iterator):
    """Batches of a MapDataset from a position on, read by threads or worker processes.

    The state is {"next_index": k}, the position of the next batch: the same for any worker
    count, so a run resumes exactly with another `workers` setting. `close()` (or leaving a
    `with` block) stops the workers.
    """

    def __init__(self, ds: grain.MapDataset, *, workers: int = 0, threads: int = 2):
        if workers < 0 or threads < 0:
            raise ValueError(f"workers and threads must be >= 0, got {workers} and {threads}")
        self.ds, self.workers, self.threads = ds, workers, threads
        self.next_index = 0
        self._it = None

    def _start(self):
        options = grain.ReadOptions(num_threads=self.threads,
                                    prefetch_buffer_size=max(2, 2 * self.threads))
        ds = self.ds[self.next_index:].to_iter_dataset(options)
        if self.workers:
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.workers, per_worker_buffer_size=2), worker_init_fn=_worker_init)
        return iter(ds)

    def __next__(self) -> dict:
        if self._it is not None:
            batch = next(self._it)
        else:  # Grain starts its worker processes with the first batch
            with _starting_workers() if self.workers else contextlib.nullcontext():
                self._it = self._start()
                batch = next(self._it)
        self.next_index += 1
        return batch

    def get_state(self) -> dict:
        """{"next_index": k}: the position of the next batch this iterator returns."""
        return {"next_index": self.next_index}

    def set_state(self, state: dict) -> None:
        """Continues from a state of `get_state` (or of Grain's own iterator, the same key)."""
        index = state.get("next_index") if isinstance(state, dict) else None
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"not a data iterator state: {state!r}")
        self.close()
        self.next_index = index

    def close(self) -> None:
        """Stops the reading threads or worker processes (a later next() starts them anew)."""
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
            self._it = None

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batch_iterator(ds: grain.MapDataset, *, workers: int = 0, threads: int = 2) -> BatchIterator:
    """A checkpointable iterator over `ds`: `threads` reading threads in this process
    (workers=0), or `workers` Grain worker processes with `threads` threads each."""
    return BatchIterator(ds, workers=workers, threads=threads)
