"""The linear-operator protocol shared by every modelcs operator.

An operator maps arrays of shape ``in_shape`` to arrays of shape ``out_shape``.  Its
matrix is ``prod(out_shape) x prod(in_shape)``; rows are the C-order flattening of
``out_shape`` and columns that of ``in_shape``.  Applying it (``op @ x``) accepts

* ``x`` of shape ``in_shape``            -> result of shape ``out_shape``;
* ``x`` of shape ``(B, *in_shape)``      -> result of shape ``(B, *out_shape)`` (a batch);
* ``x`` flat, of shape ``(prod(in_shape),)`` -> flat result of length ``prod(out_shape)``.

Subclasses implement ``_forward`` and ``_adjoint`` on batched arrays
``(B, *in_shape)`` / ``(B, *out_shape)``.  ``op.T`` (equal to ``op.H``: all operators
here are real) is a view that swaps the two; composition (``A @ B``), scalar multiples,
sums, negation and :func:`vstack` build new operators with correct adjoints.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._backend import (
    from_torch,
    get_array_module,
    is_torch_tensor,
    result_dtype,
    to_numpy,
    to_torch_like,
)
from .._memory import check_elements
from .._validation import check_finite, check_positive_int, check_rng

__all__ = ["LinearOperator", "MaskedOperator", "vstack", "dottest"]


class LinearOperator:
    r"""Base class: a real linear map between arrays of fixed shapes.

    An operator :math:`A : \mathbb{R}^{n} \to \mathbb{R}^{m}` whose inputs and outputs are
    arrays of shapes ``in_shape`` and ``out_shape`` (``n = prod(in_shape)``,
    ``m = prod(out_shape)``), applied without forming its matrix: ``A @ x`` and its
    adjoint ``A.T @ y`` with :math:`\langle A x, y\rangle = \langle x, A^{\mathsf T} y\rangle`.
    A leading batch axis ``(B, *in_shape)`` goes through one call.  Subclasses implement
    ``_forward`` and ``_adjoint`` on batches.

    Parameters
    ----------
    in_shape, out_shape : sequence of int
        Shapes of one input / output (without batch axis).
    dtype : data-type
        The operator's own floating dtype; mixed dtypes follow
        ``numpy.result_type(operator.dtype, x.dtype)``.

    Attributes
    ----------
    in_shape, out_shape : tuple of int
        Shapes of one input / output (without batch axis).
    dtype : numpy.dtype
        The operator's own floating dtype.
    threadsafe : bool
        Whether the operator may be applied from several threads at once (default False;
        True for :class:`ConvOperator`, dense and sparse :class:`MatrixOperator` and
        compositions of such).  Solvers then run independent chunks of a large batch on
        several CPU cores.  A subclass whose ``_forward``/``_adjoint`` keep no mutable
        state may set it to True.

    Examples
    --------
    A diagonal scaling written as a subclass:

    >>> import numpy as np
    >>> from modelcs import LinearOperator, dottest
    >>> class Scale(LinearOperator):
    ...     def __init__(self, d):
    ...         self.d = np.asarray(d, dtype=float)
    ...         super().__init__(self.d.shape, self.d.shape, self.d.dtype)
    ...     def _forward(self, x):
    ...         return x * self.d
    ...     def _adjoint(self, y):
    ...         return y * self.d
    >>> S = Scale([1.0, 2.0, 3.0])
    >>> S @ np.ones(3)
    array([1., 2., 3.])
    >>> S.shape, dottest(S) < 1e-12
    ((3, 3), True)
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dtype: np.dtype

    # numpy should defer to our __rmatmul__ / __rmul__
    __array_priority__ = 1000
    __array_ufunc__ = None

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], dtype: Any):
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.dtype = np.dtype(dtype)

    #: see the class docstring; a user's subclass is not assumed thread-safe
    threadsafe: bool = False

    # ------------------------------------------------------------------ shapes
    @property
    def shape(self) -> tuple[int, int]:
        """``(prod(out_shape), prod(in_shape))``: the shape of the matrix."""
        return (math.prod(self.out_shape), math.prod(self.in_shape))

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.in_shape} -> {self.out_shape}, "
            f"matrix {self.shape[0]}x{self.shape[1]}, dtype={self.dtype}>"
        )

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"a {type(self).__name__} is a matrix-free operator and is not converted to an "
            "array implicitly (that would form the whole matrix); call .to_dense() for the "
            "dense matrix, or apply it with op @ x"
        )

    # ------------------------------------------------------------------ dtype
    def astype(self, dtype: Any) -> LinearOperator:
        """The same operator computing in ``dtype`` (float32 or float64).

        Returns ``self`` when ``dtype`` is the operator's own; otherwise a cast copy (of the
        filters, the matrix, ...), built once and cached on the operator.  Solvers use it
        to do most of their iterations in float32 and certify the result in float64
        (:func:`modelcs.lasso`).

        Parameters
        ----------
        dtype : data-type
            ``float32`` or ``float64``.

        Returns
        -------
        LinearOperator

        Raises
        ------
        NotImplementedError
            If the operator cannot compute in another dtype: a matrix-free object of the
            user's (its ``matvec`` decides its own precision) or a subclass without
            ``_astype``.

        Examples
        --------
        >>> import numpy as np
        >>> from modelcs import ConvOperator
        >>> W = ConvOperator.random(4, 2, 3, 10, rng=0)
        >>> W.T.astype(np.float32).dtype, W.astype(np.float64) is W
        (dtype('float32'), True)
        """
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"parameter 'dtype' must be float32 or float64; got {dtype!r}")
        if dt == self.dtype:
            return self
        cache = self.__dict__.setdefault("_astype_cache", {})
        op = cache.get(dt.str)
        if op is None:
            op = self._astype(dt)
            cache[dt.str] = op
        return op  # type: ignore[no-any-return]

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        """The cast copy behind :meth:`astype` (``dtype`` differs from :attr:`dtype`)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot compute in {dtype}: implement _astype(dtype) to "
            "return the same operator in that dtype"
        )

    # ------------------------------------------------------------------ norm
    def norm(self) -> float:
        """Estimate of the spectral norm ``||op||_2``, computed once and cached on the operator.

        Lanczos on ``op^T op`` (:func:`modelcs._krylov.lanczos_norm_sq`, deterministic);
        adjoint views and scalar multiples reuse the cache of the operator they wrap.

        Examples
        --------
        >>> import numpy as np
        >>> from modelcs import MatrixOperator
        >>> op = MatrixOperator(np.diag([2.0, 1.0]))
        >>> round(op.norm(), 6), round(op.T.norm(), 6), round((3 * op).norm(), 6)
        (2.0, 2.0, 6.0)
        """
        cached = self.__dict__.get("_norm_value")
        if cached is None:
            from .._krylov import lanczos_norm_sq  # noqa: PLC0415

            cached = math.sqrt(max(lanczos_norm_sq(self), 0.0))
            self.__dict__["_norm_value"] = cached
        return float(cached)

    # ------------------------------------------------------- to be implemented
    def _forward(self, x: Any) -> Any:  # (B, *in_shape) -> (B, *out_shape)
        raise NotImplementedError

    def _adjoint(self, y: Any) -> Any:  # (B, *out_shape) -> (B, *in_shape)
        raise NotImplementedError

    # --------------------------------------------------------------- applying
    def _apply(self, x: Any, adjoint: bool) -> Any:
        src = self.out_shape if adjoint else self.in_shape
        dst = self.in_shape if adjoint else self.out_shape
        name = "z (adjoint input)" if adjoint else "x"
        if is_torch_tensor(x):  # torch in, torch out (zero-copy through DLPack on CPU)
            return to_torch_like(self._apply(from_torch(x, name), adjoint), x)
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        dt = result_dtype(self.dtype, x.dtype, name)
        if x.shape == src:
            batched, flat = False, False
            xb = x.reshape((1, *src))
        elif x.ndim == len(src) + 1 and tuple(x.shape[1:]) == src:
            batched, flat = True, False
            xb = x
        elif x.ndim == 1 and x.shape[0] == math.prod(src):
            batched, flat = False, True
            xb = x.reshape((1, *src))
        else:
            raise ValueError(
                f"{type(self).__name__}{'.T' if adjoint else ''}: parameter '{name}' has shape "
                f"{tuple(x.shape)}; expected {src}, a batch (B, {', '.join(map(str, src))}) "
                f"or a flat vector of length {math.prod(src)}"
            )
        check_finite(name, xb)
        xb = xb.astype(dt, copy=False)
        out = self._adjoint(xb) if adjoint else self._forward(xb)
        if flat:
            return out.reshape(-1)
        if not batched:
            return out.reshape(dst)
        return out

    def matvec(self, x: Any) -> Any:
        """``self @ x`` for an array ``x`` (single, batched or flat)."""
        return self._apply(x, adjoint=False)

    def rmatvec(self, y: Any) -> Any:
        """``self.T @ y``: the adjoint applied to ``y``."""
        return self._apply(y, adjoint=True)

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, LinearOperator):
            return _Composition(self, other)
        return self.matvec(other)

    def __rmatmul__(self, other: Any) -> Any:
        if isinstance(other, LinearOperator):
            return _Composition(other, self)
        return NotImplemented

    # ---------------------------------------------------------- adjoint views
    @property
    def T(self) -> LinearOperator:  # noqa: N802  (matrix convention)
        """The adjoint (transpose) as an operator; no data is copied."""
        return _Adjoint(self)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        """Conjugate transpose; equal to :attr:`T` since operators are real."""
        return self.T

    # ------------------------------------------------------------- arithmetic
    def __mul__(self, c: Any) -> LinearOperator:
        if isinstance(c, numbers.Real) and not isinstance(c, bool):
            return _Scaled(self, float(c))
        return NotImplemented

    __rmul__ = __mul__

    def __neg__(self) -> LinearOperator:
        return _Scaled(self, -1.0)

    def __add__(self, other: Any) -> LinearOperator:
        if isinstance(other, LinearOperator):
            return _Sum(self, other)
        return NotImplemented

    def __sub__(self, other: Any) -> LinearOperator:
        if isinstance(other, LinearOperator):
            return _Sum(self, -other)
        return NotImplemented

    # ------------------------------------------------------------ conversions
    def to_dense(self, *, xp: Any = np) -> Any:
        """The matrix ``prod(out_shape) x prod(in_shape)`` (formed only when asked).

        Built column by column from the operator itself (batched identity), so it is
        exactly what ``@`` computes.
        """
        n_in = self.shape[1]
        check_elements(f"to_dense: the {self.shape[0]} x {n_in} matrix", n_in * (n_in + 2 * self.shape[0]), self.dtype)  # noqa: E501
        eye = xp.eye(n_in, dtype=self.dtype).reshape((n_in, *self.in_shape))
        cols = self._forward(eye)
        return cols.reshape(n_in, -1).T.copy()

    def to_sparse(self) -> Any:
        """The matrix as ``scipy.sparse.csr_array`` (generic fallback: via the dense matrix)."""
        import scipy.sparse as sp

        return sp.csr_array(to_numpy(self.to_dense()))

    def aslinearoperator(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` acting on flat NumPy vectors."""
        from scipy.sparse.linalg import LinearOperator as SciPyLinearOperator

        def _mv(v: np.ndarray) -> np.ndarray:
            v = np.asarray(v).reshape(-1)
            return np.asarray(self.matvec(v))

        def _rmv(v: np.ndarray) -> np.ndarray:
            v = np.asarray(v).reshape(-1)
            return np.asarray(self.rmatvec(v))

        def _mm(V: np.ndarray) -> np.ndarray:
            V = np.asarray(V)
            out = self.matvec(np.ascontiguousarray(V.T).reshape((V.shape[1], *self.in_shape)))
            return np.asarray(out).reshape(V.shape[1], -1).T

        def _rmm(V: np.ndarray) -> np.ndarray:
            V = np.asarray(V)
            out = self.rmatvec(np.ascontiguousarray(V.T).reshape((V.shape[1], *self.out_shape)))
            return np.asarray(out).reshape(V.shape[1], -1).T

        return SciPyLinearOperator(
            shape=self.shape, dtype=self.dtype, matvec=_mv, rmatvec=_rmv, matmat=_mm, rmatmat=_rmm
        )


