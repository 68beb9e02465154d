"""Tests for modelcs.preimages: ReLU preimages (Theorem 4, Appendix A3), omnidirectionality
(Theorem 5) and linearizations of ReLU networks (Section 3).

The references here are independent of the library's algorithm:

* preimage kind: optimise every coordinate (max and min) over the preimage polyhedron in the
  original x-space with ``scipy.optimize.linprog`` -- infeasible -> empty, any unbounded LP ->
  unbounded, all widths ~0 -> singleton, else compact;
* omnidirectionality: the cone test ``max +-x_j s.t. A x <= 0, |x| <= 1`` (Corollary 2 ii);
* linearization: explicit products of dense ``diag(mask) @ W`` matrices, finite differences
  and (if installed) torch autograd.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from modelcs import (
    ConvOperator,
    distant_preimage_point,
    is_omnidirectional,
    linearize,
    preimage_kind,
    preimage_point,
)


# ----------------------------------------------------------------------------- references
def brute_kind(A, b, y, tol=1e-6):
    """Classify the preimage by optimising each coordinate over it (2n LPs)."""
    m, n = A.shape
    P = y > 0
    kw = dict(bounds=[(None, None)] * n, method="highs")
    if P.any():
        kw.update(A_eq=A[P], b_eq=y[P] - b[P])
    if (~P).any():
        kw.update(A_ub=A[~P], b_ub=-b[~P])
    lo, hi = np.zeros(n), np.zeros(n)
    for j in range(n):
        for s in (1.0, -1.0):
            c = np.zeros(n)
            c[j] = -s
            r = linprog(c, **kw)
            if r.status == 2:
                return "empty"
            if r.status == 3:
                return "unbounded"
            assert r.status == 0, r.message
            (hi if s > 0 else lo)[j] = -r.fun * s
    scale = 1.0 + max(np.abs(hi).max(), np.abs(lo).max())
    return "singleton" if (hi - lo).max() <= tol * scale else "compact"


def cone_is_omni(A, tol=1e-7):
    """Corollary 2 ii: A is omnidirectional iff {x : A x <= 0} = {0}."""
    m, n = A.shape
    for j in range(n):
        for s in (1.0, -1.0):
            c = np.zeros(n)
            c[j] = -s
            r = linprog(c, A_ub=A, b_ub=np.zeros(m), bounds=[(-1, 1)] * n, method="highs")
            assert r.status == 0
            if -r.fun > tol:
                return False
    return True


def relu(v):
    return np.maximum(v, 0.0)


def in_preimage(A, b, y, x, rtol=1e-6):
    return np.abs(relu(A @ x + b) - y).max() <= rtol * (1.0 + np.abs(y).max() + np.abs(b).max())


E1, E2, E3 = np.eye(3)


# --------------------------------------------------------------------- omnidirectionality
@pytest.mark.parametrize(
    "rows, expected",
    [
        ([[1, 0], [-1, 0], [0, 1]], False),  # 0 on the boundary of the hull
        ([[1, 0], [-1, 0], [0, 1], [0, -1]], True),  # CReLU pair of a basis
        ([[1, 1], [1, -1], [-1, 0]], True),  # a simplex around 0
        ([[1, 1], [1, -1], [1, 0]], False),  # all in a half-space
        ([[1, 0], [-1, 0]], False),  # balanced but does not span R^2
        ([[1, 0], [-1, 0], [2, 0], [-3, 0]], False),  # many rows, rank 1
        ([[1, 0], [0, 1]], False),  # m <= n (Corollary 6)
        ([[1, 0], [-1, 0], [0, 1], [0, 0]], False),  # a zero row does not help
        ([[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0]], True),  # ... nor hurt
        ([[1.0], [-1e-3]], True),  # n = 1, scaled rows
        ([[1.0], [2.0]], False),
        ([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], False),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]], True),
    ],
)
def test_omnidirectional_hand_built(rows, expected):
    A = np.array(rows, dtype=float)
    assert is_omnidirectional(A) is expected
    assert cone_is_omni(A) is expected


def test_omnidirectional_crelu_frame_and_scaling(rng):
    F = rng.standard_normal((4, 4))
    A = np.vstack([F, -F])
    assert is_omnidirectional(A)
    scales = 10.0 ** rng.uniform(-6, 6, size=(8, 1))
    assert is_omnidirectional(scales * A)
    # one row removed from [F; -F] with F a basis: a vector-free half-space appears
    assert not is_omnidirectional(A[1:])
    assert not cone_is_omni(A[1:])


def test_omnidirectional_accepts_operator_and_int():
    assert is_omnidirectional(np.array([[1, 0], [-1, 0], [0, 1], [0, -1]]))
    W = ConvOperator(np.array([[[1.0]], [[-1.0]]]), 3)  # x -> (x, -x): CReLU of the identity
    assert is_omnidirectional(W)
    assert not is_omnidirectional(ConvOperator(np.array([[[1.0]], [[2.0]]]), 3))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    extra=st.integers(0, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_omnidirectional_laws(n, extra, seed):
    """Invariant under row permutation and positive scaling; monotone under adding rows."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n + 1 + extra, n))
    omni = is_omnidirectional(A)
    perm = rng.permutation(A.shape[0])
    scale = rng.uniform(0.01, 100.0, size=(A.shape[0], 1))
    assert is_omnidirectional(scale[perm] * A[perm]) is omni
    if omni:
        assert is_omnidirectional(np.vstack([A, rng.standard_normal((2, n))]))
    assert omni is cone_is_omni(A)


