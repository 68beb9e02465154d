"""The Gram matrix of a zero-padded convolution as a band matrix, and its Cholesky factor.

Private helper of :mod:`modelcs.frames.spectrum` (``method="banded"``).

Order the unknowns of the smaller Gram side group by group, then pixel by pixel, with the
channels of one pixel (``C`` per group) together
(``index = (group * npix + flat(pixel)) * C + channel``).  Groups do not couple, so the
Gram matrix is block diagonal and only one group's coupling sets the bandwidth.  Two
pixels of ``W^T W`` are coupled only when one output window covers both, i.e. when they
are at most ``l - 1`` apart on every axis (for ``W W^T``: output pixels at most
``(l - 1) // t`` apart, ``t`` the stride).  So the Gram matrix is a band matrix with
half-bandwidth

    ``kd = C * sum_a delta_a * step_a + C - 1``

(``delta_a`` the largest coupling distance on axis ``a``, ``step_a`` the pixel stride of
that axis in the flattening, the axes ordered to make ``kd`` smallest: the slowest axis is
the one with the smallest ``delta_a * (size of the other axes)``).  A 64-channel 3x3
``'same'`` layer on 24x24 gives ``N = 36,864`` and ``kd = 3,263``.

The band is assembled from the products of filter-tap pairs (one ``C x C`` block
``w_t1^T w_t2`` or ``w_t1 w_t2^T`` per pair, added at every pixel pair the pair couples;
no sparse matrix product: SciPy's ``A^T A`` took 37 s at the size above) and factored by
LAPACK's banded Cholesky (``pbtrf``: ``N kd^2`` flops, ``N (kd + 1)`` entries; 11 s and
0.96 GB at the size above).  A solve with the factor (``pbtrs``) reads it twice
(0.12 s there), so shift-invert Lanczos for the smallest eigenvalue converges in tens of
solves.  Unlike the preconditioned LOBPCG of :mod:`modelcs.frames._valid_gram`, the route
does not depend on how well a circular operator approximates the layer: it is exact for
``'same'`` layers, whose boundary makes that approximation poor, for strides and for
groups.  Its cost grows with
``N kd^2 ~ C^3 D^3`` (2-D), so it is for layers of moderate size:
:func:`band_cost` reports the work before anything is allocated.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .._memory import available_memory, check_elements
from .._progress import progress_bar
from ..operators import ConvOperator
from ._sparse import dense_bounds, shift_invert_bounds

__all__ = ["band_ok", "band_cost", "band_fits", "BandGram", "banded_frame_bounds"]

#: below this order the eigenvalues come from a dense ``eigvalsh`` of the band matrix
DENSE_GRAM = 200
#: ... through a dense SVD of ``W`` when ``W`` has at most this many entries
DENSE_ENTRIES = 4_000_000


def band_ok(W: Any) -> bool:
    """Whether :class:`BandGram` covers ``W``: a zero-padded ConvOperator on the host
    (any stride, groups, padding widths, 1-D or 2-D)."""
    return (isinstance(W, ConvOperator) and W.padding_mode == "zeros"
            and isinstance(W.filters, np.ndarray))


def _geometry(W: ConvOperator) -> tuple[bool, int, tuple[int, ...], tuple[int, ...]]:
    """``(input_side, Cg, grid, delta)``: which Gram matrix is the smaller one, its channels
    per pixel and group, its pixel grid and the largest coupling distance per axis."""
    input_side = math.prod(W.in_shape) <= math.prod(W.out_shape)
    lens, g = W.kernel_size, W.groups
    if input_side:
        return True, W.in_shape[0] // g, tuple(W.input_spatial), tuple(la - 1 for la in lens)
    delta = tuple((la - 1) // ta for la, ta in zip(lens, W.stride, strict=True))
    return False, W.out_shape[0] // g, tuple(W.out_shape[1:]), delta


def _order(grid: tuple[int, ...], delta: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """``(axes, kd_pixels)``: the axis order (slowest first) with the smallest pixel
    half-bandwidth ``sum_a delta_a * step_a``, and that half-bandwidth."""
    best: tuple[tuple[int, ...], int] | None = None
    for axes in itertools.permutations(range(len(grid))):
        step, kdp = 1, 0
        for a in reversed(axes):
            kdp += delta[a] * step
            step *= grid[a]
        if best is None or kdp < best[1]:
            best = (axes, kdp)
    assert best is not None
    return best


def band_cost(W: ConvOperator) -> tuple[int, int, int]:
    """``(N, kd, flops)``: the order and half-bandwidth of the smaller Gram matrix of ``W``
    in the band ordering, and the multiply-adds of its Cholesky factorisation
    (``N kd^2``, exact integers)."""
    _, Cg, grid, delta = _geometry(W)
    _, kdp = _order(grid, delta)
    N = W.groups * Cg * math.prod(grid)
    kd = min(Cg * kdp + Cg - 1, N - 1)
    return N, kd, N * kd * kd


def band_fits(W: ConvOperator, max_flops: float) -> bool:
    """Whether the banded route costs at most ``max_flops`` multiply-adds and its two
    copies of the band fit in the memory available now."""
    N, kd, flops = band_cost(W)
    avail = available_memory()
    return flops <= max_flops and (avail is None or 2 * 8 * N * (kd + 1) <= avail)


def banded_frame_bounds(W: ConvOperator, gram: tuple[Any, tuple[int, ...]], *, tol: float,
                        rtol: float, max_iter: int | None, rng: Any,
                        progress: bool | None) -> tuple[float | None, float]:
    """``(lambda_min_nonzero, lambda_max)`` of the smaller Gram matrix of ``W`` through
    its banded Cholesky factor, with the conventions of
    :func:`modelcs.frames._sparse.sparse_frame_bounds` (``None`` first: a null space
    that shift-invert could not step over, the caller takes plain Lanczos).  ``gram``:
    ``(apply, shape)`` of the Gram operator, for the largest eigenvalue."""
    N, _, _ = band_cost(W)
    if N <= DENSE_GRAM and math.prod(W.shape) <= DENSE_ENTRIES:
        # small: the singular values of W itself (accurate to eps * sigma_max, where the
        # Gram matrix's eigenvalues are accurate to eps * sigma_max^2)
        s = np.linalg.svd(np.asarray(W.astype(np.float64).to_dense()), compute_uv=False)
        return dense_bounds(np.sort(s[:N]) ** 2, rtol)
    bg = BandGram(W)
    if bg.N <= DENSE_GRAM:
        return dense_bounds(np.linalg.eigvalsh(bg.to_dense()), rtol)

    def factor(delta: float) -> Any:
        with progress_bar(1, desc=f"banded Cholesky, N={bg.N}, kd={bg.kd}", unit="step",
                          progress=progress) as bar:
            solve = bg.factor(delta)
            bar.update()
        return solve

    return shift_invert_bounds(gram[0], gram[1], factor, bg.N, bg.norm1, tol=tol,
                               rtol=rtol, max_iter=max_iter, rng=rng, progress=progress)


class BandGram:
    """The smaller Gram matrix of a zero-padded ``ConvOperator`` in LAPACK's lower band
    storage (module docstring).

    Parameters
    ----------
    W : ConvOperator
        Zero padding, NumPy filters (any stride, groups, 1-D or 2-D).

    Attributes
    ----------
    N, kd : int
        Order and half-bandwidth.
    ab : ndarray ``(kd + 1, N)``
        ``ab[i - j, j] = G[i, j]`` for ``j <= i <= j + kd`` (in the band ordering of the
        unknowns: groups slowest, then pixels in the order :attr:`axes`, the group's
        channels fastest; groups do not couple, so ``G`` is block diagonal and the
        bandwidth is that of one group).
    input_side : bool
        ``G = W^T W`` (else ``W W^T``).
    norm1 : float
        ``||G||_1``, the largest absolute column sum (an upper bound of ``lambda_max``).
    """

    def __init__(self, W: ConvOperator) -> None:
        self.input_side, C, grid, delta = _geometry(W)
        self.axes, kdp = _order(grid, delta)
        self.N, self.kd, _ = band_cost(W)
        self.grid, self.C = grid, C
        N, kd, g = self.N, self.kd, W.groups
        npix = math.prod(grid)
        check_elements(f"the {N}x{N} Gram matrix of W in band storage (half-bandwidth {kd})",
                       2 * (kd + 1) * N + (kdp + 1) * npix * C * C * g, np.float64)
        w = np.asarray(W.filters, dtype=np.float64)         # (K, Mg, *l)
        Kg = w.shape[0] // g
        lens = W.kernel_size
        # pixel steps of the band ordering, per original axis
        steps = [0] * len(grid)
        s = 1
        for a in reversed(self.axes):
            steps[a] = s
            s *= grid[a]
        D, n = W.input_spatial, W.out_shape[1:]
        pads = [p[0] for p in W.padding_widths]
        # blocks[off][i, j]: group i's C x C block of G at (pixel j + off, pixel j), off >= 0
        blocks: dict[int, np.ndarray] = {}
        taps = list(itertools.product(*(range(la) for la in lens)))
        # per tap, the filters of each group: (g, Kg, Mg)
        wt = {t: w[(slice(None), slice(None)) + t].reshape(g, Kg, -1) for t in taps}
        for t1 in taps:
            for t2 in taps:
                rows, cols = [], []
                for a in range(len(grid)):
                    r, c = _axis_pairs(self.input_side, t1[a], t2[a], D[a], n[a],
                                       W.stride[a], pads[a])
                    rows.append(r)
                    cols.append(c)
                if any(r.size == 0 for r in rows):
                    continue
                off = sum((int(r[0]) - int(c[0])) * steps[a]
                          for a, (r, c) in enumerate(zip(rows, cols, strict=True)))
                if off < 0:
                    continue  # the transposed pair (t2, t1) fills the lower triangle
                a1, a2 = wt[t1], wt[t2]
                blk = (a1.transpose(0, 2, 1) @ a2 if self.input_side
                       else a1 @ a2.transpose(0, 2, 1))                 # (g, C, C)
                col_pix = sum(np.ix_(*[c * steps[a] for a, c in enumerate(cols)]))
                if off not in blocks:
                    blocks[off] = np.zeros((g, npix, C, C))
                blocks[off][:, np.ravel(col_pix)] += blk[:, None]
        self.norm1 = max(_norm1({o: B[i] for o, B in blocks.items()}, npix, C)
                         for i in range(g))
        self.ab = np.zeros((kd + 1, N))
        c1, c2 = np.meshgrid(np.arange(C), np.arange(C), indexing="ij")
        pix = np.arange(g * npix)[:, None, None]         # (group, pixel) pairs, group-major
        for off, B4 in blocks.items():
            # (the last off pixels of a group have no partner inside it: zero blocks, so
            # nothing couples one group to the next)
            B = B4.reshape(g * npix, C, C)
            r = off * C + c1 - c2
            keep = r >= 0 if off == 0 else np.ones_like(r, dtype=bool)
            keep = keep & (r <= kd)
            cols_j = pix * C + c2
            self.ab[np.broadcast_to(r, B.shape)[:, keep],
                    np.broadcast_to(cols_j, B.shape)[:, keep]] = B[:, keep]

    def order(self) -> np.ndarray:
        """For each unknown of the band ordering, its index in the C-order flattening of
        ``(g * Cg, *grid)`` (``W.in_shape`` or ``W.out_shape``)."""
        npix = math.prod(self.grid)
        C = self.N // npix                                   # all channels, g * Cg
        Cg = self.C
        pix = np.arange(npix).reshape(self.grid)
        pix = np.transpose(pix, self.axes).ravel()
        g = C // Cg
        ch = np.arange(C).reshape(g, 1, Cg)                  # (group, 1, channel)
        return (ch * npix + pix[None, :, None]).ravel()

    def to_dense(self) -> np.ndarray:
        """``G`` as a dense ``(N, N)`` array in the band ordering (for tests)."""
        N = self.N
        G = np.zeros((N, N))
        for r in range(self.kd + 1):
            j = np.arange(N - r)
            G[j + r, j] = self.ab[r, : N - r]
            G[j, j + r] = self.ab[r, : N - r]
        return G

    def factor(self, delta: float) -> Any:
        """``solve``: ``Q (b, N) -> (G + delta I)^{-1}`` applied to each row, from one
        banded Cholesky factorisation (raises ``numpy.linalg.LinAlgError`` when
        ``G + delta I`` is not numerically positive definite)."""
        from scipy.linalg import cho_solve_banded, cholesky_banded

        ab = self.ab.copy()
        ab[0] += delta
        c = cholesky_banded(ab, lower=True, overwrite_ab=True, check_finite=False)
        return lambda Q: cho_solve_banded((c, True), np.asarray(Q).T,
                                          check_finite=False).T


def _axis_pairs(input_side: bool, t1: int, t2: int, D: int, n: int, stride: int,
                pad: int) -> tuple[np.ndarray, np.ndarray]:
    """On one axis, the coordinates ``(rows, cols)`` of the pixel pairs that the tap pair
    ``(t1, t2)`` couples (``rows - cols`` is constant).

    Input side: one output ``q`` reads input ``q t + t1 - pad`` with tap ``t1`` and
    ``q t + t2 - pad`` with tap ``t2``.  Output side: outputs ``q1`` and ``q2`` read the same
    input ``p`` with taps ``t1`` and ``t2`` (``q1 t + t1 = q2 t + t2 = p + pad``).
    """
    q = np.arange(n)
    if input_side:
        r, c = q * stride + t1 - pad, q * stride + t2 - pad
        ok = (r >= 0) & (r < D) & (c >= 0) & (c < D)
        return r[ok], c[ok]
    if (t2 - t1) % stride:
        return q[:0], q[:0]
    c = q + (t1 - t2) // stride
    p = q * stride + t1 - pad
    ok = (c >= 0) & (c < n) & (p >= 0) & (p < D)
    return q[ok], c[ok]


def _norm1(blocks: dict[int, np.ndarray], npix: int, C: int) -> float:
    """The largest absolute column sum of the symmetric matrix with these lower blocks."""
    s = np.zeros((npix, C))
    for off, B in blocks.items():
        A = np.abs(B)
        s += A.sum(axis=1)                 # lower part: column (pixel j, channel c2)
        if off > 0:                        # upper part: column (pixel j + off, channel c1)
            s[off:] += A.sum(axis=2)[: npix - off]
    return float(s.max()) if s.size else 0.0
