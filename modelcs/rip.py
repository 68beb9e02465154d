"""Model-RIP ratios, RIP-constant estimates, coherence and the theorem bounds.

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks* (long version), Sections 2.3, 3 and 4.2, Appendices A-B:

* :func:`rip_ratios` -- Monte-Carlo ratios for random model-k-sparse codes ``z``:
  ``||Phi z|| / ||z||`` (model-RIP, eq. (1), Figure 2a), the support-restricted Gram ratio
  ``||W_Omega W_Omega^T z|| / ||z||`` (Lemma B.1 (6)-(7), Figure 2b) and the unrestricted
  ``||Phi^T Phi z|| / ||z||``.
* :func:`estimate_delta` -- a lower estimate of the model-RIP constant ``delta_k`` of eq. (1)
  (random or adversarial search over supports).
* :func:`coherence` -- ``mu = max |<w_r, w_s>|`` over distinct unit-normalised rows of ``W``
  (footnote 12; Tables 4 and 6), from filter cross-correlations, never from the dense ``W``.
* :func:`theorem31_condition` and :func:`theorem33_bound` -- the sample-size condition of
  Theorem 3.1 and the one-step reconstruction bound of Theorem 3.3.

Conventions: ``W`` is a :class:`~modelcs.ConvOperator` (a CNN layer),
``Phi = W.T`` maps codes ``(K, *n)`` to signals ``(M, *D)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._backend import get_array_module, to_numpy
from ._validation import as_int_tuple, check_choice, check_finite, check_positive_int, check_rng
from .models import SparsityModel
from .operators.base import LinearOperator
from .operators.conv import ConvOperator, _parse_padding

__all__ = [
    "rip_ratios",
    "estimate_delta",
    "DeltaEstimate",
    "coherence",
    "coherence_both",
    "theorem31_condition",
    "Theorem31Condition",
    "theorem33_bound",
]

_KINDS = ("isometry", "restricted_gram", "gram")


# --------------------------------------------------------------------------- checks
def _check_phi(Phi: Any) -> LinearOperator:
    if isinstance(Phi, ConvOperator):
        raise TypeError(
            "parameter 'Phi' is a ConvOperator W (signals -> codes); the measurement operator "
            "maps codes to signals: pass W.T"
        )
    if not isinstance(Phi, LinearOperator):
        raise TypeError(
            f"parameter 'Phi' must be a modelcs LinearOperator mapping codes to signals "
            f"(e.g. W.T); got {type(Phi).__name__}"
        )
    return Phi


def _check_model(model: Any) -> SparsityModel:
    if not isinstance(model, SparsityModel):
        raise TypeError(
            f"parameter 'model' must be a sparsity model such as ModelSparse(k); got {model!r}"
        )
    if model.k < 1:
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
    n_trials: int,
    *,
    seed: Any = None,
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
    seed : None, int or numpy Generator
    kind : {"isometry", "restricted_gram", "gram"}
    low, high : float
        Range of the nonzero values (``low < high``).

    Returns
    -------
    numpy.ndarray of shape ``(n_trials,)``.

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(96, 32, 5, 32, seed=0)          # Figure 2 setting
    >>> r = rip_ratios(W.T, ModelSparse(10), 500, seed=1)
    >>> bool(abs(r.mean() - 1) < 0.02)
    True
    >>> g = rip_ratios(W.T, ModelSparse(10), 500, seed=1, kind="gram")
    >>> bool(g.mean() > 1.5)                                     # not an isometry
    True
    """
    Phi = _check_phi(Phi)
    model = _check_model(model)
    n_trials = check_positive_int("n_trials", n_trials)
    check_choice("kind", kind, _KINDS)
    lo, hi = _check_range(low, high)
    Z = model.sample(Phi.in_shape, n_trials, seed=seed, low=lo, high=hi, dtype=Phi.dtype)
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
    pidx = np.unravel_index(pos, n)
    A, d = atoms.size, len(n)
    xpad = np.zeros((A, op.n_channels_in, *op._Dp))
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
    return np.asarray(op._unpad(xpad)).reshape(A, -1)


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
    seed: Any = None,
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
    seed : None, int or numpy Generator
    search : {"random", "adversarial"}

    Returns
    -------
    DeltaEstimate

    Examples
    --------
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(16, 4, 5, 20, seed=0)
    >>> est = estimate_delta(W.T, ModelSparse(3), n_trials=64, seed=0)
    >>> bool(est.delta > 0), est.support.shape, est.n_evaluated
    (True, (3,), 64)
    >>> adv = estimate_delta(W.T, ModelSparse(3), n_trials=64, seed=0, search="adversarial")
    >>> bool(adv.delta >= est.delta)
    True
    """
    Phi = _check_phi(Phi)
    model = _check_model(model)
    n_trials = check_positive_int("n_trials", n_trials)
    check_choice("search", search, ("random", "adversarial"))
    rng = check_rng(seed)
    smodel = _support_model(model)
    k = model.k
    shape = Phi.in_shape
    N = math.prod(shape)
    chunk = max(1, (1 << 22) // (k * (N + math.prod(Phi.out_shape))))

    n_random = n_trials if search == "random" else max(1, n_trials // 4)
    S = _supports(smodel.sample(shape, n_random, seed=rng, low=1.0, high=2.0), k)
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


# ----------------------------------------------------------------------- coherence
@dataclass
class _AxisClass:
    """Pairs of rows ``(p, p')`` along one spatial axis with identical geometry.

    ``mask1`` / ``mask2``: taps of row ``p`` / ``p'`` that fall inside the input (zero
    padding truncates rows at the boundary); ``j1[i]`` and ``j2[i]`` are the taps of the two
    rows that read the same input sample; ``same`` is ``p == p'``.
    """

    same: bool
    mask1: np.ndarray
    mask2: np.ndarray
    j1: np.ndarray
    j2: np.ndarray
    p1: int
    p2: int
    rev: int = -1


def _axis_classes(D: int, l: int, t: int, lo: int, circular: bool, n: int) -> list[_AxisClass]:
    """All distinct overlapping row-pair geometries along one axis (geometry only, CPU)."""
    out: list[_AxisClass] = []
    keys: dict[tuple[Any, ...], int] = {}
    taps = np.arange(l)
    for dp in range(-(n - 1), n):
        s = dp * t
        if circular:
            j2 = (taps - s) % D
            hit = j2 < l
            if not hit.any():
                continue
        else:
            if abs(s) >= l:
                continue
            j2 = taps - s
            hit = (j2 >= 0) & (j2 < l)
        p = np.arange(max(0, -dp), min(n, n - dp))
        if circular:
            m1 = np.ones((p.size, l), dtype=bool)
            m2 = m1
        else:
            m1 = (p[:, None] * t + taps[None, :] - lo >= 0) & (p[:, None] * t + taps - lo < D)
            q = p + dp
            m2 = (q[:, None] * t + taps[None, :] - lo >= 0) & (q[:, None] * t + taps - lo < D)
        rows, first = np.unique(np.concatenate([m1, m2], axis=1), axis=0, return_index=True)
        for row, i in zip(rows, first, strict=True):
            a, b = row[:l], row[l:]
            sel = hit & a
            j1s, j2s = taps[sel], j2[sel]
            key = (dp == 0, a.tobytes(), b.tobytes(), j1s.tobytes(), j2s.tobytes())
            if key in keys:
                continue
            keys[key] = len(out)
            out.append(_AxisClass(dp == 0, a, b, j1s, j2s, int(p[i]), int(p[i] + dp)))
    for c in out:
        order = np.argsort(c.j2, kind="stable")
        key = (c.same, c.mask2.tobytes(), c.mask1.tobytes(), c.j2[order].tobytes(),
               c.j1[order].tobytes())
        c.rev = keys[key]
    return out


def _as_conv(
    W_or_filters: Any, shifts: bool, input_shape: Any, stride: Any, padding: Any
) -> ConvOperator:
    if isinstance(W_or_filters, ConvOperator):
        if input_shape is not None:
            raise ValueError(
                "parameter 'input_shape' must be None when a ConvOperator is given (its own "
                "geometry is used)"
            )
        return W_or_filters
    if isinstance(W_or_filters, LinearOperator):
        raise TypeError(
            "parameter 'W_or_filters' must be a ConvOperator W or a filter array (K, M, *l); "
            f"got {W_or_filters!r} (for Phi = W.T pass W = Phi.T)"
        )
    w = W_or_filters
    if not hasattr(w, "ndim") or not hasattr(w, "dtype"):
        w = np.asarray(w)
    if w.ndim not in (3, 4):
        raise ValueError(
            f"parameter 'W_or_filters' must be a ConvOperator or filters of shape (K, M, l) or "
            f"(K, M, l1, l2); got an array of shape {tuple(w.shape)}"
        )
    if w.dtype.kind not in "fiu":
        raise TypeError(f"parameter 'W_or_filters' must be real; got dtype {w.dtype}")
    d = w.ndim - 2
    l = tuple(int(s) for s in w.shape[2:])
    if input_shape is None:
        t = as_int_tuple("stride", stride, d)
        if padding != "valid":
            raise ValueError(
                "parameter 'input_shape' is needed with padding other than 'valid'; got "
                f"padding={padding!r}"
            )
        # large enough that every relative shift (multiple of the stride) occurs
        input_shape = tuple(la + ta * 2 * (-(-la // ta)) for la, ta in zip(l, t, strict=True))
    return ConvOperator(w, input_shape, stride=stride, padding=padding)


def coherence(
    W_or_filters: Any,
    *,
    shifts: bool = True,
    input_shape: int | Sequence[int] | None = None,
    stride: int | Sequence[int] = 1,
    padding: Any = "valid",
    return_pair: bool = False,
) -> Any:
    """Coherence ``mu = max_{r != s} |<w_r, w_s>|`` of the unit-normalised rows of ``W``.

    Footnote 12 of the invertibility paper (Tables 4 and 6).  Rows of ``W`` are the shifted
    copies of the filters.

    ``shifts=True``
        All rows of ``W`` for the given geometry: pairs of filters at every relative shift
        that occurs (multiples of the stride, at most ``n - 1`` shifts apart), including the
        same filter at two different shifts.  With ``'valid'`` padding every row is a whole
        filter, so the Gram entries are the filters' full cross-correlations at those lags
        (normalised by the filter norms); with zero padding (``'same'``, ints) rows at the
        boundary are truncated and normalised by their own (smaller) norms; with
        ``'circular'`` rows wrap around.  Rows that lie entirely in the zero padding are
        zero and are left out.
    ``shifts=False``
        The ``K`` filters alone (flattened, unit-normalised): ``max_{k != k'} |cos|``.

    Computed from filter cross-correlations: one ``K x K`` product per distinct relative
    shift (and boundary geometry) over the overlapping taps only, never from the dense
    ``W`` (array module of the filters: NumPy or CuPy; dtype of the filters).

    Parameters
    ----------
    W_or_filters : ConvOperator or array ``(K, M, *l)``
        With a ConvOperator its stride, padding, groups and input shape are used.
    shifts : bool, default True
    input_shape : int or tuple, optional
        Spatial input shape when filters are given.  ``None`` (with ``'valid'``): an input
        large enough that every lag occurs (for ``'valid'`` the coherence does not depend
        on ``D`` once ``n >= ceil(l/t)``).
    stride, padding :
        Geometry when filters are given (as for :class:`~modelcs.ConvOperator`).
    return_pair : bool, default False
        Also return the flat row indices ``(r, s)`` of ``W`` attaining the maximum (rows
        are the C-order flattening of ``(K, *n)``; with ``shifts=False``, filter indices).

    Returns
    -------
    float, or ``(float, (int, int))`` with ``return_pair=True``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.zeros((2, 1, 3)); w[0, 0] = [1, 0, 0]; w[1, 0] = [0, 1, 1]
    >>> coherence(w, shifts=False)
    0.0
    >>> round(coherence(w, shifts=True), 4)         # w0 shifted by one tap meets w1
    0.7071
    >>> from modelcs import ConvOperator
    >>> W = ConvOperator.random(64, 64, (3, 3), (14, 14), seed=0)
    >>> 0.1 < coherence(W, shifts=False) < coherence(W) < 0.3
    True
    """
    if not isinstance(shifts, (bool, np.bool_)):
        raise TypeError(f"parameter 'shifts' must be a bool; got {shifts!r}")
    best, _ = _coherence(W_or_filters, bool(shifts), input_shape, stride, padding)
    return best if return_pair else best[0]


def coherence_both(
    W_or_filters: Any, *, input_shape: Any = None, stride: Any = 1, padding: Any = "valid"
) -> tuple[float, float]:
    """``(coherence(..., shifts=True), coherence(..., shifts=False))`` in one pass.

    The lag-0 block of the shifted computation is the Gram matrix of the whole filters,
    so the filters-only value comes for free when some row is a whole filter.
    """
    best, whole = _coherence(W_or_filters, True, input_shape, stride, padding)
    if whole is None:
        whole = coherence(W_or_filters, shifts=False)
    return best[0], whole


def _coherence(
    W_or_filters: Any, shifts: bool, input_shape: Any, stride: Any, padding: Any
) -> tuple[tuple[float, tuple[int, int]], float | None]:
    """(best value, row pair) and, when computed on the way, the filters-only value."""
    op = _as_conv(W_or_filters, shifts, input_shape, stride, padding)
    w = op.filters
    xp = get_array_module(w)
    K = op.n_blocks
    g = op.groups
    if g > 1:  # expand grouped filters to all input channels (zeros elsewhere)
        Mg = w.shape[1]
        full = xp.zeros((K, Mg * g, *w.shape[2:]), dtype=w.dtype)
        for gi in range(g):
            ks = slice(gi * (K // g), (gi + 1) * (K // g))
            full[ks, gi * Mg : (gi + 1) * Mg] = w[ks]
        w = full
    L = math.prod(op.kernel_size)
    A = w.reshape(K, w.shape[1], L)
    sq = (A.astype(np.float64) ** 2).sum(axis=1)  # (K, L)
    fnorm = xp.sqrt(sq.sum(axis=1))
    if bool((fnorm == 0).any()):
        bad = int(to_numpy(xp.flatnonzero(fnorm == 0))[0])
        raise ValueError(f"parameter 'W_or_filters': filter {bad} is identically zero")

    if not shifts:
        if K < 2:
            raise ValueError("coherence needs at least two rows; got K=1 filter with shifts=False")
        F = A.reshape(K, -1) / fnorm[:, None].astype(A.dtype)
        G = xp.abs(F @ F.T)
        G[xp.arange(K), xp.arange(K)] = 0
        i = int(to_numpy(xp.argmax(G)))
        mu = float(G.reshape(-1)[i])
        return (mu, divmod(i, K)), mu

    d = op.ndim_spatial
    mode, pads = _parse_padding(op.padding, d, op.input_spatial, op.kernel_size, op.stride)
    n = op.output_spatial
    if K * math.prod(n) < 2:
        raise ValueError(f"coherence needs at least two rows; W has {K * math.prod(n)}")
    per_axis = [
        _axis_classes(Da, la, ta, pa[0], mode == "circular", na)
        for Da, la, ta, pa, na in zip(
            op.input_spatial, op.kernel_size, op.stride, pads, n, strict=True
        )
    ]
    lshape = op.kernel_size
    best: tuple[float, tuple[int, int]] = (0.0, (0, 1))  # every pair has |<.,.>| >= 0
    whole: float | None = None  # the filters-only value (lag 0, untruncated rows)
    for combo in itertools.product(*[range(len(c)) for c in per_axis]):
        rev = tuple(per_axis[a][ci].rev for a, ci in enumerate(combo))
        if rev < combo:
            continue  # the transposed Gram block was (or will be) computed
        cls = [per_axis[a][ci] for a, ci in enumerate(combo)]
        grid1 = np.meshgrid(*[c.j1 for c in cls], indexing="ij")
        if grid1[0].size == 0:
            continue
        grid2 = np.meshgrid(*[c.j2 for c in cls], indexing="ij")
        J1 = xp.asarray(np.ravel_multi_index([q.ravel() for q in grid1], lshape))
        J2 = xp.asarray(np.ravel_multi_index([q.ravel() for q in grid2], lshape))
        m1 = cls[0].mask1
        m2 = cls[0].mask2
        for c in cls[1:]:
            m1 = np.multiply.outer(m1, c.mask1)
            m2 = np.multiply.outer(m2, c.mask2)
        n1 = xp.sqrt(sq @ xp.asarray(m1.reshape(-1), dtype=np.float64))
        n2 = xp.sqrt(sq @ xp.asarray(m2.reshape(-1), dtype=np.float64))
        G = A[:, :, J1].reshape(K, -1) @ A[:, :, J2].reshape(K, -1).T
        den = n1[:, None] * n2[None, :]
        G = xp.abs(G) / xp.where(den > 0, den, 1.0).astype(G.dtype)
        G = xp.where(den > 0, G, 0)
        if all(c.same for c in cls):
            G[xp.arange(K), xp.arange(K)] = 0
        i = int(to_numpy(xp.argmax(G)))
        val = float(G.reshape(-1)[i])
        if all(c.same and c.mask1.all() for c in cls) and K > 1:
            whole = val
        if val > best[0]:
            k1, k2 = divmod(i, K)
            r1 = k1 * math.prod(n) + int(np.ravel_multi_index([c.p1 for c in cls], n))
            r2 = k2 * math.prod(n) + int(np.ravel_multi_index([c.p2 for c in cls], n))
            best = (val, (r1, r2))
    return best, whole


# -------------------------------------------------------------------------- bounds
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