class _Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        super().__init__(op.out_shape, op.in_shape, op.dtype)
        self.op = op

    @property
    def threadsafe(self) -> bool:  # type: ignore[override]
        return self.op.threadsafe

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        return self.op.astype(dtype).T

    def _forward(self, x: Any) -> Any:
        return self.op._adjoint(x)

    def _adjoint(self, y: Any) -> Any:
        return self.op._forward(y)

    def _apply(self, x: Any, adjoint: bool) -> Any:
        # validate and name arguments as the underlying operator's adjoint does
        return self.op._apply(x, not adjoint)

    @property
    def T(self) -> LinearOperator:  # noqa: N802
        return self.op

    def norm(self) -> float:
        return self.op.norm()

    def __repr__(self) -> str:
        return f"{self.op!r}.T"


class _Composition(LinearOperator):
    def __init__(self, A: LinearOperator, B: LinearOperator):
        if A.in_shape != B.out_shape:
            raise ValueError(
                f"cannot compose operators: left operand takes inputs of shape {A.in_shape} "
                f"but right operand returns {B.out_shape}; expected them equal"
            )
        super().__init__(B.in_shape, A.out_shape, np.result_type(A.dtype, B.dtype))
        self.A, self.B = A, B

    @property
    def threadsafe(self) -> bool:  # type: ignore[override]
        return self.A.threadsafe and self.B.threadsafe

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        return _Composition(self.A.astype(dtype), self.B.astype(dtype))

    def _forward(self, x: Any) -> Any:
        return self.A._forward(self.B._forward(x))

    def _adjoint(self, y: Any) -> Any:
        return self.B._adjoint(self.A._adjoint(y))


