"""Linear operators: the protocol (:mod:`.base`) and the convolution (:mod:`.conv`)."""

from .base import LinearOperator, dottest, vstack
from .conv import ConvOperator
from .policy import engine_policy, get_engine_policy, set_engine_policy

__all__ = [
    "LinearOperator", "ConvOperator", "vstack", "dottest", "engine_policy", "get_engine_policy",
    "set_engine_policy",
]
