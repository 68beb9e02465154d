"""Linear operators: the protocol (:mod:`.base`) and the convolution (:mod:`.conv`)."""

from .base import LinearOperator, dottest, vstack
from .conv import ConvOperator

__all__ = ["LinearOperator", "ConvOperator", "vstack", "dottest"]
