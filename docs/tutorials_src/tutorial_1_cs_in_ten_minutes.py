"""
Compressive sensing in ten minutes
==================================

The first lesson of a compressive-sensing course, with modelcs: recover a ``k``-sparse
vector :math:`x \\in \\mathbb{R}^n` from :math:`m < n` random linear measurements

.. math::

    y = A x, \\qquad A \\in \\mathbb{R}^{m \\times n},\\ A_{ij} \\sim \\mathcal N(0, 1/m),
    \\qquad \\|x\\|_0 \\le k ,

with three classical algorithms -- iterative hard thresholding (IHT)
:cite:p:`blumensath2009iht,blumensath2010niht`, CoSaMP :cite:p:`needell2009cosamp` and the
Lasso :cite:p:`tibshirani1996lasso` -- and then draw the phase transition that tells for
which :math:`(m, k)` recovery succeeds :cite:p:`donoho2009phase`.

Everything runs as one batched call per algorithm: 200 signals at once.
"""

# %%
# A Gaussian measurement matrix
# -----------------------------
# Every modelcs function that takes an operator accepts a plain NumPy array (also a SciPy
# sparse matrix or ``LinearOperator``, a PyLops-like object with ``matvec`` /
# ``rmatvec``, a torch tensor): :func:`~modelcs.as_operator` converts it once at the
# entry. :class:`~modelcs.MatrixOperator` is what an array becomes -- it applies
# :math:`A` and :math:`A^{\mathsf T}` to one vector or a batch of rows.

import os

import matplotlib.pyplot as plt
import numpy as np

from modelcs import MatrixOperator, TopKSparse, cosamp, dottest, iht, lasso, phase_transition

SMALL = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"  # the test suite's quick run

rng = np.random.default_rng(0)
m, n, k, trials = 60, 200, 8, (50 if SMALL else 200)
A = rng.standard_normal((m, n))
A /= np.linalg.norm(A, axis=0)  # unit-norm columns
print(MatrixOperator(A))
print("adjoint dot test, relative error:", dottest(MatrixOperator(A)))

# %%
# Sparse signals and their measurements
# -------------------------------------
# :meth:`TopKSparse.sample <modelcs.TopKSparse.sample>` draws a batch of ``k``-sparse
# vectors (supports uniform, values uniform on [-1, 1]). A batch is a stack of rows:
# ``X`` is ``(trials, n)`` and its measurements ``Y = X A^T`` are ``(trials, m)``.

model = TopKSparse(k)
X = model.sample((n,), trials, rng=1)
Y = X @ A.T
print("signals", X.shape, "measurements", Y.shape, "nonzeros per signal",
      np.count_nonzero(X[0]))


def recovered(Z, X, tol=1e-6):
    """Fraction of signals recovered to relative error <= tol."""
    err = np.linalg.norm(Z - X, axis=-1)
    return float(np.mean(err <= tol * np.linalg.norm(X, axis=-1)))


# %%
# Iterative hard thresholding
# ---------------------------
# IHT alternates a gradient step on :math:`\tfrac12\|y - A x\|^2` with the projection
# :math:`\mathcal H_k` onto ``k``-sparse vectors (keep the ``k`` largest entries):
#
# .. math::
#
#     x^{t+1} = \mathcal H_k\bigl(x^t + \mu_t A^{\mathsf T}(y - A x^t)\bigr).
#
# With a unit step it diverges when :math:`\|A\|_2 > 1` (here
# :math:`\|A\|_2 \approx 1 + \sqrt{n/m} \approx 2.8`); the *normalized* step of
# Blumensath and Davies picks :math:`\mu_t` on every iteration and converges.

res_iht = iht(A, Y, model, step="normalized", max_iter=500, tol=1e-10)
print(f"normalized IHT: {recovered(res_iht.z, X):.1%} recovered, "
      f"median {int(np.median(res_iht.n_iter))} iterations")

