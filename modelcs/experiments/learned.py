"""Learned versus random filters on real trained weights.

Analogues, on an ImageNet MobileNetV2 (or any :func:`modelcs.adapters.conv_layers` source),
of the learned-filter analyses of Gilbert, Zhang, Lee, Zhang and Lee, *Towards
Understanding the Invertibility of Convolutional Neural Networks* ("invertibility paper") and
Shang, Sohn, Almeida and Lee, *Understanding and Improving Convolutional Neural Networks via
Concatenated Rectified Linear Units* ("CReLU paper"):

* coherence per layer, learned vs Gaussian random filters of the same sizes
  (:func:`modelcs.experiments.coherence_tables.coherence_table` on trained layers;
  invertibility paper, Table 4 / Table 6; footnote 12).
* CReLU pairing cosines ``mu_i = min_j <phi_i, phi_j>`` of learned vs random filters
  (:func:`modelcs.pairing_cosines`; CReLU paper Sec. 2.1, Figure 2 histograms).
* model-RIP ratios ``||W^T z|| / ||z||`` for random model-k-sparse codes with the trained
  filters (:func:`modelcs.rip_ratios`; Sec. 4.2 / Figure 2a with learned filters).
* :func:`iht_one_step_error` -- ``x_hat = W^T M(W x, k)`` rescaled to ``||x||`` (Theorem 3.3,
  Table 3's "IHT" columns), with the pooling-region model and known switches.
* :func:`relu_pinv_error` -- reconstruction of an input from its ReLU activations with the
  pseudoinverse of the active rows (CReLU supplement, Algorithm 1), via LSQR on
  ``W.aslinearoperator()``.
* :func:`mobilenet_v2_overrides` -- the geometry (strides, paddings, groups) of torchvision's
  MobileNetV2, which its bare ``.pth`` state dict does not carry.

Coherence, model-RIP ratios, the pairing statistic and the model projection come from
:mod:`modelcs.rip`, :mod:`modelcs.frames` and :mod:`modelcs.models`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._validation import check_positive_int, check_rng
from ..adapters import ConvLayer
from ..frames import pairing_cosines
from ..operators.conv import ConvOperator

__all__ = [
    "mobilenet_v2_overrides",
    "fold_batchnorm",
    "random_like",
    "iht_one_step_error",
    "relu_pinv_error",
]

# torchvision MobileNetV2: (expand t, channels c, repeats n, first stride s) per stage
_MNV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2_overrides() -> dict[str, dict[str, Any]]:
    """Stride / padding / groups of torchvision's MobileNetV2 (Sandler et al., 2018), by name.

    ``features.0.0``: 3x3, stride 2, padding 1.  In block ``i`` the depthwise 3x3 is
    ``features.i.conv.0.0`` (no expansion, ``t = 1``) or ``features.i.conv.1.0``, padding 1,
    groups = channels, stride ``s`` in the first block of a stage; 1x1 convs: stride 1, no
    padding.  Pass as ``conv_layers(path, **mobilenet_v2_overrides())``.

    Examples
    --------
    >>> g = mobilenet_v2_overrides()
    >>> g["stride"]["features.0.0"], g["groups"]["features.2.conv.1.0"]
    (2, 96)
    """
    stride: dict[str, int] = {"features.0.0": 2}
    padding: dict[str, int] = {"features.0.0": 1}
    groups: dict[str, int] = {}
    block, c_in = 1, 32
    for t, c, n, s in _MNV2_STAGES:
        for i in range(n):
            hidden = c_in * t
            dw = f"features.{block}.conv.{0 if t == 1 else 1}.0"
            stride[dw] = s if i == 0 else 1
            padding[dw] = 1
            groups[dw] = hidden
            block, c_in = block + 1, c
    return {"stride": stride, "padding": padding, "groups": groups}


def fold_batchnorm(
    layer: ConvLayer, state: Mapping[str, Any], bn_prefix: str, eps: float = 1e-5
) -> ConvLayer:
    """The layer with a following BatchNorm folded in: ``w * g/s``, ``b' = beta + (b - mu) g/s``.

    ``state`` holds ``{bn_prefix}.weight``, ``.bias``, ``.running_mean``, ``.running_var``.
    """
    import dataclasses

    from ..adapters.arrays import to_numpy_array

    def get(key: str) -> np.ndarray:
        v = to_numpy_array(state[f"{bn_prefix}.{key}"])
        assert v is not None
        return np.asarray(v, dtype=np.float64)

    gamma, beta, mu, var = get("weight"), get("bias"), get("running_mean"), get("running_var")
    scale = gamma / np.sqrt(var + eps)
    b = np.zeros_like(mu) if layer.bias is None else np.asarray(layer.bias, np.float64)
    w = layer.filters.astype(np.float64) * scale.reshape((-1,) + (1,) * (layer.ndim + 1))
    return dataclasses.replace(
        layer, filters=w.astype(layer.filters.dtype),
        bias=(beta + (b - mu) * scale).astype(layer.filters.dtype),
    )


def random_like(filters: np.ndarray, *, rng: Any = None, match_norms: bool = False) -> np.ndarray:
    """Gaussian filters of the same shape: ``N(0, 1)/sqrt(M l^d)`` (Theorem 3.1 scaling), or
    with each filter's Frobenius norm equal to the given filter's (``match_norms=True``).

    Examples
    --------
    >>> w = np.ones((4, 2, 3, 3))
    >>> r = random_like(w, rng=0, match_norms=True)
    >>> bool(np.allclose(np.linalg.norm(r.reshape(4, -1), axis=1), np.sqrt(18)))
    True
    """
    rng = check_rng(rng)
    w = np.asarray(filters)
    r = rng.standard_normal(w.shape) / math.sqrt(math.prod(w.shape[1:]))
    if match_norms:
        rn = np.linalg.norm(r.reshape(len(r), -1), axis=1)
        wn = np.linalg.norm(w.reshape(len(w), -1).astype(np.float64), axis=1)
        r = r * (wn / rn).reshape((-1,) + (1,) * (w.ndim - 1))
    return r.astype(w.dtype if w.dtype.kind == "f" else np.float64)


# ----------------------------------------------------------------------- one-step IHT
def iht_one_step_error(W: ConvOperator, x: np.ndarray, k: int, *, pool: int = 2) -> float:
    """``||x - c x_hat|| / ||x||`` with ``x_hat = W^T M(W x, k)`` and ``c`` making
    ``||c x_hat|| = ||x||`` (Theorem 3.3; Table 3 rescales the same way).

    ``M`` is :class:`modelcs.ModelSparse` ``(k, pool=pool)`` with known switches: one
    nonzero per ``pool``-region per filter, ``k`` nonzeros in total (invertibility eq. (2)-(3)).
    """
    from ..models import ModelSparse

    x = np.asarray(x, dtype=W.dtype)
    model = ModelSparse(k, pool=(pool,) * W.ndim_spatial)
    xh = W.T @ model.project(W @ x)
    nx, nh = float(np.linalg.norm(x)), float(np.linalg.norm(xh))
    if nh == 0:
        return 1.0
    return float(np.linalg.norm(x - xh * (nx / nh)) / nx)


# -------------------------------------------------------------- ReLU pseudoinverse
def relu_pinv_error(
    W: ConvOperator, bias: np.ndarray, x: np.ndarray, *, clip: float | None = None,
    max_iter: int = 300,
) -> tuple[float, float, float]:
    """Reconstruct ``x`` from ``h = min(max(W x + b, 0), clip)`` by the pseudoinverse of
    the rows that are active (``0 < W x + b < clip``): CReLU supplement Algorithm 1.

    Returns ``(relative error, fraction of active rows, LSQR's condition estimate)``; the
    least-squares problem ``min ||(W x' + b - h)_A||`` is solved by SciPy's LSQR on ``W``
    restricted to the active rows (:class:`~modelcs.MaskedOperator`, no dense matrix).
    SciPy's LSQR rather than the package's batched one because its condition estimate is part of
    the answer: when the active rows have full column rank the exact error is 0 and the
    returned error is the solver's, falling with ``max_iter`` (LSQR iterations) at a rate set by the
    conditioning (a measure of how stably the activations determine ``x``).
    """
    from scipy.sparse.linalg import lsqr

    from ..operators.base import MaskedOperator

    x = np.asarray(x, dtype=np.float64)
    W = W.astype(np.float64)
    b = np.asarray(bias, np.float64).reshape((-1,) + (1,) * W.ndim_spatial)
    pre = W @ x + b
    active = pre > 0
    if clip is not None:
        active &= pre < clip
    # x -> (W x) on the active rows, zero elsewhere: the adjoint of W^T restricted to them
    A = MaskedOperator(W.T, active).T
    rhs = np.where(active, pre - b, 0.0).ravel()  # = (W x)_A, read off the activations
    max_iter = check_positive_int("max_iter", max_iter)
    res = lsqr(A.aslinearoperator(), rhs, atol=1e-10, btol=1e-10, iter_lim=max_iter)
    err = float(np.linalg.norm(res[0] - x.ravel()) / np.linalg.norm(x))
    return err, float(active.mean()), float(res[6])


# ----------------------------------------------------------- the MobileNetV2 study
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def imagenet_input(image: np.ndarray, size: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image, subsampled to about ``size x size`` (nearest), scaled
    to [0, 1] and standardised with the ImageNet mean/std, as ``(3, size, size)`` float64."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"parameter 'image' must have shape (H, W, 3); got {img.shape}")
    size = check_positive_int("size", size)
    i = np.linspace(0, img.shape[0] - 1, size).round().astype(int)
    j = np.linspace(0, img.shape[1] - 1, size).round().astype(int)
    x = img[np.ix_(i, j)].astype(np.float64) / 255.0
    return np.ascontiguousarray(((x - _IMAGENET_MEAN) / _IMAGENET_STD).transpose(2, 0, 1))


def _pooled_nnz(h: np.ndarray, pool: int = 2) -> int:
    K, n1, n2 = h.shape
    m1, m2 = n1 // pool * pool, n2 // pool * pool
    p = h[:, :m1, :m2].reshape(K, m1 // pool, pool, m2 // pool, pool).max(axis=(2, 4))
    return int((p > 0).sum())


def mobilenet_v2_study(
    path: Any, image: np.ndarray, *, size: int = 128, rng: Any = None, small: bool = False,
    rip_trials: int = 500, pinv_iter: int = 300,
) -> dict[str, Any]:
    """All four analyses on a torchvision MobileNetV2 state dict and one natural image.

    Returns a dict with ``coherence`` (one row per layer: ``name``, ``shape``, ``groups``,
    ``stride`` and the coherence over all shifted rows of the ``learned`` filters and of
    one ``random`` Gaussian bank of the same size), ``pairing
    (``{layer: (learned mu, random mu)}``), ``rip`` (``{(layer, k): (learned, random)}``
    ratio arrays), ``reconstruction`` (``{name: (learned, random)}`` relative errors, plus
    ``'random activation'``), ``sparsity`` (the ``k`` used) and ``pinv`` (active fraction and
    LSQR condition estimate, learned and random).
    """
    from ..adapters import conv_layers
    from ..adapters.torch import load_state_dict
    from ..models import ModelSparse
    from ..rip import rip_ratios
    from .coherence_tables import coherence_table

    rng = check_rng(rng)
    geo = mobilenet_v2_overrides()
    layers = conv_layers(path, stride=geo["stride"], padding=geo["padding"], groups=geo["groups"])
    state = load_state_dict(path) if not isinstance(path, Mapping) else path
    out: dict[str, Any] = {}

    # 1. coherence per layer (Table 4 analogue)
    names = list(layers)[:10] if small else list(layers)
    rows = coherence_table({n: layers[n] for n in names}, draws=1,
                           rng=int(rng.integers(2**63)), dtype=np.float64)
    out["coherence"] = [
        dict(name=r["layer"], shape=r["shape"], groups=r["groups"], stride=r["stride"],
             learned=r["learned"]["shifts"], random=r["shifts"]["mean"])
        for r in rows
    ]

    # 2. pairing (CReLU Figure 2 analogue): the first dense layers
    pair_layers = ["features.0.0", "features.2.conv.0.0", "features.3.conv.0.0", "features.18.0"]
    out["pairing"] = {
        n: (pairing_cosines(layers[n].filters),
            pairing_cosines(random_like(layers[n].filters, rng=rng)))
        for n in pair_layers
    }

    # 3. model-RIP ratios with the trained (unit-normalised) filters, 'valid' geometry
    out["rip"] = {}
    for n, D in (("features.0.0", (3, 32, 32)), ("features.2.conv.0.0", (16, 16, 16))):
        L = layers[n]
        Wl = ConvOperator(L.filters.astype(np.float64), D, stride=L.stride).normalized()
        Wr = Wl.with_filters(random_like(L.filters, rng=rng).astype(np.float64)).normalized()
        for k in (5, 10, 20):
            s = int(rng.integers(2**31))
            out["rip"][(n, k)] = (rip_ratios(Wl.T, ModelSparse(k), n_trials=rip_trials, rng=s),
                                  rip_ratios(Wr.T, ModelSparse(k), n_trials=rip_trials, rng=s))

    # 4. reconstruction of a real image / its activations (Table 3 analogue)
    x = imagenet_input(image, size)
    L0 = fold_batchnorm(layers["features.0.0"], state, "features.0.1")
    W0 = L0.operator(x.shape, dtype=np.float64)
    W0r = W0.with_filters(random_like(L0.filters, rng=rng, match_norms=True).astype(np.float64))
    b0 = np.asarray(L0.bias, np.float64)
    rec: dict[str, tuple[float, float]] = {}
    el, al, cl = relu_pinv_error(W0, b0, x, clip=6.0, max_iter=pinv_iter)
    er, ar, cr = relu_pinv_error(W0r, b0, x, clip=6.0, max_iter=pinv_iter)
    rec["image from ReLU6 layer-1 activations (pinv of active rows)"] = (el, er)
    out["pinv"] = {"active fraction": (al, ar), "condition estimate": (cl, cr),
                   "iterations": pinv_iter}
    h1 = np.clip(W0 @ x + b0[:, None, None], 0.0, 6.0)
    k0 = _pooled_nnz(h1)
    W0n = ConvOperator(layers["features.0.0"].filters.astype(np.float64), x.shape, stride=2,
                       padding=1).normalized()
    rec["image, one-step IHT with features.0.0 (k from layer 1)"] = (
        iht_one_step_error(W0n, x, k0),
        iht_one_step_error(W0n.with_filters(random_like(W0n.filters, rng=rng)).normalized(),
                           x, k0),
    )
    # block-1 output (16 channels), reconstructed through the 6x expansion features.2.conv.0.0
    Ld = fold_batchnorm(layers["features.1.conv.0.0"], state, "features.1.conv.0.1")
    Lp = fold_batchnorm(layers["features.1.conv.1"], state, "features.1.conv.2")
    h = np.clip(Ld(h1), 0.0, 6.0)
    a1 = Lp(h).astype(np.float64)
    Le = fold_batchnorm(layers["features.2.conv.0.0"], state, "features.2.conv.0.1")
    k1 = _pooled_nnz(np.clip(Le(a1), 0.0, 6.0))
    We = ConvOperator(layers["features.2.conv.0.0"].filters.astype(np.float64),
                      a1.shape).normalized()
    rec["block-1 activations, one-step IHT with features.2.conv.0.0 (k from block 2)"] = (
        iht_one_step_error(We, a1, k1),
        iht_one_step_error(We.with_filters(random_like(We.filters, rng=rng)).normalized(),
                           a1, k1),
    )
    g = rng.standard_normal(a1.shape)
    g *= np.linalg.norm(a1) / np.linalg.norm(g)
    base = float(np.linalg.norm(a1 - g) / np.linalg.norm(a1))
    rec["random activation baseline"] = (base, base)
    out["reconstruction"] = rec
    out["sparsity"] = {"k layer 1": (k0, h1.size // 4), "k block 2": (k1, We.out_shape[0] *
                                                                        a1[0].size // 4)}
    return out
