"""Invert a trained CNN layer by layer: from a deep activation back to the image.

:func:`invert_network` walks a :class:`~modelcs.adapters.Network` backwards from the
activation of layer ``start``.  At every layer it keeps an estimate ``a`` of the layer's
output and a mask of the entries that are *known* (measured) rather than guessed:

* **max-pool**: the pooled values go back to the positions of their switches (known
  switches from the forward pass, the "what-where" case of the invertibility paper,
  Gilbert et al., "Towards Understanding the Invertibility of Convolutional Neural
  Networks", Sec. 2.3 ``M_known``) or to the first position of every window (fixed
  switches, ``M_fixed``); the other entries of the pool's input are unknown.
* **ReLU**: for the measured activation (nothing inverted yet), positive outputs are the
  pre-activation and zeros only say "``<= 0``": they become unknown.  Below the first
  inverted convolution the activations are estimates, whose negative entries are the best
  guess of the pre-activation: the estimate is passed through unchanged (treating its
  small positive entries as measurements and dropping the rest makes the least-squares
  problems ill-conditioned; the estimates grew without bound on VGG16 that way).
  **PReLU** is inverted entry-wise (``a / slope`` on the negative side).
* **convolution** ``y = W x + b`` with ``y`` known on a set ``S`` of rows:

  ``'pinv'``
      ``x = (W_S)^+ (y - b)_S``, the minimum-norm least-squares solution on the known rows
      (Shang et al., "Understanding and Improving Convolutional Neural Networks via
      Concatenated Rectified Linear Units", Prop. 2.1 and supplement Algorithm 2, solved
      with :func:`~modelcs.pinv_reconstruct`).  Exact when ``W_S`` has full column rank.
  ``'transpose'``
      The tied-weights decoder of Theorem 3.3 of the invertibility paper,
      ``x = c W^T z`` with ``z = (y - b)`` on ``S`` and 0 elsewhere; ``c`` makes
      ``W x`` fit ``y`` on ``S`` best in least squares (no ground truth used).
  ``'iht'``
      The input of a hidden convolution is itself a ReLU / pooling output, hence sparse:
      recover it as a ``k``-sparse vector from ``(y - b)_S`` with model-based IHT
      (invertibility paper, Algorithm 1; :func:`~modelcs.iht`, normalized step, keeping
      the ``k`` largest values), ``Phi = W`` restricted to ``S``.
  ``'algorithm2'``
      The same sparse recovery with the l1 heuristic of the invertibility paper's
      Algorithm 2: a Lasso (:func:`~modelcs.lasso`), keep the ``k`` largest values of its
      solution, and the Lasso again on that support.

  ``'iht'`` and ``'algorithm2'`` need a sparsity level ``k`` of the convolution's input
  (the fraction of nonzeros: ``sparsity``, or read from the true activations when
  ``truth`` is given -- an oracle level, as the paper uses Table 2's measured sparsity);
  for a convolution whose input is not a ReLU / pooling output (the image) they use
  ``'pinv'``, and the layer report says so.

Per layer the result reports the relative error of the estimated *input* of that layer
against the true one (when ``truth``, a :class:`~modelcs.adapters.network.ForwardResult`,
is given), the fraction of known entries, and on request (``bounds=True``) the frame
bounds of the convolution's shifted filters (:func:`~modelcs.frame_bounds`) and, for a
convolution followed by ReLU and non-overlapping max-pooling with known switches, the
CReLU supplement's Theorem A.5 bound (:func:`~modelcs.theorem_a5_bound`) for the model
signal ``W^T c`` built from the known code ``c``.  The Theorem 3.3 bound of the
invertibility paper needs the model-RIP constants, which :func:`~modelcs.estimate_delta`
estimates separately (too slow per layer at VGG16 sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import check_choice, check_positive_int
from .adapters.network import ForwardResult, Network, unpool
from .operators.base import MaskedOperator
from .operators.conv import ConvOperator
from .recovery._common import RecoveryResult

__all__ = ["invert_network", "InversionResult", "network_shapes"]

_METHODS = ("pinv", "transpose", "iht", "algorithm2")


@dataclass(eq=False, repr=False)
class InversionResult(RecoveryResult):
    """What :func:`invert_network` returns: a :class:`~modelcs.RecoveryResult` whose code
    ``z`` is the estimated network input, plus per-layer reports.

    Parameters
    ----------
    z : ndarray ``(B, C, *D)`` (or ``(C, *D)`` for an unbatched ``h``)
        The estimated network input, channels-first (also ``x``).
    n_iter : int or ndarray (B,)
        Number of layers inverted.
    converged : bool or ndarray (B,)
        Whether the estimate reproduces the activation: the forward pass of ``z`` to layer
        ``start`` is within ``sqrt(tol)`` (relative) of ``h``.
    diverged : bool or ndarray (B,)
        Whether the estimate is not finite.
    residual_norm : float or ndarray (B,)
        ``||h - f(z)||``, ``f`` the network up to ``start``.
    residual_norms : ndarray ``(2,)`` or ``(2, B)``
        ``||h||`` and ``residual_norm``.
    layers : list of dict
        One entry per inverted layer, from ``start`` down to the first layer: ``name``,
        ``kind``, ``method`` (what was used), ``known_fraction`` (of the layer's output
        entries used as measurements), ``rel_error`` (``(B,)`` relative error of the
        estimated input of the layer, when ``truth`` was given), with ``keep_estimates``
        ``estimate`` and with ``bounds=True`` for convolutions ``frame_bounds`` and
        ``theorem_a5_bound``.
    rel_error : ndarray ``(B,)`` or None
        Relative error of ``z`` against ``truth.input``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from modelcs import InversionResult, invert_network
    >>> from modelcs.adapters import network
    >>> seq = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1),
    ...                           torch.nn.MaxPool2d(2)).double()
    >>> net = network(seq)
    >>> fwd = net.forward(np.random.default_rng(0).standard_normal((2, 1, 6, 6)))
    >>> res = invert_network(net, fwd.activations["1"], start="1", truth=fwd)
    >>> isinstance(res, InversionResult), res.z.shape, [r["kind"] for r in res.layers]
    (True, (2, 1, 6, 6), ['maxpool', 'conv'])
    >>> res.rel_error.shape
    (2,)
    """

    layers: list[dict[str, Any]] = field(default_factory=list)
    rel_error: Any = None

    @property
    def x(self) -> Any:
        """The estimated network input (the same array as ``z``)."""
        return self.z


def network_shapes(net: Network, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Channels-first shapes ``(C, *n)`` of the network input and of every layer's output.

    Examples
    --------
    >>> import torch
    >>> from modelcs.adapters import network
    >>> net = network(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2)))
    >>> network_shapes(net, (3, 10, 10))
    [(3, 10, 10), (4, 8, 8), (4, 4, 4)]
    """
    shapes = [tuple(int(s) for s in input_shape)]
    for layer in net.layers:
        cur = shapes[-1]
        if layer.kind == "conv":
            assert layer.conv is not None
            shapes.append(tuple(layer.conv.operator(cur).out_shape))
        elif layer.kind == "maxpool":
            pads = layer.pool_padding(cur[1:])
            n = tuple((cur[1 + a] + lo + hi - layer.kernel[a]) // layer.stride[a] + 1
                      for a, (lo, hi) in enumerate(pads))
            shapes.append((cur[0], *n))
        else:
            shapes.append(cur)
    return shapes


