"""ONNX graphs: ``Conv`` nodes with their attributes.

Weights are found in graph initializers, in ``Constant`` nodes (exporters such as
Paddle2ONNX put every weight there), or behind ``Identity`` nodes of either; subgraphs of
``If`` / ``Loop`` / ``Scan`` nodes are searched too (names get the parent node's name as a
prefix).  Attributes: ``strides``, ``pads`` (ONNX order ``[x1_begin, x2_begin, ...,
x1_end, x2_end, ...]``, converted to per-axis ``(before, after)`` pairs), ``auto_pad``
(``NOTSET``, ``VALID``, ``SAME_UPPER`` -> ``'same'``, ``SAME_LOWER`` -> ``'same_lower'``),
``dilations``, ``group``.  ONNX ``Conv`` weights are already ``OIHW``.  Reading uses the
``onnx`` package only (protobuf parsing, no execution).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .._memory import file_budget, format_bytes
from .._safeio import UnsafeFileError, check_inside, open_regular
from ._layer import ConvLayer, missing_extra

_MAX_DEPTH = 32

__all__ = ["from_onnx", "load_onnx"]


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise missing_extra("onnx", "adapters", "reading ONNX models") from exc
    return onnx


def _array(t: Any) -> np.ndarray:
    """A checked ``TensorProto`` as an array (sizes were checked by :func:`_check_tensors`)."""
    from onnx import numpy_helper

    if not hasattr(t, "data_type"):
        return np.asarray(t)
    try:
        return np.asarray(numpy_helper.to_array(t))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"ONNX tensor {t.name!r} cannot be read: {exc}") from None


def _walk(graph: Any, onnx: Any, prefix: str, consts: dict[str, Any],
          layers: dict[str, ConvLayer]) -> None:
    for init in graph.initializer:
        consts[init.name] = init
    aliases: dict[str, str] = {}
    for idx, node in enumerate(graph.node):
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
        elif node.op_type == "Identity" and node.input and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
            aliases[node.output[0]] = node.input[0]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _walk(attr.g, onnx, f"{prefix}{node.name or idx}/{attr.name}/", dict(consts),
                      layers)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for j, g in enumerate(attr.graphs):
                    _walk(g, onnx, f"{prefix}{node.name or idx}/{attr.name}{j}/", dict(consts),
                          layers)
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        name = prefix + (node.name or f"Conv_{idx}")
        wname = node.input[1]
        if wname not in consts:
            raise ValueError(
                f"ONNX Conv node {name!r}: weight {wname!r} is computed at run time (not an "
                "initializer, Constant or Identity of one); cannot read its filters"
            )
        w = _array(consts[wname])
        if w.dtype.kind != "f":
            raise ValueError(
                f"ONNX Conv node {name!r}: weight {wname!r} has dtype {w.dtype}; expected "
                "floating weights (quantized graphs are not supported)"
            )
        if w.ndim not in (3, 4):
            raise ValueError(
                f"ONNX Conv node {name!r}: weight has shape {w.shape}; only 1-D and 2-D "
                "convolutions are supported"
            )
        d = w.ndim - 2
        b = None
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in consts:
                raise ValueError(f"ONNX Conv node {name!r}: bias {node.input[2]!r} not constant")
            b = _array(consts[node.input[2]])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        padding: Any
        if auto_pad == "NOTSET":
            pads = list(attrs.get("pads", [0] * (2 * d)))
            padding = tuple((int(pads[a]), int(pads[a + d])) for a in range(d))
        elif auto_pad == "VALID":
            padding = 0
        elif auto_pad == "SAME_UPPER":
            padding = "same"
        elif auto_pad == "SAME_LOWER":
            padding = "same_lower"
        else:
            raise ValueError(f"ONNX Conv node {name!r}: unknown auto_pad {auto_pad!r}")
        if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != w.shape[2:]:
            raise ValueError(
                f"ONNX Conv node {name!r}: kernel_shape {attrs['kernel_shape']} does not match "
                f"the weight shape {w.shape}"
            )
        layers[name] = ConvLayer(
            name,
            w,
            b,
            stride=tuple(int(s) for s in attrs.get("strides", [1] * d)),
            padding=padding,
            dilation=tuple(int(s) for s in attrs.get("dilations", [1] * d)),
            groups=int(attrs.get("group", 1)),
            geometry="source",
            extra={"weight": aliases.get(wname, wname), "node": node.name},
        )


def _graphs(graph: Any, onnx: Any, depth: int = 0) -> Any:
    """The graph and every subgraph (``If`` / ``Loop`` / ``Scan`` bodies), depth-first."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"subgraphs nested deeper than {_MAX_DEPTH} levels")
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g, onnx, depth + 1)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g, onnx, depth + 1)


