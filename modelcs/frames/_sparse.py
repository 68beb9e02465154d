"""Sparse direct routes for conv layers with few channels: spectra and least squares.

A convolution with ``Mg = M / groups`` input channels per group and ``prod(l)`` taps has
``Mg * prod(l)`` nonzeros in each row of its matrix (27 for MobileNetV2's first layer), so
its smaller Gram matrix ``G`` (``W^T W`` or ``W W^T``) is sparse too, with about
``C * prod(2 l - 1)`` nonzeros per row (``C`` the channels on that side).  On image-like
grids a sparse LU of ``G`` (SuperLU, minimum-degree ordering of ``G + G^T``) fills in
moderately, and then:

* the largest eigenvalue of ``G`` comes from plain Lanczos on the sparse ``G``;
* the smallest eigenvalue from plain Lanczos on the shift-inverted
  ``(G + delta I)^{-1}`` with ``delta = 1e-12 * ||G||_1`` (``G + delta I`` is positive
  definite above the rounding of a null space, ``~eps ||G||``, so the LU needs no
  pivoting): ``lambda_min = 1 / theta_max - delta``.  When that is zero (at most
  ``max(rtol**2 lambda_max, 100 delta)``) ``G`` has a null space, whose eigenvalue
  ``1 / delta`` dominates the inverse so much that the rounding of the plain Lanczos
  recurrence (``~eps / delta``) swamps the next eigenvalue (measured: 1e-5 relative).
  The ``NEXT_K`` smallest eigenvalues then come from ARPACK on the same inverse (full
  reorthogonalisation: the rounding is ``~eps / delta`` absolute on ``1 / lambda``, which
  is checked against ``tol``), and the smallest one above the rank threshold is the
  answer; if it is not among them (a larger null space) or not resolved to ``tol``, the
  smallest *nonzero* eigenvalue is left to plain Lanczos on ``G`` (the caller's
  ``'lanczos'`` method).  MobileNetV2's first layer (stride 2, padding 1) is injective
  on 3x64x64 and 3x224x224 inputs, so there the fast path is taken.

Plain Lanczos and its stopping rule are those of :mod:`modelcs.frames.spectrum`
(:func:`modelcs._krylov.lanczos_extremes`; Paige 1980: a Ritz value ``theta`` with
residual estimate ``rho`` lies within ``min(rho, rho^2 / gap)`` of an eigenvalue), run from
two random starts at once, stopping when both starts agree and the bound is
``<= tol * theta``.  For the shift-inverted run a
relative error ``tol`` in ``theta`` is a relative error ``tol * (1 + delta / lambda)`` in
``lambda``, i.e. ``tol`` up to a factor ``1 + 1e-6`` for ``lambda >= 1e-6 ||G||_1``.

:func:`lstsq_direct` solves the minimum-norm least-squares problems of
:func:`modelcs.pinv_reconstruct` in float64 with one sparse LU of a Gram matrix of the
restricted system and refinement on the true residual: the corrected semi-normal
equations (Bjorck, "Numerical Methods for Least Squares Problems", SIAM 1996) for tall
systems of full column rank, iterated Tikhonov on ``A A^T y = h``, ``x = A^T y`` otherwise
(see :func:`_solver`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._krylov import lanczos_extremes
from .._memory import check_elements

__all__ = ["sparse_friendly", "gram_matrix", "sparse_frame_bounds", "shift_invert_bounds",
           "dense_bounds", "lstsq_direct"]

#: shift of the shift-invert run, relative to ``||G||_1``
_DELTA = 1e-12
#: below this Gram dimension the eigenvalues come from a dense ``eigvalsh`` of ``G``
_DENSE_GRAM = 200
#: regularisations of the row-side Gram matrix of :func:`lstsq_direct`, relative to its
#: 1-norm: the smallest first (fastest: MobileNetV2 layer 1 with CReLU + pool, float64 data,
#: tol 1e-12: 7 steps at 1e-14, 33 at 1e-13, not within 50 at 1e-12); the next one only if
#: the refinement diverges (a rounding eigenvalue of the null space below -delta)
_ROW_DELTAS = (1e-14, 1e-12, 1e-10)


def sparse_friendly(W: Any, max_work: int) -> bool:
    """Whether ``W`` is a ConvOperator whose smaller Gram matrix is sparse enough.

    The rule: the channels per group on the smaller side of ``W`` (input channels for
    ``W^T W``, output channels for ``W W^T``) times that side's dimension is at most
    ``max_work``, and ``W`` lives on the host (NumPy filters).
    """
    from .._backend import is_cupy_array
    from ..operators import ConvOperator

    if not isinstance(W, ConvOperator) or is_cupy_array(W.filters):
        return False
    m, n = W.shape
    if n <= m:
        C, N = W.in_shape[0] // W.groups, n
    else:
        C, N = W.out_shape[0] // W.groups, m
    return C * N <= max_work


def gram_matrix(A: Any) -> tuple[Any, bool]:
    """``(G, image_side)``: the smaller Gram matrix of sparse ``A`` (CSC, float64) and
    whether it is ``A^T A`` (else ``A A^T``)."""
    import scipy.sparse as sp

    A = sp.csr_matrix(A, dtype=np.float64)
    m, n = A.shape
    if n <= m:
        At = A.T.tocsr()
        return (At @ A).tocsc(), True
    return (A @ A.T.tocsc()).tocsc(), False


def _factor(G: Any, delta: float) -> Any:
    """Sparse LU of the symmetric positive definite ``G + delta I`` (no pivoting)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    N = G.shape[0]
    # SuperLU's L and U: measured ~2,100,000 entries for N = 12,288 and ~50,000,000 for
    # N = 150,528 (MobileNetV2 layer 1 at 64x64 and 224x224); refuse early if the
    # estimate (N * 400 entries of 8 + 4 bytes) exceeds the memory available
    check_elements(f"the sparse LU of the {N}x{N} Gram matrix ({G.nnz} nonzeros)",
                   N * 400 + 3 * G.nnz, np.float64, copies=2)
    Gs = (G + delta * sp.identity(N, format="csc")).tocsc() if delta else G.tocsc()
    return splu(Gs, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                options={"SymmetricMode": True})


