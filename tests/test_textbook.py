"""The first lesson of a compressive-sensing course, as a user writes it.

Gaussian ``A`` (m = 60, n = 200, unit-norm columns), k = 8 nonzeros, 200 trials recovered in
one batched call per algorithm, ``A`` a plain NumPy array: normalized IHT, CoSaMP and the
Lasso followed by debiasing each recover at least 95 % of the codes to a relative error of
1e-6 -- with the measurements as a ``(200, 60)`` batch and as 1-D vectors one at a time.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelcs import TopKSparse, cosamp, iht, lasso

M, N, K, TRIALS = 60, 200, 8, 200


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(2024)
    A = rng.standard_normal((M, N))
    A /= np.linalg.norm(A, axis=0)
    X = np.zeros((TRIALS, N))
    for t in range(TRIALS):  # written out by hand: independent of modelcs' samplers
        X[t, rng.choice(N, K, replace=False)] = rng.standard_normal(K)
    return A, X, X @ A.T


def _solvers():
    return {
        "niht": lambda A, Y: iht(A, Y, TopKSparse(K), step="normalized", max_iter=500,
                                 tol=1e-10).z,
        "cosamp": lambda A, Y: cosamp(A, Y, TopKSparse(K)).z,
        "lasso+debias": lambda A, Y: lasso(
            A, Y, 1e-3 * np.abs(Y @ A).max(axis=-1), debias=True, tol=1e-8).z,
    }


def _rel(Xh, X):
    return np.linalg.norm(Xh - X, axis=-1) / np.linalg.norm(X, axis=-1)


@pytest.mark.parametrize("name", list(_solvers()))
def test_textbook_recovery_batched_and_one_by_one(problem, name):
    A, X, Y = problem
    solve = _solvers()[name]
    Xb = np.asarray(solve(A, Y))  # one batched call: (200, 60) -> (200, 200)
    assert Xb.shape == (TRIALS, N)
    ok = _rel(Xb, X) <= 1e-6
    assert ok.mean() >= 0.95, f"{name}: {ok.mean():.1%} recovered"
    # the same trials with 1-D measurement vectors give 1-D codes and the same answers
    agree = 0
    for t in range(0, TRIALS, 10):
        xt = solve(A, Y[t])
        assert xt.shape == (N,)
        agree += bool(_rel(xt, X[t]) <= 1e-6) == bool(ok[t])
        if ok[t]:
            np.testing.assert_allclose(xt, Xb[t], atol=1e-9)
    assert agree == TRIALS // 10


def test_textbook_needs_no_wrapping(problem):
    # the objects a user has: the NumPy matrix, a list of lists, float32 data
    A, X, Y = problem
    r = iht(A.tolist(), Y[0].tolist(), TopKSparse(K), step="normalized", max_iter=500)
    np.testing.assert_allclose(r.z, X[0], atol=1e-5)
    r32 = iht(A.astype(np.float32), Y[:5].astype(np.float32), TopKSparse(K),
              step="normalized", max_iter=500)
    assert r32.z.dtype == np.float32 and (_rel(r32.z, X[:5]) <= 1e-3).all()
