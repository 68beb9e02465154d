"""Tests for modelcs.frames: CReLU, spectra, frame bounds, pseudoinverse reconstruction.

References are independent: the explicit-loop dense matrix of tests/reference.py, dense
SVD / eigvalsh / pinv, and Python loops for pooling and pairing.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import dense

from modelcs import (
    ConvOperator,
    crelu,
    crelu_inverse,
    crelu_pool,
    frame_bounds,
    pairing_cosines,
    pairing_partners,
    pinv_reconstruct,
    reconstruction_ratio,
    singular_values,
    theorem_a5_bound,
    theorem_a5_terms,
    theorem_c1_ratio,
)
from modelcs.frames.pinv import ConvergenceWarning


# ------------------------------------------------------------------------------- CReLU
def test_crelu_layout_and_inverse(rng):
    h = rng.standard_normal((3, 5, 4))
    c = crelu(h)
    assert c.shape == (6, 5, 4)
    np.testing.assert_array_equal(c[:3], np.maximum(h, 0))
    np.testing.assert_array_equal(c[3:], np.maximum(-h, 0))
    np.testing.assert_array_equal(crelu_inverse(c), h)
    hb = rng.standard_normal((2, 3, 7))
    cb = crelu(hb, axis=1)
    assert cb.shape == (2, 6, 7)
    np.testing.assert_array_equal(cb[1], crelu(hb[1]))
    np.testing.assert_array_equal(crelu_inverse(cb, axis=1), hb)
    assert crelu(np.array([[1, -2]])).dtype == np.float64


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=12), st.integers(1, 2))
def test_crelu_roundtrip_property(vals, K):
    h = np.array(vals[: (len(vals) // K) * K]).reshape(K, -1)
    c = crelu(h)
    assert (c >= 0).all()
    assert not ((c[:K] > 0) & (c[K:] > 0)).any()
    np.testing.assert_array_equal(crelu_inverse(c), h)


@pytest.mark.parametrize(
    "c, msg",
    [
        (np.ones((3, 4)), "even number"),
        (-np.ones((2, 4)), "negative"),
        (np.ones((2, 4)), "positive in both"),
        (np.array([[np.nan], [0.0]]), "non-finite"),
    ],
)
def test_crelu_inverse_rejects_non_crelu_output(c, msg):
    with pytest.raises(ValueError, match=msg):
        crelu_inverse(c)


def test_crelu_bad_inputs():
    with pytest.raises(TypeError, match="'h'"):
        crelu(np.array(["a"]))
    with pytest.raises(ValueError, match="'axis'"):
        crelu(np.ones((2, 3)), axis=2)
    with pytest.raises(TypeError, match="'axis'"):
        crelu(np.ones((2, 3)), axis=0.5)
    with pytest.raises(ValueError, match="non-finite"):
        crelu(np.array([np.inf]))
    with pytest.raises(TypeError, match="'c'"):
        crelu_inverse(np.ones((2, 2), dtype=complex))


# ------------------------------------------------------------------------- crelu_pool
def _pool_reference(h, pool, stride):
    """Loops: per filter, phase and window, the max and its flat position."""
    K, n = h.shape[0], h.shape[1:]
    p = tuple((n[a] - pool[a]) // stride[a] + 1 for a in range(len(n)))
    feats = np.zeros((2 * K, *p))
    sw = -np.ones((2 * K, *p), dtype=int)
    for k, ph in itertools.product(range(K), range(2)):
        s = 1.0 if ph == 0 else -1.0
        for pi in itertools.product(*[range(q) for q in p]):
            best, arg = -np.inf, None
            for off in itertools.product(*[range(q) for q in pool]):
                pos = tuple(pi[a] * stride[a] + off[a] for a in range(len(n)))
                if s * h[(k, *pos)] > best:
                    best, arg = s * h[(k, *pos)], np.ravel_multi_index(pos, n)
            if best > 0:
                feats[(ph * K + k, *pi)] = best
                sw[(ph * K + k, *pi)] = arg
    return feats, sw


@pytest.mark.parametrize(
    "K, M, l, D, pool, stride",
    [
        (3, 2, 3, 12, None, None),
        (3, 2, 3, 13, 3, 2),
        (2, 2, (2, 3), (8, 9), (2, 2), None),
        (2, 1, (3, 3), (9, 9), None, None),
    ],
)
def test_crelu_pool_against_loops(rng, K, M, l, D, pool, stride):
    W = ConvOperator.random(K, M, l, D, rng=4)
    x = rng.standard_normal((3, *W.in_shape))
    p = crelu_pool(W, x, pool=pool, stride=stride)
    n = W.out_shape[1:]
    pl = n if pool is None else ((pool,) * len(n) if isinstance(pool, int) else pool)
    sd = pl if stride is None else ((stride,) * len(n) if isinstance(stride, int) else stride)
    for b in range(3):
        h = W @ x[b]
        f, s = _pool_reference(h, pl, sd)
        np.testing.assert_allclose(p.features[b], f, rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(p.switches[b], s)
        # the code is the linear response at the switches and zero elsewhere
        np.testing.assert_allclose(p.code[b][p.support[b]], h[p.support[b]], rtol=1e-13)
        assert (p.code[b][~p.support[b]] == 0).all()
        chans = np.nonzero(s.reshape(2 * K, -1) >= 0)
        expected = {(int(c) % K, int(v)) for c, v in
                    zip(chans[0], s.reshape(2 * K, -1)[chans], strict=True)}
        got = np.nonzero(p.support[b].reshape(K, -1))
        assert {(int(k), int(q)) for k, q in zip(*got, strict=True)} == expected
    single = crelu_pool(W, x[0], pool=pool, stride=stride)
    np.testing.assert_allclose(single.features, p.features[0], rtol=1e-13)


def test_crelu_pool_bad_inputs(rng):
    W = ConvOperator.random(2, 2, 3, 10, rng=0)
    x = rng.standard_normal((2, 10))
    with pytest.raises(TypeError, match="'W'"):
        crelu_pool("not an operator", x)  # matrices are accepted (as_operator)
    with pytest.raises(ValueError, match="'x' has shape"):
        crelu_pool(W, x[:, :5])
    with pytest.raises(ValueError, match="'pool'"):
        crelu_pool(W, x, pool=9)
    with pytest.raises(ValueError, match="'stride' needs 'pool'"):
        crelu_pool(W, x, stride=2)
    with pytest.raises(ValueError, match="'pool'"):
        crelu_pool(W, x, pool=0)
    with pytest.raises(ValueError, match="non-finite"):
        crelu_pool(W, np.full((2, 10), np.nan))


# --------------------------------------------------------------------- singular values
CIRCULAR_CASES = [
    # K, M, l, D, stride, groups
    (3, 2, 3, 8, 1, 1),
    (2, 3, 4, 9, 1, 1),
    (2, 4, (2, 3), (6, 7), 1, 1),
    (3, 2, (3, 3), (6, 8), 1, 1),
    (4, 4, 3, 9, 1, 2),
    (3, 2, 3, 12, 2, 1),
    (2, 3, (3, 2), (8, 6), (2, 3), 1),
    (5, 2, 4, 10, 2, 1),
]


@pytest.mark.parametrize("K, M, l, D, t, g", CIRCULAR_CASES)
@pytest.mark.parametrize("method", ["fft", "fft-gram"])
def test_circular_singular_values_equal_dense_svd(K, M, l, D, t, g, method):
    W = ConvOperator.random(K, M, l, D, stride=t, padding="circular", groups=g, rng=K + M)
    sd = np.linalg.svd(dense(W), compute_uv=False)
    s = singular_values(W, method=method)
    assert s.size == min(dense(W).shape)
    rtol = 1e-10 if method == "fft" else 1e-8
    assert np.abs(s - sd).max() <= rtol * sd[0]
    assert (np.diff(s) <= 0).all()
    np.testing.assert_allclose(singular_values(W, k=2, which="largest"), sd[:2], rtol=1e-10)
    np.testing.assert_allclose(
        singular_values(W, k=2, which="smallest"), sd[-2:], rtol=1e-8, atol=1e-12 * sd[0]
    )


def test_circular_float32_filters_use_exact_spectrum():
    W = ConvOperator.random(3, 3, 3, (5, 6), padding="circular", rng=0, dtype=np.float32)
    sd = np.linalg.svd(dense(W), compute_uv=False)
    np.testing.assert_allclose(singular_values(W), sd, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "K, M, l, D, t, pad",
    [(4, 3, 3, (9, 8), 2, "valid"), (3, 2, 3, 20, 1, "same"), (5, 2, 4, 23, 3, "valid"),
     (3, 2, 3, 10, 2, "circular")],  # circular too: the iterative method is generic
)
def test_iterative_extreme_singular_values(K, M, l, D, t, pad):
    W = ConvOperator.random(K, M, l, D, stride=t, padding=pad, rng=7)
    sd = np.linalg.svd(dense(W), compute_uv=False)
    s = singular_values(W, k=2, which="both", method="iterative")
    np.testing.assert_allclose(s, np.concatenate([sd[:2], sd[-2:]]), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(singular_values(W, k=3, which="largest", method="dense"), sd[:3])


def test_auto_uses_dense_when_stride_does_not_divide_on_small_sizes():
    W = ConvOperator.random(3, 2, 3, 11, stride=2, padding="circular", rng=1)
    with pytest.raises(ValueError, match="'k' is required"):
        singular_values(W, method="iterative")
    sd = np.linalg.svd(dense(W), compute_uv=False)
    np.testing.assert_allclose(singular_values(W), sd, rtol=1e-12)   # 'auto' -> dense
    np.testing.assert_allclose(singular_values(W, k=1, which="largest"), sd[:1], rtol=1e-8)


def test_dense_matrix_input(rng):
    A = rng.standard_normal((7, 5))
    np.testing.assert_allclose(singular_values(A), np.linalg.svd(A, compute_uv=False))


def test_singular_values_bad_inputs():
    Wv = ConvOperator.random(3, 2, 3, 10, rng=0)
    with pytest.raises(ValueError, match="padding='circular'"):
        singular_values(Wv, method="fft")
    with pytest.raises(ValueError, match="'k' is required"):
        singular_values(Wv, method="iterative")
    with pytest.raises(ValueError, match="'which'"):
        singular_values(Wv, k=1, which="middle")
    with pytest.raises(ValueError, match="'method'"):
        singular_values(Wv, method="magic")
    with pytest.raises(ValueError, match="'k'"):
        singular_values(Wv, k=0)
    with pytest.raises(ValueError, match="'k'=20 is too large"):
        singular_values(Wv, k=20, method="iterative")
    with pytest.raises(ValueError, match="'tol'"):
        singular_values(Wv, k=1, tol=2.0)
    with pytest.raises(TypeError, match="'W'"):
        singular_values("W")
    with pytest.raises(ValueError, match="2-D matrix"):
        singular_values(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        singular_values(np.array([[np.nan, 1.0]]))


# ------------------------------------------------------------------------ frame bounds
def _dense_bounds(A):
    ev = np.linalg.eigvalsh(A.T @ A)
    return ev[ev > 1e-9 * ev.max()].min(), ev.max()


@pytest.mark.parametrize(
    "K, M, l, D, t, pad, method",
    [
        (3, 2, 3, 8, 1, "circular", "auto"),
        (2, 3, (2, 3), (6, 7), 1, "circular", "auto"),
        (3, 2, 3, 12, 2, "circular", "auto"),
        (4, 3, 3, 10, 1, "valid", "iterative"),   # Kn > MD: W^T W nonsingular
        (2, 3, 3, 12, 1, "valid", "iterative"),   # Kn < MD: null space, W W^T used
        (3, 2, (3, 3), (7, 6), 2, "same", "iterative"),
        (2, 3, 3, 12, 1, "valid", "dense"),
    ],
)
def test_frame_bounds_equal_dense_eigenvalues(K, M, l, D, t, pad, method):
    W = ConvOperator.random(K, M, l, D, stride=t, padding=pad, rng=11)
    lo, hi = frame_bounds(W, method=method)
    dlo, dhi = _dense_bounds(dense(W))
    assert abs(lo - dlo) <= 1e-8 * dlo and abs(hi - dhi) <= 1e-8 * dhi


def test_frame_bounds_tight_frame_and_rank_deficiency():
    # one filter = delta: circular shifts form an orthonormal basis (tight frame A = B = 1)
    w = np.zeros((1, 1, 3))
    w[0, 0, 0] = 1.0
    lo, hi = frame_bounds(ConvOperator(w, 8, padding="circular"))
    assert lo == pytest.approx(1.0, abs=1e-14) and hi == pytest.approx(1.0, abs=1e-14)
    # filter (1, -1): circular shifts are orthogonal to constants (rank D-1); the zero is
    # excluded by the rank tolerance and the lower bound is the smallest nonzero eigenvalue
    w = np.array([[[1.0, -1.0]]])
    W = ConvOperator(w, 8, padding="circular")
    lo, hi = frame_bounds(W)
    f = np.arange(8) / 8
    ev = np.abs(1 - np.exp(2j * np.pi * f)) ** 2
    assert lo == pytest.approx(ev[ev > 1e-12].min(), rel=1e-12)
    assert hi == pytest.approx(4.0, rel=1e-12)


def test_frame_bounds_bad_inputs():
    W = ConvOperator.random(2, 3, 3, 12, rng=0)
    with pytest.raises(ValueError, match="identically zero"):
        frame_bounds(ConvOperator(np.zeros((1, 1, 3)), 6, padding="circular"))
    with pytest.raises(ValueError, match="'rtol'"):
        frame_bounds(W, rtol=-1.0)
    with pytest.raises(ValueError, match="'method'"):
        frame_bounds(W, method="nope")
    with pytest.raises(TypeError, match="'k'"):
        frame_bounds(W, k=1.5)
    # a Gram operator with a null space of dimension >= k: all k smallest are zero
    w = np.zeros((3, 1, 3))
    w[:, 0, 0] = [1.0, 2.0, 3.0]  # three proportional filters: W W^T has a big null space
    Wd = ConvOperator(w, 10)
    with pytest.raises(ValueError, match="increase k"):
        frame_bounds(Wd, method="iterative", k=2)


# ---------------------------------------------------------- pseudoinverse reconstruction
@pytest.mark.parametrize(
    "K, M, l, D, t, pad",
    [
        (2, 3, 3, 12, 1, "valid"),
        (3, 2, 4, 15, 2, "valid"),
        (2, 3, (3, 3), (7, 6), 1, "valid"),
        (2, 4, (3, 2), (6, 6), (2, 1), "same"),
        (2, 3, 3, 9, 1, "circular"),
    ],
)
def test_proposition_2_1_projection_onto_row_space(rng, K, M, l, D, t, pad):
    W = ConvOperator.random(K, M, l, D, stride=t, padding=pad, rng=5)
    A = dense(W)
    P = np.linalg.pinv(A) @ A  # orthogonal projector onto the row space of W
    assert np.linalg.matrix_rank(A) < A.shape[1]  # a proper subspace: the test has teeth
    x = rng.standard_normal((4, *W.in_shape))
    xr = pinv_reconstruct(W, crelu_inverse(crelu(W @ x, axis=1), axis=1)).x
    err = np.abs(xr.reshape(4, -1) - x.reshape(4, -1) @ P.T).max()
    assert err <= 1e-8 * np.abs(x).max()
    x1 = pinv_reconstruct(W, crelu_inverse(crelu(W @ x[0]))).x
    np.testing.assert_allclose(x1, xr[0], atol=1e-10)


def test_pinv_reconstruct_float32(rng):
    W = ConvOperator.random(2, 3, 3, 12, rng=5, dtype=np.float32)
    A = dense(W)
    x = rng.standard_normal((3, 12)).astype(np.float32)
    xr = pinv_reconstruct(W, W @ x).x
    assert xr.dtype == np.float32
    np.testing.assert_allclose(xr.ravel(), np.linalg.pinv(A) @ A @ x.ravel(), atol=2e-4)


def test_pinv_reconstruct_inconsistent_least_squares(rng):
    """Kn > MD and h not in range(W): the minimum-norm least-squares solution (pinv h)."""
    W = ConvOperator.random(4, 2, 3, 10, rng=8)
    h = rng.standard_normal(W.out_shape)
    xr = pinv_reconstruct(W, h).x
    np.testing.assert_allclose(xr.ravel(), np.linalg.pinv(dense(W)) @ h.ravel(), atol=1e-9)


def test_algorithm2_matches_dense_restricted_pinv(rng):
    W = ConvOperator.random(3, 2, (3, 3), (8, 7), rng=9)
    x = rng.standard_normal((5, *W.in_shape))
    p = crelu_pool(W, x, pool=2)
    xr = pinv_reconstruct(W, p.code, support=p.support).x
    A = dense(W)
    for b in range(5):
        S = p.support[b].ravel()
        ref = np.linalg.pinv(A[S]) @ (A[S] @ x[b].ravel())
        np.testing.assert_allclose(xr[b].ravel(), ref, atol=1e-9)
    # a shared support broadcasts over the batch
    xs = pinv_reconstruct(W, p.code, support=p.support[0]).x
    S = p.support[0].ravel()
    np.testing.assert_allclose(
        xs[1].ravel(), np.linalg.pinv(A[S]) @ (p.code[1].ravel()[S]), atol=1e-9
    )


def _s1_coefficients(rng, B, K, n, p_active=0.6):
    """Coefficients satisfying (S1): at most one nonzero shift per filter (global pool)."""
    act = rng.random((B, K)) < p_active
    act[:, 0] = True
    shift = rng.integers(0, n, (B, K))
    c = np.zeros((B, K, n))
    b, k = np.nonzero(act)
    c[b, k, shift[b, k]] = rng.standard_normal(b.size)
    return c


def test_algorithm2_and_theorem_a5_on_1000_random_cases():
    rng = np.random.default_rng(2024)
    worst, informative, exact = 0.0, 0, 0
    for seed, (K, M, l, D) in enumerate([(4, 2, 3, 12), (3, 3, 4, 11), (6, 2, 3, 16),
                                         (2, 1, 5, 14)]):
        W = ConvOperator.random(K, M, l, D, normalized=True, rng=seed)
        c = _s1_coefficients(rng, 250, K, W.out_shape[1])
        x = W.T @ c
        p = crelu_pool(W, x)
        xr = pinv_reconstruct(W, p.code, support=p.support).x
        r = reconstruction_ratio(x, xr, batched=True)
        bound = theorem_a5_bound(W, c)
        assert (r <= bound * (1 + 1e-9) + 1e-9).all()
        worst = max(worst, float((r - bound).max()))
        informative += int((bound < 1).sum())
        exact += int((r < 1e-8).sum())
    assert informative > 100  # the bound is not always vacuous in these cases
    assert exact > 100  # and many inputs are recovered exactly


def test_algorithm2_single_generating_shift_is_recovered_exactly(rng):
    W = ConvOperator.random(3, 2, 3, 12, rng=1)
    c = np.zeros(W.out_shape)
    c[1, 4] = -2.0  # one shifted filter: its own response is the largest by Cauchy-Schwarz
    x = W.T @ c
    p = crelu_pool(W, x)
    xr = pinv_reconstruct(W, p.code, support=p.support).x
    assert reconstruction_ratio(x, xr) < 1e-10
    assert theorem_a5_bound(W, c) == pytest.approx(0.0, abs=1e-7)


def test_theorem_a5_windowed_pooling():
    rng = np.random.default_rng(5)
    W = ConvOperator.random(3, 2, 3, 14, normalized=True, rng=3)  # n = 12, 3 windows of 4
    c = np.zeros((200, 3, 12))
    for w0 in range(0, 12, 4):
        act = rng.random((200, 3)) < 0.5
        b, k = np.nonzero(act)
        c[b, k, w0 + rng.integers(0, 4, b.size)] = rng.standard_normal(b.size)
    c[:, 0, 0] += (np.abs(c).sum(axis=(1, 2)) == 0)  # no all-zero item
    x = W.T @ c
    p = crelu_pool(W, x, pool=4)
    r = reconstruction_ratio(x, pinv_reconstruct(W, p.code, support=p.support).x, batched=True)
    bound, lmin, ltmax = theorem_a5_terms(W, c, pool=4)
    assert (r <= bound * (1 + 1e-9) + 1e-9).all()
    assert (lmin > 0).all() and (ltmax > 0).all()


def test_pinv_reconstruct_bad_inputs(rng):
    W = ConvOperator.random(2, 3, 3, 12, rng=0)
    h = W @ rng.standard_normal((3, 12))
    with pytest.raises(TypeError, match="'W'"):
        pinv_reconstruct("not an operator", h)  # matrices are accepted (as_operator)
    with pytest.raises(ValueError, match="'h' has shape"):
        pinv_reconstruct(W, h[:, :3])
    with pytest.raises(ValueError, match="non-finite"):
        pinv_reconstruct(W, np.full_like(h, np.inf))
    with pytest.raises(TypeError, match="'support' must be a boolean"):
        pinv_reconstruct(W, h, support=np.ones(h.shape))
    with pytest.raises(ValueError, match="'support' has shape"):
        pinv_reconstruct(W, h, support=np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="'tol'"):
        pinv_reconstruct(W, h, tol=0.0)
    with pytest.raises(ValueError, match="'max_iter'"):
        pinv_reconstruct(W, h, max_iter=0)
    with pytest.raises(TypeError, match="'h'"):
        pinv_reconstruct(W, h.astype(complex))
    with pytest.warns(ConvergenceWarning, match="did not reach"):
        pinv_reconstruct(W, h, max_iter=1, method="lsqr")


def test_pinv_reconstruct_zero_rhs():
    W = ConvOperator.random(2, 3, 3, 12, rng=0)
    assert (pinv_reconstruct(W, np.zeros(W.out_shape)).x == 0).all()


def test_reconstruction_ratio_values_and_errors(rng):
    x = rng.standard_normal((3, 4, 5))
    xr = x * 0.5
    np.testing.assert_allclose(reconstruction_ratio(x, xr, batched=True), [0.5] * 3)
    assert reconstruction_ratio(x, xr) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_ratio(x, xr[0])
    with pytest.raises(ValueError, match="is zero"):
        reconstruction_ratio(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="batch axis"):
        reconstruction_ratio(np.ones(3), np.ones(3), batched=True)
    with pytest.raises(TypeError, match="'x'"):
        reconstruction_ratio([1.0], np.ones(1))
    with pytest.raises(ValueError, match="non-finite"):
        reconstruction_ratio(np.ones(2), np.array([1.0, np.nan]))


def test_theorem_a5_bad_inputs():
    W = ConvOperator.random(2, 2, 3, 10, rng=0)
    c = np.zeros(W.out_shape)
    with pytest.raises(ValueError, match="is zero"):
        theorem_a5_bound(W, c)
    c[0, 1] = c[0, 5] = 1.0
    with pytest.raises(ValueError, match=r"violates assumption \(S1\)"):
        theorem_a5_bound(W, c)
    c[0, 5] = 0
    with pytest.raises(ValueError, match="non-overlapping"):
        theorem_a5_bound(W, c, pool=4, stride=2)
    with pytest.raises(ValueError, match="outside every pooling region"):
        c2 = np.zeros(W.out_shape)
        c2[0, 7] = 1.0
        theorem_a5_bound(W, c2, pool=3)  # windows cover shifts 0..5 only
    with pytest.raises(ValueError, match="'coef' has shape"):
        theorem_a5_bound(W, c[:, :3])
    with pytest.raises(TypeError, match="'W'"):
        theorem_a5_bound(np.eye(2), c)
    with pytest.raises(ValueError, match="non-finite"):
        theorem_a5_bound(W, np.full(W.out_shape, np.nan))


# ------------------------------------------------------------------------ Theorem C.1
def test_theorem_c1_monte_carlo_within_three_standard_errors():
    rng = np.random.default_rng(77)
    T = 20000
    for D, Ds in [(6, 2), (20, 5), (24, 21)]:
        x = rng.standard_normal((T, D))
        Q, _ = np.linalg.qr(rng.standard_normal((T, D, Ds)))  # random Ds-dim subspaces
        coords = np.einsum("tji,tj->ti", Q, x)  # x_s = Q coords, ||x_s|| = ||coords||
        ratio = np.linalg.norm(coords, axis=1) / np.linalg.norm(x, axis=1)
        se, se2 = ratio.std(ddof=1) / math.sqrt(T), (ratio**2).std(ddof=1) / math.sqrt(T)
        # the proof's identity for the squared ratio, and the exact mean of the ratio
        assert abs((ratio**2).mean() - Ds / D) <= 3 * se2
        assert abs(ratio.mean() - theorem_c1_ratio(D, Ds, exact=True)) <= 3 * se
        # sqrt(Ds/D) is Jensen's upper bound of the mean, not the mean, at small D
        if D == 6:
            assert theorem_c1_ratio(D, Ds) - ratio.mean() > 10 * se


def test_theorem_c1_values_and_errors():
    assert theorem_c1_ratio(1200, 1152) == pytest.approx(math.sqrt(0.96))
    assert theorem_c1_ratio(5, 5, exact=True) == 1.0 and theorem_c1_ratio(5, 0) == 0.0
    assert theorem_c1_ratio(10**6, 10**5, exact=True) == pytest.approx(math.sqrt(0.1), rel=1e-5)
    with pytest.raises(ValueError, match="'Ds'"):
        theorem_c1_ratio(5, 6)
    with pytest.raises(ValueError, match="'D'"):
        theorem_c1_ratio(0, 0)
    with pytest.raises(TypeError, match="'D'"):
        theorem_c1_ratio(5.0, 2)


# ------------------------------------------------------------------------------ pairing
def test_pairing_cosines_against_loops(rng):
    w = rng.standard_normal((7, 3, 2, 2))
    mu, idx = pairing_partners(w)
    for i in range(7):
        best = min(
            (float(np.vdot(w[i], w[j]) / np.linalg.norm(w[i]) / np.linalg.norm(w[j])), j)
            for j in range(7) if j != i
        )
        assert mu[i] == pytest.approx(best[0], abs=1e-14) and idx[i] == best[1]
    W = ConvOperator(w, (5, 5))
    np.testing.assert_allclose(pairing_cosines(W), mu)
    pair = np.stack([w[0], -2 * w[0]])
    np.testing.assert_allclose(pairing_cosines(pair), [-1.0, -1.0])


def test_pairing_cosines_bad_inputs():
    with pytest.raises(ValueError, match="K >= 2"):
        pairing_cosines(np.ones((1, 3)))
    with pytest.raises(ValueError, match="zero filter"):
        pairing_cosines(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(TypeError, match="'filters'"):
        pairing_cosines(np.array([["a"], ["b"]]))
    with pytest.raises(ValueError, match="non-finite"):
        pairing_cosines(np.array([[1.0, np.nan], [0.0, 1.0]]))


# ------------------------------------------- 'auto' on every geometry, Lanczos, scale
from test_operator import CASES as OPERATOR_CASES  # noqa: E402  (the suite's geometry list)

import modelcs.frames.spectrum as spectrum  # noqa: E402

GEOMETRIES = [((1, 1, 1), (1,), 1, "valid", 1), ((1, 1, 1, 1), (1, 1), 1, "valid", 1),
              ((6, 2, 3), (10,), 1, "valid", 1), *OPERATOR_CASES]


def _geom_op(case):
    shape, D, t, pad, g = case
    w = np.random.default_rng(3).standard_normal(shape)
    return ConvOperator(w, D, stride=t, padding=pad, groups=g)


@pytest.mark.parametrize("case", GEOMETRIES, ids=[str(i) for i in range(len(GEOMETRIES))])
@pytest.mark.parametrize("dense_max, sparse_max, banded_max, lobpcg_min", [
    (spectrum.DENSE_MAX, spectrum.SPARSE_MAX_WORK, spectrum.BANDED_MAX_FLOPS,
     spectrum.LOBPCG_MIN_CHANNELS),
    (0, spectrum.SPARSE_MAX_WORK, 0, 1),  # 'auto' -> 'sparse' (non-circular ConvOperators)
    (0, 0, math.inf, 1),                  # 'auto' -> 'banded' (zero-padded)
    (0, 0, 0, 1),                         # 'auto' -> 'lobpcg' (zero-padded, stride 1, g=1)
    (0, 0, 0, 10**9)])                    # 'auto' -> 'lanczos'
def test_auto_frame_bounds_and_extremes_on_every_geometry(case, dense_max, sparse_max,
                                                          banded_max, lobpcg_min, monkeypatch):
    monkeypatch.setattr(spectrum, "DENSE_MAX", dense_max)
    monkeypatch.setattr(spectrum, "SPARSE_MAX_WORK", sparse_max)
    monkeypatch.setattr(spectrum, "BANDED_MAX_FLOPS", banded_max)
    monkeypatch.setattr(spectrum, "LOBPCG_MIN_CHANNELS", lobpcg_min)
    W = _geom_op(case)
    A = dense(W)
    sd = np.linalg.svd(A, compute_uv=False)
    lo, hi = frame_bounds(W, rng=0, rtol=1e-6)   # one rank rule for every method
    ev = np.linalg.eigvalsh(A.T @ A)
    dlo, dhi = ev[ev > 1e-12 * ev.max()].min(), ev.max()
    assert abs(lo - dlo) <= 1e-8 * dlo and abs(hi - dhi) <= 1e-8 * dhi
    s = singular_values(W, k=1, which="both", rng=0)
    assert abs(s[0] - sd[0]) <= 1e-8 * sd[0]
    assert abs(s[-1] - sd[-1]) <= 1e-8 * sd[0]
    if dense_max:
        np.testing.assert_allclose(singular_values(W), sd, rtol=1e-9, atol=1e-12 * sd[0])


@pytest.mark.parametrize("K, M, l, D, t, pad", [
    (8, 8, (3, 3), (12, 12), 1, "valid"), (32, 3, (3, 3), (16, 16), 2, 1),
    (2, 3, 3, 12, 1, "valid"), (4, 3, 3, 10, 1, "valid")])
def test_lanczos_equals_dense_eigenvalues(K, M, l, D, t, pad):
    W = ConvOperator.random(K, M, l, D, stride=t, padding=pad, rng=11)
    dlo, dhi = _dense_bounds(dense(W))
    lo, hi = frame_bounds(W, method="lanczos", rng=1, progress=False)
    assert abs(lo - dlo) <= 1e-8 * dlo and abs(hi - dhi) <= 1e-8 * dhi


@pytest.mark.parametrize("K, M, l, D, pad", [
    (6, 4, 3, (12,), "valid"), (4, 6, 3, (12,), "valid"), (3, 5, (3, 3), (9, 9), "same"),
    (4, 4, (3, 2), (8, 7), 1), (8, 3, 5, (20,), "same"), (7, 7, (3, 3), (10, 10), "valid"),
    (4, 2, (2, 3), (6, 9), ((1, 0), (2, 1)))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("iterate", [True, False])
def test_lobpcg_equals_dense_singular_values(K, M, l, D, pad, dtype, iterate, monkeypatch):
    """Frequency-domain Gram + preconditioned LOBPCG (output and input side, with and
    without padding; ``iterate=False``: the small-size route through the Gram matrix)
    against a dense SVD, to the documented tolerance."""
    import modelcs.frames._valid_gram as valid_gram

    if iterate:
        monkeypatch.setattr(valid_gram, "DENSE_MAX", 0)
    W = ConvOperator.random(K, M, l, D, padding=pad, rng=5).astype(dtype)
    sd = np.linalg.svd(dense(W.astype(np.float64)), compute_uv=False)
    s = singular_values(W, k=1, method="lobpcg", rng=1, progress=False)
    # eigenvalues of the Gram operator to tol=1e-10 relative, down to 1e-13 * sigma_max^2
    assert abs(s[0] ** 2 - sd[0] ** 2) <= 1e-9 * sd[0] ** 2
    assert abs(s[1] ** 2 - sd[-1] ** 2) <= max(1e-9 * sd[-1] ** 2, 1e-12 * sd[0] ** 2)
    dlo, dhi = _dense_bounds(dense(W.astype(np.float64)))
    lo, hi = frame_bounds(W, method="lobpcg", rng=1)
    assert abs(lo - dlo) <= max(1e-8 * dlo, 1e-12 * dhi) and abs(hi - dhi) <= 1e-8 * dhi


@pytest.mark.parametrize("grid, inner", [
    ((15, 15), ((0, 13), (0, 13))), ((8, 7), ((1, 7), (2, 6))), ((12,), ((0, 10),)),
    ((9,), ((3, 9),)), ((6, 10), ((0, 6), (0, 10)))])
def test_support_dft_equals_numpy_fft(grid, inner):
    """The real DFT by matrix products against rfftn/irfftn with zero padding and crop
    (odd and even grids: the Nyquist bin counts once)."""
    from modelcs.frames._valid_gram import _SupportDFT

    rng = np.random.default_rng(0)
    sl = tuple(slice(a, b) for a, b in inner)
    sub = tuple(b - a for a, b in inner)
    U = rng.standard_normal((3, 2, *sub))
    T = _SupportDFT(grid, sl)
    Z = np.zeros((3, 2, *grid))
    Z[(slice(None), slice(None), *sl)] = U
    axes = tuple(range(2, 2 + len(grid)))
    ref = np.fft.rfftn(Z, axes=axes).reshape(3, 2, -1).transpose(2, 1, 0)
    np.testing.assert_allclose(T.forward(U), ref, atol=1e-12)
    np.testing.assert_allclose(T.forward(U, np.float32), ref, atol=1e-5)
    Yf = rng.standard_normal(ref.shape) + 1j * rng.standard_normal(ref.shape)
    half = (*grid[:-1], grid[-1] // 2 + 1)
    full = np.fft.irfftn(Yf.transpose(2, 1, 0).reshape(3, 2, *half), s=grid, axes=axes)
    np.testing.assert_allclose(T.inverse(Yf), full[(slice(None), slice(None), *sl)],
                               atol=1e-12)
    assert T.inverse(Yf.astype(np.complex64)).dtype == np.float64


@pytest.mark.parametrize("l, grid", [((3, 3), (15, 15)), ((2, 3), (8, 7)), ((4,), (12,)),
                                     ((3,), (9,))])
@pytest.mark.parametrize("output_side", [True, False])
def test_gram_blocks_equal_products_of_responses(l, grid, output_side):
    from modelcs.frames._valid_gram import _gram_blocks, _responses

    w = np.random.default_rng(1).standard_normal((5, 3, *l))
    H = _responses(w, grid)
    Hc = np.conj(H.transpose(0, 2, 1))
    ref = H @ Hc if output_side else Hc @ H
    np.testing.assert_allclose(_gram_blocks(w, grid, output_side), ref, atol=1e-12)
    assert _gram_blocks(w, grid, output_side, np.complex64).dtype == np.complex64


@pytest.mark.parametrize("noise", [0.0, 1e-7, 1e-5, 1e-2])
def test_lobpcg_single_precision_phase_cannot_spoil_the_result(noise, monkeypatch):
    """The cheaper operator of the first phase may be as poor as it likes: the run goes on
    with the exact one (residual near the measured error, a Ritz value that rises, or no
    progress) and stops on the exact operator's bound."""
    import modelcs.frames._valid_gram as valid_gram
    from modelcs.frames._valid_gram import ValidGram, lobpcg_smallest

    monkeypatch.setattr(valid_gram, "DENSE_MAX", 0)
    W = ConvOperator.random(4, 6, (3, 3), (12, 12), rng=3)
    vg = ValidGram(W)
    A = dense(W)
    ev = np.linalg.eigvalsh(A @ A.T if vg.output_side else A.T @ A)
    rng = np.random.default_rng(0)

    def rough(U):
        out = vg.apply(U)
        return out + noise * rng.standard_normal(out.shape) if noise else out

    th, bound, it = lobpcg_smallest(vg.apply, vg.shape, vg.preconditioner, 2 * ev[0],
                                    tol=1e-10, max_iter=3000, rng=np.random.default_rng(1),
                                    progress=False, gram_single=rough)
    assert bound <= 1e-10 * th and it > 0
    assert abs(th - ev[0]) <= 1e-9 * ev[0]
    if noise == 0:  # an exact "cheap" operator: the same run as without one
        plain = lobpcg_smallest(vg.apply, vg.shape, vg.preconditioner, 2 * ev[0],
                                tol=1e-10, max_iter=3000, rng=np.random.default_rng(1),
                                progress=False)
        assert plain[2] == it and plain[0] == th


