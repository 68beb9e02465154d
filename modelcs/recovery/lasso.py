"""The Lasso on linear operators: FISTA with adaptive restart and a duality-gap stop.

Solves, for every signal ``y_b`` of a batch and independently,

.. math::  \\min_z \\; \\tfrac12 \\|y_b - \\Phi z\\|_2^2 + \\lambda_b \\|z\\|_1
           \\quad (\\text{optionally } z_i = 0 \\text{ off a support } S_b),

the problem of steps 1 and 3 of Algorithm 2 of the invertibility paper (Gilbert, Zhang,
Lee, Zhang & Lee, "Towards understanding the invertibility of convolutional neural
networks", Sec. 4.4), where ``Phi = W^T`` is the synthesis operator of a convolution ``W``
(or any matrix / operator, see :func:`~modelcs.as_operator`).  Note the factor ``1/2``:
the paper writes ``||x - W^T z||^2 + lambda ||z||_1``, i.e. its ``lambda`` is twice the
``lam`` used here.

**Mapping to scikit-learn.**  ``sklearn.linear_model.Lasso(alpha=a, fit_intercept=False)``
minimises ``1/(2 m) ||y - X w||^2 + a ||w||_1`` with ``m`` the number of rows of ``X``
(measurements).  Multiplying by ``m``: ``lasso(X, y, lam=a * m)`` solves the same problem,
i.e. ``alpha = lam / m`` (checked by ``tests/test_lasso.py``).

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
iteration stops per signal once ``gap <= tol * objective``, tested every ``GAP_EVERY``
iterations and at ``max_iter`` (the gap's five reductions and the bookkeeping around them
cost about as much as the rest of an iteration's element-wise work on a single signal; a
``callback`` sees the gap of every iteration, but the test runs on the same iterations,
so watching changes nothing); converged signals leave the batch, so the others
run on a smaller batch and a converged signal costs no more work.
A large batch is solved in consecutive chunks of signals (~16 MB of working arrays
each, at least 16 signals: large enough that the per-call overhead of an iteration's
~50 array operations is small against their work, small enough to stay in the last-level
cache); results do not depend on the chunking beyond rounding.

The step is ``1/L_k`` with the step constant chosen per signal and iteration by
backtracking that lets it decrease (Scheinberg, Goldfarb & Bai 2014, FISTA-BKTR): each
iteration tries ``L_k = L_DECREASE * L_{k-1}``; a signal whose trial fails the
sufficient-decrease test keeps its iterate and retries with twice the constant in the
next iteration (the backtracking loop, interleaved with the other signals' iterations so
that it stays batched; ``n_iter`` counts such rejected trials, each one ``Phi`` and one
``Phi^T``).  The momentum uses ``t_k = (1 + sqrt(1 + 4 t_{k-1}^2 L_k / L_{k-1})) / 2``,
which keeps FISTA's ``O(1/k^2)`` rate.  The curvature along the iterates is often well
below ``||Phi||^2`` (0.25-0.4 of it at the paper's 1-D size), so the steps are longer
than ``1/||Phi||^2`` and the iterations fewer (there ~40 % fewer to a 1e-4 objective).
The first trial is ``||Phi||^2`` estimated by Lanczos (:meth:`LinearOperator.norm`, cached
on the operator and shared by ``W`` and its ``W.T`` views, times a small safety factor).
For the quadratic data term the sufficient-decrease test,
``f(z+) <= f(v) + <grad f(v), z+ - v> + L/2 ||z+ - v||^2``, is exactly
``||Phi (z+ - v)||^2 <= L ||z+ - v||^2``, which is how it is evaluated (from
products already at hand, without cancellation between objective values).

**Mixed precision.**  For float64 data with a loose tolerance (``tol >= SINGLE_TOL``,
``1e-3``) on an operator that can compute in float32
(:meth:`~modelcs.LinearOperator.astype`: modelcs's convolutions, dense and sparse
matrices and their combinations), the iterations run in float32, on the problem
normalised to ``||y_b|| = 1`` (the Lasso is positively homogeneous, so this only rescales
the solution and keeps every quantity far from float32's range limits), until the
duality gap meets ``tol``.  Then one float64 product pair recomputes residual, gradient
and duality gap; signals that meet ``tol`` there stop, the others go on in float64 with
the step constants and momentum they had reached.  The reported objective and gap are
float64's and certify the result as in a float64 solve.  An iteration in float32 costs
about half as much (half the memory traffic, twice the BLAS rate), and at the paper's 1-D
size the float32 iterates need the same number of iterations (43.3 on 1000 problems at
``tol=1e-2``): 1000 problems took 1.8-2.3 s against 3.3-3.4 s in float64 on two threads.
Tighter tolerances stay in float64 by default: float32 rounding blurs the gap at 2-4e-5
at the VGG conv5_2 size, and a float64 phase that starts from a float32 iterate needs
extra iterations to get below it.  ``mixed_precision=True`` runs the float32 phase to
``max(tol, SINGLE_TOL)`` at any tolerance, ``False`` never.

On a CPU, the chunks of a large batch run on several threads at once when the operator
is :attr:`~modelcs.LinearOperator.threadsafe` (``MODELCS_NUM_THREADS`` threads, default
the usable CPUs) and ``lasso`` is called from the main thread (a caller that runs solves
on its own threads, such as a Dask worker, already uses the cores); every chunk computes
the same thing whichever thread runs it, so the result does not depend on the thread
count (with BLAS's own threads fixed: chunks run with BLAS on one thread, and OpenBLAS's
float32 GEMM, used by mixed precision, rounds differently on several).
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import get_array_module, result_dtype, to_numpy
from .._krylov import KrylovResult, lsqr
from .._parallel import run_parallel, thread_count
from .._validation import (
    as_batch,
    check_callback,
    check_finite,
    check_positive_int,
    check_tol,
)
from ..operators.base import LinearOperator
from ..operators.matrix import as_operator
from ._common import RecoveryResult, batch_norms, prepare

__all__ = [
    "lasso",
    "debias",
    "LassoResult",
    "LassoScaleWarning",
    "lasso_lambda_max",
    "operator_norm_sq",
]

_SAFETY = 1.01
#: bytes of FISTA working arrays per chunk of a large batch (see ``_chunk_size``; at the
#: paper's 1-D size 16 MB took float32 iterations 1.1-1.3x less time than 8 MB, 32 MB
#: was level with 16)
_CHUNK_BYTES = 16 << 20
#: fewest signals per chunk
_CHUNK_MIN = 16
#: the duality gap (the stopping test) is evaluated every this many iterations: at most
#: ``GAP_EVERY - 1`` extra iterations; at the paper's 1-D size (one signal, ~75
#: iterations) 3 took ~15 % off a solve
GAP_EVERY = 3
#: each iteration first tries the step constant ``L_DECREASE`` times the last accepted one
#: (backtracking doubles it where the sufficient-decrease test fails): the curvature
#: along the iterates is often well below ``||Phi||^2`` (0.25-0.4 of it at the paper's
#: 1-D size, where this took the iterations to a 1e-4 objective from ~53 to ~33)
L_DECREASE = 0.9
#: mixed precision: the float32 phase stops at this relative duality gap (or at ``tol`` if
#: looser), and ``mixed_precision=None`` uses it for ``tol >= SINGLE_TOL`` only: float32
#: rounding blurs the gap at ~1e-6 at the paper's 1-D size but at 2-4e-5 at the VGG
#: conv5_2 size (4608-term sums), where a float32 phase run to 1e-4 cost the float64
#: phase three extra iterations to reach 1e-6
SINGLE_TOL = 1e-3
#: ... or once its gap is below this fraction of ``||y||^2 / 2`` (where float32's rounding
#: could keep the gap from ever meeting a relative test on a small objective)
_SINGLE_FLOOR = 1e-5
#: mixed precision needs ``||Phi||`` within these bounds (float32's range, with margin)
_SINGLE_NORM = (1e-12, 1e12)
#: the trial constant never goes below this fraction of the initial ``||Phi||^2`` estimate
_L_FLOOR = 1e-9
# data scaled by more than this (or less than its inverse) is normalised before solving
_SCALE_LIMIT = 1e100


class LassoScaleWarning(UserWarning):
    """The objective or duality gap of an extremely scaled problem overflows float64.

    :func:`lasso` solves such problems on normalised data (the returned ``z`` is accurate)
    but cannot represent their objective and gap; ``rel_gap`` stays meaningful.

    Parameters
    ----------
    *args : object
        The warning message, as for any :class:`Warning`.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from modelcs import LassoScaleWarning, lasso
    >>> A = np.eye(3)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = lasso(A, np.array([1e300, 0.0, -1e300]), 1e299)
    >>> any(issubclass(w.category, LassoScaleWarning) for w in caught), res.z.tolist()
    (True, [9e+299, 0.0, -9e+299])
    """


@dataclass(eq=False, repr=False)
class LassoResult(RecoveryResult):
    """Solution of :func:`lasso` (per-signal arrays; scalars for a single signal).

    The fields are the constructor's parameters; :func:`lasso` builds it, users read it.
    Those of :class:`~modelcs.RecoveryResult` come first.

    Parameters
    ----------
    z, n_iter, converged, diverged, residual_norm, residual_norms
        As for :class:`~modelcs.RecoveryResult` (``n_iter``: FISTA iterations, rejected
        trial steps included, each one ``Phi`` and one ``Phi^T`` application;
        ``converged``: whether ``gap <= tol * objective`` or the gap reached the rounding
        floor).
    objective : float or ndarray (B,)
        ``0.5 ||y - Phi z||^2 + lam ||z||_1`` at ``z``.
    gap : float or ndarray (B,)
        Duality gap at ``z`` (an upper bound on ``objective - optimum``).
    lam : float or ndarray (B,)
        The regularisation weights used.
    lipschitz : float
        The first trial step constant (estimate of ``||Phi||^2`` times a safety factor);
        backtracking adapts the steps per signal from there (module docstring).
    z_lasso : array like ``z``
        The Lasso minimiser itself; equal to ``z`` unless ``debias=True`` (then ``z`` is the
        least-squares fit on the Lasso's support, :func:`debias`).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, lasso
    >>> W = ConvOperator.random(12, 4, 5, 24, rng=0)
    >>> x = np.random.default_rng(0).standard_normal((3, 4, 24))
    >>> res = lasso(W.T, x, 0.1, tol=1e-8)
    >>> res.z.shape, res.objective.shape, bool(res.converged.all())
    ((3, 12, 20), (3,), True)
    >>> bool((res.gap <= 1e-8 * res.objective).all())
    True
    """

    objective: Any
    gap: Any
    lam: Any
    lipschitz: float
    z_lasso: Any

    @property
    def rel_gap(self) -> Any:
        """``gap / objective`` (0 where the objective is 0), computed before any rescaling."""
        out = self.__dict__.get("_rel_gap")
        if out is None:
            obj = np.asarray(self.objective, dtype=np.float64)
            gap = np.asarray(self.gap, dtype=np.float64)
            out = np.divide(gap, obj, out=np.zeros_like(gap), where=obj > 0)
        if np.ndim(self.objective) == 0:
            return float(np.asarray(out).reshape(-1)[0])
        return out


# ----------------------------------------------------------------------- norms
def operator_norm_sq(op: Any, *, xp: Any = np) -> float:
    """Estimate of ``||op||_2^2``: ``op.norm() ** 2`` (cached on the operator).

    Computed by Lanczos on ``op^T op`` (:meth:`~modelcs.LinearOperator.norm`); adjoint views
    and scalar multiples share the value of the operator they wrap.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> from modelcs.recovery.lasso import operator_norm_sq
    >>> W = ConvOperator.random(6, 2, 3, 16, rng=0)
    >>> exact = np.linalg.norm(W.to_dense(), 2) ** 2
    >>> bool(abs(operator_norm_sq(W.T) - exact) <= 1e-3 * exact)
    True
    """
    return as_operator(op, "op").norm() ** 2


# -------------------------------------------------------------------- helpers
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


def lasso_lambda_max(Phi: Any, y: Any, *, support: Any = None) -> Any:
    """``lam_max = max |Phi^T y|`` (over ``support``): the smallest ``lam`` with solution 0.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> from modelcs.recovery.lasso import lasso_lambda_max
    >>> W = ConvOperator.random(4, 2, 3, 10, rng=0)
    >>> y = np.ones((2, 10))
    >>> bool(np.isclose(lasso_lambda_max(W.T, y), np.abs(W @ y).max()))
    True
    """
    Phi = as_operator(Phi, "Phi")
    xp = get_array_module(y)
    if not hasattr(y, "shape"):
        y = np.asarray(y)
    yb, batched = _as_batch("y", y, Phi.out_shape, None)
    check_finite("y", yb)
    c = xp.abs(Phi.T @ yb.astype(result_dtype(Phi.dtype, yb.dtype, "y"), copy=False))
    if support is not None:
        mb, _ = _as_batch("support", xp.asarray(support), Phi.in_shape, None)
        c = c * mb
    out = to_numpy(c.reshape(c.shape[0], -1).max(axis=1)).astype(np.float64)
    return out if batched else float(out[0])


# ---------------------------------------------------------------------- solver
def lasso(
    Phi: Any,
    y: Any,
    lam: Any,
    *,
    support: Any = None,
    z0: Any = None,
    max_iter: int = 5000,
    tol: float = 1e-6,
    restart: bool = True,
    debias: bool = False,
    mixed_precision: bool | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> LassoResult:
    """Minimise ``0.5 ||y - Phi z||^2 + lam ||z||_1`` for a batch of signals (FISTA).

    Step 1 (and, with ``support``, step 3) of Algorithm 2 of the invertibility paper
    (Gilbert et al., Sec. 4.4), with ``Phi = W^T``; see the module docstring for the method.

    **Objective and scikit-learn.**  For each signal ``y_b`` (and its own ``lam_b``)::

        minimise over z:   0.5 * ||y_b - Phi z||_2^2 + lam_b * ||z||_1

    ``sklearn.linear_model.Lasso(alpha=a, fit_intercept=False)`` on a matrix ``X`` with
    ``m`` rows minimises ``1/(2m) ||y - X w||^2 + a ||w||_1``: the same problem for
    ``lam = a * m`` (so ``alpha = lam / m``).

    Parameters
    ----------
    Phi : LinearOperator or anything :func:`~modelcs.as_operator` accepts
        The measurement (synthesis) operator, e.g. ``W.T`` of a :class:`ConvOperator`, or
        an ``m x n`` matrix.  Codes ``z`` have shape ``Phi.in_shape``.
    y : array, shape ``Phi.out_shape`` (or flat) or ``(B, *Phi.out_shape)``
        Signals (NumPy, CuPy or torch; must be finite).  Data scaled beyond ``1e100`` (or
        below ``1e-100``) is normalised per signal before solving and the solution rescaled;
        if the objective then overflows float64 a :class:`LassoScaleWarning` says so (``z``
        stays accurate, ``rel_gap`` stays meaningful).
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
        Stop when the duality gap is ``<= tol * objective`` (tested every ``GAP_EVERY``
        iterations, see the module docstring).  The gap is also accepted as
        converged once below the rounding floor ``10 * eps * ||y||^2 / 2`` of the dtype
        (relevant for float32, and for ``lam = 0`` with ``y`` in the range of ``Phi``).
    restart : bool, default True
        Adaptive (gradient) restart of the momentum.
    debias : bool, default False
        Replace ``z`` by the least-squares fit on the Lasso's support (:func:`debias`),
        removing the l1 shrinkage; ``z_lasso`` keeps the Lasso minimiser and
        ``objective``/``gap`` refer to it.
    mixed_precision : bool or None, default None
        Iterate in float32 first and certify (and if needed finish) in float64 (module
        docstring).  ``None``: where it applies (float64 data, ``tol >= 1e-3``, an
        operator with a float32 version, ``||Phi||`` within ``1e-12 .. 1e12``); ``True``:
        at any ``tol`` (float32 down to a gap of 1e-3), an error where it cannot apply;
        ``False``: float64 throughout.  ``n_iter`` counts the iterations of both phases;
        the float64 product pair between them takes no step and is not counted.
    callback : callable, optional
        Called after every FISTA iteration with a dict ``{"iteration", "z", "active",
        "objective", "gap"}`` (the active signals' iterates, their batch indices, objectives
        and duality gaps; float64 codes and numbers in both phases of a mixed-precision
        solve, iterations numbered on across them); a truthy return value stops all
        signals (``converged`` then says which had met the tolerance).

    Returns
    -------
    LassoResult
        ``z``, ``objective``, ``gap``, ``n_iter``, ``converged`` (per signal), ...

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, lasso
    >>> W = ConvOperator.random(24, 8, 5, 32, rng=0)
    >>> rng = np.random.default_rng(0)
    >>> z_true = np.zeros(W.out_shape); z_true[rng.choice(24, 4, replace=False), 3] = 1.0
    >>> x = W.T @ z_true
    >>> res = lasso(W.T, x, 0.01, tol=1e-10)
    >>> bool(res.converged), bool(res.gap <= 1e-10 * res.objective)
    (True, True)
    >>> bool(lasso(W.T, x, 10.0).z.any())      # lam >= lam_max: exactly zero
    False
    >>> float(abs(lasso(W.T, x, 0.01, debias=True).z - z_true).max()) < 1e-8
    True
    """
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_tol(tol)
    if not isinstance(debias, (bool, np.bool_)):
        raise TypeError(f"parameter 'debias' must be a bool; got {debias!r}")
    if mixed_precision is not None and not isinstance(mixed_precision, (bool, np.bool_)):
        raise TypeError(
            f"parameter 'mixed_precision' must be True, False or None; got {mixed_precision!r}"
        )
    prep = prepare(Phi, y, z0)
    Phi, yb, xp = prep.Phi, prep.yb, prep.xp
    dt = yb.dtype
    yb = xp.ascontiguousarray(yb)
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
    zinit = prep.z0b
    if zinit is not None and mask is not None:
        zinit *= mask

    # --- extreme scales: normalise each signal, rescale at the end
    ymax = to_numpy(xp.abs(yb).reshape(B, -1).max(axis=1)).astype(np.float64)
    extreme = (ymax > _SCALE_LIMIT) | ((ymax > 0) & (ymax < 1.0 / _SCALE_LIMIT))
    scale = np.where(extreme, ymax, 1.0)
    if extreme.any():
        sc = xp.asarray(scale.astype(dt)).reshape((B,) + (1,) * len(Phi.out_shape))
        yb = yb / sc
        lam_b = lam_b / scale
        if zinit is not None:
            zinit = zinit / xp.asarray(scale.astype(dt)).reshape((B,) + (1,) * len(Phi.in_shape))

    # --- correlations and lam_max
    c0 = Phi.T @ yb  # Phi^T y
    if mask is not None:
        c0 = c0 * mask
    lam_max = to_numpy(xp.abs(c0).reshape(B, -1).max(axis=1)).astype(np.float64)
    yy = to_numpy(_sq(yb, yb.shape[0]))

    z_out = xp.zeros((B, *Phi.in_shape), dtype=dt)
    obj_out = 0.5 * yy.copy()
    gap_out = np.zeros(B)
    it_out = np.zeros(B, dtype=np.int64)
    conv_out = np.ones(B, dtype=bool)
    L0 = Phi.norm() ** 2 * _SAFETY
    r0 = np.sqrt(yy) if zinit is None else to_numpy(batch_norms(yb - Phi @ zinit))
    hist: list[np.ndarray] = [r0]

    act = np.flatnonzero(lam_b < lam_max)
    single = None
    if (mixed_precision or (mixed_precision is None and tol >= SINGLE_TOL)) and act.size \
            and L0 > 0:
        Phi32 = _single_operator(Phi, dt, L0, mixed_precision)
        if Phi32 is not None:
            single = _single_phase(Phi32, xp, yb, c0, zinit, lam_b, yy)
    if act.size and L0 > 0:
        _fista(
            Phi, xp, dt, yb, c0, mask, zinit, lam_b, yy, L0, act, max_iter, float(tol),
            restart, z_out, obj_out, gap_out, it_out, conv_out, hist, callback, single,
        )
    z_lasso = z_out
    z_fin = z_out
    if debias:
        z_fin = _debias_batch(Phi, yb, z_out != 0)
    rfin = to_numpy(batch_norms(yb - Phi @ z_fin))
    hist_a = np.array(hist)

    # scale-free relative gap, before any rescaling can overflow objective and gap
    gap_rel = np.divide(gap_out, obj_out, out=np.zeros_like(gap_out), where=obj_out > 0)
    if extreme.any():
        zs = xp.asarray(scale.astype(dt)).reshape((B,) + (1,) * len(Phi.in_shape))
        z_lasso = z_lasso * zs
        z_fin = z_fin * zs if debias else z_lasso
        with np.errstate(over="ignore"):
            obj_out = obj_out * scale**2
            gap_out = gap_out * scale**2
            rfin = rfin * scale
            hist_a = hist_a * scale
        lam_b = lam_b * scale
        if not (np.all(np.isfinite(obj_out)) and np.all(np.isfinite(gap_out))):
            warnings.warn(
                "lasso: the data is scaled so that the objective/duality gap overflow float64 "
                f"(max |y| = {float(ymax.max()):.3g}); the problem was solved on normalised "
                "data, so z is accurate, but 'objective' and 'gap' are inf: use 'rel_gap' "
                "or rescale y",
                LassoScaleWarning,
                stacklevel=2,
            )

    def _ret(a: Any) -> Any:
        return a if prep.kind == "batch" else a[0].item()

    res = LassoResult(
        z=prep.code(z_fin),
        n_iter=_ret(it_out),
        converged=_ret(conv_out),
        diverged=_ret(np.zeros(B, dtype=bool)),
        residual_norm=_ret(rfin),
        residual_norms=prep.history(hist_a),
        objective=_ret(obj_out),
        gap=_ret(gap_out),
        lam=_ret(lam_b),
        lipschitz=float(L0),
        z_lasso=prep.code(z_lasso),
    )
    res.__dict__["_rel_gap"] = gap_rel  # scale-free, also when objective/gap overflow
    return res


def _debias_batch(Phi: LinearOperator, yb: Any, mask: Any, tol: float | None = None) -> Any:
    """Least squares on per-signal supports (batched LSQR), zero where the support is empty."""
    if tol is None:
        tol = 1e-6 if yb.dtype == np.float32 else 1e-12
    return _support_lsqr(Phi, yb, mask, 2 * min(Phi.shape), tol).x


def _support_lsqr(Phi: LinearOperator, yb: Any, mask: Any, max_iter: int, tol: float,
                  callback: Callable[[dict[str, Any]], Any] | None = None) -> KrylovResult:
    """LSQR on the supports, stopped when ``||mask * Phi^T r|| <= tol ||mask * Phi^T y||``."""
    xp = get_array_module(yb)
    ref = batch_norms(xp.where(mask, Phi.T @ yb, 0))
    return lsqr(Phi, yb, mask=mask, max_iter=max_iter, atol=0.0, btol=0.0, gtol=tol * ref,
                callback=callback)


def debias(
    Phi: Any,
    y: Any,
    support: Any,
    *,
    max_iter: int | None = None,
    tol: float | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> RecoveryResult:
    """Least squares on a support: ``z = argmin ||y - Phi z||`` with ``z = 0`` off ``support``.

    The "debiasing" step after an l1 solver (the Lasso shrinks every nonzero towards 0 by
    about ``lam``; refitting on its support removes that bias), and the least-squares step
    of CoSaMP (Needell & Tropp 2009, Algorithm 1).  Solved matrix-free and batched by LSQR
    (Paige & Saunders 1982; :func:`modelcs._krylov.lsqr`) from zero, so a rank-deficient
    support gives the minimum-norm solution.

    Parameters
    ----------
    Phi : LinearOperator or anything :func:`~modelcs.as_operator` accepts
    y : array ``Phi.out_shape`` (or flat) or a batch ``(B, *Phi.out_shape)``
    support : bool array ``Phi.in_shape`` (shared) or ``(B, *Phi.in_shape)``
    max_iter : int, optional
        LSQR iteration cap (default ``2 * min(Phi.shape)``).
    tol : float, optional
        Relative normal-equation residual at which LSQR stops (default ``1e-12`` for
        float64, ``1e-6`` for float32).
    callback : callable, optional
        Called after every LSQR iteration with a dict ``{"iteration", "z", "active",
        "residual_norms"}`` (the iterates of the signals still iterating, their batch
        indices and residuals ``||y - Phi z||``); a truthy return value stops all signals
        (``converged`` then says which had met the tolerance).

    Returns
    -------
    RecoveryResult
        ``z`` (zero off the support), LSQR ``n_iter``/``converged``, ``residual_norm``.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import debias
    >>> A = np.random.default_rng(0).standard_normal((20, 50))
    >>> x = np.zeros(50); x[[3, 17]] = [1.0, -2.0]
    >>> res = debias(A, A @ x, x != 0)
    >>> bool(np.allclose(res.z, x)), res.converged
    (True, True)
    """
    prep = prepare(Phi, y)
    Phi, yb, xp = prep.Phi, prep.yb, prep.xp
    B = yb.shape[0]
    if not hasattr(support, "dtype"):
        support = np.asarray(support)
    if support.dtype != np.bool_:
        raise TypeError(f"parameter 'support' must be a boolean mask; got dtype {support.dtype}")
    sb, _ = as_batch("support", xp.asarray(support), Phi.in_shape)
    if sb.shape[0] not in (1, B):
        raise ValueError(
            f"parameter 'support' has shape {tuple(support.shape)}; expected {Phi.in_shape} "
            f"or ({B}, {', '.join(map(str, Phi.in_shape))}) like y"
        )
    mask = xp.broadcast_to(sb, (B, *Phi.in_shape))
    n_it = 2 * min(Phi.shape) if max_iter is None else check_positive_int("max_iter", max_iter)
    if tol is None:
        tol = 1e-6 if yb.dtype == np.float32 else 1e-12
    tol = check_tol(tol)
    cb = None
    if callback is not None:
        check_callback(callback)
        user = callback

        def cb(info: dict[str, Any]) -> Any:
            return user({"iteration": info["iteration"], "z": info["x"],
                         "active": info["active"], "residual_norms": info["residual_norms"]})

    kr = _support_lsqr(Phi, yb, mask, n_it, tol, cb)
    r0 = to_numpy(batch_norms(yb))
    rf = to_numpy(batch_norms(yb - Phi @ kr.x))
    return RecoveryResult(
        z=prep.code(kr.x),
        n_iter=prep.scalar(kr.n_iter),
        converged=prep.scalar(kr.converged),
        diverged=prep.scalar(np.zeros(B, dtype=bool)),
        residual_norm=prep.scalar(rf),
        residual_norms=prep.history(np.stack([r0, rf])),
    )


def _single_operator(Phi: LinearOperator, dt: Any, L0: float,
                     wanted: bool | None) -> LinearOperator | None:
    """``Phi`` in float32 for the first phase of a mixed-precision solve, or None where that
    phase does not apply (``wanted=None``) or cannot (an error for ``wanted=True``)."""
    why = None
    if dt != np.float64:
        why = f"the data is {np.dtype(dt)}, not float64"
    elif not _SINGLE_NORM[0] ** 2 < L0 < _SINGLE_NORM[1] ** 2:
        why = f"||Phi|| = {math.sqrt(L0):.3g} is outside float32's safe range {_SINGLE_NORM}"
    else:
        try:
            return Phi.astype(np.float32)
        except NotImplementedError as e:
            why = str(e)
    if wanted:
        raise ValueError(f"parameter 'mixed_precision'=True cannot apply: {why}")
    return None


@dataclass
class _Single:
    """The float32 phase of a mixed-precision solve (see :func:`_fista`): the operator in
    float32 and every signal normalised to ``||y_b|| = 1`` (``scale = ||y_b||``)."""

    Phi: LinearOperator
    scale: np.ndarray
    y: Any
    c0: Any
    zinit: Any
    lam: np.ndarray
    yy: np.ndarray
    z_out: Any
    obj: np.ndarray
    gap: np.ndarray
    it: np.ndarray
    conv: np.ndarray
    #: the momentum state each signal ends the phase with (previous iterate and its
    #: products, FISTA's ``t``), carried into the float64 phase
    z_prev: Any
    Pz_prev: Any
    gz_prev: Any
    t: np.ndarray


def _single_phase(Phi32: LinearOperator, xp: Any, y: Any, c0: Any, zinit: Any,
                  lam: np.ndarray, yy: np.ndarray) -> _Single:
    """The float32 problem: ``y / ||y||`` and ``lam / ||y||`` (the Lasso is positively
    homogeneous, so its solution is the float64 one divided by ``||y||``), which keeps
    every quantity of the iteration near 1, far from float32's range limits."""
    B = y.shape[0]
    scale = np.where(yy > 0, np.sqrt(yy), 1.0)
    f32 = np.float32

    def div(a: Any) -> Any:
        s = xp.asarray(scale).reshape((B,) + (1,) * (a.ndim - 1))
        return (a / s).astype(f32)

    return _Single(
        Phi=Phi32, scale=scale, y=xp.ascontiguousarray(div(y)), c0=div(c0),
        zinit=None if zinit is None else div(zinit), lam=lam / scale, yy=yy / scale**2,
        z_out=xp.zeros(c0.shape, dtype=f32), obj=np.zeros(B), gap=np.zeros(B),
        it=np.zeros(B, dtype=np.int64), conv=np.zeros(B, dtype=bool),
        z_prev=xp.zeros(c0.shape, dtype=f32), Pz_prev=xp.zeros(y.shape, dtype=f32),
        gz_prev=xp.zeros(c0.shape, dtype=f32), t=np.ones(B),
    )


def _fista(
    Phi: LinearOperator, xp: Any, dt: Any, y: Any, c0: Any, mask: Any, zinit: Any,
    lam_all: np.ndarray, yy_all: np.ndarray, L0: float, act: np.ndarray, max_iter: int,
    tol: float, restart: bool, z_out: Any, obj_out: np.ndarray, gap_out: np.ndarray,
    it_out: np.ndarray, conv_out: np.ndarray, hist: list[np.ndarray],
    callback: Callable[[dict[str, Any]], Any] | None = None,
    single: _Single | None = None,
) -> None:
    """FISTA over the signals ``act``, chunk by chunk; writes into the ``*_out`` arrays.

    Signals are independent, so a large batch is solved in consecutive chunks of
    :func:`_chunk_size` signals: each chunk's working arrays stay in cache and converged
    signals leave their chunk.  With a ``callback`` all signals iterate together, so that
    every call sees every active signal.

    With ``single`` (mixed precision), each chunk first iterates in float32 on the
    normalised problem until its duality gap is below ``max(tol, SINGLE_TOL)`` (or
    float32's rounding floor), then continues in ``dt`` from there: one product pair
    recomputes its residual and gradient, and with them the duality gap, in ``dt``; signals
    that meet ``tol`` there stop, the others iterate on with the step constants and the
    momentum they had reached.
    """
    # (sized by the arrays that do most of the iterations: float32 in mixed precision)
    size = act.size if callback is not None else _chunk_size(
        z_out if single is None else single.z_out, y if single is None else single.y)
    chunks = [act[s:s + size] for s in range(0, act.size, size)]
    # chunks run on threads at once where the operator is known to be thread-safe
    # (modelcs's own operators; a user's matvec may not be), on the CPU, and when called
    # from the main thread: a caller running solves on its own threads (a Dask worker)
    # already uses the cores, and the BLAS thread limit set meanwhile is process-wide
    threads = 1
    if xp is np and Phi.threadsafe and threading.current_thread() is threading.main_thread():
        threads = thread_count()
    lock = threading.Lock() if threads > 1 and len(chunks) > 1 else None
    # each signal's step constant, from the float32 phase to the float64 one
    L_all = np.full(lam_all.shape[0], L0) if single is not None else None

    def one(chunk: np.ndarray) -> None:
        if single is None:
            _fista_chunk(
                Phi, xp, dt, y, c0, mask, zinit, lam_all, yy_all, L0, chunk, max_iter,
                tol, restart, z_out, obj_out, gap_out, it_out, conv_out, hist, callback, lock,
            )
            return
        sp = single
        last, stopped = _fista_chunk(
            sp.Phi, xp, np.float32, sp.y, sp.c0, mask, sp.zinit, sp.lam, sp.yy, L0, chunk,
            max_iter, max(tol, SINGLE_TOL), restart, sp.z_out, sp.obj, sp.gap, sp.it,
            sp.conv, hist, callback, lock, scale=sp.scale, L_all=L_all,
            floor_rel=_SINGLE_FLOOR, carry=sp,
        )
        ci = xp.asarray(chunk)
        sc = xp.asarray(sp.scale[chunk]).reshape((-1,) + (1,) * (z_out.ndim - 1))
        z_out[ci] = sp.z_out[ci].astype(dt) * sc
        # (the pair that recomputes residual and gradient in dt takes no step: not counted)
        off = sp.it[chunk]
        _fista_chunk(
            Phi, xp, dt, y, c0, mask, z_out, lam_all, yy_all, L0, chunk,
            0 if stopped else max_iter, tol, restart, z_out, obj_out, gap_out, it_out,
            conv_out, hist, callback, lock, L_all=L_all, offset=off, cb_base=last, carry=sp,
        )

    run_parallel(one, chunks, threads)


def _chunk_size(z_out: Any, y: Any) -> int:
    """Signals per chunk: FISTA's ~10 code-sized and ~5 signal-sized working arrays of a
    chunk fill about :data:`_CHUNK_BYTES` (at least :data:`_CHUNK_MIN` signals, so that
    the operator still sees batches large enough for efficient GEMMs)."""
    per = (10 * math.prod(z_out.shape[1:]) + 5 * math.prod(y.shape[1:])) * z_out.itemsize
    return max(_CHUNK_MIN, _CHUNK_BYTES // max(per, 1))


def _sq(a: Any, nb: int) -> Any:
    """Per-signal ``||a_b||^2`` (float64 accumulation)."""
    return _dot(a, a, nb)


def _dot(a: Any, b: Any, nb: int) -> Any:
    """Per-signal ``<a_b, b_b>`` as a float64 array, without temporaries in float64."""
    xp = get_array_module(a)
    if a.dtype != np.float64:
        return (a * b).reshape(nb, -1).sum(axis=1, dtype=np.float64)
    if nb == 1:  # one BLAS dot: the cheapest call for a single signal (2.2 against 5.6 us
        return xp.asarray(xp.vdot(a, b)).reshape(1)  # for einsum at the 1-D paper size)
    return xp.einsum("ij,ij->i", a.reshape(nb, -1), b.reshape(nb, -1))


def _record(hist: list[np.ndarray], rows: Any, idx: np.ndarray, vals: np.ndarray,
            B_all: int, lock: threading.Lock | None) -> None:
    """``hist[rows[b]][idx[b]] = vals[b]`` (``rows`` an int, or one row per signal)."""
    top = int(np.max(rows))
    if len(hist) <= top:
        with lock or contextlib.nullcontext():  # chunks on other threads append too
            while len(hist) <= top:
                hist.append(np.full(B_all, np.nan))
    if np.ndim(rows) == 0:
        hist[int(rows)][idx] = vals
        return
    for row in np.unique(rows):
        sel = rows == row
        hist[int(row)][idx[sel]] = vals[sel]


def _fista_chunk(
    Phi: LinearOperator, xp: Any, dt: Any, y_all: Any, c0_all: Any, mask_all: Any,
    zinit: Any, lam_all: np.ndarray, yy_all: np.ndarray, L0: float, idx_np: np.ndarray,
    max_iter: int, tol: float, restart: bool, z_out: Any, obj_out: np.ndarray,
    gap_out: np.ndarray, it_out: np.ndarray, conv_out: np.ndarray, hist: list[np.ndarray],
    callback: Callable[[dict[str, Any]], Any] | None, lock: threading.Lock | None = None,
    *, scale: np.ndarray | None = None, L_all: np.ndarray | None = None,
    offset: np.ndarray | None = None, cb_base: int = 0, floor_rel: float = 0.0,
    carry: _Single | None = None,
) -> tuple[int, bool]:
    """FISTA on the signals ``idx_np`` (all started together, so one iteration counter).

    Per iteration: one ``Phi`` and one ``Phi^T`` application (a signal whose trial step
    fails keeps its iterate, so a rejected trial is an iteration like any other), the
    products at the extrapolated point formed from those at the last two iterates, and a
    fixed set of per-signal reductions (residual, l1 norm, ``max |Phi^T r|``, two squared
    norms for the step test, two inner products for the restart test), with as few
    temporaries as possible.

    The phases of a mixed-precision solve (:func:`_fista`): ``scale`` (per signal of the
    whole batch) marks the normalised float32 phase: what it reports to the history and
    the callback is scaled back.  ``L_all`` holds each signal's step constant from one
    phase to the next.  ``offset`` (per signal of ``idx_np``) marks the continuation: the
    signals have done ``offset`` iterations already (the pair that forms ``Phi z`` and
    ``Phi^T Phi z`` here takes no step and is not counted), the duality gap is tested at
    once, and ``max_iter`` caps their total.  ``cb_base`` numbers the callback's calls on
    from an earlier phase.  ``floor_rel`` raises the rounding floor of the gap test (the
    float32 phase's :data:`_SINGLE_FLOOR`).  ``carry`` receives each signal's momentum
    state at the end of the float32 phase and hands it to the continuation (so that the
    switch of precision does not restart the momentum: the products of the previous
    iterate keep their float32 rounding, which only enters the next extrapolated point;
    every new iterate's products, and so the gap, are computed in float64).  Returns the
    last iteration and whether a callback stopped the solve.
    """
    nd, ny = z_out.ndim, y_all.ndim
    B_all = z_out.shape[0]
    eps = float(np.finfo(dt).eps)
    idx_np = idx_np.copy()
    idx = xp.asarray(idx_np)
    y, c0 = y_all[idx], c0_all[idx]
    mask = mask_all[idx] if mask_all is not None else None
    lam = lam_all[idx_np]
    yy = yy_all[idx_np]
    floor = max(10 * eps, floor_rel) * 0.5 * yy
    nb = idx_np.size
    L = np.full(nb, L0) if L_all is None else L_all[idx_np].copy()
    L_min = L0 * _L_FLOOR
    t = np.ones(nb)
    off = np.zeros(nb, dtype=np.int64) if offset is None else offset.copy()
    cap = max_iter - off if offset is not None else np.full(nb, max_iter)
    sc = None if scale is None else scale[idx_np]

    if zinit is not None:
        z = zinit[idx]
        Pz = Phi @ z
        gz = Phi.T @ Pz - c0  # gradient Phi^T (Phi z - y)
    else:
        z = xp.zeros((nb, *z_out.shape[1:]), dtype=dt)
        Pz = xp.zeros_like(y)
        gz = -c0
    z_prev, Pz_prev, gz_prev = z, Pz, gz
    # rounding slack of the step test, on the norm of Phi (z_new - v) (formed by
    # extrapolation, so accurate to a few eps * ||y||)
    slack = 100 * eps * np.sqrt(yy)

    def gap_at(zc: Any, Pzc: Any, gzc: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Squared residual norm, objective and duality gap at ``zc`` (``Phi^T r = -gzc``
        restricted to the support)."""
        rr = to_numpy(_sq(y - Pzc, nb))
        l1 = to_numpy(xp.abs(zc).reshape(nb, -1).sum(axis=1, dtype=np.float64))
        g2 = gzc.reshape(nb, -1) if mask is None else (gzc * mask).reshape(nb, -1)
        cinf = np.maximum(to_numpy(g2.max(axis=1)), -to_numpy(g2.min(axis=1)))
        cinf = cinf.astype(np.float64)
        zg = -to_numpy(_dot(zc, gzc, nb))
        s = np.minimum(1.0, lam / np.maximum(cinf, 1e-300))
        s[cinf == 0] = 1.0
        obj = 0.5 * rr + lam * l1
        gap = np.maximum(0.5 * (1 - s) ** 2 * rr + (lam * l1 - s * zg), 0.0)
        return rr, obj, gap

    def hist_vals(rr: np.ndarray) -> np.ndarray:
        return np.sqrt(rr) if sc is None else np.sqrt(rr) * sc

    def finish(sel: np.ndarray, it: int, obj: np.ndarray, gap: np.ndarray,
               met: np.ndarray) -> None:
        gi = idx_np[sel]
        z_out[xp.asarray(gi)] = z[xp.asarray(sel)]
        obj_out[gi] = obj[sel]
        gap_out[gi] = gap[sel]
        it_out[gi] = off[sel] + it
        conv_out[gi] = met[sel]
        if L_all is not None:
            L_all[gi] = L[sel]
        if carry is not None and offset is None:
            gx, sx = xp.asarray(gi), xp.asarray(sel)
            carry.z_prev[gx] = z_prev[sx]
            carry.Pz_prev[gx] = Pz_prev[sx]
            carry.gz_prev[gx] = gz_prev[sx]
            carry.t[gi] = t[sel]

    if offset is not None and carry is not None:
        # the momentum of the float32 phase, in the caller's scale
        def back(a: Any) -> Any:
            sc_ = xp.asarray(carry.scale[idx_np]).reshape((nb,) + (1,) * (a.ndim - 1))
            return a[idx].astype(dt) * sc_

        z_prev, Pz_prev, gz_prev = back(carry.z_prev), back(carry.Pz_prev), back(
            carry.gz_prev)
        t = carry.t[idx_np].copy()

    Lt = L.copy()  # the trial step constant of the next iteration
    # a continuation starts with "iteration 0": no step, the duality gap of its starting
    # point tested in this dtype, and the signals that meet it (or are at their cap) done
    first = 0 if offset is not None else 1
    for it in range(first, max(int(cap.max()), first) + 1):
        if it == 0:
            z_new, Pz_new, gz_new = z, Pz, gz
        else:
            # --- a step with the trial constant Lt (Scheinberg, Goldfarb & Bai 2014,
            # FISTA-BKTR): the momentum uses t_new = (1 + sqrt(1 + 4 t^2 Lt / L)) / 2 with L
            # the constant of the last accepted step
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t * (Lt / L)))
            beta = (t - 1.0) / t_new
            # extrapolated point v = z + beta (z - z_prev), its products by linearity
            if beta.any():
                bz = _bcol(xp.asarray(beta.astype(dt)), nd)
                v = z - z_prev
                v *= bz
                v += z
                gv = gz - gz_prev
                gv *= bz
                gv += gz
                Pv = Pz - Pz_prev
                Pv *= bz.reshape((nb,) + (1,) * (ny - 1))
                Pv += Pz
            else:
                v, gv, Pv = z, gz, Pz
            # proximal gradient step: z_new = soft(v - gv / Lt, lam / Lt)
            u = gv * _bcol(xp.asarray((-1.0 / Lt).astype(dt)), nd)
            u += v
            thr = _bcol(xp.asarray((lam / Lt).astype(dt)), nd)
            z_new = xp.maximum(u, -thr)          # soft threshold: u - clip(u, -thr, thr)
            xp.minimum(z_new, thr, out=z_new)
            xp.subtract(u, z_new, out=z_new)
            if mask is not None:
                z_new *= mask
            Pz_new = Phi @ z_new
            # (not in place: an operator given as a user's matvec may return shared memory)
            gz_new = Phi.T @ Pz_new - c0
            # --- sufficient decrease (with d = z_new - v, f(z_new) <= f(v) + <grad f(v), d>
            # + Lt/2 ||d||^2 is exactly ||Phi d||^2 <= Lt ||d||^2, no cancellation between
            # objective values)
            d = xp.subtract(z_new, v, out=u)
            dd = to_numpy(_sq(d, nb))
            ee = to_numpy(_sq(Pz_new - Pv, nb))
            bad = np.sqrt(ee) > np.sqrt(Lt * dd) + slack
            # --- adaptive restart (O'Donoghue & Candes 2015): when the step opposes the
            # momentum, <v - z_new, z_new - z> > 0, i.e. <d, z_new> < <d, z>, the next step
            # starts without momentum
            rs = None
            if restart:
                rs = to_numpy(_dot(d, z_new, nb)) < to_numpy(_dot(d, z, nb))
            if bad.any():
                # a rejected trial: these signals keep their iterates and retry from them
                # with twice the constant in the next iteration (the backtracking loop of
                # FISTA-BKTR, interleaved with the other signals' iterations, so that it runs
                # batched; it costs those signals an iteration)
                sel = xp.asarray(np.flatnonzero(bad))
                z_new[sel] = z[sel]          # z_new, gz_new and the old z, gz are arrays of
                gz_new[sel] = gz[sel]        # this loop; Pz_new may be an operator's output
                z[sel] = z_prev[sel]         # (the next z_prev)
                gz[sel] = gz_prev[sel]
                by = _bcol(xp.asarray(bad), Pz.ndim)
                Pz_new = xp.where(by, Pz, Pz_new)
                Pz = xp.where(by, Pz_prev, Pz)
                if rs is not None:
                    rs &= ~bad
                t_new = np.where(bad, t, t_new)
                L = np.where(bad, L, Lt)
                Lt = np.where(bad, 2.0 * Lt, np.maximum(Lt * L_DECREASE, L_min))
            else:
                L = Lt
                Lt = np.maximum(Lt * L_DECREASE, L_min)
            t = t_new
            if rs is not None:
                t[rs] = 1.0

        at_cap = it >= cap
        check = it % GAP_EVERY == 0 or bool(at_cap.any())  # (always at iteration 0)
        if check or callback is not None:
            rr, obj, gap = gap_at(z_new, Pz_new, gz_new)
        else:
            rr = to_numpy(_sq(y - Pz_new, nb))
        _record(hist, off + it if offset is not None else it, idx_np, hist_vals(rr), B_all,
                lock)

        if it:
            z_prev, Pz_prev, gz_prev = z, Pz, gz
            z, Pz, gz = z_new, Pz_new, gz_new

        if not check and callback is None:
            continue
        met = (gap <= tol * obj) | (gap <= floor)
        # stop only where the test is due, so that watching with a callback changes nothing
        fin = met if check else np.zeros(nb, dtype=bool)
        stop = False
        if callback is not None and it:
            info_z, info_obj, info_gap = z.copy(), obj, gap
            if sc is not None:  # the normalised float32 phase: report in the caller's terms
                s64 = sc.astype(np.float64)
                info_z = info_z.astype(np.float64)
                info_z *= xp.asarray(s64).reshape((nb,) + (1,) * (nd - 1))
                info_obj, info_gap = obj * s64**2, gap * s64**2
            stop = bool(callback(
                {"iteration": cb_base + it, "z": info_z, "active": idx_np.copy(),
                 "objective": info_obj, "gap": info_gap}
            ))
            if stop:
                fin = np.ones(nb, dtype=bool)
        fin = fin | at_cap
        if fin.any():
            finish(np.flatnonzero(fin), it, obj, gap, met)
            keep = np.flatnonzero(~fin)
            if keep.size == 0:
                return cb_base + it, stop
            kx = xp.asarray(keep)
            z, Pz, gz = z[kx], Pz[kx], gz[kx]
            z_prev, Pz_prev, gz_prev = z_prev[kx], Pz_prev[kx], gz_prev[kx]
            y, c0 = y[kx], c0[kx]
            if mask is not None:
                mask = mask[kx]
            idx_np = idx_np[keep]
            lam, floor, L, Lt, t, slack, yy, off, cap = (
                lam[keep], floor[keep], L[keep], Lt[keep], t[keep], slack[keep], yy[keep],
                off[keep], cap[keep],
            )
            if sc is not None:
                sc = sc[keep]
            nb = keep.size
    return cb_base + it, False
