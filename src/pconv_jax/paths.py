"""Rules for every output: it never overlaps an input, and it appears whole or not at all.

After symbolic links and '..' are resolved, an output may not be an input file, lie inside an
input folder, or be a folder that holds an input. The commands check this before they load a
model or do any work, and the error names both flags and both paths, so a mistyped `--out`
costs a message instead of a user's photos, masks or checkpoints. Files that others may read
while they are written (an export, a split grid's tables) go through `write_atomically`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping


class OverlapError(ValueError):
    """An output path overlaps an input path; the message names both."""


def _real(path: str) -> str:
    """The absolute path with symbolic links and '..' resolved (also for paths not there yet)."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _within(inner: str, outer: str) -> bool:
    """Whether the resolved path `inner` is `outer` or lies below it."""
    return os.path.commonpath([inner, outer]) == outer


def check_outputs(outputs: Mapping[str, str | None], inputs: Mapping[str, str | None]) -> None:
    """Raises OverlapError when an output overlaps an input.

    outputs, inputs: {flag: path}; empty entries are skipped, and so are inputs that name
    nothing on disk (`samples`, `tfds:NAME/SPLIT`).
    """
    for in_flag, in_path in inputs.items():
        if not in_path or not os.path.lexists(in_path):
            continue
        real_in = _real(in_path)
        for out_flag, out_path in outputs.items():
            if not out_path:
                continue
            real_out = _real(out_path)
            if real_out == real_in:
                clash = f"{out_flag} {out_path} and {in_flag} {in_path} are the same path"
            elif _within(real_out, real_in):
                clash = f"{out_flag} {out_path} lies inside the input folder {in_flag} {in_path}"
            elif _within(real_in, real_out):
                clash = f"{out_flag} {out_path} is a folder that holds {in_flag} {in_path}"
            else:
                continue
            raise OverlapError(
                f"{clash} (resolved: {real_out} and {real_in}); writing there could overwrite "
                f"or mix with the input, so nothing was done: choose another {out_flag}")


def probe_writable(folder: str, flag: str) -> None:
    """Creates `folder` if needed and writes a temporary file there; OSError naming the flag."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create {flag} {folder}: {err.strerror}") from None
    try:  # an existing folder may still refuse files (read-only, another owner)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(f"cannot write into {flag} {folder}: {err.strerror}; "
                      f"choose a writable {flag}") from None


def nearest_folder(path: str) -> str:
    """The folder that holds `path`, or the nearest one above it that exists (where the
    missing ones would be made); OSError when a file stands where one of them would go."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        if os.path.lexists(folder):
            raise NotADirectoryError(f"{folder} is not a folder")
        folder = os.path.dirname(folder)
    return folder


def writable_folder(path: str) -> str:
    """nearest_folder(path), checked with a temporary file to take files: the file `path`
    can be made there, with any folders it needs. OSError saying why not."""
    folder = nearest_folder(path)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(f"{folder} takes no files ({err.strerror})") from None
    return folder


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """write(tmp) to a new file beside `path`, then moved onto `path` (os.replace).

    A reader sees the old file or the whole new one, never half of one; when writing fails,
    no temporary file is left and an existing `path` is as it was. tmp ends in path's
    extension, as writers that choose the format from it (np.save, savefig) need.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                   suffix=f".tmp{os.path.splitext(path)[1]}")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
