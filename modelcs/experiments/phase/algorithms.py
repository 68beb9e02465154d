"""The recovery algorithms of the phase-transition sweep: one registry, by name or callable.

Every entry has the signature ``(Phi, Y, k, model, success_tol) -> Z``: it recovers the
batch of codes ``Z`` (``(B, *Phi.in_shape)``) from the measurements ``Y`` in one batched
call, told the sparsity ``k`` and the problem's sparsity ``model`` (model-``k``-sparse for
convolutional codes, ``k``-sparse otherwise).

``"iht"``           IHT (Blumensath & Davies 2009) with top-``k`` thresholding and the fixed
                    step ``1 / ||Phi||^2`` (a step that cannot diverge).
``"niht"``          normalized IHT (Blumensath & Davies 2010), top-``k`` thresholding.
``"model_iht"``     normalized model-based IHT (Algorithm 1 of Gilbert et al., with the
                    problem's model; Baraniuk, Cevher, Duarte & Hegde 2010).
``"cosamp"``        CoSaMP (Needell & Tropp 2009), top-``k``.
``"model_cosamp"``  model-based CoSaMP (Baraniuk et al. 2010, Algorithm 1).
``"lasso"``         FISTA on ``0.5||y - Phi z||^2 + lam ||z||_1`` with
                    ``lam = 1e-3 max|Phi^T y|`` (scale-free; small ``lam`` approximates basis
                    pursuit), duality-gap tolerance 1e-6, then :func:`~modelcs.debias` on the
                    ``k`` largest entries of the Lasso solution.

IHT variants run at most 300 iterations with tolerance ``min(1e-8, success_tol / 100)`` (a
bound on the relative code error); CoSaMP at most 50.
A user algorithm is any callable ``f(Phi, Y, k) -> Z`` (batched; ``Phi`` a modelcs
operator); it is named by its ``__name__``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...models import SparsityModel, TopKSparse
from ...operators.base import LinearOperator
from ...recovery.cosamp import cosamp
from ...recovery.iht import iht
from ...recovery.lasso import debias, lasso

__all__ = ["REGISTRY", "ALGORITHMS", "UserAlgorithm", "resolve", "iht_tol"]

IHT_MAX_ITER = 300
COSAMP_MAX_ITER = 50
LASSO_REL_LAM = 1e-3
LASSO_MAX_ITER = 3000
LASSO_TOL = 1e-6


def iht_tol(success_tol: float) -> float:
    """IHT's tolerance (a bound on the relative code error): well below ``success_tol``."""
    return min(1e-8, 1e-2 * success_tol)


def _topk(k: int, Phi: LinearOperator) -> SparsityModel:
    return TopKSparse(k)


def _iht(Phi: Any, Y: Any, k: int, model: SparsityModel, success_tol: float) -> Any:
    step = 1.0 / Phi.norm() ** 2
    return iht(Phi, Y, _topk(k, Phi), step=step, max_iter=IHT_MAX_ITER,
               tol=iht_tol(success_tol)).z


def _niht(Phi: Any, Y: Any, k: int, model: SparsityModel, success_tol: float) -> Any:
    return iht(Phi, Y, _topk(k, Phi), step="normalized", max_iter=IHT_MAX_ITER,
               tol=iht_tol(success_tol)).z


def _model_iht(Phi: Any, Y: Any, k: int, model: SparsityModel, success_tol: float) -> Any:
    return iht(Phi, Y, model, step="normalized", max_iter=IHT_MAX_ITER,
               tol=iht_tol(success_tol)).z


def _cosamp(Phi: Any, Y: Any, k: int, model: SparsityModel, success_tol: float) -> Any:
    return cosamp(Phi, Y, _topk(k, Phi), max_iter=COSAMP_MAX_ITER,
                  tol=iht_tol(success_tol)).z


def _model_cosamp(Phi: Any, Y: Any, k: int, model: SparsityModel, success_tol: float) -> Any:
    return cosamp(Phi, Y, model, max_iter=COSAMP_MAX_ITER, tol=iht_tol(success_tol)).z


def _lasso(Phi: Any, Y: Any, k: int, model: SparsityModel, success_tol: float) -> Any:
    B = Y.shape[0]
    lam_max = np.abs((Phi.T @ Y).reshape(B, -1)).max(axis=1)
    res = lasso(Phi, Y, LASSO_REL_LAM * lam_max, max_iter=LASSO_MAX_ITER, tol=LASSO_TOL)
    support = _topk(k, Phi).project_batch(np.asarray(res.z)) != 0
    return debias(Phi, Y, support).z


#: name -> recovery function ``(Phi, Y, k, model, success_tol) -> Z``
REGISTRY: dict[str, Callable[..., Any]] = {
    "model_iht": _model_iht,
    "iht": _iht,
    "niht": _niht,
    "cosamp": _cosamp,
    "model_cosamp": _model_cosamp,
    "lasso": _lasso,
}

#: Names known to :func:`~modelcs.phase_transition`.
ALGORITHMS: tuple[str, ...] = tuple(REGISTRY)


@dataclass(frozen=True)
class UserAlgorithm:
    """A user callable ``f(Phi, Y, k) -> Z`` in the registry's calling convention."""

    name: str
    func: Callable[[Any, Any, int], Any]

    def __call__(self, Phi: Any, Y: Any, k: int, model: Any, success_tol: float) -> Any:
        Z = self.func(Phi, Y, k)
        Z = np.asarray(Z)
        if Z.shape != (Y.shape[0], *Phi.in_shape):
            raise ValueError(
                f"algorithm {self.name!r} returned codes of shape {Z.shape}; expected "
                f"{(Y.shape[0], *Phi.in_shape)} (one code per measurement vector)"
            )
        return Z


def resolve(algorithms: Any) -> tuple[tuple[str, ...], tuple[Callable[..., Any], ...]]:
    """Names and functions of ``algorithms`` (registry names and/or callables)."""
    if isinstance(algorithms, str) or callable(algorithms):
        algorithms = (algorithms,)
    if not isinstance(algorithms, Sequence):
        raise TypeError(
            "parameter 'algorithms' must be a sequence of names or callables; "
            f"got {algorithms!r}"
        )
    names: list[str] = []
    funcs: list[Callable[..., Any]] = []
    for a in algorithms:
        if isinstance(a, str):
            if a not in REGISTRY:
                raise ValueError(f"parameter 'algorithms' has unknown entry {a!r}; expected "
                                 f"some of {list(REGISTRY)} or callables f(Phi, Y, k) -> Z")
            names.append(a)
            funcs.append(REGISTRY[a])
        elif callable(a):
            name = str(getattr(a, "__name__", type(a).__name__))
            names.append(name)
            funcs.append(UserAlgorithm(name, a))
        else:
            raise TypeError(f"parameter 'algorithms' has entry {a!r}; expected a name from "
                            f"{list(REGISTRY)} or a callable f(Phi, Y, k) -> Z")
    if not names:
        raise ValueError("parameter 'algorithms' must not be empty")
    if len(set(names)) != len(names):
        raise ValueError(f"parameter 'algorithms' has duplicates: {names}")
    return tuple(names), tuple(funcs)
