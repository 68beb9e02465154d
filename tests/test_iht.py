"""Model-based IHT, normalized IHT, cnn_layer and model-based CoSaMP."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from modelcs import ConvOperator, LinearOperator, ModelSparse, TopKSparse, cnn_layer, cosamp, iht
from modelcs.recovery.iht import IHTDivergenceWarning


def rel_err(Zhat, Z):
    B = Z.shape[0]
    return np.linalg.norm((Zhat - Z).reshape(B, -1), axis=1) / np.linalg.norm(
        Z.reshape(B, -1), axis=1
    )


def dense_iht(D, y, model, code_shape, n_iter, step=1.0):
    """Reference: the per-code loop over the dense matrix a NumPy user would write."""
    z = np.zeros(D.shape[1])
    for _ in range(n_iter):
        z = z + step * D.T @ (y.ravel() - D @ z)
        z = model.project(z.reshape(code_shape), batched=False).ravel()
    return z.reshape(code_shape)


class CountingMatrix(LinearOperator):
    """Dense operator that counts how many signals it is applied to."""

    def __init__(self, D, in_shape, out_shape):
        super().__init__(in_shape, out_shape, D.dtype)
        self.D, self.rows = D, 0

    def _forward(self, x):
        self.rows += x.shape[0]
        return (x.reshape(x.shape[0], -1) @ self.D.T).reshape(x.shape[0], *self.out_shape)

    def _adjoint(self, y):
        self.rows += y.shape[0]
        return (y.reshape(y.shape[0], -1) @ self.D).reshape(y.shape[0], *self.in_shape)


# ------------------------------------------------------------------ must-show 2
def test_figure2_setting_1000_codes_one_call():
    """l=5, M=32, K=96, D=32, N(0,1)/sqrt(lM) filters, k=10, values U[-1, 1]."""
    W = ConvOperator.random(96, 32, 5, 32, rng=0)
    model = ModelSparse(10)
    Z = model.sample(W.out_shape, 1000, rng=1)
    res = iht(W.T, W.T @ Z, model, max_iter=50)
    err = rel_err(res.z, Z)
    assert res.z.shape == Z.shape and np.isfinite(res.z).all()
    assert (err <= 1e-6).mean() >= 0.99
    assert res.converged.mean() >= 0.99
    assert res.residual_norms.shape == (res.n_iter.max() + 1, 1000)


# ------------------------------------------------------------------ reference loop
@pytest.mark.parametrize(
    "K, M, l, D, stride, pool, dtype",
    [
        (12, 3, 4, 20, 1, None, np.float64),
        (10, 2, 3, 21, 2, 2, np.float64),
        (8, 2, (3, 3), (9, 9), 1, (2, 2), np.float64),
        (8, 2, (2, 3), (8, 9), (2, 1), None, np.float32),
    ],
)
def test_iht_matches_dense_reference(K, M, l, D, stride, pool, dtype):
    W = ConvOperator.random(K, M, l, D, stride=stride, rng=3, dtype=dtype)
    W = W.with_filters(W.filters * np.asarray(0.7, dtype=dtype))  # keep the unit step stable
    model = ModelSparse(3, pool=pool, ndim=len(W.out_shape) - 1)
    Z = model.sample(W.out_shape, 4, rng=5, dtype=dtype)
    Y = W.T @ Z
    res = iht(W.T, Y, model, max_iter=6, tol=0.0)
    assert res.z.dtype == dtype and (res.n_iter == 6).all()
    Dm = W.T.to_dense().astype(np.float64)
    atol = 1e-10 if dtype == np.float64 else 2e-4
    for b in range(4):
        ref = dense_iht(Dm, Y[b].astype(np.float64), model, W.out_shape, 6)
        np.testing.assert_allclose(res.z[b], ref, atol=atol)
        hist = [np.linalg.norm(Y[b])]
        z = np.zeros(Dm.shape[1])
        for _ in range(6):
            z = model.project((z + Dm.T @ (Y[b].ravel() - Dm @ z)).reshape(W.out_shape)).ravel()
            hist.append(np.linalg.norm(Y[b].ravel() - Dm @ z))
        np.testing.assert_allclose(
            res.residual_norms[:, b], hist, rtol=1e-3 if atol > 1e-9 else 1e-8
        )


def test_topk_model_standard_iht_recovers():
    W = ConvOperator.random(24, 4, 5, 40, rng=0)
    model = TopKSparse(3)
    Z = model.sample(W.out_shape, 8, rng=2)
    res = iht(W.T, W.T @ Z, model, step="normalized", max_iter=200)
    assert res.converged.all() and (rel_err(res.z, Z) < 1e-5).all()


# ------------------------------------------------------------------ per-signal stopping
def test_converged_signals_stop_costing_work():
    rng = np.random.default_rng(0)
    W = ConvOperator.random(16, 3, 4, 24, rng=1)
    W = W.with_filters(0.5 * W.filters)
    Dm = W.T.to_dense()
    Phi = CountingMatrix(Dm, W.out_shape, W.in_shape)
    model = ModelSparse(2)
    Z = model.sample(W.out_shape, 6, rng=3)
    Z[0] = 0.0  # y = 0: converged before the first iteration
    Y = Phi @ Z
    Y[5] = rng.standard_normal(Y[5].shape)  # not model-sparse: runs longer or to max_iter
    Phi.rows = 0
    res = iht(Phi, Y, model, max_iter=40)
    assert res.n_iter[0] == 0 and res.converged[0]
    np.testing.assert_array_equal(res.z[0], 0)
    assert np.isnan(res.residual_norms[1:, 0]).all()
    # 2 applications per iteration per active signal, nothing for stopped ones
    assert Phi.rows == 2 * res.n_iter.sum()
    assert len(set(res.n_iter.tolist())) > 1
    # each signal's result equals solving it alone
    for b in (1, 5):
        alone = iht(Phi, Y[b], model, max_iter=40)
        np.testing.assert_allclose(alone.z, res.z[b], atol=1e-12)
        assert alone.n_iter == res.n_iter[b]


def test_single_signal_result_types_and_z0():
    W = ConvOperator.random(12, 2, 3, 16, rng=2)
    model = ModelSparse(2)
    z = model.sample(W.out_shape, rng=4)
    res = iht(W.T, W.T @ z, model, max_iter=100, step="normalized")
    assert res.z.shape == W.out_shape and isinstance(res.n_iter, int)
    assert isinstance(res.converged, bool) and res.converged and not res.diverged
    assert res.residual_norms.ndim == 1
    warm = iht(W.T, W.T @ z, model, max_iter=100, z0=res.z)
    assert warm.n_iter <= 2 and np.allclose(warm.z, z, atol=1e-5)


def test_callback_receives_state_and_can_stop():
    W = ConvOperator.random(12, 2, 3, 16, rng=2)
    model = ModelSparse(2)
    Z = model.sample(W.out_shape, 3, rng=4)
    seen = []

    def cb(info):
        seen.append((info["iteration"], info["z"].shape[0], tuple(info["active"])))
        return info["iteration"] == 2

    res = iht(W.T, W.T @ Z, model, max_iter=50, tol=0.0, callback=cb)
    assert [s[0] for s in seen] == [1, 2]
    assert seen[0][1:] == (3, (0, 1, 2))
    assert (res.n_iter == 2).all() and not res.converged.any()


# ------------------------------------------------------------------ must-show 4
def test_scaled_filters_unit_step_flagged_normalized_recovers():
    W = ConvOperator.random(24, 4, 5, 40, rng=0)
    W3 = W.with_filters(3 * W.filters)
    model = ModelSparse(3)
    Z = model.sample(W.out_shape, 20, rng=1)
    Y = W3.T @ Z
    with pytest.warns(IHTDivergenceWarning, match="diverged on 20 of 20"):
        bad = iht(W3.T, Y, model, max_iter=50)
    assert not bad.converged.any() and bad.diverged.all()
    assert np.isfinite(bad.z).all() and np.isfinite(bad.residual_norms[0]).all()
    # returned iterates are the best seen, not the exploded last ones
    final = np.linalg.norm((Y - W3.T @ bad.z).reshape(20, -1), axis=1)
    np.testing.assert_allclose(final, np.nanmin(bad.residual_norms, axis=0), rtol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = iht(W3.T, Y, model, max_iter=100, step="normalized")
    assert good.converged.all() and (rel_err(good.z, Z) <= 1e-6).all()


# ------------------------------------------------------------------ must-show 3
@pytest.mark.parametrize(
    "l, D, pool, by",
    [(5, 30, None, "abs"), (3, 17, 2, "value"), ((3, 3), (10, 11), (2, 2), "value")],
)
def test_cnn_layer_is_first_iht_iteration(l, D, pool, by):
    W = ConvOperator.random(6, 3, l, D, rng=7)
    model = ModelSparse(4, pool=pool, by=by, ndim=len(W.out_shape) - 1)
    X = np.random.default_rng(0).standard_normal((5, *W.in_shape))
    H = cnn_layer(W, X, model)
    np.testing.assert_array_equal(H, iht(W.T, X, model, max_iter=1, step=1.0).z)
    np.testing.assert_allclose(cnn_layer(W, X[2], model), H[2], rtol=1e-12)
    np.testing.assert_array_equal(H, model.project(W @ X, batched=True))


@pytest.mark.parametrize("k_frac", [1.0, 0.3])
def test_cnn_layer_equals_torch_maxpool_unpool(k_frac):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    filters = np.abs(rng.standard_normal((5, 3, 3, 3)))
    W = ConvOperator(filters, (3, 11, 12))
    X = np.abs(rng.standard_normal((4, 3, 11, 12)))  # non-negative: ReLU-net regime
    h = F.conv2d(torch.from_numpy(X), torch.from_numpy(filters))
    pooled, idx = F.max_pool2d(h, 2, stride=2, ceil_mode=True, return_indices=True)
    n_units = pooled[0].numel()
    k = int(k_frac * n_units)
    flat = pooled.reshape(4, -1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep.scatter_(1, torch.topk(flat, k, dim=1).indices, True)
    pooled = torch.where(keep.reshape(pooled.shape), pooled, 0.0)
    ref = F.max_unpool2d(pooled, idx, 2, stride=2, output_size=h.shape[2:]).numpy()
    out = cnn_layer(W, X, ModelSparse(k, pool=2, by="value"))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out != 0, ref != 0)


def test_one_step_reconstruction_theorem_3_3_is_small():
    """x_hat = W^T M(W x, k) approximates x = W^T z for model-k-sparse z."""
    W = ConvOperator.random(96, 32, 5, 32, rng=0)
    model = ModelSparse(10)
    Z = model.sample(W.out_shape, 50, rng=2)
    X = W.T @ Z
    Xhat = W.T @ cnn_layer(W, X, model)
    assert np.median(rel_err(Xhat, X)) < 0.5


# ------------------------------------------------------------------ errors
def test_errors():
    W = ConvOperator.random(6, 2, 3, 10, rng=0)
    model = ModelSparse(2)
    y = np.zeros(W.in_shape)
    with pytest.raises(ValueError, match="non-finite"):
        iht(W.T, np.full(W.in_shape, np.nan), model)
    with pytest.raises(ValueError, match="'y' has shape"):
        iht(W.T, np.zeros((3, 10)), model)
    with pytest.raises(ValueError, match="'step'"):
        iht(W.T, y, model, step=-1.0)
    with pytest.raises(ValueError, match="'step'"):
        iht(W.T, y, model, step="fast")
    with pytest.raises(TypeError, match="'step'"):
        iht(W.T, y, model, step=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'max_iter'"):
        iht(W.T, y, model, max_iter=-1)
    with pytest.raises(ValueError, match="'tol'"):
        iht(W.T, y, model, tol=float("nan"))
    with pytest.raises(ValueError, match="'z0'"):
        iht(W.T, y, model, z0=np.zeros((2, 8)))
    with pytest.raises(ValueError, match="non-finite"):
        iht(W.T, y, model, z0=np.full(W.out_shape, np.inf))
    with pytest.raises(TypeError, match="'Phi'"):
        iht("not an operator", y, model)  # matrices are accepted (as_operator)
    with pytest.raises(TypeError, match="'model'"):
        iht(W.T, y, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ndim=2"):
        iht(W.T, y, ModelSparse(2, ndim=2))
    with pytest.raises(ValueError, match="exceeds"):
        iht(W.T, y, ModelSparse(7))
    with pytest.raises(TypeError, match="'W'"):
        cnn_layer("W", y, model)  # type: ignore[arg-type]  (matrices are accepted)
    with pytest.raises(TypeError, match="'model'"):
        cnn_layer(W, y, None)  # type: ignore[arg-type]
    res = iht(W.T, y, model, max_iter=0)
    assert res.converged and res.n_iter == 0  # y = 0 is solved by z = 0


# ------------------------------------------------------------------ CoSaMP
@pytest.mark.parametrize("model", [ModelSparse(4), ModelSparse(4, pool=3), TopKSparse(4)])
def test_cosamp_recovers_exactly(model):
    W = ConvOperator.random(24, 8, 5, 32, rng=0)
    Z = model.sample(W.out_shape, 30, rng=3)
    res = cosamp(W.T, W.T @ Z, model)
    assert res.converged.all() and not res.diverged.any()
    assert (rel_err(res.z, Z) <= 1e-8).all()
    assert res.n_iter.max() <= 10


def test_cosamp_beats_iht_where_unit_step_fails():
    W = ConvOperator.random(96, 32, 5, 32, rng=0)
    model = ModelSparse(20)
    Z = model.sample(W.out_shape, 50, rng=5)
    Y = W.T @ Z
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IHTDivergenceWarning)
        r_iht = iht(W.T, Y, model, max_iter=50)
    r_cos = cosamp(W.T, Y, model)
    assert (rel_err(r_cos.z, Z) <= 1e-6).mean() > (rel_err(r_iht.z, Z) <= 1e-6).mean()
    assert (rel_err(r_cos.z, Z) <= 1e-6).mean() >= 0.99


def test_cosamp_single_signal_zero_and_errors():
    W = ConvOperator.random(12, 4, 3, 16, rng=2)
    model = ModelSparse(2)
    res = cosamp(W.T, np.zeros(W.in_shape), model)
    assert res.converged and res.n_iter == 0 and not res.z.any()
    z = model.sample(W.out_shape, rng=0)
    one = cosamp(W.T, W.T @ z, model, z0=z)
    assert one.converged and one.n_iter <= 1 and np.allclose(one.z, z)
    with pytest.raises(ValueError, match="'cg_tol'"):
        cosamp(W.T, W.T @ z, model, cg_tol=-1.0)
    with pytest.raises(ValueError, match="'cg_iter'"):
        cosamp(W.T, W.T @ z, model, cg_iter=-3)
    with pytest.raises(ValueError, match="non-finite"):
        cosamp(W.T, np.full(W.in_shape, np.inf), model)
    with pytest.raises(TypeError, match="'Phi'"):
        cosamp(None, W.T @ z, model)  # type: ignore[arg-type]


# ------------------------------------------------- sparse codes take the shifted-filter path
@pytest.mark.parametrize(
    "K, M, l, D, stride, padding, dtype",
    [
        (16, 3, 5, 30, 1, "valid", np.float64),
        (16, 2, 4, 21, 2, "valid", np.float32),
        (12, 3, (3, 2), (9, 10), (2, 1), "valid", np.float64),
        (12, 3, 3, 20, 1, "same", np.float64),
    ],
)
def test_model_sparse_synthesis_equals_gemm_engine(K, M, l, D, stride, padding, dtype):
    W = ConvOperator.random(K, M, l, D, stride=stride, padding=padding, rng=1, dtype=dtype)
    model = ModelSparse(3, ndim=len(W.out_shape) - 1)
    Z = model.sample(W.out_shape, 7, rng=2, dtype=dtype)
    assert W._sparse_ok(Z)  # IHT iterates go through the operator's sparse-code adjoint
    ref = W.with_engine("gemm").T @ Z
    got = W.T @ Z
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-12 if dtype == np.float64 else 1e-5)


class Identity(LinearOperator):
    """Operator that hands back its input array itself (allowed by the protocol)."""

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y


def test_iht_never_modifies_y_even_if_operator_returns_its_input():
    Phi = Identity((4, 6), (4, 6), np.float64)
    Y = np.random.default_rng(0).standard_normal((3, 4, 6))
    Y0 = Y.copy()
    res = iht(Phi, Y, ModelSparse(2), max_iter=5)
    np.testing.assert_array_equal(Y, Y0)
    np.testing.assert_array_equal(res.z, ModelSparse(2).project(Y0, batched=True))


def test_complex_z0_is_refused_like_complex_y():
    W = ConvOperator.random(6, 2, 3, 10, rng=0)
    y = W.T @ ModelSparse(2).sample(W.out_shape, rng=1)
    with pytest.raises(TypeError, match="'z0'.*complex"):
        iht(W.T, y, ModelSparse(2), z0=np.ones(W.out_shape, dtype=complex))
    with pytest.raises(TypeError, match="'y'.*complex"):
        iht(W.T, y.astype(complex), ModelSparse(2))
    with pytest.raises(TypeError, match="'z0'.*complex"):
        cosamp(W.T, y, ModelSparse(2), z0=np.ones(W.out_shape, dtype=complex))
