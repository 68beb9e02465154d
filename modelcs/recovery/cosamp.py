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
matrix-free and batched by LSQR (:func:`modelcs._krylov.lsqr`) on the support
(warm-started from the current code), so the operator is never densified.

Stopping (per signal): relative residual ``<= tol`` or relative change of the code
``<= tol`` (after the least-squares step on the right support the code is exact up to the
LSQR tolerance, so no error estimate is needed here as it is for IHT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import to_numpy
from .._krylov import lsqr
from .._validation import check_max_iter, check_nonnegative_int, check_tol
from ..models import SparsityModel
from ._common import Active, RecoveryResult, batch_norms, prepare

__all__ = ["cosamp"]

_norms = batch_norms


def cosamp(
    Phi: Any,
    y: Any,
    model: SparsityModel,
    *,
    max_iter: int = 50,
    tol: float = 1e-6,
    z0: Any = None,
    cg_iter: int | None = None,
    cg_tol: float = 1e-10,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> RecoveryResult:
    """Model-based CoSaMP, batched with per-signal stopping.

    Parameters
    ----------
    Phi, y, model, max_iter, tol, z0, callback
        As for :func:`~modelcs.iht` (``Phi`` anything :func:`~modelcs.as_operator` accepts).
    cg_iter : int, optional
        Maximum LSQR iterations per least-squares step (default ``max(20, 3 * 3k)``,
        enough for the ``<= 3k``-dimensional support problem).
    cg_tol : float
        LSQR stops when the gradient norm on the support is ``<= cg_tol * ||Phi^T y||``.

    Returns
    -------
    RecoveryResult
        ``n_iter`` counts outer CoSaMP iterations; ``diverged`` is set only if the
        residual became non-finite.

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(16, 8, 5, 32, rng=0)
    >>> model = ModelSparse(3)
    >>> Z = model.sample(W.out_shape, 5, rng=1)
    >>> res = cosamp(W.T, W.T @ Z, model)
    >>> bool(res.converged.all()), float(abs(res.z - Z).max()) < 1e-8
    (True, True)
    """
    n_max, tol = check_max_iter(max_iter), check_tol(tol)
    cg_tol = check_tol(cg_tol, "cg_tol")
    prep = prepare(Phi, y, z0, model=model)
    Phi, yb, z0b, xp = prep.Phi, prep.yb, prep.z0b, prep.xp
    if cg_iter is None:
        n_cg = max(20, 9 * model.k) if model.k is not None else 2 * min(Phi.shape)
    else:
        n_cg = check_nonnegative_int("cg_iter", cg_iter)
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
    final = res.copy()  # residual of the returned code, per signal
    # LSQR stops at ||Phi_T^T r|| <= cg_tol ||Phi^T y|| (scale-free, independent of warm start)
    cg_stop = cg_tol * _norms(Phi.T @ yb)
    st = Active(idx=np.arange(B), z=z_out.copy(), y=yb, r=r, ynorm=ynorm, cg_stop=cg_stop)
    done0 = res <= tol * ynorm
    converged[done0] = True
    if done0.any():
        st.keep(~done0, xp)

    stop_all = False
    for it in range(1, n_max + 1):
        if st.idx.size == 0 or stop_all:
            break
        e = Phi.T @ st.r
        T = model.support_sum(e, 2) | (st.z != 0)
        b = lsqr(Phi, st.y, mask=T, x0=st.z, max_iter=n_cg, atol=0.0, btol=0.0,
                 gtol=st.cg_stop).x
        z_new = model.project_batch(b)
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
                final[st.idx[ok]] = res[ok]
            converged[st.idx[conv]] = True
            diverged[st.idx[div]] = True
            st.keep(~fin, xp)

    return prep.result(z_out, n_iter, converged, diverged, final, hist)
