"""PyTorch sources: ``nn.Conv1d`` / ``nn.Conv2d`` modules and checkpoint files.

Modules carry their full geometry.  Checkpoint files are read with
``torch.load(path, weights_only=True, map_location='cpu')``: only tensors and plain
containers are accepted, so a malicious pickle raises instead of running code.  A file that
holds a whole pickled module (``torch.save(model)``) is refused: build the model in your
code, ``load_state_dict`` it, and pass the module.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._memory import file_budget, format_bytes
from .._safeio import UnsafeFileError, open_regular, open_zip, verify_zip_crc
from ._layer import ConvLayer, missing_extra
from .arrays import to_numpy_array

__all__ = ["from_module", "load_state_dict"]


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise missing_extra("torch", "torch", "reading PyTorch models and checkpoints") from exc
    return torch


# bytes per element of the typed storages a checkpoint's pickle names
_STORAGE_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
    "UntypedStorage": 1, "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4,
}
_MARK = object()
_OPAQUE = object()


def _storages(path: str, ops: Any) -> list[tuple[str, int]]:
    """``[(key, nbytes)]`` of every storage a pickle's persistent ids declare, found by
    simulating the pickle's stack with :func:`pickletools.genops` -- nothing is executed
    and no object is built (only the literal tuples that persistent ids are made of)."""
    stack: list[Any] = []
    memo: dict[Any, Any] = {}
    found: list[tuple[str, int]] = []

    def pop_mark() -> list[Any]:
        items: list[Any] = []
        while True:
            if not stack:
                raise UnsafeFileError(path, "its pickle is malformed (no MARK to pop)")
            v = stack.pop()
            if v is _MARK:
                return items[::-1]
            items.append(v)

    def pop() -> Any:
        if not stack:
            raise UnsafeFileError(path, "its pickle is malformed (stack underflow)")
        return stack.pop()

    for op, arg, _ in ops:
        name = op.name
        if name == "STOP":
            break
        if name == "MARK":
            stack.append(_MARK)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else _OPAQUE
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else _OPAQUE
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, _OPAQUE))
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            k = int(name[-1])
            items = [pop() for _ in range(k)][::-1]
            stack.append(tuple(items))
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "GLOBAL":
            stack.append(("global", str(arg)))
        elif name == "STACK_GLOBAL":
            b, a = pop(), pop()
            stack.append(("global", f"{a} {b}"))
        elif name in ("BINPERSID", "PERSID"):
            pid = arg if name == "PERSID" else pop()
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                stype, key, numel = pid[1], pid[2], pid[4]
                cls = stype[1].split()[-1] if isinstance(stype, tuple) else ""
                if not isinstance(numel, int) or numel < 0 or not isinstance(key, str):
                    raise UnsafeFileError(path, f"storage {key!r} declares numel {numel!r}")
                if cls not in _STORAGE_BYTES:
                    raise UnsafeFileError(path, f"storage {key!r} has unknown type {cls!r}")
                found.append((key, numel * _STORAGE_BYTES[cls]))
            stack.append(_OPAQUE)
        elif not op.stack_before and len(op.stack_after) == 1:
            stack.append(arg if arg is not None else {"NONE": None, "NEWTRUE": True,
                                                      "NEWFALSE": False}.get(name, _OPAQUE))
        else:  # any other opcode: only its stack effect matters
            before = list(op.stack_before)
            if pickletools.markobject in before:
                pop_mark()
                before = before[: before.index(pickletools.markobject)]
            for _ in before:
                pop()
            stack.extend(_OPAQUE for _ in op.stack_after)
    return found


def _scan_pickle(path: str, data: Any) -> list[tuple[str, int]]:
    try:
        return _storages(path, pickletools.genops(data))
    except UnsafeFileError:
        raise
    except (ValueError, EOFError, TypeError, KeyError, IndexError, OverflowError,
            UnicodeDecodeError, RecursionError) as exc:
        raise UnsafeFileError(path, f"it holds a malformed pickle ({exc})") from None


def _check_checkpoint(path: str, fh: Any, budget: int) -> None:
    """Check the declared storage sizes of a torch checkpoint before torch allocates them."""
    size = os.fstat(fh.fileno()).st_size
    if zipfile.is_zipfile(fh):
        fh.seek(0)
        zf = open_zip(path, fh, budget, "PyTorch checkpoint")
        verify_zip_crc(path, zf)
        names = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise UnsafeFileError(path, "not a PyTorch checkpoint: no single <name>/data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        storages = _scan_pickle(path, io.BytesIO(zf.read(pkl[0])))
        for key, nbytes in storages:
            rec = names.get(f"{prefix}data/{key}")
            if rec is None:
                raise UnsafeFileError(path, f"storage {key!r} has no data record in the archive")
            if rec.file_size != nbytes:
                raise UnsafeFileError(
                    path, f"storage {key!r} declares {nbytes} bytes but its record holds "
                    f"{rec.file_size}"
                )
        fh.seek(0)
        return
    fh.seek(0)
    if tarfile.is_tarfile(fh):
        raise UnsafeFileError(path, "it is a tar archive (the pre-2017 torch format), which "
                              "is not read; re-save it with torch.save")
    fh.seek(0)
    # legacy format: magic number, protocol, sys info and the object, each a pickle,
    # then the storage keys (a pickle) and each storage's bytes
    storages = []
    for _ in range(4):
        storages = _scan_pickle(path, fh)
    total = sum(n for _, n in storages)
    rest = size - fh.tell()
    if total > budget:
        raise UnsafeFileError(
            path, f"its storages declare {format_bytes(total)}, more than the memory budget "
            f"max_bytes={budget} ({format_bytes(budget)})"
        )
    if total > rest:
        raise UnsafeFileError(
            path, f"its storages declare {total} bytes but only {rest} bytes follow the "
            "pickle (truncated file or forged sizes)"
        )
    fh.seek(0)


def load_state_dict(path: str, *, max_bytes: int | None = None) -> Mapping[str, Any]:
    """Tensors of a ``.pt`` / ``.pth`` checkpoint, never unpickling arbitrary objects.

    Before PyTorch reads anything, the file must be a regular file; its zip members pass
    the bomb, budget and CRC-32 checks; and the storage sizes its pickle declares (found
    without executing the pickle) must fit ``max_bytes`` and match the bytes present.
    Then ``torch.load(..., weights_only=True)`` reads it.

    Raises
    ------
    UnsafeFileError
        Any of the checks above fails; the file needs objects other than tensors and
        containers (``weights_only=True`` refused it); it does not hold a mapping.
    """
    torch = _import_torch()
    budget = file_budget(max_bytes)
    with open_regular(path) as fh:
        _check_checkpoint(path, fh, budget)
        try:
            obj = torch.load(fh, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsafeFileError(
                path, "it is not a plain tensor checkpoint and would need arbitrary unpickling "
                f"(torch.load weights_only=True refused it: {first}). Load the state dict "
                "into your model yourself and pass the module."
            ) from None
        except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError,
                AttributeError, OverflowError, RecursionError, zipfile.BadZipFile) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsafeFileError(path, f"it is not a readable PyTorch checkpoint ({first})") \
                from None
    if not isinstance(obj, Mapping):
        raise UnsafeFileError(
            path, f"it holds a {type(obj).__name__}, not a state dict (a mapping of tensors)"
        )
    return obj


def from_module(module: Any) -> dict[str, ConvLayer]:
    """Every ``Conv1d`` / ``Conv2d`` submodule with its stride, padding, dilation and groups.

    Transposed convolutions and ``Conv3d`` are skipped; ``padding_mode`` other than
    ``'zeros'`` (reflect / replicate / circular) raises, since the operator is zero-padded.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1))
    >>> from_module(net)["0"].stride
    (2, 2)
    """
    torch = _import_torch()
    convs = (torch.nn.Conv1d, torch.nn.Conv2d)
    layers: dict[str, ConvLayer] = {}
    for name, mod in module.named_modules():
        if not isinstance(mod, convs):
            continue
        if mod.padding_mode != "zeros":
            raise ValueError(
                f"layer {name!r}: padding_mode={mod.padding_mode!r} is not supported; "
                "expected 'zeros' (ConvOperator pads with zeros)"
            )
        w = to_numpy_array(mod.weight)
        b = to_numpy_array(mod.bias) if mod.bias is not None else None
        assert w is not None
        d = w.ndim - 2
        pad: Any = mod.padding
        if isinstance(pad, str):  # 'valid' or 'same' (stride 1 only in torch)
            if pad == "same":
                pad = tuple(
                    ((r * (la - 1)) // 2, r * (la - 1) - (r * (la - 1)) // 2)
                    for la, r in zip(w.shape[2:], mod.dilation, strict=True)
                )
            else:
                pad = 0
        layers[name or type(mod).__name__] = ConvLayer(
            name or type(mod).__name__,
            np.array(w, copy=True),
            None if b is None else np.array(b, copy=True),
            stride=tuple(mod.stride)[:d],
            padding=pad,
            dilation=tuple(mod.dilation)[:d],
            groups=int(mod.groups),
            geometry="source",
            extra={"module": type(mod).__name__},
        )
    return layers
