"""modelcs: compressive sensing with multichannel convolutions as linear operators.

The public API is flat::

    from modelcs import ConvOperator, iht

See ``DESIGN.md`` conventions: signals ``(M, *D)`` or ``(B, M, *D)``, filters ``(K, M, *l)``,
``W @ x`` is a CNN layer's linear part, ``Phi = W.T`` is the measurement operator.
"""

from .operators import ConvOperator, LinearOperator, dottest, vstack

__version__ = "0.1.0"

__all__ = ["ConvOperator", "LinearOperator", "dottest", "vstack", "__version__"]