class _Scaled(LinearOperator):
    def __init__(self, op: LinearOperator, c: float):
        super().__init__(op.in_shape, op.out_shape, op.dtype)
        self.op, self.c = op, c

    @property
    def threadsafe(self) -> bool:  # type: ignore[override]
        return self.op.threadsafe

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        return _Scaled(self.op.astype(dtype), self.c)

    def _forward(self, x: Any) -> Any:
        return self.op._forward(x) * self.c

    def _adjoint(self, y: Any) -> Any:
        return self.op._adjoint(y) * self.c

    def norm(self) -> float:
        return abs(self.c) * self.op.norm()


class MaskedOperator(LinearOperator):
    """``A`` restricted to the inputs where ``mask`` is True: ``x -> A (mask * x)``.

    The operator of a least-squares problem on a support (CoSaMP, debiasing, the
    pseudoinverse on activated filters).  Its adjoint is ``y -> mask * (A^T y)``.  The mask
    has shape ``A.in_shape`` (one support for every input) or ``(B, *A.in_shape)`` (one
    support per batch item; the operator then applies to batches of exactly ``B`` items).

    Parameters
    ----------
    op : LinearOperator
        The operator ``A``.
    mask : bool array, shape ``op.in_shape`` or ``(B, *op.in_shape)``
        The support (``True``: the input entry is kept).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import MatrixOperator, dottest
    >>> A = MatrixOperator(np.arange(12.0).reshape(3, 4))
    >>> S = MaskedOperator(A, np.array([True, False, True, False]))
    >>> S @ np.ones(4)
    array([ 2., 10., 18.])
    >>> dottest(S) < 1e-12
    True
    """

    def __init__(self, op: LinearOperator, mask: Any):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"parameter 'op' must be a modelcs LinearOperator; got {type(op)}")
        if not hasattr(mask, "dtype"):
            mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"parameter 'mask' must be a boolean array; got dtype {mask.dtype}")
        if tuple(mask.shape) == op.in_shape:
            self.batch = None
        elif mask.ndim == len(op.in_shape) + 1 and tuple(mask.shape[1:]) == op.in_shape:
            self.batch = int(mask.shape[0])
        else:
            raise ValueError(
                f"parameter 'mask' has shape {tuple(mask.shape)}; expected {op.in_shape} or "
                f"(B, {', '.join(map(str, op.in_shape))})"
            )
        super().__init__(op.in_shape, op.out_shape, op.dtype)
        self.op, self.mask = op, mask

    @property
    def threadsafe(self) -> bool:  # type: ignore[override]
        return self.op.threadsafe

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        return MaskedOperator(self.op.astype(dtype), self.mask)

    def _check(self, v: Any) -> None:
        if self.batch is not None and v.shape[0] != self.batch:
            raise ValueError(
                f"MaskedOperator: this operator has one mask per item of a batch of "
                f"{self.batch}; got a batch of {v.shape[0]}"
            )

    def _forward(self, x: Any) -> Any:
        self._check(x)
        xp = get_array_module(x)
        return self.op._forward(xp.where(xp.asarray(self.mask), x, 0))

    def _adjoint(self, y: Any) -> Any:
        self._check(y)
        xp = get_array_module(y)
        return xp.where(xp.asarray(self.mask), self.op._adjoint(y), 0)