def _boundary_family(rng, n, inward):
    """Rows in the closed half-space {<a, v> >= 0} whose rows in v-perp balance: 0 lies on the
    boundary of the hull (not omnidirectional); with ``inward`` a row -v is added (0 interior).
    """
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    v, perp = Q[:, 0], Q[:, 1:]
    rows = []
    if n > 1:
        F = rng.standard_normal((n - 1, n - 1))
        rows += list(np.vstack([F, -F]) @ perp.T)  # balanced and spanning within v-perp
    for _ in range(int(rng.integers(1, 4))):
        a = rng.standard_normal(n)
        rows.append(a + (abs(a @ v) - a @ v) * v + 0.1 * v)  # strictly on the v side
    if inward:
        rows.append(-v * rng.uniform(0.01, 2.0))
    A = np.array(rows)
    return A[rng.permutation(len(A))]


def test_omnidirectional_boundary_family_agrees_with_cone_test():
    """0 exactly on the hull boundary (a hull-membership test would say yes) versus inside."""
    rng = np.random.default_rng(5)
    for trial in range(40):
        n = int(rng.integers(1, 6))
        inward = bool(trial % 2)
        A = _boundary_family(rng, n, inward)
        assert is_omnidirectional(A) is inward, (trial, n)
        assert cone_is_omni(A) is inward, (trial, n)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), mode=st.sampled_from(["generic", "inactive", "point"]))
def test_preimage_kind_invariant_under_row_scaling_and_permutation(seed, mode):
    """Scaling row i of (A, b, y) by c_i > 0 or permuting rows leaves the preimage unchanged."""
    rng = np.random.default_rng(seed)
    A, b, y = _random_layer(rng, mode)
    kind = preimage_kind(A, b, y)
    c = rng.uniform(0.01, 100.0, size=A.shape[0])
    perm = rng.permutation(A.shape[0])
    assert preimage_kind((c[:, None] * A)[perm], (c * b)[perm], (c * y)[perm]) == kind
    if kind != "empty":
        x = preimage_point((c[:, None] * A)[perm], (c * b)[perm], (c * y)[perm])
        assert in_preimage(A, b, y, x)


