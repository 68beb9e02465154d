"""ConvOperator forward/adjoint times against what a user would otherwise use, in one run.

Peers (same dtype, same machine, same run):
* PyTorch ``conv1d/conv2d`` and ``conv_transpose1d/2d`` on CPU with ``torch.set_num_threads``
  equal to the cores NumPy's BLAS uses;
* a SciPy loop: ``scipy.signal.correlate`` / ``convolve`` over (filter, channel) pairs, the batch
  handled by N-d correlation (what a NumPy user writes without a conv library);
* PyLops composed the way a PyLops user builds a filter bank: ``VStack`` over filters of
  ``Restriction @ HStack`` over channels of ``Convolve1D/2D`` (flipped filters, offset).

The SciPy loop and PyLops are timed on a subset of filters (and of the batch for PyLops,
which applies one column at a time) and scaled linearly; such entries are marked ``~``.
Each peer is first checked against modelcs on the subset.

modelcs columns: ``auto`` (float32 NumPy data above a measured size goes to PyTorch's conv
when it is installed) and ``numpy`` (the NumPy GEMM/FFT engines alone, as
``modelcs.engine_policy("numpy")`` runs).

The engine sweep (a second table) times a forward + adjoint pair by every engine from a tiny
layer (8 channels, 16x16, batch 1) to the S2 size, float32 and float64, and the ``auto``
choice against the fastest: the crossovers of :mod:`modelcs.operators.policy` come from it.

Run: ``python benchmarks/bench_operator.py [--quick] [--sweep-only | --no-sweep]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.signal as ss

from modelcs import ConvOperator, engine_policy

#: seconds to wait before timing a function (see :func:`best_times`)
PAUSE = 0.2

SIZES = {
    # name: (K, M, kernel, D, B)
    "S1 1-D l=5 M=32 K=96 D=32 B=1000": (96, 32, (5,), (32,), 1000),
    "S2 2-D l=3 M=K=512 D=15 B=16": (512, 512, (3, 3), (15, 15), 16),
    "S3 2-D l=3 M=K=64 D=112 B=1": (64, 64, (3, 3), (112, 112), 1),
}


def best_time(fn, repeats: int) -> float:
    """Best of ``repeats`` timed calls after one warm-up call."""
    fn()  # warm up (caches, thread pools)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_times(fns: dict, rounds: int) -> dict:
    """Best time of each function over interleaved rounds (load hits all of them alike).

    Before each timed call: a pause of ``PAUSE`` seconds, then one untimed call.  After a
    BLAS call OpenBLAS's worker threads spin-wait for a while, and after a torch call so
    do its OpenMP threads; a call made right after the *other* library's call competes
    with those spinning threads for the 2 cores.  Measured here: torch's conv (direct,
    or through modelcs 'auto') 2-3x slower right after a NumPy GEMM, normal after a
    0.2 s pause.  That is an artefact of alternating libraries call by call, not the
    speed of either, so the pause lets the other library's threads go to sleep.  Calls
    under 5 ms are timed as the mean of as many back-to-back calls as make 5 ms (single
    sub-millisecond calls swing 30-100 % on this machine).
    """
    reps = {}
    for name, fn in fns.items():  # warm up, and calls per timing: >= 5 ms of work
        fn()
        t0 = time.perf_counter()
        fn()
        reps[name] = max(1, int(0.005 / max(time.perf_counter() - t0, 1e-7)))
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(PAUSE)
            fn()
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps[name])
    return best


def torch_peer(W: ConvOperator, x: np.ndarray, z: np.ndarray):
    import torch
    import torch.nn.functional as F

    d = W.ndim_spatial
    conv = F.conv1d if d == 1 else F.conv2d
    convt = F.conv_transpose1d if d == 1 else F.conv_transpose2d
    w = torch.from_numpy(np.ascontiguousarray(W.filters))
    xt, zt = torch.from_numpy(x), torch.from_numpy(z)

    def fwd():
        with torch.no_grad():
            return conv(xt, w)

    def adj():
        with torch.no_grad():
            return convt(zt, w)

    return fwd, adj


def scipy_peer(W: ConvOperator, x: np.ndarray, z: np.ndarray, k_sub: int):
    """Loop over (filter, channel) pairs; batch vectorised by N-d correlation."""
    w = W.filters
    d = W.ndim_spatial
    lead = (None,)  # filter gets a singleton batch axis
    K, M = w.shape[:2]

    def fwd():
        out = np.zeros((x.shape[0], k_sub, *W.block_shape), dtype=x.dtype)
        for k in range(k_sub):
            for m in range(M):
                out[:, k] += ss.correlate(x[:, m], w[k, m][lead], mode="valid")
        return out

    def adj():
        out = np.zeros(x.shape, dtype=x.dtype)
        for k in range(k_sub):
            for m in range(M):
                out[:, m] += ss.convolve(z[:, k], w[k, m][lead], mode="full")
        return out

    del d
    return fwd, adj


def pylops_peer(W: ConvOperator, k_sub: int):
    import pylops
    from pylops.signalprocessing import Convolve1D, Convolve2D

    w = W.filters
    D, l = W.input_spatial, W.kernel_size
    M = w.shape[1]
    n = W.block_shape
    dtype = w.dtype
    # positions of the valid shifts inside a 'same'-length output
    grids = np.meshgrid(*[np.arange(na) for na in n], indexing="ij")
    iava = np.ravel_multi_index(tuple(g.ravel() for g in grids), D)
    R = pylops.Restriction(int(np.prod(D)), iava, dtype=dtype)
    blocks = []
    for k in range(k_sub):
        convs = []
        for m in range(M):
            h = w[k, m][(slice(None, None, -1),) * len(D)]
            if len(D) == 1:
                C = Convolve1D(D[0], h=h, offset=l[0] - 1, method="direct", dtype=dtype)
            else:
                C = Convolve2D(D, h=h, offset=(l[0] - 1, l[1] - 1), dtype=dtype)
            convs.append(R @ C)
        blocks.append(pylops.HStack(convs, dtype=dtype))
    return pylops.VStack(blocks, dtype=dtype)


def bench_case(name, K, M, l, D, B, dtype, reps, have_torch, have_pylops, rng):
    """Time one size and dtype; returns two table rows (forward, adjoint)."""
    W = ConvOperator.random(K, M, l, D, rng=0, dtype=dtype)
    x = rng.standard_normal((B, *W.in_shape)).astype(dtype)
    z = rng.standard_normal((B, *W.out_shape)).astype(dtype)
    with engine_policy("numpy"):
        Wn = W.with_engine(W._choose(x))
    fns = {
        ("fwd", "auto"): lambda: W @ x,
        ("fwd", "numpy"): lambda: Wn @ x,
        ("adj", "auto"): lambda: W.T @ z,
        ("adj", "numpy"): lambda: Wn.T @ z,
    }
    if have_torch:
        tf, ta = torch_peer(W, x, z)
        np.testing.assert_allclose(tf().numpy(), Wn @ x, rtol=1e-3, atol=1e-3)
        fns[("fwd", "torch")] = tf
        fns[("adj", "torch")] = ta
    res: dict = {"fwd": {}, "adj": {}}
    for (direction, who), t in best_times(fns, reps).items():
        res[direction][who] = t
    # SciPy loop on a subset of filters, scaled by K / k_sub
    k_sub = max(1, min(K, int(4e5 / (M * max(B, 1) * np.prod(D)) + 1)))
    sf, sa = scipy_peer(W, x, z, k_sub)
    np.testing.assert_allclose(sf(), (Wn @ x)[:, :k_sub], rtol=1e-3, atol=1e-3)
    scale = K / k_sub
    res["fwd"]["scipy"] = best_time(sf, 1) * scale
    res["adj"]["scipy"] = best_time(sa, 1) * scale
    res["fwd"]["scipy_sub"] = res["adj"]["scipy_sub"] = k_sub < K
    if have_pylops:
        kp = max(1, min(K, 2048 // M))
        bp = min(B, 2)
        P = pylops_peer(W, kp)
        xs = x[:bp].reshape(bp, -1).T.copy()
        zs = z[:bp, :kp].reshape(bp, -1).T.copy()
        np.testing.assert_allclose(
            (P @ xs).T.reshape(bp, kp, *W.block_shape), (Wn @ x[:bp])[:, :kp],
            rtol=1e-3, atol=1e-3,
        )
        scale = (K / kp) * (B / bp)
        res["fwd"]["pylops"] = best_time(lambda: P @ xs, 1) * scale
        res["adj"]["pylops"] = best_time(lambda: P.H @ zs, 1) * scale
        res["fwd"]["pylops_sub"] = res["adj"]["pylops_sub"] = scale > 1
    dt = np.dtype(dtype).name
    return [(name.split()[0], dt, direction, res[direction], Wn.engine)
            for direction in ("fwd", "adj")]

# ------------------------------------------------------------------ engine sweep
#: (K = M, D, B, stride): from a tiny layer to the S2 size
SWEEP = [
    (8, 16, 1, 1), (8, 32, 8, 1), (16, 16, 1, 1), (16, 32, 4, 1), (32, 16, 1, 1),
    (32, 32, 1, 1), (32, 56, 8, 1), (64, 15, 1, 1), (64, 32, 4, 1), (64, 56, 1, 1),
    (128, 15, 1, 1), (128, 28, 4, 1), (256, 15, 4, 1), (512, 15, 1, 1), (512, 15, 16, 1),
    (16, 32, 1, 2), (32, 64, 4, 2), (3, 64, 1, 2), (3, 224, 1, 2),
]


def sweep(reps: int, have_torch: bool) -> list[tuple]:
    """Forward + adjoint pair per engine for each sweep size and dtype (3x3 filters)."""
    rows = []
    rng = np.random.default_rng(0)
    for C, D, B, t in SWEEP:
        K = 32 if C == 3 else C
        for dtype in (np.float32, np.float64):
            W = ConvOperator.random(K, C, (3, 3), (D, D), stride=t, padding=1 if C == 3
                                    else "valid", rng=0, dtype=dtype)
            x = rng.standard_normal((B, *W.in_shape)).astype(dtype)
            z = rng.standard_normal((B, *W.out_shape)).astype(dtype)
            engines = ["gemm"] + (["fft"] if t == 1 else []) + (["torch"] if have_torch else [])
            ops = {e: W.with_engine(e) for e in ["auto", *engines]}
            fns = {e: (lambda op=op, x=x, z=z: (op @ x, op.T @ z))
                   for e, op in ops.items()}
            best = best_times(fns, reps)
            chosen = W._choose(x)
            fastest = min(engines, key=lambda e: best[e])
            rows.append((f"K=M={C} D={D} B={B} t={t}", np.dtype(dtype).name, best, chosen,
                         fastest))
            print(f"done sweep {rows[-1][0]} {rows[-1][1]}", flush=True)
    return rows


def print_sweep(rows: list[tuple]) -> None:
    print()
    print("# engine sweep: forward + adjoint pair, 3x3 filters, best of interleaved rounds")
    print("# auto/fastest: the 'auto' operator's own time; choice/fastest: the time of the "
          "engine it chose (the same engine timed twice differs by the noise of the run)")
    hdr = (f"{'size':26} {'dtype':7} | {'gemm ms':>8} {'fft ms':>8} {'torch ms':>8} | "
           f"{'auto ms':>8} {'auto->':>6} {'fastest':>7} {'auto/fastest':>12} "
           f"{'choice/fastest':>14}")
    print(hdr)
    print("-" * len(hdr))
    worst = worst_choice = 0.0
    for size, dt, best, chosen, fastest in rows:
        def ms(e: str, best: dict = best) -> str:
            return f"{best[e] * 1e3:8.3f}" if e in best else f"{'-':>8}"
        ratio = best["auto"] / best[fastest]
        choice = best[chosen] / best[fastest]
        worst, worst_choice = max(worst, ratio), max(worst_choice, choice)
        print(f"{size:26} {dt:7} | {ms('gemm')} {ms('fft')} {ms('torch')} | {ms('auto')} "
              f"{chosen:>6} {fastest:>7} {ratio:12.2f} {choice:14.2f}")
    print(f"worst auto/fastest: {worst:.2f}, worst choice/fastest: {worst_choice:.2f} "
          "(target <= 1.25)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--sweep-only", action="store_true",
                    help="only the engine sweep (tiny to S2, float32 and float64)")
    ap.add_argument("--no-sweep", action="store_true", help="only the main table")
    args = ap.parse_args()
    reps = 3 if args.quick else 15

    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        threads = torch.get_num_threads()
        have_torch = True
    except ImportError:
        have_torch, threads = False, 0
    try:
        import pylops  # noqa: F401

        have_pylops = True
    except ImportError:
        have_pylops = False

    sweep_rows = [] if args.no_sweep else sweep(3 if args.quick else 7, have_torch)
    if args.sweep_only:
        print_sweep(sweep_rows)
        return
    rows = []
    rng = np.random.default_rng(0)
    for name, (K, M, l, D, B) in SIZES.items():
        for dtype in (np.float32, np.float64):
            rows += bench_case(name, K, M, l, D, B, dtype, reps, have_torch, have_pylops, rng)
            print(f"done {name} {np.dtype(dtype).name}", flush=True)

    print()
    print(f"# ConvOperator benchmark (best of {reps} interleaved rounds); torch threads={threads}, "
          f"cores={os.cpu_count()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    hdr = (f"{'size':4} {'dtype':7} {'dir':3} | {'auto ms':>8} {'numpy ms':>8} ({'eng':4}) | "
           f"{'torch ms':>8} {'auto/torch':>10} {'numpy/torch':>11} | {'scipy ms':>10} "
           f"{'x faster':>8} | {'pylops ms':>10} {'x faster':>8}")
    print(hdr)
    print("-" * len(hdr))
    for size, dt, direction, r, eng in rows:
        t_auto, t_np = r["auto"] * 1e3, r["numpy"] * 1e3
        t_torch = r.get("torch", float("nan")) * 1e3
        sc = r["scipy"] * 1e3
        sc_s = ("~" if r["scipy_sub"] else " ") + f"{sc:9.1f}"
        if "pylops" in r:
            pl = r["pylops"] * 1e3
            pl_s = ("~" if r["pylops_sub"] else " ") + f"{pl:9.1f}"
            pl_x = f"{pl / t_auto:8.0f}"
        else:
            pl_s, pl_x = f"{'n/a':>10}", f"{'':8}"
        print(f"{size:4} {dt:7} {direction:3} | {t_auto:8.2f} {t_np:8.2f} ({eng:4}) | "
              f"{t_torch:8.2f} {t_auto / t_torch:10.2f} {t_np / t_torch:11.2f} | {sc_s} "
              f"{sc / t_auto:8.0f} | {pl_s} {pl_x}")
    print("~ = timed on a subset of filters (and batch) and scaled linearly.")
    if sweep_rows:
        print_sweep(sweep_rows)


if __name__ == "__main__":
    main()
