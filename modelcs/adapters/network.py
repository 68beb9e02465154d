"""The plain layers of a trained sequential CNN, runnable forward with every activation.

:func:`network` reads a sequential convolutional network -- an ONNX model (a path or an
``onnx.ModelProto``), a ``torch.nn.Sequential`` or a Keras HDF5 model file
(``model.save('x.h5')``) -- into a :class:`Network`: an ordered list of :class:`NetLayer`
of four kinds,

* ``'conv'``: a convolution with its bias (a :class:`~modelcs.adapters.ConvLayer`; its
  linear part is a :class:`~modelcs.ConvOperator`); a batch normalisation right after a
  convolution is folded into it (inference statistics);
* ``'relu'``; ``'prelu'`` (per-channel slopes, as in MTCNN's P/R/O-Nets);
* ``'maxpool'`` (window, stride, per-axis ``(before, after)`` padding; ``forward`` returns
  its switches).

Layout transposes: a leading ``NHWC -> NCHW`` transpose (Keras models exported to ONNX)
sets :attr:`Network.input_layout` to ``'channels_last'``; every activation is
channels-first.  Identity and dropout layers (inference) are skipped.  The network ends at
the first layer that is none of these, or where the ONNX graph branches (e.g. MTCNN's
P-Net splits into two heads, VGG16's classifier head starts with a transpose to
channels-last and a reshape); :attr:`Network.stop` names that layer and its type, and
:meth:`Network.check_layer` refuses a name that lies after it, naming the unsupported layer.

Input preprocessing is separate: :func:`caffe_preprocess` (Keras ``VGG16``: RGB -> BGR,
subtract the ImageNet channel means) and its inverse :func:`caffe_deprocess`.

Examples
--------
>>> import numpy as np, torch
>>> from modelcs.adapters import network
>>> seq = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
...                           torch.nn.MaxPool2d(2), torch.nn.Flatten())
>>> net = network(seq)
>>> [(layer.name, layer.kind) for layer in net.layers], net.stop
([('0', 'conv'), ('1', 'relu'), ('2', 'maxpool')], ('3', 'Flatten'))
>>> out = net.forward(np.ones((1, 3, 8, 8), np.float32))
>>> out.activations["2"].shape, out.switches["2"].shape
((1, 8, 4, 4), (1, 8, 4, 4))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._backend import unravel_index
from .._validation import as_int_tuple, check_choice
from ._layer import ConvLayer, missing_extra

__all__ = [
    "NetLayer",
    "Network",
    "ForwardResult",
    "network",
    "maxpool",
    "unpool",
    "caffe_preprocess",
    "caffe_deprocess",
]

Pads = tuple[tuple[int, int], ...]
_KINDS = ("conv", "relu", "prelu", "maxpool")
#: ImageNet channel means in BGR order (Keras ``preprocess_input(mode='caffe')``).
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


# ----------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class NetLayer:
    """One plain layer of a :class:`Network`.

    Attributes
    ----------
    name : str
        The layer's name in its source (ONNX node, torch module path, Keras layer name).
    kind : {'conv', 'relu', 'prelu', 'maxpool'}
    source_type : str
        The source's type name (``'Conv'``, ``'Conv2d'``, ``'MaxPooling2D'``, ...).
    conv : ConvLayer or None
        ``kind == 'conv'``: filters (``OIHW``), bias, stride, padding (batch norm folded).
    slope : ndarray or None
        ``kind == 'prelu'``: slopes broadcastable to one channels-first activation
        ``(C, *spatial)``.
    kernel, stride : tuple of int
        ``kind == 'maxpool'``: window and stride.
    padding : tuple of (int, int) pairs or 'same'
        ``kind == 'maxpool'``: per-axis padding with ``-inf`` (``'same'``: TensorFlow's rule,
        resolved from the input size).
    ceil_mode : bool
        ``kind == 'maxpool'``: PyTorch's ``ceil_mode`` (a last partial window is kept).
    """

    name: str
    kind: str
    source_type: str
    conv: ConvLayer | None = None
    slope: np.ndarray | None = None
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: Any = ()
    ceil_mode: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, _KINDS)

    def pool_padding(self, spatial: Sequence[int]) -> Pads:
        """Per-axis ``(before, after)`` padding of a max-pool for an input of size ``spatial``."""
        d = len(self.kernel)
        pads: list[tuple[int, int]] = []
        for a in range(d):
            D, k, s = int(spatial[a]), self.kernel[a], self.stride[a]
            if self.padding == "same":
                n = -(-D // s)
                total = max((n - 1) * s + k - D, 0)
                pads.append((total // 2, total - total // 2))
                continue
            lo, hi = self.padding[a]
            if self.ceil_mode:
                n = -(-(D + lo + hi - k) // s) + 1
                if (n - 1) * s >= D + lo:  # PyTorch: the last window must start inside
                    n -= 1
                hi = max(hi, (n - 1) * s + k - D - lo)
            pads.append((lo, hi))
        return tuple(pads)


@dataclass
class ForwardResult:
    """What :meth:`Network.forward` returns.

    Attributes
    ----------
    input : ndarray ``(B, C, *D)``
        The (channels-first) input the first layer saw.
    activations : dict of str to ndarray
        Every layer's output ``(B, C, *n)`` by layer name (a convolution's output is its
        pre-activation ``W x + b``).
    switches : dict of str to int ndarray
        For every max-pool, the flat index (C order over the pool's *input* spatial grid)
        of the maximum of each window, shape of the pool's output.
    """

    input: Any
    activations: dict[str, Any]
    switches: dict[str, Any]

    @property
    def output(self) -> Any:
        """The last computed activation."""
        return next(reversed(self.activations.values()))


def _fold_bn(conv: ConvLayer, gamma: Any, beta: Any, mean: Any, var: Any, eps: float,
             name: str) -> ConvLayer:
    """``BN(W x + b) = (s W) x + s (b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``."""
    K = conv.out_channels
    arrs = [np.asarray(a, np.float64).reshape(-1) for a in (gamma, beta, mean, var)]
    for label, a in zip(("scale", "bias", "mean", "var"), arrs, strict=True):
        if a.shape != (K,):
            raise ValueError(
                f"batch norm {name!r}: {label} has {a.size} entries; expected {K} (the "
                f"filters of the preceding convolution {conv.name!r})"
            )
    g, b, m, v = arrs
    s = g / np.sqrt(v + float(eps))
    w = conv.filters.astype(np.float64) * s.reshape((-1,) + (1,) * (conv.filters.ndim - 1))
    b0 = np.zeros(K) if conv.bias is None else conv.bias.astype(np.float64)
    dt = conv.filters.dtype
    return dataclasses.replace(
        conv, filters=w.astype(dt), bias=(s * (b0 - m) + b).astype(dt),
        extra={**conv.extra, "folded_batchnorm": name},
    )


# ----------------------------------------------------------------------------- pooling
def maxpool(
    x: Any, kernel: Any, stride: Any = None, padding: Any = 0, *, ceil_mode: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling of ``(B, C, *D)`` with its switches (the argmax of every window).

    Parameters
    ----------
    x : ndarray ``(B, C, *D)``
    kernel, stride : int or tuple of int
        Window and stride (default: the window).
    padding : int, tuple of int or of (before, after) pairs, or 'same'
        Padding with ``-inf`` (never selected unless a window is all padding).
    ceil_mode : bool
        PyTorch's ``ceil_mode``.

    Returns
    -------
    (pooled, switches) : pooled ``(B, C, *n)``; switches ``(B, C, *n)`` int64, the flat index
    (C order over ``D``) of each window's maximum (first one on ties).

    Examples
    --------
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> p, s = maxpool(x, 2)
    >>> p[0, 0], s[0, 0]
    (array([[ 5.,  7.],
           [13., 15.]]), array([[ 5,  7],
           [13, 15]]))
    """
    x = np.asarray(x)
    d = x.ndim - 2
    if d < 1:
        raise ValueError(f"parameter 'x' must have shape (B, C, *D); got {x.shape}")
    k = as_int_tuple("kernel", kernel, d)
    s = k if stride is None else as_int_tuple("stride", stride, d)
    if isinstance(padding, str):
        pad: Any = check_choice("padding", padding, ("same",))
    elif isinstance(padding, (int, np.integer)):
        pad = tuple((int(padding), int(padding)) for _ in range(d))
    else:
        pad = tuple(_pair(p) for p in padding)
    layer = NetLayer("maxpool", "maxpool", "maxpool", kernel=k, stride=s, padding=pad,
                     ceil_mode=ceil_mode)
    return _maxpool(layer, x)


def _pair(p: Any) -> tuple[int, int]:
    if isinstance(p, (int, np.integer)):
        return int(p), int(p)
    return int(p[0]), int(p[1])


def _np(t: Any) -> np.ndarray:
    """A torch tensor (parameter or buffer) as a float64 NumPy array."""
    return np.asarray(t.detach().cpu().numpy(), np.float64)


def _maxpool(layer: NetLayer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = len(layer.kernel)
    spatial = x.shape[2:]
    pads = layer.pool_padding(spatial)
    k, s = layer.kernel, layer.stride
    if any(lo or hi for lo, hi in pads):
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    else:
        xp = x
    n = tuple((xp.shape[2 + a] - k[a]) // s[a] + 1 for a in range(d))
    if any(na < 1 for na in n):
        raise ValueError(
            f"max-pool {layer.name!r}: window {k} does not fit the input of spatial size "
            f"{tuple(spatial)} (padding {pads})"
        )
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=tuple(range(2, 2 + d)))
    win = win[(slice(None), slice(None), *(slice(None, (na - 1) * sa + 1, sa)
                                           for na, sa in zip(n, s, strict=True)))]
    flat = win.reshape(*win.shape[: 2 + d], -1)
    arg = np.argmax(flat, axis=-1)
    pooled = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    offs = unravel_index(arg, k)
    pos = []
    for a in range(d):
        start = (np.arange(n[a]) * s[a] - pads[a][0]).reshape((-1,) + (1,) * (d - 1 - a))
        pa = start + offs[a]
        pos.append(np.clip(pa, 0, spatial[a] - 1))
    switches = np.ravel_multi_index(tuple(pos), spatial).astype(np.int64)
    return np.ascontiguousarray(pooled), switches


def unpool(
    pooled: Any, spatial: Sequence[int], *, switches: Any = None, kernel: Any = None,
    stride: Any = None, padding: Any = 0,
) -> np.ndarray:
    """Place pooled values back on the pool's input grid; zero elsewhere.

    With ``switches`` (from :func:`maxpool` or :meth:`Network.forward`) each value goes where
    its window's maximum was (the "what-where" case; an input position chosen by several
    overlapping windows gets the value once).  Without them (``kernel``/``stride`` given),
    at the first position of each window (fixed switches, the invertibility paper's
    ``M_fixed``; windows starting in the padding are clipped into the grid).

    Parameters
    ----------
    pooled : ndarray ``(B, C, *n)``
    spatial : tuple of int
        The pool's input spatial shape ``D``.
    switches : int ndarray ``(B, C, *n)``, optional
    kernel, stride, padding :
        Needed only without ``switches``; padding as in :func:`maxpool` (pairs or int).

    Returns
    -------
    ndarray ``(B, C, *D)``

    Examples
    --------
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> p, s = maxpool(x, 2)
    >>> unpool(p, (4, 4), switches=s)[0, 0]
    array([[ 0.,  0.,  0.,  0.],
           [ 0.,  5.,  0.,  7.],
           [ 0.,  0.,  0.,  0.],
           [ 0., 13.,  0., 15.]])
    """
    pooled = np.asarray(pooled)
    spatial = tuple(int(v) for v in spatial)
    d = len(spatial)
    B, C = pooled.shape[:2]
    if switches is None:
        if kernel is None:
            raise ValueError("unpool needs 'switches' or the pooling 'kernel' (fixed switches)")
        k = as_int_tuple("kernel", kernel, d)
        s = k if stride is None else as_int_tuple("stride", stride, d)
        if isinstance(padding, (int, np.integer)):
            lo = (int(padding),) * d
        else:
            lo = tuple(_pair(p)[0] for p in padding)
        n = pooled.shape[2:]
        grids = np.meshgrid(*[np.clip(np.arange(n[a]) * s[a] - lo[a], 0, spatial[a] - 1)
                              for a in range(d)], indexing="ij")
        sw = np.broadcast_to(np.ravel_multi_index(tuple(grids), spatial), pooled.shape)
    else:
        sw = np.asarray(switches)
        if sw.shape != pooled.shape:
            raise ValueError(
                f"parameter 'switches' has shape {sw.shape}; expected that of 'pooled' "
                f"{pooled.shape}"
            )
    out = np.zeros((B, C, math.prod(spatial)), dtype=pooled.dtype)
    np.put_along_axis(out, sw.reshape(B, C, -1), pooled.reshape(B, C, -1), axis=-1)
    return out.reshape(B, C, *spatial)


# ----------------------------------------------------------------------------- network
class Network:
    """The plain layers of a sequential CNN (see :func:`network`).

    Parameters
    ----------
    layers : list of NetLayer
        The layers in order (convolution with bias, ReLU, max-pool), as built by
        :func:`network`.
    input_layout : {'channels_first', 'channels_last'}
        The layout the source network takes its input in (``forward`` accepts both).
    stop : (str, str) or None
        Name and type of the first layer that is not plain (where the network was cut), or
        None when the whole network was read.
    source : str
        A short description of where the layers came from.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from modelcs.adapters import Network, network
    >>> seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.MaxPool2d(2))
    >>> net = network(seq)
    >>> isinstance(net, Network), [layer.kind for layer in net.layers], net.stop
    (True, ['conv', 'relu', 'maxpool'], None)
    >>> net.forward(np.ones((1, 1, 6, 6), np.float32)).activations["2"].shape
    (1, 4, 2, 2)
    """

    def __init__(self, layers: Sequence[NetLayer], *, input_layout: str = "channels_first",
                 stop: tuple[str, str] | None = None, source: str = ""):
        self.layers = list(layers)
        if not self.layers:
            where = f" (it starts with {stop[0]!r} of type {stop[1]})" if stop else ""
            raise ValueError(f"network {source!r} has no plain layers{where}")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"network {source!r}: duplicate layer names in {names}")
        self.input_layout = check_choice("input_layout", input_layout,
                                         ("channels_first", "channels_last"))
        self.stop = stop
        self.source = source

    def __repr__(self) -> str:
        kinds = ", ".join(f"{layer.name}:{layer.kind}" for layer in self.layers)
        return f"Network({len(self.layers)} layers [{kinds}], stop={self.stop!r})"

    @property
    def names(self) -> list[str]:
        """The layer names, in order."""
        return [layer.name for layer in self.layers]

    def names_of(self, kind: str) -> list[str]:
        """Names of the layers of one kind (``'conv'``, ``'relu'``, ``'prelu'``, ``'maxpool'``)."""
        check_choice("kind", kind, _KINDS)
        return [layer.name for layer in self.layers if layer.kind == kind]

    def check_layer(self, name: str, parameter: str = "layer") -> int:
        """Index of layer ``name``; a clear error if it is unknown or past :attr:`stop`."""
        names = self.names
        if name in names:
            return names.index(name)
        if self.stop is not None:
            raise ValueError(
                f"parameter '{parameter}' = {name!r} is not a plain layer of this network: it "
                f"ends at layer {self.stop[0]!r} of type {self.stop[1]} (not a convolution, "
                f"batch norm, ReLU/PReLU, max-pool or layout transpose), and layers from "
                f"there on are not supported; the plain layers are {names}"
            )
        raise ValueError(f"parameter '{parameter}' = {name!r} is not a layer; the layers are "
                         f"{names}")

    def __getitem__(self, name: str) -> NetLayer:
        return self.layers[self.check_layer(name)]

    def forward(
        self, x: Any, *, until: str | None = None, layout: str = "channels_first",
        dtype: Any = None,
    ) -> ForwardResult:
        """Run the plain layers on ``x``; every activation and every pool's switches.

        Parameters
        ----------
        x : ndarray ``(B, C, *D)`` or ``(C, *D)`` (channels-first), or channels-last with
            ``layout='channels_last'``.  A single input gets a batch axis of 1.
        until : str, optional
            Stop after this layer (default: run all plain layers).
        layout : {'channels_first', 'channels_last'}
        dtype : float32 or float64, optional
            Computation dtype (default: the input's if floating, else float32).

        Returns
        -------
        ForwardResult
        """
        check_choice("layout", layout, ("channels_first", "channels_last"))
        x = np.asarray(x)
        d = self._ndim()
        if x.ndim == d + 1:
            x = x[None]
        if x.ndim != d + 2:
            raise ValueError(
                f"parameter 'x' must have shape (B, C, *D) or (C, *D) with {d} spatial axes; "
                f"got shape {x.shape}"
            )
        if layout == "channels_last":
            x = np.moveaxis(x, -1, 1)
        if dtype is None:
            dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        x = np.ascontiguousarray(x, dtype=dtype)
        if not np.isfinite(x).all():
            raise ValueError("parameter 'x' contains NaN or Inf")
        last = len(self.layers) - 1 if until is None else self.check_layer(until, "until")
        acts: dict[str, Any] = {}
        sws: dict[str, Any] = {}
        h = x
        for layer in self.layers[: last + 1]:
            h, sw = apply_layer(layer, h)
            acts[layer.name] = h
            if sw is not None:
                sws[layer.name] = sw
        return ForwardResult(input=x, activations=acts, switches=sws)

    def _ndim(self) -> int:
        for layer in self.layers:
            if layer.conv is not None:
                return layer.conv.ndim
            if layer.kind == "maxpool":
                return len(layer.kernel)
        return 2


def apply_layer(layer: NetLayer, h: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One plain layer on a channels-first batch; ``(output, switches or None)``."""
    if layer.kind == "conv":
        assert layer.conv is not None
        if h.shape[1] != layer.conv.in_channels:
            raise ValueError(
                f"layer {layer.name!r} expects {layer.conv.in_channels} input channels; "
                f"got {h.shape[1]}"
            )
        W = layer.conv.operator(h.shape[1:], dtype=h.dtype)
        out = W @ h
        if layer.conv.bias is not None:
            out = out + layer.conv.bias.astype(h.dtype).reshape((-1,) + (1,) * W.ndim_spatial)
        return out, None
    if layer.kind == "relu":
        return np.maximum(h, 0), None
    if layer.kind == "prelu":
        assert layer.slope is not None
        return np.where(h >= 0, h, h * layer.slope.astype(h.dtype)), None
    return _maxpool(layer, h)


# ----------------------------------------------------------------------------- sources
def network(source: Any, *, name_style: str = "source") -> Network:
    """The plain layers of a trained sequential CNN as a :class:`Network`.

    Parameters
    ----------
    source : str, os.PathLike, onnx.ModelProto or torch.nn.Sequential
        An ``.onnx`` or Keras ``.h5``/``.hdf5`` model file, an ONNX model or a torch
        ``nn.Sequential`` (nested ``Sequential`` s are flattened, names joined by ``.``).
    name_style : {'source', 'short'}
        ``'short'`` shortens ONNX node names exported from Keras
        (``'functional_1/block1_conv1_1/BiasAdd'`` -> ``'block1_conv1'``) when that stays
        unique.

    Returns
    -------
    Network
        Its :attr:`~Network.stop` names the first layer that is not plain.

    Raises
    ------
    ValueError
        The source has no plain layers, a batch norm does not follow a convolution in a
        way that can be folded, an unknown file type.
    ImportError
        ``onnx`` / ``torch`` / ``h5py`` missing (the message names the extra).

    Examples
    --------
    >>> import torch
    >>> seq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
    ...                           torch.nn.PReLU(4), torch.nn.Linear(4, 2)).eval()
    >>> net = network(seq)
    >>> [layer.kind for layer in net.layers], net.stop
    (['conv', 'prelu'], ('3', 'Linear'))
    """
    check_choice("name_style", name_style, ("source", "short"))
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"parameter 'source': no such file {path!r}")
        ext = os.path.splitext(path)[1].lower()
        if ext == ".onnx":
            net = _from_onnx(path, path)
        elif ext in (".h5", ".hdf5"):
            net = _from_keras_h5(path)
        else:
            raise ValueError(
                f"parameter 'source': unknown file type {ext!r} for {path!r}; expected .onnx, "
                ".h5 or .hdf5 (or pass a torch nn.Sequential or an onnx.ModelProto)"
            )
    elif type(source).__name__ == "ModelProto" and hasattr(source, "graph"):
        net = _from_onnx(source, "onnx.ModelProto")
    elif any(c.__module__.startswith("torch.nn") and c.__name__ == "Module"
             for c in type(source).__mro__):
        net = _from_torch(source)
    else:
        raise TypeError(
            "parameter 'source' must be a path to an .onnx / Keras .h5 file, an onnx.ModelProto "
            f"or a torch nn.Sequential; got {type(source).__name__}"
        )
    if name_style == "short":
        net = _shorten(net)
    return net


def _shorten(net: Network) -> Network:
    def short(name: str) -> str:
        parts = name.split("/")
        if len(parts) >= 2:
            base = parts[-2]
            if base.endswith("_1") and base[:-2]:
                base = base[:-2]
            tail = parts[-1].lower()
            if tail in ("relu", "prelu") or "relu" in tail:
                return base + "/relu"
            return base
        return name

    new = [short(layer.name) for layer in net.layers]
    if len(set(new)) != len(new):
        return net
    layers = [dataclasses.replace(layer, name=n, extra={**layer.extra, "source_name": layer.name})
              for layer, n in zip(net.layers, new, strict=True)]
    stop = net.stop
    return Network(layers, input_layout=net.input_layout, stop=stop, source=net.source)


# ----- ONNX
def _onnx_consts(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    return consts


def _from_onnx(source: Any, label: str) -> Network:
    try:
        import onnx
    except ImportError as exc:
        raise missing_extra("onnx", "adapters", "reading ONNX models") from exc
    from .onnx import from_onnx, load_onnx

    if isinstance(source, str):
        try:
            model = load_onnx(source)  # checked: regular file, sizes, no external data
        except Exception as exc:  # protobuf DecodeError and friends
            raise ValueError(f"{source!r} is not a readable ONNX model: {exc}") from exc
    else:
        model = source
    convs = from_onnx(model)
    graph = model.graph
    consts = _onnx_consts(graph)
    inputs = [i.name for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise ValueError(f"ONNX model {label!r}: expected one graph input; got {inputs}")
    consumers: dict[str, list[Any]] = {}
    for idx, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        for t in node.input:
            consumers.setdefault(t, []).append((idx, node))
    cur = inputs[0]
    layers: list[NetLayer] = []
    layout = "channels_first"
    stop: tuple[str, str] | None = None
    while True:
        nodes = consumers.get(cur, [])
        if not nodes:
            break
        if len(nodes) > 1:
            stop = (", ".join(n.name or f"{n.op_type}_{i}" for i, n in nodes),
                    "branch (" + ", ".join(n.op_type for _, n in nodes) + ")")
            break
        idx, node = nodes[0]
        name = node.name or f"{node.op_type}_{idx}"
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out = {"output": node.output[0]}  # the ONNX tensor this layer computes
        if node.domain not in ("", "ai.onnx"):
            stop = (name, f"{node.domain}.{op}")
            break
        if op in ("Identity", "Dropout"):
            cur = node.output[0]
            continue
        if op == "Transpose" and not layers and list(attrs.get("perm", [])) in (
            [0, 3, 1, 2], [0, 2, 1]
        ):
            layout = "channels_last"
        elif op == "Conv" and name in convs:
            layers.append(NetLayer(name, "conv", op, conv=convs[name], extra=out))
        elif (op == "BatchNormalization" and layers and layers[-1].kind == "conv"
              and all(t in consts for t in node.input[1:5])):
            prev = layers[-1]
            assert prev.conv is not None
            g, b, m, v = (consts[t] for t in node.input[1:5])
            layers[-1] = dataclasses.replace(
                prev, conv=_fold_bn(prev.conv, g, b, m, v, float(attrs.get("epsilon", 1e-5)),
                                    name), extra=out)
        elif op == "Relu":
            layers.append(NetLayer(name, "relu", op, extra=out))
        elif op == "PRelu" and len(node.input) > 1 and node.input[1] in consts:
            slope = np.asarray(consts[node.input[1]], np.float64)
            layers.append(NetLayer(name, "prelu", op, slope=_chan_first_slope(slope, name),
                                   extra=out))
        elif op == "MaxPool" and _onnx_pool_ok(attrs):
            k = tuple(int(v) for v in attrs["kernel_shape"])
            d = len(k)
            s = tuple(int(v) for v in attrs.get("strides", [1] * d))
            auto = attrs.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else str(auto)
            pad: Any
            if auto == "SAME_UPPER":
                pad = "same"
            elif auto == "VALID":
                pad = tuple((0, 0) for _ in range(d))
            else:
                p = list(attrs.get("pads", [0] * (2 * d)))
                pad = tuple((int(p[a]), int(p[a + d])) for a in range(d))
            layers.append(NetLayer(name, "maxpool", op, kernel=k, stride=s, padding=pad,
                                   extra=out))
        else:
            stop = (name, op)
            break
        cur = node.output[0]
    return Network(layers, input_layout=layout, stop=stop, source=label)


def _onnx_pool_ok(attrs: dict[str, Any]) -> bool:
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    return (
        "kernel_shape" in attrs
        and int(attrs.get("ceil_mode", 0)) == 0
        and all(int(v) == 1 for v in attrs.get("dilations", [1]))
        and auto in ("NOTSET", "VALID", "SAME_UPPER")
    )


def _chan_first_slope(slope: np.ndarray, name: str) -> np.ndarray:
    """PReLU slopes as an array broadcastable to ``(C, *spatial)``."""
    if slope.ndim <= 1:
        return slope.reshape(-1, 1, 1) if slope.size > 1 else slope.reshape(1, 1, 1)
    if slope.ndim == 3 or slope.ndim == 2:
        return slope
    if slope.ndim == 4 and slope.shape[0] == 1:
        return slope[0]
    raise ValueError(f"PReLU {name!r}: slope of shape {slope.shape} is not supported")


# ----- torch
def _from_torch(module: Any) -> Network:
    import torch

    from .torch import from_module

    convs = from_module(module)
    flat: list[tuple[str, Any]] = []

    def walk(mod: Any, prefix: str) -> None:
        for n, child in mod.named_children():
            full = f"{prefix}{n}"
            if isinstance(child, torch.nn.Sequential):
                walk(child, full + ".")
            else:
                flat.append((full, child))

    if isinstance(module, torch.nn.Sequential):
        walk(module, "")
    else:
        flat.append(("", module))
    nn = torch.nn
    layers: list[NetLayer] = []
    stop: tuple[str, str] | None = None
    for name, mod in flat:
        tname = type(mod).__name__
        if isinstance(mod, (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d)):
            continue
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and name in convs:
            layers.append(NetLayer(name, "conv", tname, conv=convs[name]))
        elif (isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and layers
              and layers[-1].kind == "conv" and mod.track_running_stats
              and mod.running_mean is not None):
            prev = layers[-1]
            assert prev.conv is not None
            K = prev.conv.out_channels
            g = _np(mod.weight) if mod.affine else np.ones(K)
            b = _np(mod.bias) if mod.affine else np.zeros(K)
            layers[-1] = dataclasses.replace(prev, conv=_fold_bn(
                prev.conv, g, b, _np(mod.running_mean), _np(mod.running_var), float(mod.eps),
                name))
        elif isinstance(mod, nn.ReLU):
            layers.append(NetLayer(name, "relu", tname))
        elif isinstance(mod, nn.PReLU):
            w = mod.weight.detach().cpu().numpy().astype(np.float64)
            layers.append(NetLayer(name, "prelu", tname, slope=w.reshape(-1, 1, 1)))
        elif isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)) and not mod.return_indices:
            d = 1 if isinstance(mod, nn.MaxPool1d) else 2
            k = as_int_tuple("kernel_size", mod.kernel_size, d)
            s = as_int_tuple("stride", mod.stride if mod.stride is not None else k, d)
            p = as_int_tuple("padding", mod.padding, d, minimum=0)
            if as_int_tuple("dilation", mod.dilation, d) != (1,) * d:
                stop = (name, tname + " (dilated)")
                break
            layers.append(NetLayer(name, "maxpool", tname, kernel=k, stride=s,
                                   padding=tuple((q, q) for q in p),
                                   ceil_mode=bool(mod.ceil_mode)))
        else:
            stop = (name, tname)
            break
    return Network(layers, stop=stop, source=type(module).__name__)


# ----- Keras HDF5
_KERAS_SKIP = {"InputLayer", "Dropout", "SpatialDropout2D", "SpatialDropout1D"}


def _from_keras_h5(path: str) -> Network:
    try:
        import h5py
    except ImportError as exc:
        raise missing_extra("h5py", "adapters", "reading Keras HDF5 files") from exc
    from .keras import from_keras_h5

    convs = from_keras_h5(path)  # conv layers (geometry, HWIO -> OIHW) by layer name
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ValueError(f"{path!r} has no 'model_config' attribute (a weights-only file)")
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        config = cfg.get("config", {})
        entries = config.get("layers", config if isinstance(config, list) else [])
        wgroup = f["model_weights"] if "model_weights" in f else f
        layers: list[NetLayer] = []
        stop: tuple[str, str] | None = None
        for entry in entries:
            cls = entry.get("class_name", "")
            lc = entry.get("config", {})
            name = str(lc.get("name") or entry.get("name") or "")
            if cls in _KERAS_SKIP:
                continue
            if cls in ("Conv1D", "Conv2D") and name in convs:
                act = lc.get("activation", "linear")
                if act not in ("linear", "relu", None):
                    stop = (name, f"{cls} with activation {act!r}")
                    break
                layers.append(NetLayer(name, "conv", cls, conv=convs[name]))
                if act == "relu":
                    layers.append(NetLayer(name + "/relu", "relu", "relu activation"))
            elif cls == "BatchNormalization" and layers and layers[-1].kind == "conv":
                w = _keras_layer_arrays(wgroup, name)
                prev = layers[-1]
                assert prev.conv is not None
                K = prev.conv.out_channels
                g = w.get("gamma", np.ones(K)) if lc.get("scale", True) else np.ones(K)
                b = w.get("beta", np.zeros(K)) if lc.get("center", True) else np.zeros(K)
                if "moving_mean" not in w or "moving_variance" not in w:
                    raise ValueError(f"Keras layer {name!r}: batch norm statistics missing")
                layers[-1] = dataclasses.replace(prev, conv=_fold_bn(
                    prev.conv, g, b, w["moving_mean"], w["moving_variance"],
                    float(lc.get("epsilon", 1e-3)), name))
            elif (cls == "Activation" and lc.get("activation") == "relu") or (
                cls == "ReLU" and lc.get("max_value") is None
                and not lc.get("negative_slope") and not lc.get("threshold")
            ):
                layers.append(NetLayer(name, "relu", cls))
            elif cls == "Activation" and lc.get("activation") == "linear":
                continue
            elif cls == "PReLU":
                w = _keras_layer_arrays(wgroup, name)
                if "alpha" not in w:
                    raise ValueError(f"Keras layer {name!r}: PReLU 'alpha' weight missing")
                a = np.asarray(w["alpha"], np.float64)
                layers.append(NetLayer(name, "prelu", cls, slope=np.moveaxis(a, -1, 0)))
            elif cls in ("MaxPooling1D", "MaxPooling2D", "MaxPool1D", "MaxPool2D"):
                d = 1 if "1D" in cls else 2
                k = as_int_tuple("pool_size", lc.get("pool_size", 2), d)
                s = as_int_tuple("strides", lc.get("strides") or k, d)
                pad = str(lc.get("padding", "valid")).lower()
                layers.append(NetLayer(
                    name, "maxpool", cls, kernel=k, stride=s,
                    padding="same" if pad == "same" else tuple((0, 0) for _ in range(d))))
            else:
                stop = (name, cls)
                break
    return Network(layers, input_layout="channels_last", stop=stop, source=path)


def _keras_layer_arrays(wgroup: Any, name: str) -> dict[str, np.ndarray]:
    if name not in wgroup:
        raise ValueError(f"Keras layer {name!r} has no weights group in the file")
    g = wgroup[name]
    out: dict[str, np.ndarray] = {}
    for wn in g.attrs.get("weight_names", []):
        wn = wn.decode() if isinstance(wn, bytes) else str(wn)
        ds = g[wn]
        if ds.size > 1 << 24:
            raise ValueError(f"Keras layer {name!r}: weight {wn!r} is implausibly large")
        out[wn.split("/")[-1].split(":")[0]] = np.asarray(ds)
    return out


# ----------------------------------------------------------------------------- preprocessing
def caffe_preprocess(images: Any) -> np.ndarray:
    """Keras ``VGG16`` input preprocessing ('caffe' mode): RGB -> BGR, minus the ImageNet means.

    Parameters
    ----------
    images : array ``(H, W, 3)`` or ``(B, H, W, 3)``
        RGB images with values in ``[0, 255]`` (uint8 or float).

    Returns
    -------
    ndarray ``(3, H, W)`` or ``(B, 3, H, W)``, float32, channels-first, BGR, mean-subtracted
    (Keras ``tf.keras.applications.vgg16.preprocess_input``, transposed to channels-first).

    Examples
    --------
    >>> x = caffe_preprocess(np.full((2, 2, 3), 128, np.uint8))
    >>> x.shape, x[:, 0, 0].round(3).tolist()
    ((3, 2, 2), [24.061, 11.221, 4.32])
    """
    a = np.asarray(images)
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"parameter 'images' must have shape (H, W, 3) or (B, H, W, 3); "
                         f"got {a.shape}")
    x = a[..., ::-1].astype(np.float64) - CAFFE_MEAN_BGR
    return np.ascontiguousarray(np.moveaxis(x, -1, -3), dtype=np.float32)


def caffe_deprocess(x: Any) -> np.ndarray:
    """Inverse of :func:`caffe_preprocess`: ``(B, 3, H, W)`` BGR -> RGB ``(B, H, W, 3)`` in
    ``[0, 1]`` (clipped), for display.

    Examples
    --------
    >>> img = np.full((2, 2, 3), 128, np.uint8)
    >>> bool(np.allclose(caffe_deprocess(caffe_preprocess(img)), 128 / 255))
    True
    """
    a = np.asarray(x, np.float64)
    rgb = np.moveaxis(a, -3, -1) + CAFFE_MEAN_BGR
    return np.clip(rgb[..., ::-1] / 255.0, 0.0, 1.0)
