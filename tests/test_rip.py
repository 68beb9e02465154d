"""Tests for modelcs.rip (model-RIP ratios, delta estimates), modelcs.mutual_coherence and
modelcs.theory (the Theorem 3.1 / 3.3 calculators).

References are independent brute force: the dense matrix of W built by explicit loops
(tests/reference.py) and enumeration of all supports on tiny sizes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import dense_conv_matrix

from modelcs import ConvOperator
from modelcs.models import BlockSparse, ModelSparse, TopKSparse
from modelcs.mutual_coherence import coherence, coherence_both, coherence_pair
from modelcs.rip import estimate_delta, rip_ratios
from modelcs.theory import theorem31_condition, theorem33_bound


# --------------------------------------------------------------------- brute force
def brute_coherence(w, D, stride, padding, groups=1, shifts=True):
    if not shifts:
        F = w.reshape(w.shape[0], -1).astype(np.float64)
        F = F / np.linalg.norm(F, axis=1, keepdims=True)
        G = np.abs(F @ F.T)
        np.fill_diagonal(G, 0)
        return G.max()
    Wd = dense_conv_matrix(w, D, stride, padding, groups)[0]
    nr = np.linalg.norm(Wd, axis=1)
    R = Wd[nr > 0] / nr[nr > 0, None]
    G = np.abs(R @ R.T)
    np.fill_diagonal(G, 0)
    return G.max() if len(R) > 1 else 0.0


def random_geometry(rng):
    d = int(rng.integers(1, 3))
    g = int(rng.choice([1, 1, 2]))
    K = int(rng.integers(1, 4)) * g
    Mg = int(rng.integers(1, 4))
    l = tuple(int(v) for v in rng.integers(1, 5, size=d))
    t = tuple(int(v) for v in rng.integers(1, 4, size=d))
    pad = ["valid", "same", "circular", 1][int(rng.integers(0, 4))]
    D = tuple(int(li + rng.integers(0, 6)) for li in l)
    dtype = [np.float32, np.float64][int(rng.integers(0, 2))]
    w = rng.standard_normal((K, Mg, *l))
    if rng.random() < 0.3:
        w = np.round(w)  # exact ties and zero taps
    return w.astype(dtype), D, t, pad, g


# ----------------------------------------------------------------------- coherence
def test_coherence_equals_dense_rows_brute_force():
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 60:
        w, D, t, pad, g = random_geometry(rng)
        if (np.abs(w.reshape(w.shape[0], -1)).sum(1) == 0).any():
            continue
        W = ConvOperator(w, D, stride=t, padding=pad, groups=g)
        if W.shape[0] < 2:
            continue
        mu, (r1, r2) = coherence_pair(W)
        ref = brute_coherence(w.astype(np.float64), D, t, pad, g)
        tol = 1e-5 if w.dtype == np.float32 else 1e-12
        assert mu == pytest.approx(ref, abs=tol), (w.shape, D, t, pad, g)
        if ref > 0:  # the reported pair attains the maximum
            Wd = dense_conv_matrix(w.astype(np.float64), D, t, pad, g)[0]
            a, b = Wd[r1], Wd[r2]
            assert r1 != r2
            cos = abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)
            assert cos == pytest.approx(ref, abs=tol)
        checked += 1


@pytest.mark.parametrize("shape", [(5, 3, 4), (6, 2, 3, 2)])
def test_coherence_without_shifts_brute_force(shape, rng):
    w = rng.standard_normal(shape)
    mu, (a, b) = coherence_pair(w, shifts=False)
    assert mu == pytest.approx(brute_coherence(w, None, 1, "valid", shifts=False), abs=1e-12)
    fa, fb = w[a].ravel(), w[b].ravel()
    assert a != b
    assert mu == pytest.approx(abs(fa @ fb) / np.linalg.norm(fa) / np.linalg.norm(fb))


def test_coherence_filters_default_geometry_has_every_lag(rng):
    w = rng.standard_normal((4, 3, 3, 2))
    big = ConvOperator(w, (20, 20), stride=(2, 1))
    assert coherence(w, stride=(2, 1)) == pytest.approx(coherence(big), abs=1e-12)
    # for 'valid' the coherence does not depend on D once every lag occurs
    assert coherence(w, input_shape=(9, 7), stride=(2, 1)) == pytest.approx(
        coherence(big), abs=1e-12
    )


def test_coherence_both_equals_separate_calls():
    rng = np.random.default_rng(11)
    for _ in range(25):
        w, D, t, pad, g = random_geometry(rng)
        if w.shape[0] < 2 or (np.abs(w.reshape(w.shape[0], -1)).sum(1) == 0).any():
            continue
        W = ConvOperator(w, D, stride=t, padding=pad, groups=g)
        both = coherence_both(W)
        tol = 1e-5 if w.dtype == np.float32 else 1e-12
        assert both[0] == pytest.approx(coherence(W), abs=tol)
        assert both[1] == pytest.approx(coherence(W, shifts=False), abs=tol)


def test_coherence_shifts_only_add_pairs(rng):
    W = ConvOperator.random(8, 4, (3, 3), (10, 10), rng=1)
    assert coherence(W) >= coherence(W, shifts=False) - 1e-12


def test_coherence_known_values():
    w = np.zeros((2, 1, 3))
    w[0, 0] = [1, 0, 0]
    w[1, 0] = [0, 1, 1]
    assert coherence(w, shifts=False) == 0.0
    assert coherence(w) == pytest.approx(1 / math.sqrt(2))
    # a single filter against itself shifted by one tap
    v = np.array([[[1.0, 1.0]]])
    assert coherence(v, input_shape=4) == pytest.approx(0.5)
    # stride >= l: shifted copies never overlap, orthogonal filters -> 0
    assert coherence(w, input_shape=9, stride=3) == 0.0


def test_coherence_scale_invariant(rng):
    w = rng.standard_normal((5, 2, 4))
    s = rng.uniform(0.1, 10, size=(5, 1, 1))
    assert coherence(w * s, input_shape=12) == pytest.approx(coherence(w, input_shape=12))


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((np.zeros((3, 2, 2)),), {}, ValueError, "identically zero"),
        ((np.ones((1, 2, 3)),), {"shifts": False}, ValueError, "at least two rows"),
        ((np.ones((4, 3)),), {}, ValueError, "shape"),
        ((np.ones((2, 2, 3), dtype=complex),), {}, TypeError, "real"),
        ((np.ones((2, 2, 3)),), {"shifts": 1}, TypeError, "shifts"),
        ((np.ones((2, 2, 3)),), {"padding": "same"}, ValueError, "input_shape"),
        ((np.ones((2, 2, 3)),), {"input_shape": 2}, ValueError, "kernel size"),
        ((np.array([[[1.0, np.nan]]]),), {}, ValueError, "non-finite"),
    ],
)
def test_coherence_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        coherence(*args, **kwargs)


def test_coherence_operator_errors():
    W = ConvOperator.random(3, 2, 3, 8, rng=0)
    with pytest.raises(TypeError, match="pass W = Phi.T"):
        coherence(W.T)
    with pytest.raises(ValueError, match="input_shape"):
        coherence(W, input_shape=8)
    one = ConvOperator(np.ones((1, 1, 3)), 3)
    with pytest.raises(ValueError, match="at least two rows"):
        coherence(one)


# ---------------------------------------------------------------------- rip_ratios
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("twod", [False, True])
def test_rip_ratios_match_dense(dtype, twod):
    if twod:
        W = ConvOperator.random(5, 3, (2, 3), (6, 7), stride=(1, 2), rng=3, dtype=dtype)
        model = ModelSparse(3, pool=(2, 2))
    else:
        W = ConvOperator.random(6, 3, 4, 11, stride=2, rng=3, dtype=dtype)
        model = ModelSparse(3)
    Z = model.sample(W.out_shape, 40, rng=7, low=-1.0, high=1.0, dtype=dtype)
    Wd = dense_conv_matrix(W.filters.astype(np.float64), W.input_spatial, W.stride)[0]
    z = Z.reshape(40, -1).astype(np.float64)
    zn = np.linalg.norm(z, axis=1)
    x = z @ Wd  # rows: Phi z = W^T z
    g = x @ Wd.T
    expect = {
        "isometry": np.linalg.norm(x, axis=1) / zn,
        "restricted_gram": np.linalg.norm(np.where(z != 0, g, 0), axis=1) / zn,
        "gram": np.linalg.norm(g, axis=1) / zn,
    }
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for kind, ref in expect.items():
        r = rip_ratios(W.T, model, n_trials=40, rng=7, kind=kind)
        assert r.shape == (40,)
        np.testing.assert_allclose(r, ref, rtol=tol)


def test_rip_ratios_figure2_setting():
    """Paper Sec. 4.2: l=5, M=32, K=96, D=32, k=10, values uniform on [-1, 1]."""
    W = ConvOperator.random(96, 32, 5, 32, rng=0, engine="gemm")
    model = ModelSparse(10)
    iso = rip_ratios(W.T, model, n_trials=1000, rng=1)
    rg = rip_ratios(W.T, model, n_trials=1000, rng=2, kind="restricted_gram")
    gr = rip_ratios(W.T, model, n_trials=1000, rng=3, kind="gram")
    assert abs(iso.mean() - 1) < 0.02
    assert abs(rg.mean() - 1) < 0.03
    assert iso.std() < 0.06
    assert gr.mean() > 1.5  # the unrestricted Gram ratio is not an isometry measure


def test_rip_ratios_seed_reproducible():
    W = ConvOperator.random(8, 3, 3, 12, rng=0)
    a = rip_ratios(W.T, ModelSparse(2), n_trials=20, rng=5)
    b = rip_ratios(W.T, ModelSparse(2), n_trials=20, rng=np.random.default_rng(5))
    c = rip_ratios(W.T, ModelSparse(2), n_trials=20, rng=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rip_ratios_orthonormal_is_exactly_one():
    # 'valid' with l = D and orthonormal filters: W^T is an isometry on every code
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 12)))[0]
    W = ConvOperator(q[:6].reshape(6, 3, 4), 4)
    for kind in ("isometry", "restricted_gram", "gram"):
        r = rip_ratios(W.T, TopKSparse(3), n_trials=10, rng=0, kind=kind)
        np.testing.assert_allclose(r, 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"kind": "fro"}, ValueError, "kind"),
        ({"low": 1.0, "high": 1.0}, ValueError, "low < high"),
        ({"low": "a"}, TypeError, "low"),
        ({"low": 0.0, "high": np.inf}, ValueError, "finite"),
        ({"n_trials": 0}, ValueError, "n_trials"),
        ({"n_trials": 2.5}, TypeError, "n_trials"),
        ({"rng": "x"}, TypeError, "rng"),
    ],
)
def test_rip_ratios_bad_arguments(kwargs, exc, match):
    W = ConvOperator.random(4, 2, 3, 8, rng=0)
    args = {"n_trials": 5, **kwargs}
    n = args.pop("n_trials")
    with pytest.raises(exc, match=match):
        rip_ratios(W.T, ModelSparse(2), n_trials=n, **args)


def test_rip_ratios_bad_operator_and_model():
    W = ConvOperator.random(4, 2, 3, 8, rng=0)
    with pytest.raises(TypeError, match="pass W.T"):
        rip_ratios(W, ModelSparse(2), n_trials=5)
    with pytest.raises(TypeError, match="LinearOperator"):
        rip_ratios("not an operator", ModelSparse(2), n_trials=5)  # matrices are accepted now
    with pytest.raises(TypeError, match="model"):
        rip_ratios(W.T, 2, n_trials=5)
    with pytest.raises(ValueError, match="k >= 1"):
        rip_ratios(W.T, ModelSparse(0), n_trials=5)
    with pytest.raises(ValueError, match="exceeds"):
        rip_ratios(W.T, ModelSparse(5), n_trials=5)


# ------------------------------------------------------------------ estimate_delta
def exact_delta(Wd, K, n, k):
    """delta_k over all n^k C(K, k) supports of the block model, by enumeration."""
    best = 0.0
    for blocks in itertools.combinations(range(K), k):
        for pos in itertools.product(range(n), repeat=k):
            idx = [b * n + p for b, p in zip(blocks, pos, strict=True)]
            lam = np.linalg.eigvalsh(Wd[idx] @ Wd[idx].T)
            best = max(best, lam[-1] - 1, 1 - lam[0])
    return best


@pytest.mark.parametrize("search", ["random", "adversarial"])
def test_estimate_delta_is_a_lower_bound_attained_by_its_code(search):
    W = ConvOperator.random(5, 2, 3, 6, rng=4)
    Wd = dense_conv_matrix(W.filters, W.input_spatial)[0]
    K, n = W.out_shape
    true = exact_delta(Wd, K, n, 2)
    est = estimate_delta(W.T, ModelSparse(2), n_trials=30, rng=0, search=search)
    assert est.n_evaluated == 30
    assert 0 < est.delta <= true + 1e-12
    # the returned code lies in the model and attains the distortion
    code = est.code
    assert np.linalg.norm(code) == pytest.approx(1.0)
    np.testing.assert_array_equal(ModelSparse(2).project(code), code)
    assert sorted(np.flatnonzero(code)) == sorted(est.support.tolist())
    r2 = np.linalg.norm(Wd.T @ code.ravel()) ** 2
    assert abs(r2 - 1) == pytest.approx(est.delta, abs=1e-10)
    assert est.ratio == pytest.approx(math.sqrt(r2))
    # enough budget on a tiny problem: the adversarial search finds the true constant
    if search == "adversarial":
        est = estimate_delta(W.T, ModelSparse(2), n_trials=200, rng=1, search=search)
        assert est.delta == pytest.approx(true, rel=1e-9)


def test_adversarial_beats_random_on_the_same_budget():
    W = ConvOperator.random(96, 32, 5, 32, rng=0)  # Figure 2 setting
    model = ModelSparse(10)
    for seed in range(3):
        rnd = estimate_delta(W.T, model, n_trials=120, rng=seed, search="random")
        adv = estimate_delta(W.T, model, n_trials=120, rng=seed, search="adversarial")
        assert rnd.n_evaluated == adv.n_evaluated == 120
        assert adv.delta > rnd.delta
        assert adv.trace[-1] == (120, pytest.approx(adv.delta))
        assert all(b[1] >= a[1] for a, b in itertools.pairwise(adv.trace))


def test_estimate_delta_pooled_2d_model_stays_in_model():
    W = ConvOperator.random(6, 3, (2, 2), (7, 7), rng=2)
    model = ModelSparse(4, pool=(2, 2), switches="fixed")  # switches do not change supports
    est = estimate_delta(W.T, model, n_trials=60, rng=3, search="adversarial")
    known = ModelSparse(4, pool=(2, 2))
    np.testing.assert_array_equal(known.project(est.code), est.code)
    assert (est.code != 0).sum() == 4


def test_estimate_delta_bad_arguments():
    W = ConvOperator.random(4, 2, 3, 8, rng=0)
    with pytest.raises(ValueError, match="search"):
        estimate_delta(W.T, ModelSparse(2), n_trials=5, search="greedy")
    with pytest.raises(ValueError, match="n_trials"):
        estimate_delta(W.T, ModelSparse(2), n_trials=0)
    with pytest.raises(ValueError, match="exactly k"):
        estimate_delta(W.T, BlockSparse(2), n_trials=5)
    with pytest.raises(TypeError, match="pass W.T"):
        estimate_delta(W, ModelSparse(2), n_trials=5)


# ------------------------------------------------------------------------- bounds
def test_theorem33_bound_formula():
    for d2, d1 in [(0.1, 0.1), (0.3, 0.2), (0.0, 0.0), (0.9, 0.5)]:
        ref = 5 * d2 / (1 - d1) * math.sqrt((1 + d2) / (1 - d2))
        assert theorem33_bound(d2, d1) == pytest.approx(ref)
    v = theorem33_bound(np.array([0.1, 0.2]))
    assert v.shape == (2,)
    assert v[0] == pytest.approx(theorem33_bound(0.1))
    # increasing in delta_k: the default delta_k = delta_2k is the largest bound
    assert theorem33_bound(0.2) >= theorem33_bound(0.2, 0.1)


@pytest.mark.parametrize(
    "args, match",
    [((1.0,), "delta_2k"), ((-0.1,), "delta_2k"), ((0.2, 0.3), "delta_k"), ((np.nan,), "finite")],
)
def test_theorem33_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        theorem33_bound(*args)


@settings(max_examples=40, deadline=None)
@given(
    M=st.integers(1, 512),
    l=st.integers(1, 9),
    extra=st.integers(0, 40),
    K=st.integers(1, 512),
    k=st.integers(1, 20),
    delta=st.floats(0.01, 0.99),
    C=st.floats(0.01, 10),
)
def test_theorem31_condition_consistent(M, l, extra, K, k, delta, C):
    D = l + extra
    r = theorem31_condition(M=M, l=l, D=D, K=K, k=k, delta=delta, C=C)
    n = D - l + 1
    rhs = C * k / delta**2 * (math.log(K) + math.log(n) - math.log(0.05))
    assert r.n == n
    assert r.lhs == pytest.approx(M * l * l / D)
    assert r.rhs == pytest.approx(rhs)
    assert r.satisfied == (r.lhs >= r.rhs)
    # the smallest certified delta makes the condition tight; channels_min is minimal
    tight = theorem31_condition(M=M, l=l, D=D, K=K, k=k, delta=r.delta_min * (1 + 1e-9), C=C)
    assert tight.satisfied
    assert theorem31_condition(M=r.channels_min, l=l, D=D, K=K, k=k, delta=delta, C=C).satisfied
    if r.channels_min > 1:
        M0 = r.channels_min - 1
        assert not theorem31_condition(M=M0, l=l, D=D, K=K, k=k, delta=delta, C=C).satisfied


def test_theorem31_2d_uses_products():
    r = theorem31_condition(M=64, l=(3, 3), D=(14, 14), K=512, k=10, delta=0.5, stride=1)
    assert r.n == 144
    assert r.lhs == pytest.approx(64 * 81 / 196)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"delta": 0.0}, ValueError, "delta"),
        ({"delta": "a"}, TypeError, "delta"),
        ({"eps": 1.0}, ValueError, "eps"),
        ({"C": -1.0}, ValueError, "'C'"),
        ({"l": 40}, ValueError, "'l'"),
        ({"M": 0}, ValueError, "'M'"),
        ({"l": (3, 3)}, ValueError, "same number of axes"),
    ],
)
def test_theorem31_bad_input(kwargs, exc, match):
    base = dict(M=32, l=5, D=32, K=96, k=10, delta=0.5)
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        theorem31_condition(**base)


@pytest.mark.parametrize(
    "W",
    [
        ConvOperator.random(6, 4, 3, 11, stride=2, rng=1),
        ConvOperator.random(6, 4, (2, 3), (7, 8), stride=(2, 1), padding="same", groups=2, rng=1),
        ConvOperator.random(4, 2, (3, 3), (6, 7), padding="circular", stride=2, rng=2),
        ConvOperator.random(4, 2, 3, 9, padding=2, rng=3, dtype=np.float32),
    ],
)
def test_delta_fast_conv_path_equals_generic_operator_path(W):
    # 1.0 * W.T is a generic operator (applied to unit codes); W.T uses the filter columns
    K = W.out_shape[0]
    model = ModelSparse(min(3, K), ndim=len(W.input_spatial))
    for search in ("random", "adversarial"):
        a = estimate_delta(W.T, model, n_trials=24, rng=5, search=search)
        b = estimate_delta(1.0 * W.T, model, n_trials=24, rng=5, search=search)
        tol = 1e-5 if W.dtype == np.float32 else 1e-10
        assert a.delta == pytest.approx(b.delta, abs=tol)
        np.testing.assert_array_equal(a.support, b.support)