def test_lobpcg_singular_gram_and_bad_operators():
    # 5 x 7 x 7 outputs from 3 x 9 x 9 inputs: the input-side Gram (243) has a null space
    W = ConvOperator.random(5, 3, (3, 3), (9, 9), rng=0)
    sd = np.linalg.svd(dense(W), compute_uv=False)
    assert singular_values(W, k=1, which="smallest", method="lobpcg", rng=0)[0] <= (
        1e-6 * sd[0])
    dlo, dhi = _dense_bounds(dense(W))
    lo, hi = frame_bounds(W, method="lobpcg", rng=0)
    assert abs(lo - dlo) <= 1e-8 * dlo and abs(hi - dhi) <= 1e-8 * dhi
    for bad in (ConvOperator.random(3, 2, 3, 12, stride=2, rng=0),
                ConvOperator.random(3, 2, 3, 12, padding="circular", rng=0),
                ConvOperator.random(4, 4, 3, 12, groups=2, rng=0)):
        with pytest.raises(ValueError, match="method='lobpcg' needs"):
            singular_values(bad, k=1, method="lobpcg")
    with pytest.raises(ValueError, match="k=1"):
        singular_values(ConvOperator.random(3, 2, 3, 12, rng=0), k=2, method="lobpcg")
    for m in ("lobpcg", "fft"):  # a matrix is named by type and shape, not printed
        with pytest.raises(ValueError, match=r"got ndarray of shape \(30, 50\)$"):
            singular_values(np.ones((30, 50)), k=1, method=m)


