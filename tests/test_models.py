"""Sparsity models: projections against brute-force enumeration, properties, sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcs import BlockSparse, ModelSparse, TopKSparse
from modelcs.models import sample_model_sparse, topk_mask


# ------------------------------------------------------------------ brute force
def _unit_of(shape, pool):
    """Unit id of every entry of one code (independent of the implementation)."""
    ids = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        f, pos = idx[0], idx[1:]
        cells = () if pool is None else tuple(pi // p for pi, p in zip(pos, pool, strict=True))
        ids[idx] = (f, *cells)
    return ids.reshape(-1)


def brute_project(z, k, pool=None, by="abs"):
    """Best model point by enumerating every support with <= 1 entry per unit."""
    units = _unit_of(z.shape, pool)
    flat = z.reshape(-1)
    n_units = len(set(units))
    size = min(k, n_units)
    best, best_score = None, -np.inf
    for supp in itertools.combinations(range(flat.size), size):
        if len({units[i] for i in supp}) < size:
            continue
        vals = flat[list(supp)]
        score = (vals**2).sum() if by == "abs" else vals.sum()
        if score > best_score + 1e-12:
            best, best_score = supp, score
    out = np.zeros_like(flat)
    out[list(best)] = flat[list(best)]
    return out.reshape(z.shape)


def brute_fixed(z, k, pool):
    """M_fixed by loops: unit max by |.| placed at the unit's first (top-left) entry."""
    units = _unit_of(z.shape, pool)
    flat = z.reshape(-1)
    first, best = {}, {}
    for i, u in enumerate(units):
        first.setdefault(u, i)
        if u not in best or abs(flat[i]) > abs(flat[best[u]]):
            best[u] = i
    order = sorted(best, key=lambda u: -abs(flat[best[u]]))[:k]
    out = np.zeros_like(flat)
    for u in order:
        out[first[u]] = flat[best[u]]
    return out.reshape(z.shape)


def test_topk_mask_ties_lowest_index():
    keys = np.array([[2.0, 5.0, 2.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    m = topk_mask(keys, 3)
    assert m.tolist() == [
        [True, True, True, False, False],
        [True, True, True, False, False],
    ]


# ------------------------------------------------------------------ brute force equality
@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("by", ["abs", "value"])
def test_project_1d_blocks_brute_force(k, by):
    rng = np.random.default_rng(k)
    Z = rng.standard_normal((3, 4, 3))  # batch of 3 codes, K=4, n=3
    model = ModelSparse(k, by=by, ndim=1)
    P = model.project(Z)
    for b in range(3):
        np.testing.assert_array_equal(P[b], brute_project(Z[b], k, by=by))
        np.testing.assert_array_equal(model.project(Z[b]), P[b])


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 4, 4), (2, 3, 3), (1, 3, 5)])
def test_project_2d_pool2x2_brute_force(k, shape):
    rng = np.random.default_rng(10 * k + shape[1])
    Z = rng.standard_normal((2, *shape))
    model = ModelSparse(k, pool=(2, 2))
    P = model.project(Z)
    for b in range(2):
        np.testing.assert_array_equal(P[b], brute_project(Z[b], k, pool=(2, 2)))


@pytest.mark.parametrize("pool", [2, 3])
def test_project_1d_pool_brute_force_with_partial_edge(pool):
    rng = np.random.default_rng(pool)
    Z = rng.standard_normal((4, 2, 7))
    P = ModelSparse(3, pool=pool, ndim=1).project(Z)
    for b in range(4):
        np.testing.assert_array_equal(P[b], brute_project(Z[b], 3, pool=(pool,)))


def test_project_value_pool_brute_force():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(
        ModelSparse(3, pool=2, by="value").project(z, batched=False),
        brute_project(z, 3, pool=(2, 2), by="value"),
    )


@pytest.mark.parametrize("pool", [None, (2, 2), (2, 3)])
def test_fixed_switches_top_left(pool):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 5, 5))
    out = ModelSparse(4, pool=pool, switches="fixed").project(z, batched=False)
    np.testing.assert_array_equal(out, brute_fixed(z, 4, pool))


