"""Model-based Iterative Hard Thresholding.

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks*, Algorithm 1 (Sec. 2.3) and Theorem 3.3.

``z <- M(z + mu * Phi^T (y - Phi z), k)`` for a modelcs operator ``Phi`` (in the paper
``Phi = W^T``) and a sparsity model ``M`` from :mod:`modelcs.models`.  One iteration from
``z = 0`` with ``mu = 1`` is ``M(W y, k)``: a convolution layer followed by max pooling and
unpooling (:func:`cnn_layer`), and ``W^T M(W x, k)`` is the one-step reconstruction of
Theorem 3.3.

A batch of signals is solved in one vectorised call: every iteration applies ``Phi`` and
``Phi^T`` once to the whole *active* batch, and signals that have converged (or diverged)
are removed from the active batch, so they stop costing work.  When ``Phi`` is the
adjoint ``W.T`` of a :class:`~modelcs.ConvOperator`, products ``Phi @ z`` with sparse ``z``
(iterates, NIHT search directions, CoSaMP's LSQR directions) add the shifted filters
directly (the operator's sparse-code path, ``nnz * M * l^d`` instead of ``K n M l^d``
multiply-adds; same result up to rounding).

Stopping rule (decision; the paper runs a fixed number of iterations).  Signal ``b``
stops after iteration ``t`` and is reported ``converged`` when its residual is exactly
zero or when the a-posteriori estimate of its distance to the limit of the iteration is
small::

    c_t = ||z^t - z^{t-1}||,   rho = max(c_t / c_{t-1}, c_{t-1} / c_{t-2}, 0.5),
    c_t * rho / (1 - rho) <= tol * ||z^t||        (rho < 1)

(the distance to the limit of a sequence contracting by ``rho`` per step).  For exact
measurements the limit is the true code, so ``tol`` bounds the relative code error; for
noisy measurements it is the stagnation rule.  A criterion on the relative residual alone
(``||y - Phi z|| <= tol ||y||``) was tried and rejected: it leaves code errors up to
``tol * (1 + delta) / (1 - delta)``, e.g. 3.6 % of the Figure 2 codes above 1e-6.

A signal *diverges* when its residual exceeds
``1e4`` times its initial residual (or ``||y||``, whichever is larger); it is then
stopped, reported ``converged=False`` / ``diverged=True``, its returned code is the
iterate with the smallest residual seen (always finite), and one
:class:`IHTDivergenceWarning` is emitted per call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import to_numpy
from .._validation import check_max_iter, check_tol
from ..models import SparsityModel
from ..operators.base import LinearOperator
from ._common import Active, RecoveryResult, batch_norms, check_step, prepare

__all__ = ["iht", "IHTDivergenceWarning"]

_norms = batch_norms

DIVERGENCE_FACTOR = 1e4
"""A residual this many times the initial one marks a signal as diverged."""

_RHO_FLOOR = 0.5  # contraction assumed at least this slow in the stopping estimate
_NIHT_C = 0.01  # B&D 2010: omega = (1 - c) ||d||^2 / ||Phi d||^2
_NIHT_KAPPA = 2.0  # B&D 2010: shrink mu by 1 / (kappa (1 - c)), kappa > 1 / (1 - c)
_NIHT_MAX_BACKTRACK = 60


class IHTDivergenceWarning(UserWarning):
    """IHT diverged on some signals (step too large for the operator's norm).

    Issued by :func:`iht` when the residual of a signal grows past a fixed multiple of
    its initial value; the result's ``diverged`` field says which signals.  Use
    ``step="normalized"`` (normalized IHT, Blumensath and Davies 2010) or a step below
    ``1 / ||Phi||^2``.

    Parameters
    ----------
    *args : object
        The warning message, as for any :class:`Warning`.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from modelcs import ConvOperator, IHTDivergenceWarning, TopKSparse, iht
    >>> W = ConvOperator.random(8, 4, 3, 16, rng=0)
    >>> y = W.T @ TopKSparse(3).sample(W.out_shape, 1, rng=1)[0]
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = iht(W.T, y, TopKSparse(3), step=50.0, max_iter=50)
    >>> bool(res.diverged), any(issubclass(w.category, IHTDivergenceWarning) for w in caught)
    (True, True)
    """


def iht(
    Phi: Any,
    y: Any,
    model: SparsityModel,
    *,
    step: float | str = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    z0: Any = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> RecoveryResult:
    """Model-based IHT (invertibility Algorithm 1), batched with per-signal stopping.

    Iterates ``z <- M(z + mu Phi^T (y - Phi z), k)`` where ``M`` is ``model``'s projection.

    Parameters
    ----------
    Phi : LinearOperator or anything :func:`~modelcs.as_operator` accepts
        Measurement operator with ``Phi.in_shape`` the code shape (``W.T`` for a
        :class:`~modelcs.ConvOperator` ``W``; an ``m x n`` matrix ``A`` for the textbook
        problem ``y = A x``).
    y : array, shape ``Phi.out_shape`` (or flat) or ``(B, *Phi.out_shape)``
        Measurements (finite; NumPy, CuPy or torch -- the code comes back in the same kind).
    model : ModelSparse, TopKSparse or BlockSparse
    step : float or "normalized"
        Fixed step ``mu`` (the paper's unit step by default; converges when
        ``||Phi||^2 < 1`` on the model, roughly), or ``"normalized"``: normalized IHT
        (Blumensath & Davies 2010) -- ``mu = ||g_G||^2 / ||Phi g_G||^2`` with ``g_G`` the
        gradient on the current support, and, when the support changes, the backtracking
        safeguard ``mu <= (1 - c) ||d||^2 / ||Phi d||^2`` (``c = 0.01``; ``mu`` divided by
        ``kappa (1 - c)``, ``kappa = 2``) that guarantees convergence.
    max_iter : int
        Maximum number of iterations (projections) per signal.
    tol : float
        Relative residual / stagnation tolerance (see the module docstring).
    z0 : array, optional
        Starting code(s), shape ``Phi.in_shape`` or ``(B, *Phi.in_shape)``; default zero.
    callback : callable, optional
        Called after every iteration with a dict ``{"iteration", "z", "active",
        "residual_norms"}`` (the active signals' iterates, their batch indices and
        residuals); a truthy return value stops all signals.

    Returns
    -------
    RecoveryResult
        ``z``, ``n_iter``, ``converged``, ``diverged``, ``residual_norm`` (final) and the
        history ``residual_norms`` ``(T + 1, B)`` (``(T + 1,)`` for one signal).

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(16, 8, 5, 32, rng=0)
    >>> model = ModelSparse(3)
    >>> Z = model.sample(W.out_shape, 5, rng=1)
    >>> res = iht(W.T, W.T @ Z, model, step="normalized", max_iter=100)
    >>> bool(res.converged.all()), float(abs(res.z - Z).max()) < 1e-5
    (True, True)
    """
    mu = check_step(step)
    n_max, tol = check_max_iter(max_iter), check_tol(tol)
    prep = prepare(Phi, y, z0, model=model)
    Phi, yb, z0b, xp = prep.Phi, prep.yb, prep.z0b, prep.xp
    B = yb.shape[0]
    dt = yb.dtype
    project = model.project_batch  # code shape validated once in prepare

    z_out = xp.zeros((B, *Phi.in_shape), dtype=dt) if z0b is None else z0b.copy()
    n_iter = np.zeros(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    diverged = np.zeros(B, dtype=bool)

    z = z_out.copy() if z0b is not None else z_out
    r = yb - Phi @ z if z0b is not None else yb
    res = to_numpy(_norms(r))
    ynorm = to_numpy(_norms(yb))
    hist = [res.copy()]
    final = res.copy()  # residual of the returned code, per signal
    st = Active(
        idx=np.arange(B),
        z=z,
        y=yb,
        r=r,
        ynorm=ynorm,
        ref=np.maximum(np.maximum(ynorm, res), np.finfo(np.float64).tiny),
        best_res=res.copy(),
        best_is_cur=np.ones(B, dtype=bool),
        z_best=None,
        z_prev=None,
        support=None,
        last_change=np.full(B, np.inf),
        last_ratio=np.full(B, np.inf),
    )
    # zero residual already at the start (e.g. y = 0 with z0 = 0)
    done0 = res <= tol * ynorm
    converged[done0] = True
    if done0.any():
        st.keep(~done0, xp)
    zero_start = z0b is None

    stop_all = False
    for it in range(1, n_max + 1):
        if st.idx.size == 0 or stop_all:
            break
        g = Phi.T @ st.r
        if mu is not None:
            if xp.may_share_memory(g, st.r) or xp.may_share_memory(g, st.y):
                g = g.copy()  # an operator may hand back its input; never modify y
            if mu != 1.0:
                g *= mu
            g += st.z  # saves two temporaries per iteration
            z_new = project(g)
            r_new = st.y - Phi @ z_new
        else:
            z_new, r_new = _niht_step(Phi, project, st, g, zero_start and it == 1, xp)
        with np.errstate(over="ignore", invalid="ignore"):
            change = to_numpy(_norms(z_new - st.z))
            znorm = to_numpy(_norms(z_new))
        res = to_numpy(_norms(r_new))
        st.z_prev, st.z, st.r = st.z, z_new, r_new
        n_iter[st.idx] = it
        row = np.full(B, np.nan)
        row[st.idx] = res
        hist.append(row)

        # best-iterate bookkeeping (copies only when a residual stops improving)
        finite = np.isfinite(res)
        improved = finite & (res < st.best_res)
        save = st.best_is_cur & ~improved
        if save.any():
            if st.z_best is None:
                st.z_best = xp.zeros_like(st.z)
            st.z_best[xp.asarray(save)] = st.z_prev[xp.asarray(save)]
        st.best_is_cur = improved
        st.best_res = np.where(improved, res, st.best_res)

        # a-posteriori estimate of the distance to the limit: with contraction factor
        # rho (largest of the last two change ratios, at least 0.5) it is
        # change * rho / (1 - rho) (>= change)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(st.last_change > 0, change / st.last_change, np.inf)
        rho = np.maximum(np.maximum(ratio, st.last_ratio), _RHO_FLOOR)
        est = np.where(rho < 1, change * rho / np.where(rho < 1, 1 - rho, 1.0), np.inf)
        est = np.where(change == 0, 0.0, est)
        st.last_change, st.last_ratio = change, ratio
        conv = finite & ((res == 0) | (est <= tol * znorm))
        div = ~finite | ~np.isfinite(change) | (res > DIVERGENCE_FACTOR * st.ref)
        conv &= ~div
        if callback is not None:
            info = {"iteration": it, "z": st.z, "active": st.idx, "residual_norms": res}
            stop_all = bool(callback(info))
        done = conv | div
        if done.any() or stop_all or it == n_max:
            fin = np.ones_like(done) if (stop_all or it == n_max) else done
            _write_out(z_out, st, fin, div, xp)
            cur = fin & ~(div & ~st.best_is_cur)
            final[st.idx[cur]] = res[cur]
            old = fin & div & ~st.best_is_cur
            final[st.idx[old]] = st.best_res[old]
            converged[st.idx[conv]] = True
            diverged[st.idx[div]] = True
            st.keep(~fin, xp)

    if st.idx.size:  # max_iter == 0
        _write_out(z_out, st, np.ones(st.idx.size, dtype=bool), np.zeros(st.idx.size, bool), xp)
    if diverged.any():
        warnings.warn(
            f"IHT diverged on {int(diverged.sum())} of {B} signal(s) (residual grew by more "
            f"than {DIVERGENCE_FACTOR:g}x); returned their lowest-residual iterates. The step "
            "is too large for this operator's norm: use step='normalized', a smaller step, "
            "or normalized filters.",
            IHTDivergenceWarning,
            stacklevel=2,
        )
    return prep.result(z_out, n_iter, converged, diverged, final, hist)


def _write_out(z_out: Any, st: Active, fin: np.ndarray, div: np.ndarray, xp: Any) -> None:
    """Store finished signals: the current iterate, or the best one if diverged."""
    if not fin.any():
        return
    cur = fin & ~(div & ~st.best_is_cur)
    if cur.any():
        z_out[xp.asarray(st.idx[cur])] = st.z[xp.asarray(cur)]
    old = fin & div & ~st.best_is_cur
    if old.any():
        z_out[xp.asarray(st.idx[old])] = st.z_best[xp.asarray(old)]


def _niht_step(
    Phi: LinearOperator, project: Any, st: Active, g: Any, first: bool, xp: Any
) -> tuple[Any, Any]:
    """One normalized-IHT step (Blumensath & Davies 2010) on the active batch."""
    if first:  # z = 0: the support is that of M(Phi^T y)
        st.support = project(g) != 0
    elif st.support is None or st.support.shape[0] != st.z.shape[0]:
        st.support = st.z != 0
    shape = (-1,) + (1,) * (g.ndim - 1)  # per-signal scalar against codes
    rshape = (-1,) + (1,) * (st.r.ndim - 1)  # ... and against measurements
    gs = xp.where(st.support, g, 0)
    Pg = Phi @ gs
    num, den = _norms(gs) ** 2, _norms(Pg) ** 2
    safe = den > 0
    mu = xp.where(safe, num / xp.where(safe, den, 1.0), 1.0)
    z_new = project(st.z + mu.reshape(shape).astype(g.dtype) * g)
    new_supp = z_new != 0
    same = (new_supp == st.support).reshape(new_supp.shape[0], -1).all(axis=1)
    # unchanged support: z_new = z + mu g_G exactly, so Phi z_new = Phi z + mu Phi g_G
    r_new = st.r - mu.reshape(rshape).astype(g.dtype) * Pg
    todo = xp.flatnonzero(~same)
    for _ in range(_NIHT_MAX_BACKTRACK):
        if todo.size == 0:
            break
        d = z_new[todo] - st.z[todo]
        Pd = Phi @ d
        omega = (1.0 - _NIHT_C) * _norms(d) ** 2 / xp.maximum(_norms(Pd) ** 2, 1e-300)
        ok = mu[todo] <= omega
        acc = todo[ok]
        r_new[acc] = st.r[acc] - Pd[ok]
        todo = todo[~ok]
        if todo.size:
            mu[todo] = mu[todo] / (_NIHT_KAPPA * (1.0 - _NIHT_C))
            z_new[todo] = project(st.z[todo] + mu[todo].reshape(shape).astype(g.dtype) * g[todo])
    if todo.size:  # safeguard exhausted (mu tiny): recompute the residual exactly
        r_new[todo] = st.y[todo] - Phi @ z_new[todo]
    st.support = z_new != 0
    return z_new, r_new
