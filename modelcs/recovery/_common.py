"""Pieces shared by the recovery solvers: the result type, input preparation, batch state.

Everything here is used by several solvers (:func:`~modelcs.iht`, :func:`~modelcs.cosamp`,
:func:`~modelcs.lasso`, :func:`~modelcs.debias`, :func:`~modelcs.l1_support_recovery`,
:func:`~modelcs.pinv_reconstruct`); :class:`RecoveryResult` is public.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .._backend import from_torch, get_array_module, is_torch_tensor, result_dtype, to_torch_like
from .._krylov import batch_norms
from .._validation import as_batch, check_finite, check_max_iter, check_tol
from ..models import SparsityModel
from ..operators.base import LinearOperator
from ..operators.matrix import as_operator

__all__ = ["RecoveryResult", "Prepared", "prepare", "check_step", "Active", "batch_norms"]


def _summary(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (numbers.Number, np.number)):
        return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        a = v
        if getattr(a, "dtype", None) is not None and a.dtype == np.bool_ and a.ndim == 1:
            return f"{int(a.sum())}/{a.size} True"
        return f"<{type(a).__name__} shape={tuple(a.shape)} dtype={a.dtype}>"
    if isinstance(v, RecoveryResult):
        return f"<{type(v).__name__}>"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


@dataclass(eq=False, repr=False)
class RecoveryResult:
    """What every modelcs solver returns (subclasses add solver-specific fields).

    Shape rule: a single signal in, scalars out (``n_iter`` an ``int``, ``converged`` a
    ``bool``...); a batch ``(B, ...)`` in, arrays of length ``B`` out.  Every field is
    always present.  ``==`` is identity (results hold arrays; compare fields with
    ``numpy.array_equal``/``allclose``), and the repr is a few lines of shapes and counts.
    The fields are the constructor's parameters; solvers build it, users read it.

    Parameters
    ----------
    z : array, shape ``Phi.in_shape`` or ``(B, *Phi.in_shape)``
        The recovered code(s) (NumPy, CuPy or torch like ``y``); always finite.
    n_iter : int or ndarray of int (B,)
        Iterations applied to each signal.
    converged : bool or ndarray of bool (B,)
        Whether the solver's stopping rule was met before ``max_iter``.
    diverged : bool or ndarray of bool (B,)
        Whether divergence (or a non-finite iterate) was detected.
    residual_norm : float or ndarray (B,)
        ``||y - Phi z||`` at the returned ``z``.
    residual_norms : ndarray ``(T + 1,)`` or ``(T + 1, B)``
        The residual history ``||y - Phi z^t||``, ``t = 0..T`` (NaN after a signal stopped;
        for solvers that do not iterate on ``z``: the initial and final residual).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import TopKSparse, iht
    >>> A = np.random.default_rng(0).standard_normal((30, 60)) / np.sqrt(30)
    >>> Z = TopKSparse(3).sample((60,), 4, rng=1)
    >>> res = iht(A, Z @ A.T, TopKSparse(3), step="normalized", max_iter=300)
    >>> res.z.shape, res.n_iter.shape, bool(res.converged.all())
    ((4, 60), (4,), True)
    >>> res == res, res == iht(A, Z @ A.T, TopKSparse(3), step="normalized")  # identity
    (True, False)
    """

    z: Any
    n_iter: Any
    converged: Any
    diverged: Any
    residual_norm: Any
    residual_norms: np.ndarray

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for f in fields(self):
            lines.append(f"    {f.name}={_summary(getattr(self, f.name))},")
        lines.append(")")
        return "\n".join(lines)

    __hash__ = object.__hash__


class Prepared:
    """Validated solver inputs: operator, batched ``y``, optional batched ``z0`` and how
    to hand results back (``unbatch``)."""

    def __init__(self, Phi: LinearOperator, yb: Any, z0b: Any, kind: str, torch_like: Any):
        self.Phi, self.yb, self.z0b, self.kind, self.torch_like = Phi, yb, z0b, kind, torch_like
        self.xp = get_array_module(yb)
        self.B = yb.shape[0]

    def code(self, zb: Any) -> Any:
        """A batched code array as the user expects it (single / flat / batch, torch)."""
        if self.kind == "batch":
            out = zb
        elif self.kind == "flat":
            out = zb[0].reshape(-1)
        else:
            out = zb[0]
        return to_torch_like(out, self.torch_like) if self.torch_like is not None else out

    def scalar(self, a: np.ndarray) -> Any:
        """Per-signal array -> scalar for a single signal."""
        return a if self.kind == "batch" else a[0].item()

    def history(self, h: np.ndarray) -> np.ndarray:
        return h if self.kind == "batch" else h[:, 0]

    def result(self, zb: Any, n_iter: np.ndarray, converged: np.ndarray, diverged: np.ndarray,
               final: np.ndarray, hist: list[np.ndarray]) -> RecoveryResult:
        """The :class:`RecoveryResult` of an iterative solver from its per-signal arrays
        and its list of per-iteration residual norms, shaped as the user's input."""
        return RecoveryResult(
            z=self.code(zb),
            n_iter=self.scalar(n_iter),
            converged=self.scalar(converged),
            diverged=self.scalar(diverged),
            residual_norm=self.scalar(final),
            residual_norms=self.history(np.array(hist)),
        )


