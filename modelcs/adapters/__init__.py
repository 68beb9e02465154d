"""Thin adapters from trained-network weights to :class:`~modelcs.ConvOperator`.

:func:`conv_layers` reads the convolution layers of a trained network -- a
``torch.nn.Module``, a state dict, or a ``.pt``/``.pth``, ``.onnx``, ``.h5``/``.hdf5``
(Keras), ``.safetensors`` or ``.npz`` file -- into an ordered ``{name: ConvLayer}`` dict.
Every :class:`ConvLayer` holds its filters in PyTorch's ``OIHW`` / ``OIL`` layout, its bias,
stride, padding, dilation and groups, and builds the layer's linear part with
``layer.operator(input_shape)``.

What each source carries
------------------------
* ``torch.nn.Module``: ``Conv1d``/``Conv2d`` modules with all their geometry.
* ONNX: ``Conv`` nodes (also inside ``If``/``Loop`` subgraphs); weights from initializers,
  ``Constant`` nodes or ``Identity`` of those; ``strides``, ``pads`` (asymmetric pairs),
  ``auto_pad``, ``dilations``, ``group``.
* Keras HDF5 (``model.save('x.h5')``): ``Conv1D/2D`` (``HWIO`` -> ``OIHW``),
  ``DepthwiseConv1D/2D`` (``(kh, kw, in, mult)`` -> ``(in*mult, 1, kh, kw)``,
  ``groups=in``), ``SeparableConv1D/2D`` (two layers ``name/depthwise`` and
  ``name/pointwise``), with strides, padding and dilation from the model config.
* Bare weights -- a state dict, ``.pt``/``.pth`` holding a state dict, ``.npz``,
  ``.safetensors``, a Keras weights-only ``.h5`` -- carry **no strides, paddings or
  groups**: every 3-D/4-D floating array becomes a layer with stride 1, no padding,
  groups 1 (``geometry='default'``).  Pass the true values per layer::

      conv_layers("mobilenet.pth", stride={"features.0.0": 2}, padding={"features.0.0": 1},
                  groups={"features.1.conv.0.0": 32})

  Each override is a single value for every layer or a ``{name: value}`` dict (unknown
  names raise).  ``layout='HWIO'`` reads channels-last arrays (TensorFlow) from ``.npz`` /
  ``.safetensors`` / dicts.  Transposed convolutions stored in a bare state dict cannot be
  told apart from convolutions (same rank); drop them with ``include``.

Security: every file is hostile until checked, and every refusal is one exception,
:class:`UnsafeFileError` (a ``ValueError``), naming the file and the reason.

* Only regular, non-empty files are opened (with ``O_NONBLOCK``, checked by ``fstat``): a
  directory, FIFO, device or socket is refused before anything blocks or is read.  A
  symbolic link is followed only when its target lies inside the link's own folder (pass
  ``os.path.realpath(p)`` to read a target you trust elsewhere, e.g. a hub cache blob).
* Nothing is unpickled: ``.npz`` members with object arrays are refused; ``.pt``/``.pth``
  go through ``torch.load(..., weights_only=True)`` after the storage sizes their pickle
  declares were found *without executing it* and checked.
* Every declared size (``.npy`` headers in ``.npz``, safetensors headers, torch storages,
  ONNX tensor dims, HDF5 dataspaces) is checked against ``max_bytes`` (default 4 GiB,
  capped by the memory available) and against the bytes actually present before
  anything is allocated; compressed members (zip, HDF5 chunks, fill values) may not expand
  more than 100x.
* Integrity the formats carry is enforced: zip CRC-32 (``.npz``, torch zip checkpoints),
  HDF5 Fletcher-32 and metadata checksums, safetensors header consistency (contiguous,
  in-bounds ranges, ``dtype * shape`` = byte length).  Formats without checksums (ONNX,
  safetensors data, legacy torch files) cannot reveal a flipped byte inside the data.
* Nothing outside the file is read: HDF5 external links, external storage and virtual
  datasets are refused; ONNX external data only with ``external_data=True``, and only
  from regular files inside the model's folder.

Optional packages: ``torch`` (``pip install 'modelcs[torch]'``), ``onnx``, ``h5py``,
``safetensors`` (``pip install 'modelcs[adapters]'``); a missing one raises ``ImportError``
naming the extra.

Examples
--------
>>> import numpy as np
>>> from modelcs.adapters import conv_layers
>>> weights = {"conv1.weight": np.ones((8, 3, 3, 3), np.float32),
...            "conv1.bias": np.zeros(8, np.float32), "fc.weight": np.ones((10, 8), np.float32)}
>>> layers = conv_layers(weights, stride={"conv1": 2}, padding=1)
>>> list(layers), layers["conv1"].stride, layers["conv1"].geometry
(['conv1'], (2, 2), 'override')
>>> layers["conv1"].operator((3, 32, 32)).out_shape
(8, 16, 16)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from .._safeio import UnsafeFileError
from ._layer import ConvLayer
from .arrays import from_arrays, load_npz, load_safetensors
from .network import Network, network

__all__ = ["ConvLayer", "Network", "UnsafeFileError", "conv_layers", "network"]

_OVERRIDES = ("stride", "padding", "dilation", "groups")


def _is_torch_module(obj: Any) -> bool:
    return any(
        c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__
    )


def _apply_overrides(
    layers: dict[str, ConvLayer], overrides: dict[str, Any]
) -> dict[str, ConvLayer]:
    per_layer: dict[str, dict[str, Any]] = {name: {} for name in layers}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            unknown = [n for n in value if n not in layers]
            if unknown:
                raise ValueError(
                    f"parameter '{key}' names unknown layer(s) {unknown}; the layers are "
                    f"{list(layers)}"
                )
            for name, v in value.items():
                per_layer[name][key] = v
        else:
            for name in layers:
                per_layer[name][key] = value
    out = {}
    for name, layer in layers.items():
        changes = per_layer[name]
        if changes:
            try:
                layer = dataclasses.replace(layer, geometry="override", **changes)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"layer {name!r}: {exc}") from exc
        out[name] = layer
    return out


def conv_layers(
    source: Any,
    *,
    stride: Any = None,
    padding: Any = None,
    dilation: Any = None,
    groups: Any = None,
    layout: str = "OIHW",
    include: Callable[[str], bool] | None = None,
    max_bytes: int | None = None,
    external_data: bool = False,
) -> dict[str, ConvLayer]:
    """The convolution layers of a trained network, in order, as ``{name: ConvLayer}``.

    Parameters
    ----------
    source : torch.nn.Module, Mapping, str or os.PathLike
        A module, a state dict (``{name: tensor or array}``), or a path ending in ``.pt``,
        ``.pth``, ``.bin``, ``.onnx``, ``.h5``, ``.hdf5``, ``.keras``-style HDF5,
        ``.safetensors`` or ``.npz``.
    stride, padding, dilation, groups : optional
        Per-layer geometry overrides: one value for every layer, or ``{layer_name: value}``.
        Needed for bare weights (state dicts, ``.npz``, ``.safetensors``), which carry none;
        they replace what a module / ONNX / Keras source says (``geometry='override'``).
        ``padding`` takes an int, per-axis ints or ``(before, after)`` pairs, ``'valid'``,
        ``'same'`` or ``'same_lower'``.
    layout : {'OIHW', 'HWIO'}
        Layout of bare arrays (state dicts, ``.npz``, ``.safetensors``): ``'OIHW'`` (PyTorch,
        ``(K, M/groups, *l)``) or ``'HWIO'`` (TensorFlow, ``(*l, M/groups, K)``).  Ignored for
        modules, ONNX and Keras files, whose layout is known.
    include : callable, optional
        Keep only layers whose name satisfies ``include(name)``.
    max_bytes : int, optional
        Memory budget for reading a file: every size its headers declare is checked against
        it before anything is allocated.  Default 4 GiB, capped by the memory available.
    external_data : bool, default False
        ONNX only: read tensors stored in separate files, from regular files inside the
        model's own folder.  Without it such a model is refused.

    Returns
    -------
    dict of str to ConvLayer
        In the source's order (module registration, graph order, Keras layer order, file
        order).

    Raises
    ------
    UnsafeFileError
        (a ``ValueError``) The file was refused: not a regular file (directory, FIFO,
        device), a link leaving its folder, empty, truncated or corrupt (checksums, header
        consistency), larger than ``max_bytes`` or a compression bomb, reaching outside
        itself (HDF5 external storage/links, virtual datasets, ONNX external data), or a
        checkpoint that is not plain tensors (never unpickled).  The message names the
        file and the reason.
    ValueError
        Unknown file type, a bad override.
    ImportError
        The reader for the format is not installed (the message names the extra).
    FileNotFoundError
        ``source`` is a path that does not exist.

    Examples
    --------
    A state dict carries no geometry; pass it per layer:

    >>> import numpy as np
    >>> from modelcs.adapters import conv_layers
    >>> weights = {"conv1.weight": np.ones((8, 3, 3, 3), np.float32),
    ...            "conv1.bias": np.zeros(8, np.float32)}
    >>> layers = conv_layers(weights, stride={"conv1": 2}, padding=1)
    >>> list(layers), layers["conv1"].stride, layers["conv1"].operator((3, 32, 32)).out_shape
    (['conv1'], (2, 2), (8, 16, 16))
    """
    if layout not in ("OIHW", "HWIO"):
        raise ValueError(f"parameter 'layout' must be 'OIHW' or 'HWIO'; got {layout!r}")
    layers: dict[str, ConvLayer]
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.lexists(path):
            raise FileNotFoundError(f"parameter 'source': no such file {path!r}")
        ext = os.path.splitext(path)[1].lower()
        if ext in (".pt", ".pth", ".bin", ".ckpt"):
            from .torch import load_state_dict

            layers = from_arrays(load_state_dict(path, max_bytes=max_bytes), layout=layout)
        elif ext == ".onnx":
            from .onnx import from_onnx

            layers = from_onnx(path, external_data=external_data, max_bytes=max_bytes)
        elif ext in (".h5", ".hdf5"):
            from .keras import from_keras_h5

            layers = from_keras_h5(path, max_bytes=max_bytes)
        elif ext == ".safetensors":
            layers = from_arrays(load_safetensors(path, max_bytes=max_bytes), layout=layout)
        elif ext == ".npz":
            layers = from_arrays(load_npz(path, max_bytes=max_bytes), layout=layout)
        else:
            raise ValueError(
                f"parameter 'source': unknown file type {ext!r} for {path!r}; expected one of "
                ".pt, .pth, .bin, .ckpt, .onnx, .h5, .hdf5, .safetensors, .npz"
            )
    elif _is_torch_module(source):
        from .torch import from_module

        layers = from_module(source)
    elif isinstance(source, Mapping):
        layers = from_arrays(source, layout=layout)
    else:
        if type(source).__name__ == "ModelProto" and hasattr(source, "graph"):
            from .onnx import from_onnx

            layers = from_onnx(source, max_bytes=max_bytes)
        else:
            raise TypeError(
                "parameter 'source' must be a torch.nn.Module, a state dict (Mapping), an "
                f"onnx.ModelProto or a path to a weights file; got {type(source).__name__}"
            )
    if include is not None:
        layers = {k: v for k, v in layers.items() if include(k)}
    overrides = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _apply_overrides(layers, overrides)
