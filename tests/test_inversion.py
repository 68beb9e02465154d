"""invert_network: exact recovery when determined, each method against a dense reference."""

from __future__ import annotations

import numpy as np
import pytest

from modelcs import invert_network
from modelcs.adapters import network

torch = pytest.importorskip("torch")
nn = torch.nn


def _net(*mods, seed=0, bias=None):
    torch.manual_seed(seed)
    seq = nn.Sequential(*mods).double()
    if bias is not None:
        for m, b in zip([m for m in seq if isinstance(m, nn.Conv2d)], bias, strict=True):
            nn.init.constant_(m.bias, b)
    return network(seq)


def _dense(net, name, in_shape):
    W = net[name].conv.operator(in_shape, dtype=np.float64)
    return W, W.to_dense(), net[name].conv.bias.astype(np.float64)


def test_known_switches_full_rank_pinv_is_exact():
    net = _net(nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
               nn.Conv2d(16, 96, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
               bias=[2.0, 2.0])
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    fwd = net.forward(x)
    for start in ("5", "4"):
        res = invert_network(net, fwd.activations[start], start=start, truth=fwd)
        assert res.x.shape == x.shape
        assert np.all(res.rel_error <= 1e-8), res.rel_error
        assert [r["name"] for r in res.layers][-1] == "0"
        for r in res.layers:  # every convolution's input is recovered exactly ...
            if r["kind"] == "conv":
                assert np.all(r["rel_error"] <= 1e-8), r
        # ... while an unpooled activation is not (its non-maximal entries are unknown)
        assert np.all(res.layers[0]["rel_error"] > 0.1) if start == "5" else True
    # fixed switches cannot place the values: a real error, reported per layer
    res = invert_network(net, fwd.activations["5"], start="5", switches="fixed", truth=fwd)
    assert np.all(res.rel_error > 0.05)
    assert res.layers[0]["method"] == "fixed switches"


def test_pinv_and_transpose_match_dense_least_squares():
    # underdetermined on purpose: the minimum-norm solution is what pinv must return
    net = _net(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), seed=1)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8))
    fwd = net.forward(x)
    h = fwd.activations["2"]
    W, Wd, b = _dense(net, "0", (3, 8, 8))
    pre = fwd.activations["0"][0]
    sw = fwd.switches["2"][0]
    mask = np.zeros(pre.shape, bool)
    np.put_along_axis(mask.reshape(4, -1), sw.reshape(4, -1), True, axis=1)
    mask &= pre > 0
    rows = mask.ravel()
    rhs = (pre - b[:, None, None]).ravel()[rows]
    ref = np.linalg.lstsq(Wd[rows], rhs, rcond=None)[0]
    res = invert_network(net, h, start="2", truth=fwd, method="pinv")
    np.testing.assert_allclose(res.x.ravel(), ref, rtol=0, atol=1e-8 * np.abs(ref).max())
    assert res.layers[-1]["known_fraction"] == pytest.approx(rows.mean())
    # transpose: c W^T z with the least-squares scale c on the known rows
    z = np.where(rows, (pre - b[:, None, None]).ravel(), 0.0)
    xt = Wd.T @ z
    c = (Wd @ xt)[rows] @ z[rows] / np.sum((Wd @ xt)[rows] ** 2)
    res_t = invert_network(net, h, start="2", truth=fwd, method="transpose")
    np.testing.assert_allclose(res_t.x.ravel(), c * xt, rtol=1e-10, atol=1e-12)


def _sparse_net():
    # conv1's negative bias makes its ReLU output sparse; conv2 is overdetermined on it
    return _net(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 24, 3, padding=1),
                nn.ReLU(), seed=2, bias=[-0.4, 3.0])


def test_iht_matches_least_squares_on_the_true_support():
    net = _sparse_net()
    x = np.random.default_rng(2).standard_normal((1, 1, 6, 6))
    fwd = net.forward(x)
    r1 = fwd.activations["1"][0]
    assert 0.1 < np.mean(r1 > 0) < 0.7
    res = invert_network(net, fwd.activations["3"], start="3", truth=fwd, method="iht",
                         max_iter=500, keep_estimates=True)
    conv2 = next(r for r in res.layers if r["name"] == "2")
    assert conv2["method"] == "iht" and conv2["k"] == [int((r1 > 0).sum())]
    W, Wd, b = _dense(net, "2", (3, 6, 6))
    pre = fwd.activations["2"][0]
    rows = (pre > 0).ravel()
    cols = (r1 > 0).ravel()
    ref = np.zeros(r1.size)
    ref[cols] = np.linalg.lstsq(Wd[rows][:, cols], (pre - b[:, None, None]).ravel()[rows],
                                rcond=None)[0]
    np.testing.assert_allclose(conv2["estimate"].ravel(), ref, atol=1e-6 * np.abs(ref).max())
    assert conv2["rel_error"][0] <= 1e-6
    # the image conv falls back to pinv (its input is not sparse) and says so
    assert res.layers[-1]["method"] == "pinv (input is not sparse)"
    assert res.rel_error.shape == (1,)  # conv1 keeps few rows: the image is underdetermined


