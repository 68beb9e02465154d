"""Array-module dispatch (NumPy / CuPy) and dtype rules.

Shared code paths obtain their array module with :func:`get_array_module` from the
inputs, so the same function runs on NumPy arrays and on CuPy arrays without change.

Dtype rule (used by every operator): operators hold real floating filters
(``float32`` or ``float64``).  Applying an operator to an array computes in
``numpy.result_type(operator.dtype, x.dtype)`` when ``x`` is floating (so a float32
operator applied to float64 data computes and returns float64, and vice versa);
integer and boolean inputs are cast to the operator's dtype.  Complex inputs are
rejected.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "get_array_module",
    "is_cupy_array",
    "is_torch_tensor",
    "from_torch",
    "to_torch_like",
    "to_numpy",
    "result_dtype",
    "has_module",
]

_HAS: dict[str, bool] = {}


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    if name not in _HAS:
        _HAS[name] = importlib.util.find_spec(name) is not None
    return _HAS[name]


def is_cupy_array(a: Any) -> bool:
    """True when ``a`` is a CuPy ndarray (checked without importing CuPy)."""
    return type(a).__module__.startswith("cupy")


def is_torch_tensor(a: Any) -> bool:
    """True when ``a`` is a ``torch.Tensor`` (checked without importing torch)."""
    return type(a).__module__.startswith("torch") and hasattr(a, "__dlpack__")


def from_torch(t: Any, name: str = "x") -> Any:
    """A torch tensor as a NumPy array (CPU) or a CuPy array (CUDA), zero-copy via DLPack.

    Tensors that require grad are detached (modelcs does not track gradients); complex
    tensors are rejected by the callers' dtype rules like complex arrays.
    """
    t = t.detach()
    if t.device.type == "cpu":
        if not t.is_contiguous():
            t = t.contiguous()
        return np.from_dlpack(t)
    if t.device.type == "cuda":
        import cupy  # noqa: PLC0415  (optional dependency)

        return cupy.from_dlpack(t)
    raise TypeError(
        f"parameter '{name}' is a torch tensor on device {t.device}; expected a CPU or CUDA "
        "tensor (move it with .cpu())"
    )


def to_torch_like(a: Any, like: Any) -> Any:
    """Array ``a`` (NumPy/CuPy) as a torch tensor on ``like``'s device, zero-copy via DLPack."""
    import torch  # noqa: PLC0415  (only reached with a torch input)

    if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    out = torch.from_dlpack(a)
    return out if out.device == like.device else out.to(like.device)


def get_array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if is_cupy_array(a):
            import cupy  # noqa: PLC0415  (optional dependency)

            return cupy  # type: ignore[no-any-return]
    return np


def unravel_index(indices: Any, shape: Any) -> tuple[Any, ...]:
    """``xp.unravel_index`` computed on the flattened indices, then reshaped.

    NumPy 2.4's ``unravel_index`` returns wrong coordinates past the 8192nd index for
    index arrays with a trailing size-1 axis (``(N, 1)``, ``(1, N, 1, 1)``; its buffered
    iterator); flat input is unaffected.  Every call in modelcs goes through here.

    Examples
    --------
    >>> import numpy as np
    >>> idx = np.arange(20000).reshape(-1, 1)
    >>> r, c = unravel_index(idx, (100, 200))
    >>> bool((r == idx // 200).all() and (c == idx % 200).all()), r.shape
    (True, (20000, 1))
    """
    xp = get_array_module(indices)
    arr = xp.asarray(indices)
    flat = xp.unravel_index(arr.reshape(-1), tuple(shape))
    return tuple(a.reshape(arr.shape) for a in flat)


def to_numpy(a: Any) -> np.ndarray:
    """Copy ``a`` to host memory as a NumPy array (no copy for NumPy input)."""
    if is_cupy_array(a):
        return a.get()  # type: ignore[no-any-return]
    return np.asarray(a)


def result_dtype(op_dtype: np.dtype, x_dtype: np.dtype, name: str = "x") -> np.dtype:
    """Computation dtype for applying an operator of ``op_dtype`` to data of ``x_dtype``."""
    x_dtype = np.dtype(x_dtype)
    if x_dtype.kind == "c":
        raise TypeError(
            f"parameter '{name}' has complex dtype {x_dtype}; modelcs operators are real, "
            "expected a real floating, integer or boolean array"
        )
    if x_dtype.kind == "f":
        return np.result_type(op_dtype, x_dtype)
    if x_dtype.kind in "biu":
        return np.dtype(op_dtype)
    raise TypeError(f"parameter '{name}' has dtype {x_dtype}; expected a real numeric array")
