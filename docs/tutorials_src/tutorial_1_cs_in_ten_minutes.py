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
# A Gaussian measurement matrix as a modelcs operator
# ---------------------------------------------------
# modelcs solvers take a :class:`~modelcs.LinearOperator`: an object that applies
# :math:`A` and its adjoint :math:`A^{\mathsf T}` to one signal or a batch. Writing one
# for a matrix takes a few lines: ``_forward`` and ``_adjoint`` receive a batch.
#
# modelcs thinks of codes the way a CNN layer produces them: ``K`` filters, each with
# ``n`` positions. A matrix is the case of ``K = n`` "filters" (its columns) with one
# position each, so the code has shape ``(n, 1)`` and the measurements ``(m, 1)``.

import os

import matplotlib.pyplot as plt
import numpy as np

from modelcs import LinearOperator, TopKSparse, cosamp, dottest, iht, lasso

SMALL = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"  # the test suite's quick run


class Matrix(LinearOperator):
    """``A`` as an operator on codes ``(n, 1)`` with measurements ``(m, 1)``."""

    def __init__(self, A):
        self.A = np.asarray(A, dtype=float)
        m, n = self.A.shape
        super().__init__((n, 1), (m, 1), self.A.dtype)

    def _forward(self, x):  # (B, n, 1) -> (B, m, 1)
        return (x[..., 0] @ self.A.T)[..., None]

    def _adjoint(self, y):  # (B, m, 1) -> (B, n, 1)
        return (y[..., 0] @ self.A)[..., None]


rng = np.random.default_rng(0)
m, n, k, trials = 60, 200, 8, (50 if SMALL else 200)
A = rng.standard_normal((m, n))
A /= np.linalg.norm(A, axis=0)  # unit-norm columns
Phi = Matrix(A)
print(Phi)
print("adjoint dot test, relative error:", dottest(Phi))

# %%
# Sparse signals and their measurements
# -------------------------------------
# :meth:`TopKSparse.sample <modelcs.TopKSparse.sample>` draws a batch of ``k``-sparse
# codes (supports uniform, values uniform on [-1, 1]); one ``@`` measures them all.

model = TopKSparse(k)
X = model.sample(Phi.in_shape, trials, seed=1)  # (trials, n, 1)
Y = Phi @ X  # (trials, m, 1)
print("codes", X.shape, "measurements", Y.shape,
      "nonzeros per code", np.count_nonzero(X[0]))


def recovered(Z, X, tol=1e-6):
    """Fraction of codes recovered to relative error <= tol."""
    err = np.linalg.norm((Z - X).reshape(len(X), -1), axis=1)
    return float(np.mean(err <= tol * np.linalg.norm(X.reshape(len(X), -1), axis=1)))


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

res_iht = iht(Phi, Y, model, step="normalized", max_iter=500, tol=1e-10)
print(f"normalized IHT: {recovered(res_iht.z, X):.1%} recovered, "
      f"median {int(np.median(res_iht.n_iter))} iterations")

# %%
# CoSaMP
# ------
# CoSaMP merges the ``2k`` largest entries of the gradient with the current support,
# solves least squares on that support and prunes back to ``k``; it needs far fewer
# iterations.

res_cosamp = cosamp(Phi, Y, model, max_iter=50)
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
# solved here by FISTA with a duality-gap stop :cite:p:`beck2009fista`. The penalty
# shrinks every nonzero by about :math:`\lambda`, so the Lasso finds the *support* but
# not the exact values; least squares on the support found ("debiasing") fixes that.

res_lasso = lasso(Phi, Y, 1e-3, tol=1e-9)
print(f"Lasso alone: {recovered(res_lasso.z, X):.1%} recovered to 1e-6, median error "
      f"{np.median(np.linalg.norm((res_lasso.z - X)[..., 0], axis=1)):.1e}")

Z = np.zeros_like(X)
for b in range(trials):  # a few small least-squares problems: plain NumPy is enough here
    S = np.flatnonzero(np.abs(res_lasso.z[b, :, 0]) > 1e-6)
    Z[b, S, 0] = np.linalg.lstsq(A[:, S], Y[b, :, 0], rcond=None)[0]
print(f"Lasso + debiasing: {recovered(Z, X):.1%} recovered")

# %%
# One signal at a time works the same way: pass ``y`` of shape ``(m, 1)`` and get a
# code of shape ``(n, 1)`` back.

one = cosamp(Phi, Y[0], model, max_iter=50)
print("one signal:", one.z.shape, "error", float(np.linalg.norm(one.z - X[0])))

# %%
# The phase transition
# --------------------
# For which numbers of measurements ``m`` does recovery of ``k``-sparse vectors succeed?
# Sweep ``m`` and ``k`` at a fixed length ``n`` and record the fraction recovered by
# CoSaMP: the Donoho--Tanner diagram. Above the curve (few measurements per nonzero)
# recovery fails; below it, it succeeds, with a sharp transition in between.

n_pt = 100
ms = np.arange(10, 101, 10)
ks = np.arange(1, 41, 4) if not SMALL else np.arange(1, 41, 8)
trials_pt = 10 if SMALL else 25
success = np.zeros((len(ks), len(ms)))
for j, m_j in enumerate(ms):
    A_j = rng.standard_normal((m_j, n_pt)) / np.sqrt(m_j)
    Phi_j = Matrix(A_j)
    for i, k_i in enumerate(ks):
        if k_i >= m_j:
            continue  # more nonzeros than measurements: hopeless
        X_ij = TopKSparse(int(k_i)).sample(Phi_j.in_shape, trials_pt, seed=int(100 * i + j))
        r = cosamp(Phi_j, Phi_j @ X_ij, TopKSparse(int(k_i)), max_iter=30)
        success[i, j] = recovered(r.z, X_ij, tol=1e-4)

fig, ax = plt.subplots(figsize=(6, 4.2))
im = ax.imshow(success, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1,
               extent=(ms[0] / n_pt - 0.05, ms[-1] / n_pt + 0.05, ks[0] - 1.5, ks[-1] + 1.5))
ax.set_xlabel(r"undersampling $\delta = m / n$")
ax.set_ylabel(r"sparsity $k$")
ax.set_title(f"CoSaMP, Gaussian $A$, n = {n_pt}: fraction recovered")
fig.colorbar(im, ax=ax)
fig.tight_layout()
print("success at m = n/2:", dict(zip(ks.tolist(), success[:, 4].round(2).tolist(), strict=True)))

# %%
# What next
# ---------
# * The same solvers run on a CNN layer: :doc:`tutorial_2_cnn_layer_is_one_iht_step`.
# * The model-based phase transition for convolutions: ``examples/03_phase_transition.py``
#   and ``modelcs phase``.