def test_ties_lowest_index():
    z = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    out = ModelSparse(2).project(z)
    np.testing.assert_array_equal(out, [[1, 0, 0], [-1, 0, 0], [0, 0, 0]])
    # all zero code: projection is zero, support empty
    assert not ModelSparse(2).support(np.zeros((3, 4))).any()


def test_project_dtype_float32_and_int():
    z = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)
    out = ModelSparse(2, pool=2).project(z, batched=False)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, brute_project(z, 2, pool=(2, 2)))
    zi = np.array([[3, -5, 1], [2, 2, 0]])
    assert ModelSparse(1).project(zi).tolist() == [[0, -5, 0], [0, 0, 0]]


def test_support_is_nonzero_mask():
    z = np.random.default_rng(1).standard_normal((5, 6, 6))
    m = ModelSparse(3, pool=2)
    np.testing.assert_array_equal(m.support(z, batched=False), m.project(z, batched=False) != 0)
    assert m.support(z, batched=False).sum() == 3


def test_matches_torch_maxpool_unpool():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for shape, pool in [((2, 3, 8, 6), 2), ((2, 3, 7, 5), 2), ((2, 4, 9, 9), 3)]:
        z = np.abs(rng.standard_normal(shape))
        t = torch.from_numpy(z)
        pooled, idx = torch.nn.functional.max_pool2d(
            t, pool, stride=pool, ceil_mode=True, return_indices=True
        )
        ref = torch.nn.functional.max_unpool2d(
            pooled, idx, pool, stride=pool, output_size=shape[2:]
        )
        m = ModelSparse(10**6, pool=pool, by="value")
        m = m.with_k(m.n_units(shape[1:]))
        np.testing.assert_array_equal(m.project(z), ref.numpy())


def test_topk_and_block_baselines():
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((3, 4, 5))
    T = TopKSparse(3).project(Z, batched=True)
    for b in range(3):
        thr = np.sort(np.abs(Z[b]).ravel())[-3]
        np.testing.assert_array_equal(T[b], np.where(np.abs(Z[b]) >= thr, Z[b], 0))
    Bk = BlockSparse(2).project(Z, batched=True)
    for b in range(3):
        keep = np.argsort(-(Z[b] ** 2).sum(1))[:2]
        ref = np.zeros_like(Z[b])
        ref[keep] = Z[b][keep]
        np.testing.assert_array_equal(Bk[b], ref)


# ------------------------------------------------------------------ properties
codes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 5),  # K
    st.integers(1, 6),  # n1
    st.integers(1, 6),  # n2
    st.integers(0, 2**31 - 1),
)


def _models_for(shape, seed):
    rng = np.random.default_rng(seed)
    K, n1, n2 = shape
    pools = [None, (min(2, n1), min(2, n2)), (min(3, n1), 1)]
    pool = pools[rng.integers(len(pools))]
    m = ModelSparse(0, pool=pool, ndim=2)
    k = int(rng.integers(0, m.n_units(shape) + 1))
    return m.with_k(k)


@settings(max_examples=60, deadline=None)
@given(codes)
def test_properties_idempotent_obeys_model_nearest(args):
    B, K, n1, n2, seed = args
    rng = np.random.default_rng(seed)
    model = _models_for((K, n1, n2), seed)
    Z = rng.standard_normal((B, K, n1, n2))
    P = model.project(Z)
    # idempotent
    np.testing.assert_array_equal(model.project(P), P)
    # obeys the model: <= k nonzeros, <= 1 per unit; values copied from z
    pool = model.pool
    for b in range(B):
        nz = np.flatnonzero(P[b])
        assert len(nz) <= model.k
        units = _unit_of((K, n1, n2), pool)
        assert len({units[i] for i in nz}) == len(nz)
        np.testing.assert_array_equal(P[b].ravel()[nz], Z[b].ravel()[nz])
    # no model point is closer: best points of random model supports
    S = model.sample((K, n1, n2), 20, rng=seed) != 0
    d_proj = ((Z - P) ** 2).sum(axis=(1, 2, 3))
    for b in range(B):
        d_other = ((Z[b] - np.where(S, Z[b], 0)) ** 2).sum(axis=(1, 2, 3))
        assert (d_proj[b] <= d_other + 1e-12).all()


