"""modelcs: compressive sensing with multichannel convolutions as linear operators.

The public API is flat::

    from modelcs import ConvOperator, iht

Signals are ``(M, *D)`` or batches ``(B, M, *D)``, filters ``(K, M, *l)``; ``W @ x`` is a
CNN layer's linear part and ``Phi = W.T`` the measurement operator.  Every function that
takes an operator also takes a matrix (NumPy, SciPy sparse, SciPy/PyLops operators,
torch), see :func:`as_operator`.

Names are imported lazily (PEP 562): ``import modelcs`` loads only NumPy and this table;
each submodule is imported on first use of one of its names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it (one line per name)
_LAZY: dict[str, str] = {
    "UnsafeFileError": "_safeio",
    "InversionResult": "inversion",
    "invert_network": "inversion",
    "phase_transition": "experiments.phase",
    "PhaseTransitionResult": "experiments.phase",
    "crelu": "frames",
    "crelu_inverse": "frames",
    "crelu_pool": "frames",
    "frame_bounds": "frames",
    "pairing_cosines": "frames",
    "pairing_partners": "frames",
    "pinv_reconstruct": "frames",
    "PinvResult": "frames",
    "reconstruction_ratio": "frames",
    "singular_values": "frames",
    "theorem_a5_bound": "frames",
    "theorem_a5_terms": "frames",
    "theorem_c1_ratio": "frames",
    "BlockSparse": "models",
    "ModelSparse": "models",
    "TopKSparse": "models",
    "sample_model_sparse": "models",
    "ConvOperator": "operators.conv",
    "LinearOperator": "operators.base",
    "MaskedOperator": "operators.base",
    "dottest": "operators.base",
    "engine_policy": "operators.policy",
    "get_engine_policy": "operators.policy",
    "set_engine_policy": "operators.policy",
    "vstack": "operators.base",
    "MatrixOperator": "operators.matrix",
    "as_operator": "operators.matrix",
    "RecoveryResult": "recovery._common",
    "SupportRecoveryResult": "recovery.algorithm2",
    "l1_support_recovery": "recovery.algorithm2",
    "cosamp": "recovery.cosamp",
    "IHTDivergenceWarning": "recovery.iht",
    "iht": "recovery.iht",
    "cnn_layer": "recovery.layer",
    "cnn_layer_pooled": "recovery.layer",
    "LassoResult": "recovery.lasso",
    "LassoScaleWarning": "recovery.lasso",
    "debias": "recovery.lasso",
    "lasso": "recovery.lasso",
    "distant_preimage_point": "preimages",
    "is_omnidirectional": "preimages",
    "linearize": "preimages",
    "preimage_kind": "preimages",
    "preimage_point": "preimages",
    "coherence": "mutual_coherence",
    "coherence_pair": "mutual_coherence",
    "estimate_delta": "rip",
    "rip_ratios": "rip",
    "theorem31_condition": "theory",
    "theorem33_bound": "theory",
}
# old names kept as aliases of the new ones
_ALIASES: dict[str, str] = {"IHTResult": "RecoveryResult"}

__all__ = sorted([*_LAZY, *_ALIASES])


def __getattr__(name: str) -> Any:
    target = _ALIASES.get(name, name)
    mod = _LAZY.get(target)
    if mod is None:
        raise AttributeError(f"module 'modelcs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), target)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # static analysers see the real objects
    from ._safeio import UnsafeFileError as UnsafeFileError
    from .experiments.phase import PhaseTransitionResult as PhaseTransitionResult
    from .experiments.phase import phase_transition as phase_transition
    from .frames import PinvResult as PinvResult
    from .frames import crelu as crelu
    from .frames import crelu_inverse as crelu_inverse
    from .frames import crelu_pool as crelu_pool
    from .frames import frame_bounds as frame_bounds
    from .frames import pairing_cosines as pairing_cosines
    from .frames import pairing_partners as pairing_partners
    from .frames import pinv_reconstruct as pinv_reconstruct
    from .frames import reconstruction_ratio as reconstruction_ratio
    from .frames import singular_values as singular_values
    from .frames import theorem_a5_bound as theorem_a5_bound
    from .frames import theorem_a5_terms as theorem_a5_terms
    from .frames import theorem_c1_ratio as theorem_c1_ratio
    from .inversion import InversionResult as InversionResult
    from .inversion import invert_network as invert_network
    from .models import BlockSparse as BlockSparse
    from .models import ModelSparse as ModelSparse
    from .models import TopKSparse as TopKSparse
    from .models import sample_model_sparse as sample_model_sparse
    from .mutual_coherence import coherence as coherence
    from .mutual_coherence import coherence_pair as coherence_pair
    from .operators.base import LinearOperator as LinearOperator
    from .operators.base import MaskedOperator as MaskedOperator
    from .operators.base import dottest as dottest
    from .operators.base import vstack as vstack
    from .operators.conv import ConvOperator as ConvOperator
    from .operators.matrix import MatrixOperator as MatrixOperator
    from .operators.matrix import as_operator as as_operator
    from .operators.policy import engine_policy as engine_policy
    from .operators.policy import get_engine_policy as get_engine_policy
    from .operators.policy import set_engine_policy as set_engine_policy
    from .preimages import distant_preimage_point as distant_preimage_point
    from .preimages import is_omnidirectional as is_omnidirectional
    from .preimages import linearize as linearize
    from .preimages import preimage_kind as preimage_kind
    from .preimages import preimage_point as preimage_point
    from .recovery._common import RecoveryResult as IHTResult  # noqa: F401
    from .recovery._common import RecoveryResult as RecoveryResult
    from .recovery.algorithm2 import SupportRecoveryResult as SupportRecoveryResult
    from .recovery.algorithm2 import l1_support_recovery as l1_support_recovery
    from .recovery.cosamp import cosamp as cosamp
    from .recovery.iht import IHTDivergenceWarning as IHTDivergenceWarning
    from .recovery.iht import iht as iht
    from .recovery.lasso import LassoResult as LassoResult
    from .recovery.lasso import LassoScaleWarning as LassoScaleWarning
    from .recovery.lasso import debias as debias
    from .recovery.lasso import lasso as lasso
    from .recovery.layer import cnn_layer as cnn_layer
    from .recovery.layer import cnn_layer_pooled as cnn_layer_pooled
    from .rip import estimate_delta as estimate_delta
    from .rip import rip_ratios as rip_ratios
    from .theory import theorem31_condition as theorem31_condition
    from .theory import theorem33_bound as theorem33_bound
