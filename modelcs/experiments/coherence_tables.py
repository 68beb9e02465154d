"""Coherence of random filter banks at VGG16 / AlexNet layer sizes (Tables 4 and 6).

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks* (long version), Table 4 (VGG16, Sec. 4.4) and Table 6
(AlexNet, App. C.2) list the coherence ``mu`` (footnote 12) of learned filters and of "Gaussian
random filters with corresponding sizes".  The paper does not say whether shifted
copies of the filters count as distinct rows; we report both, each
over several independent draws (mean and min-max), with ``'valid'`` boundaries.

With ``'valid'`` boundaries the coherence does not depend on the input size ``D`` once
every relative shift occurs, so layers whose filter banks have the same size
``(K, M, l, stride)`` share their draws (e.g. VGG16 conv(4,2) ... conv(5,3)).

Also the ``modelcs coherence`` subcommand (see :func:`register`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._cli import (
    add_bank_arguments,
    bank_from_args,
    broadcast_option,
    one_line_errors,
    positive_int,
    stride_option,
)
from .._memory import check_elements
from .._validation import check_positive_int, check_rng
from ..mutual_coherence import coherence, coherence_both

__all__ = ["VGG16_LAYERS", "ALEXNET_LAYERS", "coherence_table", "register"]

# (layer, K, M per group, l, D, stride, paper random, paper learned)
VGG16_LAYERS: list[dict[str, Any]] = [
    dict(layer=name, K=K, M=M, l=3, D=D, stride=1, paper_random=pr, paper_learned=pl)
    for name, K, M, D, pr, pl in [
        ("(1,1)", 64, 3, 224, 0.6701, 0.9427),
        ("(1,2)", 64, 64, 224, 0.1218, 0.7340),
        ("(2,1)", 128, 64, 112, 0.1546, 0.6435),
        ("(2,2)", 128, 128, 112, 0.1053, 0.7465),
        ("(3,1)", 256, 128, 56, 0.1099, 0.5838),
        ("(3,2)", 256, 256, 56, 0.0895, 0.4844),
        ("(3,3)", 256, 256, 56, 0.0802, 0.5194),
        ("(4,1)", 512, 256, 28, 0.0920, 0.4596),
        ("(4,2)", 512, 512, 28, 0.0619, 0.4574),
        ("(4,3)", 512, 512, 28, 0.0617, 0.4043),
        ("(5,1)", 512, 512, 14, 0.0696, 0.4099),
        ("(5,2)", 512, 512, 14, 0.0674, 0.4099),
        ("(5,3)", 512, 512, 14, 0.0674, 0.4046),
    ]
]
"""Table 4: VGG16 conv layers (3x3 filters, stride 1; ``D`` = input size of the layer)."""

ALEXNET_LAYERS: list[dict[str, Any]] = [
    dict(layer=name, K=K, M=M, l=l, D=D, stride=t, paper_random=pr, paper_learned=pl)
    for name, K, M, l, D, t, pr, pl in [
        ("conv1", 96, 3, 11, 227, 4, 0.1996, 0.9172),
        ("conv2", 256, 48, 5, 27, 1, 0.1263, 0.6643),
        ("conv3", 384, 256, 3, 13, 1, 0.0929, 0.6200),
        ("conv4", 384, 192, 3, 13, 1, 0.1073, 0.6382),
        ("conv5", 256, 192, 3, 13, 1, 0.1026, 0.3390),
    ]
]
"""Table 6: AlexNet conv layers (filter blobs ``K x M/groups x l x l``, as stored)."""

TABLES = {
    "vgg16": ("Table 4: VGG16", VGG16_LAYERS),
    "alexnet": ("Table 6: AlexNet", ALEXNET_LAYERS),
}


def _stats(v: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(v, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "draws": [float(x) for x in a],
    }


def coherence_table(
    layers: Sequence[dict[str, Any]] | Mapping[str, Any],
    *,
    draws: int = 3,
    rng: Any = None,
    dtype: Any = np.float32,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Coherence of Gaussian random banks at given layer sizes, and of trained filters.

    The random banks have i.i.d. ``N(0, 1/(M l^d))`` entries (``M`` input channels per
    group), the paper's "Gaussian random filters with corresponding sizes"; both the
    coherence over all shifted rows of ``W`` (``'valid'``) and over the filters alone are
    reported (:func:`modelcs.mutual_coherence.coherence_both`).

    Parameters
    ----------
    layers : list of dict, or mapping of name to :class:`~modelcs.adapters.ConvLayer`
        Sizes: entries with ``layer, K, M, l, D, stride`` (e.g. :data:`VGG16_LAYERS`).
        Trained layers (e.g. from :func:`modelcs.adapters.conv_layers`): the random banks
        take each layer's filter shape, stride and groups, and each row also holds the
        trained filters' own values under ``learned``.
    draws : int
        Independent random banks per distinct size (shape, stride and groups).
    rng : None, int or numpy.random.Generator
        Randomness of the banks (SciPy SPEC 7; an int reproduces the table).
    dtype : float32 (default, fast) or float64.
    progress : callable, optional
        Called with a short label after each computed draw.

    Returns
    -------
    list of dict, one per layer: the size entry (for trained layers ``layer``, ``K``,
    ``M``, ``l``, ``stride``, ``groups``, ``shape``) plus ``shifts`` / ``no_shifts``
    statistics of the random banks (``mean``, ``std``, ``min``, ``max``, ``draws``),
    ``seconds`` (compute time of its size) and ``shared_with`` (layers sharing the draws);
    trained layers add ``learned = {"shifts": mu, "no_shifts": mu}`` (``no_shifts`` is
    ``None`` for a single filter).

    Examples
    --------
    >>> rows = coherence_table(VGG16_LAYERS[:2], draws=2, rng=0)
    >>> [r["layer"] for r in rows], rows[0]["no_shifts"]["mean"] > rows[1]["no_shifts"]["mean"]
    (['(1,1)', '(1,2)'], True)
    """
    draws = check_positive_int("draws", draws)
    if isinstance(layers, Mapping):
        entries = [_trained_entry(name, layer) for name, layer in layers.items()]
    else:
        entries = [dict(r, groups=r.get("groups", 1)) for r in layers]
    sig_of = [_bank_size(r) for r in entries]
    gens = check_rng(rng).spawn(len(set(sig_of)))  # an int: SeedSequence(rng)'s children
    children = dict(zip(dict.fromkeys(sig_of), gens, strict=True))
    cache: dict[tuple[Any, ...], dict[str, Any]] = {}
    out = []
    for row, sig in zip(entries, sig_of, strict=True):
        shape, t, g = sig
        if sig not in cache:
            gen = children[sig]
            vals: dict[str, list[float]] = {"shifts": [], "no_shifts": []}
            t0 = time.perf_counter()
            check_elements(f"coherence_table: layer {row.get('layer')!r} filters {shape}", math.prod(shape) + shape[0] ** 2, copies=3)  # noqa: E501
            for _ in range(draws):
                w = gen.standard_normal(shape, dtype=np.float64).astype(dtype)
                w /= np.asarray(math.sqrt(math.prod(shape[1:])), dtype=dtype)
                mu_shifts, mu_filters = _both(w, t, g)
                vals["shifts"].append(mu_shifts)
                if mu_filters is not None:
                    vals["no_shifts"].append(mu_filters)
                if progress is not None:
                    progress("x".join(map(str, shape)))
            cache[sig] = {
                "shifts": _stats(vals["shifts"]),
                "no_shifts": _stats(vals["no_shifts"]) if vals["no_shifts"] else None,
                "seconds": time.perf_counter() - t0,
            }
        learned = row.pop("filters", None)
        if learned is not None:
            mu_shifts, mu_filters = _both(learned.astype(dtype), t, g)
            row["learned"] = {"shifts": mu_shifts, "no_shifts": mu_filters}
        shared = [r["layer"] for r, s in zip(entries, sig_of, strict=True) if s == sig]
        out.append({**row, **cache[sig], "shared_with": shared})
    return out


