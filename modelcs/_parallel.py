"""Running independent pieces of a batch on several CPU threads (shared by solvers).

A batched solver splits a large batch into chunks that it solves one after the other
(:func:`modelcs.lasso`).  The chunks are independent, so on a multi-core CPU they can run
on threads at once: NumPy and BLAS release the GIL in their loops, and with BLAS held to
one thread per call the cores do not fight over it.  Each chunk runs the same operations
in the same order whichever thread runs it, so results do not depend on the thread count.

The number of threads is ``MODELCS_NUM_THREADS`` if set, else the CPUs this process may
run on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["thread_count", "run_parallel"]


def thread_count() -> int:
    """Threads for chunked work: ``MODELCS_NUM_THREADS``, else the usable CPUs.

    Examples
    --------
    >>> from modelcs._parallel import thread_count
    >>> thread_count() >= 1
    True
    """
    env = os.environ.get("MODELCS_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(
                f"environment variable MODELCS_NUM_THREADS={env!r} is not an integer; "
                "expected a positive number of threads"
            ) from None
        if n < 1:
            raise ValueError(
                f"environment variable MODELCS_NUM_THREADS={env!r}; expected a positive "
                "number of threads"
            )
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_parallel(fn: Callable[[Any], None], items: Sequence[Any], threads: int) -> None:
    """``fn(item)`` for every item, on up to ``threads`` threads, BLAS and OpenMP held to one.

    Runs in the calling thread when ``threads <= 1`` or there is a single item.  The first
    exception raised by any call is re-raised here (after the others have finished).

    Examples
    --------
    >>> from modelcs._parallel import run_parallel
    >>> out = {}
    >>> run_parallel(lambda i: out.__setitem__(i, i * i), range(5), threads=2)
    >>> sorted(out.items())
    [(0, 0), (1, 1), (2, 4), (3, 9), (4, 16)]
    """
    if threads <= 1 or len(items) <= 1:
        for item in items:
            fn(item)
        return
    from threadpoolctl import threadpool_limits  # noqa: PLC0415  (import costs ~10 ms)

    with threadpool_limits(limits=1), \
            ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        for f in futures:
            f.result()
