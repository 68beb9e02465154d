"""Shared argument checks with uniform error messages.

Every message names the parameter, the value received and what was expected.  One
exception type per kind of mistake, everywhere in the library:

* ``TypeError``  -- the argument has the wrong *type* (a string where a number is
  expected, a complex array, an object that is not an operator);
* ``ValueError`` -- the type is right but the *value* or *shape* is not (a negative
  ``tol``, ``max_iter = 0`` where at least one iteration is needed, a measurement
  vector whose length does not match the operator, NaN or Inf entries).

Conventions shared by every public function (see the README's conventions table):
``max_iter`` (iteration cap), ``tol`` (relative tolerance), ``rng`` (randomness, SciPy
SPEC 7: ``None``, an ``int`` or a ``numpy.random.Generator``; default ``None`` = fresh
OS entropy everywhere) and ``callback``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend import get_array_module

__all__ = [
    "as_int_tuple",
    "check_finite",
    "check_positive_int",
    "check_nonnegative_int",
    "check_choice",
    "check_rng",
    "check_max_iter",
    "check_tol",
    "check_callback",
    "as_batch",
    "unbatch",
]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_positive_int(name: str, value: Any) -> int:
    """Return ``int(value)`` or raise if it is not an integer >= 1."""
    if not _is_int(value):
        raise TypeError(f"parameter '{name}' must be a positive integer; got {value!r}")
    if value < 1:
        raise ValueError(f"parameter '{name}' must be a positive integer (>= 1); got {value!r}")
    return int(value)


def check_nonnegative_int(name: str, value: Any) -> int:
    """Return ``int(value)`` or raise if it is not an integer >= 0."""
    if not _is_int(value):
        raise TypeError(f"parameter '{name}' must be a non-negative integer; got {value!r}")
    if value < 0:
        raise ValueError(f"parameter '{name}' must be a non-negative integer; got {value!r}")
    return int(value)


def as_int_tuple(name: str, value: Any, ndim: int, *, minimum: int = 1) -> tuple[int, ...]:
    """Broadcast an int or a length-``ndim`` sequence of ints to a tuple, checking bounds."""
    if _is_int(value):
        vals: Sequence[Any] = (value,) * ndim
    elif isinstance(value, (tuple, list)) and len(value) == ndim and all(_is_int(v) for v in value):
        vals = value
    else:
        raise TypeError(
            f"parameter '{name}' must be an integer or a tuple of {ndim} integers; got {value!r}"
        )
    if any(v < minimum for v in vals):
        raise ValueError(
            f"parameter '{name}' must have entries >= {minimum}; got {tuple(int(v) for v in vals)}"
        )
    return tuple(int(v) for v in vals)


def check_finite(name: str, a: Any) -> None:
    """Raise ``ValueError`` if array ``a`` contains NaN or Inf."""
    if a.dtype.kind not in "fc":
        return
    xp = get_array_module(a)
    if a.size <= 4096:  # small: one pass, no floating-point state to manage
        if bool(xp.isfinite(a).all()):
            return
    else:
        # A finite sum proves every entry finite (NaN and +-Inf all propagate into a sum)
        # and costs no temporary; only a non-finite sum (or a finite overflow) needs the
        # full test.
        with np.errstate(over="ignore", invalid="ignore"):
            total = a.sum()
        if bool(xp.isfinite(total)):
            return
    n_bad = int((~xp.isfinite(a)).sum())
    if n_bad:
        raise ValueError(
            f"parameter '{name}' contains {n_bad} non-finite value(s) (NaN or Inf); "
            "expected finite values"
        )


def as_real_array(name: str, a: Any) -> Any:
    """``a`` as a real numeric array (NumPy or CuPy kept as is), checked finite.

    Raises ``TypeError`` naming ``name`` for complex, object or string data and
    ``ValueError`` for NaN/Inf.
    """
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"parameter '{name}' must be a real numeric array; got dtype {a.dtype}")
    check_finite(name, a)
    return a


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    if value not in choices:
        raise ValueError(f"parameter '{name}' must be one of {list(choices)}; got {value!r}")
    return value


def check_rng(rng: Any = None, name: str = "rng") -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``None``, an int, a SeedSequence or a Generator.

    SciPy SPEC 7: ``None`` draws fresh entropy from the OS, an int (or SeedSequence) seeds
    a new generator, a ``Generator`` is used as is (and advanced).
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or _is_int(rng) or isinstance(rng, np.random.SeedSequence):
        if _is_int(rng) and rng < 0:
            raise ValueError(f"parameter '{name}' must be a non-negative integer seed; got {rng!r}")
        return np.random.default_rng(rng)
    raise TypeError(
        f"parameter '{name}' must be None, an int, a numpy SeedSequence or a numpy Generator; "
        f"got {rng!r}"
    )


def root_seed(rng: Any = None, name: str = "rng") -> int:
    """A non-negative int seed from ``rng`` (SPEC 7: ``None``, an int or a Generator).

    An int is returned as is (so a run can record and repeat it); ``None`` or a
    ``Generator`` yield a fresh seed drawn from :func:`check_rng`.
    """
    if _is_int(rng):
        if rng < 0:
            raise ValueError(f"parameter '{name}' must be a non-negative integer seed; got {rng!r}")
        return int(rng)
    return int(check_rng(rng, name).integers(2**63))


def check_max_iter(value: Any, name: str = "max_iter", *, minimum: int = 0) -> int:
    """Return ``int(value)`` or raise if it is not an integer ``>= minimum``."""
    if not _is_int(value):
        raise TypeError(f"parameter '{name}' must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"parameter '{name}' must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_tol(value: Any, name: str = "tol") -> float:
    """Return ``float(value)`` or raise if it is not a finite real number ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"parameter '{name}' must be a finite real number >= 0; got {value!r}")
    v = float(value)
    if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"parameter '{name}' must be a finite real number >= 0; got {value!r}")
    return v


