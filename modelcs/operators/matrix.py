"""Matrices and foreign operators as modelcs operators: MatrixOperator, as_operator.

Every public modelcs function that takes an operator converts it once, on entry, with
:func:`as_operator`, so a user can pass what they have:

* a modelcs :class:`~modelcs.LinearOperator` (returned unchanged), e.g. a
  :class:`~modelcs.ConvOperator` ``W`` or its adjoint ``W.T``;
* a 2-D NumPy or CuPy array, or a nested list (a dense matrix);
* a SciPy sparse matrix or array (``scipy.sparse.csr_array`` ...);
* a ``scipy.sparse.linalg.LinearOperator``;
* any object with ``matvec``, ``rmatvec`` and ``shape`` (PyLops operators; ``matmat`` /
  ``rmatmat`` are used for batches when present);
* a 2-D ``torch.Tensor`` (converted zero-copy through DLPack; CUDA tensors become CuPy).

A matrix ``A`` of shape ``(m, n)`` becomes an operator with ``in_shape = (n,)`` and
``out_shape = (m,)`` (or the shapes given), so ``iht(A, y, TopKSparse(8))`` with a 1-D
``y`` of length ``m`` returns a 1-D code of length ``n``, and a ``(B, m)`` batch of
measurements a ``(B, n)`` batch of codes -- as in scikit-learn, PyLops or SigPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._backend import from_torch, get_array_module, is_cupy_array, is_torch_tensor, to_numpy
from .base import LinearOperator

__all__ = ["MatrixOperator", "as_operator"]


def _is_scipy_sparse(A: Any) -> bool:
    if not type(A).__module__.startswith("scipy"):
        return False
    import scipy.sparse as sp  # noqa: PLC0415  (only for SciPy objects)

    return bool(sp.issparse(A))


def _is_scipy_linop(A: Any) -> bool:
    if not type(A).__module__.startswith("scipy"):
        return False
    from scipy.sparse.linalg import LinearOperator as SciPyLinearOperator  # noqa: PLC0415

    return isinstance(A, SciPyLinearOperator)


def _operator_dtype(dt: Any, name: str) -> np.dtype:
    if dt is None:
        return np.dtype(np.float64)
    dt = np.dtype(dt)
    if dt.kind == "c":
        raise TypeError(
            f"parameter '{name}' has complex dtype {dt}; modelcs operators are real "
            "(expected float32, float64 or an integer/boolean matrix)"
        )
    if dt.kind not in "fiub":
        raise TypeError(f"parameter '{name}' has dtype {dt}; expected a real numeric matrix")
    if dt == np.float32:
        return dt
    return np.dtype(np.float64)


def _shape_pair(
    name: str, m: int, n: int, in_shape: Any, out_shape: Any
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    def one(label: str, shp: Any, size: int) -> tuple[int, ...]:
        if shp is None:
            return (size,)
        if isinstance(shp, (int, np.integer)) and not isinstance(shp, bool):
            shp = (int(shp),)
        if not isinstance(shp, Sequence) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shp
        ):
            raise TypeError(f"parameter '{label}' must be a tuple of positive ints; got {shp!r}")
        shp = tuple(int(s) for s in shp)
        if math.prod(shp) != size:
            raise ValueError(
                f"parameter '{label}' = {shp} has {math.prod(shp)} entries; the matrix "
                f"'{name}' of shape ({m}, {n}) needs {size}"
            )
        return shp

    return one("in_shape", in_shape, n), one("out_shape", out_shape, m)


class MatrixOperator(LinearOperator):
    """A matrix (dense, sparse or matrix-free) as a modelcs :class:`LinearOperator`.

    Parameters
    ----------
    A : array_like (m, n), SciPy sparse matrix/array, SciPy LinearOperator or matvec object
        The matrix.  Dense NumPy/CuPy arrays and SciPy sparse matrices are kept as given
        (no copy unless a dtype cast is needed); integer matrices become float64.
        Objects with ``matvec``/``rmatvec``/``shape`` (SciPy ``LinearOperator``, PyLops)
        are applied through ``matmat``/``rmatmat`` when they have them (one call per
        batch), else one ``matvec`` per batch item.
    in_shape, out_shape : tuple of int, optional
        Shapes of one input / output (default ``(n,)`` and ``(m,)``); e.g.
        ``out_shape=(K, n)`` lets a structured sparsity model see ``K`` blocks.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import MatrixOperator, dottest
    >>> A = np.arange(6.0).reshape(2, 3)
    >>> op = MatrixOperator(A)
    >>> op @ np.ones(3), op.T @ np.ones(2)
    (array([ 3., 12.]), array([3., 5., 7.]))
    >>> op @ np.ones((4, 3))                      # a batch of 4 inputs
    array([[ 3., 12.],
           [ 3., 12.],
           [ 3., 12.],
           [ 3., 12.]])
    >>> dottest(op) < 1e-12
    True
    """

    def __init__(self, A: Any, *, in_shape: Any = None, out_shape: Any = None):
        name = "A"
        if is_torch_tensor(A):
            A = from_torch(A, name)
        if _is_scipy_sparse(A):
            kind = "sparse"
            dt = _operator_dtype(A.dtype, name)
            if A.ndim != 2:
                raise ValueError(f"parameter 'A' must be 2-D; got shape {A.shape}")
            A = A.astype(dt) if A.dtype != dt else A
        elif _is_scipy_linop(A) or (
            hasattr(A, "matvec") and hasattr(A, "shape") and not isinstance(A, np.ndarray)
            and not is_cupy_array(A)
        ):
            kind = "linop"
            if not hasattr(A, "rmatvec"):
                raise TypeError(
                    f"parameter 'A' ({type(A).__name__}) has matvec but no rmatvec; modelcs "
                    "needs the adjoint too (expected an object with matvec, rmatvec and shape)"
                )
            dt = _operator_dtype(getattr(A, "dtype", None), name)
        else:
            kind = "dense"
            if not (hasattr(A, "ndim") and hasattr(A, "dtype")):
                A = np.asarray(A)
            dt = _operator_dtype(A.dtype, name)
            if A.ndim != 2:
                raise ValueError(
                    f"parameter 'A' must be a 2-D matrix (m, n); got shape {tuple(A.shape)}"
                )
            A = A.astype(dt, copy=False)
            from .._validation import check_finite  # noqa: PLC0415

            check_finite(name, A)
        shape = tuple(int(s) for s in A.shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"parameter 'A' must have shape (m, n) with m, n >= 1; got {shape}")
        m, n = shape
        ins, outs = _shape_pair(name, m, n, in_shape, out_shape)
        self.A = A
        self.kind = kind
        super().__init__(ins, outs, dt)

    @property
    def threadsafe(self) -> bool:  # type: ignore[override]
        """True for a dense or sparse matrix; a matrix-free object may keep state."""
        return self.kind != "linop"

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        if self.kind == "linop":
            raise NotImplementedError(
                f"a MatrixOperator wrapping a matrix-free {type(self.A).__name__} cannot "
                f"compute in {dtype}: its matvec decides its own precision"
            )
        return MatrixOperator(self.A.astype(dtype), in_shape=self.in_shape,
                              out_shape=self.out_shape)

    # ------------------------------------------------------------------ applying
    def _matmat(self, X: Any, adjoint: bool) -> Any:
        B = X.shape[0]
        Xf = X.reshape(B, -1)
        A = self.A
        if self.kind == "dense":
            xp = get_array_module(A, Xf)
            if xp is not np and not is_cupy_array(A):
                A = xp.asarray(A)
            return Xf @ A if adjoint else Xf @ A.T
        Xh = to_numpy(Xf)
        if self.kind == "sparse":
            out = (A.T @ Xh.T).T if adjoint else (A @ Xh.T).T
        elif adjoint:
            if hasattr(A, "rmatmat"):
                out = np.asarray(A.rmatmat(np.ascontiguousarray(Xh.T))).T
            else:
                out = np.stack([np.asarray(A.rmatvec(v)).reshape(-1) for v in Xh])
        elif hasattr(A, "matmat"):
            out = np.asarray(A.matmat(np.ascontiguousarray(Xh.T))).T
        else:
            out = np.stack([np.asarray(A.matvec(v)).reshape(-1) for v in Xh])
        out = np.ascontiguousarray(np.asarray(out), dtype=np.result_type(Xh.dtype, self.dtype))
        xp = get_array_module(X)
        return out if xp is np else xp.asarray(out)

    def _forward(self, x: Any) -> Any:
        return self._matmat(x, False).reshape((x.shape[0], *self.out_shape))

    def _adjoint(self, y: Any) -> Any:
        return self._matmat(y, True).reshape((y.shape[0], *self.in_shape))

    def to_dense(self, *, xp: Any = np) -> Any:
        """The ``m x n`` matrix (a copy)."""
        if self.kind == "dense":
            return xp.asarray(self.A).copy() if xp is not np else to_numpy(self.A).copy()
        if self.kind == "sparse":
            return xp.asarray(self.A.toarray())
        return super().to_dense(xp=xp)

    def to_sparse(self) -> Any:
        """The matrix as ``scipy.sparse.csr_array``."""
        if self.kind == "sparse":
            import scipy.sparse as sp  # noqa: PLC0415

            return sp.csr_array(self.A)
        return super().to_sparse()

    def __repr__(self) -> str:
        return (
            f"<MatrixOperator ({self.kind}) {self.in_shape} -> {self.out_shape}, "
            f"matrix {self.shape[0]}x{self.shape[1]}, dtype={self.dtype}>"
        )


def as_operator(
    obj: Any, name: str = "Phi", *, in_shape: Any = None, out_shape: Any = None
) -> LinearOperator:
    """Turn what a user has into a modelcs :class:`LinearOperator` (the one conversion).

    Parameters
    ----------
    obj : LinearOperator, array_like (m, n), SciPy sparse, SciPy LinearOperator, object
        with ``matvec``/``rmatvec``/``shape`` (PyLops), or a 2-D torch tensor
        See the module docstring.  A modelcs operator is returned unchanged.
    name : str
        The parameter name used in error messages (``"Phi"``, ``"W"``...).
    in_shape, out_shape : tuple of int, optional
        Shapes for a matrix (see :class:`MatrixOperator`); for a modelcs operator they
        must match its own shapes if given.

    Returns
    -------
    LinearOperator

    Raises
    ------
    TypeError
        ``obj`` is none of the above (the message names ``name``).

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from modelcs import as_operator
    >>> as_operator(np.eye(3)).shape, as_operator(sp.eye(3, format="csr")).shape
    ((3, 3), (3, 3))
    """
    if isinstance(obj, LinearOperator):
        for label, want, have in (("in_shape", in_shape, obj.in_shape),
                                  ("out_shape", out_shape, obj.out_shape)):
            if want is not None and tuple(want) != have:
                raise ValueError(
                    f"parameter '{label}' = {tuple(want)} does not match the operator "
                    f"'{name}' with {label} {have}"
                )
        return obj
    ok = (
        is_torch_tensor(obj)
        or _is_scipy_sparse(obj)
        or _is_scipy_linop(obj)
        or (hasattr(obj, "matvec") and hasattr(obj, "shape"))
        or (hasattr(obj, "ndim") and hasattr(obj, "dtype") and hasattr(obj, "shape"))
        or isinstance(obj, (list, tuple))
    )
    if not ok:
        raise TypeError(
            f"parameter '{name}' must be a modelcs LinearOperator, a 2-D NumPy/CuPy array or "
            "torch tensor, a SciPy sparse matrix, a scipy.sparse.linalg.LinearOperator or an "
            f"object with matvec, rmatvec and shape (e.g. PyLops); got {type(obj).__name__}"
        )
    try:
        return MatrixOperator(obj, in_shape=in_shape, out_shape=out_shape)
    except (TypeError, ValueError) as exc:
        msg = str(exc).replace("parameter 'A'", f"parameter '{name}'")
        raise type(exc)(msg) from None
