"""Phase-transition sweeps (sparsity ``k`` x input channels ``M``), locally or on Dask.

For every cell ``(algorithm, M, k)`` of the grid, :func:`phase_transition` draws random
Gaussian filters ``W`` (``K`` filters of ``M`` channels, Theorem 3.1 of the invertibility
paper), ``trials`` model-``k``-sparse codes ``z`` (one nonzero per filter block, invertibility
paper Sec. 2.3), measures ``x = W^T z`` and recovers ``z`` from ``x``; a trial succeeds when
``||z_hat - z|| <= success_tol * ||z||``.  This is the experiment that shows why model-based
compressive sensing exists (Baraniuk, Cevher, Duarte, Hegde 2010): the model-based
projection finds codes that plain sparsity cannot.

Algorithms
----------
``"model_iht"``  model-based IHT (invertibility Algorithm 1) with the projection ``M(z, k)``
                 onto model-``k``-sparse codes (:class:`~modelcs.ModelSparse`), normalized
                 step (Blumensath & Davies 2010; the paper's unit step diverges for these
                 filters, ``||W||^2`` is about 6-10), at most 300 iterations, IHT tolerance
                 ``min(1e-8, success_tol / 100)`` (a bound on the relative code error).
``"iht"``        the same IHT with plain top-``k`` hard thresholding
                 (:class:`~modelcs.TopKSparse`, standard IHT).
``"lasso"``      FISTA (:func:`modelcs.recovery.lasso.lasso`) on
                 ``0.5||x - W^T z||^2 + lam ||z||_1`` with ``lam = 1e-3 * lam_max``
                 (``lam_max = ||W x||_inf`` per signal, so the choice does not depend on the
                 scale of the data; a small ``lam`` approximates basis pursuit, whose support
                 is then exact), duality-gap tolerance 1e-6, then debiasing: least squares
                 (batched conjugate gradients) on the ``k`` largest nonzeros of the Lasso
                 solution.  All three algorithms are told ``k``.

Data: filters i.i.d. ``N(0, 1/(M prod(l)))`` (Theorem 3.1), ``'valid'`` boundary, stride 1;
codes with ``k`` distinct active filters, one uniformly placed nonzero each, values uniform
on ``[-1, 1]`` (the paper's Fig. 2 setting; :meth:`~modelcs.ModelSparse.sample`).

Reproducibility and scale-out
-----------------------------
The randomness of a cell depends only on ``(seed, M, k)``: the filters of a row come from
``numpy.random.SeedSequence(seed, spawn_key=(M, 0))`` (one filter bank per channel count,
shared by every ``k``, so a row of the heat map is one operator), the codes of a cell from
``SeedSequence(seed, spawn_key=(M, k))`` (the mechanism behind ``SeedSequence.spawn``).  The
numbers therefore do not depend on the order in which cells run, on how they are spread over
processes, or on the rest of the grid, and all algorithms of a cell see the same filters and
codes (a paired comparison).  The unit of work is one cell, whose trials are one batched
(vectorised) recovery call; ``client=None`` runs the cells one after another in this
process, a ``dask.distributed.Client`` runs one task per cell on the cluster -- the same
function on the same inputs, hence the same ``success`` array.  A task ships a few hundred
bytes (the cell's parameters; workers regenerate the data from the seed) and returns four
numbers, so the sweep scales with the number of workers until the per-cell work (0.1-3 s
here) approaches Dask's per-task overhead (about a millisecond).  See :func:`local_cluster`
for a Dask default that slows NumPy in workers.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import Progress, progress_bar
from .._validation import as_int_tuple, check_positive_int
from ..operators import ConvOperator

__all__ = [
    "ALGORITHMS",
    "PhaseTransitionResult",
    "local_cluster",
    "phase_transition",
    "register",
]

#: Recovery algorithms known to :func:`phase_transition`.
ALGORITHMS: tuple[str, ...] = ("model_iht", "iht", "lasso")

#: Default demo grid (1-D, runs in a few minutes on one core), see :func:`phase_transition`.
DEFAULT_GRID: dict[str, Any] = dict(
    K=16, l=5, D=20, ks=tuple(range(1, 17)), channels=(2, 3, 4, 5, 6)
)

# Solver settings (documented in the module docstring / the closing note).
_IHT_MAX_ITER = 300
_IHT_STEP: float | str = "normalized"
_LASSO_REL_LAM = 1e-3
_LASSO_MAX_ITER = 3000
_LASSO_TOL = 1e-6
_LSQ_MAX_ITER = 200


# ----------------------------------------------------------------------------- data
def _filter_seed(seed: int, M: int) -> np.random.SeedSequence:
    """SeedSequence of the filters for ``M`` channels (shared by every ``k`` of the row)."""
    return np.random.SeedSequence(seed, spawn_key=(M, 0))


def _code_seed(seed: int, M: int, k: int) -> np.random.SeedSequence:
    """SeedSequence of the codes of grid cell ``(M, k)``, ``k >= 1``."""
    return np.random.SeedSequence(seed, spawn_key=(M, k))


def draw_problem(
    K: int,
    l: tuple[int, ...],
    D: tuple[int, ...],
    M: int,
    k: int,
    trials: int,
    seed: int,
) -> tuple[ConvOperator, np.ndarray]:
    """Random filters ``W`` and ``trials`` model-``k``-sparse codes of grid cell ``(M, k)``.

    Filters: i.i.d. ``N(0, 1/(M prod(l)))`` (Theorem 3.1).  Codes: ``k`` distinct blocks
    (filters) chosen uniformly, one uniformly placed nonzero in each, value uniform on
    ``[-1, 1]`` (the paper's Fig. 2 setting).

    Examples
    --------
    >>> W, Z = draw_problem(6, (3,), (10,), 2, 2, 4, seed=0)
    >>> Z.shape, W.in_shape
    ((4, 6, 8), (2, 10))
    >>> int(np.count_nonzero(Z, axis=2).max()), int(np.count_nonzero(Z[0]))
    (1, 2)
    """
    W = ConvOperator.random(K, M, l, D, seed=np.random.default_rng(_filter_seed(seed, M)))
    rng = np.random.default_rng(_code_seed(seed, M, k))
    Z = _model_sparse(k, len(D)).sample(W.out_shape, trials, seed=rng)
    return W, Z


# ------------------------------------------------------------------------ recovery
def _model_sparse(k: int, d: int) -> Any:
    from ..models import ModelSparse

    return ModelSparse(k, ndim=d)


def _topk_model(k: int, d: int) -> Any:
    from ..models import TopKSparse

    return TopKSparse(k, ndim=d)


def _iht_tol(success_tol: float) -> float:
    """IHT's tolerance (a bound on the relative code error): well below ``success_tol``."""
    return min(1e-8, 1e-2 * success_tol)


def _iht(Phi: Any, X: np.ndarray, model: Any, success_tol: float) -> np.ndarray:
    from ..recovery.iht import iht

    res = iht(Phi, X, model, step=_IHT_STEP, max_iter=_IHT_MAX_ITER, tol=_iht_tol(success_tol))
    return np.asarray(res.z)


def _lstsq_on_support(Phi: Any, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Batched least squares ``min ||x - Phi z||`` over ``supp(z) in mask`` (CG on normal eqs)."""
    B = X.shape[0]
    maskf = mask.astype(X.dtype)

    def normal(v: np.ndarray) -> np.ndarray:
        return maskf * (Phi.T @ (Phi @ (maskf * v)))

    z = np.zeros(mask.shape, dtype=X.dtype)
    r = maskf * (Phi.T @ X)
    p = r.copy()
    rs = (r * r).reshape(B, -1).sum(axis=1)
    rs0 = rs.copy()
    shape = (B,) + (1,) * (mask.ndim - 1)
    for _ in range(_LSQ_MAX_ITER):
        active = rs > 1e-28 * np.maximum(rs0, 1e-300)
        if not active.any():
            break
        Ap = normal(p)
        pAp = (p * Ap).reshape(B, -1).sum(axis=1)
        alpha = np.where(active & (pAp > 0), rs / np.where(pAp > 0, pAp, 1.0), 0.0)
        z = z + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * Ap
        rs_new = (r * r).reshape(B, -1).sum(axis=1)
        beta = np.where(active, rs_new / np.where(rs > 0, rs, 1.0), 0.0)
        p = r + beta.reshape(shape) * p
        rs = rs_new
    return z


def _lasso_debiased(Phi: Any, X: np.ndarray, k: int) -> np.ndarray:
    from ..recovery.lasso import lasso

    B = X.shape[0]
    lam_max = np.abs((Phi.T @ X).reshape(B, -1)).max(axis=1)
    res = lasso(Phi, X, _LASSO_REL_LAM * lam_max, max_iter=_LASSO_MAX_ITER, tol=_LASSO_TOL)
    Zl = np.asarray(res.z)
    mask = _topk_model(k, X.ndim - 2).support(Zl)
    return _lstsq_on_support(Phi, X, mask)


def _recover(
    algorithm: str, W: ConvOperator, X: np.ndarray, k: int, success_tol: float
) -> np.ndarray:
    Phi = W.T
    d = len(W.input_spatial)
    if algorithm == "model_iht":
        return _iht(Phi, X, _model_sparse(k, d), success_tol)
    if algorithm == "iht":
        return _iht(Phi, X, _topk_model(k, d), success_tol)
    if algorithm == "lasso":
        return _lasso_debiased(Phi, X, k)
    raise ValueError(f"parameter 'algorithms' has unknown entry {algorithm!r}")


@dataclass(frozen=True)
class _Cell:
    """One unit of work: everything a (remote) worker needs, small and picklable."""

    algorithm: str
    K: int
    l: tuple[int, ...]
    D: tuple[int, ...]
    M: int
    k: int
    trials: int
    seed: int
    success_tol: float


def _run_cell(cell: _Cell) -> tuple[int, float, float, float]:
    """Successes, median relative error, wall and CPU seconds of one cell (one batched call)."""
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    W, Z = draw_problem(cell.K, cell.l, cell.D, cell.M, cell.k, cell.trials, cell.seed)
    X = W.T @ Z
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # plain IHT may diverge far beyond its transition: the failure is counted, not shown
        warnings.simplefilter("ignore")
        Zh = _recover(cell.algorithm, W, X, cell.k, cell.success_tol)
        B = Z.shape[0]
        err = np.linalg.norm((Zh - Z).reshape(B, -1), axis=1)
        rel = err / np.linalg.norm(Z.reshape(B, -1), axis=1)
    rel = np.where(np.isfinite(rel), rel, np.inf)
    return (
        int(np.count_nonzero(rel <= cell.success_tol)),
        float(np.median(rel)),
        time.perf_counter() - t_wall,
        time.process_time() - t_cpu,
    )


# -------------------------------------------------------------------------- result
@dataclass
class PhaseTransitionResult:
    """Outcome of :func:`phase_transition`.

    The fields are the constructor's parameters: the sweep's grid and settings (``K``,
    ``l``, ``D``, ``ks``, ``channels``, ``algorithms``, ``trials``, ``seed``,
    ``success_tol``, as passed to :func:`phase_transition`), then its measurements.

    Parameters
    ----------
    K, l, D, ks, channels, algorithms, trials, seed, success_tol
        The sweep's settings, as passed to :func:`phase_transition`.
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

    K: int
    l: tuple[int, ...]
    D: tuple[int, ...]
    ks: tuple[int, ...]
    channels: tuple[int, ...]
    algorithms: tuple[str, ...]
    trials: int
    seed: int
    success_tol: float
    counts: np.ndarray
    median_error: np.ndarray
    elapsed: float = 0.0
    backend: str = "local"
    cell_seconds: np.ndarray | None = None
    cell_cpu_seconds: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> np.ndarray:
        """Success rate per cell, shape ``(len(algorithms), len(channels), len(ks))``."""
        return self.counts / self.trials

    @property
    def measurements(self) -> np.ndarray:
        """Number of measurements ``M * prod(D)`` per channel count."""
        return np.array([M * math.prod(self.D) for M in self.channels])

    @property
    def code_size(self) -> int:
        """Length ``K * prod(n)`` of the unknown code."""
        return self.K * math.prod(d - li + 1 for d, li in zip(self.D, self.l, strict=True))

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
            "K": self.K,
            "l": list(self.l),
            "D": list(self.D),
            "ks": list(self.ks),
            "channels": list(self.channels),
            "algorithms": list(self.algorithms),
            "trials": self.trials,
            "seed": self.seed,
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
            K=int(d["K"]),
            l=tuple(int(v) for v in d["l"]),
            D=tuple(int(v) for v in d["D"]),
            ks=tuple(int(v) for v in d["ks"]),
            channels=tuple(int(v) for v in d["channels"]),
            algorithms=tuple(str(a) for a in d["algorithms"]),
            trials=int(d["trials"]),
            seed=int(d["seed"]),
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

    @classmethod
    def load(cls, path: str | Path) -> PhaseTransitionResult:
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ------------------------------------------------------------------ plot
    def plot(self, path: str | Path | None = None) -> Any:
        """Heat maps of the success rate (one per algorithm) with the 50% contour.

        The last panel overlays every algorithm's 50% transition curve.  Writes a PNG when
        ``path`` is given; returns the matplotlib ``Figure``.
        """
        from matplotlib.figure import Figure

        A = len(self.algorithms)
        fig = Figure(figsize=(3.6 * (A + 1), 3.4), layout="constrained")
        axes = fig.subplots(1, A + 1)
        ks = np.asarray(self.ks, dtype=float)
        ch = np.asarray(self.channels, dtype=float)
        colors = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]
        im = None
        for a, name in enumerate(self.algorithms):
            ax = axes[a]
            im = ax.pcolormesh(_edges(ks), _edges(ch), self.success[a], vmin=0, vmax=1,
                               cmap="gray", shading="flat")
            if len(ks) > 1 and len(ch) > 1 and np.ptp(self.success[a]) > 0:
                ax.contour(ks, ch, self.success[a], levels=[0.5],
                           colors=colors[a % len(colors)], linewidths=2)
            ax.set_title(f"{name}")
            ax.set_xlabel("sparsity k")
            ax.set_yticks(ch)
            if a == 0:
                ax.set_ylabel("input channels M")
        if im is not None:
            fig.colorbar(im, ax=axes[:A], shrink=0.8, label="success rate")
        ax = axes[A]
        for a, name in enumerate(self.algorithms):
            tk = self.transition_k(name)
            censored = self.success[a, :, -1] >= 0.5  # never below 50%: k_50 > ks[-1]
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
        ax.set_ylabel("input channels M")
        ax.set_title("50% transitions")
        ax.legend(fontsize=8, loc="upper left")
        fig.suptitle(
            f"recovery of model-k-sparse codes, K={self.K}, l={_fmt(self.l)}, D={_fmt(self.D)}, "
            f"{self.trials} trials/cell"
        )
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _opt_array(v: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=float).reshape(shape)


def _edges(v: np.ndarray) -> np.ndarray:
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def _fmt(t: tuple[int, ...]) -> str:
    return str(t[0]) if len(t) == 1 else "x".join(map(str, t))


# ----------------------------------------------------------------------- the sweep
def _check_increasing(name: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, (Sequence, np.ndarray, range)) or isinstance(values, str):
        raise TypeError(f"parameter '{name}' must be a sequence of positive integers; "
                        f"got {values!r}")
    if len(values) == 0:
        raise ValueError(f"parameter '{name}' must not be empty")
    out = tuple(check_positive_int(name, v) for v in values)
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"parameter '{name}' must be strictly increasing; got {list(out)}")
    return out


