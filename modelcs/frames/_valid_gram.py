"""Smallest singular values of zero-padded stride-1 convolutions at real layer sizes.

Private helper of :mod:`modelcs.frames.spectrum` (``method="lobpcg"``).

A stride-1 convolution with zero padding is a *crop of a circular one*: with ``Dp`` the
padded input size, ``E`` the embedding of the input into the ``Dp`` grid (zeros around) and
``P`` the restriction of the circular output to the ``n = Dp - l + 1`` positions that do
not wrap, ``W = P C E`` where ``C`` is the circular convolution on the ``Dp`` torus.  The
DFT block-diagonalises ``C`` (one ``K x M`` matrix ``H(f)`` per frequency; Sedghi, Gupta &
Long 2018), so the Gram operator of the smaller side is applied in the frequency domain:

* output side, no padding (``'valid'``): ``W W^T = P G P^T`` with ``G = C C^T`` block
  circular, ``G(f) = H(f) H(f)^*`` precomputed; one ``K x K`` product per frequency;
* otherwise ``W W^T = P C (E E^T) C^T P^T`` or ``W^T W = E^T C^T (P^T P) C E``: two
  products with ``H(f)`` and a mask in between.

Per vector this costs ``F K^2`` (or ``2 F K M``) complex multiply-adds with ``F`` the number
of half-spectrum frequencies, against ``2 K M prod(l) prod(n)`` real ones for the two
convolutions: at VGG16 conv5_2 size (512 channels, 3x3, 15x15) about 7x fewer, and as one
batched matrix product per frequency.

The smallest eigenvalue of the Gram operator is found by LOBPCG (Knyazev 2001) with the
preconditioner ``P (G + s I)^{-1} P^T`` (``E^T (C^T C + s I)^{-1} E`` on the input side):
the inverse of the *circular* Gram operator, shifted by an estimate ``s`` of the wanted
eigenvalue, restricted to the support.  The circular operator agrees with the cropped one
away from the boundary, so it is a good preconditioner (at 32-64 channels on 15x15 it cut
the iterations 4x against plain Lanczos).

Stopping rule: with Ritz values ``theta_1 <= theta_2`` and residual norms ``rho_1,
rho_2`` of the two-vector block, ``theta_1 - lambda_1 <= rho_1^2 / (theta_2 - rho_2 -
theta_1)`` (Kato-Temple, with ``theta_2 - rho_2`` standing for the lower end of the rest of
the spectrum) and also ``<= rho_1``; the run stops when the smaller bound is at most
``tol * theta_1``, or at most ``1e-13 * lambda_max`` (the rounding level of the Gram
operator: the smallest eigenvalue of a singular one is zero to that level).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import to_numpy
from .._memory import check_elements
from .._progress import progress_bar
from ..operators import ConvOperator

__all__ = ["lobpcg_ok", "ValidGram", "lobpcg_smallest", "shift_estimate"]


#: Gram operators of at most this size are formed (``N`` applications in one batch) and
#: handed to ``eigvalsh``
DENSE_MAX = 1500


def lobpcg_ok(W: Any) -> bool:
    """Whether :class:`ValidGram` covers ``W``: a zero-padded stride-1 ungrouped
    ConvOperator on the host."""
    return (isinstance(W, ConvOperator) and W.padding_mode == "zeros"
            and all(t == 1 for t in W.stride) and W.groups == 1
            and isinstance(W.filters, np.ndarray))


class ValidGram:
    """The smaller Gram operator of a zero-padded stride-1 ``ConvOperator``, in frequency.

    Parameters
    ----------
    W : ConvOperator
        Zero padding (``'valid'``, ``'same'`` or integer widths), stride 1, one group.

    Attributes
    ----------
    shape : tuple of int
        Shape of one vector the Gram operator acts on: ``W.out_shape`` (output side) or
        ``W.in_shape``.
    """

    def __init__(self, W: ConvOperator) -> None:
        w = to_numpy(W.filters).astype(np.float64)
        K, M = w.shape[:2]
        self.d = w.ndim - 2
        self.Dp = tuple(W.padded_shape)
        self.n = tuple(W.out_shape[1:])
        self.D = tuple(W.input_spatial)
        self.pads = tuple(W.padding_widths)
        self.K, self.M = K, M
        self.output_side = math.prod(W.out_shape) <= math.prod(W.in_shape)
        self.shape = tuple(W.out_shape) if self.output_side else tuple(W.in_shape)
        self.axes = tuple(range(2, 2 + self.d))
        F = math.prod(self.Dp[:-1]) * (self.Dp[-1] // 2 + 1)
        check_elements(f"the {K}x{M} frequency responses of W at {F} frequencies",
                       F * K * M, np.complex128, copies=2)
        self.w = w
        self.H = _responses(w, self.Dp)                           # (F, K, M)
        self.F = F
        self.no_pad = all(p == (0, 0) for p in self.pads)
        self.G: np.ndarray | None = None
        if self.output_side and self.no_pad:
            check_elements(f"the {K}x{K} Gram blocks at {F} frequencies", F * K * K,
                           np.complex128)
            self.G = self.H @ np.conj(self.H.transpose(0, 2, 1))
            self.H = None  # type: ignore[assignment]

    # ------------------------------------------------------------ grids and FFTs
    def _to_freq(self, U: np.ndarray, inner: tuple[slice, ...],
                 grid: tuple[int, ...] | None = None) -> np.ndarray:
        """(b, C, *sub) placed at ``inner`` of the Dp (or ``grid``) grid -> (F, C, b)."""
        grid = self.Dp if grid is None else grid
        b, C = U.shape[:2]
        Z = np.zeros((b, C, *grid))
        Z[(slice(None), slice(None), *inner)] = U
        Zf = np.fft.rfftn(Z, axes=self.axes).reshape(b, C, -1)
        return np.ascontiguousarray(Zf.transpose(2, 1, 0))

    def _from_freq(self, Yf: np.ndarray, inner: tuple[slice, ...],
                   grid: tuple[int, ...] | None = None) -> np.ndarray:
        """(F, C, b) spectrum -> (b, C, *sub) read at ``inner`` of the Dp (or ``grid``)."""
        grid = self.Dp if grid is None else grid
        F, C, b = Yf.shape
        half = (*grid[:-1], grid[-1] // 2 + 1)
        Y = np.fft.irfftn(Yf.transpose(2, 1, 0).reshape(b, C, *half), s=grid,
                          axes=self.axes)
        return Y[(slice(None), slice(None), *inner)]

    @property
    def _out(self) -> tuple[slice, ...]:
        return tuple(slice(0, na) for na in self.n)

    @property
    def _in(self) -> tuple[slice, ...]:
        return tuple(slice(p[0], p[0] + Da) for p, Da in zip(self.pads, self.D, strict=True))

    def _side(self) -> tuple[slice, ...]:
        return self._out if self.output_side else self._in

    def apply(self, U: np.ndarray) -> np.ndarray:
        """The Gram operator on a batch ``(b, *shape)``."""
        side = self._side()
        Uf = self._to_freq(U, side)
        if self.G is not None:
            return self._from_freq(self.G @ Uf, side)
        Hc = np.conj(self.H.transpose(0, 2, 1))
        if self.output_side:  # P C (E E^T) C^T P^T
            mid = self._from_freq(Hc @ Uf, self._in)
            return self._from_freq(self.H @ self._to_freq(mid, self._in), side)
        mid = self._from_freq(self.H @ Uf, self._out)  # E^T C^T (P^T P) C E
        return self._from_freq(Hc @ self._to_freq(mid, self._out), side)

    def preconditioner(self, shift: float, extend: int = 0) -> Any:
        """``B -> R (G_circ + shift I)^{-1} R^T B`` on batches: the inverse of the shifted
        Gram operator of the circular convolution on the torus ``Dp + extend`` (complex64),
        restricted to the support ``R`` of the vectors.  ``extend=2`` took ~15 % fewer
        LOBPCG steps at 32-512 channels on 15x15, but its larger torus made each step and
        the set-up dearer: 72 s against 68 s at 512 channels, so ``0`` is the default."""
        grid = tuple(D + extend for D in self.Dp)
        F = math.prod(grid[:-1]) * (grid[-1] // 2 + 1)
        C = self.K if self.output_side else self.M
        check_elements(f"the {C}x{C} preconditioner blocks at {F} frequencies",
                       F * (C * C + self.K * self.M), np.complex64, copies=2)
        if extend == 0 and self.G is not None:
            A = self.G.astype(np.complex64)
        else:
            H = _responses(self.w, grid, np.complex64)
            Hc = np.conj(H.transpose(0, 2, 1))
            A = H @ Hc if self.output_side else Hc @ H
            del H, Hc
        idx = np.arange(C)
        A[:, idx, idx] += np.float32(shift)
        Ainv = _hermitian_inverse(A)
        del A
        side = self._side()

        def apply(U: np.ndarray) -> np.ndarray:
            Uf = self._to_freq(U, side, grid).astype(np.complex64)
            return self._from_freq((Ainv @ Uf).astype(np.complex128), side, grid)

        return apply


def shift_estimate(gram: Any, shape: tuple[int, ...], rng: np.random.Generator,
                   steps: int = 40) -> tuple[float, float]:
    """The smallest and the largest Ritz value of ``steps`` plain Lanczos steps: an upper
    estimate of the smallest eigenvalue (the preconditioner's shift; its quality is not
    critical) and a lower estimate of the largest (the scale of rounding errors)."""
    from scipy.linalg import eigh_tridiagonal

    q = rng.standard_normal((1, *shape))
    q /= np.linalg.norm(q)
    q_prev = np.zeros_like(q)
    beta_prev = 0.0
    al, be = [], []
    for _ in range(steps):
        v = gram(q) - beta_prev * q_prev
        a = float((v * q).sum())
        v -= a * q
        bnorm = float(np.linalg.norm(v))
        al.append(a)
        be.append(bnorm)
        if bnorm == 0:
            break
        q_prev, q, beta_prev = q, v / bnorm, bnorm
    th = eigh_tridiagonal(np.array(al), np.array(be[:-1]), eigvals_only=True)
    return float(max(th[0], 1e-12 * th[-1])), float(th[-1])


def _responses(w: np.ndarray, grid: tuple[int, ...], dtype: Any = np.complex128,
               ) -> np.ndarray:
    """``H(f)[k, m] = conj(w_hat[k, m, f]) = sum_j w[k, m, j] exp(+2 pi i f.j / grid)`` on
    the ``rfftn`` half-spectrum of ``grid``, as ``(F, K, M)``: the circular convolution
    ``h[k,i] = sum_{m,j} w[k,m,j] x[m, i + j]`` per frequency.  One ``(F, L) x (L, K M)``
    product over the ``L`` filter taps (an FFT per filter pair costs more at 3x3 taps)."""
    K, M = w.shape[:2]
    d = w.ndim - 2
    half = (*grid[:-1], grid[-1] // 2 + 1)
    fr = np.indices(half).reshape(d, -1)                      # (d, F)
    taps = np.indices(w.shape[2:]).reshape(d, -1)             # (d, L)
    phase = sum(np.outer(fr[a], taps[a]) / grid[a] for a in range(d))
    E = np.exp(2j * np.pi * phase).astype(dtype)              # (F, L)
    return (E @ w.reshape(K * M, -1).T.astype(dtype)).reshape(-1, K, M)


def _hermitian_inverse(A: np.ndarray) -> np.ndarray:
    """Inverses of the Hermitian positive definite blocks ``A[f]`` (Cholesky: ``potrf`` +
    ``potri``, 3x faster than ``np.linalg.inv``); LU where a block is not positive
    definite in its precision."""
    from scipy.linalg import lapack

    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (A,))
    out = np.empty_like(A)
    for f in range(A.shape[0]):
        c, info = potrf(A[f], lower=1)
        if info == 0:
            c, info = potri(c, lower=1)
        if info != 0:
            out[f] = np.linalg.inv(A[f])
            continue
        low = np.tril(c)
        out[f] = low + np.conj(np.tril(c, -1)).T
    return out


def _orth(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis (rows) of the rows of ``V`` (q, N) and the map ``C`` with
    ``Q = C^T V``; directions below ``1e-10`` relative are dropped."""
    Gm = V @ V.T
    ev, U = np.linalg.eigh(Gm)
    keep = ev > 1e-10 * max(float(ev.max()), 1e-300)
    Cm = U[:, keep] / np.sqrt(ev[keep])
    return Cm.T @ V, Cm


