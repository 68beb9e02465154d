"""CReLU keeps the span of the shifted filters; pseudoinverse reconstruction with random filters.
==============================================================================================

CReLU paper (Shang et al. 2016) and its supplement.  This script shows

1. the pairing statistic ``mu_i = min_j <phi_i, phi_j>`` of random unit-norm Gaussian
   filters at AlexNet's conv1-conv5 sizes (the red, "random" histograms of Figure 2),
2. Proposition 2.1 / Algorithm 1: ``pinv_reconstruct(W, crelu_inverse(crelu(W x))).x`` is the
   orthogonal projection of ``x`` on the row space of ``W`` (dense check), and the frame
   bounds of the shifted filters,
3. Table S1 redone with random filters (entries N(0, 1), footnote 9) at the sizes of the
   CIFAR "CReLU (half)" model: one 3x3 max-pooling region after a 3x3 conv, i.e. inputs of
   ``M x 5 x 5``, ``K`` filters, Algorithm 2 (only the activated shifted filters).  Two input
   models: i.i.d. Gaussian, and non-negative CReLU-like inputs (``crelu`` of a Gaussian with
   ``M/2`` channels, the kind of input conv2/conv5 see); for conv2 also natural-image
   inputs: random conv1 (48 filters 3x3x3) responses on 7x7 patches of scikit-image's
   bundled photos, block-averaged to CIFAR scale (the 48-channel responses for the paper's
   ``D``, their CReLU for the architecture's 96 channels).  Printed beside the paper's
   numbers and Theorem C.1's ``sqrt((D - K) / D)``.
4. Theorem A.5: reconstruction ratios of inputs built by assumption (S1) against the bound.

Run:  python examples/04_crelu_pseudoinverse.py [--out DIR]
(``MODELCS_EXAMPLE_SMALL=1`` uses fewer samples.)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from modelcs import (
    ConvOperator,
    crelu,
    crelu_inverse,
    crelu_pool,
    frame_bounds,
    pairing_cosines,
    pinv_reconstruct,
    reconstruction_ratio,
    theorem_a5_bound,
    theorem_c1_ratio,
)

# AlexNet (Krizhevsky et al. 2012) filter banks: (K, M per group, l, l)
ALEXNET = {
    "conv1": (96, 3, 11),
    "conv2": (256, 48, 5),
    "conv3": (384, 256, 3),
    "conv4": (384, 192, 3),
    "conv5": (256, 192, 3),
}

# Table S1 (CIFAR-10 / CIFAR-100), mean reconstruction ratio: (learned, random)
PAPER_S1 = {"conv2": ((0.92, 0.99), (0.93, 0.99)), "conv5": ((0.96, 0.99), (0.96, 0.99))}


def pairing(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for name, (K, M, l) in ALEXNET.items():
        w = rng.standard_normal((K, M, l, l))
        mu = pairing_cosines(w)
        d = M * l * l
        out[name] = mu
        print(f"  {name}: K={K:3d}, dim={d:5d}: mean mu = {mu.mean():+.3f} "
              f"(std {mu.std():.3f}); -sqrt(2 log K / dim) = {-np.sqrt(2 * np.log(K) / d):+.3f}")
    return out


def proposition_21(rng: np.random.Generator) -> None:
    W = ConvOperator.random(3, 4, (3, 3), (9, 9), stride=2, rng=1)  # 48 x 324: a subspace
    A = W.to_dense()
    P = np.linalg.pinv(A) @ A
    x = rng.standard_normal((8, *W.in_shape))
    xr = pinv_reconstruct(W, crelu_inverse(crelu(W @ x, axis=1), axis=1)).x
    err = np.abs(xr.reshape(8, -1) - x.reshape(8, -1) @ P.T).max()
    lo, hi = frame_bounds(W, method="iterative")
    dl, dh = frame_bounds(W, method="dense")
    r = reconstruction_ratio(x, xr, batched=True)
    print(f"  W: {W.shape[0]} x {W.shape[1]} (K=3, M=4, 3x3, 9x9, stride 2): max |x' - P x| = "
          f"{err:.1e};  ratio ||x - x'||/||x|| = {r.mean():.3f} (sqrt(1 - rank/MD) = "
          f"{np.sqrt(1 - 48 / 324):.3f})")
    print(f"  frame bounds (Lanczos) = ({lo:.4f}, {hi:.4f}); dense = ({dl:.4f}, {dh:.4f})")


def image_patches(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Random ``3 x size x size`` patches of scikit-image's bundled photos at CIFAR scale.

    Each photo is block-averaged to about 64 pixels on its short side (CIFAR objects fill
    32x32 images) and standardised per channel.
    """
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        im = getattr(data, name)().astype(np.float64)
        f = min(im.shape[:2]) // 64
        H, Wd = im.shape[0] // f, im.shape[1] // f
        im = im[: H * f, : Wd * f].reshape(H, f, Wd, f, 3).mean(axis=(1, 3))
        im = (im - im.mean(axis=(0, 1))) / im.std(axis=(0, 1))
        i = rng.integers(0, H - size + 1, n)
        j = rng.integers(0, Wd - size + 1, n)
        idx = (i[:, None, None] + np.arange(size)[None, :, None],
               j[:, None, None] + np.arange(size)[None, None, :])
        out.append(im[idx].transpose(0, 3, 1, 2))
    allp = np.concatenate(out)
    return allp[rng.permutation(allp.shape[0])[:n]]


