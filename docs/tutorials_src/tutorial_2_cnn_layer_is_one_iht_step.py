"""
A CNN layer is one IHT step
===========================

The central observation of Gilbert, Zhang, Lee, Zhang and Lee
:cite:p:`gilbert2017invertibility` (Sec. 2.3 and 3): a convolutional layer followed by max
pooling computes exactly the first iteration of *model-based* iterative hard thresholding
:cite:p:`baraniuk2010model` for a sparsity model that describes what max pooling keeps.
If the transposed filters satisfy a restricted isometry property for that model
(model-RIP), one layer already reconstructs its input approximately (Theorem 3.3), and
random filters have the model-RIP with high probability once there are enough channels
(Theorem 3.1).

This tutorial builds each piece: the convolution as an operator, the model-k-sparse
codes, the equality "CNN layer = one IHT step", the model-RIP ratios of Figure 2(a) and
the one-step reconstruction error of Figure 2(c).
"""

# %%
# The convolution as an operator
# ------------------------------
# ``W`` has ``K`` filters of length ``l`` over ``M`` channels; on a signal of length
# ``D`` it produces ``K`` response maps of ``n = D - l + 1`` shifts ('valid'). As a matrix
# it is :math:`Kn \times MD` with the shifted filters as rows, but modelcs never forms it:
# ``W @ x`` is the convolution (exactly ``torch.nn.functional.conv1d``) and ``W.T @ z``
# its adjoint, the transposed convolution. In compressive-sensing language the
# measurement operator is :math:`\Phi = W^{\mathsf T}`: a *code* ``z`` of shape ``(K, n)``
# synthesises the signal :math:`x = W^{\mathsf T} z`.

import os

import matplotlib.pyplot as plt
import numpy as np

from modelcs import (
    ConvOperator,
    ModelSparse,
    cnn_layer,
    dottest,
    estimate_delta,
    iht,
    rip_ratios,
    theorem31_condition,
    theorem33_bound,
)

SMALL = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
trials = 200 if SMALL else 1000

K, M, l, D, k = 96, 32, 5, 32, 10  # the sizes of the paper's Figure 2
W = ConvOperator.random(K, M, l, D, rng=0)  # i.i.d. N(0, 1/(M l)) filters
print(W)
print("adjoint dot test:", dottest(W))

# %%
# Model-k-sparse codes
# --------------------
# A max-pooled-then-unpooled response map keeps at most one value per filter (per pooling
# region). The model :math:`\mathcal M_k` of the paper: the code ``z`` is split into ``K``
# blocks of ``n`` (one block per filter), at most one nonzero per block and ``k``
# nonzeros in all. Its projection keeps the largest entry of each block, then the ``k``
# largest blocks -- the exact nearest point of the model
# (:class:`~modelcs.ModelSparse`).

model = ModelSparse(k)
Z = model.sample(W.out_shape, trials, rng=1)  # (trials, K, n): values uniform on [-1, 1]
X = W.T @ Z  # the signals, (trials, M, D)
print("code", Z.shape[1:], "nonzeros per block <= 1:",
      bool((np.count_nonzero(Z, axis=2) <= 1).all()), "| signal", X.shape[1:])

# %%
# A CNN layer is the first IHT iteration
# --------------------------------------
# Model-based IHT for :math:`x = \Phi z` iterates
#
# .. math::
#
#     z^{t+1} = \mathcal M\bigl(z^t + \mu\, \Phi^{\mathsf T}(x - \Phi z^t),\, k\bigr).
#
# From :math:`z^0 = 0` with :math:`\mu = 1` the first iterate is
# :math:`\mathcal M(W x, k)`: convolution, then max pooling with its switches, then
# unpooling -- a CNN layer (:func:`~modelcs.cnn_layer`). We check it bit for bit.

h = cnn_layer(W, X, model)
first = iht(W.T, X, model, step=1.0, max_iter=1, tol=0.0)
print("cnn_layer == first IHT iterate:", bool(np.array_equal(h, first.z)))

# %%
# The one-step reconstruction (Theorem 3.3)
# -----------------------------------------
# The layer's output, mapped back by the transposed convolution, approximates the input:
# :math:`\hat x = W^{\mathsf T} \mathcal M(W x, k)`. Theorem 3.3 bounds its relative error
# by :math:`5\delta_{2k}/(1-\delta_k)\sqrt{(1+\delta_{2k})/(1-\delta_{2k})}`; Figure 2(c)
# histograms it. More IHT iterations (more "layers" with tied weights) drive it to zero.

