"""03 - Phase transition: model-based IHT vs plain IHT vs Lasso.
=============================================================

Why does *model-based* compressive sensing exist?  A convolutional code ``z`` (one response
map per filter) is not just k-sparse: in the invertibility paper's model at most one entry
per filter block is nonzero (what max pooling + unpooling leaves).  Plain IHT keeps the k
largest entries anywhere; model-based IHT (Algorithm 1) keeps at most one per filter block.
Both are told k.  For every pair (number of input channels M, sparsity k) we draw random
filters W, model-k-sparse codes z, measure x = W^T z and try to recover z; the heat maps show
the fraction of codes recovered to 1e-4 relative error, and the 50% contour is the "phase
transition".  More channels = more measurements = larger recoverable k.

Run::

    python examples/03_phase_transition.py [--out DIR] [--workers N]

``MODELCS_EXAMPLE_SMALL=1`` for a tiny grid (seconds).  ``--workers 2`` repeats the sweep on
a 2-process Dask LocalCluster and checks that the numbers are identical.
The full demo grid is ``modelcs phase`` (a few minutes; add ``--scheduler ADDRESS`` to use a
Dask cluster).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from modelcs.experiments.phase import local_cluster, phase_transition, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    ap.add_argument("--out", default="examples-output", help="directory for the figure")
    ap.add_argument("--workers", type=int, default=0,
                    help="also run on a Dask LocalCluster with this many worker processes")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    small = os.environ.get("MODELCS_EXAMPLE_SMALL") == "1"
    grid = dict(K=16, l=5, D=20)
    if small:
        grid.update(ks=[1, 4, 8, 12, 16], channels=[2, 4], trials=8)
    else:
        grid.update(ks=[1, 2, 4, 6, 8, 10, 12, 14, 16], channels=[2, 3, 4, 6], trials=30)

    t0 = time.perf_counter()
    res = phase_transition(**grid, rng=0)
    print(summary(res))
    print(f"(local sweep: {time.perf_counter() - t0:.1f} s)")

    if args.workers > 0:
        from distributed import Client

        with local_cluster(args.workers) as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            remote = phase_transition(**grid, rng=0, client=client)
        same = np.array_equal(remote.counts, res.counts)
        print(f"Dask LocalCluster ({args.workers} processes): {time.perf_counter() - t0:.1f} s; "
              f"identical success array: {same}")

    s = res.success
    a_m, a_i = res.algorithms.index("model_iht"), res.algorithms.index("niht")
    diff = s[a_m] - s[a_i]
    print(f"model-IHT minus plain (normalized) IHT success, over all {diff.size} cells: "
          f"min {diff.min():+.2f}, mean {diff.mean():+.2f}, max {diff.max():+.2f}")
    secs = {a: float(res.cell_seconds[i].sum()) for i, a in enumerate(res.algorithms)}
    print("seconds per algorithm: " + ", ".join(f"{a} {t:.1f}" for a, t in secs.items()))
    print("Reading the figure: white = always recovered, black = never.  Plain IHT's 50% "
          "line sits at smaller k than model-IHT's: knowing that each filter fires at most "
          "once lets the projection reject supports that plain thresholding cannot.  The "
          "Lasso (l1, then least squares on its k largest entries) is the convex baseline: it "
          "recovers more codes than either IHT here, at several times the cost.")
    path = out / "03_phase_transition.png"
    res.plot(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