# ---------------------------------------------------------------- hand-built preimages
def _case(name):
    """(A, b, y, expected kind) for hand-built layers of every kind."""
    p = np.array([0.5, -2.0])
    T = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # omnidirectional simplex
    cases = {
        # rank(A|_{y>0}) = n: singleton (Theorem 4 i)
        "singleton_rank": (T, np.zeros(3), np.array([1.0, 2.0, 0.0]), "singleton"),
        # all hyperplanes through p, normals omnidirectional: singleton {p} (Theorem 4 ii)
        "singleton_omni_point": (T, -T @ p, np.zeros(3), "singleton"),
        # same plus a strictly inactive extra row
        "singleton_omni_subset": (
            np.vstack([T, [1.0, 1.0]]),
            np.r_[-T @ p, -10.0],
            np.zeros(4),
            "singleton",
        ),
        # {e1,-e1,e2} through a point: 0 on the hull boundary -> unbounded (not singleton)
        "unbounded_boundary": (np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]), np.zeros(3),
                               np.zeros(3), "unbounded"),  # the ray x1 = 0, x2 <= 0
        "unbounded_halfspace": (np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2), np.zeros(2),
                                "unbounded"),
        # box -1 <= x <= 1: compact with positive volume
        "compact_box": (np.vstack([np.eye(2), -np.eye(2)]), -np.ones(4), np.zeros(4), "compact"),
        # segment x1 = 0, -1 <= x2 <= 1: compact, zero volume, not a singleton
        "compact_segment": (
            np.vstack([np.eye(2), -np.eye(2)]),
            np.array([0.0, -1.0, 0.0, -1.0]),
            np.zeros(4),
            "compact",
        ),
        # one active row fixes x1 = 1, inactive -e2, e2 bound x2: compact segment
        "compact_active": (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), np.array(
            [0.0, -1.0, -1.0]), np.array([1.0, 0.0, 0.0]), "compact"),
        # inconsistent equalities x1 = 1 and x1 = -1
        "empty_equalities": (np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]), np.zeros(3),
                             np.array([1.0, 1.0, 0.0]), "empty"),
        # infeasible inequalities x <= -1 and x >= 1
        "empty_inequalities": (np.array([[1.0], [-1.0]]), np.ones(2), np.zeros(2), "empty"),
        # a zero row with positive bias can only output its bias
        "empty_zero_row": (np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array(
            [1.0, 0.0, 0.0]), np.array([0.0, 1.0, 1.0]), "empty"),
        "singleton_zero_row": (np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array(
            [1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0]), "singleton"),
        # n = 3: one active row e3 and an omnidirectional triangle in the e1-e2 plane through
        # a point of the plane x3 = 1 -> singleton made by the subset (Theorem 4 ii, k = 2)
        "singleton_subset_3d": (
            np.vstack([E3, np.c_[T, np.zeros(3)], [0.0, 1.0, 5.0]]),
            np.r_[0.0, -T @ p, -100.0],
            np.r_[1.0, 0.0, 0.0, 0.0, 0.0],
            "singleton",
        ),
        # same with the triangle shifted off the point: a compact triangle
        "compact_triangle_3d": (
            np.vstack([E3, np.c_[T, np.zeros(3)]]),
            np.r_[0.0, -T @ p - 0.5],
            np.r_[1.0, 0.0, 0.0, 0.0],
            "compact",
        ),
    }
    return cases[name]


HAND_CASES = [
    "singleton_rank", "singleton_omni_point", "singleton_omni_subset", "unbounded_boundary",
    "unbounded_halfspace", "compact_box", "compact_segment", "compact_active",
    "empty_equalities", "empty_inequalities", "empty_zero_row", "singleton_zero_row",
    "singleton_subset_3d", "compact_triangle_3d",
]


@pytest.mark.parametrize("name", HAND_CASES)
def test_preimage_kind_hand_built(name):
    A, b, y, expected = _case(name)
    assert brute_kind(A, b, y) == expected  # the case is what we think it is
    assert preimage_kind(A, b, y) == expected
    if expected == "empty":
        with pytest.raises(ValueError, match="empty"):
            preimage_point(A, b, y)
    else:
        x = preimage_point(A, b, y)
        assert in_preimage(A, b, y, x)


def test_singleton_point_is_the_intersection():
    A, b, y, _ = _case("singleton_omni_subset")
    np.testing.assert_allclose(preimage_point(A, b, y), [0.5, -2.0], atol=1e-9)
    A, b, y, _ = _case("singleton_subset_3d")
    np.testing.assert_allclose(preimage_point(A, b, y), [0.5, -2.0, 1.0], atol=1e-9)


def test_scale_invariance_of_kind(rng):
    for name in HAND_CASES:
        A, b, y, expected = _case(name)
        for s in (1e-5, 1e5):
            assert preimage_kind(s * A, s * b, s * y) == expected, (name, s)
        # rescaling x: A (x/s) + b -- the preimage scales, the kind does not
        assert preimage_kind(A / 1e4, b, y) == expected, name


