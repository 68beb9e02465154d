"""Torch at the boundary: torch filters and modules in, torch tensors in and out.

``ConvOperator.from_torch`` reproduces ``nn.Conv1d``/``nn.Conv2d`` (stride, padding, groups)
to 1e-5 in float32; ``W @ tensor`` and the solvers on tensors return tensors, sharing memory
with NumPy on the CPU (DLPack); unsupported module settings are refused with a clear error.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from modelcs import ConvOperator, ModelSparse, TopKSparse, cosamp, iht, lasso  # noqa: E402


@pytest.mark.parametrize(
    "module, D",
    [
        (lambda: nn.Conv2d(3, 8, 3, bias=False), (12, 12)),
        (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), (13, 11)),
        (lambda: nn.Conv2d(4, 8, (3, 2), stride=(1, 2), padding=(1, 0), groups=2), (10, 9)),
        (lambda: nn.Conv2d(2, 4, 3, padding="same", bias=False), (8, 8)),
        (lambda: nn.Conv1d(3, 5, 4, stride=3, padding=2), 20),
    ],
)
def test_from_torch_equals_the_module(module, D):
    torch.manual_seed(0)
    conv = module()
    W = ConvOperator.from_torch(conv, D)
    assert W.dtype == np.float32
    D = (D,) if isinstance(D, int) else D
    x = torch.randn(2, conv.in_channels, *D)
    want = conv(x) - (0 if conv.bias is None else conv.bias.reshape(1, -1, *([1] * len(D))))
    got = W @ x
    assert isinstance(got, torch.Tensor) and got.shape == want.shape
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)
    # the adjoint is the transposed convolution
    y = torch.randn(*got.shape)
    x.requires_grad_(True)
    (conv(x) * y).sum().backward()
    torch.testing.assert_close(W.T @ y, x.grad, atol=1e-5, rtol=1e-5)


def test_from_torch_refuses_what_it_cannot_represent():
    with pytest.raises(ValueError, match="dilation"):
        ConvOperator.from_torch(nn.Conv2d(2, 2, 3, dilation=2), (9, 9))
    with pytest.raises(ValueError, match="padding_mode"):
        ConvOperator.from_torch(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), (9, 9))
    with pytest.raises(TypeError, match="Conv1d or torch.nn.Conv2d"):
        ConvOperator.from_torch(nn.Linear(3, 3), (3,))
    with pytest.raises(TypeError, match="Conv1d or torch.nn.Conv2d"):
        ConvOperator.from_torch(nn.ConvTranspose2d(2, 2, 3), (9, 9))


def test_torch_filters_and_tensors_round_trip():
    w = torch.randn(6, 2, 3, dtype=torch.float64)
    W = ConvOperator(w, 16)
    np.testing.assert_array_equal(W.filters, w.numpy())
    x = torch.randn(4, 2, 16, dtype=torch.float64)
    h = W @ x
    assert isinstance(h, torch.Tensor) and h.dtype == torch.float64
    np.testing.assert_allclose(h.numpy(), W @ x.numpy())
    z = W.T @ h
    assert isinstance(z, torch.Tensor)
    np.testing.assert_allclose(z.numpy(), W.T @ h.numpy())
    # zero-copy on the CPU: the returned tensor views the NumPy result
    arr = np.arange(8.0)
    from modelcs._backend import to_torch_like

    t = to_torch_like(arr, x)
    t[0] = 42.0
    assert arr[0] == 42.0


def test_solvers_on_tensors_return_tensors():
    W = ConvOperator.random(12, 4, 5, 24, rng=0)
    Z = ModelSparse(3).sample(W.out_shape, 5, rng=1)
    Y = torch.from_numpy(W.T @ Z)
    for res in (iht(W.T, Y, ModelSparse(3), step="normalized", max_iter=200),
                cosamp(W.T, Y, ModelSparse(3)),
                lasso(W.T, Y, 1e-4, debias=True)):
        assert isinstance(res.z, torch.Tensor) and tuple(res.z.shape) == Z.shape
        np.testing.assert_allclose(res.z.numpy(), Z, atol=1e-6)
    # a 2-D torch tensor is a matrix operator; a 1-D tensor y gives a 1-D tensor code
    A = torch.randn(30, 60, dtype=torch.float64) / 30**0.5
    x = torch.zeros(60, dtype=torch.float64)
    x[[3, 40]] = torch.tensor([1.0, -2.0], dtype=torch.float64)
    r = iht(A, A @ x, TopKSparse(2), step="normalized", max_iter=300)
    assert isinstance(r.z, torch.Tensor) and r.z.shape == (60,)
    torch.testing.assert_close(r.z, x, atol=1e-6, rtol=0)


def test_tensors_that_require_grad_are_detached():
    W = ConvOperator.random(3, 2, 3, 8, rng=0)
    x = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    h = W @ x
    assert isinstance(h, torch.Tensor) and not h.requires_grad


def test_importing_modelcs_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, modelcs; modelcs.ConvOperator; modelcs.iht; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
