"""Shared argument checks with uniform error messages.

Every message names the parameter, the value received and what was expected.
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
    # A finite sum proves every entry finite (NaN and +-Inf all propagate into a sum) and
    # costs no temporary; only a non-finite sum (or a finite overflow) needs the full test.
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


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    if value not in choices:
        raise ValueError(f"parameter '{name}' must be one of {list(choices)}; got {value!r}")
    return value


def check_rng(seed: Any = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from ``None``, an int, a SeedSequence or a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or _is_int(seed) or isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    raise TypeError(
        f"parameter 'seed' must be None, an int, a numpy SeedSequence or a numpy Generator; "
        f"got {seed!r}"
    )
