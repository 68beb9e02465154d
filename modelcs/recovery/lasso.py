"""The Lasso on linear operators: FISTA with adaptive restart and a duality-gap stop.

Solves, for every signal ``y_b`` of a batch and independently,

.. math::  \\min_z \\; \\tfrac12 \\|y_b - \\Phi z\\|_2^2 + \\lambda_b \\|z\\|_1
           \\quad (\\text{optionally } z_i = 0 \\text{ off a support } S_b),

the problem of steps 1 and 3 of Algorithm 2 of Gilbert, Zhang, Lee, Zhang and Lee,
*Towards Understanding the Invertibility of Convolutional Neural Networks* (Sec. 4.4), where
``Phi = W^T`` is the synthesis operator of a convolution ``W``.  Note the
factor ``1/2``: the paper writes ``||x - W^T z||^2 + lambda ||z||_1``, i.e. its ``lambda``
is twice the ``lam`` used here.

Method
------
FISTA (Beck & Teboulle 2009) with the gradient-based adaptive restart of O'Donoghue &
Candes (2015).  Each iteration costs one application of ``Phi`` and one of ``Phi^T``: the
products at the extrapolated point are linear combinations of those at the two last
iterates, so the residual ``y - Phi z`` and the correlation ``Phi^T (y - Phi z)`` of every
iterate come for free, and with them its duality gap.  The dual point is the scaled
residual ``theta = s r``, ``s = min(1, lam / ||Phi^T r||_inf)``, whose gap

    ``gap = (1 - s)^2 ||r||^2 / 2 + (lam ||z||_1 - s <z, Phi^T r>)``

is a sum of non-negative terms (no cancellation between primal and dual values).  The
iteration stops per signal once ``gap <= tol * objective``; converged signals leave the
batch, so the others run on a smaller batch.

The step is ``1/L`` with ``L`` an estimate of ``||Phi||^2`` (Lanczos on ``Phi^T Phi``, a
Krylov-accelerated power iteration, times a small safety factor), cached per operator
(``W`` and every ``W.T`` view share it).  Should the estimate ever be too small for a
step, the sufficient-decrease test of that step fails, ``L`` doubles for that signal and
its momentum restarts, so the method stays convergent.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import get_array_module, result_dtype, to_numpy
from .._validation import check_finite, check_positive_int
from ..operators.base import LinearOperator, _Adjoint, _Scaled

__all__ = ["lasso", "LassoResult", "lasso_lambda_max", "operator_norm_sq"]

_NORM_CACHE: weakref.WeakKeyDictionary[LinearOperator, float] = weakref.WeakKeyDictionary()
_SAFETY = 1.01


@dataclass
class LassoResult:
    """Solution of :func:`lasso` (per-signal arrays; scalars for a single signal).

    The fields are the constructor's parameters; :func:`lasso` builds it, users read it.

    Parameters
    ----------
    z : array, shape ``Phi.in_shape`` or ``(B, *Phi.in_shape)``
        The minimiser (exactly zero off ``support`` and where soft-thresholded).
    objective : float or ndarray (B,)
        ``0.5 ||y - Phi z||^2 + lam ||z||_1`` at ``z``.
    gap : float or ndarray (B,)
        Duality gap at ``z`` (an upper bound on ``objective - optimum``).
    n_iter : int or ndarray (B,)
        FISTA iterations (each one ``Phi`` and one ``Phi^T`` application).
    converged : bool or ndarray (B,)
        Whether ``gap <= tol * objective`` (or the gap reached the rounding floor).
    lam : float or ndarray (B,)
        The regularisation weights used.
    lipschitz : float
        The step constant ``L`` (estimate of ``||Phi||^2`` times a safety factor).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, lasso
    >>> W = ConvOperator.random(12, 4, 5, 24, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((3, 4, 24))
    >>> res = lasso(W.T, x, 0.1, tol=1e-8)
    >>> res.z.shape, res.objective.shape, bool(res.converged.all())
    ((3, 12, 20), (3,), True)
    >>> bool((res.gap <= 1e-8 * res.objective).all())
    True
    """

    z: Any
    objective: Any
    gap: Any
    n_iter: Any
    converged: Any
    lam: Any
    lipschitz: float

    @property
    def rel_gap(self) -> Any:
        """``gap / objective`` (0 where the objective is 0)."""
        obj = np.asarray(self.objective, dtype=np.float64)
        gap = np.asarray(self.gap, dtype=np.float64)
        out = np.divide(gap, obj, out=np.zeros_like(gap), where=obj > 0)
        return out if out.ndim else float(out)


# ----------------------------------------------------------------------- norms
def _base_operator(op: LinearOperator) -> tuple[LinearOperator, float]:
    """Strip adjoint views and scalings: ``||op|| = c * ||base||``."""
    c = 1.0
    while True:
        if isinstance(op, _Adjoint):
            op = op.op
        elif isinstance(op, _Scaled):
            c *= abs(op.c)
            op = op.op
        else:
            return op, c


def _lanczos_norm_sq(op: LinearOperator, xp: Any, *, max_iter: int = 60, seed: int = 0) -> float:
    """Largest eigenvalue of ``op^T op`` by Lanczos with full reorthogonalisation.

    Returns an estimate that is, with the safety margin added by the caller, an upper
    bound in practice: ``theta + residual`` when the top Ritz pair converged, else
    ``1.05 * theta``.
    """
    use_in = math.prod(op.in_shape) <= math.prod(op.out_shape)
    shape = op.in_shape if use_in else op.out_shape
    dim = math.prod(shape)

    def apply(v: Any) -> Any:
        if use_in:
            return op._adjoint(op._forward(v))
        return op._forward(op._adjoint(v))

    dt = op.dtype
    rng = np.random.default_rng(seed)
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


def operator_norm_sq(op: LinearOperator, *, xp: Any = np) -> float:
    """Estimate of ``||op||_2^2`` (largest eigenvalue of ``op^T op``), cached per operator.

    Computed by Lanczos on ``op^T op`` (or ``op op^T``, whichever is smaller); adjoint views
    and scalar multiples share the cache of their base operator.  Filters changed in place
    after the first call are not noticed.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> from modelcs.recovery.lasso import operator_norm_sq
    >>> W = ConvOperator.random(6, 2, 3, 16, seed=0)
    >>> exact = np.linalg.norm(W.to_dense(), 2) ** 2
    >>> bool(abs(operator_norm_sq(W.T) - exact) <= 1e-3 * exact)
    True
    """
    base, c = _base_operator(op)
    val = _NORM_CACHE.get(base)
    if val is None:
        val = _lanczos_norm_sq(base, xp)
        _NORM_CACHE[base] = val
    return c * c * val


# -------------------------------------------------------------------- helpers
def _bsum(a: Any) -> Any:
    """Per-signal sum over all non-batch axes, accumulated in float64."""
    return a.reshape(a.shape[0], -1).sum(axis=1, dtype=np.float64)


def _bdot(a: Any, b: Any) -> Any:
    return _bsum(a * b)


def _bcol(v: Any, ndim: int) -> Any:
    """A per-signal vector shaped to broadcast against ``(B, ...)`` arrays of ``ndim`` dims."""
    return v.reshape((v.shape[0],) + (1,) * (ndim - 1))


def _as_batch(name: str, a: Any, shape: tuple[int, ...], B: int | None) -> tuple[Any, bool]:
    if a.shape == shape:
        return a.reshape((1, *shape)), False
    if a.ndim == len(shape) + 1 and tuple(a.shape[1:]) == shape and (B is None or a.shape[0] == B):
        return a, True
    exp = f"{shape} or (B, {', '.join(map(str, shape))})"
    if B is not None:
        exp += f" with B={B}"
    raise ValueError(f"parameter '{name}' has shape {tuple(a.shape)}; expected {exp}")


def lasso_lambda_max(Phi: LinearOperator, y: Any, *, support: Any = None) -> Any:
    """``lam_max = max |Phi^T y|`` (over ``support``): the smallest ``lam`` with solution 0.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> from modelcs.recovery.lasso import lasso_lambda_max
    >>> W = ConvOperator.random(4, 2, 3, 10, seed=0)
    >>> y = np.ones((2, 10))
    >>> bool(np.isclose(lasso_lambda_max(W.T, y), np.abs(W @ y).max()))
    True
    """
    if not isinstance(Phi, LinearOperator):
        raise TypeError(f"parameter 'Phi' must be a modelcs LinearOperator; got {type(Phi)}")
    xp = get_array_module(y)
    if not hasattr(y, "shape"):
        y = np.asarray(y)
    yb, batched = _as_batch("y", y, Phi.out_shape, None)
    check_finite("y", yb)
    c = xp.abs(Phi._adjoint(yb.astype(result_dtype(Phi.dtype, yb.dtype, "y"), copy=False)))
    if support is not None:
        mb, _ = _as_batch("support", xp.asarray(support), Phi.in_shape, None)
        c = c * mb
    out = to_numpy(c.reshape(c.shape[0], -1).max(axis=1)).astype(np.float64)
    return out if batched else float(out[0])


# ---------------------------------------------------------------------- solver
def lasso(
    Phi: LinearOperator,
    y: Any,
    lam: Any,
    *,
    support: Any = None,
    z0: Any = None,
    max_iter: int = 5000,
    tol: float = 1e-6,
    restart: bool = True,
) -> LassoResult:
    """Minimise ``0.5 ||y - Phi z||^2 + lam ||z||_1`` for a batch of signals (FISTA).

    Step 1 (and, with ``support``, step 3) of Algorithm 2 of the invertibility paper
    (Sec. 4.4), with ``Phi = W^T``; see the module docstring for the method.

    Parameters
    ----------
    Phi : LinearOperator
        The measurement (synthesis) operator, e.g. ``W.T`` of a :class:`ConvOperator`.
        Codes ``z`` have shape ``Phi.in_shape``.
    y : array, shape ``Phi.out_shape`` or ``(B, *Phi.out_shape)``
        Signals (NumPy or CuPy; must be finite).
    lam : float or array of shape (B,)
        Non-negative weight(s) of the l1 term (the paper's ``lambda / 2``).  A signal with
        ``lam >= max|Phi^T y|`` gets ``z = 0`` exactly, without iterations.
    support : bool array, shape ``Phi.in_shape`` or ``(B, *Phi.in_shape)``, optional
        Restrict ``z`` to these entries (zero elsewhere), as in step 3 of Algorithm 2.
    z0 : array, optional
        Starting point (projected onto ``support``); default 0.
    max_iter : int, default 5000
        Iteration cap per signal.
    tol : float, default 1e-6
        Stop when the duality gap is ``<= tol * objective``.  The gap is also accepted as
        converged once below the rounding floor ``10 * eps * ||y||^2 / 2`` of the dtype
        (relevant for float32, and for ``lam = 0`` with ``y`` in the range of ``Phi``).
    restart : bool, default True
        Adaptive (gradient) restart of the momentum.

    Returns
    -------
    LassoResult
        ``z``, ``objective``, ``gap``, ``n_iter``, ``converged`` (per signal).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, lasso
    >>> W = ConvOperator.random(24, 8, 5, 32, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> z_true = np.zeros(W.out_shape); z_true[rng.choice(24, 4, replace=False), 3] = 1.0
    >>> x = W.T @ z_true
    >>> res = lasso(W.T, x, 0.01, tol=1e-10)
    >>> bool(res.converged), bool(res.gap <= 1e-10 * res.objective)
    (True, True)
    >>> bool(lasso(W.T, x, 10.0).z.any())      # lam >= lam_max: exactly zero
    False
    """
    if not isinstance(Phi, LinearOperator):
        raise TypeError(f"parameter 'Phi' must be a modelcs LinearOperator; got {type(Phi)}")
    max_iter = check_positive_int("max_iter", max_iter)
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise TypeError(f"parameter 'tol' must be a real number; got {tol!r}")
    if not (math.isfinite(float(tol)) and tol >= 0):
        raise ValueError(f"parameter 'tol' must be a finite number >= 0; got {tol!r}")

    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        y = np.asarray(y)
    xp = get_array_module(y)
    dt = result_dtype(Phi.dtype, y.dtype, "y")
    yb, batched = _as_batch("y", y, Phi.out_shape, None)
    check_finite("y", yb)
    yb = xp.ascontiguousarray(yb.astype(dt, copy=False))
    B = yb.shape[0]

    # --- lam: scalar or per signal
    lam_np = np.asarray(to_numpy(lam) if hasattr(lam, "shape") else lam)
    if lam_np.dtype.kind not in "fiu" or lam_np.ndim > 1:
        raise TypeError(f"parameter 'lam' must be a real number or a 1-D array; got {lam!r}")
    lam_np = lam_np.astype(np.float64)
    if lam_np.ndim == 1 and lam_np.shape[0] not in (1, B):
        raise ValueError(
            f"parameter 'lam' has shape {lam_np.shape}; expected a scalar or shape ({B},) "
            f"(one weight per signal)"
        )
    if not np.all(np.isfinite(lam_np)) or np.any(lam_np < 0):
        raise ValueError(f"parameter 'lam' must be finite and >= 0; got {lam!r}")
    lam_b = np.broadcast_to(lam_np, (B,)).copy()

    # --- support mask
    mask = None
    if support is not None:
        if not hasattr(support, "dtype"):
            support = np.asarray(support)
        if support.dtype != np.bool_:
            raise TypeError(
                f"parameter 'support' must be a boolean mask; got dtype {support.dtype}"
            )
        sb, _ = _as_batch("support", xp.asarray(support), Phi.in_shape, None)
        if sb.shape[0] not in (1, B):
            raise ValueError(
                f"parameter 'support' has shape {tuple(support.shape)}; expected "
                f"{Phi.in_shape} or ({B}, {', '.join(map(str, Phi.in_shape))})"
            )
        mask = xp.ascontiguousarray(xp.broadcast_to(sb, (B, *Phi.in_shape)))

    # --- z0
    zinit = None
    if z0 is not None:
        if not hasattr(z0, "shape"):
            z0 = np.asarray(z0)
        z0b, _ = _as_batch("z0", xp.asarray(z0), Phi.in_shape, None)
        if z0b.shape[0] not in (1, B):
            raise ValueError(
                f"parameter 'z0' has shape {tuple(z0.shape)}; expected {Phi.in_shape} or "
                f"({B}, {', '.join(map(str, Phi.in_shape))})"
            )
        check_finite("z0", z0b)
        zinit = xp.array(xp.broadcast_to(z0b.astype(dt), (B, *Phi.in_shape)))
        if mask is not None:
            zinit *= mask

    # --- correlations and lam_max
    c0 = Phi._adjoint(yb)  # Phi^T y
    if mask is not None:
        c0 = c0 * mask
    lam_max = to_numpy(xp.abs(c0).reshape(B, -1).max(axis=1)).astype(np.float64)
    yy = to_numpy(_bdot(yb, yb))

    z_out = xp.zeros((B, *Phi.in_shape), dtype=dt)
    obj_out = 0.5 * yy.copy()
    gap_out = np.zeros(B)
    it_out = np.zeros(B, dtype=np.int64)
    conv_out = np.ones(B, dtype=bool)
    L0 = operator_norm_sq(Phi, xp=xp) * _SAFETY

    act = np.flatnonzero(lam_b < lam_max)
    if act.size and L0 > 0:
        _fista(
            Phi, xp, dt, yb, c0, mask, zinit, lam_b, yy, L0, act, max_iter, float(tol),
            restart, z_out, obj_out, gap_out, it_out, conv_out,
        )

    def _ret(a: Any) -> Any:
        return a if batched else a[0].item()

    return LassoResult(
        z=z_out if batched else z_out[0],
        objective=_ret(obj_out),
        gap=_ret(gap_out),
        n_iter=_ret(it_out),
        converged=_ret(conv_out),
        lam=_ret(lam_b),
        lipschitz=float(L0),
    )


def _fista(
    Phi: LinearOperator, xp: Any, dt: Any, y: Any, c0: Any, mask: Any, zinit: Any,
    lam_all: np.ndarray, yy_all: np.ndarray, L0: float, act: np.ndarray, max_iter: int,
    tol: float, restart: bool, z_out: Any, obj_out: np.ndarray, gap_out: np.ndarray,
    it_out: np.ndarray, conv_out: np.ndarray,
) -> None:
    """FISTA over the signals ``act``; writes results into the ``*_out`` arrays."""
    nd = z_out.ndim
    eps = float(np.finfo(dt).eps)
    idx_np = act.copy()
    idx = xp.asarray(idx_np)
    y = y[idx]
    c0 = c0[idx]
    mask = mask[idx] if mask is not None else None
    lam = lam_all[idx_np]
    floor = 10 * eps * 0.5 * yy_all[idx_np]
    nb = idx_np.size
    L = np.full(nb, L0)
    t = np.ones(nb)

    if zinit is not None:
        z = zinit[idx]
        Pz = Phi._forward(z)
        gz = Phi._adjoint(Pz) - c0  # gradient Phi^T (Phi z - y)
    else:
        z = xp.zeros((nb, *z_out.shape[1:]), dtype=dt)
        Pz = xp.zeros_like(y)
        gz = -c0
    z_prev, Pz_prev, gz_prev = z, Pz, gz
    beta = np.zeros(nb)
    n_it = np.zeros(nb, dtype=np.int64)
    slack = 100 * eps

    for _ in range(max_iter):
        bc = _bcol(xp.asarray(beta.astype(dt)), nd)
        if np.any(beta):
            v = z + bc * (z - z_prev)
            gv = gz + bc * (gz - gz_prev)
            Pv = Pz + _bcol(bc.reshape(-1), y.ndim) * (Pz - Pz_prev)
        else:
            v, gv, Pv = z, gz, Pz
        Lc = _bcol(xp.asarray((1.0 / L).astype(dt)), nd)
        u = v - Lc * gv
        thr = _bcol(xp.asarray((lam / L).astype(dt)), nd)
        z_new = u - xp.clip(u, -thr, thr)
        if mask is not None:
            z_new *= mask
        Pz_new = Phi._forward(z_new)
        gz_new = Phi._adjoint(Pz_new) - c0
        n_it += 1

        # --- duality gap at z_new (c = Phi^T r = -gz_new, restricted to the support)
        r = y - Pz_new
        rr = to_numpy(_bdot(r, r))
        l1 = to_numpy(_bsum(xp.abs(z_new)))
        c = -gz_new if mask is None else -gz_new * mask
        cinf = to_numpy(xp.abs(c).reshape(nb, -1).max(axis=1)).astype(np.float64)
        zc = to_numpy(_bdot(z_new, c))
        s = np.minimum(1.0, lam / np.maximum(cinf, 1e-300))
        s[cinf == 0] = 1.0
        obj = 0.5 * rr + lam * l1
        gap = np.maximum(0.5 * (1 - s) ** 2 * rr + (lam * l1 - s * zc), 0.0)

        # --- sufficient decrease of the step (guards an underestimated L)
        d = z_new - v
        rv = y - Pv
        fv = 0.5 * to_numpy(_bdot(rv, rv))
        q = fv + to_numpy(_bdot(gv, d)) + 0.5 * L * to_numpy(_bdot(d, d))
        bad = 0.5 * rr > q + slack * (0.5 * yy_all[idx_np] + fv)
        L = np.where(bad, 2.0 * L, L)

        # --- momentum with adaptive restart
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        t = t_new
        if restart:
            # restart when the step direction opposes the momentum: <v - z_new, z_new - z> > 0
            rs = to_numpy(_bdot(v - z_new, z_new - z)) > 0
            rs |= bad
        else:
            rs = bad
        t[rs] = 1.0
        beta[rs] = 0.0

        z_prev, Pz_prev, gz_prev = z, Pz, gz
        z, Pz, gz = z_new, Pz_new, gz_new

        done = (gap <= tol * obj) | (gap <= floor)
        out_of_iters = n_it >= max_iter
        fin = done | out_of_iters
        if fin.any():
            sel = np.flatnonzero(fin)
            gi = idx_np[sel]
            z_out[xp.asarray(gi)] = z[xp.asarray(sel)]
            obj_out[gi] = obj[sel]
            gap_out[gi] = gap[sel]
            it_out[gi] = n_it[sel]
            conv_out[gi] = done[sel]
            keep = np.flatnonzero(~fin)
            if keep.size == 0:
                return
            kx = xp.asarray(keep)
            z, Pz, gz = z[kx], Pz[kx], gz[kx]
            z_prev, Pz_prev, gz_prev = z_prev[kx], Pz_prev[kx], gz_prev[kx]
            y, c0 = y[kx], c0[kx]
            if mask is not None:
                mask = mask[kx]
            idx_np = idx_np[keep]
            lam, floor, L, t, beta, n_it = (
                lam[keep], floor[keep], L[keep], t[keep], beta[keep], n_it[keep]
            )
            nb = keep.size