def _rowwise(f: Any) -> Any:
    """``Q -> [f(q_0), f(q_1), ...]`` on a batch of rows: SciPy's sparse product and
    SuperLU's solve are faster one vector at a time than on a two-column block (measured
    21 vs 38 ms and 0.14 vs 0.18 s at N = 150,528)."""
    return lambda Q: np.stack([f(q) for q in Q])


def _lanczos_top(apply: Any, shape: tuple[int, ...], *, tol: float, max_iter: int | None,
                 rng: Any, progress: bool | None, desc: str) -> float:
    """The largest eigenvalue of a symmetric positive semi-definite operator ``apply``
    (``(b, *shape) -> (b, *shape)``) by plain Lanczos from two random starts
    (:func:`modelcs._krylov.lanczos_extremes`; stopping rule in the module docstring)."""
    N = math.prod(shape)
    check_elements(f"the Lanczos vectors of a {N}x{N} Gram matrix", 5 * 2 * N)
    _, hi = lanczos_extremes(apply, shape, tol=tol, max_iter=max_iter, rng=rng,
                             progress=progress, top_only=True, check_every=5, floor=1e-14,
                             desc=desc)
    return float(hi.max())


def sparse_frame_bounds(W: Any, *, tol: float, rtol: float, max_iter: int | None,
                        rng: Any, progress: bool | None) -> tuple[float | None, float]:
    """``(lambda_min_nonzero, lambda_max)`` of the Gram matrix of ``W`` (float64).

    ``lambda`` counts as zero when ``lambda <= rtol**2 * lambda_max`` (``rtol`` is the
    rank tolerance on singular values); ``rtol = 0`` returns the smallest eigenvalue,
    zero included (clipped at 0).  With ``rtol > 0`` and a Gram matrix that is singular
    (smallest eigenvalue ``<= max(rtol**2 lambda_max, 100 delta)``) the first entry is the
    smallest eigenvalue above the rank threshold among the ``NEXT_K`` smallest (ARPACK,
    :func:`_smallest_above`), or ``None`` when it is not among them or not resolved to
    ``tol`` (see the module docstring): the caller then uses plain Lanczos for it.
    Raises ``ValueError`` when every eigenvalue is zero.
    """
    A = W.to_sparse()
    G, _ = gram_matrix(A)
    N = G.shape[0]
    if N <= _DENSE_GRAM:
        return dense_bounds(np.linalg.eigvalsh(G.toarray()), rtol)
    Gr = G.tocsr()
    norm1 = float(abs(G).sum(axis=0).max())
    return shift_invert_bounds(_rowwise(Gr.dot), (N,), lambda d: _rowwise(_factor(G, d).solve),
                               N, norm1, tol=tol, rtol=rtol, max_iter=max_iter, rng=rng,
                               progress=progress)


