"""lasso against cvxpy and scikit-learn on dense matrices; duality gap; restrictions; errors."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
from reference import MatvecOnly
from sklearn.linear_model import Lasso
from threadpoolctl import threadpool_limits

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


def test_duality_gap_is_tested_every_gap_every_iterations(monkeypatch):
    """The stopping test runs every GAP_EVERY iterations: the iterates are those of the
    test at every iteration, so a solve stops at the first multiple of GAP_EVERY at or
    after the iteration the every-iteration test stops at, with the same result there."""
    import modelcs.recovery.lasso as lasso_mod

    W = ConvOperator.random(24, 6, 5, 30, rng=0)
    y = np.random.default_rng(1).standard_normal((5, 6, 30))
    every = lasso_mod.GAP_EVERY
    assert every > 1
    res = lasso(W.T, y, 0.3, tol=1e-8, mixed_precision=False)
    assert res.converged.all() and (res.n_iter % every == 0).all()
    monkeypatch.setattr(lasso_mod, "GAP_EVERY", 1)
    one = lasso(W.T, y, 0.3, tol=1e-8, mixed_precision=False)
    assert one.converged.all()
    np.testing.assert_array_equal(res.n_iter, -(-one.n_iter // every) * every)
    # the gap keeps shrinking: the late test ends at least as close to the optimum
    assert (res.gap <= 1e-8 * res.objective).all()
    for b in range(5):  # the same iterates: run to the same iteration without stopping
        capped = lasso(W.T, y[b], 0.3, tol=0.0, max_iter=int(res.n_iter[b]),
                       mixed_precision=False)
        assert capped.n_iter == res.n_iter[b]
        np.testing.assert_allclose(capped.z, res.z[b], rtol=1e-9, atol=1e-12)
    monkeypatch.setattr(lasso_mod, "GAP_EVERY", every)
    short = lasso(W.T, y, 0.3, tol=1e-8, max_iter=every + 1)   # max_iter is always tested
    assert (short.n_iter == every + 1).all() and np.isfinite(short.gap).all()


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


# ------------------------------------------------ batches: chunks, per-problem stopping
def _sk_objective(A, y, lam):
    """scikit-learn's Lasso (coordinate descent, tight tolerance) at lam: its objective."""
    m = A.shape[0]
    sk = Lasso(alpha=lam / m, fit_intercept=False, tol=1e-13, max_iter=200000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coef = sk.fit(A.astype(np.float64), y.astype(np.float64)).coef_
    return _objective(A.astype(np.float64), y.astype(np.float64), lam, coef), coef


class _Counting:
    """Wraps an operator's matrix and counts the batch items of every application."""

    def __init__(self, A):
        self.A, self.shape, self.dtype, self.items = A, A.shape, A.dtype, 0

    def matmat(self, X):
        self.items += X.shape[1]
        return self.A @ X

    def rmatmat(self, Y):
        self.items += Y.shape[1]
        return self.A.T @ Y

    def matvec(self, x):
        return self.matmat(x[:, None])[:, 0]

    def rmatvec(self, y):
        return self.rmatmat(y[:, None])[:, 0]


@pytest.mark.parametrize("geom", [(16, 2, 5, 420, 1), (8, 2, (3, 3), (30, 30), (1, 1))])
def test_large_batch_in_chunks_matches_single_solves_and_sklearn(geom):
    # codes of ~6500 entries: a batch of 18 exceeds one chunk (~8 MB of working arrays,
    # 16 signals here in float64, 29 in float32), so it runs as two chunks (16 + 2)
    K, M, l, D, stride = geom
    W = ConvOperator.random(K, M, l, D, stride=stride, rng=11)
    rng = np.random.default_rng(12)
    B = 18
    Y = rng.standard_normal((B, *W.in_shape))
    lam = rng.uniform(0.3, 0.6, B) * np.abs(W @ Y).reshape(B, -1).max(axis=1)
    res = lasso(W.T, Y, lam, tol=1e-9)
    assert res.z.shape == (B, *W.out_shape) and np.all(res.converged)
    for b in (0, 15, 16, B - 1):  # the single-signal path, either side of a chunk border
        single = lasso(W.T, Y[b], lam[b], tol=1e-9)
        assert abs(res.objective[b] - single.objective) <= 1e-8 * single.objective
    A = W.to_dense().T
    for b in (0, B - 1):  # one signal of each chunk against scikit-learn
        f_sk, coef = _sk_objective(A, Y[b].ravel(), lam[b])
        f_ours = _objective(A, Y[b].ravel(), lam[b], res.z[b].ravel())
        assert f_sk * (1 - 1e-9) <= f_ours <= f_sk * (1 + 1e-8)
        np.testing.assert_allclose(res.z[b].ravel(), coef, atol=1e-3 * np.abs(coef).max())
    # float32 data (a batch of 30: chunks of 29 + 1), objective to 1e-4 of float64's
    W32 = W.astype(np.float32)
    Y32 = np.concatenate([Y, Y[:12]]).astype(np.float32)
    r32 = lasso(W32.T, Y32, np.concatenate([lam, lam[:12]]), tol=1e-5)
    assert r32.z.dtype == np.float32 and np.all(r32.converged)
    f32 = np.array([_objective(A, Y[b % B].ravel(), lam[b % B],
                               r32.z[b].ravel().astype(np.float64)) for b in range(30)])
    f64 = res.objective[np.arange(30) % B]
    assert np.all(np.abs(f32 - f64) <= 1e-4 * f64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("geom", [(12, 4, 5, 24, 1), (6, 3, (3, 3), (8, 7), (1, 2))])
def test_small_batch_matches_sklearn_per_signal(dtype, geom):
    K, M, l, D, stride = geom
    W = ConvOperator.random(K, M, l, D, stride=stride, rng=11, dtype=dtype)
    rng = np.random.default_rng(12)
    B = 5
    Y = rng.standard_normal((B, *W.in_shape)).astype(dtype)
    W64 = W.astype(np.float64)
    lam = rng.uniform(0.02, 0.5, B) * np.abs(W64 @ Y.astype(np.float64)).reshape(
        B, -1).max(axis=1)
    tol = 1e-5 if dtype == np.float32 else 1e-11
    res = lasso(W.T, Y, lam, tol=tol, max_iter=20000)
    assert res.z.dtype == dtype and res.z.shape == (B, *W.out_shape)
    assert np.all(res.converged)
    A = W64.to_dense().T
    for b in range(B):
        f_sk, coef = _sk_objective(A, Y[b].ravel(), lam[b])
        f_ours = _objective(A, Y[b].ravel().astype(np.float64), lam[b],
                            res.z[b].ravel().astype(np.float64))
        rtol = 1e-4 if dtype == np.float32 else 1e-9
        assert abs(f_ours - f_sk) <= rtol * f_sk
        if dtype == np.float64:
            np.testing.assert_allclose(res.z[b].ravel(), coef, atol=1e-5 * np.abs(coef).max())


@pytest.mark.parametrize("adaptive", [False, True])
def test_per_problem_stopping_easy_and_hard_problem(adaptive, monkeypatch):
    import modelcs.recovery.lasso as lasso_mod

    if not adaptive:
        # steps fixed at 1/L: no backtracking, so the batch's iterations must be a lone
        # solve's up to the rounding of the last stopping test
        monkeypatch.setattr(lasso_mod, "L_DECREASE", 1.0)
    rng = np.random.default_rng(5)
    A = rng.standard_normal((40, 90)) / np.sqrt(40)
    Y = rng.standard_normal((2, 40))
    lmax = np.abs(Y @ A).max(axis=1)
    lam = np.array([0.9 * lmax[0], 0.01 * lmax[1]])  # easy (very sparse), hard (dense)
    op = _Counting(A)
    res = lasso(op, Y, lam, tol=1e-12, max_iter=50000)
    assert np.all(res.converged) and res.n_iter[0] < res.n_iter[1] / 3
    for b in range(2):
        # (in float64 throughout, like the batch on the counting operator)
        single = lasso(A, Y[b], lam[b], tol=1e-12, max_iter=50000, mixed_precision=False)
        # the same iterations as alone, up to the rounding of batched vs single products
        # deciding a test at the last digit: the stopping test only with fixed steps; with
        # adaptive ones also the step tests (hundreds over ~1000 iterations), each of which
        # a flip changes the path after it by one step constant
        slack = max(2, single.n_iter // 100) if not adaptive else max(3, single.n_iter // 20)
        assert abs(single.n_iter - res.n_iter[b]) <= slack
        if adaptive:  # two paths, each stopped at a gap of 1e-12 of the objective
            np.testing.assert_allclose(res.z[b], single.z, atol=1e-9 * np.abs(single.z).max())
        else:
            np.testing.assert_allclose(res.z[b], single.z, rtol=1e-9, atol=1e-12)
        f_sk, _ = _sk_objective(A, Y[b], lam[b])
        assert abs(res.objective[b] - f_sk) <= 1e-9 * f_sk
    # a converged problem stops costing work: every iteration (a rejected trial step is
    # one) applies A and A^T to the problems still running only (plus A^T y, lam_max,
    # the final residual and norm(A))
    work = op.items
    lam_norm = work - 2 * int(res.n_iter.sum())
    assert 0 <= lam_norm <= 2 * 2 + 2 * 80  # setup + final residuals + Lanczos on A^T A


def test_underestimated_step_constant_still_converges():
    from modelcs import LinearOperator

    W = ConvOperator.random(16, 4, 5, 24, rng=8)
    exact = np.linalg.norm(W.to_dense(), 2)

    class Underestimated(LinearOperator):
        """W^T whose norm() claims 0.3 of the truth: an 11x too small ||Phi||^2."""

        def __init__(self):
            super().__init__(W.out_shape, W.in_shape, W.dtype)

        def _forward(self, z):
            return W.T @ z

        def _adjoint(self, x):
            return W @ x

        def norm(self):
            return 0.3 * exact

    y = np.random.default_rng(9).standard_normal(W.in_shape)
    lam = 0.05 * np.abs(W @ y).max()
    res = lasso(Underestimated(), y, lam, tol=1e-10, max_iter=20000)
    assert res.converged and res.lipschitz < exact**2
    f_sk, _ = _sk_objective(W.to_dense().T, y.ravel(), lam)
    assert abs(res.objective - f_sk) <= 1e-8 * f_sk


def test_batch_with_per_signal_supports_matches_cvxpy():
    W = ConvOperator.random(8, 3, 4, 20, rng=13)
    rng = np.random.default_rng(14)
    Y = rng.standard_normal((3, *W.in_shape))
    S = rng.random((3, *W.out_shape)) < 0.4
    lam = 0.05 * np.abs(W @ Y).reshape(3, -1).max(axis=1)
    res = lasso(W.T, Y, lam, support=S, tol=1e-11)
    assert np.all(res.converged) and not res.z[~S].any()
    A = W.to_dense().T
    for b in range(3):
        f_cvx = _cvxpy_objective(A, Y[b].ravel(), lam[b], S[b].ravel())
        assert abs(res.objective[b] - f_cvx) <= 1e-7 * f_cvx


@pytest.mark.parametrize("shape, top", [((30, 80), [1.0]), ((120, 90), [1.0, 0.999, 0.998]),
                                        ((200, 150), [2.0, 1.99])])
def test_step_constant_estimate_against_dense_svd(shape, top):
    # ||A||^2 by Lanczos (the norm FISTA's step uses) against numpy's SVD, including
    # clustered top singular values (many Lanczos steps: the tridiagonal eigen-solver)
    from modelcs import MatrixOperator

    rng = np.random.default_rng(len(top))
    m, n = shape
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.sort(rng.uniform(0.01, 0.9, min(m, n)))[::-1]
    s[: len(top)] = top
    A = (U[:, : s.size] * s) @ V[:, : s.size].T
    exact = np.linalg.norm(A, 2) ** 2
    est = operator_norm_sq(MatrixOperator(A))
    assert exact * (1 - 1e-6) <= est <= exact * (1 + 1e-3)


def test_threads_give_the_same_result_and_skip_user_operators(monkeypatch):
    """Chunks of a large batch run on threads for modelcs's own operators: bit for bit
    the result of one thread; a user's matvec object is only ever called from the
    calling thread (it may keep state)."""
    import threading

    import modelcs.recovery.lasso as lasso_mod

    # codes of 26624 entries: chunks of 16 signals (the fewest) in float64 and float32
    W = ConvOperator.random(64, 2, 5, 420, rng=3)
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((40, *W.in_shape))
    lam = 0.2 * np.abs(W @ Y).reshape(40, -1).max(axis=1)
    for dt in (np.float64, np.float32):
        code = W.astype(dt) @ Y[:1].astype(dt)
        assert lasso_mod._chunk_size(code, Y.astype(dt)) == 16
    for tol in (1e-6, 1e-2):  # float64 throughout; mixed precision
        monkeypatch.setenv("MODELCS_NUM_THREADS", "1")
        # (BLAS on one thread here too, as it is inside the chunks of a threaded solve:
        # OpenBLAS's float32 GEMM rounds differently on several threads)
        with threadpool_limits(limits=1):
            one = lasso(W.T, Y, lam, tol=tol)
        monkeypatch.setenv("MODELCS_NUM_THREADS", "3")
        three = lasso(W.T, Y, lam, tol=tol)
        assert one.converged.all()
        for f in ("z", "n_iter", "objective", "gap", "residual_norms"):
            np.testing.assert_array_equal(getattr(three, f), getattr(one, f))
    from modelcs import MatrixOperator, as_operator

    assert W.T.threadsafe and (2.0 * W.T).threadsafe and MatrixOperator(np.eye(3)).threadsafe

    A = rng.standard_normal((30, 70))
    callers = set()

    class UserOp:
        shape, dtype = A.shape, A.dtype

        def matvec(self, x):
            callers.add(threading.get_ident())
            return A @ x

        def rmatvec(self, y):
            callers.add(threading.get_ident())
            return A.T @ y

    Yb = rng.standard_normal((3000, 30))  # chunks of ~1200 signals
    assert not as_operator(UserOp()).threadsafe
    res = lasso(UserOp(), Yb, 0.1 * np.abs(Yb @ A).max(), tol=1e-6)
    assert res.converged.all() and callers == {threading.get_ident()}
    ref = lasso(A, Yb, 0.1 * np.abs(Yb @ A).max(), tol=1e-6, mixed_precision=False)
    np.testing.assert_allclose(res.objective, ref.objective, rtol=1e-5)

    # the same object declared thread-safe: its chunks do run on several threads
    from modelcs import LinearOperator

    class SafeOp(LinearOperator):
        threadsafe = True

        def __init__(self):
            super().__init__((70,), (30,), np.float64)

        def _forward(self, x):
            callers.add(threading.get_ident())
            return x @ A.T

        def _adjoint(self, y):
            callers.add(threading.get_ident())
            return y @ A

    callers.clear()
    monkeypatch.setenv("MODELCS_NUM_THREADS", "2")
    safe = lasso(SafeOp(), Yb, 0.1 * np.abs(Yb @ A).max(), tol=1e-6)
    assert len(callers) > 1
    np.testing.assert_allclose(safe.objective, ref.objective, rtol=1e-12)

    # called from a thread of the user's own (a Dask worker): no threads of its own
    callers.clear()
    worker = threading.Thread(
        target=lambda: lasso(SafeOp(), Yb, 0.1 * np.abs(Yb @ A).max(), tol=1e-6))
    worker.start()
    worker.join()
    assert callers == {worker.ident}


def test_thread_count_from_the_environment(monkeypatch):
    from modelcs._parallel import thread_count

    monkeypatch.setenv("MODELCS_NUM_THREADS", "5")
    assert thread_count() == 5
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("MODELCS_NUM_THREADS", bad)
        with pytest.raises(ValueError, match=f"MODELCS_NUM_THREADS='{bad}'"):
            thread_count()
    monkeypatch.delenv("MODELCS_NUM_THREADS")
    assert thread_count() >= 1


def test_adaptive_steps_take_fewer_iterations_to_the_same_solution(monkeypatch):
    """At the paper's 1-D size the curvature along the iterates is well below ||W||^2:
    backtracking that lets the step constant decrease needs clearly fewer iterations
    (rejected trials counted) than steps fixed at 1/||W||^2, for the same solution."""
    import modelcs.recovery.lasso as lasso_mod

    W = ConvOperator.random(96, 32, 5, 32, rng=1)
    Y = np.random.default_rng(2).standard_normal((4, *W.in_shape))
    lam = 0.1 * np.abs(W @ Y).reshape(4, -1).max(axis=1)
    adaptive = lasso(W.T, Y, lam, tol=1e-8)
    monkeypatch.setattr(lasso_mod, "L_DECREASE", 1.0)
    fixed = lasso(W.T, Y, lam, tol=1e-8)
    assert adaptive.converged.all() and fixed.converged.all()
    assert (adaptive.n_iter <= 0.75 * fixed.n_iter).all()
    np.testing.assert_allclose(adaptive.objective, fixed.objective, rtol=2e-8)


# ---------------------------------------------------------------- mixed precision
def _float64_gap(A, Y, lam, Z):
    """Objective and duality gap of codes ``Z`` recomputed in float64 on the dense matrix
    (dual point: the residual scaled into the dual feasible set)."""
    R = Y - Z @ A.T
    obj = 0.5 * (R * R).sum(1) + lam * np.abs(Z).sum(1)
    s = np.minimum(1.0, lam / np.abs(R @ A).max(1))
    theta = s[:, None] * R
    dual = 0.5 * (Y * Y).sum(1) - 0.5 * ((Y - theta) ** 2).sum(1)
    return obj, obj - dual


@pytest.mark.parametrize("tol", [1e-2, 1e-6, 1e-10])
def test_mixed_precision_is_certified_in_float64(tol):
    """Mixed precision (the default for float64 data at ``tol >= 1e-3``, asked for here at
    every ``tol``): float32 iterations on the normalised problem, then residual, gradient
    and gap recomputed in float64 and the solve finished there.  The reported objective
    and gap are float64's (recomputed here independently on the dense matrix), they meet
    ``tol``, and the optimum agrees with a solve in float64 throughout within the two
    certified gaps, at any data scale."""
    W = ConvOperator.random(24, 6, 5, 30, rng=2)
    B = 12
    scales = np.logspace(-4, 4, B)
    Y = np.random.default_rng(3).standard_normal((B, 6, 30)) * scales[:, None, None]
    lam = 0.1 * lasso_lambda_max(W.T, Y)
    A = W.to_dense().T
    mixed = lasso(W.T, Y, lam, tol=tol, mixed_precision=True)
    full = lasso(W.T, Y, lam, tol=tol, mixed_precision=False)
    assert mixed.z.dtype == np.float64 and mixed.converged.all() and full.converged.all()
    obj, gap = _float64_gap(A, Y.reshape(B, -1), lam, mixed.z.reshape(B, -1))
    np.testing.assert_allclose(mixed.objective, obj, rtol=1e-11)
    assert np.all(np.abs(mixed.gap - gap) <= 1e-6 * gap + 1e-11 * obj)
    assert np.all(gap <= tol * obj + 1e-11 * obj)
    assert np.all(np.abs(mixed.objective - full.objective)
                  <= mixed.gap + full.gap + 1e-12 * obj)
    assert np.all(mixed.n_iter <= 5000) and np.all(mixed.residual_norms[0] > 0)


def test_mixed_precision_does_most_iterations_in_float32():
    """At a loose tolerance the float32 phase meets it and float64 only certifies:
    one float64 product pair per signal (not counted as an iteration) after float32
    iterations; ``mixed_precision=False``, and by default a tolerance below 1e-3, never
    leave float64.  Seen through the public seams: an operator of the user's that logs
    the dtype of every ``Phi @ z`` and gives its float32 version by ``_astype``."""
    from modelcs import LinearOperator

    W = ConvOperator.random(24, 6, 5, 30, rng=2)
    seen = []

    class Logged(LinearOperator):
        def __init__(self, conv):
            super().__init__(conv.out_shape, conv.in_shape, conv.dtype)
            self.conv = conv

        def _forward(self, z):
            seen.append((z.dtype, z.shape[0]))
            return self.conv.T @ z

        def _adjoint(self, x):
            return self.conv @ x

        def _astype(self, dtype):
            return Logged(self.conv.astype(dtype))

        def norm(self):
            return self.conv.norm()

    Phi = Logged(W)
    Y = np.random.default_rng(3).standard_normal((8, 6, 30))
    lam = 0.1 * lasso_lambda_max(W.T, Y)
    res = lasso(Phi, Y, lam, tol=1e-2)
    f32 = sum(b for dt, b in seen if dt == np.float32)
    f64 = sum(b for dt, b in seen if dt == np.float64)
    # Phi @ z in float64: the certifying pair and the final residual, per signal
    assert res.converged.all() and f32 == res.n_iter.sum() and f64 == 2 * 8
    ref = lasso(W.T, Y, lam, tol=1e-2)
    np.testing.assert_array_equal(res.n_iter, ref.n_iter)
    for kw in ({"tol": 1e-2, "mixed_precision": False}, {"tol": 1e-4}):  # 1e-4: by default
        seen.clear()
        full = lasso(Phi, Y, lam, **kw)
        assert all(dt == np.float64 for dt, _ in seen) and full.converged.all()


def test_mixed_precision_callback_and_errors():
    """A callback sees float64 codes with their objective in both phases, numbered on
    across the switch; ``mixed_precision=True`` where it cannot apply is an error naming
    the parameter and why."""
    W = ConvOperator.random(24, 6, 5, 30, rng=2)
    Y = 1e3 * np.random.default_rng(3).standard_normal((4, 6, 30))
    lam = 0.1 * lasso_lambda_max(W.T, Y)
    A = W.to_dense().T
    seen = []

    def cb(info):
        Z = info["z"].reshape(info["z"].shape[0], -1)
        obj, _ = _float64_gap(A, Y.reshape(4, -1)[info["active"]], lam[info["active"]], Z)
        seen.append((info["iteration"], info["z"].dtype,
                     float(np.max(np.abs(info["objective"] / obj - 1)))))

    res = lasso(W.T, Y, lam, tol=1e-8, mixed_precision=True, callback=cb)
    assert res.converged.all()
    assert [s[0] for s in seen] == list(range(1, len(seen) + 1))
    assert all(s[1] == np.float64 for s in seen) and max(s[2] for s in seen) < 1e-5
    plain = lasso(W.T, Y, lam, tol=1e-8, mixed_precision=True)
    np.testing.assert_array_equal(plain.n_iter, res.n_iter)
    np.testing.assert_allclose(plain.z, res.z, rtol=1e-9, atol=1e-12)

    with pytest.raises(ValueError, match=r"'mixed_precision'=True cannot apply: the data is "
                                         r"float32"):
        lasso(W.astype(np.float32).T, Y.astype(np.float32), lam, mixed_precision=True)

    with pytest.raises(ValueError, match="'mixed_precision'=True cannot apply: .*matrix-free"):
        lasso(MatvecOnly(A), Y.reshape(4, -1), lam, mixed_precision=True)
    with pytest.raises(ValueError, match=r"'mixed_precision'=True cannot apply: \|\|Phi\|\|"):
        lasso(1e20 * A, Y.reshape(4, -1), lam, mixed_precision=True)
    with pytest.raises(TypeError, match="parameter 'mixed_precision' must be True, False or"):
        lasso(A, Y.reshape(4, -1), lam, mixed_precision="yes")