class _Sum(LinearOperator):
    def __init__(self, A: LinearOperator, B: LinearOperator):
        if A.in_shape != B.in_shape or A.out_shape != B.out_shape:
            raise ValueError(
                f"cannot add operators {A.in_shape}->{A.out_shape} and "
                f"{B.in_shape}->{B.out_shape}; expected equal input and output shapes"
            )
        super().__init__(A.in_shape, A.out_shape, np.result_type(A.dtype, B.dtype))
        self.A, self.B = A, B

    @property
    def threadsafe(self) -> bool:  # type: ignore[override]
        return self.A.threadsafe and self.B.threadsafe

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        return _Sum(self.A.astype(dtype), self.B.astype(dtype))

    def _forward(self, x: Any) -> Any:
        return self.A._forward(x) + self.B._forward(x)

    def _adjoint(self, y: Any) -> Any:
        return self.A._adjoint(y) + self.B._adjoint(y)


class _VStack(LinearOperator):
    """Operators with a common input stacked along the first output axis.

    When all ``out_shape[1:]`` agree (e.g. conv operators on the same grid) the outputs
    are concatenated along their channel axis, so ``vstack([W, -W])`` maps ``(M, *D)`` to
    ``(2K, *n)`` -- the CReLU pair.  Otherwise outputs are flattened and concatenated.
    """

    def __init__(self, ops: Sequence[LinearOperator]):
        ops = list(ops)
        if not ops or not all(isinstance(o, LinearOperator) for o in ops):
            raise TypeError("vstack: parameter 'operators' must be a non-empty list of operators")
        in_shape = ops[0].in_shape
        for i, o in enumerate(ops):
            if o.in_shape != in_shape:
                raise ValueError(
                    f"vstack: operator {i} takes inputs of shape {o.in_shape}; expected "
                    f"{in_shape} like operator 0"
                )
        tails = {o.out_shape[1:] for o in ops}
        if len(tails) == 1 and all(len(o.out_shape) >= 1 for o in ops):
            self._channel = True
            self._sizes = [o.out_shape[0] for o in ops]
            out_shape: tuple[int, ...] = (sum(self._sizes), *ops[0].out_shape[1:])
        else:
            self._channel = False
            self._sizes = [o.shape[0] for o in ops]
            out_shape = (sum(self._sizes),)
        super().__init__(in_shape, out_shape, np.result_type(*[o.dtype for o in ops]))
        self.ops = ops

    @property
    def threadsafe(self) -> bool:  # type: ignore[override]
        return all(o.threadsafe for o in self.ops)

    def _astype(self, dtype: np.dtype) -> LinearOperator:
        return _VStack([o.astype(dtype) for o in self.ops])

    def _forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        outs = [o._forward(x) for o in self.ops]
        if not self._channel:
            outs = [o.reshape(o.shape[0], -1) for o in outs]
        return xp.concatenate(outs, axis=1)

    def _adjoint(self, y: Any) -> Any:
        total = None
        start = 0
        for o, s in zip(self.ops, self._sizes, strict=True):
            part = y[:, start : start + s]
            if not self._channel:
                part = part.reshape((y.shape[0], *o.out_shape))
            r = o._adjoint(part)
            total = r if total is None else total + r
            start += s
        return total


