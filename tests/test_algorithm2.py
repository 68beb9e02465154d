"""Algorithm 2 (l1-heuristic support recovery): pooling model, optimality on the support."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from modelcs import ConvOperator, ModelSparse, l1_support_recovery


def _all_regions(W, pool):
    base = ModelSparse(0, pool=pool)
    return ModelSparse(base.n_units(W.out_shape), pool=pool)


def _restricted_cvxpy(A, y, lam, support):
    z = cp.Variable(A.shape[1])
    prob = cp.Problem(
        cp.Minimize(0.5 * cp.sum_squares(y - A @ z) + lam * cp.norm1(z)),
        [z[np.flatnonzero(~support)] == 0],
    )
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    zv = z.value
    return 0.5 * np.sum((y - A @ zv) ** 2) + lam * np.abs(zv).sum()


@pytest.mark.parametrize("by", ["abs", "value"])
def test_output_obeys_pooling_model_and_is_optimal_on_support(by):
    W = ConvOperator.random(6, 3, (3, 3), (11, 10), rng=0)  # maps 9 x 8, 2x2 pooling
    pool = (2, 2)
    z_true = ModelSparse(8, pool=pool).sample(W.out_shape, 1, rng=1)[0]
    x = W.T @ z_true + 0.01 * np.random.default_rng(2).standard_normal(W.in_shape)
    lam = 0.02 * np.abs(W @ x).max()
    res = l1_support_recovery(W, x, lam, pool=2, by=by)
    full = _all_regions(W, pool)
    np.testing.assert_array_equal(full.project(res.z), res.z)  # one nonzero per region
    assert not res.z[~res.support].any()
    np.testing.assert_array_equal(res.support, ModelSparse(
        full.k, pool=pool, by=by).support(res.z_init))
    assert res.init.converged and res.final.converged
    f_cvx = _restricted_cvxpy(W.to_dense().T, x.ravel(), lam, res.support.ravel())
    assert res.final.objective <= f_cvx * (1 + 1e-6)


def test_batch_and_k_limit_1d():
    W = ConvOperator.random(8, 4, 5, 40, rng=3)  # maps of 36, pool 4 -> 9 regions each
    model = ModelSparse(5, pool=(4,))
    Z = model.sample(W.out_shape, 4, rng=4)
    X = W.T @ Z
    res = l1_support_recovery(W, X, 1e-3, pool=4, k=5)
    assert res.z.shape == (4, *W.out_shape)
    assert np.all(res.support.reshape(4, -1).sum(axis=1) <= 5)
    np.testing.assert_array_equal(model.project(res.z), res.z)
    # noiseless, well separated: the true support is found and the code recovered closely
    err = np.linalg.norm((res.z - Z).reshape(4, -1), axis=1) / np.linalg.norm(
        Z.reshape(4, -1), axis=1)
    assert np.median(err) < 0.05


def test_errors():
    W = ConvOperator.random(4, 2, (3, 3), (8, 8), rng=0)
    x = np.ones(W.in_shape)
    with pytest.raises(TypeError, match="parameter 'W' must be a ConvOperator"):
        l1_support_recovery(W.T, x, 0.1, pool=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parameter 'k'=1000 exceeds the 36 pooling regions"):
        l1_support_recovery(W, x, 0.1, pool=2, k=1000)
    with pytest.raises(ValueError, match="pool"):
        l1_support_recovery(W, x, 0.1, pool=(7, 7))
    with pytest.raises(ValueError, match="parameter 'lam'"):
        l1_support_recovery(W, x, -0.1, pool=2)
    with pytest.raises(ValueError, match="parameter 'by'"):
        l1_support_recovery(W, x, 0.1, pool=2, by="max")


def test_a_bad_x_is_called_x():
    W = ConvOperator.random(4, 2, (3, 3), (8, 8), rng=0)
    with pytest.raises(ValueError, match="parameter 'x' has shape"):
        l1_support_recovery(W, np.ones((3, 8, 8)), 0.1, pool=2)
    bad = np.ones(W.in_shape)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="parameter 'x' contains"):
        l1_support_recovery(W, bad, 0.1, pool=2)
    with pytest.raises(TypeError, match="parameter 'x'.*complex"):
        l1_support_recovery(W, np.ones(W.in_shape, dtype=complex), 0.1, pool=2)


def test_callback_sees_both_lasso_steps_and_can_stop_them():
    W = ConvOperator.random(8, 4, 5, 40, rng=3)
    Z = ModelSparse(5, pool=(4,)).sample(W.out_shape, 3, rng=4)
    X = W.T @ Z
    seen = []

    def watch(info):
        seen.append((info["step"], info["iteration"], tuple(info["active"]),
                     info["z"].shape, info["gap"].shape))

    ref = l1_support_recovery(W, X, 1e-3, pool=4, k=5, callback=watch)
    plain = l1_support_recovery(W, X, 1e-3, pool=4, k=5)
    np.testing.assert_array_equal(ref.z, plain.z)  # watching changes nothing
    steps = [s[0] for s in seen]
    assert steps == sorted(steps) and set(steps) == {1, 3}
    first = [s for s in seen if s[0] == 1]
    assert [s[1] for s in first][:3] == [1, 2, 3]
    assert first[0][2] == (0, 1, 2) and first[0][3] == (3, *W.out_shape)
    assert first[0][4] == (3,)
    # every iteration of both solves is reported (n_iter counts both)
    assert ref.n_iter.sum() >= len(first)

    # a truthy return stops the solve under way: stopped at iteration 2 of each step
    stops = []

    def stop_at_2(info):
        stops.append((info["step"], info["iteration"]))
        return info["iteration"] >= 2

    res = l1_support_recovery(W, X, 1e-3, pool=4, k=5, tol=1e-14, callback=stop_at_2)
    assert stops == [(1, 1), (1, 2), (3, 1), (3, 2)]
    assert (res.init.n_iter == 2).all() and (res.final.n_iter == 2).all()
    assert (res.n_iter == 4).all() and not res.converged.any()
    assert not res.z[~res.support].any()  # step 3 still ran on the early support
    with pytest.raises(TypeError, match="callback"):
        l1_support_recovery(W, X, 1e-3, pool=4, callback=3)
