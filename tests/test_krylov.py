"""The package's one batched LSQR (modelcs._krylov.lsqr) against SciPy's lsqr and dense lstsq."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from modelcs import ConvOperator, MatrixOperator
from modelcs._krylov import lsqr


def _problem(m, n, B, dtype, seed, rank=None):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((m, n))
    if rank is not None:  # rank-deficient: product of thin factors
        M = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    return M.astype(dtype), rng.standard_normal((B, m)).astype(dtype), rng


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (25, 25)])
def test_batched_lsqr_matches_scipy_lsqr_and_lstsq(dtype, shape):
    M, Y, _ = _problem(*shape, 4, dtype, seed=1)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    res = lsqr(MatrixOperator(M), Y, atol=tol, btol=tol, max_iter=200)
    assert res.x.dtype == dtype and res.x.shape == (4, shape[1])
    assert res.converged.all() and (res.n_iter <= 200).all()
    M64 = M.astype(np.float64)
    want = np.linalg.lstsq(M64, Y.astype(np.float64).T, rcond=None)[0].T  # min-norm LS
    # float32: conditioning of these Gaussian problems is < 100, so 1e-3 is the f32 accuracy
    err = 1e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(res.x, want, atol=err * np.abs(want).max())
    for i in range(4):
        s = spla.lsqr(M64, Y[i].astype(np.float64), atol=tol, btol=tol, iter_lim=200)
        np.testing.assert_allclose(res.x[i], s[0], atol=err * np.abs(want).max())
        if dtype == np.float64:
            # same stopping tests: iteration counts agree up to rounding of the test quantities
            assert abs(int(res.n_iter[i]) - int(s[2])) <= 2
        # the residual estimate is the residual (up to rounding: ~tol ||y|| when consistent)
        ynorm = float(np.linalg.norm(Y[i].astype(np.float64)))
        direct = np.linalg.norm(Y[i].astype(np.float64) - M64 @ res.x[i].astype(np.float64))
        np.testing.assert_allclose(res.residual_norm[i], direct, rtol=10 * tol,
                                   atol=100 * tol * ynorm)
        np.testing.assert_allclose(res.residual_norm[i], s[3], rtol=10 * tol,
                                   atol=100 * tol * ynorm)


def test_single_item_batch_and_rank_deficient_gives_minimum_norm_solution():
    M, Y, _ = _problem(20, 15, 1, np.float64, seed=2, rank=5)
    res = lsqr(MatrixOperator(M), Y, max_iter=100)
    assert res.converged.all()
    want = np.linalg.pinv(M) @ Y[0]
    np.testing.assert_allclose(res.x[0], want, atol=1e-9 * np.abs(want).max())
    # rank 5: LSQR ends after at most rank+1 steps in exact arithmetic
    assert res.n_iter[0] <= 8


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_masked_problems_per_item_and_shared(dtype):
    M, Y, rng = _problem(40, 64, 3, dtype, seed=3)
    masks = rng.random((3, 64)) < 0.3
    tol = 1e-6 if dtype == np.float32 else 1e-13
    err = 1e-3 if dtype == np.float32 else 1e-9
    for mask in (masks, masks[0]):
        res = lsqr(MatrixOperator(M), Y, mask=mask, atol=tol, btol=tol)
        assert res.converged.all()
        mb = np.broadcast_to(mask, (3, 64))
        for b in range(3):
            cols = np.flatnonzero(mb[b])
            ref = np.zeros(64)
            ref[cols] = np.linalg.lstsq(M[:, cols].astype(np.float64), Y[b].astype(np.float64),
                                        rcond=None)[0]
            assert np.all(res.x[b][~mb[b]] == 0)
            np.testing.assert_allclose(res.x[b], ref, atol=err * np.abs(ref).max())


def test_x0_solves_for_the_correction_like_scipy():
    M, Y, rng = _problem(15, 30, 2, np.float64, seed=4)  # underdetermined: x0 matters
    X0 = rng.standard_normal((2, 30))
    res = lsqr(MatrixOperator(M), Y, x0=X0, atol=1e-12, btol=1e-12, max_iter=200)
    for i in range(2):
        s = spla.lsqr(M, Y[i], x0=X0[i], atol=1e-12, btol=1e-12, iter_lim=200)
        np.testing.assert_allclose(res.x[i], s[0], atol=1e-9)
        # the correction is the min-norm solution of M d = y - M x0
        d = np.linalg.pinv(M) @ (Y[i] - M @ X0[i])
        np.testing.assert_allclose(res.x[i], X0[i] + d, atol=1e-9)
    # masked x0: projected on the mask, the answer is the masked least squares from it
    mask = rng.random(30) < 0.4
    res = lsqr(MatrixOperator(M), Y, mask=mask, x0=X0, atol=1e-13, btol=1e-13)
    cols = np.flatnonzero(mask)
    for i in range(2):
        ref = np.zeros(30)
        ref[cols] = np.linalg.lstsq(M[:, cols], Y[i], rcond=None)[0]
        np.testing.assert_allclose(res.x[i], ref, atol=1e-9)


def test_per_item_stopping_gtol_max_iter_and_zero_rhs():
    M, Y, _ = _problem(30, 20, 3, np.float64, seed=5)
    Y[1] = 0.0
    Y[2] = M @ np.eye(20)[3]  # consistent
    res = lsqr(MatrixOperator(M), Y)
    assert res.n_iter[1] == 0 and res.converged[1] and np.all(res.x[1] == 0)
    assert res.converged.all()
    capped = lsqr(MatrixOperator(M), Y, max_iter=3)
    assert capped.n_iter.tolist() == [3, 0, 3] and capped.converged.tolist() == [False, True, False]
    # gtol: absolute threshold on ||A^T r|| stops each item as soon as it is met
    g = np.linalg.norm(Y @ M, axis=1) * 1e-3
    loose = lsqr(MatrixOperator(M), Y, atol=0.0, btol=0.0, gtol=g)
    assert loose.converged.all() and (loose.n_iter <= res.n_iter).all()
    assert (loose.n_iter[[0, 2]] < res.n_iter[[0, 2]]).all()
    for i in (0, 2):
        grad = np.linalg.norm(M.T @ (Y[i] - M @ loose.x[i]))
        assert grad <= 1.01 * g[i]  # the recurrence's estimate is the true gradient norm
        np.testing.assert_allclose(loose.normal_residual_norm[i], grad, rtol=1e-6)


def test_callback_reports_exact_residuals_and_can_stop():
    M, Y, _ = _problem(25, 10, 2, np.float64, seed=6)
    seen = []

    def cb(info):
        direct = np.linalg.norm(Y[info["active"]] - info["x"] @ M.T, axis=1)
        np.testing.assert_allclose(info["residual_norms"], direct, rtol=1e-12)
        seen.append(info["iteration"])
        return info["iteration"] >= 4

    res = lsqr(MatrixOperator(M), Y, callback=cb)
    assert seen == [1, 2, 3, 4] and (res.n_iter == 4).all() and not res.converged.any()


def test_on_a_convolution_operator_equals_dense_pinv():
    W = ConvOperator.random(3, 2, 3, 10, rng=0)  # 24 x 20 analysis operator
    Wd = W.to_dense()
    rng = np.random.default_rng(7)
    H = rng.standard_normal((2, *W.out_shape))
    res = lsqr(W, H)
    want = (np.linalg.pinv(Wd) @ H.reshape(2, -1).T).T.reshape(2, *W.in_shape)
    np.testing.assert_allclose(res.x, want, atol=1e-9)
    # and on the adjoint (synthesis, underdetermined) with a shared mask on the code
    mask = rng.random(W.out_shape) < 0.5
    X = rng.standard_normal((2, *W.in_shape))
    res = lsqr(W.T, X, mask=mask)
    cols = np.flatnonzero(mask.ravel())
    for i in range(2):
        ref = np.zeros(Wd.shape[0])
        ref[cols] = np.linalg.lstsq(Wd.T[:, cols], X[i].ravel(), rcond=None)[0]
        np.testing.assert_allclose(res.x[i].ravel(), ref, atol=1e-9)