# ------------------------------------------------------------------- random layers (>= 300)
def _random_layer(rng, mode):
    n = int(rng.integers(2, 7))
    m = int(rng.integers(n - 1, 3 * n + 1))
    A = rng.standard_normal((m, n))
    if mode == "generic":
        b = rng.standard_normal(m)
        y = relu(A @ rng.standard_normal(n) + b)
    elif mode == "inactive":  # biased to inactive units: few equalities, many inequalities
        b = rng.standard_normal(m) - 2.5
        y = relu(A @ rng.standard_normal(n) + b)
    elif mode == "point_zero":  # all hyperplanes through p, y = ReLU(A p + b) = 0
        p = rng.standard_normal(n)
        b = -A @ p
        y = np.zeros(m)
    elif mode == "point":  # all hyperplanes through p, another input
        p = rng.standard_normal(n)
        b = -A @ p
        y = relu(A @ (p + rng.standard_normal(n)) + b)
    else:  # "unattainable": a random non-negative y, usually not an output
        b = rng.standard_normal(m)
        y = relu(rng.standard_normal(m))
    return A, b, y


def test_random_layers_agree_with_coordinate_lps():
    rng = np.random.default_rng(2019)
    modes = ["generic", "inactive", "point_zero", "point", "unattainable"]
    seen: Counter = Counter()
    disagreements = []
    for trial in range(300):
        mode = modes[trial % len(modes)]
        A, b, y = _random_layer(rng, mode)
        kind = preimage_kind(A, b, y)
        ref = brute_kind(A, b, y)
        seen[kind] += 1
        if kind != ref:
            disagreements.append((trial, mode, kind, ref))
        omni, ref_omni = is_omnidirectional(A), cone_is_omni(A)
        seen[f"omni={omni}"] += 1
        if omni != ref_omni:
            disagreements.append((trial, "omni", omni, ref_omni))
        if kind != "empty":
            assert in_preimage(A, b, y, preimage_point(A, b, y)), trial
        if mode != "unattainable":
            assert kind != "empty", trial
    assert disagreements == []
    # every kind and both omnidirectionality answers are well represented
    for key in ("singleton", "compact", "unbounded", "empty", "omni=True", "omni=False"):
        assert seen[key] >= 15, seen


# ------------------------------------------------------------------ distant preimage point
def test_distant_point_matches_direct_lp(rng):
    for _ in range(20):
        A, b, y = _random_layer(rng, "inactive")
        n = A.shape[1]
        if preimage_kind(A, b, y) in ("singleton", "empty"):
            continue
        c = rng.standard_normal(n)
        lo, hi = -3.0, 3.0
        x = distant_preimage_point(A, b, y, c, bounds=(lo, hi))
        assert in_preimage(A, b, y, x)
        assert x.min() >= lo - 1e-7 and x.max() <= hi + 1e-7
        P = y > 0
        kw = dict(bounds=[(lo, hi)] * n, method="highs", A_ub=A[~P], b_ub=-b[~P])
        if P.any():
            kw.update(A_eq=A[P], b_eq=y[P] - b[P])
        ref = linprog(-c, **kw)
        if ref.status == 2:  # the box misses the preimage
            continue
        assert ref.status == 0
        assert c @ x == pytest.approx(-ref.fun, rel=1e-7, abs=1e-7)
        xc = preimage_point(A, b, y)
        if np.all((xc >= lo) & (xc <= hi)):
            assert c @ x >= c @ xc - 1e-9


def test_distant_point_radius_and_default_direction():
    A, b, y, _ = _case("unbounded_boundary")
    x = distant_preimage_point(A, b, y, np.array([0.3, -1.0]), radius=2.0)
    xc = preimage_point(A, b, y)
    assert in_preimage(A, b, y, x)
    assert abs(x[0]) < 1e-12  # pinned by e1 and -e1
    assert x[1] == pytest.approx(xc[1] - 2.0)  # walked the radius down the ray
    x1 = distant_preimage_point(A, b, y, radius=2.0, rng=0)
    assert in_preimage(A, b, y, x1) and np.abs(x1 - xc).max() <= 2.0 + 1e-9
    np.testing.assert_array_equal(x1, distant_preimage_point(A, b, y, radius=2.0, rng=0))


def test_distant_point_appendix_a7_invariance(rng):
    """A wide-open preimage in [0,1]^n: an input far from x* with identical features."""
    n, m = 6, 4
    A = rng.standard_normal((m, n))
    b = -0.5 * np.ones(m)
    x_star = rng.uniform(0, 1, n)
    y = relu(A @ x_star + b)
    c = rng.uniform(0, 1, n)
    x = distant_preimage_point(A, b, y, c, bounds=(0.0, 1.0))
    np.testing.assert_allclose(relu(A @ x + b), y, atol=1e-9)
    assert np.linalg.norm(x - x_star) > 0.1