def _tensors(model: Any, onnx: Any) -> Any:
    """Every TensorProto of the model: initializers and tensor attributes of all graphs."""
    for g in _graphs(model.graph, onnx):
        yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def _typed_count(t: Any, onnx: Any) -> int | None:
    """Number of values stored in the typed field of ``t`` (None: no typed field applies)."""
    T = onnx.TensorProto
    field = {
        T.FLOAT: "float_data", T.COMPLEX64: "float_data", T.DOUBLE: "double_data",
        T.COMPLEX128: "double_data", T.INT64: "int64_data", T.UINT32: "uint64_data",
        T.UINT64: "uint64_data", T.INT32: "int32_data", T.INT16: "int32_data",
        T.INT8: "int32_data", T.UINT8: "int32_data", T.UINT16: "int32_data",
        T.BOOL: "int32_data", T.FLOAT16: "int32_data", T.BFLOAT16: "int32_data",
    }.get(t.data_type)
    if field is None:
        return None
    n = len(getattr(t, field))
    return n // 2 if t.data_type in (T.COMPLEX64, T.COMPLEX128) else n


def _load_external(path: str, t: Any, folder: str, budget: int, onnx: Any) -> None:
    """Read an external tensor's bytes from a regular file inside ``folder``."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if not loc or os.path.isabs(loc) or "\0" in loc:
        raise UnsafeFileError(path, f"tensor {t.name!r} names external data {loc!r}; expected "
                              "a relative path inside the model's folder")
    target = os.path.join(folder, loc)
    check_inside(target, folder, shown=path)
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise UnsafeFileError(path, f"tensor {t.name!r}: external offset/length are not "
                              "integers") from None
    try:
        fh = open_regular(target)
    except UnsafeFileError as exc:
        raise UnsafeFileError(path, f"tensor {t.name!r}: external data file {loc!r}: "
                              f"{exc.reason}") from None
    except FileNotFoundError:
        raise UnsafeFileError(path, f"tensor {t.name!r}: external data file {loc!r} does not "
                              "exist") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise UnsafeFileError(path, f"tensor {t.name!r}: external bytes [{offset}, "
                                  f"{offset + length}) lie outside {loc!r} ({size} bytes)")
        if length > budget:
            raise UnsafeFileError(path, f"tensor {t.name!r}: external data of "
                                  f"{format_bytes(length)} exceeds max_bytes={budget}")
        fh.seek(offset)
        data = fh.read(length)
    t.raw_data = data
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT


def _check_tensors(path: str, model: Any, onnx: Any, budget: int, folder: str | None) -> None:
    """Check every tensor's declared size against its data and the budget; resolve (or
    refuse) external data.  Nothing is converted to arrays here."""
    total = 0
    for t in _tensors(model, onnx):
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        except (KeyError, TypeError, ValueError):
            raise UnsafeFileError(path, f"tensor {t.name!r} has unknown data_type "
                                  f"{t.data_type}") from None
        dims = [int(d) for d in t.dims]
        if any(d < 0 for d in dims):
            raise UnsafeFileError(path, f"tensor {t.name!r} declares negative dims {dims}")
        count = math.prod(dims)
        nbytes = count * dtype.itemsize
        total += nbytes
        if total > budget:
            raise UnsafeFileError(
                path, f"tensor {t.name!r} declares dims {dims} ({format_bytes(nbytes)}); the "
                f"tensors need more than the memory budget max_bytes={budget} "
                f"({format_bytes(budget)})"
            )
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location", "?")
            if folder is None:
                raise UnsafeFileError(
                    path, f"tensor {t.name!r} keeps its data in the external file {loc!r}; "
                    "pass the .onnx path with external_data=True to read it from the model's "
                    "folder"
                )
            _load_external(path, t, folder, budget, onnx)
        if t.HasField("raw_data"):
            if len(t.raw_data) != nbytes and dtype.kind != "O":
                raise UnsafeFileError(
                    path, f"tensor {t.name!r} declares dims {dims} {dtype} ({nbytes} bytes) "
                    f"but holds {len(t.raw_data)} bytes"
                )
        else:
            n = _typed_count(t, onnx)
            if n is not None and n != count:
                raise UnsafeFileError(
                    path, f"tensor {t.name!r} declares dims {dims} ({count} values) but holds "
                    f"{n} values"
                )


def from_onnx(source: Any, *, external_data: bool = False,
              max_bytes: int | None = None) -> dict[str, ConvLayer]:
    """Conv layers of an ONNX model (a path or an ``onnx.ModelProto``), in graph order.

    Parameters
    ----------
    source : str, os.PathLike or onnx.ModelProto
    external_data : bool, default False
        Read tensors whose data lives in separate files.  Only for a path, and only from
        regular files inside the model's own folder (symbolic links resolved); without it
        such a model is refused, never resolved against the current directory.
    max_bytes : int, optional
        Memory budget for the tensors (default 4 GiB, capped by the available memory).

    Raises
    ------
    UnsafeFileError
        The file is not a regular non-empty file, not an ONNX model, declares tensors that
        do not match their data or exceed ``max_bytes``, or needs external data that is
        not allowed.

    Examples
    --------
    >>> import numpy as np, onnx
    >>> from onnx import helper, numpy_helper
    >>> w = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    >>> node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", strides=[2, 1],
    ...                         pads=[0, 1, 1, 1])
    >>> g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, None)],
    ...                       [helper.make_tensor_value_info("y", 1, None)], [w])
    >>> layer = from_onnx(helper.make_model(g))["c"]
    >>> layer.stride, layer.padding
    ((2, 1), ((0, 1), (1, 1)))
    """
    if isinstance(source, (str, os.PathLike)):
        model = load_onnx(source, external_data=external_data, max_bytes=max_bytes)
        path = os.fspath(source)
    else:
        if type(source).__name__ != "ModelProto" or not hasattr(source, "graph"):
            raise TypeError(f"parameter 'source' must be a path or an onnx.ModelProto; got "
                            f"{type(source).__name__}")
        if external_data:
            raise ValueError("parameter 'external_data'=True needs a path (the model's folder "
                             "is where its external files are looked up)")
        model = source
        path = f"<ModelProto {getattr(model.graph, 'name', '')!r}>"
        _checked(model, path, None, max_bytes)
    layers: dict[str, ConvLayer] = {}
    _walk(model.graph, _import_onnx(), "", {}, layers)
    return layers


def _checked(model: Any, path: str, folder: str | None, max_bytes: int | None) -> Any:
    onnx = _import_onnx()
    try:
        _check_tensors(path, model, onnx, file_budget(max_bytes), folder)
    except RecursionError:
        raise UnsafeFileError(path, "its graphs are nested too deeply") from None
    except UnsafeFileError:
        raise
    except ValueError as exc:
        if "nested deeper" in str(exc):
            raise UnsafeFileError(path, str(exc)) from None
        raise
    return model


def load_onnx(path: str | os.PathLike[str], *, external_data: bool = False,
              max_bytes: int | None = None) -> Any:
    """An ``onnx.ModelProto`` read from ``path`` with every check of :func:`from_onnx`.

    Use this instead of ``onnx.load``, which opens FIFOs and devices, resolves external
    data against any path the file names and allocates whatever a tensor declares.

    Parameters
    ----------
    path : str or os.PathLike
    external_data : bool, default False
        Read external tensor data (from regular files inside the model's folder only);
        without it a model that has some is refused.
    max_bytes : int, optional
        Memory budget (default 4 GiB, capped by the available memory).

    Returns
    -------
    onnx.ModelProto
        With external data, if any, loaded into the tensors.

    Examples
    --------
    >>> import os, tempfile, numpy as np, onnx
    >>> from onnx import helper, numpy_helper
    >>> g = helper.make_graph([], "g", [], [], [numpy_helper.from_array(np.ones(3), "w")])
    >>> p = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> onnx.save(helper.make_model(g), p)
    >>> load_onnx(p).graph.initializer[0].dims
    [3]
    """
    onnx = _import_onnx()
    budget = file_budget(max_bytes)
    path = os.fspath(path)
    with open_regular(path, max_bytes=budget) as fh:
        try:
            model = onnx.load_model_from_string(fh.read())
        except Exception as exc:  # protobuf DecodeError and friends
            raise UnsafeFileError(path, f"it is not a readable ONNX model ({exc})") from None
    if not model.HasField("graph"):
        raise UnsafeFileError(path, "it is not a readable ONNX model (no graph)")
    folder = os.path.dirname(os.path.realpath(path)) if external_data else None
    return _checked(model, path, folder, max_bytes)