def prepare(
    Phi: Any, y: Any, z0: Any = None, *, name: str = "Phi", model: Any = None
) -> Prepared:
    """Convert the operator (:func:`~modelcs.as_operator`), batch ``y`` and ``z0``, check them.

    ``y`` may be one signal (``Phi.out_shape`` or flat), a batch, a torch tensor (results
    come back as torch tensors).  A complex ``y`` or ``z0`` is refused (``TypeError``).
    """
    Phi = as_operator(Phi, name)
    torch_like = None
    if is_torch_tensor(y):
        torch_like = y
        y = from_torch(y, "y")
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        y = np.asarray(y)
    dt = result_dtype(Phi.dtype, y.dtype, "y")
    yb, kind = as_batch("y", y, Phi.out_shape)
    check_finite("y", yb)
    xp = get_array_module(yb)
    yb = yb.astype(dt, copy=False)
    if model is not None:
        if not isinstance(model, SparsityModel):
            raise TypeError(
                "parameter 'model' must be a ModelSparse, TopKSparse or BlockSparse; "
                f"got {model!r}"
            )
        model.check_code_shape(Phi.in_shape)
    z0b = None
    if z0 is not None:
        if is_torch_tensor(z0):
            z0 = from_torch(z0, "z0")
        if not hasattr(z0, "shape") or not hasattr(z0, "dtype"):
            z0 = np.asarray(z0)
        result_dtype(Phi.dtype, z0.dtype, "z0")  # refuses complex z0 like complex y
        z0a, zkind = as_batch("z0", xp.asarray(z0), Phi.in_shape)
        if zkind == "batch" and z0a.shape[0] != yb.shape[0]:
            raise ValueError(
                f"parameter 'z0' has shape {tuple(z0.shape)}; expected {Phi.in_shape} or "
                f"({yb.shape[0]}, {', '.join(map(str, Phi.in_shape))}) like y"
            )
        check_finite("z0", z0a)
        z0b = xp.array(xp.broadcast_to(z0a.astype(dt), (yb.shape[0], *Phi.in_shape)), copy=True)
    return Prepared(Phi, yb, z0b, kind, torch_like)


def check_step(step: Any) -> float | None:
    """``None`` for ``"normalized"``, else the positive finite fixed step as a float."""
    if isinstance(step, str):
        if step != "normalized":
            raise ValueError(
                f"parameter 'step' must be a positive number or 'normalized'; got {step!r}"
            )
        return None
    if isinstance(step, numbers.Real) and not isinstance(step, bool):
        if not (math.isfinite(step) and float(step) > 0):
            raise ValueError(
                f"parameter 'step' must be a positive finite number or 'normalized'; got {step!r}"
            )
        return float(step)
    raise TypeError(f"parameter 'step' must be a positive number or 'normalized'; got {step!r}")


def check_iter_tol(max_iter: Any, tol: Any) -> tuple[int, float]:
    """The common ``max_iter`` (int >= 0) and ``tol`` (finite >= 0) checks."""
    return check_max_iter(max_iter), check_tol(tol)


class Active:
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