def dense_bounds(ev: np.ndarray, rtol: float) -> tuple[float, float]:
    """:func:`sparse_frame_bounds` from all the eigenvalues ``ev`` (ascending) of a small
    Gram matrix."""
    hi = float(ev[-1])
    nz = ev[ev > rtol * rtol * hi] if rtol else ev
    if hi <= 0 or nz.size == 0:
        raise ValueError("every eigenvalue of the Gram matrix is zero")
    return max(float(nz[0]), 0.0), hi


def shift_invert_bounds(gram: Any, shape: tuple[int, ...], factor: Any, N: int,
                        norm1: float, *, tol: float, rtol: float, max_iter: int | None,
                        rng: Any, progress: bool | None) -> tuple[float | None, float]:
    """:func:`sparse_frame_bounds` given the pieces of a direct route: ``gram`` applies
    ``G`` to a batch ``(b, *shape)`` (for the largest eigenvalue), ``factor(delta)``
    returns a solve ``(b, N) -> (G + delta I)^{-1}`` on rows, ``norm1 = ||G||_1``.  A
    factorisation that fails (``numpy.linalg.LinAlgError``: ``G + delta I`` not
    numerically positive definite) is retried with ``delta`` 100 and 10,000 times larger.
    """
    from .._validation import check_rng

    gen = check_rng(rng)
    hi = _lanczos_top(gram, shape, tol=tol, max_iter=max_iter, rng=gen,
                      progress=progress, desc="Lanczos, largest")
    if hi <= 0:
        raise ValueError("every eigenvalue of the Gram matrix is zero")
    delta = _DELTA * norm1
    for attempt in range(3):
        try:
            solve = factor(delta)
            break
        except np.linalg.LinAlgError:
            if attempt == 2:
                raise
            delta *= 100.0
    theta = _lanczos_top(solve, (N,), tol=tol, max_iter=max_iter, rng=gen,
                         progress=progress, desc="Lanczos, shift-invert")
    lo = max(1.0 / theta - delta, 0.0)
    if rtol and lo <= max(rtol * rtol * hi, 100 * delta):
        # zero under the rank rule (or too close to delta to be resolved by one plain
        # Lanczos run): the smallest eigenvalue above the rank threshold from the few
        # smallest ones (ARPACK on the same inverse); None when it is not among them or
        # not resolved to tol (then the caller takes plain Lanczos on G)
        return _smallest_above(factor, solve, N, delta, rtol * rtol * hi, tol, gen), hi
    return lo, hi


#: how many of the smallest eigenvalues :func:`_smallest_above` computes
NEXT_K = 12


def _smallest_above(factor: Any, solve: Any, N: int, delta: float, tau: float, tol: float,
                    gen: np.random.Generator) -> float | None:
    """The smallest eigenvalue ``> tau`` of ``G`` among its ``NEXT_K`` smallest, from the
    largest eigenvalues ``mu = 1 / (lambda + delta)`` of the inverse (ARPACK, implicitly
    restarted Lanczos with full reorthogonalisation, so the null space's ``1 / delta``
    does not hide the others).

    Accuracy: ARPACK's relative tolerance ``atol = tol / 100`` on ``mu`` and the rounding
    of the solves, ``~eps * mu_max`` absolute, give ``lambda`` to about
    ``(atol + 10 eps (lambda + delta) / delta) * (1 + delta / lambda)`` relative (a null
    space makes ``mu_max = 1 / delta``).  With the tiny ``delta`` of the first
    factorisation that is ~1e-6 for ``lambda`` ~1e-3 of ``||G||``, so when it exceeds
    ``tol`` the run is repeated once with ``G`` refactored at ``delta = 1e-4 lambda``
    (the first run's value), where it is ~2e-11.  Returns None when all ``NEXT_K`` are
    ``<= tau``, when ARPACK does not converge or when ``tol`` is not reached.
    """
    first = _arpack_above(solve, N, delta, tau, tol, gen)
    if first is None:
        return None
    if first[1] <= tol:
        return first[0]
    d2 = 1e-4 * first[0]
    try:
        solve2 = factor(d2)
    except (np.linalg.LinAlgError, RuntimeError):
        return None
    second = _arpack_above(solve2, N, d2, tau, tol, gen)
    return second[0] if second is not None and second[1] <= tol else None


