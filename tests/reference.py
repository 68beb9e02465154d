"""Independent brute-force references for the tests (explicit loops, no modelcs code)."""

from __future__ import annotations

import itertools
import math

import numpy as np


def pads_for(padding, D, l, t):
    """Per-axis (lo, hi) zero padding and whether the boundary is circular."""
    d = len(D)
    if padding == "valid":
        return [(0, 0)] * d, False
    if padding == "circular":
        return [(0, 0)] * d, True
    if padding == "same":
        out = []
        for Da, la, ta in zip(D, l, t, strict=True):
            n = -(-Da // ta)
            total = max((n - 1) * ta + la - Da, 0)
            out.append((total // 2, total - total // 2))
        return out, False
    if isinstance(padding, int):
        return [(padding, padding)] * d, False
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding], False


def dense_conv_matrix(w, D, stride=1, padding="valid", groups=1):
    """The matrix of W by explicit loops over filters, shifts, channels and taps.

    Rows: C-order flattening of (K, *n); columns: of (M, *D).
    """
    w = np.asarray(w, dtype=np.float64)
    d = w.ndim - 2
    D = (D,) if isinstance(D, int) else tuple(D)
    t = (stride,) * d if isinstance(stride, int) else tuple(stride)
    K, Mg = w.shape[:2]
    l = w.shape[2:]
    M = Mg * groups
    Kg = K // groups
    pads, circ = pads_for(padding, D, l, t)
    if circ:
        n = tuple(-(-Da // ta) for Da, ta in zip(D, t, strict=True))
    else:
        geom = zip(D, pads, l, t, strict=True)
        n = tuple((Da + lo + hi - la) // ta + 1 for Da, (lo, hi), la, ta in geom)
    N, ND = math.prod(n), math.prod(D)
    A = np.zeros((K * N, M * ND))
    for k in range(K):
        g = k // Kg
        for p_idx, p in enumerate(itertools.product(*[range(na) for na in n])):
            row = k * N + p_idx
            for mg in range(Mg):
                m = g * Mg + mg
                for j in itertools.product(*[range(la) for la in l]):
                    pos = []
                    inside = True
                    for a in range(d):
                        q = p[a] * t[a] + j[a] - pads[a][0]
                        if circ:
                            q %= D[a]
                        elif q < 0 or q >= D[a]:
                            inside = False
                        pos.append(q)
                    if not inside:
                        continue
                    col = m * ND + int(np.ravel_multi_index(pos, D))
                    A[row, col] += w[(k, mg, *j)]
    return A, (K, *n)


def dense(W):
    """The dense matrix of a ConvOperator ``W``, built independently (loops)."""
    A, _ = dense_conv_matrix(
        W.filters, W.input_spatial, stride=W.stride, padding=W.padding, groups=W.groups
    )
    return A


class MatvecOnly:
    """A matrix-free operator of the user's (SciPy/PyLops style): ``shape``, ``dtype``,
    ``matvec`` and ``rmatvec`` of the matrix ``A``, nothing modelcs can look inside."""

    def __init__(self, A):
        self.A = np.asarray(A)
        self.shape, self.dtype = self.A.shape, self.A.dtype

    def matvec(self, x):
        return self.A @ x

    def rmatvec(self, y):
        return self.A.T @ y
