"""Preimages of ReLU layers and the stability of ReLU-network linearizations.

*Invariance and Inverse Stability under ReLU* (anonymous ICLR 2019 submission),
Sec. 2-4 and Appendix A3.

For one layer ``y = ReLU(A x + b)`` the preimage ``{x : ReLU(A x + b) = y}`` is the polyhedron

    ``A|_{y>0} x + b|_{y>0} = y|_{y>0}``,   ``A|_{y=0} x + b|_{y=0} <= 0``      (eqs. 1-2)

and Theorem 4 says it is a single point, a compact polytope or unbounded.  The decision rests
on *omnidirectionality* (Definition 1): ``A`` is omnidirectional when every open half-space
through 0 contains a row, equivalently ``A x <= 0`` implies ``x = 0`` (Corollary 2),
equivalently 0 lies in the *interior* of the convex hull of the rows (Theorem 5).

Public functions
----------------
:func:`is_omnidirectional`       Theorem 5 as one linear program plus a rank test.
:func:`preimage_kind`            Theorem 4 / Appendix A3 Algorithm 1 (with the singleton case
                                 of Theorem 4 ii via Theorem 12).
:func:`preimage_point`           a point of the preimage (its deepest point).
:func:`distant_preimage_point`   a far point of the same preimage (Appendix A7).
:func:`linearize`                ``A_P = D_{I_L} A_L ... D_{I_1} A_1`` of a multilayer ReLU
                                 network at an input, with per-layer singular values, condition
                                 numbers and counts of invariant directions (Section 3, Fig. 6).

Cost and scope
--------------
Deciding whether a ReLU layer is injective on its whole domain is coNP-complete in general;
the functions here answer the *per-point* questions, each of which is a handful of linear
programs (polynomial, exact up to ``tol``).  The linear programs run on the CPU with dense
matrices (``scipy.optimize.linprog``, HiGHS): layers given as
:class:`~modelcs.operators.LinearOperator` (e.g. :class:`~modelcs.ConvOperator`) are turned
into dense matrices with ``to_dense()``, which is meant for *small* layers.  CuPy inputs are
copied to the host for the LPs.  :func:`linearize` never forms a layer's matrix: it pushes the
Jacobian's columns through each operator as one batch and runs on NumPy or CuPy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import linprog

from ._backend import get_array_module, to_numpy
from ._validation import check_finite, check_rng
from .operators.base import LinearOperator
from .operators.matrix import as_operator

__all__ = [
    "is_omnidirectional",
    "preimage_kind",
    "preimage_point",
    "distant_preimage_point",
    "linearize",
    "LayerLinearization",
]

PreimageKind = Literal["singleton", "compact", "unbounded", "empty"]

_DEFAULT_TOL = 1e-7
_MAX_DENSE = 2**25  # entries of a LinearOperator's dense matrix for the LPs (256 MiB)
_HIGHS_OPTIONS = {
    "primal_feasibility_tolerance": 1e-9,
    "dual_feasibility_tolerance": 1e-9,
}


# ---------------------------------------------------------------------------- validation
def _check_tol(tol: Any) -> float:
    if not isinstance(tol, numbers.Real) or isinstance(tol, bool) or not 0.0 < float(tol) < 1.0:
        raise ValueError(f"parameter 'tol' must be a real number in (0, 1); got {tol!r}")
    return float(tol)


def _as_real_array(name: str, a: Any) -> np.ndarray:
    a = to_numpy(a) if hasattr(a, "shape") and hasattr(a, "dtype") else np.asarray(a)
    if a.dtype.kind == "c":
        raise TypeError(f"parameter '{name}' must be real; got complex dtype {a.dtype}")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"parameter '{name}' must be a real numeric array; got dtype {a.dtype}")
    a = a.astype(np.float64)
    check_finite(name, a)
    return a


def _as_matrix(name: str, A: Any) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """Dense float64 ``(m, n)`` matrix plus the operator's input / output shapes."""
    if not isinstance(A, (LinearOperator, np.ndarray, list, tuple)):
        A = as_operator(A, name)  # SciPy sparse / LinearOperator, matvec objects, torch
    if isinstance(A, LinearOperator):
        in_shape, out_shape = A.in_shape, A.out_shape
        if A.shape[0] * A.shape[1] > _MAX_DENSE:
            raise ValueError(
                f"parameter '{name}' is a {A.shape[0]}x{A.shape[1]} operator; the preimage LPs "
                f"need its dense matrix and are limited to {_MAX_DENSE} entries (use a window "
                "of the input, i.e. a smaller operator)"
            )
        M = np.asarray(to_numpy(A.to_dense()), dtype=np.float64)
    else:
        M = _as_real_array(name, A)
        if M.ndim != 2:
            raise ValueError(
                f"parameter '{name}' must be a 2-D matrix (m, n) or a LinearOperator; "
                f"got an array with shape {tuple(M.shape)}"
            )
        in_shape, out_shape = (M.shape[1],), (M.shape[0],)
    if M.shape[0] < 1 or M.shape[1] < 1:
        raise ValueError(f"parameter '{name}' must have at least one row and one column; "
                         f"got shape {tuple(M.shape)}")
    return M, in_shape, out_shape


