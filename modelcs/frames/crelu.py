"""CReLU, its inverse, and max-pooled CReLU features with switches.

Shang, Sohn, Almeida and Lee, *Understanding and Improving Convolutional Neural Networks
via Concatenated Rectified Linear Units* (ICML 2016), Def. 2.1 and supplement A.2.

``crelu`` concatenates ``[h]_+`` and ``[-h]_+`` along the channel axis (positive parts
first), ``crelu_inverse`` undoes it, and :func:`crelu_pool` computes the
conv + CReLU + max-pooling features ``f_cnn(x) = g(W x)`` of supplement A.2 together with
the *switches* (which shifted filter won each pooling region), which is what
supplement Algorithm 2 needs to reconstruct.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._backend import get_array_module, to_numpy
from .._validation import as_batch, as_real_array
from ..operators import LinearOperator
from ..operators.matrix import as_operator
from ._pooling import pool_geometry, pooling_windows

__all__ = ["crelu", "crelu_inverse", "crelu_pool", "PooledCReLU"]


def _check_axis(name: str, a: Any, axis: Any) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"parameter 'axis' must be an integer; got {axis!r}")
    if a.ndim == 0 or not -a.ndim <= axis < a.ndim:
        raise ValueError(
            f"parameter 'axis'={axis} is out of range for '{name}' with shape {tuple(a.shape)}"
        )
    return int(axis) % a.ndim


def crelu(h: Any, *, axis: int = 0) -> Any:
    """CReLU ``rho_c(h) = ([h]_+, [-h]_+)`` concatenated along the channel axis.

    Parameters
    ----------
    h : array, shape ``(K, *n)`` (or a batch ``(B, K, *n)`` with ``axis=1``)
        Linear responses, e.g. ``W @ x``.
    axis : int, default 0
        The channel axis; use ``axis=1`` for a batch.

    Returns
    -------
    array, shape ``(2K, *n)``: positive parts in channels ``0..K-1``, negative parts after.

    Examples
    --------
    >>> import numpy as np
    >>> crelu(np.array([[1.0, -2.0], [0.0, 3.0]]))
    array([[1., 0.],
           [0., 3.],
           [0., 2.],
           [0., 0.]])
    """
    h = as_real_array("h", h)
    axis = _check_axis("h", h, axis)
    xp = get_array_module(h)
    if h.dtype.kind != "f":
        h = h.astype(np.float64)
    zero = xp.zeros((), dtype=h.dtype)
    return xp.concatenate([xp.maximum(h, zero), xp.maximum(-h, zero)], axis=axis)


def crelu_inverse(c: Any, *, axis: int = 0) -> Any:
    r"""Invert :func:`crelu`: ``z = c[:K] - c[K:]`` after checking ``c`` is a CReLU output.

    Raises ``ValueError`` when the channel count is odd, when entries are negative, or when
    a position is positive in both halves (a CReLU output never is), saying where.  Since
    :math:`\mathrm{ReLU}(h) - \mathrm{ReLU}(-h) = h`, CReLU loses no information (Shang,
    Sohn, Almeida and Lee, *Understanding and Improving Convolutional Neural Networks via
    Concatenated Rectified Linear Units*, Sec. 2.1).

    Parameters
    ----------
    c : array_like
        A CReLU output: ``2K`` channels along ``axis``, non-negative.
    axis : int
        The channel axis (``0`` for one map ``(2K, *n)``; ``1`` for a batch).

    Returns
    -------
    array
        ``h`` with ``K`` channels along ``axis``, same array module as ``c``.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.array([[1.0, -2.0], [0.5, 3.0]])
    >>> bool(np.array_equal(crelu_inverse(crelu(h)), h))
    True
    """
    c = as_real_array("c", c)
    axis = _check_axis("c", c, axis)
    xp = get_array_module(c)
    C = c.shape[axis]
    if C % 2:
        raise ValueError(
            f"parameter 'c' has {C} channels along axis {axis}; a CReLU output has an even "
            "number (positive parts, then negative parts)"
        )
    if c.dtype.kind != "f":
        c = c.astype(np.float64)
    n_neg = int((c < 0).sum())
    if n_neg:
        raise ValueError(
            f"parameter 'c' has {n_neg} negative entries (min {float(c.min())!r}); a CReLU "
            "output is non-negative"
        )
    K = C // 2
    pos = xp.take(c, xp.arange(K), axis=axis)
    neg = xp.take(c, xp.arange(K, C), axis=axis)
    both = (pos > 0) & (neg > 0)
    n_both = int(both.sum())
    if n_both:
        first = tuple(int(i) for i in np.argwhere(to_numpy(both))[0])
        raise ValueError(
            f"parameter 'c' is not a CReLU output: {n_both} position(s) are positive in both the "
            f"positive half and the negative half (first at index {first} of a half); expected "
            "disjoint supports"
        )
    return pos - neg


class PooledCReLU(NamedTuple):
    """Output of :func:`crelu_pool` (all arrays keep the batch axis when the input had one).

    Attributes
    ----------
    features : ``(2K, *p)``
        ``f_cnn(x)``: max-pooled CReLU features, positive phases first.
    switches : ``(2K, *p)`` int
        Flat index (C order over the response grid ``n``) of the shifted filter that won
        each pooling region, ``-1`` where the feature is 0 (nothing activated).
    support : ``(K, *n)`` bool
        The activated shifted filters (the rows of ``W`` forming ``W_hat_x`` of Algorithm 2).
    code : ``(K, *n)``
        ``crelu_inverse`` of the features placed at their switches (zero elsewhere): the
        linear responses that Algorithm 2 inverts.  Built from ``features`` and
        ``switches`` only.
    """

    features: Any
    switches: Any
    support: Any
    code: Any


def crelu_pool(
    W: LinearOperator, x: Any, *, pool: Any = None, stride: Any = None
) -> PooledCReLU:
    """Conv + CReLU + max-pooling ``f_cnn(x) = pool(CReLU(W x))`` with switches (supp. A.2).

    Parameters
    ----------
    W : ConvOperator (or any operator with ``out_shape = (K, *n)``)
    x : array ``W.in_shape`` or a batch ``(B, *W.in_shape)``
    pool : int or tuple, optional
        Pooling window over the response grid ``n``; ``None`` (default) pools the whole map
        (one max-pooling region per filter and phase, the setting of Theorem A.5).
    stride : int or tuple, optional
        Pooling stride (default: the window, i.e. non-overlapping regions); windows that do
        not fit are dropped ('valid' pooling).

    Returns
    -------
    PooledCReLU
        ``features``, ``switches``, ``support``, ``code``; run Algorithm 2 with
        ``pinv_reconstruct(W, p.code, support=p.support).x``.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(4, 2, 3, 7, rng=0)
    >>> p = crelu_pool(W, np.random.default_rng(1).standard_normal((2, 7)))
    >>> p.features.shape, p.support.shape, int(p.support.sum()) <= 8
    ((8, 1), (4, 5), True)
    """
    W = as_operator(W, "W")
    xb, kind = as_batch("x", as_real_array("x", x), W.in_shape, flat=False)
    batched = kind == "batch"
    hb = W @ xb
    xp = get_array_module(hb)
    K, n = W.out_shape[0], tuple(W.out_shape[1:])
    if not n:
        raise TypeError(
            f"parameter 'W' has flat outputs (out_shape {W.out_shape}): pooling needs a "
            "ConvOperator or an operator with out_shape (K, *n), e.g. "
            "MatrixOperator(A, out_shape=(K, n))"
        )
    pl, st = pool_geometry(n, pool, stride)
    widx, pshape = pooling_windows(n, pl, st)  # (P, Lw)
    B, N, P = hb.shape[0], math.prod(n), widx.shape[0]
    hf = hb.reshape(B, K, N)
    widx_x = xp.asarray(widx)
    win = hf[:, :, widx_x]  # (B, K, P, Lw)
    amax = xp.argmax(win, axis=-1)
    amin = xp.argmin(win, axis=-1)
    vmax = xp.take_along_axis(win, amax[..., None], axis=-1)[..., 0]
    vmin = xp.take_along_axis(win, amin[..., None], axis=-1)[..., 0]
    zero = xp.zeros((), dtype=hf.dtype)
    fpos, fneg = xp.maximum(vmax, zero), xp.maximum(-vmin, zero)
    flat_w = xp.arange(P).reshape(1, 1, P)
    spos = xp.where(fpos > 0, widx_x[flat_w, amax], -1)
    sneg = xp.where(fneg > 0, widx_x[flat_w, amin], -1)
    features = xp.concatenate([fpos, fneg], axis=1)  # (B, 2K, P)
    switches = xp.concatenate([spos, sneg], axis=1)
    support, code = _unpool(features, switches, K, N)
    out = PooledCReLU(
        features.reshape(B, 2 * K, *pshape),
        switches.reshape(B, 2 * K, *pshape),
        support.reshape(B, K, *n),
        code.reshape(B, K, *n),
    )
    if not batched:
        out = PooledCReLU(*(a[0] for a in out))
    return out


def _unpool(features: Any, switches: Any, K: int, N: int) -> tuple[Any, Any]:
    """Place the CReLU-inverted pooled features at their switches: (support, code)."""
    xp = get_array_module(features)
    B = features.shape[0]
    code = xp.zeros((B, K, N), dtype=features.dtype)
    support = xp.zeros((B, K, N), dtype=bool)
    sign = xp.concatenate([xp.ones(K), -xp.ones(K)]).astype(features.dtype)
    active = switches >= 0  # (B, 2K, P)
    b, c, q = xp.nonzero(active)
    k = c % K
    pos = switches[b, c, q]
    code[b, k, pos] = sign[c] * features[b, c, q]
    support[b, k, pos] = True
    return support, code