@settings(max_examples=40, deadline=None)
@given(codes)
def test_property_batched_equals_single(args):
    B, K, n1, n2, seed = args
    model = _models_for((K, n1, n2), seed + 1)
    Z = np.random.default_rng(seed).standard_normal((B, K, n1, n2))
    P = model.project(Z)
    for b in range(B):
        np.testing.assert_array_equal(model.project(Z[b]), P[b])


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize(
    "model, shape",
    [
        (ModelSparse(10), (96, 28)),
        (ModelSparse(5, pool=2), (4, 5, 5)),
        (ModelSparse(30, pool=(2, 3)), (4, 5, 7)),  # many units: argpartition path
        (TopKSparse(4), (3, 6)),
        (BlockSparse(2), (5, 3)),
    ],
)
def test_sample_obeys_model(model, shape):
    Z = sample_model_sparse(model, shape, n_trials=200, rng=1, low=-1.0, high=1.0)
    assert Z.shape == (200, *shape) and Z.dtype == np.float64
    assert (np.abs(Z) <= 1).all()
    np.testing.assert_array_equal(model.project(Z, batched=True), Z)  # in the model
    nnz = (Z != 0).reshape(200, -1).sum(1)
    expect = model.k * (math.prod(shape[1:]) if isinstance(model, BlockSparse) else 1)
    assert (nnz == expect).all()
    np.testing.assert_array_equal(Z, model.sample(shape, 200, rng=1))  # reproducible


def test_sample_covers_partial_regions_uniformly():
    model = ModelSparse(1, pool=2, ndim=1)
    Z = model.sample((1, 5), 6000, rng=0, low=1.0, high=2.0)
    counts = (Z != 0).sum(axis=(0, 1))
    # 3 regions (sizes 2, 2, 1) chosen uniformly, position uniform in region
    np.testing.assert_allclose(counts / 6000, [1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 3], atol=0.03)
    assert Z[Z != 0].min() >= 1.0


def test_sample_single_and_float32():
    z = ModelSparse(2).sample((3, 4), rng=0, dtype=np.float32)
    assert z.shape == (3, 4) and z.dtype == np.float32 and (z != 0).sum() == 2