def _rel(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    B = est.shape[0]
    num = np.linalg.norm((est - ref).reshape(B, -1), axis=1)
    den = np.linalg.norm(ref.reshape(B, -1), axis=1)
    return num / np.where(den > 0, den, 1.0)


def _sparse_recover(
    method: str, W: ConvOperator, y: np.ndarray, mask: np.ndarray, k: np.ndarray,
    max_iter: int, tol: float, lam: float | None,
) -> np.ndarray:
    """Per item: a ``k``-sparse (largest values) ``x`` with ``(W x)_S ~ y_S``."""
    from .models import TopKSparse
    from .recovery.iht import iht
    from .recovery.lasso import lasso, lasso_lambda_max

    out = np.zeros((y.shape[0], *W.in_shape), dtype=W.dtype)
    for i in range(y.shape[0]):
        Phi = MaskedOperator(W.T, mask[i]).T  # x -> (W x) on the rows in the mask
        yi = y[i] * mask[i]
        model = TopKSparse(int(k[i]), by="value", ndim=len(W.in_shape) - 1)
        if method == "iht":
            res = iht(Phi, yi, model, step="normalized", max_iter=max_iter, tol=tol)
            out[i] = res.z
        else:
            lmax = float(lasso_lambda_max(Phi, yi))
            lam_i = (1e-3 if lam is None else lam) * lmax
            init = lasso(Phi, yi, lam_i, max_iter=max_iter, tol=tol)
            support = model.project(init.z) > 0
            fin = lasso(Phi, yi, lam_i, support=support, z0=init.z * support,
                        max_iter=max_iter, tol=tol)
            out[i] = fin.z
    return out


def invert_network(
    net: Network,
    h: Any,
    *,
    start: str,
    method: str = "pinv",
    switches: str | dict[str, Any] = "known",
    truth: ForwardResult | None = None,
    input_shape: Sequence[int] | None = None,
    sparsity: float | dict[str, float] | None = None,
    lam: float | None = None,
    max_iter: int = 300,
    tol: float | None = None,
    bounds: bool = False,
    keep_estimates: bool = False,
) -> InversionResult:
    """Invert ``net`` from the activation ``h`` of layer ``start`` back to its input.

    See the module docstring for what happens at each layer kind and each ``method``.

    Parameters
    ----------
    net : Network
        From :func:`modelcs.adapters.network`.
    h : ndarray ``(B, C, *n)`` or ``(C, *n)``
        The activation of layer ``start`` (channels-first), e.g.
        ``net.forward(x).activations[start]`` or an estimate of it.
    start : str
        The layer whose output ``h`` is.  A name past the network's first unsupported layer
        (:attr:`Network.stop`) is refused with that layer's name and type.
    method : {'pinv', 'transpose', 'iht', 'algorithm2'}
        How each convolution is inverted.
    switches : 'known', 'fixed' or dict
        Max-pool switches: ``'known'`` takes them from ``truth.switches`` (the
        "what-where" case), ``'fixed'`` puts every value at the first position of its
        window, a dict ``{pool name: switches}`` gives them explicitly.
    truth : ForwardResult, optional
        The forward pass of the true input: per-layer errors, known switches, and the oracle
        sparsity level for ``'iht'`` / ``'algorithm2'``.
    input_shape : tuple, optional
        Channels-first ``(C, *D)`` of the network input; default ``truth.input``'s.  Needed
        without ``truth`` (the pools' input sizes are not determined by their outputs).
    sparsity : float or dict, optional
        Fraction of nonzeros of each convolution's input for ``'iht'`` / ``'algorithm2'``
        (one value, or ``{conv name: value}``); default: measured on ``truth``.
    lam : float, optional
        ``'algorithm2'``: the Lasso weight relative to ``lambda_max`` (default ``1e-3``).
    max_iter : int
        Iteration cap of the iterative solvers (LSQR for ``'pinv'`` gets ``max(max_iter,
        2 * min(W.shape))`` unless that is huge: then ``max_iter``).
    tol : float, optional
        Solver tolerance (default ``1e-10`` for float64, ``1e-5`` for float32).
    bounds : bool
        Also compute frame bounds and the Theorem A.5 bound per convolution (slow for large
        layers).
    keep_estimates : bool
        Keep every layer's estimated input in its report (``'estimate'``, ``(B, ...)``).

    Returns
    -------
    InversionResult

    Raises
    ------
    ValueError
        ``start`` unknown or past an unsupported layer; ``h`` of the wrong shape; known
        switches without ``truth``; no sparsity level for ``'iht'`` / ``'algorithm2'``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from modelcs import invert_network
    >>> from modelcs.adapters import network
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> seq = torch.nn.Sequential(torch.nn.Conv2d(2, 16, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.MaxPool2d(2)).double()
    >>> torch.nn.init.constant_(seq[0].bias, 2.0)  # doctest: +ELLIPSIS
    Parameter containing:...
    >>> net = network(seq)
    >>> x = np.random.default_rng(0).standard_normal((1, 2, 8, 8))
    >>> fwd = net.forward(x)
    >>> res = invert_network(net, fwd.activations["2"], start="2", truth=fwd)
    >>> bool(res.rel_error[0] < 1e-8), [r["kind"] for r in res.layers]
    (True, ['maxpool', 'relu', 'conv'])
    """
    if not isinstance(net, Network):
        raise TypeError(f"parameter 'net' must be a modelcs Network; got {type(net).__name__}")
    check_choice("method", method, _METHODS)
    stop_at = net.check_layer(start, "start")
    max_iter = check_positive_int("max_iter", max_iter)
    h = np.asarray(h)
    batched = True
    if input_shape is None:
        if truth is None:
            raise ValueError("parameter 'input_shape' is needed without 'truth' (the sizes of "
                             "the pools' inputs are not determined by their outputs)")
        input_shape = truth.input.shape[1:]
    shapes = network_shapes(net, input_shape)
    want = shapes[stop_at + 1]
    if h.shape == want:
        h = h[None]
        batched = False
    if h.ndim != len(want) + 1 or h.shape[1:] != want:
        raise ValueError(f"parameter 'h' has shape {h.shape}; layer {start!r} outputs {want} "
                         f"(or a batch (B, {', '.join(map(str, want))}))")
    if h.dtype not in (np.float32, np.float64):
        h = h.astype(np.float64)
    if not np.isfinite(h).all():
        raise ValueError("parameter 'h' contains NaN or Inf")
    dt = h.dtype
    if tol is None:
        tol = 1e-10 if dt == np.float64 else 1e-5
    if isinstance(switches, str):
        check_choice("switches", switches, ("known", "fixed"))
        if switches == "known" and truth is None and any(
            layer.kind == "maxpool" for layer in net.layers[: stop_at + 1]
        ):
            raise ValueError("switches='known' needs 'truth' (the forward pass with the "
                             "switches) or a dict {pool name: switches}")
    B = h.shape[0]
    if truth is not None and truth.input.shape[0] != B:
        raise ValueError(f"parameter 'truth' has batch {truth.input.shape[0]}; 'h' has {B}")
    a = h
    known = np.ones(h.shape, dtype=bool)
    measured = True  # False once a convolution has been inverted (estimates below)
    reports: list[dict[str, Any]] = []
    for idx in range(stop_at, -1, -1):
        layer = net.layers[idx]
        in_shape = shapes[idx]
        rep: dict[str, Any] = {"name": layer.name, "kind": layer.kind,
                               "known_fraction": float(known.mean())}
        if layer.kind == "maxpool":
            if isinstance(switches, dict):
                sw = switches.get(layer.name)
                if sw is None:
                    raise ValueError(f"parameter 'switches' has no entry for pool {layer.name!r}")
            elif switches == "known":
                assert truth is not None
                sw = truth.switches[layer.name]
            else:
                sw = None
            pads = layer.pool_padding(in_shape[1:])
            kw = {} if sw is not None else dict(kernel=layer.kernel, stride=layer.stride,
                                                padding=pads)
            a = unpool(a, in_shape[1:], switches=sw, **kw)
            known = unpool(known, in_shape[1:], switches=sw, **kw)
            rep["method"] = "known switches" if sw is not None else "fixed switches"
        elif layer.kind == "relu":
            if measured:  # zeros of a measured ReLU output only say "pre-activation <= 0"
                a = np.maximum(a, 0)
                known = known & (a > 0)
                rep["method"] = "positive part"
            else:  # an estimate's negative entries are the pre-activation's estimate
                rep["method"] = "identity (estimated input)"
        elif layer.kind == "prelu":
            assert layer.slope is not None
            slope = np.broadcast_to(layer.slope.astype(dt), a.shape[1:])
            safe = np.where(slope != 0, slope, 1)
            a = np.where(a >= 0, a, a / safe)
            known = known & ((a >= 0) | (slope != 0))
            rep["method"] = "entry-wise inverse"
        else:
            assert layer.conv is not None
            W = layer.conv.operator(in_shape, dtype=dt)
            b = (np.zeros(W.out_shape[0], dt) if layer.conv.bias is None
                 else layer.conv.bias.astype(dt))
            y = (a - b.reshape((-1,) + (1,) * W.ndim_spatial)) * known
            below = net.layers[idx - 1].kind if idx > 0 else None
            how = method
            if method in ("iht", "algorithm2") and below not in ("relu", "maxpool"):
                how = "pinv"
            if how in ("iht", "algorithm2"):
                k = _sparsity_level(net, idx, in_shape, sparsity, truth, B)
                a = _sparse_recover(how, W, y, known, k, max_iter, tol, lam)
                rep["k"] = k.tolist()
            elif how == "transpose":
                xt = W.T @ y
                Wx = (W @ xt) * known
                num = np.sum((Wx * y).reshape(B, -1), axis=1)
                den = np.sum((Wx * Wx).reshape(B, -1), axis=1)
                c = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
                a = xt * c.reshape((-1,) + (1,) * len(W.in_shape)).astype(dt)
            else:
                a = _pinv(W, y, known, tol, max_iter)
            rep["method"] = how if how == method else f"{how} (input is not sparse)"
            if bounds:
                rep.update(_bounds(W, net, idx, y, known, stop_at))
            known = np.ones(a.shape, dtype=bool)
            measured = False
        if keep_estimates:
            rep["estimate"] = a
        if truth is not None:
            ref = truth.input if idx == 0 else truth.activations[net.layers[idx - 1].name]
            rep["rel_error"] = _rel(a, np.asarray(ref, dtype=dt))
        reports.append(rep)
    rel = None
    if truth is not None:
        rel = _rel(a, np.asarray(truth.input, dtype=dt))
    if np.isfinite(a).all():
        f = net.forward(a, until=start, dtype=dt).activations[start]
        res = np.linalg.norm((h - f).reshape(B, -1), axis=1)
    else:
        res = np.full(B, np.inf)
    hn = np.linalg.norm(h.reshape(B, -1), axis=1)
    n_layers = np.full(B, len(reports))
    conv_ok = res <= np.sqrt(tol) * np.where(hn > 0, hn, 1.0)
    div = ~np.isfinite(res)
    if batched:
        return InversionResult(z=a, n_iter=n_layers, converged=conv_ok, diverged=div,
                               residual_norm=res, residual_norms=np.stack([hn, res]),
                               layers=reports, rel_error=rel)
    return InversionResult(z=a[0], n_iter=int(n_layers[0]), converged=bool(conv_ok[0]),
                           diverged=bool(div[0]), residual_norm=float(res[0]),
                           residual_norms=np.array([hn[0], res[0]]), layers=reports,
                           rel_error=rel)


def _pinv(W: ConvOperator, y: np.ndarray, known: np.ndarray, tol: float,
          max_iter: int) -> np.ndarray:
    import warnings

    from .frames import pinv_reconstruct
    from .frames.pinv import ConvergenceWarning

    support = None if bool(known.all()) else known
    cap = 2 * min(W.shape)
    n_max = cap if cap <= 20 * max_iter else max_iter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported by the errors
        return np.asarray(pinv_reconstruct(W, y, support=support, tol=min(tol, 0.5),
                                           max_iter=n_max).x)


def _sparsity_level(net: Network, idx: int, in_shape: tuple[int, ...], sparsity: Any,
                    truth: ForwardResult | None, B: int) -> np.ndarray:
    name = net.layers[idx].name
    size = math.prod(in_shape)
    frac: Any = None
    if isinstance(sparsity, dict):
        frac = sparsity.get(name)
    elif sparsity is not None:
        frac = float(sparsity)
    if frac is not None:
        if not 0 < frac <= 1:
            raise ValueError(f"parameter 'sparsity' for layer {name!r} must be in (0, 1]; "
                             f"got {frac!r}")
        return np.full(B, max(1, round(frac * size)), dtype=np.int64)
    if truth is None:
        raise ValueError(
            f"method 'iht' / 'algorithm2' needs the sparsity of the input of convolution "
            f"{name!r}: pass 'sparsity' (fraction of nonzeros) or 'truth'"
        )
    ref = truth.activations[net.layers[idx - 1].name]
    return np.maximum(np.count_nonzero(np.asarray(ref).reshape(B, -1), axis=1), 1)


def _bounds(W: ConvOperator, net: Network, idx: int, y: np.ndarray, known: np.ndarray,
            stop_at: int) -> dict[str, Any]:
    from .frames import frame_bounds, theorem_a5_bound

    out: dict[str, Any] = {}
    try:
        out["frame_bounds"] = tuple(float(v) for v in frame_bounds(W))
    except (ValueError, MemoryError) as exc:  # e.g. a null space too large to resolve
        out["frame_bounds"] = f"not computed: {exc}"
    after = [layer.kind for layer in net.layers[idx + 1: idx + 3]]
    pool = net.layers[idx + 2] if after == ["relu", "maxpool"] and idx + 2 <= stop_at else None
    if pool is not None and pool.kernel == pool.stride and pool.padding != "same" and all(
        lo == 0 and hi == 0 for lo, hi in pool.padding
    ):
        try:
            out["theorem_a5_bound"] = np.asarray(
                theorem_a5_bound(W, y * known, pool=pool.kernel, stride=pool.stride))
        except ValueError as exc:
            out["theorem_a5_bound"] = f"not applicable: {exc}"
    return out
