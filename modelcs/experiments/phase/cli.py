"""The ``modelcs phase`` command: arguments, running the sweep, writing JSON/PNG, a summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..._cli import add_output_arguments, one_line_errors, size_arg, staged_output
from ..._validation import check_positive_int
from .algorithms import ALGORITHMS
from .problems import OPERATORS
from .result import PhaseTransitionResult, format_shape
from .sweep import DEFAULT_ALGORITHMS, DEFAULT_GRID, local_cluster, phase_transition

__all__ = ["register", "summary", "int_list", "shape_arg"]


def int_list(text: str) -> list[int]:
    """Parse ``"1,2,5"`` or an inclusive range ``"1:16"`` / ``"2:16:2"``."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if ":" in part:
                bits = [int(b) for b in part.split(":")]
                if len(bits) not in (2, 3):
                    raise ValueError
                step = bits[2] if len(bits) == 3 else 1
                if step < 1:
                    raise ValueError
                out.extend(range(bits[0], bits[1] + 1, step))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like '1,2,5' or an inclusive range '1:16[:step]'; got {text!r}"
        ) from None
    return out


#: The one size syntax of every subcommand ("5", "3x4" or "3,4"; an int for one value).
shape_arg = size_arg


def register(subparsers: Any) -> None:
    """Add the ``phase`` subcommand to the ``modelcs`` command line."""
    g = DEFAULT_GRID
    p = subparsers.add_parser(
        "phase",
        help="phase-transition sweep (model-IHT vs IHT vs Lasso), locally or on Dask",
        description="Success rate of recovering sparse codes from y = Phi z over a grid of "
        "sparsities k and input channels M (--operator conv, Phi = W^T) or measurements m "
        "(--operator gaussian). Writes phase.json and phase.png to --out.",
    )
    p.add_argument("--operator", choices=list(OPERATORS), default="conv",
                   help="operator family (default %(default)s)")
    p.add_argument("--n", type=int, default=None,
                   help="code length for --operator gaussian")
    p.add_argument("--measurements", type=int_list, default=None,
                   help="measurements m for --operator gaussian, e.g. '10:60:10'")
    p.add_argument("--K", type=int, default=g["K"], help="number of filters (default %(default)s)")
    p.add_argument("--l", type=shape_arg, default=g["l"],
                   help="filter size, int or AxB (default %(default)s)")
    p.add_argument("--D", type=shape_arg, default=g["D"],
                   help="input size, int or AxB (default %(default)s)")
    p.add_argument("--ks", type=int_list, default=list(g["ks"]),
                   help="sparsities, e.g. '1:16' (inclusive range) or '1,2,4' (default 1:16)")
    p.add_argument("--channels", type=int_list, default=None,
                   help="input channel counts for --operator conv (default 2,3,4,5,6)")
    p.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS),
                   help=f"comma-separated subset of {','.join(ALGORITHMS)} "
                   "(default %(default)s)")
    p.add_argument("--trials", type=int, default=100, help="codes per cell (default 100)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--success-tol", type=float, default=1e-4,
                   help="relative code error counted as success (default 1e-4)")
    grp = p.add_mutually_exclusive_group()
    grp.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    grp.add_argument("--local-cluster", metavar="N", type=int, default=None,
                     help="start a dask LocalCluster with N single-threaded worker processes")
    add_output_arguments(p, "phase-output", "phase.json and phase.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)
    one_line_errors(p, "modelcs phase")


def _main(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = dict(
        ks=args.ks, operator=args.operator,
        algorithms=tuple(a.strip() for a in args.algorithms.split(",") if a.strip()),
        trials=args.trials, rng=args.seed, success_tol=args.success_tol,
        progress=not args.no_progress,
    )
    if args.operator == "conv":
        channels = args.channels if args.channels is not None else list(
            DEFAULT_GRID["channels"])
        kwargs.update(K=args.K, l=args.l, D=args.D, channels=channels)
    else:
        kwargs.update(n=args.n, measurements=args.measurements)
    out = Path(args.out)
    with staged_output(args.out, ("phase.json", "phase.png"), force=args.force) as stage:
        if args.scheduler is not None or args.local_cluster is not None:
            res = _with_dask(args.scheduler, args.local_cluster, kwargs)
        else:
            res = phase_transition(**kwargs)
        res.save(Path(stage) / "phase.json")
        res.plot(Path(stage) / "phase.png")
    json_path, png_path = out / "phase.json", out / "phase.png"
    print(summary(res))
    print(f"wrote {json_path} and {png_path}")
    return 0


def _with_dask(address: str | None, n_workers: int | None, kwargs: dict[str, Any]) -> Any:
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - dask is optional
        raise ImportError("--scheduler/--local-cluster need Dask: pip install "
                          "'modelcs[dask]'") from exc
    if address is not None:
        try:
            client = Client(address, timeout="30s")
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot reach the Dask scheduler at --scheduler {address!r}: "
                             f"{exc}") from exc
        with client:
            return phase_transition(client=client, **kwargs)
    with local_cluster(check_positive_int("local_cluster", n_workers)) as cluster, \
            Client(cluster) as client:
        return phase_transition(client=client, **kwargs)


def summary(res: PhaseTransitionResult) -> str:
    """A plain-text table: 50% transition k per algorithm and grid row."""
    if res.operator == "conv" and res.l is not None and res.D is not None:
        head = f"K={res.K} l={format_shape(res.l)} D={format_shape(res.D)}"
        row_name = "   M"
    else:
        head = f"operator={res.operator} n={res.code_size}"
        row_name = "   m"
    lines = [
        f"phase transition: {head} trials={res.trials} "
        f"seed={res.root_seed} ({res.backend}, {res.elapsed:.1f} s)",
        "k at 50% success (interpolated; '>=' means never below 50% on the grid):",
        row_name + "  meas/code  " + "".join(f"{a:>13}" for a in res.algorithms),
    ]
    tk = {a: res.transition_k(a) for a in res.algorithms}
    for i, M in enumerate(res.channels):
        row = f"{M:4d}  {res.measurements[i] / res.code_size:9.3f}  "
        for a in res.algorithms:
            v = tk[a][i]
            if np.isnan(v):
                row += f"{'<' + str(res.ks[0]):>13}"
            elif v == res.ks[-1] and res.success[res.algorithms.index(a), i, -1] >= 0.5:
                row += f"{'>=' + str(res.ks[-1]):>13}"
            else:
                row += f"{v:13.2f}"
        lines.append(row)
    if res.cell_seconds is not None and res.elapsed > 0:
        work = float(res.cell_seconds.sum())
        cpu = float(np.nansum(res.cell_cpu_seconds)) if res.cell_cpu_seconds is not None else 0
        lines.append(
            f"time: {res.elapsed:.1f} s wall for {work:.1f} s of cell work ({cpu:.1f} s CPU); "
            f"parallelism {work / res.elapsed:.2f}, slowest cell {res.cell_seconds.max():.2f} s"
        )
    for plain in ("niht", "iht"):
        if "model_iht" not in res.algorithms or plain not in res.algorithms:
            continue
        d = (res.counts[res.algorithms.index("model_iht")]
             - res.counts[res.algorithms.index(plain)])
        lines.append(
            f"model_iht vs {plain}: more successes in {int((d > 0).sum())}, equal in "
            f"{int((d == 0).sum())}, fewer in {int((d < 0).sum())} of {d.size} cells "
            f"(largest deficit {max(0, -int(d.min()))} of {res.trials} trials)"
        )
    return "\n".join(lines)
