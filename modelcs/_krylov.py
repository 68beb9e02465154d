"""Batched Krylov solvers on modelcs operators: one CGLS for every least-squares step.

:func:`cgls` solves ``min_x ||b_i - A x_i||`` for a batch of right-hand sides at once
(optionally with ``x_i`` restricted to a support mask), each item with its own stopping
test, on NumPy or CuPy arrays.  It is the least-squares engine of CoSaMP, of
:func:`modelcs.debias` (and so of the Lasso's debiasing and the phase-transition sweep)
and of the pseudoinverse reconstruction.  Started from ``x = 0`` its iterates stay in the
row space of the (restricted) ``A``, so it converges to the minimum-norm solution.

:func:`lanczos_norm_sq` estimates ``||A||_2^2`` (what :meth:`LinearOperator.norm` caches).

Method: CGLS (Hestenes & Stiefel 1952; Paige & Saunders 1982, Sec. 7.1, "CGLS"), i.e.
conjugate gradients on the normal equations ``A^T A x = A^T b`` written so that only
``A`` and ``A^T`` are applied (never ``A^T A`` formed): one ``A`` and one ``A^T`` per
iteration for the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._backend import get_array_module

__all__ = ["cgls", "KrylovResult", "lanczos_norm_sq", "batch_norms"]


def batch_norms(a: Any) -> Any:
    """Per-item l2 norms of a batched array ``(B, ...)``, float64, on the array's device."""
    xp = get_array_module(a)
    flat = a.reshape(a.shape[0], -1)
    return xp.sqrt(xp.einsum("ij,ij->i", flat, flat).astype(np.float64))


@dataclass(eq=False)
class KrylovResult:
    """Output of :func:`cgls`.

    Attributes
    ----------
    x : array ``(B, *A.in_shape)``
        The solutions (zero off the mask).
    n_iter : ndarray of int ``(B,)``
        Iterations each item ran.
    converged : ndarray of bool ``(B,)``
        Whether its gradient norm reached the threshold.
    """

    x: Any
    n_iter: np.ndarray
    converged: np.ndarray


def cgls(
    A: Any,
    b: Any,
    *,
    mask: Any = None,
    x0: Any = None,
    max_iter: int | None = None,
    tol: float = 1e-10,
    atol: Any = None,
    callback: Any = None,
) -> KrylovResult:
    """Batched CGLS: ``x_i = argmin ||b_i - A x_i||`` (with ``supp x_i`` in ``mask_i``).

    Parameters
    ----------
    A : modelcs LinearOperator
        Applied as ``A @ x`` on batches ``(B, *A.in_shape)`` and ``A.T @ r``.
    b : array ``(B, *A.out_shape)``
        Right-hand sides (a batch; NumPy or CuPy).
    mask : bool array ``A.in_shape`` or ``(B, *A.in_shape)``, optional
        Restrict item ``i``'s unknowns to ``mask_i`` (the least-squares problem of
        ``A`` restricted to those columns); ``None`` = all columns.
    x0 : array ``(B, *A.in_shape)``, optional
        Warm start (projected onto the mask); default zero (minimum-norm solution).
    max_iter : int, optional
        Iteration cap per item; default ``2 * min(A.shape)``.
    tol : float
        Item ``i`` stops when ``||mask_i * A^T (b_i - A x_i)|| <= tol * ||mask_i * A^T b_i||``
        (relative gradient of the normal equations).
    atol : float or array ``(B,)``, optional
        Absolute gradient thresholds instead of ``tol * ||mask * A^T b||``.
    callback : callable, optional
        Called after every iteration with a dict ``{"iteration", "x", "active",
        "residual_norms"}`` (the iterates of the items that ran that iteration, their batch
        indices and residual norms ``||b_i - A x_i||``); a truthy return stops every item.

    Returns
    -------
    KrylovResult
        ``x``, ``n_iter`` and ``converged`` per item.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import MatrixOperator
    >>> A = MatrixOperator(np.random.default_rng(0).standard_normal((8, 3)))
    >>> x = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]])
    >>> res = cgls(A, A @ x)
    >>> bool(np.allclose(res.x, x)), res.converged.tolist()
    (True, [True, True])
    """
    xp = get_array_module(b)
    B = b.shape[0]
    if max_iter is None:
        max_iter = 2 * min(A.shape)
    shape = (-1,) + (1,) * len(A.in_shape)
    rshape = (-1,) + (1,) * len(A.out_shape)

    def restrict(v: Any) -> Any:
        return v if mask is None else xp.where(mask, v, 0)

    if mask is not None:
        # the restricted problem's operator A_S = A diag(mask): a LinearOperator of its own
        # (dot-tested in the test suite), so the iteration below is plain CGLS on A_S
        from .operators.base import MaskedOperator

        A = MaskedOperator(A, mask if mask.ndim == len(A.in_shape) else
                           xp.broadcast_to(mask, (B, *A.in_shape)))

    if x0 is None:
        x = xp.zeros((B, *A.in_shape), dtype=b.dtype)
        r = b
        s = restrict(A.T @ b)
        ref = batch_norms(s)
    else:
        x = restrict(x0).astype(b.dtype, copy=True)
        r = b - A @ x
        s = restrict(A.T @ r)
        ref = batch_norms(restrict(A.T @ b)) if atol is None else None
    stop = tol * ref if atol is None else xp.broadcast_to(xp.asarray(atol, dtype=np.float64), (B,))
    p = s
    gamma = batch_norms(s) ** 2
    n_iter = np.zeros(B, dtype=np.int64)
    for it in range(1, max_iter + 1):
        active = xp.sqrt(gamma) > stop
        act_np = np.asarray(active.get() if hasattr(active, "get") else active)
        if not act_np.any():
            break
        n_iter += act_np
        q = A @ p
        qq = batch_norms(q) ** 2
        alpha = xp.where(active & (qq > 0), gamma / xp.where(qq > 0, qq, 1.0), 0.0)
        x = x + alpha.reshape(shape).astype(x.dtype) * p
        r = r - alpha.reshape(rshape).astype(r.dtype) * q
        s = restrict(A.T @ r)
        gamma_new = batch_norms(s) ** 2
        beta = xp.where(active & (gamma > 0), gamma_new / xp.where(gamma > 0, gamma, 1.0), 0.0)
        p = s + beta.reshape(shape).astype(s.dtype) * p
        gamma = xp.where(active, gamma_new, gamma)
        if callback is not None:
            idx = np.flatnonzero(act_np)
            sel = xp.asarray(idx)
            if callback({"iteration": it, "x": x[sel], "active": idx,
                         "residual_norms": np.asarray(_host(batch_norms(r[sel])))}):
                break
    conv = xp.sqrt(gamma) <= stop
    conv_np = np.asarray(conv.get() if hasattr(conv, "get") else conv)
    return KrylovResult(x=x, n_iter=n_iter, converged=conv_np.astype(bool))


