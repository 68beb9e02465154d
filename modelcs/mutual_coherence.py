"""Mutual coherence of the rows of a convolution ``W``, from filter cross-correlations.

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks* (long version), footnote 12, Table 4 (Sec. 4.4) and Table 6
(App. C.2): ``mu = max |<w_r, w_s>|`` over distinct unit-normalised rows of ``W``, the
shifted copies of the filters.

:func:`coherence` and :func:`coherence_both` never form ``W``: one ``K x K`` product per
distinct relative shift (and boundary geometry), over the overlapping taps only.  The
boundary geometry comes from the operator's public seam (:attr:`ConvOperator.padding_mode`,
:attr:`~ConvOperator.padding_widths`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._backend import get_array_module, to_numpy
from ._memory import check_elements
from ._validation import as_int_tuple, check_positive_int
from .operators.base import LinearOperator
from .operators.conv import ConvOperator

__all__ = ["coherence", "coherence_pair", "coherence_both"]


@dataclass
class _AxisClass:
    """Pairs of rows ``(p, p')`` along one spatial axis with identical geometry.

    ``mask1`` / ``mask2``: taps of row ``p`` / ``p'`` that fall inside the input (zero
    padding truncates rows at the boundary); ``j1[i]`` and ``j2[i]`` are the taps of the two
    rows that read the same input sample; ``same`` is ``p == p'``.
    """

    same: bool
    mask1: np.ndarray
    mask2: np.ndarray
    j1: np.ndarray
    j2: np.ndarray
    p1: int
    p2: int
    rev: int = -1


def _axis_classes(D: int, l: int, t: int, lo: int, circular: bool, n: int) -> list[_AxisClass]:
    """All distinct overlapping row-pair geometries along one axis (geometry only, CPU)."""
    out: list[_AxisClass] = []
    keys: dict[tuple[Any, ...], int] = {}
    taps = np.arange(l)
    for dp in range(-(n - 1), n):
        s = dp * t
        if circular:
            j2 = (taps - s) % D
            hit = j2 < l
            if not hit.any():
                continue
        else:
            if abs(s) >= l:
                continue
            j2 = taps - s
            hit = (j2 >= 0) & (j2 < l)
        p = np.arange(max(0, -dp), min(n, n - dp))
        if circular:
            m1 = np.ones((p.size, l), dtype=bool)
            m2 = m1
        else:
            m1 = (p[:, None] * t + taps[None, :] - lo >= 0) & (p[:, None] * t + taps - lo < D)
            q = p + dp
            m2 = (q[:, None] * t + taps[None, :] - lo >= 0) & (q[:, None] * t + taps - lo < D)
        rows, first = np.unique(np.concatenate([m1, m2], axis=1), axis=0, return_index=True)
        for row, i in zip(rows, first, strict=True):
            a, b = row[:l], row[l:]
            sel = hit & a
            j1s, j2s = taps[sel], j2[sel]
            key = (dp == 0, a.tobytes(), b.tobytes(), j1s.tobytes(), j2s.tobytes())
            if key in keys:
                continue
            keys[key] = len(out)
            out.append(_AxisClass(dp == 0, a, b, j1s, j2s, int(p[i]), int(p[i] + dp)))
    for c in out:
        order = np.argsort(c.j2, kind="stable")
        key = (c.same, c.mask2.tobytes(), c.mask1.tobytes(), c.j2[order].tobytes(),
               c.j1[order].tobytes())
        c.rev = keys[key]
    return out


def _as_conv(
    W_or_filters: Any, shifts: bool, input_shape: Any, stride: Any, padding: Any,
    groups: Any = None,
) -> ConvOperator:
    if isinstance(W_or_filters, ConvOperator):
        for name, v in (("input_shape", input_shape), ("groups", groups)):
            if v is not None:
                raise ValueError(
                    f"parameter '{name}' must be None when a ConvOperator is given (its own "
                    "geometry is used)"
                )
        return W_or_filters
    if isinstance(W_or_filters, LinearOperator) or not (
        hasattr(W_or_filters, "ndim") or isinstance(W_or_filters, (list, tuple))
    ):
        raise TypeError(
            "parameter 'W_or_filters': coherence needs a ConvOperator W or a filter array "
            "(K, M, *l) (it uses the filter-bank geometry: shifts, stride, groups); got "
            f"{type(W_or_filters).__name__} (for Phi = W.T pass W = Phi.T; for a plain matrix "
            "compute the Gram matrix of its normalised rows)"
        )
    w = W_or_filters
    if not hasattr(w, "ndim") or not hasattr(w, "dtype"):
        w = np.asarray(w)
    if w.ndim not in (3, 4):
        raise ValueError(
            f"parameter 'W_or_filters' must be a ConvOperator or filters of shape (K, M, l) or "
            f"(K, M, l1, l2); got an array of shape {tuple(w.shape)}"
        )
    if w.dtype.kind not in "fiu":
        raise TypeError(f"parameter 'W_or_filters' must be real; got dtype {w.dtype}")
    d = w.ndim - 2
    l = tuple(int(s) for s in w.shape[2:])
    if input_shape is None:
        t = as_int_tuple("stride", stride, d)
        if padding != "valid":
            raise ValueError(
                "parameter 'input_shape' is needed with padding other than 'valid'; got "
                f"padding={padding!r}"
            )
        # large enough that every relative shift (multiple of the stride) occurs
        input_shape = tuple(la + ta * 2 * (-(-la // ta)) for la, ta in zip(l, t, strict=True))
    g = 1 if groups is None else check_positive_int("groups", groups)
    D = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
    if len(D) == d:  # spatial shape only: the channels are those of the filters
        D = (w.shape[1] * g, *D)
    return ConvOperator(w, D, stride=stride, padding=padding, groups=g)


def coherence(
    W_or_filters: Any,
    *,
    shifts: bool = True,
    input_shape: int | Sequence[int] | None = None,
    stride: int | Sequence[int] = 1,
    padding: Any = "valid",
    groups: int | None = None,
) -> float:
    """Coherence ``mu = max_{r != s} |<w_r, w_s>|`` of the unit-normalised rows of ``W``.

    Footnote 12 of the invertibility paper (Tables 4 and 6).  Rows of ``W`` are the shifted
    copies of the filters.

    ``shifts=True``
        All rows of ``W`` for the given geometry: pairs of filters at every relative shift
        that occurs (multiples of the stride, at most ``n - 1`` shifts apart), including the
        same filter at two different shifts.  With ``'valid'`` padding every row is a whole
        filter, so the Gram entries are the filters' full cross-correlations at those lags
        (normalised by the filter norms); with zero padding (``'same'``, ints) rows at the
        boundary are truncated and normalised by their own (smaller) norms; with
        ``'circular'`` rows wrap around.  Rows that lie entirely in the zero padding are
        zero and are left out.
    ``shifts=False``
        The ``K`` filters alone (flattened, unit-normalised): ``max_{k != k'} |cos|``.

    Computed from filter cross-correlations: one ``K x K`` product per distinct relative
    shift (and boundary geometry) over the overlapping taps only (``groups`` products of
    ``K/groups x K/groups`` for grouped convolutions), never from the dense
    ``W`` (array module of the filters: NumPy or CuPy; dtype of the filters).

    Parameters
    ----------
    W_or_filters : ConvOperator or array ``(K, M, *l)``
        With a ConvOperator its stride, padding, groups and input shape are used.
    shifts : bool, default True
    input_shape : int or tuple, optional
        Spatial input shape when filters are given.  ``None`` (with ``'valid'``): an input
        large enough that every lag occurs (for ``'valid'`` the coherence does not depend
        on ``D`` once ``n >= ceil(l/t)``).
    stride, padding :
        Geometry when filters are given (as for :class:`~modelcs.ConvOperator`).
    groups : int, optional
        Grouped convolution when filters ``(K, M/groups, *l)`` are given (default 1):
        rows of different groups read disjoint channels and are orthogonal, so ``mu`` is
        the largest within-group value (0 between the single filters of a depthwise
        layer with ``shifts=False``).

    Returns
    -------
    float
        The coherence (:func:`coherence_pair` also gives the rows attaining it).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.zeros((2, 1, 3)); w[0, 0] = [1, 0, 0]; w[1, 0] = [0, 1, 1]
    >>> coherence(w, shifts=False)
    0.0
    >>> round(coherence(w, shifts=True), 4)         # w0 shifted by one tap meets w1
    0.7071
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(64, 64, (3, 3), (14, 14), rng=0)
    >>> 0.1 < coherence(W, shifts=False) < coherence(W) < 0.3
    True
    """
    return coherence_pair(W_or_filters, shifts=shifts, input_shape=input_shape, stride=stride,
                          padding=padding, groups=groups)[0]


def coherence_pair(
    W_or_filters: Any,
    *,
    shifts: bool = True,
    input_shape: int | Sequence[int] | None = None,
    stride: int | Sequence[int] = 1,
    padding: Any = "valid",
    groups: int | None = None,
) -> tuple[float, tuple[int, int]]:
    """The coherence of :func:`coherence` and the pair of rows of ``W`` that attains it.

    Parameters
    ----------
    W_or_filters, shifts, input_shape, stride, padding, groups
        As for :func:`coherence`.

    Returns
    -------
    mu : float
        The coherence.
    pair : tuple of int
        Flat row indices ``(r, s)`` of ``W`` attaining the maximum (rows are the C-order
        flattening of ``(K, *n)``; with ``shifts=False``, filter indices).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.zeros((3, 1, 2)); w[0, 0] = [1, 0]; w[1, 0] = [0, 1]; w[2, 0] = [1, 1]
    >>> mu, (r, s) = coherence_pair(w, shifts=False)
    >>> round(mu, 4), sorted((r, s))
    (0.7071, [0, 2])
    """
    if not isinstance(shifts, (bool, np.bool_)):
        raise TypeError(f"parameter 'shifts' must be a bool; got {shifts!r}")
    best, _ = _coherence(W_or_filters, bool(shifts), input_shape, stride, padding, groups)
    return best


def coherence_both(
    W_or_filters: Any,
    *,
    input_shape: Any = None,
    stride: Any = 1,
    padding: Any = "valid",
    groups: int | None = None,
) -> tuple[float, float]:
    """``(coherence(..., shifts=True), coherence(..., shifts=False))`` in one pass.

    The lag-0 block of the shifted computation is the Gram matrix of the whole filters,
    so the filters-only value comes for free when some row is a whole filter.
    """
    best, whole = _coherence(W_or_filters, True, input_shape, stride, padding, groups)
    if whole is None:
        whole = coherence(W_or_filters, shifts=False, groups=groups)
    return best[0], whole


def _coherence(
    W_or_filters: Any, shifts: bool, input_shape: Any, stride: Any, padding: Any,
    groups: Any = None,
) -> tuple[tuple[float, tuple[int, int]], float | None]:
    """(best value, row pair) and, when computed on the way, the filters-only value."""
    op = _as_conv(W_or_filters, shifts, input_shape, stride, padding, groups)
    w = op.filters
    xp = get_array_module(w)
    K = op.n_blocks
    check_elements(f"coherence: the Gram blocks of K={K} filters", K * (K // op.groups) + K * math.prod(w.shape[1:]), copies=3)  # noqa: E501
    # Rows of different groups read disjoint channels: their inner products vanish, so
    # every Gram block is computed per group, (g, K/g, K/g), never over all K filters.
    g = op.groups
    Kg = K // g
    L = math.prod(op.kernel_size)
    A = w.reshape(g, Kg, w.shape[1], L)
    sq = (A.astype(np.float64) ** 2).sum(axis=2)  # (g, Kg, L)
    fnorm = xp.sqrt(sq.sum(axis=2))
    if bool((fnorm == 0).any()):
        bad = int(to_numpy(xp.flatnonzero(fnorm.reshape(-1) == 0))[0])
        raise ValueError(f"parameter 'W_or_filters': filter {bad} is identically zero")
    diag = xp.arange(Kg)

    def top(G: Any) -> tuple[float, int, int]:
        """Largest entry of the per-group blocks ``G`` and its (global) filter pair."""
        i = int(to_numpy(xp.argmax(G)))
        gi, rest = divmod(i, Kg * Kg)
        k1, k2 = divmod(rest, Kg)
        return float(G.reshape(-1)[i]), gi * Kg + k1, gi * Kg + k2

    if not shifts:
        if K < 2:
            raise ValueError("coherence needs at least two rows; got K=1 filter with shifts=False")
        F = A.reshape(g, Kg, -1) / fnorm[:, :, None].astype(A.dtype)
        G = xp.abs(F @ F.transpose(0, 2, 1))
        G[:, diag, diag] = 0
        mu, k1, k2 = top(G)
        return (mu, (k1, k2)), mu

    mode, pads = op.padding_mode, op.padding_widths
    n = op.output_spatial
    if K * math.prod(n) < 2:
        raise ValueError(f"coherence needs at least two rows; W has {K * math.prod(n)}")
    per_axis = [
        _axis_classes(Da, la, ta, pa[0], mode == "circular", na)
        for Da, la, ta, pa, na in zip(
            op.input_spatial, op.kernel_size, op.stride, pads, n, strict=True
        )
    ]
    lshape = op.kernel_size
    best: tuple[float, tuple[int, int]] = (0.0, (0, 1))  # every pair has |<.,.>| >= 0
    whole: float | None = None  # the filters-only value (lag 0, untruncated rows)
    for combo in itertools.product(*[range(len(c)) for c in per_axis]):
        rev = tuple(per_axis[a][ci].rev for a, ci in enumerate(combo))
        if rev < combo:
            continue  # the transposed Gram block was (or will be) computed
        cls = [per_axis[a][ci] for a, ci in enumerate(combo)]
        grid1 = np.meshgrid(*[c.j1 for c in cls], indexing="ij")
        if grid1[0].size == 0:
            continue
        grid2 = np.meshgrid(*[c.j2 for c in cls], indexing="ij")
        J1 = xp.asarray(np.ravel_multi_index([q.ravel() for q in grid1], lshape))
        J2 = xp.asarray(np.ravel_multi_index([q.ravel() for q in grid2], lshape))
        m1 = cls[0].mask1
        m2 = cls[0].mask2
        for c in cls[1:]:
            m1 = np.multiply.outer(m1, c.mask1)
            m2 = np.multiply.outer(m2, c.mask2)
        n1 = xp.sqrt(sq @ xp.asarray(m1.reshape(-1), dtype=np.float64))  # (g, Kg)
        n2 = xp.sqrt(sq @ xp.asarray(m2.reshape(-1), dtype=np.float64))
        G = A[..., J1].reshape(g, Kg, -1) @ A[..., J2].reshape(g, Kg, -1).transpose(0, 2, 1)
        den = n1[:, :, None] * n2[:, None, :]
        G = xp.abs(G) / xp.where(den > 0, den, 1.0).astype(G.dtype)
        G = xp.where(den > 0, G, 0)
        if all(c.same for c in cls):
            G[:, diag, diag] = 0
        val, k1, k2 = top(G)
        if all(c.same and c.mask1.all() for c in cls) and K > 1:
            whole = val
        if val > best[0]:
            r1 = k1 * math.prod(n) + int(np.ravel_multi_index([c.p1 for c in cls], n))
            r2 = k2 * math.prod(n) + int(np.ravel_multi_index([c.p2 for c in cls], n))
            best = (val, (r1, r2))
    return best, whole
