"""PyTorch sources: ``nn.Conv1d`` / ``nn.Conv2d`` modules and checkpoint files.

Modules carry their full geometry.  Checkpoint files are read with
``torch.load(path, weights_only=True, map_location='cpu')``: only tensors and plain
containers are accepted, so a malicious pickle raises instead of running code.  A file that
holds a whole pickled module (``torch.save(model)``) is refused: build the model in your
code, ``load_state_dict`` it, and pass the module.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._layer import ConvLayer, missing_extra
from .arrays import to_numpy_array

__all__ = ["from_module", "load_state_dict"]


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise missing_extra("torch", "torch", "reading PyTorch models and checkpoints") from exc
    return torch


def load_state_dict(path: str) -> Mapping[str, Any]:
    """Tensors of a ``.pt`` / ``.pth`` checkpoint, never unpickling arbitrary objects.

    Raises
    ------
    ValueError
        The file needs objects other than tensors and containers (``weights_only=True``
        refused it), or it does not hold a mapping.
    """
    torch = _import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"refusing to load {path!r}: it is not a plain tensor checkpoint and would need "
            f"arbitrary unpickling (torch.load weights_only=True refused it: {first}). "
            "Load the state dict into your model yourself and pass the module."
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path!r} holds a {type(obj).__name__}, not a state dict (a mapping of tensors)"
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
