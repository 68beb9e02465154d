"""Experiments: figure reproductions, coherence tables, phase transitions (local / Dask).

Modules: :mod:`.figure2` (``modelcs demo``, ``modelcs rip``), :mod:`.coherence_tables`
(``modelcs coherence``), :mod:`.phase` (``modelcs phase``), :mod:`.learned` (trained vs
random filters).
"""

from .phase import PhaseTransitionResult as PhaseTransitionResult
from .phase import phase_transition as phase_transition

__all__ = ["PhaseTransitionResult", "phase_transition"]