def vstack(operators: Sequence[Any]) -> LinearOperator:
    r"""Stack operators with the same input shape: ``[A; B; ...]``.

    .. math::

        \begin{bmatrix} A_1 \\ \vdots \\ A_p \end{bmatrix} x
        = (A_1 x, \dots, A_p x), \qquad
        \begin{bmatrix} A_1 \\ \vdots \\ A_p \end{bmatrix}^{\mathsf T} (y_1, \dots, y_p)
        = \sum_i A_i^{\mathsf T} y_i .

    Parameters
    ----------
    operators : sequence of LinearOperator
        At least one operator; all share ``in_shape``.

    Returns
    -------
    LinearOperator
        The stacked operator.  When the outputs agree on every axis but the first
        (channels), they are concatenated along it (``vstack([W, -W])`` maps ``(M, *D)``
        to ``(2K, *n)``); otherwise the outputs are flattened and concatenated.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, vstack
    >>> W = ConvOperator.random(4, 2, 3, 10, rng=0)
    >>> P = vstack([W, -W])          # the CReLU pair of the invertibility paper, Sec. 3
    >>> P.out_shape
    (8, 8)
    """
    from .matrix import as_operator  # noqa: PLC0415

    if isinstance(operators, (list, tuple)):
        operators = [as_operator(o, f"operators[{i}]") for i, o in enumerate(operators)]
    return _VStack(operators)


