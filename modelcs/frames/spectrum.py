"""Singular values and frame bounds of convolution operators (CReLU supplement A.2).

The shifted filters are the rows of ``W`` (the analysis operator); their frame operator on
their span is ``S = W^T W`` and the optimal frame bounds are its smallest nonzero and its
largest eigenvalue (supplement Theorem A.3), i.e. the squared extreme nonzero singular
values of ``W``.

Methods
-------
``"fft"``  exact, all singular values of a *circular* convolution.  With
    ``h[k, i] = sum_{m, j} w[k, m, j] x[m, (i + j) mod D]`` the unitary DFT turns ``W`` into
    a block-diagonal matrix with one ``K x M`` block ``conj(w_hat[:, :, f])`` per frequency
    ``f`` (Sedghi, Gupta & Long 2018).  Real filters give ``w_hat[-f] = conj(w_hat[f])``
    (same singular values), so only one frequency of each conjugate pair is decomposed
    (batched SVD over the ``rfftn`` half-spectrum, minus the duplicate pairs inside its DC
    and, for even sizes, Nyquist planes) and counted twice; self-conjugate frequencies
    once.  Strided circular operators whose
    stride divides ``D`` are first rewritten exactly as stride-1 operators on the polyphase
    components of ``x`` (``M * t`` channels, ``ceil(l / t)`` taps).  Groups give
    block-diagonal per-frequency matrices, decomposed group by group.
``"fft-gram"`` as ``"fft"`` but through ``eigvalsh`` of the per-frequency Gram matrices
    (about twice as fast; absolute accuracy ``~eps * sigma_max**2 / sigma`` instead of
    ``~eps * sigma_max``).
``"iterative"`` the ``k`` extreme values by Lanczos (``scipy.sparse.linalg.eigsh``) on the
    smaller Gram operator ``W W^T`` or ``W^T W``, applied through the operator (never dense).
``"lanczos"`` the smallest (nonzero) and the largest singular value of any operator, by
    plain Lanczos (no reorthogonalisation, O(1) vectors of memory) on the smaller Gram
    operator, run from two random starts at once (one batched operator call per step).
    The extreme Ritz values of the tridiagonal matrix converge first; a Ritz value
    ``theta`` with residual ``rho = |beta_m s_m|`` (Paige 1980: this estimate is reliable
    for converged Ritz pairs in finite precision) lies within ``rho`` of an eigenvalue of
    the Gram operator, and the run stops when ``rho <= tol * theta`` for both extremes and
    both starts agree to ``tol``.  So the squared singular values returned are exact to
    ``tol`` relative (default ``1e-10``; checked against dense eigenvalues in the tests).
    Plain Lanczos is the optimal Krylov method for one extreme eigenvalue, without
    ARPACK's restarts: on a 24-channel 3x3 ``'valid'`` operator on 15x15 (4,056 x 5,400)
    it reached 1e-11 relative in about 900 steps; timings at VGG16 conv5_2 size are in
    ``benchmarks/bench_frames.py --valid-smallest``.
``"sparse"`` the smallest (nonzero) and the largest singular value of a
    :class:`ConvOperator` through its sparse matrix (:meth:`ConvOperator.to_sparse`):
    the smaller Gram matrix ``G`` is formed as a sparse matrix (a layer with few channels
    has ``(M / groups) * prod(l)`` nonzeros per row of ``W``), the largest eigenvalue comes
    from plain Lanczos on ``G`` and the smallest nonzero one from plain Lanczos on the
    shift-inverted ``(G + delta I)^{-1}`` (one sparse LU, ``delta = 1e-12 ||G||_1``).  When
    that smallest eigenvalue is zero (``G`` singular: a ``'valid'`` layer with uncovered
    samples, more filters than taps at a stride...) the smallest *nonzero* one is the
    smallest above the rank threshold among the 12 smallest, computed by ARPACK on the
    same inverse (full reorthogonalisation), and is left to ``"lanczos"`` only when it is
    not among them or not resolved to ``tol`` (a null space swamps the plain
    shift-inverted recurrence in rounding).
    Same stopping rule and tolerance as ``"lanczos"`` (``tol`` relative, up to a factor
    ``1 + delta / lambda``), checked against dense eigenvalues in the tests; the shift-
    inverted run converges in tens of steps where plain Lanczos needs thousands.
    MobileNetV2's first layer (3 -> 32 channels, stride 2) on 3x64x64: about 1 s.
``"lobpcg"`` the smallest and the largest singular value of a zero-padded (``'valid'``,
    ``'same'``, integer widths) stride-1 ``ConvOperator``: its smaller Gram operator is
    applied in the frequency domain (a crop of a circular convolution: one ``K x K`` or two
    ``K x M`` products per frequency instead of two spatial convolutions), the smallest
    eigenvalue by LOBPCG preconditioned with the inverse of the shifted *circular* Gram
    operator, the largest by Lanczos.  Same tolerance ``tol`` as ``"lanczos"`` (Kato-Temple
    bound on the Ritz value; module :mod:`modelcs.frames._valid_gram`); on a VGG16 conv5_2
    sized ``'valid'`` operator it needs 500-700 steps (40-55 s) where plain Lanczos needs
    2,100 (150 s).
    Many-channel layers: with few channels the sparse route is faster.
``"banded"`` the smallest (nonzero) and the largest singular value of a zero-padded
    :class:`ConvOperator` (any stride and groups) through the banded Cholesky factor of its
    smaller Gram matrix: with the unknowns ordered pixel by pixel the Gram matrix is a
    band matrix (half-bandwidth ``kd ~ C (l - 1) D`` in 2-D), assembled from filter-tap
    pairs and factored by LAPACK (``N kd^2`` flops); then shift-invert Lanczos as in
    ``"sparse"`` (same tolerance and null-space rule; module
    :mod:`modelcs.frames._banded`).  Its iterations do not depend on the conditioning:
    a 64-channel 3x3 ``'same'`` layer on 24x24 (``N = 36,864``, smallest eigenvalue
    ~1e-12 of the largest, out of reach of preconditioned LOBPCG) takes about 22 s.
    Accuracy: ``tol`` relative, down to the rounding level of the Gram matrix (measured
    1e-17 ``lambda_max`` absolute on ``'same'`` layers whose smallest eigenvalue is
    1e-8 of the largest).  On well-conditioned layers LOBPCG is faster (2.5x on a
    64 -> 96 channel ``'same'`` layer on 24x24); ``'auto'`` prefers the route that
    always converges.
``"dense"`` SVD of ``W.to_dense()`` (the ``'auto'`` choice when the smaller side of ``W``
    is at most ``DENSE_MAX`` and the matrix fits in ``DENSE_MAX_ENTRIES`` entries).

``'auto'`` picks ``"fft"`` for circular convolutions, ``"dense"`` for small operators,
then for the extremes (``k=1`` and :func:`frame_bounds`) ``"sparse"`` for a
:class:`ConvOperator` (NumPy filters) whose channels per group on the smaller Gram side
times that side's dimension is at most ``SPARSE_MAX_WORK`` (few channels: the sparse LU
stays small), ``"banded"`` for zero-padded ones whose banded Cholesky costs at most
``BANDED_MAX_FLOPS`` and fits in memory, ``"lobpcg"`` for larger zero-padded stride-1 ones
with at least ``LOBPCG_MIN_CHANNELS`` input and output channels, ``"lanczos"`` for the
other large ones,
and ``"iterative"`` for the ``k > 1`` extremes of large ones.

Scale: filters (or matrices) are divided by their largest absolute entry before any
arithmetic and the singular values multiplied back, so banks scaled by ``1e-200`` or
``1e160`` neither underflow nor overflow in the Gram operator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import is_cupy_array, to_numpy
from .._krylov import lanczos_extremes
from .._memory import check_elements
from .._validation import check_choice, check_finite, check_positive_int, check_rng
from ..operators import ConvOperator, LinearOperator
from ..operators.matrix import as_operator
from ._banded import band_fits, band_ok, banded_frame_bounds
from ._sparse import sparse_frame_bounds, sparse_friendly
from ._valid_gram import ValidGram, lobpcg_ok, lobpcg_smallest, shift_estimate

__all__ = ["singular_values", "frame_bounds"]

_METHODS = ("auto", "fft", "fft-gram", "iterative", "lanczos", "sparse", "banded", "lobpcg",
            "dense")
#: ``'auto'`` uses a dense SVD when the smaller side of ``W`` is at most this ...
DENSE_MAX = 1500
#: ... and ``W`` has at most this many entries
DENSE_MAX_ENTRIES = 12_000_000
#: ``'auto'`` uses ``'sparse'`` for a ConvOperator when (channels per group on the
#: smaller Gram side) x (that side's dimension) is at most this: 451,584 for MobileNetV2's
#: first layer on 3x224x224 (3 x 150,528); VGG's 512-channel layers are far above it
SPARSE_MAX_WORK = 600_000
#: ``'auto'`` uses ``'banded'`` for a zero-padded ConvOperator when the Cholesky factor of
#: its band Gram matrix costs at most this many multiply-adds (``N kd^2``; LAPACK's
#: ``pbtrf`` ran 25-35 GFLOP/s here: 1e12 is about 30-40 s).  VGG16 conv5_2 ``'valid'``
#: (3.1e13) is far above it and goes to ``'lobpcg'``.
BANDED_MAX_FLOPS = 1e12
_WHICH = ("largest", "smallest", "both")
_ZERO_MSG = ("the operator is identically zero (all filters are 0): its rows span {0}, so it "
             "has no frame bounds; every singular value is 0")


# ------------------------------------------------------------------------ FFT (exact)
def _fft_ok(W: Any) -> bool:
    if not isinstance(W, ConvOperator) or W.padding_mode != "circular":
        return False
    return all(D % t == 0 for D, t in zip(W.input_spatial, W.stride, strict=True))


def _polyphase_filters(W: ConvOperator) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Stride-1 circular equivalent: filters ``(K, Mg*T, *l')``, grid ``D/t`` (t | D).

    ``h[k,i] = sum_{m,j} w[k,m,j] x[m,(i t + j) mod D]``; with ``j = q t + r`` this is
    ``sum_{(m,r),q} w'[k,(m,r),q] x_r[m,(i + q) mod D/t]`` where ``x_r[m, i'] = x[m, i' t + r]``
    and ``w'[k,(m,r),q] = w[k,m,q t + r]`` (zero past the filter).
    """
    w = to_numpy(W.filters).astype(np.float64)
    t, l, D = W.stride, W.kernel_size, W.input_spatial
    if all(ta == 1 for ta in t):
        return w, D, W.groups
    d = len(t)
    lq = tuple(-(-la // ta) for la, ta in zip(l, t, strict=True))
    pad = [(0, 0), (0, 0)] + [(0, lq[a] * t[a] - l[a]) for a in range(d)]
    wp = np.pad(w, pad)  # (K, Mg, lq0*t0, ...)
    K, Mg = w.shape[:2]
    shp = [K, Mg]
    for a in range(d):
        shp += [lq[a], t[a]]
    wp = wp.reshape(shp)  # (K, Mg, q0, r0, q1, r1)
    # -> (K, Mg, r0, r1, q0, q1)
    perm = [0, 1] + [3 + 2 * a for a in range(d)] + [2 + 2 * a for a in range(d)]
    wp = wp.transpose(perm).reshape(K, Mg * math.prod(t), *lq)
    return wp, tuple(Da // ta for Da, ta in zip(D, t, strict=True)), W.groups


def _unique_frequencies(
    wf: np.ndarray, D: tuple[int, ...], g: int, Kg: int, Mg: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frequency blocks ``(g * nU, Kg, Mg)`` for one frequency of each conjugate pair.

    In the ``rfftn`` half-spectrum a frequency whose last index is neither 0 nor ``D/2``
    has its conjugate outside the half (multiplicity 2).  On the last-axis planes 0 and
    ``D/2`` both members of a conjugate pair are present: keep one (multiplicity 2), or the
    frequency itself when it is self-conjugate (multiplicity 1).
    """
    F = wf.shape[2:]
    idx = np.indices(F).reshape(len(F), -1)
    conj = np.stack([(-idx[a]) % D[a] for a in range(len(F))])
    in_half = conj[-1] < F[-1]
    flat = np.ravel_multi_index(tuple(idx), F)
    conj_flat = np.where(in_half, np.ravel_multi_index(
        tuple(np.where(in_half, conj, 0)), F), -1)
    keep = ~in_half | (flat <= conj_flat)
    mult = np.where(in_half & (flat == conj_flat), 1, 2)[keep]
    A: np.ndarray = np.ascontiguousarray(
        wf.reshape(g, Kg, Mg, -1)[..., keep].transpose(0, 3, 1, 2)  # (g, nU, Kg, Mg)
    ).reshape(-1, Kg, Mg)
    return A, mult


def _fft_singular_values(W: ConvOperator, gram: bool) -> np.ndarray:
    """All ``min(K, M) * prod(D)`` singular values (descending) of a circular operator."""
    w, D, g = _polyphase_filters(W)
    K, Mg = w.shape[:2]
    check_elements(f"the {K}x{Mg} frequency responses of W at {math.prod(D)} frequencies (input {tuple(D)})", K * Mg * math.prod(D), np.complex128, copies=3)  # noqa: E501
    Kg = K // g
    d = len(D)
    axes = tuple(range(2, 2 + d))
    wf = np.fft.rfftn(w, s=D, axes=axes)  # (K, Mg, *F)
    A, mult = _unique_frequencies(wf, D, g, Kg, Mg)
    if gram:
        if Kg <= Mg:
            G = A @ np.conj(A.transpose(0, 2, 1))
        else:
            G = np.conj(A.transpose(0, 2, 1)) @ A
        s = np.sqrt(np.clip(np.linalg.eigvalsh(G), 0.0, None))
    else:
        s = np.linalg.svd(A, compute_uv=False)
    s = s.reshape(g, -1, min(Kg, Mg))
    s = np.repeat(s, mult, axis=1).reshape(-1)
    return np.sort(s)[::-1]


# ------------------------------------------------------------------ iterative / dense
def _gram_operator(A: Any) -> tuple[Any, int]:
    from scipy.sparse.linalg import LinearOperator as SciPyOp

    m, n = A.shape
    if m <= n:
        return SciPyOp((m, m), matvec=lambda v: A.matvec(A.rmatvec(v)),
                       matmat=lambda V: A.matmat(A.rmatmat(V)), dtype=np.float64), m
    return SciPyOp((n, n), matvec=lambda v: A.rmatvec(A.matvec(v)),
                   matmat=lambda V: A.rmatmat(A.matmat(V)), dtype=np.float64), n


def _iterative(W: Any, k: int, which: str, tol: float, max_iter: int | None, rng: Any,
               ) -> np.ndarray:
    from scipy.sparse.linalg import eigsh

    A = W.aslinearoperator() if isinstance(W, LinearOperator) else _dense_as_op(W)
    G, N = _gram_operator(A)
    if 2 * k >= N or N <= 3:
        raise ValueError(
            f"parameter 'k'={k} is too large for the iterative method on a {W.shape[0]}x"
            f"{W.shape[1]} operator (needs 2*k < {N}); use method='dense' or a smaller k"
        )
    check_elements(f"the Lanczos vectors for W of shape {W.shape} (k={k})", 2 * N * max(2 * k + 1, 20) + sum(W.shape), copies=2)  # noqa: E501
    rng = check_rng(rng)
    v0 = rng.standard_normal(N)
    out = []
    if which in ("largest", "both"):
        ev = eigsh(G, k=k, which="LA", tol=tol, maxiter=max_iter, v0=v0,
                   return_eigenvectors=False)
        out.append(ev)
    if which in ("smallest", "both"):
        ev = eigsh(G, k=k, which="SA", tol=tol, maxiter=max_iter, v0=v0,
                   return_eigenvectors=False)
        out.append(ev)
    lam = np.concatenate(out)
    return np.sort(np.sqrt(np.clip(lam, 0.0, None)))[::-1]


def _gram_apply(W: Any) -> tuple[Any, tuple[int, ...]]:
    """The smaller Gram operator of ``W`` on batches ``(b, *shape)`` and that ``shape``."""
    m, n = W.shape
    if isinstance(W, np.ndarray):
        if m <= n:
            return (lambda Q: (Q @ W) @ W.T), (m,)
        return (lambda Q: (Q @ W.T) @ W), (n,)
    if m <= n:
        return (lambda Q: W @ (W.T @ Q)), tuple(W.out_shape)
    return (lambda Q: W.T @ (W @ Q)), tuple(W.in_shape)


def _lanczos(
    W: Any, tol: float, max_iter: int | None, rng: Any, nonzero_rtol: float | None,
    progress: bool | None, n_starts: int = 2, gram: Any = None, top_only: bool = False,
) -> tuple[float, float]:
    """``(sigma_lo, sigma_hi)``: the smallest (nonzero if ``nonzero_rtol``) and the largest
    singular value of ``W`` by plain Lanczos (:func:`modelcs._krylov.lanczos_extremes`) on
    its smaller Gram operator (module docstring).

    ``gram``: ``(apply, shape)`` of that Gram operator if already at hand; ``top_only``:
    stop when the largest value has converged (``sigma_lo`` is then only an estimate)."""
    G, shape = _gram_apply(W) if gram is None else gram
    N = math.prod(shape)
    # q, q_prev, v and the Gram product's two intermediates, for each start
    check_elements(f"the Lanczos vectors for W of shape {W.shape} ({n_starts} starts)",
                   n_starts * (3 * N + sum(W.shape)))
    lo, hi = lanczos_extremes(G, shape, tol=tol, max_iter=max_iter, rng=check_rng(rng),
                              progress=progress, n_starts=n_starts,
                              nonzero_rtol=nonzero_rtol, top_only=top_only)
    return math.sqrt(max(float(lo.min()), 0.0)), math.sqrt(float(hi.max()))


def _lobpcg(W: Any, tol: float, max_iter: int | None, rng: Any, progress: bool | None,
            want_lo: bool = True, want_hi: bool = True) -> tuple[float, float]:
    """``(sigma_lo, sigma_hi)`` of a zero-padded stride-1 ConvOperator: the smallest by
    preconditioned LOBPCG, the largest by Lanczos, both on the frequency-domain Gram
    operator of :mod:`modelcs.frames._valid_gram` (``nan`` for an end not wanted)."""
    gen = check_rng(rng)
    vg = ValidGram(W)
    lo = hi = math.nan
    if want_hi:
        _, hi = _lanczos(W, tol, max_iter, gen, None, progress, gram=(vg.apply, vg.shape),
                         top_only=True)
    if want_lo:
        shift, top = shift_estimate(vg.apply_single, vg.shape, gen)
        floor = 1e-13 * max(top, hi * hi if want_hi else 0.0)
        th, bound, it = lobpcg_smallest(
            vg.apply, vg.shape, vg.preconditioner, shift, tol=tol,
            max_iter=max_iter if max_iter is not None else 20_000, rng=gen,
            progress=progress, floor=floor, gram_single=vg.apply_single)
        if bound > max(tol * th, floor):
            raise RuntimeError(
                f"LOBPCG did not reach tol={tol:g} in max_iter={it} steps (smallest Ritz "
                f"value {th:.10g}, error bound {bound:.3g}); increase max_iter or tol"
            )
        lo = math.sqrt(max(th, 0.0))
    return lo, hi


def _scaled(W: Any) -> tuple[Any, float]:
    """``(W / c, c)`` with ``c`` the largest absolute filter (matrix) entry; ``c = 0`` for
    an all-zero bank.  Exact in binary floating point up to the one division per entry;
    removes the overflow/underflow of Gram operators of banks scaled by 1e160 or 1e-200."""
    if isinstance(W, np.ndarray):
        c = float(np.abs(W).max()) if W.size else 0.0
        if c == 0 or 1e-50 < c < 1e50:
            return W, (1.0 if c > 0 else 0.0)
        return W / c, c
    if isinstance(W, ConvOperator):
        w = to_numpy(W.filters).astype(np.float64)
        c = float(np.abs(w).max())
        if c == 0 or 1e-50 < c < 1e50:
            return W, (1.0 if c > 0 else 0.0)
        return W.astype(np.float64).with_filters(w / c), c
    return W, 1.0


def _squared_bounds(lo: float, hi: float, c: float) -> tuple[float, float]:
    """``((c lo)^2, (c hi)^2)``, or a clear error when they leave float64's range."""
    a, b = c * lo, c * hi
    tiny, huge = math.sqrt(np.finfo(np.float64).tiny), math.sqrt(np.finfo(np.float64).max)
    if b >= huge or (0 < a < tiny):
        raise ValueError(
            f"the frame bounds sigma_min^2 = ({a:.6g})^2 and sigma_max^2 = ({b:.6g})^2 of this "
            "filter bank are outside the float64 range; singular_values(W, k=1) returns "
            "sigma_min and sigma_max themselves, or rescale the filters"
        )
    return a * a, b * b


def _dense_ok(W: Any) -> bool:
    m, n = W.shape
    return min(m, n) <= DENSE_MAX and m * n <= DENSE_MAX_ENTRIES


def _dense_as_op(M: np.ndarray) -> Any:
    from scipy.sparse.linalg import aslinearoperator

    return aslinearoperator(M)


def _select(s: np.ndarray, k: int | None, which: str) -> np.ndarray:
    if k is None or k >= s.size or (which == "both" and 2 * k >= s.size):
        return s
    if which == "largest":
        return s[:k]
    if which == "smallest":
        return s[-k:]
    return np.concatenate([s[:k], s[-k:]])


def _check_W(W: Any) -> Any:
    if isinstance(W, LinearOperator):
        return W
    if isinstance(W, np.ndarray) or is_cupy_array(W):
        if W.ndim != 2:
            raise ValueError(
                f"parameter 'W' must be an operator or a 2-D matrix; got an array of shape "
                f"{tuple(W.shape)}"
            )
        if W.dtype.kind not in "fiub":
            raise TypeError(f"parameter 'W' must be real; got dtype {W.dtype}")
        check_finite("W", W)
        return to_numpy(W).astype(np.float64)
    return as_operator(W, "W")


def singular_values(
    W: Any,
    *,
    k: int | None = None,
    which: str = "both",
    method: str = "auto",
    tol: float = 1e-10,
    max_iter: int | None = None,
    rng: Any = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Singular values of a convolution operator, in descending order.

    Parameters
    ----------
    W : ConvOperator, LinearOperator or 2-D array
    k : int, optional
        How many extreme values (``None``: all of them, only for ``'fft'``/``'dense'``).
    which : {'largest', 'smallest', 'both'}, default 'both'
        The ``k`` largest, the ``k`` smallest, or both sets (``2k`` values).
    method : str, default 'auto'
        One of ``'auto'``, ``'fft'``, ``'fft-gram'``, ``'iterative'``, ``'lanczos'``,
        ``'sparse'``, ``'banded'``, ``'lobpcg'``, ``'dense'``.
        See the module docstring.  ``'auto'`` (default): ``'fft'`` for circular
        convolutions whose stride divides the input size, ``'dense'`` for small operators,
        otherwise for ``k=1`` ``'sparse'`` (few-channel ConvOperators, the
        ``SPARSE_MAX_WORK`` rule), ``'banded'`` (zero-padded ConvOperators whose band
        Cholesky costs at most ``BANDED_MAX_FLOPS``), ``'lobpcg'`` (larger zero-padded
        stride-1 ConvOperators with many channels) or ``'lanczos'``, and ``'iterative'``
        for ``k > 1`` (all need ``k``).
    tol, max_iter, rng
        Lanczos tolerance (relative, on eigenvalues of the Gram operator), iteration cap and
        starting vector randomness for ``'iterative'`` and ``'lanczos'`` (``rng``: SciPy
        SPEC 7).
    progress : bool, optional
        Progress bar for ``'lanczos'``, ``'sparse'``, ``'banded'`` and ``'lobpcg'``
        (``None``: only when standard error is a terminal).

    Returns
    -------
    numpy.ndarray
        Descending.  A ``Kn x MD`` operator has ``min(Kn, MD)`` singular values (zeros
        included); a circular one ``min(K, M) * prod(D)`` (per group).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(3, 2, 3, 8, padding="circular", rng=0)
    >>> s = singular_values(W)
    >>> s.shape, bool(np.allclose(s, np.linalg.svd(W.to_dense(), compute_uv=False)))
    ((16,), True)
    """
    W = _check_W(W)
    check_choice("which", which, _WHICH)
    check_choice("method", method, _METHODS)
    if k is not None:
        k = check_positive_int("k", k)
    if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise ValueError(f"parameter 'tol' must be a number in [0, 1); got {tol!r}")
    if max_iter is not None:
        max_iter = check_positive_int("max_iter", max_iter)
    if method == "auto":
        method = _auto_method(W, k)
    Ws, c = _scaled(W)
    if c == 0:  # an all-zero bank or matrix: every singular value is 0
        n_all = min(W.shape)
        if method in ("fft", "fft-gram") and isinstance(W, ConvOperator):
            n_all = min(W.out_shape[0], W.in_shape[0]) * math.prod(W.input_spatial)
        n = n_all if k is None else min(n_all, k if which != "both" else 2 * k)
        return np.zeros(n)
    if method in ("fft", "fft-gram"):
        if not _fft_ok(W):
            raise ValueError(
                f"method='{method}' needs a ConvOperator with padding='circular' and a stride "
                f"dividing the input size; got {_described(W)}"
            )
        return c * _select(_fft_singular_values(Ws, gram=method == "fft-gram"), k, which)
    if method == "dense":
        M = Ws if isinstance(Ws, np.ndarray) else to_numpy(Ws.to_dense()).astype(np.float64)
        return c * _select(np.linalg.svd(M, compute_uv=False), k, which)
    if k is None:
        raise ValueError(
            f"parameter 'k' is required for method='{method}' on this {W.shape[0]}x"
            f"{W.shape[1]} operator (not circular and too large for a dense SVD, so only the "
            "k extreme singular values are computed); pass k, or method='dense'"
        )
    if method in ("lanczos", "sparse", "banded", "lobpcg"):  # one value at each end
        if k != 1:
            raise ValueError(
                f"method='{method}' computes one value at each end (k=1); got k={k}: use "
                "method='iterative' for more"
            )
        ltol = _lanczos_tol(tol)
        if method in ("sparse", "banded") and which == "largest":  # no factorisation
            _check_direct(method, W)
            lo, hi = _lanczos(Ws, ltol, max_iter, rng, None, progress, top_only=True)
        elif method in ("sparse", "banded"):
            lo2, hi2 = _direct_bounds(method, W, Ws, tol=ltol, rtol=0.0, max_iter=max_iter,
                                      rng=rng, progress=progress)
            lo, hi = math.sqrt(lo2 or 0.0), math.sqrt(hi2)
        elif method == "lobpcg":
            _check_lobpcg(W)
            lo, hi = _lobpcg(Ws, ltol, max_iter, rng, progress,
                             want_lo=which != "largest", want_hi=which != "smallest")
        else:
            lo, hi = _lanczos(Ws, ltol, max_iter, rng, None, progress)
        out = {"largest": [hi], "smallest": [lo], "both": [hi, lo]}[which]
        return c * np.array(out)
    return c * _iterative(Ws, k, which, tol, max_iter, rng)


def _lanczos_tol(tol: float) -> float:
    """The tolerance of the Lanczos-type methods: ``tol = 0`` means the rounding level."""
    return tol if tol > 0 else 1e-14


def _check_lobpcg(W: Any) -> None:
    if not lobpcg_ok(W):
        raise ValueError(
            "method='lobpcg' needs a ConvOperator with zero padding ('valid', 'same' or "
            f"integer widths), stride 1 and groups=1, with NumPy filters; got {_described(W)}"
        )


def _described(W: Any) -> str:
    """``W`` for an error message: a ConvOperator with the settings the methods need, any
    other operator or array by its type and shape (not its entries)."""
    if isinstance(W, ConvOperator):
        return (f"{W!r} with padding={W.padding!r}, stride={W.stride}, groups={W.groups}, "
                f"{type(W.filters).__module__.split('.')[0]} filters")
    return f"{type(W).__name__} of shape {tuple(getattr(W, 'shape', ()))}"


def _auto_method(W: Any, k: int | None) -> str:
    if _fft_ok(W):
        return "fft"
    if isinstance(W, np.ndarray) or _dense_ok(W):
        return "dense"
    if k in (None, 1) and sparse_friendly(W, SPARSE_MAX_WORK):
        return "sparse"
    if k in (None, 1) and band_ok(W) and band_fits(W, BANDED_MAX_FLOPS):
        return "banded"
    if k in (None, 1) and _lobpcg_preferred(W):
        return "lobpcg"
    return "lanczos" if k in (None, 1) else "iterative"


#: ``'auto'`` uses ``'lobpcg'`` for zero-padded stride-1 convolutions with at least this
#: many input and output channels (below it the two convolutions per Lanczos step are cheap
#: and the sparse or plain Lanczos routes win)
LOBPCG_MIN_CHANNELS = 64


def _lobpcg_preferred(W: Any) -> bool:
    return lobpcg_ok(W) and min(W.filters.shape[:2]) >= LOBPCG_MIN_CHANNELS


def _check_direct(method: str, W: Any) -> None:
    """The input check of the direct routes ``'sparse'`` and ``'banded'``."""
    (_check_sparse if method == "sparse" else _check_banded)(W)


def _direct_bounds(method: str, W: Any, Ws: Any, *, tol: float, rtol: float,
                   max_iter: int | None, rng: Any,
                   progress: bool | None) -> tuple[float | None, float]:
    """``(lambda_min_nonzero or None, lambda_max)`` of the Gram matrix of the scaled
    ``Ws`` by the direct route ``method`` (``'sparse'`` or ``'banded'``; conventions of
    :func:`modelcs.frames._sparse.sparse_frame_bounds`), after checking ``W``."""
    _check_direct(method, W)
    if method == "sparse":
        return sparse_frame_bounds(Ws, tol=tol, rtol=rtol, max_iter=max_iter, rng=rng,
                                   progress=progress)
    return banded_frame_bounds(Ws, _gram_apply(Ws), tol=tol, rtol=rtol, max_iter=max_iter,
                               rng=rng, progress=progress)


def _check_banded(W: Any) -> None:
    if not band_ok(W):
        raise ValueError(
            "method='banded' needs a ConvOperator with zero padding ('valid', 'same' or "
            f"integer widths) and NumPy filters; got {_described(W)}"
        )


def _check_sparse(W: Any) -> None:
    if not isinstance(W, ConvOperator):
        raise ValueError(
            f"method='sparse' needs a ConvOperator (it builds W.to_sparse()); got "
            f"{type(W).__name__}: use method='lanczos' or 'dense'"
        )


def frame_bounds(
    W: Any,
    *,
    rtol: float | None = None,
    method: str = "auto",
    k: int = 6,
    tol: float = 1e-10,
    max_iter: int | None = None,
    rng: Any = None,
    progress: bool | None = None,
) -> tuple[float, float]:
    """Optimal frame bounds ``(lower, upper)`` of the shifted filters on their span.

    The rows of ``W`` (all shifts of all filters) form a frame for their span (supplement
    Prop. A.2); the optimal bounds are the smallest *nonzero* and the largest eigenvalue
    of the frame operator ``W^T W`` (Theorem A.3) = squared extreme nonzero singular
    values of ``W``.

    Parameters
    ----------
    W : ConvOperator, LinearOperator or 2-D array (rows = frame vectors)
    rtol : float, optional
        Rank tolerance: a singular value counts as zero when ``sigma <= rtol * sigma_max``.
        Default ``max(W.shape) * eps(float64)`` (NumPy's ``matrix_rank`` rule) for the exact
        methods, ``max(that, 1e-6)`` for ``'lanczos'``, ``'sparse'`` and ``'banded'``
        (their Ritz values of a null space settle near ``eps * sigma_max**2``) and
        ``max(that, 10 * sqrt(tol))`` for ``'iterative'``.
    method : str, default 'auto'
        One of ``'auto'``, ``'fft'``, ``'fft-gram'``, ``'iterative'``, ``'lanczos'``,
        ``'sparse'``, ``'banded'``, ``'lobpcg'``, ``'dense'``.
        As in :func:`singular_values`; ``'auto'`` uses ``'sparse'`` for large
        few-channel ConvOperators (the ``SPARSE_MAX_WORK`` rule), ``'banded'`` for
        zero-padded ones of moderate size (the ``BANDED_MAX_FLOPS`` rule), ``'lobpcg'`` for
        larger many-channel zero-padded stride-1 ones and ``'lanczos'`` for the other large
        non-circular operators (all exact to ``tol`` relative).  ``'lobpcg'`` leaves the
        lower bound to ``'lanczos'`` when the smaller Gram operator is singular.
    k : int, default 6
        ``'iterative'`` only: how many of the smallest Gram eigenvalues are computed; the
        lower bound is the smallest of them above the tolerance.  If the Gram operator has a
        null space of dimension ``>= k`` (all ``k`` are zero) a ``ValueError`` asks for a
        larger ``k`` or ``method='dense'``.

    tol, max_iter, rng
        As in :func:`singular_values`.
    progress : bool, optional
        Progress bar for ``'lanczos'``, ``'sparse'``, ``'banded'`` and ``'lobpcg'``
        (``None``: only when standard error is a terminal).

    Returns
    -------
    (lower, upper) : tuple of float
        An all-zero bank (whose rows span ``{0}``) raises a ``ValueError`` saying so.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(4, 3, 3, 10, rng=0)
    >>> A, B = frame_bounds(W, method="dense")
    >>> ev = np.linalg.eigvalsh(W.to_dense().T @ W.to_dense())
    >>> bool(np.isclose(A, ev[ev > 1e-9].min()) and np.isclose(B, ev.max()))
    True
    """
    W = _check_W(W)
    check_choice("method", method, _METHODS)
    k = check_positive_int("k", k)
    if rtol is not None and not (isinstance(rtol, (int, float)) and 0 <= rtol < 1):
        raise ValueError(f"parameter 'rtol' must be a number in [0, 1); got {rtol!r}")
    if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise ValueError(f"parameter 'tol' must be a number in [0, 1); got {tol!r}")
    if max_iter is not None:
        max_iter = check_positive_int("max_iter", max_iter)
    if method == "auto":
        method = _auto_method(W, 1)
    Ws, c = _scaled(W)
    if c == 0:
        raise ValueError(_ZERO_MSG)
    base = max(W.shape) * float(np.finfo(np.float64).eps)
    ltol = _lanczos_tol(tol)
    # the rank rule of the Lanczos-type methods (see ``rtol``)
    r_lz = max(base, 1e-6) if rtol is None else rtol
    if method == "lanczos":
        lo, hi = _lanczos(Ws, ltol, max_iter, rng, r_lz, progress)
        return _squared_bounds(lo, hi, c)
    if method in ("sparse", "banded"):
        try:
            lo2, hi2 = _direct_bounds(method, W, Ws, tol=ltol, rtol=r_lz, max_iter=max_iter,
                                      rng=rng, progress=progress)
        except ValueError as e:
            if "every eigenvalue" in str(e):
                raise ValueError(_ZERO_MSG) from None
            raise
        if lo2 is None:  # a large null space: the smallest nonzero one by plain Lanczos
            lo, _ = _lanczos(Ws, ltol, max_iter, rng, r_lz, progress)
            lo2 = lo * lo
        return _squared_bounds(math.sqrt(lo2), math.sqrt(hi2), c)
    if method == "lobpcg":
        _check_lobpcg(W)
        lo, hi = _lobpcg(Ws, ltol, max_iter, rng, progress)
        if lo > r_lz * hi:
            return _squared_bounds(lo, hi, c)
        # the smaller Gram operator is singular: its smallest eigenvalue is not the bound
        lo, hi = _lanczos(Ws, ltol, max_iter, rng, r_lz, progress)
        return _squared_bounds(lo, hi, c)
    if method == "iterative":
        r = max(base, 10.0 * math.sqrt(tol)) if rtol is None else rtol
        smax = singular_values(Ws, k=1, which="largest", method="iterative", tol=tol,
                               max_iter=max_iter, rng=rng)[0]
        small = singular_values(Ws, k=k, which="smallest", method="iterative", tol=tol,
                                max_iter=max_iter, rng=rng)
    else:
        r = base if rtol is None else rtol
        s = singular_values(Ws, method=method)
        smax, small = s[0], s
    if smax == 0:
        raise ValueError(_ZERO_MSG)
    nz = small[small > r * smax]
    if nz.size == 0:
        raise ValueError(
            f"all {small.size} smallest singular values computed are below the rank tolerance "
            f"{r:.3g} * sigma_max: the null space of the Gram operator has dimension >= k={k}; "
            "increase k or use method='lanczos' or 'dense'"
        )
    return _squared_bounds(float(nz.min()), float(smax), c)
