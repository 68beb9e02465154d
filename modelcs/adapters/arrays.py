"""Bare weights: state dicts, ``.npz`` and ``.safetensors`` (no geometry in the file).

A bare weight container knows names and arrays only: every floating array with 3 or 4 axes
becomes a :class:`ConvLayer` with stride 1, no padding, dilation 1 and groups 1
(``geometry='default'``); the caller supplies the true geometry through the overrides of
:func:`modelcs.adapters.conv_layers`.  A layer's name is its key without a trailing
``.weight`` / ``/kernel`` / ``:0``; its bias is the sibling key (``.bias``) when it has
shape ``(K,)``.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._layer import ConvLayer, missing_extra

__all__ = ["from_arrays", "load_npz", "load_safetensors", "to_numpy_array"]

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "params", "weights")
_WEIGHT_SUFFIX = re.compile(r"(\.weight|/kernel(:0)?|\.kernel|_weight|/weight(:0)?)$")


def to_numpy_array(value: Any) -> np.ndarray | None:
    """A NumPy copy/view of a tensor-like value (torch tensors on any device), else None.

    Half-precision formats NumPy lacks (bfloat16, float8) become float32.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "V" and "float" in value.dtype.name:
            # ml_dtypes' bfloat16 / float8 (registered with NumPy by onnx, jax, ...)
            return value.astype(np.float32)
        return value
    mod = type(value).__module__
    if mod.startswith("torch") and hasattr(value, "detach"):
        t = value.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        try:
            return np.asarray(t.numpy())
        except TypeError:  # e.g. quantized or unsupported dtypes
            return None
    if hasattr(value, "__array__") and hasattr(value, "shape"):
        return np.asarray(value)
    return None


def _unwrap(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """Unwrap ``{'state_dict': {...}}``-style checkpoints; flatten other nested mappings."""
    has_arrays = any(to_numpy_array(v) is not None for v in mapping.values())
    if not has_arrays:
        for key in _WRAPPERS:
            inner = mapping.get(key)
            if isinstance(inner, Mapping):
                return _unwrap(inner)
    flat: dict[str, Any] = {}

    def walk(prefix: str, m: Mapping[str, Any]) -> None:
        for k, v in m.items():
            name = f"{prefix}{k}"
            if isinstance(v, Mapping):
                walk(name + ".", v)
            else:
                flat[name] = v

    walk("", mapping)
    return flat


def _bias_key(key: str) -> list[str]:
    cands = []
    for a, b in ((".weight", ".bias"), ("kernel", "bias"), ("_weight", "_bias"),
                 ("weight", "bias")):
        if a in key:
            head, _, tail = key.rpartition(a)
            cands.append(head + b + tail)
    return cands


def from_arrays(mapping: Mapping[str, Any], *, layout: str = "OIHW") -> dict[str, ConvLayer]:
    """Conv layers from a ``{name: array or tensor}`` mapping (geometry defaults, see module).

    Parameters
    ----------
    mapping : Mapping
        A state dict or any ``{str: array}``; ``{'state_dict': {...}}`` wrappers are unwrapped
        and other nested mappings flattened with dotted names.
    layout : {'OIHW', 'HWIO'}
        ``'OIHW'``: ``(K, M/groups, *l)``; ``'HWIO'``: ``(*l, M/groups, K)`` (TensorFlow).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.zeros((3, 3, 2, 5), np.float32)          # a TensorFlow HWIO kernel
    >>> from_arrays({"c/kernel:0": w}, layout="HWIO")["c"].filters.shape
    (5, 2, 3, 3)
    """
    flat = _unwrap(mapping)
    arrays = {str(k): to_numpy_array(v) for k, v in flat.items()}
    layers: dict[str, ConvLayer] = {}
    for key, w in arrays.items():
        if w is None or w.ndim not in (3, 4) or w.dtype.kind != "f":
            continue
        if layout == "HWIO":
            d = w.ndim - 2
            w = np.transpose(w, (d + 1, d, *range(d)))
        name = _WEIGHT_SUFFIX.sub("", key) or key
        if name in layers:
            name = key
        bias = None
        for bk in _bias_key(key):
            b = arrays.get(bk)
            if b is not None and b.shape == (w.shape[0],) and b.dtype.kind == "f":
                bias = b
                break
        layers[name] = ConvLayer(
            name, np.ascontiguousarray(w), bias, stride=1, padding=0, dilation=1, groups=1,
            geometry="default", extra={"key": key, "layout": layout},
        )
    return layers


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file, read with ``allow_pickle=False`` (object arrays refused)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a readable .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        raise ValueError(
            f"refusing to load {path!r}: it holds pickled objects (object arrays), which are "
            f"never unpickled ({exc})"
        ) from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path!r} is not a readable .npz archive: {exc}") from exc


def load_safetensors(path: str) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file as NumPy arrays (bfloat16 via torch if present)."""
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise missing_extra("safetensors", "adapters", "reading .safetensors") from exc
    order = _safetensors_order(path)

    def read(framework: str) -> dict[str, Any]:
        with safe_open(path, framework=framework) as f:
            return {k: f.get_tensor(k) for k in sorted(f.keys(), key=lambda k: order.get(k, -1))}

    try:
        return read("numpy")
    except Exception as exc:  # SafetensorError (not a ValueError) or a dtype NumPy lacks
        if "bf16" not in str(exc).lower() and "bfloat16" not in str(exc).lower():
            raise ValueError(f"{path!r} is not a readable .safetensors file: {exc}") from exc
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError(
                f"{path!r}: bfloat16 tensors have no NumPy dtype; reading them needs PyTorch: "
                "pip install 'modelcs[torch]'"
            ) from exc
    return read("pt")


def _safetensors_order(path: str) -> dict[str, int]:
    """Storage offset of every tensor (``safe_open`` lists keys sorted by name)."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return {}
            header = json.loads(fh.read(n))
        return {
            k: int(v["data_offsets"][0])
            for k, v in header.items()
            if isinstance(v, dict) and "data_offsets" in v
        }
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}
