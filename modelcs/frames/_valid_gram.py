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
batched matrix product per frequency.  The blocks ``G(f)`` come from the products of all
filter-tap pairs, summed per tap offset (:func:`_gram_blocks`: 0.6 s at VGG size, against
4.5 s for the ``F`` products ``H H^*``); the transforms between the support and the half
spectrum are real matrix products over the support (:class:`_SupportDFT`), cheaper than
``rfftn`` with its padding, crop and transposes at these grid sizes.

The smallest eigenvalue of the Gram operator is found by LOBPCG (Knyazev 2001) with the
preconditioner ``P (G + s I)^{-1} P^T`` (``E^T (C^T C + s I)^{-1} E`` on the input side):
the inverse of the *circular* Gram operator, shifted by an estimate ``s`` of the wanted
eigenvalue, restricted to the support.  The circular operator agrees with the cropped one
away from the boundary, so it is a good preconditioner (at 32-64 channels on 15x15 it cut
the iterations 4x against plain Lanczos).

The product with ``G(f)`` reads ~0.5 GB at VGG size and dominates a step, so LOBPCG runs a
block of four vectors (the product costs about as much for four as for one) with the
blocks in complex64 (half the bytes) until the residual nears that precision's rounding
error, then two vectors in complex128 to the end (see :func:`lobpcg_smallest`): at VGG size
~65 ms a step in single and ~72 ms in double precision against ~90 ms for four vectors in
double precision, with about the same number of steps.

