"""Plots of phase-transition results (matplotlib's object API; the backend is never changed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .result import PhaseTransitionResult, format_shape

__all__ = ["plot_phase"]


def plot_phase(result: PhaseTransitionResult, path: str | Path | None = None) -> Any:
    """Heat maps of the success rate (one per algorithm) with the 50% contour.

    The last panel overlays every algorithm's 50% transition curve.  Writes a PNG when
    ``path`` is given; returns the matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    A = len(result.algorithms)
    fig = Figure(figsize=(3.6 * (A + 1), 3.4), layout="constrained")
    axes = fig.subplots(1, A + 1)
    ks = np.asarray(result.ks, dtype=float)
    ch = np.asarray(result.channels, dtype=float)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]
    im = None
    for a, name in enumerate(result.algorithms):
        ax = axes[a]
        im = ax.pcolormesh(_edges(ks), _edges(ch), result.success[a], vmin=0, vmax=1,
                           cmap="gray", shading="flat")
        if len(ks) > 1 and len(ch) > 1 and np.ptp(result.success[a]) > 0:
            ax.contour(ks, ch, result.success[a], levels=[0.5],
                       colors=colors[a % len(colors)], linewidths=2)
        ax.set_title(f"{name}")
        ax.set_xlabel("sparsity k")
        ax.set_yticks(ch)
        if a == 0:
            ax.set_ylabel(result.row_label)
    if im is not None:
        fig.colorbar(im, ax=axes[:A], shrink=0.8, label="success rate")
    ax = axes[A]
    for a, name in enumerate(result.algorithms):
        tk = result.transition_k(name)
        censored = result.success[a, :, -1] >= 0.5  # never below 50%: k_50 > ks[-1]
        col = colors[a % len(colors)]
        x = np.where(censored, ks[-1] + 0.3 + 0.25 * a, tk)
        ax.plot(x, ch, "-", color=col, label=name)
        ok = ~censored & np.isfinite(tk)
        ax.plot(x[ok], ch[ok], "o", color=col)
        ax.plot(x[censored], ch[censored], ">", color=col, markerfacecolor="none")
    ax.axvline(ks[-1], color="0.6", lw=0.8, ls=":")
    ax.text(ks[-1], ch[0], "open: beyond grid ", fontsize=7, color="0.4", va="bottom",
            ha="right")
    ax.set_yticks(ch)
    ax.set_xlim(ks[0] - 0.5, ks[-1] + 0.5 + 0.25 * A)
    ax.set_xlabel("k at 50% success")
    ax.set_ylabel(result.row_label)
    ax.set_title("50% transitions")
    ax.legend(fontsize=8, loc="upper left")
    if result.operator == "conv" and result.l is not None and result.D is not None:
        title = (f"recovery of model-k-sparse codes, K={result.K}, l={format_shape(result.l)}, "
                 f"D={format_shape(result.D)}, {result.trials} trials/cell")
    else:
        title = (f"recovery of k-sparse codes, {result.operator} operators, n={result.code_size}, "
                 f"{result.trials} trials/cell")
    fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _edges(v: np.ndarray) -> np.ndarray:
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