# %%
# CoSaMP
# ------
# CoSaMP merges the ``2k`` largest entries of the gradient with the current support,
# solves least squares on that support and prunes back to ``k``; it needs far fewer
# iterations.

res_cosamp = cosamp(A, Y, model, max_iter=50)
print(f"CoSaMP: {recovered(res_cosamp.z, X):.1%} recovered, "
      f"median {int(np.median(res_cosamp.n_iter))} iterations")

# %%
# The Lasso, and debiasing
# ------------------------
# The Lasso replaces the combinatorial constraint by an :math:`\ell_1` penalty,
#
# .. math::
#
#     \min_x \tfrac12 \|y - A x\|_2^2 + \lambda \|x\|_1 ,
#
# solved here by FISTA with a duality-gap stop :cite:p:`beck2009fista` (scikit-learn's
# ``Lasso(alpha=...)`` minimises the same objective divided by ``m``: ``alpha = lam / m``).
# The penalty shrinks every nonzero by about :math:`\lambda`, so the Lasso finds the
# *support* but not the exact values; least squares on the support found ("debiasing",
# :func:`~modelcs.debias`, or ``debias=True``) fixes that.

res_lasso = lasso(A, Y, 5e-3)
print(f"Lasso alone: {recovered(res_lasso.z, X):.1%} recovered to 1e-6, median error "
      f"{np.median(np.linalg.norm(res_lasso.z - X, axis=1)):.1e}")
res_debiased = lasso(A, Y, 5e-3, debias=True)
print(f"Lasso + debiasing: {recovered(res_debiased.z, X):.1%} recovered")

# %%
# One signal at a time works the same way: a 1-D ``y`` of length ``m`` gives a 1-D
# code of length ``n``, and every solver returns the same
# :class:`~modelcs.RecoveryResult` fields (batched in, batched out).

one = cosamp(A, Y[0], model)
print(one)
print("error", float(np.linalg.norm(one.z - X[0])))

# %%
# The phase transition
# --------------------
# For which numbers of measurements ``m`` does recovery of ``k``-sparse vectors succeed?
# Sweep ``m`` and ``k`` at a fixed length ``n`` and record the fraction recovered by
# CoSaMP: the Donoho--Tanner diagram. Above the curve (few measurements per nonzero)
# recovery fails; below it, it succeeds, with a sharp transition in between.

# :func:`~modelcs.phase_transition` draws one Gaussian matrix per row and recovers all
# trials of a cell in one batched call per algorithm; ``client=`` spreads the cells over
# a Dask cluster with identical results.

n_pt = 100
res_pt = phase_transition(
    operator="gaussian", n=n_pt, measurements=list(range(20, 101, 40 if SMALL else 10)),
    ks=list(range(1, 41, 12 if SMALL else 4)), algorithms=("cosamp", "niht"),
    trials=8 if SMALL else 20, rng=0, progress=False)
print(res_pt.success.shape, "(algorithms, measurements, sparsities)")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
ms, ks = res_pt.measurements, np.asarray(res_pt.ks)
for ax, name, success in zip(axes, res_pt.algorithms, res_pt.success, strict=True):
    im = ax.pcolormesh(ms / n_pt, ks, success.T, cmap="viridis", vmin=0, vmax=1,
                       shading="nearest")
    ax.set_xlabel(r"undersampling $\delta = m / n$")
    ax.set_title(name)
axes[0].set_ylabel(r"sparsity $k$")
fig.colorbar(im, ax=axes, label="fraction recovered")
half = int(np.argmin(np.abs(ms - n_pt // 2)))
print(f"CoSaMP success at m = {ms[half]}:",
      dict(zip(ks.tolist(), res_pt.success[0, half].round(2).tolist(), strict=True)))

# %%
# What next
# ---------
# * The same solvers run on a CNN layer: :doc:`tutorial_2_cnn_layer_is_one_iht_step`.
# * The model-based phase transition for convolutions: ``examples/03_phase_transition.py``
#   and ``modelcs phase``.
