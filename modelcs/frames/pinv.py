"""Moore-Penrose pseudoinverse reconstruction (CReLU supplement, Algorithms 1 and 2).

``x' = (W^T)^+ z`` in the paper's notation (its ``W`` is our ``W^T``: columns = shifted
filters) is the minimum-norm least-squares solution of ``W x = z`` with our analysis
operator ``W``.  Two routes, both in float64 (float32 data are promoted and the result cast
back, because in float32 an iteration stalls far above the tolerance on real layers):

``"lsqr"``  LSQR (Paige & Saunders 1982), started from ``x = 0`` so that the iterates stay
    in the row space of ``W`` and converge to the minimum-norm solution; no matrix is formed
    (the package's one batched LSQR, :func:`modelcs._krylov.lsqr`), one call for a batch of
    right-hand sides and supports.
``"direct"``  the sparse matrix of ``W`` (:meth:`ConvOperator.to_sparse`) restricted to the
    support, one sparse LU per distinct support, refined on the true residual: for a tall
    restricted system ``A`` of full column rank the corrected semi-normal equations with
    ``A^T A`` (Bjorck, "Numerical Methods for Least Squares Problems", SIAM 1996); for a
    wide or rank-deficient one ``x = A^T y`` with ``y`` refined against
    ``A A^T + delta I`` (``delta = 1e-14 ||A A^T||_1``), which keeps ``x`` in the row space
    (the minimum-norm solution) however many rows are dependent.  Columns no selected row
    touches are zero (their minimum-norm value).  A rank-deficient system that is only
    solvable in the least-squares sense (the residual test below met by the normal
    equations, not by ``||h - A x||``) is handed to LSQR, because there the part of ``h``
    outside the range of ``A`` grows in ``y`` like ``1 / delta``.  On MobileNetV2's first
    layer with CReLU + 2x2 max-pooling on a 3x64x64 image (32 filters of 27 taps:
    dependent rows) one refinement step reaches 3e-8 from float32 data and seven reach
    3e-13 from float64 data, where LSQR stalled near 5e-6 after 24,576 iterations
    (``benchmarks/bench_frames.py``).

Both stop on LSQR's tests (``tol`` below) and report the residual computed from ``x``
itself.  Each item is divided by its largest entry first and the solution multiplied back,
so data of any magnitude representable in float64 are reconstructed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import get_array_module, to_numpy
from .._krylov import batch_norms, lsqr
from .._validation import check_callback, check_choice, check_finite, check_positive_int
from ..operators import ConvOperator, LinearOperator
from ..operators.base import MaskedOperator
from ..operators.matrix import as_operator
from ..recovery._common import RecoveryResult
from ._sparse import lstsq_direct, sparse_friendly
from .spectrum import SPARSE_MAX_WORK

#: refinement steps of ``method='direct'`` when ``max_iter`` is not given
DIRECT_MAX_ITER = 50

__all__ = ["pinv_reconstruct", "reconstruction_ratio", "ConvergenceWarning", "PinvResult"]


class ConvergenceWarning(UserWarning):
    """The least-squares iteration stopped at ``max_iter`` before reaching the tolerance."""


@dataclass(eq=False, repr=False)
class PinvResult(RecoveryResult):
    """Output of :func:`pinv_reconstruct`: a :class:`~modelcs.RecoveryResult` whose
    unknown is the signal.

    The fields are the constructor's parameters; :func:`pinv_reconstruct` builds it.
    ``z`` holds the reconstructed signal(s) ``x'`` (shape ``W.in_shape`` or
    ``(B, *W.in_shape)``), also readable as ``x`` (an alias, not a copy): in this
    library ``z`` names what a solver solves for, and here that is the layer's input.

    Parameters
    ----------
    z : array ``W.in_shape`` or ``(B, *W.in_shape)``
        The minimum-norm least-squares reconstruction(s) (the dtype of the data).
    n_iter : int or ndarray of int (B,)
        LSQR iterations, or refinement steps of the direct route, per item.
    converged : bool or ndarray of bool (B,)
        Whether LSQR's stopping test was met (before ``max_iter`` or a callback's stop).
    diverged : bool or ndarray of bool (B,)
        Always False (LSQR's residual never grows); present like on every result.
    residual_norm : float or ndarray (B,)
        ``||h - W x'||`` on the support (all rows without one), computed from ``x'``.
    residual_norms : ndarray ``(2,)`` or ``(2, B)``
        The initial (``||h||`` on the support) and final residual norms.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, pinv_reconstruct
    >>> W = ConvOperator.random(4, 2, 3, 10, rng=0)
    >>> res = pinv_reconstruct(W, W @ np.ones((3, 2, 10)))
    >>> res.x is res.z, res.x.shape, res.n_iter.shape, bool(res.converged.all())
    (True, (3, 2, 10), (3,), True)
    """

    @property
    def x(self) -> Any:
        """The reconstructed signal(s): the same array as ``z``."""
        return self.z


def pinv_reconstruct(
    W: LinearOperator,
    h: Any,
    *,
    support: Any = None,
    tol: float | None = None,
    max_iter: int | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    method: str = "auto",
) -> PinvResult:
    """Minimum-norm least-squares ``x`` with ``W x ~ h`` (supplement Algorithms 1 and 2).

    Parameters
    ----------
    W : LinearOperator (e.g. ConvOperator), ``(K, *n) <- (M, *D)``
    h : array ``W.out_shape`` or a batch ``(B, *W.out_shape)``
        Linear responses, e.g. ``crelu_inverse(crelu(W @ x))`` (Algorithm 1) or the ``code``
        of :func:`crelu_pool` (Algorithm 2).
    support : bool array, optional
        Shape ``W.out_shape`` (shared by the batch) or that of ``h``.  Only the activated
        shifted filters (rows of ``W`` where ``support`` is True) and the matching entries of
        ``h`` are used: ``x' = (W_hat_x^T)^+ z`` of Algorithm 2 (the max-pooling case).
    tol : float, optional
        LSQR stopping tolerance (``atol = btol = tol``): relative residual
        ``||h - A x|| <= tol ||h||`` (consistent systems) or
        ``||A^T (h - A x)|| <= tol ||A|| ||h - A x||`` (least squares), ``A`` = ``W`` on the
        support, ``||A||`` LSQR's Frobenius-norm estimate; default ``1e-12`` for float64
        data and ``1e-6`` for float32 data.
    max_iter : int, optional
        Iteration cap: LSQR iterations (default ``2 * min(W.shape)``) or refinement steps of
        ``'direct'`` (default ``DIRECT_MAX_ITER = 50``); a :class:`ConvergenceWarning` is
        issued if some item has not converged by then.
    callback : callable, optional
        Called after every LSQR iteration with a dict ``{"iteration", "z", "x", "active",
        "residual_norms"}``: the current reconstructions of the items still iterating
        (``"x"`` is ``"z"``, in the data's scale), their batch indices and their residuals
        ``||h - W x||`` on the support.  A truthy return value stops all items
        (``converged`` then says which had met the tolerance; no warning is issued).
        LSQR only: with a callback ``'auto'`` uses ``'lsqr'``.
    method : {'auto', 'direct', 'lsqr'}, default 'auto'
        See the module docstring.  ``'auto'`` uses ``'direct'`` for a :class:`ConvOperator`
        with NumPy data, no callback and few channels (the rule of
        :func:`frame_bounds`' ``'sparse'`` method: channels per group on the smaller Gram
        side times that side's dimension at most ``SPARSE_MAX_WORK`` of
        :mod:`modelcs.frames.spectrum`), else ``'lsqr'``.

    Returns
    -------
    PinvResult
        A :class:`~modelcs.RecoveryResult`: the reconstruction ``x'`` (``W.in_shape`` or
        ``(B, *W.in_shape)``) in ``.x`` (alias of ``.z``), LSQR's ``n_iter`` and
        ``converged`` per item, ``residual_norm``.  ``x'`` lies in the row space of the
        (restricted) ``W``: Proposition 2.1 says that without pooling it is the
        orthogonal projection of the input onto that row space.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, crelu, crelu_inverse
    >>> W = ConvOperator.random(2, 3, 3, 12, rng=0)       # 20 x 36: a proper subspace
    >>> x = np.random.default_rng(1).standard_normal((3, 12))
    >>> xr = pinv_reconstruct(W, crelu_inverse(crelu(W @ x))).x
    >>> P = np.linalg.pinv(W.to_dense()) @ W.to_dense()     # projector onto the row space
    >>> bool(np.allclose(xr.ravel(), P @ x.ravel(), atol=1e-9))
    True
    """
    W = as_operator(W, "W")
    if not hasattr(h, "shape") or not hasattr(h, "dtype"):
        h = np.asarray(h)
    if h.dtype.kind not in "fiub":
        raise TypeError(f"parameter 'h' must be a real numeric array; got dtype {h.dtype}")
    if tuple(h.shape) == W.out_shape:
        batched = False
    elif h.ndim == len(W.out_shape) + 1 and tuple(h.shape[1:]) == W.out_shape:
        batched = True
    else:
        raise ValueError(
            f"parameter 'h' has shape {tuple(h.shape)}; expected {W.out_shape} (W.out_shape) "
            f"or a batch (B, {', '.join(map(str, W.out_shape))})"
        )
    check_finite("h", h)
    xp = get_array_module(h)
    dt = np.result_type(W.dtype, h.dtype if h.dtype.kind == "f" else W.dtype)
    # float32 data are solved in float64 (the operator follows its input's dtype): measured
    # on MobileNetV2's first layer, float32 CG/LSQR stalls near 1e-4 after thousands of
    # steps, float64 reaches 1e-6 in about a hundred (benchmarks/bench_frames.py).
    hb = (h if batched else h[None]).astype(np.float64)
    mask = None
    if support is not None:
        if not hasattr(support, "shape") or not hasattr(support, "dtype"):
            support = np.asarray(support)
        if support.dtype != bool:
            raise TypeError(f"parameter 'support' must be a boolean array; got {support.dtype}")
        if tuple(support.shape) == W.out_shape:
            mask = xp.asarray(support)
        elif tuple(support.shape) == tuple(h.shape):
            mask = xp.asarray(support) if batched else xp.asarray(support)[None]
        else:
            raise ValueError(
                f"parameter 'support' has shape {tuple(support.shape)}; expected "
                f"{W.out_shape} or the shape of 'h' {tuple(h.shape)}"
            )
        hb = xp.where(mask, hb, 0.0)
    if tol is None:
        tol = 1e-6 if dt == np.float32 else 1e-12
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"parameter 'tol' must be a number in (0, 1); got {tol!r}")
    check_choice("method", method, ("auto", "direct", "lsqr"))
    if max_iter is not None:
        max_iter = check_positive_int("max_iter", max_iter)
    if method == "direct":
        if callback is not None:
            raise ValueError("parameter 'callback' is only called by method='lsqr' (the "
                             "direct route has no iterations to watch); got method='direct'")
        if xp is not np:
            raise ValueError("method='direct' runs on the host (SciPy sparse LU) and parameter "
                             "'h' is a device array: use method='lsqr' or pass NumPy data")
    use_direct = method == "direct" or (
        method == "auto" and callback is None and xp is np and isinstance(W, ConvOperator)
        and sparse_friendly(W, SPARSE_MAX_WORK))
    if use_direct:
        n_max = DIRECT_MAX_ITER if max_iter is None else max_iter
    else:
        n_max = 2 * min(W.shape) if max_iter is None else max_iter

    # scale out each item (x is linear in h): 1e160- or 1e-170-sized data neither overflow
    # nor underflow in the squared norms of the iteration
    B = hb.shape[0]
    scale = xp.abs(hb.reshape(B, -1)).max(axis=1)
    scale = xp.where(scale > 0, scale, 1.0).reshape((B,) + (1,) * len(W.out_shape))
    hb = hb / scale
    # the (restricted) operator: rows of W where the support is True
    A = W if mask is None else MaskedOperator(W.T, mask).T
    xscale = scale.reshape((B,) + (1,) * len(W.in_shape))
    stopped = False
    cb = None
    if callback is not None:
        check_callback(callback)
        user = callback

        def cb(info: dict[str, Any]) -> bool:
            nonlocal stopped
            sel = xp.asarray(info["active"])
            xs = info["x"] * xscale[sel]
            r = info["residual_norms"] * to_numpy(scale.reshape(B)[sel])
            stopped = bool(user({"iteration": info["iteration"], "z": xs, "x": xs,
                                 "active": info["active"], "residual_norms": r}))
            return stopped

    if use_direct:
        x, n_iter, done_np = _direct(W, hb, mask, float(tol), n_max)
    else:
        kr = lsqr(A, hb, max_iter=n_max, atol=float(tol), btol=float(tol), callback=cb)
        x, n_iter = kr.x, kr.n_iter
        done_np = kr.converged
    # residuals from x itself (not LSQR's recurrences), in the data's scale
    r0 = to_numpy(batch_norms(hb) * scale.reshape(B)).astype(np.float64)
    rf = to_numpy(batch_norms(hb - A @ x) * scale.reshape(B)).astype(np.float64)
    x = x * xscale
    if not bool(done_np.all()) and not stopped:
        warnings.warn(
            f"pinv_reconstruct: {'the direct route' if use_direct else 'LSQR'} did not reach "
            f"tol={tol:g} in max_iter={n_max} iterations for {int((~done_np).sum())} of {B} "
            "item(s); increase max_iter",
            ConvergenceWarning,
            stacklevel=2,
        )
    x = x.astype(dt, copy=False)

    def one(a: np.ndarray) -> Any:
        return a if batched else a[0].item()

    return PinvResult(
        z=x if batched else x[0],
        n_iter=one(n_iter),
        converged=one(done_np),
        diverged=one(np.zeros(B, dtype=bool)),
        residual_norm=one(rf),
        residual_norms=np.stack([r0, rf]) if batched else np.array([r0[0], rf[0]]),
    )


def _direct(W: LinearOperator, hb: np.ndarray, mask: Any, tol: float, n_max: int,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``'direct'`` route on float64 NumPy ``hb`` ``(B, *W.out_shape)`` (zero off the
    support); items whose restricted Gram matrix is singular are solved by LSQR."""
    B = hb.shape[0]
    sup = None
    if mask is not None:
        sup = np.broadcast_to(np.asarray(mask), hb.shape).reshape(B, -1)
    X, n_iter, status = lstsq_direct(W.to_sparse(), hb.reshape(B, -1), sup, tol=tol,
                                     max_iter=n_max)
    x = X.reshape((B, *W.in_shape))
    done = status == 1
    fb = np.flatnonzero(status == -1)
    if fb.size:
        m = None if mask is None else (mask if mask.ndim == len(W.out_shape) else mask[fb])
        A = W if m is None else MaskedOperator(W.T, m).T
        kr = lsqr(A, hb[fb], atol=tol, btol=tol)
        x[fb], n_iter[fb], done[fb] = kr.x, kr.n_iter, kr.converged
    return x, n_iter, done


def reconstruction_ratio(x: Any, x_rec: Any, *, batched: bool = False) -> Any:
    r"""Reconstruction ratio ``||x - x'||_2 / ||x||_2`` (supplement A.2, Table S1).

    With ``batched=True`` the first axis is a batch and one ratio per item is returned.

    .. math::

        r(x, x') = \frac{\|x - x'\|_2}{\|x\|_2} .

    Parameters
    ----------
    x : array_like
        The original signal (or batch of signals).
    x_rec : array_like
        Its reconstruction, same shape as ``x``.
    batched : bool
        Treat the first axis as a batch.

    Returns
    -------
    float or array
        The ratio, or one ratio per batch item.

    Examples
    --------
    >>> import numpy as np
    >>> float(reconstruction_ratio(np.array([3.0, 4.0]), np.array([3.0, 0.0])))
    0.8
    """
    for name, a in (("x", x), ("x_rec", x_rec)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"parameter '{name}' must be an array; got {type(a).__name__}")
        if a.dtype.kind not in "fiub":
            raise TypeError(f"parameter '{name}' must be real numeric; got dtype {a.dtype}")
        check_finite(name, a)
    if tuple(x.shape) != tuple(x_rec.shape):
        raise ValueError(
            f"parameters 'x' and 'x_rec' must have the same shape; got {tuple(x.shape)} and "
            f"{tuple(x_rec.shape)}"
        )
    xp = get_array_module(x, x_rec)
    if batched:
        if x.ndim < 2:
            raise ValueError(
                f"batched=True needs arrays with a batch axis and at least one more; got shape "
                f"{tuple(x.shape)}"
            )
        B = x.shape[0]
        num = xp.sqrt(((x - x_rec).reshape(B, -1).astype(np.float64) ** 2).sum(axis=1))
        den = xp.sqrt((x.reshape(B, -1).astype(np.float64) ** 2).sum(axis=1))
    else:
        num = xp.sqrt(((x - x_rec).astype(np.float64) ** 2).sum())
        den = xp.sqrt((x.astype(np.float64) ** 2).sum())
    if bool((den == 0).any()):
        raise ValueError("parameter 'x' is zero (for some batch item): the ratio is undefined")
    r = num / den
    return r if batched else float(r)

