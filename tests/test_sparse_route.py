"""The sparse-matrix route for few-channel conv layers: to_sparse, method='sparse' spectra,
pinv_reconstruct(method='direct').

References are independent: the explicit-loop dense matrix of tests/reference.py, dense
eigvalsh / SVD / pinv.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import dense
from test_operator import CASES

from modelcs import (
    ConvOperator,
    crelu_pool,
    frame_bounds,
    pinv_reconstruct,
    singular_values,
)


# --------------------------------------------------------------------------- to_sparse
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_to_sparse_equals_the_dense_matrix(case, fmt, dtype, rng):
    wshape, D, t, pad, g = case
    w = rng.standard_normal(wshape).astype(dtype)
    W = ConvOperator(w, D, stride=t, padding=pad, groups=g)
    S = W.to_sparse(fmt)
    assert S.format == fmt and S.dtype == dtype and S.shape == W.shape
    A = dense(W)
    np.testing.assert_array_equal(S.toarray(), A.astype(dtype))
    assert S.nnz == np.count_nonzero(A)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_to_sparse_property(data):
    d = data.draw(st.sampled_from([1, 2]))
    g = data.draw(st.sampled_from([1, 2]))
    K = g * data.draw(st.integers(1, 3))
    Mg = data.draw(st.integers(1, 3))
    l = tuple(data.draw(st.integers(1, 4)) for _ in range(d))
    D = tuple(la + data.draw(st.integers(0, 6)) for la in l)
    t = tuple(data.draw(st.integers(1, 3)) for _ in range(d))
    pad = data.draw(st.sampled_from(["valid", "same", "circular", 1, 2]))
    if pad == "circular":
        t = (1,) * d
    w = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((K, Mg, *l))
    W = ConvOperator(w, D, stride=t, padding=pad, groups=g)
    np.testing.assert_array_equal(W.to_sparse().toarray(), dense(W))   # exact loops


def test_to_sparse_rows_past_8192_are_right():
    # NumPy 2.4's unravel_index on (1, N, 1, 1) inputs is wrong past index 8192
    W = ConvOperator.random(2, 1, (3, 3), (224, 224), stride=2, padding=1, rng=0)
    x = np.random.default_rng(1).standard_normal(W.in_shape)
    np.testing.assert_allclose(W.to_sparse() @ x.ravel(), (W @ x).ravel(), atol=1e-12)


def test_to_sparse_bad_format():
    W = ConvOperator.random(2, 1, 3, 8, rng=0)
    with pytest.raises(ValueError, match="'format'"):
        W.to_sparse("dia")


# ---------------------------------------------------------------- method='sparse'
def _bounds(A, rtol=1e-6):
    ev = np.linalg.eigvalsh(A.T @ A) if A.shape[1] <= A.shape[0] else np.linalg.eigvalsh(A @ A.T)
    return ev[ev > rtol**2 * ev.max()].min(), ev.max()


SPECTRUM_CASES = [
    # K, M, l, D, t, pad, groups  (Gram sides > 200: Lanczos; <= 200: dense eigvalsh)
    (16, 3, 4, 101, 3, "valid", 1),        # 1 uncovered sample: null space of dim 3
    (9, 2, (2, 2), (21, 21), 2, "valid", 1),   # null space of dim 82
    (8, 3, (3, 3), (12, 12), 2, 1, 1),     # MobileNet-like, zero-padded, stride 2
    (4, 3, (3, 3), (14, 13), 1, "same", 1),
    (2, 3, (3, 3), (16, 16), 1, "valid", 1),   # wide: the W W^T side
    (6, 4, 5, 90, 2, "same", 2),
    (4, 2, 3, 30, 1, ((0, 2),), 1),        # small Gram: dense eigvalsh of it
]


@pytest.mark.parametrize("case", SPECTRUM_CASES, ids=[str(i) for i in range(len(SPECTRUM_CASES))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_frame_bounds_equal_dense_eigenvalues(case, dtype):
    K, M, l, D, t, pad, g = case
    W = ConvOperator.random(K, M, l, D, stride=t, padding=pad, groups=g, rng=3).astype(dtype)
    A = dense(W).astype(np.float64)
    dlo, dhi = _bounds(A)
    lo, hi = frame_bounds(W, method="sparse", rng=0, progress=False)
    assert abs(lo - dlo) <= 1e-8 * dlo and abs(hi - dhi) <= 1e-8 * dhi
    s = singular_values(W, k=1, which="both", method="sparse", rng=0)
    sd = np.linalg.svd(A, compute_uv=False)
    assert abs(s[0] - sd[0]) <= 1e-8 * sd[0]
    assert abs(s[1] - sd[-1]) <= 1e-7 * sd[0]      # sd[-1] may be 0 (a null space)


def test_sparse_is_what_auto_picks_for_few_channels_and_not_for_many(monkeypatch):
    import modelcs.frames.spectrum as spectrum

    W = ConvOperator.random(32, 3, (3, 3), (40, 40), stride=2, padding=1, rng=0)
    assert spectrum._auto_method(W, 1) == "sparse"
    big = ConvOperator(np.zeros((64, 64, 3, 3)), (15, 15))   # 64 x 14,400 > SPARSE_MAX_WORK
    assert spectrum._auto_method(big, 1) not in ("sparse", "dense")
    monkeypatch.setattr(spectrum, "SPARSE_MAX_WORK", 0)
    assert spectrum._auto_method(W, 1) == "banded"
    monkeypatch.setattr(spectrum, "BANDED_MAX_FLOPS", 0)
    assert spectrum._auto_method(W, 1) == "lanczos"


def test_sparse_method_bad_inputs():
    A = np.random.default_rng(0).standard_normal((5, 4))
    with pytest.raises(ValueError, match="method='sparse' needs a ConvOperator"):
        frame_bounds(A, method="sparse")
    W = ConvOperator.random(4, 3, 3, 20, rng=0)
    with pytest.raises(ValueError, match="k=1"):
        singular_values(W, k=2, method="sparse")
    with pytest.raises(ValueError, match="identically zero"):
        frame_bounds(W.with_filters(np.zeros((4, 3, 3))), method="sparse")


# ------------------------------------------------------------------ pinv 'direct'
def _pinv_ref(A, h, S):
    return np.linalg.pinv(A[S]) @ h[S]


@pytest.mark.parametrize("K, M, l, D, t, pad", [
    (8, 3, (3, 3), (12, 12), 2, 1),    # CReLU + pool: wide restricted systems, rank deficient
    (6, 2, 3, 40, 1, "valid"),         # 1-D
    (3, 2, (3, 3), (8, 7), 1, "valid"),
    (12, 2, 3, 20, 1, "same"),         # tall
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pinv_direct_equals_dense_pinv_on_crelu_pool(K, M, l, D, t, pad, dtype, rng):
    W = ConvOperator.random(K, M, l, D, stride=t, padding=pad, rng=4).astype(dtype)
    A = dense(W).astype(np.float64)
    x = rng.standard_normal((3, *W.in_shape)).astype(dtype)
    p = crelu_pool(W, x, pool=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = pinv_reconstruct(W, p.code, support=p.support, method="direct", tol=1e-7)
    assert res.x.dtype == dtype and res.converged.all()
    for b in range(3):
        S = p.support[b].ravel()
        ref = _pinv_ref(A, p.code[b].astype(np.float64).ravel(), S)
        tol = 1e-5 if dtype == np.float32 else 1e-9
        assert np.abs(res.x[b].ravel() - ref).max() <= tol * np.abs(ref).max()
        hS = p.code[b].astype(np.float64).ravel()[S]
        direct = np.linalg.norm(hS - A[S] @ res.x[b].astype(np.float64).ravel())
        if dtype == np.float64:    # the reported residual is that of the float64 solution
            assert res.residual_norm[b] == pytest.approx(direct, rel=1e-4, abs=1e-9)
        assert res.residual_norm[b] <= 1e-7 * np.linalg.norm(hS)
        assert direct <= (1e-7 if dtype == np.float64 else 1e-6) * np.linalg.norm(hS)


def test_pinv_direct_full_system_and_least_squares(rng):
    # tall, full column rank: the column side; a random h is a true least-squares problem
    W = ConvOperator.random(12, 2, 3, 20, padding="same", rng=2)
    A = dense(W)
    h = rng.standard_normal((2, *W.out_shape))
    res = pinv_reconstruct(W, h, method="direct")
    ref = (np.linalg.pinv(A) @ h.reshape(2, -1).T).T
    np.testing.assert_allclose(res.x.reshape(2, -1), ref, rtol=1e-9, atol=1e-10)
    assert res.converged.all()
    # wide, rank deficient, inconsistent: the direct route hands the item to LSQR
    W = ConvOperator.random(3, 2, (3, 3), (8, 7), rng=9)
    A = dense(W)
    assert np.linalg.matrix_rank(A) < A.shape[0]
    h = rng.standard_normal(W.out_shape)
    one = pinv_reconstruct(W, h, method="direct")
    np.testing.assert_allclose(one.x.ravel(), np.linalg.pinv(A) @ h.ravel(), atol=1e-8)


def test_pinv_direct_shared_and_empty_supports(rng):
    W = ConvOperator.random(4, 2, (3, 3), (9, 9), padding=1, rng=1)
    A = dense(W)
    x = rng.standard_normal((3, *W.in_shape))
    h = W @ x
    sup = np.abs(h[0]) > 0.5                     # one support for the batch
    res = pinv_reconstruct(W, h, support=sup, method="direct")
    for b in range(3):
        ref = _pinv_ref(A, h[b].ravel(), sup.ravel())
        np.testing.assert_allclose(res.x[b].ravel(), ref, atol=1e-9 * np.abs(ref).max())
    none = pinv_reconstruct(W, h[0], support=np.zeros(W.out_shape, dtype=bool),
                            method="direct")
    assert (none.x == 0).all() and none.converged


def test_pinv_method_choice_and_bad_inputs(rng):
    W = ConvOperator.random(4, 2, 3, 20, rng=0)
    h = W @ rng.standard_normal(W.in_shape)
    with pytest.raises(ValueError, match="'method'"):
        pinv_reconstruct(W, h, method="cholesky")
    with pytest.raises(ValueError, match="'callback'"):
        pinv_reconstruct(W, h, method="direct", callback=lambda info: None)
    with pytest.raises(ValueError, match="'max_iter'"):
        pinv_reconstruct(W, h, method="direct", max_iter=0)
    a = pinv_reconstruct(W, h, method="direct")
    b = pinv_reconstruct(W, h, method="lsqr")
    np.testing.assert_allclose(a.x, b.x, atol=1e-9)
    assert a.n_iter <= 3 < b.n_iter
