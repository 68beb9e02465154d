"""Data generation of the phase-transition sweep: operator families and random codes.

The randomness of a grid cell depends only on ``(root, m, k)``: the operator of a row
(``m`` = input channels for ``"conv"``, measurements for the others) comes from
``numpy.random.SeedSequence(root, spawn_key=(m, 0))`` and is shared by every ``k`` of the
row; the codes of a cell from ``SeedSequence(root, spawn_key=(m, k))``.  So numbers do not
depend on the order in which cells run, on where they run, or on the rest of the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...models import ModelSparse, SparsityModel, TopKSparse
from ...operators.base import LinearOperator
from ...operators.conv import ConvOperator
from ...operators.matrix import MatrixOperator, as_operator

__all__ = ["OPERATORS", "OperatorFamily", "draw_problem", "filter_seed", "code_seed"]

#: Built-in operator families of :func:`~modelcs.phase_transition`.
OPERATORS: tuple[str, ...] = ("conv", "gaussian")


def filter_seed(root: int, m: int) -> np.random.SeedSequence:
    """SeedSequence of the operator of row ``m`` (shared by every ``k`` of the row)."""
    return np.random.SeedSequence(root, spawn_key=(m, 0))


def code_seed(root: int, m: int, k: int) -> np.random.SeedSequence:
    """SeedSequence of the codes of grid cell ``(m, k)``, ``k >= 1``."""
    return np.random.SeedSequence(root, spawn_key=(m, k))


@dataclass(frozen=True)
class OperatorFamily:
    """A family of random measurement operators ``Phi`` indexed by the row parameter ``m``.

    ``name`` is ``"conv"`` (``Phi = W.T`` for Gaussian filters, ``m`` input channels;
    Theorem 3.1 of Gilbert et al., "Towards understanding the invertibility of
    convolutional neural networks"), ``"gaussian"`` (i.i.d. ``N(0, 1/m)`` ``m x n``
    matrices: the classic Donoho-Tanner setting) or the name of a user ``factory(m, rng)``
    returning anything :func:`~modelcs.as_operator` accepts.  Small and picklable: Dask
    workers rebuild the operator from it.
    """

    name: str
    K: int | None = None
    l: tuple[int, ...] | None = None
    D: tuple[int, ...] | None = None
    n: int | None = None
    factory: Callable[[int, np.random.Generator], Any] | None = None

    def operator(self, m: int, root: int) -> LinearOperator:
        """The measurement operator ``Phi`` (codes -> measurements) of row ``m``."""
        rng = np.random.default_rng(filter_seed(root, m))
        if self.name == "conv" and self.factory is None:
            assert self.K is not None and self.l is not None and self.D is not None
            return ConvOperator.random(self.K, m, self.l, self.D, rng=rng).T
        if self.name == "gaussian" and self.factory is None:
            assert self.n is not None
            return MatrixOperator(rng.standard_normal((m, self.n)) / math.sqrt(m))
        assert self.factory is not None
        return as_operator(self.factory(m, rng), "operator")

    def model(self, k: int, Phi: LinearOperator) -> SparsityModel:
        """The sparsity model of the codes: model-k-sparse for conv codes, k-sparse else."""
        if self.name == "conv" and self.factory is None:
            return ModelSparse(k, ndim=len(Phi.in_shape) - 1)
        return TopKSparse(k)

    def codes(self, Phi: LinearOperator, m: int, k: int, trials: int, root: int) -> np.ndarray:
        """``trials`` random codes of cell ``(m, k)`` (values uniform on ``[-1, 1]``)."""
        rng = np.random.default_rng(code_seed(root, m, k))
        return self.model(k, Phi).sample(Phi.in_shape, trials, rng=rng)


def draw_problem(
    K: int,
    l: tuple[int, ...],
    D: tuple[int, ...],
    M: int,
    k: int,
    trials: int,
    rng: int,
) -> tuple[ConvOperator, np.ndarray]:
    """Random filters ``W`` and ``trials`` model-``k``-sparse codes of conv grid cell ``(M, k)``.

    Filters: i.i.d. ``N(0, 1/(M prod(l)))`` (Theorem 3.1).  Codes: ``k`` distinct blocks
    (filters) chosen uniformly, one uniformly placed nonzero in each, value uniform on
    ``[-1, 1]`` (the paper's Fig. 2 setting).  ``rng`` is the sweep's root seed (an int).

    Examples
    --------
    >>> W, Z = draw_problem(6, (3,), (10,), 2, 2, 4, rng=0)
    >>> Z.shape, W.in_shape
    ((4, 6, 8), (2, 10))
    >>> int(np.count_nonzero(Z, axis=2).max()), int(np.count_nonzero(Z[0]))
    (1, 2)
    """
    fam = OperatorFamily("conv", K=K, l=tuple(l), D=tuple(D))
    Phi = fam.operator(M, rng)
    W = Phi.T
    assert isinstance(W, ConvOperator)
    return W, fam.codes(Phi, M, k, trials, rng)