def table_s1(rng: np.random.Generator, n_samples: int) -> list[tuple]:
    rows = []
    # conv1 of the CReLU (half) model with random N(0,1) filters, applied to photo patches:
    # its responses (48 x 5 x 5) and their CReLU (96 x 5 x 5) are natural-image inputs of
    # one conv2 pooling region
    conv1 = ConvOperator(rng.standard_normal((48, 3, 3, 3)), (7, 7))
    h1 = conv1 @ image_patches(rng, n_samples, 7)
    images = {48: h1, 96: crelu(h1, axis=1)}
    configs = [
        # layer, M (input channels of the region), K (filters), label
        ("conv2", 48, 48, "paper's D = 48x5x5"),
        ("conv2", 96, 48, "architecture: 3x3x96x48"),
        ("conv5", 96, 96, "paper's D = 96x5x5"),
        ("conv5", 192, 96, "architecture: 3x3x192x96"),
    ]
    for layer, M, K, label in configs:
        W = ConvOperator(rng.standard_normal((K, M, 3, 3)), (5, 5))  # N(0,1) entries
        D = M * 25
        for inp in ("gaussian", "crelu", "image"):
            if inp == "image":
                if layer != "conv2":
                    continue
                x = images[M]
            elif inp == "gaussian":
                x = rng.standard_normal((n_samples, M, 5, 5))
            else:
                x = crelu(rng.standard_normal((n_samples, M // 2, 5, 5)), axis=1)
            t0 = time.perf_counter()
            p = crelu_pool(W, x)  # one 3x3 max-pooling region per filter and phase
            xr = pinv_reconstruct(W, p.code, support=p.support).x
            r = reconstruction_ratio(x, xr, batched=True)
            n_act = p.support.reshape(n_samples, -1).sum(axis=1).mean()
            rows.append((layer, label, inp, D, K, float(r.mean()),
                         float(r.std(ddof=1) / np.sqrt(n_samples)), float(n_act),
                         time.perf_counter() - t0))
    print(f"  {'layer':5s} {'sizes':26s} {'input':8s} {'D':>5s} {'K':>3s}  ratio (mean +- se)"
          f"  #active  sqrt((D-K)/D)  sqrt((D-#act)/D)  paper learned/random (C10, C100)")
    for layer, label, inp, D, K, m, se, na, _ in rows:
        (l10, r10), (l100, r100) = PAPER_S1[layer]
        print(f"  {layer:5s} {label:26s} {inp:8s} {D:5d} {K:3d}  {m:.4f} +- {se:.5f}"
              f"  {na:7.1f}  {theorem_c1_ratio(D, D - K):13.4f}  "
              f"{np.sqrt((D - na) / D):16.4f}  {l10:.2f}/{r10:.2f}, {l100:.2f}/{r100:.2f}")
    return rows


def theorem_a5(rng: np.random.Generator, n_cases: int) -> tuple[np.ndarray, np.ndarray]:
    W = ConvOperator.random(6, 4, (3, 3), (8, 8), normalized=True, rng=5)
    K, n = W.out_shape[0], W.out_shape[1:]
    c = np.zeros((n_cases, K, int(np.prod(n))))
    act = rng.random((n_cases, K)) < 0.5
    act[:, 0] = True
    b, k = np.nonzero(act)
    c[b, k, rng.integers(0, c.shape[2], b.size)] = rng.standard_normal(b.size)
    c = c.reshape(n_cases, K, *n)
    x = W.T @ c
    p = crelu_pool(W, x)
    r = reconstruction_ratio(x, pinv_reconstruct(W, p.code, support=p.support).x, batched=True)
    bound = theorem_a5_bound(W, c)
    print(f"  {n_cases} inputs by (S1), K=6 unit-norm 4x3x3 filters on 8x8: ratio <= bound in "
          f"{int((r <= bound + 1e-9).sum())}/{n_cases}; exact recovery (ratio < 1e-8) in "
          f"{int((r < 1e-8).sum())}; bound < 1 in {int((bound < 1).sum())}")
    return r, bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", default="examples-output", help="output directory")
    args = parser.parse_args()
    small = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
    rng = np.random.default_rng(0)

    print("1. Pairing cosines of random unit-norm filters (CReLU Fig. 2, random curves)")
    mus = pairing(rng)
    print("2. Proposition 2.1 / Algorithm 1")
    proposition_21(rng)
    print("3. Table S1 with random filters (one max-pooling region, Algorithm 2)")
    rows = table_s1(rng, 100 if small else 500)
    print("4. Theorem A.5")
    r, bound = theorem_a5(rng, 300 if small else 1000)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(18, 4.8))
    bins = np.linspace(-0.25, 0.0, 51)
    for name, mu in mus.items():
        ax[0].hist(mu, bins=bins, histtype="step", lw=1.5, density=True, label=name)
    ax[0].set(xlabel=r"$\bar\mu_i = \min_j \langle\phi_i,\phi_j\rangle$", ylabel="density",
              title="pairing cosines, random unit filters\n(AlexNet sizes; CReLU Fig. 2 red)")
    ax[0].legend()
    labels = [f"{a}\nD={d}\n{c[:5]}" for a, b, c, d, *_ in rows]
    ax[1].bar(range(len(rows)), [row[5] for row in rows], color="tab:red", alpha=0.7,
              label="ours, random filters")
    ax[1].scatter(range(len(rows)), [theorem_c1_ratio(row[3], row[3] - row[4]) for row in rows],
                  marker="_", s=400, color="k", label=r"Thm C.1 $\sqrt{(D-K)/D}$")
    ax[1].axhline(0.99, ls="--", color="tab:red", label="paper, random (0.99)")
    ax[1].axhline(0.92, ls=":", color="tab:blue", label="paper, learned conv2 (0.92)")
    ax[1].set_xticks(range(len(rows)), labels, fontsize=7)
    ax[1].set(ylim=(0.85, 1.0), ylabel=r"mean $\|x-x'\|/\|x\|$",
              title="Table S1 with random filters (Algorithm 2)")
    ax[1].legend(fontsize=7, loc="lower right")
    fin = np.isfinite(bound)
    ax[2].scatter(np.minimum(bound[fin], 2), r[fin], s=6, alpha=0.5)
    ax[2].plot([0, 2], [0, 2], "k--", lw=1, label="ratio = bound")
    ax[2].set(xlim=(0, 2), ylim=(0, 1.05), xlabel="Theorem A.5 bound (clipped at 2)",
              ylabel="reconstruction ratio", title="Algorithm 2 on inputs satisfying (S1)")
    ax[2].legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "04_crelu_pseudoinverse.png")
    fig.savefig(path, dpi=110)
    print(f"figure: {path} (left: pairing histograms; middle: Table S1 redone; right: "
          "Theorem A.5 ratios vs bound)")


if __name__ == "__main__":
    main()
