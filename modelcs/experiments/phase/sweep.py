"""The phase-transition sweep: cells, their batched recovery, local or on Dask.

For every cell ``(algorithm, m, k)`` of the grid, :func:`phase_transition` draws the row's
random operator ``Phi`` (:mod:`.problems`), ``trials`` random codes ``z`` of the problem's
sparsity model, measures ``y = Phi z`` and recovers ``z`` from ``y`` with one batched call
of the algorithm (:mod:`.algorithms`); a trial succeeds when
``||z_hat - z|| <= success_tol * ||z||``.  This is the experiment that shows why
model-based compressive sensing exists (Baraniuk, Cevher, Duarte, Hegde 2010): the
model-based projection finds codes that plain sparsity cannot.

The unit of work is one cell.  ``client=None`` runs the cells one after another in this
process; a ``dask.distributed.Client`` runs one task per cell on the cluster -- the same
function on the same inputs (workers regenerate the data from the root seed), hence the
same numbers.  A task ships a few hundred bytes and returns four numbers, so the sweep
scales with the number of workers until the per-cell work approaches Dask's per-task
overhead (about a millisecond).  See :func:`local_cluster` for a Dask default that slows
NumPy in workers.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._memory import check_elements
from ..._progress import Progress, progress_bar
from ..._validation import as_int_tuple, check_positive_int, root_seed
from .algorithms import ALGORITHMS, resolve
from .problems import OPERATORS, OperatorFamily
from .result import PhaseTransitionResult

__all__ = ["phase_transition", "local_cluster", "run_cell", "Cell"]

#: Default demo grid (1-D conv, runs in a few minutes on one core).
DEFAULT_GRID: dict[str, Any] = dict(
    K=16, l=5, D=20, ks=tuple(range(1, 17)), channels=(2, 3, 4, 5, 6)
)
#: Algorithms run when none are named: model-based vs plain normalized IHT vs the Lasso.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("model_iht", "niht", "lasso")


@dataclass(frozen=True)
class Cell:
    """One unit of work: everything a (remote) worker needs, small and picklable."""

    algorithm: str
    func: Callable[..., Any]
    family: OperatorFamily
    m: int
    k: int
    trials: int
    root: int
    success_tol: float


def run_cell(cell: Cell) -> tuple[int, float, float, float]:
    """Successes, median relative error, wall and CPU seconds of one cell (one batched call)."""
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    Phi = cell.family.operator(cell.m, cell.root)
    Z = cell.family.codes(Phi, cell.m, cell.k, cell.trials, cell.root)
    Y = Phi @ Z
    model = cell.family.model(cell.k, Phi)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # plain IHT may diverge far beyond its transition: the failure is counted, not shown
        warnings.simplefilter("ignore")
        Zh = np.asarray(cell.func(Phi, Y, cell.k, model, cell.success_tol))
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


def _root_seed(rng: Any) -> int:
    """The sweep's root seed from ``rng`` (SPEC 7: None, int or Generator)."""
    return root_seed(rng)


def _conv_family(K: Any, l: Any, D: Any) -> OperatorFamily:
    K = check_positive_int("K", K)
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
    return OperatorFamily("conv", K=K, l=lt, D=Dt)


