"""Which engine ``engine="auto"`` picks: a run-time setting, thread- and context-local.

:class:`~modelcs.ConvOperator` with ``engine="auto"`` chooses an engine per call from the
problem size, the dtype and the array module of the data.  The *policy* says which engines
that choice may use:

``"auto"`` (default)
    NumPy data: PyTorch's convolution for float32 from a small size on (except with fewer
    than :data:`TORCH_MIN_CHANNELS_F32` input channels per group, and for 1-D signals
    below :data:`TORCH_MIN_FLOPS_1D_F32` multiply-adds), and for batches of
    float64 2-D signals with at most 256 filter-channel pairs, and up to
    :data:`TORCH_MAX_CHANNELS_F64` pairs and :data:`TORCH_MAX_PIXELS_F64` output pixels
    unless the NumPy FFT engine's operation count wins; the NumPy GEMM or FFT engine
    otherwise (1-D float64, wide float64 layers, tiny calls).  CuPy data: GEMM or FFT.
``"numpy"``
    Never PyTorch: GEMM or FFT by operation count only (results do not depend on whether
    PyTorch is installed).
``"torch"``
    PyTorch for every NumPy call (float32 and float64) when it is installed.

A user can always force one engine with ``ConvOperator(..., engine="gemm")`` or
:meth:`~modelcs.ConvOperator.with_engine`; the policy only steers ``"auto"``.

The constants come from the engine sweep of ``benchmarks/bench_operator.py --sweep-only``
(forward + adjoint pairs, 3x3 filters, from an 8-channel 16x16 layer to 512 channels on
15x15 with a batch of 16, strides 1 and 2, float32 and float64), measured on a quiet 2-core
x86 machine (AVX-512, OpenBLAS pinned to Haswell kernels, PyTorch 2.13 CPU):

* float32: PyTorch was the fastest engine in 15 of 19 sizes, by 1.3-6x from 16 channels
  on 16x16 up; GEMM won the 8-channel 16x16 single call (1.1x) and the 3-channel stride-2
  first layers (1.3x at 64x64, 1.8x at 224x224); FFT won 512 channels with a batch of 16
  by 1.07x.
* float64: PyTorch won 2-D layers up to 128 channels (1.2-1.7x over the best NumPy
  engine), tied at 256 and lost at 512 (GEMM/FFT 1.1-2x faster), and lost to FFT on
  large images in batches (32 channels, 56x56, batch 8: 1.4x); on 64 channels at 112x112
  its transposed convolution (the adjoint) took 54 ms against GEMM's 31-40 ms; on the 1-D
  paper size (96 x 32 x 5, 1000 codes) GEMM beat it 1.45x.  Since the GEMM engine's
  forward pass writes channels-first results and a single signal's adjoint does too (no
  transposes), GEMM ties or beats PyTorch on every single float64 signal of the sweep
  (8 channels on 16x16: 0.20 against 0.36 ms; 3 channels, stride 2, 224x224: 2.9 against
  3.5 ms; 64 channels on 56x56: 11.7 against 14.5 ms), so single float64 signals stay on
  NumPy.  In float32 the same GEMM beat PyTorch on single images of up to ~200 output
  pixels (32 channels on 16x16: 0.38 against 0.55 ms; 64 channels on 15x15: 0.75 against
  0.84 ms) but not on larger ones (32 channels on 32x32: 1.02 against 0.76 ms) or on 512
  channels (15.3 against 12.7 ms): :data:`TORCH_MIN_PIXELS_SINGLE_F32` and
  :data:`TORCH_MIN_FLOPS_SINGLE_F32`.

1-D float32 signals (``conv1d``; same machine, forward + adjoint, batches of 2-128):
PyTorch lost below ~2.5e8 multiply-adds per forward pass, mostly by 1.5-3x (the paper's
1-D size, 96 x 32 x 5 on 32 samples: 0.28 against 0.63 ms at a batch of 2, 0.72 against
1.45 ms at 8, 5.4 against 8.0 ms at 128; 64 x 64 x 9 on 256 samples: 5.0 against 9.7 ms at
8; one exception, the paper's size at a batch of 32: 1.7 against 1.2 ms), tied at
2.9-4.0e8 and won above 1e9 (1.6-2.5x):  :data:`TORCH_MIN_FLOPS_1D_F32`.

Below :data:`TORCH_MIN_FLOPS` multiply-adds, PyTorch's per-call overhead and thread
wake-ups make it lose or tie, and on a loaded machine its threads lose badly (2.1 ms
against 0.16 ms for GEMM in one observation), so NumPy keeps tiny calls.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from .._validation import check_choice

__all__ = ["engine_policy", "set_engine_policy", "get_engine_policy"]

POLICIES = ("auto", "numpy", "torch")

#: float32 multiply-adds of one forward pass (batch included) from which ``"auto"``
#: sends NumPy data to PyTorch (see the module docstring for where it comes from)
TORCH_MIN_FLOPS = 2.0e5
#: float32 1-D signals: forward passes (batch included) with fewer multiply-adds than
#: this stay on NumPy
TORCH_MIN_FLOPS_1D_F32 = 2.5e8
#: float32: fewer input channels per group than this stay on NumPy (3-channel images)
TORCH_MIN_CHANNELS_F32 = 5
#: float32, a single signal with fewer output pixels than this stays on NumPy ...
TORCH_MIN_PIXELS_SINGLE_F32 = 400
#: ... unless its forward pass has at least this many multiply-adds
TORCH_MIN_FLOPS_SINGLE_F32 = 2.0e8
#: float64 2-D: at most this many (filter, input channel) pairs go to PyTorch ...
TORCH_MAX_CHANNELS_F64 = 128 * 128
#: ... with outputs of at most this many pixels
TORCH_MAX_PIXELS_F64 = 64 * 64

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
