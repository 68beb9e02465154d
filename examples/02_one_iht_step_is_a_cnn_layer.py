"""One IHT step is a CNN layer.
=============================

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks*, Sec. 2.3, Algorithm 1
and Theorem 3.3.

Setting of the paper's Figure 2: 1-D signals x = W^T z with l=5, M=32, K=96, D=32,
Gaussian filters scaled 1/sqrt(lM), model-10-sparse codes z (one nonzero per filter block,
values uniform on [-1, 1]).  The figure shows

* (a) a code z and the CNN layer's output M(W x, k) (conv + max pooling over each filter's
      shifts + unpooling with known switches), which is exactly the first iteration of
      model-based IHT from z = 0 with unit step (checked bit for bit);
* (b) the one-step reconstruction error ||W^T M(W x, k) - x|| / ||x|| of Theorem 3.3 for
      known switches (M_known) and fixed switches (M_fixed, naive unpooling);
* (c) relative residual vs iteration for the whole batch, unit-step IHT and normalized IHT
      (median and 10-90 % band), i.e. what stacking more "layers" does;
* (d) a 2-D layer with 2x2 max pooling by value (ReLU-network pooling): the response map of
      one filter before and after M.

Run:  python examples/02_one_iht_step_is_a_cnn_layer.py [--out DIR]
      (MODELCS_EXAMPLE_SMALL=1: fewer codes)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from modelcs import ConvOperator, ModelSparse, cnn_layer, iht  # noqa: E402


def rel(a, b):
    n = a.shape[0]
    return np.linalg.norm((a - b).reshape(n, -1), axis=1) / np.linalg.norm(b.reshape(n, -1), axis=1)


def band(ax, hist, label, color):
    """Median and 10-90 % band of relative residual histories (NaN after a signal stops)."""
    h = hist / hist[0]
    # a stopped signal keeps its last value in the plot
    h = np.where(np.isnan(h), np.fmin.accumulate(np.nan_to_num(h, nan=np.inf), axis=0), h)
    it = np.arange(h.shape[0])
    ax.semilogy(it, np.median(h, axis=1), color=color, label=label)
    ax.fill_between(
        it, np.quantile(h, 0.1, axis=1), np.quantile(h, 0.9, axis=1), color=color, alpha=0.2
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", default="examples-output/")
    args = parser.parse_args()
    small = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
    n_codes = 100 if small else 1000
    t0 = time.perf_counter()

    W = ConvOperator.random(96, 32, 5, 32, rng=0)
    k = 10
    known, fixed = ModelSparse(k), ModelSparse(k, switches="fixed")
    Z = known.sample(W.out_shape, n_codes, rng=1)
    X = W.T @ Z

    # one CNN layer == first IHT iteration, exactly
    H = cnn_layer(W, X, known)
    first = iht(W.T, X, known, max_iter=1, step=1.0).z
    print(
        f"cnn_layer(W, x, M) == iht(W.T, x, M, max_iter=1): {np.array_equal(H, first)} "
        f"(max |difference| = {np.abs(H - first).max():.1e})"
    )
    supp_hit = ((H != 0) & (Z != 0)).sum(axis=(1, 2)) / k
    print(
        f"one layer finds {100 * supp_hit.mean():.1f} % of the true nonzeros (mean over "
        f"{n_codes} codes)"
    )

    err_known = rel(W.T @ H, X)
    err_fixed = rel(W.T @ cnn_layer(W, X, fixed), X)
    print(
        f"Theorem 3.3 one-step reconstruction error: median {np.median(err_known):.3f} "
        f"(known switches), {np.median(err_fixed):.3f} (fixed switches)"
    )

    res_unit = iht(W.T, X, known, max_iter=50)
    res_norm = iht(W.T, X, known, max_iter=50, step="normalized")
    for name, r in (("unit step", res_unit), ("normalized", res_norm)):
        ok = np.mean(rel(r.z, Z) <= 1e-6)
        print(
            f"IHT {name}: {100 * ok:.1f} % of codes recovered to 1e-6, median "
            f"{np.median(r.n_iter):.0f} iterations (= stacked layers)"
        )

    # 2-D layer with 2x2 max pooling by value on ReLU activations
    W2 = ConvOperator.random(8, 3, (3, 3), (18, 18), rng=2)
    x2 = np.random.default_rng(3).random((3, 18, 18))
    pool = ModelSparse(0, pool=(2, 2), by="value")
    pool = pool.with_k(pool.n_units(W2.out_shape))  # keep every region: pure max pool + unpool
    h2 = np.maximum(W2 @ x2, 0)
    p2 = pool.project(h2)

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    a = ax[0, 0]
    idx = np.arange(Z[0].size)
    zt, zh = Z[0].ravel(), H[0].ravel()
    nz = zt != 0
    a.vlines(idx[nz], 0, zt[nz], color="k", lw=1.5, label="true code z")
    a.plot(
        idx[zh != 0], zh[zh != 0], "o", mfc="none", color="C3", label="M(Wx, k) = first IHT step"
    )
    a.set(
        xlabel="code index (96 filter blocks of 28 shifts)",
        ylabel="value",
        title="(a) one CNN layer recovers the support approximately",
    )
    a.legend(fontsize=8)
    a = ax[0, 1]
    bins = np.linspace(0, max(err_known.max(), err_fixed.max()), 40)
    a.hist(err_known, bins, alpha=0.7, label=f"known switches (median {np.median(err_known):.2f})")
    a.hist(err_fixed, bins, alpha=0.7, label=f"fixed switches (median {np.median(err_fixed):.2f})")
    a.set(
        xlabel="||W^T M(Wx,k) - x|| / ||x||",
        ylabel="codes",
        title="(b) one-step reconstruction (Theorem 3.3)",
    )
    a.legend(fontsize=8)
    a = ax[1, 0]
    band(a, res_unit.residual_norms, "unit-step IHT", "C0")
    band(a, res_norm.residual_norms, "normalized IHT", "C1")
    a.axhline(1e-6, color="gray", ls=":")
    a.set(
        xlabel="iteration (= stacked layers)",
        ylabel="||y - W^T z_t|| / ||y||",
        title=f"(c) more iterations: exact recovery ({n_codes} codes, one batched call)",
    )
    a.legend(fontsize=8)
    a = ax[1, 1]
    both = np.concatenate([h2[0], np.full((h2.shape[1], 1), np.nan), p2[0]], axis=1)
    im = a.imshow(both, cmap="viridis")
    a.set(title="(d) 2-D: ReLU(Wx), one filter | after 2x2 max pool + unpool", xticks=[], yticks=[])
    fig.colorbar(im, ax=a, fraction=0.03)
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "02_one_iht_step_is_a_cnn_layer.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