def phase_transition(
    *,
    ks: Sequence[int],
    channels: Sequence[int] | None = None,
    operator: str | Callable[[int, np.random.Generator], Any] = "conv",
    K: int | None = None,
    l: int | Sequence[int] | None = None,
    D: int | Sequence[int] | None = None,
    n: int | None = None,
    measurements: Sequence[int] | None = None,
    algorithms: Sequence[Any] = DEFAULT_ALGORITHMS,
    trials: int = 100,
    rng: Any = None,
    client: Any = None,
    progress: bool = True,
    success_tol: float = 1e-4,
) -> PhaseTransitionResult:
    """Success rate of sparse recovery over a grid of sparsities and measurement counts.

    Parameters
    ----------
    ks : sequence of int
        Sparsities (nonzeros per code), strictly increasing.
    channels : sequence of int
        ``operator="conv"``: numbers ``M`` of input channels (measurements
        ``M * prod(D)``), strictly increasing.
    operator : "conv", "gaussian" or callable
        The family of measurement operators, one random draw per grid row:

        * ``"conv"`` -- ``Phi = W.T`` for ``K`` Gaussian filters of size ``l`` on inputs of
          size ``D`` with ``M`` channels (Theorem 3.1 of the invertibility paper);
          model-``k``-sparse codes (one nonzero per filter block, Sec. 2.3);
        * ``"gaussian"`` -- i.i.d. ``N(0, 1/m)`` matrices ``m x n``, ``k``-sparse codes:
          the classic Donoho-Tanner diagram (give ``n`` and ``measurements``);
        * a callable ``(m, rng) -> operator`` (anything :func:`~modelcs.as_operator`
          accepts, codes of its ``in_shape``), ``k``-sparse codes (give ``measurements``).
    K, l, D : int or tuple of int
        Conv geometry (``'valid'``, stride 1): filters, filter size, input size (1-D ints
        or 2-D pairs).
    n : int
        ``operator="gaussian"``: length of the code.
    measurements : sequence of int
        ``operator="gaussian"`` or callable: the grid rows ``m``, strictly increasing.
    algorithms : sequence of str or callable
        Names from :data:`~modelcs.experiments.phase.ALGORITHMS` (``"iht"``, ``"niht"``,
        ``"model_iht"``, ``"cosamp"``, ``"model_cosamp"``, ``"lasso"``; see
        :mod:`.algorithms` for their settings) and/or callables ``f(Phi, Y, k) -> Z``.
    trials : int
        Codes per cell, recovered together in one batched call.
    rng : None, int or numpy Generator
        Root randomness (SciPy SPEC 7): cell ``(m, k)`` uses
        ``SeedSequence(root, spawn_key=(m, k))`` with ``root = rng`` for an int (else drawn
        from ``rng``); the root is recorded in the result's ``seed``.
    client : dask.distributed.Client, optional
        Run the cells on this Dask cluster (one task per cell); the results are identical.
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
    ...                      trials=4, rng=0, progress=False)
    >>> r.success.shape
    (1, 1, 2)
    >>> g = phase_transition(operator="gaussian", n=40, measurements=[10, 20], ks=[1, 3],
    ...                      algorithms=("niht", "cosamp"), trials=8, rng=0, progress=False)
    >>> g.success.shape, g.row_label
    ((2, 2, 2), 'measurements m')
    """
    trials = check_positive_int("trials", trials)
    kt = _check_increasing("ks", ks)
    if isinstance(operator, str):
        if operator not in OPERATORS:
            raise ValueError(f"parameter 'operator' must be one of {list(OPERATORS)} or a "
                             f"callable (m, rng) -> operator; got {operator!r}")
    elif not callable(operator):
        raise TypeError(f"parameter 'operator' must be 'conv', 'gaussian' or a callable "
                        f"(m, rng) -> operator; got {operator!r}")
    if operator == "conv":
        if measurements is not None:
            raise ValueError("parameter 'measurements' is for operator='gaussian' or a "
                             "callable; the conv sweep's rows are 'channels'")
        fam = _conv_family(K, l, D)
        assert fam.K is not None
        if kt[-1] > fam.K:
            raise ValueError(f"parameter 'ks' has k={kt[-1]} > K={fam.K}; a model-k-sparse "
                             "code has at most one nonzero per filter block")
        if channels is None:
            raise TypeError("phase_transition(operator='conv') needs 'channels'")
        rows = _check_increasing("channels", channels)
        check_elements(f"phase_transition: trials={trials} codes (K={fam.K}) and signals (channels up to {rows[-1]}, D={fam.D}) per cell", trials * (fam.K + rows[-1]) * math.prod(fam.D or (1,)), copies=8)  # noqa: E501
    else:
        for name, v in (("K", K), ("l", l), ("D", D), ("channels", channels)):
            if v is not None:
                raise ValueError(f"parameter '{name}' is for operator='conv'; give "
                                 "'measurements' (and 'n' for 'gaussian') instead")
        if measurements is None:
            raise TypeError(f"phase_transition(operator={operator!r}) needs 'measurements'")
        rows = _check_increasing("measurements", measurements)
        if operator == "gaussian":
            if n is None:
                raise TypeError("phase_transition(operator='gaussian') needs 'n'")
            fam = OperatorFamily("gaussian", n=check_positive_int("n", n))
            check_elements(f"phase_transition: trials={trials} codes (n={n}) and the {rows[-1]} x {n} matrix per cell", (trials + rows[-1]) * (int(n) + rows[-1]), copies=8)  # noqa: E501
            if kt[-1] > fam.n:  # type: ignore[operator]
                raise ValueError(f"parameter 'ks' has k={kt[-1]} > n={n}")
        else:
            name = str(getattr(operator, "__name__", type(operator).__name__))
            fam = OperatorFamily(name, n=None if n is None else check_positive_int("n", n),
                                 factory=operator)  # type: ignore[arg-type]
    at, funcs = resolve(algorithms)
    root = _root_seed(rng)
    if not isinstance(success_tol, (int, float)) or not 0 < success_tol < 1:
        raise ValueError(f"parameter 'success_tol' must be a number in (0, 1); "
                         f"got {success_tol!r}")
    if client is not None and not (hasattr(client, "submit") and hasattr(client, "gather")):
        raise TypeError(f"parameter 'client' must be a dask.distributed.Client or None; "
                        f"got {type(client).__name__}")

    cells = [
        Cell(a, f, fam, m, k, trials, root, float(success_tol))
        for a, f in zip(at, funcs, strict=True) for m in rows for k in kt
    ]
    t0 = time.perf_counter()
    # progress=True keeps its documented meaning here: a bar only on a terminal
    with progress_bar(len(cells), desc="phase transition", unit="cell",
                      progress=None if progress else False, leave=True) as bar:
        if client is None:
            out = []
            for c in cells:
                out.append(run_cell(c))
                bar.update()
        else:
            out = _run_on_dask(client, cells, bar)
    elapsed = time.perf_counter() - t0
    shape = (len(at), len(rows), len(kt))
    code_size = fam.n
    if fam.name != "conv" and code_size is None:
        code_size = int(np.prod(fam.operator(rows[0], root).in_shape))
    return PhaseTransitionResult(
        K=fam.K, l=fam.l, D=fam.D, ks=kt, channels=rows, algorithms=at, trials=trials,
        root_seed=root, success_tol=float(success_tol),
        counts=np.array([o[0] for o in out], dtype=np.int64).reshape(shape),
        median_error=np.array([o[1] for o in out], dtype=float).reshape(shape),
        cell_seconds=np.array([o[2] for o in out], dtype=float).reshape(shape),
        cell_cpu_seconds=np.array([o[3] for o in out], dtype=float).reshape(shape),
        elapsed=elapsed, backend="local" if client is None else "dask",
        operator=fam.name, n=code_size,
    )


_CellOut = tuple[int, float, float, float]


def _run_on_dask(client: Any, cells: list[Cell], bar: Progress) -> list[_CellOut]:
    """Submit one task per cell, gather in grid order (progress as tasks complete)."""
    from distributed import as_completed

    futures = [client.submit(run_cell, c, pure=False) for c in cells]
    if bar.enabled:
        for _ in as_completed(futures):
            bar.update()
    return list(client.gather(futures))


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


__all__ += ["ALGORITHMS"]
