"""Figure 1 of "Invariance and Inverse Stability under ReLU": a 2-D toy.
=====================================================================

A ReLU network with one hidden layer of 3 neurons is trained (scikit-learn, offline) to tell
two concentric circles apart.  Over a grid of inputs x we show

* left:   the network's prediction;
* middle: the kind of the preimage {x' : ReLU(A x' + b) = ReLU(A x + b)} of the first-layer
          activations -- single point, compact (finite) or unbounded (infinite) -- decided by
          ``modelcs.preimage_kind`` (Theorem 4, the LP of Appendix A3) at every grid point;
* right:  the condition number of the first layer's linearization ``D_I A`` at x
          (``modelcs.linearize``; 0 where all neurons are off, the paper's convention).

The paper's observation: unbounded/compact preimages come with condition number 1 or 0 (at
most one active neuron in 2-D), singletons with condition numbers > 1.

Run:  python examples/06_relu_preimage_toy.py [--out DIR]   (MODELCS_EXAMPLE_SMALL=1: coarser)
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from sklearn.datasets import make_circles  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

from modelcs import linearize, preimage_kind  # noqa: E402

KINDS = ["unbounded", "compact", "singleton"]
COLORS = ["#d62728", "#1f77b4", "#2ca02c"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", default="examples-output/")
    args = parser.parse_args()
    small = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
    grid_n = 45 if small else 110
    t0 = time.perf_counter()

    X, labels = make_circles(n_samples=400, noise=0.06, factor=0.45, random_state=0)
    # random_state 0: one of the initialisations where 3 ReLUs find the enclosing triangle
    net = MLPClassifier(hidden_layer_sizes=(3,), activation="relu", solver="adam",
                        learning_rate_init=0.02, max_iter=5000, random_state=0).fit(X, labels)
    A, b = net.coefs_[0].T, net.intercepts_[0]  # first layer: y = ReLU(A x + b), A is 3 x 2
    print(f"trained 2-3-1 ReLU network, training accuracy {net.score(X, labels):.3f}")

    lim = 1.6
    g = np.linspace(-lim, lim, grid_n)
    gx, gy = np.meshgrid(g, g)
    pts = np.c_[gx.ravel(), gy.ravel()]
    prob = net.predict_proba(pts)[:, 1].reshape(grid_n, grid_n)

    Y = np.maximum(pts @ A.T + b, 0.0)
    kinds = np.array([KINDS.index(preimage_kind(A, b, y)) for y in Y]).reshape(grid_n, grid_n)
    lin = linearize([(A, b)], pts)[0]  # batched over all grid points
    cond = np.asarray(lin.condition).reshape(grid_n, grid_n)
    n_act = np.asarray(lin.n_active).reshape(grid_n, grid_n)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ext = (-lim, lim, -lim, lim)
    im0 = axes[0].imshow(prob, origin="lower", extent=ext, cmap="coolwarm", vmin=0, vmax=1)
    axes[0].scatter(X[:, 0], X[:, 1], c=labels, cmap="coolwarm", s=6, edgecolors="k", lw=0.2)
    axes[0].set_title("prediction P(inner circle)")
    fig.colorbar(im0, ax=axes[0], fraction=0.046)
    axes[1].imshow(kinds, origin="lower", extent=ext, cmap=ListedColormap(COLORS), vmin=-0.5,
                   vmax=2.5, interpolation="nearest")
    axes[1].set_title("preimage of the first layer's output")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS]
    axes[1].legend(handles, ["infinite (unbounded)", "finite (compact)", "single point"],
                   loc="lower left", fontsize=8, framealpha=0.85)
    im2 = axes[2].imshow(cond, origin="lower", extent=ext, cmap="viridis",
                         interpolation="nearest")
    axes[2].set_title("condition number of the linearization D_I A")
    fig.colorbar(im2, ax=axes[2], fraction=0.046)
    for ax in axes:
        for a, bb in zip(A, b, strict=True):  # the three hyperplanes a.x + b = 0
            if abs(a[1]) > 1e-12:
                ax.plot(g, -(a[0] * g + bb) / a[1], color="w", lw=0.8, alpha=0.8)
            else:
                ax.axvline(-bb / a[0], color="w", lw=0.8, alpha=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("x1")
    axes[0].set_ylabel("x2")
    fig.suptitle("ReLU layer with 3 neurons in 2-D (paper Fig. 1)")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "06_relu_preimage_toy.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)

    total = kinds.size
    print(f"grid {grid_n}x{grid_n}: preimage kinds "
          + ", ".join(f"{k} {np.mean(kinds == i):.1%}" for i, k in enumerate(KINDS)))
    table: Counter = Counter()
    for k, a, c in zip(kinds.ravel(), n_act.ravel(), cond.ravel(), strict=True):
        table[(int(a), KINDS[k], "cond 0" if c == 0 else "cond 1" if abs(c - 1) < 1e-9
               else "cond > 1")] += 1
    print("active neurons | preimage  | condition | grid points")
    for (a, k, c), v in sorted(table.items()):
        print(f"{a:14d} | {k:9s} | {c:9s} | {v:6d} ({v / total:.1%})")
    finite_or_inf_low = all(c != "cond > 1" for (_, k, c) in table if k != "singleton")
    print("paper's claim (non-singleton preimages <-> condition number 0 or 1): "
          + ("holds on this grid" if finite_or_inf_low else "VIOLATED"))
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
