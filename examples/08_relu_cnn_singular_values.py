"""Figures 5 and 6 of "Invariance and Inverse Stability under ReLU": a ReLU CNN layer by layer
===========================================================================================

Singular values of the linearization of a small ReLU CNN, layer by layer.

The network is six 3x3 convolutions (strides 1, 2, 1, 1, 1, 2, 'same' padding: the layout of
the paper's WideCIFAR, with fewer channels), each a ``modelcs.ConvOperator`` plus a bias and
a ReLU.  Weights are RANDOM (He initialisation, N(0, 2/fan_in); biases N(0, 0.05^2); fixed
seed) -- not trained.  Inputs are sklearn's bundled 8x8 digits upsampled to 16x16 (d0 = 256).

For each input x, ``modelcs.linearize`` builds J_l = D_{I_l} A_l ... D_{I_1} A_1 (exact on the
linear region containing x; conv layers are applied as operators to the Jacobian's columns,
never made dense) and its singular values.  Left: median (over the inputs) singular values per
layer after the ReLU (Fig. 6).  Right: output units, number of non-zero singular values and
condition number per stage, convolution and ReLU counted separately (Fig. 5).

Run:  python examples/08_relu_cnn_singular_values.py [--out DIR]   (MODELCS_EXAMPLE_SMALL=1)
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402  (installed with scikit-learn)

from modelcs import ConvOperator, linearize  # noqa: E402

# (out channels, stride) of the six conv layers; kernel 3x3, 'same' padding
ARCH = [(16, 1), (16, 2), (16, 1), (8, 1), (8, 1), (16, 2)]


def build_cnn(in_channels: int, size: int, rng: int | np.random.Generator | None) -> list:
    rng = np.random.default_rng(rng)
    layers, M, D = [], in_channels, (size, size)
    for K, stride in ARCH:
        w = rng.standard_normal((K, M, 3, 3)) * np.sqrt(2.0 / (M * 9))  # He initialisation
        W = ConvOperator(w, D, stride=stride, padding="same")
        layers.append((W, 0.05 * rng.standard_normal(K)))  # one bias per output channel
        M, D = K, W.output_spatial
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", default="examples-output/")
    args = parser.parse_args()
    small = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
    n_samples, chunk = (12, 6) if small else (50, 10)
    t0 = time.perf_counter()

    digits = load_digits().images[:n_samples] / 16.0  # (B, 8, 8) in [0, 1]
    X = np.kron(digits, np.ones((2, 2)))[:, None]  # (B, 1, 16, 16)
    layers = build_cnn(1, 16, rng=0)
    d0 = X[0].size

    # linearize in chunks of inputs (each J_l is B x d_l x d0; this bounds the memory)
    parts = [linearize(layers, X[i:i + chunk], split=True) for i in range(0, n_samples, chunk)]
    stages = []
    for s in range(len(parts[0])):
        r0 = parts[0][s]
        cat = {f: np.concatenate([np.atleast_1d(getattr(p[s], f)) for p in parts])
               for f in ("rank", "n_zero", "condition")}
        sv = np.concatenate([p[s].singular_values for p in parts])
        n_act = None if r0.n_active is None else np.concatenate([p[s].n_active for p in parts])
        stages.append(dict(index=r0.index, stage=r0.stage, units=int(np.prod(r0.out_shape)),
                           sv=sv, n_act=n_act, **cat))

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(14, 5))
    cmap = plt.get_cmap("viridis")
    relu_stages = [st for st in stages if st["stage"] == "relu"]
    for st in relu_stages:
        med = np.median(st["sv"], axis=0)
        ax0.semilogy(np.arange(1, med.size + 1), np.maximum(med, 1e-17),
                     color=cmap((st["index"] - 1) / (len(ARCH) - 1)), label=f"layer {st['index']}")
    ax0.set_xlabel("index of singular value")
    ax0.set_ylabel("singular value (median over inputs)")
    ax0.set_ylim(1e-6, None)
    ax0.set_title("Decay of singular values over the layers (conv + ReLU; paper Fig. 6)")
    ax0.legend(fontsize=8)
    xs = np.arange(1, len(stages) + 1)
    names = [f"{st['index']}{'c' if st['stage'] == 'linear' else 'r'}" for st in stages]
    ax1.semilogy(xs, [st["units"] for st in stages], "s-", label="output units")
    ax1.semilogy(xs, [np.median(st["rank"]) for st in stages], "o-",
                 label="non-zero singular values (median)")
    ax1.semilogy(xs, [np.median(st["condition"]) for st in stages], "^-",
                 label="condition number (median)")
    ax1.set_xticks(xs, names)
    ax1.set_xlabel("stage (c = convolution, r = after ReLU)")
    ax1.set_title("Units, rank and condition per stage (paper Fig. 5)")
    ax1.legend(fontsize=8)
    fig.suptitle(f"Random He-initialised ReLU CNN (6 ConvOperator layers), {n_samples} digits "
                 f"upsampled to 16x16 (d0 = {d0})")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "08_relu_cnn_singular_values.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)

    print(f"random (untrained) He-initialised CNN, {n_samples} inputs, d0 = {d0}; medians over "
          "inputs")
    print("stage | units | active | rank | invariant dirs | sigma_max | sigma_min>0 | cond")
    for st, name in zip(stages, names, strict=True):
        rank = st["rank"]
        smin = np.array([s[r - 1] if r else 0.0 for s, r in zip(st["sv"], rank, strict=True)])
        act = "-" if st["n_act"] is None else f"{np.median(st['n_act']):.0f}"
        print(f"{name:5s} | {st['units']:5d} | {act:>6s} | {np.median(rank):4.0f} | "
              f"{np.median(st['n_zero']):14.0f} | {np.median(st['sv'][:, 0]):9.3g} | "
              f"{np.median(smin):11.3g} | {np.median(st['condition']):.3g}")
    first, last = relu_stages[0], relu_stages[-1]
    print(f"from layer 1 to layer {last['index']}: median largest singular value "
          f"{np.median(first['sv'][:, 0]):.3g} -> {np.median(last['sv'][:, 0]):.3g}, median "
          f"condition number {np.median(first['condition']):.3g} -> "
          f"{np.median(last['condition']):.3g}, median invariant directions "
          f"{np.median(first['n_zero']):.0f} -> {np.median(last['n_zero']):.0f}")
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    with threadpool_limits(1):  # small matrices: BLAS threads only contend on a shared machine
        main()