# -------------------------------------------------------------------- convolutional layers
@pytest.mark.parametrize("d", [1, 2])
def test_conv_layer_preimage_matches_dense(rng, d):
    if d == 1:
        W = ConvOperator.random(3, 2, 3, 7, stride=2, rng=1)
    else:
        W = ConvOperator.random(2, 1, (2, 2), (4, 4), stride=1, rng=2)
    bias = rng.standard_normal(W.out_shape[0]) - 0.3
    x = rng.standard_normal(W.in_shape)
    pre = W @ x + bias.reshape((-1,) + (1,) * d)
    y = relu(pre)
    A = W.to_dense()
    bfull = np.broadcast_to(bias.reshape((-1,) + (1,) * d), W.out_shape).ravel()
    kind = preimage_kind(W, bias, y)
    assert kind == preimage_kind(A, bfull, y.ravel()) == brute_kind(A, bfull, y.ravel())
    xp = preimage_point(W, bias, y)
    assert xp.shape == W.in_shape
    np.testing.assert_allclose(relu(W @ xp + bias.reshape((-1,) + (1,) * d)), y, atol=1e-8)


# ------------------------------------------------------------------------- linearization
def _dense_net(rng, sizes, bias_shift=0.0):
    return [
        (rng.standard_normal((sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]),
         rng.standard_normal(sizes[i + 1]) * 0.5 + bias_shift)
        for i in range(len(sizes) - 1)
    ]


def _forward(layers, x, relu_last=True):
    for i, (W, b) in enumerate(layers):
        x = W @ x + b
        if relu_last or i < len(layers) - 1:
            x = relu(x)
    return x


def test_linearize_dense_matches_explicit_product(rng):
    layers = _dense_net(rng, [5, 9, 7, 4], bias_shift=-0.2)
    x = rng.standard_normal(5)
    res = linearize(layers, x, keep_matrices=True, split=True)
    assert [(r.index, r.stage) for r in res] == [
        (1, "linear"), (1, "relu"), (2, "linear"), (2, "relu"), (3, "linear"), (3, "relu")]
    J, a = np.eye(5), x
    for i, (W, b) in enumerate(layers):
        pre = W @ a + b
        lin = W @ J
        J = (pre > 0)[:, None] * lin
        a = relu(pre)
        r_lin, r_relu = res[2 * i], res[2 * i + 1]
        np.testing.assert_allclose(r_lin.matrix, lin, atol=1e-12)
        np.testing.assert_allclose(r_relu.matrix, J, atol=1e-12)
        sv = np.linalg.svd(J, compute_uv=False)
        np.testing.assert_allclose(r_relu.singular_values, sv, atol=1e-12)
        rank = int((sv > max(J.shape) * np.finfo(float).eps * sv[0]).sum())
        assert r_relu.rank == rank and r_relu.n_zero == 5 - rank
        assert int(r_relu.n_active) == int((pre > 0).sum())
        if rank:
            assert r_relu.condition == pytest.approx(sv[0] / sv[rank - 1])


def test_linearize_is_exact_locally_and_batched(rng):
    layers = _dense_net(rng, [4, 12, 12, 3])
    X = rng.standard_normal((6, 4))
    res = linearize(layers, X, keep_matrices=True, relu_last=False)
    assert res[-1].stage == "linear"
    J = res[-1].matrix
    assert J.shape == (6, 3, 4)
    for i in range(6):
        d = rng.standard_normal(4)
        eps = 1e-7
        diff = (_forward(layers, X[i] + eps * d, False) - _forward(layers, X[i], False)) / eps
        np.testing.assert_allclose(diff, J[i] @ d, rtol=1e-5, atol=1e-6)
        single = linearize(layers, X[i], relu_last=False)
        np.testing.assert_allclose(single[-1].singular_values, res[-1].singular_values[i])


