"""The operator checks on CuPy arrays; skipped cleanly where CuPy or a GPU is absent."""

from __future__ import annotations

import numpy as np
import pytest
from reference import dense_conv_matrix

cp = pytest.importorskip("cupy")
try:
    if cp.cuda.runtime.getDeviceCount() < 1:  # pragma: no cover - needs a GPU
        pytest.skip("no CUDA device", allow_module_level=True)
except Exception as exc:  # pragma: no cover - CuPy without a driver
    pytest.skip(f"CuPy present but no usable GPU: {exc}", allow_module_level=True)

from modelcs import ConvOperator, dottest  # noqa: E402
from modelcs._backend import get_array_module  # noqa: E402

CASES = [
    ((4, 3, 5), (17,), 2, "valid", 1),
    ((6, 2, 3), (11,), 1, "same", 2),
    ((5, 3, 4), (9,), 1, "circular", 1),
    ((3, 2, 3, 3), (9, 8), (2, 3), "valid", 1),
    ((4, 1, 3, 3), (8, 7), 1, "same", 4),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("engine", ["gemm", "fft"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cupy_matches_bruteforce(case, engine, dtype):
    rng = np.random.default_rng(0)
    wshape, D, t, pad, g = case
    w = rng.standard_normal(wshape)
    A, out_shape = dense_conv_matrix(w, D, t, pad, g)
    W = ConvOperator(w.astype(dtype), D, stride=t, padding=pad, groups=g, engine=engine)
    x = rng.standard_normal((3, wshape[1] * g, *D)).astype(dtype)
    h = W @ cp.asarray(x)
    assert get_array_module(h) is cp
    ref = (x.reshape(3, -1) @ A.T).reshape(3, *out_shape)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert np.linalg.norm(cp.asnumpy(h) - ref) <= tol * np.linalg.norm(ref)
    z = rng.standard_normal(h.shape).astype(dtype)
    xa = W.T @ cp.asarray(z)
    ref = (z.reshape(3, -1) @ A).reshape(x.shape)
    assert np.linalg.norm(cp.asnumpy(xa) - ref) <= tol * np.linalg.norm(ref)


def test_cupy_filters_and_dottest():
    w = cp.asarray(np.random.default_rng(1).standard_normal((4, 3, 3, 3)))
    W = ConvOperator(w, (10, 10), stride=2)
    x = cp.ones((3, 10, 10))
    assert get_array_module(W @ x) is cp
    assert dottest(W) < 1e-12


@pytest.mark.parametrize("mixed", [True, False])
def test_cupy_lasso_matches_numpy(mixed):
    """The Lasso's shared code path on CuPy arrays, float64 throughout and in mixed
    precision (float32 phase, float64 certificate): the same optimum as on NumPy within
    the two certified gaps, and CuPy codes back."""
    from modelcs import lasso

    W = ConvOperator.random(12, 4, 5, 24, rng=0)
    y = np.random.default_rng(1).standard_normal((6, 4, 24))
    lam = 0.1 * np.abs(W @ y).reshape(6, -1).max(axis=1)
    ref = lasso(W.T, y, lam, tol=1e-6, mixed_precision=mixed)
    got = lasso(W.T, cp.asarray(y), lam, tol=1e-6, mixed_precision=mixed)
    assert get_array_module(got.z) is cp and got.converged.all()
    assert np.all(np.abs(got.objective - ref.objective) <= got.gap + ref.gap
                  + 1e-12 * ref.objective)