def dottest(
    op: Any, *, batch: int | None = None, rng: Any = None, rtol: float | None = None
) -> float:
    """Adjoint dot test ``<A x, y> = <x, A^T y>`` on random data; returns the relative error.

    The error is ``|<Ax, y> - <x, A^T y>|`` divided by ``max(||Ax|| ||y||, ||x|| ||A^T y||)``,
    the Cauchy-Schwarz scale of the two inner products, so it is meaningful in float32.

    Raises ``AssertionError`` if the relative error exceeds ``rtol`` (default ``1e-12`` for
    float64 and ``1e-5`` for float32).  ``op`` is anything :func:`~modelcs.as_operator`
    accepts; ``batch`` (an int >= 1) tests a batch of that many items; ``rng`` draws the
    random vectors (SciPy SPEC 7).

    Parameters
    ----------
    op : LinearOperator
        The operator to test (its ``_forward`` and ``_adjoint`` are compared).
    batch : int, optional
        Test on a batch of this many random inputs at once (``None``: a single input).
    seed : None, int or numpy.random.Generator
        Random state of the test vectors.
    rtol : float, optional
        Largest accepted relative error; ``None`` picks the dtype's default above.

    Returns
    -------
    float
        The relative error of the dot test.

    Examples
    --------
    >>> from modelcs import ConvOperator, dottest
    >>> W = ConvOperator.random(6, 3, (3, 3), (9, 9), stride=2, rng=1)
    >>> dottest(W) < 1e-12
    True
    """
    from .matrix import as_operator  # noqa: PLC0415

    op = as_operator(op, "op")
    gen = check_rng(rng)
    if batch is not None:
        batch = check_positive_int("batch", batch)  # batch=0 would test nothing
    shp_in = op.in_shape if batch is None else (batch, *op.in_shape)
    shp_out = op.out_shape if batch is None else (batch, *op.out_shape)
    check_elements(f"dottest: batch={batch} inputs {tuple(op.in_shape)} and outputs {tuple(op.out_shape)}", math.prod(shp_in) + math.prod(shp_out), copies=4)  # noqa: E501
    x = gen.standard_normal(shp_in).astype(op.dtype)
    y = gen.standard_normal(shp_out).astype(op.dtype)
    ax = to_numpy(op @ x).astype(np.float64)
    aty = to_numpy(op.T @ y).astype(np.float64)
    lhs = float(np.vdot(ax, y.astype(np.float64)))
    rhs = float(np.vdot(x.astype(np.float64), aty))
    # error relative to the Cauchy-Schwarz scale of the two inner products
    scale = max(
        float(np.linalg.norm(ax) * np.linalg.norm(y)),
        float(np.linalg.norm(x) * np.linalg.norm(aty)),
        1e-300,
    )
    err = abs(lhs - rhs) / scale
    if rtol is None:
        rtol = 1e-5 if op.dtype == np.float32 else 1e-12
    if err > rtol:
        raise AssertionError(f"dot test failed: <Ax,y>={lhs!r}, <x,A^T y>={rhs!r}, rel={err:.3e}")
    return err
