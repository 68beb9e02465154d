"""The result of a phase-transition sweep and its JSON form (read and written exactly)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PhaseTransitionResult", "format_shape"]


@dataclass
class PhaseTransitionResult:
    """Outcome of :func:`~modelcs.phase_transition`.

    The fields are the constructor's parameters: the sweep's grid and settings (``K``,
    ``l``, ``D``, ``ks``, ``channels``, ``algorithms``, ``trials``, ``root_seed``,
    ``success_tol``, ``operator``, ``n``), then its measurements.

    Parameters
    ----------
    K, l, D, ks, channels, algorithms, trials, success_tol
        The sweep's settings, as passed to :func:`~modelcs.phase_transition`.
    operator : str
        The operator family: ``"conv"`` (``Phi = W.T``; rows are input channels ``M``),
        ``"gaussian"`` (``m x n`` Gaussian matrices; rows are measurements ``m``) or the
        name of a user factory.
    K, l, D : conv geometry (``None`` for other families)
    n : int
        Length of the unknown code (``K * prod(D - l + 1)`` for conv).
    channels : tuple of int
        The row parameter of the grid: input channels ``M`` for ``"conv"``, numbers of
        measurements ``m`` otherwise.
    root_seed : int
        The root seed every cell's randomness was derived from (recorded also when
        ``rng`` was ``None`` or a Generator, so a sweep can be repeated exactly).
    counts : ndarray of int, shape ``(len(algorithms), len(channels), len(ks))``
        Successful trials per cell; :attr:`success` is ``counts / trials``.
    median_error : ndarray of float, same shape
        Median relative code error per cell (``inf`` for diverged trials).
    elapsed : float
        Wall-clock seconds of the sweep; ``backend`` is ``"local"`` or ``"dask"``.
    cell_seconds, cell_cpu_seconds : ndarray of float, same shape as ``counts``
        Wall-clock and CPU (process) seconds each cell took where it ran: their sum is the
        serial work, ``cell_seconds.sum() / elapsed`` the parallelism achieved.  Timings
        are the only fields that differ between runs.
    meta : dict
        Free-form provenance (library version, options).

    Examples
    --------
    >>> from modelcs.experiments import PhaseTransitionResult, phase_transition
    >>> r = phase_transition(K=8, l=3, D=10, ks=[1, 4], channels=[2], algorithms=["model_iht"],
    ...                      trials=4, progress=False)
    >>> isinstance(r, PhaseTransitionResult), r.counts.shape, r.trials
    (True, (1, 1, 2), 4)
    >>> bool(((0 <= r.success) & (r.success <= 1)).all())
    True
    """

    K: int | None
    l: tuple[int, ...] | None
    D: tuple[int, ...] | None
    ks: tuple[int, ...]
    channels: tuple[int, ...]
    algorithms: tuple[str, ...]
    trials: int
    root_seed: int
    success_tol: float
    counts: np.ndarray
    median_error: np.ndarray
    elapsed: float = 0.0
    backend: str = "local"
    cell_seconds: np.ndarray | None = None
    cell_cpu_seconds: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    operator: str = "conv"
    n: int | None = None

    @property
    def success(self) -> np.ndarray:
        """Success rate per cell, shape ``(len(algorithms), len(channels), len(ks))``."""
        return self.counts / self.trials

    @property
    def measurements(self) -> np.ndarray:
        """Number of measurements per grid row (``M * prod(D)`` for conv, else ``m``)."""
        if self.operator == "conv" and self.D is not None:
            return np.array([M * math.prod(self.D) for M in self.channels])
        return np.array(self.channels)

    @property
    def code_size(self) -> int:
        """Length of the unknown code (``K * prod(D - l + 1)`` for conv)."""
        if self.n is not None:
            return self.n
        assert self.K is not None and self.D is not None and self.l is not None
        return self.K * math.prod(d - li + 1 for d, li in zip(self.D, self.l, strict=True))

    @property
    def row_label(self) -> str:
        """Axis label of the grid rows."""
        return "input channels M" if self.operator == "conv" else "measurements m"

    def transition_k(self, algorithm: str) -> np.ndarray:
        """The sparsity at which the success rate first drops below 50%, per channel count.

        Linear interpolation between the last ``k`` with success >= 0.5 and the next one.
        ``nan`` when success is already below 0.5 at the smallest ``k``; ``ks[-1]`` (a lower
        bound) when it never drops below 0.5 on the grid.
        """
        a = self.algorithms.index(algorithm)
        ks = np.asarray(self.ks, dtype=float)
        out = np.full(len(self.channels), np.nan)
        for i, s in enumerate(self.success[a]):
            if s[0] < 0.5:
                continue
            below = np.flatnonzero(s < 0.5)
            if below.size == 0:
                out[i] = ks[-1]
                continue
            j = int(below[0])
            s0, s1 = s[j - 1], s[j]
            out[i] = ks[j - 1] + (s0 - 0.5) / (s0 - s1) * (ks[j] - ks[j - 1])
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it exactly."""
        return {
            "kind": "modelcs.phase_transition",
            "operator": self.operator,
            "n": self.n,
            "K": self.K,
            "l": None if self.l is None else list(self.l),
            "D": None if self.D is None else list(self.D),
            "ks": list(self.ks),
            "channels": list(self.channels),
            "algorithms": list(self.algorithms),
            "trials": self.trials,
            "seed": self.root_seed,
            "success_tol": self.success_tol,
            "counts": self.counts.tolist(),
            "success": self.success.tolist(),
            "median_error": [
                [[e if math.isfinite(e) else None for e in row] for row in a]
                for a in self.median_error.tolist()
            ],
            "elapsed": self.elapsed,
            "backend": self.backend,
            "cell_seconds": None if self.cell_seconds is None else self.cell_seconds.tolist(),
            "cell_cpu_seconds": (
                None if self.cell_cpu_seconds is None else self.cell_cpu_seconds.tolist()
            ),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhaseTransitionResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. ``json.load``)."""
        if not isinstance(d, dict) or d.get("kind") != "modelcs.phase_transition":
            raise ValueError("parameter 'd' is not a phase-transition record "
                             "(expected kind='modelcs.phase_transition')")
        counts = np.asarray(d["counts"], dtype=np.int64)
        med = np.array(
            [[[np.inf if e is None else e for e in row] for row in a] for a in d["median_error"]],
            dtype=float,
        )
        res = cls(
            operator=str(d.get("operator", "conv")),
            n=None if d.get("n") is None else int(d["n"]),
            K=None if d["K"] is None else int(d["K"]),
            l=None if d["l"] is None else tuple(int(v) for v in d["l"]),
            D=None if d["D"] is None else tuple(int(v) for v in d["D"]),
            ks=tuple(int(v) for v in d["ks"]),
            channels=tuple(int(v) for v in d["channels"]),
            algorithms=tuple(str(a) for a in d["algorithms"]),
            trials=int(d["trials"]),
            root_seed=int(d["seed"]),
            success_tol=float(d["success_tol"]),
            counts=counts,
            median_error=med.reshape(counts.shape),
            elapsed=float(d.get("elapsed", 0.0)),
            backend=str(d.get("backend", "local")),
            cell_seconds=_opt_array(d.get("cell_seconds"), counts.shape),
            cell_cpu_seconds=_opt_array(d.get("cell_cpu_seconds"), counts.shape),
            meta=dict(d.get("meta", {})),
        )
        expect = (len(res.algorithms), len(res.channels), len(res.ks))
        if counts.shape != expect:
            raise ValueError(f"record 'counts' has shape {counts.shape}; expected {expect}")
        return res

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    def plot(self, path: str | Path | None = None) -> Any:
        """Heat maps of the success rate with the 50% contour (see :func:`.plot.plot_phase`).

        Writes a PNG when ``path`` is given; returns the matplotlib ``Figure``.
        """
        from .plot import plot_phase

        return plot_phase(self, path)

    @classmethod
    def load(cls, path: str | Path) -> PhaseTransitionResult:
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _opt_array(v: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=float).reshape(shape)


def format_shape(t: tuple[int, ...]) -> str:
    """``(5,)`` -> ``"5"``, ``(3, 4)`` -> ``"3x4"``."""
    return str(t[0]) if len(t) == 1 else "x".join(map(str, t))