def test_linearize_zero_linearization_and_invariance_count():
    # every unit inactive: J = 0, all d0 directions invariant, condition 0 (Fig. 1 convention)
    layers = [(np.eye(3), -np.ones(3))]
    r = linearize(layers, np.zeros(3))[0]
    assert int(r.rank) == 0 and int(r.n_zero) == 3 and r.condition == 0.0
    # one active unit in R^2: rank 1, one invariant direction, condition 1
    A = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    r = linearize([(A, np.array([0.0, -5.0, -5.0]))], np.array([1.0, 0.0]))[0]
    assert int(r.rank) == 1 and int(r.n_zero) == 1 and r.condition == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linearize_conv_layers_match_dense(rng, dtype):
    W1 = ConvOperator.random(4, 2, (3, 3), (7, 7), padding="same", rng=3, dtype=dtype)
    W2 = ConvOperator.random(3, 4, (3, 3), W1.output_spatial, stride=2, rng=4, dtype=dtype)
    W3 = rng.standard_normal((5, W2.shape[0])).astype(dtype)
    b1 = (rng.standard_normal(4) * 0.1).astype(dtype)  # per channel
    b2 = (rng.standard_normal(W2.out_shape) * 0.1).astype(dtype)  # full
    b3 = rng.standard_normal(5).astype(dtype)
    X = rng.standard_normal((3, *W1.in_shape)).astype(dtype)
    res = linearize([(W1, b1), (W2, b2), (W3, b3)], X, keep_matrices=True)
    dense = [
        (W1.to_dense().astype(np.float64),
         np.broadcast_to(b1[:, None, None], W1.out_shape).ravel().astype(np.float64)),
        (W2.to_dense().astype(np.float64), b2.ravel().astype(np.float64)),
        (W3.astype(np.float64), b3.astype(np.float64)),
    ]
    ref = linearize(dense, X.reshape(3, -1).astype(np.float64), keep_matrices=True)
    atol = 1e-4 if dtype == np.float32 else 1e-12
    for r, q in zip(res, ref, strict=True):
        assert r.matrix.dtype == dtype
        np.testing.assert_array_equal(r.n_active, q.n_active)
        np.testing.assert_allclose(r.matrix, q.matrix, atol=atol)
        np.testing.assert_allclose(r.singular_values, q.singular_values, atol=10 * atol)


def test_linearize_matches_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    W1 = ConvOperator.random(3, 1, 3, 10, stride=2, rng=5)
    W2 = rng.standard_normal((4, W1.shape[0]))
    b1, b2 = rng.standard_normal(3) * 0.2, rng.standard_normal(4)
    x = rng.standard_normal((1, 10))
    res = linearize([(W1, b1), (W2, b2)], x, keep_matrices=True, relu_last=False)

    def f(t):
        h = torch.nn.functional.conv1d(t[None], torch.from_numpy(W1.filters.copy()), stride=2)[0]
        h = torch.relu(h + torch.from_numpy(b1)[:, None]).reshape(-1)
        return torch.from_numpy(W2) @ h + torch.from_numpy(b2)

    Jt = torch.autograd.functional.jacobian(f, torch.from_numpy(x)).reshape(4, -1).numpy()
    np.testing.assert_allclose(res[-1].matrix, Jt, atol=1e-12)


# ----------------------------------------------------------------------------- bad inputs
A3 = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((A3, np.zeros(3), np.array([1.0, -0.5, 0.0])), ValueError, "negative"),
        ((A3, np.zeros(3), np.zeros(4)), ValueError, "'y' has shape"),
        ((A3, np.zeros(2), np.zeros(3)), ValueError, "'b' has shape"),
        ((np.ones(3), np.zeros(3), np.zeros(3)), ValueError, "2-D matrix"),
        ((np.zeros((0, 2)), np.zeros(0), np.zeros(0)), ValueError, "at least one row"),
        ((np.array([[np.nan, 0.0]] * 3), np.zeros(3), np.zeros(3)), ValueError, "non-finite"),
        ((A3, np.zeros(3), np.array([np.inf, 0.0, 0.0])), ValueError, "non-finite"),
        ((A3.astype(complex), np.zeros(3), np.zeros(3)), TypeError, "real"),
        ((A3.astype(str), np.zeros(3), np.zeros(3)), TypeError, "numeric"),
    ],
)
def test_preimage_bad_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        preimage_kind(*args)
    with pytest.raises(exc, match=match):
        preimage_point(*args)


@pytest.mark.parametrize("tol", [0.0, -1.0, 1.0, "1e-7", True, float("nan")])
def test_bad_tol(tol):
    with pytest.raises(ValueError, match="'tol'"):
        preimage_kind(A3, None, np.zeros(3), tol=tol)
    with pytest.raises(ValueError, match="'tol'"):
        is_omnidirectional(A3, tol=tol)