def _trained_entry(name: str, layer: Any) -> dict[str, Any]:
    """A size entry for a trained layer, carrying its filters (popped by the table)."""
    w = np.asarray(layer.filters)
    return dict(layer=name, K=int(w.shape[0]), M=int(w.shape[1]) * layer.groups,
                l=tuple(int(s) for s in w.shape[2:]), stride=layer.stride, groups=layer.groups,
                shape=tuple(int(s) for s in w.shape), filters=w)


def _bank_size(r: dict[str, Any]) -> tuple[tuple[int, ...], Any, int]:
    """(filter shape, stride, groups) of a table entry: what the random draws depend on."""
    if "shape" in r:
        shape = tuple(r["shape"])
    else:
        l = r["l"]
        shape = (r["K"], r["M"], l, l) if isinstance(l, int) else (r["K"], r["M"], *l)
    t = r["stride"]
    return shape, (tuple(t) if isinstance(t, (list, tuple)) else t), int(r["groups"])


def _both(w: np.ndarray, stride: Any, groups: int) -> tuple[float, float | None]:
    """(all shifted rows, filters only) coherence; filters only is None for one filter."""
    if w.shape[0] < 2:
        return coherence(w, stride=stride, groups=groups), None
    return coherence_both(w, stride=stride, groups=groups)