def test_algorithm2_matches_cvxpy_lasso_on_its_support():
    cp = pytest.importorskip("cvxpy")
    net = _sparse_net()
    x = np.random.default_rng(3).standard_normal((1, 1, 6, 6))
    fwd = net.forward(x)
    lam_rel = 1e-2
    res = invert_network(net, fwd.activations["3"], start="3", truth=fwd, method="algorithm2",
                         lam=lam_rel, max_iter=20000, keep_estimates=True)
    conv2 = next(r for r in res.layers if r["name"] == "2")
    assert conv2["method"] == "algorithm2"
    est = conv2["estimate"].ravel()
    W, Wd, b = _dense(net, "2", (3, 6, 6))
    pre = fwd.activations["2"][0]
    rows = (pre > 0).ravel()
    A = Wd[rows]
    y = (pre - b[:, None, None]).ravel()[rows]
    lam = lam_rel * np.abs(A.T @ y).max()
    S = est != 0
    assert S.sum() <= conv2["k"][0]
    z = cp.Variable(int(S.sum()))
    cp.Problem(cp.Minimize(0.5 * cp.sum_squares(A[:, S] @ z - y) + lam * cp.norm1(z))).solve()
    ref = np.zeros_like(est)
    ref[S] = z.value
    np.testing.assert_allclose(est, ref, atol=1e-4 * np.abs(ref).max())
    # the l1 heuristic keeps only true nonzeros of the sparse input, and the estimate is close
    r1 = fwd.activations["1"][0].ravel()
    assert not np.any(S & (r1 == 0))
    assert conv2["rel_error"][0] < 0.1


def test_refusals_name_the_layer():
    net = network(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Tanh(), nn.Conv2d(4, 4, 3)))
    x = np.zeros((1, 1, 8, 8))
    fwd = net.forward(x)
    with pytest.raises(ValueError, match=r"'start' = '3'.*ends at layer '2' of type Tanh"):
        invert_network(net, np.zeros((1, 4, 4, 4)), start="3", truth=fwd)
    with pytest.raises(ValueError, match="parameter 'h' has shape"):
        invert_network(net, np.zeros((1, 4, 5, 5)), start="1", truth=fwd)
    with pytest.raises(ValueError, match="parameter 'method'"):
        invert_network(net, fwd.activations["1"], start="1", truth=fwd, method="magic")
    with pytest.raises(ValueError, match="needs the sparsity"):
        invert_network(network(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(),
                                             nn.Conv2d(2, 8, 3))),
                       np.zeros((1, 8, 4, 4)), start="2", method="iht", input_shape=(1, 8, 8))
    pooled = network(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)))
    with pytest.raises(ValueError, match="switches='known' needs 'truth'"):
        invert_network(pooled, np.zeros((1, 2, 3, 3)), start="1", input_shape=(1, 8, 8))


def test_bounds_and_result_contract():
    from modelcs import RecoveryResult, frame_bounds, theorem_a5_bound

    net = _net(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), bias=[0.5])
    x = np.random.default_rng(4).standard_normal((2, 8, 8))  # unbatched
    fwd = net.forward(x)
    res = invert_network(net, fwd.activations["2"][0], start="2", truth=fwd, bounds=True)
    assert isinstance(res, RecoveryResult) and res.z.shape == (2, 8, 8) and res.x is res.z
    assert res.n_iter == 3 and isinstance(res.converged, bool)
    conv = res.layers[-1]
    W = net["0"].conv.operator((2, 8, 8), dtype=np.float64)
    assert conv["frame_bounds"] == pytest.approx(frame_bounds(W), rel=1e-6)
    pre = fwd.activations["0"][0]
    c = np.zeros_like(pre)
    sw = fwd.switches["2"][0].reshape(8, -1)
    np.put_along_axis(c.reshape(8, -1), sw, np.take_along_axis(pre.reshape(8, -1), sw, 1), 1)
    c = np.where(c > 0, c - net["0"].conv.bias[:, None, None], 0.0)
    want = theorem_a5_bound(W, c, pool=(2, 2), stride=(2, 2))
    np.testing.assert_allclose(conv["theorem_a5_bound"], want, rtol=1e-8)
    # the residual is that of the forward pass of the estimate
    f = net.forward(res.z[None]).activations["2"][0]
    assert res.residual_norm == pytest.approx(np.linalg.norm(f - fwd.activations["2"][0]))
