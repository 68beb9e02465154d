"""One CNN layer as one IHT step: convolution, optional ReLU, max pooling and unpooling.

One iteration of model-based IHT from ``z = 0`` with unit step is ``M(W y, k)``
(Gilbert, Zhang, Lee, Zhang & Lee, "Towards understanding the invertibility of
convolutional neural networks", Sec. 3, Algorithm 1): a convolution layer followed by max
pooling and unpooling.  :func:`cnn_layer` returns that unpooled map and
:func:`cnn_layer_pooled` the pooled one (one value per pooling region).
"""

from __future__ import annotations

from typing import Any

from .._backend import from_torch, is_torch_tensor, to_torch_like
from ..models import ModelSparse, SparsityModel
from ..operators.matrix import as_operator

__all__ = ["cnn_layer", "cnn_layer_pooled"]


def _layer(W: Any, x: Any, model: Any, relu: Any) -> tuple[Any, Any, bool, Any]:
    W = as_operator(W, "W")
    if not isinstance(model, SparsityModel):
        raise TypeError(
            f"parameter 'model' must be a ModelSparse, TopKSparse or BlockSparse; got {model!r}"
        )
    if not isinstance(relu, bool):
        raise TypeError(f"parameter 'relu' must be a bool; got {relu!r}")
    like = None
    if is_torch_tensor(x):
        like, x = x, from_torch(x, "x")
    h = W @ x
    if relu:
        h = h * (h > 0)
    batched = h.ndim == len(W.out_shape) + 1
    return W, h, batched, like


def cnn_layer(W: Any, x: Any, model: SparsityModel, *, relu: bool = False) -> Any:
    """A CNN layer ``M(relu(W x), k)``: convolution, optional ReLU, max pooling, unpooling.

    This is exactly the first iteration of :func:`~modelcs.iht` with ``Phi = W.T``, unit
    step and ``z0 = 0`` (``M(0 + 1 * W (x - 0))``), and ``W.T @ cnn_layer(W, x, model)`` is
    the one-step reconstruction ``x_hat = W^T M(W x, k)`` of Theorem 3.3.

    Parameters
    ----------
    W : LinearOperator or anything :func:`~modelcs.as_operator` accepts
        The layer's linear part (e.g. a :class:`~modelcs.ConvOperator`).
    x : array, shape ``W.in_shape`` or ``(B, *W.in_shape)`` (NumPy, CuPy or torch)
    model : ModelSparse (or another sparsity model)
        E.g. ``ModelSparse(None, pool=2, by="value")``: max pooling that keeps one value
        per pooling region (``k=None``), as a ReLU network does; ``ModelSparse(k, pool=2)``
        keeps only the ``k`` largest region maxima.
    relu : bool, default False
        Apply ``max(., 0)`` to ``W x`` before pooling.

    Returns
    -------
    array of shape ``W.out_shape`` or ``(B, *W.out_shape)`` (torch if ``x`` is torch).

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(6, 2, 3, 10, rng=0)
    >>> h = cnn_layer(W, np.ones((2, 10)), ModelSparse(2))
    >>> h.shape, int((h != 0).sum())
    ((6, 8), 2)
    >>> h = cnn_layer(W, np.ones((2, 10)), ModelSparse(None, pool=2, by="value"), relu=True)
    >>> bool((h >= 0).all()), int((h != 0).sum()) <= 6 * 4
    (True, True)
    """
    W, h, batched, like = _layer(W, x, model, relu)
    out = model.project(h, batched=batched)
    return to_torch_like(out, like) if like is not None else out


def cnn_layer_pooled(W: Any, x: Any, model: ModelSparse, *, relu: bool = False) -> Any:
    """The pooled map of :func:`cnn_layer`: one value per pooling region (zero if not kept).

    Parameters
    ----------
    W, x, relu
        As for :func:`cnn_layer`.
    model : ModelSparse with ``pool``
        The pooling model (``k=None`` keeps every region's maximum).

    Returns
    -------
    array ``(K, *r)`` or ``(B, K, *r)`` with ``r = ceil(n / pool)`` regions per axis.

    Examples
    --------
    >>> import numpy as np
    >>> from modelcs import ConvOperator, ModelSparse
    >>> W = ConvOperator.random(6, 2, 3, 10, rng=0)
    >>> p = cnn_layer_pooled(W, np.ones((2, 10)), ModelSparse(None, pool=2, by="value"))
    >>> p.shape
    (6, 4)
    """
    if not isinstance(model, ModelSparse) or model.pool is None:
        raise TypeError(
            f"parameter 'model' must be a ModelSparse with pool=...; got {model!r}"
        )
    if len(as_operator(W, "W").out_shape) < 2:
        raise TypeError(
            "parameter 'W' has flat codes: pooling regions need a ConvOperator or an operator "
            "with out_shape (K, *n), e.g. MatrixOperator(A, out_shape=(K, n))"
        )
    W, h, batched, like = _layer(W, x, model, relu)
    out = model.pooled(h, batched=batched)
    return to_torch_like(out, like) if like is not None else out
