"""Memory budget: refuse an allocation early, with a message naming what asked for it.

NumPy answers an impossible request with ``MemoryError: Unable to allocate 7.28 TiB``,
after the caller has already waited, and never says which argument made the array that
large.  Public functions call :func:`check_allocation` with the size they are about to
allocate (computed in Python integers, so it cannot overflow) and the parameters that
determined it; files are checked against :func:`file_budget` before anything a header
declares is allocated.

The available memory is read from ``/proc/meminfo`` (``MemAvailable``) and, inside a
container, from the cgroup limit (``memory.max - memory.current``); elsewhere from
``os.sysconf('SC_AVPHYS_PAGES')``.  When nothing can be read the check does not refuse
(better no check than a wrong one).  ``psutil`` is not needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_FILE_BUDGET",
    "MemoryBudgetError",
    "available_memory",
    "check_allocation",
    "check_elements",
    "file_budget",
    "format_bytes",
    "nbytes_of",
]

#: Default ``max_bytes`` for reading one weights file: 4 GiB (VGG16 is 0.55 GB), further
#: capped by the memory actually available.
DEFAULT_FILE_BUDGET = 4 << 30


class MemoryBudgetError(ValueError, MemoryError):
    """An allocation larger than the memory available (or a caller's ``max_bytes``).

    A ``ValueError`` (the request was too large for this machine: an argument to change)
    and a ``MemoryError`` (code catching NumPy's out-of-memory error keeps working).
    """


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.50 KiB'``, ``8e12`` -> ``'7.28 TiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes of memory available to this process now, or ``None`` when unknown."""
    avail: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            avail = None
    limit = _read_int("/sys/fs/cgroup/memory.max")  # cgroup v2 ("max" -> None)
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        room = max(limit - used, 0)
        avail = room if avail is None else min(avail, room)
    return avail


def nbytes_of(shape: Iterable[Any], dtype: Any = np.float64) -> int:
    """Bytes of an array of ``shape`` and ``dtype``, as an exact Python int (no overflow)."""
    return math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize


def check_allocation(what: str, nbytes: int, *, limit: int | None = None) -> None:
    """Raise :class:`MemoryBudgetError` if ``nbytes`` exceed the available memory.

    Parameters
    ----------
    what : str
        What is being allocated and which parameters made it that large, e.g.
        ``"rip_ratios: codes of shape (n_trials=100000, 96, 28) float64"``.
    nbytes : int
        Size of the allocation (or of the peak working set) in bytes.
    limit : int, optional
        A caller's own budget (``max_bytes``); the smaller of it and the available memory
        applies.
    """
    avail = available_memory()
    cap = avail if limit is None else (limit if avail is None else min(limit, avail))
    if cap is not None and nbytes > cap:
        src = (
            "the memory available" if limit is None or (avail is not None and avail < limit)
            else f"max_bytes={limit}"
        )
        raise MemoryBudgetError(
            f"{what} would need {format_bytes(nbytes)}, more than {src} "
            f"({format_bytes(cap)}); reduce the sizes named above"
        )


def file_budget(max_bytes: Any = None) -> int:
    """The byte budget for reading one file: ``max_bytes`` or the default, capped by memory."""
    if max_bytes is None:
        avail = available_memory()
        return DEFAULT_FILE_BUDGET if avail is None else min(DEFAULT_FILE_BUDGET, avail)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"parameter 'max_bytes' must be None or an int; got {max_bytes!r}")
    if max_bytes < 1:
        raise ValueError(f"parameter 'max_bytes' must be >= 1; got {max_bytes!r}")
    return int(max_bytes)


def check_elements(what: str, count: int, dtype: Any = np.float64, *, copies: int = 1) -> None:
    """:func:`check_allocation` for ``copies`` arrays of ``count`` elements of ``dtype``.

    Examples
    --------
    >>> check_elements("a small array", 10)
    >>> try:
    ...     check_elements("codes (n_trials=10**15, 96, 28)", 10**15 * 96 * 28)
    ... except ValueError as e:
    ...     print(str(e)[:60])
    codes (n_trials=10**15, 96, 28) would need 18.65 EiB, more t
    """
    check_allocation(what, int(count) * np.dtype(dtype).itemsize * int(copies))