@pytest.mark.skipif(not os.environ.get("MODELCS_SLOW"), reason="VGG size: set MODELCS_SLOW=1")
@pytest.mark.slow
def test_vgg_conv52_valid_smallest_singular_value():
    w = np.random.default_rng(0).standard_normal((512, 512, 3, 3)) / np.sqrt(512 * 9)
    s = singular_values(ConvOperator(w, (15, 15)), k=1, which="smallest", rng=0)
    # independent reference: plain Lanczos (one start, tol 1e-9, 2121 steps, about 200 s)
    # gave 0.058295897156; ARPACK eigsh gave 0.0583 (3 digits, 1076 s)
    assert abs(s[0] - 0.058295897156) <= 1e-6 * 0.058295897156


@pytest.mark.parametrize("scale", [1e-200, 1e-120, 1e120, 1e160, 1.0])
@pytest.mark.parametrize("pad", ["valid", "circular"])
def test_spectra_at_extreme_scales(scale, pad):
    W = ConvOperator.random(3, 2, 3, 9, padding=pad, rng=2)
    ref_lo, ref_hi = frame_bounds(W)
    Ws = W.with_filters(W.filters * scale)
    sd = np.linalg.svd(dense(W), compute_uv=False)
    for method in ("auto", "lanczos", "iterative", "lobpcg", "dense"):
        if method == "iterative" and pad == "valid":
            continue      # ARPACK needs 2k < n on this small Gram
        if method == "lobpcg" and pad == "circular":
            continue      # zero padding only
        s = singular_values(Ws, k=1, which="both", method=method, rng=0)
        np.testing.assert_allclose(s, sd[[0, -1]] * scale, rtol=1e-7)
        if 1e-150 < scale < 1e150:
            lo, hi = frame_bounds(Ws, method=method, rng=0, k=2)
            assert lo == pytest.approx(ref_lo * scale**2, rel=1e-7)
            assert hi == pytest.approx(ref_hi * scale**2, rel=1e-7)
        else:   # sigma^2 is not a float64: said so, naming no parameter the user did not pass
            with pytest.raises(ValueError, match="outside the float64 range") as e:
                frame_bounds(Ws, method=method, rng=0, k=2)
            assert "parameter" not in str(e.value)
    A = dense(W) * scale
    assert singular_values(A)[0] == pytest.approx(sd[0] * scale, rel=1e-10)


