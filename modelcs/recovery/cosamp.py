"""Model-based CoSaMP (Baraniuk, Cevher, Duarte, Hegde 2010, Algorithm 1).

The stronger baseline next to :func:`~modelcs.iht`, with the same sparsity models::

    e      = Phi^T r                              (proxy)
    Omega  = supp(M_2(e, k))                      (best approximation in M_k^2)
    T      = Omega  U  supp(z)                    (merge)
    b      = argmin ||y - Phi b||  on supp(b) in T (least squares on the support)
    z      = M(b, k)                               (prune)
    r      = y - Phi z

``M_k^2`` (sums of two model points) is projected onto exactly: for :class:`ModelSparse`
it is "at most two nonzeros per unit, at most ``2k`` in total"; for :class:`TopKSparse`
``2k``-sparse; for :class:`BlockSparse` ``2k`` blocks.  The least-squares step is solved
matrix-free and batched by CGLS on the support (warm-started from the current code), so
the operator is never densified.

Stopping (per signal): relative residual ``<= tol`` or relative change of the code
``<= tol`` (after the least-squares step on the right support the code is exact up to the
CGLS tolerance, so no error estimate is needed here as it is for IHT).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import to_numpy
from .._validation import check_nonnegative_int
from ..models import SparsityModel
from ..operators.base import LinearOperator
from .iht import IHTResult, _Active, _check_common, _norms, _prepare

__all__ = ["cosamp"]


def _cgls(Phi: LinearOperator, y: Any, mask: Any, x0: Any, n_iter: int, stop: Any, xp: Any) -> Any:
    """Batched CGLS for ``min ||y_b - Phi x_b||`` with ``x_b`` supported on ``mask_b``.

    Signal ``b`` stops when its restricted gradient norm is ``<= stop[b]``.
    """
    shape = (-1,) + (1,) * (mask.ndim - 1)
    x = xp.where(mask, x0, 0)
    r = y - Phi @ x
    s = xp.where(mask, Phi.T @ r, 0)
    p = s
    gamma = _norms(s) ** 2
    for _ in range(n_iter):
        active = xp.sqrt(gamma) > stop
        if not bool(active.any()):
            break
        q = Phi @ p
        qq = _norms(q) ** 2
        alpha = xp.where(active & (qq > 0), gamma / xp.where(qq > 0, qq, 1.0), 0.0)
        x = x + alpha.reshape(shape).astype(x.dtype) * p
        r = r - alpha.reshape((-1,) + (1,) * (q.ndim - 1)).astype(r.dtype) * q
        s = xp.where(mask, Phi.T @ r, 0)
        gamma_new = _norms(s) ** 2
        beta = xp.where(active & (gamma > 0), gamma_new / xp.where(gamma > 0, gamma, 1.0), 0.0)
        p = s + beta.reshape(shape).astype(s.dtype) * p
        gamma = xp.where(active, gamma_new, gamma)
    return x


def cosamp(
    Phi: LinearOperator,
    y: Any,
    model: SparsityModel,
    *,
    max_iter: int = 50,
    tol: float = 1e-6,
    z0: Any = None,
    cg_iter: int | None = None,
    cg_tol: float = 1e-10,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> IHTResult:
    """Model-based CoSaMP, batched with per-signal stopping.

    Parameters
    ----------
    Phi, y, model, max_iter, tol, z0, callback
        As for :func:`~modelcs.iht`.
    cg_iter : int, optional
        Maximum CGLS iterations per least-squares step (default ``max(20, 3 * 3k)``,
        enough for the ``<= 3k``-dimensional support problem).
    cg_tol : float
        CGLS stops when the gradient norm on the support is ``<= cg_tol * ||Phi^T y||``.

    Returns
    -------
    IHTResult
        ``n_iter`` counts outer CoSaMP iterations; ``diverged`` is set only if the
        residual became non-finite.

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(16, 8, 5, 32, seed=0)
    >>> model = ModelSparse(3)
    >>> Z = model.sample(W.out_shape, 5, seed=1)
    >>> res = cosamp(W.T, W.T @ Z, model)
    >>> bool(res.converged.all()), float(abs(res.z - Z).max()) < 1e-8
    (True, True)
    """
    _, n_max, tol = _check_common(1.0, max_iter, tol)
    if cg_iter is None:
        n_cg = max(20, 9 * model.k)
    else:
        n_cg = check_nonnegative_int("cg_iter", cg_iter)
    if not (isinstance(cg_tol, float | int) and math.isfinite(cg_tol) and cg_tol >= 0):
        raise ValueError(f"parameter 'cg_tol' must be a finite number >= 0; got {cg_tol!r}")
    yb, z0b, batched, xp = _prepare(Phi, y, model, z0, name="cosamp")
    B = yb.shape[0]
    dt = yb.dtype

    z_out = xp.zeros((B, *Phi.in_shape), dtype=dt) if z0b is None else z0b.copy()
    n_iter = np.zeros(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    diverged = np.zeros(B, dtype=bool)
    r = yb - Phi @ z_out if z0b is not None else yb
    res = to_numpy(_norms(r))
    ynorm = to_numpy(_norms(yb))
    hist = [res.copy()]
    # CGLS tolerance relative to ||Phi^T y|| (scale-free, independent of the warm start)
    cg_stop = cg_tol * _norms(Phi.T @ yb)
    st = _Active(idx=np.arange(B), z=z_out.copy(), y=yb, r=r, ynorm=ynorm, cg_stop=cg_stop)
    done0 = res <= tol * ynorm
    converged[done0] = True
    if done0.any():
        st.keep(~done0, xp)

    stop_all = False
    for it in range(1, n_max + 1):
        if st.idx.size == 0 or stop_all:
            break
        e = Phi.T @ st.r
        T = model._support_sum(e, 2) | (st.z != 0)
        b = _cgls(Phi, st.y, T, st.z, n_cg, st.cg_stop, xp)
        z_new = model._project_batch(b)
        r_new = st.y - Phi @ z_new
        res = to_numpy(_norms(r_new))
        change = to_numpy(_norms(z_new - st.z))
        znorm = to_numpy(_norms(z_new))
        st.z, st.r = z_new, r_new
        n_iter[st.idx] = it
        row = np.full(B, np.nan)
        row[st.idx] = res
        hist.append(row)
        finite = np.isfinite(res)
        conv = finite & ((res <= tol * st.ynorm) | (change <= tol * znorm))
        div = ~finite
        if callback is not None:
            info = {"iteration": it, "z": st.z, "active": st.idx, "residual_norms": res}
            stop_all = bool(callback(info))
        fin = conv | div
        if stop_all or it == n_max:
            fin = np.ones_like(fin)
        if fin.any():
            ok = fin & ~div
            if ok.any():
                z_out[xp.asarray(st.idx[ok])] = st.z[xp.asarray(ok)]
            converged[st.idx[conv]] = True
            diverged[st.idx[div]] = True
            st.keep(~fin, xp)

    residual_norms = np.array(hist)
    if not batched:
        return IHTResult(
            z_out[0], int(n_iter[0]), bool(converged[0]), bool(diverged[0]), residual_norms[:, 0]
        )
    return IHTResult(z_out, n_iter, converged, diverged, residual_norms)