def _arpack_above(solve: Any, N: int, delta: float, tau: float, tol: float,
                  gen: np.random.Generator) -> tuple[float, float] | None:
    """``(lambda, relative error bound)`` of :func:`_smallest_above` for one factorisation
    ``solve`` of ``G + delta I``, or None."""
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh
    from scipy.sparse.linalg import LinearOperator as SciPyOp

    k = min(NEXT_K, N - 2)
    if k < 1:
        return None
    op = SciPyOp((N, N), matvec=lambda v: solve(np.asarray(v).reshape(1, N))[0],
                 dtype=np.float64)
    atol = max(tol / 100, 1e-15)
    try:
        mu = eigsh(op, k=k, which="LA", tol=atol, v0=gen.standard_normal(N),
                   return_eigenvectors=False)
    except ArpackNoConvergence:
        return None
    mu = np.sort(mu)[::-1]                       # largest mu = smallest lambda first
    lam = 1.0 / mu - delta
    above = np.flatnonzero(lam > tau)
    if above.size == 0:
        return None
    j = int(above[0])
    err = (atol + 10 * np.finfo(np.float64).eps * mu[0] / mu[j]) * (1 + delta / lam[j])
    return float(lam[j]), float(err)


def _rank_ok(lu: Any, G: Any, gen: Any) -> bool:
    """False when ``G`` (symmetric positive semi-definite) is numerically singular:
    inverse iteration's estimate of ``lambda_min`` (an upper bound once converged; a
    null direction takes over in one step) below ``1e-10 ||G||_1``."""
    N = G.shape[0]
    norm1 = float(abs(G).sum(axis=0).max())
    if norm1 == 0:
        return False
    v = gen.standard_normal(N)
    est = math.inf
    for _ in range(3):
        v /= np.linalg.norm(v)
        w = lu.solve(v)
        if not np.isfinite(w).all():
            return False
        est = 1.0 / float(v @ w) if float(v @ w) > 0 else 0.0
        v = w
    return est > 1e-10 * norm1


def _solver(As: Any, gen: Any, attempt: int) -> tuple[Any, bool] | None:
    """``(lu, column_side)`` for the restricted matrix ``As``, or None (LSQR instead).

    Tall ``As`` of full column rank: LU of ``As^T As``.  Otherwise (wide, or rank
    deficient): LU of ``As As^T + delta I`` with ``delta = _ROW_DELTAS[attempt - 1] *
    ||As As^T||_1`` (positive definite above the rounding of a null space,
    ``~eps ||G||``); the refinement
    ``y += (G + delta I)^{-1} r``, ``x = As^T y`` is iterated Tikhonov on the consistent
    part, converging by ``delta / (lambda + delta)`` per step on every nonzero eigenvalue,
    while ``x = As^T y`` stays in the row space: the minimum-norm solution even when
    ``As`` is rank deficient (``As^T`` annihilates whatever collects in the null space of
    ``As As^T``).
    """
    m, n = As.shape
    if attempt > len(_ROW_DELTAS):
        return None
    if m >= n and attempt == 0:
        G, _ = gram_matrix(As)  # A^T A (tall)
        try:  # SuperLU: "Factor is exactly singular" is a RuntimeError
            lu = _factor(G, 0.0)
            if _rank_ok(lu, G, gen):
                return lu, True
        except RuntimeError:
            pass
    G = (As @ As.T.tocsc()).tocsc()
    norm1 = float(abs(G).sum(axis=0).max())
    try:
        return _factor(G, _ROW_DELTAS[max(attempt, 1) - 1] * norm1), False
    except RuntimeError:
        return None


