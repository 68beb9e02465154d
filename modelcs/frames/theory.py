"""Theorem A.5 bound, Theorem C.1 expectation and pairing statistics.

Shang, Sohn, Almeida and Lee, *Understanding and Improving Convolutional Neural Networks
via Concatenated Rectified Linear Units* (ICML 2016), supplement
(Theorems A.5 and C.1) and Sec. 2.1 (pairing).

Points where the paper is loose, and what is implemented:

* **Assumption (S1)** literally restricts the number of *positive* coefficients per pooling
  region; the proof of Theorem A.5 uses one column of ``W_tilde_x`` per generating shift,
  so :func:`theorem_a5_bound` requires at most one *nonzero* coefficient per filter and
  pooling region.
* ``W_tilde_x`` is defined in the paper by the sign of the coefficient ``c``; the proof
  step ``||W_x^T x|| <= ||W_tilde_x^T x||`` needs the sign of the *response*
  ``<w_i^j, x>`` at the generating shift instead (other filters' contributions can flip
  it).  We use the response sign, for which the theorem is a theorem.
* ``lambda_min`` is the smallest *nonzero* eigenvalue of ``W_x^T W_x`` (Lemma A.4 is on
  ``range(W_x)``); the bound is ``inf`` when it is 0 (dependent generating shifts).
* **Theorem C.1** states ``E[||x_s|| / ||x||] = sqrt(D_s / D)``; the proof shows
  ``E[||x_s||^2 / ||x||^2] = D_s / D``.  By Jensen ``sqrt(D_s / D)`` is an upper bound of
  ``E[||x_s|| / ||x||]``; the exact value is ``E[sqrt(Beta(D_s/2, (D-D_s)/2))]``
  (``exact=True``), which approaches ``sqrt(D_s/D)`` as ``D`` grows (relative gap
  ``O(1/D_s)``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import get_array_module, to_numpy
from .._validation import as_batch, as_real_array, check_finite
from ..operators import ConvOperator, LinearOperator
from ..operators.matrix import as_operator
from ._pooling import pool_geometry, pooling_windows
from .crelu import crelu_pool

__all__ = [
    "theorem_a5_bound",
    "theorem_a5_terms",
    "theorem_c1_ratio",
    "pairing_cosines",
    "pairing_partners",
]


def _gram_eigs(rows: Any) -> Any:
    """Eigenvalues (ascending) of ``rows @ rows^T`` for a batch ``(B, R, MD)``."""
    xp = get_array_module(rows)
    G = xp.matmul(rows, rows.transpose(0, 2, 1))
    return xp.linalg.eigvalsh(G)


def theorem_a5_bound(
    W: LinearOperator,
    coef: Any,
    *,
    pool: Any = None,
    stride: Any = None,
    rtol: float | None = None,
) -> Any:
    """Theorem A.5 bound ``sqrt((lambda_tilde_max - lambda_min) / lambda_min)`` for ``x = W^T c``.

    Parameters
    ----------
    W : LinearOperator ``(K, *n) <- (M, *D)`` (e.g. ConvOperator)
    coef : array ``W.out_shape`` or a batch ``(B, *W.out_shape)``
        Coefficients ``c`` of assumption (S1): ``x = sum c_i^j w_i^j = W^T c`` with at most one
        nonzero per filter and pooling region (checked).
    pool, stride :
        The pooling of :func:`crelu_pool`; regions must not overlap (``stride >= pool``) and
        every nonzero coefficient must lie in a region.
    rtol : float, optional
        Eigenvalues ``<= rtol**2 * lambda_max(W_x)`` count as zero (default
        ``R * eps(float64)`` on singular values, ``R`` = size of ``x``).

    Returns
    -------
    bound : float, or array ``(B,)``
        (:func:`theorem_a5_terms` also returns ``lambda_min`` and ``lambda_tilde_max``.)
    The reconstruction ratio of Algorithm 2 on ``x`` never exceeds ``bound``.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(3, 2, 3, 9, normalized=True, rng=0)
    >>> c = np.zeros(W.out_shape); c[0, 1] = 1.0; c[2, 5] = -0.5
    >>> float(theorem_a5_bound(W, c)) >= 0
    True
    """
    return theorem_a5_terms(W, coef, pool=pool, stride=stride, rtol=rtol)[0]


def theorem_a5_terms(
    W: LinearOperator,
    coef: Any,
    *,
    pool: Any = None,
    stride: Any = None,
    rtol: float | None = None,
) -> tuple[Any, Any, Any]:
    """Theorem A.5 bound ``sqrt((lambda_tilde_max - lambda_min) / lambda_min)`` for ``x = W^T c``.

    Parameters
    ----------
    W : LinearOperator ``(K, *n) <- (M, *D)`` (e.g. ConvOperator)
    coef : array ``W.out_shape`` or a batch ``(B, *W.out_shape)``
        Coefficients ``c`` of assumption (S1): ``x = sum c_i^j w_i^j = W^T c`` with at most one
        nonzero per filter and pooling region (checked).
    pool, stride :
        The pooling of :func:`crelu_pool`; regions must not overlap (``stride >= pool``) and
        every nonzero coefficient must lie in a region.
    rtol : float, optional
        Eigenvalues ``<= rtol**2 * lambda_max(W_x)`` count as zero (default
        ``R * eps(float64)`` on singular values, ``R`` = size of ``x``).

    Returns
    -------
    bound, lambda_min, lambda_tilde_max : float, or arrays ``(B,)``
        The bound of :func:`theorem_a5_bound` and the two eigenvalues it is made of.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(3, 2, 3, 9, normalized=True, rng=0)
    >>> c = np.zeros(W.out_shape); c[0, 1] = 1.0; c[2, 5] = -0.5
    >>> bound, lam_min, lam_tmax = theorem_a5_terms(W, c)
    >>> bool(lam_min > 0) and bound == theorem_a5_bound(W, c)
    True
    """
    W = as_operator(W, "W")
    if len(W.out_shape) < 2:
        raise TypeError(
            f"parameter 'W' has flat outputs (out_shape {W.out_shape}); the Theorem A.5 bound "
            "needs a ConvOperator (or an operator with out_shape (K, *n)): its assumptions are "
            "per filter and pooling region"
        )
    coef = as_real_array("coef", coef)
    cb, kind = as_batch("coef", coef, W.out_shape, flat=False)
    batched = kind == "batch"
    xp = get_array_module(coef)
    cb = cb.astype(np.result_type(W.dtype, np.float32))
    B, K, n = cb.shape[0], W.out_shape[0], tuple(W.out_shape[1:])
    N = math.prod(n)
    pl, st = pool_geometry(n, pool, stride)
    if any(s < p for s, p in zip(st, pl, strict=True)):
        raise ValueError(
            f"theorem_a5_bound needs non-overlapping pooling regions (stride >= pool); got "
            f"pool={pl}, stride={st}"
        )
    widx, _ = pooling_windows(n, pl, st)  # (P, Lw)
    P = widx.shape[0]
    region = np.full(N, -1, dtype=np.int64)
    region[widx.reshape(-1)] = np.repeat(np.arange(P), widx.shape[1])
    cf = cb.reshape(B, K, N)
    nzmask = cf != 0
    nnz = nzmask.sum(axis=(1, 2))
    if bool((nnz == 0).any()):
        raise ValueError("parameter 'coef' is zero (for some batch item): x = 0, no bound")
    b_i, k_i, q_i = (to_numpy(a) for a in xp.nonzero(nzmask))
    reg = region[q_i]
    if (reg < 0).any():
        raise ValueError(
            "parameter 'coef' has nonzero coefficients outside every pooling region; "
            "assumption (S1) concerns shifts inside the regions"
        )
    counts = np.zeros((B, K, P), dtype=np.int64)
    np.add.at(counts, (b_i, k_i, reg), 1)
    if (counts > 1).any():
        b0, k0, p0 = (int(v) for v in np.argwhere(counts > 1)[0])
        raise ValueError(
            f"parameter 'coef' violates assumption (S1): filter {k0} has {counts[b0, k0, p0]} "
            f"nonzero coefficients in pooling region {p0} (batch item {b0}); expected at most 1"
        )
    x = W.T @ cb
    pooled = crelu_pool(W, x, pool=pool, stride=stride)
    h = (W @ x).reshape(B, K, N)
    sw = to_numpy(pooled.switches).reshape(B, 2 * K, P)
    resp = to_numpy(h[xp.asarray(b_i), xp.asarray(k_i), xp.asarray(q_i)])
    # generating shifts (W_x) and the switches of the matching response phase (W_tilde_x)
    R = int(to_numpy(nnz).max())
    slot = np.zeros_like(b_i)
    order = np.lexsort((q_i, k_i, b_i))
    b_s = b_i[order]
    first = np.searchsorted(b_s, b_s, side="left")
    slot[order] = np.arange(b_s.size) - first
    Ex = np.zeros((B, R, K * N))
    Ex[b_i, slot, k_i * N + q_i] = 1.0
    tq = np.where(resp > 0, sw[b_i, k_i, reg], np.where(resp < 0, sw[b_i, K + k_i, reg], -1))
    keep = tq >= 0
    Et = np.zeros((B, R, K * N))
    Et[b_i[keep], slot[keep], k_i[keep] * N + tq[keep]] = 1.0
    dt = W.dtype

    def rows(E: np.ndarray) -> Any:
        e = xp.asarray(E.astype(dt)).reshape(B * R, *W.out_shape)
        return (W.T @ e).reshape(B, R, -1).astype(np.float64)

    ev_x = _gram_eigs(rows(Ex))
    ev_t = _gram_eigs(rows(Et))
    lam_top = ev_x[:, -1]
    r = (W.shape[1] * float(np.finfo(np.float64).eps)) if rtol is None else float(rtol)
    if not 0 <= r < 1:
        raise ValueError(f"parameter 'rtol' must be in [0, 1); got {rtol!r}")
    big = xp.where(ev_x > (r**2) * lam_top[:, None], ev_x, xp.inf)
    lam_min = big.min(axis=1)
    lam_tmax = ev_t[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = xp.where(
            xp.isfinite(lam_min) & (lam_min > 0),
            xp.sqrt(xp.maximum(lam_tmax - lam_min, 0.0) / xp.where(lam_min > 0, lam_min, 1.0)),
            xp.inf,
        )
    if not batched:
        bound, lam_min, lam_tmax = float(bound[0]), float(lam_min[0]), float(lam_tmax[0])
    return bound, lam_min, lam_tmax


def theorem_c1_ratio(D: int, Ds: int, *, exact: bool = False) -> float:
    r"""Theorem C.1: ``E ||x_s|| / ||x||`` for the projection on a random ``Ds``-dim subspace.

    ``exact=False`` returns the paper's ``sqrt(Ds / D)`` (exact for the root-mean-square
    ratio ``sqrt(E ||x_s||^2 / ||x||^2)``, an upper bound of the mean by Jensen);
    ``exact=True`` the true mean ``Gamma((Ds+1)/2) Gamma(D/2) / (Gamma(Ds/2) Gamma((D+1)/2))``
    (``||x_s||^2 / ||x||^2 ~ Beta(Ds/2, (D-Ds)/2)``).  For the reconstruction ratio of a
    projection on ``K`` random directions (Table S1) use ``Ds = D - K``.

    .. math::

        \mathbb{E}\,\frac{\|x_s\|_2}{\|x\|_2} \approx \sqrt{\frac{D_s}{D}}
        \quad\text{or exactly}\quad
        \frac{\Gamma(\frac{D_s + 1}{2})\,\Gamma(\frac{D}{2})}
             {\Gamma(\frac{D_s}{2})\,\Gamma(\frac{D + 1}{2})} .

    Parameters
    ----------
    D : int
        Dimension of the signal space.
    Ds : int
        Dimension of the random subspace, ``0 <= Ds <= D``.
    exact : bool
        Return the exact mean instead of the paper's root-mean-square value.

    Returns
    -------
    float
        The expected ratio.

    References
    ----------
    .. [1] W. Shang, K. Sohn, D. Almeida and H. Lee, "Understanding and improving
       convolutional neural networks via concatenated rectified linear units", ICML 2016,
       supplementary material, Theorem C.1.

    Examples
    --------
    >>> round(theorem_c1_ratio(1200, 1200 - 48), 4)
    0.9798
    >>> round(theorem_c1_ratio(4, 1, exact=True), 4)
    0.4244
    """
    for name, v in (("D", D), ("Ds", Ds)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"parameter '{name}' must be an integer; got {v!r}")
    if D < 1:
        raise ValueError(f"parameter 'D' must be >= 1; got {D}")
    if not 0 <= Ds <= D:
        raise ValueError(f"parameter 'Ds' must satisfy 0 <= Ds <= D={D}; got {Ds}")
    if Ds == 0:
        return 0.0
    if not exact or Ds == D:
        return math.sqrt(Ds / D)
    return math.exp(
        math.lgamma((Ds + 1) / 2) + math.lgamma(D / 2) - math.lgamma(Ds / 2)
        - math.lgamma((D + 1) / 2)
    )


def pairing_cosines(filters: Any) -> Any:
    """Pairing statistic of CReLU Sec. 2.1: ``mu_i = min_{j != i} <phi_i, phi_j>`` (unit norm).

    Parameters
    ----------
    filters : array ``(K, ...)`` (each filter flattened) or a ConvOperator (its filters)

    Returns
    -------
    mu : array ``(K,)``
        (:func:`pairing_partners` also returns the partner indices.)  Random Gaussian
        filters in dimension ``d`` give ``mu`` near ``-sqrt(2 log K / d)``; trained first
        layers are much more negative (paper, Fig. 2).

    Examples
    --------
    >>> import numpy as np
    >>> pairing_cosines(np.array([[1.0, 0.0], [-1.0, 0.1], [0.0, 1.0]])).round(3)
    array([-0.995, -0.995,  0.   ])
    """
    return pairing_partners(filters)[0]


def pairing_partners(filters: Any) -> tuple[Any, Any]:
    """:func:`pairing_cosines` and each filter's partner ``argmin_{j != i} <phi_i, phi_j>``.

    Parameters
    ----------
    filters : array ``(K, ...)`` or a ConvOperator
        As for :func:`pairing_cosines`.

    Returns
    -------
    mu : array ``(K,)``
        The pairing cosines.
    idx : int array ``(K,)``
        The index of each filter's most anti-aligned partner.

    Examples
    --------
    >>> import numpy as np
    >>> mu, idx = pairing_partners(np.array([[1.0, 0.0], [-1.0, 0.1], [0.0, 1.0]]))
    >>> idx.tolist()
    [1, 0, 0]
    """
    if isinstance(filters, ConvOperator):
        filters = filters.filters
    if not hasattr(filters, "shape") or not hasattr(filters, "dtype"):
        filters = np.asarray(filters)
    if filters.dtype.kind not in "fiub":
        raise TypeError(f"parameter 'filters' must be a real numeric array; got {filters.dtype}")
    if filters.ndim < 2 or filters.shape[0] < 2:
        raise ValueError(
            f"parameter 'filters' must have shape (K, ...) with K >= 2 filters; got "
            f"{tuple(filters.shape)}"
        )
    check_finite("filters", filters)
    xp = get_array_module(filters)
    F = filters.reshape(filters.shape[0], -1).astype(np.float64)
    norms = xp.sqrt((F**2).sum(axis=1))
    if bool((norms == 0).any()):
        raise ValueError(
            f"parameter 'filters' has {int((norms == 0).sum())} zero filter(s); cosines need "
            "nonzero filters"
        )
    F = F / norms[:, None]
    G = F @ F.T
    K = G.shape[0]
    G[xp.arange(K), xp.arange(K)] = xp.inf
    idx = xp.argmin(G, axis=1)
    mu = G[xp.arange(K), idx]
    return mu, idx
