"""Tensors of a weight file as NumPy arrays, without jax: `.safetensors`, `.npz`, or PyTorch's
`.pth`/`.pt` when torch is installed (read with `weights_only=True`: no code is unpickled).

Importing this module needs NumPy only, so torch-only interpreters use it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

SUPPORTED_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt")


class WeightFileError(ValueError):
    """A weight file that cannot be used, with the reason."""


def read_tensors(path: str | os.PathLike, what: str, *, torch_hint: str,
                 containers: tuple[str, ...] = ("state_dict",),
                 info: dict | None = None) -> dict[str, np.ndarray]:
    """{key: array} of the weight file `path`; `what` names the network in the errors.

    torch_hint: what to do when a .pth comes without torch installed. containers: keys of a
    saved dict whose value is the state dict itself (a whole training checkpoint); tensors
    anywhere else in that dict (an optimizer's) are not returned; `info`, when given, receives
    that dict's top-level numbers and strings (such as an iteration count).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} weight file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(path))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files if _is_array_entry(data, k)}
    except Exception as err:  # noqa: BLE001 - each format library raises its own errors
        raise WeightFileError(f"cannot read {path} as a {suffix} weight file "
                              f"({type(err).__name__}: {err})") from None
    if suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise WeightFileError(f"{path} is a PyTorch file and torch is not installed: "
                                  f"{torch_hint}") from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - pickle and zip errors of many kinds
            raise WeightFileError(f"cannot read {path} as a PyTorch weight file "
                                  f"({type(err).__name__}: {str(err).splitlines()[0]})"
                                  ) from None
        if not isinstance(state, Mapping):
            raise WeightFileError(f"{path} holds a {type(state).__name__}, not a state dict "
                                  "(a mapping of names to tensors)")
        for key in containers:
            if isinstance(state.get(key), Mapping):
                if info is not None:
                    info.update({k: v for k, v in state.items()
                                 if isinstance(v, (int, float, str)) and not isinstance(v, bool)})
                state = state[key]
                break
        return {k: _to_numpy(v) for k, v in state.items() if hasattr(v, "detach")}
    raise WeightFileError(
        f"unsupported {what} weight file {path!r}: expected one of "
        f"{', '.join(SUPPORTED_SUFFIXES)}")


def _to_numpy(tensor) -> np.ndarray:
    """A torch tensor as a NumPy array; dtypes NumPy lacks (bfloat16) become float32."""
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:
        return tensor.float().numpy()


def _is_array_entry(data, key: str) -> bool:
    """Whether an .npz entry loads without pickle (object entries are not tensors: skipped)."""
    try:
        data[key]
        return True
    except ValueError:
        return False
