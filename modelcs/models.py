"""Sparsity models and their projections ``M(z, k)``.

Gilbert, Zhang, Lee, Zhang and Lee, *Towards Understanding the Invertibility of
Convolutional Neural Networks*, Sec. 2.3.

A *code* ``z`` has shape ``(K, *n)`` (one response map of shape ``n`` per filter, the
output of ``W @ x``) or a batch ``(B, K, *n)``.  Three models are provided, all with the
same interface (``project``, ``support``, ``sample``, ``n_units``, ``with_k``):

:class:`ModelSparse`
    The paper's model-k-sparse codes ``M_k``: at most one nonzero per *unit* and at
    most ``k`` nonzeros in total.  A unit is a whole filter block (``pool=None``: all
    ``n`` shifts of one filter, §2.3) or a pooling region of a filter's response map
    (``pool=p``, eq. (2)-(3), §4.4).  ``project`` is the exact l2-nearest point of the
    union of subspaces (for ``switches="known"``).
:class:`TopKSparse`
    Plain k-sparse codes (k largest entries anywhere): the classic IHT baseline.
:class:`BlockSparse`
    Whole-block sparsity: at most ``k`` filter blocks are active, every entry of an
    active block may be nonzero (projection keeps the ``k`` blocks of largest l2 norm).

Decisions where the paper is silent
-----------------------------------
* **k counts nonzeros, also with pooling.**  Eq. (2) is
  ``block-sparsify(upsample(max-pool(z), s), k)``: after pooling and unpooling each
  region of each filter holds at most one nonzero, and block-sparsification keeps the
  ``k`` largest of these, across all regions of all filters.  So with ``pool`` the
  model is "at most one nonzero per pooling region per filter, at most ``k`` nonzeros
  in total" and ``k`` may be as large as ``K * (number of regions)``.  This matches
  §4.4, where the sparsity ``k`` is taken from VGG activations (nonzeros per layer).
* **Partial edge regions are allowed.**  Regions tile each response map from index 0
  (like ``torch.nn.functional.max_pool2d(..., ceil_mode=True)``); when ``n`` is not a
  multiple of the pooling size the last region along that axis is smaller.  This is the
  case in §4.4 itself (15 x 15 maps, 2 x 2 pooling).  A pooling size larger than the
  map is rejected.
* **Ties are broken towards the lowest index**: inside a unit the first maximal entry
  (C order of the unit's entries) is kept; across units, among equal keys the unit with
  the lowest index (filter-major, then region in C order) is kept.
* ``switches="fixed"`` (``M_fixed``, "naive unpooling") puts the kept value (the signed
  value of the unit's maximal entry) at the **first position of its unit**: the
  top-left corner of the pooling region, or shift 0 of the filter block when
  ``pool=None``.  It is not a nearest-point projection.
* ``by="value"`` ranks entries by their signed value (max pooling as in ReLU networks)
  instead of by magnitude; negative maxima are kept like any other maximum (apply a
  ReLU first if you want non-negative codes).  For non-negative codes both rankings
  coincide with ``by="abs"`` and the projection is the nearest point.
* Which axes are batch / filter / spatial: ``z.ndim == 2`` is one 1-D code ``(K, n)``,
  ``z.ndim == 4`` a batch of 2-D codes ``(B, K, n1, n2)``.  A 3-D array is ambiguous
  (``(K, n1, n2)`` or ``(B, K, n)``): the model then needs ``ndim=`` (number of spatial
  axes) at construction, a pooling tuple (its length), or ``project(z, batched=...)``;
  otherwise a ``ValueError`` explains this.  Any number of spatial axes >= 1 works.

All projections are vectorised (``argmax``/``partition``/``take_along_axis``; no Python
loop over codes, filters or regions) and run on NumPy or CuPy arrays alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._backend import get_array_module, unravel_index
from ._memory import check_elements
from ._validation import (
    as_int_tuple,
    check_choice,
    check_finite,
    check_nonnegative_int,
    check_positive_int,
    check_rng,
)

__all__ = ["ModelSparse", "TopKSparse", "BlockSparse", "SparsityModel", "sample_model_sparse"]


# --------------------------------------------------------------------------- helpers
def topk_mask(keys: Any, k: int) -> Any:
    """Boolean mask of the ``k`` largest entries of each row of 2-D ``keys``.

    Exactly ``k`` entries per row are selected; among equal keys the lowest column index
    wins.  Cost: one ``partition`` and one ``cumsum`` per row (``O(U)``), no sort.

    >>> topk_mask(np.array([[1.0, 3.0, 3.0, 2.0]]), 2)
    array([[False,  True,  True, False]])
    >>> topk_mask(np.array([[1.0, 1.0, 1.0]]), 2)
    array([[ True,  True, False]])
    """
    xp = get_array_module(keys)
    n_rows, n_cols = keys.shape
    if k <= 0:
        return xp.zeros(keys.shape, dtype=bool)
    if k >= n_cols:
        return xp.ones(keys.shape, dtype=bool)
    thresh = xp.partition(keys, n_cols - k, axis=1)[:, n_cols - k : n_cols - k + 1]
    greater = keys > thresh
    equal = keys == thresh
    need = k - greater.sum(axis=1, keepdims=True)
    if bool((equal.sum(axis=1, keepdims=True) == need).all()):  # no tie at the threshold
        return greater | equal
    return greater | (equal & (xp.cumsum(equal, axis=1) <= need))


def _split_batch(
    z: Any, ndim: int | None, batched: bool | None, name: str = "z", min_axes: int = 2
) -> bool:
    """Decide whether ``z`` carries a leading batch axis; raise on impossible shapes."""
    if not hasattr(z, "ndim"):
        raise TypeError(f"parameter '{name}' must be an array; got {type(z).__name__}")
    if batched is not None:
        if ndim is None and min_axes == 1:
            if z.ndim < (2 if batched else 1):
                raise ValueError(
                    f"parameter '{name}' has shape {tuple(z.shape)}; with batched={batched} "
                    f"expected at least {2 if batched else 1} axes"
                )
            return bool(batched)
        need = (3 if batched else 2) if ndim is None else ndim + (2 if batched else 1)
        if z.ndim != need and not (ndim is None and z.ndim >= need):
            raise ValueError(
                f"parameter '{name}' has shape {tuple(z.shape)} (ndim {z.ndim}); with "
                f"batched={batched} and {ndim} spatial axes expected ndim {need}"
            )
        return bool(batched)
    if ndim is not None:
        if z.ndim == ndim + 1:
            return False
        if z.ndim == ndim + 2:
            return True
        raise ValueError(
            f"parameter '{name}' has shape {tuple(z.shape)} (ndim {z.ndim}); expected a code "
            f"(K, *n) with {ndim} spatial axes (ndim {ndim + 1}) or a batch (ndim {ndim + 2})"
        )
    if z.ndim == 2 or (z.ndim == 1 and min_axes == 1):
        return False  # one code (K, n); a flat code (n,) for models that allow it
    if z.ndim == 4:
        return True
    if z.ndim == 3:
        raise ValueError(
            f"parameter '{name}' has shape {tuple(z.shape)}: ambiguous between one 2-D code "
            "(K, n1, n2) and a batch of 1-D codes (B, K, n); construct the model with ndim=1 "
            "or ndim=2, or call project(z, batched=True/False)"
        )
    raise ValueError(
        f"parameter '{name}' has shape {tuple(z.shape)} (ndim {z.ndim}); expected a code "
        "(K, n) / (K, n1, n2) or a batch (B, K, n) / (B, K, n1, n2)"
    )


class SparsityModel:
    """Common interface of the sparsity models (see the module docstring).

    Subclasses implement :meth:`_project_batch` on ``(B, K, *n)`` arrays and
    :meth:`_units` (the number of selectable units for a code shape).
    """

    k: int  # ModelSparse also allows None (one nonzero per unit)
    ndim: int | None
    _min_axes = 2  # codes need (K, *n); models that accept flat codes (n,) set 1

    # ----------------------------------------------------------------- public API
    def check_code_shape(self, code_shape: Any) -> tuple[int, ...]:
        """Validate a code shape for this model (axes, ``k`` vs units); return it as a tuple.

        Solvers call this once before iterating with :meth:`project_batch`.

        >>> TopKSparse(3).check_code_shape((200,))
        (200,)
        """
        shape = self._check_code_shape(code_shape)
        self._check_k(self._units(shape), shape)
        return shape

    def project_batch(self, zb: Any) -> Any:
        """``M(z, k)`` of a batch ``(B, *code_shape)``, with no checks (the solvers' fast path).

        ``zb`` must be finite, real and have a leading batch axis, with ``code_shape``
        accepted by :meth:`check_code_shape`; use :meth:`project` for checked input.

        >>> TopKSparse(1).project_batch(np.array([[1.0, -3.0], [2.0, 0.5]]))
        array([[ 0., -3.],
               [ 2.,  0.]])
        """
        return self._project_batch(zb)

    def support_sum(self, zb: Any, c: int) -> Any:
        """Support of the best approximation of each ``zb[i]`` by a sum of ``c`` model points.

        The model ``M_k^c`` of Baraniuk, Cevher, Duarte & Hegde, "Model-based compressive
        sensing" (2010), Sec. 4 (used with ``c = 2`` by model-based CoSaMP).  ``zb`` is a
        batch as for :meth:`project_batch`; returns a boolean array of its shape.

        >>> TopKSparse(1).support_sum(np.array([[1.0, -3.0, 0.5]]), 2)
        array([[ True,  True, False]])
        """
        return self._support_sum(zb, c)

    def project(self, z: Any, *, batched: bool | None = None) -> Any:
        """The model's projection ``M(z, k)`` of a code or batch of codes.

        Parameters
        ----------
        z : array, shape ``(K, *n)`` or ``(B, K, *n)``
            Finite real codes (NumPy or CuPy).
        batched : bool, optional
            Whether axis 0 is a batch axis; only needed for 3-D ``z`` when the model
            does not know its number of spatial axes.

        Returns
        -------
        array of the same shape and dtype as ``z``.
        """
        zb, was_batched = self._prepare(z, batched)
        out = self._project_batch(zb)
        return out if was_batched else out[0]

    def support(self, z: Any, *, batched: bool | None = None) -> Any:
        """Boolean mask of the nonzeros of ``project(z)`` (same shape as ``z``)."""
        return self.project(z, batched=batched) != 0

    def n_units(self, code_shape: Any) -> int:
        """Number of selectable units (blocks, regions or entries) of one code."""
        shape = self._check_code_shape(code_shape)
        return self._units(shape)

    def with_k(self, k: int) -> SparsityModel:
        """A copy of this model with sparsity ``k``."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.k = check_nonnegative_int("k", k)
        return new

    def sample(
        self,
        code_shape: Any,
        n: int | None = None,
        *,
        rng: Any = None,
        low: float = -1.0,
        high: float = 1.0,
        dtype: Any = np.float64,
    ) -> np.ndarray:
        """Random codes of the model, drawn in one vectorised batch (NumPy, CPU RNG).

        The support is uniform among the model's supports with exactly ``k`` nonzeros
        (``k`` distinct units uniformly at random, then a uniform position inside each
        unit); nonzero values are i.i.d. uniform on ``[low, high]`` (the §4.1/§4.4
        setting is ``[-1, 1]``).

        Parameters
        ----------
        code_shape : tuple ``(K, *n)``
            Shape of one code (``W.out_shape``).
        n : int, optional
            Number of codes; ``None`` returns a single code of shape ``code_shape``.
        rng : None, int, SeedSequence or numpy Generator
            Randomness (SciPy SPEC 7; ``None``: fresh OS entropy).
        low, high : float
            Range of the nonzero values.
        dtype : float dtype of the result (float32 or float64; integer or boolean dtypes
            are refused: they would truncate the uniform values).

        Returns
        -------
        numpy.ndarray of shape ``(n, *code_shape)`` (or ``code_shape``).
        """
        shape = self._check_code_shape(code_shape)
        if n is not None:
            n_codes = check_positive_int("n", n)
        else:
            n_codes = 1
        if not (np.isfinite(low) and np.isfinite(high) and low <= high):
            raise ValueError(
                f"parameters 'low', 'high' must be finite with low <= high; got {low!r}, {high!r}"
            )
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"parameter 'dtype' must be a float dtype; got {dtype!r}") from None
        if dt.kind != "f":
            raise TypeError(
                f"parameter 'dtype' must be a floating dtype (float32 or float64); got {dt}: "
                "integer or boolean codes would truncate the uniform nonzero values"
            )
        n_u = self._units(shape)
        self._check_k(n_u, shape)
        check_elements(f"sample: n={n_codes} codes of shape {shape}", n_codes * math.prod(shape), dt, copies=2)  # noqa: E501
        gen = check_rng(rng)
        out = self._sample_batch(shape, n_codes, gen, float(low), float(high), dt)
        return out if n is not None else out[0]

    # ------------------------------------------------------------------ internals
    def _check_code_shape(self, code_shape: Any) -> tuple[int, ...]:
        if isinstance(code_shape, int) or not hasattr(code_shape, "__len__"):
            raise TypeError(f"parameter 'code_shape' must be a tuple (K, *n); got {code_shape!r}")
        shape = tuple(code_shape)
        if len(shape) < self._min_axes or (
            self.ndim is not None and len(shape) != self.ndim + 1
        ):
            want = "(K, *n)" if self.ndim is None else (
                f"(K, *n) with {self.ndim} spatial axes (the model has ndim={self.ndim})"
            )
            if self._min_axes == 1 and self.ndim is None:
                want = "a flat code (n,) or (K, *n)"
            elif self._min_axes == 2 and len(shape) == 1:
                want += (
                    f" ({type(self).__name__} needs codes with a block axis; for a flat code "
                    "use TopKSparse, BlockSparse(k, block_size=...), or give the operator "
                    "in_shape=(K, n))"
                )
            raise ValueError(f"parameter 'code_shape' must be {want}; got {shape!r}")
        for s in shape:
            check_positive_int("code_shape entry", s)
        return tuple(int(s) for s in shape)

    def _prepare(self, z: Any, batched: bool | None) -> tuple[Any, bool]:
        if batched is not None and not isinstance(batched, bool):
            raise TypeError(f"parameter 'batched' must be None or a bool; got {batched!r}")
        was_batched = _split_batch(z, self.ndim, batched, min_axes=self._min_axes)
        if z.dtype.kind not in "fiu":
            raise TypeError(f"parameter 'z' must be a real numeric array; got dtype {z.dtype}")
        check_finite("z", z)
        zb = z if was_batched else z[None]
        if zb.shape[0] == 0 or any(s == 0 for s in zb.shape[1:]):
            raise ValueError(f"parameter 'z' has an empty axis: shape {tuple(z.shape)}")
        self._check_k(self._units(tuple(zb.shape[1:])), tuple(zb.shape[1:]))
        return zb, was_batched

    def _check_k(self, n_units: int, shape: tuple[int, ...]) -> None:
        if self.k is not None and self.k > n_units:
            raise ValueError(
                f"parameter 'k' = {self.k} exceeds the number of {self._unit_name} "
                f"({n_units}) of a code of shape {shape}"
            )

    _unit_name = "units"

    def _units(self, shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def _project_batch(self, zb: Any) -> Any:
        raise NotImplementedError

    def _support_sum(self, zb: Any, c: int) -> Any:
        """Support of the best approximation of ``zb`` by a sum of ``c`` model points.

        ``M_k^c`` of Baraniuk et al. (2010), used by model-based CoSaMP (``c = 2``).
        """
        raise NotImplementedError

    def _sample_batch(
        self,
        shape: tuple[int, ...],
        n: int,
        rng: np.random.Generator,
        low: float,
        high: float,
        dtype: np.dtype,
    ) -> np.ndarray:
        raise NotImplementedError


def _random_subsets(rng: np.random.Generator, n: int, n_units: int, k: int) -> np.ndarray:
    """``(n, k)`` int array; row i is a uniform random k-subset of ``range(n_units)``.

    Vectorised over rows: Floyd's algorithm (loop over ``k``) when ``k`` is small,
    otherwise the ``k`` smallest of i.i.d. uniform keys (in chunks of rows).
    """
    if k == 0:
        return np.zeros((n, 0), dtype=np.int64)
    if k * k <= 4 * n_units:
        sel = np.empty((n, k), dtype=np.int64)
        for i, j in enumerate(range(n_units - k, n_units)):
            t = rng.integers(0, j + 1, size=n)
            dup = (sel[:, :i] == t[:, None]).any(axis=1)
            sel[:, i] = np.where(dup, j, t)
        return sel
    out = np.empty((n, k), dtype=np.int64)
    chunk = max(1, (1 << 22) // n_units)
    for s in range(0, n, chunk):
        keys = rng.random((min(chunk, n - s), n_units), dtype=np.float32)
        out[s : s + chunk] = np.argpartition(keys, k - 1, axis=1)[:, :k]
    return out


# --------------------------------------------------------------------------- models
class ModelSparse(SparsityModel):
    """Model-k-sparse codes of the invertibility paper (§2.3, eq. (2)-(3)).

    At most one nonzero per unit and at most ``k`` nonzeros in total, where a unit is
    one filter's whole block of shifts (``pool=None``) or one pooling region of one
    filter's response map (``pool=p``).  See the module docstring for the decisions
    (``k`` counts nonzeros, partial edge regions, ties, fixed switch position).

    Parameters
    ----------
    k : int >= 0 or None
        Number of nonzeros kept; ``None``: one per unit (every pooling region keeps its
        maximum, as a max-pooling layer does).
    pool : None, int or tuple of int
        Pooling region size (an int applies to every spatial axis).
    switches : {"known", "fixed"}
        ``"known"``: the kept value stays where it was (max-pool switches of the input,
        ``M_known`` of eq. (3)); the projection is the exact l2-nearest model point.
        ``"fixed"``: it moves to the first position of its unit (``M_fixed``).
    by : {"abs", "value"}
        Rank by magnitude (the theory) or by signed value (max pooling in ReLU nets).
    ndim : int, optional
        Number of spatial axes of a code; needed only to read 3-D arrays unambiguously
        (a tuple ``pool`` fixes it too).

    Examples
    --------
    >>> z = np.array([[0.1, -3.0, 0.2], [1.0, 0.0, 2.0], [0.5, 0.4, 0.0]])
    >>> ModelSparse(2).project(z)          # K=3 blocks of n=3 shifts
    array([[ 0., -3.,  0.],
           [ 0.,  0.,  2.],
           [ 0.,  0.,  0.]])
    >>> ModelSparse(2, by="value").project(z)
    array([[0. , 0. , 0. ],
           [0. , 0. , 2. ],
           [0.5, 0. , 0. ]])
    >>> ModelSparse(2, pool=2).project(np.array([[1.0, -4.0, 3.0, 0.0, 2.0]]))
    array([[ 0., -4.,  3.,  0.,  0.]])
    """

    def __init__(
        self,
        k: int | None,
        *,
        pool: Any = None,
        switches: str = "known",
        by: str = "abs",
        ndim: int | None = None,
    ):
        # None: one nonzero per unit (typed int for the other models' arithmetic)
        self.k = None if k is None else check_nonnegative_int("k", k)  # type: ignore[assignment]
        self.switches = check_choice("switches", switches, ("known", "fixed"))
        self.by = check_choice("by", by, ("abs", "value"))
        if ndim is not None:
            ndim = check_positive_int("ndim", ndim)
        self.pool: int | tuple[int, ...] | None
        if pool is None:
            self.pool = None
        elif isinstance(pool, (tuple, list)):
            if len(pool) == 0:
                raise ValueError("parameter 'pool' must not be an empty tuple")
            self.pool = as_int_tuple("pool", tuple(pool), len(pool))
            if ndim is not None and ndim != len(self.pool):
                raise ValueError(
                    f"parameter 'pool' = {self.pool} has {len(self.pool)} entries but ndim = {ndim}"
                )
            ndim = len(self.pool)
        else:
            self.pool = as_int_tuple("pool", pool, 1)[0]
        self.ndim = ndim

    def __repr__(self) -> str:
        return (
            f"ModelSparse(k={self.k}, pool={self.pool!r}, switches={self.switches!r}, "
            f"by={self.by!r}, ndim={self.ndim!r})"
        )

    @property
    def _unit_name(self) -> str:  # type: ignore[override]
        return "blocks (filters)" if self.pool is None else "pooling regions (all filters)"

    def _pool_for(self, spatial: tuple[int, ...]) -> tuple[int, ...] | None:
        if self.pool is None:
            return None
        p = (self.pool,) * len(spatial) if isinstance(self.pool, int) else self.pool
        if len(p) != len(spatial):
            raise ValueError(
                f"parameter 'pool' = {self.pool} has {len(p)} entries but the code has "
                f"{len(spatial)} spatial axes (response map shape {spatial})"
            )
        if any(pi > ni for pi, ni in zip(p, spatial, strict=True)):
            raise ValueError(
                f"parameter 'pool' = {p} does not fit the response map of shape {spatial}: "
                "each pooling size must be <= the map size (partial edge regions are "
                "allowed, regions larger than the map are not)"
            )
        return p

    def _units(self, shape: tuple[int, ...]) -> int:
        K, spatial = shape[0], shape[1:]
        p = self._pool_for(spatial)
        if p is None:
            return K
        return K * math.prod(-(-ni // pi) for ni, pi in zip(spatial, p, strict=True))

    def _regions(self, zb: Any) -> tuple[Any, Any]:
        """Per-unit view: (values ``(B, K, U, P)``, flat position index ``(U, P)`` or None).

        Positions of padding entries (partial edge regions) are marked with -1.
        """
        xp = get_array_module(zb)
        B, K = zb.shape[:2]
        spatial = tuple(zb.shape[2:])
        p = self._pool_for(spatial)
        if p is None:
            return zb.reshape(B, K, 1, -1), None
        d = len(spatial)
        r = tuple(-(-ni // pi) for ni, pi in zip(spatial, p, strict=True))
        padded = tuple(ri * pi for ri, pi in zip(r, p, strict=True))
        if padded != spatial:
            fill = -np.inf if self.by == "value" else 0.0
            # padding never wins: by="value" pads with -inf; by="abs" selects on |z| >= 0
            # and a tie with a real 0 goes to the lower (real) index, see _project_batch.
            zp = xp.full((B, K, *padded), fill, dtype=zb.dtype if zb.dtype.kind == "f" else float)
            zp[(slice(None), slice(None), *(slice(0, ni) for ni in spatial))] = zb
        else:
            zp = zb
        split = [B, K]
        for ri, pi in zip(r, p, strict=True):
            split += [ri, pi]
        perm = [0, 1, *range(2, 2 + 2 * d, 2), *range(3, 3 + 2 * d, 2)]
        vals = zp.reshape(split).transpose(perm).reshape(B, K, math.prod(r), math.prod(p))
        # flat index (into the unpadded map) of every (region, in-region) position
        grids = np.indices(r + p).reshape(2 * d, -1)
        coord = [grids[i] * p[i] + grids[d + i] for i in range(d)]
        inside = np.ones(coord[0].shape, dtype=bool)
        for i in range(d):
            inside &= coord[i] < spatial[i]
        flat = np.ravel_multi_index(
            [np.minimum(c, ni - 1) for c, ni in zip(coord, spatial, strict=True)], spatial
        )
        flat = np.where(inside, flat, -1).reshape(math.prod(r), math.prod(p))
        return vals, xp.asarray(flat)

    def _unit_max(self, zb: Any) -> tuple[Any, Any, Any]:
        """Per unit: (kept key, kept value, flat position in the map), each ``(B, K, U)``.

        Whole blocks: one ``argmax`` over the block.  Pooling regions: a running maximum
        over the ``prod(pool)`` strided views ``z[..., o1::p1, o2::p2]`` (in C order of the
        in-region offset ``o``, strict ``>`` so the lowest offset wins ties), each copied
        to contiguous memory once; partial edge regions are padded with entries that
        never win.
        """
        xp = get_array_module(zb)
        B, K = zb.shape[:2]
        spatial = tuple(zb.shape[2:])
        p = self._pool_for(spatial)
        if p is None:
            flat = zb.reshape(B, K, -1)
            keys = xp.abs(flat) if self.by == "abs" else flat
            arg = xp.argmax(keys, axis=2)[..., None]  # first maximum = lowest index
            kkey = xp.take_along_axis(keys, arg, axis=2)[..., 0]
            kval = xp.take_along_axis(flat, arg, axis=2)[..., 0]
            return kkey[..., None], kval[..., None], arg
        d = len(spatial)
        r = tuple(-(-ni // pi) for ni, pi in zip(spatial, p, strict=True))
        padded = tuple(ri * pi for ri, pi in zip(r, p, strict=True))
        if padded != spatial:
            # padding never wins: it is 0 for by="abs" (the real top-left entry of every
            # region initialises the maximum with a key >= 0 and only a strictly larger
            # key replaces it) and -inf for by="value"
            fill = -np.inf if self.by == "value" else 0.0
            pdt = zb.dtype if zb.dtype.kind == "f" else np.dtype(np.float64)
            zp = xp.full((B, K, *padded), fill, dtype=pdt)
            zp[(slice(None), slice(None), *(slice(0, ni) for ni in spatial))] = zb
        else:
            zp = zb
        best_key: Any = None
        best_val: Any = None
        best_arg: Any = None
        for j, offs in enumerate(np.ndindex(*p)):
            steps = (slice(o, None, pi) for o, pi in zip(offs, p, strict=True))
            view = xp.ascontiguousarray(zp[(slice(None), slice(None), *steps)])
            key = xp.abs(view) if self.by == "abs" else view
            if j == 0:
                best_key, best_val = key, view
                best_arg = xp.zeros(view.shape, dtype=np.int32)
                continue
            upd = key > best_key
            best_key = xp.maximum(best_key, key)
            best_val = xp.where(upd, view, best_val)
            best_arg = xp.where(upd, np.int32(j), best_arg)
        # flat position: top-left corner of the region + in-region offset
        strides = [math.prod(spatial[i + 1 :]) for i in range(d)]
        corner = sum(
            np.arange(ri).reshape((-1,) + (1,) * (d - 1 - i)) * pi * st
            for i, (ri, pi, st) in enumerate(zip(r, p, strides, strict=True))
        )
        delta = np.array(
            [sum(o * st for o, st in zip(offs, strides, strict=True)) for offs in np.ndindex(*p)]
        )
        if self.switches == "fixed":
            pos = xp.broadcast_to(xp.asarray(np.asarray(corner).reshape(-1)), (B, K, math.prod(r)))
        else:
            pos = xp.asarray(np.asarray(corner).reshape(-1)) + xp.asarray(delta)[best_arg].reshape(
                B, K, -1
            )
        return best_key.reshape(B, K, -1), best_val.reshape(B, K, -1), pos

    def pooled(self, z: Any, *, batched: bool | None = None) -> Any:
        """The pooled map: per unit, the kept value (0 for units not among the ``k`` kept).

        For ``pool=p`` the result has shape ``(K, *r)`` (or ``(B, K, *r)``) with
        ``r = ceil(n / p)`` regions per axis -- what a max-pooling layer outputs; for
        ``pool=None`` one value per filter block, shape ``(K,)`` (or ``(B, K)``).

        >>> ModelSparse(None, pool=2, by="value").pooled(np.array([[1.0, -4.0, 3.0, 0.0, 2.0]]))
        array([[1., 3., 2.]])
        """
        zb, was_batched = self._prepare(z, batched)
        xp = get_array_module(zb)
        B, K = zb.shape[:2]
        kkey, kval, _ = self._unit_max(zb)
        U = kkey.shape[2]
        k = K * U if self.k is None else self.k
        sel = topk_mask(kkey.reshape(B, K * U), k).reshape(B, K, U)
        out = xp.where(sel, kval, 0).astype(zb.dtype)
        spatial = tuple(zb.shape[2:])
        p = self._pool_for(spatial)
        if p is None:
            out = out.reshape(B, K)
        else:
            out = out.reshape(B, K, *(-(-ni // pi) for ni, pi in zip(spatial, p, strict=True)))
        return out if was_batched else out[0]

    def _project_batch(self, zb: Any) -> Any:
        xp = get_array_module(zb)
        B, K = zb.shape[:2]
        N = math.prod(zb.shape[2:])
        kkey, kval, pos = self._unit_max(zb)  # (B, K, U)
        U = kkey.shape[2]
        k = K * U if self.k is None else self.k  # k=None: every unit keeps its maximum
        sel = topk_mask(kkey.reshape(B, K * U), k).reshape(B, K, U)
        if self.switches == "fixed" and self.pool is None:
            pos = xp.zeros_like(pos)
        out = xp.zeros((B, K, N), dtype=zb.dtype)
        xp.put_along_axis(out, pos, xp.where(sel, kval, 0).astype(zb.dtype), axis=2)
        return out.reshape(zb.shape)

    def _support_sum(self, zb: Any, c: int) -> Any:
        """Sums of ``c`` model points: <= ``c`` nonzeros per unit, <= ``c k`` in total.

        (A block holding two nonzeros of ``z1 + z2`` must be active in both, so the
        count constraint is ``2 * #doubles + #singles <= 2k``: just ``<= 2k`` nonzeros.)
        Exact: the ``c`` largest keys per unit, then the ``c k`` largest of those.
        Positions are the entries' own (known switches) whatever ``switches`` is.
        """
        xp = get_array_module(zb)
        B, K = zb.shape[:2]
        N = math.prod(zb.shape[2:])
        vals, pos = self._regions(zb)  # (B, K, U, P)
        U, P = vals.shape[2], vals.shape[3]
        keys = xp.abs(vals) if self.by == "abs" else vals
        keys = keys.astype(np.float64)
        if pos is not None:
            keys = xp.where(pos >= 0, keys, -np.inf)
        cand = topk_mask(keys.reshape(B * K * U, P), min(c, P)).reshape(keys.shape)
        if pos is not None:
            cand &= pos >= 0
            n_cand = K * int(xp.minimum((pos >= 0).sum(axis=1), c).sum())
        else:
            n_cand = K * U * min(c, P)
        ckeys = xp.where(cand, keys, -np.inf).reshape(B, K * U * P)
        ck = n_cand if self.k is None else min(c * self.k, n_cand)
        sel = topk_mask(ckeys, ck).reshape(B, K, U, P) & cand
        if pos is None:
            return sel.reshape(zb.shape)
        out = xp.zeros((B, K, N + 1), dtype=bool)
        idx = xp.where(pos >= 0, pos, N).reshape(1, 1, U * P)
        xp.put_along_axis(out, xp.broadcast_to(idx, (B, K, U * P)), sel.reshape(B, K, -1), 2)
        return out[:, :, :N].reshape(zb.shape)

    def _sample_batch(self, shape, n, rng, low, high, dtype):  # type: ignore[no-untyped-def]
        K, spatial = shape[0], shape[1:]
        N = math.prod(spatial)
        p = self._pool_for(spatial)
        n_u = self._units(shape)
        k = n_u if self.k is None else self.k
        units = _random_subsets(rng, n, n_u, k)  # (n, k)
        vals = rng.uniform(low, high, size=(n, k)).astype(dtype)
        out = np.zeros((n, K * N), dtype=dtype)
        if p is None:
            filt = units
            pos = rng.integers(0, N, size=units.shape)
        else:
            r = tuple(-(-ni // pi) for ni, pi in zip(spatial, p, strict=True))
            U = math.prod(r)
            filt, reg = np.divmod(units, U)
            rc = unravel_index(reg, r)
            coord = []
            for i, (ni, pi) in enumerate(zip(spatial, p, strict=True)):
                start = rc[i] * pi
                size = np.minimum(pi, ni - start)  # partial edge regions are smaller
                coord.append(start + (rng.random(units.shape) * size).astype(np.int64))
            pos = np.ravel_multi_index(coord, spatial)
        np.put_along_axis(out, filt * N + pos, vals, axis=1)
        return out.reshape(n, *shape)


class TopKSparse(SparsityModel):
    r"""Plain k-sparse codes: keep the ``k`` entries of largest magnitude (or value).

    The baseline of standard IHT (Blumensath & Davies 2009); ignores the filter/shift
    structure.  Ties go to the lowest flat (C-order) index.  The projection is the exact
    nearest point of the set of k-sparse codes:

    .. math::

        \mathcal{H}_k(z) = \arg\min_{\|u\|_0 \le k} \|z - u\|_2 .

    Parameters
    ----------
    k : int
        Number of nonzeros kept per code (``k >= 0``).
    by : {'abs', 'value'}
        Rank entries by magnitude (``'abs'``, the Euclidean projection) or by signed value
        (``'value'``, what max pooling of a ReLU map keeps).
    ndim : int, optional
        Number of spatial axes of a code ``(K, *n)``; with ``None`` a 1-D code is one
        signal and higher-rank input is a batch.

    References
    ----------
    .. [1] T. Blumensath and M. E. Davies, "Iterative hard thresholding for compressed
       sensing", Applied and Computational Harmonic Analysis 27(3), 2009.

    Examples
    --------
    >>> TopKSparse(2).project(np.array([[0.1, -3.0, 0.2], [1.0, 0.0, 2.0]]))
    array([[ 0., -3.,  0.],
           [ 0.,  0.,  2.]])
    """

    _unit_name = "entries"
    _min_axes = 1

    def __init__(self, k: int, *, by: str = "abs", ndim: int | None = None):
        self.k = check_nonnegative_int("k", k)
        self.by = check_choice("by", by, ("abs", "value"))
        self.ndim = None if ndim is None else check_positive_int("ndim", ndim)

    def __repr__(self) -> str:
        return f"TopKSparse(k={self.k}, by={self.by!r}, ndim={self.ndim!r})"

    def _units(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape)

    def _project_batch(self, zb: Any) -> Any:
        xp = get_array_module(zb)
        flat = zb.reshape(zb.shape[0], -1)
        keys = xp.abs(flat) if self.by == "abs" else flat
        sel = topk_mask(keys, self.k)
        return xp.where(sel, flat, 0).astype(zb.dtype).reshape(zb.shape)

    def _support_sum(self, zb: Any, c: int) -> Any:
        xp = get_array_module(zb)
        flat = zb.reshape(zb.shape[0], -1)
        keys = xp.abs(flat) if self.by == "abs" else flat
        return topk_mask(keys, min(c * self.k, flat.shape[1])).reshape(zb.shape)

    def _sample_batch(self, shape, n, rng, low, high, dtype):  # type: ignore[no-untyped-def]
        N = math.prod(shape)
        idx = _random_subsets(rng, n, N, self.k)
        out = np.zeros((n, N), dtype=dtype)
        np.put_along_axis(out, idx, rng.uniform(low, high, size=idx.shape).astype(dtype), 1)
        return out.reshape(n, *shape)


class BlockSparse(SparsityModel):
    r"""Whole-block sparsity: at most ``k`` active filter blocks, any entries inside.

    The projection keeps the ``k`` blocks of largest l2 norm (the exact nearest point);
    ties go to the lowest block index.  A looser model than :class:`ModelSparse`
    (``k * n`` nonzeros allowed), kept as a baseline for comparisons.  With the code
    ``z = (z_1, ..., z_K)`` split into its filter blocks,

    .. math::

        \mathcal{B}_k(z) = \arg\min_{u:\ \#\{i : u_i \ne 0\} \le k} \|z - u\|_2 ,

    i.e. keep the ``k`` blocks of largest :math:`\|z_i\|_2`.

    Parameters
    ----------
    k : int
        Number of active filter blocks kept per code (``k >= 0``).
    ndim : int, optional
        Number of spatial axes of a code ``(K, *n)``; ``None`` infers it as for
        :class:`TopKSparse`.

    References
    ----------
    .. [1] R. G. Baraniuk, V. Cevher, M. F. Duarte and C. Hegde, "Model-based compressive
       sensing", IEEE Transactions on Information Theory 56(4), 2010 (block sparsity).

    Examples
    --------
    >>> BlockSparse(1).project(np.array([[0.1, -3.0, 0.2], [1.0, 2.0, 3.0]]))
    array([[0., 0., 0.],
           [1., 2., 3.]])
    """

    _unit_name = "blocks (filters)"

    def __init__(self, k: int, *, block_size: int | None = None, ndim: int | None = None):
        self.k = check_nonnegative_int("k", k)
        self.ndim = None if ndim is None else check_positive_int("ndim", ndim)
        self.block_size = None if block_size is None else check_positive_int(
            "block_size", block_size
        )
        if self.block_size is not None:
            if self.ndim is not None:
                raise ValueError("parameters 'block_size' and 'ndim' exclude each other")
            self._min_axes = 1

    def __repr__(self) -> str:
        if self.block_size is not None:
            return f"BlockSparse(k={self.k}, block_size={self.block_size})"
        return f"BlockSparse(k={self.k}, ndim={self.ndim!r})"

    def _check_code_shape(self, code_shape: Any) -> tuple[int, ...]:
        shape = super()._check_code_shape(code_shape)
        if self.block_size is not None and math.prod(shape) % self.block_size:
            raise ValueError(
                f"parameter 'block_size' = {self.block_size} does not divide the code size "
                f"{math.prod(shape)} (code shape {shape})"
            )
        return shape

    def _units(self, shape: tuple[int, ...]) -> int:
        if self.block_size is not None:
            return math.prod(shape) // self.block_size
        return shape[0]

    def _blocks(self, zb: Any) -> Any:
        """``(B, units, entries per block)`` view of a batch."""
        if self.block_size is not None:
            return zb.reshape(zb.shape[0], -1, self.block_size)
        return zb.reshape(zb.shape[0], zb.shape[1], -1)

    def _project_batch(self, zb: Any) -> Any:
        xp = get_array_module(zb)
        flat = self._blocks(zb)
        energy = (flat * flat).sum(axis=2)
        sel = topk_mask(energy, self.k)
        return xp.where(sel[..., None], flat, 0).astype(zb.dtype).reshape(zb.shape)

    def _support_sum(self, zb: Any, c: int) -> Any:
        xp = get_array_module(zb)
        flat = self._blocks(zb)
        sel = topk_mask((flat * flat).sum(axis=2), min(c * self.k, flat.shape[1]))
        return xp.broadcast_to(sel[..., None], flat.shape).reshape(zb.shape)

    def _sample_batch(self, shape, n, rng, low, high, dtype):  # type: ignore[no-untyped-def]
        if self.block_size is not None:
            K, N = math.prod(shape) // self.block_size, self.block_size
        else:
            K, N = shape[0], math.prod(shape[1:])
        blocks = _random_subsets(rng, n, K, self.k)
        mask = np.zeros((n, K), dtype=bool)
        np.put_along_axis(mask, blocks, True, axis=1)
        vals = rng.uniform(low, high, size=(n, K, N)).astype(dtype)
        return np.where(mask[..., None], vals, 0).astype(dtype).reshape(n, *shape)


def sample_model_sparse(
    model: SparsityModel,
    code_shape: Any,
    *,
    n_trials: int,
    rng: Any = None,
    low: float = -1.0,
    high: float = 1.0,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Draw ``n_trials`` random codes of ``model`` in one batch: ``model.sample(...)``.

    Exactly ``model.k`` nonzeros per code (for :class:`BlockSparse`: ``k`` full blocks),
    supports uniform over the model, values uniform on ``[low, high]``: the random codes
    of the invertibility paper's experiments (Gilbert, Zhang, Lee, Zhang and Lee, *Towards
    Understanding the Invertibility of Convolutional Neural Networks*, Sec. 4.2).

    Parameters
    ----------
    model : ModelSparse, TopKSparse or BlockSparse
        The sparsity model the codes belong to.
    code_shape : tuple of int
        Shape ``(K, *n)`` of one code (filters, then shifts per spatial axis), or ``(n,)``
        for models that take flat codes.
    n_trials : int
        Number of codes drawn in the batch (keyword-only).
    rng : None, int or numpy.random.Generator
        Randomness (SciPy SPEC 7); the same int gives the same codes.
    low, high : float
        Range of the uniform nonzero values.
    dtype : data-type
        Floating dtype of the result (float32 or float64).

    Returns
    -------
    numpy.ndarray
        Codes of shape ``(n_trials, *code_shape)``.

    Examples
    --------
    >>> Z = sample_model_sparse(ModelSparse(3), (8, 5), n_trials=4, rng=0)
    >>> Z.shape, bool(((Z != 0).sum(axis=(1, 2)) == 3).all())
    ((4, 8, 5), True)
    >>> bool(((Z != 0).sum(axis=2) <= 1).all())  # one nonzero per block at most
    True
    """
    if not isinstance(model, SparsityModel):
        raise TypeError(
            f"parameter 'model' must be a ModelSparse, TopKSparse or BlockSparse; got {model!r}"
        )
    if isinstance(n_trials, int) and isinstance(code_shape, tuple):
        check_elements(f"sample_model_sparse: n_trials={n_trials} codes of shape {code_shape}", n_trials * math.prod(code_shape), dtype, copies=2)  # noqa: E501
    return model.sample(code_shape, n_trials, rng=rng, low=low, high=high, dtype=dtype)