def lstsq_direct(A: Any, H: np.ndarray, supports: np.ndarray | None, *, tol: float,
                 max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-norm least squares ``x_i = (A_{S_i})^+ h_i`` for each item, float64.

    Parameters
    ----------
    A : scipy sparse matrix ``(m, n)``
    H : array ``(B, m)`` (zero off the support)
    supports : bool array ``(B, m)`` or None (all rows)
    tol : LSQR's stopping tests (``||r|| <= tol ||h||`` or
        ``||A^T r|| <= tol ||A||_F ||r||``) checked after every refinement step.
    max_iter : refinement steps per item.

    Returns
    -------
    (X, n_iter, status) with ``X`` ``(B, n)``, ``n_iter`` the refinement steps and
    ``status`` 1 converged, 0 not converged within ``max_iter``, -1 not for this route
    (no factorisation, or the row side did not reach ``||r|| <= tol ||h||``: a
    least-squares residual of a rank-deficient system); the caller falls back to LSQR.
    """
    import scipy.sparse as sp

    A = sp.csr_matrix(A, dtype=np.float64)
    B, (m, n) = H.shape[0], A.shape
    X = np.zeros((B, n))
    n_iter = np.zeros(B, dtype=np.int64)
    status = np.zeros(B, dtype=np.int64)
    gen = np.random.default_rng(0)
    cache: dict[tuple[bytes, int], Any] = {}
    for i in range(B):
        rows = np.arange(m) if supports is None else np.flatnonzero(supports[i])
        h = H[i, rows]
        hn = float(np.linalg.norm(h))
        if hn == 0:
            status[i] = 1
            continue
        As = A[rows]
        cols = np.flatnonzero(np.diff(As.tocsc().indptr))  # columns the rows touch
        As = As[:, cols].tocsr()
        AsT = As.T.tocsr()
        anorm = math.sqrt(float((As.data**2).sum()))
        key = rows.tobytes()
        attempt = 0
        while status[i] != 1:
            if (key, attempt) not in cache:
                if len(cache) > 4:
                    cache.clear()  # items with the same support share the factorisation
                cache[key, attempt] = _solver(As, gen, attempt) if As.nnz else None
            got = cache[key, attempt]
            if got is None:
                status[i] = -1
                break
            lu, column_side = got
            # next: the row side with the smallest delta, or the next delta
            attempt = 1 if column_side else max(attempt, 1) + 1
            x, it, status[i] = _refine(lu, column_side, As, AsT, h, anorm, tol, max_iter)
            n_iter[i] += it
            if status[i] == 3 or (status[i] == 0 and not column_side):
                status[i] = -1  # least squares on a rank-deficient system: LSQR
            if status[i] in (0, -1):
                break
        if status[i] != -1:
            X[i, cols] = x
    return X, n_iter, status


def _refine(lu: Any, column_side: bool, As: Any, AsT: Any, h: np.ndarray, anorm: float,
            tol: float, max_iter: int) -> tuple[np.ndarray, int, int]:
    """``(x, steps, status)``: the refinement of :func:`lstsq_direct`; status 1 converged,
    0 not within ``max_iter``, 2 diverged (non-finite or growing residual)."""
    hn = float(np.linalg.norm(h))
    x = np.zeros(As.shape[1])
    y = np.zeros(As.shape[0])
    r = h.copy()
    best = hn
    it = 0
    for it in range(1, max_iter + 1):
        if column_side:  # x += (A^T A)^{-1} A^T r
            x = x + lu.solve(AsT @ r)
        else:  # y += (A A^T + delta I)^{-1} r,  x = A^T y
            y = y + lu.solve(r)
            x = AsT @ y
        r = h - As @ x
        rn = float(np.linalg.norm(r))
        if not math.isfinite(rn) or rn > 10 * best:
            return x, it, 2
        best = min(best, rn)
        if rn <= tol * hn:
            return x, it, 1
        if float(np.linalg.norm(AsT @ r)) <= tol * anorm * rn:
            # a least-squares residual: exact on the column side; on the row side the part
            # of h outside the range of As collects in y as h_perp / delta per step and its
            # rounding in As^T y reaches x (eps / delta relative): not to be trusted
            return x, it, 1 if column_side else 3
    return x, it, 0
