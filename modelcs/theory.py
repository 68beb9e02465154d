"""Calculators for Theorems 3.1 and 3.3 of the invertibility paper.

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks* (long version), Sec. 3 and Appendix A:

* :func:`theorem31_condition` -- the sample-size condition under which random Gaussian
  filters give ``W^T`` the model-RIP (Theorem 3.1);
* :func:`theorem33_bound` -- the one-step reconstruction bound of ``W^T M(W x, k)``
  (Theorem 3.3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import as_int_tuple, check_finite, check_positive_int

__all__ = ["theorem31_condition", "Theorem31Condition", "theorem33_bound"]


@dataclass
class Theorem31Condition:
    """Result of :func:`theorem31_condition` (Theorem 3.1 of the invertibility paper).

    Attributes
    ----------
    lhs : float
        ``M l^2 / D``.
    rhs : float
        ``C k / delta^2 * (log K + log n - log eps)``.
    satisfied : bool
        ``lhs >= rhs``.
    delta_min : float
        Smallest ``delta_k`` the condition certifies for these sizes (may exceed 1: then
        the theorem certifies nothing).
    channels_min : int
        Smallest number of input channels ``M`` that satisfies the condition.
    n : int
        Number of shifts used, ``(D - l)//t + 1`` (products over axes in 2-D).
    """

    lhs: float
    rhs: float
    satisfied: bool
    delta_min: float
    channels_min: int
    n: int


def _prod_int(name: str, v: Any) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return as_int_tuple(name, tuple(v), len(v))
    return (check_positive_int(name, v),)


def theorem31_condition(
    *,
    M: int,
    l: int | Sequence[int],
    D: int | Sequence[int],
    K: int,
    k: int,
    delta: float,
    stride: int | Sequence[int] = 1,
    eps: float = 0.05,
    C: float = 1.0,
) -> Theorem31Condition:
    r"""The sample-size condition of Theorem 3.1 (invertibility paper, Sec. 3.1, App. A).

    ``M l^2 / D >= C k / delta^2 * (log K + log n - log eps)`` with ``n = (D - l)/t + 1``
    guarantees, with probability ``1 - eps``, that ``W^T`` of ``K`` random Gaussian filters
    (``M`` channels, length ``l``, scaled ``1/sqrt(M l)``) has the model-RIP with constant
    ``delta``.  The absolute constant ``C`` is not tracked by the paper (it depends on the
    sub-Gaussian norm of the entries); it is a parameter here, ``1`` by default, so the
    numbers show the scaling rather than a certified bound.  For 2-D sizes (tuples) ``l``,
    ``D`` and ``n`` are replaced by their products over the axes (an extension; the paper
    states the 1-D case).

    .. math::

        \frac{M l^2}{D} \;\ge\; \frac{C\, k}{\delta^2}
        \left(\log K + \log n - \log \varepsilon\right),
        \qquad n = \frac{D - l}{t} + 1 .

    Parameters
    ----------
    M : int
        Number of input channels.
    l : int or sequence of int
        Filter length (per spatial axis).
    D : int or sequence of int
        Input length (per spatial axis).
    K : int
        Number of filters.
    k : int
        Model sparsity (active filters).
    delta : float
        The model-RIP constant to certify.
    stride : int or sequence of int
        Stride ``t``.
    eps : float
        Failure probability.
    C : float
        The untracked absolute constant of the theorem.

    Returns
    -------
    Theorem31Condition
        Both sides of the inequality, whether it holds, the smallest ``delta`` it
        certifies and the smallest ``M`` that satisfies it.

    References
    ----------
    .. [1] A. C. Gilbert, Y. Zhang, K. Lee, Y. Zhang and H. Lee, "Towards understanding the
       invertibility of convolutional neural networks", IJCAI 2017, Sec. 3.1, Theorem 3.1.

    Examples
    --------
    >>> r = theorem31_condition(M=32, l=5, D=32, K=96, k=10, delta=0.5)
    >>> r.n, round(r.lhs, 1), round(r.rhs, 1), r.satisfied, r.channels_min
    (28, 25.0, 435.7, False, 558)
    >>> round(r.delta_min, 2)          # with C = 1 the Figure 2 sizes certify nothing
    2.09
    """
    M = check_positive_int("M", M)
    K = check_positive_int("K", K)
    k = check_positive_int("k", k)
    ls = _prod_int("l", l)
    Ds = _prod_int("D", D)
    if len(ls) != len(Ds):
        raise ValueError(f"parameters 'l' and 'D' must have the same number of axes; got {l}, {D}")
    ts = as_int_tuple("stride", stride, len(ls))
    for la, Da in zip(ls, Ds, strict=True):
        if la > Da:
            raise ValueError(f"parameter 'l' = {l} must be <= D = {D}")
    n = math.prod((Da - la) // ta + 1 for la, Da, ta in zip(ls, Ds, ts, strict=True))
    for name, v, lo_ok, hi_ok in (("delta", delta, 0.0, None), ("eps", eps, 0.0, 1.0)):
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool):
            raise TypeError(f"parameter '{name}' must be a real number; got {v!r}")
        if not (math.isfinite(v) and v > lo_ok and (hi_ok is None or v < hi_ok)):
            rng_txt = f"in (0, {hi_ok})" if hi_ok is not None else "> 0"
            raise ValueError(f"parameter '{name}' must be {rng_txt}; got {v!r}")
    if not isinstance(C, (int, float, np.floating, np.integer)) or not (
        math.isfinite(C) and C > 0
    ):
        raise ValueError(f"parameter 'C' must be a positive finite number; got {C!r}")
    Lp, Dp = math.prod(ls), math.prod(Ds)
    logs = math.log(K) + math.log(n) - math.log(eps)
    lhs = M * Lp**2 / Dp
    rhs = C * k / float(delta) ** 2 * logs
    delta_min = math.sqrt(C * k * logs / lhs)
    channels_min = math.ceil(rhs * Dp / Lp**2 - 1e-12)
    return Theorem31Condition(lhs, rhs, lhs >= rhs, delta_min, max(channels_min, 1), n)


def theorem33_bound(delta_2k: Any, delta_k: Any = None) -> Any:
    r"""The one-step reconstruction bound of Theorem 3.3.

    ``||x_hat - x|| / ||x|| <= 5 delta_2k / (1 - delta_k) * sqrt((1 + delta_2k) /
    (1 - delta_2k))`` for ``x_hat = W^T M(W x, k)``, assuming ``W^T`` has the model-RIP for
    ``M_k^2`` with ``delta_k <= delta_2k < 1``.  ``delta_k`` defaults to ``delta_2k`` (the
    bound is increasing in ``delta_k``, so this is still a valid bound).  Vectorised.

    .. math::

        \frac{\|\hat x - x\|_2}{\|x\|_2} \le
        \frac{5\, \delta_{2k}}{1 - \delta_k}
        \sqrt{\frac{1 + \delta_{2k}}{1 - \delta_{2k}}},
        \qquad \hat x = W^{\mathsf T} \mathcal{M}(W x, k) .

    Parameters
    ----------
    delta_2k : float or array_like
        Model-RIP constant for ``M_k^2`` (codes with up to ``2k`` active filters), in
        ``[0, 1)``.
    delta_k : float or array_like, optional
        Model-RIP constant for ``M_k``; defaults to ``delta_2k``.

    Returns
    -------
    float or numpy.ndarray
        The bound on the relative one-step reconstruction error (broadcast shape).

    References
    ----------
    .. [1] A. C. Gilbert, Y. Zhang, K. Lee, Y. Zhang and H. Lee, "Towards understanding the
       invertibility of convolutional neural networks", IJCAI 2017, Sec. 3.2, Theorem 3.3.

    Examples
    --------
    >>> round(theorem33_bound(0.1), 4)
    0.6143
    >>> round(theorem33_bound(0.1, 0.05), 4)
    0.5819
    """
    d2 = np.asarray(delta_2k, dtype=np.float64)
    d1 = d2 if delta_k is None else np.asarray(delta_k, dtype=np.float64)
    check_finite("delta_2k", d2)
    check_finite("delta_k", d1)
    if bool((d2 < 0).any() or (d2 >= 1).any()):
        raise ValueError(f"parameter 'delta_2k' must be in [0, 1); got {delta_2k!r}")
    if bool((d1 < 0).any() or (d1 > d2).any()):
        raise ValueError(
            f"parameter 'delta_k' must satisfy 0 <= delta_k <= delta_2k; got {delta_k!r} "
            f"with delta_2k={delta_2k!r}"
        )
    out = 5.0 * d2 / (1.0 - d1) * np.sqrt((1.0 + d2) / (1.0 - d2))
    return float(out) if out.ndim == 0 else out