def n_distinct_sizes(layers: Sequence[dict[str, Any]]) -> int:
    """Number of distinct filter-bank sizes (draw groups) in ``layers``."""
    return len({_bank_size(dict(r, groups=r.get("groups", 1))) for r in layers})


def table_markdown(name: str, rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ours (mean +- std [min, max]) beside the paper's values."""

    def fmt(s: dict[str, Any]) -> str:
        return f"{s['mean']:.4f} ± {s['std']:.4f} [{s['min']:.4f}, {s['max']:.4f}]"

    lines = [
        f"**{name}** (random Gaussian filters; ours over {len(rows[0]['shifts']['draws'])} "
        "draws: mean ± std [min, max])",
        "",
        "| layer | filters K x M x l x l (stride) | paper random | ours, filters only | "
        "ours, all shifted rows | paper learned |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        size = f"{r['K']} x {r['M']} x {r['l']} x {r['l']} ({r['stride']})"
        lines.append(
            f"| {r['layer']} | {size} | {r['paper_random']:.4f} | {fmt(r['no_shifts'])} | "
            f"{fmt(r['shifts'])} | {r['paper_learned']:.4f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ subcommand
def register(subparsers: Any) -> None:
    """Add the ``coherence`` subcommand."""
    p = subparsers.add_parser(
        "coherence",
        help="coherence of a filter bank (random or from a weights file), or Tables 4/6",
        description=(
            "Coherence mu = max |<w_r, w_s>| over distinct unit-normalised rows of W "
            "(invertibility paper, footnote 12), with and without shifted copies, computed "
            "from filter cross-correlations.  --table reproduces the random-filter rows of "
            "Table 4 (VGG16) or Table 6 (AlexNet)."
        ),
    )
    add_bank_arguments(p, K=64, M=64, l="3,3", D="14")
    p.add_argument("--shifts", choices=("both", "yes", "no"), default="both",
                   help="count shifted copies of the filters as rows (default both)")
    p.add_argument("--draws", type=positive_int, default=3,
                   help="random banks per size (default 3; ignored with --filters)")
    p.add_argument("--table", choices=sorted(TABLES), help="reproduce a table of the paper")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_coherence)
    one_line_errors(p, "modelcs coherence")


def _cmd_coherence(args: argparse.Namespace) -> int:
    if args.table is not None:
        if args.filters is not None:
            raise ValueError("--table and --filters are exclusive")
        name, layers = TABLES[args.table]
        t0 = time.perf_counter()
        rows = coherence_table(layers, draws=args.draws, rng=args.seed)
        if args.json:
            print(json.dumps({"table": name, "rows": rows}, indent=1))
        else:
            print(table_markdown(name, rows))
            print(f"\n({time.perf_counter() - t0:.1f} s)")
        return 0
    rng = np.random.default_rng(args.seed)
    modes = {"both": (False, True), "yes": (True,), "no": (False,)}[args.shifts]
    n_draws = 1 if args.filters is not None else args.draws
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    vals: dict[bool, list[float]] = {m: [] for m in modes}
    w = None
    for _ in range(n_draws):
        w, D = bank_from_args(args, rng, (14,))
        stride = stride_option(args, w)
        for m in modes:
            if m:
                Din = None if D is None else broadcast_option(D, w.ndim - 2, "--D")
                vals[m].append(coherence(w, shifts=True, input_shape=Din, stride=stride,
                                         padding=args.padding))
            else:
                vals[m].append(coherence(w, shifts=False))
    assert w is not None
    res["filters"] = list(w.shape)
    res["source"] = args.filters or "random Gaussian"
    for m in modes:
        res["shifts" if m else "no_shifts"] = _stats(vals[m])
    res["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"filters {tuple(w.shape)} ({res['source']}), {n_draws} draw(s), "
          f"{res['seconds']:.2f} s")
    for m in modes:
        s = res["shifts" if m else "no_shifts"]
        what = "all shifted rows" if m else "filters only    "
        extra = f" ± {s['std']:.4f} [{s['min']:.4f}, {s['max']:.4f}]" if n_draws > 1 else ""
        print(f"  coherence, {what}: {s['mean']:.4f}{extra}")
    return 0
