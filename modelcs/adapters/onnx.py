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

import os
from typing import Any

import numpy as np

from ._layer import ConvLayer, missing_extra

__all__ = ["from_onnx"]


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise missing_extra("onnx", "adapters", "reading ONNX models") from exc
    return onnx


def _walk(graph: Any, onnx: Any, prefix: str, consts: dict[str, np.ndarray],
          layers: dict[str, ConvLayer]) -> None:
    from onnx import numpy_helper

    for init in graph.initializer:
        consts[init.name] = numpy_helper.to_array(init)
    aliases: dict[str, str] = {}
    for idx, node in enumerate(graph.node):
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
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
        w = np.asarray(consts[wname])
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
            b = np.asarray(consts[node.input[2]])
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


def from_onnx(source: Any) -> dict[str, ConvLayer]:
    """Conv layers of an ONNX model (a path or an ``onnx.ModelProto``), in graph order.

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
    onnx = _import_onnx()
    if isinstance(source, (str, os.PathLike)):
        try:
            model = onnx.load(os.fspath(source))
        except Exception as exc:  # protobuf DecodeError and friends
            raise ValueError(f"{os.fspath(source)!r} is not a readable ONNX model: {exc}") from exc
    else:
        model = source
    layers: dict[str, ConvLayer] = {}
    _walk(model.graph, onnx, "", {}, layers)
    return layers
