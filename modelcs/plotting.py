"""Figure helpers for the experiments (matplotlib, imported lazily).

Each function takes plain arrays / dicts of numbers and writes one PNG; nothing here
computes results.  Figures are built as :class:`matplotlib.figure.Figure` objects and
saved directly, without pyplot: the user's matplotlib backend and pyplot state are never
touched.  Install the ``plot`` extra (``pip install 'modelcs[plot]'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "subplots",
    "plot_figure2",
    "plot_error_over_iterations",
    "plot_coherence_table",
    "plot_delta_search",
]


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot (lazy import).

    The figure is a plain :class:`matplotlib.figure.Figure`: it is not registered with
    pyplot, needs no backend switch and is freed with its last reference.  Keyword
    arguments ``figsize``, ``dpi`` and ``layout`` go to the figure, the others to
    :meth:`~matplotlib.figure.Figure.subplots`.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'modelcs[plot]'"
        ) from exc
    fig_kw = {k: kwargs.pop(k) for k in ("figsize", "dpi", "layout") if k in kwargs}
    fig = Figure(**fig_kw)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _save(fig: Any, path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _hist(ax: Any, data: np.ndarray, color: str, label: str, bins: Any = 40) -> None:
    ax.hist(data, bins=bins, color=color, alpha=0.6, label=label, edgecolor="white", lw=0.3)


def plot_figure2(
    iso: np.ndarray,
    restricted: np.ndarray,
    errors: Mapping[str, np.ndarray],
    path: str,
    *,
    title: str = "",
    notes: Sequence[str] | None = None,
) -> str:
    """Figure 2 of the invertibility paper: histograms (a) ``||W^T z||/||z||``,
    (b) ``||W_Omega W_Omega^T z||/||z||``, (c) relative reconstruction errors.

    ``errors`` maps a legend label to per-trial errors (e.g. one step with known / fixed
    switches); ``notes`` are extra text lines drawn in panel (c).
    """
    fig, axes = subplots(1, 3, figsize=(14, 3.8))
    _hist(axes[0], iso, "C0", f"mean {iso.mean():.3f}")
    axes[0].axvline(1.0, color="k", lw=0.8, ls="--")
    axes[0].set_title("(a) $\\|W^T z\\|_2 / \\|z\\|_2$ (model-RIP, eq. 1)")
    _hist(axes[1], restricted, "C1", f"mean {restricted.mean():.3f}")
    axes[1].axvline(1.0, color="k", lw=0.8, ls="--")
    axes[1].set_title("(b) $\\|W_\\Omega W_\\Omega^T z\\|_2 / \\|z\\|_2$ (Lemma B.1)")
    notes = notes or []
    allv = np.concatenate([np.asarray(v) for v in errors.values()])
    hi = float(np.quantile(allv, 0.999)) if allv.size else 1.0
    bins = np.linspace(0.0, max(hi, 1e-3) * 1.02, 50)
    for i, (label, e) in enumerate(errors.items()):
        e = np.asarray(e)
        _hist(axes[2], np.clip(e, 0, bins[-1]), f"C{i + 2}", f"{label} (median {np.median(e):.3f})",
              bins=bins)
    axes[2].axvspan(0.1, 0.2, color="grey", alpha=0.15, label="paper: 0.1-0.2")
    axes[2].axvline(0.5, color="grey", lw=0.8, ls=":", label="paper: max < 0.5")
    axes[2].set_title("(c) $\\|\\hat x - x\\|_2 / \\|x\\|_2$ (Theorem 3.3)")
    if notes:
        axes[2].text(0.5, 0.5, "\n".join(notes), transform=axes[2].transAxes, ha="center",
                     va="center", fontsize=7, bbox=dict(fc="white", ec="0.7", alpha=0.9))
    for ax in axes:
        ax.set_ylabel("trials")
        ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_error_over_iterations(
    curves: Mapping[str, np.ndarray], path: str, *, title: str = ""
) -> str:
    """Relative error ``||x - W^T z_t|| / ||x||`` against iteration ``t``.

    ``curves`` maps a label to an array ``(n_iter, n_trials)``; the median and the
    5-95 % band over trials are drawn on a log scale.
    """
    fig, ax = subplots(figsize=(6.5, 4))
    for i, (label, E) in enumerate(curves.items()):
        E = np.asarray(E, dtype=np.float64)
        it = np.arange(1, E.shape[0] + 1)
        floor = 1e-16
        med = np.maximum(np.median(E, axis=1), floor)
        lo = np.maximum(np.quantile(E, 0.05, axis=1), floor)
        hi = np.maximum(np.quantile(E, 0.95, axis=1), floor)
        ax.plot(it, med, color=f"C{i}", marker="o", ms=2.5, label=f"{label} (median)")
        ax.fill_between(it, lo, hi, color=f"C{i}", alpha=0.2, label=f"{label} (5-95 %)")
    ax.set_yscale("log")
    ax.set_xlabel("IHT iteration (iteration 1 = one CNN layer + reconstruction)")
    ax.set_ylabel("$\\|x - W^T z_t\\|_2 / \\|x\\|_2$")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_coherence_table(
    tables: Sequence[Mapping[str, Any]], path: str, *, title: str = ""
) -> str:
    """Coherence per layer: ours (mean and min-max over draws, with and without shifts)
    beside the paper's random-filter and learned-filter values.

    Each table is ``{"name": str, "rows": [{"layer", "paper_random", "paper_learned",
    "shifts": {"mean","min","max"}, "no_shifts": {...}}, ...]}``.
    """
    fig, axes = subplots(
        1, len(tables), figsize=(6.5 * len(tables), 4), squeeze=False,
        gridspec_kw={"width_ratios": [max(len(t["rows"]), 1) for t in tables]},
    )
    for ax, tab in zip(axes[0], tables, strict=True):
        rows = tab["rows"]
        x = np.arange(len(rows))
        for off, key, color, label in (
            (-0.12, "no_shifts", "C0", "ours, filters only"),
            (0.12, "shifts", "C1", "ours, all shifted rows"),
        ):
            mean = np.array([r[key]["mean"] for r in rows])
            lo = mean - np.array([r[key]["min"] for r in rows])
            hi = np.array([r[key]["max"] for r in rows]) - mean
            ax.errorbar(x + off, mean, yerr=[lo, hi], fmt="o", color=color, ms=4, capsize=3,
                        label=label)
        ax.plot(x, [r["paper_random"] for r in rows], "k_", ms=14, mew=2,
                label="paper, random filters")
        ax.plot(x, [r["paper_learned"] for r in rows], "x", color="C3", ms=6,
                label="paper, learned filters")
        ax.set_xticks(x)
        ax.set_xticklabels([r["layer"] for r in rows], rotation=45, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("coherence $\\mu$")
        ax.set_title(tab["name"], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_delta_search(traces: Mapping[str, Sequence[Sequence[float]]], path: str, *,
                      title: str = "") -> str:
    """Best distortion found against the number of supports evaluated, per search."""
    fig, ax = subplots(figsize=(6, 3.8))
    for i, (label, tr) in enumerate(traces.items()):
        a = np.asarray(tr, dtype=np.float64)
        ax.step(a[:, 0], a[:, 1], where="post", color=f"C{i}", label=label)
        ax.plot(a[-1:, 0], a[-1:, 1], "o", color=f"C{i}")
    ax.set_xlabel("supports evaluated")
    ax.set_ylabel("largest distortion found (lower bound on $\\delta_k$)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)