def phase_transition(
    *,
    K: int,
    l: int | Sequence[int],
    D: int | Sequence[int],
    ks: Sequence[int],
    channels: Sequence[int],
    algorithms: Sequence[str] = ALGORITHMS,
    trials: int = 100,
    seed: int = 0,
    client: Any = None,
    progress: bool = True,
    success_tol: float = 1e-4,
) -> PhaseTransitionResult:
    """Success rate of sparse recovery over a grid of sparsities and channel counts.

    Parameters
    ----------
    K : int
        Number of filters (blocks of the code); every ``k`` must be ``<= K``.
    l, D : int or tuple of int
        Filter size and input spatial size (1-D ints or 2-D pairs); ``'valid'`` boundary,
        stride 1, so the code has ``K * prod(D - l + 1)`` entries and the signal
        ``M * prod(D)``.
    ks : sequence of int
        Sparsities (number of nonzero blocks), strictly increasing.
    channels : sequence of int
        Numbers ``M`` of input channels (measurements ``M * prod(D)``), strictly increasing.
    algorithms : sequence of str
        Subset of :data:`ALGORITHMS` (see the module docstring for their settings).
    trials : int
        Codes per cell, recovered together in one batched call.
    seed : int
        Root seed; cell ``(M, k)`` uses ``SeedSequence(seed, spawn_key=(M, k))``.
    client : dask.distributed.Client, optional
        Run the cells on this Dask cluster (one task per cell) instead of in this process.
        The results are identical.
    progress : bool
        Show a tqdm progress bar (only when standard error is a terminal).
    success_tol : float
        A trial succeeds when the relative code error is at most this.

    Returns
    -------
    PhaseTransitionResult

    Examples
    --------
    >>> r = phase_transition(K=8, l=3, D=10, ks=[1, 4], channels=[2], algorithms=["model_iht"],
    ...                      trials=4, progress=False)
    >>> r.success.shape
    (1, 1, 2)
    """
    K = check_positive_int("K", K)
    trials = check_positive_int("trials", trials)
    if isinstance(l, (int, np.integer)) and isinstance(D, (tuple, list)):
        l = (int(l),) * len(D)
    d = len(l) if isinstance(l, (tuple, list)) else (len(D) if isinstance(D, (tuple, list))
                                                         else 1)
    if d not in (1, 2):
        raise ValueError(f"parameters 'l' and 'D' must be 1-D or 2-D; got l={l!r}, D={D!r}")
    lt = as_int_tuple("l", l, d)
    Dt = as_int_tuple("D", D, d)
    if any(li > di for li, di in zip(lt, Dt, strict=True)):
        raise ValueError(f"parameter 'l'={l!r} must not exceed the input size D={D!r}")
    kt = _check_increasing("ks", ks)
    if kt[-1] > K:
        raise ValueError(f"parameter 'ks' has k={kt[-1]} > K={K}; a model-k-sparse code has at "
                         "most one nonzero per filter block")
    ct = _check_increasing("channels", channels)
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    at = tuple(algorithms)
    if not at:
        raise ValueError("parameter 'algorithms' must not be empty")
    for a in at:
        if a not in ALGORITHMS:
            raise ValueError(f"parameter 'algorithms' has unknown entry {a!r}; expected some "
                             f"of {list(ALGORITHMS)}")
    if len(set(at)) != len(at):
        raise ValueError(f"parameter 'algorithms' has duplicates: {list(at)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"parameter 'seed' must be a non-negative integer; got {seed!r}")
    if seed < 0:
        raise ValueError(f"parameter 'seed' must be a non-negative integer; got {seed!r}")
    if not isinstance(success_tol, (int, float)) or not 0 < success_tol < 1:
        raise ValueError(f"parameter 'success_tol' must be a number in (0, 1); "
                         f"got {success_tol!r}")
    if client is not None and not (hasattr(client, "submit") and hasattr(client, "gather")):
        raise TypeError(f"parameter 'client' must be a dask.distributed.Client or None; "
                        f"got {type(client).__name__}")

    cells = [
        _Cell(a, K, lt, Dt, M, k, trials, int(seed), float(success_tol))
        for a in at for M in ct for k in kt
    ]
    t0 = time.perf_counter()
    # progress=True keeps its documented meaning here: a bar only on a terminal
    with progress_bar(len(cells), desc="phase transition", unit="cell",
                      progress=None if progress else False, leave=True) as bar:
        if client is None:
            out = []
            for c in cells:
                out.append(_run_cell(c))
                bar.update()
        else:
            out = _run_on_dask(client, cells, bar)
    elapsed = time.perf_counter() - t0
    shape = (len(at), len(ct), len(kt))
    return PhaseTransitionResult(
        K=K, l=lt, D=Dt, ks=kt, channels=ct, algorithms=at, trials=trials, seed=int(seed),
        success_tol=float(success_tol),
        counts=np.array([o[0] for o in out], dtype=np.int64).reshape(shape),
        median_error=np.array([o[1] for o in out], dtype=float).reshape(shape),
        cell_seconds=np.array([o[2] for o in out], dtype=float).reshape(shape),
        cell_cpu_seconds=np.array([o[3] for o in out], dtype=float).reshape(shape),
        elapsed=elapsed, backend="local" if client is None else "dask",
    )


_CellOut = tuple[int, float, float, float]


def _run_on_dask(client: Any, cells: list[_Cell], bar: Progress) -> list[_CellOut]:
    """Submit one task per cell, gather in grid order (progress as tasks complete)."""
    from distributed import as_completed

    futures = [client.submit(_run_cell, c, pure=False) for c in cells]
    if bar.enabled:
        for _ in as_completed(futures):
            bar.update()
    return list(client.gather(futures))


# ------------------------------------------------------------------------------ CLI
def _int_list(text: str) -> list[int]:
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


def _shape_arg(text: str) -> int | tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'AxB'; got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def register(subparsers: Any) -> None:
    """Add the ``phase`` subcommand to the ``modelcs`` command line."""
    g = DEFAULT_GRID
    p = subparsers.add_parser(
        "phase",
        help="phase-transition sweep (model-IHT vs IHT vs Lasso), locally or on Dask",
        description="Success rate of recovering model-k-sparse codes x = W^T z over a grid of "
        "sparsities k and input channels M. Writes phase.json and phase.png to --out.",
    )
    p.add_argument("--K", type=int, default=g["K"], help="number of filters (default %(default)s)")
    p.add_argument("--l", type=_shape_arg, default=g["l"],
                   help="filter size, int or AxB (default %(default)s)")
    p.add_argument("--D", type=_shape_arg, default=g["D"],
                   help="input size, int or AxB (default %(default)s)")
    p.add_argument("--ks", type=_int_list, default=list(g["ks"]),
                   help="sparsities, e.g. '1:16' (inclusive range) or '1,2,4' (default 1:16)")
    p.add_argument("--channels", type=_int_list, default=list(g["channels"]),
                   help="input channel counts (default 2,3,4,5,6)")
    p.add_argument("--algorithms", default=",".join(ALGORITHMS),
                   help=f"comma-separated subset of {','.join(ALGORITHMS)}")
    p.add_argument("--trials", type=int, default=100, help="codes per cell (default 100)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--success-tol", type=float, default=1e-4,
                   help="relative code error counted as success (default 1e-4)")
    grp = p.add_mutually_exclusive_group()
    grp.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    grp.add_argument("--local-cluster", metavar="N", type=int, default=None,
                     help="start a dask LocalCluster with N single-threaded worker processes")
    p.add_argument("--out", default="phase-output",
                   help="output directory for phase.json and phase.png (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    kwargs = dict(
        K=args.K, l=args.l, D=args.D, ks=args.ks, channels=args.channels,
        algorithms=tuple(a.strip() for a in args.algorithms.split(",") if a.strip()),
        trials=args.trials, seed=args.seed, success_tol=args.success_tol,
        progress=not args.no_progress,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.scheduler is not None or args.local_cluster is not None:
        res = _with_dask(args.scheduler, args.local_cluster, kwargs)
    else:
        res = phase_transition(**kwargs)
    json_path = res.save(out / "phase.json")
    png_path = out / "phase.png"
    res.plot(png_path)
    print(summary(res))
    print(f"wrote {json_path} and {png_path}")
    return 0


def local_cluster(n_workers: int = 2, **kwargs: Any) -> Any:
    """A ``dask.distributed.LocalCluster`` of single-threaded worker processes on loopback.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``), which makes glibc hand every temporary array
    above 128 KiB back to the kernel: the batched NumPy recovery of a cell then runs 2-3.5x
    slower in a worker than in a plain process (measured on this workload).  This cluster
    leaves the variable unset.  For workers you start yourself (``dask worker`` for
    ``--scheduler``), set ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null``
    in their Dask configuration for the same effect.

    Use as a context manager; extra keyword arguments go to ``LocalCluster``.
    """
    import dask
    from distributed import LocalCluster

    n = check_positive_int("n_workers", n_workers)
    opts: dict[str, Any] = dict(threads_per_worker=1, processes=True, dashboard_address=None,
                                host="127.0.0.1")
    opts.update(kwargs)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n, **opts)


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
    """A plain-text table: 50% transition k per algorithm and channel count."""
    lines = [
        f"phase transition: K={res.K} l={_fmt(res.l)} D={_fmt(res.D)} trials={res.trials} "
        f"seed={res.seed} ({res.backend}, {res.elapsed:.1f} s)",
        "k at 50% success (interpolated; '>=' means never below 50% on the grid):",
        "   M  meas/code  " + "".join(f"{a:>11}" for a in res.algorithms),
    ]
    tk = {a: res.transition_k(a) for a in res.algorithms}
    for i, M in enumerate(res.channels):
        row = f"{M:4d}  {res.measurements[i] / res.code_size:9.3f}  "
        for a in res.algorithms:
            v = tk[a][i]
            if np.isnan(v):
                row += f"{'<' + str(res.ks[0]):>11}"
            elif v == res.ks[-1] and res.success[res.algorithms.index(a), i, -1] >= 0.5:
                row += f"{'>=' + str(res.ks[-1]):>11}"
            else:
                row += f"{v:11.2f}"
        lines.append(row)
    if res.cell_seconds is not None and res.elapsed > 0:
        work = float(res.cell_seconds.sum())
        cpu = float(np.nansum(res.cell_cpu_seconds)) if res.cell_cpu_seconds is not None else 0
        lines.append(
            f"time: {res.elapsed:.1f} s wall for {work:.1f} s of cell work ({cpu:.1f} s CPU); "
            f"parallelism {work / res.elapsed:.2f}, slowest cell {res.cell_seconds.max():.2f} s"
        )
    if "model_iht" in res.algorithms and "iht" in res.algorithms:
        d = (res.counts[res.algorithms.index("model_iht")]
             - res.counts[res.algorithms.index("iht")])
        lines.append(
            f"model_iht vs iht: more successes in {int((d > 0).sum())}, equal in "
            f"{int((d == 0).sum())}, fewer in {int((d < 0).sum())} of {d.size} cells "
            f"(largest deficit {max(0, -int(d.min()))} of {res.trials} trials)"
        )
    return "\n".join(lines)
