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
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._memory import file_budget, format_bytes
from .._safeio import UnsafeFileError, open_regular, read_exact, read_npz
from ._layer import ConvLayer

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


def load_npz(path: str, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file, trusting nothing in it.

    Only a regular file is opened; every member's declared size is checked against the
    zip directory, a compression-bomb ratio and ``max_bytes`` (default
    :data:`modelcs._memory.DEFAULT_FILE_BUDGET`, capped by the available memory) before it
    is read; CRC-32 checksums are verified; object (pickled) arrays are refused, never
    unpickled.  Every refusal is an :class:`~modelcs.UnsafeFileError` naming the file.
    """
    return read_npz(path, max_bytes=file_budget(max_bytes))


# safetensors dtype -> NumPy dtype ('BF16' is widened to float32 after reading)
_ST_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "?",
}
_ST_MAX_HEADER = 100_000_000  # the format's own limit


def _st_header(path: str, fh: Any, size: int) -> list[tuple[str, str, tuple[int, ...], int, int]]:
    """Parse and check a safetensors header: ``[(name, dtype, shape, begin, end)]``."""
    head = fh.read(8)
    if len(head) < 8:
        raise UnsafeFileError(path, "not a readable .safetensors file (shorter than 8 bytes)")
    n = int.from_bytes(head, "little")
    if n < 2 or n > _ST_MAX_HEADER or n > size - 8:
        raise UnsafeFileError(
            path, f"not a readable .safetensors file: header length {n} does not fit the "
            f"file of {size} bytes"
        )
    raw = fh.read(n)

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key in the header")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UnsafeFileError(path, f"not a readable .safetensors file: bad header ({exc})") \
            from None
    if not isinstance(header, dict):
        raise UnsafeFileError(path, "not a readable .safetensors file: header is not an object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (
            isinstance(info, dict)
            and isinstance(info.get("dtype"), str)
            and isinstance(info.get("shape"), list)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                    for s in info["shape"])
            and isinstance(info.get("data_offsets"), list)
            and len(info["data_offsets"]) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0
                    for o in info["data_offsets"])
        )
        if not ok:
            raise UnsafeFileError(
                path, f"not a readable .safetensors file: malformed entry for tensor {name!r}"
            )
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise UnsafeFileError(path, f"tensor {name!r} has dtype {dt!r}, which is not "
                                  f"supported (expected one of {sorted(_ST_DTYPES)})")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        need = math.prod(shape) * np.dtype(_ST_DTYPES[dt]).itemsize
        if end - begin != need:
            raise UnsafeFileError(
                path, f"tensor {name!r} declares shape {shape} {dt} ({need} bytes) but its "
                f"data_offsets [{begin}, {end}] span {end - begin} bytes"
            )
        entries.append((str(name), dt, shape, begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    pos, data_size = 0, size - 8 - n
    for name, _, _, begin, end in entries:
        if begin != pos:
            raise UnsafeFileError(
                path, f"tensor {name!r} starts at byte {begin} of the data, expected {pos} "
                "(tensors must be contiguous, without gaps or overlaps)"
            )
        pos = end
    if pos != data_size:
        raise UnsafeFileError(
            path, f"the header indexes {pos} bytes of data but the file holds {data_size} "
            "(truncated, or bytes outside every tensor)"
        )
    return entries


def load_safetensors(path: str, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file as NumPy arrays, in storage order.

    Parsed here (no third-party reader): the header must be valid JSON without duplicate
    keys, every tensor's ``dtype * shape`` must equal its byte range, the ranges must be
    contiguous and cover the data exactly, and the total must fit ``max_bytes``.  BF16
    becomes float32.  Refusals are :class:`~modelcs.UnsafeFileError`.  (The format carries
    no checksum: a flipped byte inside the tensor data cannot be detected.)
    """
    budget = file_budget(max_bytes)
    with open_regular(path, max_bytes=budget + _ST_MAX_HEADER + 8) as fh:
        size = os.fstat(fh.fileno()).st_size
        entries = _st_header(path, fh, size)
        total = sum(e[4] - e[3] for e in entries)
        if total > budget:
            raise UnsafeFileError(
                path, f"its tensors declare {format_bytes(total)}, more than the memory "
                f"budget max_bytes={budget} ({format_bytes(budget)})"
            )
        out: dict[str, Any] = {}
        for name, dt, shape, _, _ in entries:
            arr = np.empty(shape, dtype=_ST_DTYPES[dt])
            read_exact(fh, arr, path=path, what=f"tensor {name!r}")
            if dt == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr
    return out
