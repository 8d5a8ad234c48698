"""Classical inpainting baselines: PatchMatch, OpenCV's Telea and Navier-Stokes, the mean fill.

    filled = fill("patchmatch", image, mask)          # (H,W,3) uint8, mask 1 = valid
    with BaselineRunner(["patchmatch", "telea"], cache_dir=default_cache_dir()) as runner:
        pending = runner.submit(gts, masks)           # (B,H,W,3) uint8, (B,H,W) 1 = valid
        results = runner.collect(pending)             # {method: (B,H,W,3) uint8}

PatchMatch (Barnes et al., SIGGRAPH 2009; 7x7 patches) is the classical baseline of the paper's
Table 1; it comes from the pypatchmatch package (Linux x86_64 wheels), and `missing` says why a
method cannot run elsewhere. Every fill leaves the valid pixels bit-identical to the input and
depends only on its inputs (PatchMatch is re-seeded before each call).

`BaselineRunner` fills batches in worker processes (multiprocessing, spawn) while the caller
prepares the next batch, and keeps each (image, mask, method, settings) result as a lossless
PNG in a cache folder, so a second evaluation of the same pairs computes nothing. This module
imports NumPy, OpenCV and patchmatch only, never JAX: the spawned workers import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import signal
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from pconv_jax.paths import write_atomically

METHODS: tuple[str, ...] = ("patchmatch", "telea", "navier_stokes", "mean_fill")
PATCH_RADIUS = 3  # PatchMatch patches 7x7, Barnes et al. 2009's size
CV2_RADIUS = 3  # neighbourhood radius of OpenCV's Telea and Navier-Stokes inpainting
CACHE_FORMAT = 1  # bump when a cached result would change without a settings change

_NEEDS = {
    "patchmatch": ("patchmatch", "PatchMatch needs the pypatchmatch package (Linux x86_64 "
                                 "wheels only): pip install pypatchmatch"),
    "telea": ("cv2", "Telea needs OpenCV: pip install opencv-python-headless"),
    "navier_stokes": ("cv2", "Navier-Stokes needs OpenCV: pip install opencv-python-headless"),
}


def missing(method: str) -> str | None:
    """Why `method` cannot run here (one line), or None when it can."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose from {', '.join(METHODS)}")
    if method not in _NEEDS:
        return None
    module, reason = _NEEDS[method]
    try:
        lib = importlib.import_module(module)
    except ImportError:
        return reason
    if module == "patchmatch" and not lib.patchmatch_available:
        return f"{reason} (installed, but its native library failed to load)"
    return None


def available(methods: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the methods that can run here, one line per left-out method saying why)."""
    runnable, left_out = [], []
    for method in methods:
        reason = missing(method)
        if reason is None:
            runnable.append(method)
        else:
            left_out.append(f"{method} left out: {reason}")
    return runnable, left_out


def fill(method: str, image: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """The holes of image (H,W,3) uint8 filled by `method`, mask (H,W) 1 = valid, 0 = hole.

    Returns (H,W,3) uint8 whose valid pixels are the input's; `seed` seeds PatchMatch.
    """
    image, hole = _check_pair(image, mask)  # (H,W,3) uint8, (H,W) bool
    reason = missing(method)
    if reason is not None:
        raise RuntimeError(reason)
    if not hole.any():
        return image.copy()
    if method == "mean_fill":
        mean = image[~hole].mean(axis=0) if not hole.all() else np.full(3, 127.5)  # (3,)
        filled = np.broadcast_to(np.round(mean).astype(np.uint8), image.shape)
    elif method == "patchmatch":
        from patchmatch import patch_match

        patch_match.set_random_seed(seed)
        filled = patch_match.inpaint(image, hole.astype(np.uint8), patch_size=PATCH_RADIUS)
    else:
        import cv2

        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        filled = cv2.inpaint(image, hole.astype(np.uint8), CV2_RADIUS, flag)
    return np.where(hole[..., None], filled, image)  # composite: valid pixels untouched


def _check_pair(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image (H,W,3) uint8 contiguous, hole (H,W) bool); ValueError for other shapes."""
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H,W,3) uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be (H,W) = {image.shape[:2]}, got {mask.shape}")
    return np.ascontiguousarray(image), mask == 0


def default_cache_dir() -> str:
    """$PCONV_JAX_CACHE/baselines, else ($XDG_CACHE_HOME or ~/.cache)/pconv-jax/baselines."""
    if os.environ.get("PCONV_JAX_CACHE"):
        return os.path.join(os.environ["PCONV_JAX_CACHE"], "baselines")
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "pconv-jax", "baselines")


def cache_settings(method: str, seed: int) -> str:
    """Everything besides the pair that a cached result of `method` depends on, as text."""
    if method == "patchmatch":
        import patchmatch

        return (f"format={CACHE_FORMAT} seed={seed} patch_radius={PATCH_RADIUS} "
                f"patchmatch={patchmatch.__version__}")
    if method in ("telea", "navier_stokes"):
        import cv2

        return f"format={CACHE_FORMAT} cv2_radius={CV2_RADIUS} cv2={cv2.__version__}"
    return f"format={CACHE_FORMAT}"


