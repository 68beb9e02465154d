"""Frames, CReLU and pseudoinverse reconstruction.

Shang, Sohn, Almeida and Lee, *Understanding and Improving Convolutional Neural Networks
via Concatenated Rectified Linear Units* (ICML 2016), Sec. 2-3 and the supplement
(Algorithms 1-2, Theorem A.5, Theorem C.1).

Submodules: :mod:`.crelu` (CReLU, pooled CReLU with switches),
:mod:`.spectrum` (singular values, frame bounds), :mod:`.pinv` (Algorithms 1-2),
:mod:`.theory` (Theorem A.5 bound, Theorem C.1, pairing statistics).
"""

from .crelu import PooledCReLU, crelu, crelu_inverse, crelu_pool
from .pinv import PinvResult, pinv_reconstruct, reconstruction_ratio
from .spectrum import frame_bounds, singular_values
from .theory import (
    pairing_cosines,
    pairing_partners,
    theorem_a5_bound,
    theorem_a5_terms,
    theorem_c1_ratio,
)

__all__ = [
    "PinvResult",
    "PooledCReLU",
    "crelu",
    "crelu_inverse",
    "crelu_pool",
    "frame_bounds",
    "pairing_cosines",
    "pairing_partners",
    "pinv_reconstruct",
    "reconstruction_ratio",
    "singular_values",
    "theorem_a5_bound",
    "theorem_a5_terms",
    "theorem_c1_ratio",
]