def check_callback(callback: Any, name: str = "callback") -> None:
    """Raise a ``TypeError`` unless ``callback`` is callable or ``None``."""
    if callback is not None and not callable(callback):
        raise TypeError(f"parameter '{name}' must be callable or None; got {callback!r}")


def as_batch(
    name: str, a: Any, shape: tuple[int, ...], *, batch: int | None = None, flat: bool = True
) -> tuple[Any, str]:
    """View ``a`` as a batch ``(B, *shape)``; the one-signal-or-batch decision of the library.

    Accepted: one item of shape ``shape`` (``kind = "single"``), a batch ``(B, *shape)``
    (``"batch"``) and, when ``flat`` and ``shape`` has several axes, one flat item of length
    ``prod(shape)`` (``"flat"``).  With ``batch`` given, a batch must have exactly that many
    items.  Returns ``(ab, kind)``; :func:`unbatch` undoes it on a result.

    Raises ``ValueError`` naming ``name`` when the shape fits none of these.
    """
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        a = np.asarray(a)
    shp = tuple(a.shape)
    if shp == tuple(shape):
        return a.reshape((1, *shape)), "single"
    if a.ndim == len(shape) + 1 and shp[1:] == tuple(shape):
        if batch is not None and shp[0] != batch:
            raise ValueError(
                f"parameter '{name}' is a batch of {shp[0]}; expected {batch} items like the "
                f"other batched inputs (shape ({batch}, {', '.join(map(str, shape))}))"
            )
        if shp[0] == 0:
            raise ValueError(f"parameter '{name}' is an empty batch (B = 0); expected B >= 1")
        return a, "batch"
    n = int(np.prod(shape))
    if flat and len(shape) > 1 and a.ndim == 1 and shp[0] == n:
        return a.reshape((1, *shape)), "flat"
    want = f"{tuple(shape)}, a batch (B, {', '.join(map(str, shape))})"
    if flat and len(shape) > 1:
        want += f" or a flat vector of length {n}"
    raise ValueError(f"parameter '{name}' has shape {shp}; expected {want}")


def unbatch(a: Any, kind: str, shape: tuple[int, ...] | None = None) -> Any:
    """Undo :func:`as_batch` on a batched result ``(B, *shape)``: drop or keep the batch."""
    if kind == "batch":
        return a
    if kind == "flat":
        return a[0].reshape(-1)
    return a[0]