@pytest.mark.parametrize("method", ["auto", "lanczos", "iterative", "lobpcg", "dense"])
def test_all_zero_bank_is_a_clear_error_or_zeros(method):
    W = ConvOperator(np.zeros((3, 2, 3)), 9)
    with pytest.raises(ValueError, match="identically zero"):
        frame_bounds(W, method=method)
    np.testing.assert_array_equal(singular_values(W, k=1, method=method), [0.0, 0.0])


@pytest.mark.parametrize("scale", [1e160, 1e-170, 1.0])
def test_pinv_reconstruct_at_extreme_scales(scale, rng):
    W = ConvOperator.random(2, 3, 3, 12, rng=5)
    A = dense(W)
    x = rng.standard_normal((2, *W.in_shape))
    h = W @ x
    ref = (np.linalg.pinv(A) @ h.reshape(2, -1).T).T.reshape(x.shape)
    xr = pinv_reconstruct(W, h * scale).x
    assert np.isfinite(xr).all() and np.abs(xr).max() > 0      # never zeros in silence
    np.testing.assert_allclose(xr / scale, ref, rtol=1e-8, atol=1e-9 * np.abs(ref).max())
    sup = np.abs(h) > 0.3
    xs = pinv_reconstruct(W, h * scale, support=sup).x
    As = A[sup[0].ravel()]
    refs = np.linalg.pinv(As) @ h[0].ravel()[sup[0].ravel()]
    np.testing.assert_allclose(xs[0].ravel() / scale, refs, rtol=1e-7, atol=1e-9)


