"""Model-RIP ratios and estimates of the model-RIP constant ``delta_k``.

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks* (long version), Sections 2.3 and 4.2, Appendix B:

* :func:`rip_ratios` -- Monte-Carlo ratios for random model-k-sparse codes ``z``:
  ``||Phi z|| / ||z||`` (model-RIP, eq. (1), Figure 2a), the support-restricted Gram ratio
  ``||W_Omega W_Omega^T z|| / ||z||`` (Lemma B.1 (6)-(7), Figure 2b) and the unrestricted
  ``||Phi^T Phi z|| / ||z||``.
* :func:`estimate_delta` -- a lower estimate of the model-RIP constant ``delta_k`` of eq. (1)
  (random or adversarial search over supports).

The coherence of the rows of ``W`` is in :mod:`modelcs.mutual_coherence`, the calculators
of Theorems 3.1 and 3.3 in :mod:`modelcs.theory`.

Conventions: ``W`` is a :class:`~modelcs.ConvOperator` (a CNN layer), ``Phi = W.T`` maps
codes ``(K, *n)`` to signals ``(M, *D)``.
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._backend import get_array_module, to_numpy, unravel_index
from ._memory import check_elements
from ._validation import check_choice, check_positive_int, check_rng
from .models import SparsityModel
from .operators.base import LinearOperator
from .operators.conv import ConvOperator
from .operators.matrix import as_operator

__all__ = [
    "rip_ratios",
    "estimate_delta",
    "DeltaEstimate",
]

_KINDS = ("isometry", "restricted_gram", "gram")


# --------------------------------------------------------------------------- checks
def _check_phi(Phi: Any) -> LinearOperator:
    if isinstance(Phi, ConvOperator):
        raise TypeError(
            "parameter 'Phi' is a ConvOperator W (signals -> codes); the measurement operator "
            "maps codes to signals: pass W.T"
        )
    return as_operator(Phi, "Phi")


def _check_model(model: Any) -> SparsityModel:
    if not isinstance(model, SparsityModel):
        raise TypeError(
            f"parameter 'model' must be a sparsity model such as ModelSparse(k); got {model!r}"
        )
    if model.k is None or model.k < 1:
        raise ValueError(f"parameter 'model' must have k >= 1 nonzeros; got k={model.k}")
    return model


def _check_range(low: Any, high: Any) -> tuple[float, float]:
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        raise TypeError(
            f"parameters 'low', 'high' must be real numbers; got {low!r}, {high!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"parameters 'low', 'high' must be finite with low < high; got {low!r}, {high!r}"
        )
    return lo, hi


# ---------------------------------------------------------------------- RIP ratios
def rip_ratios(
    Phi: LinearOperator,
    model: SparsityModel,
    *,
    n_trials: int,
    rng: Any = None,
    kind: str = "isometry",
    low: float = -1.0,
    high: float = 1.0,
) -> np.ndarray:
    """Empirical model-RIP ratios for random model-sparse codes (Figure 2a, 2b).

    Draws ``n_trials`` codes ``z`` of ``model`` in one batch (a uniform random support with
    ``model.k`` nonzeros, values i.i.d. uniform on ``[low, high]`` as in Sec. 4.2) and
    returns one ratio per code:

    ``kind="isometry"``
        ``||Phi z|| / ||z||``: eq. (1) says its square lies in ``[1 - delta_k, 1 + delta_k]``
        (Figure 2a).
    ``kind="restricted_gram"``
        ``||(Phi^T Phi z)|_Omega|| / ||z||`` with ``Omega = supp(z)``, i.e.
        ``||W_Omega W_Omega^T z|| / ||z||`` of Lemma B.1 (6)-(7), which lies in
        ``[1 - delta_k, 1 + delta_k]``.  This is what Figure 2b shows (its caption writes
        ``||W W^T z||``).
    ``kind="gram"``
        The unrestricted ``||Phi^T Phi z|| / ||z||``.  For a redundant bank (``K n > M D``)
        this is *not* near 1: ``Phi^T Phi z`` spreads energy over every shift of every
        filter that correlates with the atoms of ``z``.

    Parameters
    ----------
    Phi : LinearOperator
        Codes ``(K, *n)`` -> signals (e.g. ``W.T`` for a :class:`~modelcs.ConvOperator` ``W``).
    model : SparsityModel
        E.g. ``ModelSparse(k)``; its ``sample`` draws the codes.
    n_trials : int
    rng : None, int or numpy Generator
    kind : {"isometry", "restricted_gram", "gram"}
    low, high : float
        Range of the nonzero values (``low < high``).

    Returns
    -------
    numpy.ndarray of shape ``(n_trials,)``.

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(96, 32, 5, 32, rng=0)          # Figure 2 setting
    >>> r = rip_ratios(W.T, ModelSparse(10), n_trials=500, rng=1)
    >>> bool(abs(r.mean() - 1) < 0.02)
    True
    >>> g = rip_ratios(W.T, ModelSparse(10), n_trials=500, rng=1, kind="gram")
    >>> bool(g.mean() > 1.5)                                     # not an isometry
    True
    """
    Phi = _check_phi(Phi)
    model = _check_model(model)
    n_trials = check_positive_int("n_trials", n_trials)
    check_choice("kind", kind, _KINDS)
    lo, hi = _check_range(low, high)
    check_elements(f"rip_ratios: n_trials={n_trials} codes {Phi.in_shape} and their images {Phi.out_shape}", n_trials * (math.prod(Phi.in_shape) + 2 * math.prod(Phi.out_shape)), Phi.dtype, copies=3)  # noqa: E501
    Z = model.sample(Phi.in_shape, n_trials, rng=rng, low=lo, high=hi, dtype=Phi.dtype)
    return _ratios(Phi, Z, kind)


def _ratios(Phi: LinearOperator, Z: Any, kind: str) -> np.ndarray:
    """Ratios for a batch of codes ``Z`` ``(B, *Phi.in_shape)`` (one operator call each)."""
    xp = get_array_module(Z)
    B = Z.shape[0]
    zn = xp.sqrt((Z.reshape(B, -1).astype(np.float64) ** 2).sum(axis=1))
    if bool((zn == 0).any()):
        raise ValueError(
            "some sampled codes are zero (all nonzero values drew 0); choose 'low'/'high' "
            "away from 0"
        )
    X = Phi @ Z
    if kind == "isometry":
        num = (X.reshape(B, -1).astype(np.float64) ** 2).sum(axis=1)
    else:
        G = Phi.T @ X
        if kind == "restricted_gram":
            G = xp.where(Z != 0, G, 0)
        num = (G.reshape(B, -1).astype(np.float64) ** 2).sum(axis=1)
    return to_numpy(xp.sqrt(num) / zn)


# --------------------------------------------------------------- delta estimation
@dataclass
class DeltaEstimate:
    """Result of :func:`estimate_delta`.

    Attributes
    ----------
    delta : float
        Largest distortion found, ``max(lambda_max - 1, 1 - lambda_min)`` of the restricted
        Gram ``Phi_Omega^T Phi_Omega`` over the supports examined: a lower bound on
        ``delta_k`` of eq. (1) (each value is attained by a model-sparse code).
    support : numpy.ndarray of int, shape ``(k,)``
        Flat indices (into one code) of the worst support found.
    code : numpy.ndarray, shape ``Phi.in_shape``
        A unit-norm model-sparse code attaining ``delta`` (an extreme eigenvector).
    ratio : float
        ``||Phi code|| / ||code||`` for that code (``sqrt(1 +- delta)``).
    lambda_min, lambda_max : float
        Extreme eigenvalues of the worst support's restricted Gram matrix.
    n_evaluated : int
        Number of supports whose restricted Gram matrix was computed (the budget).
    search : str
    trace : list of (int, float)
        ``(supports evaluated so far, best delta so far)`` after every batch.
    """

    delta: float
    support: np.ndarray
    code: np.ndarray
    ratio: float
    lambda_min: float
    lambda_max: float
    n_evaluated: int
    search: str
    trace: list[tuple[int, float]] = field(default_factory=list)


def _support_model(model: SparsityModel) -> SparsityModel:
    """The same union of subspaces with the exact projection (known switches, by |.|)."""
    if getattr(model, "switches", "known") == "known" and getattr(model, "by", "abs") == "abs":
        return model
    new = object.__new__(type(model))
    new.__dict__.update(model.__dict__)
    if hasattr(new, "switches"):
        new.switches = "known"
    if hasattr(new, "by"):
        new.by = "abs"
    return new


def _conv_columns(op: ConvOperator, atoms: np.ndarray) -> np.ndarray:
    """Columns ``W^T e_j`` (rows of ``W``) for flat code indices ``atoms``, ``(A, M*prod(D))``.

    Places each atom's filter at its shift in the padded input and applies the operator's
    own boundary map (crop for zero padding, wrap for circular): no convolution needed.
    """
    w = to_numpy(op.filters).astype(np.float64)
    K, Mg = w.shape[:2]
    g = op.groups
    n, l, t = op.output_spatial, op.kernel_size, op.stride
    kk, pos = np.divmod(atoms, math.prod(n))
    pidx = unravel_index(pos, n)
    A, d = atoms.size, len(n)
    xpad = np.zeros((A, op.n_channels_in, *op.padded_shape))
    ex = (slice(None),) + (None,) * (d + 1)
    idx: list[Any] = [np.arange(A)[ex]]
    ch = (kk // (K // g)) * Mg
    idx.append(ch[(slice(None), None) + (None,) * d] + np.arange(Mg)[(None, slice(None))
                                                                    + (None,) * d])
    for a in range(d):
        shp = [1] * (d + 2)
        shp[2 + a] = l[a]
        idx.append((pidx[a] * t[a])[ex] + np.arange(l[a]).reshape(shp))
    xpad[tuple(idx)] = w[kk]
    return np.asarray(op.unpad(xpad)).reshape(A, -1)


def _gram_eigs(Phi: LinearOperator, S: np.ndarray, chunk: int) -> tuple[np.ndarray, ...]:
    """Extreme eigenpairs of ``Phi_S^T Phi_S`` for supports ``S`` ``(B, k)`` (flat indices).

    Returns ``(lam_min, lam_max, v_min, v_max)`` with eigenvectors ``(B, k)``.
    """
    B, k = S.shape
    N = math.prod(Phi.in_shape)
    lmin = np.empty(B)
    lmax = np.empty(B)
    vmin = np.empty((B, k))
    vmax = np.empty((B, k))
    for s in range(0, B, chunk):
        Sc = S[s : s + chunk]
        b = Sc.shape[0]
        op = Phi.T
        if isinstance(op, ConvOperator) and get_array_module(op.filters) is np:
            cols = _conv_columns(op, Sc.reshape(-1))
        else:
            E = np.zeros((b * k, N), dtype=Phi.dtype)
            E[np.arange(b * k), Sc.reshape(-1)] = 1.0
            cols = to_numpy(Phi @ E.reshape(b * k, *Phi.in_shape)).astype(np.float64)
        cols = cols.reshape(b, k, -1)
        G = cols @ cols.transpose(0, 2, 1)
        lam, V = np.linalg.eigh(G)
        lmin[s : s + b], lmax[s : s + b] = lam[:, 0], lam[:, -1]
        vmin[s : s + b], vmax[s : s + b] = V[:, :, 0], V[:, :, -1]
    return lmin, lmax, vmin, vmax


def _supports(Z: np.ndarray, k: int) -> np.ndarray:
    """``(B, k)`` sorted flat indices of the nonzeros of codes with exactly ``k`` nonzeros."""
    B = Z.shape[0]
    nz = Z.reshape(B, -1) != 0
    counts = nz.sum(axis=1)
    if not bool((counts == k).all()):
        raise ValueError(
            f"estimate_delta needs codes with exactly k={k} nonzeros (one atom per selected "
            f"unit); the model gave {sorted(set(counts.tolist()))[:5]} nonzeros"
        )
    return np.nonzero(nz)[1].reshape(B, k)


def estimate_delta(
    Phi: LinearOperator,
    model: SparsityModel,
    *,
    n_trials: int,
    rng: Any = None,
    search: str = "random",
) -> DeltaEstimate:
    """A lower estimate of the model-RIP constant ``delta_k`` of eq. (1) and its worst support.

    For a support ``Omega`` the worst codes supported on it are the extreme eigenvectors of
    the restricted Gram matrix ``G = Phi_Omega^T Phi_Omega`` (``k x k``), so each examined
    support contributes its exact distortion ``max(lambda_max(G) - 1, 1 - lambda_min(G))``.
    ``delta_k`` is the maximum over *all* ``n^k C(K, k)`` supports; the value returned is
    the maximum over the ``n_trials`` supports examined, hence a lower bound.

    ``search="random"``
        ``n_trials`` supports drawn uniformly from the model (one batch).
    ``search="adversarial"``
        A quarter of the budget on random supports, then greedy coordinate ascent from the
        worst ones: for the current extreme eigenvector ``v`` the residual ``r = Phi_Omega v``
        is correlated with every atom (one ``Phi^T`` call per support and round) and the
        atoms with the largest ``|<phi_j, r>|`` replace the atom with the smallest ``|v_i|``
        (or the atom sharing ``j``'s pooling unit), which changes the Rayleigh quotient
        ``||Phi_Omega v||^2`` to first order by ``2 v_j <phi_j, r>``.  Moves that improve
        are kept.  Exactly ``n_trials`` supports are evaluated, as for random search.

    Parameters
    ----------
    Phi : LinearOperator
        Codes -> signals (``W.T``).
    model : SparsityModel
        A model whose codes have exactly ``k`` nonzeros (``ModelSparse``, ``TopKSparse``);
        switches / ranking options are ignored (they do not change the set of supports).
    n_trials : int
        Number of supports whose restricted Gram matrix is computed (``k`` operator
        applications each).
    rng : None, int or numpy Generator
    search : {"random", "adversarial"}

    Returns
    -------
    DeltaEstimate

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(16, 4, 5, 20, rng=0)
    >>> est = estimate_delta(W.T, ModelSparse(3), n_trials=64, rng=0)
    >>> bool(est.delta > 0), est.support.shape, est.n_evaluated
    (True, (3,), 64)
    >>> adv = estimate_delta(W.T, ModelSparse(3), n_trials=64, rng=0, search="adversarial")
    >>> bool(adv.delta >= est.delta)
    True
    """
    Phi = _check_phi(Phi)
    model = _check_model(model)
    n_trials = check_positive_int("n_trials", n_trials)
    check_choice("search", search, ("random", "adversarial"))
    rng = check_rng(rng)
    smodel = _support_model(model)
    k = model.k
    shape = Phi.in_shape
    N = math.prod(shape)
    chunk = max(1, (1 << 22) // (k * (N + math.prod(Phi.out_shape))))

    n_random = n_trials if search == "random" else max(1, n_trials // 4)
    check_elements(f"estimate_delta: n_trials={n_trials} supports of codes {tuple(shape)}", n_random * (N + k), copies=2)  # noqa: E501
    S = _supports(smodel.sample(shape, n_random, rng=rng, low=1.0, high=2.0), k)
    lmin, lmax, vmin, vmax = _gram_eigs(Phi, S, chunk)
    dist = np.maximum(lmax - 1.0, 1.0 - lmin)
    used = n_random
    # best-so-far within the random batch (every 1/8 of it), then after every search round
    run = np.maximum.accumulate(dist)
    marks = np.unique(np.linspace(0, n_random, 9).astype(np.int64)[1:])
    trace = [(int(i), float(run[i - 1])) for i in marks]

    if search == "adversarial" and used < n_trials:
        m = int(min(8, max(1, n_random // 4)))
        order = np.argsort(-dist)[:m]
        cur_S, cur_d = S[order].copy(), dist[order].copy()
        cur_l = np.stack([lmin[order], lmax[order]], axis=1)
        cur_v = np.stack([vmin[order], vmax[order]], axis=1)  # (m, 2, k)
        # best overall so far, kept separately from the walkers
        best_i = int(np.argmax(dist))
        best: tuple[Any, ...] = (S[best_i].copy(), float(dist[best_i]), lmin[best_i],
                                 lmax[best_i], vmin[best_i].copy(), vmax[best_i].copy())
        offset = np.zeros(m, dtype=np.int64)
        flip = np.zeros(m, dtype=bool)
        c = 4
        while used < n_trials:
            # target extreme: the one that gives the current distortion (flip when stuck)
            use_max = (cur_l[:, 1] - 1.0 >= 1.0 - cur_l[:, 0]) ^ flip
            v = np.where(use_max[:, None], cur_v[:, 1], cur_v[:, 0])  # (m, k)
            Zv = np.zeros((m, N), dtype=Phi.dtype)
            Zv[np.arange(m)[:, None], cur_S] = v
            r = Phi @ Zv.reshape(m, *shape)
            score = np.abs(to_numpy(Phi.T @ r).reshape(m, N).astype(np.float64))
            score[np.arange(m)[:, None], cur_S] = -1.0
            ranked = np.argsort(-score, axis=1)
            take = (offset[:, None] + np.arange(c)[None, :]) % max(N - k, 1)
            cand_atoms = np.take_along_axis(ranked, take, axis=1)  # (m, c)
            # candidate codes: current atoms weighted by 1 + |v| (the smallest |v_i| is
            # dropped when the new atom's unit is free), the new atom with weight 3 (it
            # displaces the atom sharing its unit otherwise); projection keeps model codes
            Zc = np.zeros((m, c, N))
            am, ac = np.arange(m), np.arange(c)
            Zc[am[:, None, None], ac[None, :, None], cur_S[:, None, :]] = (1.0 + np.abs(v))[
                :, None, :
            ]
            Zc[am[:, None], ac[None, :], cand_atoms] = 3.0
            P = smodel.project(Zc.reshape(m * c, *shape), batched=True)
            P = to_numpy(P).reshape(m * c, N)
            S_c = np.sort(np.nonzero(P != 0)[1].reshape(m * c, k), axis=1)
            n_eval = min(m * c, n_trials - used)
            lmin_c, lmax_c, vmin_c, vmax_c = _gram_eigs(Phi, S_c[:n_eval], chunk)
            used += n_eval
            d_flat = np.full(m * c, -np.inf)
            d_flat[:n_eval] = np.maximum(lmax_c - 1.0, 1.0 - lmin_c)
            d_c = d_flat.reshape(m, c)
            j = np.argmax(d_c, axis=1)
            gain = d_c[np.arange(m), j] > cur_d
            for w_i in np.flatnonzero(gain):
                flat = w_i * c + j[w_i]
                cur_S[w_i] = S_c[flat]
                cur_d[w_i] = d_c[w_i, j[w_i]]
                cur_l[w_i] = (lmin_c[flat], lmax_c[flat])
                cur_v[w_i] = (vmin_c[flat], vmax_c[flat])
                if cur_d[w_i] > best[1]:
                    best = (S_c[flat].copy(), float(cur_d[w_i]), lmin_c[flat], lmax_c[flat],
                            vmin_c[flat].copy(), vmax_c[flat].copy())
            offset = np.where(gain, 0, offset + c)
            flip = np.where(gain, False, ~flip)
            trace.append((used, max(best[1], trace[-1][1])))
        S_b, d_b, lo_b, hi_b, vlo_b, vhi_b = best
    else:
        i = int(np.argmax(dist))
        best = (S[i], float(dist[i]), lmin[i], lmax[i], vmin[i], vmax[i])
        S_b, d_b, lo_b, hi_b, vlo_b, vhi_b = best

    use_max = hi_b - 1.0 >= 1.0 - lo_b
    code = np.zeros(N)
    code[S_b] = vhi_b if use_max else vlo_b
    ratio = math.sqrt(hi_b if use_max else max(lo_b, 0.0))
    return DeltaEstimate(
        delta=float(d_b),
        support=np.asarray(S_b, dtype=np.int64),
        code=code.reshape(shape),
        ratio=ratio,
        lambda_min=float(lo_b),
        lambda_max=float(hi_b),
        n_evaluated=used,
        search=search,
        trace=trace,
    )
