"""ConvOperator against an independent dense brute force, adjoint laws, conversions, errors."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import MatvecOnly, dense_conv_matrix

from modelcs import ConvOperator, LinearOperator, dottest, vstack

HAS_TORCH = importlib.util.find_spec("torch") is not None
ENGINES = ["gemm", "fft", "sparse"] + (["torch"] if HAS_TORCH else [])
TOL = {np.float64: 1e-12, np.float32: 1e-5}

CASES = [
    # (filters shape, input spatial, stride, padding, groups)
    ((4, 3, 5), (17,), 1, "valid", 1),
    ((4, 3, 5), (17,), 2, "valid", 1),  # (D - l) % t = 0
    ((4, 3, 4), (17,), 3, "valid", 1),  # odd remainder: 1 trailing sample uncovered
    ((6, 2, 3), (11,), 2, "same", 2),
    ((5, 3, 4), (9,), 1, "circular", 1),
    ((5, 3, 3), (10,), 3, "circular", 1),
    ((4, 3, 3), (8,), 2, 2, 1),
    ((4, 2, 3), (8,), 1, ((0, 2),), 2),
    ((3, 2, 3, 2), (7, 6), 1, "valid", 1),
    ((3, 2, 3, 3), (9, 8), (2, 3), "valid", 1),  # remainders (0, 2)
    ((4, 1, 3, 3), (8, 7), 2, "same", 4),  # depthwise
    ((3, 2, 2, 3), (6, 7), 1, "circular", 1),
    ((4, 3, 3, 3), (7, 7), 3, "circular", 1),
    ((6, 2, 3, 3), (6, 5), (1, 2), (1, 2), 2),
    ((3, 2, 3, 3), (6, 6), 2, ((1, 0), (2, 1)), 1),
]


def _case_ids(c):
    return f"w{c[0]}-D{c[1]}-t{c[2]}-p{c[3]}-g{c[4]}".replace(" ", "")


@pytest.mark.parametrize("case", CASES, ids=_case_ids)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_adjoint_match_bruteforce(case, engine, dtype, rng):
    wshape, D, t, pad, g = case
    w = rng.standard_normal(wshape)
    A, out_shape = dense_conv_matrix(w, D, t, pad, g)
    W = ConvOperator(w.astype(dtype), D, stride=t, padding=pad, groups=g, engine=engine)
    assert W.out_shape == out_shape
    assert W.shape == A.shape
    assert W.dtype == dtype
    M = wshape[1] * g
    tol = TOL[dtype]
    for batch in (None, 3):
        shp = (M, *D) if batch is None else (batch, M, *D)
        x = rng.standard_normal(shp).astype(dtype)
        h = W @ x
        assert h.dtype == dtype
        assert h.shape == (out_shape if batch is None else (batch, *out_shape))
        ref = (x.reshape(-1, A.shape[1]).astype(np.float64) @ A.T).reshape(h.shape)
        assert np.linalg.norm(h - ref) <= tol * np.linalg.norm(ref)
        z = rng.standard_normal(h.shape).astype(dtype)
        xa = W.T @ z
        assert xa.dtype == dtype
        assert xa.shape == x.shape
        ref = (z.reshape(-1, A.shape[0]).astype(np.float64) @ A).reshape(x.shape)
        assert np.linalg.norm(xa - ref) <= tol * np.linalg.norm(ref)
    # flat vectors give flat results
    x = rng.standard_normal(A.shape[1]).astype(dtype)
    assert (W @ x).shape == (A.shape[0],)
    assert np.linalg.norm(W @ x - A @ x) <= tol * np.linalg.norm(A @ x)


@pytest.mark.parametrize("case", CASES, ids=_case_ids)
def test_dense_and_sparse_match_bruteforce(case, rng):
    wshape, D, t, pad, g = case
    w = rng.standard_normal(wshape)
    A, _ = dense_conv_matrix(w, D, t, pad, g)
    W = ConvOperator(w, D, stride=t, padding=pad, groups=g)
    np.testing.assert_allclose(W.to_dense(), A, rtol=0, atol=1e-14)
    S = W.to_sparse()
    assert S.nnz == np.count_nonzero(A)
    np.testing.assert_array_equal(S.toarray(), A)


@pytest.mark.parametrize("case", CASES, ids=_case_ids)
def test_sparse_code_adjoint_matches_bruteforce(case, rng):
    wshape, D, t, pad, g = case
    w = rng.standard_normal(wshape)
    A, out_shape = dense_conv_matrix(w, D, t, pad, g)
    W = ConvOperator(w, D, stride=t, padding=pad, groups=g, engine="sparse")
    z = np.zeros((40, *out_shape))
    flat = z.reshape(40, -1)
    for b in range(40):  # one or two nonzeros per code: the shifted-filter path
        flat[b, rng.choice(flat.shape[1], 1 + b % 2, replace=False)] = rng.standard_normal()
    ref = (flat @ A).reshape(40, *W.in_shape)
    np.testing.assert_allclose(W.T @ z, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(W.T @ z.astype(np.float32), ref, rtol=1e-5, atol=1e-5)


def test_auto_takes_the_sparse_path_only_for_sparse_codes(rng):
    W = ConvOperator.random(8, 3, 5, 40, rng=0)
    z = np.zeros((4, *W.out_shape))
    z[:, 2, 7] = 1.0  # 1 nonzero in 288 entries per code
    assert W._sparse_ok(z)
    assert not W._sparse_ok(rng.standard_normal(z.shape))
    np.testing.assert_allclose(W.T @ z, W.with_engine("gemm").T @ z, atol=1e-13)


def test_sparse_path_choice_on_large_codes(rng):
    # above 2**16 entries a strided sample rejects dense codes first; sparse codes
    # (model-sparse samples) and dense ones must still be told apart correctly
    from modelcs import ModelSparse

    W = ConvOperator.random(96, 32, 5, 32, rng=0)
    Z = ModelSparse(10).sample(W.out_shape, 100, rng=1)
    assert Z.size >= 1 << 16
    assert W._sparse_ok(Z)
    dense = rng.standard_normal(Z.shape)
    assert not W._sparse_ok(dense)
    half = dense * (rng.random(Z.shape) < 0.5)
    assert not W._sparse_ok(half)
    np.testing.assert_allclose(W.T @ Z, W.with_engine("gemm").T @ Z, atol=1e-12)


def test_uncovered_trailing_samples():
    W = ConvOperator(np.ones((1, 1, 4)), 17, stride=3)
    assert W.block_shape == (5,) and W.uncovered == (1,)
    A = W.to_dense()
    assert np.all(A[:, -1] == 0) and np.all(A[:, :-1].sum(axis=0) > 0)
    assert ConvOperator(np.ones((1, 1, 5)), 17, stride=3).uncovered == (0,)


@settings(max_examples=40, deadline=None)
@given(
    d=st.sampled_from([1, 2]),
    K=st.integers(1, 5),
    Mg=st.integers(1, 3),
    g=st.integers(1, 2),
    l=st.integers(1, 4),
    extra=st.integers(0, 6),
    t=st.integers(1, 3),
    pad=st.sampled_from(["valid", "same", "circular", 1]),
    batch=st.sampled_from([None, 1, 2]),
    dtype=st.sampled_from([np.float32, np.float64]),
    engine=st.sampled_from(["gemm", "fft"]),
    seed=st.integers(0, 2**31),
)
def test_adjoint_dot_test_hypothesis(d, K, Mg, g, l, extra, t, pad, batch, dtype, engine, seed):
    rng = np.random.default_rng(seed)
    D = (l + extra,) * d
    w = rng.standard_normal((K * g, Mg, *(l,) * d)).astype(dtype)
    W = ConvOperator(w, D, stride=t, padding=pad, groups=g, engine=engine)
    A = W.with_engine("gemm").to_dense()
    # shapes where every shift sees only padding give the zero operator: the relative dot
    # test is meaningless there (FFT round-off ~1e-10 against exact 0); check it is ~0 instead
    if not np.any(A):
        x = rng.standard_normal(W.in_shape).astype(dtype)
        assert np.abs(W @ x).max() <= 10 * TOL[dtype] * np.abs(x).max()
        return
    assert dottest(W, batch=batch, rng=seed) <= TOL[dtype]
    assert dottest(W.T, batch=batch, rng=seed + 1) <= TOL[dtype]


def test_engines_agree_on_paper_sizes(rng):
    W = ConvOperator.random(96, 32, 5, 32, rng=1)
    x = rng.standard_normal((4, 32, 32))
    z = rng.standard_normal((4, 96, 28))
    ref_f, ref_a = W.with_engine("gemm") @ x, W.with_engine("gemm").T @ z
    for eng in ENGINES[1:]:
        V = W.with_engine(eng)
        np.testing.assert_allclose(V @ x, ref_f, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(V.T @ z, ref_a, rtol=1e-11, atol=1e-12)


def test_transpose_views_and_shapes():
    W = ConvOperator.random(6, 4, (3, 3), (9, 10), stride=2, rng=0)
    assert W.T.T is W
    assert W.H.shape == W.T.shape == (W.shape[1], W.shape[0])
    assert W.T.in_shape == W.out_shape and W.T.out_shape == W.in_shape
    assert W.n_blocks == 6 and W.block_shape == (4, 4)
    assert W.filters.shape == (6, 4, 3, 3)
    assert W.stride == (2, 2) and W.padding == "valid"


def test_composition_scaling_sum_and_stack(rng):
    W = ConvOperator.random(5, 3, 3, 12, rng=2)
    V = ConvOperator.random(2, 5, 2, 10, rng=3)
    A = W.to_dense()
    Bm = V.to_dense()
    ops = {
        "V@W": (V @ W, Bm @ A),
        "W.T@W": (W.T @ W, A.T @ A),
        "2.5*W": (2.5 * W, 2.5 * A),
        "W*-1": (W * -1, -A),
        "-W": (-W, -A),
        "W+W": (W + W, 2 * A),
        "W-2W": (W - 2 * W, -A),
        "stack": (vstack([W, -W]), np.vstack([A, -A])),
    }
    for name, (op, dense) in ops.items():
        assert isinstance(op, LinearOperator), name
        np.testing.assert_allclose(op.to_dense(), dense, atol=1e-13, err_msg=name)
        x = rng.standard_normal(op.in_shape)
        np.testing.assert_allclose((op @ x).ravel(), dense @ x.ravel(), atol=1e-12)
        y = rng.standard_normal(op.out_shape)
        np.testing.assert_allclose((op.T @ y).ravel(), dense.T @ y.ravel(), atol=1e-12)
        dottest(op, batch=2, rng=0)
    P = vstack([W, -W])
    assert P.out_shape == (10, 10)  # CReLU pair: channels concatenated
    mixed = vstack([W, W.T @ W])  # different output shapes: flattened
    assert mixed.out_shape == (W.shape[0] + W.shape[1],)
    dottest(mixed, rng=1)


def test_aslinearoperator_in_lsqr(rng):
    W = ConvOperator.random(8, 2, 5, 30, rng=4)  # tall: 8*26 x 60
    x = rng.standard_normal(W.in_shape)
    h = W @ x
    L = W.aslinearoperator()
    assert L.shape == W.shape
    sol = spla.lsqr(L, h.ravel(), atol=1e-14, btol=1e-14, iter_lim=2000)[0]
    np.testing.assert_allclose(sol, x.ravel(), rtol=1e-8, atol=1e-9)
    X = rng.standard_normal((W.shape[1], 3))
    np.testing.assert_allclose(L @ X, W.to_dense() @ X, atol=1e-12)
    Y = rng.standard_normal((W.shape[0], 2))
    np.testing.assert_allclose(L.H @ Y, W.to_dense().T @ Y, atol=1e-12)


def test_mixed_dtype_rule(rng):
    W32 = ConvOperator.random(3, 2, 3, 9, rng=0, dtype=np.float32)
    W64 = W32.astype(np.float64)
    x64 = rng.standard_normal((2, 9))
    assert (W32 @ x64).dtype == np.float64  # promoted, computed in float64
    np.testing.assert_allclose(W32 @ x64, W64 @ x64, rtol=1e-12)
    assert (W64 @ x64.astype(np.float32)).dtype == np.float64
    assert (W32 @ x64.astype(np.float32)).dtype == np.float32
    assert (W32 @ np.ones((2, 9), dtype=np.int64)).dtype == np.float32


def test_random_scaling_and_normalized():
    W = ConvOperator.random(200, 16, 5, 10, rng=0)
    var = float(np.var(W.filters))
    assert abs(var - 1 / (16 * 5)) < 0.1 / (16 * 5)
    Wn = W.normalized()
    rows = np.linalg.norm(Wn.to_dense(), axis=1)
    np.testing.assert_allclose(rows, 1.0, rtol=1e-12)
    W2 = ConvOperator.random(4, 3, (3, 2), (6, 6), rng=1, dtype=np.float32, normalized=True)
    assert W2.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(W2.filters.reshape(4, -1), axis=1), 1, rtol=1e-6)
    a = ConvOperator.random(4, 3, 3, 9, rng=7).filters
    b = ConvOperator.random(4, 3, 3, 9, rng=np.random.default_rng(7)).filters
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------- torch
def test_grouped_and_padded_agree_with_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for d, conv in ((1, F.conv1d), (2, F.conv2d)):
        for g, pad, t in ((1, 2, 1), (2, 1, 2), (4, 0, 3), (4, 2, 2)):
            w = rng.standard_normal((8, 8 // g, *(3,) * d)).astype(np.float32)
            D = (13,) * d
            x = rng.standard_normal((2, 8, *D)).astype(np.float32)
            W = ConvOperator(w, D, stride=t, padding=pad, groups=g)
            ref = conv(torch.from_numpy(x), torch.from_numpy(w), stride=t, padding=pad, groups=g)
            np.testing.assert_allclose(W @ x, ref.numpy(), rtol=1e-5, atol=1e-5)
            xt = torch.from_numpy(x).requires_grad_(True)
            out = conv(xt, torch.from_numpy(w), stride=t, padding=pad, groups=g)
            z = rng.standard_normal(out.shape).astype(np.float32)
            out.backward(torch.from_numpy(z))  # the gradient is the adjoint
            np.testing.assert_allclose(W.T @ z, xt.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_same_and_circular_agree_with_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    w = rng.standard_normal((5, 3, 4, 3))
    x = rng.standard_normal((2, 3, 9, 8))
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same").numpy()
    np.testing.assert_allclose(ConvOperator(w, (9, 8), padding="same") @ x, ref, atol=1e-12)
    xw = F.pad(torch.from_numpy(x), (0, 2, 0, 3), mode="circular")  # wrap at the end
    ref = F.conv2d(xw, torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(ConvOperator(w, (9, 8), padding="circular") @ x, ref, atol=1e-12)


# ---------------------------------------------------------------- bad input
def test_error_wrong_channel_count():
    W = ConvOperator.random(4, 3, 3, 10, rng=0)
    with pytest.raises(ValueError, match=r"parameter 'x' has shape \(2, 10\).*expected \(3, 10\)"):
        W @ np.zeros((2, 10))


def test_error_wrong_spatial_shape_and_ndim():
    W = ConvOperator.random(4, 3, (3, 3), (8, 8), rng=0)
    with pytest.raises(ValueError, match=r"'x' has shape \(3, 8, 7\)"):
        W @ np.zeros((3, 8, 7))
    with pytest.raises(ValueError, match=r"'x' has shape \(1, 1, 3, 8, 8\)"):
        W @ np.zeros((1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="filters"):
        ConvOperator(np.zeros((3, 3)), 8)
    with pytest.raises(ValueError, match="input_shape"):
        ConvOperator(np.ones((2, 1, 3, 3)), 8)


def test_error_kernel_larger_than_input():
    with pytest.raises(ValueError, match=r"kernel size \(5,\) is larger than the padded input"):
        ConvOperator(np.ones((2, 1, 5)), 4)
    with pytest.raises(ValueError, match="circular padding needs l <= D"):
        ConvOperator(np.ones((2, 1, 5)), 4, padding="circular")
    ConvOperator(np.ones((2, 1, 5)), 4, padding=1)  # fits once padded


def test_error_stride():
    with pytest.raises(ValueError, match=r"parameter 'stride' must have entries >= 1; got \(0,\)"):
        ConvOperator(np.ones((2, 1, 3)), 8, stride=0)
    with pytest.raises(TypeError, match="parameter 'stride'"):
        ConvOperator(np.ones((2, 1, 3)), 8, stride=1.5)
    with pytest.raises(TypeError, match="parameter 'stride'"):
        ConvOperator(np.ones((2, 1, 3, 3)), (8, 8), stride=(1, 2, 3))


def test_error_padding():
    with pytest.raises(ValueError, match="parameter 'padding' must be one of"):
        ConvOperator(np.ones((2, 1, 3)), 8, padding="reflect")
    with pytest.raises(ValueError, match="parameter 'padding'"):
        ConvOperator(np.ones((2, 1, 3)), 8, padding=-1)
    with pytest.raises(ValueError, match="parameter 'padding'"):
        ConvOperator(np.ones((2, 1, 3, 3)), (8, 8), padding=(1, 2, 3))


def test_error_groups():
    with pytest.raises(ValueError, match=r"'groups'=2 must divide the number of filters K=3"):
        ConvOperator(np.ones((3, 1, 3)), 8, groups=2)
    with pytest.raises(ValueError, match="parameter 'groups'"):
        ConvOperator(np.ones((3, 1, 3)), 8, groups=0)
    with pytest.raises(ValueError, match=r"'input_shape' has 3 channels.*expect M=2"):
        ConvOperator(np.ones((4, 1, 3)), (3, 8), groups=2)
    with pytest.raises(ValueError, match="groups"):
        ConvOperator.random(4, 3, 3, 8, groups=2)


def test_error_code_of_wrong_shape_for_adjoint():
    W = ConvOperator.random(4, 3, 3, 10, rng=0)
    with pytest.raises(ValueError, match=r"ConvOperator.T: parameter 'z \(adjoint input\)'"):
        W.T @ np.zeros((4, 9))
    with pytest.raises(ValueError, match=r"expected \(4, 8\)"):
        W.T @ np.zeros((5, 8))


def test_error_non_finite_and_dtypes():
    W = ConvOperator.random(4, 3, 3, 10, rng=0)
    x = np.zeros((3, 10))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"parameter 'x' contains 1 non-finite"):
        W @ x
    z = np.zeros((4, 8))
    z[0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        W.T @ z
    with pytest.raises(TypeError, match="complex"):
        W @ np.zeros((3, 10), dtype=complex)
    with pytest.raises(ValueError, match="parameter 'filters' contains"):
        ConvOperator(np.full((2, 1, 3), np.inf), 8)
    with pytest.raises(TypeError, match="parameter 'dtype'"):
        ConvOperator(np.ones((2, 1, 3)), 8, dtype=np.float16)
    with pytest.raises(ValueError, match="parameter 'engine'"):
        ConvOperator(np.ones((2, 1, 3)), 8, engine="magic")


def test_error_composition_shapes():
    W = ConvOperator.random(4, 3, 3, 10, rng=0)
    with pytest.raises(ValueError, match="cannot compose"):
        W @ W
    with pytest.raises(ValueError, match="vstack"):
        vstack([W, W.T])
    with pytest.raises(ValueError, match="cannot add"):
        W + W.T


def test_cache_is_per_dtype_and_filters_untouched(rng):
    w = rng.standard_normal((3, 2, 3))
    W = ConvOperator(w, 9)
    w_before = W.filters.copy()
    x32 = rng.standard_normal((2, 9)).astype(np.float32)
    _ = W.with_engine("fft") @ x32
    _ = W @ x32
    np.testing.assert_array_equal(W.filters, w_before)
    assert math.isclose(float(np.abs(W @ x32.astype(np.float64)).sum()),
                        float(np.abs(W.to_dense() @ x32.ravel().astype(np.float64)).sum()),
                        rel_tol=1e-12)


def test_dottest_refuses_an_empty_batch():
    W = ConvOperator.random(3, 2, 3, 8, rng=0)
    with pytest.raises(ValueError, match="'batch'"):
        dottest(W, batch=0)
    assert dottest(W, batch=2) < 1e-12


def test_operator_norm_is_cached_on_the_operator():
    W = ConvOperator.random(4, 3, 3, 12, rng=0)
    exact = np.linalg.norm(W.to_dense(), 2)
    assert W.norm() == pytest.approx(exact, rel=1e-3)
    assert W.T.norm() == W.norm() and (2.5 * W).norm() == pytest.approx(2.5 * W.norm())
    with pytest.raises(TypeError, match="to_dense"):
        np.asarray(W)


# ----------------------------------------------------- private filters, engine policy
@pytest.mark.parametrize("engine", ENGINES)
def test_mutating_callers_filters_leaves_operator_unchanged(engine, rng):
    w = rng.standard_normal((4, 3, 3, 3))
    W = ConvOperator(w, (7, 7), stride=2, padding=1, engine=engine)
    x = rng.standard_normal(W.in_shape)
    z = rng.standard_normal(W.out_shape)
    A, _ = dense_conv_matrix(w.copy(), (7, 7), stride=2, padding=1)
    f0, a0 = W @ x, W.T @ z                       # fills every cache
    w *= 2.0                                      # the caller changes their array
    w[0, 0, 0, 0] = 100.0
    np.testing.assert_allclose(W @ x, f0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(W.T @ z, a0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((W @ x).ravel(), A @ x.ravel(), atol=1e-12)
    assert dottest(W) < 1e-12
    assert not W.filters.flags.writeable
    with pytest.raises(ValueError):
        W.filters[0, 0, 0, 0] = 1.0


def test_engine_policy_setting_and_context(rng):
    from modelcs import engine_policy, get_engine_policy, set_engine_policy

    big = ConvOperator.random(64, 64, (3, 3), (32, 32), rng=0, dtype=np.float32)
    tiny = ConvOperator.random(8, 8, (3, 3), (16, 16), rng=0, dtype=np.float32)
    xb = rng.standard_normal(big.in_shape).astype(np.float32)
    xt = rng.standard_normal(tiny.in_shape).astype(np.float32)
    assert get_engine_policy() == "auto"
    assert tiny._choose(xt) in ("gemm", "fft")       # below the measured crossover
    one_d = ConvOperator.random(96, 32, 5, 32, rng=0)              # float64 1-D: NumPy
    assert one_d._choose(rng.standard_normal((1000, 32, 32))) in ("gemm", "fft")
    rgb = ConvOperator.random(32, 3, (3, 3), (64, 64), stride=2, padding=1, rng=0,
                              dtype=np.float32)                    # 3 input channels
    assert rgb._choose(rng.standard_normal(rgb.in_shape).astype(np.float32)) == "gemm"
    wide = ConvOperator.random(512, 512, (3, 3), (15, 15), rng=0)  # float64, 512 channels
    assert wide._choose(rng.standard_normal(wide.in_shape)) in ("gemm", "fft")
    one_d32 = one_d.astype(np.float32)   # float32 1-D: NumPy below 2.5e8 multiply-adds
    assert one_d32._choose(np.zeros((128, 32, 32), np.float32)) in ("gemm", "fft")
    if HAS_TORCH:
        assert big._choose(xb) == "torch"
        assert one_d32._choose(np.zeros((1024, 32, 32), np.float32)) == "torch"
        # float64 2-D, few channels: PyTorch for batches, GEMM for a single signal
        assert tiny._choose(np.stack([xt, xt]).astype(np.float64)) == "torch"
        assert tiny._choose(xt.astype(np.float64)) in ("gemm", "fft")
    with engine_policy("numpy"):
        assert get_engine_policy() == "numpy"
        assert big._choose(xb) in ("gemm", "fft")
        ref = big @ xb
    assert get_engine_policy() == "auto"
    np.testing.assert_allclose(big @ xb, ref, rtol=1e-4, atol=1e-4)
    old = set_engine_policy("torch")
    try:
        assert old == "auto"
        if HAS_TORCH:
            assert tiny._choose(xt) == "torch"
        assert tiny.with_engine("gemm")._choose(xt) == "gemm"   # forcing always wins
    finally:
        set_engine_policy(old)
    with pytest.raises(ValueError, match="parameter 'policy'"):
        set_engine_policy("fast")


# ------------------------------------------------------------------ astype
def _astype_cases():
    import scipy.sparse as sp

    from modelcs import MatrixOperator, vstack
    from modelcs.operators.base import MaskedOperator

    W = ConvOperator.random(6, 3, 3, 12, rng=0)
    W2 = ConvOperator.random(6, 3, 3, 12, rng=1)
    A = np.random.default_rng(2).standard_normal((7, 5))
    mask = np.random.default_rng(3).random(W.out_shape) < 0.5
    return {
        "conv": W, "adjoint": W.T, "scaled": 2.5 * W, "sum": W - W2,
        "composition": MatrixOperator(A) @ MatrixOperator(A.T @ A),
        "vstack": vstack([W, -W2]), "masked": MaskedOperator(W.T, mask),
        "dense": MatrixOperator(A), "sparse": MatrixOperator(sp.csr_array(A)),
    }


@pytest.mark.parametrize("name", list(_astype_cases()))
def test_astype_gives_the_same_operator_in_float32(name):
    """``op.astype(float32)`` computes the same map in float32 (to float32 rounding);
    the own dtype returns ``op`` itself, and the cast copy is built once."""
    op = _astype_cases()[name]
    assert op.astype(np.float64) is op
    op32 = op.astype(np.float32)
    assert op32.dtype == np.float32 and op.astype("float32") is op32
    assert (op32.in_shape, op32.out_shape) == (op.in_shape, op.out_shape)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, *op.in_shape))
    y = rng.standard_normal((3, *op.out_shape))
    for got, want in ((op32 @ x.astype(np.float32), op @ x),
                      (op32.T @ y.astype(np.float32), op.T @ y)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert op32.astype(np.float64).dtype == np.float64


def test_astype_refuses_what_it_cannot_cast():
    from modelcs import LinearOperator, as_operator

    class Diag(LinearOperator):
        def __init__(self):
            super().__init__((3,), (3,), np.float64)

        def _forward(self, x):
            return 2 * x

        def _adjoint(self, y):
            return 2 * y

    with pytest.raises(NotImplementedError, match="matrix-free MatvecOnly"):
        as_operator(MatvecOnly(np.eye(3))).astype(np.float32)
    with pytest.raises(NotImplementedError, match="Diag cannot compute in float32"):
        Diag().astype(np.float32)
    assert Diag().astype(np.float64).dtype == np.float64
    with pytest.raises(TypeError, match="parameter 'dtype' must be float32 or float64"):
        ConvOperator.random(2, 1, 3, 8, rng=0).astype(np.float16)