def test_pinv_reconstruct_float32_data_converges_like_float64(rng):
    W = ConvOperator.random(8, 3, (3, 3), (12, 12), stride=2, padding=1, rng=4)
    x = rng.standard_normal(W.in_shape)
    p = crelu_pool(W.astype(np.float32), x.astype(np.float32), pool=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no ConvergenceWarning
        x32 = pinv_reconstruct(W.astype(np.float32), p.code, support=p.support, tol=1e-7).x
    assert x32.dtype == np.float32
    A = dense(W)[p.support.ravel()]
    ref = np.linalg.pinv(A) @ p.code.astype(np.float64).ravel()[p.support.ravel()]
    # the float32 answer is the float64 solution rounded: error ~ float32 eps, not 1e-3
    assert np.abs(x32.ravel() - ref).max() <= 1e-5 * np.abs(ref).max()


def test_pinv_result_fields_follow_the_shape_rules(rng):
    from modelcs import PinvResult, RecoveryResult

    W = ConvOperator.random(3, 2, (3, 3), (8, 7), rng=9)
    A = dense(W)
    x = rng.standard_normal((4, *W.in_shape))
    p = crelu_pool(W, x, pool=2)
    res = pinv_reconstruct(W, p.code, support=p.support)
    assert isinstance(res, PinvResult) and isinstance(res, RecoveryResult)
    assert res.x is res.z and res.x.shape == (4, *W.in_shape)
    assert res.n_iter.shape == res.converged.shape == res.diverged.shape == (4,)
    assert res.residual_norm.shape == (4,) and res.residual_norms.shape == (2, 4)
    assert res.converged.all() and not res.diverged.any() and (res.n_iter > 0).all()
    for b in range(4):
        S = p.support[b].ravel()
        h = p.code[b].ravel()[S]
        direct = np.linalg.norm(h - A[S] @ res.x[b].ravel())
        assert res.residual_norm[b] == pytest.approx(direct, rel=1e-6, abs=1e-9)
        assert res.residual_norms[0, b] == pytest.approx(np.linalg.norm(h))
    np.testing.assert_array_equal(res.residual_norms[1], res.residual_norm)
    # least squares with a nonzero residual: a single item gives scalars
    h = rng.standard_normal(W.out_shape)
    one = pinv_reconstruct(W, h)
    assert one.x.shape == W.in_shape
    assert isinstance(one.n_iter, int) and isinstance(one.converged, bool)
    assert isinstance(one.diverged, bool) and isinstance(one.residual_norm, float)
    assert one.residual_norms.shape == (2,)
    r_ls = np.linalg.norm(h.ravel() - A @ np.linalg.pinv(A) @ h.ravel())
    assert r_ls > 0.1 and one.residual_norm == pytest.approx(r_ls, rel=1e-8)
    text = repr(res)
    assert len(text.splitlines()) <= 10 and "PinvResult" in text
    assert res == res and res != pinv_reconstruct(W, p.code, support=p.support)


def test_pinv_callback_sees_every_iteration_and_can_stop(rng):
    W = ConvOperator.random(3, 2, (3, 3), (8, 7), rng=9)
    A = dense(W)
    x = rng.standard_normal((3, *W.in_shape))
    p = crelu_pool(W, x, pool=2)
    seen = []

    def watch(info):
        assert info["x"] is info["z"]
        for j, b in enumerate(info["active"]):
            S = p.support[b].ravel()
            direct = np.linalg.norm(p.code[b].ravel()[S] - A[S] @ info["x"][j].ravel())
            # LSQR's running residual estimate is that of the reported iterate
            assert info["residual_norms"][j] == pytest.approx(direct, rel=1e-6, abs=1e-9)
        seen.append((info["iteration"], tuple(info["active"])))

    full = pinv_reconstruct(W, p.code, support=p.support, callback=watch)
    plain = pinv_reconstruct(W, p.code, support=p.support, method="lsqr")
    np.testing.assert_array_equal(full.x, plain.x)
    assert [s[0] for s in seen] == list(range(1, int(full.n_iter.max()) + 1))
    assert seen[0][1] == (0, 1, 2)
    for b in range(3):  # each item is reported exactly for the iterations it ran
        assert sum(b in s[1] for s in seen) == full.n_iter[b]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stop asked for by the callback is no warning
        stopped = pinv_reconstruct(W, p.code, support=p.support,
                                   callback=lambda info: info["iteration"] >= 2)
    assert (stopped.n_iter == 2).all() and not stopped.converged.any()
    assert (stopped.residual_norm > full.residual_norm).all()
    one = pinv_reconstruct(W, p.code[0], support=p.support[0],
                           callback=lambda info: True)
    assert one.n_iter == 1 and one.converged is False
    with pytest.raises(TypeError, match="callback"):
        pinv_reconstruct(W, p.code, callback=1)