def rel_err(A, B):
    return np.linalg.norm((A - B).reshape(len(A), -1), axis=1) / np.linalg.norm(
        B.reshape(len(B), -1), axis=1)


one_step = rel_err(W.T @ h, X)
many = iht(W.T, X, model, step="normalized", max_iter=30)
print(f"one step: median {np.median(one_step):.3f}, max {one_step.max():.3f}; "
      f"30 normalized IHT iterations: median {np.median(rel_err(W.T @ many.z, X)):.1e}")

# %%
# The model-RIP (Figure 2(a))
# ---------------------------
# :math:`\Phi = W^{\mathsf T}` has the model-RIP with constant :math:`\delta_k` when
#
# .. math::
#
#     (1 - \delta_k)\|z\|_2^2 \le \|W^{\mathsf T} z\|_2^2 \le (1 + \delta_k)\|z\|_2^2
#     \quad \text{for every } z \in \mathcal M_k .
#
# The ratios :math:`\|W^{\mathsf T} z\| / \|z\|` of random model-sparse codes
# (:func:`~modelcs.rip_ratios`) concentrate around 1, more tightly with more channels.
# A random sample only shows the typical case; :func:`~modelcs.estimate_delta` searches
# supports for a worse one (a lower estimate of the worst case :math:`\delta_k`).

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for M_i in (8, 32, 128):
    W_i = ConvOperator.random(K, M_i, l, D, rng=2)
    r = rip_ratios(W_i.T, model, n_trials=trials, rng=3)
    axes[0].hist(r, bins=40, histtype="step", density=True, label=f"M = {M_i}")
axes[0].set_xlabel(r"$\|W^T z\| / \|z\|$")
axes[0].set_title("model-RIP ratios (Fig. 2a)")
axes[0].legend()
axes[1].hist(one_step, bins=40, color="C3")
axes[1].set_xlabel(r"$\|\hat x - x\| / \|x\|$")
axes[1].set_title(f"one-step reconstruction, M = {M} (Fig. 2c)")
fig.tight_layout()

delta = estimate_delta(W.T, model, n_trials=100 if SMALL else 300, rng=4)
print(f"delta_k >= {delta.delta:.3f} (worst of {delta.n_evaluated} random supports: "
      f"||W^T z||^2/||z||^2 spans [{delta.lambda_min:.3f}, {delta.lambda_max:.3f}])")

# %%
# What the theorems say at these sizes
# ------------------------------------
# Theorem 3.1's sample-size condition, with its unknown absolute constant set to 1, is
# far from satisfied at the Figure 2 sizes -- the experiment works much better than the
# worst-case theory certifies. Theorem 3.3's bound is informative only for small
# :math:`\delta`.

print(theorem31_condition(M=M, l=l, D=D, K=K, k=k, delta=0.5))
print("Theorem 3.3 bound at delta = 0.05, 0.1, 0.2:",
      np.round(theorem33_bound(np.array([0.05, 0.1, 0.2])), 3))

# %%
# Max pooling over regions, in 2-D
# --------------------------------
# With pooling regions (here 2x2 over each response map) the model keeps one value per
# region and filter; ``by="value"`` pools by signed value as a ReLU network does, and the
# switches (where each maximum sat) are what an unpooling layer needs
# (``switches="known"``).

W2 = ConvOperator.random(16, 3, (3, 3), (12, 12), rng=5)
pooled = ModelSparse(16 * 25, pool=(2, 2), by="value")  # every region of every filter
h2 = cnn_layer(W2, np.random.default_rng(6).standard_normal(W2.in_shape), pooled)
print("2-D layer output", h2.shape, "nonzeros per 2x2 region <= 1:",
      bool((np.count_nonzero(h2.reshape(16, 5, 2, 5, 2), axis=(2, 4)) <= 1).all()))

# %%
# See also the gallery's ``02_one_iht_step_is_a_cnn_layer.py`` (Figure 2 panels (a)-(d))
# and ``modelcs demo``, whose numbers are on :doc:`/reproduction`.
