"""lasso against cvxpy and scikit-learn on dense matrices; duality gap; restrictions; errors."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

from modelcs import ConvOperator, LassoScaleWarning, lasso
from modelcs.recovery.lasso import lasso_lambda_max, operator_norm_sq


def _objective(A, y, lam, z):
    return 0.5 * np.sum((y - A @ z) ** 2) + lam * np.abs(z).sum()


def _cvxpy_objective(A, y, lam, support=None):
    z = cp.Variable(A.shape[1])
    cons = [] if support is None else [z[np.flatnonzero(~support)] == 0]
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(y - A @ z) + lam * cp.norm1(z)), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return _objective(A, y, lam, z.value)


@pytest.mark.parametrize("K, M, l, D", [(24, 8, 5, 32), (96, 32, 5, 32)])
@pytest.mark.parametrize("frac", [0.05, 0.3])
def test_objective_matches_cvxpy_and_sklearn(K, M, l, D, frac):
    W = ConvOperator.random(K, M, l, D, rng=0)
    A = W.to_dense().T  # Phi = W^T as a matrix: (M*D) x (K*n)
    y = np.random.default_rng(1).standard_normal(W.in_shape)
    lam = frac * np.abs(W @ y).max()
    res = lasso(W.T, y, lam, tol=1e-10)
    assert res.converged
    assert res.gap <= 1e-8 * res.objective  # duality gap at convergence
    np.testing.assert_allclose(res.objective, _objective(A, y.ravel(), lam, res.z.ravel()),
                               rtol=1e-12)
    n = A.shape[0]  # sklearn: 1/(2 n) ||y - X w||^2 + alpha ||w||_1
    sk = Lasso(alpha=lam / n, fit_intercept=False, tol=1e-12, max_iter=200000)
    f_sk = _objective(A, y.ravel(), lam, sk.fit(A, y.ravel()).coef_)
    f_cvx = _cvxpy_objective(A, y.ravel(), lam)
    assert res.objective <= f_sk * (1 + 1e-6)
    assert res.objective <= f_cvx * (1 + 1e-6)
    assert res.objective >= min(f_sk, f_cvx) * (1 - 1e-6)


def test_batch_with_per_signal_lam_equals_single_solves():
    W = ConvOperator.random(12, 4, (3, 3), (9, 8), stride=(1, 2), rng=3)
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((3, *W.in_shape))
    lam = np.array([0.01, 0.1, 0.5]) * np.abs(W @ Y).max()
    res = lasso(W.T, Y, lam, tol=1e-11)
    assert res.z.shape == (3, *W.out_shape)
    assert np.all(res.converged) and np.all(res.rel_gap <= 1e-8)
    A = W.to_dense().T
    for b in range(3):
        single = lasso(W.T, Y[b], lam[b], tol=1e-11)
        np.testing.assert_allclose(res.objective[b], single.objective, rtol=1e-9)
        f_cvx = _cvxpy_objective(A, Y[b].ravel(), lam[b])
        assert abs(res.objective[b] - f_cvx) <= 1e-6 * f_cvx


def test_lam_at_least_lam_max_returns_exact_zero_without_iterating():
    W = ConvOperator.random(8, 3, 4, 20, rng=0)
    Y = np.random.default_rng(0).standard_normal((2, *W.in_shape))
    lmax = lasso_lambda_max(W.T, Y)
    np.testing.assert_allclose(lmax, np.abs(W @ Y).reshape(2, -1).max(axis=1))
    res = lasso(W.T, Y, lmax)
    assert not res.z.any() and np.all(res.n_iter == 0) and np.all(res.converged)
    below = lasso(W.T, Y, 0.99 * lmax)
    assert below.z.any()  # just below lam_max the solution is nonzero


def test_support_restricts_and_is_optimal_there():
    W = ConvOperator.random(16, 4, 5, 24, rng=5)
    y = np.random.default_rng(6).standard_normal(W.in_shape)
    support = np.random.default_rng(7).random(W.out_shape) < 0.2
    lam = 0.05 * np.abs(W @ y).max()
    res = lasso(W.T, y, lam, support=support, tol=1e-11)
    assert not res.z[~support].any()
    f_cvx = _cvxpy_objective(W.to_dense().T, y.ravel(), lam, support.ravel())
    assert res.objective <= f_cvx * (1 + 1e-6)


def test_float32_converges():
    W = ConvOperator.random(24, 8, 5, 32, rng=0, dtype=np.float32)
    y = np.random.default_rng(1).standard_normal(W.in_shape).astype(np.float32)
    res = lasso(W.T, y, 0.1 * float(np.abs(W @ y).max()), tol=1e-5)
    assert res.z.dtype == np.float32 and res.converged
    ref = lasso(W.astype(np.float64).T, y.astype(np.float64),
                0.1 * float(np.abs(W @ y).max()), tol=1e-10)
    assert abs(res.objective - ref.objective) <= 1e-4 * ref.objective


def test_operator_norm_is_cached_and_accurate():
    W = ConvOperator.random(6, 2, 3, 16, rng=0)
    exact = np.linalg.norm(W.to_dense(), 2) ** 2
    est = operator_norm_sq(W.T)
    assert exact <= est <= 1.1 * exact  # an upper estimate (safe FISTA step)
    assert operator_norm_sq(W) == est  # adjoint view shares the cache
    np.testing.assert_allclose(operator_norm_sq(2.0 * W), 4 * est)


# ---------------------------------------------------------------- bad input
def test_errors():
    W = ConvOperator.random(4, 2, 3, 10, rng=0)
    y = np.ones(W.in_shape)
    with pytest.raises(ValueError, match=r"parameter 'lam' must be finite and >= 0"):
        lasso(W.T, y, -1.0)
    with pytest.raises(ValueError, match=r"parameter 'support' has shape \(4, 7\)"):
        lasso(W.T, y, 0.1, support=np.ones((4, 7), dtype=bool))
    with pytest.raises(TypeError, match="parameter 'support' must be a boolean mask"):
        lasso(W.T, y, 0.1, support=np.ones(W.out_shape))
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="parameter 'y' contains 1 non-finite"):
        lasso(W.T, bad, 0.1)
    with pytest.raises(ValueError, match=r"parameter 'y' has shape \(3, 10\)"):
        lasso(W.T, np.ones((3, 10)), 0.1)
    with pytest.raises(TypeError, match="parameter 'Phi'"):
        lasso("W", y, 0.1)  # type: ignore[arg-type]  (matrices are accepted: as_operator)
    with pytest.raises(ValueError, match="parameter 'lam' has shape"):
        lasso(W.T, np.ones((2, *W.in_shape)), np.ones(3))
    with pytest.raises(ValueError, match="parameter 'tol'"):
        lasso(W.T, y, 0.1, tol=-1.0)


def test_lam_maps_to_sklearn_alpha_times_m():
    # lasso(X, y, lam) and sklearn.linear_model.Lasso(alpha=lam / m) are the same problem
    rng = np.random.default_rng(3)
    m, n = 30, 50
    X = rng.standard_normal((m, n))
    y = rng.standard_normal(m)
    alpha = 0.05
    sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100000).fit(X, y)
    res = lasso(X, y, alpha * m, tol=1e-14, max_iter=100000)
    np.testing.assert_allclose(res.z, sk.coef_, atol=1e-6)
    assert np.count_nonzero(res.z) == np.count_nonzero(sk.coef_)


def test_extreme_scales_are_normalised_or_reported():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 40)) / np.sqrt(20)
    z = np.zeros(40)
    z[[2, 9, 31]] = [1.0, -2.0, 0.5]
    ref = lasso(A, A @ z, 1e-3, tol=1e-10)
    for s in (1e300, 1e-300):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = lasso(A, s * (A @ z), s * 1e-3, tol=1e-10)
        assert np.isfinite(res.z).all() and np.isfinite(res.rel_gap)
        np.testing.assert_allclose(res.z / s, ref.z, rtol=1e-6, atol=1e-12)
        overflow = [w for w in caught if issubclass(w.category, LassoScaleWarning)]
        if s > 1:  # 0.5 * ||y||^2 overflows float64: said clearly, never a silent inf/NaN
            assert overflow and "overflow" in str(overflow[0].message)
            assert np.isinf(res.objective)
        else:
            assert not overflow and res.objective == pytest.approx(s * s * ref.objective)


def test_callback_sees_every_iteration_and_can_stop():
    W = ConvOperator.random(12, 4, 5, 24, rng=0)
    y = np.random.default_rng(1).standard_normal((3, 4, 24))
    seen = []

    def cb(info):
        seen.append((info["iteration"], info["z"].shape[0], info["gap"].shape))
        return info["iteration"] >= 5

    res = lasso(W.T, y, 0.05, tol=1e-12, callback=cb)
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5]
    assert (res.n_iter == 5).all() and not res.converged.any()
    full = lasso(W.T, y, 0.05, tol=1e-12)
    assert (full.n_iter > 5).all()


def test_debias_callback_sees_every_lsqr_iteration_and_can_stop():
    from modelcs import debias

    A = np.random.default_rng(0).standard_normal((30, 60))
    Z = np.zeros((3, 60))
    Z[0, [1, 5, 9]] = [1.0, -2.0, 0.5]
    Z[1, [2, 3]] = [3.0, 1.0]
    Z[2, 10:16] = 1.0
    Y = Z @ A.T
    seen = []

    def watch(info):
        r = info["residual_norms"]
        # the reported residuals are those of the reported iterates
        direct = np.linalg.norm(Y[info["active"]] - info["z"] @ A.T, axis=1)
        np.testing.assert_allclose(r, direct, rtol=1e-8, atol=1e-12)
        seen.append((info["iteration"], tuple(info["active"])))

    full = debias(A, Y, Z != 0, callback=watch)
    plain = debias(A, Y, Z != 0)
    np.testing.assert_array_equal(full.z, plain.z)
    np.testing.assert_allclose(full.z, Z, atol=1e-10)
    assert [s[0] for s in seen] == list(range(1, int(full.n_iter.max()) + 1))
    assert seen[0][1] == (0, 1, 2)
    # an item leaves "active" once converged: item 1 (2 unknowns) stops first
    assert 1 not in seen[-1][1] and full.n_iter[1] == 2

    stopped = debias(A, Y, Z != 0, callback=lambda info: info["iteration"] >= 1)
    assert (stopped.n_iter == 1).all()
    assert stopped.converged.tolist() == [False, False, False]
    one = debias(A, Y[2], Z[2] != 0, callback=lambda info: info["iteration"] >= 1)
    assert one.n_iter == 1 and one.converged is False
    with pytest.raises(TypeError, match="callback"):
        debias(A, Y, Z != 0, callback="stop")