def cache_key(method: str, setting: str, image: np.ndarray, hole: np.ndarray) -> str:
    """sha256 hex of the method, its settings, the image (H,W,3) and the hole (H,W) uint8."""
    digest = hashlib.sha256()
    for part in (method, setting, str(image.shape), str(hole.shape)):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(image, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(hole, np.uint8).tobytes())
    return digest.hexdigest()


def _read_png(path: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The RGB (H,W,3) uint8 of a cached PNG, or None when absent, undecodable or not `shape`."""
    import cv2

    try:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):
        return None
    if bgr is None or bgr.dtype != np.uint8 or bgr.shape != shape:
        return None
    return np.ascontiguousarray(bgr[..., ::-1])


def _write_png(path: str, rgb: np.ndarray) -> None:
    """rgb (H,W,3) uint8 as a lossless PNG at `path`, atomically."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data.tobytes())

    write_atomically(path, write)


def _worker_init() -> None:
    """Pool worker set-up: Ctrl-C is the parent's to handle; OpenCV on one thread per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def _fill_task(method: str, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """One pool task: fill(method, image (H,W,3), mask (H,W), seed) -> (H,W,3) uint8."""
    return fill(method, image, mask, seed)


@dataclasses.dataclass
class Pending:
    """A submitted batch: per method, each pair's result, pool task or in-process call."""

    shape: tuple[int, ...]  # (B,H,W,3)
    # {method: [ndarray (a cache hit) | AsyncResult | _fill_task's args (workers=0)]}
    results: dict[str, list[Any]]
    paths: dict[str, list[str | None]]  # {method: [cache file to write after a miss | None]}
    pool: Any = None  # the pool running its tasks


# Methods sent to the worker processes: PatchMatch takes ~1 s at 256 px; OpenCV's fills and
# the mean fill take milliseconds, less than shipping a pair to a process, so they run here
# when collected (and a set without PatchMatch starts no processes).
POOLED = frozenset({"patchmatch"})


class BaselineRunner:
    """Classical fills of image-mask pairs in worker processes, cached on disk."""

    def __init__(self, methods: Sequence[str], *, cache_dir: str | None = None,
                 workers: int | None = None, seed: int = 0):
        for method in methods:
            reason = missing(method)
            if reason is not None:
                raise RuntimeError(reason)
        self.methods = tuple(methods)
        self.cache_dir = cache_dir
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.seed = seed
        self.hits = 0  # pair-method results read from the cache
        self.misses = 0  # pair-method results computed
        self._settings = {m: cache_settings(m, seed) for m in self.methods}
        self._pool = None

    def _ensure_pool(self) -> Any:
        """The worker pool, started (spawn) on first use."""
        if self._pool is None:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_worker_init)
        return self._pool

    def _path(self, method: str, image: np.ndarray, hole: np.ndarray) -> str | None:
        """The cache file of one pair-method result, or None without a cache."""
        if self.cache_dir is None:
            return None
        key = cache_key(method, self._settings[method], image, hole)
        return os.path.join(self.cache_dir, key[:2], f"{key}.png")

    def submit(self, gts: np.ndarray, masks: np.ndarray) -> Pending:
        """Starts filling gts (B,H,W,3) uint8 with masks (B,H,W) 1 = valid; returns at once."""
        gts, masks = np.asarray(gts), np.asarray(masks)
        if gts.ndim != 4 or masks.shape != gts.shape[:3]:
            raise ValueError(f"gts must be (B,H,W,3), masks (B,H,W); got {gts.shape}, "
                             f"{masks.shape}")
        pending = Pending(gts.shape, {m: [] for m in self.methods},
                          {m: [] for m in self.methods})
        for gt, mask in zip(gts, masks, strict=True):
            image, hole = _check_pair(gt, mask)  # (H,W,3) uint8, (H,W) bool
            for method in self.methods:
                path = self._path(method, image, hole)
                cached = None if path is None else _read_png(path, image.shape)
                if cached is not None:
                    self.hits += 1
                    pending.results[method].append(np.where(hole[..., None], cached, image))
                    pending.paths[method].append(None)
                    continue
                self.misses += 1
                args = (method, image, hole.astype(np.uint8) ^ 1, self.seed)  # mask 1 = valid
                pooled = self.workers > 0 and method in POOLED
                task = self._ensure_pool().apply_async(_fill_task, args) if pooled else args
                pending.results[method].append(task)
                pending.paths[method].append(path)
        pending.pool = self._pool
        return pending

    def collect(self, pending: Pending) -> dict[str, np.ndarray]:
        """{method: (B,H,W,3) uint8} of a submitted batch, waiting for its pool tasks."""
        out = {}
        for method, results in pending.results.items():
            filled = []
            for result, path in zip(results, pending.paths[method], strict=True):
                if isinstance(result, tuple):  # in this process
                    result = _fill_task(*result)
                elif not isinstance(result, np.ndarray):  # a pool task
                    if pending.pool is not self._pool:
                        raise RuntimeError("collect after close: the batch's tasks are gone")
                    result = result.get()
                if path is not None:
                    _write_png(path, result)
                filled.append(result)
            out[method] = np.stack(filled) if filled else np.zeros(pending.shape, np.uint8)
        return out

    def close(self) -> None:
        """Stops the worker processes (running tasks are abandoned)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> BaselineRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