Stopping rule: with Ritz values ``theta_1 <= theta_2`` and residual norms ``rho_1,
rho_2`` of the block, ``theta_1 - lambda_1 <= rho_1^2 / (theta_2 - rho_2 -
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
#: the preconditioner's shift over the estimate of the smallest eigenvalue (an upper
#: estimate, ~2x the eigenvalue from 40 Lanczos steps): shifts of 4-16x the eigenvalue took
#: the fewest steps at 128 channels (548-564 against 635 at 2x), ~7 % fewer at 512
SHIFT_FACTOR = 2.0
#: block size of the double-precision phase of :func:`lobpcg_smallest` (the first runs
#: four vectors): a complex128 product costs 34 ms for two vectors, 40 ms for four at VGG
#: size; the two-vector finish took 617 steps against 678 and 52 s against 60 s there
DOUBLE_BLOCK = 2


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
        F = math.prod(_half_shape(self.Dp))
        self.w = w
        self.no_pad = all(p == (0, 0) for p in self.pads)
        self.G: np.ndarray | None = None
        self.H: np.ndarray | None = None
        self._dft: dict[Any, _SupportDFT] = {}
        self._single: tuple[Any, Any] | None = None
        if self.output_side and self.no_pad:
            check_elements(f"the {K}x{K} Gram blocks at {F} frequencies", F * K * K,
                           np.complex128, copies=2)
            self.G = _gram_blocks(w, self.Dp, output_side=True)
        else:
            check_elements(f"the {K}x{M} frequency responses of W at {F} frequencies",
                           F * K * M, np.complex128, copies=2)
            self.H = _responses(w, self.Dp)                       # (F, K, M)

    # ------------------------------------------------------------ grids and FFTs
    def _transform(self, inner: tuple[slice, ...], grid: tuple[int, ...]) -> _SupportDFT:
        key = (tuple((sl.start, sl.stop) for sl in inner), grid)
        if key not in self._dft:
            self._dft[key] = _SupportDFT(grid, inner)
        return self._dft[key]

    def _to_freq(self, U: np.ndarray, inner: tuple[slice, ...],
                 grid: tuple[int, ...] | None = None, dtype: Any = np.float64) -> np.ndarray:
        """(b, C, *sub) placed at ``inner`` of the Dp (or ``grid``) grid -> (F, C, b)."""
        return self._transform(inner, self.Dp if grid is None else grid).forward(U, dtype)

    def _from_freq(self, Yf: np.ndarray, inner: tuple[slice, ...],
                   grid: tuple[int, ...] | None = None) -> np.ndarray:
        """(F, C, b) spectrum -> (b, C, *sub) read at ``inner`` of the Dp (or ``grid``)."""
        return self._transform(inner, self.Dp if grid is None else grid).inverse(Yf)

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
        return self._apply(U, self.G, self.H, np.float64)

    def apply_single(self, U: np.ndarray) -> np.ndarray:
        """The Gram operator in single precision (complex64 blocks and products; float64
        in and out): ~2x faster, rounding errors ~1e-7 of ``||G||``."""
        return self._apply(U, *self._single_blocks(), np.float32)

    def _single_blocks(self) -> tuple[Any, Any]:
        if self._single is None:
            self._single = (None if self.G is None else self.G.astype(np.complex64),
                            None if self.H is None else self.H.astype(np.complex64))
        return self._single

    def _apply(self, U: np.ndarray, G: Any, H: Any, dt: Any) -> np.ndarray:
        side = self._side()
        Uf = self._to_freq(U, side, dtype=dt)
        if G is not None:
            return self._from_freq(G @ Uf, side)
        Hc = np.conj(H.transpose(0, 2, 1))
        if self.output_side:  # P C (E E^T) C^T P^T
            mid = self._from_freq(Hc @ Uf, self._in)
            return self._from_freq(H @ self._to_freq(mid, self._in, dtype=dt), side)
        mid = self._from_freq(H @ Uf, self._out)  # E^T C^T (P^T P) C E
        return self._from_freq(Hc @ self._to_freq(mid, self._out, dtype=dt), side)

    def preconditioner(self, shift: float, extend: int = 0) -> Any:
        """``B -> R (G_circ + shift I)^{-1} R^T B`` on batches: the inverse of the shifted
        Gram operator of the circular convolution on the torus ``Dp + extend`` (complex64),
        restricted to the support ``R`` of the vectors.  ``extend=2`` took ~15 % fewer
        LOBPCG steps at 32-512 channels on 15x15, but its larger torus made each step and
        the set-up dearer (72 s against 68 s at 512 channels, measured before the
        single-precision phase), so ``0`` is the default."""
        grid = tuple(D + extend for D in self.Dp)
        F = math.prod(_half_shape(grid))
        C = self.K if self.output_side else self.M
        check_elements(f"the {C}x{C} preconditioner blocks at {F} frequencies",
                       F * C * C, np.complex64, copies=3)
        if extend == 0 and self.G is not None:
            A = self._single_blocks()[0].copy()
        else:
            A = _gram_blocks(self.w, grid, self.output_side, np.complex64)
        idx = np.arange(C)
        A[:, idx, idx] += np.float32(shift)
        Ainv = _hermitian_inverse(A)
        del A
        side = self._side()

        def apply(U: np.ndarray) -> np.ndarray:
            return self._from_freq(Ainv @ self._to_freq(U, side, grid, np.float32), side,
                                   grid)

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


def _half_shape(grid: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the ``rfftn`` half spectrum of ``grid``."""
    return (*grid[:-1], grid[-1] // 2 + 1)


def _half_frequencies(grid: tuple[int, ...]) -> np.ndarray:
    """Integer frequency of every bin of the ``rfftn`` half spectrum of ``grid``, as
    ``(d, F)`` in C order."""
    return np.indices(_half_shape(grid)).reshape(len(grid), -1)


def _responses(w: np.ndarray, grid: tuple[int, ...], dtype: Any = np.complex128,
               ) -> np.ndarray:
    """``H(f)[k, m] = conj(w_hat[k, m, f]) = sum_j w[k, m, j] exp(+2 pi i f.j / grid)`` on
    the ``rfftn`` half-spectrum of ``grid``, as ``(F, K, M)``: the circular convolution
    ``h[k,i] = sum_{m,j} w[k,m,j] x[m, i + j]`` per frequency.  One ``(F, L) x (L, K M)``
    product over the ``L`` filter taps (an FFT per filter pair costs more at 3x3 taps)."""
    K, M = w.shape[:2]
    d = w.ndim - 2
    fr = _half_frequencies(grid)                              # (d, F)
    taps = np.indices(w.shape[2:]).reshape(d, -1)             # (d, L)
    phase = sum(np.outer(fr[a], taps[a]) / grid[a] for a in range(d))
    E = np.exp(2j * np.pi * phase).astype(dtype)              # (F, L)
    return (E @ w.reshape(K * M, -1).T.astype(dtype)).reshape(-1, K, M)


def _gram_blocks(w: np.ndarray, grid: tuple[int, ...], output_side: bool,
                 dtype: Any = np.complex128) -> np.ndarray:
    """The Gram blocks ``H(f) H(f)^*`` (``output_side``) or ``H(f)^* H(f)`` of the circular
    convolution on ``grid`` (:func:`_responses`), as ``(F, C, C)``, without forming ``H``.

    With ``W_j = w[:, :, j]`` the ``K x M`` matrix of tap ``j``,
    ``H H^* = sum_{j, j'} exp(2 pi i f.(j - j') / grid) W_j W_j'^T``: the products of all
    tap pairs come from one symmetric product of the stacked taps, are summed per tap
    offset ``delta = j - j'`` (``prod(2 l - 1)`` of them) and put in frequency by one
    ``(F, n_delta) x (n_delta, C^2)`` product -- at 512 channels and 3x3 taps ~10x less
    work than the ``F`` products ``H(f) H(f)^*``.  ``H^* H`` is the same with ``W_j^T W_j'``
    and the opposite sign of the phase.
    """
    K, M = w.shape[:2]
    d = w.ndim - 2
    taps = np.indices(w.shape[2:]).reshape(d, -1)                 # (d, L)
    L = taps.shape[1]
    C = K if output_side else M
    wt = np.moveaxis(w.reshape(K, M, L), 2, 0)                    # (L, K, M)
    S = (wt.reshape(L * K, M) if output_side
         else np.ascontiguousarray(wt.transpose(0, 2, 1)).reshape(L * M, K))
    Bp = (S @ S.T).reshape(L, C, L, C)                             # Bp[j, :, j', :]
    ext = np.array(w.shape[2:]) - 1
    offsets = np.indices(tuple(2 * ext + 1)).reshape(d, -1) - ext[:, None]  # (d, n_delta)
    strides = np.cumprod([1, *(2 * ext + 1)[::-1]])[:-1][::-1]
    R = np.zeros((offsets.shape[1], C * C))
    for j in range(L):
        for jp in range(L):
            delta = int(((taps[:, j] - taps[:, jp] + ext) * strides).sum())
            R[delta] += Bp[j, :, jp, :].reshape(-1)
    fr = _half_frequencies(grid)                                  # (d, F)
    sign = 1.0 if output_side else -1.0
    phase = sign * 2 * np.pi * sum(np.outer(fr[a], offsets[a]) / grid[a] for a in range(d))
    out = np.empty((fr.shape[1], C, C), dtype=dtype)
    flat = out.reshape(fr.shape[1], C * C)
    flat.real = np.cos(phase) @ R
    flat.imag = np.sin(phase) @ R
    return out


class _SupportDFT:
    """The real DFT between the vectors on a box ``inner`` of a grid (zero elsewhere) and
    the ``rfftn`` half spectrum of the grid, as real matrix products.

    At layer sizes (a 15x15 grid, hundreds of channels) this is cheaper than
    ``rfftn``/``irfftn`` with their zero padding, crops and transposes (forward, 2 and 4
    vectors of 512 channels on 15x15: 2.8 and 4.0 ms, 1.7 and 2.9 ms in float32, against
    3.8 and 9.2 ms): the sums run over the support only.  ``forward`` maps
    ``(b, C, *sub)`` to the ``(F, C, b)`` layout of the per-frequency products,
    ``inverse`` maps back (the real part of the Hermitian completion, as ``irfftn``).
    """

    def __init__(self, grid: tuple[int, ...], inner: tuple[slice, ...]) -> None:
        d = len(grid)
        fr = _half_frequencies(grid)                              # (d, F)
        sub = tuple(int(sl.stop - sl.start) for sl in inner)
        pos = np.indices(sub).reshape(d, -1) + np.array([sl.start for sl in inner])[:, None]
        phase = 2 * np.pi * sum(np.outer(pos[a], fr[a]) / grid[a] for a in range(d))
        F, S = fr.shape[1], pos.shape[1]
        self.F, self.sub = F, sub
        fwd = np.empty((S, F, 2))                                  # rfftn: exp(-i phase)
        fwd[..., 0], fwd[..., 1] = np.cos(phase), -np.sin(phase)
        last = fr[-1]
        c = np.where((last == 0) | (2 * last == grid[-1]), 1.0, 2.0) / math.prod(grid)
        inv = np.empty((F, 2, S))                                  # Re(c Y exp(+i phase))
        inv[:, 0], inv[:, 1] = (c * np.cos(phase)).T, -(c * np.sin(phase)).T
        self.fwd: dict[Any, np.ndarray] = {np.dtype(np.float64): fwd.reshape(S, 2 * F)}
        self.fwd[np.dtype(np.float32)] = self.fwd[np.dtype(np.float64)].astype(np.float32)
        self.inv: dict[Any, np.ndarray] = {np.dtype(np.float64): inv.reshape(2 * F, S)}
        self.inv[np.dtype(np.float32)] = self.inv[np.dtype(np.float64)].astype(np.float32)

    def forward(self, U: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """``(b, C, *sub)`` real -> ``(F, C, b)`` complex (complex64 for ``float32``)."""
        b, C = U.shape[:2]
        R = U.reshape(b * C, -1).astype(dtype, copy=False) @ self.fwd[np.dtype(dtype)]
        Z = R.view(np.complex128 if R.dtype == np.float64 else np.complex64)
        return np.ascontiguousarray(Z.reshape(b, C, self.F).transpose(2, 1, 0))

    def inverse(self, Yf: np.ndarray) -> np.ndarray:
        """``(F, C, b)`` complex -> ``(b, C, *sub)`` real float64."""
        F, C, b = Yf.shape
        Yt = np.ascontiguousarray(Yf.transpose(2, 1, 0)).view(Yf.real.dtype)
        out = Yt.reshape(b * C, 2 * F) @ self.inv[np.dtype(Yt.dtype)]
        return out.astype(np.float64, copy=False).reshape(b, C, *self.sub)


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


def _orth_coeffs(V: np.ndarray) -> np.ndarray:
    """The map ``C`` whose ``Q = C^T V`` has orthonormal rows spanning those of ``V``
    ``(q, N)``; directions below ``1e-10`` relative are dropped."""
    ev, U = np.linalg.eigh(V @ V.T)
    keep = ev > 1e-10 * max(float(ev.max()), 1e-300)
    return U[:, keep] / np.sqrt(ev[keep])  # type: ignore[no-any-return]


def _orth(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis (rows) of the rows of ``V`` (q, N) and the map ``C`` with
    ``Q = C^T V`` (:func:`_orth_coeffs`)."""
    Cm = _orth_coeffs(V)
    return Cm.T @ V, Cm


def lobpcg_smallest(
    gram: Any, shape: tuple[int, ...], make_precond: Any, shift: float, *, tol: float,
    max_iter: int,
    rng: np.random.Generator, progress: bool | None, block: int = 4, floor: float = 0.0,
    gram_single: Any = None,
) -> tuple[float, float, int]:
    """Smallest eigenvalue of the Gram operator by preconditioned LOBPCG.

    ``shift`` is an estimate of the smallest eigenvalue; ``make_precond(s)`` builds the
    preconditioner for the shift ``s = SHIFT_FACTOR * shift``.  It is rebuilt (at most
    four times) from the current Ritz value when that falls below ``shift / 8``, i.e.
    when the first estimate was poor.

    ``gram_single``, if given, is a cheaper single-precision Gram operator used while the
    residual of the smallest Ritz pair is above 30 times its rounding error ``eta``
    (measured on the start block against ``gram``), and while the iteration behaves as
    in exact arithmetic (the smallest Ritz value does not rise by more than ``30 eta``):
    about the first two thirds of the steps, at VGG size ~1.35x cheaper each.  Then the
    block's products are recomputed with ``gram`` and the run goes on in double
    precision, so the stopping bound below refers to ``gram``.

    Returns ``(theta_1, error_bound, n_iter)``: the Ritz value and the Kato-Temple /
    residual bound on ``theta_1 - lambda_1`` when the run stopped (module docstring).
    The run also stops when the bound is below ``floor`` (the rounding level of the Gram
    operator, for a singular one).
    """
    N = math.prod(shape)
    b = max(1, min(block, N // 4))
    if N <= DENSE_MAX:  # small: the Gram matrix itself, exactly
        Gm = gram(np.eye(N).reshape(N, *shape)).reshape(N, N)
        return float(np.linalg.eigvalsh((Gm + Gm.T) / 2)[0]), 0.0, 0

    op = gram if gram_single is None else gram_single

    # blocks of vectors are rows: (p, N), the batch layout of the Gram operator
    def A(X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(op(X.reshape(len(X), *shape))).reshape(len(X), N)

    def A_exact(X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(gram(X.reshape(len(X), *shape))).reshape(len(X), N)

    precond = make_precond(SHIFT_FACTOR * shift)
    refreshes = 0
    stalled = 0

    def Mv(X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(precond(X.reshape(len(X), *shape))).reshape(len(X), N)

    X, _ = _orth(rng.standard_normal((b, N)))
    AX = A(X)
    eta = 0.0
    if op is not gram:  # rounding error of the single-precision operator
        eta = float(np.sqrt(np.einsum("ij,ij->i", AX - (AXd := A_exact(X)),
                                      AX - AXd)).max())
        if eta == 0:  # as exact as the operator itself: nothing to switch from
            op, AX = gram, AXd
    th, Y = np.linalg.eigh(X @ AX.T)
    X, AX = Y.T @ X, Y.T @ AX
    P = AP = None
    bound = best = low = math.inf
    it = 0
    with progress_bar(max_iter, desc="LOBPCG", unit="step", progress=progress) as bar:
        for it in range(1, max_iter + 1):
            R = AX - th[:, None] * X
            rho = np.sqrt(np.einsum("ij,ij->i", R, R))
            if op is not gram:  # single precision: go on in double once near its rounding
                if rho[0] < 0.5 * best:  # progress: the residual halved
                    best, stalled = float(rho[0]), 0
                stalled += 1
                low = min(low, float(th[0]))
                if rho[0] <= 30 * eta or stalled >= 100 or th[0] > low + 30 * eta:
                    op = gram
                    b = min(b, DOUBLE_BLOCK)
                    X, th = X[:b], th[:b]
                    AX = A(X)
                    if P is not None:
                        P = P[:b]
                        AP = A(P)
                    R = AX - th[:, None] * X
                    rho = np.sqrt(np.einsum("ij,ij->i", R, R))
            gap = th[1] - rho[1] - th[0] if b > 1 else 0.0
            bound = float(min(rho[0], rho[0] ** 2 / gap)) if gap > 0 else float(rho[0])
            bar.update(label=f"lambda_min~{th[0]:.8g}, bound {bound / th[0]:.1e}")
            if op is gram and bound <= max(tol * th[0], floor):
                break
            if it % 25 == 0:  # refresh A X against drift of the recurrences
                AX = A(X)
                if th[0] < shift / 8 and refreshes < 4:
                    shift, refreshes = float(max(th[0], floor)), refreshes + 1
                    precond = make_precond(SHIFT_FACTOR * shift)
            Wd = Mv(R)
            Wd -= (Wd @ X.T) @ X
            if P is None or AP is None:
                V, AV = Wd, A(Wd)
            else:  # A (P - c X) = A P - c A X
                c = P @ X.T
                V = np.concatenate([Wd, P - c @ X])
                AV = np.concatenate([A(Wd), AP - c @ AX])
            # Rayleigh-Ritz on span[X, Z], Z = Cz^T V orthonormal, in coefficients: the
            # blocks of [X; Z] A [X; Z]^T from products of X, V and their images, so that
            # Z, A Z and the stacked bases are never formed (~4 ms a step at VGG size)
            Cz = _orth_coeffs(V)
            h12 = (X @ AV.T) @ Cz
            h22 = Cz.T @ (V @ AV.T) @ Cz
            Hm = np.block([[X @ AX.T, h12], [h12.T, h22]])
            th_all, Yall = np.linalg.eigh((Hm + Hm.T) / 2)
            Yb = Yall[:, :b]
            th = th_all[:b]
            Cp = Cz @ Yb[b:]
            P = Cp.T @ V
            AP = Cp.T @ AV
            X = Yb[:b].T @ X + P
            AX = Yb[:b].T @ AX + AP
    return float(th[0]), bound, it
