"""The banded route for zero-padded conv layers: the band Gram matrix and method='banded'.

References are independent: the explicit-loop dense matrix of tests/reference.py, its
Gram matrix by a dense product, dense eigvalsh / SVD.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import dense
from test_operator import CASES

import modelcs.frames._banded as banded
import modelcs.frames.spectrum as spectrum
from modelcs import ConvOperator, frame_bounds, singular_values
from modelcs.frames._banded import BandGram, band_cost

ZERO_PADDED = [c for c in CASES if c[3] != "circular"]


def _op(case, rng):
    wshape, D, t, pad, g = case
    return ConvOperator(rng.standard_normal(wshape), D, stride=t, padding=pad, groups=g)


def _check_band(W):
    """BandGram against the dense Gram matrix permuted to the band ordering."""
    A = dense(W)
    bg = BandGram(W)
    G = A.T @ A if bg.input_side else A @ A.T
    assert bg.input_side == (A.shape[1] <= A.shape[0]) and bg.N == G.shape[0]
    o = bg.order()
    assert np.array_equal(np.sort(o), np.arange(bg.N))       # a permutation
    Gb = G[np.ix_(o, o)]
    np.testing.assert_allclose(bg.to_dense(), Gb, rtol=0, atol=1e-13 * np.abs(G).max())
    i, j = np.indices(Gb.shape)
    assert not Gb[np.abs(i - j) > bg.kd].any()                # nothing outside the band
    assert bg.kd <= band_cost(W)[1] and band_cost(W)[:2] == (bg.N, bg.kd)
    assert math.isclose(bg.norm1, np.abs(G).sum(axis=0).max(), rel_tol=1e-12)


@pytest.mark.parametrize("case", ZERO_PADDED, ids=[str(i) for i in range(len(ZERO_PADDED))])
def test_band_gram_equals_the_dense_gram_matrix(case, rng):
    _check_band(_op(case, rng))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_band_gram_property(data):
    """Any zero-padded geometry (1-D/2-D, strides, groups, either Gram side, asymmetric
    padding): the band matrix is the Gram matrix, and nothing couples beyond kd."""
    d = data.draw(st.sampled_from([1, 2]))
    g = data.draw(st.sampled_from([1, 2]))
    K = g * data.draw(st.integers(1, 3))
    Mg = data.draw(st.integers(1, 3))
    lens = tuple(data.draw(st.integers(1, 4)) for _ in range(d))
    D = tuple(data.draw(st.integers(la, la + 6)) for la in lens)
    t = tuple(data.draw(st.integers(1, 3)) for _ in range(d))
    pad = data.draw(st.sampled_from(["valid", "same", "pairs"]))
    if pad == "pairs":
        pad = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
                    for _ in range(d))
    w = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((K, Mg, *lens))
    _check_band(ConvOperator(w, D, stride=t, padding=pad, groups=g))


@pytest.mark.parametrize("case", ZERO_PADDED, ids=[str(i) for i in range(len(ZERO_PADDED))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("small", [True, False])
def test_banded_equals_dense(case, dtype, small, monkeypatch):
    """method='banded' (through eigvalsh of the band when small, else Cholesky +
    shift-invert Lanczos) against the dense SVD, to the documented tolerance."""
    if not small:
        monkeypatch.setattr(banded, "DENSE_GRAM", 0)
    wshape, D, t, pad, g = case
    W = ConvOperator(np.random.default_rng(3).standard_normal(wshape).astype(dtype), D,
                     stride=t, padding=pad, groups=g)
    A = dense(W).astype(np.float64)
    sd = np.linalg.svd(A, compute_uv=False)
    s = singular_values(W, k=1, method="banded", rng=0, progress=False)
    assert abs(s[0] - sd[0]) <= 1e-9 * sd[0]
    assert abs(s[1] ** 2 - sd[-1] ** 2) <= max(1e-9 * sd[-1] ** 2, 1e-12 * sd[0] ** 2)
    ev = np.linalg.eigvalsh(A.T @ A)
    dlo, dhi = ev[ev > 1e-12 * ev.max()].min(), ev.max()
    lo, hi = frame_bounds(W, method="banded", rng=0, rtol=1e-6, progress=False)
    assert abs(lo - dlo) <= 1e-8 * dlo and abs(hi - dhi) <= 1e-8 * dhi


@pytest.mark.parametrize("K, M, D", [(16, 16, (12, 12)), (8, 8, (16, 16)), (12, 12, (60,))])
def test_banded_on_ill_conditioned_same_layers(K, M, D, monkeypatch):
    """Square-ish 'same' layers, whose smallest eigenvalue is ~1e-8 of the largest (where
    the circular preconditioner of 'lobpcg' is poor), against dense eigenvalues."""
    monkeypatch.setattr(banded, "DENSE_GRAM", 0)
    lens = (3,) * len(D)
    W = ConvOperator.random(K, M, lens, D, padding="same", rng=2)
    A = dense(W)
    sd = np.linalg.svd(A, compute_uv=False)
    s = singular_values(W, k=1, method="banded", rng=0, progress=False)
    assert abs(s[1] ** 2 - sd[-1] ** 2) <= max(1e-9 * sd[-1] ** 2, 1e-13 * sd[0] ** 2)
    assert (sd[-1] / sd[0]) ** 2 < 1e-5                    # the case is ill-conditioned
    assert spectrum._auto_method(W, 1) in ("dense", "sparse", "banded")


def test_auto_picks_banded_for_moderate_padded_layers_and_lobpcg_beyond():
    # 64-channel 'same' 24x24: LOBPCG did not converge in 20,000 steps (smallest
    # eigenvalue ~1e-13 of the largest); the banded Cholesky costs 3.9e11 multiply-adds
    W = ConvOperator(np.zeros((64, 64, 3, 3)), (24, 24), padding="same")
    assert band_cost(W) == (36864, 3263, 36864 * 3263 ** 2)
    assert spectrum._auto_method(W, 1) == "banded"
    strided = ConvOperator(np.zeros((64, 64, 3, 3)), (40, 40), stride=2, padding=1)
    assert spectrum._auto_method(strided, 1) == "banded"
    vgg = ConvOperator(np.zeros((512, 512, 3, 3)), (15, 15))    # 3.1e13: too large
    assert band_cost(vgg)[2] > spectrum.BANDED_MAX_FLOPS
    assert spectrum._auto_method(vgg, 1) == "lobpcg"
    circ = ConvOperator(np.zeros((64, 64, 3, 3)), (24, 24), stride=2, padding="circular")
    assert spectrum._auto_method(circ, 1) not in ("banded", "lobpcg")


def test_banded_method_bad_inputs():
    A = np.random.default_rng(0).standard_normal((30, 50))
    with pytest.raises(ValueError, match=r"method='banded' needs .* ndarray of shape \(30, 50\)"):
        frame_bounds(A, method="banded")
    circ = ConvOperator.random(4, 3, 3, 20, padding="circular", stride=3, rng=0)
    with pytest.raises(ValueError, match="method='banded' needs .*padding='circular'"):
        singular_values(circ, k=1, method="banded")
    W = ConvOperator.random(4, 3, 3, 20, rng=0)
    with pytest.raises(ValueError, match="k=1"):
        singular_values(W, k=2, method="banded")
    with pytest.raises(ValueError, match="identically zero"):
        frame_bounds(W.with_filters(np.zeros((4, 3, 3))), method="banded")


def test_banded_largest_only_skips_the_factorisation(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("factored")

    monkeypatch.setattr(BandGram, "factor", boom)
    W = ConvOperator.random(6, 4, (3, 3), (14, 14), padding="same", rng=0)
    s = singular_values(W, k=1, which="largest", method="banded", rng=0)
    assert abs(s[0] - np.linalg.norm(dense(W), 2)) <= 1e-9 * s[0]


@pytest.mark.parametrize("method", ["banded", "sparse"])
@pytest.mark.parametrize("K, M, D, null_dim", [(12, 3, (302,), 3), (64, 16, (62,), 16)])
def test_null_space_smallest_nonzero_by_arpack_then_lanczos(method, K, M, D, null_dim,
                                                            monkeypatch):
    """A 'valid' stride-3 layer with one uncovered sample per axis: its Gram matrix
    W^T W has a null space (the uncovered samples times the channels).  A small one
    (<= NEXT_K) is skipped by ARPACK on the shift-inverted matrix without the plain
    Lanczos fallback; a larger one falls back to it.  Both against dense eigenvalues."""
    import modelcs.frames._sparse as sparse_mod

    lens = (4,) * len(D)
    W = ConvOperator.random(K, M, lens, D, stride=3, rng=4)
    assert W.shape[1] <= W.shape[0]                          # W^T W is the smaller Gram
    assert all(u == 1 for u in W.uncovered)
    A = dense(W)
    ev = np.linalg.eigvalsh(A.T @ A)
    zero = ev <= 1e-10 * ev[-1]
    assert zero.sum() == null_dim
    used = []
    real = spectrum.lanczos_extremes

    def spy(*a, **k):
        used.append(k.get("nonzero_rtol"))
        return real(*a, **k)

    monkeypatch.setattr(spectrum, "lanczos_extremes", spy)
    lo, hi = frame_bounds(W, method=method, rng=0, progress=False)
    assert abs(lo - ev[~zero].min()) <= 1e-8 * ev[~zero].min()
    assert abs(hi - ev[-1]) <= 1e-8 * ev[-1]
    fell_back = any(r is not None for r in used)   # the Lanczos run for the lower bound
    assert fell_back == (null_dim > sparse_mod.NEXT_K)