# ------------------------------------------------------------------ errors
def test_errors():
    with pytest.raises(ValueError, match="'k'"):
        ModelSparse(-1)
    with pytest.raises(TypeError, match="'k'"):
        ModelSparse(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'switches'"):
        ModelSparse(1, switches="random")
    with pytest.raises(ValueError, match="'by'"):
        ModelSparse(1, by="max")
    with pytest.raises(ValueError, match="'pool'"):
        ModelSparse(1, pool=0)
    with pytest.raises(ValueError, match="ndim"):
        ModelSparse(1, pool=(2, 2), ndim=1)
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match="exceeds the number of blocks"):
        ModelSparse(4).project(z)
    with pytest.raises(ValueError, match="exceeds the number of pooling regions"):
        ModelSparse(7, pool=2).project(z)
    with pytest.raises(ValueError, match="does not fit"):
        ModelSparse(1, pool=5).project(z)
    with pytest.raises(ValueError, match="ambiguous"):
        ModelSparse(1).project(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="ndim"):
        ModelSparse(1, ndim=2).project(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ndim"):
        ModelSparse(1).project(np.zeros(5))
    with pytest.raises(ValueError, match="2 spatial axes"):
        ModelSparse(1, pool=(2, 2)).project(np.zeros((2, 2, 3, 4, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        ModelSparse(1).project(np.array([[np.nan, 1.0]]))
    with pytest.raises(TypeError, match="'z'"):
        ModelSparse(1).project([[1.0, 2.0]])
    with pytest.raises(ValueError, match="code_shape"):
        ModelSparse(1).sample((5,), 3)
    with pytest.raises(ValueError, match="'low'"):
        ModelSparse(1).sample((5, 3), 3, low=1.0, high=-1.0)
    with pytest.raises(ValueError, match="exceeds"):
        ModelSparse(6).sample((5, 3), 3)
    with pytest.raises(TypeError, match="'model'"):
        sample_model_sparse("top", (5, 3), n_trials=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ CoSaMP's M_k^2
def brute_support_sum2(z, k, pool=None):
    """Best support with <= 2 entries per unit and <= 2k entries (sums of 2 model points)."""
    units = _unit_of(z.shape, pool)
    flat = z.reshape(-1) ** 2
    best, best_score = None, -1.0
    for size in range(0, min(2 * k, flat.size) + 1):
        for supp in itertools.combinations(range(flat.size), size):
            us = [units[i] for i in supp]
            if any(us.count(u) > 2 for u in us):
                continue
            score = flat[list(supp)].sum()
            if score > best_score + 1e-12:
                best, best_score = supp, score
    mask = np.zeros(flat.size, dtype=bool)
    mask[list(best)] = True
    return mask.reshape(z.shape)


@pytest.mark.parametrize(
    "shape, pool, k", [((3, 4), None, 2), ((2, 3, 3), (2, 2), 2), ((2, 5), 2, 3)]
)
def test_support_sum2_brute_force(shape, pool, k):
    rng = np.random.default_rng(sum(shape))
    Z = rng.standard_normal((3, *shape))
    ndim = len(shape) - 1
    pool_t = None if pool is None else (pool if isinstance(pool, tuple) else (pool,) * ndim)
    got = ModelSparse(k, pool=pool, ndim=ndim).support_sum(Z, 2)
    for b in range(3):
        np.testing.assert_array_equal(got[b], brute_support_sum2(Z[b], k, pool_t))
    T = TopKSparse(2).support_sum(Z, 2)
    assert (T.reshape(3, -1).sum(1) == min(4, math.prod(shape))).all()
    Bm = BlockSparse(1).support_sum(Z, 2)
    assert (Bm.reshape(3, shape[0], -1).all(axis=2).sum(1) == min(2, shape[0])).all()


def test_sample_refuses_integer_and_boolean_dtypes():
    for dt in (int, np.int32, bool):
        with pytest.raises(TypeError, match="floating dtype"):
            ModelSparse(2).sample((5, 3), 4, dtype=dt)
    assert ModelSparse(2).sample((5, 3), 4, dtype=np.float32, rng=0).dtype == np.float32


def test_public_seams_match_the_checked_projection(rng):
    z = rng.standard_normal((3, 4, 9))
    for m in (ModelSparse(3), ModelSparse(2, pool=3), TopKSparse(5), BlockSparse(2)):
        assert m.check_code_shape((4, 9)) == (4, 9)
        np.testing.assert_array_equal(m.project_batch(z), m.project(z, batched=True))
        s = m.support_sum(z, 2)
        assert s.dtype == bool and s.shape == z.shape


def test_pooled_samples_past_8192_codes_with_one_unit_each():
    """k=1 with pooling regions and more than 8192 codes: NumPy 2.4's ``unravel_index``
    put every code after the 8192nd in the same region (its (n, 1) unit array)."""
    from modelcs.models import ModelSparse

    z = ModelSparse(1, pool=(2, 2)).sample((3, 8, 8), 9000, rng=0)
    late = np.argwhere(z[8192:] != 0)
    assert len(late) == 808
    assert len(np.unique(late[:, 2] // 2)) == 4 and len(np.unique(late[:, 3] // 2)) == 4


def test_unravel_index_with_trailing_unit_axes():
    from modelcs._backend import unravel_index

    idx = np.arange(20000).reshape(1, -1, 1, 1)
    r, c = unravel_index(idx, (100, 200))
    assert r.shape == idx.shape
    np.testing.assert_array_equal(r, idx // 200)
    np.testing.assert_array_equal(c, idx % 200)