def lobpcg_smallest(
    gram: Any, shape: tuple[int, ...], make_precond: Any, shift: float, *, tol: float,
    max_iter: int,
    rng: np.random.Generator, progress: bool | None, block: int = 2, floor: float = 0.0,
) -> tuple[float, float, int]:
    """Smallest eigenvalue of the Gram operator by preconditioned LOBPCG.

    ``make_precond(shift)`` builds the preconditioner for a shift; it is rebuilt (at most
    four times) with the current Ritz value when that falls below ``shift / 8``, i.e.
    when the first estimate was poor.

    Returns ``(theta_1, error_bound, n_iter)``: the Ritz value and the Kato-Temple /
    residual bound on ``theta_1 - lambda_1`` when the run stopped (module docstring).
    The run also stops when the bound is below ``floor`` (the rounding level of the Gram
    operator, for a singular one).
    """
    N = math.prod(shape)
    b = block
    if N <= DENSE_MAX:  # small: the Gram matrix itself, exactly
        Gm = gram(np.eye(N).reshape(N, *shape)).reshape(N, N)
        return float(np.linalg.eigvalsh((Gm + Gm.T) / 2)[0]), 0.0, 0

    # blocks of vectors are rows: (p, N), the batch layout of the Gram operator
    def A(X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(gram(X.reshape(len(X), *shape))).reshape(len(X), N)

    precond = make_precond(shift)
    refreshes = 0

    def Mv(X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(precond(X.reshape(len(X), *shape))).reshape(len(X), N)

    X, _ = _orth(rng.standard_normal((b, N)))
    AX = A(X)
    th, Y = np.linalg.eigh(X @ AX.T)
    X, AX = Y.T @ X, Y.T @ AX
    P = AP = None
    bound = math.inf
    it = 0
    with progress_bar(max_iter, desc="LOBPCG", unit="step", progress=progress) as bar:
        for it in range(1, max_iter + 1):
            R = AX - th[:, None] * X
            rho = np.sqrt(np.einsum("ij,ij->i", R, R))
            gap = th[1] - rho[1] - th[0] if b > 1 else 0.0
            bound = float(min(rho[0], rho[0] ** 2 / gap)) if gap > 0 else float(rho[0])
            bar.update(label=f"lambda_min~{th[0]:.8g}, bound {bound / th[0]:.1e}")
            if bound <= max(tol * th[0], floor):
                break
            if it % 25 == 0:  # refresh A X against drift of the recurrences
                AX = A(X)
                if th[0] < shift / 8 and refreshes < 4:
                    shift, refreshes = float(max(th[0], floor)), refreshes + 1
                    precond = make_precond(shift)
            Wd = Mv(R)
            Wd -= (Wd @ X.T) @ X
            if P is None or AP is None:
                V, AV = Wd, A(Wd)
            else:  # A (P - c X) = A P - c A X
                c = P @ X.T
                V = np.concatenate([Wd, P - c @ X])
                AV = np.concatenate([A(Wd), AP - c @ AX])
            Cz: np.ndarray
            Z, Cz = _orth(V)
            AZ = Cz.T @ AV
            S = np.concatenate([X, Z])
            AS = np.concatenate([AX, AZ])
            Hm = S @ AS.T
            th_all, Yall = np.linalg.eigh((Hm + Hm.T) / 2)
            Yb = Yall[:, :b]
            th = th_all[:b]
            P = Yb[b:].T @ Z
            AP = Yb[b:].T @ AZ
            X = Yb[:b].T @ X + P
            AX = Yb[:b].T @ AX + AP
    return float(th[0]), bound, it
