"""modelcs: compressive sensing with multichannel convolutions as linear operators.

The public API is flat::

    from modelcs import ConvOperator, iht

Conventions: signals ``(M, *D)`` or ``(B, M, *D)``, filters ``(K, M, *l)``,
``W @ x`` is a CNN layer's linear part, ``Phi = W.T`` is the measurement operator.
"""

# Each line re-exports one public name ("X as X" marks it public for ruff and mypy).
from ._safeio import UnsafeFileError as UnsafeFileError
from .experiments.phase import phase_transition as phase_transition
from .frames import crelu as crelu
from .frames import crelu_inverse as crelu_inverse
from .frames import crelu_pool as crelu_pool
from .frames import frame_bounds as frame_bounds
from .frames import pairing_cosines as pairing_cosines
from .frames import pinv_reconstruct as pinv_reconstruct
from .frames import reconstruction_ratio as reconstruction_ratio
from .frames import singular_values as singular_values
from .frames import theorem_a5_bound as theorem_a5_bound
from .frames import theorem_c1_ratio as theorem_c1_ratio
from .inversion import InversionResult as InversionResult
from .inversion import invert_network as invert_network
from .models import BlockSparse as BlockSparse
from .models import ModelSparse as ModelSparse
from .models import TopKSparse as TopKSparse
from .models import sample_model_sparse as sample_model_sparse
from .mutual_coherence import coherence as coherence
from .operators import ConvOperator as ConvOperator
from .operators import LinearOperator as LinearOperator
from .operators import dottest as dottest
from .operators import vstack as vstack
from .recovery.algorithm2 import SupportRecoveryResult as SupportRecoveryResult
from .recovery.algorithm2 import l1_support_recovery as l1_support_recovery
from .recovery.cosamp import cosamp as cosamp
from .recovery.iht import IHTDivergenceWarning as IHTDivergenceWarning
from .recovery.iht import IHTResult as IHTResult
from .recovery.iht import cnn_layer as cnn_layer
from .recovery.iht import iht as iht
from .recovery.lasso import LassoResult as LassoResult
from .recovery.lasso import lasso as lasso
from .relu import distant_preimage_point as distant_preimage_point
from .relu import is_omnidirectional as is_omnidirectional
from .relu import linearize as linearize
from .relu import preimage_kind as preimage_kind
from .relu import preimage_point as preimage_point
from .rip import estimate_delta as estimate_delta
from .rip import rip_ratios as rip_ratios
from .theory import theorem31_condition as theorem31_condition
from .theory import theorem33_bound as theorem33_bound

# -- end of public imports --

__version__ = "0.1.0"
