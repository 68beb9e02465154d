"""Algorithm 2: l1-heuristic support recovery.

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks*, Sec. 4.4.

Given a signal ``x`` (e.g. a layer's input) and the filters ``W`` of a convolutional layer
followed by max pooling, recover a hidden code ``z`` that obeys the pooling model (at most
one nonzero per pooling region of each filter's response map) and synthesises ``x``:

1. ``z_init = argmin_z 0.5 ||x - W^T z||^2 + lam ||z||_1``  (a Lasso on ``Phi = W^T``);
2. ``S = supp M_known(z_init)``: in every pooling region keep the position of the entry of
   largest magnitude (``by="abs"``) or value (``by="value"``); with ``k`` given, keep only
   the ``k`` largest of those (regions whose ``z_init`` is all zero contribute nothing);
3. ``z = argmin_{supp z in S} 0.5 ||x - W^T z||^2 + lam ||z||_1`` (the same Lasso
   restricted to ``S``).

The paper writes ``||x - W^T z||^2 + lambda ||z||_1``; here ``lam = lambda / 2``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import from_torch, is_torch_tensor, result_dtype
from .._validation import as_batch, check_callback, check_finite, check_nonnegative_int
from ..models import ModelSparse
from ..operators.conv import ConvOperator
from ..operators.matrix import as_operator
from ._common import RecoveryResult
from .lasso import LassoResult, lasso

__all__ = ["l1_support_recovery", "SupportRecoveryResult"]


@dataclass(eq=False, repr=False)
class SupportRecoveryResult(RecoveryResult):
    """Output of :func:`l1_support_recovery`.

    The fields are the constructor's parameters; :func:`l1_support_recovery` builds it.

    Parameters
    ----------
    z, n_iter, converged, diverged, residual_norm, residual_norms
        As for :class:`~modelcs.RecoveryResult`: ``z`` is step 3's code (it obeys the
        pooling model and is optimal for the Lasso on its support), ``n_iter`` counts the
        iterations of both Lasso solves, ``converged`` requires both.
    support : bool array, same shape as ``z``
        The support ``S`` fixed in step 2.
    z_init : array, same shape as ``z``
        Step 1's (unrestricted) Lasso solution.
    init : LassoResult
        Step 1's solver report (objective, duality gap, iterations, convergence).
    final : LassoResult
        Step 3's solver report.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, ModelSparse, l1_support_recovery
    >>> W = ConvOperator.random(8, 4, (3, 3), (10, 10), rng=0)
    >>> z_true = ModelSparse(6, pool=(2, 2)).sample(W.out_shape, 1, rng=1)[0]
    >>> res = l1_support_recovery(W, W.T @ z_true, 1e-3, pool=2)
    >>> res.z.shape == res.support.shape == res.z_init.shape == W.out_shape
    True
    >>> bool((res.z[~res.support] == 0).all()), bool(res.final.converged)
    (True, True)
    """

    support: Any
    z_init: Any
    init: LassoResult
    final: LassoResult


def l1_support_recovery(
    W: Any,
    x: Any,
    lam: Any,
    *,
    pool: int | tuple[int, ...],
    k: int | None = None,
    by: str = "abs",
    tol: float = 1e-8,
    max_iter: int = 5000,
    callback: Callable[[dict[str, Any]], Any] | None = None,
) -> SupportRecoveryResult:
    """Recover a pooling-model code of ``x`` by the l1 heuristic (Algorithm 2, Sec. 4.4).

    Parameters
    ----------
    W : ConvOperator (or an operator whose ``out_shape`` has spatial axes)
        The layer; codes live in ``W.out_shape`` and ``x ~ W.T @ z``.  Anything
        :func:`~modelcs.as_operator` accepts, provided its codes ``(K, *n)`` have the
        spatial axes that pooling regions tile (a plain matrix has flat codes: wrap it as
        ``MatrixOperator(A, out_shape=(K, n))``).
    x : array, shape ``W.in_shape`` or ``(B, *W.in_shape)``
        Signal(s) to explain (finite).  A batch is solved in one vectorised call.
    lam : float or array (B,)
        The l1 weight of steps 1 and 3 (the paper's ``lambda / 2``), ``>= 0``.
    pool : int or tuple of int
        Pooling-region size (e.g. 2 for 2x2 max pooling).
    k : int, optional
        Keep at most ``k`` regions in step 2 (default: every region with a nonzero).
    by : {"abs", "value"}
        Switch selection by magnitude or by signed value (ReLU networks).
    tol, max_iter
        Passed to :func:`~modelcs.lasso` (relative duality gap and iteration cap).
    callback : callable, optional
        Called after every FISTA iteration of both Lasso solves with
        :func:`~modelcs.lasso`'s dict ``{"iteration", "z", "active", "objective", "gap"}``
        plus ``"step"``: ``1`` (the unrestricted Lasso) or ``3`` (the Lasso on the support).
        A truthy return value stops the solve under way for all signals: stopped in step 1,
        the support is taken from the iterate reached and step 3 still runs (and calls
        ``callback`` again), so a callback that keeps returning True (a time budget) ends
        both steps; ``converged`` says which signals had met the tolerance.

    Returns
    -------
    SupportRecoveryResult
        ``z``, ``support``, ``z_init`` and both solver reports.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, ModelSparse, l1_support_recovery
    >>> W = ConvOperator.random(8, 4, (3, 3), (10, 10), rng=0)
    >>> model = ModelSparse(6, pool=(2, 2))
    >>> z_true = model.sample(W.out_shape, 1, rng=1)[0]
    >>> res = l1_support_recovery(W, W.T @ z_true, 1e-3, pool=2)
    >>> regions = ModelSparse(0, pool=(2, 2)).n_units(W.out_shape)  # 8 filters x 4 x 4
    >>> bool(np.array_equal(ModelSparse(regions, pool=(2, 2)).project(res.z), res.z))
    True
    >>> res.final.converged
    True
    """
    W = as_operator(W, "W")
    if isinstance(W.T, ConvOperator):
        raise TypeError(
            "parameter 'W' must be a ConvOperator (the layer's filters, signals -> codes); got "
            "the adjoint W.T of one: pass W"
        )
    if len(W.out_shape) < 2:
        raise TypeError(
            "parameter 'W' must be a ConvOperator or an operator whose codes (K, *n) have "
            f"spatial axes for the pooling regions; got flat codes (out_shape {W.out_shape}): "
            "wrap a matrix as MatrixOperator(A, out_shape=(K, n))"
        )
    if is_torch_tensor(x):
        x = from_torch(x, "x")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    result_dtype(W.dtype, x.dtype, "x")
    xb, _ = as_batch("x", x, W.in_shape)
    check_finite("x", xb)
    d = len(W.out_shape) - 1
    pool_t = (pool,) * d if isinstance(pool, int) and not isinstance(pool, bool) else pool
    base = ModelSparse(0, pool=pool_t, switches="known", by=by, ndim=d)
    n_regions = base.n_units(W.out_shape)  # also validates pool against the response maps
    kk = n_regions if k is None else check_nonnegative_int("k", k)
    if kk > n_regions:
        raise ValueError(
            f"parameter 'k'={kk} exceeds the {n_regions} pooling regions of codes of shape "
            f"{W.out_shape} with pool={pool!r}"
        )
    model = base.with_k(kk)
    Phi = W.T
    cb1 = cb3 = None
    if callback is not None:
        check_callback(callback)
        user = callback

        def cb1(info: dict[str, Any]) -> Any:
            return user({**info, "step": 1})

        def cb3(info: dict[str, Any]) -> Any:
            return user({**info, "step": 3})

    init = lasso(Phi, x, lam, tol=tol, max_iter=max_iter, callback=cb1)
    batched = init.z.ndim == len(W.out_shape) + 1
    support = model.support(init.z, batched=batched)
    final = lasso(Phi, x, lam, support=support, z0=init.z * support, tol=tol, max_iter=max_iter,
                  callback=cb3)
    return SupportRecoveryResult(
        z=final.z,
        n_iter=_add(init.n_iter, final.n_iter),
        converged=_and(init.converged, final.converged),
        diverged=final.diverged,
        residual_norm=final.residual_norm,
        residual_norms=final.residual_norms,
        support=support,
        z_init=init.z,
        init=init,
        final=final,
    )


def _add(a: Any, b: Any) -> Any:
    return a + b if isinstance(a, np.ndarray) else int(a + b)


def _and(a: Any, b: Any) -> Any:
    return a & b if isinstance(a, np.ndarray) else bool(a and b)