def _as_vector(name: str, v: Any, m: int, out_shape: tuple[int, ...], *, channel: bool) -> Any:
    """A length-``m`` float64 vector from a flat array, an ``out_shape`` array or (bias only)
    a per-channel ``(out_shape[0],)`` array broadcast over the spatial axes."""
    a = _as_real_array(name, v)
    if a.shape == (m,) or a.shape == out_shape:
        return a.reshape(m)
    if channel and len(out_shape) > 1 and a.shape == (out_shape[0],):
        return np.broadcast_to(a.reshape((-1,) + (1,) * (len(out_shape) - 1)), out_shape).ravel()
    extra = f", ({out_shape[0]},) per channel" if channel and len(out_shape) > 1 else ""
    raise ValueError(
        f"parameter '{name}' has shape {tuple(a.shape)}; expected ({m},) or {out_shape}{extra}"
    )


def _layer(A: Any, b: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    M, in_shape, out_shape = _as_matrix("A", A)
    m = M.shape[0]
    bv = np.zeros(m) if b is None else _as_vector("b", b, m, out_shape, channel=True)
    yv = _as_vector("y", y, m, out_shape, channel=False)
    if (yv < 0).any():
        raise ValueError(
            f"parameter 'y' has {int((yv < 0).sum())} negative entries (min {yv.min():.3g}); "
            "a ReLU output is >= 0 everywhere"
        )
    return M, bv, yv, in_shape


# -------------------------------------------------------------------------- linear programs
def _lp(c: Any, **kw: Any) -> Any:
    """``linprog`` with HiGHS; returns the result, or None when the LP is unbounded."""
    res = linprog(c, method="highs", options=_HIGHS_OPTIONS, **kw)
    if res.status == 0:
        return res
    if res.status == 3:
        return None
    if res.status == 2:
        raise _Infeasible
    raise RuntimeError(f"linear program failed (HiGHS status {res.status}): {res.message}")


class _Infeasible(Exception):
    pass


def _omni_margin(G: np.ndarray, tol: float) -> float:
    """Largest ``s`` with convex weights ``alpha >= s/m`` (sum 1) and ``G^T alpha = 0``.

    ``G`` has unit rows; returns 0 when the rows do not span ``R^k`` or ``m <= k``.
    """
    m, k = G.shape
    if m <= k:  # Corollary 6
        return 0.0
    sv = np.linalg.svd(G, compute_uv=False)
    if sv[-1] <= tol * sv[0]:
        return 0.0
    # variables (alpha_1..alpha_m, s); maximise s; sum alpha = m keeps weights O(1)
    c = np.zeros(m + 1)
    c[-1] = -1.0
    A_eq = np.zeros((k + 1, m + 1))
    A_eq[:k, :m] = G.T
    A_eq[k, :m] = 1.0
    b_eq = np.zeros(k + 1)
    b_eq[k] = m
    A_ub = np.hstack([-np.eye(m), np.ones((m, 1))])  # s - alpha_i <= 0
    try:
        res = _lp(c, A_ub=A_ub, b_ub=np.zeros(m), A_eq=A_eq, b_eq=b_eq,
                  bounds=[(0, None)] * m + [(0, 1)])
    except _Infeasible:
        return 0.0
    return 0.0 if res is None else float(-res.fun)


def _unit_rows(A: np.ndarray) -> np.ndarray:
    """The non-zero rows of ``A`` scaled to unit length (zero rows lie in no open half-space)."""
    scale = np.abs(A).max(axis=1)  # rescale first: norms of tiny rows do not underflow
    keep = scale > 0
    B = A[keep] / scale[keep, None]
    return np.asarray(B / np.linalg.norm(B, axis=1, keepdims=True))


def is_omnidirectional(A: Any, *, tol: float = _DEFAULT_TOL) -> bool:
    """Whether every open half-space through 0 contains a row of ``A`` (Definition 1).

    Equivalently ``A x <= 0`` implies ``x = 0`` (Corollary 2) and ``0`` lies in the interior
    of the convex hull of the rows (Theorem 5) -- not merely in the hull: ``{e1, -e1, e2}``
    has 0 on the boundary of its hull and is *not* omnidirectional.

    Parameters
    ----------
    A : array_like, shape (m, n), or LinearOperator
        The rows ``a_i``.  Exactly zero rows never lie in an open half-space and are ignored;
        the other rows are scaled to unit length (omnidirectionality is invariant under positive
        row scaling).  An operator is made dense with ``to_dense()`` (small layers only).
    tol : float, default 1e-7
        Robustness margin.  ``A`` counts as omnidirectional when (a) the unit rows span
        ``R^n``: smallest singular value > ``tol`` times the largest, and (b) the linear
        program ``max s`` s.t. ``sum_i alpha_i a_i = 0``, ``sum_i alpha_i = m``,
        ``alpha_i >= s`` has optimum ``s > tol`` (``s = 1`` for perfectly balanced rows).
        (a) and (b) are the two halves of Theorem 5's proof (Stiemke's theorem plus
        ``N(A) = {0}``).

    Returns
    -------
    bool

    Notes
    -----
    One LP with ``m + 1`` variables (HiGHS via :func:`scipy.optimize.linprog`, CPU, dense).
    ``m <= n`` returns False at once (Corollary 6).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import is_omnidirectional
    >>> is_omnidirectional(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))   # 0 on boundary
    False
    >>> is_omnidirectional(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    True
    >>> is_omnidirectional(np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]]))  # a simplex
    True
    """
    tol = _check_tol(tol)
    M, _, _ = _as_matrix("A", A)
    return _omni_margin(_unit_rows(M), tol) > tol


# ------------------------------------------------------------------------ preimage analysis
@dataclass
class _Preimage:
    kind: str
    x0: np.ndarray  # minimum-norm solution of the equality part (P_{N(A_P)^perp} x)
    O: np.ndarray  # (k, n) orthonormal basis of N(A|_{y>0})
    G: np.ndarray  # (r, k) unit rows of the reduced inactive system  G u + h <= 0
    h: np.ndarray  # (r,)  signed distances (in units of L)
    L: float  # length scale of the problem
    u: np.ndarray  # (k,) deepest point of the reduced system (units of L)
    tol: float

    def point(self) -> np.ndarray:
        return np.asarray(self.x0 + self.O.T @ (self.L * self.u))


def _analyse(A: np.ndarray, b: np.ndarray, y: np.ndarray, tol: float) -> _Preimage:
    """Theorem 4 via Algorithm 1 (Appendix A3), in a numerically scaled form."""
    m, n = A.shape
    pos = y > 0
    rn = np.linalg.norm(A, axis=1)
    # ---- equality part (eq. 1): rank test and null-space basis
    if pos.any():
        U, s, Vt = np.linalg.svd(A[pos], full_matrices=True)
        r = int((s > tol * s[0]).sum()) if s[0] > 0 else 0
        rhs = y[pos] - b[pos]
        x0 = Vt[:r].T @ ((U[:, :r].T @ rhs) / s[:r])
        O = Vt[r:]
    else:
        x0, O = np.zeros(n), np.eye(n)
    k = O.shape[0]
    nz = rn > 0
    L = float(max(np.linalg.norm(x0), np.max((np.abs(b) + y)[nz] / rn[nz], initial=0.0)))
    if L == 0.0:
        L = 1.0
    row_scale = rn * L + np.abs(b) + y  # size of the terms in row i
    empty = _Preimage("empty", x0, O, np.zeros((0, k)), np.zeros(0), L, np.zeros(k), tol)
    # consistency of the equalities
    res = A @ x0 + b - y
    if (np.abs(res[pos]) > tol * row_scale[pos]).any():
        return empty
    # ---- reduced inequality system (eq. 2) on the null space: At u + bt <= 0
    Z = ~pos
    At = A[Z] @ O.T
    bt = res[Z]  # = b_Z + A_Z x0
    an = np.linalg.norm(At, axis=1)
    const = an <= tol * rn[Z]  # constraint constant on the affine hull of the preimage
    if (bt[const] > tol * row_scale[Z][const]).any():
        return empty
    G = At[~const] / an[~const, None]
    h = bt[~const] / an[~const] / L
    if k == 0:
        return _Preimage("singleton", x0, O, G, h, L, np.zeros(0), tol)
    # ---- deepest point: max t s.t. G v + t <= -h, t <= 1 (Chebyshev centre, capped at L)
    r_ = G.shape[0]
    if r_ == 0:
        return _Preimage("unbounded", x0, O, G, h, L, np.zeros(k), tol)
    c = np.zeros(k + 1)
    c[-1] = -1.0
    res_lp = _lp(c, A_ub=np.hstack([G, np.ones((r_, 1))]), b_ub=-h,
                 bounds=[(None, None)] * k + [(None, 1.0)])
    assert res_lp is not None  # t <= 1 and t is unbounded below: always feasible and bounded
    v, depth = res_lp.x[:k], float(-res_lp.fun)
    if depth < -tol:
        return _Preimage("empty", x0, O, G, h, L, v, tol)
    if not _omni_margin(G, tol) > tol:  # recession cone {G u <= 0} is not {0}
        return _Preimage("unbounded", x0, O, G, h, L, v, tol)
    if depth > tol:  # contains a ball of radius > tol * L: more than one point
        return _Preimage("compact", x0, O, G, h, L, v, tol)
    # thin polytope: a singleton iff the tight rows at a point are omnidirectional (Thm 12)
    tight = G @ v + h >= -tol
    if _omni_margin(G[tight], tol) > tol:
        v = np.linalg.lstsq(G[tight], -h[tight], rcond=None)[0]
        return _Preimage("singleton", x0, O, G, h, L, v, tol)
    return _Preimage("compact", x0, O, G, h, L, v, tol)


def preimage_kind(A: Any, b: Any, y: Any, *, tol: float = _DEFAULT_TOL) -> PreimageKind:
    """Classify the preimage ``{x : ReLU(A x + b) = y}`` of one ReLU layer (Theorem 4).

    Algorithm 1 of Appendix A3, completed with Theorem 4 ii:

    1. rank test on the active rows ``A|_{y>0}``: full column rank -> ``"singleton"``;
    2. ``O`` = orthonormal basis of ``N(A|_{y>0})`` (``k`` columns), ``x0`` the minimum-norm
       solution of the equalities, reduced system ``Ã u + b̃ <= 0`` with
       ``Ã = A|_{y=0} O^T`` and ``b̃ = b|_{y=0} + A|_{y=0} x0``;
    3. feasibility (largest inscribed ball, one LP): none -> ``"empty"``;
    4. ``Ã`` not omnidirectional (:func:`is_omnidirectional`) -> ``"unbounded"``;
    5. else, if the polytope contains a ball of radius ``> tol * L`` -> ``"compact"``;
       otherwise it is a singleton iff the rows tight at a point of it are omnidirectional
       for that point (Theorem 12) -- the case where hyperplanes meet in one point.

    Parameters
    ----------
    A : array_like, shape (m, n), or LinearOperator
        Weights.  A :class:`~modelcs.ConvOperator` is made dense (``to_dense()``): meant for
        small layers -- the LPs are dense and run on the CPU.
    b : array_like or None
        Bias: shape ``(m,)``, the operator's ``out_shape``, or ``(K,)`` (one bias per output
        channel of a conv layer).  ``None`` means zero.
    y : array_like
        The layer output, shape ``(m,)`` or ``out_shape``.  Entries ``> 0`` are active (exact
        comparison, as ReLU produces exact zeros).
    tol : float, default 1e-7
        Relative tolerance for ranks, for tightness and consistency (relative to the problem's
        length scale ``L = max(||x0||, max_i (|b_i| + y_i)/||a_i||)``) and for the
        omnidirectionality margin.

    Returns
    -------
    {"singleton", "compact", "unbounded", "empty"}
        ``"compact"`` means bounded with more than one point (finite volume, Theorem 4 iii).
        An output that no input produces (inconsistent equalities or infeasible inequalities)
        gives ``"empty"`` rather than an error; :func:`preimage_point` raises for it.

    Raises
    ------
    ValueError
        ``y`` has negative entries (not a ReLU output), shapes do not match, NaN/Inf, bad tol.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import preimage_kind
    >>> A = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    >>> preimage_kind(A, [0.0, 0.0, 0.0], [1.0, 0.0, 2.0])       # rank 2 active rows
    'singleton'
    >>> preimage_kind(A, [0.0, 0.0, -1.0], [0.0, 0.0, 0.0])      # {e1,-e1,e2} cannot bound
    'unbounded'
    >>> preimage_kind(A, [-1.0, -1.0, 0.0], [0.0, 0.0, 1.0])     # -1 <= x1 <= 1, x2 = 1
    'compact'
    >>> preimage_kind(A, [0.0, 0.0, 0.0], [1.0, 1.0, 0.0])       # x1 = 1 and x1 = -1
    'empty'
    """
    tol = _check_tol(tol)
    M, bv, yv, _ = _layer(A, b, y)
    return _analyse(M, bv, yv, tol).kind  # type: ignore[return-value]


def preimage_point(A: Any, b: Any, y: Any, *, tol: float = _DEFAULT_TOL) -> np.ndarray:
    """A point ``x`` with ``ReLU(A x + b) = y``: the deepest point of the preimage.

    For a singleton preimage this is *the* point; otherwise it is the centre of the largest
    ball inside the preimage within its affine hull ``x0 + N(A|_{y>0})`` (for unbounded
    preimages the radius is capped at the problem's length scale, so the point is one of many).

    Parameters
    ----------
    A : array_like, shape (m, n), or LinearOperator
        Weights, as in :func:`preimage_kind`.
    b : array_like or None
        Bias, as in :func:`preimage_kind`.
    y : array_like
        The layer output whose preimage is searched.
    tol : float, default 1e-7
        Relative tolerance, as in :func:`preimage_kind`.

    Returns
    -------
    numpy.ndarray
        A point of the preimage, of the operator's ``in_shape`` (``(n,)`` for a matrix).

    Raises
    ------
    ValueError
        The preimage is empty (``y`` is not attainable), or the inputs are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import preimage_point
    >>> A = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    >>> preimage_point(A, [-1.0, -1.0, 0.0], [0.0, 0.0, 1.0]).round(6) + 0.0
    array([0., 1.])
    """
    tol = _check_tol(tol)
    M, bv, yv, in_shape = _layer(A, b, y)
    pre = _analyse(M, bv, yv, tol)
    if pre.kind == "empty":
        raise ValueError("the preimage of 'y' is empty: no input x gives ReLU(A x + b) = y")
    return pre.point().reshape(in_shape)


def _bound_vector(name: str, v: Any, n: int, in_shape: tuple[int, ...], default: float) -> Any:
    if v is None:
        return np.full(n, default)
    a = _as_real_array(name, v)
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.shape == (n,) or a.shape == in_shape:
        return a.reshape(n)
    raise ValueError(f"parameter '{name}' has shape {tuple(a.shape)}; expected a scalar, "
                     f"({n},) or {in_shape}")


def distant_preimage_point(
    A: Any,
    b: Any,
    y: Any,
    direction: Any = None,
    *,
    bounds: tuple[Any, Any] | None = None,
    radius: float | None = None,
    rng: Any = None,
    tol: float = _DEFAULT_TOL,
) -> np.ndarray:
    """A point of the same preimage as far as possible along ``direction`` (Appendix A7).

    Solves ``max <c, x>`` over ``{x : ReLU(A x + b) = y}`` intersected with the box
    ``bounds`` and with ``||x - x_c||_inf <= radius`` (``x_c`` = :func:`preimage_point`).
    With ``c`` an image of another class and ``bounds=(0, 1)`` this is the paper's search
    for inputs that differ in meaning but give identical features (Figs. 7 and 12).

    Parameters
    ----------
    A, b, y, tol
        As in :func:`preimage_kind`.
    direction : array_like, optional
        ``c``, shape ``(n,)`` or the operator's ``in_shape``.  Default: a random Gaussian
        direction (``rng``).  Only its component in ``N(A|_{y>0})`` matters.
    bounds : (lower, upper), optional
        Box on ``x`` (scalars or arrays; ``None`` for no bound on that side).
    radius : float, optional
        Cap on the ``inf``-norm distance from the preimage's deepest point.
    rng : None, int or Generator, optional
        For the default direction.

    Returns
    -------
    ndarray of the operator's ``in_shape``.

    Raises
    ------
    ValueError
        The preimage is empty or a single point (there is no second point), the box misses
        the preimage, or the preimage is unbounded along ``c`` and neither ``bounds`` nor
        ``radius`` limits it.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import distant_preimage_point
    >>> A = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    >>> distant_preimage_point(A, [-1.0, -1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0]).round(6)
    array([1., 1.])
    """
    tol = _check_tol(tol)
    M, bv, yv, in_shape = _layer(A, b, y)
    n = M.shape[1]
    if radius is not None and (
        not isinstance(radius, numbers.Real) or isinstance(radius, bool) or not radius > 0
        or not math.isfinite(radius)
    ):
        raise ValueError(f"parameter 'radius' must be a positive finite number; got {radius!r}")
    if bounds is not None and (not isinstance(bounds, (tuple, list)) or len(bounds) != 2):
        raise ValueError(f"parameter 'bounds' must be a pair (lower, upper); got {bounds!r}")
    lo = _bound_vector("bounds[0]", None if bounds is None else bounds[0], n, in_shape, -np.inf)
    hi = _bound_vector("bounds[1]", None if bounds is None else bounds[1], n, in_shape, np.inf)
    if (lo > hi).any():
        raise ValueError("parameter 'bounds' has lower > upper in some entries")
    if direction is None:
        c = check_rng(rng).standard_normal(n)
    elif np.ndim(direction) == 0:
        raise ValueError(
            f"parameter 'direction' must be an array of shape ({n},) or {in_shape}; "
            f"got a scalar {direction!r}"
        )
    else:
        c = _bound_vector("direction", direction, n, in_shape, 0.0)
    pre = _analyse(M, bv, yv, tol)
    if pre.kind == "empty":
        raise ValueError("the preimage of 'y' is empty: no input x gives ReLU(A x + b) = y")
    if pre.kind == "singleton":
        raise ValueError("the preimage of 'y' is a single point: there is no second point")
    # LP in w = u * L (null-space coordinates): x = x0 + O^T w
    k, L = pre.O.shape[0], pre.L
    OT = pre.O.T
    rows = [pre.G]
    rhs = [-pre.h * L]
    xc = pre.point()
    for bound, sign in ((hi, 1.0), (lo, -1.0)):
        fin = np.isfinite(bound)
        rows.append(sign * OT[fin])
        rhs.append(sign * (bound[fin] - pre.x0[fin]))
    if radius is not None:
        rows += [OT, -OT]
        rhs += [xc - pre.x0 + radius, -(xc - pre.x0 - radius)]
    try:
        res = _lp(-(pre.O @ c), A_ub=np.vstack(rows), b_ub=np.concatenate(rhs),
                  bounds=[(None, None)] * k)
    except _Infeasible:
        raise ValueError("the box 'bounds' does not meet the preimage of 'y'") from None
    if res is None:
        raise ValueError(
            "the preimage of 'y' is unbounded along 'direction'; pass 'bounds' or 'radius'"
        )
    return np.asarray(pre.x0 + OT @ res.x).reshape(in_shape)


# ---------------------------------------------------------------------------- linearization
@dataclass
class LayerLinearization:
    """The linearization of the network up to one layer (Section 3, Definition 7).

    Attributes
    ----------
    index : int
        Layer number, 1-based.
    stage : {"linear", "relu"}
        ``"linear"``: ``A_l D_{I_{l-1}} ... A_1`` (pre-activation); ``"relu"``: after the ReLU
        ``D_{I_l}``.
    out_shape : tuple of int
        Shape of this stage's output (without batch axis).
    singular_values : ndarray, shape ``(B, min(d_l, d_0))`` or ``(min(d_l, d_0),)``
        Descending singular values of the linearization (one row per input of the batch).
    rank : ndarray of int
        Number of singular values above ``rtol * sigma_max``.
    n_zero : ndarray of int
        ``d_0 - rank``: dimension of the null space in input space, i.e. the number of
        directions in which the network is locally invariant.
    condition : ndarray
        ``sigma_max / sigma_min`` over the *non-zero* singular values (Section 3.2);
        ``0.0`` when the linearization is zero (the convention of the paper's Fig. 1).
    n_active : ndarray of int or None
        Positive pre-activations of the layer (``None`` for the ``"linear"`` stage).
    matrix : array or None
        The dense linearization ``(B, d_l, d_0)`` when ``keep_matrices=True``.
    """

    index: int
    stage: str
    out_shape: tuple[int, ...]
    singular_values: Any
    rank: Any
    n_zero: Any
    condition: Any
    n_active: Any = None
    matrix: Any = None


def _bias_array(b: Any, out_shape: tuple[int, ...], xp: Any, dtype: Any, i: int) -> Any:
    if b is None:
        return None
    if not hasattr(b, "shape"):
        b = np.asarray(b)
    m = math.prod(out_shape)
    name = f"layers[{i}] bias"
    if b.dtype.kind not in "fiub":
        raise TypeError(f"parameter '{name}' must be a real numeric array; got dtype {b.dtype}")
    check_finite(name, b)
    b = xp.asarray(b, dtype=dtype)
    if tuple(b.shape) == out_shape:
        return b.reshape(m)
    if tuple(b.shape) == (m,):
        return b
    if len(out_shape) > 1 and tuple(b.shape) == (out_shape[0],):
        return xp.broadcast_to(b.reshape((-1,) + (1,) * (len(out_shape) - 1)), out_shape).reshape(m)
    extra = f", ({out_shape[0]},) per channel" if len(out_shape) > 1 else ""
    raise ValueError(f"parameter '{name}' has shape {tuple(b.shape)}; expected ({m},) or "
                     f"{out_shape}{extra}")


def _prepare_layers(layers: Any, xp: Any, dtype: Any) -> list[tuple[Any, Any, tuple[int, ...]]]:
    if isinstance(layers, (LinearOperator, np.ndarray)) or not isinstance(layers, Sequence):
        raise TypeError("parameter 'layers' must be a sequence of (weights, bias) pairs")
    if len(layers) == 0:
        raise ValueError("parameter 'layers' must contain at least one (weights, bias) pair")
    out: list[tuple[Any, Any, tuple[int, ...]]] = []
    prev: int | None = None
    for i, layer in enumerate(layers):
        if not isinstance(layer, (tuple, list)) or len(layer) != 2:
            raise TypeError(f"parameter 'layers[{i}]' must be a (weights, bias) pair; "
                            f"got {type(layer).__name__}")
        W, b = layer
        if not isinstance(W, (LinearOperator, np.ndarray, list, tuple)) and not hasattr(
            W, "__cuda_array_interface__"
        ):
            W = as_operator(W, f"layers[{i}] weights")  # sparse, matvec objects, torch
        if isinstance(W, LinearOperator):
            n_in, out_shape = W.shape[1], W.out_shape
            Wx: Any = W
        else:
            Wa = W if hasattr(W, "ndim") and hasattr(W, "dtype") else np.asarray(W)
            if Wa.ndim != 2:
                raise ValueError(f"parameter 'layers[{i}]' weights must be a 2-D matrix or a "
                                 f"LinearOperator; got shape {tuple(Wa.shape)}")
            if Wa.dtype.kind not in "fiub":
                raise TypeError(f"parameter 'layers[{i}]' weights must be real numeric; "
                                f"got dtype {Wa.dtype}")
            check_finite(f"layers[{i}] weights", Wa)
            Wx = xp.asarray(Wa, dtype=dtype)
            n_in, out_shape = int(Wa.shape[1]), (int(Wa.shape[0]),)
        if prev is not None and n_in != prev:
            raise ValueError(f"parameter 'layers[{i}]' takes {n_in} inputs but layer {i - 1} "
                             f"returns {prev} values; expected them equal")
        out.append((Wx, _bias_array(b, out_shape, xp, dtype, i), out_shape))
        prev = math.prod(out_shape)
    return out


def _apply(W: Any, v: Any) -> Any:
    """``W`` applied to a batch of flat vectors ``v`` of shape ``(N, d_in)`` -> ``(N, d_out)``."""
    if isinstance(W, LinearOperator):
        out = W @ v.reshape((v.shape[0], *W.in_shape))
        return out.reshape(v.shape[0], -1)
    return v @ W.T


def linearize(
    layers: Sequence[tuple[Any, Any]],
    x: Any,
    *,
    relu_last: bool = True,
    split: bool = False,
    keep_matrices: bool = False,
    rtol: float | None = None,
) -> list[LayerLinearization]:
    """Linearization ``A_P = D_{I_L} A_L ··· D_{I_1} A_1`` of a ReLU network at ``x`` (Sec. 3).

    The network is ``x_l = ReLU(A_l x_{l-1} + b_l)``.  Inside the input polytope ``P`` that
    contains ``x`` the network up to layer ``l`` is affine with matrix
    ``J_l = D_{I_l} A_l ... D_{I_1} A_1`` (``I_l``: inactive units, ``D_I`` zeroes them).
    ``J_l`` is built column by column: the ``d_0`` columns go through each layer as one batch,
    so conv layers are applied as operators, never materialised.

    Parameters
    ----------
    layers : sequence of (weights, bias)
        ``weights``: a dense ``(d_l, d_{l-1})`` matrix or a :class:`LinearOperator` (e.g. a
        :class:`~modelcs.ConvOperator`); ``bias``: ``None``, shape ``(d_l,)``, the
        operator's ``out_shape`` or one value per output channel ``(K,)``.  Consecutive layers
        must agree in size (conv outputs are flattened in C order before a dense layer).
    x : array
        One input (``in_shape`` of the first layer, or flat) or a batch ``(B, ...)``.
    relu_last : bool, default True
        Apply ReLU after the last layer too (``False``: linear read-out such as logits).
    split : bool, default False
        Also report the pre-activation stage ``A_l J_{l-1}`` of each layer (the paper's
        Figs. 5 and 8 count ReLU as a separate layer).
    keep_matrices : bool, default False
        Keep the dense ``J_l`` (``B x d_l x d_0``) in each result.
    rtol : float, optional
        Singular values ``<= rtol * sigma_max`` count as zero; default
        ``max(d_l, d_0) * eps`` of the computing dtype (NumPy's ``matrix_rank`` rule).

    Returns
    -------
    list of LayerLinearization
        One entry per layer (two with ``split=True``), arrays batched like ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import linearize
    >>> A1 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> res = linearize([(A1, np.array([0.0, -5.0, 0.0]))], np.array([1.0, 1.0]))
    >>> res[0].singular_values.round(4), int(res[0].n_zero), int(res[0].n_active)
    (array([1.6180, 0.6180]), 0, 2)
    """
    if rtol is not None and (
        not isinstance(rtol, numbers.Real) or isinstance(rtol, bool) or not 0 < float(rtol) < 1
    ):
        raise ValueError(f"parameter 'rtol' must be a real number in (0, 1); got {rtol!r}")
    xp = get_array_module(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"parameter 'x' must be a real numeric array; got dtype {x.dtype}")
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    first = layers[0][0] if isinstance(layers, Sequence) and len(layers) > 0 and isinstance(
        layers[0], (tuple, list)) and len(layers[0]) == 2 else None
    if isinstance(first, LinearOperator):
        dtype = np.result_type(dtype, first.dtype)
    prepared = _prepare_layers(layers, xp, dtype)
    W0 = prepared[0][0]
    in_shape = W0.in_shape if isinstance(W0, LinearOperator) else (W0.shape[1],)
    d0 = math.prod(in_shape)
    if tuple(x.shape) == in_shape or (x.ndim == 1 and x.shape[0] == d0):
        batched, xb = False, x.reshape(1, d0)
    elif x.ndim >= 1 and tuple(x.shape[1:]) in (in_shape, (d0,)):
        batched, xb = True, x.reshape(x.shape[0], d0)
    else:
        raise ValueError(f"parameter 'x' has shape {tuple(x.shape)}; expected {in_shape}, "
                         f"({d0},) or a batch (B, {', '.join(map(str, in_shape))})")
    check_finite("x", xb)
    xb = xb.astype(dtype, copy=False)
    B = xb.shape[0]
    eye = xp.eye(d0, dtype=dtype)
    J = xp.broadcast_to(eye, (B, d0, d0))  # (B, d_{l}, d0)
    act = xb
    results: list[LayerLinearization] = []

    def record(index: int, stage: str, out_shape: tuple[int, ...], Jl: Any, n_act: Any) -> None:
        sv = xp.linalg.svd(Jl, compute_uv=False)  # (B, min(d_l, d0)), descending
        tol_r = rtol if rtol is not None else max(Jl.shape[1:]) * float(np.finfo(dtype).eps)
        smax = sv[:, :1]
        nonzero = sv > tol_r * smax
        rank = nonzero.sum(axis=1)
        smin = xp.where(nonzero, sv, xp.inf).min(axis=1)
        cond = xp.where(rank > 0, smax[:, 0] / xp.where(rank > 0, smin, 1.0), 0.0)

        def un(a: Any) -> Any:
            return a if batched else a[0]

        results.append(LayerLinearization(
            index=index, stage=stage, out_shape=out_shape, singular_values=un(sv),
            rank=un(rank), n_zero=un(d0 - rank), condition=un(cond),
            n_active=None if n_act is None else un(n_act),
            matrix=un(Jl) if keep_matrices else None,
        ))

    n_layers = len(prepared)
    for i, (W, b, out_shape) in enumerate(prepared):
        pre = _apply(W, act)
        if b is not None:
            pre = pre + b
        # columns of J: (B, d_prev, d0) -> apply W to the B*d0 column vectors at once
        d_prev = J.shape[1]
        cols = xp.ascontiguousarray(xp.swapaxes(J, 1, 2)).reshape(B * d0, d_prev)
        WJ = xp.swapaxes(_apply(W, cols).reshape(B, d0, -1), 1, 2)  # (B, d_l, d0)
        if split or (i == n_layers - 1 and not relu_last):
            record(i + 1, "linear", out_shape, WJ, None)
        if i == n_layers - 1 and not relu_last:
            break
        mask = pre > 0
        act = xp.where(mask, pre, 0.0).astype(dtype, copy=False)
        J = WJ * mask[:, :, None]
        record(i + 1, "relu", out_shape, J, mask.sum(axis=1))
    return results