def test_is_omnidirectional_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        is_omnidirectional(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        is_omnidirectional(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_operator_too_large_for_dense_lp():
    W = ConvOperator.random(64, 64, (3, 3), (32, 32), rng=0)
    with pytest.raises(ValueError, match="dense matrix"):
        preimage_kind(W, None, np.zeros(W.out_shape))


def test_conv_bias_shape_error():
    W = ConvOperator.random(2, 1, 2, 5, rng=0)
    with pytest.raises(ValueError, match=r"\(2,\) per channel"):
        preimage_kind(W, np.zeros(3), np.zeros(W.out_shape))


def test_distant_point_errors():
    A, b, y, _ = _case("singleton_rank")
    with pytest.raises(ValueError, match="single point"):
        distant_preimage_point(A, b, y)
    A, b, y, _ = _case("empty_equalities")
    with pytest.raises(ValueError, match="empty"):
        distant_preimage_point(A, b, y)
    A, b, y, _ = _case("unbounded_boundary")  # the ray x1 = 0, x2 <= 0
    with pytest.raises(ValueError, match="unbounded along"):
        distant_preimage_point(A, b, y, np.array([0.0, -1.0]))
    with pytest.raises(ValueError, match="does not meet"):
        distant_preimage_point(A, b, y, np.array([0.0, -1.0]), bounds=(5.0, 6.0))
    with pytest.raises(ValueError, match="'radius'"):
        distant_preimage_point(A, b, y, radius=-1.0)
    with pytest.raises(ValueError, match="'bounds'"):
        distant_preimage_point(A, b, y, bounds=(0.0,))
    with pytest.raises(ValueError, match="lower > upper"):
        distant_preimage_point(A, b, y, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="'direction'"):
        distant_preimage_point(A, b, y, 1.0)
    with pytest.raises(ValueError, match="'direction' has shape"):
        distant_preimage_point(A, b, y, np.ones(3))
    with pytest.raises(ValueError, match=r"'bounds\[0\]' has shape"):
        distant_preimage_point(A, b, y, bounds=(np.zeros(5), 1.0))


def test_linearize_bad_inputs():
    W = np.eye(3)
    with pytest.raises(ValueError, match="at least one"):
        linearize([], np.zeros(3))
    with pytest.raises(TypeError, match="sequence of"):
        linearize(W, np.zeros(3))
    with pytest.raises(TypeError, match="pair"):
        linearize([W], np.zeros(3))
    with pytest.raises(ValueError, match="returns 3 values"):
        linearize([(W, None), (np.eye(4), None)], np.zeros(3))
    with pytest.raises(ValueError, match="bias' has shape"):
        linearize([(W, np.zeros(4))], np.zeros(3))
    with pytest.raises(ValueError, match="'x' has shape"):
        linearize([(W, None)], np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        linearize([(W, None)], np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        linearize([(np.full((3, 3), np.inf), None)], np.zeros(3))
    with pytest.raises(ValueError, match="2-D matrix"):
        linearize([(np.ones(3), None)], np.zeros(3))
    with pytest.raises(ValueError, match="'rtol'"):
        linearize([(W, None)], np.zeros(3), rtol=2.0)
    with pytest.raises(TypeError, match="'x' must be a real"):
        linearize([(W, None)], np.zeros(3, dtype=complex))


def test_preimage_functions_take_any_matrix_kind():
    import scipy.sparse as sp

    from modelcs import as_operator, is_omnidirectional, linearize, preimage_kind

    rng = np.random.default_rng(4)
    A = rng.standard_normal((6, 3))
    b = rng.standard_normal(6)
    y = np.maximum(A @ rng.standard_normal(3) + b, 0)
    ref = preimage_kind(A, b, y)
    for M in (sp.csr_array(A), as_operator(A), A.tolist()):
        assert preimage_kind(M, b, y) == ref
    assert is_omnidirectional(sp.csr_array(A)) == is_omnidirectional(A)
    x = rng.standard_normal(3)
    a = linearize([(A, b)], x)[0]
    s = linearize([(sp.csr_array(A), b)], x)[0]
    np.testing.assert_allclose(s.singular_values, a.singular_values, rtol=1e-12)
