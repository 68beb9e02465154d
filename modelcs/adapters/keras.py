"""Keras models saved as HDF5 (``model.save('model.h5')``), read with ``h5py`` only.

The geometry comes from the ``model_config`` attribute (JSON), the weights from the
``model_weights`` group.  Layout conversions (Keras kernels are channels-last whatever the
layer's ``data_format``):

* ``Conv1D`` / ``Conv2D``: ``(*l, M/groups, K)`` (``HWIO``) -> ``(K, M/groups, *l)``
  (``OIHW``), ``groups`` from the config.
* ``DepthwiseConv1D/2D``: ``(*l, M, mult)`` -> ``(M*mult, 1, *l)`` with ``groups=M``
  (output channel ``c*mult + j`` filters input channel ``c``, as in TensorFlow).
* ``SeparableConv1D/2D`` ``name``: two layers, ``name/depthwise`` (as above, the layer's
  strides, padding, dilation) and ``name/pointwise`` (``1x1``, stride 1, the layer's bias).

Padding ``'valid'`` -> 0, ``'same'`` -> ``'same'`` (TensorFlow's rule, resolved from the
input size), ``'causal'`` (``Conv1D``) -> ``((dilation*(l-1), 0),)``.  Nested models
(a ``Model``/``Sequential`` used as a layer) are descended into, names joined with ``/``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .._memory import file_budget, format_bytes
from .._safeio import UnsafeFileError, check_expansion, open_regular
from ._layer import ConvLayer, missing_extra

__all__ = ["from_keras_h5", "keras_kernel_to_oihw"]

_CONV = {"Conv1D", "Conv2D", "Convolution1D", "Convolution2D"}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D",
              "SeparableConvolution2D"}
_MODELS = {"Model", "Functional", "Sequential"}


def keras_kernel_to_oihw(kernel: np.ndarray, kind: str = "conv") -> np.ndarray:
    """Convert a Keras kernel to ``(K, M/groups, *l)``.

    Parameters
    ----------
    kernel : ndarray
        ``(*l, M/groups, K)`` for ``kind='conv'``; ``(*l, M, mult)`` for ``kind='depthwise'``.
    kind : {'conv', 'depthwise'}

    Examples
    --------
    >>> import numpy as np
    >>> keras_kernel_to_oihw(np.zeros((3, 3, 1, 8))).shape
    (8, 1, 3, 3)
    >>> keras_kernel_to_oihw(np.zeros((3, 3, 16, 2)), "depthwise").shape
    (32, 1, 3, 3)
    """
    kernel = np.asarray(kernel)
    if kernel.ndim not in (3, 4):
        raise ValueError(
            f"parameter 'kernel' must have 3 or 4 axes (a 1-D or 2-D Keras kernel); got "
            f"shape {kernel.shape}"
        )
    d = kernel.ndim - 2
    spatial = tuple(range(d))
    if kind == "conv":
        return np.ascontiguousarray(np.transpose(kernel, (d + 1, d, *spatial)))
    if kind == "depthwise":
        M, mult = kernel.shape[d], kernel.shape[d + 1]
        w = np.transpose(kernel, (d, d + 1, *spatial))  # (M, mult, *l)
        return np.ascontiguousarray(w.reshape(M * mult, 1, *kernel.shape[:d]))
    raise ValueError(f"parameter 'kind' must be 'conv' or 'depthwise'; got {kind!r}")


def _padding(cfg: dict[str, Any], name: str, l: tuple[int, ...], r: tuple[int, ...]) -> Any:
    pad = str(cfg.get("padding", "valid")).lower()
    if pad == "valid":
        return 0
    if pad == "same":
        return "same"
    if pad == "causal" and len(l) == 1:
        return ((r[0] * (l[0] - 1), 0),)
    raise ValueError(f"Keras layer {name!r}: unsupported padding {pad!r}")


def _tuple(v: Any, d: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v),) * d


def _layer_weights(group: Any) -> dict[str, np.ndarray]:
    """``{basename: array}`` of one Keras layer group (``kernel``, ``bias``, ...)."""
    out = {}
    names = group.attrs.get("weight_names", [])
    for wn in names:
        wn = wn.decode() if isinstance(wn, bytes) else str(wn)
        base = wn.split("/")[-1].split(":")[0]
        out[wn] = np.asarray(group[wn])
        out.setdefault(base, out[wn])
    return out


def _convert_layer(
    cls: str, cfg: dict[str, Any], name: str, weights: dict[str, np.ndarray],
    layers: dict[str, ConvLayer],
) -> None:
    if cls in _MODELS or cls not in _CONV | _DEPTHWISE | _SEPARABLE:
        return
    d = 1 if cls.endswith("1D") else 2
    if cfg.get("data_format") not in (None, "channels_last", "channels_first"):
        raise ValueError(f"Keras layer {name!r}: unknown data_format {cfg.get('data_format')!r}")
    stride = _tuple(cfg.get("strides", 1), d)
    dil = _tuple(cfg.get("dilation_rate", 1), d)
    bias = weights.get("bias")
    if cls in _CONV:
        k = weights.get("kernel")
        if k is None:
            raise ValueError(f"Keras layer {name!r}: no 'kernel' weight in the file")
        w = keras_kernel_to_oihw(k, "conv")
        groups = int(cfg.get("groups", 1) or 1)
        layers[name] = ConvLayer(
            name, w, bias, stride=stride, padding=_padding(cfg, name, w.shape[2:], dil),
            dilation=dil, groups=groups, geometry="source",
            extra={"keras_class": cls, "source_layout": "HWIO"},
        )
        return
    dk = weights.get("depthwise_kernel")
    if dk is None:
        raise ValueError(f"Keras layer {name!r}: no 'depthwise_kernel' weight in the file")
    wd = keras_kernel_to_oihw(dk, "depthwise")
    M = int(dk.shape[d])
    if cls in _DEPTHWISE:
        layers[name] = ConvLayer(
            name, wd, bias, stride=stride, padding=_padding(cfg, name, wd.shape[2:], dil),
            dilation=dil, groups=M, geometry="source",
            extra={"keras_class": cls, "source_layout": "depthwise"},
        )
        return
    pk = weights.get("pointwise_kernel")
    if pk is None:
        raise ValueError(f"Keras layer {name!r}: no 'pointwise_kernel' weight in the file")
    layers[name + "/depthwise"] = ConvLayer(
        name + "/depthwise", wd, None, stride=stride,
        padding=_padding(cfg, name, wd.shape[2:], dil), dilation=dil, groups=M,
        geometry="source", extra={"keras_class": cls, "source_layout": "depthwise"},
    )
    layers[name + "/pointwise"] = ConvLayer(
        name + "/pointwise", keras_kernel_to_oihw(pk, "conv"), bias, stride=1, padding=0,
        dilation=1, groups=1, geometry="source",
        extra={"keras_class": cls, "source_layout": "HWIO"},
    )


def _walk(config_layers: list[dict[str, Any]], wgroup: Any, prefix: str,
          layers: dict[str, ConvLayer], nested: bool) -> None:
    for entry in config_layers:
        cls = entry.get("class_name", "")
        cfg = entry.get("config", {})
        name = str(cfg.get("name") or entry.get("name") or "")
        if cls in _MODELS:
            inner = cfg.get("layers", [])
            if name in wgroup:
                _walk(inner, wgroup[name], f"{prefix}{name}/", layers, True)
            continue
        if cls not in _CONV | _DEPTHWISE | _SEPARABLE:
            continue
        if nested:  # a nested model's weights sit in its group, named '<layer>/<var>:0'
            weights = {}
            for wn, arr in _layer_weights(wgroup).items():
                parts = wn.split("/")
                if len(parts) > 1 and parts[-2] == name:
                    weights[parts[-1].split(":")[0]] = arr
        else:
            if name not in wgroup:
                raise ValueError(f"Keras layer {name!r} has no weights group in the file")
            weights = _layer_weights(wgroup[name])
        _convert_layer(cls, cfg, prefix + name, weights, layers)


def _check_h5(path: str, f: Any, h5py: Any, budget: int) -> None:
    """Refuse links and datasets that read outside the file or expand beyond the budget.

    External links, datasets with external storage and virtual datasets (whose data live
    in other files) are refused; every dataset's dataspace must fit ``budget`` (all of them
    together too) and may not be made mostly of fill value or compressed expansion
    (declared bytes more than 100x the bytes stored).  Checksums (Fletcher-32 filters,
    metadata checksums) are verified by HDF5 itself when the data are read.
    """

    problems: list[str] = []

    def link(name: str, info: Any) -> Any:
        # an exception raised inside an h5py visit callback surfaces as SystemError:
        # record the problem and stop the visit (a non-None return) instead
        if isinstance(info, h5py.ExternalLink):
            problems.append(f"{name!r} is an external link to {info.filename!r}:{info.path!r} "
                            "(data outside the file are never read)")
        elif isinstance(info, h5py.SoftLink) and f.get(name, getlink=False) is None:
            problems.append(f"{name!r} is a soft link to {info.path!r}, which is not in the file")
        return True if problems else None

    total = 0

    def obj(name: str, o: Any) -> None:
        nonlocal total
        if not isinstance(o, h5py.Dataset):
            return
        dcpl = o.id.get_create_plist()
        if dcpl.get_external_count() > 0:
            raise UnsafeFileError(path, f"dataset {name!r} keeps its data in external file(s) "
                                  f"{dcpl.get_external(0)[0]!r} (never read)")
        if dcpl.get_layout() == h5py.h5d.VIRTUAL:
            raise UnsafeFileError(path, f"dataset {name!r} is a virtual dataset (its data live "
                                  "in other files or datasets; never read)")
        if o.shape is None:
            return
        declared = math.prod(int(s) for s in o.shape) * o.dtype.itemsize
        total += declared
        if total > budget:
            raise UnsafeFileError(
                path, f"dataset {name!r} declares shape {o.shape} {o.dtype} "
                f"({format_bytes(declared)}); the datasets need more than the memory budget "
                f"max_bytes={budget} ({format_bytes(budget)})"
            )
        check_expansion(path, f"dataset {name!r} (shape {o.shape})", declared,
                        int(o.id.get_storage_size()))

    if hasattr(f, "visititems_links"):
        f.visititems_links(link)
    if problems:
        raise UnsafeFileError(path, problems[0])
    found: list[UnsafeFileError] = []

    def guarded(name: str, o: Any) -> Any:
        try:
            obj(name, o)
        except UnsafeFileError as exc:
            found.append(exc)
            return True
        return None

    f.visititems(guarded)
    if found:
        raise found[0]


def from_keras_h5(path: str | os.PathLike[str], *,
                  max_bytes: int | None = None) -> dict[str, ConvLayer]:
    """Conv layers of a Keras HDF5 model file, in the model config's layer order.

    The file is opened as a regular file by this process (HDF5 gets the open file, so a
    FIFO or device never reaches it) and checked by :func:`_check_h5` before any dataset
    is read.  Refusals are :class:`~modelcs.UnsafeFileError`.
    """
    try:
        import h5py
    except ImportError as exc:
        raise missing_extra("h5py", "adapters", "reading Keras HDF5 files") from exc
    path = os.fspath(path)
    budget = file_budget(max_bytes)
    with open_regular(path) as fh:
        try:
            f = h5py.File(fh, "r")
        except (OSError, ValueError) as exc:
            raise UnsafeFileError(path, f"it is not a readable HDF5 file ({exc})") from None
        with f:
            try:
                return _read_keras(path, f, h5py, budget)
            except (UnsafeFileError, KerasFormatError):
                raise
            except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError,
                    RecursionError, UnicodeDecodeError) as exc:
                raise UnsafeFileError(path, f"it is not a readable Keras HDF5 file "
                                      f"({type(exc).__name__}: {exc})") from None


class KerasFormatError(ValueError):
    """A readable HDF5 file that is not a whole Keras model (a clear message, re-raised)."""


def _read_keras(path: str, f: Any, h5py: Any, budget: int) -> dict[str, ConvLayer]:
    _check_h5(path, f, h5py, budget)
    raw = f.attrs.get("model_config")
    if raw is None:
        raise KerasFormatError(
            f"{path!r} has no 'model_config' attribute: a weights-only Keras file carries no "
            "layer types, strides or paddings. Save the whole model (model.save('x.h5')), or "
            "pass the kernels as a dict with conv_layers(arrays, layout='HWIO', stride=...)"
        )
    cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if not isinstance(cfg, dict):
        raise UnsafeFileError(path, "its model_config is not a JSON object")
    wgroup = f["model_weights"] if "model_weights" in f else f
    layers: dict[str, ConvLayer] = {}
    config = cfg.get("config", {})
    config_layers = config.get("layers", config if isinstance(config, list) else [])
    _walk(config_layers, wgroup, "", layers, False)
    return layers
