"""
When is a ReLU layer invertible?
================================

A ReLU layer :math:`y = \\mathrm{ReLU}(A x + b)` forgets everything about the entries that
it sets to zero except their sign. Its *preimage*

.. math::

    \\{x' : \\mathrm{ReLU}(A x' + b) = y\\}
    = \\{x' : A_{+} x' + b_{+} = y_{+},\\ A_{0} x' + b_{0} \\le 0\\}

(:math:`+`: the active rows, :math:`y_i > 0`; :math:`0`: the inactive ones) is a convex
polyhedron. The "Invariance and inverse stability under ReLU" paper
:cite:p:`relu2019invariance` shows (Theorem 4) that it is a single point, a compact
polytope or an unbounded set, and decides which with a rank test and a linear program
(Appendix A3); the key notion is *omnidirectionality*: a set of vectors is
omnidirectional when every open half-space through 0 contains one of them. This tutorial
walks through the three cases, then counts them on a random layer as the number of active
units grows, and ends with the singular values of a network's linearization.
"""

# %%
# Omnidirectional sets
# --------------------
# In the plane, three vectors at 120 degrees are omnidirectional; three vectors in a
# half-plane are not (:func:`~modelcs.is_omnidirectional`). If the rows of the inactive
# part of the layer are omnidirectional (after restricting to the null space of the
# active rows), the inequalities :math:`A_0 x' \le -b_0` close the preimage.

import os

import matplotlib.pyplot as plt
import numpy as np

from modelcs import (
    distant_preimage_point,
    is_omnidirectional,
    linearize,
    preimage_kind,
    preimage_point,
)

SMALL = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
angles = np.deg2rad([90, 210, 330])
star = np.stack([np.cos(angles), np.sin(angles)], axis=1)
fan = np.stack([np.cos(angles / 3), np.sin(angles / 3)], axis=1)
print("three directions at 120 degrees:", is_omnidirectional(star))
print("three directions within 110 degrees:", is_omnidirectional(fan))

# %%
# The three kinds of preimage
# ---------------------------
# One layer with 2 inputs. With two active units (full column rank) the input is
# determined: a singleton. With every unit inactive, the preimage is the set where all
# pre-activations are non-positive: bounded (compact) exactly when the rows are
# omnidirectional, unbounded otherwise.

b = np.array([-1.0, -1.0, -1.0])
for name, A, x in [
    ("star, two units active", star, np.array([0.0, -3.0])),
    ("star, no unit active", star, np.array([0.1, 0.1])),
    ("fan, no unit active", fan, np.array([-0.5, 0.0])),
]:
    y = np.maximum(A @ x + b, 0)
    kind = preimage_kind(A, b, y)
    print(f"{name:>24}: y = {np.round(y, 2)}, preimage {kind!r}, "
          f"deepest point {np.round(preimage_point(A, b, y), 3)}")

# %%
# A different input with the same features
# ----------------------------------------
# When the preimage is more than a point, the layer cannot tell its points apart.
# :func:`~modelcs.distant_preimage_point` walks as far as possible in a chosen direction
# while keeping the output fixed (the paper's Appendix A7 uses it to find images of one
# digit with the features of another).

y = np.maximum(star @ np.array([0.1, 0.1]) + b, 0)
far = distant_preimage_point(star, b, y, direction=np.array([1.0, 0.0]))
print("a distant point with the same output:", np.round(far, 3),
      "output", np.maximum(star @ far + b, 0))

# %%
# Counting kinds on a random layer
# --------------------------------
# A random layer with ``n = 10`` inputs and ``m = 20`` units, negative biases, and inputs
# drawn at random: the preimage is a singleton as soon as ``n`` units are active (the
# active rows are in general position); below that, the linear program decides between
# compact (the inactive rows, restricted to the null space of the active ones, are
# omnidirectional and close the polyhedron) and unbounded (they are not). This is the
# left panel of the paper's Figure 4, on a toy scale.

rng = np.random.default_rng(0)
n_in, m_units = 10, 20
A = rng.standard_normal((m_units, n_in))
b = rng.standard_normal(m_units) - 2.0
samples = 150 if SMALL else 600
counts: dict[int, dict[str, int]] = {}
for xi in rng.standard_normal((samples, n_in)) * 1.5:
    y = np.maximum(A @ xi + b, 0)
    active = int(np.count_nonzero(y))
    kind = preimage_kind(A, b, y)
    counts.setdefault(active, {}).setdefault(kind, 0)
    counts[active][kind] += 1

kinds = ("singleton", "compact", "unbounded")
actives = sorted(counts)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
bottom = np.zeros(len(actives))
for kind, color in zip(kinds, ("C0", "C2", "C3"), strict=True):
    vals = np.array([counts[a].get(kind, 0) for a in actives])
    axes[0].bar(actives, vals, bottom=bottom, color=color, label=kind)
    bottom += vals
axes[0].axvline(n_in - 0.5, color="k", lw=0.8, ls="--")
axes[0].set_xlabel("active units")
axes[0].set_ylabel("inputs")
axes[0].set_title(f"preimage kinds, random layer {m_units} x {n_in}")
axes[0].legend()
print({a: counts[a] for a in actives})

# %%
# Stability: singular values of the linearization
# -----------------------------------------------
# Even where the input is determined, recovering it can be unstable. Inside the linear
# region of ``x`` a ReLU network is affine with matrix
# :math:`J_L = D_{I_L} A_L \cdots D_{I_1} A_1` (:math:`D_I` zeroes the inactive units);
# its singular values (:func:`~modelcs.linearize`) say how much each direction of the
# input is shrunk. Here: three random layers of width 30 on 10 inputs.

layers = [(rng.standard_normal((30, 10)) / np.sqrt(10), 0.1 * rng.standard_normal(30))]
layers += [(rng.standard_normal((30, 30)) / np.sqrt(15), 0.1 * rng.standard_normal(30))
           for _ in range(2)]
lin = linearize(layers, rng.standard_normal(10))
for i, stage in enumerate(lin, 1):
    s = np.asarray(stage.singular_values)
    axes[1].semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-16), "o-", label=f"layer {i}")
    print(f"layer {i}: {int(stage.n_active)} active units, "
          f"{int(stage.n_zero)} zero singular values, largest {s.max():.2f}, "
          f"smallest nonzero {s[s > 1e-12 * s.max()].min():.2e}")
axes[1].set_xlabel("index")
axes[1].set_title("singular values of $J_l$ (cf. paper Fig. 6)")
axes[1].legend()
fig.tight_layout()

# %%
# See also the gallery's examples 06 (the 2-D toy of the paper's Figure 1), 07 (trained
# MLPs on scikit-learn's digits, Figures 4 and 7) and 08 (a ReLU CNN, Figures 5 and 6).