def _host(a: Any) -> Any:
    return a.get() if hasattr(a, "get") else a


def lanczos_norm_sq(op: Any, *, xp: Any = np, max_iter: int = 60) -> float:
    """Estimate of ``||op||_2^2``: Lanczos (full reorthogonalisation) on ``op^T op``.

    Runs on the smaller of ``op^T op`` / ``op op^T`` from a fixed start vector (seed 0, so
    the estimate is deterministic).  Returns ``theta + residual`` when the top Ritz pair
    converged (an upper bound in practice), else ``1.05 * theta``.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import MatrixOperator
    >>> A = np.diag([3.0, 1.0, 0.5])
    >>> round(lanczos_norm_sq(MatrixOperator(A)), 6)
    9.0
    """
    use_in = math.prod(op.in_shape) <= math.prod(op.out_shape)
    shape = op.in_shape if use_in else op.out_shape
    dim = math.prod(shape)

    def apply(v: Any) -> Any:
        if use_in:
            return op.T @ (op @ v)
        return op @ (op.T @ v)

    dt = op.dtype
    rng = np.random.default_rng(0)
    q = xp.asarray(rng.standard_normal((1, *shape)).astype(dt))
    q /= xp.sqrt(xp.sum(q * q))
    Q = [q]
    alphas: list[float] = []
    betas: list[float] = []
    theta, resid = 0.0, math.inf
    m = min(max_iter, dim)
    for j in range(m):
        w = apply(Q[j])
        a = float(xp.sum(w * Q[j]))
        alphas.append(a)
        for qi in Q:  # full reorthogonalisation (twice is enough)
            w = w - float(xp.sum(w * qi)) * qi
        for qi in Q:
            w = w - float(xp.sum(w * qi)) * qi
        b = float(xp.sqrt(xp.sum(w * w)))
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        evals, evecs = np.linalg.eigh(T)
        theta = float(evals[-1])
        resid = abs(b * float(evecs[-1, -1]))
        if theta <= 0.0:
            if b == 0.0:
                return 0.0  # op is zero on the Krylov space of a random vector: op == 0
        elif resid <= 1e-4 * theta or b <= 1e-12 * theta or j == m - 1:
            break
        betas.append(b)
        Q.append(w / b)
    if resid <= 0.05 * theta:
        return theta + resid
    return 1.05 * theta
