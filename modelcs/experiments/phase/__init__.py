"""Phase-transition sweeps (sparsity ``k`` x measurements), locally or on Dask.

One module per job:

* :mod:`.problems`   -- data generation: operator families (conv, Gaussian, user
  factories), random codes, the seeding scheme;
* :mod:`.algorithms` -- the registry of recovery algorithms (and user callables);
* :mod:`.sweep`      -- :func:`phase_transition`: cells, batched recovery, Dask;
* :mod:`.result`     -- :class:`PhaseTransitionResult` and its JSON form;
* :mod:`.plot`       -- heat maps and 50% transition curves;
* :mod:`.cli`        -- the ``modelcs phase`` command.
"""

from .algorithms import ALGORITHMS, REGISTRY
from .cli import int_list, register, shape_arg, summary
from .problems import OPERATORS, OperatorFamily, draw_problem
from .result import PhaseTransitionResult
from .sweep import DEFAULT_ALGORITHMS, DEFAULT_GRID, local_cluster, phase_transition

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "DEFAULT_GRID",
    "OPERATORS",
    "REGISTRY",
    "OperatorFamily",
    "PhaseTransitionResult",
    "draw_problem",
    "int_list",
    "local_cluster",
    "phase_transition",
    "register",
    "shape_arg",
    "summary",
]
