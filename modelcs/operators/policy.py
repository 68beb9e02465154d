"""Which engine ``engine="auto"`` picks: a run-time setting, thread- and context-local.

:class:`~modelcs.ConvOperator` with ``engine="auto"`` chooses an engine per call from the
problem size, the dtype and the array module of the data.  The *policy* says which engines
that choice may use:

``"auto"`` (default)
    NumPy data: PyTorch's convolution for float32 above a measured size, the NumPy GEMM or
    FFT engine below it and for float64 (where NumPy matches or beats PyTorch on this class
    of CPU); CuPy data: GEMM or FFT.
``"numpy"``
    Never PyTorch: GEMM or FFT by operation count only (results do not depend on whether
    PyTorch is installed).
``"torch"``
    PyTorch for every NumPy call (float32 and float64) when it is installed.

A user can always force one engine with ``ConvOperator(..., engine="gemm")`` or
:meth:`~modelcs.ConvOperator.with_engine`; the policy only steers ``"auto"``.

The crossover (:data:`TORCH_MIN_FLOPS`) comes from the engine sweep of
``benchmarks/bench_operator.py`` (forward + adjoint pairs from an 8-channel 16x16 layer
to 512 channels on 15x15 with a batch of 16, float32 and float64, 2-core x86 CPU): below
it PyTorch's per-call overhead and thread wake-up cost more than NumPy's GEMM.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from .._validation import check_choice

__all__ = ["engine_policy", "set_engine_policy", "get_engine_policy"]

POLICIES = ("auto", "numpy", "torch")

#: float32 multiply-adds of one forward pass (batch included) above which ``"auto"``
#: sends NumPy data to PyTorch (see the module docstring for where it comes from)
TORCH_MIN_FLOPS = 3.0e7

_POLICY: contextvars.ContextVar[str] = contextvars.ContextVar("modelcs_engine_policy",
                                                             default="auto")


def get_engine_policy() -> str:
    """The policy in force in this thread/context (``'auto'``, ``'numpy'`` or ``'torch'``).

    Returns
    -------
    str
        ``'auto'``, ``'numpy'`` or ``'torch'``.

    Examples
    --------
    >>> from modelcs import get_engine_policy
    >>> get_engine_policy()
    'auto'
    """
    return _POLICY.get()


def set_engine_policy(policy: str) -> str:
    """Set the policy of ``engine="auto"`` for this thread/context; returns the previous one.

    Parameters
    ----------
    policy : {'auto', 'numpy', 'torch'}
        See :mod:`modelcs.operators.policy`.

    Returns
    -------
    str
        The policy that was in force before.

    Examples
    --------
    >>> from modelcs import set_engine_policy
    >>> old = set_engine_policy("numpy")     # never PyTorch from now on
    >>> old
    'auto'
    >>> set_engine_policy(old)
    'numpy'
    """
    check_choice("policy", policy, POLICIES)
    old = _POLICY.get()
    _POLICY.set(policy)
    return old


@contextlib.contextmanager
def engine_policy(policy: str) -> Iterator[str]:
    """Context manager: the policy of ``engine="auto"`` inside a ``with`` block.

    Parameters
    ----------
    policy : {'auto', 'numpy', 'torch'}
        See :mod:`modelcs.operators.policy`.

    Yields
    ------
    str
        The policy in force inside the block.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, engine_policy
    >>> W = ConvOperator.random(8, 4, 3, 16, rng=0, dtype=np.float32)
    >>> with engine_policy("numpy"):
    ...     z = W @ np.ones((4, 16), dtype=np.float32)    # NumPy GEMM/FFT only
    >>> z.shape
    (8, 14)
    """
    check_choice("policy", policy, POLICIES)
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)
