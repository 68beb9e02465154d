"""Spectra of conv layers: exact FFT method vs the alternatives a user would pick.

Prints one table (best of ``--repeats`` runs; the VGG-size rows run once unless asked):

* all singular values of a VGG16 conv5_2-sized circular operator (M = K = 512, 3x3,
  15x15: 115,200 values) by ``singular_values`` (batched SVD per frequency, and the
  faster Gram/eigvalsh variant), and the largest one by Lanczos (``scipy svds``) and by
  plain power iteration on the operator, as consistency checks;
* the reshaped-weight-matrix norm ``||w.reshape(K, -1)||_2`` that ``torch``'s
  ``spectral_norm`` estimates (not the operator norm; shown with its value);
* the extreme singular values of the ``'valid'`` operator of the same size, iteratively;
* dense SVD of ``to_dense()`` against the FFT method at a size where dense is feasible.

Run:  python benchmarks/bench_frames.py [--repeats N] [--small]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from modelcs import ConvOperator, singular_values
from modelcs._backend import has_module


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def power_iteration(W: ConvOperator, iters: int, seed: int = 0) -> float:
    x = np.random.default_rng(seed).standard_normal(W.in_shape)
    lam = 0.0
    for _ in range(iters):
        x /= np.linalg.norm(x)
        y = W.T @ (W @ x)
        lam = float(np.vdot(x, y))
        x = y
    return float(np.sqrt(lam))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats for the small rows")
    ap.add_argument("--vgg-repeats", type=int, default=1, help="repeats for VGG-size rows")
    ap.add_argument("--small", action="store_true", help="M = K = 128 instead of 512")
    ap.add_argument("--valid-smallest", action="store_true",
                    help="also the smallest singular value of the 'valid' operator (slow: "
                    "minutes at 128 channels; always on with --small)")
    args = ap.parse_args()
    C = 128 if args.small else 512
    engine = "torch" if has_module("torch") else "gemm"
    rows: list[tuple[str, float, str]] = []

    w = np.random.default_rng(0).standard_normal((C, C, 3, 3)) / np.sqrt(C * 9)
    Wc = ConvOperator(w, (15, 15), padding="circular", engine=engine)
    t_fft, s = best_of(lambda: singular_values(Wc), args.vgg_repeats)
    rows.append((f"circular {C}x{C}x3x3 on 15x15: all {s.size} sv, fft+svd", t_fft,
                 f"max {s[0]:.6f}, min {s[-1]:.3e}"))
    t_g, sg = best_of(lambda: singular_values(Wc, method="fft-gram"), args.vgg_repeats)
    rows.append(("  same, fft + Gram eigvalsh", t_g,
                 f"max |diff| to svd / max = {np.abs(sg - s).max() / s[0]:.1e}"))
    t_l, sl = best_of(lambda: singular_values(Wc, k=1, which="largest", method="iterative",
                                              tol=1e-10), args.vgg_repeats)
    rows.append(("  largest by Lanczos (eigsh on W^T W, operator)", t_l,
                 f"{sl[0]:.10f}, rel diff {abs(sl[0] - s[0]) / s[0]:.1e}"))
    t_p, sp = best_of(lambda: power_iteration(Wc, 100), args.vgg_repeats)
    rows.append(("  largest by 100 power iterations (operator)", t_p,
                 f"{sp:.10f}, rel diff {abs(sp - s[0]) / s[0]:.1e}"))
    t_m, nm = best_of(lambda: float(np.linalg.norm(w.reshape(C, -1), 2)), args.repeats)
    rows.append(("  ||w.reshape(K,-1)||_2 (what torch spectral_norm tracks)", t_m,
                 f"{nm:.6f} = {nm / s[0]:.3f} x the true operator norm"))

    Wv = ConvOperator(w, (15, 15), padding="valid", engine=engine)
    t_vl, vl = best_of(lambda: singular_values(Wv, k=1, which="largest", tol=1e-8),
                       args.vgg_repeats)
    rows.append((f"valid {C}x{C}x3x3 on 15x15 ({Wv.shape[0]}x{Wv.shape[1]}): largest, Lanczos",
                 t_vl, f"{vl[0]:.6f}"))
    if args.small or args.valid_smallest:
        t_vs, vs = best_of(lambda: singular_values(Wv, k=1, which="smallest", tol=1e-6,
                                                   max_iter=5000), args.vgg_repeats)
        rows.append(("  smallest (nonzero side, Lanczos on W W^T, tol 1e-6)", t_vs,
                     f"{vs[0]:.6f}"))

    c = 16
    w2 = np.random.default_rng(1).standard_normal((c, c, 3, 3)) / np.sqrt(c * 9)
    W2 = ConvOperator(w2, (15, 15), padding="circular", engine="gemm")
    t_f2, s2 = best_of(lambda: singular_values(W2), args.repeats)
    t_d2, d2 = best_of(lambda: np.linalg.svd(W2.to_dense(), compute_uv=False), args.repeats)
    rows.append((f"circular {c}x{c}x3x3 on 15x15: fft+svd", t_f2, f"{s2.size} values"))
    rows.append((f"  dense SVD of to_dense() ({W2.shape[0]}x{W2.shape[1]})", t_d2,
                 f"ratio dense/fft = {t_d2 / t_f2:.0f}x, max |diff| = "
                 f"{np.abs(d2 - s2).max():.1e}"))

    print(f"{'task':78s} {'time [s]':>9s}  result")
    for name, t, res in rows:
        print(f"{name:78s} {t:9.3f}  {res}")


if __name__ == "__main__":
    main()
