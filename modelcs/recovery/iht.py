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
(iterates, NIHT search directions, CoSaMP's CGLS directions) add the shifted filters
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

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import get_array_module, result_dtype, to_numpy
from .._validation import check_finite, check_nonnegative_int
from ..models import SparsityModel
from ..operators.base import LinearOperator

__all__ = ["iht", "cnn_layer", "IHTResult", "IHTDivergenceWarning"]

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
    >>> W = ConvOperator.random(8, 4, 3, 16, seed=0)
    >>> y = W.T @ TopKSparse(3).sample(W.out_shape, 1, seed=1)[0]
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = iht(W.T, y, TopKSparse(3), step=50.0, max_iter=50)
    >>> bool(res.diverged), any(issubclass(w.category, IHTDivergenceWarning) for w in caught)
    (True, True)
    """


@dataclass
class IHTResult:
    """Result of :func:`iht` (and :func:`modelcs.cosamp`).

    The fields are the constructor's parameters; solvers build it, users read it.

    Parameters
    ----------
    z : array, shape ``(B, *Phi.in_shape)`` (or ``Phi.in_shape`` for a single signal)
        Recovered codes (NumPy or CuPy like ``y``); always finite.
    n_iter : numpy int array ``(B,)`` (or int)
        Iterations (projections) applied to each signal.
    converged : numpy bool array ``(B,)`` (or bool)
        Whether the stopping rule was met before ``max_iter``.
    diverged : numpy bool array ``(B,)`` (or bool)
        Whether divergence was detected (then ``converged`` is False).
    residual_norms : numpy array ``(T + 1, B)`` (or ``(T + 1,)``)
        ``||y - Phi z^t||`` for ``t = 0..T``; NaN after a signal stopped.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, ModelSparse, iht
    >>> W = ConvOperator.random(16, 8, 5, 32, seed=0)
    >>> Z = ModelSparse(3).sample(W.out_shape, 4, seed=1)
    >>> res = iht(W.T, W.T @ Z, ModelSparse(3), step="normalized", max_iter=100)
    >>> res.z.shape, res.n_iter.shape, res.residual_norms.shape[1]
    ((4, 16, 28), (4,), 4)
    >>> bool(res.converged.all()), bool(res.diverged.any())
    (True, False)
    """

    z: Any
    n_iter: Any
    converged: Any
    diverged: Any
    residual_norms: np.ndarray


def _norms(a: Any) -> Any:
    """Per-row l2 norms of a batched array, as float64 on the array's device."""
    xp = get_array_module(a)
    flat = a.reshape(a.shape[0], -1)
    return xp.sqrt(xp.einsum("ij,ij->i", flat, flat).astype(np.float64))


def _prepare(
    Phi: Any, y: Any, model: Any, z0: Any, name: str = "iht"
) -> tuple[Any, Any, bool, Any]:
    """Validate arguments; return (yb, z0b or None, batched, xp)."""
    if not isinstance(Phi, LinearOperator):
        raise TypeError(
            f"{name}: parameter 'Phi' must be a modelcs LinearOperator (e.g. W.T); "
            f"got {type(Phi).__name__}"
        )
    if not isinstance(model, SparsityModel):
        raise TypeError(
            f"{name}: parameter 'model' must be a ModelSparse, TopKSparse or BlockSparse; "
            f"got {model!r}"
        )
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        y = np.asarray(y)
    xp = get_array_module(y)
    dt = result_dtype(Phi.dtype, y.dtype, "y")
    if tuple(y.shape) == Phi.out_shape:
        batched, yb = False, y[None]
    elif y.ndim == len(Phi.out_shape) + 1 and tuple(y.shape[1:]) == Phi.out_shape:
        batched, yb = True, y
    else:
        raise ValueError(
            f"{name}: parameter 'y' has shape {tuple(y.shape)}; expected Phi.out_shape "
            f"{Phi.out_shape} or a batch (B, {', '.join(map(str, Phi.out_shape))})"
        )
    if yb.shape[0] == 0:
        raise ValueError(f"{name}: parameter 'y' is an empty batch (B = 0)")
    check_finite("y", yb)
    yb = yb.astype(dt, copy=False)
    code = Phi.in_shape
    if model.ndim is not None and model.ndim != len(code) - 1:
        raise ValueError(
            f"{name}: parameter 'model' has ndim={model.ndim} but Phi.in_shape {code} has "
            f"{len(code) - 1} spatial axes"
        )
    model.project(xp.zeros((1, *code), dtype=dt), batched=True)  # validates k / pool vs shape
    z0b = None
    if z0 is not None:
        if not hasattr(z0, "shape"):
            z0 = xp.asarray(z0)
        if tuple(z0.shape) == code:
            z0b = xp.broadcast_to(z0.astype(dt), (yb.shape[0], *code))
        elif tuple(z0.shape) == (yb.shape[0], *code):
            z0b = z0.astype(dt)
        else:
            raise ValueError(
                f"{name}: parameter 'z0' has shape {tuple(z0.shape)}; expected Phi.in_shape "
                f"{code} or ({yb.shape[0]}, {', '.join(map(str, code))})"
            )
        check_finite("z0", z0b)
        z0b = xp.array(z0b, copy=True)
    return yb, z0b, batched, xp


def _check_common(step: Any, max_iter: Any, tol: Any) -> tuple[float | None, int, float]:
    if isinstance(step, str):
        if step != "normalized":
            raise ValueError(
                f"parameter 'step' must be a positive number or 'normalized'; got {step!r}"
            )
        mu = None
    elif isinstance(step, numbers.Real) and not isinstance(step, bool):
        if not (math.isfinite(step) and float(step) > 0):
            raise ValueError(
                f"parameter 'step' must be a positive finite number or 'normalized'; got {step!r}"
            )
        mu = float(step)
    else:
        raise TypeError(f"parameter 'step' must be a positive number or 'normalized'; got {step!r}")
    n_it = check_nonnegative_int("max_iter", max_iter)
    if not (isinstance(tol, numbers.Real) and not isinstance(tol, bool)) or not (
        math.isfinite(tol) and float(tol) >= 0
    ):
        raise ValueError(f"parameter 'tol' must be a finite number >= 0; got {tol!r}")
    return mu, n_it, float(tol)


class _Active:
    """Per-signal state of the active batch, compacted when signals stop."""

    def __init__(self, **arrays: Any):
        self.__dict__.update(arrays)
        self._names = list(arrays)

    def __getattr__(self, name: str) -> Any:  # typed access to the dynamic fields
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def keep(self, mask_np: np.ndarray, xp: Any) -> None:
        mask = xp.asarray(mask_np)
        for n in self._names:
            a = getattr(self, n)
            if a is None:
                continue
            setattr(self, n, a[mask_np] if isinstance(a, np.ndarray) else a[mask])


def iht(
    Phi: LinearOperator,
    y: Any,
    model: SparsityModel,
    *,
    step: float | str = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    z0: Any = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> IHTResult:
    """Model-based IHT (invertibility Algorithm 1), batched with per-signal stopping.

    Iterates ``z <- M(z + mu Phi^T (y - Phi z), k)`` where ``M`` is ``model``'s projection.

    Parameters
    ----------
    Phi : LinearOperator
        Measurement operator with ``Phi.in_shape`` the code shape (``W.T`` for a
        :class:`~modelcs.ConvOperator` ``W``).
    y : array, shape ``Phi.out_shape`` or ``(B, *Phi.out_shape)``
        Measurements (finite; NumPy or CuPy).
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
    IHTResult

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(16, 8, 5, 32, seed=0)
    >>> model = ModelSparse(3)
    >>> Z = model.sample(W.out_shape, 5, seed=1)
    >>> res = iht(W.T, W.T @ Z, model, step="normalized", max_iter=100)
    >>> bool(res.converged.all()), float(abs(res.z - Z).max()) < 1e-5
    (True, True)
    """
    mu, n_max, tol = _check_common(step, max_iter, tol)
    yb, z0b, batched, xp = _prepare(Phi, y, model, z0)
    B = yb.shape[0]
    dt = yb.dtype
    project = model._project_batch  # validated once in _prepare

    z_out = xp.zeros((B, *Phi.in_shape), dtype=dt) if z0b is None else z0b.copy()
    n_iter = np.zeros(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    diverged = np.zeros(B, dtype=bool)

    z = z_out.copy() if z0b is not None else z_out
    r = yb - Phi @ z if z0b is not None else yb
    res = to_numpy(_norms(r))
    ynorm = to_numpy(_norms(yb))
    hist = [res.copy()]
    st = _Active(
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
    residual_norms = np.array(hist)
    if not batched:
        return IHTResult(
            z_out[0], int(n_iter[0]), bool(converged[0]), bool(diverged[0]), residual_norms[:, 0]
        )
    return IHTResult(z_out, n_iter, converged, diverged, residual_norms)


def _write_out(z_out: Any, st: _Active, fin: np.ndarray, div: np.ndarray, xp: Any) -> None:
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
    Phi: LinearOperator, project: Any, st: _Active, g: Any, first: bool, xp: Any
) -> tuple[Any, Any]:
    """One normalized-IHT step (Blumensath & Davies 2010) on the active batch."""
    if first:  # z = 0: the support is that of M(Phi^T y)
        st.support = project(g) != 0
    elif st.support is None or st.support.shape[0] != st.z.shape[0]:
        st.support = st.z != 0
    shape = (-1,) + (1,) * (g.ndim - 1)
    gs = xp.where(st.support, g, 0)
    Pg = Phi @ gs
    num, den = _norms(gs) ** 2, _norms(Pg) ** 2
    safe = den > 0
    mu = xp.where(safe, num / xp.where(safe, den, 1.0), 1.0)
    z_new = project(st.z + mu.reshape(shape).astype(g.dtype) * g)
    new_supp = z_new != 0
    same = (new_supp == st.support).reshape(new_supp.shape[0], -1).all(axis=1)
    # unchanged support: z_new = z + mu g_G exactly, so Phi z_new = Phi z + mu Phi g_G
    r_new = st.r - mu.reshape(shape).astype(g.dtype) * Pg
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


def cnn_layer(W: LinearOperator, x: Any, model: SparsityModel) -> Any:
    """A CNN layer ``M(W x, k)``: convolution, max pooling and unpooling.

    This is exactly the first iteration of :func:`iht` with ``Phi = W.T``, unit step and
    ``z0 = 0`` (``M(0 + 1 * W (x - 0))``), and ``W.T @ cnn_layer(W, x, model)`` is the
    one-step reconstruction ``x_hat = W^T M(W x, k)`` of Theorem 3.3.

    Parameters
    ----------
    W : LinearOperator
        The layer's linear part (e.g. a :class:`~modelcs.ConvOperator`).
    x : array, shape ``W.in_shape`` or ``(B, *W.in_shape)``
    model : ModelSparse (or another sparsity model)
        E.g. ``ModelSparse(k, pool=2, by="value")`` for ReLU-network max pooling.

    Returns
    -------
    array of shape ``W.out_shape`` or ``(B, *W.out_shape)``.

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(6, 2, 3, 10, seed=0)
    >>> h = cnn_layer(W, np.ones((2, 10)), ModelSparse(2))
    >>> h.shape, int((h != 0).sum())
    ((6, 8), 2)
    """
    if not isinstance(W, LinearOperator):
        raise TypeError(f"parameter 'W' must be a modelcs LinearOperator; got {type(W).__name__}")
    if not isinstance(model, SparsityModel):
        raise TypeError(
            f"parameter 'model' must be a ModelSparse, TopKSparse or BlockSparse; got {model!r}"
        )
    h = W @ x
    return model.project(h, batched=h.ndim == len(W.out_shape) + 1)
